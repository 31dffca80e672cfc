"""The checks of ``loss``: the gradient -t / z against the exact quotient and a directional
finite difference, shift invariance, and the input conditions of the derivation: z_i = 0 or
below its rounding floor where t_i != 0 (``zero_condition``), z_i <= 0 where t_i != 0
(``domain``)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..causes import cause
from .. import finite_diff
from ..ddmath import fsum_rows
from ..dtypes import DtypeInfo
from ..errors_ulp import Comparison, apply_overrides, compare
from ..exceptions import ImplementationError
from ..impls import vjp_at
from ..reference import (ExactSoftmax, exact_grad_x, exact_loss_grad, exact_softmax, exact_vjp,
                         shifted_softmax, shifted_vjp)
from ..results import INDEX_LIST_MAX, LIST_MAX, CheckResult, Failure, Finding, Note
from ..sentences import DOMAIN_ITEMS
from ..coherence import add_drift, factor_caps, shared_factor, widened, with_coherence
from ..tolerance import grad_x_tolerance, quotient_tolerance, rounding_floor
from .common import (Case, add_run_findings, comparison_result, fmt, headline_from,
                     shift_invariance, worst_failure)
from .worst import top_entries
from .fd import fd_result, row_rng

# --- loss ---------------------------------------------------------------------------------------


def loss_z(X, T, V, mode: str, info: DtypeInfo, dps: int, engine: str = "auto",
           progress=None, shift: tuple | None = None) -> dict:
    """z from x: the exact VJP v J(x) (``mode`` "vjp") or softmax(x) ("softmax"), the rounded z
    the implementation gets, its rounding floor, and what the zero condition reports.
    ``shift`` = (X0, c, base case): X is the rounded X0 + c, its reference derived from the
    base case's where that is exact."""
    if mode == "vjp":
        ex = (exact_vjp(X, V, dps, progress, engine=engine) if shift is None else
              shifted_vjp(shift[0], X, shift[1], V, shift[2].vjp, dps, info.name, engine))
        z_exact, exact_s = ex.z_hi, ex.softmax
        floor = rounding_floor(ex.softmax.s_hi, V, ex.abs_dot, info)
        extra = dict(V=V, dot=ex.dot, dot_str=ex.dot_str, exact_zero=ex.exact_zero, vjp=ex)
    else:
        exact_s = (exact_softmax(X, dps, progress, engine=engine) if shift is None else
                   shifted_softmax(shift[0], X, shift[1], shift[2].exact_s, dps, info.name,
                                   engine))
        z_exact = exact_s.s_hi
        floor = np.full(z_exact.shape, info.eta / 2)
        extra = {}
    return dict(X=X, Z=info.round64(z_exact), z_exact=z_exact, floor=floor,
                exact_s=exact_s, **extra)


