"""Implementations under test: the built-ins, and a user's own callable.

Built-ins run in the requested format: every elementwise operation rounds to it (numpy's
float16 and ml_dtypes' bfloat16 ufuncs compute in float32 and round each result), while sums of
16-bit values accumulate in float32, as numpy's pairwise sum for float16 and torch's CPU kernels
do. They work on a batch at once (rows along the last axis).

* ``stable``  — shift by the max: exp(x - max) / sum exp(x - max); log-softmax as
  (x - max) - log1p(sum over the non-maximal entries), so the largest entry keeps its digits.
* ``naive``   — exp(x) / sum exp(x), no shift: overflows above log(realmax); log of it for --log.
* ``divfree`` — exp(x - logsumexp(x)) with a shifted logsumexp; x - logsumexp(x) for --log.
* ``module.path:function`` — a user's callable, called once per row (see :class:`UserCallable`).
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from dataclasses import dataclass

import numpy as np

from .dtypes import DtypeInfo
from .exceptions import ImplementationError

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


_BUILTINS = {"stable": stable_softmax, "naive": naive_softmax, "divfree": divfree_softmax}


def _by_rows(fn, X: np.ndarray) -> np.ndarray:
    """fn on blocks of rows of X (row-wise, so the same values), on smcheck's threads."""
    from .blocks import BLOCK, for_each

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
    dt, acc = info.np_dtype, info.accumulator
    s = _BUILTINS[name](X, info, False)
    with _errstate():
        sa, va = s.astype(acc), V.astype(dt).astype(acc)
        dot = np.sum(va * sa, axis=-1, keepdims=True, dtype=acc)
        return (sa * (va - dot)).astype(dt)


def builtin_loss_grad(Z: np.ndarray, T: np.ndarray, info: DtypeInfo) -> np.ndarray:
    """D_z l = -t / z for l(z, t) = -sum t_i log z_i, one rounding per entry."""
    with _errstate():
        return (-(T.astype(info.np_dtype)) / Z.astype(info.np_dtype)).astype(info.np_dtype)


class Implementation:
    """An implementation under test. ``softmax`` takes rows (2-D, in the dtype) and returns
    an array of the same shape (the values it computed, in whatever float dtype it chose)."""

    name: str

    def softmax(self, X: np.ndarray, info: DtypeInfo, log: bool = False) -> np.ndarray:
        raise NotImplementedError

    def jacobian(self, X: np.ndarray, info: DtypeInfo, log: bool = False) -> np.ndarray:
        """(rows, n, n): the Jacobian of softmax (log-softmax) at each row."""
        raise NotImplementedError

    def vjp(self, X: np.ndarray, V: np.ndarray, info: DtypeInfo) -> np.ndarray:
        """(rows, n): v J(x) for each row."""
        raise NotImplementedError

    def loss_grad(self, Z: np.ndarray, T: np.ndarray, info: DtypeInfo) -> np.ndarray:
        """(rows, n): -t / z for each row."""
        raise NotImplementedError

    def forward64(self, log: bool = False):
        """A float64/complex128 forward function for finite differences (batch of rows)."""
        return exact_formula("stable", log)

    #: whether forward64 accepts complex input (the complex step)
    complex_ok: bool = True

    #: the dtype of the arrays the implementation returned, when it chooses it (a user's
    #: callable may ignore --dtype); None where smcheck's own code fixed it
    returned_dtype: str | None = None

    #: whether every value it returns is a number of the requested dtype by construction (the
    #: built-ins and adapters round into it); otherwise its results are checked for the dtype
    honours_dtype: bool = False

    @property
    def fd_source(self) -> str:
        return "smcheck's stable softmax in float64"


@dataclass
class Builtin(Implementation):
    name: str
    honours_dtype = True

    def softmax(self, X, info, log=False):
        return _BUILTINS[self.name](X, info, log)

    def jacobian(self, X, info, log=False):
        return builtin_jacobian(self.name, X, info, log)

    def vjp(self, X, V, info):
        return builtin_vjp(self.name, X, V, info)

    def loss_grad(self, Z, T, info):
        return builtin_loss_grad(Z, T, info)

    def forward64(self, log=False):
        return exact_formula(self.name, log)

    @property
    def fd_source(self) -> str:
        return f"the {self.name} formula in float64 (complex128 for the complex step)"


