"""A fast reference engine: exact softmax in vectorised double-double arithmetic.

The mpmath loop costs tens of microseconds per entry; this engine computes the same exact
quantities with numpy arrays of float64 pairs (hi, lo), about 106 significant bits, and is
certified against mpmath in the tests (relative error below 2^-100 wherever the result is
above 1e-300; below it the low part is subnormal and the pair is within half a subnormal
spacing of the exact value, as the mpmath engine's is).

How each quantity stays exact enough:

* d_i = x_i - max(x) as an exact pair (two_sum), so |x| up to 1e308 loses nothing;
* exp(d) = 2^k 2^(j/64) exp(r): Cody and Waite's reduction r = d - (64k + j) ln2/64 (exact
  first step, ln 2 to 161 bits), the table 2^(j/64) in pairs, exp(r) - 1 by Horner steps
  in pairs (:func:`dd_expm1_small`); tested to 2^-104;
* sums are pairwise in double-double (error below log2(n) 2^-106 of the sum of |terms|);
* the per-row scalars log S = log1p(T) come from mpmath (one call per row);
* s_i = 2^k_i (m_i / S), rescaled at the end so that underflow rounds once.

The element-wise work runs in cache-sized blocks, on threads (:mod:`smcheck.blocks`). Also
here: the shifted references of ``shift_invariance``, derived from the unshifted one
(:func:`shifted_softmax_dd`), and the float64 tier for results narrower than float64
(:func:`softmax_f64`), each with its own stated bound.
"""

from __future__ import annotations

import math

import numpy as np

from ..blocks import map_blocks, row_reduce
from ..ddmath import (dd_add, dd_div, dd_exp, dd_mul, dd_mul_d, pair_row_sums, quick_two_sum,
                      row_sums_blocked, scale_pair, two_prod, two_sum)
from .exact import ExactSoftmax, ExactVJP

#: below this x - max, exp underflows past every format (e^-800 < 1e-347): s = 0
DEAD = -800.0


def f64_bound(d: np.ndarray, n: int) -> np.ndarray:
    """Relative error bound of :func:`softmax_f64` per entry: (|d_i| + ceil(log2 n) + 20)
    2^-53 (d = x - max rounded: |d| u; exp within 4 ULP; the pairwise sum; the division)."""
    return (np.abs(d) + (math.ceil(math.log2(max(n, 1))) + 20)) * 2.0 ** -53


def _f64_block(X, a, first):
    fin = X > -np.inf
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        d = np.where(fin, X - a, -np.inf)
        e = np.exp(d)
    return d, e, np.where(first, 0.0, e)


def softmax_f64(X: np.ndarray, one_minus: bool = False):
    """The float64 tier: softmax by the shifted formula in float64 (x - max, exp, a pairwise
    sum, one division per entry; log S = log1p(sum over the others)), with the relative error
    bound :func:`f64_bound` per entry, at most 2^-43 where exp(x - max) does not underflow
    float64 (|d| < 708) and n <= 10^9. That is 2^-19 of a float32 ULP, so it judges float32,
    float16 and bfloat16 results; the tests certify the bound against mpmath."""

    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    rows, n = X.shape
    m = np.argmax(X, axis=-1)
    a = X[np.arange(rows), m][:, None]
    first = np.zeros((rows, n), dtype=bool)
    first[np.arange(rows), m] = True
    d, e, others = map_blocks(_f64_block, (X, a, first), X.shape,
                              (np.float64, np.float64, np.float64))
    (T,) = row_reduce(lambda t: (np.sum(t, axis=-1),), (others,), X.shape, 1)
    S = (1.0 + T)[:, None]
    logS = np.log1p(T)[:, None]
    with np.errstate(under="ignore", invalid="ignore"):
        s = e / S
    # the low parts are 0: one read-only zero for every entry, not an array of them
    zeros = np.broadcast_to(np.float64(0.0), s.shape)
    om = None
    if one_minus:
        with np.errstate(invalid="ignore"):
            om = np.where(first, T[:, None] / S, (S - e) / S)
        om = np.where(np.isfinite(d), om, 1.0)
    fin_s = s > 1e-300
    live_d = np.where(fin_s, d, 0.0)
    bound = float(np.max(f64_bound(live_d, n))) if n else 0.0
    ex = ExactSoftmax(s, zeros, None, None, d, 0, om, None if om is None else zeros,
                      engine="float64")
    with np.errstate(invalid="ignore"):
        ex._y_maker = lambda: (np.where(np.isfinite(d), d - logS, -np.inf), zeros)
    ex.rel_bound = bound
    ex.precision_note = (
        f"float64 tier (for results narrower than float64): relative error below "
        f"(|x_i - max| + ceil(log2 n) + 20) 2^-53 per entry, at most {bound:.1e} here "
        "(certified against mpmath)")
    return ex


