"""Checks of the derivative commands (jacobian, vjp, loss), registered in the one registry of
:mod:`smcheck.checks`. Each case object holds what its checks compare; the checks return
results and never print."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import finite_diff
from .checks import MERGE, _score, comparison_result, fmt, register, top_entries, worst_failure
from .dtypes import DtypeInfo
from .errors_ulp import (Comparison, Overrides, apply_overrides, compare, jacobian_tolerance,
                         quotient_tolerance, summation_allowance, vjp_tolerance)
from .exceptions import ImplementationError, InputError
from .impls import Implementation
from .reference import ExactSoftmax, exact_bilinear, exact_jacobian
from .results import LIST_MAX, CheckResult


def fd_result(name: str, statement: str, measured_vals, fd: "list[finite_diff.FDEstimate]",
              allowed, rows, index_of=None, mask=None, abs_resolution: float = 0.0
              ) -> CheckResult:
    """A finite-difference check: computed values against FD estimates, each allowed the
    estimate's own error bound plus the computed value's allowance. ``mask`` leaves entries
    out (masked coordinates); ``abs_resolution`` is an absolute error of the function's own
    float64 values (log-softmax: log S is rounded, so about eps even where log s_i = 0),
    which a real-step difference divides by its step."""
    computed = np.asarray(measured_vals, dtype=np.float64)
    # every float64 value of f is a multiple of the smallest subnormal, so an estimate
    # (f(x + h) - f(x - h)) / 2h or Im f(x + ih) / h cannot resolve less than eta / h; a real
    # step also cannot resolve the function's absolute rounding divided by h
    floors = [(2 * 5e-324 + (abs_resolution if f.method != "complex" else 0.0))
              / _smallest_step(f.step) for f in fd]
    if len(fd) == 1:  # one estimate (a dense Jacobian of one row): views, no copies
        est = np.asarray(fd[0].value, dtype=np.float64).reshape(computed.shape)
        err_fd = np.asarray(fd[0].error, dtype=np.float64).reshape(computed.shape)
        floor = floors[0]
    else:
        est = np.asarray([f.value for f in fd], dtype=np.float64).reshape(computed.shape)
        err_fd = np.asarray([np.asarray(f.error, dtype=np.float64) + fl
                             for f, fl in zip(fd, floors)]).reshape(computed.shape)
        floor = 0.0
    allowed = np.asarray(allowed, dtype=np.float64)
    allowed = (allowed.reshape(computed.shape) if allowed.size == computed.size else
               np.broadcast_to(allowed, computed.shape))
    m = _fd_maxima(computed, est, err_fd, floor, allowed, mask)
    pos = np.unravel_index(m["flat"], computed.shape) if computed.size else (0,)
    diff_at, allow_at, err_at = m["diff_at"], m["allow_at"], m["err_at"]
    passed = m["passed"]
    # the method and step of the worst entry's estimate (one estimate per row, or one in all)
    f0 = fd[int(pos[0])] if len(fd) > 1 and len(fd) == computed.shape[0] else fd[0]
    worst = {"row": int(rows[pos[0]]), "index": index_of(pos) if index_of else None}
    res = CheckResult(
        name="finite_difference", passed=passed, max_abs_err=m["max_diff"],
        max_rel_err=m["max_rel"], max_ulp=None,
        tolerance={"formula": "|computed - FD| <= FD error bound + the computed value's allowance",
                   "method": f0.method, "step": float(np.max(f0.step)),
                   "expected_accuracy": f0.expected_accuracy, "atol": m["max_allow"]},
        worst=worst, measured=_fd_words(m["max_diff"], f0.method),
        allowed=f"{fmt(allow_at)} (FD error {fmt(err_at)})", statement=statement,
        score=m["ratio_at"])
    res.details["fd"] = {"method": f0.method, "expected_accuracy": f0.expected_accuracy,
                         "max_fd_error_bound": m["max_err"]}
    if not passed:
        c_at = computed[pos] if mask is None or mask[pos] else 0.0
        e_at = est[pos] if mask is None or mask[pos] else 0.0
        res.failures.append(
            f"row {rows[pos[0]]}{'' if worst['index'] is None else ', entry ' + str(worst['index'])}:"
            f" computed {fmt(c_at, 10)}, finite difference {fmt(e_at, 10)} ± "
            f"{fmt(err_at)} ({f0.method}), difference {fmt(diff_at)} > allowed "
            f"{fmt(allow_at)}")
    return res


def _merge_fd(out: CheckResult, parts: list[CheckResult], top: int) -> None:
    out.measured = _fd_words(out.max_abs_err, out.tolerance["method"])


def _fd_words(max_diff: float, method: str) -> str:
    return f"max |c - FD| = {fmt(max_diff)} ({method})"


MERGE["finite_difference"] = _merge_fd


def _fd_block(c, est, err, floor, allowed, mask):
    """The element-wise part of :func:`fd_result` on one block: (diff, allow, ratio, rel,
    err_fd)."""
    err = err + floor
    if mask is not None:
        c, est = np.where(mask, c, 0.0), np.where(mask, est, 0.0)
        err = np.where(mask, err, 0.0)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        diff = np.abs(c - est)
        if np.isnan(diff).any():
            diff = np.where(np.isnan(diff), np.inf, diff)
        allow = err + allowed
        ratio = diff / allow
        if not (allow > 0).all():
            ratio = np.where(allow > 0, ratio, np.where(diff > 0, np.inf, 0))
        ae = np.abs(est)
        rel = diff / ae
        if not (ae > 0).all():
            rel = np.where(ae > 0, rel, diff)
    return diff, allow, np.nan_to_num(ratio, nan=np.inf, posinf=np.inf), rel, err


def _fd_maxima(computed, est, err_fd, floor, allowed, mask) -> dict:
    """The reductions :func:`fd_result` reports, a block of rows at a time (the arrays as
    2-D (N, last axis) views): maxima, whether every entry passes, and the worst entry (the
    first largest ratio) with its difference, allowance and FD error."""
    from .blocks import blocks

    out = {"max_diff": 0.0, "max_rel": 0.0, "max_allow": 0.0, "max_err": 0.0, "passed": True,
           "flat": 0, "diff_at": 0.0, "allow_at": 0.0, "err_at": 0.0, "ratio_at": 0.0}
    if computed.size == 0:
        return out
    m = computed.shape[-1]
    views = [np.reshape(a, (-1, m)) for a in (computed, est, err_fd, allowed)]
    mk = None if mask is None else np.reshape(np.broadcast_to(mask, computed.shape), (-1, m))
    maxima = {k: [] for k in ("max_diff", "max_rel", "max_allow", "max_err")}
    best = -1.0
    for b in blocks(views[0].shape[0], m):  # in row-major order: the first largest stays first
        diff, allow, ratio, rel, err = _fd_block(*(v[b] for v in views[:3]), floor, views[3][b],
                                                 None if mk is None else mk[b])
        for k, arr in (("max_diff", diff), ("max_rel", rel), ("max_allow", allow),
                       ("max_err", err)):
            maxima[k].append(np.max(arr))
        out["passed"] = out["passed"] and bool(np.all(diff <= allow))
        j = int(np.argmax(ratio))
        if ratio.flat[j] > best:  # the first largest ratio over the whole array
            best = ratio.flat[j]
            jr, jc = divmod(j, ratio.shape[1])
            out.update(flat=(b[0].start + jr) * m + (b[1].start or 0) + jc,
                       diff_at=diff.flat[j], allow_at=allow.flat[j],
                       err_at=err.flat[j], ratio_at=float(best))
    out.update({k: float(np.max(np.array(v))) for k, v in maxima.items()})
    return out


def _fd(call, impl, *args):
    try:
        return call(*args, complex_ok=impl.complex_ok)
    except ValueError as exc:  # --fd complex for a forward that takes no complex input
        raise InputError(f"--fd: {exc} ({impl.fd_source} does not)") from None


def fd_jacobian(impl: Implementation, f, x, method):
    return _fd(finite_diff.jacobian, impl, f, x, method)


def fd_directional(impl: Implementation, g, x, u, method):
    return _fd(finite_diff.directional, impl, g, x, u, method)


def row_rng(seed: int, purpose: int, row: int) -> np.random.Generator:
    """Random numbers for one row of the input, the same however the rows are chunked."""
    return np.random.default_rng([int(seed), int(purpose), int(row)])


def _smallest_step(step) -> float:
    st = np.asarray(step, dtype=np.float64)
    st = st[st > 0]  # masked coordinates take no step
    return float(st.min()) if st.size else 1.0


def sum_check(name: str, statement: str, sums: np.ndarray, allowed: np.ndarray, rows,
              label: str) -> CheckResult:
    sums = np.where(np.isnan(sums), np.inf, np.abs(sums))
    ok = sums <= allowed
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(allowed > 0, sums / allowed, np.where(sums > 0, np.inf, 0))
    pos = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    res = CheckResult(
        name=name, passed=bool(np.all(ok)), max_abs_err=float(np.max(sums)),
        max_rel_err=None, max_ulp=None,
        tolerance={"formula": "sum of the summed entries' allowances", "atol": float(np.max(allowed))},
        worst={"row": int(rows[pos[0]]), "index": int(pos[1]) if len(pos) > 1 else None},
        measured=f"max |{label}| = {fmt(sums[pos])}", allowed=fmt(allowed[pos]),
        statement=statement, score=_score(ratio, pos))
    if not res.passed:
        res.failures.append(f"row {rows[pos[0]]}{', index ' + str(pos[1]) if len(pos) > 1 else ''}:"
                            f" |{label}| = {fmt(sums[pos])} exceeds {fmt(allowed[pos])}")
    return res


@dataclass
class _Ok:
    ok: np.ndarray


def fsum_rows(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """Sums along an axis, nan if any term is not finite. Where long double has 64 bits (x87,
    x86) and there are at least LONG_SUM_MIN terms: in long double, by blocks (:func:`_long_sums`,
    error below (45 + log2 n) 2^-64 of the sum of |terms|: under 1% of 4u of it, and every
    allowance these sums are held to is at least that); otherwise in double-double (pairwise,
    error below log2(n) 2^-106 of the sum of |terms|)."""
    a = np.moveaxis(np.asarray(a, dtype=np.float64), axis, -1)
    if a.size >= LONG_SUM_MIN and np.finfo(np.longdouble).nmant >= 63:
        out = _long_sums(np.ascontiguousarray(a).reshape(-1, a.shape[-1]))
        return out.reshape(a.shape[:-1])
    flat = a.reshape(-1, a.shape[-1])
    ok, hi, lo = _finite_sums(flat)
    return np.where(ok, hi + lo, np.nan).reshape(a.shape[:-1])


#: from this many terms on, fsum_rows sums in long double where it has 64 bits (ten times
#: faster than double-double: 4 ms for 10^6 terms, 45 ms in pairs)
LONG_SUM_MIN = 1 << 12
#: numpy sums a row pairwise within one buffer of this many entries, and one buffer after the
#: other beyond it: rows are summed in blocks of this length, then the blocks' sums pairwise
LONG_SUM_BLOCK = 8192


def _long_sums(flat: np.ndarray) -> np.ndarray:
    """Row sums of a C-contiguous (m, n) float64 array in 64-bit long double, rounded to float64
    once; nan where a term is not finite (a sum of finite doubles cannot overflow there).

    Error: numpy's pairwise sum of a block of B = 8192 terms is at most 16 + 3 + log2(B / 128)
    = 25 additions deep; the k = n / B block sums, summed the same way, add at most
    19 + log2(k / 128) (19 for k <= 128), and the last partial block one more: in all below
    (45 + log2 n) additions, each within 2^-64 relative, of the sum of |terms|."""
    m, n = flat.shape
    k = n // LONG_SUM_BLOCK
    with np.errstate(invalid="ignore", over="ignore"):
        out = np.zeros(m, dtype=np.longdouble)
        if k:
            whole = flat[:, :k * LONG_SUM_BLOCK].reshape(m, k, LONG_SUM_BLOCK)
            out = np.sum(np.sum(whole, axis=-1, dtype=np.longdouble), axis=-1)
        if n > k * LONG_SUM_BLOCK:
            out = out + np.sum(flat[:, k * LONG_SUM_BLOCK:], axis=-1, dtype=np.longdouble)
        return np.where(np.isfinite(out), out.astype(np.float64), np.nan)


def _finite_terms(t):
    fin = np.isfinite(t)
    return np.where(fin, t, 0.0), np.zeros(t.shape), fin


def _finite_sums(flat):
    from .blocks import row_reduce
    from .engine import row_sums_blocked

    hi, lo = row_sums_blocked(_finite_terms, (flat,), flat.shape)
    (bad,) = row_reduce(lambda t: (np.sum(~np.isfinite(t), axis=-1),), (flat,), flat.shape, 1)
    return bad == 0, hi, lo


# --- jacobian -----------------------------------------------------------------------------------


@dataclass
class JacobianCase:
    X: np.ndarray
    rows: np.ndarray
    info: DtypeInfo
    impl: Implementation
    log: bool
    metric: str
    overrides: Overrides | None
    dps: int
    exact: ExactSoftmax  # with one_minus
    fd_method: str
    top: int = 10
    dense: bool = True
    probes: int = 4
    seed: int = 0
    engine: str = "auto"
    J: np.ndarray | None = None  # computed (rows, n, n), dense mode
    _cmp: Comparison | None = field(default=None, repr=False)
    _strict: Comparison | None = field(default=None, repr=False)
    _probe: dict | None = field(default=None, repr=False)
    _exact_J: tuple | None = field(default=None, repr=False)

    @property
    def quantity(self) -> str:
        return "log-softmax Jacobian" if self.log else "softmax Jacobian"

    def tolerance(self, metric: str):
        hi = self.exact_J[0]
        tol = jacobian_tolerance(self.X, self.exact.d, self.exact.s_hi, np.abs(hi), self.info,
                                 self.log, metric)
        return apply_overrides(tol, self.overrides)

    @property
    def exact_J(self):
        if self._exact_J is None:
            self._exact_J = exact_jacobian(self.exact, self.log)
        return self._exact_J

    @property
    def cmp(self) -> Comparison:
        if self._cmp is None:
            hi, lo = self.exact_J
            self._cmp = compare(self.J, hi, lo, self.tolerance(self.metric), self.info)
        return self._cmp

    @property
    def strict(self):
        """Which entries meet the strict (componentwise relative) bound; the errors are the
        main comparison's, only the allowance differs."""
        if self._strict is None:
            if self.metric == "strict":
                self._strict = self.cmp
            else:
                self._strict = _Ok(_within(self.cmp.abs_err, self.cmp.ref,
                                           self.tolerance("strict")))
        return self._strict

    def cause(self, r: int, i: int, k: int) -> str:
        cmp = self.cmp
        c = cmp.computed[r, i, k]
        if np.isnan(c):
            return "nan: the softmax it is built from is not finite"
        if cmp.ok[r, i, k] and (self.metric == "strict" or self.strict.ok[r, i, k]):
            return ""
        om = self.exact.om_hi[r]
        if i == k and not self.strict.ok[r, i, k]:
            if self.log:
                return (f"cancellation: 1 - s_{k} with s_{k} = 1 - {fmt(om[k])}; sum the other "
                        "entries instead")
            return (f"cancellation: s_{i} - s_{i}^2 with s_{i} = 1 - {fmt(om[i])}; use "
                    f"s_{i} * (sum of the other s_j)")
        if not cmp.ok[r, i, k]:
            return f"error {fmt(cmp.ratio[r, i, k])} x its allowance"
        return ""

    # probes (n > --max-dense): v^T J u, never forming J
    def probe(self) -> dict:
        if self._probe is not None:
            return self._probe
        from .impls import UserCallable

        if isinstance(self.impl, UserCallable):
            raise ImplementationError(
                f"n = {self.X.shape[1]} exceeds --max-dense: --impl {self.impl.name} returns "
                "an n x n Jacobian; raise --max-dense, or check the VJP with 'smcheck vjp'")
        rows, n = self.X.shape
        k = self.probes
        fin = np.isfinite(self.X)[:, None, :]
        draws = np.array([row_rng(self.seed, 3, lab).standard_normal((2, k, n))
                          for lab in self.rows]).reshape(rows, 2, k, n)
        V = np.where(fin, draws[:, 0], 0.0)
        U = np.where(fin, draws[:, 1], 0.0)
        if self.log:  # probe 0: v^T J 1 (J 1 = 0: the rows of I - 1 s^T sum to 0)
            U[:, 0, :] = np.where(fin[:, 0], 1.0, 0.0)
        else:  # probe 0: 1^T J u (the columns of the symmetric J sum to 0)
            V[:, 0, :] = np.where(fin[:, 0], 1.0, 0.0)
        info = self.info
        Vr, Ur = info.round(V).astype(np.float64), info.round(U).astype(np.float64)
        s = self.impl.softmax(self.X.astype(info.np_dtype), info, False).astype(np.float64)
        acc = info.accumulator
        comp = np.zeros((rows, k))
        comp_t = np.zeros((rows, k))  # u^T J v, the same pairs the other way round
        for p in range(k):
            v, u = Vr[:, p, :], Ur[:, p, :]
            if self.log:  # v^T (I - 1 s^T) u = <v, u> - (sum v) <s, u>
                su = np.sum((s * u).astype(acc), axis=-1, dtype=acc)
                comp[:, p] = np.sum((v * u).astype(acc), axis=-1) - np.sum(v, axis=-1) * su
            else:  # J is symmetric: v^T J u = <v, u J>, the implementation's own VJP with u
                Ju = np.asarray(self.impl.vjp(self.X.astype(info.np_dtype), u, info),
                                dtype=np.float64)
                comp[:, p] = np.sum((v * Ju).astype(acc), axis=-1, dtype=acc)
                Jv = np.asarray(self.impl.vjp(self.X.astype(info.np_dtype), v, info),
                                dtype=np.float64)
                comp_t[:, p] = np.sum((u * Jv).astype(acc), axis=-1, dtype=acc)
        hi, lo = exact_bilinear(self.X, Vr, Ur, self.dps, self.log, self.engine)
        s_ex = self.exact.s_hi
        from .errors_ulp import softmax_tolerance

        rt = np.broadcast_to(softmax_tolerance(self.X, self.exact.d, s_ex, info).rtol, s_ex.shape)
        rho = 2 * np.max(rt, axis=-1) + (summation_allowance(n) + 4) * info.u
        av, au = np.abs(Vr), np.abs(Ur)
        if self.log:
            nat = np.sum(av * au, -1) + np.sum(av, -1) * np.sum(s_ex[:, None] * au, -1)
        else:
            nat = (np.sum(av * s_ex[:, None], -1) * np.sum(au * s_ex[:, None], -1)
                   + np.sum(av * au * s_ex[:, None], -1))
        allowed = rho[:, None] * nat + 4 * info.eta
        self._probe = {"V": Vr, "U": Ur, "computed": comp, "computed_t": comp_t, "hi": hi,
                       "lo": lo,
                       "allowed": allowed}
        return self._probe


