"""The command line's features of issue 17: ``--output FILE``, ``--no-color``, shell completion
and the sweep's progress total. Each through the CLI, the exit status first, then the text."""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from smcheck import cli as cli_module
from smcheck.exceptions import SmcheckError
from smcheck.output import write_file
from smcheck.progress import SweepProgress
from smcheck.sweep import run_sweep

REPO = Path(__file__).resolve().parents[1]
ESC = "\x1b["

#: one small run of each command that takes --output (dps 20: fast)
RUNS = {
    "forward": ("forward", "--x", "1,2,3", "--dps", "20"),
    "jacobian": ("jacobian", "--x", "1,2,3", "--dps", "20"),
    "vjp": ("vjp", "--x", "1,2,3", "--v", "1,0,0", "--dps", "20"),
    "loss": ("loss", "--x", "1,2,3", "--t", "0,1,0", "--dps", "20"),
    "claims": ("claims", "--x", "1,2,3", "--dps", "20"),
    "sweep": ("sweep", "--preset", "benign", "--dps", "20"),
}
NAIVE_FAILS = ("forward", "--preset", "overflow", "--impl", "naive", "--dps", "20")


def one_error_line(r, *words):
    """Exit 2, nothing on stdout, one ``error:`` line on stderr naming ``words``."""
    assert r.code == 2, (r.code, r.out, r.err)
    assert r.out == ""
    assert r.err.startswith("error: ") and r.err.count("\n") == 1, repr(r.err)
    assert "Traceback" not in r.err and "internal error" not in r.err
    for w in words:
        assert w in r.err, (w, r.err)


def leftovers(directory: Path) -> list[str]:
    """Temporary files of an interrupted write (write_file's ``.NAME.*.tmp``)."""
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


# --- --output ------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", list(RUNS))
@pytest.mark.parametrize("json_out", [False, True], ids=["text", "json"])
def test_output_writes_what_stdout_would_have_shown(cli, tmp_path, command, json_out):
    """-o FILE: the same exit status, nothing on stdout or stderr, and in FILE exactly what
    stdout shows without it (the JSON; or the text report, plain, at the width a redirected
    stdout gets)."""
    argv = RUNS[command] + (("--json",) if json_out else ())
    plain = cli(*argv)
    path = tmp_path / "report.out"
    r = cli(*argv, "--output", path)
    assert (r.code, r.out, r.err) == (plain.code, "", "")
    assert path.read_text(encoding="utf-8") == plain.out
    assert plain.out and ESC not in plain.out
    assert leftovers(tmp_path) == []


def test_output_short_option_and_dash_for_stdout(cli, tmp_path):
    plain = cli(*RUNS["forward"], "--json")
    r = cli(*RUNS["forward"], "--json", "-o", tmp_path / "r.json")
    assert (r.code, r.out) == (0, "")
    assert (tmp_path / "r.json").read_text() == plain.out
    dash = cli(*RUNS["forward"], "--json", "-o", "-")
    assert (dash.code, dash.out, dash.err) == (0, plain.out, "")
    assert list(tmp_path.iterdir()) == [tmp_path / "r.json"]  # no file named "-"


@pytest.mark.parametrize("extra, code", [((), 0), (("--check",), 1), (("--quiet",), 1)])
def test_output_keeps_the_exit_status(cli, tmp_path, extra, code):
    """A failing implementation: exit 0 without --check, 1 with --check or --quiet; the file
    is written every time, --quiet included (it prints nothing, the file is not printing)."""
    path = tmp_path / "r.txt"
    r = cli(*NAIVE_FAILS, *extra, "-o", path)
    assert (r.code, r.out, r.err) == (code, "", "")
    text = path.read_text()
    assert "FAILED" in text and "overflow" in text


def test_quiet_with_output_json_writes_the_document(cli, tmp_path):
    path = tmp_path / "r.json"
    r = cli(*NAIVE_FAILS, "--quiet", "--json", "-o", path)
    assert (r.code, r.out, r.err) == (1, "", "")
    assert cli(*NAIVE_FAILS, "--json").out == path.read_text()


def test_sweep_output_beside_junit(cli, tmp_path):
    r = cli(*RUNS["sweep"], "--json", "-o", tmp_path / "s.json", "--junit", tmp_path / "j.xml")
    assert (r.code, r.out) == (0, "")
    assert '"command": "sweep"' in (tmp_path / "s.json").read_text()
    assert (tmp_path / "j.xml").read_text().startswith("<?xml")