@dataclass(kw_only=True)
class LossCase(Case):
    command = "loss"  # not a field: the command, for smcheck.memory's figures

    Z: np.ndarray  # z rounded to the dtype, as float64 (what the implementation gets)
    T: np.ndarray
    mode: str  # "vjp" | "given" | "softmax"
    g: np.ndarray  # computed gradient
    z_exact: np.ndarray  # exact z (float64 hi)
    floor: np.ndarray  # rounding floor of z per entry (0 where z is given exactly)
    X: np.ndarray | None = None
    V: np.ndarray | None = None
    dot: np.ndarray | None = None  # <v, s> per row (vjp mode)
    dot_str: list | None = None
    exact_zero: list | None = None  # per row (vjp mode)
    exact_s: ExactSoftmax | None = None  # the exact softmax of x (vjp and softmax modes)
    vjp: object = None  # the exact VJP (vjp mode)
    fd_method: str = "auto"
    _cmp: Comparison | None = field(default=None, repr=False)
    _grad_x: Comparison | None = field(default=None, repr=False)
    #: where the gradient in x was left out because -t_i/z_i lies beyond the dtype's range:
    #: the first such (row position, index, exact -t_i/z_i), or None
    _beyond: tuple | None = field(default=None, repr=False)
    #: whether every row's gradient in x was left out (nothing of it was judged)
    _none_judged: bool = field(default=False, repr=False)
    _drift_G: np.ndarray | None = field(default=None, repr=False)  # smcheck.coherence

    @property
    def exact_softmax(self) -> ExactSoftmax:
        return self.exact_s

    @property
    def valid(self) -> np.ndarray:
        """Entries where -t/z is defined: z != 0 (t_i = 0 there gives 0); with --allow-ftz
        also z_i not subnormal (flush-to-zero hardware reads it as 0)."""
        if self.ftz:
            return np.abs(self.Z) >= self.info.tiny
        return self.Z != 0

    @property
    def cmp(self) -> Comparison:
        if self._cmp is None:
            hi, lo = exact_loss_grad(self.Z, self.T)
            ok = self.valid
            hi, lo = np.where(ok, hi, 0.0), np.where(ok, lo, 0.0)
            g = np.where(ok, self.g, 0.0)
            tol = apply_overrides(quotient_tolerance(self.info, self.ftz), self.overrides)
            self._cmp = compare(g, hi, lo, tol, self.info)
        return self._cmp

    def evaluate(self, Z: np.ndarray) -> np.ndarray:
        """The implementation's gradient -t / z at Z (values of the dtype)."""
        info = self.info
        g = np.asarray(self.impl.loss_grad(Z.astype(info.np_dtype), self.T, info))
        if g.shape != Z.shape:
            raise ImplementationError(f"--impl {self.impl.name} returned shape {g.shape[1:]}"
                                      f" for the loss gradient: expected {Z.shape[1:]}")
        return g.astype(np.float64)

    def at(self, Xs: np.ndarray, c: np.ndarray) -> "LossCase":
        """The case at the shifted rows Xs = round(X + c): z recomputed from them."""
        parts = loss_z(Xs, self.T, self.V, self.mode, self.info, self.dps, self.engine,
                       shift=(self.X, c, self))
        return replace(self, **parts, g=self.evaluate(parts["Z"]), _cmp=None, _grad_x=None,
                       _drift_G=None)

    def cause(self, r: int, i: int) -> str:
        cmp = self.cmp
        if cmp.ok[r, i]:
            return ""
        z, c = self.Z[r, i], cmp.computed[r, i]
        if not np.isfinite(c) and 0 < abs(z) < self.info.tiny:
            return cause("flush-to-zero", f"z_i = {fmt(z)} is subnormal in {self.info.name} "
                         "and was read as 0 (denormals-are-zero; --allow-ftz accepts it)")
        return ""

    @property
    def grad_x(self) -> Comparison | None:
        """z = softmax(x) only: the gradient in x, s * sum(t) - t. Built-ins compute it
        directly; any other loss gradient g is taken back through the softmax at z, the
        forward value the loss was given (autograd's saved output), z * (g - <g, z>) in the
        dtype. (Back through a softmax recomputed in the dtype instead, g_j z'_j = -t_j z'_j / z_j
        carries the softmax's error at each target j, u |x_j - max| and more, into every
        entry: 12 % in bfloat16 at a gap of 75, whatever g.)"""
        if self.mode != "softmax":
            return None
        if self._grad_x is None:
            info, X, T = self.info, self.X, self.T
            dt = info.np_dtype
            if self.impl.grad_x_from_softmax:
                s = self.impl.softmax(X.astype(dt), info, False).astype(info.accumulator)
                Ta = T.astype(info.accumulator)
                comp = (s * np.sum(Ta, axis=-1, keepdims=True) - Ta).astype(dt)
            else:
                # where t_i = 0 the term t_i log z_i is absent: its gradient is 0 (-0/0 is nan)
                g = np.where(T == 0, 0.0, self.g)
                with np.errstate(all="ignore"):
                    comp = vjp_at(self.Z, g, info)
            hi, lo = exact_grad_x(X, T, self.dps, self.engine, self.exact_s)
            if not self.impl.grad_x_from_softmax:
                # back through -t/z where z_i = 0 under t_i != 0: inf * 0, no gradient to judge
                # (the zero condition reports those rows), nor where -t_i/z_i is not judged
                # (--allow-ftz: a subnormal z_i, read as 0); and where the exact -t_i/z_i lies
                # beyond the dtype's range, so that its correctly rounded value is infinite
                # (0.5 / 5e-6 in float16): the gradient in x cannot be formed through it in
                # the dtype, whatever the implementation. Those rows are left out.
                with np.errstate(over="ignore", invalid="ignore"):
                    beyond = (T != 0) & (self.Z > 0) & ~np.isfinite(info.round64(self.cmp.ref))
                undefined = np.any((T != 0) & (~(self.Z > 0) | ~self.valid | beyond), axis=-1)
                comp = np.where(undefined[:, None], hi, comp)
                self._none_judged = bool(undefined.all())
                self._beyond = None
                if beyond.any():
                    r, i = (int(k) for k in np.argwhere(beyond)[0])
                    self._beyond = (r, i, float(self.cmp.ref[r, i]))
            ex, c64 = self.exact_s, comp.astype(np.float64)

            def make(G):  # G: where the rows' sums may drift (smcheck.coherence)
                self._drift_G = G
                tol = grad_x_tolerance(ex.d, ex.s_hi, T, info, self.ftz)
                if G is not None:  # s (1 + delta) sum(t) - t: + delta s sum(t)
                    q = ex.s_hi * np.sum(T, axis=-1, keepdims=True)
                    tol = widened(tol, shared_factor(
                        c64 - hi - lo, q, None, factor_caps(ex.d, ex.s_hi, info, G,
                                                            ftz=self.ftz)))
                return compare(c64, hi, lo, apply_overrides(tol, self.overrides), info)

            self._grad_x = with_coherence(make, ex.d, info, lambda c: ~np.all(c.ok, axis=-1))
        return self._grad_x

    def extra_failures(self) -> list[Failure]:
        """What fails beside the loss gradient itself: the gradient in x (softmax mode)."""
        gx = self.grad_x
        if gx is None or gx.passed:
            return []
        w = gx.worst_index()
        return [Failure("grad_x", row=int(self.rows[w[0]]), index=int(w[1]),
                        computed=float(gx.computed[w]), exact=float(gx.ref[w]),
                        error=float(gx.abs_err[w]), allowance=float(gx.allowed[w]))]


