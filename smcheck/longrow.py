"""``forward`` on rows too long to hold: a row of more than LONG_ROW entries is checked a
segment of SEGMENT entries at a time, in passes over the row. Memory is then bounded by what
must be held at once, the row in the dtype and the implementation's result (an implementation
is handed the whole row), plus one segment's work, instead of some 170 bytes per entry.

For each row, and again at the rounded x + c of each shift of shift_invariance:

1. the row rounded to the dtype, read into an array of the dtype; a row with no defined
   softmax set aside (as :func:`smcheck.run.split_rows` does); where exp overflows or
   underflows (the ``overflow`` block);
2. the implementation's softmax of the whole row (the built-ins compute a long row in
   segments too, :mod:`smcheck.impls.formulas`);
3. pass one over the segments: each segment's share of the exact sum
   (:mod:`smcheck.reference.segments`), of the allowances' row statistics
   (:class:`~smcheck.tolerance.RowStats`) and of the computed row's sum (normalization);
4. pass two: each segment's exact values, compared entry by entry by the checks of
   :mod:`smcheck.checks.forward` on a case of that segment (``col0`` its offset in the row),
   the segments' results merged as chunks of rows are (:func:`~smcheck.checks.merge.merge_checks`).

The verdicts are those of the whole row; the exact values are those of the whole-row engine
(the sums are summed pairwise across segments, within the same bound).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .checks import merge_reports
from .checks.common import shift_combine, shift_one, shift_statement, shift_targets
from .checks.forward import (ForwardCase, exp_overflows, exp_underflows, forward_finite,
                             forward_reference, merge_finite)
from .checks.normalization import normalization_result
from .checks.merge import merge_checks, merge_shift_parts
from .coherence import coherent_segments, long_drift_finding
from .ddmath import pair_row_sums, plain_terms, row_sums_blocked
from .dtypes import DtypeInfo, dtype_info
from .errors_ulp import Overrides
from .exceptions import ImplementationError
from .impls import get_implementation
from .options import Options
from .reference.segments import dd_partial_sum, row_constants, scale_of, segment_softmax
from .results import INDEX_LIST_MAX, NO_RESULT, CheckResult, Failure, Report
from .limits import LONG_ROW
from .tolerance import LAMBDA, RowStats, normalization_allowance

#: entries per segment: a segment's arrays (about 170 bytes an entry) stay near 85 MiB
SEGMENT = 2 ** 19
FULLY_MASKED = "every entry is -inf (fully masked)"


def is_long(command: str, n: int, engine: str) -> bool:
    return command == "forward" and n > LONG_ROW and engine != "mpmath"


def undefined_reason(row: np.ndarray, orig: np.ndarray, info: DtypeInfo, col0: int = 0):
    """Why the softmax of a row is undefined, from its entries ``row`` (rounded to the dtype)
    and ``orig`` (as given) starting at index col0: a nan, or a +inf; None if neither (a row
    every entry of which is -inf is the caller's: FULLY_MASKED)."""
    if np.any(np.isnan(row)):
        return f"x_{col0 + int(np.flatnonzero(np.isnan(row))[0])} = nan"
    if np.any(row == np.inf):
        i = int(np.flatnonzero(row == np.inf)[0])
        return (f"x_{col0 + i} = +inf" if orig[i] == np.inf else
                f"x_{col0 + i} = {orig[i]:g} rounds to +inf in {info.name}")
    return None


def masked_reason(info: DtypeInfo, lost: tuple[int, float] | None = None) -> str:
    """Why a row every entry of which is -inf in the dtype has no softmax: masked as given, or
    (``lost``: the first finite entry given, its index and value) rounded there, a finite
    number beyond the dtype's range."""
    if lost is None:
        return FULLY_MASKED
    return (f"every entry is -inf in {info.name}: x_{lost[0]} = {lost[1]:g} and every other "
            f"finite entry round to -inf (below -{info.max:g})")


def _segments(n: int):
    return [(a, min(a + SEGMENT, n)) for a in range(0, n, SEGMENT)]


@dataclass
class _Row:
    """One row (or shifted row) in the dtype, with what pass A found: undefined reason, the
    max and its first index, the largest other entry, the overflow block's facts."""

    xd: np.ndarray | None  # (n,) in the dtype (None once a shifted row was computed)
    n: int = 0
    base: "_Row | None" = None  # a shifted row: the row it is base + shift of
    shift: float = 0.0
    reason: str | None = None
    a: float = -np.inf
    first: int = -1
    second: float = -np.inf
    max_abs: float = 0.0
    overflow: list | None = None
    overflow_count: int = 0
    underflow: list | None = None
    underflow_count: int = 0
    all_under: bool = True


def _read_row(x, r: int, info: DtypeInfo, shift: float | None = None, base=None) -> _Row:
    """Row r of x rounded to the dtype (``shift``: base's row plus shift, rounded), and pass A."""
    n = int(np.shape(x)[-1]) if base is None else base.n
    # in C order (a row of a Fortran-order batch is strided, and an implementation's sums
    # depend on the layout): as smcheck.run._prepare puts a batch
    orig_row = None if base is not None else np.ascontiguousarray(x[r:r + 1][0])
    # a row read as the dtype is its own rounding: no second copy
    own = orig_row is not None and orig_row.dtype == info.np_dtype
    row = _Row(orig_row if own else np.empty(n, dtype=info.np_dtype), n=n, base=base,
               shift=0.0 if shift is None else shift, overflow=[], underflow=[])
    finite_any, lost = False, None
    for a, b in _segments(n):
        if base is None:
            orig = np.asarray(orig_row[a:b], dtype=np.float64)
            with np.errstate(over="ignore"):
                seg = info.round64(orig)
        else:
            seg = orig = _shifted(base, shift, a, b, info)
        if not own:
            row.xd[a:b] = seg
        if row.reason is None:
            row.reason = undefined_reason(seg, orig, info, a)
        fin = np.isfinite(seg)
        if lost is None and base is None and not finite_any:
            given = np.flatnonzero(np.isfinite(orig))
            if given.size:  # finite as given, -inf in the dtype (as yet, every entry is)
                lost = (a + int(given[0]), float(orig[given[0]]))
        if fin.any():
            finite_any = True
            k = int(np.argmax(np.where(fin, seg, -np.inf)))
            v = float(seg[k])
            if v > row.a:
                row.second = max(row.second, row.a)
                row.a, row.first = v, a + k
            else:
                row.second = max(row.second, v)
            rest = np.where(fin, seg, -np.inf)
            rest[k] = -np.inf
            row.second = max(row.second, float(np.max(rest)))
            row.max_abs = max(row.max_abs, float(np.max(np.abs(seg[fin]))))
        ov, un = exp_overflows(seg, info), exp_underflows(seg, info) & fin
        row.overflow += (a + np.flatnonzero(ov)[:INDEX_LIST_MAX]).tolist()
        row.underflow += (a + np.flatnonzero(un)[:INDEX_LIST_MAX]).tolist()
        row.overflow_count += int(ov.sum())
        row.underflow_count += int(un.sum())
        row.all_under = row.all_under and bool(np.all(un | ~fin))
    del orig_row
    row.overflow, row.underflow = row.overflow[:INDEX_LIST_MAX], row.underflow[:INDEX_LIST_MAX]
    if row.reason is None and not finite_any:
        row.reason = masked_reason(info, lost)
    return row


def _computed(impl, row: _Row, info: DtypeInfo, log: bool) -> np.ndarray:
    out = np.asarray(impl.softmax(row.xd[None, :], info, log))
    if out.shape != (1, row.n):
        raise ImplementationError(f"--impl {impl.name} returned shape {out.shape} for an "
                                  f"input of shape {(1, row.n)}")
    if row.base is not None:
        row.xd = None  # a shifted row's segments are formed again from its base's
    return out


def _shifted(base: _Row, shift: float, a: int, b: int, info: DtypeInfo) -> np.ndarray:
    """Entries a to b of base's row plus shift, rounded to the dtype, as float64."""
    with np.errstate(over="ignore", invalid="ignore"):
        return info.round64(base.xd[a:b].astype(np.float64) + shift)


def _segment(row: _Row, a: int, b: int, info: DtypeInfo) -> np.ndarray:
    """Entries a to b of the row, as float64 (1, b - a)."""
    if row.xd is not None:
        return row.xd[a:b].astype(np.float64)[None, :]
    return _shifted(row.base, row.shift, a, b, info)[None, :]


def _pass_one(row: _Row, out: np.ndarray, engine: str, log: bool, info: DtypeInfo,
              tick=None):
    """The row's exact constants, its statistics for the allowances, and the computed row's
    sum (a pair) and whether every computed term is finite."""
    n = row.n
    K = scale_of(row.second, row.a) if engine == "double-double" else 0
    parts, sums = [], []
    S = W = T = Wp = dmax = 0.0
    small_e = 0
    finite = True
    for a, b in _segments(n):
        X = _segment(row, a, b, info)
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            fin = X > -np.inf
            ad = np.where(fin, np.abs(X - row.a), 0.0)  # |d_j|, 0 where masked
            e = np.exp(np.where(fin, X - row.a, -np.inf))  # one exp an entry
            others = e.copy()
            if a <= row.first < b:
                others[0, row.first - a] = 0.0
            t = float(np.sum(others))
            S, W = S + float(np.sum(e)), W + float(np.sum(e * ad))
            dmax = max(dmax, float(np.max(ad)))
            T, Wp = T + t, Wp + float(np.sum(others * ad))
            small_e += int(np.sum((e > 0) & (e < info.tiny)))
            c = out[:, a:b].astype(np.float64)
            terms = np.exp(c) if log else c
        # the segment's share of T: the float64 tier's is the float64 sum just taken
        parts.append(dd_partial_sum(X, row.a, row.first, K, a) if engine == "double-double"
                     else (t, 0.0))
        finite = finite and bool(np.all(np.isfinite(terms)))
        if tick is not None:
            tick(b - a)
        sums.append(tuple(float(v[0]) for v in row_sums_blocked(
            plain_terms, (terms,), terms.shape)))
    consts = row_constants(engine, n, row.a, row.first, K, parts)
    stats = RowStats(W=W / S, S=S, n=n, small=small_e, T=T, Wp=Wp / T if T > 0 else 0.0,
                     dmax=dmax)
    th, tl = pair_row_sums(np.array([[h for h, _ in sums]]), np.array([[lo for _, lo in sums]]),
                           np.ones((1, len(sums)), dtype=bool))
    return consts, stats, (float(th[0]), float(tl[0])), finite


def _compare_row(row, out, engine, base, info, log, on_case, tick=None) -> tuple:
    """Passes one and two over a row: ``on_case(case)`` for each segment's case (one segment's
    arrays alive at a time); returns the statistics, the computed sum and whether it was
    finite, and the last case."""
    consts, stats, total, finite = _pass_one(row, out, engine, log, info, tick)
    allowed = float(normalization_allowance(np.zeros((1, 0)), np.zeros((1, 0)), info, log,
                                            base["ftz"], stats)[0])
    drift = _drift(row, stats, total, finite, allowed, info, log, base["ftz"])
    if drift is not None:
        allowed = drift["allowed"]
    row_info = {"overflow_indices": np.array(row.overflow, dtype=np.int64),
                "every_exp_underflows": row.all_under, "max_abs_x": row.max_abs,
                "total_pair": total, "sum_allowed": allowed}
    case = None
    for a, b in _segments(row.n):
        case = None  # the previous segment's arrays go before this one's are made
        X = _segment(row, a, b, info)
        case = ForwardCase(X=X, computed=out[:, a:b].astype(np.float64),
                           exact=segment_softmax(X, consts, base["dps"]), stats=stats,
                           row_info=row_info, col0=a,
                           row_widen=None if drift is None else drift["widen"], **base)
        on_case(case)
    return stats, total, finite, case, drift


def _drift(row: _Row, stats: RowStats, total, finite: bool, allowed: float, info: DtypeInfo,
           log: bool, ftz: bool) -> dict | None:
    """Where the computed row's sum is off by more than the usual allowance and the row's
    equal terms may make a correct sum drift (:mod:`smcheck.coherence`, counted a segment at
    a time): G, the sum's allowance with it, and the error every entry may share, the
    computed sum's own (its log for log-softmax), at most that allowance."""
    off = (total[0] - 1.0) + total[1]
    if not finite or not abs(off) > allowed:
        return None
    G, k = coherent_segments((_segment(row, a, b, info)[0] - row.a
                              for a, b in _segments(row.n)), stats.S, info)
    if not G > LAMBDA * math.sqrt(row.n):
        return None
    wide = float(normalization_allowance(np.zeros((1, 0)), np.zeros((1, 0)), info, log, ftz,
                                         stats, coherent=np.array([G]))[0])
    return {"G": G, "k": k, "allowed": wide, "usual": allowed, "off": abs(off),
            "widen": min(abs(math.log1p(off)) if log else abs(off), wide)}


def check_long_rows(x, o: Options, engine: str, progress=None) -> Report:
    """``forward`` over the rows of x (a vector, a 2-D array or store) of more than LONG_ROW
    entries each, row by row, the rows' reports merged."""
    batch = np.ndim(x) == 2
    X = x if batch else np.asarray(x)[None, :]
    rows, n = (int(v) for v in np.shape(X))
    # each row is passed over six times (twice at x and at each shift): progress in entries
    # of those passes, of 6 rows n in all
    tick = None if progress is None else (lambda k: progress(k, 6 * rows * n))
    reports = [forward_long_row(X, r, o, engine, tick, batch) for r in range(rows)]
    return merge_reports(reports, [rows, n], o.top)


def forward_long_row(x, r: int, o: Options, engine: str, progress=None,
                     batch: bool = True) -> Report:
    """The forward report of row r of x (a row of more than LONG_ROW entries)."""
    info, log = dtype_info(o.dtype), o.log
    n = int(np.shape(x)[-1])
    impl = get_implementation(o.impl).for_options(o).for_rows(np.array([r]))
    row = _read_row(x, r, info)
    report = Report(command="forward", impl=impl.name, dtype=info.name, dps=o.dps,
                    shape=[1, n], checks=[], reference="-",
                    options={"log": log, "metric": o.metric if log else None,
                             "allow_ftz": o.allow_ftz, "strict_dtype": o.strict_dtype},
                    result=NO_RESULT)
    if row.reason is not None:
        report.undefined_rows = [{"row": r, "reason": f"softmax undefined: {row.reason}"}]
        report.notes = ["no row has a defined softmax: nothing to check"]
        return report
    base = dict(rows=np.array([r]), info=info, impl=impl, log=log, metric=o.metric,
                overrides=Overrides(o.rtol, o.atol, o.max_ulp), dps=o.dps, top=o.top,
                engine=engine, ftz=o.allow_ftz, strict_dtype=o.strict_dtype)
    eng = "double-double" if engine == "dd" else "float64"
    out = _computed(impl, row, info, log)
    ref, fin, bounds, user, small = [], [], [], [], []

    def on_case(case):
        ref.append(forward_reference(case))
        fin.append(forward_finite(case))
        bounds.append((case.exact.rel_bound or 0.0, case.exact.precision))
        small.append(int(np.sum((case.exact.s_hi > 0) & (case.exact.s_hi < info.tiny))))
        if case.main.tolerance.source == "user":
            a = np.where(np.isfinite(case.main.allowed), case.main.allowed, 0.0)
            user.append(float(np.sum(a * case.exact.s_hi if log else a)))
        if progress is not None:
            progress(case.X.size)

    stats, (th, tl), finite, case, drift = _compare_row(row, out, eng, base, info, log,
                                                           on_case, progress)
    reference = merge_checks(ref, o.top)
    if not reference.passed and not np.all(np.isfinite(out)):
        reference.failures += _row_failures(row, r, info)
    # the subnormal exact s_i counted exactly (pass one counted exp(x_i - max) below the
    # smallest normal, which the causes' words of pass two make do with)
    allowed = normalization_allowance(np.zeros((1, 0)), np.zeros((1, 0)), info, log,
                                      o.allow_ftz, replace(stats, small=sum(small)),
                                      coherent=None if drift is None else np.array(
                                          [drift["G"]]))
    if user:
        allowed = np.maximum(allowed, sum(user))
    norm = normalization_result(case, np.array([th]), np.array([tl]), np.array([finite]),
                                allowed)
    if drift is not None:
        norm.findings.append(long_drift_finding(drift, r))
    del out
    shift = _shifts(row, impl, eng, base, info, log, o.top, progress, n)
    report.checks = [reference, norm, shift, merge_checks(fin, o.top, merge_finite)]
    bound, words = max(bounds, key=lambda b: b[0])
    report.reference, report.reference_bound = words, (bound or None)
    report.blocks = {"overflow": _overflow_block(row, r, stats, info, batch)}
    return report


def _shifts(row, impl, eng, base, info, log, top, progress, n) -> CheckResult:
    """shift_invariance: each shift's rounded row checked as the row was, one at a time."""
    statement = shift_statement("log-softmax" if log else "softmax", info)
    parts = []
    for label, target in shift_targets(info).items():
        shifted = _read_row(None, 0, info, shift=target - row.a, base=row)
        out = _computed(impl, shifted, info, log)
        pieces = []

        def on_case(case, label=label, target=target, pieces=pieces):
            pieces.append(shift_one(case, label, target, statement, case.rows, top))
            if progress is not None:
                progress(case.X.size)

        _compare_row(shifted, out, eng, base, info, log, on_case, progress)
        parts.append(merge_shift_parts(pieces, top))
        del shifted, out
    return shift_combine(parts)


def _row_failures(row: _Row, r: int, info: DtypeInfo) -> list[Failure]:
    """What forward_reference names of a failing row whose result is not finite: where exp
    overflows (or that every exp underflows), and how many entries that is."""
    if row.overflow_count:
        return [Failure("exp_overflow", row=r, extra={"indices": list(row.overflow),
                                                      "log_max": info.log_max,
                                                      "dtype": info.name}),
                Failure("more_rows", count=1, total=row.overflow_count)]
    if row.all_under:
        return [Failure("exp_underflow", row=r, extra={"log_eta": info.log_eta,
                                                       "dtype": info.name}),
                Failure("more_rows", count=1, total=row.n)]
    return []


def _overflow_block(row: _Row, r: int, stats: RowStats, info: DtypeInfo, batch: bool) -> dict:
    """The ``overflow`` block of :func:`smcheck.checks.forward.overflow_block` for one row."""
    with np.errstate(divide="ignore"):
        lse = row.a + float(np.log(stats.S))

    def idx(found):
        return [[r, i] for i in found] if batch else list(found)

    return {"dtype": info.name, "log_realmax": info.log_max, "log_min_subnormal": info.log_eta,
            "log_min_normal": info.log_tiny, "overflow_indices": idx(row.overflow),
            "overflow_count": row.overflow_count,
            "underflow_indices": idx(row.underflow),
            "underflow_count": row.underflow_count, "every_exp_underflows": row.all_under,
            "rows_every_exp_underflows": [r] if row.all_under else [],
            "sum_overflows": lse > info.log_max,
            "rows_sum_overflows": [r] if lse > info.log_max else []}