def _within(err: np.ndarray, ref: np.ndarray, tol) -> np.ndarray:
    """err <= the tolerance's allowance at |ref|, entry by entry, a block of rows at a time
    (the (rows, n, n) arrays as (rows n, n) views): no n^2 temporaries."""
    from dataclasses import replace

    from .blocks import blocks

    m = err.shape[-1]
    ev, rv = err.reshape(-1, m), ref.reshape(-1, m)
    full = [a is not None and np.ndim(a) > 0 for a in (tol.atol, tol.rtol)]
    parts = [np.broadcast_to(a, err.shape).reshape(-1, m) if f else a
             for a, f in zip((tol.atol, tol.rtol), full)]
    ok = np.empty(ev.shape, dtype=bool)
    for b in blocks(ev.shape[0], m):
        t = replace(tol, atol=parts[0][b] if full[0] else parts[0],
                    rtol=parts[1][b] if full[1] else parts[1])
        ok[b] = ev[b] <= t.allowed(np.abs(rv[b]))
    return ok.reshape(err.shape)


@register("jacobian", "reference")
def jacobian_reference(case: JacobianCase) -> CheckResult:
    if not case.dense:
        p = case.probe()
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs((p["computed"] - p["hi"]) - p["lo"])
            diff = np.where(np.isnan(diff), np.inf, diff)
        ok = diff <= p["allowed"]
        ratio = diff / p["allowed"]
        pos = np.unravel_index(int(np.argmax(ratio)), diff.shape)
        res = CheckResult(
            name="reference", passed=bool(np.all(ok)), max_abs_err=float(np.max(diff)),
            max_rel_err=float(np.max(diff / np.maximum(np.abs(p["hi"]), 1e-300))), max_ulp=None,
            tolerance={"formula": "|c - v^T J u| <= rho * natural size of v^T J u (README)",
                       "atol": float(np.max(p["allowed"]))},
            worst={"row": int(case.rows[pos[0]]), "index": None, "probe": int(pos[1])},
            measured=f"max |c - v^T J u| = {fmt(diff[pos])} ({case.probes} probes)",
            allowed=fmt(p["allowed"][pos]),
            statement=f"v^T J u on {case.probes} random probe pairs (J not formed: n > "
            "--max-dense) agrees with the exact value", score=_score(ratio, pos))
        res.notes.append(f"n = {case.X.shape[1]} > --max-dense: checked v^T J u on "
                         f"{case.probes} random probe pairs per row instead of every entry")
        if not res.passed:
            res.failures.append(f"row {case.rows[pos[0]]}, probe {pos[1]}: computed "
                                f"{fmt(p['computed'][pos], 10)}, exact {fmt(p['hi'][pos], 10)}")
        return res
    cmp = case.cmp
    res = comparison_result("reference", cmp, case.info, case.rows,
                            f"{case.impl.name} {case.quantity} in {case.info.name} agrees with "
                            "the exact Jacobian, entry by entry "
                            f"({'componentwise relative' if case.metric == 'strict' else 'scaled to each entry'})")
    res.entries = top_entries(cmp, case.X, case.rows, case.top, case.cause)
    if not cmp.passed:
        res.failures.append(worst_failure(cmp, case.rows, case.cause(*cmp.worst_index())))
    lost = ~case.strict.ok
    if lost.any():
        idx = np.argwhere(lost)
        res.details["cancelled"] = [[int(case.rows[r]), int(i), int(k)]
                                    for r, i, k in idx[:LIST_MAX]]
        names = ", ".join(f"({i}, {k})" for _, i, k in idx[:8])
        what = ("1 - s_k" if case.log else "s_i - s_i^2")
        line = (f"entries {names}{' ...' if len(idx) > 8 else ''} lost their relative accuracy to "
                f"cancellation in {what} (s near 1)")
        if case.metric == "strict":
            res.failures.append(line)
        elif cmp.ok[lost].all():
            res.notes.append(line + "; within the scaled bound, --metric strict fails them")
    return res


