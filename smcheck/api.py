"""The Python API for test suites: run a check, get a result object; or assert in one line.

    import smcheck
    report = smcheck.check_forward(x, impl=my_softmax, dtype="float32")
    assert report.passed, smcheck.render_text(report)

    smcheck.assert_correct(my_softmax, x, dtype="float32")              # forward
    smcheck.assert_correct(my_vjp, x, command="vjp", v=v)               # f(x, v) -> z

An implementation is a callable (called once per row, like ``--impl module:function``), a
built-in or adapter name ("stable", "torch", ...), or an :class:`~smcheck.impls.Implementation`.
"""

from __future__ import annotations

from . import run
from .exceptions import InputError
from .report import render_text


class SoftmaxCheckError(AssertionError):
    """Raised by :func:`assert_correct`; ``report`` holds the result, the message the text."""

    def __init__(self, message: str, report):
        super().__init__(message)
        self.report = report


def check(command: str, x=None, impl="stable", **options):
    """Run ``command`` ("forward", "log_softmax", "jacobian", "vjp", "loss") and return its
    :class:`~smcheck.results.Report` (``.passed``, ``.checks`` with errors and worst entries)."""
    fns = {"forward": run.run_forward, "jacobian": run.run_jacobian, "vjp": run.run_vjp,
           "loss": run.run_loss}
    if command == "log_softmax":
        command, options = "forward", {**options, "log": True}
    if command not in fns:
        raise InputError(f"unknown command '{command}' (use forward, log_softmax, jacobian, "
                         "vjp or loss)")
    return fns[command](x, impl=impl, **options)


def assert_correct(impl, x, *, command: str = "forward", top: int = 5, **options) -> None:
    """Raise :class:`SoftmaxCheckError` (an AssertionError) with smcheck's readable report
    unless every check of ``command`` passes for ``impl`` on ``x``."""
    report = check(command, x, impl=impl, top=top, **options)
    if not report.passed:
        failed = ", ".join(c.name for c in report.checks if not c.passed)
        raise SoftmaxCheckError(f"smcheck {report.command}: {failed} failed\n"
                                + render_text(report, top), report)
