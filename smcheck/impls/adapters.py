"""Adapters for ``--impl scipy``, ``--impl torch`` and ``--impl jax``: the frameworks' own
softmax, and (torch, jax) their autodiff for the derivative commands.

Every adapter receives numpy batches (rows along the last axis) already rounded to the
requested dtype, runs the framework *in that dtype*, and hands back float64 numpy arrays, which
hold every float64/float32/float16/bfloat16 value exactly, so nothing the framework computed is
rounded away before it is judged.

* ``scipy`` — ``scipy.special.softmax`` / ``log_softmax``, which work in numpy's dtype (bfloat16
  through ml_dtypes' ufuncs). scipy has no autodiff: the Jacobian, VJP and loss gradient are
  the textbook formulas evaluated in numpy, in the dtype, on scipy's softmax.
* ``torch`` — ``torch.softmax`` / ``torch.log_softmax`` on the CPU, derivatives by
  ``torch.autograd`` (the Jacobian in one batched backward pass).
* ``jax`` — ``jax.nn.softmax`` / ``log_softmax``, derivatives by ``jax.jacrev`` (under
  ``vmap``), ``jax.vjp`` and ``jax.grad``; float64 needs ``jax_enable_x64``, which
  :func:`make_adapter` switches on.

The frameworks are imported only by :func:`make_adapter`, never when smcheck is imported, so
``smcheck --help`` and the built-in implementations stay fast and dependency-free.

Masked entries (x_i = -inf): the frameworks give probability 0 (log -inf), but differentiating
*at* -inf is a limit that autodiff may evaluate as 0 * inf = nan. Where a derivative entry that
involves a masked coordinate comes back non-finite it is replaced by its exact value, which
there is known without computing: 0 for the softmax Jacobian and the VJP (s_i = 0), and
[i=k] - s_k for the log-softmax Jacobian. Finite values are never replaced, so a framework that
returns a wrong finite number at a masked position still fails the checks.
"""

from __future__ import annotations

import importlib

import numpy as np

from ..dtypes import DtypeInfo
from ..exceptions import ImplementationError
from .base import Implementation

__all__ = ["make_adapter", "ScipyAdapter", "TorchAdapter", "JaxAdapter"]