@register("jacobian", "finite_difference")
def jacobian_fd(case: JacobianCase) -> CheckResult:
    f = case.impl.forward64(case.log)
    src = case.impl.fd_source
    if not case.dense:
        p = case.probe()
        ests, vals, allowed = [], [], []
        for r in range(case.X.shape[0]):
            for q in range(case.probes):
                v = p["V"][r, q]
                est = fd_directional(case.impl, lambda Z, v=v: np.sum(f(Z) * v, axis=-1),
                                     case.X[r], p["U"][r, q], case.fd_method)
                ests.append(est)
        vals = p["computed"]
        allowed = p["allowed"]
        res = fd_result("finite_difference", f"v^T J u agrees with the directional finite "
                        f"difference of <v, f(x + h u)>, f = {src}", vals, ests, allowed,
                        case.rows, index_of=lambda pos: None)
        return res
    ests = [fd_jacobian(case.impl, f, case.X[r], case.fd_method) for r in range(case.X.shape[0])]
    # masked coordinates (-inf) are never perturbed: leave their rows and columns out
    fin = np.isfinite(case.X)
    both = fin[:, :, None] & fin[:, None, :]
    return fd_result("finite_difference",
                     f"the computed Jacobian agrees with finite differences of {src}",
                     case.J, ests, case.cmp.allowed, case.rows,
                     index_of=lambda pos: [int(pos[1]), int(pos[2])], mask=both,
                     abs_resolution=4 * 2.0 ** -52 if case.log else 0.0)


