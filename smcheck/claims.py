"""The ``claims`` command: the derivation's identities, verified in mpmath at ``dps`` digits.

Each claim of the derivation (SPEC "Check names", command ``claims``) is checked on every row of
x whose softmax is defined. The derivatives are never taken from the formulas they are compared
with: they come from the complex-step method, Im f(x + i h e_k) / h, evaluated in mpmath complex
arithmetic. Its imaginary parts are formed by products and quotients only, never by subtracting
two nearly equal values, so each derivative carries the working precision's relative accuracy,
and its truncation error, about h^2 relative, is far below 10^-dps for h = 10^-(dps+5). The
working precision is therefore dps + GUARD_DIGITS, not 2 dps: the discrepancies land at a unit
in 10^-(dps+10) and move to 10^-(dps+60) with 60 guard digits, so nothing else limits them.

A derivative column costs O(n) mpmath operations; a row with more than MAX_COLUMNS finite
coordinates is checked on MAX_COLUMNS columns k spread evenly (each over all of its entries i),
and the check says so in its notes.

Every quantity is judged relative to its natural size (the ``scale`` of each claim, listed in
its tolerance): a column of J is proportional to s_k, z_k to s_k, the loss gradient to 1 / z_k.
A check relative to 1 would pass vacuously on coordinates whose probability is below 10^-dps;
relative to its size, a wrong formula shows on them too. The verdict of each claim is

    discrepancy = max over entries |actual - claimed| / scale  <=  10^-(dps-5).

In each CheckResult, ``measured`` and ``max_rel_err`` are that discrepancy, ``max_abs_err`` the
largest unscaled |actual - claimed|; as floats both may underflow to 0.0, so ``measured`` and
``details["discrepancy"]`` carry it as mpmath text (e.g. "1.2e-61").

The formulas under test (``jacobian_formula``, ``vjp_formula``, ...) and the functions whose
derivatives are taken (``softmax``, ``log_softmax``, ``loss``) are module-level functions of
mpmath lists, so a test can replace one and see its claim fail.

-inf entries of x are masked coordinates with probability exactly 0: every claim is evaluated
on the finite coordinates of the row, and indices are reported in the row's own numbering.
"""

from __future__ import annotations

import math

import numpy as np

from .claim_results import CLAIMS, SCALES, Tally, claim_result, mp_text
from .exceptions import InputError
from .results import Report

#: Digits carried beyond ``dps``: the discrepancies land near 10^-(dps+8), far below the
#: allowance 10^-(dps-5), so the verdict never depends on the last digits.
GUARD_DIGITS = 10
#: Columns of the derivative evaluated per row; each costs O(n) mpmath operations.
MAX_COLUMNS = 32
#: Coordinates k for which the zero condition's v' is constructed, per row.
MAX_ZERO_K = 16
#: Constructed examples listed in the zero condition's details.
SHOWN = 5
#: Non-trivial shifts for shift_invariance (besides -max(x)): both signs, large and irrational.
SHIFTS = (1000.0, -1000.0, math.pi, 1e6, -1e6)


# --- the functions whose derivatives are taken (mpf or mpc entries) -------------------------

def softmax(x):
    """exp(x_i) / sum_j exp(x_j), as written: mpmath needs no shift to avoid overflow."""
    import mpmath

    e = [mpmath.exp(xi) for xi in x]
    S = mpmath.fsum(e)
    return [ei / S for ei in e]


def log_softmax(x):
    """x_i - log sum_j exp(x_j)."""
    import mpmath

    L = _log(mpmath.fsum(mpmath.exp(xi) for xi in x))
    return [xi - L for xi in x]


def loss(z, t):
    """l(z, t) = -sum_i t_i log z_i."""
    import mpmath

    return -mpmath.fsum(ti * _log(zi) for zi, ti in zip(z, t))


