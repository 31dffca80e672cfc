"""The built-in formulas, in numpy, in the requested format.

Built-ins run in the requested format: every elementwise operation rounds to it (numpy's
float16 and ml_dtypes' bfloat16 ufuncs compute in float32 and round each result), while sums of
16-bit values accumulate in float32, as numpy's pairwise sum for float16 and torch's CPU kernels
do. They work on a batch at once (rows along the last axis).

* ``stable``  — shift by the max: exp(x - max) / sum exp(x - max); log-softmax as
  (x - max) - log1p(sum over the non-maximal entries), so the largest entry keeps its digits.
* ``naive``   — exp(x) / sum exp(x), no shift: overflows above log(realmax); log of it for --log.
* ``divfree`` — exp(x - logsumexp(x)) with a shifted logsumexp; x - logsumexp(x) for --log.
"""

from __future__ import annotations

import numpy as np

from ..blocks import BLOCK, for_each
from ..dtypes import DtypeInfo
from ..limits import LONG_ROW

BUILTIN_NAMES = ("stable", "naive", "divfree")


def _errstate():
    return np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore")


def _row_max(X):
    return np.max(X, axis=-1, keepdims=True)


def stable_softmax(X: np.ndarray, info: DtypeInfo, log: bool = False) -> np.ndarray:
    dt, acc = info.np_dtype, info.accumulator
    with _errstate():
        d = (X - _row_max(X)).astype(dt, copy=False)
        e = np.exp(d)
        if not log:
            S = np.sum(e, axis=-1, keepdims=True, dtype=acc)
            return (e.astype(acc, copy=False) / S).astype(dt, copy=False)
        first = np.zeros(e.shape, dtype=bool)
        np.put_along_axis(first, np.argmax(X, axis=-1)[..., None], True, axis=-1)
        T = np.sum(np.where(first, np.zeros((), dt), e), axis=-1, keepdims=True, dtype=acc)
        return (d - np.log1p(T).astype(dt, copy=False)).astype(dt, copy=False)


def naive_softmax(X: np.ndarray, info: DtypeInfo, log: bool = False) -> np.ndarray:
    dt, acc = info.np_dtype, info.accumulator
    with _errstate():
        e = np.exp(X.astype(dt, copy=False))
        S = np.sum(e, axis=-1, keepdims=True, dtype=acc)
        s = (e.astype(acc, copy=False) / S).astype(dt, copy=False)
        return np.log(s) if log else s


def divfree_softmax(X: np.ndarray, info: DtypeInfo, log: bool = False) -> np.ndarray:
    dt, acc = info.np_dtype, info.accumulator
    with _errstate():
        a = _row_max(X).astype(dt, copy=False)
        S = np.sum(np.exp((X - a).astype(dt, copy=False)), axis=-1, keepdims=True, dtype=acc)
        lse = (a + np.log(S).astype(dt, copy=False)).astype(dt, copy=False)
        y = (X - lse).astype(dt, copy=False)
        return y if log else np.exp(y)


#: rows longer than LONG_ROW are computed a segment of SEGMENT entries at a time
SEGMENT = 2 ** 20


def _segmented(name: str, X: np.ndarray, info: DtypeInfo, log: bool) -> np.ndarray:
    """The built-in ``name`` on rows too long to hold many copies of, as a kernel that streams
    a row does: passes over segments (the max; the sum of the exps, each segment's in the
    accumulator, the segments' sums pairwise; the entries), so memory is the result and one
    segment's work. The same formulas; only the sum's order differs from a whole-row sum."""
    dt, acc = info.np_dtype, info.accumulator
    rows, n = X.shape
    out = np.empty(X.shape, dtype=dt)
    cuts = [slice(a, min(a + SEGMENT, n)) for a in range(0, n, SEGMENT)]
    with _errstate():
        for r in range(rows):
            x = X[r]
            a = np.max(x).astype(dt) if name != "naive" else dt.type(0)
            first = int(np.argmax(x))

            def exps(c, a=a, x=x):
                return np.exp((x[c] - a).astype(dt, copy=False))

            def others(c, first=first):
                e = exps(c)
                if c.start <= first < c.stop and name == "stable" and log:
                    e[first - c.start] = 0
                return np.sum(e, dtype=acc)

            S = np.sum(np.array([others(c) for c in cuts], dtype=acc), dtype=acc)
            for c in cuts:
                if name == "stable" and log:
                    out[r, c] = ((x[c] - a).astype(dt, copy=False)
                                 - np.log1p(S).astype(dt, copy=False))
                elif name == "divfree":
                    y = (x[c] - (a + np.log(S).astype(dt, copy=False)).astype(dt)).astype(dt)
                    out[r, c] = y if log else np.exp(y)
                else:
                    s = (exps(c).astype(acc, copy=False) / S).astype(dt, copy=False)
                    out[r, c] = np.log(s) if log else s
    return out


def _long_rows_too(name: str, fn):
    def builtin(X: np.ndarray, info: DtypeInfo, log: bool = False) -> np.ndarray:
        if X.ndim == 2 and X.shape[-1] > LONG_ROW:
            return _segmented(name, X, info, log)
        return fn(X, info, log)

    return builtin


_BUILTINS = {name: _long_rows_too(name, fn) for name, fn in
             (("stable", stable_softmax), ("naive", naive_softmax), ("divfree", divfree_softmax))}