def _exp_block(X, a):
    """Per entry: d = x - max as an exact pair (-inf where masked), exp(d) = 2^k m where
    d > DEAD, and the unmasked entries."""
    fin = X > -np.inf
    with np.errstate(over="ignore", invalid="ignore"):
        dh, dl = two_sum(X, -a)
    dh = np.where(fin, dh, -np.inf)
    dl = np.where(np.isfinite(dh), dl, 0.0)
    live = dh > DEAD
    k, mh, ml = dd_exp(np.where(live, dh, 0.0), np.where(live, dl, 0.0))
    return dh, dl, k, mh, ml, fin


def softmax_dd(X: np.ndarray, one_minus: bool = False):
    """Exact softmax and log-softmax of the rows of X as pairs; see the module docstring.
    Returns an :class:`~smcheck.reference.ExactSoftmax` (engine "double-double")."""

    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    rows = X.shape[0]
    m = np.argmax(X, axis=-1)  # rows have no nan; masked entries are -inf
    a = X[np.arange(rows), m][:, None]
    f64 = np.float64
    dh, dl, k, mh, ml, fin = map_blocks(_exp_block, (X, a), X.shape,
                                        (f64, f64, np.int64, f64, f64, bool))
    return _finish(X, dh, dl, fin, m, a, k, mh, ml, one_minus)


def shifted_softmax_dd(X: np.ndarray, c: np.ndarray, base):
    """The exact softmax of Xs = fl(X + c) (c per row, float64), derived from ``base`` (the
    double-double softmax of X) without a second exp:

    Xs_i - Xs_max = (x_i - x_max) + D_i, D = delta - delta_max with delta = fl(x + c) - (x + c)
    exact (two_sum), so softmax(Xs)_i = s_i (1 + p_i) / (1 + q), p = expm1(D), q = <s, p>,
    i.e. s_i + s_i g_i with g = (p - q) / (1 + q). |D| <= ulp(x + c) is tiny, so g is
    computed in float64 and added to the pair: the relative error is below
    2^-100 + u max|D| (ceil(log2 n) + 12) (:func:`shift_bound`; about 2^-91 for shifts to
    +-760 and n = 10^6), and tests certify it against mpmath. When the shift moved entries by
    more than 1e-10 (|x| far beyond the shift) everything is recomputed (2^-100)."""

    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    c = np.asarray(c, dtype=np.float64).reshape(-1, 1)
    st = base.state
    if st is None:
        with np.errstate(over="ignore", invalid="ignore"):
            return softmax_dd(X + c)
    fin, m = st[2], st[3]
    rows, n = X.shape
    r = np.arange(rows)
    with np.errstate(over="ignore", invalid="ignore"):
        xm, em = two_sum(X[r, m][:, None], c)  # the maximum's rounding: delta_max = -em
        a = xm
    # one pass for max|D| and q = <s, p>, one for the pairs and d = Xs - max(Xs)
    args = (X, c, -em, fin, base.s_hi)
    q, maxD_rows = row_reduce(_shift_sums, args, X.shape, 2, ops=("sum", "max"))
    maxD = float(np.max(maxD_rows)) if maxD_rows.size else 0.0
    if not (maxD <= 1e-10 and np.all(np.isfinite(a))):
        with np.errstate(over="ignore", invalid="ignore"):
            return softmax_dd(X + c)  # not a small perturbation, or overflow: start over
    q = q[:, None]
    s_hi, s_lo, d64 = map_blocks(_shift_pairs, (*args, base.s_lo, q, a), X.shape,
                                 (np.float64, np.float64, np.float64))
    ex = ExactSoftmax(s_hi, s_lo, None, None, d64, 0, engine="double-double")
    ex.rel_bound = shift_bound(maxD, n)
    ex.precision_note = (
        f"double-double, derived from the unshifted reference by the factor exp(D), max|D| "
        f"= {maxD:.1e}: relative error below 2^{math.floor(math.log2(shift_bound(maxD, n)))}")
    L = np.log1p(q)  # log S' = log S + log1p(q)

    def logs():
        yh, yl = base.y_hi, base.y_lo
        Dh, Dl, _ = _shift_D(X, c, -em, fin)
        with np.errstate(invalid="ignore"):
            th, tl = two_sum(Dh, -L)
            h, lo = dd_add(yh, yl, th, tl + Dl)
        h = np.where(np.isfinite(yh), h, -np.inf)
        return h, np.where(np.isfinite(h), lo, 0.0)

    ex._y_maker = logs
    return ex