def loss_reference(case: LossCase) -> CheckResult:
    cmp = case.cmp
    res = comparison_result("reference", cmp, case.info, case.rows,
                            f"{case.impl.name} -t / z in {case.info.name} agrees with the exact "
                            "quotient for the z it was given, entry by entry")
    res.entries = top_entries(cmp, case.Z, case.rows, case.top, case.cause)
    if not cmp.passed:
        res.failures.append(worst_failure(cmp, case.rows, case.cause(*cmp.worst_index())))
    add_run_findings(res, case.impl, case.g, case.info, case.strict_dtype)
    daz = ~cmp.ok & ~np.isfinite(cmp.computed) & (np.abs(case.Z) > 0) & (
        np.abs(case.Z) < case.info.tiny)
    if daz.any():
        r, i = np.argwhere(daz)[0]
        res.findings.append(Finding(
            "flush_to_zero", int(daz.sum()), int(daz.size),
            "flush-to-zero: {count} entr{ies} with a subnormal z_i gave a non-finite gradient, "
            "e.g. {example}: the arithmetic reads subnormal inputs as 0 (denormals-are-zero, "
            "as GPU kernels and XLA on the CPU do); --allow-ftz accepts it",
            f"row {case.rows[r]}, index {i}: z = {fmt(case.Z[r, i])}, computed "
            f"{fmt(cmp.computed[r, i])}", fails=True))
    skipped = (case.Z != 0) & ~case.valid
    if skipped.any():
        r, i = np.argwhere(skipped)[0]
        res.findings.append(Finding(
            "ftz_skipped", int(skipped.sum()), int(skipped.size),
            "{count} entr{ies} with a subnormal z_i not judged (--allow-ftz: flush-to-zero "
            "hardware reads them as 0), e.g. {example}",
            f"row {case.rows[r]}, index {i}: z = {fmt(case.Z[r, i])}"))
    gx = case.grad_x
    res.details["grad_x"] = None  # z = softmax(x) only
    if gx is not None:
        res.details["grad_x"] = {"statement": "gradient in x: s * sum(t) - t",
                                 "passed": gx.passed, **gx.maxima()}
        headline_from(res, gx, case.rows, "gradient in x")
        add_drift(res, case)
        lines = case.extra_failures()
        if lines:
            res.passed = False
            res.failures += lines
        elif not case._none_judged:
            res.notes.append(Note("grad_x", {"max_ulp": gx.maxima()["max_ulp"]}))
        if case._beyond is not None:
            r, i, q = case._beyond
            res.notes.append(Note("grad_x_beyond", {"row": int(case.rows[r]), "index": i,
                                                    "quotient": q, "dtype": case.info.name}))
    return res