#: rows of J compared with their transposed columns at a time (cache-friendly tiles)
SYM_TILE = 128


def _symmetry(J: np.ndarray, a: np.ndarray):
    """|J - J^T| against a + a^T, a strip of rows at a time (the columns it meets are read as
    contiguous runs), without forming the n x n differences. Returns (passed, max |J - J^T|,
    worst position (row, i, k) by excess over the allowance, its allowance, max allowance,
    that excess)."""
    rows, n, _ = J.shape
    passed, max_asym, max_allowed = True, 0.0, 0.0
    best = (-np.inf, (0, 0, 0), 0.0)
    for r in range(rows):
        for i0 in range(0, n, SYM_TILE):
            i1 = min(i0 + SYM_TILE, n)
            with np.errstate(invalid="ignore"):
                asym = np.abs(J[r, i0:i1, :] - J[r, :, i0:i1].T)
                asym = np.where(np.isnan(asym), np.inf, asym)
            allowed = a[r, i0:i1, :] + a[r, :, i0:i1].T
            passed = passed and bool(np.all(asym <= allowed))
            max_asym = max(max_asym, float(np.max(asym)))
            max_allowed = max(max_allowed, float(np.max(allowed)))
            with np.errstate(invalid="ignore"):
                excess = asym - allowed
            k = int(np.argmax(excess))
            if excess.flat[k] > best[0]:
                i, j = divmod(k, n)
                best = (float(excess.flat[k]), (r, i0 + i, j), float(allowed.flat[k]))
    return passed, max_asym, best[1], best[2], max_allowed, best[0]