def test_output_replaces_an_existing_file_whole(cli, tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("old\n" * 10_000)
    assert cli(*RUNS["forward"], "-o", path).code == 0
    assert path.read_text() == cli(*RUNS["forward"]).out


@pytest.mark.parametrize("target, why", [
    ("{tmp}", "Is a directory"),
    ("{tmp}/missing/r.txt", "No such file or directory"),
    ("{tmp}/file.txt/r.txt", "Not a directory"),
])
@pytest.mark.parametrize("command", ["forward", "claims", "sweep"])
def test_unwritable_output_is_one_error_line_before_the_run(cli, tmp_path, monkeypatch, target,
                                                           why, command):
    """A directory, a missing directory, a file as a directory: exit 2, one error: line that
    names --output and the path, refused before any work (the run itself would fail here)."""
    (tmp_path / "file.txt").write_text("x")
    path = target.format(tmp=tmp_path)

    def no_run(*args, **kwargs):
        raise AssertionError("the run started before --output was checked")

    monkeypatch.setattr("smcheck.run.check_rows", no_run)
    monkeypatch.setattr("smcheck.claims.run_claims", no_run)
    monkeypatch.setattr("smcheck.sweep.run_sweep", no_run)
    r = cli(*RUNS[command], "--output", path)
    one_error_line(r, "--output", path, why)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="needs POSIX permissions, which root ignores")
def test_output_in_a_read_only_directory_is_refused(cli, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        one_error_line(cli(*RUNS["forward"], "-o", ro / "r.txt"), "--output", "Permission denied")
    finally:
        ro.chmod(0o755)


def test_empty_or_nul_output_path_is_one_error_line(cli):
    one_error_line(cli(*RUNS["forward"], "--output", ""), "--output", "file path")
    one_error_line(cli(*RUNS["forward"], "--output", "a\0b"), "--output", "not a valid file path")


def test_a_failing_run_leaves_an_existing_file_as_it_was(cli, tmp_path):
    """An input error after --output was accepted: exit 2 and the old file untouched."""
    path = tmp_path / "r.txt"
    path.write_text("previous report\n")
    one_error_line(cli("forward", "--x", "1,2,3", "--dtype", "float8", "-o", path))
    one_error_line(cli("vjp", "--x", "1,2,3", "--v", "1,2", "-o", path))
    assert path.read_text() == "previous report\n"
    assert leftovers(tmp_path) == []


def test_write_file_is_whole_or_nothing(tmp_path, monkeypatch):
    """The rename fails (a full disk, say): the old file stays, no temporary file is left, and
    the error is one SmcheckError line naming the option."""
    path = tmp_path / "r.txt"
    path.write_text("old")

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(SmcheckError, match=r"^--output .*r\.txt: cannot write \(No space left"):
        write_file(str(path), "new", "--output")
    assert path.read_text() == "old"
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes and links")
def test_write_file_mode_links_and_devices(tmp_path):
    """The file gets open()'s mode (0666 less the umask), not the temporary file's 0600; a
    symbolic link is written through; a device (/dev/null) is written to, not replaced."""
    mask = os.umask(0o022)
    try:
        write_file(str(tmp_path / "r.txt"), "text", "--output")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "r.txt").stat().st_mode) == 0o644
    (tmp_path / "link").symlink_to(tmp_path / "r.txt")
    write_file(str(tmp_path / "link"), "through", "--output")
    assert (tmp_path / "link").is_symlink() and (tmp_path / "r.txt").read_text() == "through"
    if os.path.exists("/dev/null"):
        write_file("/dev/null", "nothing", "--output")
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_output_width_follows_columns_and_a_bad_columns_is_ignored(cli, tmp_path, monkeypatch):
    """The file's text report is as wide as $COLUMNS (120 without it); a $COLUMNS that is not
    a positive number is ignored (it used to end in an internal error)."""
    widths = {}
    for columns in ("60", "abc", "0"):
        monkeypatch.setenv("COLUMNS", columns)
        r = cli(*NAIVE_FAILS, "-o", tmp_path / "r.txt")
        assert (r.code, r.err) == (0, "")
        widths[columns] = max(map(len, (tmp_path / "r.txt").read_text().splitlines()))
    assert widths["60"] <= 60 < widths["abc"] == widths["0"] <= 120


def test_output_is_in_help_of_each_command(cli):
    for command in RUNS:
        text = cli(command, "--help").out
        assert "-o, --output <str>" in text and "--no-color" in text, command
    assert "--output" not in cli("presets", "--help").out


# --- --no-color ----------------------------------------------------------------------------------

