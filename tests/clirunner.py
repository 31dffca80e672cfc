"""``smcheck ARGV`` in this process: the one runner behind the ``cli`` fixture (tests/conftest.py).

A plain module, not only a fixture, so that hypothesis tests can call :func:`run_cli` directly
(a function-scoped fixture inside ``@given`` is a health-check error). Output is captured with
``contextlib.redirect_stdout``/``redirect_stderr``, not capsys, for the same reason; stdin is an
``io.StringIO`` of ``stdin`` for the run.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from dataclasses import dataclass


def strict_json(text: str):
    """json.loads that refuses the bare NaN / Infinity / -Infinity constants."""

    def refuse(constant):
        raise AssertionError(f"bare {constant} in the JSON output (SPEC: write it as a string)")

    return json.loads(text, parse_constant=refuse)


@dataclass
class Result:
    argv: list
    code: int
    out: str
    err: str

    def json(self):
        """stdout as one JSON document (bare NaN / Infinity refused)."""
        return strict_json(self.out)


def run_cli(*argv, stdin: str = "") -> Result:
    """``smcheck ARGV`` in this process, stdin from ``stdin``; main() must leave through
    SystemExit (its code, None read as 0), any other exception is the traceback a user would
    have seen. SMCHECK_DEBUG is unset for the run (with it, main() re-raises on purpose)."""
    from smcheck.cli import main

    argv = [str(a) for a in argv]
    out, err = io.StringIO(), io.StringIO()
    saved_stdin, sys.stdin = sys.stdin, io.StringIO(stdin)
    debug = os.environ.pop("SMCHECK_DEBUG", None)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(argv)
            except SystemExit as exc:
                code = exc.code
            except Exception as exc:  # noqa: BLE001 - the failure being looked for
                raise AssertionError(f"exception escaped main({argv!r}): "
                                     f"{type(exc).__name__}: {exc}") from exc
            else:
                raise AssertionError(f"main({argv!r}) returned instead of exiting")
    finally:
        sys.stdin = saved_stdin
        if debug is not None:
            os.environ["SMCHECK_DEBUG"] = debug
    return Result(argv, 0 if code is None else code, out.getvalue(), err.getvalue())