@register("jacobian", "symmetry")
def jacobian_symmetry(case: JacobianCase) -> CheckResult | None:
    if case.log:
        return None  # I - 1 s^T is not symmetric
    if not case.dense:
        p = case.probe()
        # v^T J u against u^T J v, each from the implementation's own VJP
        return sum_check("symmetry", "v^T J u = u^T J v on the probes (J = J^T)",
                         p["computed"] - p["computed_t"], 2 * p["allowed"], case.rows,
                         "v^T J u - u^T J v")
    J = case.J
    a = case.cmp.allowed
    passed, max_asym, pos, allowed_at, max_allowed, excess = _symmetry(J, a)
    res = CheckResult(
        name="symmetry", passed=passed, max_abs_err=max_asym,
        max_rel_err=None, max_ulp=None,
        tolerance={"formula": "|J_ik - J_ki| <= allowance_ik + allowance_ki",
                   "atol": max_allowed},
        worst={"row": int(case.rows[pos[0]]), "index": [int(pos[1]), int(pos[2])]},
        measured=f"max |J - J^T| = {fmt(max_asym)}", allowed=fmt(allowed_at),
        statement="the computed softmax Jacobian is symmetric", score=excess)
    if not res.passed:
        res.failures.append(f"row {case.rows[pos[0]]}: J[{pos[1]}, {pos[2]}] = "
                            f"{fmt(J[pos], 10)} but J[{pos[2]}, {pos[1]}] = "
                            f"{fmt(J[pos[0], pos[2], pos[1]], 10)}")
    return res


