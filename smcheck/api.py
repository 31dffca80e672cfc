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
from .options import Options
from .report import render_text


class SoftmaxCheckError(AssertionError):
    """Raised by :func:`assert_correct`; ``report`` holds the result, the message the text."""

    def __init__(self, message: str, report):
        super().__init__(message)
        self.report = report


def check(command: str, x=None, impl=None, **options):
    """Run ``command`` ("forward", "log_softmax", "jacobian", "vjp", "loss") and return its
    :class:`~smcheck.results.Report` (``.passed``, ``.checks`` with errors and worst entries).

    ``workers=N`` checks the rows of a batch in chunks on N processes (as ``--workers``);
    ``scheduler="dask"`` (a LocalCluster of ``workers`` processes) or ``"tcp://HOST:PORT"``
    on a Dask cluster: the same report as the CLI's with those options."""
    fns = {"forward": run.run_forward, "jacobian": run.run_jacobian, "vjp": run.run_vjp,
           "loss": run.run_loss}
    if command == "log_softmax":
        command, options = "forward", {**options, "log": True}
    if command not in fns:
        raise InputError(f"unknown command '{command}' (use forward, log_softmax, jacobian, "
                         "vjp or loss)")
    comps = {k: options.pop(k) for k in ("v", "t", "z") if k in options}
    comps = {k: a for k, a in comps.items() if a is not None}
    workers = options.pop("workers", None)
    if impl is not None:
        options["impl"] = impl
    o = Options.of(options.pop("options", None), **options)
    if o.scheduler != "local" or workers is not None:  # in chunks of rows (see run_rows)
        return run.check_rows(command, x, o, companions=comps, workers=workers,
                              keep_arrays=True)
    x, comps, o = run.nd_inputs(x, comps, o)
    return run.with_layout(fns[command](x, options=o, **comps), o)


def check_forward(x, options: Options | None = None, **kw):
    """softmax (log-softmax with ``log=True``) of ``x``: a vector, a batch of rows, or an N-d
    array along ``axis``."""
    return check("forward", x, options=options, **kw)


def check_jacobian(x, options: Options | None = None, **kw):
    return check("jacobian", x, options=options, **kw)


def check_vjp(x, v=None, options: Options | None = None, **kw):
    return check("vjp", x, options=options, v=v, **kw)


def check_loss(x=None, t=None, options: Options | None = None, **kw):
    return check("loss", x, options=options, t=t, **kw)


def assert_correct(impl, x, *, command: str = "forward", top: int = 5, **options) -> None:
    """Raise :class:`SoftmaxCheckError` (an AssertionError) with smcheck's readable report
    unless every check of ``command`` passes for ``impl`` on ``x``."""
    report = check(command, x, impl=impl, top=top, **options)
    if not report.passed:
        failed = ", ".join(c.name for c in report.checks if not c.passed)
        raise SoftmaxCheckError(f"smcheck {report.command}: {failed} failed\n"
                                + render_text(report, top), report)
