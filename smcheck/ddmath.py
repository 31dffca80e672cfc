"""Exact arithmetic in float64 pairs (double-double) and every row sum smcheck takes.

The error-free transformations (two_sum, two_prod), double-double add, multiply, divide and
exp (Cody and Waite's reduction, a table of 2^(j/64) in pairs, Horner steps in pairs: tested
to 2^-104), and the row sums: pairwise in double-double (:func:`row_sums_blocked`, error below
log2(n) 2^-106 of the sum of |terms|) and :func:`fsum_rows` (long double where it has 64
bits). The reference engine (:mod:`smcheck.reference.dd`) and the checks' sums use these.
"""

from __future__ import annotations

import math

import numpy as np

from . import blocks as B
from .blocks import _cut, blocks, for_each, row_reduce

# ln 2 as a triple of float64 (from mpmath at 60 digits): 161 bits
LN2 = (0.6931471805599453, 2.3190468138462996e-17, 5.707708438416212e-34)
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
    return _two_prod_split(a, *_split(a), b)


def _two_prod_split(a, ah, al, b):
    """two_prod(a, b) with a's split (ah, al) given: a factor used in several products is
    split once (the same bits)."""
    p = a * b
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
    """2^(j/64), j = 0..63, as pairs, computed once with the decimal module at 50 digits:
    2^(1/64) by six square roots (each correctly rounded), its powers by 63 products, 10^-47
    relative at worst, far below the pair's 2^-106 (equal to mpmath's, tests/test_ddmath.py).
    0.1 ms, where decimal's fractional powers took 4 ms of every fresh run in double-double;
    decimal, not mpmath: such a run then never imports mpmath (50 ms of a fresh process)."""
    global _TABLE
    if _TABLE is None:
        from decimal import Decimal, localcontext

        hi, lo = np.zeros(64), np.zeros(64)
        with localcontext() as ctx:
            ctx.prec = 50
            root = Decimal(2)
            for _ in range(6):
                root = root.sqrt()
            v = Decimal(1)
            for j in range(64):
                hi[j] = float(v)  # correctly rounded
                lo[j] = float(v - Decimal(hi[j]))
                v *= root
        _TABLE = (hi, lo)
    return _TABLE


def _cody_waite(parts, bits=36):
    """ln2/64 as C1 + C2 + C3, C1 and C2 of ``bits`` significant bits, so that K C1 and K C2
    are exact for |K| < 2^(53 - bits) (exact rational arithmetic on the 161-bit triple)."""
    from fractions import Fraction

    rest = sum(Fraction(c) for c in parts)
    out = []
    for _ in range(2):
        m, e = math.frexp(float(rest))
        c = math.ldexp(math.trunc(m * 2 ** bits), e - bits)
        out.append(c)
        rest -= Fraction(c)
    out.append(float(rest))
    return tuple(out)


#: ln2/64 = C1 + C2 + C3 (C1, C2 of 36 bits: K C1, K C2 exact for |K| < 2^17, i.e. |d| < 1400)
CW = _cody_waite(LN2_64)
#: 1/j! for j = 6..10, the float64 tail of the polynomial
_TAIL = tuple(1.0 / math.factorial(j) for j in range(10, 5, -1))


def _fma_pair(ch, cl, xh, xl, rh, rl, rsplit):
    """(ch + cl) + (rh + rl)(xh + xl) as a pair, for |r x| much smaller than c (no
    cancellation: the Horner steps of exp(r) - 1): the product exact to 2^-106 relative,
    the sum one two_sum. ``rsplit``: rh's split, taken once for every step."""
    p, e = _two_prod_split(rh, *rsplit, xh)
    e = e + (rh * xl + rl * xh)
    s, f = two_sum(ch, p)
    return quick_two_sum(s, f + (cl + e))


