"""Sums of repeated terms: where a sum's roundings add up instead of cancelling.

The summation allowance sigma(n) (:func:`smcheck.tolerance.summation_allowance`) takes the
recursive sum's probabilistic bound, lambda sqrt(n) u_acc: n roundings, independent and of
mean zero, rarely add up to more (Higham & Mary). Equal terms break that assumption. The
running sum is a number of its binade's grid, so adding a term a to it rounds by an amount
fixed by a and that binade alone: every copy of a added while the sum stays in one binade
rounds alike. On [30, 0 x 9999] in float64 the sum of ``np.cumsum`` (or any loop) is off by 8,592 u,
torch's (one running sum per SIMD lane) by 1,074 u, against sigma(n) = 514; numpy's pairwise
``np.sum`` by 10 u.

So the copies of one value are one random quantity, not many: a group of k equal terms e,
each rounding by at most min(e, u_acc S) (a term below the sum's spacing is at most lost;
S the row's sum), rounds by at most k w u_acc S in all, w = min(e / (u_acc S), 1). Hoeffding's
inequality, which gives lambda sqrt(n) for n single terms, gives for groups of ranges k_v w_v

    G = min(lambda sqrt(sum_v (k_v w_v)^2), sum_v k_v w_v, G_MAX / u_acc)    (units of u_acc S)

with the same probability, and never more than the deterministic sum_v k_v w_v <= n. On
distinct values G is lambda sqrt(n) or less, and sigma keeps lambda sqrt(n): G only ever
widens the allowance, and only on rows whose values repeat.

G is at most G_MAX / u_acc: a sum allowed to be off by a quarter (an entry by a third) still
bounds something. Beyond it (float32 rows of more than 2^22 equal terms) a sum taken one term
after another drops its terms wholesale (the copies of a value below half the sum's spacing
add nothing; 2^24 copies of 1 stall), and is not a correct one: it fails. Without the cap,
Sum_v k_v w_v u_acc reaches 1 at about 1 / u_acc equal terms, an allowance as large as the sum.

What such a sum widens is the one factor 1 + delta by which it is off: every entry divided
by it shares that factor. So the sum's allowance (normalization) takes G, and an entry's
allowance takes the factor its own row shows, no more: forward measures it (the computed row's
sum), the derivatives fit it (:func:`shared_factor`: the first-order change delta q of the
quantity, least squares per row), each at most the drifting sum's allowance. An error of an
entry's own (exp in too narrow a format, a wrong dot product) is not of that shape and still
fails.

Counting the groups sorts a row, so it is done only for rows that fail the usual allowance
(:func:`with_coherence`): a verdict is the same as if every row had been counted. For the
16-bit formats the sums are float32's, whose u_acc is 2^-13 of float16's u and 2^-16 of
bfloat16's: their groups are not counted.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable, Iterable, TypeVar

import numpy as np

from .dtypes import DtypeInfo
from .errors_ulp import Tolerance
from .results import Finding
from .tolerance import LAMBDA, accumulator_u, normalization_allowance

R = TypeVar("R")

#: the most a drifting sum may be off by, relative: G <= G_MAX / u_acc (see the docstring)
G_MAX = 0.25


def coherent_terms(d: np.ndarray, info: DtypeInfo) -> float:
    """G of one row of gaps d_j = x_j - max(x) (masked entries, -inf, add nothing), in units of
    u_acc: see the module's docstring. 0 where no finite value repeats."""
    d = np.asarray(d, dtype=np.float64)
    with np.errstate(under="ignore"):
        S = float(np.sum(np.exp(d[np.isfinite(d)])))
    return coherent_segments((d,), S, info)[0]


