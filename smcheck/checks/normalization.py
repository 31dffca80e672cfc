"""The normalization check: each row of a computed softmax (log-softmax: after exp) sums to 1
within the error of a correct sum (smcheck.tolerance.normalization_allowance), the rows whose
equal terms make that sum drift with its wider allowance (smcheck.coherence)."""

from __future__ import annotations

import numpy as np

from ..coherence import drift_finding, with_coherence
from ..errors_ulp import error_ratio
from ..results import CheckResult, Failure, Finding
from ..sentences import pair
from ..tolerance import NORMALIZATION_FORMULA, normalization_allowance
from .common import fmt, score
from .forward import ForwardCase


def forward_normalization(case: ForwardCase) -> CheckResult:
    """Each row's sum against the summation error of a correct implementation (never the
    entries' allowances added up, which reach 1 on wide inputs)."""
    cmp = case.main
    th, tl, finite = case.computed_sums()  # exact to 2^-100
    err = sum_errors(th, tl, finite)[1]
    ex = case.exact
    tried = []  # (G, allowance): the usual one, then the drifting sums' where any

    def make(G):  # rows of equal terms: their sum's own allowance
        tried.append((G, normalization_allowance(ex.d, ex.s_hi, case.info, case.log, case.ftz,
                                                 coherent=G)))
        return tried[-1][1]

    allowed = with_coherence(make, ex.d if case.stats is None else None, case.info,
                             lambda a: ~(err <= a))
    usual = tried[0][1]
    drift = drift_finding(tried[-1][0], ex.d, case.rows,
                          lambda r: f"|sum - 1| = {fmt(err[r])}, allowed {fmt(allowed[r])}, "
                          f"{fmt(usual[r])} for distinct terms")
    if cmp.tolerance.source == "user":  # the user's looser entries loosen their sum
        a = np.where(np.isfinite(cmp.allowed), cmp.allowed, 0.0)
        allowed = np.maximum(allowed, np.sum(a * ex.s_hi if case.log else a, -1))
    res = normalization_result(case, th, tl, finite, allowed)
    if drift is not None:
        res.findings.append(drift)
    return res


def sum_errors(th, tl, finite) -> tuple[np.ndarray, np.ndarray]:
    """Each row's computed total (nan where a term is not finite) and |total - 1| (inf
    there), from the sum as a pair (th, tl)."""
    with np.errstate(over="ignore", invalid="ignore"):
        totals = np.where(finite, th + tl, np.nan)
        err = np.abs((th - 1.0) + tl)
        err = np.where(np.isnan(totals), np.nan, err)
        err = np.where(np.isnan(err), np.inf, err)
    return totals, err


def normalization_result(case: ForwardCase, th, tl, finite, allowed) -> CheckResult:
    """The normalization check from each row's sum of the computed terms (s_i, or exp(y_i))
    as a pair (th, tl), whether every term was finite, and the allowance of the sum."""
    info = case.info
    cmp = case.main
    what = "|sum_i exp(y_i) - 1|" if case.log else "|sum_i s_i - 1|"
    totals, err = sum_errors(th, tl, finite)
    ok = err <= allowed
    ratio = error_ratio(err, allowed)
    r = int(np.argmax(ratio))
    mx = float(np.max(err))
    shown, allow_shown = pair(float(err[r]), float(allowed[r]))
    res = CheckResult(
        name="normalization", passed=bool(np.all(ok)), max_abs_err=mx, max_rel_err=mx,
        max_ulp=mx / info.eps,
        worst={"row": int(case.rows[r]), "index": None, "ratio": score(ratio, r)},
        tolerance={"source": cmp.tolerance.source, "formula": NORMALIZATION_FORMULA[case.log],
                   "unit_roundoff": info.u, "atol": float(np.max(allowed))},
        measured=f"{what} = {shown}", allowed=allow_shown,
        statement=f"each row of the computed {case.quantity} sums to 1"
        + (" after exp" if case.log else "") + " within the error of a correct sum",
        score=score(ratio, r))
    res.merge_data["row_count"] = int(allowed.size)
    if not res.passed:
        stall = info.name if info.p < 24 and totals[r] > 1 + allowed[r] else None
        res.failures.append(Failure(
            "normalization", row=int(case.rows[r]), error=float(err[r]),
            allowance=float(allowed[r]),
            extra={"what": what, "sum": float(totals[r]), "stall_dtype": stall}))
    vacuous = allowed >= 1
    if vacuous.any():
        res.findings.append(Finding(
            "unresolvable", int(vacuous.sum()), int(allowed.size),
            "{count} row{s} cannot be judged in " + info.name + ": a correct sum's error "
            "reaches 1 there (e.g. {example})",
            f"row {case.rows[int(np.argmax(vacuous))]}, allowed {fmt(np.max(allowed))}"))
    return res
