"""The rich console smcheck prints to.

Light to import (rich loads on the first call), unlike :mod:`smcheck.report`, whose
``make_console`` is the same function: the progress bars use this one, so that ``smcheck
--help``, which imports them, does not load the report and its results.
"""

from __future__ import annotations

import os
import sys


def make_console(stderr: bool = False):
    """A console on stdout (or stderr): the terminal's width, else $COLUMNS (120 by default)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else int(os.environ.get("COLUMNS", 120))
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)
