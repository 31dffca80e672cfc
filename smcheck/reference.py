"""The exact references, computed with mpmath at ``dps`` digits (scoped; never left changed).

Every step is arranged so the stated precision holds at the extremes:

* x_j - max(x) is formed exactly (``fsub(..., exact=True)``), so |x| up to 1e308 loses nothing;
* the sum is S = 1 + T with T the sum over the non-maximal entries (mpmath's ``fsum`` adds
  exactly), and log S = log1p(T), so the log-softmax of a saturated entry (S = 1 + 1e-300)
  keeps its relative accuracy; likewise 1 - s_max = T / S;
* -inf entries are exact zeros (log: -inf).

Each entry is then correct to a few units in 10^-dps, relative. Results are double-double pairs
(hi, lo), so errors far below one float64 ULP are still measured. Products of such pairs (the
Jacobian's s_i s_k, the loss gradient -t/z) use error-free transformations in float64, exact to
about 2^-104 relative: far beyond what judging any float64 result needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

Progress = Callable[[int], None]


@dataclass
class ExactSoftmax:
    """Exact softmax and log-softmax of rows of float64 inputs, as double-double arrays."""

    s_hi: np.ndarray
    s_lo: np.ndarray
    _y_hi: np.ndarray | None  # log softmax (see y_hi; None until asked for when _y_maker)
    _y_lo: np.ndarray | None
    d: np.ndarray  # x - max(x) rounded to float64 (-inf where masked): for the tolerances
    dps: int
    om_hi: np.ndarray | None = None  # 1 - s_i, without cancellation (when asked for)
    om_lo: np.ndarray | None = None
    engine: str = "mpmath"
    state: tuple | None = field(default=None, repr=False)  # the dd engine's, for shifts
    _y_maker: Callable | None = field(default=None, repr=False)  # computes (y_hi, y_lo)
    precision_note: str | None = field(default=None, repr=False)  # overrides the engine's
    rel_bound: float | None = field(default=None, repr=False)  # the stated relative error

    def _log(self):
        if self._y_hi is None and self._y_maker is not None:
            self._y_hi, self._y_lo = self._y_maker()
            self._y_maker = None
        return self._y_hi, self._y_lo

    @property
    def y_hi(self) -> np.ndarray:
        """log softmax (hi part), computed on first use by the double-double engine."""
        return self._log()[0]

    @property
    def y_lo(self) -> np.ndarray:
        return self._log()[1]

    @property
    def precision(self) -> str:
        if self.precision_note:
            return self.precision_note
        if self.engine == "double-double":
            from .engine import PRECISION

            return PRECISION + ", certified against mpmath"
        return f"{self.engine}, {self.dps} significant digits (relative error below 1e-{self.dps - 2})"


ENGINES = ("auto", "mpmath", "dd", "f64")

#: ``auto`` uses the double-double engine from this many reference entries on (mpmath below:
#: a small input shows its 50 digits, a large one is fast)
AUTO_DD_MIN = 4096


def use_dd(X, engine: str, dense: bool = False) -> bool:
    """Whether ``engine`` means double-double for input X. ``dense``: the reference is the
    Jacobian, n^2 entries per row of n."""
    if engine not in ENGINES:
        from .exceptions import InputError

        raise InputError(f"--engine {engine}: use one of {', '.join(ENGINES)}")
    entries = np.size(X) * (np.shape(X)[-1] if dense and np.ndim(X) else 1)
    return engine in ("dd", "f64") or (engine == "auto" and entries >= AUTO_DD_MIN)


def forward_engine(X, engine: str, dtype: str) -> str:
    """The engine of a forward run: ``auto`` is mpmath below AUTO_DD_MIN entries, and above it
    double-double for float64 results and the float64 tier (:func:`~smcheck.engine.softmax_f64`)
    for float32, float16 and bfloat16 ones. ``f64`` cannot judge float64 results."""
    if engine == "f64" and dtype == "float64":
        from .exceptions import InputError

        raise InputError("--engine f64 judges float32, float16 and bfloat16 results only: "
                         "float64 results need dd or mpmath")
    if engine != "auto":
        use_dd(X, engine)  # validates the name
        return engine
    if not use_dd(X, "auto"):
        return "mpmath"
    return "dd" if dtype == "float64" else "f64"


def _split(v, hi_out, lo_out, i, mpf):
    h = float(v)
    hi_out[i] = h
    if h != 0.0 and abs(h) != float("inf"):
        lo_out[i] = float(v - mpf(h))


class _Row:
    """One row's exact quantities in mpmath: d_i = x_i - max exactly, e_i = exp(d_i),
    T = sum over the non-maximal entries, S = 1 + T, L = log S = log1p(T)."""

    def __init__(self, row: np.ndarray, r: int):
        import mpmath
        from mpmath import mpf

        fin = np.flatnonzero(row > -np.inf)
        if fin.size == 0:
            raise ValueError(f"row {r} has no finite entry: its softmax is undefined")
        self.fin = fin
        self.m = m = int(fin[np.argmax(row[fin])])
        a = mpf(float(row[m]))
        self.d = {int(i): mpmath.fsub(mpf(float(row[i])), a, exact=True) for i in fin}
        self.e = {i: mpmath.exp(dv) for i, dv in self.d.items()}
        self.T = mpmath.fsum(e for i, e in self.e.items() if i != m)
        self.S = 1 + self.T
        self.L = mpmath.log1p(self.T)

    def s(self, i):
        return self.e[i] / self.S

    def one_minus_s(self, i):
        return self.T / self.S if i == self.m else (self.S - self.e[i]) / self.S


def _rows(X):
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    return X, X.shape[0], X.shape[-1]


def exact_softmax(X: np.ndarray, dps: int = 50, progress: Progress | None = None,
                  one_minus: bool = False, engine: str = "mpmath") -> ExactSoftmax:
    """Exact softmax and log-softmax of every row of ``X`` (2-D float64, each row with at
    least one finite entry and no +inf or nan: the caller sets undefined rows aside).
    With ``one_minus``, also 1 - s_i (for the Jacobian's diagonal)."""
    if engine == "f64":
        from .engine import softmax_f64

        ex = softmax_f64(X, one_minus)
        ex.dps = dps
        if progress is not None:
            progress(np.size(X))
        return ex
    if use_dd(X, engine):
        from .engine import softmax_dd

        ex = softmax_dd(X, one_minus)
        ex.dps = dps
        if progress is not None:
            progress(np.size(X))
        return ex
    from mpmath import mp, mpf

    X, rows, n = _rows(X)
    s_hi, s_lo = np.zeros((rows, n)), np.zeros((rows, n))
    y_hi, y_lo = np.full((rows, n), -np.inf), np.zeros((rows, n))
    om_hi = np.ones((rows, n)) if one_minus else None
    om_lo = np.zeros((rows, n)) if one_minus else None
    d64 = np.full((rows, n), -np.inf)
    with mp.workdps(dps):
        for r in range(rows):
            row = X[r]
            R = _Row(row, r)
            with np.errstate(over="ignore"):
                d64[r, R.fin] = row[R.fin] - row[R.m]
            for i in R.e:
                _split(R.s(i), s_hi[r], s_lo[r], i, mpf)
                _split(R.d[i] - R.L, y_hi[r], y_lo[r], i, mpf)
                if one_minus:
                    _split(R.one_minus_s(i), om_hi[r], om_lo[r], i, mpf)
            if progress is not None:
                progress(n)
    return ExactSoftmax(s_hi, s_lo, y_hi, y_lo, d64, dps, om_hi, om_lo)


@dataclass
class ExactVJP:
    """z = s * (v - <v, s>) (double-double), <v, s> per row, and sum_j |v_j| s_j per row."""

    z_hi: np.ndarray
    z_lo: np.ndarray
    dot: np.ndarray  # <v, s>, float64, (rows,)
    dot_str: list  # <v, s> to 17 digits, as text (for reports)
    abs_dot: np.ndarray  # sum_j |v_j| s_j
    exact_zero: list  # per row: indices where v_i = <v, s> to the reference's precision
    softmax: ExactSoftmax


def exact_vjp(X: np.ndarray, V: np.ndarray, dps: int = 50,
              progress: Progress | None = None, engine: str = "mpmath") -> ExactVJP:
    """Exact v J(x) for each row (O(n) per row; J is never formed), with the exact softmax
    computed in the same pass."""
    if use_dd(X, engine):
        from .engine import vjp_dd

        ex = vjp_dd(X, V)
        ex.softmax.dps = dps
        if progress is not None:
            progress(np.size(X))
        return ex
    import mpmath
    from mpmath import mp, mpf

    X, rows, n = _rows(X)
    V = np.atleast_2d(np.asarray(V, dtype=np.float64))
    s_hi, s_lo = np.zeros((rows, n)), np.zeros((rows, n))
    y_hi, y_lo = np.full((rows, n), -np.inf), np.zeros((rows, n))
    d64 = np.full((rows, n), -np.inf)
    z_hi, z_lo = np.zeros((rows, n)), np.zeros((rows, n))
    dot, abs_dot, dot_str, zeros = np.zeros(rows), np.zeros(rows), [], []
    fsum = mpmath.fsum
    with mp.workdps(dps):
        eps = mpf(10) ** (-(dps - 5))
        for r in range(rows):
            row = X[r]
            R = _Row(row, r)
            with np.errstate(over="ignore"):
                d64[r, R.fin] = row[R.fin] - row[R.m]
            s = {i: R.s(i) for i in R.e}
            v = {i: mpf(float(V[r, i])) for i in R.e}
            dv = fsum(v[i] * s[i] for i in s)
            dot[r] = float(dv)
            dot_str.append(mpmath.nstr(dv, 17))
            abs_dot[r] = float(fsum(abs(v[i]) * s[i] for i in s))
            zr = []
            for i in s:
                _split(s[i], s_hi[r], s_lo[r], i, mpf)
                _split(R.d[i] - R.L, y_hi[r], y_lo[r], i, mpf)
                diff = v[i] - dv
                if abs(diff) <= eps * max(abs(v[i]), abs(dv)):
                    zr.append(int(i))
                _split(s[i] * diff, z_hi[r], z_lo[r], i, mpf)
            zeros.append(zr)
            if progress is not None:
                progress(n)
    sm = ExactSoftmax(s_hi, s_lo, y_hi, y_lo, d64, dps)
    return ExactVJP(z_hi, z_lo, dot, dot_str, abs_dot, zeros, sm)


def shifted_softmax(X: np.ndarray, Xs: np.ndarray, c: np.ndarray, base: ExactSoftmax, dps: int,
                    dtype: str, engine: str = "auto", progress: Progress | None = None
                    ) -> ExactSoftmax:
    """The exact softmax of the shifted rows Xs = round(X + c) (rounded to ``dtype``). In
    float64 with the double-double engine it is derived from ``base`` (the reference of X)
    without a second exp (:func:`smcheck.engine.shifted_softmax_dd`); in a narrower dtype
    x + c is rounded to that dtype, not to float64, so it is computed afresh."""
    if base.engine == "double-double" and dtype == "float64" and base.om_hi is None:
        from .engine import shifted_softmax_dd

        exact = shifted_softmax_dd(X, c, base)
        exact.dps = dps
        if progress is not None:
            progress(np.size(Xs))
        return exact
    return exact_softmax(Xs, dps, progress, engine=engine)


def shifted_vjp(X: np.ndarray, Xs: np.ndarray, c: np.ndarray, V: np.ndarray, base: "ExactVJP",
                dps: int, dtype: str, engine: str = "auto") -> "ExactVJP":
    """The exact VJP at Xs = round(X + c), its softmax derived from ``base``'s as
    :func:`shifted_softmax` derives it."""
    if base.softmax.engine == "double-double" and dtype == "float64":
        from .engine import vjp_dd

        return vjp_dd(Xs, V, shifted_softmax(X, Xs, c, base.softmax, dps, dtype))
    return exact_vjp(Xs, V, dps, engine=engine)


def exact_bilinear(X: np.ndarray, V: np.ndarray, U: np.ndarray, dps: int = 50,
                   log: bool = False, engine: str = "mpmath") -> tuple[np.ndarray, np.ndarray]:
    """v^T J u for probe pairs: V, U of shape (rows, k, n); returns (hi, lo) of shape (rows, k).
    Softmax: sum v_i s_i u_i - <v, s><u, s>; log-softmax: <v, u> - (sum v)<s, u>."""
    if use_dd(X, engine):
        from .engine import bilinear_dd

        return bilinear_dd(X, V, U, log)
    import mpmath
    from mpmath import mp, mpf

    X, rows, n = _rows(X)
    k = V.shape[1]
    hi, lo = np.zeros((rows, k)), np.zeros((rows, k))
    with mp.workdps(dps):
        for r in range(rows):
            R = _Row(X[r], r)
            s = {i: R.s(i) for i in R.e}
            for p in range(k):
                v = {i: mpf(float(V[r, p, i])) for i in s}
                u = {i: mpf(float(U[r, p, i])) for i in s}
                us = mpmath.fsum(u[i] * s[i] for i in s)
                if log:
                    val = mpmath.fsum(v[i] * u[i] for i in s) - mpmath.fsum(v.values()) * us
                else:
                    vs = mpmath.fsum(v[i] * s[i] for i in s)
                    val = mpmath.fsum(v[i] * s[i] * u[i] for i in s) - vs * us
                _split(val, hi[r], lo[r], p, mpf)
    return hi, lo


# --- double-double products (the arithmetic lives in engine.py) ------------------------------


def dd_mul(ah, al, bh, bl):
    """(ah + al)(bh + bl) as a double-double, relative error about 2^-104; where the product
    is not finite, its float64 value."""
    from .engine import dd_mul as mul

    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        hi, lo = mul(ah, al, bh, bl)
        p = ah * bh
        bad = ~np.isfinite(hi)
        return np.where(bad, p, hi), np.where(bad, 0.0, lo)


#: entries of the exact Jacobian formed at a time
STRIP = 2 ** 16


def exact_jacobian(ex: ExactSoftmax, log: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The exact Jacobian of each row, (rows, n, n) double-double, from the exact softmax
    (``ex`` computed with ``one_minus=True``): softmax J_ik = [i=k] s_i - s_i s_k with the
    diagonal s_i (1 - s_i); log-softmax J_ik = [i=k] - s_k with the diagonal 1 - s_k."""
    rows, n = ex.s_hi.shape
    idx = np.arange(n)
    if log:
        hi = np.broadcast_to(-ex.s_hi[:, None, :], (rows, n, n)).copy()
        lo = np.broadcast_to(-ex.s_lo[:, None, :], (rows, n, n)).copy()
        hi[:, idx, idx], lo[:, idx, idx] = ex.om_hi, ex.om_lo
        return hi, lo
    hi, lo = np.empty((rows, n, n)), np.empty((rows, n, n))
    per = max(1, STRIP // max(n, 1))  # rows i of J at a time: the products' temporaries stay small
    for a in range(0, n, per):
        b = slice(a, a + per)
        ph, pl = dd_mul(ex.s_hi[:, b, None], ex.s_lo[:, b, None], ex.s_hi[:, None, :],
                        ex.s_lo[:, None, :])
        np.negative(ph, out=hi[:, b])
        np.negative(pl, out=lo[:, b])
    dh, dl = dd_mul(ex.s_hi, ex.s_lo, ex.om_hi, ex.om_lo)
    hi[:, idx, idx], lo[:, idx, idx] = dh, dl
    return hi, lo


def exact_loss_grad(Z: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-t / z for float64 z and t, as a double-double (hi = fl(-t/z), lo the exact residual
    divided by z); entries with z = 0 are nan (undefined)."""
    from .engine import two_prod

    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        hi = -T / Z
        p, e = two_prod(hi, Z)
        lo = ((-T - p) - e) / Z
        # Veltkamp's split overflows beyond ~1e300: there hi alone (correctly rounded) serves
        ok = np.isfinite(hi) & (Z != 0) & (np.abs(hi) < 1e290) & np.isfinite(lo)
        return np.where(Z != 0, hi, np.nan), np.where(ok, lo, 0.0)


def exact_loss_value(Z: np.ndarray, T: np.ndarray, dps: int = 50) -> list:
    """l(z, t) = -sum t_i log z_i per row, in mpmath; None where some t_i != 0 has z_i <= 0."""
    import mpmath
    from mpmath import mp, mpf

    out = []
    with mp.workdps(dps):
        for z, t in zip(np.atleast_2d(Z), np.atleast_2d(T)):
            if np.any((t != 0) & ~(z > 0)):
                out.append(None)
                continue
            out.append(float(-mpmath.fsum(mpf(float(ti)) * mpmath.log(mpf(float(zi)))
                                          for zi, ti in zip(z, t) if ti != 0)))
    return out


def exact_grad_x(X: np.ndarray, T: np.ndarray, dps: int = 50,
                 engine: str = "mpmath") -> tuple[np.ndarray, np.ndarray]:
    """The gradient of -sum t_i log softmax(x)_i with respect to x: s * sum(t) - t."""
    if use_dd(X, engine):
        from .engine import grad_x_dd

        return grad_x_dd(X, T)
    import mpmath
    from mpmath import mp, mpf

    X, rows, n = _rows(X)
    T = np.atleast_2d(np.asarray(T, dtype=np.float64))
    hi, lo = np.zeros((rows, n)), np.zeros((rows, n))
    with mp.workdps(dps):
        for r in range(rows):
            R = _Row(X[r], r)
            tsum = mpmath.fsum(mpf(float(v)) for v in T[r])
            for i in range(n):
                s = R.s(i) if i in R.e else mpf(0)
                _split(s * tsum - mpf(float(T[r, i])), hi[r], lo[r], i, mpf)
    return hi, lo
