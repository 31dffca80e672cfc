"""A fast reference engine: exact softmax in vectorised double-double arithmetic.

The mpmath loop costs tens of microseconds per entry; this engine computes the same exact
quantities with numpy arrays of float64 pairs (hi, lo), about 106 significant bits, and is
certified against mpmath in the tests (relative error below 2^-100 wherever the result is
above 1e-300; below it the low part is subnormal and the pair is within half a subnormal
spacing of the exact value, as the mpmath engine's is).

How each quantity stays exact enough:

* d_i = x_i - max(x) as an exact pair (two_sum), so |x| up to 1e308 loses nothing;
* exp(d) = 2^k m with k = round(d / ln 2) and m = exp(r), r = d - k ln 2 (ln 2 to 161 bits),
  r / 2^10 by a degree-11 Taylor polynomial, then squared ten times in the form
  p -> 2p + p^2 (p = m - 1), so no digit is lost to 1 + tiny;
* sums are exact: math.fsum of all hi and lo parts, then of the residual (S as a pair);
* the per-row scalars log S = log1p(T) come from mpmath (one call per row);
* s_i = 2^k_i (m_i / S), rescaled at the end so that underflow rounds once.
"""

from __future__ import annotations

import math

import numpy as np

# ln 2 as a triple of float64 (from mpmath at 60 digits): 161 bits
LN2 = (0.6931471805599453, 2.3190468138462996e-17, 5.707708438416212e-34)
SQUARINGS = 10
# 1/j! for j = 2..13 as pairs (from mpmath at 80 digits): plain doubles would leave 2^-53
TAYLOR = [(0.5, 0.0), (0.16666666666666666, 9.25185853854297e-18),
          (0.041666666666666664, 2.3129646346357427e-18),
          (0.008333333333333333, 1.1564823173178714e-19),
          (0.001388888888888889, -5.300543954373577e-20),
          (0.0001984126984126984, 1.7209558293420705e-22),
          (2.48015873015873e-05, 2.1511947866775882e-23),
          (2.7557319223985893e-06, -1.858393274046472e-22),
          (2.755731922398589e-07, 2.3767714622250297e-23),
          (2.505210838544172e-08, -1.448814070935912e-24),
          (2.08767569878681e-09, -1.20734505911326e-25),
          (1.6059043836821613e-10, 1.2585294588752098e-26)]

PRECISION = "double-double (106-bit float64 pairs), relative error below 2^-100 (7.9e-31)"


def two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def quick_two_sum(a, b):
    s = a + b
    return s, b - (s - a)


_SPLIT = 134217729.0


def _split(a):
    c = _SPLIT * a
    hi = c - (c - a)
    return hi, a - hi


def two_prod(a, b):
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def dd_add(ah, al, bh, bl):
    s, e = two_sum(ah, bh)
    t, f = two_sum(al, bl)
    e = e + t
    s, e = quick_two_sum(s, e)
    e = e + f
    return quick_two_sum(s, e)


def dd_mul(ah, al, bh, bl):
    p, e = two_prod(ah, bh)
    e = e + (ah * bl + al * bh)
    return quick_two_sum(p, e)


def dd_mul_d(ah, al, b):
    p, e = two_prod(ah, b)
    e = e + al * b
    return quick_two_sum(p, e)


def dd_div(ah, al, bh, bl):
    q1 = ah / bh
    ph, pl = dd_mul_d(bh, bl, q1)
    rh, rl = dd_add(ah, al, -ph, -pl)
    q2 = rh / bh
    ph, pl = dd_mul_d(bh, bl, q2)
    rh, rl = dd_add(rh, rl, -ph, -pl)
    q3 = rh / bh
    qh, ql = quick_two_sum(q1, q2)
    return dd_add(qh, ql, q3, np.zeros_like(q3))


#: ln2 / 64 as a triple (ln2 scaled by 2^-6: exact)
LN2_64 = tuple(c / 64 for c in LN2)
_TABLE: tuple | None = None


def _table():
    """2^(j/64), j = 0..63, as pairs (mpmath at 40 digits, computed once)."""
    global _TABLE
    if _TABLE is None:
        import mpmath

        hi, lo = np.zeros(64), np.zeros(64)
        with mpmath.workdps(40):
            for j in range(64):
                v = mpmath.power(2, mpmath.mpf(j) / 64)
                hi[j] = float(v)
                lo[j] = float(v - mpmath.mpf(hi[j]))
        _TABLE = (hi, lo)
    return _TABLE


