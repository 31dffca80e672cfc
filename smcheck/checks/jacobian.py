"""The checks of ``jacobian``: every entry of J = diag(s) - s s^T (log-softmax: I - 1 s^T)
against the exact one and finite differences, its symmetry and zero sums, and shift
invariance; beyond --max-dense, bilinear forms v^T J u on random probe pairs."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..causes import cause
from ..blocks import blocks
from ..ddmath import fsum_rows
from ..errors_ulp import Comparison, Tolerance, apply_overrides, compare, error_ratio
from ..exceptions import ImplementationError
from ..reference import ExactSoftmax, exact_bilinear, exact_jacobian, exact_softmax
from ..results import LIST_MAX, CheckResult, Failure, Finding, Note
from ..sentences import pair
from ..coherence import add_drift, factor_caps, shared_factor, widened, with_coherence
from ..tolerance import jacobian_tolerance, probe_allowance, underflow_unit
from .common import (Case, add_run_findings, comparison_result, fmt, ftz_cause, score,
                     shift_invariance, worst_failure)
from .worst import top_entries
from .fd import _Ok, fd_directional, fd_jacobian, fd_result, row_rng, sum_check

# --- jacobian -----------------------------------------------------------------------------------


@dataclass(kw_only=True)
class JacobianCase(Case):
    command = "jacobian"  # not a field: the command, for smcheck.memory's figures

    X: np.ndarray
    log: bool
    metric: str
    exact: ExactSoftmax  # with one_minus
    fd_method: str
    dense: bool = True
    probes: int = 4
    #: whether a passing entry's cause names a cancellation the strict bound sees (the
    #: reference check's table); the shifted cases of shift_invariance skip that bound
    explain_passing: bool = True
    J: np.ndarray | None = None  # computed (rows, n, n), dense mode
    _cmp: Comparison | None = field(default=None, repr=False)
    _strict: Comparison | None = field(default=None, repr=False)
    _probe: dict | None = field(default=None, repr=False)
    _exact_J: tuple | None = field(default=None, repr=False)
    _drift_G: np.ndarray | None = field(default=None, repr=False)  # smcheck.coherence

    @property
    def quantity(self) -> str:
        return "log-softmax Jacobian" if self.log else "softmax Jacobian"

    @property
    def exact_softmax(self) -> ExactSoftmax:
        return self.exact

    def tolerance(self, metric: str):
        tol = jacobian_tolerance(self.exact.d, self.exact.s_hi, self.info, self.log, metric,
                                 self.ftz)
        return apply_overrides(tol, self.overrides)

    def evaluate(self, X: np.ndarray) -> np.ndarray:
        """The implementation's Jacobians (rows, n, n) at X (values of the dtype)."""
        info, n = self.info, X.shape[1]
        J = np.asarray(self.impl.jacobian(X.astype(info.np_dtype), info, self.log))
        if J.shape != (X.shape[0], n, n):
            raise ImplementationError(f"--impl {self.impl.name} returned a Jacobian of shape "
                                      f"{J.shape[1:]}: expected {(n, n)}")
        return J.astype(np.float64, copy=False)

    def at(self, Xs: np.ndarray, c: np.ndarray) -> "JacobianCase":
        """The case at the shifted rows Xs = round(X + c): the implementation and the exact
        softmax there (the probes keep their vectors)."""
        exact = exact_softmax(Xs, self.dps, one_minus=True, engine=self.engine)
        return replace(self, X=Xs, exact=exact, J=self.evaluate(Xs) if self.dense else None,
                       explain_passing=False, _cmp=None, _strict=None, _probe=None,
                       _exact_J=None, _drift_G=None)

    @property
    def exact_J(self):
        if self._exact_J is None:
            self._exact_J = exact_jacobian(self.exact, self.log)
        return self._exact_J

    @property
    def cmp(self) -> Comparison:
        """Every entry against the exact Jacobian; beyond --max-dense, the probes' v^T J u
        (rows, probes) against their exact values."""
        if self._cmp is None:
            self._cmp = with_coherence(self._compare, self.exact.d, self.info,
                                       lambda c: ~np.all(c.ok.reshape(len(c.ok), -1), axis=-1))
        return self._cmp

    def _compare(self, G: np.ndarray | None) -> Comparison:
        """The comparison under the allowance; ``G`` (:mod:`smcheck.coherence`): the rows whose
        sums may drift, whose entries may then share the factor 1 + delta their sum is off by
        (J at s (1 + delta): J + delta q + delta^2 q2)."""
        self._drift_G = G
        s = self.exact.s_hi
        if self.dense:
            hi, lo = self.exact_J
            tol = self.tolerance(self.metric)
            if G is not None:
                n = s.shape[-1]
                diag = (slice(None), np.arange(n), np.arange(n))
                if self.log:  # I - 1 s^T: -delta 1 s^T
                    q, q2 = -np.broadcast_to(s[:, None, :], self.J.shape), None
                else:  # diag(s) - s s^T: delta (diag(s) - 2 s s^T) - delta^2 s s^T
                    q2 = s[:, :, None] * s[:, None, :]
                    q = -2 * q2
                    q[diag] += s
                tol = widened(tol, shared_factor(self.J - hi - lo, q, q2, self._caps(G)))
            return compare(self.J, hi, lo, tol, self.info)
        p = self.probe()
        if G is not None:
            V, U = p["V"], p["U"]
            S = s[:, None, :]
            su = np.sum(S * U, -1)
            if self.log:  # <v, u> - (sum v) <s, u>: -delta (sum v) <s, u>
                q, q2 = -np.sum(V, -1) * su, None
            else:  # sum v_i s_i u_i - <v, s><u, s>
                q2 = np.sum(S * V, -1) * su
                q = np.sum(V * S * U, -1) - 2 * q2
            p["allowed"] = p["allowed"] + shared_factor(p["computed"] - p["hi"] - p["lo"], q,
                                                        q2, self._caps(G))
        tol = Tolerance(atol=p["allowed"], rtol=None, under=p["under"],
                        formula="|c - v^T J u| <= the bilinear allowance (README)")
        return compare(p["computed"], p["hi"], p["lo"], apply_overrides(tol, self.overrides),
                       self.info)

    def judged_probe(self) -> dict:
        """The probes (:meth:`probe`) with their allowances as the comparison settled them
        (widened where a row's sum may drift)."""
        _ = self.cmp  # settles p["allowed"]
        return self.probe()

    def _caps(self, G: np.ndarray) -> np.ndarray:
        return factor_caps(self.exact.d, self.exact.s_hi, self.info, G, self.log, self.ftz)

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

    def cause(self, r: int, i: int, k: int | None = None) -> str:
        cmp = self.cmp
        if k is None:  # a probe (n > --max-dense)
            c = cmp.computed[r, i]
            if np.isnan(c):
                return cause("non-finite softmax", "computed nan")
            return ""
        c = cmp.computed[r, i, k]
        if np.isnan(c):
            return cause("non-finite softmax", "computed nan")
        if cmp.ok[r, i, k] and (self.metric == "strict" or not self.explain_passing
                                or self.strict.ok[r, i, k]):
            return ""
        ftz = ftz_cause(c, cmp.ref[r, i, k], self.info)
        if ftz:
            return ftz
        om = self.exact.om_hi[r]
        if i == k and not self.strict.ok[r, i, k]:
            if self.log:
                return cause("cancellation", f"1 - s_{k} with s_{k} = 1 - {fmt(om[k])}; sum "
                             "the other entries instead")
            return cause("cancellation", f"s_{i} - s_{i}^2 with s_{i} = 1 - {fmt(om[i])}; use "
                         f"s_{i} * (sum of the other s_j)")
        return ""

    # probes (n > --max-dense): v^T J u, never forming J
    def probe(self) -> dict:
        if self._probe is not None:
            return self._probe
        if self.impl.dense_jacobian_only:
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
        Vr, Ur = info.round64(V), info.round64(U)
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
        allowed = probe_allowance(self.exact.d, self.exact.s_hi, Vr, Ur, info, self.log,
                                  self.ftz)
        self._probe = {"V": Vr, "U": Ur, "computed": comp, "computed_t": comp_t, "hi": hi,
                       "lo": lo, "allowed": allowed, "under": underflow_unit(info, self.ftz)}
        return self._probe