def _log(w):
    """The principal log, log|w| + i arg w. mpmath's own complex log sizes an addition by the
    exponents of w's parts: for z_k = 10^-434294 (x_k - max x = -1e6) it works through
    millions of bits, and beyond |x_k - max x| ~ 1e15 it runs out of memory."""
    import mpmath

    if isinstance(w, mpmath.mpc):
        return mpmath.mpc(mpmath.log(abs(w)), mpmath.arg(w))
    return mpmath.log(w)


# --- the formulas under test -------------------------------------------------------------

def jacobian_formula(s, k):
    """Column k of J = diag(s) - s s^T: J[i,k] = [i=k] s_k - s_i s_k."""
    return [(s[k] if i == k else 0) - si * s[k] for i, si in enumerate(s)]


def log_softmax_jacobian_formula(s, k):
    """Column k of J_log = I - 1 s^T: J_log[i,k] = [i=k] - s_k."""
    return [(1 if i == k else 0) - s[k] for i in range(len(s))]


def vjp_formula(s, v):
    """z = v^T J = s * (v - <v, s>)."""
    import mpmath

    vs = mpmath.fdot(v, s)
    return [si * (vi - vs) for si, vi in zip(s, v)]


def loss_gradient_formula(z, t):
    """D_z l = -t / z."""
    return [-ti / zi for zi, ti in zip(z, t)]


def balancing_value(s, v, k):
    """The v_k that makes z_k vanish: v_k = <v, s> solved for v_k, i.e.
    sum_{j != k} v_j s_j / sum_{j != k} s_j (1 - s_k summed, not subtracted: no cancellation
    when s_k is close to 1)."""
    import mpmath

    rest = [j for j in range(len(s)) if j != k]
    return mpmath.fdot([v[j] for j in rest], [s[j] for j in rest]) / mpmath.fsum(s[j] for j in rest)


# --- the machinery -----------------------------------------------------------------------

def _complex_step(f, x, k, h):
    """Im f(x + i h e_k) / h, entry by entry: column k of f's derivative."""
    import mpmath

    w = list(x)
    w[k] = mpmath.mpc(x[k], h)
    return [mpmath.im(y) / h for y in f(w)]


def _columns(n: int, k_max: int) -> list[int]:
    """All of range(n) up to MAX_COLUMNS; beyond, MAX_COLUMNS - 1 spread evenly plus k_max
    (the largest probability's, where J's diagonal s_k (1 - s_k) cancels most)."""
    if n <= MAX_COLUMNS:
        return list(range(n))
    spread = np.unique(np.round(np.linspace(0, n - 1, MAX_COLUMNS - 1)).astype(int))
    return sorted(set(int(k) for k in spread) | {k_max})


class _Row:
    """One defined row in mpmath: its finite coordinates, s, v, t and (lazily) J's columns."""

    def __init__(self, r, x, v, t, h):
        import mpmath
        from mpmath import mpf

        self.r = r
        self.fin = np.flatnonzero(x > -np.inf)
        self.x = [mpf(float(x[i])) for i in self.fin]
        m = max(self.x)
        # exact differences: |x| up to 1e308 loses nothing
        self.d = [mpmath.fsub(xi, m, exact=True) for xi in self.x]
        e = [mpmath.exp(di) for di in self.d]
        S = mpmath.fsum(e)
        self.s = [ei / S for ei in e]
        self.v = [mpf(float(v[i])) for i in self.fin]
        self.t = [mpf(float(t[i])) for i in self.fin]
        self.h = h
        self.n = len(self.fin)
        self.cols = _columns(self.n, int(np.argmax([float(di) for di in self.d])))
        self._J = {}

    def J(self, k):
        """Column k of the complex-step derivative of softmax at x (shifted by its max)."""
        if k not in self._J:
            self._J[k] = _complex_step(softmax, self.d, k, self.h)
        return self._J[k]

    def z(self, k, v=None):
        """(v^T J)_k with the complex-step J."""
        import mpmath

        return mpmath.fdot(self.v if v is None else v, self.J(k))

    def idx(self, i):
        return int(self.fin[i])


