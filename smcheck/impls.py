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
        d = (X - _row_max(X)).astype(dt)
        e = np.exp(d)
        if not log:
            S = np.sum(e, axis=-1, keepdims=True, dtype=acc)
            return (e.astype(acc) / S).astype(dt)
        first = np.zeros(e.shape, dtype=bool)
        np.put_along_axis(first, np.argmax(X, axis=-1)[..., None], True, axis=-1)
        T = np.sum(np.where(first, np.zeros((), dt), e), axis=-1, keepdims=True, dtype=acc)
        return (d - np.log1p(T).astype(dt)).astype(dt)


def naive_softmax(X: np.ndarray, info: DtypeInfo, log: bool = False) -> np.ndarray:
    dt, acc = info.np_dtype, info.accumulator
    with _errstate():
        e = np.exp(X.astype(dt))
        S = np.sum(e, axis=-1, keepdims=True, dtype=acc)
        s = (e.astype(acc) / S).astype(dt)
        return np.log(s) if log else s


def divfree_softmax(X: np.ndarray, info: DtypeInfo, log: bool = False) -> np.ndarray:
    dt, acc = info.np_dtype, info.accumulator
    with _errstate():
        a = _row_max(X).astype(dt)
        S = np.sum(np.exp((X - a).astype(dt)), axis=-1, keepdims=True, dtype=acc)
        lse = (a + np.log(S).astype(dt)).astype(dt)
        y = (X - lse).astype(dt)
        return y if log else np.exp(y)


_BUILTINS = {"stable": stable_softmax, "naive": naive_softmax, "divfree": divfree_softmax}


class Implementation:
    """An implementation under test. ``softmax`` takes rows (2-D, in the dtype) and returns
    an array of the same shape (the values it computed, in whatever float dtype it chose)."""

    name: str

    def softmax(self, X: np.ndarray, info: DtypeInfo, log: bool = False) -> np.ndarray:
        raise NotImplementedError


@dataclass
class Builtin(Implementation):
    name: str

    def softmax(self, X, info, log=False):
        return _BUILTINS[self.name](X, info, log)


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
            out = self.func(*args)
        except Exception as exc:
            raise ImplementationError(
                f"--impl {self.name} raised {type(exc).__name__} on row {row}: {exc}") from None
        arr = to_numpy(out, f"--impl {self.name}")
        if arr.shape != tuple(expect_shape):
            raise ImplementationError(
                f"--impl {self.name} returned shape {arr.shape} for row {row}: expected "
                f"{tuple(expect_shape)}")
        return arr

    def softmax(self, X, info, log=False):
        out = np.empty(X.shape, dtype=np.float64)
        for r in range(X.shape[0]):
            out[r] = self.call(X[r].copy(), expect_shape=X.shape[1:], row=r)
        return out


def load_callable(spec: str):
    """Import ``module.path:function``; only the module the user named is imported."""
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise ImplementationError(f"--impl '{spec}': expected module.path:function")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(mod_name)
    except Exception as exc:
        raise ImplementationError(
            f"--impl {spec}: cannot import module '{mod_name}' ({type(exc).__name__}: {exc}); "
            "it is imported from the current directory or sys.path") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ImplementationError(f"--impl {spec}: module '{mod_name}' has no attribute "
                                      f"'{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ImplementationError(f"--impl {spec}: '{attr}' is not callable")
    return obj


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
    if ":" in spec:
        return UserCallable(spec, load_callable(spec))
    raise ImplementationError(
        f"unknown implementation '{spec}' (built in: {', '.join(BUILTIN_NAMES)}; or "
        "module.path:function for your own)")
