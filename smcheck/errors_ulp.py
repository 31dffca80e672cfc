"""Errors and tolerances, defined once.

* :func:`ulp` — the spacing of the target format at the exact value (subnormals included).
* :func:`compare` — the one comparison engine: absolute, relative and ULP error of every entry,
  the allowance for each entry, and which entries pass.
* The tolerance models (:func:`softmax_tolerance`, :func:`log_softmax_tolerance`,
  :func:`sum_tolerance`) — forward-error bounds of the shifted softmax algorithm, derived in the
  README from the unit roundoff ``u`` of the dtype and the condition of the problem (Blanchard,
  Higham & Higham, IMA J. Numer. Anal. 2021). :func:`apply_overrides` swaps in the user's
  ``--rtol``/``--atol``/``--max-ulp``.

Exact values travel as double-double pairs (hi, lo): hi = float64(r), lo = float64(r - hi), so
an error far below one float64 ULP is still measured correctly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .dtypes import DtypeInfo

#: Roundings and library-function errors a correct implementation may spend beyond the
#: condition terms: exp and log to within 1 ULP (2u) in the numerator and in the sum,
#: a subtraction, and a division that may be a reciprocal and a multiplication (2u): 8u in all.
C_OPS = 8.0

METRICS = ("scaled", "strict")


def summation_allowance(n: int) -> float:
    """Relative error (in units of u) allowed for summing n positive terms.

    ceil(log2 n) is the worst case of pairwise summation (numpy, torch, jax); sqrt(n) is the
    error of recursive summation with probability near 1 (Higham & Mary, SIAM J. Sci. Comput.
    2019). The sum of both keeps every summation order that a correct library uses inside,
    while a sum that stagnates (float16 accumulation over thousands of terms) stays outside.
    """
    n = max(int(n), 1)
    return math.ceil(math.log2(n)) + math.sqrt(n)


@dataclass(frozen=True)
class Tolerance:
    """What an entry may err by: ``|c - r| <= atol + rtol * |r|`` and/or ``ulp_err <= max_ulp``.

    ``atol`` and ``rtol`` are arrays broadcastable to the compared values (the derived model
    gives each entry its own allowance) or None when that criterion is not used.
    """

    atol: np.ndarray | float | None
    rtol: np.ndarray | float | None
    max_ulp: float | None = None
    source: str = "derived"  # "derived" (from dtype and condition) or "user"
    metric: str = "scaled"
    formula: str = ""

    def allowed(self, ref_abs: np.ndarray) -> np.ndarray:
        """The absolute error allowed at each entry by the atol/rtol criterion (inf if unused)."""
        if self.atol is None and self.rtol is None:
            return np.full(np.shape(ref_abs), np.inf)
        atol = 0.0 if self.atol is None else self.atol
        rtol = 0.0 if self.rtol is None else self.rtol
        with np.errstate(invalid="ignore", over="ignore"):
            out = atol + rtol * np.where(np.isfinite(ref_abs), ref_abs, 0.0)
        return np.broadcast_to(out, np.shape(ref_abs)).astype(np.float64)

    def to_json(self, info: DtypeInfo) -> dict:
        def big(v):
            return None if v is None else float(np.max(v)) if np.size(v) else 0.0

        return {
            "source": self.source,
            "metric": self.metric,
            "formula": self.formula,
            "unit_roundoff": info.u,
            "rtol": big(self.rtol),
            "atol": big(self.atol),
            "max_ulp": self.max_ulp,
        }


@dataclass(frozen=True)
class Overrides:
    """The user's ``--rtol``, ``--atol`` and ``--max-ulp`` (None: keep the derived value)."""

    rtol: float | None = None
    atol: float | None = None
    max_ulp: float | None = None

    @property
    def any(self) -> bool:
        return not (self.rtol is None and self.atol is None and self.max_ulp is None)