# --- the claims, each over all rows ----------------------------------------------------------

def _shift_invariance(rows, tally):
    import mpmath
    from mpmath import mpf

    for R in rows:
        ref = softmax(R.x)
        shifts = [mpf(c) for c in SHIFTS] + [-max(R.x)]
        for c in shifts:
            # x + c exactly: rounding it would move softmax by |c| 10^-dps
            sc = softmax([mpmath.fadd(xi, c, exact=True) for xi in R.x])
            for i in range(R.n):
                tally.add(R.r, R.idx(i), sc[i], ref[i], ref[i],
                          f"softmax(x + {mpmath.nstr(c, 6)})_i vs softmax(x)_i")


def _jacobian_formula(rows, tally):
    for R in rows:
        for k in R.cols:
            tally.add_many(R.r, [[R.idx(i), R.idx(k)] for i in range(R.n)], R.J(k),
                           jacobian_formula(R.s, k), R.s[k], "complex-step J vs diag(s) - s s^T")
        if len(R.cols) < R.n:
            tally.subset.append((R.r, len(R.cols), R.n))


def _jacobian_symmetry(rows, tally):
    for R in rows:
        for a, i in enumerate(R.cols):
            for k in R.cols[a + 1:]:
                tally.add(R.r, [R.idx(i), R.idx(k)], R.J(k)[i], R.J(i)[k], R.s[i] * R.s[k],
                          "J[i,k] vs J[k,i]")
        if len(R.cols) < R.n:
            tally.subset.append((R.r, len(R.cols), R.n))


def _log_softmax_jacobian(rows, tally):
    for R in rows:
        for k in R.cols:
            actual = _complex_step(log_softmax, R.d, k, R.h)
            claimed = log_softmax_jacobian_formula(R.s, k)
            what = "complex-step J_log vs [i=k] - s_k"
            off = [i for i in range(R.n) if i != k]
            tally.add_many(R.r, [[R.idx(i), R.idx(k)] for i in off], [actual[i] for i in off],
                           [claimed[i] for i in off], R.s[k], what)
            # on the diagonal 1 - s_k, which for s_k near 1 carries an absolute (not relative)
            # error of a unit in 10^-wp
            tally.add(R.r, [R.idx(k), R.idx(k)], actual[k], claimed[k], 1, what)
        if len(R.cols) < R.n:
            tally.subset.append((R.r, len(R.cols), R.n))


def _v_scale(R):
    return max([1] + [abs(vi) for vi in R.v])


def _vjp_formula(rows, tally):
    import mpmath

    for R in rows:
        sv = _v_scale(R)
        claimed = vjp_formula(R.s, R.v)
        for k in R.cols:
            tally.add(R.r, R.idx(k), R.z(k), claimed[k], R.s[k] * sv,
                      "complex-step z_k vs s_k (v_k - <v, s>)")
        # sum_k z_k is the derivative of <v, s> along (1, ..., 1): one complex step, all of x
        ones = [mpmath.mpc(di, R.h) for di in R.d]
        along = mpmath.im(mpmath.fdot(R.v, softmax(ones))) / R.h
        tally.add(R.r, None, along, 0, sv, "sum_i z_i (complex step along 1)")
        tally.add(R.r, None, mpmath.fsum(claimed), 0, sv, "sum_i z_i of the formula")
        if len(R.cols) < R.n:
            tally.subset.append((R.r, len(R.cols), R.n))


def _loss_gradient(rows, tally):
    for R in rows:
        z, t = R.s, R.t
        claimed = loss_gradient_formula(z, t)
        for k in R.cols:
            # h relative to z_k: log's derivatives grow like 1/z^j, so the truncation error
            # is (h/z_k)^2 relative
            hk = R.h * z[k]
            actual = _complex_step(lambda w, t=t: [loss(w, t)], z, k, hk)[0]
            tally.add(R.r, R.idx(k), actual, claimed[k], max(1, abs(t[k])) / z[k],
                      "complex-step dl/dz_k vs -t_k / z_k")
        if len(R.cols) < R.n:
            tally.subset.append((R.r, len(R.cols), R.n))


