"""The rich console smcheck prints to.

Light to import (rich loads on the first call), unlike :mod:`smcheck.report`, whose
``make_console`` is the same function: the progress bars use this one, so that ``smcheck
--help``, which imports them, does not load the report and its results.
"""

from __future__ import annotations

import os
import sys

#: the width of a report that does not go to a terminal, unless $COLUMNS says otherwise
DEFAULT_WIDTH = 120


def columns() -> int:
    """$COLUMNS when it is a positive whole number, else :data:`DEFAULT_WIDTH`."""
    try:
        width = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        return DEFAULT_WIDTH
    return width if width > 0 else DEFAULT_WIDTH


def make_console(stderr: bool = False, no_color: bool = False, file=None):
    """A console on stdout (or stderr, or ``file``): the terminal's width, else $COLUMNS (120
    by default). Plain text, without colour or any other styling (bold, dim), with
    ``no_color`` (--no-color), with $NO_COLOR set, and always into ``file`` (--output)."""
    from rich.console import Console

    stream = file if file is not None else sys.stderr if stderr else sys.stdout
    plain = no_color or file is not None or os.environ.get("NO_COLOR", "") != ""
    width = None if file is None and stream.isatty() else columns()
    return Console(file=stream, width=width, highlight=False, soft_wrap=False,
                   color_system=None if plain else "auto",
                   force_terminal=False if file is not None else None)