def dd_expm1_small(rh, rl):
    """exp(r) - 1 for |r| <= ln2 / 128 as a pair. The terms r^6/6! and beyond are below
    2^-53 of the result, so a float64 Horner tail carries them; r .. r^5/5! are pairs:
    the error is below 2^-104 relative."""
    t = 1.0 / 3628800
    for j in (9, 8, 7, 6):  # 1/6! + r/7! + r^2/8! + r^3/9! + r^4/10!
        t = 1.0 / math.factorial(j) + rh * t
    ph, pl = dd_mul_d(rh, rl, t)  # r * tail
    for ch, cl in reversed(TAYLOR[:4]):  # 1/5!, 1/4!, 1/3!, 1/2!
        ph, pl = dd_add(ph, pl, np.full_like(rh, ch), np.full_like(rh, cl))
        ph, pl = dd_mul(ph, pl, rh, rl)
    ph, pl = dd_add(ph, pl, np.ones_like(rh), np.zeros_like(rh))
    return dd_mul(ph, pl, rh, rl)  # r + r^2/2! + ...


def dd_exp(dh, dl):
    """exp(dh + dl) = 2^k (mh + ml) for finite d <= 0, mh + ml in [1, 2).

    d = (64 k + j) ln2/64 + r with |r| <= ln2/128: exp(d) = 2^k 2^(j/64) exp(r), the table
    2^(j/64) to 106 bits and exp(r) by :func:`dd_expm1_small`."""
    K = np.rint(dh * (64 / LN2[0]))
    # r = d - K ln2/64, K ln2/64 exact to 161 bits (K has at most 17 bits)
    p0, e0 = two_prod(K, LN2_64[0])
    rh, rl = dd_add(dh, dl, -p0, -e0)
    p1, e1 = two_prod(K, LN2_64[1])
    rh, rl = dd_add(rh, rl, -p1, -(e1 + K * LN2_64[2]))
    ph, pl = dd_expm1_small(rh, rl)
    Ki = K.astype(np.int64)
    j = Ki & 63
    th, tl = _table()
    mh, ml = dd_add(np.ones_like(ph), np.zeros_like(ph), ph, pl)
    mh, ml = dd_mul(th[j], tl[j], mh, ml)
    return Ki >> 6, mh, ml


def exact_sum(hi: np.ndarray, lo: np.ndarray) -> tuple[float, float]:
    """sum(hi + lo) as a pair, exactly rounded twice (math.fsum is exact internally)."""
    terms = np.concatenate([hi, lo]).tolist()
    s = math.fsum(terms)
    terms.append(-s)
    return s, math.fsum(terms)


def _scale(qh, ql, k):
    """(qh + ql) 2^k as a pair whose hi is the correctly rounded value, underflow included."""
    with np.errstate(under="ignore"):
        hi = np.ldexp(qh, k)
        rest = (qh - np.ldexp(hi, -k)) + ql  # what the rounding of hi dropped (exact)
        lo = np.ldexp(rest, k)
    return hi, lo


def _row_sums(hi: np.ndarray, lo: np.ndarray, mask: np.ndarray):
    """Sums of hi + lo over each row where mask, as pairs (two arrays of shape (rows,)):
    pairwise in double-double, so the error is below log2(n) 2^-106 of the sum of |terms|."""
    h = np.where(mask, hi, 0.0)
    lo_ = np.where(mask, lo, 0.0)
    while h.shape[-1] > 1:
        if h.shape[-1] % 2:
            h = np.concatenate([h, np.zeros(h.shape[:-1] + (1,))], axis=-1)
            lo_ = np.concatenate([lo_, np.zeros(lo_.shape[:-1] + (1,))], axis=-1)
        h, lo_ = dd_add(h[..., 0::2], lo_[..., 0::2], h[..., 1::2], lo_[..., 1::2])
    return h[..., 0], lo_[..., 0]


#: below this x - max, exp underflows past every format (e^-800 < 1e-347): s = 0
DEAD = -800.0


def _differences(X: np.ndarray):
    """x - max(x) per row as exact pairs; masked entries -inf. Returns (dh, dl, fin, m, a)."""
    rows = X.shape[0]
    fin = X > -np.inf
    m = np.argmax(np.where(fin, X, -np.inf), axis=-1)
    a = X[np.arange(rows), m][:, None]
    with np.errstate(over="ignore", invalid="ignore"):
        dh, dl = two_sum(X, -a)
    dh = np.where(fin, dh, -np.inf)
    dl = np.where(np.isfinite(dh), dl, 0.0)
    return dh, dl, fin, m, a