def shift_bound(maxD: float, n: int) -> float:
    """The relative error bound of :func:`shifted_softmax_dd`'s derived pairs."""
    return 2.0 ** -100 + 2.0 ** -53 * maxD * (math.ceil(math.log2(max(n, 1))) + 12)


def _shift_D(X, c, dm, fin):
    """D = delta - delta_max as a pair (delta = fl(x + c) - (x + c), exact), and fl(x + c)."""
    with np.errstate(over="ignore", invalid="ignore"):
        Xs, e_ = two_sum(X, c)  # X + c = Xs + e_ exactly: the rounding moved x_i by -e_i
        Dh, Dl = two_sum(np.where(fin, -e_, 0.0), -dm)
    return np.where(fin, Dh, 0.0), np.where(fin, Dl, 0.0), Xs


def _shift_sums(X, c, dm, fin, s_hi):
    """Per row of the block: <s, p> with p = expm1(D), and max|D|."""
    Dh, Dl, _ = _shift_D(X, c, dm, fin)
    with np.errstate(over="ignore", invalid="ignore"):  # a large D: recomputed, not used
        p = Dh + (Dl + 0.5 * Dh * Dh)  # expm1(D) for |D| <= 1e-10: D^3/6 < 2^-102
        return np.sum(s_hi * p, axis=-1), np.max(np.abs(Dh), axis=-1)


def _shift_pairs(X, c, dm, fin, s_hi, s_lo, q, a):
    """s_i + s_i g_i, g = (p - q) / (1 + q), as pairs; and d = Xs - max(Xs)."""
    Dh, Dl, Xs = _shift_D(X, c, dm, fin)
    p = Dh + (Dl + 0.5 * Dh * Dh)
    g = (p - q) / (1.0 + q)
    hi, lo = quick_two_sum(s_hi, s_lo + s_hi * g)
    with np.errstate(over="ignore", invalid="ignore"):
        d = np.where(fin, Xs - a, -np.inf)
    return hi, lo, d


def _scaled_terms(mh, ml, k, K, dh, first):
    """The terms 2^(k - K) m of T / 2^K: the live entries other than the first maximum."""
    others = (dh > DEAD) & ~first
    with np.errstate(under="ignore", over="ignore"):  # masked entries overflow, unused
        sh_, sl_ = np.ldexp(mh, k - K), np.ldexp(ml, k - K)
    return sh_, sl_, others