def _zero_condition(rows, tally, tol, shown):
    import mpmath

    for R in rows:
        sv = _v_scale(R)
        if min(R.s) <= 0:
            tally.failures.append(f"row {R.r}: a probability is 0 on a finite coordinate")
        if R.n > 1:
            ks = R.cols if len(R.cols) <= MAX_ZERO_K else [
                R.cols[int(j)] for j in np.unique(np.round(
                    np.linspace(0, len(R.cols) - 1, MAX_ZERO_K)).astype(int))]
            for k in ks:
                v2 = list(R.v)
                v2[k] = balancing_value(R.s, R.v, k)
                vs2 = mpmath.fdot(v2, R.s)
                z2 = R.z(k, v2)
                tally.add(R.r, R.idx(k), z2, 0, R.s[k] * sv, "z_k with v_k balanced to <v, s>")
                if len(shown) < SHOWN:
                    shown.append({"row": R.r, "k": R.idx(k), "v_k": mpmath.nstr(v2[k], 20),
                                  "<v,s>": mpmath.nstr(vs2, 20), "z_k": mp_text(z2)})
        # the converse, on the given v: z_i = s_i (v_i - <v, s>), s_i > 0, so z_i != 0 (and
        # has the sign of v_i - <v, s>) wherever v_i differs from <v, s>
        claimed = vjp_formula(R.s, R.v)
        vs = mpmath.fdot(R.v, R.s)
        for i in R.cols:
            zi = R.z(i)
            tally.add(R.r, R.idx(i), zi, claimed[i], R.s[i] * sv,
                      "complex-step z_i vs s_i (v_i - <v, s>)")
            gap = R.v[i] - vs
            if abs(gap) > tol * sv and (zi == 0 or (zi > 0) != (gap > 0)):
                tally.failures.append(
                    f"row {R.r}[{R.idx(i)}]: v_i - <v, s> = {mp_text(gap)} but z_i = {mp_text(zi)}")
        if len(R.cols) < R.n:
            tally.subset.append((R.r, len(R.cols), R.n))


# --- the command -------------------------------------------------------------------------

def _names(claim) -> list[str]:
    if claim is None:
        return list(CLAIMS)
    asked = [claim] if isinstance(claim, str) else list(claim)
    asked = [a.strip() for c in asked for a in str(c).split(",") if a.strip()]
    for a in asked:
        if a not in CLAIMS:
            raise InputError(f"unknown claim '{a}' (claims: {', '.join(CLAIMS)})")
    return [c for c in CLAIMS if c in asked] or list(CLAIMS)


def _vector(name, given, drawn, shape):
    """The given v or t, one row for all or one per row of x; else the drawn one."""
    if given is None:
        return drawn, "random"
    try:
        a = np.asarray(given, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: not an array of numbers ({exc})") from None
    if a.ndim == 1 and a.shape[0] == shape[1]:
        a = np.broadcast_to(a, shape)
    elif a.shape != shape:
        raise InputError(f"{name} has shape {list(a.shape)}; expected [{shape[1]}] or "
                         f"{list(shape)}, like x")
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} has a non-finite entry; every entry must be finite")
    return a, "given"


def _undefined(X):
    undefined, defined = [], []
    for r, row in enumerate(X):
        reason = None
        if np.any(np.isnan(row)):
            reason = f"x_{int(np.flatnonzero(np.isnan(row))[0])} = nan"
        elif np.any(row == np.inf):
            reason = f"x_{int(np.flatnonzero(row == np.inf)[0])} = +inf"
        elif np.all(row == -np.inf):
            reason = "every entry is -inf (fully masked)"
        if reason:
            undefined.append({"row": r, "reason": f"softmax undefined: {reason}"})
        else:
            defined.append(r)
    return defined, undefined


