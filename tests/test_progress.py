"""--progress auto|always|never: the lines for a log (smcheck.progress) driven by a fake clock
into a StringIO, then the option through the CLI: in a subprocess (stderr is a pipe there, not
a terminal) and in this process with the interval set to 0 (``auto`` on a long run, without
waiting for it). The numbers in the lines are computed here independently of the module."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from smcheck import progress as pg
from smcheck.progress import INTERVAL, Progress, ProgressLines, SweepProgress

REPO = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[")
LINE = re.compile(r"^smcheck (forward|jacobian|vjp|loss|sweep): ")


class Clock:
    """A clock the test moves: ``clock.t = 7.0``."""

    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


class Log(io.StringIO):
    """A log (not a terminal) that counts its flushes."""

    flushes = 0

    def flush(self):
        self.flushes += 1
        super().flush()

    def lines(self):
        return self.getvalue().splitlines()


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def expected_line(command, done, total, elapsed, unit="entries"):
    """The line the module should write, computed here: counts, floor percentage, the mean
    rate (2 significant digits) and the time left at that rate (whole seconds below 90)."""
    rate = done / elapsed
    left = round((total - done) / rate)
    return (f"smcheck {command}: {done:,} of {total:,} {unit} ({100 * done // total}%), "
            f"{rate:.2g} {unit}/s, about {max(1, left)} s left")


# --- the lines, with a fake clock -------------------------------------------------------------

def test_lines_only_after_the_interval_with_counts_rate_and_time_left():
    clock, log = Clock(), Log()
    lines = ProgressLines("forward", stream=log, clock=clock)
    for dt, done in [(1.0, 100_000), (3.0, 500_000), (INTERVAL - 0.01, 900_000)]:
        clock.t = 100.0 + dt
        lines.update(done, 10_000_000)
    assert log.getvalue() == ""  # nothing before the interval
    clock.t = 100.0 + 8.0
    lines.update(1_048_576, 10_000_000)
    assert log.lines() == [expected_line("forward", 1_048_576, 10_000_000, 8.0)]
    assert log.lines()[0] == ("smcheck forward: 1,048,576 of 10,000,000 entries (10%), "
                              "1.3e+05 entries/s, about 68 s left")
    clock.t += INTERVAL - 1  # the next line only an interval after the last one
    lines.update(2_000_000, 10_000_000)
    assert len(log.lines()) == 1
    clock.t = 100.0 + 8.0 + INTERVAL
    lines.update(5_000_000, 10_000_000)
    assert log.lines()[1] == expected_line("forward", 5_000_000, 10_000_000, 8.0 + INTERVAL)
    clock.t = 100.0 + 20.0
    lines.close()
    assert log.lines()[2] == "smcheck forward: 10,000,000 entries in 20.0 s (5e+05 entries/s)"
    assert log.flushes == 3  # every line flushed as it is written
    assert not ANSI.search(log.getvalue())


def test_a_short_run_writes_nothing_not_even_a_last_line():
    clock, log = Clock(), Log()
    lines = ProgressLines("vjp", stream=log, clock=clock)
    clock.t += INTERVAL / 2
    lines.update(10, 10)
    lines.close()
    assert log.getvalue() == ""
    # control: the same run, one interval long, writes its line and the last one
    clock, log = Clock(), Log()
    lines = ProgressLines("vjp", stream=log, clock=clock)
    clock.t += INTERVAL
    lines.update(10, 10)
    lines.close()
    assert log.lines() == [f"smcheck vjp: 10 of 10 entries (100%), {10 / INTERVAL:.2g} "
                           "entries/s, about 1 s left",
                           f"smcheck vjp: 10 entries in {INTERVAL:.1f} s "
                           f"({10 / INTERVAL:.2g} entries/s)"]


def test_always_writes_the_first_update_at_once_and_a_last_line():
    clock, log = Clock(), Log()
    lines = ProgressLines("loss", stream=log, clock=clock, always=True)
    clock.t += 0.5
    lines.update(3, 12)
    clock.t += 0.5
    lines.update(6, 12)  # within the interval of the first line: not written
    lines.close()
    assert log.lines() == [expected_line("loss", 3, 12, 0.5),
                           "smcheck loss: 12 entries in 1.0 s (12 entries/s)"]
    lines.close()  # closing twice writes nothing more
    assert len(log.lines()) == 2
    log = Log()
    ProgressLines("loss", stream=log, clock=Clock(), always=True).close()
    assert log.lines() == ["smcheck loss: done in 0.0 s"]  # no update came


def test_a_failed_run_says_where_it_stopped():
    clock, log = Clock(), Log()
    lines = ProgressLines("jacobian", stream=log, clock=clock)
    clock.t += 6
    lines.update(2_000, 8_000)
    clock.t += 1.5
    lines.close(failed=True)
    assert log.lines()[-1] == "smcheck jacobian: stopped after 7.5 s, at 2,000 of 8,000 entries"


@pytest.mark.parametrize("seconds, text", [(0.2, "1 s"), (4.4, "4 s"), (89, "89 s"),
                                           (600, "10 min"), (3 * 3600, "3.0 h")])
def test_time_left_is_rounded_to_its_unit(seconds, text):
    assert pg._left(seconds) == text


def test_took_in_minutes_and_seconds():
    assert pg._took(4.84) == "4.8 s"
    assert pg._took(252) == "4 min 12 s"
    assert pg._took(2 * 3600 + 5 * 60) == "2 h 5 min"


# --- which progress: mode, --quiet, terminal --------------------------------------------------

def long_run(p: Progress, clock: Clock, n: int = 60_000):
    """A check's reference work reported in 3 passes of n units (as a forward case does),
    one interval apart."""
    for _ in range(3):
        clock.t += INTERVAL
        p(n, 3 * n)


@pytest.mark.parametrize("mode, quiet, shown", [("auto", False, True), ("always", False, True),
                                                ("always", True, True), ("auto", True, False),
                                                ("never", False, False)])
def test_mode_and_quiet_decide_the_lines(mode, quiet, shown):
    clock, log = Clock(), Log()
    with Progress(mode, quiet, command="forward", stream=log, clock=clock) as p:
        long_run(p, clock)
    assert bool(log.getvalue()) is shown
    assert all(LINE.match(line) for line in log.lines())


def test_lines_count_the_input_entries_not_the_reference_passes():
    clock, log = Clock(), Log()
    with Progress("auto", command="forward", stream=log, clock=clock) as p:
        p.entries = 60_000
        long_run(p, clock)
    counts = [re.search(r": ([\d,]+) of ([\d,]+) entries", s).groups() for s in log.lines()[:3]]
    assert counts == [("20,000", "60,000"), ("40,000", "60,000"), ("60,000", "60,000")]
    assert log.lines()[3].startswith("smcheck forward: 60,000 entries in 15.0 s")


def test_an_exception_leaving_the_run_ends_with_stopped():
    clock, log = Clock(), Log()
    with pytest.raises(KeyboardInterrupt):
        with Progress("always", command="forward", stream=log, clock=clock) as p:
            p(5, 10)
            raise KeyboardInterrupt
    assert "stopped after" in log.lines()[-1]


def test_a_terminal_gets_the_bar_not_lines():
    term = FakeTerminal()
    p = Progress("auto", command="forward", stream=term, clock=Clock())
    assert p.bar_on and p.lines is None
    p(10, 10)  # short work: no bar in auto
    assert p.bar is None
    p.close()
    q = Progress("always", quiet=True, command="forward", stream=term, clock=Clock())
    assert q.bar_on and q.lines is None  # always: the bar even for short work, even quiet
    q(10, 10)
    assert q.bar is not None
    q.close()


def test_sweep_lines_count_cases_and_name_the_case_running():
    clock, log = Clock(), Log()
    with SweepProgress("auto", stream=log, clock=clock) as bar:
        bar.total = 4
        for k, label in enumerate(["a float64 forward", "a float64 vjp", "b float64 forward",
                                   "b float64 vjp"]):
            clock.t = 100.0 + 6 * k
            bar(label)
        clock.t = 100.0 + 24
    lines = log.lines()
    # a line at 6 s (1 done), 12 s (2 done), 18 s (3 done), then the last one
    assert lines[0] == (f"smcheck sweep: 1 of 4 cases (25%), {1 / 6:.2g} cases/s, about 18 s "
                        "left; now a float64 vjp")
    assert lines[2].startswith("smcheck sweep: 3 of 4 cases (75%)")
    assert lines[-1] == f"smcheck sweep: 4 cases in 24.0 s ({4 / 24:.2g} cases/s)"
    assert len(lines) == 4


def test_progress_module_is_light_to_import():
    code = ("import sys, smcheck.progress; "
            "print(sorted(m for m in ('numpy', 'rich', 'mpmath') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), check=True).stdout
    assert out.strip() == "[]"


# --- through the CLI --------------------------------------------------------------------------

def smcheck(*argv):
    """``python -m smcheck ARGV`` in a subprocess: stderr is a pipe, not a terminal."""
    return subprocess.run([sys.executable, "-m", "smcheck", *map(str, argv)], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))


BIG = ("forward", "--random", 200_000, "--rows", 20)


def test_always_prints_lines_on_stderr_and_json_stays_pure():
    r = smcheck(*BIG, "--progress", "always", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)  # stdout is the JSON document only
    assert doc["command"] == "forward" and doc["shape"] == [20, 200_000]
    lines = r.stderr.splitlines()
    assert lines and all(LINE.match(s) for s in lines), r.stderr
    assert re.match(r"smcheck forward: [\d,]+ of 4,000,000 entries \(\d+%\), \S+ entries/s, "
                    r"about \d+ s left$", lines[0]), lines
    assert re.match(r"smcheck forward: 4,000,000 entries in \d+\.\d s \(\S+ entries/s\)$",
                    lines[-1]), lines
    assert not ANSI.search(r.stderr)


def test_never_prints_nothing_and_auto_on_a_short_run_nothing():
    never = smcheck(*BIG, "--progress", "never", "--json")
    assert never.returncode == 0 and never.stderr == ""
    short = smcheck("forward", "--x", "1,2,3", "--json")  # auto, the default
    assert short.returncode == 0 and short.stderr == ""
    control = smcheck("forward", "--x", "1,2,3", "--json", "--progress", "always")
    assert control.returncode == 0
    assert control.stderr.splitlines()[-1].startswith("smcheck forward: 3 entries in ")
    same, other = json.loads(control.stdout), json.loads(short.stdout)
    assert same["checks"] == other["checks"]  # progress changes nothing in the report


def test_quiet_with_always_prints_lines_and_quiet_alone_nothing():
    r = smcheck("vjp", "--random", 1000, "--rows", 3, "--quiet", "--progress", "always")
    assert r.returncode == 0 and r.stdout == ""
    assert r.stderr.splitlines()[-1].startswith("smcheck vjp: 3,000 entries in ")
    control = smcheck("vjp", "--random", 1000, "--rows", 3, "--quiet")
    assert control.returncode == 0 and control.stdout == control.stderr == ""


def test_an_input_error_in_the_run_stays_one_error_line():
    r = smcheck("forward", "--x", "1,2", "--workers", 0, "--progress", "always")
    assert r.returncode == 2
    assert r.stderr == "error: --workers 0: must be >= 1\n"
    log = Log()  # control: a run stopped after a line was written says so
    with pytest.raises(ValueError):
        with Progress("always", command="forward", stream=log, clock=Clock()) as p:
            p(1, 2)
            raise ValueError
    assert log.lines()[-1] == "smcheck forward: stopped after 0.0 s, at 1 of 2 entries"


@pytest.mark.parametrize("value", ["sometimes", "", "1"])
def test_a_bad_value_is_one_error_line_and_exit_2(value):
    r = smcheck("forward", "--x", "1,2", "--progress", value)
    assert r.returncode == 2
    assert r.stderr == f"error: --progress {value}: use one of auto, always, never\n"
    assert r.stdout == ""


def test_sweep_progress_lines_and_never():
    r = smcheck("sweep", "--preset", "benign", "--progress", "always", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["command"] == "sweep"
    lines = r.stderr.splitlines()
    assert lines[0] == "smcheck sweep: 0 of 5 cases (0%); now benign float64 forward", lines
    assert re.match(r"smcheck sweep: 5 cases in \d+\.\d s", lines[-1]), lines
    quiet = smcheck("sweep", "--preset", "benign", "--progress", "never", "--json")
    assert quiet.returncode == 0 and quiet.stderr == ""


@pytest.mark.parametrize("argv", [("jacobian", "--x", "1,2,3"), ("vjp", "--x", "1,2,3"),
                                  ("loss", "--x", "1,2,3", "--t", "0,1,0")])
def test_every_check_command_takes_the_option(cli, monkeypatch, argv):
    """In this process, the interval 0: ``auto`` writes as a long run would (stderr is a
    StringIO here); ``never`` and --quiet do not."""
    monkeypatch.setattr(pg, "INTERVAL", 0.0)
    r = cli(*argv, "--json")
    assert r.code == 0
    json.loads(r.out)
    assert r.err.splitlines()[-1].startswith(f"smcheck {argv[0]}: 3 entries in "), r.err
    assert cli(*argv, "--json", "--progress", "never").err == ""
    assert cli(*argv, "--quiet").err == ""
