"""The registry of checks: one place that says which checks a command runs, in which order.

A check is a function ``case -> CheckResult | None`` registered under a command and a stable
name (SPEC "Check names"); None means the check does not apply and is left out of the report.
Checks compute and return results; they never print.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .dtypes import DtypeInfo
from .engine import row_sums_blocked
from .errors_ulp import (Comparison, Overrides, Tolerance, apply_overrides, compare,
                         log_softmax_tolerance, softmax_tolerance, sum_tolerance)
from .impls import Implementation
from .reference import ExactSoftmax, exact_softmax
from .results import LIST_MAX, CheckResult, Entry

CheckFn = Callable[[object], "CheckResult | None"]
REGISTRY: dict[str, list[tuple[str, CheckFn]]] = {}


def register(command: str, name: str):
    """Register ``fn`` as check ``name`` of ``command`` (order of registration = report order)."""

    def deco(fn: CheckFn) -> CheckFn:
        REGISTRY.setdefault(command, []).append((name, fn))
        return fn

    return deco


#: how the merged result of a check that the generic merge cannot finish (counts, lines of
#: its own) is finished, by check name: ``hook(merged, parts, top)``, the chunks' results in
#: row order (parallel.merge_checks)
MERGE: dict[str, Callable[[CheckResult, list[CheckResult]], None]] = {}


def _score(ratio: np.ndarray, pos) -> float:
    """The ratio at the worst entry, nan read as inf (as the worst is chosen)."""
    if pos is None or ratio.size == 0:
        return 0.0
    v = float(ratio[pos])
    return math.inf if math.isnan(v) else v


def check_names(command: str) -> list[str]:
    return [name for name, _ in REGISTRY.get(command, [])]


def run_checks(command: str, case) -> list[CheckResult]:
    out = []
    for name, fn in REGISTRY.get(command, []):
        res = fn(case)
        if res is not None:
            assert res.name == name
            out.append(res)
    return out


# --- shared pieces --------------------------------------------------------------------------


def fmt(v: float, digits: int = 3) -> str:
    if v is None:
        return "-"
    v = float(v)
    if math.isnan(v) or math.isinf(v):
        return str(v)
    return f"{v:.{digits}g}"


def top_entries(cmp: Comparison, X: np.ndarray, rows: np.ndarray, k: int,
                cause: Callable[..., str]) -> list[Entry]:
    """The k entries furthest over (or closest to) their allowance, worst first. Works for
    (rows, n) comparisons (index i) and (rows, n, n) ones (index (i, k); x is x_i)."""
    k = max(int(k), 0)
    flat = cmp.ratio.ravel()
    if k == 0 or flat.size == 0:
        return []
    key = np.where(np.isnan(flat), np.inf, flat) if np.isnan(flat).any() else flat
    if flat.size > k:
        # the k largest; of equal ratios at the cut, the first in row-major order
        kth = np.partition(key, flat.size - k)[flat.size - k]
        above = np.flatnonzero(key > kth)
        idx = np.concatenate([above, np.flatnonzero(key == kth)[:k - above.size]])
    else:
        idx = np.arange(flat.size)
    idx = idx[np.lexsort((idx, -key[idx]))]  # worst first, equal ratios in row-major order
    out = []
    for f in idx:
        pos = np.unravel_index(int(f), cmp.ratio.shape)
        r, rest = int(pos[0]), tuple(int(p) for p in pos[1:])
        index = rest[0] if len(rest) == 1 else rest
        out.append(Entry(row=int(rows[r]), index=index, x=float(X[r, rest[0]]),
                         computed=float(cmp.computed[pos]), reference=float(cmp.ref[pos]),
                         abs_err=float(cmp.abs_err[pos]), rel_err=cmp.rel_err_at(pos),
                         ulp_err=cmp.ulp_err_at(pos), allowed=float(cmp.allowed[pos]),
                         cause=cause(r, *rest)))
    return out


def worst_failure(cmp: Comparison, rows: np.ndarray, cause: str = "") -> str:
    """The one-line summary of a failing comparison: how many entries, and the worst with its
    numbers next to what was allowed (and the cause, when one is known)."""
    w = cmp.worst_index()
    where = f"index {w[1]}" if len(w) == 2 else "entry (" + ", ".join(map(str, w[1:])) + ")"
    return (f"{exceed_words(int((~cmp.ok).sum()), cmp.ok.size)}; worst: "
            f"row {rows[w[0]]}, {where}: computed {fmt(cmp.computed[w], 10)}, exact "
            f"{fmt(cmp.ref[w], 10)}, error {fmt(cmp.abs_err[w])} (allowed "
            f"{fmt(cmp.allowed[w])}, {fmt(cmp.ulp_err_at(w))} ULP)" + (f" — {cause}" if cause else ""))


def exceed_words(bad: int, size: int) -> str:
    return f"{bad} of {size} entries exceed their allowance"


def comparison_result(name: str, cmp: Comparison, info: DtypeInfo, rows: np.ndarray,
                      statement: str) -> CheckResult:
    """A CheckResult carrying a comparison's maxima, worst entry and allowance."""
    w = cmp.worst_index()
    worst = None if w is None else {"row": int(rows[w[0]]),
                                    "index": int(w[1]) if len(w) == 2 else [int(i) for i in w[1:]]}
    m = cmp.maxima()
    bad = int(np.count_nonzero(~cmp.ok))
    measured = f"max {fmt(m['max_ulp'])} ULP, rel {fmt(m['max_rel_err'])}"
    if w is not None:
        a, ref = float(cmp.allowed[w]), abs(float(cmp.ref[w]))
        with np.errstate(over="ignore", invalid="ignore"):
            rel = fmt(a / ref) if 0 < ref < np.inf else "-"
            allowed = f"{fmt(a / float(cmp.ulp[w]))} ULP, rel {rel} (entry {worst['index']})"
    else:
        allowed = "-"
    res = CheckResult(name=name, passed=cmp.passed, max_abs_err=m["max_abs_err"],
                      max_rel_err=m["max_rel_err"], max_ulp=m["max_ulp"],
                      tolerance=cmp.tolerance.to_json(info), worst=worst, measured=measured,
                      allowed=allowed, statement=statement)
    res.details["failing_entries"] = bad
    res.score = _score(cmp.ratio, w)
    res.merge_data["entries"] = int(cmp.ok.size)
    return res