def apply_overrides(tol: Tolerance, ov: Overrides | None) -> Tolerance:
    """The derived tolerance with the user's values swapped in.

    ``--rtol``/``--atol`` replace their part of the bound ``atol + rtol·|r|`` (the other part
    keeps its derived value); ``--max-ulp`` alone replaces the bound by the ULP criterion; given
    together, an entry must satisfy both.
    """
    if ov is None or not ov.any:
        return tol
    if ov.rtol is None and ov.atol is None:
        atol = rtol = None
        formula = f"ulp_err <= {ov.max_ulp:g}"
    else:
        atol = tol.atol if ov.atol is None else ov.atol
        rtol = tol.rtol if ov.rtol is None else ov.rtol
        parts = [
            "atol=" + ("derived" if ov.atol is None else f"{ov.atol:g}"),
            "rtol=" + ("derived" if ov.rtol is None else f"{ov.rtol:g}"),
        ]
        formula = "|c - r| <= atol + rtol*|r| (" + ", ".join(parts) + ")"
        if ov.max_ulp is not None:
            formula += f" and ulp_err <= {ov.max_ulp:g}"
    return Tolerance(atol=atol, rtol=rtol, max_ulp=ov.max_ulp, source="user",
                     metric=tol.metric, formula=formula)


_MANT = (1 << 52) - 1


def ulp(hi: np.ndarray, lo: np.ndarray, info: DtypeInfo) -> np.ndarray:
    """One ULP of ``info``'s format at the exact value hi + lo.

    The spacing 2^(E-p+1) of the binade [2^E, 2^(E+1)) holding |r|; in the subnormal range and
    at 0 it is the smallest subnormal eta, so a correctly rounded underflow errs by <= 0.5 ULP.
    When hi is a power of two but the exact value lies just below it (lo of opposite sign), the
    binade below is the right one. (E is read from the float64 bits, and 2^(E-p+1) is written
    as bits: every format's exponent range lies inside float64's.)
    """
    hi = np.asarray(hi, dtype=np.float64)
    lo = np.asarray(lo, dtype=np.float64)
    bits = np.abs(hi).view(np.int64)
    eb = bits >> 52
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        E = eb - (1023 + (info.p - 1)) - (((bits & _MANT) == 0) & (lo * hi < 0))
    k = np.maximum(E, info.emin - (info.p - 1))  # the exponent of one ULP
    out = ((np.maximum(k, -1022) + 1023) << 52).view(np.float64)
    sub = k < -1022  # a subnormal ULP (float64 below 2^-970): written by ldexp
    if sub.any():
        out = np.where(sub, np.ldexp(1.0, np.minimum(k, 0).astype(np.int32)), out)
    out = np.where(eb == 2047, np.inf, out)  # inf or nan
    return np.where(bits == 0, info.eta, out)