def run_claims(x, *, claim: str | list[str] | None = None, dps: int = 50, v=None, t=None,
               seed: int = 0) -> Report:
    """Verify the derivation's claims (``CLAIMS``) on every row of ``x`` with a defined softmax.

    ``v`` (the VJP's direction) and ``t`` (the loss's targets) are one row for all rows or one
    per row; when absent they are drawn from ``np.random.default_rng(seed)`` (v standard
    normal, t uniform in [0.1, 1)). ``claim`` selects claims by name; they run in ``CLAIMS``
    order. mpmath's global precision is left as it was.
    """
    import mpmath

    names = _names(claim)
    try:
        whole = int(dps) == dps and not isinstance(dps, bool)
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole or not 20 <= int(dps) <= 100000:
        raise InputError(f"--dps {dps}: use 20 to 100000 digits (the claims are judged to "
                         "10^-(dps-5); below 20 digits that is no finer than float64)")
    dps = int(dps)
    try:
        x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"x: not an array of numbers ({exc})") from None
    X = np.atleast_2d(x)
    if X.ndim != 2 or X.shape[-1] == 0 or X.shape[0] == 0:
        raise InputError(f"expected a non-empty vector or 2-D batch, got shape {list(x.shape)}")
    rng = np.random.default_rng(seed)
    # both always drawn, v first: t is the same whether or not v is given
    v_drawn = rng.standard_normal(X.shape)
    t_drawn = rng.uniform(0.1, 1.0, X.shape)
    V, v_src = _vector("v", v, v_drawn, X.shape)
    T, t_src = _vector("t", t, t_drawn, X.shape)
    defined, undefined = _undefined(X)

    wp = dps + GUARD_DIGITS
    checks, notes = [], []
    with mpmath.workdps(wp):
        tol = mpmath.mpf(10) ** -(dps - 5)
        h = mpmath.mpf(10) ** -(dps + 5)
        rows = [_Row(r, X[r], V[r], T[r], h) for r in defined]
        masked = any(R.n < X.shape[1] for R in rows)
        common = ["-inf entries are masked coordinates (probability 0): claims are checked on "
                  "the finite ones"] if masked else []
        for name in names if rows else []:
            tally = Tally()
            extra, own = {}, []
            if name == "shift_invariance":
                _shift_invariance(rows, tally)
                extra["shifts"] = [*SHIFTS, "-max(x)"]
            elif name == "jacobian_formula":
                _jacobian_formula(rows, tally)
            elif name == "jacobian_symmetry":
                _jacobian_symmetry(rows, tally)
            elif name == "log_softmax_jacobian":
                _log_softmax_jacobian(rows, tally)
            elif name == "vjp_formula":
                _vjp_formula(rows, tally)
            elif name == "loss_gradient":
                _loss_gradient(rows, tally)
            else:
                shown = []
                _zero_condition(rows, tally, tol, shown)
                extra["constructed"] = shown
                extra["min_s"] = mp_text(min(min(R.s) for R in rows))
                if any(R.n == 1 for R in rows):
                    own.append("a row with one finite coordinate has s = 1 there: z = 0 for "
                               "every v, nothing to construct")
            if name != "shift_invariance":
                extra["h"] = mp_text(h)
            checks.append(claim_result(name, tally, tol, dps, wp, SCALES[name], extra,
                                  common + own))
    if not rows:
        notes.append("no row has a defined softmax: nothing to check")
    return Report(
        command="claims", impl="mpmath", dtype="mpmath", dps=dps,
        shape=list(X.shape), checks=checks, reference=f"mpmath, {dps} significant digits",
        undefined_rows=undefined, notes=notes,
        options={"claims": names, "seed": seed, "v": v_src, "t": t_src})