# --- forward ---------------------------------------------------------------------------------


def exp_overflows(X: np.ndarray, info: DtypeInfo) -> np.ndarray:
    """Where exp(x_i) itself overflows in the dtype (the naive formula's failure)."""
    with np.errstate(over="ignore"):
        if info.name == "float64":
            return np.isinf(np.exp(X)) & (X > 0)
        return np.exp(X) >= info.max * (1 + info.u)


def exp_underflows(X: np.ndarray, info: DtypeInfo) -> np.ndarray:
    """Where exp(x_i) rounds to 0 in the dtype."""
    with np.errstate(under="ignore", over="ignore"):
        if info.name == "float64":
            return np.exp(X) == 0
        return np.exp(X) <= info.eta / 2


@dataclass
class ForwardCase:
    """Everything the forward checks look at. X holds the defined rows, rounded to the dtype
    (as float64); ``rows`` their indices in the user's input."""

    X: np.ndarray
    rows: np.ndarray
    info: DtypeInfo
    impl: Implementation
    log: bool
    metric: str
    overrides: Overrides | None
    dps: int
    computed: np.ndarray
    exact: ExactSoftmax
    top: int = 10
    progress: Callable[[int], None] | None = None
    engine: str = "auto"
    _main: Comparison | None = field(default=None, repr=False)
    _scaled_ok: np.ndarray | None = field(default=None, repr=False)

    @property
    def quantity(self) -> str:
        return "log-softmax" if self.log else "softmax"

    def tolerance(self, X: np.ndarray, exact: ExactSoftmax, metric: str | None = None
                  ) -> Tolerance:
        m = metric or self.metric
        if self.log:
            tol = log_softmax_tolerance(X, exact.d, exact.s_hi, exact.y_hi, self.info, m)
        else:
            tol = softmax_tolerance(X, exact.d, exact.s_hi, self.info)
        return apply_overrides(tol, self.overrides)

    def compare(self, X: np.ndarray, computed, exact: ExactSoftmax, metric: str | None = None
                ) -> Comparison:
        hi, lo = (exact.y_hi, exact.y_lo) if self.log else (exact.s_hi, exact.s_lo)
        return compare(computed, hi, lo, self.tolerance(X, exact, metric), self.info)

    @property
    def main(self) -> Comparison:
        if self._main is None:
            self._main = self.compare(self.X, self.computed, self.exact)
        return self._main

    def evaluate(self, X64: np.ndarray) -> np.ndarray:
        """The implementation at X64 (float64 values already representable in the dtype)."""
        out = self.impl.softmax(X64.astype(self.info.np_dtype), self.info, self.log)
        out = np.asarray(out)
        if out.shape != X64.shape:
            from .exceptions import ImplementationError

            raise ImplementationError(f"--impl {self.impl.name} returned shape {out.shape} for "
                                      f"an input of shape {X64.shape}")
        return out.astype(np.float64, copy=False)

    def cause(self, X: np.ndarray, cmp: Comparison, r: int, i: int) -> str:
        """Why entry (r, i) is off, in words (empty when it is within its allowance)."""
        c, ref = cmp.computed[r, i], cmp.ref[r, i]
        info = self.info
        if np.isnan(c):
            ov = np.flatnonzero(exp_overflows(X[r], info))
            if ov.size:
                return (f"nan: exp(x_j) overflows for x_j > log(realmax) = {info.log_max:.2f} "
                        f"(indices {_ilist(ov)}), inf/inf = nan")
            if np.all(exp_underflows(X[r], info)):
                return (f"nan: every exp(x_j) underflows (x_j < log(min subnormal) = "
                        f"{info.log_eta:.2f}), 0/0 = nan")
            return "nan"
        if cmp.ok[r, i]:
            return ""
        if np.isinf(c):
            return f"overflow: computed {c}, exact {fmt(ref)}"
        if not self.log and c == 0 and ref >= info.tiny:
            return f"underflow: computed 0, exact {fmt(ref)} is a normal number"
        if not self.log and 0 < abs(c) < info.tiny <= abs(ref):
            return "gradual underflow: computed a subnormal, exact is normal"
        if self.log and self.metric == "strict" and cmp is self._main:
            if self._scaled_ok is None:
                self._scaled_ok = self.compare(self.X, self.computed, self.exact, "scaled").ok
            if self._scaled_ok[r, i]:
                return "cancellation: relative digits lost (within the scaled bound)"
        return f"error {fmt(cmp.ratio[r, i])} x its allowance"