def _within(err: np.ndarray, ref: np.ndarray, tol) -> np.ndarray:
    """err <= the tolerance's allowance at |ref|, entry by entry, a block of rows at a time
    (the (rows, n, n) arrays as (rows n, n) views): no n^2 temporaries."""

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


def jacobian_reference(case: JacobianCase) -> CheckResult:
    if not case.dense:
        p = case.judged_probe()
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs((p["computed"] - p["hi"]) - p["lo"])
            diff = np.where(np.isnan(diff), np.inf, diff)
        ok = diff <= p["allowed"]
        ratio = error_ratio(diff, p["allowed"])
        pos = np.unravel_index(int(np.argmax(ratio)), diff.shape)
        res = CheckResult(
            name="reference", passed=bool(np.all(ok)), max_abs_err=float(np.max(diff)),
            max_rel_err=float(np.max(diff / np.maximum(np.abs(p["hi"]), 1e-300))), max_ulp=None,
            tolerance={"formula": "|c - v^T J u| <= rho * natural size of v^T J u (README)",
                       "atol": float(np.max(p["allowed"]))},
            worst={"row": int(case.rows[pos[0]]), "index": None, "probe": int(pos[1]),
                   "ratio": score(ratio, pos)},
            measured=f"|c - v^T J u| = {pair(diff[pos], p['allowed'][pos])[0]} (probe "
            f"{int(pos[1])} of {case.probes})",
            allowed=pair(diff[pos], p["allowed"][pos])[1],
            statement=f"v^T J u on {case.probes} random probe pairs (J not formed: n > "
            "--max-dense) agrees with the exact value", score=score(ratio, pos))
        res.notes.append(Note("probes", {"n": int(case.X.shape[1]), "probes": case.probes}))
        add_drift(res, case, case.log)
        res.details["cancelled"] = None
        if not res.passed:
            res.failures.append(Failure("probe", row=int(case.rows[pos[0]]), index=int(pos[1]),
                                        computed=float(p["computed"][pos]),
                                        exact=float(p["hi"][pos])))
        return res
    cmp = case.cmp
    res = comparison_result("reference", cmp, case.info, case.rows,
                            f"{case.impl.name} {case.quantity} in {case.info.name} agrees with "
                            "the exact Jacobian, entry by entry "
                            f"({'componentwise relative' if case.metric == 'strict' else 'scaled to each entry'})")
    res.entries = top_entries(cmp, case.X, case.rows, case.top, case.cause)
    if not cmp.passed:
        res.failures.append(worst_failure(cmp, case.rows, case.cause(*cmp.worst_index())))
    add_run_findings(res, case.impl, case.J, case.info, case.strict_dtype)
    add_drift(res, case, case.log)
    lost = ~case.strict.ok
    res.details["cancelled"] = []  # null with probes (n > --max-dense): not looked for
    if lost.any():
        idx = np.argwhere(lost)
        res.details["cancelled"] = [[int(case.rows[r]), int(i), int(k)]
                                    for r, i, k in idx[:LIST_MAX]]
        r, i, k = idx[0]
        what = ("1 - s_k" if case.log else "s_i - s_i^2")
        strict = case.metric == "strict"
        if strict or cmp.ok[lost].all():
            res.findings = [f for f in res.findings if f.kind != "unresolvable"]
            res.findings.append(Finding(
                "cancelled", len(idx), int(cmp.ok.size),
                "{count} entr{ies} lost {its} relative accuracy to cancellation in " + what
                + " (s near 1), e.g. {example}"
                + ("" if strict else "; within the scaled bound, --metric strict fails them"),
                f"row {case.rows[r]}, entry ({i}, {k})", fails=strict))
    return res