def _G(vals: np.ndarray, k: np.ndarray, S: float, info: DtypeInfo,
       singles: tuple[float, float] = (0.0, 0.0)) -> float:
    """G of groups of k equal gaps ``vals`` in a row whose exp sum to S; ``singles``: the sums
    of w and w^2 of terms counted alone."""
    if not S > 0:
        return 0.0
    with np.errstate(under="ignore"):
        kw = k * np.minimum(np.exp(vals) / (accumulator_u(info) * S), 1.0)
    return float(min(LAMBDA * math.sqrt(float(np.sum(kw * kw)) + singles[1]),
                     float(np.sum(kw)) + singles[0], G_MAX / accumulator_u(info)))


def coherent_segments(segments: Iterable[np.ndarray], S: float, info: DtypeInfo,
                      limit: int = 1 << 22) -> tuple[float, int]:
    """G of a row given a segment of gaps at a time (a row too long to hold), S the sum of
    its exp, and the largest group's count. The values a segment repeats are merged across
    segments; those it holds once are counted alone (a value once in each of m segments: m
    terms counted alone, at most one a segment). 0 past ``limit`` distinct repeated values
    (kept in memory)."""
    if info.p < 24:
        return 0.0, 0
    acc = accumulator_u(info)
    vals, ks, w1, w2, held = [], [], 0.0, 0.0, 0
    for d in segments:
        d = np.asarray(d, dtype=np.float64)
        d = d[np.isfinite(d)]
        if not d.size:
            continue
        v, k = np.unique(d, return_counts=True)
        one = k == 1
        with np.errstate(under="ignore"):
            w = np.minimum(np.exp(v[one]) / (acc * S), 1.0)
        w1, w2 = w1 + float(np.sum(w)), w2 + float(np.sum(w * w))
        vals.append(v[~one])
        ks.append(k[~one])
        held += int(np.sum(~one))
        if held > limit:
            return 0.0, 0
    if not held:
        return 0.0, 0
    v, inv = np.unique(np.concatenate(vals), return_inverse=True)
    k = np.bincount(inv, weights=np.concatenate(ks).astype(np.float64))
    return _G(v, k, S, info, (w1, w2)), int(k.max())


def coherence(d: np.ndarray, info: DtypeInfo, rows) -> np.ndarray | None:
    """Per row of the 2-D gaps ``d``: G (:func:`coherent_terms`) for the rows listed in
    ``rows``, 0 for the others; None where no listed row's G exceeds lambda sqrt(n), the
    allowance already taken (nothing to widen)."""
    rows = np.asarray(rows, dtype=np.int64).ravel()
    if info.p < 24 or rows.size == 0 or np.ndim(d) != 2:
        return None
    G = np.zeros(np.shape(d)[0])
    for r in rows:
        G[r] = coherent_terms(d[r], info)
    return G if np.any(G > LAMBDA * math.sqrt(np.shape(d)[-1])) else None


def with_coherence(make: Callable[[np.ndarray | None], R], d: np.ndarray | None,
                   info: DtypeInfo, failing: Callable[[R], np.ndarray]) -> R:
    """``make(None)``, the usual allowance's outcome; where rows fail (``failing(outcome)``, a
    boolean per row) and their repeated terms widen the sum's allowance, ``make(G)`` with G
    per row (:func:`coherence`). ``d`` None (a segment of a longer row): the usual outcome."""
    out = make(None)
    if d is None:
        return out
    bad = np.flatnonzero(np.asarray(failing(out)))
    G = coherence(d, info, bad) if bad.size else None
    return out if G is None else make(G)


def factor_caps(d: np.ndarray, s: np.ndarray, info: DtypeInfo, G: np.ndarray,
                log: bool = False, ftz: bool = False) -> np.ndarray:
    """Per row: how far off a correct softmax's sum may be where G (:func:`coherence`) widens
    it (normalization's allowance with G), 0 elsewhere."""
    caps = np.zeros(len(G))
    rows = np.flatnonzero(G > LAMBDA * math.sqrt(np.shape(d)[-1]))
    if rows.size:
        caps[rows] = normalization_allowance(d[rows], s[rows], info, log, ftz, coherent=G[rows])
    return caps


