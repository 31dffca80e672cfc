"""A user's own callable (``--impl module.path:function``, ``--impl path/to/file.py:function``,
or a function from Python)."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
import warnings
from dataclasses import dataclass, field, replace

import numpy as np

from ..exceptions import ImplementationError, InputError
from ..ndim import from_layout, to_layout
from .adapters import torch_device
from .base import Implementation

#: what each command calls the callable with, and what it expects back (for messages)
#: what --tensor may hand a user's function
TENSORS = ("numpy", "torch", "jax")

SIGNATURES = {"forward": "f(x) -> s", "forward_log": "f(x) -> log s",
              "jacobian": "f(x) -> J (n x n)", "vjp": "f(x, v) -> z", "loss": "f(z, t) -> -t/z"}

#: distinct (category, message) pairs of warnings kept per run; more are only counted
WARNINGS_KEPT = 100


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


def _cannot_bind(func, args) -> bool:
    """Whether ``func`` cannot take ``args`` (its signature does not bind them); False where
    the signature cannot be read (a builtin): then nothing is claimed."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return False
    try:
        sig.bind(*args)
    except TypeError:
        return True
    return False


def _warning_key(w: warnings.WarningMessage) -> tuple[str, str]:
    text = " ".join(str(w.message).split())
    return w.category.__name__, text if len(text) <= 200 else text[:197] + "..."


