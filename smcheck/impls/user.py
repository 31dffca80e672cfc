"""A user's own callable (``--impl module.path:function``, or a function from Python)."""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from dataclasses import dataclass, replace

import numpy as np

from ..exceptions import ImplementationError
from .base import Implementation


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

    #: the input's row numbers of the rows being checked (see :meth:`for_rows`), for messages
    row_labels: object = None
    dense_jacobian_only = True
    one_function = True

    def for_rows(self, labels) -> "UserCallable":
        return replace(self, row_labels=labels)

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