@register("jacobian", "zero_sums")
def jacobian_zero_sums(case: JacobianCase) -> CheckResult:
    if not case.dense:
        p = case.probe()
        # probe 0 has v = 1 (softmax: 1^T J u = 0) or u = 1 (log-softmax: v^T J 1 = 0)
        label = "v^T J 1" if case.log else "1^T J u"
        what = "rows of J sum to 0" if case.log else "columns of J sum to 0"
        return sum_check("zero_sums", f"{label} = 0 on the probes ({what})",
                         p["computed"][:, :1], p["allowed"][:, :1], case.rows, label)
    a = case.cmp.allowed
    rows_sum = fsum_rows(case.J, axis=-1)  # J 1
    allowed_r = np.sum(a, axis=-1)
    res = sum_check("zero_sums", "every row of J sums to 0 (J 1 = 0)"
                    + ("" if case.log else " and every column (1^T J = 0)"),
                    rows_sum, allowed_r, case.rows, "J 1")
    if not case.log:
        cols = fsum_rows(case.J, axis=1)
        resc = sum_check("zero_sums", "", cols, np.sum(a, axis=1), case.rows, "1^T J")
        res.merge_data = {"rows": (res.passed, res.max_abs_err, res.measured, res.failures),
                          "cols": (resc.passed, resc.max_abs_err, resc.score, resc.failures)}
        _zero_sums_cols(res)
    return res


def _zero_sums_cols(res: CheckResult) -> None:
    """The columns' sums (softmax: 1^T J = 0) joined to the rows' result."""
    passed, max_abs, measured, failures = res.merge_data["rows"]
    c_passed, c_max, _, c_failures = res.merge_data["cols"]
    res.passed, res.max_abs_err, res.measured, res.failures = passed, max_abs, measured, failures
    if not c_passed or c_max > max_abs:
        res.failures = failures + c_failures
        res.passed = passed and c_passed
        res.max_abs_err = max(max_abs, c_max)
        res.measured = measured + f"; max |1^T J| = {fmt(c_max)}"


def _merge_zero_sums(out: CheckResult, parts: list[CheckResult], top: int) -> None:
    if not all("cols" in p.merge_data for p in parts):
        return  # log-softmax (rows only) or probes: merged as any check
    rows = [p.merge_data["rows"] for p in parts]
    cols = [p.merge_data["cols"] for p in parts]
    w = max(range(len(parts)), key=lambda i: parts[i].score)  # the rows' worst chunk
    wc = max(range(len(parts)), key=lambda i: cols[i][2])  # the columns' worst chunk
    out.merge_data = {
        "rows": (all(r[0] for r in rows), max(r[1] for r in rows), rows[w][2], rows[w][3]),
        "cols": (all(c[0] for c in cols), max(c[1] for c in cols), cols[wc][2], cols[wc][3])}
    _zero_sums_cols(out)


MERGE["zero_sums"] = _merge_zero_sums


# --- vjp ----------------------------------------------------------------------------------------


@dataclass
class VjpCase:
    X: np.ndarray
    V: np.ndarray
    rows: np.ndarray
    info: DtypeInfo
    impl: Implementation
    overrides: Overrides | None
    dps: int
    exact: "object"  # ExactVJP
    z: np.ndarray  # computed
    fd_method: str
    top: int = 10
    seed: int = 0
    _cmp: Comparison | None = field(default=None, repr=False)

    @property
    def cmp(self) -> Comparison:
        if self._cmp is None:
            ex = self.exact
            tol = vjp_tolerance(self.X, ex.softmax.d, ex.softmax.s_hi, self.V, ex.abs_dot,
                                self.info)
            self._cmp = compare(self.z, ex.z_hi, ex.z_lo, apply_overrides(tol, self.overrides),
                                self.info)
        return self._cmp

    def cause(self, r: int, i: int) -> str:
        cmp = self.cmp
        if np.isnan(cmp.computed[r, i]):
            return "nan: the softmax it is built from is not finite"
        if cmp.ok[r, i]:
            return ""
        return f"error {fmt(cmp.ratio[r, i])} x its allowance"


@register("vjp", "reference")
def vjp_reference(case: VjpCase) -> CheckResult:
    cmp = case.cmp
    res = comparison_result("reference", cmp, case.info, case.rows,
                            f"{case.impl.name} v J(x) in {case.info.name} agrees with the exact "
                            "s * (v - <v, s>), entry by entry")
    res.entries = top_entries(cmp, case.X, case.rows, case.top, case.cause)
    if not cmp.passed:
        res.failures.append(worst_failure(cmp, case.rows))
    return res