def jacobian_fd(case: JacobianCase) -> CheckResult:
    f = case.impl.forward64(case.log)
    src = case.impl.fd_source
    if not case.dense:
        p = case.judged_probe()
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
    worst position (row, i, k) by |J - J^T| / allowance, its |J - J^T| and allowance, max
    allowance, that ratio)."""
    rows, n, _ = J.shape
    passed, max_asym, max_allowed = True, 0.0, 0.0
    best = (-np.inf, (0, 0, 0), 0.0, 0.0)
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
            ratio = error_ratio(asym, allowed)
            k = int(np.argmax(ratio))
            if ratio.flat[k] > best[0]:  # the first largest in row-major order
                i, j = divmod(k, n)
                best = (float(ratio.flat[k]), (r, i0 + i, j), float(asym.flat[k]),
                        float(allowed.flat[k]))
    return passed, max_asym, best[1], best[2], best[3], max_allowed, best[0]


def jacobian_symmetry(case: JacobianCase) -> CheckResult | None:
    if case.log:
        return None  # I - 1 s^T is not symmetric
    if not case.dense:
        p = case.judged_probe()
        # v^T J u against u^T J v, each from the implementation's own VJP
        return sum_check("symmetry", "v^T J u = u^T J v on the probes (J = J^T)",
                         p["computed"] - p["computed_t"], 2 * p["allowed"], case.rows,
                         "v^T J u - u^T J v")
    J = case.J
    a = case.cmp.allowed
    passed, max_asym, pos, asym_at, allowed_at, max_allowed, ratio = _symmetry(J, a)
    shown, allow_shown = pair(asym_at, allowed_at)
    res = CheckResult(
        name="symmetry", passed=passed, max_abs_err=max_asym,
        max_rel_err=None, max_ulp=None,
        tolerance={"formula": "|J_ik - J_ki| <= allowance_ik + allowance_ki",
                   "atol": max_allowed},
        worst={"row": int(case.rows[pos[0]]), "index": [int(pos[1]), int(pos[2])],
               "ratio": ratio},
        measured=f"|J_ik - J_ki| = {shown}", allowed=allow_shown,
        statement="the computed softmax Jacobian is symmetric", score=ratio)
    if not res.passed:
        res.failures.append(Failure("symmetry", row=int(case.rows[pos[0]]),
                                    index=(int(pos[1]), int(pos[2])), computed=float(J[pos]),
                                    exact=float(J[pos[0], pos[2], pos[1]])))
    return res


def jacobian_zero_sums(case: JacobianCase) -> CheckResult:
    if not case.dense:
        p = case.judged_probe()
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
        res.merge_data = {"rows": _sums_part(res), "cols": _sums_part(resc)}
        _zero_sums_cols(res)
    return res


def _sums_part(res: CheckResult) -> tuple:
    return (res.passed, res.max_abs_err, res.score, res.failures, res.measured, res.allowed,
            res.worst)


def _zero_sums_cols(res: CheckResult) -> None:
    """The rows' sums (J 1 = 0) and the columns' (softmax: 1^T J = 0) as one check: the
    headline is the worse of the two by error / allowance."""
    rows, cols = res.merge_data["rows"], res.merge_data["cols"]
    w = cols if cols[2] > rows[2] else rows
    res.passed = rows[0] and cols[0]
    res.max_abs_err = max(rows[1], cols[1])
    res.score, res.measured, res.allowed, res.worst = w[2], w[4], w[5], w[6]
    res.failures = rows[3] + cols[3]


def merge_zero_sums(out: CheckResult, parts: list[CheckResult], top: int) -> None:
    if not all("cols" in p.merge_data for p in parts):
        return  # log-softmax (rows only) or probes: merged as any check
    rows = [p.merge_data["rows"] for p in parts]
    cols = [p.merge_data["cols"] for p in parts]
    out.merge_data = {key: (all(q[0] for q in qs), max(q[1] for q in qs),
                            *max(qs, key=lambda q: q[2])[2:])
                      for key, qs in (("rows", rows), ("cols", cols))}
    _zero_sums_cols(out)


def jacobian_shift_invariance(case: JacobianCase) -> CheckResult:
    return shift_invariance(case, case.quantity + (" (v^T J u on the probes)"
                                                   if not case.dense else ""))