def _ilist(idx, limit: int = 8) -> str:
    idx = [int(i) for i in idx]
    s = ", ".join(str(i) for i in idx[:limit])
    return s + (f", ... ({len(idx)} in all)" if len(idx) > limit else "")


@register("forward", "reference")
def forward_reference(case: ForwardCase) -> CheckResult:
    cmp = case.main
    res = comparison_result(
        "reference", cmp, case.info, case.rows,
        f"{case.impl.name} {case.quantity} in {case.info.name} agrees with the exact "
        f"{case.quantity} of the rounded input, entry by entry")
    res.entries = top_entries(cmp, case.X, case.rows, case.top,
                              lambda r, i: case.cause(case.X, cmp, r, i))
    bad = ~cmp.ok
    if bad.any():
        res.failures.append(worst_failure(cmp, case.rows))
        nonfinite_rows = bad.any(axis=-1) & ~np.all(np.isfinite(cmp.computed), axis=-1)
        for r in np.flatnonzero(nonfinite_rows)[:5]:
            ov = np.flatnonzero(exp_overflows(case.X[r], case.info))
            if ov.size:
                res.failures.append(
                    f"row {case.rows[r]}: exp(x_i) overflows at indices {_ilist(ov)} (x_i > "
                    f"log(realmax) = {case.info.log_max:.2f} in {case.info.name}): shift by "
                    "max(x) to avoid it")
            elif np.all(exp_underflows(case.X[r], case.info)):
                res.failures.append(
                    f"row {case.rows[r]}: every exp(x_i) underflows (x_i < log(min subnormal) "
                    f"= {case.info.log_eta:.2f} in {case.info.name}): shift by max(x)")
    user_tol = case.overrides is not None and case.overrides.any
    if case.log and case.metric == "scaled" and not user_tol:
        strict = case.compare(case.X, case.computed, case.exact, "strict")
        lost = cmp.ok & ~strict.ok
        if lost.any():
            idx = np.argwhere(lost)
            res.details["cancelled"] = [[int(case.rows[r]), int(i)] for r, i in idx[:LIST_MAX]]
            r, i = idx[np.argmax(strict.ratio[lost])]
            res.notes.append(
                f"{len(idx)} entr{'y' if len(idx) == 1 else 'ies'} lost relative accuracy to "
                f"cancellation, e.g. row {case.rows[r]}, index {i}: exact {fmt(strict.ref[r, i], 6)}"
                f", computed {fmt(strict.computed[r, i], 6)} (relative error "
                f"{fmt(strict.rel_err_at((r, i)))}, strict bound {fmt(strict.allowed[r, i] / max(abs(strict.ref[r, i]), 1e-300))}). "
                "x_max - logsumexp(x) cancels when softmax saturates; -log1p(sum over j != max "
                "of exp(x_j - max)) keeps the digits. Within the scaled bound; --metric strict "
                "fails it.")
    return res