def _import(name: str, framework: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ImplementationError(
            f'{framework} is not installed (pip install "smcheck[{framework}]")') from None
    except Exception as exc:  # a broken install (missing shared library, ...) is not "missing"
        raise ImplementationError(
            f"{framework} is installed but could not be imported ({type(exc).__name__}: "
            f"{exc})") from None


def make_adapter(name: str, device: str = "cpu") -> Implementation:
    """The adapter for ``name`` ("scipy", "torch" or "jax"), torch's on ``device``; an
    ImplementationError saying how to install the framework when it cannot be imported."""
    if device != "cpu" and name != "torch":
        raise ImplementationError(f"--device {device}: only --impl torch runs on a device "
                                  f"(--impl {name} runs on the cpu)")
    if name == "scipy":
        return ScipyAdapter(_import("scipy.special", "scipy"))
    if name == "torch":
        torch = _import("torch", "torch")
        _import("torch.func", "torch")  # torch >= 2.0
        return TorchAdapter(torch, device)
    if name == "jax":
        jax = _import("jax", "jax")
        _import("jax.numpy", "jax")
        # without it jnp.float64 silently means float32, and --dtype float64 would be a lie
        jax.config.update("jax_enable_x64", True)
        return JaxAdapter(jax)
    raise ImplementationError(f"unknown adapter '{name}' (adapters: scipy, torch, jax)")


def _errstate():
    return np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore")


def _in_dtype(a, info: DtypeInfo) -> np.ndarray:
    """``a`` as a C-contiguous array of the dtype. The run passes x in the dtype but v and t
    as float64 holding values of the dtype, so this conversion is exact."""
    with np.errstate(over="ignore"):
        return np.ascontiguousarray(np.asarray(a).astype(info.np_dtype))


def _masked(X) -> np.ndarray:
    return np.isneginf(np.asarray(X).astype(np.float64))


def _fix_masked_jacobian(J: np.ndarray, X, log: bool, softmax) -> np.ndarray:
    """Non-finite entries of J (rows, n, n) in a masked row or column, replaced by their exact
    value; ``softmax()`` gives the framework's s (float64), needed for log-softmax only."""
    m = _masked(X)
    bad = (m[:, :, None] | m[:, None, :]) & ~np.isfinite(J)
    if not bad.any():
        return J
    J = J.copy()
    if log:
        # [i=k] - s_k with s_k = 0 on a masked column: every such value is exact in the dtype
        n = J.shape[-1]
        exact = np.eye(n)[None, :, :] - softmax()[:, None, :]
        J[bad] = exact[bad]
    else:
        J[bad] = 0.0
    return J


def _fix_masked_vjp(z: np.ndarray, X) -> np.ndarray:
    bad = _masked(X) & ~np.isfinite(z)
    if bad.any():
        z = np.where(bad, 0.0, z)
    return z


# --- scipy ----------------------------------------------------------------------------------


class ScipyAdapter(Implementation):
    """``scipy.special.softmax`` / ``log_softmax`` along the last axis, in numpy's dtype.

    float64, float32 and float16 arrays are passed as they are. bfloat16 arrays are passed as
    they are too (ml_dtypes' ufuncs round every operation to bfloat16, and numpy sums them in
    bfloat16). If the installed scipy does not keep a 16-bit dtype (it raises or upcasts), the
    softmax is computed in float32 and rounded once to the dtype instead, and ``note`` says so;
    scipy 1.17 keeps all four dtypes.

    scipy has no autodiff, so the derivatives are the textbook formulas evaluated in numpy in
    the dtype on scipy's s: J = diag(s) - s s^T (diagonal s - s*s), log-softmax J = I - 1 s^T
    (diagonal 1 - s), VJP s * (v - <v, s>), loss gradient -t / z. They cancel where s is near
    1, as the textbook formulas do.

    Finite differences differentiate ``scipy.special.softmax`` in float64; it is analytic in
    complex128 (shift by the max, exp, divide), so the complex step applies.
    """

    name = "scipy"
    complex_ok = True
    thread_safe = True
    fork_safe = True
    honours_dtype = True  # rounds scipy's result to the dtype when scipy upcasts

    def __init__(self, special):
        self._special = special
        self.note = ("scipy computes in numpy's dtype; its derivatives are the textbook formulas "
                     "on scipy's softmax, evaluated in numpy in the dtype (scipy has no "
                     "autodiff)")

    def _call(self, X: np.ndarray, info: DtypeInfo, log: bool) -> np.ndarray:
        fn = self._special.log_softmax if log else self._special.softmax
        X = _in_dtype(X, info)
        narrow = info.p < 24  # a 16-bit format, which float32 holds exactly
        with _errstate():
            try:
                out = np.asarray(fn(X, axis=-1))
            except (TypeError, ValueError):
                if not narrow:
                    raise
                out = None
            if out is None or out.dtype != info.np_dtype:
                if narrow:
                    self.note = (f"scipy.special does not keep {info.name}: computed in float32 "
                                 f"and rounded to {info.name}")
                    out = np.asarray(fn(X.astype(np.float32), axis=-1))
                else:
                    self.note = (f"scipy.special returned {out.dtype} for {info.name} input: "
                                 f"rounded to {info.name}")
                out = out.astype(info.np_dtype)
        return out

    def softmax(self, X, info, log=False):
        return self._call(X, info, log).astype(np.float64)

    def jacobian(self, X, info, log=False):
        dt = info.np_dtype
        s = self._call(X, info, False)
        rows, n = s.shape
        idx = np.arange(n)
        with _errstate():
            if log:
                J = np.broadcast_to(-s[:, None, :], (rows, n, n)).copy()
                J[:, idx, idx] = (np.ones((), dt) - s).astype(dt)
            else:
                J = (-(s[:, :, None] * s[:, None, :])).astype(dt)
                J[:, idx, idx] = (s - (s * s).astype(dt)).astype(dt)
        J = J.astype(np.float64)
        return _fix_masked_jacobian(J, X, log, lambda: s.astype(np.float64))

    def vjp(self, X, V, info):
        dt = info.np_dtype
        s = self._call(X, info, False)
        v = _in_dtype(V, info)
        with _errstate():
            dot = np.sum((v * s).astype(dt), axis=-1, keepdims=True, dtype=dt)
            z = (s * (v - dot).astype(dt)).astype(dt)
        return _fix_masked_vjp(z.astype(np.float64), X)

    def loss_grad(self, Z, T, info):
        dt = info.np_dtype
        with _errstate():
            g = (-_in_dtype(T, info) / _in_dtype(Z, info)).astype(dt)
        return g.astype(np.float64)

    def forward64(self, log=False):
        fn = self._special.log_softmax if log else self._special.softmax

        def f(X):
            X = np.asarray(X)
            if not np.iscomplexobj(X):
                X = X.astype(np.float64)
            with _errstate():
                return np.asarray(fn(X, axis=-1))

        return f

    @property
    def fd_source(self) -> str:
        return "scipy.special.softmax in float64 (complex128 for the complex step)"


# --- torch ----------------------------------------------------------------------------------


def torch_device(torch, device: str):
    """``torch.device(device)``, once it is known to be usable here: an ImplementationError
    (one ``error:`` line) for a device this machine's torch cannot reach."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ImplementationError(f"--device {device}: not a torch device (use cpu, cuda, "
                                  "cuda:N or mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ImplementationError(f"--device {device}: torch.cuda.is_available() is False "
                                      "on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ImplementationError(f"--device {device}: this machine has "
                                      f"{torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ImplementationError(f"--device {device}: torch.backends.mps.is_available() "
                                      "is False on this machine")
    elif dev.type != "cpu":
        raise ImplementationError(f"--device {device}: smcheck runs torch on cpu, cuda or mps")
    return dev


class TorchAdapter(Implementation):
    """``torch.softmax`` / ``torch.log_softmax`` on the CPU (or ``device``: cuda, mps), in
    torch.float64, float32, float16 or bfloat16 (whatever the torch kernels do inside, e.g.
    accumulate 16-bit inputs in float32); derivatives by torch's autodiff in the same dtype
    and on the same device: the Jacobian by one ``torch.autograd.grad`` with
    ``is_grads_batched`` (the n unit vectors' VJPs, as ``torch.func.jacrev`` computes them,
    without importing torch._dynamo), the VJP by ``torch.autograd.grad`` with the given v, the
    loss gradient by back-propagating -sum(t * log(z)). Results come back to numpy.

    Finite differences differentiate ``torch.softmax`` in float64 on the CPU (torch's softmax
    takes no complex input: Richardson extrapolation instead of the complex step).
    """

    name = "torch"
    complex_ok = False
    thread_safe = True
    honours_dtype = True  # torch computes and returns tensors of the dtype

    def __init__(self, torch, device: str = "cpu"):
        self._torch = torch
        self._dtypes = {"float64": torch.float64, "float32": torch.float32,
                        "float16": torch.float16, "bfloat16": torch.bfloat16}
        self.device = device
        self._device = torch_device(torch, device)

    def for_options(self, options) -> "TorchAdapter":
        """This adapter on ``options.device`` (checked usable here: else one error line)."""
        super().for_options(options.with_(device="cpu"))  # --batched, --tensor: refused
        if options.device == self.device:
            return self
        return TorchAdapter(self._torch, options.device)

    def _tensor(self, X, info: DtypeInfo):
        a = _in_dtype(X, info)
        if info.name == "bfloat16":
            # torch.from_numpy cannot read ml_dtypes.bfloat16; bfloat16 -> float32 -> bfloat16
            # is exact both ways
            t = self._torch.from_numpy(a.astype(np.float32)).to(self._torch.bfloat16)
        else:
            t = self._torch.from_numpy(a)
        if self._device.type == "cpu":
            return t
        if self._device.type == "mps" and info.name == "float64":
            raise ImplementationError("--device mps: MPS has no float64 (use --dtype float32, "
                                      "float16 or bfloat16)")
        return t.to(self._device)

    @staticmethod
    def _numpy(t) -> np.ndarray:
        # every float16/bfloat16/float32 value is exact in float64
        return t.detach().cpu().double().numpy()

    def _fn(self, log: bool):
        # looked up at every call, so the function really called is torch's current one
        return self._torch.log_softmax if log else self._torch.softmax

    def softmax(self, X, info, log=False):
        torch = self._torch
        with torch.no_grad():
            return self._numpy(self._fn(log)(self._tensor(X, info), dim=-1))

    def jacobian(self, X, info, log=False):
        # one backward pass through n copies of x: copy i's output weighted by the unit vector
        # e_i, summed, so copy i's gradient is e_i^T J, row i of J. The same backward formula
        # as torch.func.jacrev under vmap, so the same numbers (tests compare them), without
        # torch.func (its first use imports torch._dynamo, ~1.5 s of a fresh process) and
        # without tensor grad_outputs (autograd then imports sympy, ~0.4 s)
        torch = self._torch
        x = self._tensor(X, info)
        rows, n = x.shape
        if rows == 0:
            return np.zeros((0, n, n))
        eye = torch.eye(n, dtype=x.dtype, device=x.device)
        with torch.enable_grad():
            copies = x.unsqueeze(0).expand(n, rows, n).clone().requires_grad_(True)
            s = self._fn(log)(copies, dim=-1)
            (g,) = torch.autograd.grad((s * eye[:, None, :]).sum(), copies)
        J = np.ascontiguousarray(self._numpy(g).transpose(1, 0, 2))  # g[i, r, k] = J_r[i, k]
        return _fix_masked_jacobian(J, X, log, lambda: self.softmax(X, info, False))

    def vjp(self, X, V, info):
        torch = self._torch
        with torch.enable_grad():
            x = self._tensor(X, info).requires_grad_(True)
            s = self._fn(False)(x, dim=-1)
            (g,) = torch.autograd.grad(s, x, grad_outputs=self._tensor(V, info))
        return _fix_masked_vjp(self._numpy(g), X)

    def loss_grad(self, Z, T, info):
        torch = self._torch
        with torch.enable_grad():
            z = self._tensor(Z, info).requires_grad_(True)
            t = self._tensor(T, info)
            loss = -(t * torch.log(z)).sum()
            loss.backward()
        return self._numpy(z.grad)

    def forward64(self, log=False):
        torch = self._torch

        def f(X):
            X = np.asarray(X)
            if np.iscomplexobj(X):
                raise TypeError("torch.softmax takes no complex input")
            with torch.no_grad():
                x = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float64))
                return self._fn(log)(x, dim=-1).numpy()

        return f

    @property
    def fd_source(self) -> str:
        return "torch.softmax (torch.log_softmax for --log) in float64"


# --- jax ------------------------------------------------------------------------------------


class JaxAdapter(Implementation):
    """``jax.nn.softmax`` / ``jax.nn.log_softmax`` on ``jnp.asarray(x, dtype)`` (jax's default
    device), in float64 (``jax_enable_x64`` is switched on), float32, float16 or bfloat16;
    derivatives by ``jax.vmap(jax.jacrev(...))``, ``jax.vjp`` and ``jax.grad`` of
    -sum(t * log(z)), in the same dtype.

    Finite differences differentiate ``jax.nn.softmax`` in float64 with Richardson
    extrapolation (the complex step is not used for jax).
    """

    name = "jax"
    complex_ok = False
    thread_safe = True
    honours_dtype = True  # jax computes and returns arrays of the dtype

    def __init__(self, jax):
        import jax.numpy as jnp  # make_adapter has checked that it imports

        self._jax = jax
        self._jnp = jnp
        self._dtypes = {"float64": jnp.float64, "float32": jnp.float32,
                        "float16": jnp.float16, "bfloat16": jnp.bfloat16}

    def _array(self, X, info: DtypeInfo):
        # jax reads ml_dtypes.bfloat16 numpy arrays natively
        return self._jnp.asarray(_in_dtype(X, info), dtype=self._dtypes[info.name])

    @staticmethod
    def _numpy(a) -> np.ndarray:
        return np.asarray(a).astype(np.float64)

    def _fn(self, log: bool):
        return self._jax.nn.log_softmax if log else self._jax.nn.softmax

    def softmax(self, X, info, log=False):
        return self._numpy(self._fn(log)(self._array(X, info), axis=-1))

    def jacobian(self, X, info, log=False):
        jax, fn = self._jax, self._fn(log)
        J = jax.vmap(jax.jacrev(lambda r: fn(r, axis=-1)))(self._array(X, info))
        return _fix_masked_jacobian(self._numpy(J), X, log,
                                    lambda: self.softmax(X, info, False))

    def vjp(self, X, V, info):
        jax, fn = self._jax, self._fn(False)
        _, pullback = jax.vjp(lambda a: fn(a, axis=-1), self._array(X, info))
        (g,) = pullback(self._array(V, info))
        return _fix_masked_vjp(self._numpy(g), X)

    def loss_grad(self, Z, T, info):
        jax, jnp = self._jax, self._jnp
        t = self._array(T, info)
        g = jax.grad(lambda z: -jnp.sum(t * jnp.log(z)))(self._array(Z, info))
        return self._numpy(g)

    def forward64(self, log=False):
        jnp = self._jnp

        def f(X):
            X = np.asarray(X)
            if np.iscomplexobj(X):
                raise TypeError("the jax adapter's forward takes no complex input")
            return np.asarray(self._fn(log)(jnp.asarray(X, dtype=jnp.float64), axis=-1),
                              dtype=np.float64)

        return f

    @property
    def fd_source(self) -> str:
        return "jax.nn.softmax (jax.nn.log_softmax for --log) in float64"