def dd_expm1_small(rh, rl):
    """exp(r) - 1 for |r| <= ln2 / 128 + 2^-40 as a pair, by Horner from the inside out:

    w = 1/6! + r/7! + ... + r^4/10! in float64 (its error, times r^6, is below 2^-110);
    then 1/5! + r w, 1/4! + r(...), ..., 1 + r(...) as pairs, and finally r (1 + ...). The
    truncation r^11/11! is below 2^-108: the error is below 2^-104 relative."""
    w = _TAIL[0]
    for c in _TAIL[1:]:
        w = c + rh * w
    # 1/5! + r w: r w < 8e-6, its rounding (< 1e-21) is below what r^5 needs
    t = rh * w
    s, f = two_sum(TAYLOR[3][0], t)
    ph, pl = quick_two_sum(s, f + TAYLOR[3][1])
    rsplit = _split(rh)
    for ch, cl in (TAYLOR[2], TAYLOR[1], TAYLOR[0], (1.0, 0.0)):  # 1/4!, 1/3!, 1/2!, 1
        ph, pl = _fma_pair(ch, cl, ph, pl, rh, rl, rsplit)
    p, e = _two_prod_split(rh, *rsplit, ph)  # r (1 + r/2 + ...)
    return quick_two_sum(p, e + (rh * pl + rl * ph))


def dd_exp(dh, dl):
    """exp(dh + dl) = 2^k (mh + ml) for finite -1400 < d <= 0, mh + ml in (0.99, 2).

    d = (64 k + j) ln2/64 + r with |r| <= ln2/128: exp(d) = 2^k 2^(j/64) exp(r), the table
    2^(j/64) to 106 bits and exp(r) by :func:`dd_expm1_small`. The reduction is Cody and
    Waite's: dh - K C1 is exact (Sterbenz), so the low parts are added to a small r."""
    K = np.rint(dh * (64 / LN2[0]))
    rh = dh - K * CW[0]  # exact
    a, a2 = two_sum(rh, dl)
    b, b2 = two_sum(a, -K * CW[1])  # K C2 exact
    rh, rl = quick_two_sum(b, (a2 + b2) - K * CW[2])
    ph, pl = dd_expm1_small(rh, rl)
    Ki = K.astype(np.int64)
    j = Ki & 63
    th, tl = _table()
    Th, Tl = np.take(th, j), np.take(tl, j)
    # 2^(j/64) (1 + p) = T + T p
    qh, ql = two_prod(Th, ph)
    ql = ql + (Th * pl + Tl * ph)
    s, f = two_sum(Th, qh)
    mh, ml = quick_two_sum(s, f + (Tl + ql))
    return Ki >> 6, mh, ml


def scale_pair(qh, ql, k):
    """(qh + ql) 2^k as a pair whose hi is the correctly rounded value, underflow included."""
    with np.errstate(under="ignore"):
        hi = np.ldexp(qh, k)
        rest = (qh - np.ldexp(hi, -k)) + ql  # what the rounding of hi dropped (exact)
        lo = np.ldexp(rest, k)
    return hi, lo


def pair_row_sums(hi: np.ndarray, lo: np.ndarray, mask: np.ndarray):
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


def plain_terms(t):
    """Terms of a plain sum for :func:`row_sums_blocked`: t, no low parts, all."""
    return t, np.zeros_like(t), np.ones(t.shape, dtype=bool)