def _plain_terms(t):
    return t, np.zeros_like(t), np.ones(t.shape, dtype=bool)


@register("forward", "normalization")
def forward_normalization(case: ForwardCase) -> CheckResult:
    cmp = case.main
    info = case.info
    with np.errstate(over="ignore", invalid="ignore"):
        if case.log:
            terms = np.exp(case.computed)
            allowed = sum_tolerance(cmp.allowed, case.exact.s_hi) + 4 * 2.0 ** -53
            what = "|sum_i exp(y_i) - 1|"
        else:
            terms = case.computed
            allowed = sum_tolerance(cmp.allowed)
            what = "|sum_i s_i - 1|"
        th, tl = row_sums_blocked(_plain_terms, (terms,), terms.shape)  # exact to 2^-100
        totals = np.where(np.all(np.isfinite(terms), axis=-1), th + tl, np.nan)
        err = np.abs((th - 1.0) + tl)
        err = np.where(np.isnan(totals), np.nan, err)
        err = np.where(np.isnan(err), np.inf, err)
    ok = err <= allowed
    ratio = np.where(allowed > 0, err / np.where(allowed > 0, allowed, 1), np.inf)
    r = int(np.argmax(ratio))
    mx = float(np.max(err))
    res = CheckResult(
        name="normalization", passed=bool(np.all(ok)), max_abs_err=mx, max_rel_err=mx,
        max_ulp=mx / info.eps, worst={"row": int(case.rows[r]), "index": None},
        tolerance={"source": cmp.tolerance.source,
                   "formula": "sum over the row of each entry's allowance"
                   + (" weighted by s_i" if case.log else ""),
                   "atol": float(np.max(allowed))},
        measured=f"{what} = {fmt(err[r])} (row {case.rows[r]})", allowed=fmt(allowed[r]),
        statement=f"each row of the computed {case.quantity} sums to 1"
        + (" after exp" if case.log else ""), score=_score(ratio, r))
    if not res.passed:
        res.failures.append(f"row {case.rows[r]}: {what} = {fmt(err[r])} exceeds "
                            f"{fmt(allowed[r])} (sum = {fmt(totals[r], 17)})")
    return res


def shift_targets(info: DtypeInfo) -> dict[str, float]:
    """Where the shifts put max(x + c): just past the overflow threshold log(realmax), and
    with every entry below the underflow threshold log(min subnormal)."""
    return {"overflow": info.log_max * 1.02 + 1.0, "underflow": info.log_eta * 1.02 - 1.0}


@register("forward", "shift_invariance")
def forward_shift_invariance(case: ForwardCase) -> CheckResult:
    info = case.info
    targets = shift_targets(info)
    a = np.max(case.X, axis=-1, keepdims=True)
    statement = (
        f"{case.quantity}(x + c) agrees with the exact {case.quantity} of the rounded x + c, "
        f"for c putting max(x + c) at {fmt(targets['overflow'], 4)} (past log(realmax) = "
        f"{info.log_max:.2f}) and at {fmt(targets['underflow'], 4)} (all x below "
        f"log(min subnormal) = {info.log_eta:.2f})")
    # each shift's arrays are dropped once its result is taken: the second shift does not
    # hold the first's (a fifth of the peak memory of a 10^6-entry forward run: 266 -> 209 MB)
    res, worst_key, worst_label, per_shift, by_shift = None, None, None, [], {}
    for label, target in targets.items():
        with np.errstate(over="ignore", invalid="ignore"):
            Xs = info.round(case.X + (target - a)).astype(np.float64)
        if case.exact.engine == "double-double" and case.info.name == "float64":
            from .engine import shifted_softmax_dd

            exact = shifted_softmax_dd(case.X, (target - a)[:, 0], case.exact)
            exact.dps = case.dps
            if case.progress is not None:
                case.progress(Xs.size)
        else:
            exact = exact_softmax(Xs, case.dps, case.progress, engine=case.engine)
        cmp = case.compare(Xs, case.evaluate(Xs), exact)
        one = comparison_result("shift_invariance", cmp, info, case.rows, statement)
        per_shift.append({"shift": label, "max_of_shifted_x": float(target),
                          "passed": one.passed, "max_abs_err": one.max_abs_err,
                          "max_rel_err": one.max_rel_err, "max_ulp": one.max_ulp,
                          "reference": exact.precision, "reference_bound": exact.rel_bound})
        # each shift's worst entries: a merged batch shows those of the worst shift overall
        by_shift[label] = {"failing": one.details["failing_entries"], "entries": top_entries(
            cmp, Xs, case.rows, case.top, lambda r, i, Xs=Xs, cmp=cmp: case.cause(Xs, cmp, r, i))}
        key = float(np.max(cmp.ratio)) if cmp.ratio.size else 0.0
        if res is None or key > worst_key:
            res, worst_key, worst_label = one, key, label
        del Xs, exact, cmp
    res.passed = all(p["passed"] for p in per_shift)
    res.details["shifts"] = per_shift
    res.entries = by_shift[worst_label]["entries"]
    res.merge_data.update(worst_shift=worst_label, by_shift=by_shift)
    res.failures = _shift_lines(res)
    return res


