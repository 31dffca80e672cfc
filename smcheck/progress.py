"""The progress of a long run on stderr, as ``--progress auto|always|never`` asks: a transient
rich bar on a terminal, plain lines every :data:`INTERVAL` seconds otherwise (a CI log).

rich loads when a bar is first drawn, so importing this module stays light (no numpy, no rich).
The clock is a parameter (``clock=time.monotonic``): tests drive the lines without sleeping.
"""

from __future__ import annotations

import sys
import threading
import time

from .console import make_console

#: the values of --progress
MODES = ("auto", "always", "never")
#: seconds between two progress lines in a log (the first only after this long)
INTERVAL = 5.0


def _count(k: int) -> str:
    return f"{k:,}"


def _left(seconds: float) -> str:
    """A rough time: "4 s", "12 min", "2.5 h"."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def _took(seconds: float) -> str:
    """A measured time: "0.8 s", "4 min 12 s"."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


class ProgressLines:
    """Plain progress lines for a log: ``smcheck forward: 1,048,576 of 10,000,000 entries
    (10%), 2.1e+06 entries/s, about 4 s left``, written and flushed at once, no colour.

    A line is written on an :meth:`update` once ``interval`` seconds have passed since the
    start or the last line, so a short run writes nothing; ``always`` writes the first update
    at once. :meth:`close` writes a last line (the total time) if any line was written, or
    always with ``always``."""

    def __init__(self, command: str, unit: str = "entries", *, always: bool = False,
                 stream=None, clock=time.monotonic, interval: float | None = None):
        self.command, self.unit, self.always = command, unit, always
        self.stream = sys.stderr if stream is None else stream
        self.clock = clock
        self.interval = INTERVAL if interval is None else interval
        self.start = clock()
        self.last = None if always else self.start  # the time of the last line
        self.done, self.total = 0, None
        self.printed = 0
        self._lock = threading.Lock()  # a chunk's blocks may report from several threads

    def _write(self, text: str) -> None:
        self.stream.write(f"smcheck {self.command}: {text}\n")
        self.stream.flush()
        self.printed += 1

    def update(self, done: int, total: int | None, note: str = "") -> None:
        """``done`` of ``total`` units so far; ``note`` (what runs now) ends the line."""
        with self._lock:
            self.done, self.total = done, total
            now = self.clock()
            if self.last is not None and now - self.last < self.interval:
                return
            self.last = now
            elapsed = now - self.start
            rate = done / elapsed if elapsed > 0 else 0.0
            parts = [f"{_count(done)} {self.unit}" if not total else
                     f"{_count(done)} of {_count(total)} {self.unit} ({100 * done // total}%)"]
            if rate > 0:
                parts.append(f"{rate:.2g} {self.unit}/s")
                if total:
                    parts.append(f"about {_left(max(0, total - done) / rate)} left")
            self._write(", ".join(parts) + (f"; now {note}" if note else ""))

    def close(self, failed: bool = False) -> None:
        """The last line: what was done, in how long (only if a line was written before,
        or with ``always`` when the run ended well: an error before any line stays the one
        ``error:`` line on stderr)."""
        with self._lock:
            if not (self.printed or (self.always and not failed)):
                return
            took = self.clock() - self.start
            if failed:
                of = f" of {_count(self.total)}" if self.total else ""
                self._write(f"stopped after {_took(took)}, at {_count(self.done)}{of} {self.unit}")
            elif not (self.total or self.done):
                self._write(f"done in {_took(took)}")
            else:
                n = self.total or self.done
                rate = f" ({n / took:.2g} {self.unit}/s)" if took > 0 else ""
                self._write(f"{_count(n)} {self.unit} in {_took(took)}{rate}")
            self.printed = 0
            self.always = False  # closed once


class _Shown:
    """What ``--progress mode`` (with --quiet) shows: nothing, a bar (stderr is a terminal)
    or lines (it is not). A context manager: leaving it closes the bar or writes the last
    line (``stopped`` when an exception leaves)."""

    def __init__(self, mode: str = "auto", quiet: bool = False, no_color: bool = False, *,
                 command: str = "check", unit: str = "entries", stream=None,
                 clock=time.monotonic, interval: float | None = None):
        stream = sys.stderr if stream is None else stream
        shown = mode == "always" or (mode == "auto" and not quiet)
        self.always = mode == "always"
        self.bar_on = shown and bool(getattr(stream, "isatty", None) and stream.isatty())
        self.stream, self.no_color = stream, no_color
        self.lines = (ProgressLines(command, unit, always=self.always, stream=stream,
                                    clock=clock, interval=interval)
                      if shown and not self.bar_on else None)
        self.bar = None
        self.task = None

    def _start_bar(self, *columns, description: str, total) -> None:
        from rich.progress import Progress as RichProgress

        self.bar = RichProgress(*columns, transient=True, console=make_console(
            no_color=self.no_color, file=None if self.stream is sys.stderr else self.stream,
            stderr=True))
        self.task = self.bar.add_task(description, total=total)
        self.bar.start()

    def close(self, failed: bool = False) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        if self.lines is not None:
            self.lines.close(failed)

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb) -> None:
        self.close(failed=kind is not None)


class Progress(_Shown):
    """The progress of a check, fed ``progress(done, total)`` (``done`` new units of work of
    ``total``) by :func:`smcheck.parallel.run_rows` and by the reference work of a case. The
    bar counts those units (only for long work, :attr:`THRESHOLD`, unless ``always``); the
    lines count them as ``entries`` of the input when it is set (a case's reference work
    counts some entries more than once)."""

    THRESHOLD = 30_000  # reference entries: about a second of mpmath work

    def __init__(self, mode: str = "auto", quiet: bool = False, no_color: bool = False, **kw):
        super().__init__(mode, quiet, no_color, **kw)
        self.entries: int | None = None  # the input's entries (set by the CLI before the run)
        self.units = 0

    def __call__(self, done: int, total: int) -> None:
        if self.lines is not None:
            self.units += done
            shown = self.entries or total
            self.lines.update(min(self.units, total) * shown // max(1, total), shown)
        if not self.bar_on or (total < self.THRESHOLD and not self.always):
            return
        if self.bar is None:
            self._start_bar(description="exact reference", total=total)
        self.bar.advance(self.task, done)


class SweepProgress(_Shown):
    """The progress of a sweep, in cases: called with each case's label before it runs, the
    number of cases set as :attr:`total` by :func:`smcheck.sweep.run_sweep` before the first
    (``None`` shows "done/?" on the bar)."""

    def __init__(self, mode: str = "auto", quiet: bool = False, no_color: bool = False, **kw):
        super().__init__(mode, quiet, no_color, **{"command": "sweep", "unit": "cases", **kw})
        self.total: int | None = None
        self.started = 0

    def __call__(self, label: str) -> None:
        self.started += 1
        if self.lines is not None:
            self.lines.update(self.started - 1, self.total, note=label)
        if not self.bar_on:
            return
        if self.bar is None:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

            self._start_bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), description="sweep", total=self.total)
        else:
            self.bar.advance(self.task, 1)
        self.bar.update(self.task, description=f"sweep: {label}")
