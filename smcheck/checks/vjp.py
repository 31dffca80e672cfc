"""The checks of ``vjp``: z = v J = s * (v - <v, s>) against the exact VJP and a directional
finite difference, sum z = 0, and shift invariance."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..causes import cause
from ..ddmath import fsum_rows
from ..errors_ulp import Comparison, apply_overrides, compare
from ..exceptions import ImplementationError
from ..reference import shifted_vjp
from ..results import CheckResult
from ..coherence import add_drift, factor_caps, shared_factor, widened, with_coherence
from ..tolerance import vjp_tolerance
from .common import (Case, add_run_findings, comparison_result, flushed, fmt, ftz_cause,
                     shift_invariance, worst_failure)
from .worst import top_entries
from .fd import fd_directional, fd_result, row_rng, sum_check

# --- vjp ----------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class VjpCase(Case):
    command = "vjp"  # not a field: the command, for smcheck.memory's figures

    X: np.ndarray
    V: np.ndarray
    exact: "object"  # ExactVJP
    z: np.ndarray  # computed
    fd_method: str
    _cmp: Comparison | None = field(default=None, repr=False)
    _drift_G: np.ndarray | None = field(default=None, repr=False)  # smcheck.coherence

    @property
    def exact_softmax(self):
        return self.exact.softmax

    @property
    def cmp(self) -> Comparison:
        if self._cmp is None:
            ex = self.exact

            def make(G):  # G: where the rows' sums may drift (smcheck.coherence)
                self._drift_G = G
                sm = ex.softmax
                tol = vjp_tolerance(sm.d, sm.s_hi, self.V, ex.abs_dot, self.info, self.ftz)
                if G is not None:  # z at s (1 + delta): z + delta s (v - 2a) - delta^2 s a
                    a = ex.dot[:, None]
                    tol = widened(tol, shared_factor(
                        self.z - ex.z_hi - ex.z_lo, sm.s_hi * (self.V - 2 * a), sm.s_hi * a,
                        factor_caps(sm.d, sm.s_hi, self.info, G, ftz=self.ftz)))
                return compare(self.z, ex.z_hi, ex.z_lo, apply_overrides(tol, self.overrides),
                               self.info)

            self._cmp = with_coherence(make, ex.softmax.d, self.info,
                                       lambda c: ~np.all(c.ok, axis=-1))
        return self._cmp

    def evaluate(self, X: np.ndarray) -> np.ndarray:
        """The implementation's VJPs at X (values of the dtype) with this case's v."""
        z = np.asarray(self.impl.vjp(X.astype(self.info.np_dtype), self.V, self.info))
        if z.shape != X.shape:
            raise ImplementationError(f"--impl {self.impl.name} returned shape {z.shape[1:]}"
                                      f" for the VJP: expected {X.shape[1:]}")
        return z.astype(np.float64)

    def at(self, Xs: np.ndarray, c: np.ndarray) -> "VjpCase":
        """The case at the shifted rows Xs = round(X + c), with the same v."""
        exact = shifted_vjp(self.X, Xs, c, self.V, self.exact, self.dps, self.info.name,
                            self.engine)
        return replace(self, X=Xs, exact=exact, z=self.evaluate(Xs), _cmp=None,
                       _drift_G=None)

    @property
    def flushed(self) -> np.ndarray:
        """Entries a flush to zero explains: z_i itself subnormal and computed 0, or computed
        0 where s_i is subnormal (flushed before the product)."""
        cmp, info = self.cmp, self.info
        s = np.abs(self.exact.softmax.s_hi)
        with np.errstate(invalid="ignore"):
            return flushed(cmp.computed, cmp.ref, info) | (
                (cmp.computed == 0) & (cmp.ref != 0) & (s >= info.eta / 2) & (s < info.tiny))

    def cause(self, r: int, i: int) -> str:
        cmp = self.cmp
        if np.isnan(cmp.computed[r, i]):
            return cause("non-finite softmax", "computed nan")
        if cmp.ok[r, i]:
            return ""
        if self.flushed[r, i]:
            return (ftz_cause(cmp.computed[r, i], cmp.ref[r, i], self.info) or
                    cause("flush-to-zero", f"s_{i} = {fmt(self.exact.softmax.s_hi[r, i])} is "
                          f"subnormal in {self.info.name}, so z_{i} came out 0 (--allow-ftz "
                          "accepts it)"))
        return ""


def vjp_reference(case: VjpCase) -> CheckResult:
    cmp = case.cmp
    res = comparison_result("reference", cmp, case.info, case.rows,
                            f"{case.impl.name} v J(x) in {case.info.name} agrees with the exact "
                            "s * (v - <v, s>), entry by entry", case.flushed)
    res.entries = top_entries(cmp, case.X, case.rows, case.top, case.cause)
    if not cmp.passed:
        res.failures.append(worst_failure(cmp, case.rows, case.cause(*cmp.worst_index())))
    add_run_findings(res, case.impl, case.z, case.info, case.strict_dtype)
    add_drift(res, case)
    return res


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


def vjp_zero_sum(case: VjpCase) -> CheckResult:
    sums = fsum_rows(case.z)
    return sum_check("zero_sum", "sum_i z_i = 0", sums, np.sum(case.cmp.allowed, axis=-1),
                     case.rows, "sum z")


def vjp_shift_invariance(case: VjpCase) -> CheckResult:
    return shift_invariance(case, "v J(x)")
