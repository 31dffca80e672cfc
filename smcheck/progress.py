"""The progress bars of the command line: transient rich bars on stderr, shown only on a
terminal. rich loads when a bar is first drawn, so importing this module stays light.
"""

from __future__ import annotations

import sys

from .console import make_console


class Progress:
    """A transient rich progress bar on stderr, shown only on a terminal for long work."""

    THRESHOLD = 30_000  # reference entries: about a second of mpmath work

    def __init__(self, enabled: bool, no_color: bool = False):
        self.enabled = enabled and sys.stderr.isatty()
        self.no_color = no_color
        self.bar = None
        self.task = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total < self.THRESHOLD:
            return
        if self.bar is None:
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(console=make_console(stderr=True, no_color=self.no_color),
                                    transient=True)
            self.task = self.bar.add_task("exact reference", total=total)
            self.bar.start()
        self.bar.advance(self.task, done)

    def close(self):
        if self.bar is not None:
            self.bar.stop()


class SweepProgress:
    """A rich progress bar on stderr (terminal only) that counts sweep cases: "done/total",
    the total set by :func:`smcheck.sweep.run_sweep` before the first case (``None`` shows
    "done/?")."""

    def __init__(self, enabled: bool, no_color: bool = False):
        self.enabled = enabled and sys.stderr.isatty()
        self.no_color = no_color
        self.total: int | None = None
        self.bar = None
        self.task = None

    def __call__(self, label: str) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress,
                                       TextColumn, TimeElapsedColumn)

            self.bar = RichProgress(TextColumn("{task.description}"), BarColumn(),
                                    MofNCompleteColumn(), TimeElapsedColumn(),
                                    console=make_console(stderr=True, no_color=self.no_color),
                                    transient=True)
            self.task = self.bar.add_task("sweep", total=self.total)
            self.bar.start()
        else:
            self.bar.advance(self.task, 1)
        self.bar.update(self.task, description=f"sweep: {label}")

    def close(self):
        if self.bar is not None:
            self.bar.stop()
