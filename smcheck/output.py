"""Where a report goes: stdout, or the file of ``--output`` (and ``--junit``), written whole or
not at all.

Light to import (the standard library, :mod:`smcheck.console`; rich loads only to render), so
that the command line, which names :func:`output_path` as an option's callback, starts fast.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Callable, NamedTuple, Optional

from .console import make_console
from .exceptions import InputError, SmcheckError


class Destination(NamedTuple):
    """Where a report goes: ``path`` (--output: a file; None or - for stdout) and
    ``no_color`` (--no-color)."""

    path: Optional[str] = None
    no_color: bool = False


def _to_file(path: Optional[str]) -> bool:
    return path is not None and path != "-"


def output_path(path: Optional[str]) -> Optional[str]:
    """``--output``'s callback: refuse at once, before the run, a path that cannot be written
    (a directory, a missing directory, no permission), with one line. ``-`` is stdout."""
    return writable(path, "--output") if _to_file(path) else path


def writable(path: str, option: str) -> str:
    """``path`` when a file can be written there, else an :class:`InputError` naming
    ``option``."""
    if not path:
        raise InputError(f"{option}: give a file path (or - for standard output)")
    try:
        target = os.path.realpath(path)
        parent = os.path.dirname(target)
        if os.path.isdir(target):
            why = errno.EISDIR
        elif not os.path.exists(parent):
            why = errno.ENOENT
        elif not os.path.isdir(parent):
            why = errno.ENOTDIR
        elif os.path.exists(target) and not os.path.isfile(target):  # /dev/null, a FIFO
            why = 0 if os.access(target, os.W_OK) else errno.EACCES
        else:
            why = 0 if os.access(parent, os.W_OK | os.X_OK) else errno.EACCES
    except ValueError:  # a NUL byte
        raise InputError(f"{option} {path!r}: not a valid file path") from None
    if why:
        raise InputError(f"{option} {path}: cannot write ({os.strerror(why)})")
    return path


def write_file(path: str, text: str, option: str) -> None:
    """Write ``text`` to ``path`` whole or not at all: into a temporary file beside it, renamed
    over it when complete (through a symbolic link, to the file it names). A device or a pipe
    (``/dev/stdout``, a FIFO) is written to directly. An error is one :class:`SmcheckError`
    line that names ``option``."""
    import tempfile  # not at start-up: it loads random

    try:
        target = os.path.realpath(path)
        if os.path.exists(target) and not os.path.isfile(target) and not os.path.isdir(target):
            with open(target, "w", encoding="utf-8") as fh:
                fh.write(text)
            return
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target),
                                   prefix=f".{os.path.basename(target)}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 is not what open() gives
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as exc:
        raise SmcheckError(f"{option} {path}: cannot write ({exc.strerror or exc})") from None
    except ValueError:  # a path with a NUL byte
        raise SmcheckError(f"{option} {path!r}: not a valid file path") from None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def show(to: Destination, *, quiet: bool, draw: Callable[[object], None],
         text: Optional[Callable[[], str]] = None) -> None:
    """The report, on stdout or into the file ``to.path``: ``text()`` (the JSON) when given,
    else what ``draw(console)`` renders — on a terminal in colour unless ``to.no_color``; into
    the file as plain text at $COLUMNS (120) characters, what a redirected stdout gets.
    ``quiet`` prints nothing on stdout; the file is still written."""
    if not _to_file(to.path):
        if quiet:
            return
        if text is not None:
            sys.stdout.write(text())
        else:
            draw(make_console(no_color=to.no_color))
        return
    if text is not None:
        body = text()
    else:
        import io

        buf = io.StringIO()
        draw(make_console(file=buf))
        body = buf.getvalue()
    write_file(to.path, body, "--output")
