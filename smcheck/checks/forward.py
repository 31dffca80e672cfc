"""The checks of ``forward`` (softmax and log-softmax), and where the naive formula breaks
(the ``overflow`` block). A check is a function ``case -> CheckResult | None`` listed in the
table of :mod:`smcheck.checks`; None means it does not apply. Checks never print. The pieces
every command shares (the comparison's result, its findings, shift invariance) are in
:mod:`smcheck.checks.common`; the tolerance models in :mod:`smcheck.tolerance`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from ..causes import cause
from ..coherence import coherence, with_coherence
from ..ddmath import plain_terms, row_sums_blocked
from ..dtypes import DtypeInfo
from ..errors_ulp import Comparison, Tolerance, apply_overrides, compare
from ..exceptions import ImplementationError
from ..reference import ExactSoftmax, shifted_softmax
from ..results import INDEX_LIST_MAX, LIST_MAX, ROWS_NAMED, CheckResult, Failure, Finding
from ..sentences import ilist
from ..tolerance import (LAMBDA, RowStats, log_softmax_tolerance, normalization_allowance,
                         softmax_tolerance)
from .common import (Case, add_run_findings, comparison_result, fmt, ftz_cause,
                     shift_invariance, worst_failure)
from .worst import top_entries

# --- forward ---------------------------------------------------------------------------------


def exp_overflows(X: np.ndarray, info: DtypeInfo, E: np.ndarray | None = None) -> np.ndarray:
    """Where exp(x_i) itself overflows in the dtype (the naive formula's failure); ``E``:
    exp(X) in float64, when it is at hand."""
    with np.errstate(over="ignore"):
        E = np.exp(X) if E is None else E
        if info.name == "float64":
            return np.isinf(E) & (X > 0)
        return E >= info.max * (1 + info.u)


def exp_underflows(X: np.ndarray, info: DtypeInfo, E: np.ndarray | None = None) -> np.ndarray:
    """Where exp(x_i) rounds to 0 in the dtype."""
    with np.errstate(under="ignore", over="ignore"):
        E = np.exp(X) if E is None else E
        if info.name == "float64":
            return E == 0
        return E <= info.eta / 2


def overflow_block(X: np.ndarray, rows: np.ndarray, info: DtypeInfo, batch: bool) -> dict:
    """Where the naive formula exp(x_i) / sum_j exp(x_j) breaks in this dtype."""
    with np.errstate(over="ignore", under="ignore"):
        E = np.exp(X)  # once for both masks
    ov = exp_overflows(X, info, E)
    finite = X > -np.inf
    un = exp_underflows(X, info, E)
    del E
    all_under = [int(r) for r in rows[np.all(un | ~finite, axis=-1)]] if X.size else []
    un &= finite

    def idx(mask, count, limit=INDEX_LIST_MAX):
        if not count:
            return []
        pts = np.argwhere(mask)[:limit]
        return [int(i) for _, i in pts] if not batch else [[int(rows[r]), int(i)] for r, i in pts]

    with np.errstate(over="ignore", invalid="ignore"):
        a = np.max(X, axis=-1) if X.size else np.zeros(0)
        lse = a + np.log(np.sum(np.exp(X - a[:, None]), axis=-1)) if X.size else a
    sum_over = [int(rows[r]) for r in np.flatnonzero(lse > info.log_max)]
    n_ov, n_un = int(np.count_nonzero(ov)), int(np.count_nonzero(un))
    return {
        "dtype": info.name,
        "log_realmax": info.log_max,
        "log_min_subnormal": info.log_eta,
        "log_min_normal": info.log_tiny,
        "overflow_indices": idx(ov, n_ov),
        "overflow_count": n_ov,
        "underflow_indices": idx(un, n_un),
        "underflow_count": n_un,
        "every_exp_underflows": bool(all_under),
        "rows_every_exp_underflows": all_under,
        "sum_overflows": bool(sum_over),
        "rows_sum_overflows": sum_over,
    }


@dataclass(kw_only=True)
class ForwardCase(Case):
    """Everything the forward checks look at. X holds the defined rows, rounded to the dtype
    (as float64); ``rows`` their indices in the user's input."""

    command = "forward"  # not a field: the command, for smcheck.memory's figures

    X: np.ndarray
    log: bool
    metric: str
    computed: np.ndarray
    exact: ExactSoftmax
    progress: Callable[[int], None] | None = None
    #: a segment of a row too long to hold (smcheck.longrow): the whole row's statistics for
    #: the allowances, and what the causes say of the row (its exp overflows, whether every
    #: exp underflows, max |x|, the computed row's sum and that sum's allowance)
    stats: RowStats | None = None
    row_info: dict | None = None
    #: a segment's row whose sum may drift (smcheck.coherence): the error its entries share
    row_widen: float | None = None
    _main: Comparison | None = field(default=None, repr=False)
    _scaled_ok: np.ndarray | None = field(default=None, repr=False)
    _sum_allowed: dict = field(default_factory=dict, repr=False)  # row -> its sum's allowance
    _sums: tuple | None = field(default=None, repr=False)  # (hi, lo, finite) of the rows' sums

    @property
    def quantity(self) -> str:
        return "log-softmax" if self.log else "softmax"

    @property
    def exact_softmax(self) -> ExactSoftmax:
        return self.exact

    def tolerance(self, exact: ExactSoftmax, metric: str | None = None,
                  widen: np.ndarray | None = None, off: np.ndarray | None = None) -> Tolerance:
        m = metric or self.metric
        if self.log:
            tol = log_softmax_tolerance(exact.d, exact.s_hi, exact.y_hi, self.info, m, self.ftz,
                                        self.stats, widen, off)
        else:
            tol = softmax_tolerance(exact.d, exact.s_hi, self.info, self.ftz, self.stats, widen,
                                    off)
        return apply_overrides(tol, self.overrides)

    def computed_sums(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each row's sum of the computed terms (s_i, or exp(y_i)) as a pair, exact to 2^-100,
        and whether every term was finite (taken once: the allowances and normalization)."""
        if self._sums is None:
            with np.errstate(over="ignore", invalid="ignore"):
                terms = np.exp(self.computed) if self.log else self.computed
                th, tl = row_sums_blocked(plain_terms, (terms,), terms.shape)
            self._sums = (th, tl, np.all(np.isfinite(terms), axis=-1))
        return self._sums

    def row_off(self) -> np.ndarray:
        """Per row, how far the computed row's sum is from 1 (log-softmax: |log sum_j
        exp(y_j)|; inf where a term is not finite): what one error in the sum every entry was
        divided by can be, beside the entries' own (smcheck.tolerance.entry_sigma)."""
        if self.row_info is not None:  # a segment: the whole row's, from its first pass
            th, tl = (np.array([v]) for v in self.row_info["total_pair"])
            finite = np.array([True])
        else:
            th, tl, finite = self.computed_sums()
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            off = np.abs(np.log(th + tl)) if self.log else np.abs((th - 1.0) + tl)
        return np.where(finite & np.isfinite(off), off, np.inf)

    def compare(self, computed, exact: ExactSoftmax, metric: str | None = None,
                drift: bool = True) -> Comparison:
        """The comparison under the allowance; rows that fail it and whose sum may drift
        (equal terms rounding alike, :mod:`smcheck.coherence`) are compared again, each entry
        allowed the error the whole row shares (:meth:`shared_error`). ``drift`` False: the
        allowance alone (the strict bound that only names cancelled entries)."""
        hi, lo = (exact.y_hi, exact.y_lo) if self.log else (exact.s_hi, exact.s_lo)
        # the entries' share of the sum's error as large as the computed row's sum says
        off = self.row_off() if computed is self.computed and drift else None
        if self.stats is not None:  # a segment: its row's share, found over the whole row
            widen = None if self.row_widen is None or not drift else np.array([self.row_widen])
            return compare(computed, hi, lo, self.tolerance(exact, metric, widen, off),
                           self.info)
        return with_coherence(
            lambda G: compare(computed, hi, lo, self.tolerance(
                exact, metric, None if G is None else self.shared_error(computed, exact, G),
                off), self.info),
            exact.d if drift else None, self.info,
            lambda cmp: ~np.all(cmp.ok, axis=-1))

    def shared_error(self, computed, exact: ExactSoftmax, G: np.ndarray) -> np.ndarray:
        """Per row whose sum may drift (G above lambda sqrt(n)), the error its entries share:
        dividing by a sum Ŝ off by a factor multiplies every entry by it (log-softmax: shifts
        every entry by its log), which the row's own sum T = sum_j ŝ_j (exp(ŷ_j)) measures:
        |T - 1| (|log T|), at most the normalization allowance of the drifting sum. An entry
        then errs by that and its own allowance; an error of its own beyond that (exp in too
        narrow a format) still fails, and a sum off by more fails normalization. 0 for the
        other rows."""
        out = np.zeros(len(G))
        rows = np.flatnonzero(G > LAMBDA * math.sqrt(exact.d.shape[-1]))
        if not rows.size:
            return out
        cap = normalization_allowance(exact.d[rows], exact.s_hi[rows], self.info, self.log,
                                      self.ftz, coherent=G[rows])
        for k, r in enumerate(rows):
            with np.errstate(over="ignore", invalid="ignore"):
                terms = np.exp(computed[r]) if self.log else computed[r]
            if np.all(np.isfinite(terms)):
                off = math.fsum(np.append(terms, -1.0))  # sum - 1, rounded once
                off = abs(math.log1p(off)) if self.log else abs(off)
                out[r] = min(off, float(cap[k]))
        return out

    @property
    def main(self) -> Comparison:
        if self._main is None:
            self._main = self.compare(self.computed, self.exact)
        return self._main

    cmp = main  # the comparison every command's case names ``cmp`` (shift invariance)

    def evaluate(self, X64: np.ndarray) -> np.ndarray:
        """The implementation at X64 (float64 values already representable in the dtype)."""
        out = self.impl.softmax(X64.astype(self.info.np_dtype), self.info, self.log)
        out = np.asarray(out)
        if out.shape != X64.shape:
            raise ImplementationError(f"--impl {self.impl.name} returned shape {out.shape} for "
                                      f"an input of shape {X64.shape}")
        return out.astype(np.float64, copy=False)

    def at(self, Xs: np.ndarray, c: np.ndarray) -> "ForwardCase":
        """The case at the shifted rows Xs = round(X + c)."""
        exact = shifted_softmax(self.X, Xs, c, self.exact, self.dps, self.info.name,
                                self.engine, self.progress)
        return replace(self, X=Xs, computed=self.evaluate(Xs), exact=exact, _main=None,
                       _scaled_ok=None, _sum_allowed={}, _sums=None)

    def _overflows(self, r: int) -> np.ndarray:
        if self.row_info is not None:
            return self.row_info["overflow_indices"]
        return np.flatnonzero(exp_overflows(self.X[r], self.info))

    def _all_underflow(self, r: int) -> bool:
        if self.row_info is not None:
            return self.row_info["every_exp_underflows"]
        return bool(np.all(exp_underflows(self.X[r], self.info)))

    def row_total(self, r: int) -> float:
        """The sum of row r of the computed softmax (log: of exp of it)."""
        if self.row_info is not None:
            return sum(self.row_info["total_pair"])
        c = self.computed[r]
        with np.errstate(over="ignore", invalid="ignore"):
            return math.fsum(np.exp(c) if self.log else c) if np.all(np.isfinite(
                np.where(np.isneginf(c), 0.0, c))) else math.nan

    def _sum_overflows(self, r: int) -> float:
        """The exact sum S of exp(x_j - max) of row r where it exceeds the dtype's largest
        number (the 16-bit formats: 10^5 equal logits sum to 10^5 > 65504), else 0."""
        if self.row_info is not None or self.info.p >= 24:
            return 0.0
        s_max = float(np.max(self.exact.s_hi[r]))  # 1 / S: the largest entry's exp is 1
        S = 1.0 / s_max if s_max > 0 else math.inf
        return S if S > self.info.max else 0.0

    def cause(self, r: int, i: int) -> str:
        """Why entry (r, i) is off, in words (empty when it is within its allowance)."""
        X, cmp, info = self.X, self.main, self.info
        c, ref = cmp.computed[r, i], cmp.ref[r, i]
        if np.isnan(c):
            ov = self._overflows(r)
            if ov.size:
                return cause("overflow", f"exp(x_j) overflows for x_j > log(realmax) = "
                             f"{info.log_max:.2f} (indices {ilist(ov)}), inf/inf = nan")
            if self._all_underflow(r):
                return cause("zero sum", f"every exp(x_j) underflows (x_j < log(min "
                             f"subnormal) = {info.log_eta:.2f}), 0/0 = nan")
            return ""
        if cmp.ok[r, i]:
            return ""
        big = self._sum_overflows(r)
        if np.isinf(c) or (big and c == 0):
            words = f"computed {c}, exact {fmt(ref)}"
            if big:
                words += (f": the normaliser sum_j exp(x_j - max) = {fmt(big)} exceeds "
                          f"{info.name}'s largest, {info.max:g}, and is inf where it is held "
                          f"in {info.name} (keep it, and its log, in float32)")
            return cause("overflow", words)
        if not self.log:
            # a division by an infinite sum gives 0 whatever the exact value (a subnormal
            # one included: that 0 is not a flush to zero)
            if c == 0 and self._overflows(r).size:
                return cause("infinite sum", f"exp(x_j) overflows (x_j > log(realmax) = "
                             f"{info.log_max:.2f}), so every finite term / inf = 0")
            ftz = ftz_cause(c, ref, info)
            if ftz:
                return ftz
            if c == 0 and abs(ref) >= info.tiny:
                return cause("underflow", f"computed 0, exact {fmt(ref)} is a normal number")
            if 0 < abs(c) < info.tiny <= abs(ref):
                return cause("underflow", "computed a subnormal, exact is normal")
        if self.log and self.metric == "strict":
            if self._scaled_ok is None:
                self._scaled_ok = self.compare(self.computed, self.exact, "scaled").ok
            if self._scaled_ok[r, i]:
                return cause("cancellation", "relative digits lost (within the scaled bound)")
        m = (self.row_info["max_abs_x"] if self.row_info is not None else
             float(np.max(np.abs(X[r][np.isfinite(X[r])]))))
        scale = abs(ref) if not self.log else 1.0
        # rounding at |x| (logsumexp formed at the magnitude of max(x)) errs by up to u |x|
        if info.u * m * scale > cmp.allowed[r, i] and cmp.abs_err[r, i] <= 2 * info.u * m * scale:
            return cause("rounding at |x|", f"|x| up to {fmt(m)}, not the gaps x_i - max(x): "
                         "e.g. x - logsumexp(x) without the shift")
        total = self.row_total(r)
        if abs(total - 1) > self.sum_allowed(r):
            off = f"the row sums to 1 {'+' if total > 1 else '-'} {fmt(abs(total - 1))}"
            if info.p < 24 and total > 1:
                return cause("stall", f"{off}: a sum accumulated in {info.name} stops growing "
                             "once it outgrows its terms (accumulate in float32 or pairwise)")
            return cause("normaliser", off)
        return ""

    def sum_allowed(self, r: int) -> float:
        """The allowance of row r's sum (with its equal terms counted), once a row: the
        causes of several entries of one row ask for it."""
        if self.row_info is not None:
            return self.row_info["sum_allowed"]
        if r not in self._sum_allowed:
            d1 = self.exact.d[r:r + 1]
            self._sum_allowed[r] = float(normalization_allowance(
                d1, self.exact.s_hi[r:r + 1], self.info, self.log, self.ftz,
                coherent=coherence(d1, self.info, [0]))[0])
        return self._sum_allowed[r]


def forward_reference(case: ForwardCase) -> CheckResult:
    cmp = case.main
    res = comparison_result(
        "reference", cmp, case.info, case.rows,
        f"{case.impl.name} {case.quantity} in {case.info.name} agrees with the exact "
        f"{case.quantity} of the rounded input, entry by entry", col0=case.col0)
    res.entries = top_entries(cmp, case.X, case.rows, case.top, case.cause, case.col0)
    bad = ~cmp.ok
    if bad.any():
        w = cmp.worst_index()
        res.failures.append(worst_failure(cmp, case.rows, case.cause(*w), case.col0))
    if bad.any() and case.row_info is None:  # a long row's are the row's (smcheck.longrow)
        nonfinite_rows = bad.any(axis=-1) & ~np.all(np.isfinite(cmp.computed), axis=-1)
        named = 0  # rows named where exp overflows or underflows: the first ROWS_NAMED
        for r in np.flatnonzero(nonfinite_rows):
            if named == ROWS_NAMED:
                break
            ov = np.flatnonzero(exp_overflows(case.X[r], case.info))
            named += bool(ov.size) or bool(np.all(exp_underflows(case.X[r], case.info)))
            if ov.size:
                res.failures.append(Failure("exp_overflow", row=int(case.rows[r]), extra={
                    "indices": ov.tolist(), "log_max": case.info.log_max,
                    "dtype": case.info.name}))
            elif np.all(exp_underflows(case.X[r], case.info)):
                res.failures.append(Failure("exp_underflow", row=int(case.rows[r]), extra={
                    "log_eta": case.info.log_eta, "dtype": case.info.name}))
        rows_hit, entries_hit = _rows_exp_fails(case.X[nonfinite_rows], case.info)
        if rows_hit:  # how many in all: the lines above name the first ROWS_NAMED rows
            res.failures.append(Failure("more_rows", count=rows_hit, total=entries_hit))
    add_run_findings(res, case.impl, case.computed, case.info, case.strict_dtype)
    user_tol = case.overrides is not None and case.overrides.any
    # entries within the scaled bound that lost relative accuracy: looked for with --log
    res.details["cancelled"] = None
    if case.log and case.metric == "scaled" and not user_tol:
        strict = case.compare(case.computed, case.exact, "strict", drift=False)
        lost = cmp.ok & ~strict.ok
        res.details["cancelled"] = []
        if lost.any():
            idx = np.argwhere(lost)
            res.details["cancelled"] = [[int(case.rows[r]), int(i) + case.col0]
                                        for r, i in idx[:LIST_MAX]]
            r, i = idx[np.argmax(strict.ratio[lost])]
            # the same entries are what the generic note calls unresolvable: one note
            res.findings = [f for f in res.findings if f.kind != "unresolvable"]
            res.findings.append(Finding(
                "cancelled", len(idx), int(cmp.ok.size),
                "{count} entr{ies} lost relative accuracy to cancellation, e.g. {example}. "
                "x_max - logsumexp(x) cancels when softmax saturates; -log1p(sum over j != max "
                "of exp(x_j - max)) keeps the digits. Within the scaled bound; --metric strict "
                "fails it.",
                f"row {case.rows[r]}, index {i + case.col0}: exact {fmt(strict.ref[r, i], 6)}, computed "
                f"{fmt(strict.computed[r, i], 6)} (relative error {fmt(strict.rel_err_at((r, i)))}"
                f", strict bound {fmt(strict.allowed[r, i] / max(abs(strict.ref[r, i]), 1e-300))})"))
    return res


def _rows_exp_fails(X: np.ndarray, info: DtypeInfo) -> tuple[int, int]:
    """How many rows of X have an exp that overflows or every exp underflowing, and how
    many entries those are (the overflowing ones; every entry of an underflowing row)."""
    if X.size == 0:
        return 0, 0
    ov = exp_overflows(X, info)
    n_ov = ov.sum(axis=-1)
    under = ~ov.any(axis=-1) & np.all(exp_underflows(X, info), axis=-1)
    hit = (n_ov > 0) | under
    return int(hit.sum()), int(n_ov.sum() + under.sum() * X.shape[-1])


def forward_shift_invariance(case: ForwardCase) -> CheckResult:
    return shift_invariance(case, case.quantity)


def forward_finite(case: ForwardCase) -> CheckResult:
    hi = case.exact.y_hi if case.log else case.exact.s_hi
    with np.errstate(over="ignore"):
        expected_finite = np.isfinite(case.info.round64(hi))
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
        res.worst = {"row": int(case.rows[r]), "index": int(i) + case.col0}
        res.merge_data["first"] = (f"row {case.rows[r]}, index {i + case.col0} = "
                                   f"{case.computed[r, i]}")
        res.failures.append(_finite_record(res.merge_data))
    res.details["non_finite"] = [[int(case.rows[r]), int(i) + case.col0]
                                 for r, i in np.argwhere(bad)[:LIST_MAX]]
    return res


def _non_finite_words(n: int) -> str:
    return f"{n} non-finite entr{'y' if n == 1 else 'ies'}"


def _finite_record(d: dict) -> Failure:
    return Failure("non_finite", count=d["count"],
                   extra={"nan": d["nan"], "inf": d["inf"], "first": d["first"]})


def merge_finite(out: CheckResult, parts: list[CheckResult], top: int) -> None:
    d = {k: sum(p.merge_data[k] for p in parts) for k in ("count", "nan", "inf")}
    out.measured = _non_finite_words(d["count"])
    first = next((p for p in parts if not p.passed), None)
    out.worst = None if first is None else first.worst
    if first is not None:  # kept, so that merged results merge again (rows of segments)
        d["first"] = first.merge_data["first"]
    out.failures = [] if first is None else [_finite_record(d)]
    out.merge_data = d


