"""The exact softmax of a row too long to hold, a segment at a time (:mod:`smcheck.longrow`).

The engines of :mod:`.dd` compute a row's constants (the max, the sum S, log S, 1/S) and its
entries in one go. Here the same arithmetic runs in two passes over segments of the row:

1. per segment, its share of T = sum over the entries other than the first maximum of
   exp(x_j - max): double-double, :func:`dd_partial_sum`, of the terms 2^(k_j - K) m_j that
   :func:`.dd.softmax_dd` sums, each segment pairwise; the float64 tier, the segment's float64
   pairwise sum (the caller's, which has the exps at hand); :func:`row_constants` sums the segments' shares pairwise too (the two trees
   together log2(n) deep, so the stated bounds hold as for a whole row; the float64 tier's
   by math.fsum, one rounding) and forms S = 1 + T, log S (mpmath) and 1/S;
2. :func:`segment_softmax`: a segment's exact values from those constants, as
   :class:`~smcheck.reference.exact.ExactSoftmax` (the whole row's engine, its precision).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..blocks import map_blocks
from ..ddmath import dd_add, dd_div, pair_row_sums, row_sums_blocked, scale_pair
from .dd import DEAD, _exp_block, _log_sums, _logs, _probabilities, _scaled_terms, f64_bound
from .exact import ExactSoftmax


@dataclass
class RowConstants:
    """A row's exact constants: the engine ("double-double" or "float64"), n, the max a and
    the index of its first occurrence, and (double-double) the scale K of the terms, the pairs
    T, S = 1 + T, log S and 1/S; (float64 tier) S and log S as floats."""

    engine: str
    n: int
    a: float
    first: int
    K: int = 0
    T: tuple = (0.0, 0.0)
    S: tuple = (1.0, 0.0)
    L: tuple = (0.0, 0.0)
    R: tuple = (1.0, 0.0)


def scale_of(second: float, a: float) -> int:
    """K, the binary exponent of the largest term exp(x_j - a) other than the first maximum's
    (``second`` its x_j; -inf: there is none): the scale the double-double terms are summed
    at, as :func:`.dd.softmax_dd` takes it (the largest k_j, k being monotone in x_j)."""
    if not second > -np.inf:
        return 0
    dh, _, k, _, _, _ = _exp_block(np.array([[second]]), np.array([[a]]))
    return int(k[0, 0]) if dh[0, 0] > DEAD else 0


def _first_mask(shape, first: int, col0: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    if col0 <= first < col0 + shape[-1]:
        mask[0, first - col0] = True
    return mask


def dd_partial_sum(X: np.ndarray, a: float, first: int, K: int,
                   col0: int) -> tuple[float, float]:
    """The (1, L) segment X's share of T (entries at col0 ...), double-double, as a pair."""
    mask = _first_mask(X.shape, first, col0)
    f64 = np.float64
    dh, dl, k, mh, ml, fin = map_blocks(_exp_block, (X, np.array([[a]])), X.shape,
                                        (f64, f64, np.int64, f64, f64, bool))
    Kc = np.array([[K]], dtype=np.int64)
    Uh, Ul = row_sums_blocked(_scaled_terms, (mh, ml, k, Kc, dh, mask), X.shape)
    return float(Uh[0]), float(Ul[0])


def row_constants(engine: str, n: int, a: float, first: int, K: int,
                  parts: list[tuple[float, float]]) -> RowConstants:
    """The row's constants from its segments' shares of T (in row order)."""
    c = RowConstants(engine, n, a, first, K)
    if engine == "float64":
        T = math.fsum(h for h, _ in parts)
        c.T, c.S = (T, 0.0), (1.0 + T, 0.0)
        c.L = (math.log1p(T), 0.0)
        return c
    hi = np.array([[h for h, _ in parts]])
    lo = np.array([[low for _, low in parts]])
    Uh, Ul = pair_row_sums(hi, lo, np.ones(hi.shape, dtype=bool))  # T / 2^K, pairwise
    Th, Tl = scale_pair(Uh, Ul, np.array([K], dtype=np.int32))
    Sh, Sl = dd_add(np.ones(1), np.zeros(1), Th, Tl)
    Lh, Ll = (float(v[0]) for v in _log_sums(Uh, Ul, [K]))  # unscaled, as .dd._finish does
    Rh, Rl = dd_div(np.ones(1), np.zeros(1), Sh, Sl)
    c.T, c.S = (float(Th[0]), float(Tl[0])), (float(Sh[0]), float(Sl[0]))
    c.L, c.R = (Lh, Ll), (float(Rh[0]), float(Rl[0]))
    return c


#: what the float64 tier states for a segment (:func:`.dd.softmax_f64`'s words)
F64_NOTE = ("float64 tier (for results narrower than float64): relative error below "
            "(|x_i - max| + ceil(log2 n) + 20) 2^-53 per entry, at most {bound:.1e} here "
            "(certified against mpmath)")


def segment_softmax(X: np.ndarray, c: RowConstants, dps: int) -> ExactSoftmax:
    """The exact softmax (and log-softmax) of the (1, L) segment X of the row whose constants
    are ``c``."""
    A = np.array([[c.a]])
    f64 = np.float64
    if c.engine == "float64":
        fin = X > -np.inf
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            d = np.where(fin, X - c.a, -np.inf)
            s = np.exp(d) / c.S[0]
        zeros = np.broadcast_to(f64(0.0), s.shape)
        live = np.where(s > 1e-300, d, 0.0)
        bound = float(np.max(f64_bound(live, c.n)))
        ex = ExactSoftmax(s, zeros, None, None, d, dps, engine="float64")
        with np.errstate(invalid="ignore"):
            ex._y_maker = lambda: (np.where(np.isfinite(d), d - c.L[0], -np.inf), zeros)
        ex.rel_bound = bound
        ex.precision_note = F64_NOTE.format(bound=bound)
        return ex
    dh, dl, k, mh, ml, fin = map_blocks(_exp_block, (X, A), X.shape,
                                        (f64, f64, np.int64, f64, f64, bool))
    Rh, Rl = np.array([[c.R[0]]]), np.array([[c.R[1]]])
    s_hi, s_lo = map_blocks(_probabilities, (mh, ml, k, dh, Rh, Rl), X.shape, (f64, f64))
    ex = ExactSoftmax(s_hi, s_lo, None, None, dh, dps, engine="double-double")
    Lh, Ll = np.array([[c.L[0]]]), np.array([[c.L[1]]])
    ex._y_maker = lambda: map_blocks(_logs, (dh, dl, Lh, Ll), X.shape, (f64, f64))
    return ex