def softmax_dd(X: np.ndarray, one_minus: bool = False):
    """Exact softmax and log-softmax of the rows of X as pairs; see the module docstring.
    Returns an :class:`~smcheck.reference.ExactSoftmax` (engine "double-double")."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    dh, dl, fin, m, a = _differences(X)
    live = dh > DEAD
    k, mh, ml = dd_exp(np.where(live, dh, 0.0), np.where(live, dl, 0.0))
    return _finish(X, dh, dl, fin, m, a, live, k, mh, ml, one_minus)


def shifted_softmax_dd(X: np.ndarray, c: np.ndarray, base):
    """The exact softmax of Xs = fl(X + c) (c per row, float64) from the base computation of
    X (``base``, returned by softmax_dd): Xs_i - Xs_max = (x_i - x_max) + (delta_i - delta_max)
    with delta = fl(x + c) - (x + c) exact (two_sum), so exp needs only the factor
    exp(delta_i - delta_max), and |delta| <= ulp(x + c) keeps it cheap. When the shift moved
    entries by more than 1e-10 (|x| far beyond the shift) everything is recomputed."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    c = np.asarray(c, dtype=np.float64).reshape(-1, 1)
    with np.errstate(over="ignore", invalid="ignore"):
        Xs, e_ = two_sum(X, c)  # X + c = Xs + e_ exactly: the rounding moved x_i by -e_i
    st = base.state
    if st is None:
        return softmax_dd(Xs)
    dh0, dl0, fin, m, k0, mh0, ml0 = st
    rows = X.shape[0]
    delta = np.where(fin, -e_, 0.0)
    dm = delta[np.arange(rows), m][:, None]
    Dh, Dl = two_sum(delta, -dm)
    small = np.max(np.abs(np.where(fin, Dh, 0.0)), axis=-1) <= 1e-10
    if not (np.all(small) and np.all(np.isfinite(np.where(fin, Xs, 0.0)))):
        return softmax_dd(Xs)  # a shift that is not a small perturbation: start over
    dh, dl = dd_add(dh0, dl0, Dh, Dl)
    dh = np.where(fin, dh, -np.inf)
    dl = np.where(fin, dl, 0.0)
    live = dh > DEAD
    # exp(D) - 1 for |D| <= 1e-10: D + D^2/2 + D^3/6, the last two in float64 (below 1e-20)
    ph, pl = dd_add(Dh, Dl, Dh * Dh * (0.5 + Dh / 6), np.zeros_like(Dh))
    mh, ml = dd_mul(mh0, ml0, *dd_add(np.ones_like(ph), np.zeros_like(ph), ph, pl))
    a = Xs[np.arange(rows), m][:, None]
    return _finish(Xs, dh, dl, fin, m, a, live & (k0 > -2000), k0, mh, ml, False)