def _largest_k(k, dh, first):
    return (np.max(np.where((dh > DEAD) & ~first, k, -(2 ** 20)), axis=-1),)


def _probabilities(mh, ml, k, dh, Rh, Rl):
    """s = 2^k m / S, as m times the pair 1/S, rounded once at the end."""
    live = dh > DEAD
    qh, ql = dd_mul(mh, ml, Rh, Rl)
    s_hi, s_lo = scale_pair(qh, ql, np.where(live, k, 0).astype(np.int32))
    return np.where(live, s_hi, 0.0), np.where(live, s_lo, 0.0)


def _logs(dh, dl, Lh, Ll):
    """y = d - log S."""
    with np.errstate(invalid="ignore"):
        yh, yl = dd_add(dh, dl, -Lh, -Ll)
    yh = np.where(np.isfinite(dh), yh, -np.inf)
    return yh, np.where(np.isfinite(yh), yl, 0.0)


def _log_sums(Uh, Ul, K):
    """log S = log1p(T) per row, T = (Uh + Ul) 2^K, as pairs (mpmath at 40 digits): from the
    unscaled pair, so that a T in the subnormal range is not rounded first."""
    import mpmath

    rows = len(Uh)
    Lh, Ll = np.zeros(rows), np.zeros(rows)
    with mpmath.workdps(40):
        for r in range(rows):
            L = mpmath.log1p(mpmath.ldexp(mpmath.mpf(Uh[r]) + mpmath.mpf(Ul[r]), int(K[r])))
            Lh[r] = float(L)
            Ll[r] = float(L - mpmath.mpf(Lh[r]))
    return Lh, Ll


def _finish(X, dh, dl, fin, m, a, k, mh, ml, one_minus):
    rows, n = X.shape
    first = np.zeros((rows, n), dtype=bool)
    first[np.arange(rows), m] = True
    # T = sum over the others of 2^k m, summed at the scale of its largest term and scaled
    # back once: terms far in the subnormal range would otherwise each round to eta
    (K,) = row_reduce(_largest_k, (k, dh, first), (rows, n), 1, ops=("max",))
    K = np.where(K < -(2 ** 19), 0, K).astype(np.int64)[:, None]
    Uh, Ul = row_sums_blocked(_scaled_terms, (mh, ml, k, K, dh, first), (rows, n))  # T / 2^K
    Th, Tl = scale_pair(Uh, Ul, K[:, 0].astype(np.int32))
    Sh, Sl = dd_add(np.ones(rows), np.zeros(rows), Th, Tl)
    # one reciprocal per row, then products: a pair division per entry costs four times more
    Rh, Rl = dd_div(np.ones(rows), np.zeros(rows), Sh, Sl)
    Rh, Rl = Rh[:, None], Rl[:, None]
    f64 = np.float64
    s_hi, s_lo = map_blocks(_probabilities, (mh, ml, k, dh, Rh, Rl), (rows, n), (f64, f64))
    om_hi = om_lo = None
    if one_minus:
        live = dh > DEAD
        with np.errstate(under="ignore"):
            kk = np.where(live, k, 0).astype(np.int32)
            eh, el = np.ldexp(mh, kk), np.ldexp(ml, kk)
        eh, el = np.where(live, eh, 0.0), np.where(live, el, 0.0)
        rh, rl = dd_add(Sh[:, None], Sl[:, None], -eh, -el)  # S - e_i (benign for i != max)
        rh = np.where(first, Th[:, None], rh)
        rl = np.where(first, Tl[:, None], rl)
        om_hi, om_lo = dd_mul(rh, rl, Rh, Rl)
        om_hi = np.where(fin, om_hi, 1.0)
        om_lo = np.where(fin, om_lo, 0.0)
    # d = fl(x - max) (-inf where masked) is the pair's hi part
    ex = ExactSoftmax(s_hi, s_lo, None, None, dh, 0, om_hi, om_lo, engine="double-double")
    ex.state = (None, None, fin, m)  # what shifted_softmax_dd needs (the mask, the maxima)
    # log-softmax only when asked for (forward --log): a pass fewer, and no log S, for
    # everything else
    def logs():
        Lh, Ll = _log_sums(Uh, Ul, K[:, 0])
        return map_blocks(_logs, (dh, dl, Lh[:, None], Ll[:, None]), (rows, n), (f64, f64))

    ex._y_maker = logs
    return ex


