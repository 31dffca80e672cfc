"""The commands as functions: input array in, :class:`~smcheck.results.Report` out.

Each pipeline runs one way: round the input to the dtype, set aside rows with no defined
softmax, run the implementation, compute the exact reference, run the registered checks.
The CLI calls these and renders; a test suite can call them directly.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from . import checks
from .dtypes import DtypeInfo, dtype_info
from .errors_ulp import METRICS, Overrides
from .exceptions import InputError
from .impls import get_implementation
from .reference import exact_softmax
from .results import Report

#: Vectors are shown in the report (and the JSON's "vectors") up to this many entries.
SMALL_N = 16


def validate_common(dps: int, overrides: Overrides, top: int, metric: str) -> None:
    if not (20 <= int(dps) <= 100000):
        raise InputError(f"--dps {dps}: use 20 to 100000 digits (judging a float64 result to "
                         "a fraction of an ULP needs 17, plus guard digits)")
    for name, v in (("--rtol", overrides.rtol), ("--atol", overrides.atol),
                    ("--max-ulp", overrides.max_ulp)):
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise InputError(f"{name} {v}: must be a finite number >= 0")
    if top < 0:
        raise InputError(f"--top {top}: must be >= 0")
    if metric not in METRICS:
        raise InputError(f"--metric {metric}: use one of {', '.join(METRICS)}")


def split_rows(x: np.ndarray, info: DtypeInfo):
    """Round x to the dtype; return (rounded rows as float64, indices of defined rows, the
    undefined rows with their reason)."""
    X = np.atleast_2d(np.asarray(x, dtype=np.float64))
    if X.ndim != 2 or X.shape[-1] == 0:
        raise InputError(f"expected a non-empty vector or 2-D batch, got shape {X.shape}")
    Xr = info.round(X).astype(np.float64)
    undefined, defined = [], []
    for r in range(X.shape[0]):
        row, orig = Xr[r], X[r]
        reason = None
        if np.any(np.isnan(row)):
            reason = f"x_{int(np.flatnonzero(np.isnan(row))[0])} = nan"
        elif np.any(row == np.inf):
            i = int(np.flatnonzero(row == np.inf)[0])
            reason = (f"x_{i} = +inf" if orig[i] == np.inf else
                      f"x_{i} = {orig[i]:g} rounds to +inf in {info.name}")
        elif np.all(row == -np.inf):
            reason = "every entry is -inf (fully masked)"
        if reason:
            undefined.append({"row": r, "reason": f"softmax undefined: {reason}"})
        else:
            defined.append(r)
    return Xr, np.array(defined, dtype=np.int64), undefined


def overflow_block(X: np.ndarray, rows: np.ndarray, info: DtypeInfo, batch: bool) -> dict:
    """Where the naive formula exp(x_i) / sum_j exp(x_j) breaks in this dtype."""
    ov = checks.exp_overflows(X, info)
    un = checks.exp_underflows(X, info)

    def idx(mask, limit=1000):
        pts = np.argwhere(mask)[:limit]
        return [int(i) for _, i in pts] if not batch else [[int(rows[r]), int(i)] for r, i in pts]

    finite = X > -np.inf
    all_under = [int(rows[r]) for r in range(X.shape[0]) if np.all(un[r] | ~finite[r])]
    with np.errstate(over="ignore", invalid="ignore"):
        a = np.max(X, axis=-1) if X.size else np.zeros(0)
        lse = a + np.log(np.sum(np.exp(X - a[:, None]), axis=-1)) if X.size else a
    sum_over = [int(rows[r]) for r in np.flatnonzero(lse > info.log_max)]
    return {
        "dtype": info.name,
        "log_realmax": info.log_max,
        "log_min_subnormal": info.log_eta,
        "log_min_normal": info.log_tiny,
        "overflow_indices": idx(ov),
        "overflow_count": int(ov.sum()),
        "underflow_indices": idx(un & finite),
        "underflow_count": int((un & finite).sum()),
        "every_exp_underflows": bool(all_under),
        "rows_every_exp_underflows": all_under,
        "sum_overflows": bool(sum_over),
        "rows_sum_overflows": sum_over,
    }


def _ticker(progress: Callable[[int, int], None] | None, total: int):
    if progress is None:
        return None
    return lambda k: progress(k, total)


def run_forward(x, *, impl: str = "stable", dtype: str = "float64", dps: int = 50,
                log: bool = False, metric: str = "scaled", rtol: float | None = None,
                atol: float | None = None, max_ulp: float | None = None, top: int = 10,
                progress: Callable[[int, int], None] | None = None) -> Report:
    """Check ``impl``'s softmax (or log-softmax) of ``x`` (a vector or a batch of rows).

    ``progress(done, total)`` is called as the reference work advances.
    """
    overrides = Overrides(rtol, atol, max_ulp)
    validate_common(dps, overrides, top, metric)
    info = dtype_info(dtype)
    implementation = get_implementation(impl)
    x = np.asarray(x, dtype=np.float64)
    batch = x.ndim == 2
    Xr, rows, undefined = split_rows(x, info)
    X = Xr[rows]
    tick = _ticker(progress, 3 * X.size)
    if X.shape[0]:
        case = checks.ForwardCase(X=X, rows=rows, info=info, impl=implementation, log=log,
                                  metric=metric, overrides=overrides, dps=dps, computed=None,
                                  exact=None, top=top, progress=tick)
        case.computed = case.evaluate(X)
        case.exact = exact_softmax(X, dps, tick)
        results = checks.run_checks("forward", case)
        precision = case.exact.precision
    else:
        case, results = None, []
        precision = f"mpmath, {dps} significant digits"
    result = np.full(Xr.shape, np.nan)
    if case is not None:
        result[rows] = case.computed
    result_list = [None if r not in set(rows.tolist()) else row for r, row in
                   enumerate(result.tolist())]
    notes = []
    if not X.shape[0]:
        notes.append("no row has a defined softmax: nothing to check")
    report = Report(
        command="forward", impl=implementation.name, dtype=info.name, dps=dps,
        shape=list(x.shape) if batch else [1, int(x.size)], checks=results,
        reference=precision, undefined_rows=undefined, notes=notes,
        blocks={"overflow": overflow_block(X, rows, info, batch)},
        options={"log": log, "metric": metric if log else "relative"},
        result=result_list if batch else result_list[0])
    if Xr.shape[-1] <= SMALL_N and Xr.shape[0] <= 4 and case is not None:
        hi = case.exact.y_hi if log else case.exact.s_hi
        ref = np.full(Xr.shape, np.nan)
        ref[rows] = hi
        report.vectors = {"x": Xr, "computed": result, "reference": ref, "rows": list(range(Xr.shape[0]))}
    return report