@dataclass
class Comparison:
    """Entry-by-entry errors of computed values against exact ones (all float64 arrays).

    The relative and ULP errors are derived from ``abs_err`` when first asked for (their
    maxima without forming them): at 10^6 entries two arrays fewer to write."""

    computed: np.ndarray
    ref: np.ndarray  # hi part of the exact value
    abs_err: np.ndarray
    allowed: np.ndarray  # absolute error allowed by the atol/rtol criterion
    ok: np.ndarray  # bool: entry passes
    ratio: np.ndarray  # how far over its allowance an entry is (> 1: fails); ranks "worst"
    tolerance: Tolerance = field(repr=False)
    ulp: np.ndarray = field(default=None, repr=False)  # one ULP of the format at each exact value
    _rel: np.ndarray | None = field(default=None, repr=False)
    _ulp_err: np.ndarray | None = field(default=None, repr=False)

    @property
    def rel_err(self) -> np.ndarray:
        if self._rel is None:
            self._rel = _rel_err(self.abs_err, self.ref)
        return self._rel

    @property
    def ulp_err(self) -> np.ndarray:
        if self._ulp_err is None:
            self._ulp_err = _ulp_err(self.abs_err, self.ulp)
        return self._ulp_err

    def rel_err_at(self, pos) -> float:
        """The relative error of one entry (without forming them all)."""
        if self._rel is not None:
            return float(self._rel[pos])
        return float(_rel_err(np.asarray(self.abs_err[pos]), np.asarray(self.ref[pos])))

    def ulp_err_at(self, pos) -> float:
        if self._ulp_err is not None:
            return float(self._ulp_err[pos])
        return float(_ulp_err(np.asarray(self.abs_err[pos]), np.asarray(self.ulp[pos])))

    @property
    def passed(self) -> bool:
        return bool(np.all(self.ok))

    def worst_index(self) -> tuple[int, ...] | None:
        if self.ratio.size == 0:
            return None
        return tuple(int(i) for i in np.unravel_index(int(np.argmax(self.ratio)), self.ratio.shape))

    def maxima(self) -> dict:
        if self.abs_err.size == 0:
            return {"max_abs_err": 0.0, "max_rel_err": 0.0, "max_ulp": 0.0}
        if self._rel is not None or self.abs_err.ndim < 2:
            return {"max_abs_err": float(np.max(self.abs_err)),
                    "max_rel_err": float(np.max(self.rel_err)),
                    "max_ulp": float(np.max(self.ulp_err))}
        from .blocks import row_reduce

        # in blocks, without forming the relative and ULP errors ((rows, n, n) as (rows n, n))
        m = self.abs_err.shape[-1]
        args = tuple(np.reshape(a, (-1, m)) for a in (self.abs_err, self.ref, self.ulp))
        a, r, u = row_reduce(_maxima, args, args[0].shape, 3, ops=("max", "max", "max"))
        return {"max_abs_err": float(np.max(a)), "max_rel_err": float(np.max(r)),
                "max_ulp": float(np.max(u))}


def _rel_err(err, hi):
    """|c - r| / |r|; 0 where both are 0, inf where only r is (or is infinite)."""
    ref_abs = np.abs(hi)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        rel = err / ref_abs
    bad = ~((ref_abs > 0) & np.isfinite(ref_abs))
    if bad.any():
        rel = np.where(bad, np.where(err > 0, np.where(np.isinf(ref_abs), rel, np.inf), 0.0), rel)
        rel = np.where(np.isnan(rel), np.inf, rel)
    return rel


def _ulp_err(err, u):
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        out = err / u
    if not np.isfinite(u).all():
        out = np.where(np.isfinite(u), out, np.where(err > 0, np.inf, 0.0))
    return out


def _maxima(err, hi, u):
    return (np.max(err, axis=-1), np.max(_rel_err(err, hi), axis=-1),
            np.max(_ulp_err(err, u), axis=-1))