def _dot_rows(ah, al, bh, bl, mask):
    """Exact row sums of (ah + al)(bh + bl) where mask, as pairs."""
    ph, pl = dd_mul(ah, al, bh, bl)
    return pair_row_sums(np.where(mask, ph, 0.0), np.where(mask, pl, 0.0), mask)


def _vs_terms(s_hi, s_lo, v, fin):
    ph, pl = dd_mul_d(s_hi, s_lo, v)
    return np.where(fin, ph, 0.0), np.where(fin, pl, 0.0), fin


def _abs_vs(v, s_hi):
    return (np.sum(np.abs(v) * s_hi, axis=-1),)


def _vjp_pairs(s_hi, s_lo, v, fin, dot_h, dot_l):
    """z = s (v - <v, s>) as pairs, and where v - <v, s> vanishes (to 2^-100)."""
    with np.errstate(under="ignore"):
        fh, e = two_sum(v, -dot_h)
        fh, fl = quick_two_sum(fh, e - dot_l)
        zh, zl = dd_mul(s_hi, s_lo, fh, fl)
    zero = fin & (np.abs(fh + fl) <= 2.0 ** -100 * np.maximum(np.abs(v), np.abs(dot_h)))
    return np.where(fin, zh, 0.0), np.where(fin, zl, 0.0), zero


def vjp_dd(X: np.ndarray, V: np.ndarray, sm=None):
    """Exact v J(x) = s * (v - <v, s>) per row, as pairs; an ExactVJP. ``sm``: the exact
    softmax of X when it is known already (a shifted input's, derived from the unshifted)."""
    import mpmath


    sm = softmax_dd(X) if sm is None else sm
    V = np.atleast_2d(np.asarray(V, dtype=np.float64))
    fin = np.isfinite(sm.d)
    Vm = np.where(fin, V, 0.0)
    shape = Vm.shape
    dot_h, dot_l = row_sums_blocked(_vs_terms, (sm.s_hi, sm.s_lo, Vm, fin), shape)
    (abs_dot,) = row_reduce(_abs_vs, (Vm, sm.s_hi), shape, 1)
    zh, zl, zero = map_blocks(_vjp_pairs, (sm.s_hi, sm.s_lo, Vm, fin, dot_h[:, None],
                                           dot_l[:, None]), shape,
                              (np.float64, np.float64, bool))
    exact_zero = [np.flatnonzero(zero[r]).tolist() for r in range(V.shape[0])]
    with mpmath.workdps(40):
        dot_str = [mpmath.nstr(mpmath.mpf(h) + mpmath.mpf(lo), 17) for h, lo in zip(dot_h, dot_l)]
    return ExactVJP(zh, zl, dot_h, dot_str, abs_dot, exact_zero, sm)


def bilinear_dd(X: np.ndarray, V: np.ndarray, U: np.ndarray, log: bool = False):
    """v^T J u for probe pairs V, U of shape (rows, k, n): (hi, lo) of shape (rows, k)."""
    sm = softmax_dd(X)
    fin = np.isfinite(sm.d)
    rows, k = V.shape[:2]
    hi, lo = np.zeros((rows, k)), np.zeros((rows, k))
    z = np.zeros_like(sm.s_hi)
    for p in range(k):
        v, u = np.where(fin, V[:, p], 0.0), np.where(fin, U[:, p], 0.0)
        us = _dot_rows(sm.s_hi, sm.s_lo, u, z, fin)
        vuh, vul = two_prod(v, u)
        if log:  # <v, u> - (sum v) <s, u>
            a = pair_row_sums(vuh, vul, fin)
            sv = pair_row_sums(v, z, fin)
            bh, bl = dd_mul(sv[0], sv[1], us[0], us[1])
        else:  # sum v s u - <v, s> <u, s>
            a = _dot_rows(sm.s_hi, sm.s_lo, vuh, vul, fin)
            vs = _dot_rows(sm.s_hi, sm.s_lo, v, z, fin)
            bh, bl = dd_mul(vs[0], vs[1], us[0], us[1])
        hi[:, p], lo[:, p] = dd_add(a[0], a[1], -bh, -bl)
    return hi, lo