@register("vjp", "finite_difference")
def vjp_fd(case: VjpCase) -> CheckResult:
    f = case.impl.forward64(False)
    ests, vals, allowed = [], [], []
    for r in range(case.X.shape[0]):
        fin = np.isfinite(case.X[r])
        u = np.where(fin, row_rng(case.seed, 7, case.rows[r]).standard_normal(case.X.shape[1]),
                     0.0)
        v = case.V[r]
        vm = np.where(fin, v, 0.0)
        ests.append(fd_directional(case.impl, lambda Z, vm=vm: np.sum(f(Z) * vm, axis=-1),
                                   case.X[r], u, case.fd_method))
        vals.append(float(fsum_rows(case.z[r] * u)))
        allowed.append(float(np.sum(np.abs(u) * case.cmp.allowed[r])))
    return fd_result("finite_difference",
                     "<z, u> agrees with the directional finite difference of <v, f(x + h u)> "
                     f"along a random u, f = {case.impl.fd_source}",
                     np.array(vals), ests, np.array(allowed), case.rows)


@register("vjp", "zero_sum")
def vjp_zero_sum(case: VjpCase) -> CheckResult:
    sums = fsum_rows(case.z)
    return sum_check("zero_sum", "sum_i z_i = 0", sums, np.sum(case.cmp.allowed, axis=-1),
                     case.rows, "sum z")


# --- loss ---------------------------------------------------------------------------------------


@dataclass
class LossCase:
    Z: np.ndarray  # z rounded to the dtype, as float64 (what the implementation gets)
    T: np.ndarray
    rows: np.ndarray
    info: DtypeInfo
    impl: Implementation
    overrides: Overrides | None
    dps: int
    mode: str  # "vjp" | "given" | "softmax"
    g: np.ndarray  # computed gradient
    z_exact: np.ndarray  # exact z (float64 hi)
    floor: np.ndarray  # rounding floor of z per entry (0 where z is given exactly)
    X: np.ndarray | None = None
    V: np.ndarray | None = None
    dot: np.ndarray | None = None  # <v, s> per row (vjp mode)
    dot_str: list | None = None
    exact_zero: list | None = None  # per row (vjp mode)
    fd_method: str = "auto"
    top: int = 10
    seed: int = 0
    grad_x: dict | None = None  # {"computed", "hi", "lo", "allowed"} in softmax mode
    _cmp: Comparison | None = field(default=None, repr=False)

    @property
    def valid(self) -> np.ndarray:
        """Entries where -t/z is defined: z != 0 (t_i = 0 there gives 0)."""
        return self.Z != 0

    @property
    def cmp(self) -> Comparison:
        if self._cmp is None:
            from .reference import exact_loss_grad

            hi, lo = exact_loss_grad(self.Z, self.T)
            ok = self.valid
            hi, lo = np.where(ok, hi, 0.0), np.where(ok, lo, 0.0)
            g = np.where(ok, self.g, 0.0)
            tol = apply_overrides(quotient_tolerance(self.info), self.overrides)
            self._cmp = compare(g, hi, lo, tol, self.info)
        return self._cmp


@register("loss", "reference")
def loss_reference(case: LossCase) -> CheckResult:
    cmp = case.cmp
    res = comparison_result("reference", cmp, case.info, case.rows,
                            f"{case.impl.name} -t / z in {case.info.name} agrees with the exact "
                            "quotient for the z it was given, entry by entry")
    res.entries = top_entries(cmp, case.Z, case.rows, case.top,
                              lambda r, i: "" if cmp.ok[r, i] else
                              f"error {fmt(cmp.ratio[r, i])} x its allowance")
    if not cmp.passed:
        res.failures.append(worst_failure(cmp, case.rows))
    if case.grad_x is not None:
        gx = case.grad_x
        res.details["grad_x"] = {"statement": "gradient in x: s * sum(t) - t",
                                 "passed": gx["cmp"].passed, **gx["cmp"].maxima()}
        if not gx["cmp"].passed:
            res.passed = False
            w = gx["cmp"].worst_index()
            res.failures.append(
                f"gradient in x (s * sum(t) - t), row {case.rows[w[0]]}, index {w[1]}: computed "
                f"{fmt(gx['cmp'].computed[w], 10)}, exact {fmt(gx['cmp'].ref[w], 10)}")
        else:
            res.notes.append(f"gradient in x, s * sum(t) - t: max {fmt(gx['cmp'].maxima()['max_ulp'])} ULP")
    return res


@register("loss", "finite_difference")
def loss_fd(case: LossCase) -> CheckResult:
    ests, vals, allowed = [], [], []
    for r in range(case.Z.shape[0]):
        rng = row_rng(case.seed, 11, case.rows[r])
        z, t = case.Z[r], case.T[r]
        usable = z > 0  # the complex step must stay off log's branch cut
        # differentiate in relative coordinates z_i (1 + rho_i): a step of 1e-20 in rho is
        # tiny for every z_i however small, and d/dh l(z (1 + h r)) = sum_i g_i z_i r_i
        r_dir = np.where(usable, rng.standard_normal(z.shape[0]), 0.0)
        tt = np.where(usable, t, 0.0)
        zz = np.where(usable, z, 1.0)

        def loss(R, tt=tt, zz=zz):
            return -np.sum(tt * np.log(zz * (1 + R)), axis=-1)

        ests.append(finite_diff.directional(loss, np.zeros_like(zz), r_dir, case.fd_method))
        w = zz * r_dir
        gw = np.where(usable, case.g[r], 0.0) * w
        vals.append(float(fsum_rows(gw)))
        allowed.append(float(np.sum(np.abs(w) * np.where(usable, case.cmp.allowed[r], 0.0))))
    res = fd_result("finite_difference", "<D_z l, w> agrees with the directional finite "
                    "difference of l(z + h w, t) along a random w = z * r (entries with z_i > 0)",
                    np.array(vals), ests, np.array(allowed), case.rows)
    return res