def compare(computed, hi, lo, tol: Tolerance, info: DtypeInfo) -> Comparison:
    """Compare ``computed`` (any float dtype) with the exact values ``hi + lo``.

    A nan, or an infinity where the exact value rounded to the format is not that same
    infinity, has infinite error. An infinity that *is* the correctly rounded exact value
    (log-softmax of a masked entry, or beyond realmax) has error 0.
    """
    c = np.asarray(computed).astype(np.float64, copy=False)
    hi = np.asarray(hi, dtype=np.float64)
    lo = np.asarray(lo, dtype=np.float64)
    atol = None if tol.atol is None else np.asarray(tol.atol, dtype=np.float64)
    rtol = None if tol.rtol is None else np.asarray(tol.rtol, dtype=np.float64)

    def kernel(c, hi, lo, atol, rtol):
        return _compare(c, hi, lo, atol, rtol, tol.max_ulp, info)

    f64 = np.float64
    dtypes = (f64, f64, bool, f64, f64)
    if c.ndim > 2 and c.shape == hi.shape == lo.shape and all(
            a is None or a.ndim == 0 or a.shape == c.shape for a in (atol, rtol)):
        # (rows, n, n) Jacobians: the same element-wise work on a (rows n, n) view
        flat = compare(c.reshape(-1, c.shape[-1]), hi.reshape(-1, c.shape[-1]),
                       lo.reshape(-1, c.shape[-1]),
                       Tolerance(None if atol is None else
                                 (atol if atol.ndim == 0 else atol.reshape(-1, c.shape[-1])),
                                 None if rtol is None else
                                 (rtol if rtol.ndim == 0 else rtol.reshape(-1, c.shape[-1])),
                                 tol.max_ulp), info)
        shape = c.shape
        return Comparison(c, hi, *(a.reshape(shape) for a in (
            flat.abs_err, flat.allowed, flat.ok, flat.ratio)), tol, flat.ulp.reshape(shape))
    shapes_ok = c.ndim == 2 and c.shape == hi.shape == lo.shape and all(
        a is None or a.ndim == 0 or (a.ndim == 2 and a.shape[0] == c.shape[0]
                                     and a.shape[1] in (1, c.shape[1])) for a in (atol, rtol))
    if shapes_ok:
        from .blocks import map_blocks

        # None cannot travel through the blocks: a criterion not used is passed as nan
        nan = np.float64(np.nan)
        err, allowed, ok, ratio, u = map_blocks(
            lambda c, hi, lo, a, r: kernel(c, hi, lo, None if tol.atol is None else a,
                                           None if tol.rtol is None else r),
            (c, hi, lo, nan if atol is None else atol, nan if rtol is None else rtol),
            c.shape, dtypes)
    else:
        err, allowed, ok, ratio, u = kernel(c, hi, lo, atol, rtol)
    return Comparison(c, hi, err, allowed, ok, ratio, tol, u)


