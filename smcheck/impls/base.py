"""The protocol every implementation under test follows, with what it can do stated as
attributes (callers ask these; none tests an implementation's class)."""

from __future__ import annotations

import numpy as np

from ..dtypes import DtypeInfo
from ..exceptions import InputError
from .formulas import exact_formula


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

    #: the warnings it issued in this run, {(category name, message): times}, where it
    #: records them (a user's callable, see :class:`~smcheck.impls.user.UserCallable`); the
    #: reference check turns them into a "warnings" note (checks.common.warnings_finding)
    warned: dict | None = None

    #: whether every value it returns is a number of the requested dtype by construction (the
    #: built-ins and adapters round into it); otherwise its results are checked for the dtype
    honours_dtype: bool = False

    #: whether two threads may call it at once (smcheck's own code and the framework adapters;
    #: a user's function may keep state, and its warnings are caught per call): a check that
    #: builds cases of its own then runs beside the others (checks.run_checks)
    thread_safe: bool = False

    #: whether a forked copy of this process may call it (numpy code: the built-ins and the
    #: scipy adapter; torch's and jax's thread pools do not survive a fork, and a user's
    #: function may hold anything): a check may then run beside the others in a forked
    #: process (smcheck.beside)
    fork_safe: bool = False

    #: whether it can only return a whole n x n Jacobian (a user's f(x) -> J): beyond
    #: --max-dense, where smcheck probes v^T J u instead, it cannot be checked
    dense_jacobian_only: bool = False

    #: whether it is one function computing one quantity (a user's callable): a sweep checks
    #: it as a softmax only
    one_function: bool = False

    #: whether the gradient of the loss in x is its own softmax formula s * sum(t) - t (the
    #: built-ins); otherwise it is taken back through its -t/z by a VJP
    grad_x_from_softmax: bool = False

    def for_options(self, options) -> "Implementation":
        """This implementation as ``options`` (:class:`smcheck.Options`) ask for it: how a
        user's callable is called (``batched``, ``tensor``, ``device``, the N-d layout). The
        built-ins and adapters compute a batch in one call already, on numpy arrays: they
        refuse ``--batched`` and ``--tensor`` (``--device`` is the torch adapter's)."""
        if options.batched or options.tensor != "numpy":
            raise InputError(f"--batched and --tensor apply to your own function "
                             f"(--impl module:function), not to --impl {self.name}, which "
                             "computes a batch in one call already")
        if options.device != "cpu":
            raise InputError(f"--device {options.device}: only --impl torch, or your function "
                             f"with --tensor torch, runs on a device, not --impl {self.name} "
                             "(leave --device at cpu)")
        return self

    def for_rows(self, labels) -> "Implementation":
        """This implementation for a run over the input's rows ``labels`` (for its messages);
        the object itself is never changed, so a sweep may share it."""
        return self

    @property
    def fd_source(self) -> str:
        return "smcheck's stable softmax in float64"