def shared_factor(resid: np.ndarray, q: np.ndarray, q2: np.ndarray | None,
                  cap: np.ndarray) -> np.ndarray:
    """The allowance a row's common factor 1 + delta grants each entry, |delta| |q| + delta^2
    |q2|: the quantity at a softmax scaled by 1 + delta is its exact value + delta q + delta^2
    q2 (second order exactly, for the products of at most two s). delta is the least-squares
    fit of the error ``resid`` (computed - exact) on q per row (over every axis but the
    first), held within ``cap`` (:func:`factor_caps`); 0 where cap is 0."""
    rows = len(cap)
    r2, q2d = resid.reshape(rows, -1), q.reshape(rows, -1)
    fin = np.isfinite(r2) & np.isfinite(q2d)
    with np.errstate(over="ignore", invalid="ignore"):
        num = np.sum(np.where(fin, r2 * q2d, 0.0), axis=-1)
        den = np.sum(np.where(fin, q2d * q2d, 0.0), axis=-1)
        delta = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    delta = np.clip(np.nan_to_num(delta), -cap, cap)
    shape = (rows,) + (1,) * (q.ndim - 1)
    out = np.abs(delta).reshape(shape) * np.abs(q)
    if q2 is not None:
        out = out + (delta * delta).reshape(shape) * np.abs(q2)
    return out


def widened(tol: Tolerance, extra: np.ndarray) -> Tolerance:
    """``tol`` with ``extra`` added to every entry's absolute allowance (a user's own
    tolerance stays as given)."""
    if tol.source == "user":
        return tol
    atol = extra if tol.atol is None else tol.atol + extra
    return replace(tol, atol=atol)


DRIFT_TEMPLATE = ("{count} row{s} where a value repeats so often that a sum taken one term "
                  "after another rounds its copies alike, and drifts: the sum's allowance "
                  "counts the equal terms, and each entry may share the one factor its row's "
                  "sum is off by (e.g. {example})")


def drift_finding(G: np.ndarray | None, d: np.ndarray, rows, detail: Callable[[int], str]
                  ) -> Finding | None:
    """The note that rows' sums were allowed their drift (G above lambda sqrt(n)): how many,
    and the first, with its count of equal terms and ``detail(r)`` (its numbers)."""
    if G is None:
        return None
    hit = np.flatnonzero(G > LAMBDA * math.sqrt(np.shape(d)[-1]))
    if not hit.size:
        return None
    r = int(hit[0])
    fin = d[r][np.isfinite(d[r])]
    k = int(np.unique(fin, return_counts=True)[1].max())
    return Finding("drift", int(hit.size), int(len(G)), DRIFT_TEMPLATE,
                   f"row {int(rows[r])}: {k:,} equal terms; {detail(r)}")


def long_drift_finding(drift: dict, r: int) -> Finding:
    """The drift note of a row too long to hold (its numbers from smcheck.longrow)."""
    return Finding("drift", 1, 1, DRIFT_TEMPLATE,
                   f"row {r}: {drift['k']:,} equal terms; |sum - 1| = {drift['off']:.3g}, "
                   f"allowed {drift['allowed']:.3g}, {drift['usual']:.3g} for distinct terms")


def add_drift(res, case, log: bool = False) -> None:
    """The drift finding on ``res`` where ``case``'s comparison allowed rows' sums their drift
    (``case._drift_G``, set by the derivatives' cases): each entry's share of the factor is at
    most the drifting sum's allowance."""
    sm, G = case.exact_softmax, case._drift_G
    f = drift_finding(G, sm.d, case.rows, lambda r: "each entry allowed the factor its "
                      "softmax's sum may be off by, at most "
                      f"{factor_caps(sm.d, sm.s_hi, case.info, G, log, case.ftz)[r]:.3g}")
    if f is not None:
        res.findings.append(f)