def loss_fd(case: LossCase) -> CheckResult:
    ests, vals, allowed = [], [], []
    for r in range(case.Z.shape[0]):
        rng = row_rng(case.seed, 11, case.rows[r])
        z, t = case.Z[r], case.T[r]
        # the complex step must stay off log's branch cut; a gradient beyond the dtype's range
        # is correctly infinite (the reference check judges it) and has no finite difference
        with np.errstate(over="ignore"):
            in_range = np.isfinite(case.info.round64(case.cmp.ref[r]))
        usable = case.valid[r] & (z > 0) & in_range
        # differentiate in relative coordinates z_i (1 + rho_i): a step of 1e-20 in rho is
        # tiny for every z_i however small, and d/dh l(z (1 + h r)) = sum_i g_i z_i r_i
        r_dir = np.where(usable, rng.standard_normal(z.shape[0]), 0.0)
        tt = np.where(usable, t, 0.0)
        zz = np.where(usable, z, 1.0)

        # log(z (1 + R)) as log z + log1p(R): the product z R (the complex step's imaginary
        # part z h r) would underflow where z is tiny (float64 z_i = 1e-310: h z r = 1e-330)
        lz = np.log(zz)

        def loss(R, tt=tt, lz=lz):
            return -np.sum(tt * (lz + np.log1p(R)), axis=-1)

        ests.append(finite_diff.directional(loss, np.zeros_like(zz), r_dir, case.fd_method))
        # <g, w> with w = z r, as (g z) r: g_i z_i is about -t_i, while z_i r_i may lie in the
        # subnormal range and lose its digits
        gz = np.where(usable, case.g[r], 0.0) * zz
        vals.append(float(fsum_rows(gz * r_dir)))
        allowed.append(float(np.sum(zz * np.where(usable, case.cmp.allowed[r], 0.0)
                                    * np.abs(r_dir))))
    res = fd_result("finite_difference", "<D_z l, w> agrees with the directional finite "
                    "difference of l(z + h w, t) along a random w = z * r (entries with z_i > 0)",
                    np.array(vals), ests, np.array(allowed), case.rows)
    return res


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
        name="zero_condition", passed=not bad, kind="input", max_abs_err=None, max_rel_err=None, max_ulp=None,
        tolerance={"formula": "no index with t_i != 0 where z_i = 0 or |z_i| <= its rounding "
                   "floor u s_i (|v_i| + sum_j |v_j| s_j)"},
        worst=({"row": bad[0]["row"], "index": bad[0]["index"]} if bad else None),
        measured=_zero_words(len(exact0), len(unreliable)), allowed="none where t_i != 0",
        statement="z_i = 0 exactly when v_i = <v, s>; near it the sign of z_i and -t_i/z_i are "
        "unreliable")
    for e in bad[:ZERO_LINES]:
        res.failures.append(Failure(
            "zero_condition", row=e["row"], index=e["index"], exact=e["z_i"],
            allowance=e["floor"], extra={k: e[k] for k in ("kind", "t_i", "v_i", "<v,s>")
                                         if k in e}))
    res.details["condition_count"] = len(bad)
    # the lists of [row, index] are cut (a batch can have an exact zero in every entry); the
    # counts cover every entry
    res.details["zero_condition"] = {"exact_zero_indices": exact0[:INDEX_LIST_MAX],
                                     "exact_zero_count": len(exact0),
                                     "unreliable_indices": unreliable[:INDEX_LIST_MAX],
                                     "unreliable_count": len(unreliable),
                                     "entries": entries[:LIST_MAX]}
    return res


