"""The checks, command by command, in one explicit table.

``TABLE[command]`` lists ``(check name, function, merge)`` in report order. A function takes
the command's case (inputs, the implementation's values, the exact reference) and returns a
:class:`~smcheck.results.CheckResult`, or None when the check does not apply. ``merge``, where
given, finishes a check whose headline the generic merge of chunks (:mod:`.merge`) cannot
compute (a count, a per-shift table). Check names are SPEC's "Check names".

* :mod:`.forward` — softmax / log-softmax, and the ``overflow`` block;
* :mod:`.jacobian`, :mod:`.vjp`, :mod:`.loss` — the derivative commands;
* :mod:`.common` — comparison to verdict, findings, shift invariance (every command);
* :mod:`.fd` — finite-difference results and sum checks (the derivatives);
* :mod:`.merge` — one report from the reports of chunks of rows.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..beside import can_fork, forked
from ..blocks import threads
from ..results import CheckResult, Report
from . import common, forward, jacobian, loss, merge, normalization, vjp

CheckFn = Callable[[object], "CheckResult | None"]

TABLE: dict[str, list[tuple[str, CheckFn, merge.Hook | None]]] = {
    "forward": [
        ("reference", forward.forward_reference, None),
        ("normalization", normalization.forward_normalization, None),
        ("shift_invariance", forward.forward_shift_invariance, common.merge_shifts),
        ("finite", forward.forward_finite, forward.merge_finite),
    ],
    "jacobian": [
        ("reference", jacobian.jacobian_reference, None),
        ("finite_difference", jacobian.jacobian_fd, None),
        ("symmetry", jacobian.jacobian_symmetry, None),
        ("zero_sums", jacobian.jacobian_zero_sums, jacobian.merge_zero_sums),
        ("shift_invariance", jacobian.jacobian_shift_invariance, common.merge_shifts),
    ],
    "vjp": [
        ("reference", vjp.vjp_reference, None),
        ("finite_difference", vjp.vjp_fd, None),
        ("zero_sum", vjp.vjp_zero_sum, None),
        ("shift_invariance", vjp.vjp_shift_invariance, common.merge_shifts),
    ],
    "loss": [
        ("reference", loss.loss_reference, None),
        ("finite_difference", loss.loss_fd, None),
        ("zero_condition", loss.loss_zero_condition, loss.merge_zero_condition),
        ("domain", loss.loss_domain, loss.merge_domain),
        ("shift_invariance", loss.loss_shift_invariance, common.merge_shifts),
    ],
}


def check_names(command: str) -> list[str]:
    return [name for name, _, _ in TABLE.get(command, [])]


#: checks that build cases of their own (the implementation and the exact values at shifted
#: inputs) and only read the command's case: with several cores they run beside the others
BESIDE = ("shift_invariance",)
#: entries of x from which a thread for them pays (below, a few milliseconds of work)
BESIDE_MIN = 1024


def run_checks(command: str, case, meanwhile: Callable[[], None] | None = None
               ) -> list[CheckResult]:
    """The checks of ``command`` on ``case``, in the table's order (those that apply). On a
    big case, the BESIDE checks run meanwhile: in a forked process where a core is spare and
    the implementation allows it (:mod:`smcheck.beside`), else on a thread of their own when
    the blocks have several (each check's numbers are its own: the same results either way).
    ``meanwhile``: the command's other work, done here after the other checks (while a forked
    check may still run). In one process the BESIDE checks run first (less memory at once)."""
    table = TABLE.get(command, [])
    results: dict[str, CheckResult | None] = {}
    beside = [row for row in table if row[0] in BESIDE]
    if beside and can_fork(case, np.size(case.X)):
        children = {name: forked(fn, case) for name, fn, _ in beside}
        try:
            for name, fn, _ in table:
                if name not in children:
                    results[name] = fn(case)
            if meanwhile is not None:
                meanwhile()
                meanwhile = None
            results.update((name, c.wait()) for name, c in children.items())
        except BaseException:  # a check here failed, or we were interrupted: none is wanted
            for c in children.values():
                c.cancel()
            raise
    elif (beside and threads() > 1 and getattr(case.impl, "thread_safe", False)
            and np.size(case.X) >= BESIDE_MIN):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(beside), thread_name_prefix="smcheck-check") as ex:
            futures = {name: ex.submit(fn, case) for name, fn, _ in beside}
            for name, fn, _ in table:
                if name not in futures:
                    results[name] = fn(case)
            results.update((name, f.result()) for name, f in futures.items())
    else:
        # Checked in one process, the BESIDE checks run first: their shifted cases are freed
        # before the command's own comparisons are made, which then reuse that memory instead of
        # touching more (benchmarks/beside_first.py: a forward run on a row of 10^6 float64
        # peaks at 131 instead of 172 MB). The report's order is the table's.
        # What they call the implementation with is recorded apart, as in a forked process:
        # the reference check's note of how it ran (warnings, calls) counts the values judged.
        impl = case.impl
        case.impl = impl.for_rows(getattr(impl, "row_labels", None))
        try:
            results = {name: fn(case) for name, fn, _ in beside}
        finally:
            case.impl = impl
        results.update((name, fn(case)) for name, fn, _ in table if name not in results)
    if meanwhile is not None:
        meanwhile()
    out = []
    for name, _, _ in table:
        res = results[name]
        if res is not None:
            assert res.name == name
            out.append(res)
    return out


def merge_reports(reports: list[Report], shape: list[int], top: int = 10) -> Report:
    """One report from the reports of consecutive chunks of rows of one command."""
    hooks = {name: m for name, _, m in TABLE.get(reports[0].command, []) if m is not None}
    return merge.merge(reports, shape, top, hooks)