@dataclass
class UserCallable(Implementation):
    """``module.path:function`` or ``path/to/file.py:function``, or a function from Python.

    Called once per row with 1-D numpy arrays in the dtype (bfloat16 as ml_dtypes), as
    :data:`SIGNATURES` says: forward ``f(x) -> s`` (or log s with --log), jacobian
    ``f(x) -> J``, vjp ``f(x, v) -> z``, loss ``f(z, t) -> -t/z``. While it runs, what it
    prints goes to stderr (never into --json on stdout), numpy's floating-point warnings are
    off (its arithmetic is what smcheck judges), and the warnings it issues are recorded in
    :attr:`warned` for the reference check's "warnings" finding.
    """

    name: str
    func: object

    def call(self, *args, expect_shape, row, signature: str | None = None):
        """The callable on one row's arrays (``row``: its number; or a chunk's, ``row`` then
        the words naming its rows); ``signature`` (see :data:`SIGNATURES`) names what the
        command expected, for messages."""
        row = row if isinstance(row, str) else f"row {row}"
        hint = f"; expected {signature}" if signature else ""
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings(record=True) as caught, \
                    contextlib.redirect_stdout(sys.stderr):
                warnings.simplefilter("always")  # every warning, counted (not once per place)
                out = self.func(*args)
        except (Exception, SystemExit) as exc:  # a callable's sys.exit() is not a verdict
            wrong_args = isinstance(exc, TypeError) and _cannot_bind(self.func, args)
            raise ImplementationError(
                f"--impl {self.name} raised {type(exc).__name__} on {row}: {exc}"
                + (hint if wrong_args else "")) from None
        self._note_warnings(caught)
        self._note_dtype(out)
        arr = to_numpy(out, f"--impl {self.name}")
        if arr.shape != tuple(expect_shape):
            raise ImplementationError(
                f"--impl {self.name} returned shape {arr.shape} for {row}: expected "
                f"{tuple(expect_shape)}" + (f", from {signature}" if signature else ""))
        return arr

    #: the input's row numbers of the rows being checked (see :meth:`for_rows`), for messages
    row_labels: object = None
    dense_jacobian_only = True
    one_function = True

    #: the warnings the callable issued in this run: {(category name, message): times}
    warned: dict = field(default_factory=dict, repr=False, compare=False)
    #: rows computed (calls made) in this run, and warnings beyond WARNINGS_KEPT distinct ones
    calls: int = field(default=0, repr=False, compare=False)
    warned_more: int = field(default=0, repr=False, compare=False)

    #: how it is called (see :meth:`for_options`): a chunk of rows at once, on what arrays
    batched: bool = False
    tensor: str = "numpy"
    device: str = "cpu"
    batch_shape: tuple | None = None  # x's other axes, for an N-d input
    axis: int = -1

    def for_options(self, options) -> "UserCallable":
        if options.tensor not in TENSORS:
            raise InputError(f"--tensor {options.tensor}: use one of {', '.join(TENSORS)}")
        if options.device != "cpu":
            if options.tensor != "torch":
                raise InputError(f"--device {options.device}: a user's function gets torch "
                                 "tensors on a device only with --tensor torch")
            import torch

            torch_device(torch, options.device)  # usable here, or one error line
        return replace(self, batched=options.batched, tensor=options.tensor,
                       device=options.device, batch_shape=options.batch_shape,
                       axis=options.axis)

    def for_rows(self, labels) -> "UserCallable":
        """A copy for one run, with its own record of warnings (this object is unchanged)."""
        return replace(self, row_labels=labels, warned={}, calls=0, warned_more=0)

    def _note_warnings(self, caught) -> None:
        self.calls += 1
        for w in caught:
            key = _warning_key(w)
            if key in self.warned or len(self.warned) < WARNINGS_KEPT:
                self.warned[key] = self.warned.get(key, 0) + 1
            else:
                self.warned_more += 1

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

    def _rows(self, arrays, shape, signature: str):
        self._asked = np.asarray(arrays[0]).dtype.name
        self.returned_dtype = None  # of this call's rows
        rows = arrays[0].shape[0]
        labels = self.row_labels
        if labels is None or len(labels) != rows:
            labels = range(rows)
        if self.batched:
            return self._batch(arrays, shape, signature, labels)
        out = np.empty((rows,) + tuple(shape), dtype=np.float64)
        for r in range(rows):
            out[r] = self.call(*(self._as_tensor(a[r].copy()) for a in arrays),
                               expect_shape=shape, row=int(labels[r]), signature=signature)
        return out

    def _batch(self, arrays, shape, signature: str, labels):
        """One call on every row: the arrays in the input's layout (an N-d input's rows
        back in its shape, a slice of its first axis per chunk), the result read back as
        rows (a Jacobian's n x n last)."""
        rows = arrays[0].shape[0]
        given = [to_layout(a, self.batch_shape, self.axis) for a in arrays]
        laid_out = given[0] is not arrays[0]
        if len(shape) == 1:
            lead = given[0].shape
        else:  # J: the rows' axes first, then (n, n)
            lead = ((rows // int(np.prod(self.batch_shape[1:])),) + tuple(self.batch_shape[1:])
                    if laid_out else (rows,)) + tuple(shape)
        where = f"rows {int(labels[0])} to {int(labels[-1])} (one batched call)"
        out = self.call(*(self._as_tensor(a) for a in given), expect_shape=lead, row=where,
                        signature=signature.replace("f(x", "f(X").replace("f(z, t)", "f(Z, T)")
                        + " on the whole batch")
        return from_layout(out, self.batch_shape, self.axis, rows, tuple(shape))

    def _as_tensor(self, a: np.ndarray):
        """A numpy array (in the dtype) as the callable takes it: numpy, or a torch tensor on
        --device, or a jax array."""
        if self.tensor == "numpy":
            return a
        if self.tensor == "torch":
            import torch

            t = (torch.from_numpy(np.ascontiguousarray(a.astype(np.float32))).to(torch.bfloat16)
                 if a.dtype.name == "bfloat16" else torch.from_numpy(np.ascontiguousarray(a)))
            return t.to(self.device)
        import jax.numpy as jnp

        return jnp.asarray(a)

    def softmax(self, X, info, log=False):
        return self._rows([X], X.shape[1:], SIGNATURES["forward_log" if log else "forward"])

    def jacobian(self, X, info, log=False):
        n = X.shape[1]
        return self._rows([X], (n, n), SIGNATURES["jacobian"])

    def vjp(self, X, V, info):
        return self._rows([X, V.astype(info.np_dtype)], X.shape[1:], SIGNATURES["vjp"])

    def loss_grad(self, Z, T, info):
        return self._rows([Z.astype(info.np_dtype), T.astype(info.np_dtype)], Z.shape[1:],
                          SIGNATURES["loss"])


def _is_path(where: str) -> bool:
    """Whether the part before ':' names a file (``dir/impl.py``, ``impl.py``), not a module."""
    seps = [os.sep] + ([os.altsep] if os.altsep else [])
    return (where.endswith(".py") or any(s in where for s in seps + ["/"])
            or os.path.isfile(where))


@contextlib.contextmanager
def _on_path(directory: str):
    """``directory`` first on sys.path for the import only (unless it is there already)."""
    added = directory not in sys.path and not (directory == os.getcwd() and "" in sys.path)
    if added:
        sys.path.insert(0, directory)
    try:
        yield
    finally:
        if added and directory in sys.path:
            sys.path.remove(directory)


def _import_file(spec: str, where: str):
    """The module of the Python file ``where`` (relative to the current directory, or
    absolute), under a name of its own: one per file and modification time, so a second run
    reuses it and an edited file is read afresh. Its directory is on sys.path for the import,
    as ``python file.py`` would have it."""
    full = os.path.abspath(where)
    if not os.path.isfile(full):
        what = (f"'{where}' is a directory, not a file" if os.path.isdir(full) else
                f"no such file '{where}'")
        raise ImplementationError(f"--impl {spec}: {what} (a path is relative to the current "
                                  f"directory, {os.getcwd()})")
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(full))[0])
    import hashlib  # (OpenSSL's start-up, only for a callable given by file)

    digest = hashlib.sha1(f"{full}\0{os.stat(full).st_mtime_ns}".encode()).hexdigest()[:12]
    name = f"_smcheck_impl_{stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    found = importlib.util.spec_from_file_location(name, full)
    if found is None or found.loader is None:
        raise ImplementationError(f"--impl {spec}: '{where}' is not a Python file (expected "
                                  "path/to/file.py:function)")
    module = importlib.util.module_from_spec(found)
    sys.modules[name] = module  # as import does: dataclasses and pickling look it up
    try:
        with _on_path(os.path.dirname(full)), contextlib.redirect_stdout(sys.stderr):
            found.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        raise ImplementationError(f"--impl {spec}: importing the file '{where}' failed "
                                  f"({type(exc).__name__}: {exc})") from None
    return module


def _import_module(spec: str, mod_name: str):
    """``mod_name`` imported from the current directory or sys.path."""
    try:
        with _on_path(os.getcwd()), contextlib.redirect_stdout(sys.stderr):
            return importlib.import_module(mod_name)
    except (Exception, SystemExit) as exc:
        raise ImplementationError(
            f"--impl {spec}: cannot import module '{mod_name}' ({type(exc).__name__}: {exc}); "
            "it is imported from the current directory or sys.path") from None


def load_callable(spec: str):
    """Import ``module.path:function`` or ``path/to/file.py:function`` (split at the last
    ':'); only the module or file the user named is imported, printing to stderr."""
    where, _, attr = spec.rpartition(":")
    if not where or not attr:
        raise ImplementationError(f"--impl '{spec}': expected module.path:function or "
                                  "path/to/file.py:function")
    is_file = _is_path(where)
    module = _import_file(spec, where) if is_file else _import_module(spec, where)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            what = f"the file '{where}'" if is_file else f"module '{where}'"
            raise ImplementationError(f"--impl {spec}: {what} has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ImplementationError(f"--impl {spec}: '{attr}' is not callable")
    return obj