def grad_x_dd(X: np.ndarray, T: np.ndarray, sm=None):
    """s * sum(t) - t per row, as pairs. ``sm``: the double-double softmax of X when it is
    known already (the loss case's own)."""
    sm = softmax_dd(X) if sm is None else sm
    T = np.atleast_2d(np.asarray(T, dtype=np.float64))
    th, tl = pair_row_sums(T, np.zeros_like(T), np.ones(T.shape, dtype=bool))
    ph, pl = dd_mul(sm.s_hi, sm.s_lo, th[:, None], tl[:, None])
    return dd_add(ph, pl, -T, np.zeros_like(T))


# --- the exact Jacobian and loss gradient: double-double products of the exact softmax ----


def dd_mul_finite(ah, al, bh, bl):
    """(ah + al)(bh + bl) as a double-double, relative error about 2^-104; where the product
    is not finite, its float64 value."""
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        hi, lo = dd_mul(ah, al, bh, bl)
        p = ah * bh
        bad = ~np.isfinite(hi)
        return np.where(bad, p, hi), np.where(bad, 0.0, lo)


#: entries of the exact Jacobian formed at a time
STRIP = 2 ** 16


def exact_jacobian(ex: ExactSoftmax, log: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The exact Jacobian of each row, (rows, n, n) double-double, from the exact softmax
    (``ex`` computed with ``one_minus=True``): softmax J_ik = [i=k] s_i - s_i s_k with the
    diagonal s_i (1 - s_i); log-softmax J_ik = [i=k] - s_k with the diagonal 1 - s_k."""
    rows, n = ex.s_hi.shape
    idx = np.arange(n)
    if log:
        hi = np.broadcast_to(-ex.s_hi[:, None, :], (rows, n, n)).copy()
        lo = np.broadcast_to(-ex.s_lo[:, None, :], (rows, n, n)).copy()
        hi[:, idx, idx], lo[:, idx, idx] = ex.om_hi, ex.om_lo
        return hi, lo
    hi, lo = np.empty((rows, n, n)), np.empty((rows, n, n))
    per = max(1, STRIP // max(n, 1))  # rows i of J at a time: the products' temporaries stay small
    for a in range(0, n, per):
        b = slice(a, a + per)
        ph, pl = dd_mul_finite(ex.s_hi[:, b, None], ex.s_lo[:, b, None], ex.s_hi[:, None, :],
                        ex.s_lo[:, None, :])
        np.negative(ph, out=hi[:, b])
        np.negative(pl, out=lo[:, b])
    dh, dl = dd_mul_finite(ex.s_hi, ex.s_lo, ex.om_hi, ex.om_lo)
    hi[:, idx, idx], lo[:, idx, idx] = dh, dl
    return hi, lo


def exact_loss_grad(Z: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-t / z for float64 z and t, as a double-double (hi = fl(-t/z), lo the exact residual
    divided by z); entries with z = 0 are nan (undefined)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        hi = -T / Z
        p, e = two_prod(hi, Z)
        lo = ((-T - p) - e) / Z
        # Veltkamp's split overflows beyond ~1e300: there hi alone (correctly rounded) serves
        ok = np.isfinite(hi) & (Z != 0) & (np.abs(hi) < 1e290) & np.isfinite(lo)
        return np.where(Z != 0, hi, np.nan), np.where(ok, lo, 0.0)