def to_numpy(value, what: str) -> np.ndarray:
    """A callable's result as a float64 numpy array; accepts numpy, lists, torch tensors and
    jax arrays (bfloat16 included)."""
    mod = type(value).__module__ or ""
    try:
        if mod.startswith("torch"):
            value = value.detach().to("cpu")
            if not value.dtype.is_floating_point or value.element_size() < 4:
                value = value.double()
            value = value.numpy()
        arr = np.asarray(value)
        if arr.dtype.kind not in "fiub" and arr.dtype.name != "bfloat16":
            raise TypeError(f"dtype {arr.dtype}")
        return arr.astype(np.float64)
    except Exception as exc:  # the user's object could not become numbers
        raise ImplementationError(f"{what} returned something that is not an array of real "
                                  f"numbers ({type(value).__name__}: {exc})") from None


@dataclass
class UserCallable(Implementation):
    """``module.path:function``, imported from the current directory or sys.path.

    Called once per row with 1-D numpy arrays in the dtype (bfloat16 as ml_dtypes): forward
    ``f(x) -> s`` (or log s with --log).
    """

    name: str
    func: object

    def call(self, *args, expect_shape, row: int):
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the callable's own warnings are not ours
                out = self.func(*args)
        except (Exception, SystemExit) as exc:  # a callable's sys.exit() is not a verdict
            raise ImplementationError(
                f"--impl {self.name} raised {type(exc).__name__} on row {row}: {exc}") from None
        self._note_dtype(out)
        arr = to_numpy(out, f"--impl {self.name}")
        if arr.shape != tuple(expect_shape):
            raise ImplementationError(
                f"--impl {self.name} returned shape {arr.shape} for row {row}: expected "
                f"{tuple(expect_shape)}")
        return arr

    #: the input's row numbers of the rows being checked (set by the run), for messages
    row_labels = None

    def _note_dtype(self, out) -> None:
        """Remember the dtype of what the callable returned (numpy, torch or jax), keeping
        the first that differs from the dtype it was given."""
        dt = getattr(out, "dtype", None)
        if dt is None:
            return
        name = str(getattr(dt, "name", dt)).replace("torch.", "")
        if self.returned_dtype is None or self.returned_dtype == self._asked:
            self.returned_dtype = name

    _asked: str | None = None  # the dtype of the current call (set by _rows)

    def _rows(self, arrays, shape):
        self._asked = np.asarray(arrays[0]).dtype.name
        self.returned_dtype = None  # of this call's rows
        rows = arrays[0].shape[0]
        labels = self.row_labels
        if labels is None or len(labels) != rows:
            labels = range(rows)
        out = np.empty((rows,) + tuple(shape), dtype=np.float64)
        for r in range(rows):
            out[r] = self.call(*(a[r].copy() for a in arrays), expect_shape=shape,
                               row=int(labels[r]))
        return out

    def softmax(self, X, info, log=False):
        return self._rows([X], X.shape[1:])

    def jacobian(self, X, info, log=False):
        n = X.shape[1]
        return self._rows([X], (n, n))

    def vjp(self, X, V, info):
        return self._rows([X, V.astype(info.np_dtype)], X.shape[1:])

    def loss_grad(self, Z, T, info):
        return self._rows([Z.astype(info.np_dtype), T.astype(info.np_dtype)], Z.shape[1:])


def load_callable(spec: str):
    """Import ``module.path:function``; only the module the user named is imported."""
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise ImplementationError(f"--impl '{spec}': expected module.path:function")
    added = os.getcwd() not in sys.path and "" not in sys.path
    if added:  # the current directory, for this import only
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(mod_name)
    except Exception as exc:
        raise ImplementationError(
            f"--impl {spec}: cannot import module '{mod_name}' ({type(exc).__name__}: {exc}); "
            "it is imported from the current directory or sys.path") from None
    finally:
        if added and sys.path and sys.path[0] == os.getcwd():
            del sys.path[0]
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ImplementationError(f"--impl {spec}: module '{mod_name}' has no attribute "
                                      f"'{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ImplementationError(f"--impl {spec}: '{attr}' is not callable")
    return obj


ADAPTER_NAMES = ("scipy", "torch", "jax")


def get_implementation(spec) -> Implementation:
    """The implementation named by ``--impl`` (or, from Python, an Implementation or a plain
    callable, which is treated like a user's ``module:function``)."""
    if isinstance(spec, Implementation):
        return spec
    if callable(spec):
        return UserCallable(getattr(spec, "__qualname__", None) or repr(spec), spec)
    spec = (spec or "").strip() if isinstance(spec, str) else ""
    if spec in _BUILTINS:
        return Builtin(spec)
    if spec in ADAPTER_NAMES:
        from .adapters import make_adapter  # imports the framework, lazily

        return make_adapter(spec)
    if ":" in spec:
        return UserCallable(spec, load_callable(spec))
    raise ImplementationError(
        f"unknown implementation '{spec}' (built in: {', '.join(BUILTIN_NAMES)}; adapters: "
        f"{', '.join(ADAPTER_NAMES)}; or module.path:function for your own)")
