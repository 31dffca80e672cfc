"""Numerical derivatives with error estimates: the independent check of analytic softmax
Jacobians and directional derivatives (vector-Jacobian products).

An analytic derivative can only be trusted against something computed another way. This
module differentiates any batched function ``f(X)`` numerically and, in the style of
numdifftools, every estimate travels with an error estimate, the step it used and the order
of its method (:class:`FDEstimate`), so a caller can tell "the analytic derivative is wrong"
from "the finite difference is too coarse to tell".

* :func:`jacobian` - ``value[i, k] = d f_i / d x_k``, one batched (n, n) call of f per offset.
* :func:`directional` - d/dh g(x + h u) at h = 0, one batched call, memory O(n) (n = 10^6).
* :func:`central_difference`, :func:`richardson_difference` - the bare formulas at a step.

Methods (eps = 2^-52, the float64 machine epsilon; every step is derived from it):

``central``
    D(h) = (f(x + h) - f(x - h)) / 2h, error O(h^2). h = (3 eps)^(1/3) scale, the step that
    balances truncation h^2 |f'''| / 6 against rounding eps |f| / h: about 1e-10 relative.
``richardson``
    R(h) = (4 D(h/2) - D(h)) / 3, error O(h^4). h = eps^(1/5) scale balances h^4 against
    eps / h: about 1e-12 relative.
``complex``
    The complex step Im f(x + i h u) / h has no subtraction, so h can be tiny
    (h = 1e-20 scale) and truncation (~h^2) vanishes: about 1e-16 relative. f must extend
    analytically to complex input (no abs or comparisons on the imaginary part; a shift by the
    max of the real part is fine).

Both real methods estimate their truncation error from the same estimate at 2h
(|D(h) - D(2h)| / 3, |R(h) - R(2h)| / 15) and check with a third one at 4h that the error
really shrinks at the method's order; where it does not (steps too coarse for f) the error
reported is the whole spread of the three estimates (see ``_extrapolated``). So f is
evaluated at x +- h, 2h, 4h (central) or x +- h/2, h, 2h, 4h (richardson). The complex step
is also taken at 0.7 h, whose different rounding exposes cancellation inside f.

Steps. In :func:`jacobian` coordinate k has scale max(1, |x_k|); the real step is rounded so
that x_k + h is a float64 (h = (x_k + h) - x_k: the step taken is the step divided by), the
complex step to a power of two. In :func:`directional` the scale is max(1, max|x|) / max|u|,
so the coordinate with the largest |u_j| moves as far, relative to max(1, max|x|), as in the
Jacobian rule; the step is a power of two, so t u is exact (x + t u still rounds, which the
input model below covers).

Error model. Each error is a truncation estimate (from the spread between steps) plus a
rounding bound. The rounding bound rests on one assumption about f, that it is backward
stable: its computed value at X is f(X + dX) (1 + d), |d| <= F_ROUNDING eps, and
|dX_j| <= eps max(1, max|x|) (what rounding the inputs, or forming x_j - max x as a
softmax does, amounts to). A value of f is then off by at most
F_ROUNDING eps |f| + eps max(1, max|x|) sum_j |d f / d x_j|; each method's bound propagates
that through its formula, including what leaks into its truncation estimate.

Masked coordinates: entries of x that are -inf are never perturbed; their Jacobian columns
are exactly 0 with error 0, and :func:`directional` takes u as 0 there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .blocks import for_each

METHODS = ("central", "richardson", "complex")

EPS = float(np.finfo(np.float64).eps)  # 2^-52

#: f's values are taken to be correct to F_ROUNDING * eps of their magnitude (a few roundings).
F_ROUNDING = 2.0

CENTRAL_STEP = (3.0 * EPS) ** (1.0 / 3.0)  # ~6.1e-6
RICHARDSON_STEP = EPS ** 0.2  # ~7.4e-4
COMPLEX_STEP = 1e-20
# A second complex step with another significand (0.7 is not dyadic): the imaginary parts then
# round differently, and the spread of the two results exposes cancellation inside f.
_COMPLEX_PROBE = 0.7
#: complex-step Jacobians evaluate f on batches of about this many entries (coordinates x n)
COMPLEX_BLOCK = 2 ** 16

COMPLEX_MESSAGE = "complex step needs a function that accepts complex input"

_ACCURACY = {
    "central": ("O(h^2) with h = (3 eps)^(1/3) max(1,|x|) ~ 6e-6 max(1,|x|): "
                "about 1e-10 relative"),
    "richardson": ("O(h^4), Richardson on central differences at h and h/2, with "
                   "h = eps^(1/5) max(1,|x|) ~ 7e-4 max(1,|x|): about 1e-12 relative"),
    "complex": ("O(h^2) with h = 1e-20 max(1,|x|) (a power of two), no subtractive "
                "cancellation: about 1e-16 relative"),
}


@dataclass(frozen=True)
class FDEstimate:
    """A numerical derivative and what it is worth.

    ``error`` (same shape as ``value``, >= 0) bounds |value - exact| entry by entry: the
    truncation estimate plus the rounding bound of the module's error model. ``step`` is the
    step taken: one per coordinate (0 where masked) for :func:`jacobian`, one number for
    :func:`directional`. ``expected_accuracy`` says, in words, what the method achieves.
    """

    value: np.ndarray
    error: np.ndarray
    step: float | np.ndarray
    method: str
    expected_accuracy: str


# --- checking


def resolve_method(method: str, complex_ok: bool) -> str:
    if method == "auto":
        return "complex" if complex_ok else "richardson"
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: use 'auto' or one of {', '.join(METHODS)}")
    return method


def _check_x(x) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"x must be a non-empty 1-D array, got shape {x.shape}")
    masked = x == -np.inf
    if not np.all(np.isfinite(x) | masked):
        raise ValueError("x must be finite, or -inf at masked coordinates (no nan, no +inf)")
    return x, masked


def _call(f, X: np.ndarray, ndims: tuple[int, ...]) -> np.ndarray:
    """f on a batch, checked: one row of output per row of input, real in, real out."""
    is_complex = np.iscomplexobj(X)
    try:
        Y = f(X)
    except Exception as exc:
        if is_complex:
            raise ValueError(COMPLEX_MESSAGE) from exc
        raise
    Y = np.asarray(Y)
    if is_complex and not np.iscomplexobj(Y):
        raise ValueError(COMPLEX_MESSAGE)
    if Y.ndim not in ndims or Y.shape[0] != X.shape[0]:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"f returned shape {Y.shape} for a batch of {X.shape[0]} points; "
                         f"expected a {want} array with one row per point")
    if not is_complex:
        if np.iscomplexobj(Y):
            raise ValueError("f returned complex values for real input")
        Y = Y.astype(np.float64, copy=False)
    return Y


# ------------------------------------------------------------------------------------------
# stencils
#
# Both entry points need f at x +- c h for a few multipliers c. ``sample(cs)`` yields, per c,
# (f(x + c h), f(x - c h), width), width being the distance between the two points actually
# evaluated; for the Jacobian every array has one row per free coordinate.


def _central_from(samples, cs, cols):
    """Central differences D(c h) for each c, and the largest |f| seen, on columns ``cols``."""
    out, mag = [], None
    for fp, fm, width in samples:
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: nan, said by the check
            out.append((_cols(fp, cols) - _cols(fm, cols)) / _cols(width, cols))
        m = np.maximum(np.abs(_cols(fp, cols)), np.abs(_cols(fm, cols)))
        mag = m if mag is None else np.maximum(mag, m)
    return out, mag


#: entries of a block of columns in :func:`_extrapolated` (cache-sized: a dozen n x n temporaries
#: cost more in first touches than in arithmetic)
FD_BLOCK = 2 ** 15


def _cols(a, cols):
    """Columns ``cols`` of ``a``; a scalar, or one broadcast along its last axis, as it is."""
    if np.ndim(a) == 0 or np.shape(a)[-1] == 1:
        return a
    return a[..., cols]


def _extrapolated(sample, f0_abs, h, value_noise, method):
    """The central (order p = 2) or Richardson (p = 4) estimate at step h, and its error.

    The estimate E(c) is formed at c = 1, 2, 4 (c h the step): D(c h) for ``central``,
    (4 D(c h/2) - D(c h)) / 3 for ``richardson``. With E(c) = f' + T c^p h^p + ...:

    * Truncation: E(2) - E(1) = (2^p - 1) T h^p, so the error of E(1) is estimated as
      |E(1) - E(2)| / (2^p - 1) (|D(h) - D(2h)| / 3, |R(h) - R(2h)| / 15), times a safety
      factor 1.5 for the next term of the expansion. That holds while the steps are small
      against the scale on which f varies; the third step checks it: the ratio
      (E(4) - E(2)) / (E(2) - E(1)) must be 2^p within 25 % (order p, next term below ~1/15
      of the leading one at 2h, which the factor 1.5 covers). Where it is not (steps too
      coarse, as the max(1, |x|) rule is for a softmax of large inputs) the expansion is not
      trusted and the error is taken as the whole spread |E(1) - E(2)| + |E(2) - E(4)|.
      Differences within twice their rounding noise say nothing about the order and are
      taken as they are.
    * Rounding: with P = ``value_noise`` the error of one value of f, D(c h) carries up to
      R / c, R = P / h; R(c h) up to (4 * 2R + R) / 3c = 3R / c. Writing n_c for E(c)'s share,
      the true error |T h^p + r_1| exceeds the estimate |T h^p + (r_1 - r_2)/(2^p - 1)| by at
      most n_1 + (n_1 + n_2) / (2^p - 1): 1.5 R (central), 3.3 R (richardson). 2 eps |E| covers
      the divisions.
    """
    p = 2 if method == "central" else 4
    cs = (1.0, 2.0, 4.0) if method == "central" else (0.5, 1.0, 2.0, 4.0)
    samples = list(sample(cs))  # the batched calls of f; what follows is per entry
    shape = np.broadcast_shapes(*(np.shape(a) for s in samples for a in s[:2]))
    if not shape:
        return _extrapolate_block(samples, cs, f0_abs, h, value_noise, method, p, slice(None))
    value, error = np.empty(shape), np.empty(shape)
    width = max(1, FD_BLOCK // max(int(np.prod(shape[:-1])), 1))

    def one(cols):  # blocks of columns are independent: on the block threads
        value[..., cols], error[..., cols] = _extrapolate_block(
            samples, cs, f0_abs, h, value_noise, method, p, cols)

    for_each(one, [slice(a, a + width) for a in range(0, shape[-1], width)])
    return value, error


def _extrapolate_block(samples, cs, f0_abs, h, value_noise, method, p, cols):
    """:func:`_extrapolated` on columns ``cols``, every row (the noise sums over axis 0)."""
    ds, mag = _central_from(samples, cs, cols)
    mag = np.maximum(mag, _cols(f0_abs, cols))
    h = _cols(h, cols)
    e1, e2, e4 = ds if method == "central" else (
        (4.0 * ds[i] - ds[i + 1]) / 3.0 for i in range(3))
    r = (1.0 if method == "central" else 3.0) * value_noise(mag, e1) / h
    n1, n2, n4 = r, r / 2.0, r / 4.0
    d12, d24 = np.abs(e1 - e2), np.abs(e2 - e4)
    noise_only = (d12 <= 2.0 * (n1 + n2)) & (d24 <= 2.0 * (n2 + n4))
    target = 2.0 ** p
    with np.errstate(divide="ignore", invalid="ignore"):
        order_ok = np.abs((e2 - e4) / (e1 - e2) - target) <= target / 4.0
    trunc = np.where(noise_only | order_ok, 1.5 * d12 / (target - 1.0), d12 + d24)
    rounding = n1 + (n1 + n2) / (target - 1.0) + 2.0 * EPS * np.abs(e1)
    return e1, trunc + rounding


def _complex_estimate(im1, im2, curvature, h, h2, rel_h, x_scale):
    """Complex-step value Im f(x + i h u) / h, and its error.

    The imaginary parts carry the derivative as forward-mode differentiation would. Their
    rounding has two sources. (1) The imaginary computation itself: it shows as the spread
    |D(h) - D(0.7 h)| (the two round differently), plus 4 eps |value|. (2) The real parts the
    derivative is built from (the shift x - max x; 1 - s_k for a saturated softmax entry):
    they round the same way for both steps, so they are bounded instead. By the input model
    they move the point by eps x_scale per coordinate, which moves the derivative by that
    times the second derivative, taken as ``curvature`` = |f| max|u| (within a factor 2.5
    for softmax, whose derivatives of every order are bounded by s_i): 4 eps x_scale
    curvature. Truncation, h^2 |f'''| / 6, is taken as (h / scale)^2 (|value| + curvature):
    about 1e-40 relative.
    """
    d1 = im1 / h
    d2 = im2 / h2
    # eps x_scale first: x_scale may be near realmax, and an error bound may be +inf, not nan
    with np.errstate(over="ignore"):
        error = (np.abs(d1 - d2) + 4.0 * EPS * np.abs(d1) + (4.0 * EPS * x_scale) * curvature
                 + rel_h ** 2 * (np.abs(d1) + curvature))
    return d1, error


# ------------------------------------------------------------------------------------------
# the Jacobian


def _rows_with(x: np.ndarray, idx: np.ndarray, values: np.ndarray, dtype=np.float64):
    """The (p, n) batch whose row r is x with coordinate idx[r] set to values[r]."""
    X = np.empty((idx.size, x.size), dtype=dtype)
    X[...] = x
    X[np.arange(idx.size), idx] = values
    return X


def _round_step(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    # the step taken is then the step divided by: x + h is a float64
    return (x + h) - x


def _jacobian_sampler(f, x, idx, h):
    xs = x[idx]

    def sample(cs):
        for c in cs:
            xp, xm = xs + c * h, xs - c * h
            fp = _call(f, _rows_with(x, idx, xp), (2,))
            fm = _call(f, _rows_with(x, idx, xm), (2,))
            yield fp, fm, (xp - xm)[:, None]

    return sample


def _assemble(n_out: int, n: int, idx: np.ndarray, block: np.ndarray) -> np.ndarray:
    """(p, n_out) per-coordinate rows -> (n_out, n) with zero columns where masked."""
    full = np.zeros((n_out, n))
    full[:, idx] = block.T
    return full


def jacobian(f, x: np.ndarray, method: str = "auto", complex_ok: bool = True) -> FDEstimate:
    """Jacobian of a batched f at x, ``value[i, k] = d f_i / d x_k``, with its error.

    ``f(X)`` maps an (m, n) batch (float64; complex128 for the complex step) to an (m, n_out)
    batch. Coordinates where x is -inf are masked: never perturbed, their columns are 0 with
    error 0. ``method="auto"`` is ``"complex"`` when ``complex_ok``, else ``"richardson"``.
    Raises ValueError for an unknown method, and for the complex step when f does not accept
    complex input.
    """
    method = resolve_method(method, complex_ok)
    x, masked = _check_x(x)
    n = x.size
    idx = np.flatnonzero(~masked)
    scale = np.maximum(1.0, np.abs(x[idx]))
    x_scale = float(np.max(scale, initial=1.0))
    f0 = _call(f, x[None, :], (2,))
    n_out = f0.shape[1]
    step = np.zeros(n)

    if idx.size == 0:
        zero = np.zeros((n_out, n))
        return FDEstimate(zero, zero.copy(), step, method, _ACCURACY[method])

    if method == "complex":
        h = np.exp2(np.round(np.log2(COMPLEX_STEP * scale)))
        h2 = _COMPLEX_PROBE * h
        value, error = np.zeros((n_out, n)), np.zeros((n_out, n))
        # a block of coordinates at a time: each batch stays cache-sized, and memory is the
        # two n_out x n results, not a dozen complex n x n temporaries
        per = max(1, COMPLEX_BLOCK // max(n, 1))
        for a in range(0, idx.size, per):
            b = slice(a, a + per)
            ib, rows = idx[b], np.arange(idx[b].size)
            Z = _rows_with(x, ib, x[ib], dtype=np.complex128)
            Z.imag[rows, ib] = h[b]
            y1 = _call(f, Z, (2,))
            Z.imag[rows, ib] = h2[b]
            y2 = _call(f, Z, (2,))
            v, e = _complex_estimate(y1.imag, y2.imag, np.abs(y1.real), h[b, None],
                                     h2[b, None], (h[b] / scale[b])[:, None], x_scale)
            value[:, ib], error[:, ib] = v.T, e.T
        step[idx] = h
        return FDEstimate(value, error, step, method, _ACCURACY[method])
    else:
        base = CENTRAL_STEP if method == "central" else RICHARDSON_STEP
        h = _round_step(x[idx], base * scale)

        def value_noise(mag, d):
            # sum over coordinates of |J_ij|: f_i's sensitivity to rounded inputs
            return F_ROUNDING * EPS * mag + EPS * x_scale * np.sum(np.abs(d), axis=0)

        value, error = _extrapolated(_jacobian_sampler(f, x, idx, h), np.abs(f0), h[:, None],
                                     value_noise, method)
    step[idx] = h
    return FDEstimate(_assemble(n_out, n, idx, value), _assemble(n_out, n, idx, error), step,
                      method, _ACCURACY[method])


def _bare(f, x, h, cs):
    x, masked = _check_x(x)
    idx = np.flatnonzero(~masked)
    n_out = _call(f, x[None, :], (2,)).shape[1]
    if idx.size == 0:
        return [np.zeros((0, n_out)) for _ in cs], x, idx, n_out
    hk = np.broadcast_to(np.asarray(h, dtype=np.float64), x.shape)[idx]
    sampler = _jacobian_sampler(f, x, idx, _round_step(x[idx], hk))
    ds, _ = _central_from(list(sampler(cs)), cs, slice(None))
    return ds, x, idx, n_out


def central_difference(f, x: np.ndarray, h) -> np.ndarray:
    """The bare central difference (f(x + h e_k) - f(x - h e_k)) / 2h, shape (n_out, n).

    ``h`` is an absolute step, one number or one per coordinate (rounded as in
    :func:`jacobian`). No error estimate: halving h divides its truncation error by 4.
    Masked (-inf) coordinates give zero columns.
    """
    (d,), x, idx, n_out = _bare(f, x, h, (1.0,))
    return _assemble(n_out, x.size, idx, d)


def richardson_difference(f, x: np.ndarray, h) -> np.ndarray:
    """The bare Richardson extrapolation (4 D(h/2) - D(h)) / 3, shape (n_out, n).

    As :func:`central_difference`; halving h divides its truncation error by 16.
    """
    (d_half, d1), x, idx, n_out = _bare(f, x, h, (0.5, 1.0))
    return _assemble(n_out, x.size, idx, (4.0 * d_half - d1) / 3.0)


# ------------------------------------------------------------------------------------------
# directional derivatives


def directional(g, x: np.ndarray, u: np.ndarray, method: str = "auto",
                complex_ok: bool = True) -> FDEstimate:
    """d/dh g(x + h u) at h = 0, with its error, from a handful of points (memory O(n)).

    ``g(X)`` maps an (m, n) batch to (m,) or (m, k); ``value`` has g's output shape without
    the batch axis (0-d for a scalar g). Where x is -inf, u is taken as 0. The step is
    t = c max(1, max|x|) / max|u| rounded to a power of two, c the method's factor; ``step``
    is t. Without a gradient, g's sensitivity to rounded inputs, sum_j |dg/dx_j|, is taken as
    |g| + |value| / max|u|: a directional derivative that is a sum with heavy cancellation
    can exceed the central and Richardson bounds (the complex step is far less exposed).
    """
    method = resolve_method(method, complex_ok)
    x, masked = _check_x(x)
    u = np.asarray(u, dtype=np.float64)
    if u.shape != x.shape:
        raise ValueError(f"u has shape {u.shape}, x has shape {x.shape}")
    u = np.where(masked, 0.0, u)
    if not np.all(np.isfinite(u)):
        raise ValueError("u must be finite where x is not masked")
    u_max = float(np.max(np.abs(u)))
    x_scale = max(1.0, float(np.max(np.abs(x[~masked]), initial=0.0)))
    accuracy = _ACCURACY[method]

    if u_max == 0.0:
        zero = np.zeros(_call(g, x[None, :], (1, 2)).shape[1:])
        return FDEstimate(zero, zero.copy(), 0.0, method, accuracy)

    factor = {"central": CENTRAL_STEP, "richardson": RICHARDSON_STEP,
              "complex": COMPLEX_STEP}[method]
    t = math.ldexp(1.0, round(math.log2(factor * x_scale / u_max)))

    if method == "complex":
        t2 = _COMPLEX_PROBE * t
        Z = np.empty((2, x.size), dtype=np.complex128)
        Z.real = x
        Z.imag = np.outer([t, t2], u)
        y = _call(g, Z, (1, 2))
        value, error = _complex_estimate(y[0].imag, y[1].imag, np.abs(y[0].real) * u_max, t,
                                         t2, t * u_max / x_scale, x_scale)
        return FDEstimate(np.asarray(value), np.asarray(error), t, method, accuracy)

    cs = (1.0, 2.0, 4.0) if method == "central" else (0.5, 1.0, 2.0, 4.0)
    # x itself and both sides of every offset, in one batched call
    offsets = np.concatenate([[0.0], *[[c * t, -c * t] for c in cs]])
    y = _call(g, x + offsets[:, None] * u, (1, 2))
    sides = {c: (y[1 + 2 * i], y[2 + 2 * i]) for i, c in enumerate(cs)}

    def sample(wanted):
        for c in wanted:
            yield (*sides[c], 2.0 * c * t)  # exact: c and t are powers of two

    def value_noise(mag, d):
        return F_ROUNDING * EPS * mag + EPS * x_scale * (mag + np.abs(d) / u_max)

    value, error = _extrapolated(sample, np.abs(y[0]), t, value_noise, method)
    return FDEstimate(np.asarray(value), np.asarray(error), t, method, accuracy)