def row_sums_blocked(terms, args: tuple, shape: tuple[int, int]):
    """Row sums of the pairs ``terms(*block_args) -> (hi, lo, mask)``, block by block
    (see :mod:`smcheck.blocks`): each block pairwise, then the blocks' sums pairwise, so
    the bound of :func:`pair_row_sums` holds (the two trees together are log2(n) deep)."""
    rows, n = shape
    BLOCK = B.BLOCK
    if rows * n <= BLOCK:
        return pair_row_sums(*terms(*args))
    if n < BLOCK:
        Sh, Sl = np.empty(rows), np.empty(rows)

        def rowblock(b):
            rs, cs = b
            Sh[rs], Sl[rs] = pair_row_sums(*terms(*(_cut(a, rs, cs) for a in args)))

        for_each(rowblock, list(blocks(rows, n, BLOCK)))
        return Sh, Sl
    nb = -(-n // BLOCK)
    Ph, Pl = np.zeros((rows, nb)), np.zeros((rows, nb))

    def piece(b):
        rs, cs = b
        h, lo = pair_row_sums(*terms(*(_cut(a, rs, cs) for a in args)))
        Ph[rs, cs.start // BLOCK], Pl[rs, cs.start // BLOCK] = h, lo

    for_each(piece, list(blocks(rows, n, BLOCK)))
    return pair_row_sums(Ph, Pl, np.ones(Ph.shape, dtype=bool))


def fsum_rows(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """Sums along an axis, nan if any term is not finite. Where long double has 64 bits (x87,
    x86) and there are at least LONG_SUM_MIN terms: in long double, by blocks (:func:`_long_sums`,
    error below (45 + log2 n) 2^-64 of the sum of |terms|: under 1% of 4u of it, and every
    allowance these sums are held to is at least that); otherwise in double-double (pairwise,
    error below log2(n) 2^-106 of the sum of |terms|)."""
    a = np.moveaxis(np.asarray(a, dtype=np.float64), axis, -1)
    if a.size >= LONG_SUM_MIN and np.finfo(np.longdouble).nmant >= 63:
        out = _long_sums(np.ascontiguousarray(a).reshape(-1, a.shape[-1]))
        return out.reshape(a.shape[:-1])
    flat = a.reshape(-1, a.shape[-1])
    ok, hi, lo = _finite_sums(flat)
    return np.where(ok, hi + lo, np.nan).reshape(a.shape[:-1])


#: from this many terms on, fsum_rows sums in long double where it has 64 bits (ten times
#: faster than double-double: 4 ms for 10^6 terms, 45 ms in pairs)
LONG_SUM_MIN = 1 << 12
#: numpy sums a row pairwise within one buffer of this many entries, and one buffer after the
#: other beyond it: rows are summed in blocks of this length, then the blocks' sums pairwise
LONG_SUM_BLOCK = 8192


def _long_sums(flat: np.ndarray) -> np.ndarray:
    """Row sums of a C-contiguous (m, n) float64 array in 64-bit long double, rounded to float64
    once; nan where a term is not finite (a sum of finite doubles cannot overflow there).

    Error: numpy's pairwise sum of a block of B = 8192 terms is at most 16 + 3 + log2(B / 128)
    = 25 additions deep; the k = n / B block sums, summed the same way, add at most
    19 + log2(k / 128) (19 for k <= 128), and the last partial block one more: in all below
    (45 + log2 n) additions, each within 2^-64 relative, of the sum of |terms|."""
    m, n = flat.shape
    k = n // LONG_SUM_BLOCK
    with np.errstate(invalid="ignore", over="ignore"):
        out = np.zeros(m, dtype=np.longdouble)
        if k:
            whole = flat[:, :k * LONG_SUM_BLOCK].reshape(m, k, LONG_SUM_BLOCK)
            out = np.sum(np.sum(whole, axis=-1, dtype=np.longdouble), axis=-1)
        if n > k * LONG_SUM_BLOCK:
            out = out + np.sum(flat[:, k * LONG_SUM_BLOCK:], axis=-1, dtype=np.longdouble)
        return np.where(np.isfinite(out), out.astype(np.float64), np.nan)


def _finite_terms(t):
    fin = np.isfinite(t)
    return np.where(fin, t, 0.0), np.zeros(t.shape), fin


def _finite_sums(flat):
    hi, lo = row_sums_blocked(_finite_terms, (flat,), flat.shape)
    (bad,) = row_reduce(lambda t: (np.sum(~np.isfinite(t), axis=-1),), (flat,), flat.shape, 1)
    return bad == 0, hi, lo