#: failure lines of the zero condition: the first entries where t_i != 0, in row order
ZERO_LINES = 10


def _zero_words(exact: int, unreliable: int) -> str:
    return f"{exact} exact zero(s), {unreliable} below the floor"


def merge_zero_condition(out: CheckResult, parts: list[CheckResult], top: int) -> None:
    zc = out.details["zero_condition"]
    out.measured = _zero_words(zc["exact_zero_count"], zc["unreliable_count"])
    first = next((p for p in parts if not p.passed), None)
    out.worst = None if first is None else first.worst
    out.failures = [f for p in parts for f in p.failures][:ZERO_LINES]




def loss_domain(case: LossCase) -> CheckResult:
    bad = (case.T != 0) & ~(case.Z > 0)
    idx = np.argwhere(bad)
    res = CheckResult(
        name="domain", passed=not idx.size, kind="input", max_abs_err=None, max_rel_err=None, max_ulp=None,
        tolerance={"formula": "z_i > 0 wherever t_i != 0"},
        worst=({"row": int(case.rows[idx[0][0]]), "index": int(idx[0][1])} if idx.size else None),
        measured=_domain_words(len(idx)), allowed="0",
        statement="log z_i is defined wherever t_i != 0 (z_i > 0)")
    res.merge_data = {"count": len(idx), "items": [
        (int(case.rows[r]), int(i), float(case.Z[r, i]), float(case.T[r, i]))
        for r, i in idx[:DOMAIN_ITEMS]]}
    res.details["condition_count"] = len(idx)
    res.details["domain_violations"] = [[int(case.rows[r]), int(i)] for r, i in idx[:LIST_MAX]]
    if idx.size:
        res.failures.append(_domain_record(res.merge_data))
    return res




def _domain_words(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'} with z_i <= 0 and t_i != 0"


def _domain_record(d: dict) -> Failure:
    return Failure("domain", count=d["count"], extra={"items": d["items"][:DOMAIN_ITEMS]})


def merge_domain(out: CheckResult, parts: list[CheckResult], top: int) -> None:
    d = {"count": sum(p.merge_data["count"] for p in parts),
         "items": [i for p in parts for i in p.merge_data["items"]][:DOMAIN_ITEMS]}
    out.measured = _domain_words(d["count"])
    first = next((p for p in parts if not p.passed), None)
    out.worst = None if first is None else first.worst
    out.failures = [_domain_record(d)] if d["count"] else []
    out.merge_data = d




def loss_shift_invariance(case: LossCase) -> CheckResult | None:
    if case.mode == "given":
        return None  # z given: no x to shift
    return shift_invariance(case, "-t / z" + (" (z = v J(x))" if case.mode == "vjp" else
                                              " (z = softmax(x)) and its gradient in x"))