def _shift_lines(res: CheckResult) -> list[str]:
    """One line per failing shift; the worst entry's cause after the worst shift's."""
    cause = res.entries[0].cause if res.entries else ""
    return [f"at the {p['shift']} shift (max(x + c) = {fmt(p['max_of_shifted_x'], 4)}): "
            f"max {fmt(p['max_ulp'])} ULP, rel {fmt(p['max_rel_err'])}"
            + (f" — {cause}" if p["shift"] == res.merge_data["worst_shift"] and cause else "")
            for p in res.details["shifts"] if not p["passed"]]


def _merge_shifts(out: CheckResult, parts: list[CheckResult], top: int) -> None:
    from .parallel import entry_order

    label = out.merge_data["worst_shift"]
    shift = [p.merge_data["by_shift"][label] for p in parts]
    out.entries = sorted((e for s in shift for e in s["entries"]), key=entry_order)[:top]
    out.details["failing_entries"] = sum(s["failing"] for s in shift)
    out.failures = _shift_lines(out)


MERGE["shift_invariance"] = _merge_shifts


@register("forward", "finite")
def forward_finite(case: ForwardCase) -> CheckResult:
    hi = case.exact.y_hi if case.log else case.exact.s_hi
    with np.errstate(over="ignore"):
        expected_finite = np.isfinite(case.info.round(hi).astype(np.float64))
    bad = expected_finite & ~np.isfinite(case.computed)
    nbad = int(bad.sum())
    worst = None
    res = CheckResult(
        name="finite", passed=nbad == 0, max_abs_err=None, max_rel_err=None, max_ulp=None,
        tolerance={"formula": "no inf or nan where the exact value rounded to the dtype is finite"},
        worst=worst, measured=_non_finite_words(nbad), allowed="0",
        statement=f"the computed {case.quantity} is finite wherever the exact one is")
    counts = {label: int((bad & m).sum()) for label, m in
              (("nan", np.isnan(case.computed)), ("inf", np.isinf(case.computed)))}
    res.merge_data = {"count": nbad, **counts}
    if nbad:
        r, i = np.argwhere(bad)[0]
        res.worst = {"row": int(case.rows[r]), "index": int(i)}
        res.merge_data["first"] = f"row {case.rows[r]}, index {i} = {case.computed[r, i]}"
        res.failures.append(_finite_line(res.merge_data))
        res.details["non_finite"] = [[int(case.rows[r]), int(i)]
                                     for r, i in np.argwhere(bad)[:LIST_MAX]]
    return res


def _non_finite_words(n: int) -> str:
    return f"{n} non-finite entr{'y' if n == 1 else 'ies'}"


def _finite_line(d: dict) -> str:
    kinds = ", ".join(f"{d[k]} {k}" for k in ("nan", "inf") if d[k])
    return f"{d['count']} non-finite entries ({kinds}); first: {d['first']}"


def _merge_finite(out: CheckResult, parts: list[CheckResult], top: int) -> None:
    d = {k: sum(p.merge_data[k] for p in parts) for k in ("count", "nan", "inf")}
    out.measured = _non_finite_words(d["count"])
    first = next((p for p in parts if not p.passed), None)
    out.worst = None if first is None else first.worst
    out.failures = [] if first is None else [_finite_line({**d, "first": first.merge_data["first"]})]
    out.merge_data = d


MERGE["finite"] = _merge_finite