def _finish(X, dh, dl, fin, m, a, live, k, mh, ml, one_minus):
    import mpmath

    from .reference import ExactSoftmax

    rows, n = X.shape
    k = np.where(live, k, 0).astype(np.int32)
    with np.errstate(under="ignore"):
        eh, el = np.ldexp(mh, k), np.ldexp(ml, k)
    eh, el = np.where(live, eh, 0.0), np.where(live, el, 0.0)
    first = np.zeros((rows, n), dtype=bool)
    first[np.arange(rows), m] = True
    # T = sum over the others of 2^k m, summed at the scale of its largest term and scaled
    # back once: terms far in the subnormal range would otherwise each round to eta
    others = live & ~first
    K = np.max(np.where(others, k, -(2 ** 20)), axis=-1)
    K = np.where(K < -(2 ** 19), 0, K).astype(np.int32)
    with np.errstate(under="ignore", over="ignore"):  # masked entries overflow, unused
        sh_, sl_ = np.ldexp(mh, k - K[:, None]), np.ldexp(ml, k - K[:, None])
    Uh, Ul = _row_sums(sh_, sl_, others)  # T / 2^K
    Th, Tl = _scale(Uh, Ul, K)
    Sh, Sl = dd_add(np.ones(rows), np.zeros(rows), Th, Tl)
    Lh, Ll = np.zeros(rows), np.zeros(rows)
    with mpmath.workdps(40):
        for r in range(rows):
            # from the unscaled pair: a T in the subnormal range must not be rounded first
            T = mpmath.ldexp(mpmath.mpf(Uh[r]) + mpmath.mpf(Ul[r]), int(K[r]))
            L = mpmath.log1p(T)
            Lh[r] = float(L)
            Ll[r] = float(L - mpmath.mpf(Lh[r]))
    # one reciprocal per row, then products: a pair division per entry costs four times more
    Rh, Rl = dd_div(np.ones(rows), np.zeros(rows), Sh, Sl)
    Rh, Rl = Rh[:, None], Rl[:, None]
    qh, ql = dd_mul(mh, ml, Rh, Rl)
    s_hi, s_lo = _scale(qh, ql, k)
    s_hi, s_lo = np.where(live, s_hi, 0.0), np.where(live, s_lo, 0.0)
    with np.errstate(invalid="ignore"):
        yh, yl = dd_add(dh, dl, -Lh[:, None], -Ll[:, None])
    yh = np.where(np.isfinite(dh), yh, -np.inf)
    yl = np.where(np.isfinite(yh), yl, 0.0)
    om_hi = om_lo = None
    if one_minus:
        rh, rl = dd_add(Sh[:, None], Sl[:, None], -eh, -el)  # S - e_i (benign for i != max)
        rh = np.where(first, Th[:, None], rh)
        rl = np.where(first, Tl[:, None], rl)
        om_hi, om_lo = dd_mul(rh, rl, Rh, Rl)
        om_hi = np.where(fin, om_hi, 1.0)
        om_lo = np.where(fin, om_lo, 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        d64 = np.where(fin, X - a, -np.inf)
    ex = ExactSoftmax(s_hi, s_lo, yh, yl, d64, 0, om_hi, om_lo, engine="double-double")
    ex.state = (dh, dl, fin, m, k, mh, ml)
    return ex


def _dot_rows(ah, al, bh, bl, mask):
    """Exact row sums of (ah + al)(bh + bl) where mask, as pairs."""
    ph, pl = dd_mul(ah, al, bh, bl)
    return _row_sums(np.where(mask, ph, 0.0), np.where(mask, pl, 0.0), mask)


def vjp_dd(X: np.ndarray, V: np.ndarray):
    """Exact v J(x) = s * (v - <v, s>) per row, as pairs; an ExactVJP."""
    import mpmath

    from .reference import ExactVJP

    sm = softmax_dd(X)
    V = np.atleast_2d(np.asarray(V, dtype=np.float64))
    fin = np.isfinite(sm.d)
    Vm = np.where(fin, V, 0.0)
    zeros = np.zeros_like(Vm)
    dot_h, dot_l = _dot_rows(sm.s_hi, sm.s_lo, Vm, zeros, fin)
    abs_dot = np.array([math.fsum(r) for r in np.abs(Vm) * sm.s_hi])
    with np.errstate(under="ignore"):
        fh, fl = dd_add(Vm, zeros, -dot_h[:, None], -dot_l[:, None])
        zh, zl = dd_mul(sm.s_hi, sm.s_lo, fh, fl)
    zh, zl = np.where(fin, zh, 0.0), np.where(fin, zl, 0.0)
    tiny = 2.0 ** -100 * np.maximum(np.abs(Vm), np.abs(dot_h)[:, None])
    exact_zero = [np.flatnonzero(fin[r] & (np.abs(fh[r] + fl[r]) <= tiny[r])).tolist()
                  for r in range(V.shape[0])]
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
            a = _row_sums(vuh, vul, fin)
            sv = _row_sums(v, z, fin)
            bh, bl = dd_mul(sv[0], sv[1], us[0], us[1])
        else:  # sum v s u - <v, s> <u, s>
            a = _dot_rows(sm.s_hi, sm.s_lo, vuh, vul, fin)
            vs = _dot_rows(sm.s_hi, sm.s_lo, v, z, fin)
            bh, bl = dd_mul(vs[0], vs[1], us[0], us[1])
        hi[:, p], lo[:, p] = dd_add(a[0], a[1], -bh, -bl)
    return hi, lo


def grad_x_dd(X: np.ndarray, T: np.ndarray):
    """s * sum(t) - t per row, as pairs."""
    sm = softmax_dd(X)
    T = np.atleast_2d(np.asarray(T, dtype=np.float64))
    th, tl = _row_sums(T, np.zeros_like(T), np.ones(T.shape, dtype=bool))
    ph, pl = dd_mul(sm.s_hi, sm.s_lo, th[:, None], tl[:, None])
    return dd_add(ph, pl, -T, np.zeros_like(T))
