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

from ..results import CheckResult, Report
from . import common, forward, jacobian, loss, merge, vjp

CheckFn = Callable[[object], "CheckResult | None"]

TABLE: dict[str, list[tuple[str, CheckFn, merge.Hook | None]]] = {
    "forward": [
        ("reference", forward.forward_reference, None),
        ("normalization", forward.forward_normalization, None),
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


def run_checks(command: str, case) -> list[CheckResult]:
    """The checks of ``command`` on ``case``, in the table's order (those that apply)."""
    out = []
    for name, fn, _ in TABLE.get(command, []):
        res = fn(case)
        if res is not None:
            assert res.name == name
            out.append(res)
    return out


def merge_reports(reports: list[Report], shape: list[int], top: int = 10) -> Report:
    """One report from the reports of consecutive chunks of rows of one command."""
    hooks = {name: m for name, _, m in TABLE.get(reports[0].command, []) if m is not None}
    return merge.merge(reports, shape, top, hooks)
