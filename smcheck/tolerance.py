"""The derived tolerance models: what a correct, max-shifted implementation may err by.

Every allowance follows from the dtype (its unit roundoff u and its underflow unit: the
smallest subnormal eta, or the smallest normal number under ``--allow-ftz``), the row length n
and the gaps d_i = x_i - max(x) of the rounded input. None grows with |x| itself: a max-shifted
implementation only ever rounds the gaps, so the softmax of [1e8, 1e8] is [0.5, 0.5] to a few
units of u in any dtype. README "Tolerances" derives each bound; the pieces are

* ``kappa_i = |d_i| + W``, W = sum_j s_j |d_j|: the rounding of the shifted x_i - max, which
  exp turns into a relative error of that size, in the entry and (weighted by s_j) in the
  sum (twice, and log S, where s is formed as exp of the rounded log-softmax);
* ``sigma(n) = ceil(log2 n) + LAMBDA sqrt(n) u_acc / u``: summing n positive terms, pairwise in
  the dtype (at most ceil(log2 n) roundings deep) or in an accumulator of unit roundoff u_acc
  (the recursive sum's probabilistic bound, Higham & Mary). u_acc is the dtype's own u for
  float64 and float32, and float32's for the 16-bit formats: a 16-bit kernel that sums in its
  own format over more terms than it can hold stalls (the running sum stops growing), and
  that is a defect, not rounding;
* ``C_OPS`` roundings of the operations themselves (exp within two ULPs).

Where an honest bound reaches the size of the value it bounds, the entry cannot be resolved in
the dtype: the comparison says so (:attr:`smcheck.errors_ulp.Comparison.unresolved`) instead
of letting it pass silently.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numpy as np

from .blocks import map_blocks, row_reduce
from .dtypes import DtypeInfo
from .errors_ulp import Tolerance

#: exp within two ULPs (4u) in the numerator and in the sum (8u: the errors of a small entry
#: and of the dominant one may have opposite signs), a division that may be a reciprocal and a
#: product (2u), and the rounding of a result computed wider than the dtype (u): 11u, and
#: one for log's own error in log-softmax: 12u
C_OPS = 12.0
#: the sum of the computed probabilities: exp's own error where it does not cancel between
#: numerator and sum (4u, exp(y_i) formulas), the division or reciprocal and product (2u),
#: the rounding of each result into the dtype (u), one more rounding of the sum (u): 8u
C_NORM = 8.0
#: the probabilistic bound of a recursive sum, lambda sqrt(n) u, holds with probability at
#: least 1 - 2 exp(-lambda^2 / 2) (Higham & Mary, SIAM J. Sci. Comput. 2019 and 2020): 1 - 7e-6
LAMBDA = 5.0
#: float32's unit roundoff: the accumulator a correct float16/bfloat16 kernel sums in
ACC_U_16 = 2.0 ** -24


def accumulator_u(info: DtypeInfo) -> float:
    """The unit roundoff of the narrowest accumulator a correct implementation in ``info``
    sums in: the format itself for float64 and float32, float32 for the 16-bit formats."""
    return info.u if info.p >= 24 else ACC_U_16


def summation_allowance(n: int, info: DtypeInfo, coherent: np.ndarray | None = None):
    """sigma(n), in units of the dtype's u: the relative error of a correct sum of n positive
    terms (pairwise in the dtype, or recursive in a float32-or-wider accumulator).
    ``coherent``: per row, G of the rows whose equal terms round alike
    (:mod:`smcheck.coherence`), in place of lambda sqrt(n) where larger: an array per row."""
    n = max(int(n), 1)
    ratio = accumulator_u(info) / info.u
    if coherent is None:
        return math.ceil(math.log2(n)) + LAMBDA * math.sqrt(n) * ratio
    return math.ceil(math.log2(n)) + np.maximum(LAMBDA * math.sqrt(n), coherent) * ratio


def underflow_unit(info: DtypeInfo, ftz: bool = False) -> float:
    """The absolute error of one rounding into the subnormal range: the smallest subnormal,
    or, where results may be flushed to zero (``--allow-ftz``), the smallest normal number."""
    return info.tiny if ftz else info.eta


def _row_stats(d, s):
    """Per row: W = sum_j s_j |d_j| and S = sum_j exp(d_j) (d_j <= 0; masked entries, d = -inf,
    count for nothing)."""
    fin = np.isfinite(d)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        ad = np.where(fin, np.abs(d), 0.0)
        W = np.sum(np.where(fin, s, 0.0) * ad, axis=-1)
        S = np.sum(np.where(fin, np.exp(np.where(fin, d, 0.0)), 0.0), axis=-1)
    return W, S


#: the last (d, s) gap_stats saw, weakly, and its (W, S): a forward run asks twice for the
#: same exact reference's (its tolerance and its normalization allowance)
_LAST: tuple = (None, None, None)


def gap_stats(d: np.ndarray, s: np.ndarray, stats: "RowStats | None" = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """(W, S) of every row of 2-D ``d`` and ``s``, in blocks; ``stats``: the whole row's,
    where d and s hold a segment of one row. (The arrays of an exact reference, never written
    to: asked again for the same two arrays, the last answer is given.)"""
    global _LAST
    if stats is not None:
        return np.array([stats.W]), np.array([stats.S])
    d, s = (np.asarray(a, dtype=np.float64) for a in (d, s))
    rd, rs, got = _LAST
    if rd is not None and rd() is d and rs() is s:
        return got
    got = row_reduce(_row_stats, (d, s), d.shape, 2)
    try:
        _LAST = (weakref.ref(d), weakref.ref(s), got)
    except TypeError:  # pragma: no cover - an array type without weak references
        _LAST = (None, None, None)
    return got


@dataclass(frozen=True)
class RowStats:
    """What the allowances know of a whole row when their arrays hold a segment of it (a row
    too long to hold, :mod:`smcheck.longrow`): W = sum_j s_j |d_j|, S = sum_j exp(d_j), the
    length n, the number of subnormal s_j, and for the strict log-softmax bound T and W' (the
    sum, and the exp-weighted mean |d_j|, over the entries other than the first maximum)."""

    W: float
    S: float
    n: int
    small: int = 0
    T: float = 0.0
    Wp: float = 0.0
    dmax: float = 0.0  # max |d_j| over the entries not masked


def _n(d: np.ndarray, stats: RowStats | None) -> int:
    return d.shape[-1] if stats is None else stats.n


def _rel(d, row, u, gaps):
    with np.errstate(over="ignore", invalid="ignore"):
        k = np.where(np.isfinite(d), gaps * np.abs(d) + row, C_OPS)
        return np.minimum(u * k, 1.0)


def _log_scaled(d, y, row, u):
    """u (|d_i| + |y_i| + row terms), each term scaled by u before the sum (|d| and |y| may be
    near realmax), u C for masked entries."""
    fin = np.isfinite(d)
    with np.errstate(over="ignore", invalid="ignore"):
        ad = np.where(fin, np.abs(d), 0.0)
        ay = np.where(np.isfinite(y), np.abs(y), 0.0)
        return np.where(fin, u * ad + u * ay + u * row, u * C_OPS)


def entry_sigma(sig, off, u: float, W, logS, dmax=None):
    """sigma(n) as an entry's allowance counts it, per row: at most what the computed row's sum
    says. A correct implementation divides each exp(d_i) (1 + e_i) by one computed sum
    S (1 + delta) (or multiplies by its reciprocal, or subtracts its log); its row then sums
    to (1 + sum_j s_j e_j) / (1 + delta), so |delta| <= ``off`` + u (12 + W + log S), off =
    |sum - 1| (log-softmax: |log sum exp(y_j)|, and 2W for its doubly rounded gaps), whatever
    the summation. sigma(n) u, the bound of a sum taken one term after another (5 sqrt(n) u:
    1,600 u at 10^5 terms), is allowed only as far as the row shows it, and an error of each
    entry's own fails where sigma(n) hid it. ``dmax`` (softmax: the row's largest |d_j|) adds
    what exp(d_i - log S), the division-free form, rounds a second time, u (|d_i| + log S).
    A row with a term that is not finite (off = inf) keeps sigma(n)."""
    if off is None:
        return sig
    with np.errstate(over="ignore", invalid="ignore"):
        if dmax is None:  # log-softmax
            return np.minimum(sig, off / u + C_OPS + 2 * W + logS)
        return np.minimum(sig, off / u + C_OPS + W + 2 * logS + dmax)


def _dmax(d: np.ndarray, stats: "RowStats | None") -> np.ndarray:
    if stats is not None:
        return np.array([stats.dmax])
    (m,) = row_reduce(lambda d: (np.max(np.where(np.isfinite(d), np.abs(d), 0.0), axis=-1),),
                      (d,), d.shape, 1, ops=("max",))
    return m


def softmax_rel(d: np.ndarray, s: np.ndarray, info: DtypeInfo,
                from_log: bool = False, stats: RowStats | None = None,
                off: np.ndarray | None = None) -> np.ndarray:
    """r_i = min(u (12 + |d_i| + W + sigma(n)), 1): the relative error a correct softmax may
    make at each entry of the 2-D arrays, dividing e^(d_i) by the sum (or multiplying by its
    reciprocal). ``from_log``: s formed as exp of the rounded log-softmax d_i - log S, which
    rounds the gap twice and log S too, u (12 + 2|d_i| + W + log S + sigma(n)) (torch's autograd
    forms the log-softmax Jacobian I - 1 s^T that way). The factor 1 marks an entry the dtype
    cannot resolve."""
    d = np.asarray(d, dtype=np.float64)
    W, S = gap_stats(d, s, stats)
    with np.errstate(divide="ignore"):
        logS = np.log(S)
        gaps = 2.0 if from_log else 1.0
        sig = entry_sigma(summation_allowance(_n(d, stats), info), off, info.u, W, logS,
                          None if off is None else _dmax(d, stats))
        row = C_OPS + W + sig + (logS if from_log else 0.0)
    (r,) = map_blocks(lambda d, row: _rel(d, row, info.u, gaps), (d, row[:, None]), d.shape,
                      (np.float64,))
    return r


SOFTMAX_FORMULA = ("|c - s_i| <= u*(12 + |d_i| + W + sigma)*s_i + 2*unit, d_i = x_i - max(x), "
                   "W = sum_j s_j|d_j|, sigma = min(ceil(log2 n) + 5 sqrt(n) u_acc/u, "
                   "|sum_j c_j - 1|/u + 12 + W + 2 log S + max_j |d_j|), S = sum_j exp(d_j)")


def softmax_tolerance(d: np.ndarray, s: np.ndarray, info: DtypeInfo,
                      ftz: bool = False, stats: RowStats | None = None,
                      widen: np.ndarray | None = None,
                      off: np.ndarray | None = None) -> Tolerance:
    """Allowance for s_i = softmax(x)_i computed in ``info``'s format: a relative error r_i
    (:func:`softmax_rel`) plus two roundings into the subnormal range. ``widen``: per row, a
    relative error every entry of the row may share, the computed row's own |sum - 1| where
    its sum may drift (:mod:`smcheck.coherence`)."""
    unit = underflow_unit(info, ftz)
    rtol = softmax_rel(d, s, info, stats=stats, off=off)
    if widen is not None:
        rtol = np.minimum(rtol + widen[:, None], 1.0)
    return Tolerance(atol=2.0 * unit, rtol=rtol, formula=SOFTMAX_FORMULA, metric="relative",
                     under=unit)


def log_softmax_tolerance(d: np.ndarray, s: np.ndarray, y: np.ndarray, info: DtypeInfo,
                          metric: str = "scaled", ftz: bool = False,
                          stats: RowStats | None = None,
                          widen: np.ndarray | None = None,
                          off: np.ndarray | None = None) -> Tolerance:
    """Allowance for y_i = log softmax(x)_i in ``info``'s format.

    ``scaled`` (default): the absolute error of the shifted evaluation (x_i - max) - log S,
        |ŷ_i - y_i| <= u (12 + |d_i| + W + |y_i| + log S + sigma(n)),
    (S = sum_j exp(x_j - max) <= n): the rounded gap, the sum, the log and the subtraction.
    ``strict``: componentwise relative error u (12 + W' + sigma(n)) |y_i|, W' the mean of
    |x_j - max| over the non-maximal entries weighted by exp(x_j - max): what computing the
    largest entry as -log1p(sum_{j != max} exp(x_j - max)) achieves. It fails a method that
    loses the digits of y_max ≈ 0 to cancellation.

    ``widen``: per row, an absolute error every entry of the row may share, the computed
    row's own |log sum_j exp(ŷ_j)| where its sum may drift (:mod:`smcheck.coherence`).
    """
    u = info.u
    sig = summation_allowance(_n(d, stats), info)
    shared = 0.0 if widen is None else widen[:, None]
    finite = np.isfinite(d)
    ad = np.where(finite, np.abs(d), 0.0)
    unit = underflow_unit(info, ftz)
    if metric == "strict" and stats is not None:
        rtol = np.minimum(u * (C_OPS + stats.Wp + sig) * np.ones_like(d), 1.0)
        return Tolerance(atol=unit, rtol=rtol, metric="strict", formula=STRICT_LOG_FORMULA,
                         under=unit)
    if metric == "strict":
        with np.errstate(under="ignore"):
            e = np.where(finite, np.exp(np.where(finite, d, 0.0)), 0.0)
        # the sum over the others leaves out one maximal entry (ties stay in T)
        first_max = np.zeros(e.shape, dtype=bool)
        if e.size:
            idx = np.argmax(np.where(finite, d, -np.inf), axis=-1)
            np.put_along_axis(first_max, idx[..., None], True, axis=-1)
        others = np.where(first_max, 0.0, e)
        T = np.sum(others, axis=-1, keepdims=True)
        Wp = np.sum(others * ad, axis=-1, keepdims=True) / np.where(T > 0, T, 1.0)
        rtol = np.minimum(u * (C_OPS + Wp + sig) * np.ones_like(d), 1.0)
        return Tolerance(atol=unit + shared, rtol=rtol, metric="strict",
                         formula=STRICT_LOG_FORMULA, under=unit)
    W, S = gap_stats(d, s, stats)
    with np.errstate(divide="ignore"):
        logS = np.log(S)
        row = (C_OPS + W + logS + entry_sigma(sig, off, u, W, logS))[:, None]
    (atol,) = map_blocks(lambda d, y, row: _log_scaled(d, y, row, u),
                         (np.asarray(d, dtype=np.float64), np.asarray(y, dtype=np.float64), row),
                         d.shape, (np.float64,))
    if widen is not None:
        atol = atol + shared
    formula = ("|c - y_i| <= u*(12 + |d_i| + W + |y_i| + log S + sigma), d_i = x_i - max(x), "
               "W = sum_j s_j|d_j|, S = sum_j exp(d_j), sigma = min(ceil(log2 n) + "
               "5 sqrt(n) u_acc/u, |log sum_j exp(c_j)|/u + 12 + 2W + log S)")
    return Tolerance(atol=atol, rtol=None, metric="scaled", formula=formula, under=unit)


STRICT_LOG_FORMULA = ("|c - y_i| <= u*(12 + W' + sigma(n))*|y_i| + unit,"
                      " W' = mean |x_j - max| over non-max j weighted by exp(x_j - max)")


def normalization_allowance(d: np.ndarray, s: np.ndarray, info: DtypeInfo, log: bool = False,
                            ftz: bool = False, stats: RowStats | None = None,
                            coherent: np.ndarray | None = None) -> np.ndarray:
    """Per row, what |sum_i ŝ_i - 1| (``log``: |sum_i exp(ŷ_i) - 1|) may be for a correct
    implementation: the sum's own error and the rounding of the results, never the entries'
    allowances added up (those reach 1 on wide inputs, where the sum of a correct softmax is
    still 1 to a few u).

        softmax:      u (sigma(n) + H + 8) + unit * #{0 < s_i < smallest normal}
        log-softmax:  u (sigma(n) + H + log S + 8) + 4 * 2^-53

    The rounded gaps and exp's errors cancel between each numerator and the sum they are
    divided by; H = sum_i s_i |y_i| (the entropy, <= log n) covers the formulas that
    exponentiate a rounded log-softmax instead, and log S the rounding of log S; each result
    in the subnormal range errs by up to one underflow unit (two roundings of half a unit, or
    a flushed value below the smallest normal); the exp that smcheck applies to
    a computed log-softmax (in float64) by 2^-53 per unit of the sum.
    """
    W, S = gap_stats(d, s, stats)
    u, unit = info.u, underflow_unit(info, ftz)
    sig = summation_allowance(_n(d, stats), info, coherent)
    with np.errstate(divide="ignore", invalid="ignore"):
        logS = np.log(S)
    H = W + logS
    if log:
        return u * (sig + H + logS + C_NORM) + 4 * 2.0 ** -53
    small = np.sum((s > 0) & (s < info.tiny), axis=-1) if stats is None else stats.small
    return u * (sig + H + C_NORM) + unit * small


NORMALIZATION_FORMULA = {
    False: "|sum_i s_i - 1| <= u*(sigma(n) + H + 8) + unit per subnormal s_i, H = sum_i s_i|y_i|",
    True: "|sum_i exp(y_i) - 1| <= u*(sigma(n) + H + log S + 8) + 4*2^-53, H = sum_i s_i|y_i|",
}


def jacobian_tolerance(d: np.ndarray, s: np.ndarray, info: DtypeInfo,
                       log: bool = False, metric: str = "scaled", ftz: bool = False
                       ) -> Tolerance:
    """Allowance for the Jacobian entries (rows, n, n), computed from a softmax with relative
    errors r_i (:func:`softmax_rel`), r̄ = sum_j s_j r_j their s-weighted mean.

    Softmax, J_ik = [i=k] s_i - s_i s_k: a product of computed s_i, s_k errs by
    (r_i + r_k + 4u) relative; the diagonal s_i (1 - s_i), with 1 - s_i a sum of the others
    (error sum_{j != i} s_j r_j <= r̄), by (r_i + r̄ + 4u). ``scaled`` measures that against
    each entry's natural size s_i s_k + [i=k] s_i (what s_i - s_i^2 from a correctly rounded s
    achieves); ``strict`` against |J_ik| itself (componentwise relative: fails s_i - s_i^2
    when s_i is near 1). Log-softmax, J_ik = [i=k] - s_k: (r_k + 2u) off the diagonal,
    (r_k + r̄ + 2u) on it, against s_k + [i=k] (scaled) or |J_ik|, r_k for s formed as exp of
    the log-softmax (as autograd of log-softmax forms it).
    """
    u = info.u
    unit = underflow_unit(info, ftz)
    r = softmax_rel(d, s, info, from_log=log)
    rbar = np.sum(np.where(s > 0, s, 0.0) * r, axis=-1, keepdims=True)
    n = s.shape[-1]
    diag = (slice(None), np.arange(n), np.arange(n))
    # the n^2 arrays are formed in place, at most two at a time
    if log:
        rel = np.empty(s.shape + s.shape[-1:])
        rel[...] = (r + 2 * u)[:, None, :]
        rel[diag] = r + rbar + 2 * u
    else:
        rel = r[:, :, None] + r[:, None, :]
        rel += 4 * u
        rel[diag] = r + rbar + 4 * u
    np.minimum(rel, 1.0, out=rel)
    what = "[i=k] - s_k" if log else "[i=k] s_i - s_i s_k"
    if metric == "strict":
        return Tolerance(atol=4 * unit, rtol=rel, metric="strict", under=unit,
                         formula=f"|c - J_ik| <= rho_ik*|J_ik| + 4*unit, J_ik = {what}, rho_ik "
                         "from the softmax allowances r_i, r_k and their s-weighted mean (README)")
    if log:  # rho_ik (s_k + [i=k])
        on_diag = rel[diag] * (s + 1.0)
        rel *= s[:, None, :]
        rel[diag] = on_diag
    else:  # rho_ik (s_i s_k + [i=k] s_i)
        natural = s[:, :, None] * s[:, None, :]
        natural[diag] += s
        rel *= natural
        del natural
    rel += 4 * unit
    return Tolerance(atol=rel, rtol=None, metric="scaled", under=unit,
                     formula=f"|c - J_ik| <= rho_ik*({'s_k + [i=k]' if log else 's_i s_k + [i=k] s_i'})"
                     " + 4*unit, rho_ik from the softmax allowances r_i, r_k and their "
                     "s-weighted mean (README)")


def vjp_tolerance(d: np.ndarray, s: np.ndarray, V: np.ndarray, abs_dot: np.ndarray,
                  info: DtypeInfo, ftz: bool = False) -> Tolerance:
    """Allowance for z_i = s_i (v_i - <v, s>), A = sum_j |v_j| s_j:

        |ẑ_i - z_i| <= s_i ((r_i + 3u)(|v_i| + A) + sum_j |v_j| s_j r_j + sigma(n) u A)
                       + 2 unit (|v_i| + A + 1)

    the computed s_i (r_i), the subtraction and the product (2u), the dot product <v, ŝ>
    (each s_j's error weighted by |v_j| s_j, its products u A and its sum sigma(n) u A), and
    s_i or z_i in the subnormal range. Its smallest part, u s_i (|v_i| + A), is the rounding
    floor below which the sign of a computed z_i means nothing (the z_i = 0 condition)."""
    u = info.u
    unit = underflow_unit(info, ftz)
    r = softmax_rel(d, s, info)
    av = np.where(np.isfinite(V), np.abs(V), 0.0)
    A = abs_dot[:, None]
    Rv = np.sum(av * s * r, axis=-1, keepdims=True)
    sig = summation_allowance(s.shape[-1], info)
    scale = s * (av + A)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (r + 3 * u) + np.where(scale > 0, s * (Rv + sig * u * A) / np.where(
            scale > 0, scale, 1.0), 0.0)
    atol = np.minimum(rho, 1.0) * scale + 2 * unit * (av + A + 1)
    return Tolerance(atol=atol, rtol=None, metric="scaled", under=unit,
                     formula="|c - z_i| <= s_i((r_i + 3u)(|v_i| + A) + sum_j |v_j| s_j r_j + "
                     "sigma(n) u A) + 2*unit*(|v_i| + A + 1), A = sum_j |v_j| s_j")


def rounding_floor(s: np.ndarray, V: np.ndarray, abs_dot: np.ndarray, info: DtypeInfo):
    """u s_i (|v_i| + sum_j |v_j| s_j): below it a computed z_i has no reliable sign."""
    return info.u * s * (np.abs(V) + abs_dot[:, None])


def probe_allowance(d, s, V, U, info: DtypeInfo, log: bool = False, ftz: bool = False):
    """Allowance for the bilinear forms v^T J u (rows, probes) on probe pairs (V, U of shape
    (rows, probes, n)), with the same ingredients as :func:`jacobian_tolerance`.

    softmax, v^T J u = sum_i v_i s_i u_i - <v, s><u, s>:
        sum_i |v_i u_i| s_i (r_i + 2u) + A_v R_u + A_u R_v + (sigma(n) + 4) u A_v A_u
    log-softmax, <v, u> - (sum v) <s, u>:
        (sigma(n) + 4) u (sum |v_i u_i| + |sum v| A_u) + |sum v| R_u
    with A_w = sum_j |w_j| s_j and R_w = sum_j |w_j| s_j r_j."""
    u = info.u
    unit = underflow_unit(info, ftz)
    r = softmax_rel(d, s, info, from_log=log)[:, None, :]
    S = s[:, None, :]
    sig = summation_allowance(s.shape[-1], info)
    av, au = np.abs(V), np.abs(U)
    A_u, R_u = np.sum(au * S, -1), np.sum(au * S * r, -1)
    if log:
        sv = np.abs(np.sum(V, -1))
        out = (sig + 4) * u * (np.sum(av * au, -1) + sv * A_u) + sv * R_u
    else:
        A_v, R_v = np.sum(av * S, -1), np.sum(av * S * r, -1)
        out = (np.sum(av * au * S * (r + 2 * u), -1) + A_v * R_u + A_u * R_v
               + (sig + 4) * u * A_v * A_u)
    return out + 4 * unit * (1 + np.sum(av * au, -1))


def quotient_tolerance(info: DtypeInfo, ftz: bool = False) -> Tolerance:
    """Allowance for -t_i / z_i from t and z in the dtype: one rounded division (u), with a
    factor 4 for a reciprocal-and-multiply and for libraries that round t or z once more."""
    unit = underflow_unit(info, ftz)
    return Tolerance(atol=2 * unit, rtol=4 * info.u, metric="relative", under=unit,
                     formula="|c - g_i| <= 4u*|g_i| + 2*unit")


def grad_x_tolerance(d, s, T, info: DtypeInfo, ftz: bool = False) -> Tolerance:
    """Allowance for the gradient in x of the loss at z = softmax(x), s * sum(t) - t: the
    softmax's relative errors r_i and two roundings, against s_i sum|t| + |t_i|."""
    unit = underflow_unit(info, ftz)
    r = softmax_rel(d, s, info)
    nat = s * np.sum(np.abs(T), axis=-1, keepdims=True) + np.abs(T)
    return Tolerance(atol=np.minimum(r + 4 * info.u, 1.0) * nat + 2 * unit, rtol=None,
                     under=unit, formula="(r_i + 4u)(s_i sum|t| + |t_i|) + 2*unit")
