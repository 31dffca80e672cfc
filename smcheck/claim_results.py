"""How each claim of ``smcheck claims`` is judged and reported: what it states (``CLAIMS``),
the scale its discrepancies are relative to (``SCALES``), the tally of its worst discrepancy
over all rows and entries, and the CheckResult that tally becomes (see :mod:`smcheck.claims`).
"""

from __future__ import annotations

import math

from .results import CheckResult

CLAIMS: dict[str, str] = {
    "shift_invariance":
        "softmax(x + c) = softmax(x): exp(x_i + c) / sum_j exp(x_j + c), unshifted, equals "
        "softmax(x) for c = +-1000, pi, +-1e6, -max(x)",
    "jacobian_formula":
        "J = diag(s) - s s^T: the complex-step derivative of softmax equals the formula",
    "jacobian_symmetry":
        "J = J^T: the complex-step derivative of softmax is symmetric",
    "log_softmax_jacobian":
        "J_log = I - 1 s^T: the complex-step derivative of log-softmax has entry (i,k) "
        "= [i=k] - s_k",
    "vjp_formula":
        "z = v^T J = s * (v - <v, s>) and sum_i z_i = 0: the complex-step VJP equals the formula",
    "loss_gradient":
        "D_z l = -t / z for l(z, t) = -sum_i t_i log z_i: the complex-step gradient at "
        "z = softmax(x) equals the formula",
    "zero_condition":
        "z_k = 0 <=> v_k = <v, s> (s_k > 0): v_k set to <v, s> makes the complex-step z_k vanish, "
        "and z_k = s_k (v_k - <v, s>) is nonzero otherwise",
}

#: What each claim's discrepancies are relative to (its tolerance's ``scale``).
SCALES = {
    "shift_invariance": "s_i",
    "jacobian_formula": "s_k (column k of J is s_k (e_k - s))",
    "jacobian_symmetry": "s_i s_k",
    "log_softmax_jacobian": "s_k off the diagonal, 1 on it",
    "vjp_formula": "s_k max(1, max|v|) for z_k; max(1, max|v|) for sum_i z_i",
    "loss_gradient": "max(1, |t_k|) / z_k",
    "zero_condition": "s_k max(1, max|v|)",
}


class Tally:
    """The worst discrepancy of one claim over all rows and entries."""

    def __init__(self):
        self.worst = None  # (ratio, row, index, actual, claimed, what)
        self.max_abs = 0
        self.subset = []  # (row, checked, n) where only some columns were checked
        self.failures = []

    def add(self, row, index, actual, claimed, scale, what=""):
        err = abs(actual - claimed)
        ratio = err / scale if scale else (0 if not err else math.inf)
        if err > self.max_abs:
            self.max_abs = err
        if self.worst is None or ratio > self.worst[0]:
            self.worst = (ratio, row, index, actual, claimed, what)

    def add_many(self, row, indices, actual, claimed, scale, what=""):
        """Entries sharing one scale: only their largest difference can be the worst."""
        errs = [abs(a - c) for a, c in zip(actual, claimed)]
        if errs:
            j = max(range(len(errs)), key=errs.__getitem__)
            self.add(row, indices[j], actual[j], claimed[j], scale, what)


def mp_text(val, digits=3) -> str:
    """An mpmath number as text, also where float() would underflow to 0 or overflow."""
    import mpmath

    return mpmath.nstr(val, digits) if val else "0"


def claim_result(name, tally, tol, dps, wp, scale, extra=None, notes=()):
    """The CheckResult of claim ``name``: passed if its worst discrepancy is at most ``tol``
    and nothing failed outright."""
    import mpmath

    ratio, row, index, actual, claimed, what = tally.worst or (mpmath.mpf(0), 0, None, 0, 0, "")
    passed = ratio <= tol and not tally.failures
    failures = list(tally.failures)
    if ratio > tol:
        where = f"[{index[0]}, {index[1]}]" if isinstance(index, list) else f"[{index}]"
        failures.insert(0, (f"row {row}{where if index is not None else ''}: {what}: "
                            f"{mp_text(actual, 12)} vs {mp_text(claimed, 12)}, discrepancy "
                            f"{mp_text(ratio)} > {mp_text(tol)} (relative to {scale})"))
    all_notes = list(notes)
    if tally.subset:
        r, c, n = tally.subset[0]
        more = f" (and {len(tally.subset) - 1} more rows)" if len(tally.subset) > 1 else ""
        all_notes.append(f"checked {c} of {n} columns, spread evenly with the largest "
                         f"probability's, in row {r}{more}")
    details = {"discrepancy": mp_text(ratio), "abs_difference": mp_text(tally.max_abs),
               "working_dps": wp}
    details.update(extra or {})
    return CheckResult(
        name=name, passed=bool(passed), max_abs_err=float(tally.max_abs),
        max_rel_err=float(ratio), max_ulp=None,
        tolerance={"formula": "discrepancy <= 10^-(dps-5)", "atol": float(tol),
                   "atol_text": mp_text(tol), "dps": dps, "scale": scale},
        worst={"row": row, "index": index}, measured=mp_text(ratio), allowed=mp_text(tol),
        statement=CLAIMS[name], failures=failures, notes=all_notes, details=details)
