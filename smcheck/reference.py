"""The mpmath reference: exact softmax and log-softmax of float64 inputs, to ``dps`` digits.

Precision is scoped (``mp.workdps``) and never left changed. Every step is arranged so the
stated precision holds at the extremes:

* x_j - max(x) is formed exactly (``fsub(..., exact=True)``), so |x| up to 1e308 loses nothing;
* the sum is S = 1 + T with T the sum over the non-maximal entries (mpmath's ``fsum`` adds
  exactly), and log S = log1p(T), so log softmax of a saturated entry (S = 1 + 1e-300) keeps
  its relative accuracy;
* -inf entries are exact zeros (log: -inf).

Each entry is then correct to a few units in 10^-dps, relative. Results are double-double
pairs (hi, lo) so that errors far below one float64 ULP are still measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

Progress = Callable[[int], None]


@dataclass
class ExactSoftmax:
    """Exact softmax and log-softmax of rows of float64 inputs, as double-double arrays."""

    s_hi: np.ndarray
    s_lo: np.ndarray
    y_hi: np.ndarray  # log softmax
    y_lo: np.ndarray
    d: np.ndarray  # x - max(x) rounded to float64 (-inf where masked): for the tolerances
    dps: int
    engine: str = "mpmath"

    @property
    def precision(self) -> str:
        return f"{self.engine}, {self.dps} significant digits (relative error below 1e-{self.dps - 2})"


def _split(v, hi_out, lo_out, i, mpf):
    h = float(v)
    hi_out[i] = h
    if h != 0.0 and abs(h) != float("inf"):
        lo_out[i] = float(v - mpf(h))


def exact_softmax(X: np.ndarray, dps: int = 50, progress: Progress | None = None) -> ExactSoftmax:
    """Exact softmax and log-softmax of every row of ``X`` (2-D float64, each row with at
    least one finite entry and no +inf or nan: the caller filters undefined rows)."""
    import mpmath
    from mpmath import mp, mpf

    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    rows, n = X.shape
    s_hi = np.zeros((rows, n))
    s_lo = np.zeros((rows, n))
    y_hi = np.full((rows, n), -np.inf)
    y_lo = np.zeros((rows, n))
    d64 = np.full((rows, n), -np.inf)
    fsub, exp, fsum, log1p = mpmath.fsub, mpmath.exp, mpmath.fsum, mpmath.log1p
    with mp.workdps(dps):
        for r in range(rows):
            row = X[r]
            fin = np.flatnonzero(row > -np.inf)
            if fin.size == 0:
                raise ValueError(f"row {r} has no finite entry: its softmax is undefined")
            m = int(fin[np.argmax(row[fin])])
            a = mpf(float(row[m]))
            with np.errstate(over="ignore"):
                d64[r, fin] = row[fin] - row[m]
            ds = {int(i): fsub(mpf(float(row[i])), a, exact=True) for i in fin}
            es = {i: exp(dv) for i, dv in ds.items()}
            T = fsum(e for i, e in es.items() if i != m)
            S = 1 + T
            L = log1p(T)
            for i, e in es.items():
                _split(e / S, s_hi[r], s_lo[r], i, mpf)
                _split(ds[i] - L, y_hi[r], y_lo[r], i, mpf)
            if progress is not None:
                progress(n)
    return ExactSoftmax(s_hi, s_lo, y_hi, y_lo, d64, dps)
