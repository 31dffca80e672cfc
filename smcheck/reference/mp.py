"""The exact references in mpmath, computed at ``dps`` digits (scoped; never left changed).

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

import numpy as np

from .exact import ExactSoftmax, ExactVJP, Progress


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


def softmax_mp(X: np.ndarray, dps: int = 50, progress: Progress | None = None,
               one_minus: bool = False) -> ExactSoftmax:
    """Exact softmax and log-softmax of every row of ``X`` (2-D float64, each row with at
    least one finite entry and no +inf or nan: the caller sets undefined rows aside).
    With ``one_minus``, also 1 - s_i (for the Jacobian's diagonal)."""
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


def vjp_mp(X: np.ndarray, V: np.ndarray, dps: int = 50,
           progress: Progress | None = None) -> ExactVJP:
    """Exact v J(x) for each row (O(n) per row; J is never formed), with the exact softmax
    computed in the same pass."""
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


def bilinear_mp(X: np.ndarray, V: np.ndarray, U: np.ndarray, dps: int = 50,
                log: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """v^T J u for probe pairs: V, U of shape (rows, k, n); returns (hi, lo) of shape (rows, k).
    Softmax: sum v_i s_i u_i - <v, s><u, s>; log-softmax: <v, u> - (sum v)<s, u>."""
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


def loss_value_mp(Z: np.ndarray, T: np.ndarray, dps: int = 50) -> list:
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


def grad_x_mp(X: np.ndarray, T: np.ndarray, dps: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """The gradient of -sum t_i log softmax(x)_i with respect to x: s * sum(t) - t."""
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