def _by_rows(fn, X: np.ndarray) -> np.ndarray:
    """fn on blocks of rows of X (row-wise, so the same values), on smcheck's threads."""
    step = max(1, BLOCK // X.shape[1])
    parts = [slice(r, r + step) for r in range(0, X.shape[0], step)]
    out = np.empty(X.shape, dtype=np.result_type(X.dtype, np.float64))  # fn's result type

    def one(i):
        out[parts[i]] = fn(X[parts[i]])

    for_each(one, list(range(len(parts))))
    return out


def exact_formula(name: str, log: bool = False):
    """The built-in formula ``name`` in float64 or complex128 arithmetic, with no rounding to a
    narrower dtype: the forward function that finite differences (the complex step included)
    differentiate. Rows along the last axis. The shift is the (complex) entry whose real part
    is largest: the formula stays analytic, and x_max - shift is exactly 0 as log1p assumes."""

    def f(X):
        X = np.asarray(X)
        if X.ndim == 2 and X.size > (1 << 16) and X.shape[0] > 1:
            return _by_rows(f1, X)  # a big batch (finite differences): row blocks on threads
        return f1(X)

    def f1(X):
        with _errstate():
            re = X.real
            a = np.take_along_axis(X, np.argmax(re, axis=-1)[..., None], axis=-1)
            if name == "naive":
                e = np.exp(X)
                e /= np.sum(e, axis=-1, keepdims=True)
                return np.log(e, out=e) if log else e
            if name == "divfree":
                lse = a + np.log(np.sum(np.exp(X - a), axis=-1, keepdims=True))
                return X - lse if log else np.exp(X - lse)
            d = X - a
            if not log:  # in place: one array of the row's size, not three
                e = np.exp(d, out=d)
                e /= np.sum(e, axis=-1, keepdims=True)
                return e
            e = np.exp(d)
            first = np.zeros(X.shape, dtype=bool)
            np.put_along_axis(first, np.argmax(re, axis=-1)[..., None], True, axis=-1)
            T = np.sum(np.where(first, 0, e), axis=-1, keepdims=True)
            return d - np.log1p(T)

    return f


def _one_minus(s: np.ndarray, acc) -> np.ndarray:
    """1 - s_i without cancellation: the sum of the other entries for the largest s_i (the only
    one that can be near 1), 1 - s_i for the rest (s_i <= 1/2 there, so the subtraction is
    benign)."""
    s32 = s.astype(acc)
    out = (1 - s32)
    m = np.argmax(s32, axis=-1)
    rows = np.arange(s.shape[0])
    mask = np.ones(s.shape, dtype=bool)
    mask[rows, m] = False
    others = np.sum(np.where(mask, s32, 0), axis=-1, dtype=acc)
    out[rows, m] = others
    return out


def builtin_jacobian(name: str, X: np.ndarray, info: DtypeInfo, log: bool = False) -> np.ndarray:
    """J = diag(s) - s s^T (log: I - 1 s^T) per row, in the dtype; shape (rows, n, n).

    ``stable`` computes 1 - s_i as the sum of the other entries where s_i is near 1, so the
    diagonal keeps its digits on saturated inputs; ``naive`` and ``divfree`` use the textbook
    s_i - s_i^2 (resp. 1 - s_i), which cancels there."""
    dt, acc = info.np_dtype, info.accumulator
    s = _BUILTINS[name](X, info, False)
    rows, n = s.shape
    with _errstate():
        if log:
            J = np.broadcast_to(-s[:, None, :], (rows, n, n)).astype(acc)
            if name == "stable":
                diag = _one_minus(s, acc)
            else:
                diag = (1 - s.astype(acc)).astype(dt).astype(acc)
        else:
            sa = s.astype(acc)
            J = np.multiply(sa[:, :, None], sa[:, None, :])
            np.negative(J, out=J)
            J = J.astype(dt, copy=False).astype(acc, copy=False)
            if name == "stable":
                diag = sa * _one_minus(s, acc)
            else:
                diag = (sa - (sa * sa).astype(dt).astype(acc))
        idx = np.arange(n)
        J[:, idx, idx] = diag
        return J.astype(dt, copy=False)


def builtin_vjp(name: str, X: np.ndarray, V: np.ndarray, info: DtypeInfo) -> np.ndarray:
    """z = s * (v - <v, s>) per row in O(n), without forming J; 16-bit formats compute the
    bracket and the product in float32 and round once."""
    return vjp_at(_BUILTINS[name](X, info, False), V, info)


def vjp_at(s: np.ndarray, V: np.ndarray, info: DtypeInfo) -> np.ndarray:
    """s * (v - <v, s>) for a softmax s already computed (in the dtype): the backward pass of
    a softmax through its saved output, as autograd takes it; 16-bit formats compute the
    bracket and the product in float32 and round once."""
    dt, acc = info.np_dtype, info.accumulator
    with _errstate():
        sa, va = s.astype(dt).astype(acc), V.astype(dt).astype(acc)
        dot = np.sum(va * sa, axis=-1, keepdims=True, dtype=acc)
        return (sa * (va - dot)).astype(dt)


def builtin_loss_grad(Z: np.ndarray, T: np.ndarray, info: DtypeInfo) -> np.ndarray:
    """D_z l = -t / z for l(z, t) = -sum t_i log z_i, one rounding per entry."""
    with _errstate():
        return (-(T.astype(info.np_dtype)) / Z.astype(info.np_dtype)).astype(info.np_dtype)