@pytest.fixture
def forced_terminal(monkeypatch):
    """rich treats the captured stdout as a colour terminal (FORCE_COLOR), NO_COLOR unset."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    return monkeypatch


@pytest.mark.parametrize("command", ["forward", "claims", "sweep"])
def test_no_color_turns_escape_codes_off(cli, forced_terminal, command):
    coloured = cli(*RUNS[command])
    assert coloured.code == 0 and ESC in coloured.out  # the control: colour is on
    plain = cli(*RUNS[command], "--no-color")
    assert plain.code == 0 and ESC not in plain.out
    assert plain.out == re.sub(r"\x1b\[[0-9;]*m", "", coloured.out)  # the same text
    forced_terminal.setenv("NO_COLOR", "1")
    env = cli(*RUNS[command])
    assert (env.code, env.out) == (0, plain.out)  # NO_COLOR: the same, bold included


def test_output_file_is_plain_on_a_forced_terminal(cli, forced_terminal, tmp_path):
    r = cli(*RUNS["forward"], "-o", tmp_path / "r.txt")
    assert (r.code, r.out) == (0, "")
    text = (tmp_path / "r.txt").read_text()
    assert ESC not in text and "PASSED" in text


def test_no_color_leaves_json_alone(cli, forced_terminal):
    assert cli(*RUNS["forward"], "--json", "--no-color").out == cli(*RUNS["forward"],
                                                                      "--json").out


# --- shell completion ----------------------------------------------------------------------------

def test_help_start_up_loads_nothing_new_for_output_and_completion():
    """``smcheck --help`` in a fresh interpreter: the completion options and --output add no
    module to its start-up (tempfile, which loads random, comes only to write a file; typer's
    rich help only for a completion request) beside the heavy ones of test_cli."""
    script = ("import sys\nfrom smcheck.cli import main\ntry:\n    main(['--help'])\n"
              "except SystemExit:\n    pass\nprint('@@', *sorted(sys.modules))")
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    loaded = set(p.stdout.rsplit("@@", 1)[1].split())
    assert {"smcheck.output", "smcheck.console"} <= loaded  # the control: it ran
    assert loaded.isdisjoint({"tempfile", "random", "typer.rich_utils", "rich", "numpy",
                              "mpmath", "smcheck.report", "smcheck.sweep"})


def test_show_completion_bash_prints_the_script(cli):
    r = cli("--show-completion", "bash")
    assert (r.code, r.err) == (0, "")
    assert "_SMCHECK_COMPLETE=complete_bash" in r.out
    assert "complete -o default -F _smcheck_completion smcheck" in r.out


@pytest.mark.parametrize("shell", ["zsh", "fish", "powershell", "pwsh"])
def test_show_completion_other_shells(cli, shell):
    r = cli("--show-completion", shell)
    assert (r.code, r.err) == (0, "")
    assert "_SMCHECK_COMPLETE" in r.out and "smcheck" in r.out


def test_completion_needs_a_known_shell(cli):
    one_error_line(cli("--show-completion", "tcsh"), "--show-completion tcsh", "bash")
    one_error_line(cli("--install-completion", "cmd.exe"), "--install-completion", "zsh")
    one_error_line(cli("--show-completion"), "--show-completion", "requires an argument")


def test_root_help_lists_the_completion_options(cli):
    out = cli("--help").out
    assert "--install-completion SHELL" in out and "--show-completion SHELL" in out
    assert "--install-completion" not in cli("forward", "--help").out


@pytest.mark.parametrize("words, cword, expected", [
    ("smcheck fo", 1, ["forward"]),
    ("smcheck forward --no-c", 2, ["--no-color"]),
    ("smcheck sweep --out", 2, ["--output"]),
    ("smcheck --show", 1, ["--show-completion"]),
])
def test_the_completion_protocol_answers(cli, monkeypatch, words, cword, expected):
    """What the bash script asks (``_SMCHECK_COMPLETE=complete_bash`` with COMP_WORDS): the
    commands and options that complete the word, one a line."""
    monkeypatch.setenv("_SMCHECK_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", words)
    monkeypatch.setenv("COMP_CWORD", str(cword))
    r = cli()
    assert (r.code, r.err) == (0, "")
    assert r.out.split() == expected


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_bash_script_completes_in_bash(tmp_path):
    """The script of --show-completion bash, sourced in a real bash, completes 'smcheck fo'
    through a `smcheck` program on PATH (a wrapper of this interpreter); nothing is installed
    into any shell's start-up file."""
    script = subprocess.run([sys.executable, "-m", "smcheck", "--show-completion", "bash"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert script.returncode == 0, script.stderr
    (tmp_path / "completion.sh").write_text(script.stdout)
    program = tmp_path / "bin" / "smcheck"
    program.parent.mkdir()
    program.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m smcheck "$@"\n')
    program.chmod(0o755)
    probe = ('source "$1"; COMP_WORDS=(smcheck fo); COMP_CWORD=1; _smcheck_completion smcheck; '
             'printf "%s\\n" "${COMPREPLY[@]}"')
    env = dict(os.environ, PATH=f"{program.parent}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                          if p))
    p = subprocess.run(["bash", "--norc", "--noprofile", "-c", probe, "bash",
                        str(tmp_path / "completion.sh")], capture_output=True, text=True,
                       cwd=REPO, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["forward"]


def test_install_completion_writes_only_into_the_home_it_is_given(cli, tmp_path, monkeypatch):
    """--install-completion bash with HOME a fresh directory: the script and the line that
    sources it land there (never in the real home of whoever runs the tests)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    r = cli("--install-completion", "bash")
    assert r.code == 0, r.err
    script = tmp_path / ".bash_completions" / "smcheck.sh"
    assert "_SMCHECK_COMPLETE=complete_bash" in script.read_text()
    assert f"source '{script}'" in (tmp_path / ".bashrc").read_text()
    assert "bash completion installed" in r.out


# --- the sweep's progress total ------------------------------------------------------------------

class Recorder:
    """A progress callable with a ``total``, as the CLI's SweepProgress."""

    def __init__(self):
        self.total = None
        self.seen = []

    def __call__(self, label):
        self.seen.append((label, self.total))


def test_sweep_gives_its_progress_the_number_of_cases():
    rec = Recorder()
    res = run_sweep("stable", ["float64", "float32"], ["benign", "overflow"],
                    commands=("forward", "log_softmax"), dps=20, progress=rec)
    assert rec.total == len(res.cases) == 2 * 2 * 2
    assert [t for _, t in rec.seen] == [8] * 8  # known before the first case
    calls = []
    run_sweep("stable", ["float64"], ["benign"], commands=("forward",), dps=20,
              progress=calls.append)  # a plain callable (no total) still works
    assert calls == ["benign float64 forward"]


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_sweep_bar_shows_done_of_total(monkeypatch):
    """The bar on a (fake) terminal: 'done/5', never 'done/?'."""
    err = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setenv("COLUMNS", "120")
    bar = SweepProgress()
    try:
        run_sweep("stable", ["float64"], ["benign"], dps=20, progress=bar)
    finally:
        bar.close()
    counts = re.findall(r"(\d+)/([0-9?]+)", err.getvalue())
    assert counts and {total for _, total in counts} == {"5"}, err.getvalue()[-400:]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a Linux pseudo-terminal")
def test_sweep_command_bar_has_a_total_on_a_real_terminal():
    """`smcheck sweep` with stderr on a pseudo-terminal: the bar counts 'k/5'; --no-color
    takes its colours away."""
    import pty
    import select

    def bar_of(*extra):
        master, slave = pty.openpty()
        p = subprocess.Popen([sys.executable, "-m", "smcheck", *RUNS["sweep"], "--json",
                              *extra], stdout=subprocess.PIPE, stderr=slave, cwd=REPO,
                             env=dict(os.environ, TERM="xterm", COLUMNS="120"))
        os.close(slave)
        buf = b""
        while True:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                buf += chunk
            elif p.poll() is not None:
                break
        os.close(master)
        assert p.wait(timeout=120) == 0
        assert b'"command": "sweep"' in p.stdout.read()
        p.stdout.close()
        return buf.decode("utf-8", "replace")

    text = bar_of()
    counts = re.findall(r"(\d+)/([0-9?]+)", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text))
    assert ("0", "5") in counts and {t for _, t in counts} == {"5"}, text[-400:]
    assert re.search(r"\x1b\[(3\d|9\d)m", text)  # coloured
    plain = bar_of("--no-color")
    assert "0/5" in plain and not re.search(r"\x1b\[[0-9;]*m", plain), plain[-400:]


# --- README ----------------------------------------------------------------------------------------

def help_options(text: str) -> set[str]:
    """The long options a help text lists (each at the start of its line)."""
    return set(re.findall(r"^ {2}(?:-\w, )?(--[a-z][a-z-]*)", text, re.MULTILINE))


def test_readme_common_options_table_matches_help(cli):
    """Every option of the README's "Common options" table is an option of some command, and
    every option in forward's "Common options" panel is in the table."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Common options", 1)[1].split("\n### ", 1)[0]
    firsts = [line.split(" | ")[0] for line in section.splitlines() if line.startswith("| `")]
    table = {o for cell in firsts for o in re.findall(r"`(--[a-z][a-z-]*)", cell)}
    everywhere = set().union(*(help_options(cli(c.callback.__name__, "--help").out)
                               for c in cli_module.app.registered_commands))
    assert {"--output", "--no-color"} <= table
    assert table <= everywhere, table - everywhere
    common = help_options(cli("forward", "--help").out.split("Common options:")[1])
    assert common <= table, common - table