def _compare(c, hi, lo, atol, rtol, max_ulp, info):
    """The element-wise part of :func:`compare`: the plain formulas, then the rare entries
    (non-finite values, zero allowances) fixed where there are any. Returns (abs_err,
    allowed, ok, ratio, ulp)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        fin_hi = np.isfinite(hi)
        all_fin_hi = bool(fin_hi.all())
        if not all_fin_hi:
            lo = np.where(fin_hi, lo, 0.0)
        err = np.abs((c - hi) - lo)
        u = ulp(hi, lo, info)
        if not np.isfinite(err).all():
            # an infinity that *is* the correctly rounded exact value has error 0
            rounded = info.round(hi).astype(np.float64)
            both_inf = np.isinf(c) & (c == rounded)
            err = np.where(both_inf, 0.0, err)
            err = np.where(np.isnan(err), np.inf, err)
        if atol is None and rtol is None:
            allowed = np.full(np.shape(err), np.inf)
        else:
            ra = np.abs(hi) if all_fin_hi else np.where(fin_hi, np.abs(hi), 0.0)
            allowed = (0.0 if atol is None else atol) + (0.0 if rtol is None else rtol) * ra
            allowed = np.broadcast_to(allowed, np.shape(err)).astype(np.float64, copy=False)
        if max_ulp is not None:  # one absolute allowance per entry, whichever criteria apply
            by_ulp = max_ulp * u
            allowed = by_ulp if atol is None and rtol is None else np.minimum(allowed, by_ulp)
        ok = err <= allowed
        ratio = err / allowed
        if not bool((allowed > 0).all()):
            ratio = np.where(allowed > 0, ratio, np.where(err > 0, np.inf, 0.0))
    return err, allowed, ok, ratio, u


# --- the derived tolerance models -------------------------------------------------------------


def _condition(X: np.ndarray, d: np.ndarray, s: np.ndarray):
    """Per entry, the larger of the two condition terms a correct method may spend:

    * backward-stable (any method): |x_i| + sum_j s_j |x_j| bounds the componentwise condition
      number of softmax, |x_i| (1 - s_i) + sum_{j != i} s_j |x_j|;
    * the shifted formula: |x_i - max| + sum_j s_j |x_j - max| (the rounded subtraction).

    Returns (kappa per entry, finite mask); masked entries (-inf) get 0.
    """
    return _blocked_condition(X, d, s, _kappa), np.isfinite(np.asarray(d))


def _blocked_condition(X, d, s, then, *extra):
    """``then(X, d, (A, B), *extra)`` entry by entry, (A, B) the row sums of
    :func:`_cond_sums`; in blocks (see :mod:`smcheck.blocks`) for 2-D inputs."""
    from .blocks import map_blocks, row_reduce

    X, d, s = (np.asarray(a, dtype=np.float64) for a in (X, d, s))
    if X.ndim != 2:
        return then(X, d, _cond_sums(X, d, s, keepdims=True), *extra)
    A, B = row_reduce(_cond_sums, (X, d, s), X.shape, 2)
    (out,) = map_blocks(lambda X, d, A, B: then(X, d, (A, B), *extra),
                        (X, d, A[:, None], B[:, None]), X.shape, (np.float64,))
    return out


def _softmax_rtol(X, d, sums, u, sig):
    """u (C + kappa_i + sigma(n)), at most 1 (u C for masked entries)."""
    kappa = _kappa(X, d, sums)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.minimum(u * np.where(np.isfinite(d), C_OPS + kappa + sig, C_OPS), 1.0)


def _cond_sums(X, d, s, keepdims=False):
    """Per row: sum_j s_j |x_j| and sum_j s_j |x_j - max| over the unmasked entries."""
    finite = np.isfinite(d)
    sf = np.where(finite, s, 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        return (np.sum(sf * np.where(finite, np.abs(X), 0.0), axis=-1, keepdims=keepdims),
                np.sum(sf * np.where(finite, np.abs(d), 0.0), axis=-1, keepdims=keepdims))


def _kappa(X, d, sums):
    finite = np.isfinite(d)
    with np.errstate(over="ignore", invalid="ignore"):
        k_abs = np.where(finite, np.abs(X), 0.0) + sums[0]
        k_shift = np.where(finite, np.abs(d), 0.0) + sums[1]
    return np.where(finite, np.maximum(k_abs, k_shift), 0.0)


def softmax_tolerance(X: np.ndarray, d: np.ndarray, s: np.ndarray, info: DtypeInfo) -> Tolerance:
    """Allowance for s_i = softmax(x)_i computed in ``info``'s format.

    X = the rounded input, d = X - max(X) (-inf where masked), s = the exact softmax. An entry
    may err by

        |ŝ_i - s_i| <= u (C + kappa_i + sigma(n)) s_i + 2 eta,

    kappa_i the larger of the condition number of softmax in x (what any backward-stable
    method may lose) and the error term of the shifted formula; sigma(n) the summation
    allowance; 2 eta the two roundings into the subnormal range. See README "Tolerances".
    """
    rtol = _blocked_condition(X, d, s, _softmax_rtol, info.u, summation_allowance(d.shape[-1]))
    formula = ("|c - s_i| <= u*(8 + kappa_i + ceil(log2 n) + sqrt(n))*s_i + 2*eta, kappa_i = "
               "max(|x_i| + sum_j s_j|x_j|, |x_i - max| + sum_j s_j|x_j - max|)")
    return Tolerance(atol=2.0 * info.eta, rtol=rtol, formula=formula, metric="relative")


def log_softmax_tolerance(X: np.ndarray, d: np.ndarray, s: np.ndarray, y: np.ndarray,
                          info: DtypeInfo, metric: str = "scaled") -> Tolerance:
    """Allowance for y_i = log softmax(x)_i in ``info``'s format.

    ``scaled`` (default): the absolute error of a backward-stable evaluation,
        |ŷ_i - y_i| <= u (C + kappa_i + |y_i| + log S + sigma(n)),
    (log S = log sum_j exp(x_j - max) <= log n), which every correct method meets, including
    x_i - logsumexp(x).
    ``strict``: componentwise relative error u (C + W' + sigma(n)) |y_i|, W' the mean of
    |x_j - max| over the non-maximal entries weighted by exp(x_j - max): what computing the
    largest entry as -log1p(sum_{j != max} exp(x_j - max)) achieves. It fails a method that
    loses the digits of y_max ≈ 0 to cancellation.
    """
    u = info.u
    n = d.shape[-1]
    sig = summation_allowance(n)
    finite = np.isfinite(d)
    ad = np.where(finite, np.abs(d), 0.0)
    if metric == "strict":
        e = np.where(finite, np.exp(np.where(finite, d, 0.0)), 0.0)
        # the sum over the others leaves out one maximal entry (ties stay in T)
        first_max = np.zeros(e.shape, dtype=bool)
        if e.size:
            idx = np.argmax(np.where(finite, d, -np.inf), axis=-1)
            np.put_along_axis(first_max, idx[..., None], True, axis=-1)
        others = np.where(first_max, 0.0, e)
        T = np.sum(others, axis=-1, keepdims=True)
        Wp = np.sum(others * ad, axis=-1, keepdims=True) / np.where(T > 0, T, 1.0)
        rtol = u * (C_OPS + Wp + sig) * np.ones_like(d)
        formula = ("|c - y_i| <= u*(8 + W' + ceil(log2 n) + sqrt(n))*|y_i| + eta,"
                   " W' = mean |x_j - max| over non-max j weighted by exp(x_j - max)")
        return Tolerance(atol=info.eta, rtol=rtol, metric="strict", formula=formula)
    kappa, _ = _condition(X, d, s)
    with np.errstate(over="ignore", invalid="ignore"):
        logS = np.log(np.sum(np.where(finite, np.exp(np.where(finite, d, 0.0)), 0.0), axis=-1,
                             keepdims=True))
        ay = np.where(np.isfinite(y), np.abs(y), 0.0)
        atol = u * (C_OPS + kappa + ay + logS + sig)
    formula = ("|c - y_i| <= u*(8 + kappa_i + |y_i| + log S + ceil(log2 n) + sqrt(n)), kappa_i "
               "= max(|x_i| + sum_j s_j|x_j|, |x_i - max| + sum_j s_j|x_j - max|)")
    return Tolerance(atol=atol, rtol=None, metric="scaled", formula=formula)


def jacobian_tolerance(X: np.ndarray, d: np.ndarray, s: np.ndarray, J_abs: np.ndarray,
                       info: DtypeInfo, log: bool = False, metric: str = "scaled") -> Tolerance:
    """Allowance for the Jacobian entries (rows, n, n), computed from a softmax with relative
    errors r_i (the softmax allowance of each entry, see :func:`softmax_tolerance`).

    Softmax, J_ik = [i=k] s_i - s_i s_k: a product of computed s_i, s_k errs by
    (r_i + r_k + 4u) relative; the diagonal s_i (1 - s_i), with 1 - s_i a sum of the others, by
    (r_i + max_j r_j + 4u). ``scaled`` measures that against each entry's natural size
    s_i s_k + [i=k] s_i (what s_i - s_i^2 from a correctly rounded s achieves); ``strict``
    against |J_ik| itself (componentwise relative: fails s_i - s_i^2 when s_i is near 1).
    Log-softmax, J_ik = [i=k] - s_k: (r_k + 2u) against s_k + [i=k] (scaled) or |J_ik|.
    """
    u = info.u
    r = softmax_tolerance(X, d, s, info).rtol
    r = np.broadcast_to(r, s.shape)
    rmax = np.max(r, axis=-1, keepdims=True)
    n = s.shape[-1]
    diag = (slice(None), np.arange(n), np.arange(n))
    # the n^2 arrays are formed in place, at most two at a time (the same roundings as the
    # formulas in the docstring)
    if log:
        rel = np.empty(J_abs.shape)
        rel[...] = (r + 2 * u)[:, None, :]
        rel[diag] = rmax + 2 * u
    else:
        rel = r[:, :, None] + r[:, None, :]
        rel += 4 * u
        rel[diag] = r + rmax + 4 * u
    np.minimum(rel, 1.0, out=rel)
    what = "[i=k] - s_k" if log else "[i=k] s_i - s_i s_k"
    if metric == "strict":
        return Tolerance(atol=4 * info.eta, rtol=rel, metric="strict",
                         formula=f"|c - J_ik| <= rho_ik*|J_ik| + 4*eta, J_ik = {what}, rho_ik "
                         "from the softmax allowances r_i, r_k (README)")
    if log:  # rho_ik (s_k + [i=k])
        on_diag = rel[diag] * (s + 1.0)
        rel *= s[:, None, :]
        rel[diag] = on_diag
    else:  # rho_ik (s_i s_k + [i=k] s_i)
        natural = s[:, :, None] * s[:, None, :]
        natural[diag] += s
        rel *= natural
        del natural
    rel += 4 * info.eta
    return Tolerance(atol=rel, rtol=None, metric="scaled",
                     formula=f"|c - J_ik| <= rho_ik*({'s_k + [i=k]' if log else 's_i s_k + [i=k] s_i'}) + 4*eta,"
                     " rho_ik from the softmax allowances r_i, r_k (README)")


def vjp_tolerance(X: np.ndarray, d: np.ndarray, s: np.ndarray, V: np.ndarray,
                  abs_dot: np.ndarray, info: DtypeInfo) -> Tolerance:
    """Allowance for z_i = s_i (v_i - <v, s>): the relative errors r_i of the computed s, the
    sum <v, s> (max_j r_j + sigma(n) u relative to sum_j |v_j| s_j) and two roundings, all
    scaled by s_i (|v_i| + sum_j |v_j| s_j):

        |ẑ_i - z_i| <= (r_i + max_j r_j + (sigma(n) + 2) u) s_i (|v_i| + sum_j |v_j| s_j) + 4 eta.

    Its smallest part, u s_i (|v_i| + sum_j |v_j| s_j), is the rounding floor below which the
    sign of a computed z_i means nothing (the z_i = 0 condition)."""
    u = info.u
    r = np.broadcast_to(softmax_tolerance(X, d, s, info).rtol, s.shape)
    rmax = np.max(r, axis=-1, keepdims=True)
    scale = s * (np.where(np.isfinite(V), np.abs(V), 0.0) + abs_dot[:, None])
    rho = r + rmax + (summation_allowance(s.shape[-1]) + 2) * u
    return Tolerance(atol=np.minimum(rho, 1.0) * scale + 4 * info.eta, rtol=None,
                     metric="scaled",
                     formula="|c - z_i| <= (r_i + max_j r_j + (ceil(log2 n) + sqrt(n) + 2) u) * "
                     "s_i (|v_i| + sum_j |v_j| s_j) + 4*eta")


def rounding_floor(s: np.ndarray, V: np.ndarray, abs_dot: np.ndarray, info: DtypeInfo):
    """u s_i (|v_i| + sum_j |v_j| s_j): below it a computed z_i has no reliable sign."""
    return info.u * s * (np.abs(V) + abs_dot[:, None])


def quotient_tolerance(info: DtypeInfo) -> Tolerance:
    """Allowance for -t_i / z_i from t and z in the dtype: one rounded division (u), with a
    factor 4 for a reciprocal-and-multiply and for libraries that round t or z once more."""
    return Tolerance(atol=2 * info.eta, rtol=4 * info.u, metric="relative",
                     formula="|c - g_i| <= 4u*|g_i| + 2*eta")


def sum_tolerance(allowed: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Allowance for a row sum of computed entries: the sum of the entries' own allowances
    (weighted, e.g. by s_i for sum_i exp(y_i)). Returns one value per row."""
    a = np.where(np.isfinite(allowed), allowed, 0.0)
    if weights is not None:
        a = a * weights
    return np.sum(a, axis=-1)