@register("loss", "zero_condition")
def loss_zero_condition(case: LossCase) -> CheckResult:
    entries, bad = [], []
    exact0, unreliable = [], []
    for r in range(case.Z.shape[0]):
        t = case.T[r]
        z0 = set(case.exact_zero[r]) if case.exact_zero is not None else set(
            np.flatnonzero(case.z_exact[r] == 0).tolist())
        unrel = set(np.flatnonzero(np.abs(case.z_exact[r]) <= case.floor[r]).tolist()) - z0
        if case.mode == "vjp":
            # where the rounded z is 0 though the exact one is not: the sign was lost too
            unrel |= set(np.flatnonzero((case.Z[r] == 0) & (case.z_exact[r] != 0)).tolist()) - z0
        for i in sorted(z0 | unrel):
            row = {"row": int(case.rows[r]), "index": int(i),
                   "kind": "exact zero" if i in z0 else "below rounding floor",
                   "z_i": float(case.z_exact[r, i]), "floor": float(case.floor[r, i]),
                   "t_i": float(t[i])}
            if case.mode == "vjp":
                row["v_i"] = float(case.V[r, i])
                row["<v,s>"] = case.dot_str[r]
            entries.append(row)
            if t[i] != 0:
                bad.append(row)
        exact0 += [[int(case.rows[r]), int(i)] for i in sorted(z0)]
        unreliable += [[int(case.rows[r]), int(i)] for i in sorted(unrel)]
    res = CheckResult(
        name="zero_condition", passed=not bad, max_abs_err=None, max_rel_err=None, max_ulp=None,
        tolerance={"formula": "no index with t_i != 0 where z_i = 0 or |z_i| <= its rounding "
                   "floor u s_i (|v_i| + sum_j |v_j| s_j)"},
        worst=({"row": bad[0]["row"], "index": bad[0]["index"]} if bad else None),
        measured=_zero_words(len(exact0), len(unreliable)), allowed="none where t_i != 0",
        statement="z_i = 0 exactly when v_i = <v, s>; near it the sign of z_i and -t_i/z_i are "
        "unreliable")
    for e in bad[:ZERO_LINES]:
        side = (f"v_{e['index']} = {e['v_i']!r} vs <v, s> = {e['<v,s>']}, "
                if "v_i" in e else "")
        res.failures.append(
            f"row {e['row']}, index {e['index']} ({e['kind']}): {side}z = {fmt(e['z_i'])}, "
            f"floor {fmt(e['floor'])}, t = {fmt(e['t_i'])}: the gradient -t/z there is "
            + ("undefined" if e["kind"] == "exact zero" else "unreliable (sign and size)"))
    res.details["zero_condition"] = {"exact_zero_indices": exact0,
                                     "unreliable_indices": unreliable,
                                     "entries": entries[:LIST_MAX]}
    return res


#: failure lines of the zero condition: the first entries where t_i != 0, in row order
ZERO_LINES = 10


def _zero_words(exact: int, unreliable: int) -> str:
    return f"{exact} exact zero(s), {unreliable} below the floor"


def _merge_zero_condition(out: CheckResult, parts: list[CheckResult], top: int) -> None:
    zc = out.details["zero_condition"]
    out.measured = _zero_words(len(zc["exact_zero_indices"]), len(zc["unreliable_indices"]))
    first = next((p for p in parts if not p.passed), None)
    out.worst = None if first is None else first.worst
    out.failures = [f for p in parts for f in p.failures][:ZERO_LINES]


MERGE["zero_condition"] = _merge_zero_condition


@register("loss", "domain")
def loss_domain(case: LossCase) -> CheckResult:
    bad = (case.T != 0) & ~(case.Z > 0)
    idx = np.argwhere(bad)
    res = CheckResult(
        name="domain", passed=not idx.size, max_abs_err=None, max_rel_err=None, max_ulp=None,
        tolerance={"formula": "z_i > 0 wherever t_i != 0"},
        worst=({"row": int(case.rows[idx[0][0]]), "index": int(idx[0][1])} if idx.size else None),
        measured=_domain_words(len(idx)), allowed="0",
        statement="log z_i is defined wherever t_i != 0 (z_i > 0)")
    res.merge_data = {"count": len(idx), "items": [
        f"row {case.rows[r]} index {i} (z = {fmt(case.Z[r, i])}, t = {fmt(case.T[r, i])})"
        for r, i in idx[:DOMAIN_ITEMS]]}
    if idx.size:
        res.failures.append(_domain_line(res.merge_data))
        res.details["domain_violations"] = [[int(case.rows[r]), int(i)] for r, i in idx[:LIST_MAX]]
    return res


#: entries named in the domain check's failure line
DOMAIN_ITEMS = 6


def _domain_words(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'} with z_i <= 0 and t_i != 0"


def _domain_line(d: dict) -> str:
    return ("log z_i undefined at " + ", ".join(d["items"][:DOMAIN_ITEMS])
            + (" ..." if d["count"] > DOMAIN_ITEMS else ""))


def _merge_domain(out: CheckResult, parts: list[CheckResult], top: int) -> None:
    d = {"count": sum(p.merge_data["count"] for p in parts),
         "items": [i for p in parts for i in p.merge_data["items"]][:DOMAIN_ITEMS]}
    out.measured = _domain_words(d["count"])
    first = next((p for p in parts if not p.passed), None)
    out.worst = None if first is None else first.worst
    out.failures = [_domain_line(d)] if d["count"] else []
    out.merge_data = d


MERGE["domain"] = _merge_domain

