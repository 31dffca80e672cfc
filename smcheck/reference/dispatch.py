"""The one place that chooses the reference engine, and the exact quantities through it.

Engines: ``mpmath`` (:mod:`.mp`, any precision, tens of microseconds an entry),
``dd`` (:mod:`.dd`, double-double, certified to 2^-100 against mpmath) and ``f64`` (the float64
tier of :mod:`.dd`, for results narrower than float64). ``auto`` is mpmath below
:data:`AUTO_DD_MIN` reference entries (a small input shows its 50 digits) and double-double
above; a forward run of a narrower dtype takes the float64 tier. The choice is made once, on
the whole input (:func:`choose_engine`), never per chunk of rows.
"""

from __future__ import annotations

import numpy as np

from ..exceptions import InputError
from . import dd, mp
from .exact import ExactSoftmax, ExactVJP, Progress

ENGINES = ("auto", "mpmath", "dd", "f64")

#: ``auto`` uses the double-double engine from this many reference entries on (mpmath below:
#: a small input shows its 50 digits, a large one is fast)
AUTO_DD_MIN = 4096

#: the commands whose reference is the Jacobian: n^2 entries a row of n
DENSE_COMMANDS = ("jacobian",)


def use_dd(X, engine: str, dense: bool = False) -> bool:
    """Whether ``engine`` means double-double for input X. ``dense``: the reference is the
    Jacobian, n^2 entries per row of n."""
    if engine not in ENGINES:
        raise InputError(f"--engine {engine}: use one of {', '.join(ENGINES)}")
    entries = np.size(X) * (np.shape(X)[-1] if dense and np.ndim(X) else 1)
    return engine in ("dd", "f64") or (engine == "auto" and entries >= AUTO_DD_MIN)


def forward_engine(X, engine: str, dtype: str) -> str:
    """The engine of a forward run: ``auto`` is mpmath below AUTO_DD_MIN entries, and above it
    double-double for float64 results and the float64 tier (:func:`.dd.softmax_f64`)
    for float32, float16 and bfloat16 ones. ``f64`` cannot judge float64 results."""
    if engine == "f64" and dtype == "float64":
        raise InputError("--engine f64 judges float32, float16 and bfloat16 results only: "
                         "float64 results need dd or mpmath")
    if engine != "auto":
        use_dd(X, engine)  # validates the name
        return engine
    if not use_dd(X, "auto"):
        return "mpmath"
    return "dd" if dtype == "float64" else "f64"


def choose_engine(X, engine: str, dtype: str, command: str) -> str:
    """The engine for ``command`` on the whole input X: "mpmath", "dd" or "f64" (a concrete
    engine is validated and kept). The only place an engine is chosen."""
    if command == "forward":
        return forward_engine(X, engine, dtype)
    if engine == "f64":
        raise InputError("--engine f64 (the float64 tier) applies to forward only: use dd or "
                         "mpmath for the derivatives")
    dense = command in DENSE_COMMANDS
    return "dd" if use_dd(np.empty(0) if np.size(X) == 0 else X, engine, dense) else "mpmath"


def _tick(progress: Progress | None, X) -> None:
    if progress is not None:
        progress(np.size(X))


def exact_softmax(X: np.ndarray, dps: int = 50, progress: Progress | None = None,
                  one_minus: bool = False, engine: str = "mpmath") -> ExactSoftmax:
    """Exact softmax and log-softmax of every row of ``X`` (2-D float64, each row with at
    least one finite entry and no +inf or nan: the caller sets undefined rows aside).
    With ``one_minus``, also 1 - s_i (for the Jacobian's diagonal)."""
    if engine == "f64" or use_dd(X, engine):
        ex = (dd.softmax_f64 if engine == "f64" else dd.softmax_dd)(X, one_minus)
        ex.dps = dps
        _tick(progress, X)
        return ex
    return mp.softmax_mp(X, dps, progress, one_minus)


def exact_vjp(X: np.ndarray, V: np.ndarray, dps: int = 50,
              progress: Progress | None = None, engine: str = "mpmath") -> ExactVJP:
    """Exact v J(x) for each row (O(n) per row; J is never formed), with the exact softmax
    computed in the same pass."""
    if use_dd(X, engine):
        ex = dd.vjp_dd(X, V)
        ex.softmax.dps = dps
        _tick(progress, X)
        return ex
    return mp.vjp_mp(X, V, dps, progress)


def exact_bilinear(X: np.ndarray, V: np.ndarray, U: np.ndarray, dps: int = 50,
                   log: bool = False, engine: str = "mpmath") -> tuple[np.ndarray, np.ndarray]:
    """v^T J u for probe pairs: V, U of shape (rows, k, n); returns (hi, lo) of shape (rows, k).
    Softmax: sum v_i s_i u_i - <v, s><u, s>; log-softmax: <v, u> - (sum v)<s, u>."""
    if use_dd(X, engine):
        return dd.bilinear_dd(X, V, U, log)
    return mp.bilinear_mp(X, V, U, dps, log)


def exact_grad_x(X: np.ndarray, T: np.ndarray, dps: int = 50, engine: str = "mpmath",
                 sm: ExactSoftmax | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The gradient of -sum t_i log softmax(x)_i with respect to x: s * sum(t) - t. ``sm``:
    the exact softmax of X, used where it is the double-double engine's own (not recomputed;
    one derived from a shift's, with a larger stated bound, is not)."""
    if use_dd(X, engine):
        known = (sm if sm is not None and sm.engine == "double-double" and sm.rel_bound is None
                 else None)
        return dd.grad_x_dd(X, T, known)
    return mp.grad_x_mp(X, T, dps)


def exact_loss_value(Z: np.ndarray, T: np.ndarray, dps: int = 50) -> list:
    """l(z, t) = -sum t_i log z_i per row, in mpmath; None where some t_i != 0 has z_i <= 0."""
    return mp.loss_value_mp(Z, T, dps)


def shifted_softmax(X: np.ndarray, Xs: np.ndarray, c: np.ndarray, base: ExactSoftmax, dps: int,
                    dtype: str, engine: str = "auto", progress: Progress | None = None
                    ) -> ExactSoftmax:
    """The exact softmax of the shifted rows Xs = round(X + c) (rounded to ``dtype``). In
    float64 with the double-double engine it is derived from ``base`` (the reference of X)
    without a second exp (:func:`.dd.shifted_softmax_dd`); in a narrower dtype
    x + c is rounded to that dtype, not to float64, so it is computed afresh."""
    if base.engine == "double-double" and dtype == "float64" and base.om_hi is None:
        exact = dd.shifted_softmax_dd(X, c, base)
        exact.dps = dps
        _tick(progress, Xs)
        return exact
    return exact_softmax(Xs, dps, progress, engine=engine)


def shifted_vjp(X: np.ndarray, Xs: np.ndarray, c: np.ndarray, V: np.ndarray, base: ExactVJP,
                dps: int, dtype: str, engine: str = "auto") -> ExactVJP:
    """The exact VJP at Xs = round(X + c), its softmax derived from ``base``'s as
    :func:`shifted_softmax` derives it."""
    if base.softmax.engine == "double-double" and dtype == "float64":
        return dd.vjp_dd(Xs, V, shifted_softmax(X, Xs, c, base.softmax, dps, dtype))
    return exact_vjp(Xs, V, dps, engine=engine)
