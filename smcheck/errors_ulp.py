"""Errors and tolerances, defined once.

* :func:`ulp` — the spacing of the target format at the exact value (subnormals included).
* :func:`compare` — the one comparison engine: absolute, relative and ULP error of every entry,
  the allowance for each entry, and which entries pass.
* :class:`Tolerance` — what an entry may err by; the derived models that fill it live in
  :mod:`smcheck.tolerance`. :func:`apply_overrides` swaps in the user's
  ``--rtol``/``--atol``/``--max-ulp``.

Exact values travel as double-double pairs (hi, lo): hi = float64(r), lo = float64(r - hi), so
an error far below one float64 ULP is still measured correctly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import math

import numpy as np

from .blocks import map_blocks, row_reduce
from .dtypes import DtypeInfo

METRICS = ("scaled", "strict")


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
    #: the underflow unit of the derived model (eta, or the smallest normal with --allow-ftz):
    #: values within a few of it are below the dtype's resolution, not "unresolvable"
    under: float = 0.0

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
            "underflow_unit": self.under if self.source == "derived" else None,
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
                     metric=tol.metric, formula=formula, under=tol.under)


_EXP = 0x7FF0000000000000  # float64's exponent field
_ABS = 0x7FFFFFFFFFFFFFFF


def ulp(hi: np.ndarray, lo: np.ndarray, info: DtypeInfo) -> np.ndarray:
    """One ULP of ``info``'s format at the exact value hi + lo.

    The spacing 2^(E-p+1) of the binade [2^E, 2^(E+1)) holding |r|; in the subnormal range and
    at 0 it is the smallest subnormal eta, so a correctly rounded underflow errs by <= 0.5 ULP.
    When hi is a power of two but the exact value lies just below it (lo of opposite sign), the
    binade below is the right one. (2^E is |hi| with its significand bits cleared, and
    2^(E-p+1) = 2^E 2^(1-p) is exact down to eta: every format's exponent range lies inside
    float64's; below the format's eta, and at 0, the floor eta holds; inf and nan give inf.)
    """
    hi = np.asarray(hi, dtype=np.float64)
    lo = np.asarray(lo, dtype=np.float64)
    bits = hi.view(np.int64) & _ABS
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        p2 = (bits & _EXP).view(np.float64)  # 2^E; 0 below 2^-1022; inf for inf and nan
        out = p2 * (2.0 ** (1 - info.p))
        # signs compared, not lo * hi < 0: that product underflows for hi below 2^-500
        below = (bits == p2.view(np.int64)) & ((lo < 0) != (hi < 0)) & (lo != 0)
        if below.any():
            out = np.where(below, 0.5 * out, out)
    return np.maximum(out, info.eta)


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

    @property
    def unresolved(self) -> np.ndarray:
        """Entries that pass only because their derived allowance reaches their own size:
        the dtype cannot resolve them (their sign, or any digit), so passing says nothing.
        Values within four underflow units of 0 are below the format's resolution instead."""
        tol = self.tolerance
        if tol.source != "derived":
            return np.zeros(self.ok.shape, dtype=bool)
        floor = 4 * tol.under

        def block(ok, allowed, ref):
            ref = np.abs(ref)
            with np.errstate(invalid="ignore"):
                return ok & (allowed >= ref) & (ref > floor) & np.isfinite(ref)

        if self.ok.ndim != 2:
            return block(self.ok, self.allowed, self.ref)
        return map_blocks(block, (self.ok, self.allowed, self.ref), self.ok.shape, (bool,))[0]

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
            rounded = info.round64(hi)
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
        ratio = error_ratio(err, allowed)
    return err, allowed, ok, ratio, u


def error_ratio(err, allowed):
    """error / allowance, the one measure of how far over its allowance an entry is (> 1
    fails; it ranks the worst entries everywhere: checks, merges of chunks, the sweep). The
    one rule for an allowance of 0 (or nan): a zero error is 0, any other error (nan included)
    is inf. Arrays give an array, numbers a float."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if np.ndim(err) == 0 and np.ndim(allowed) == 0:
            e, a = float(err), float(allowed)
            return e / a if a > 0 else (0.0 if e == 0 else math.inf)
        ratio = np.divide(err, allowed)
        if not bool((np.asarray(allowed) > 0).all()):
            ratio = np.where(np.asarray(allowed) > 0, ratio, np.where(err == 0, 0.0, np.inf))
    return ratio
