"""What the derivative commands' checks share: finite-difference results (each estimate with
its error bound), sums of rows to a stated accuracy, and the per-row random numbers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import finite_diff
from ..blocks import blocks
from ..errors_ulp import error_ratio
from ..exceptions import InputError
from ..impls import Implementation
from ..results import CheckResult, Failure
from ..sentences import pair
from .common import fmt, score


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
    worst = {"row": int(rows[pos[0]]), "index": index_of(pos) if index_of else None,
             "ratio": m["ratio_at"]}
    shown, allow_shown = pair(diff_at, allow_at)
    res = CheckResult(
        name="finite_difference", passed=passed, max_abs_err=m["max_diff"],
        max_rel_err=m["max_rel"], max_ulp=None,
        tolerance={"formula": "|computed - FD| <= FD error bound + the computed value's allowance",
                   "method": f0.method, "step": float(np.max(f0.step)),
                   "expected_accuracy": f0.expected_accuracy, "atol": m["max_allow"]},
        worst=worst, measured=f"|c - FD| = {shown} ({f0.method})",
        allowed=f"{allow_shown} (FD error {fmt(err_at)})", statement=statement,
        score=m["ratio_at"])
    res.details["fd"] = {"method": f0.method, "expected_accuracy": f0.expected_accuracy,
                         "max_fd_error_bound": m["max_err"]}
    if not passed:
        c_at = computed[pos] if mask is None or mask[pos] else 0.0
        e_at = est[pos] if mask is None or mask[pos] else 0.0
        res.failures.append(Failure(
            "fd", row=int(rows[pos[0]]), index=worst["index"], computed=float(c_at),
            exact=float(e_at), error=float(diff_at), allowance=float(allow_at),
            extra={"fd_error": float(err_at), "method": f0.method}))
    return res




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
        ratio = error_ratio(diff, allow)
        ae = np.abs(est)
        rel = diff / ae
        if not (ae > 0).all():
            rel = np.where(ae > 0, rel, diff)
    return diff, allow, np.nan_to_num(ratio, nan=np.inf, posinf=np.inf), rel, err


def _fd_maxima(computed, est, err_fd, floor, allowed, mask) -> dict:
    """The reductions :func:`fd_result` reports, a block of rows at a time (the arrays as
    2-D (N, last axis) views): maxima, whether every entry passes, and the worst entry (the
    first largest ratio) with its difference, allowance and FD error."""
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
    return _fd(finite_diff.jacobian, impl, f, _point(x, method, impl), method)


def fd_directional(impl: Implementation, g, x, u, method):
    return _fd(finite_diff.directional, impl, g, _point(x, method, impl), u, method)


def _point(x, method: str, impl: Implementation) -> np.ndarray:
    """Where the implementation's forward (softmax or log-softmax, both shift-invariant) is
    differentiated: at x for the complex step, at x - max(x) (:func:`at_gaps`) for a real
    step. A real step scales with the point, and at x near 10^4 a step scaled by |x| was 7.4
    wide, far beyond the scale softmax varies on: the Richardson estimate (torch and jax take
    no complex step) missed by ten times its error bound. At x - max(x) the steps follow the
    gaps x_i - max(x), as the allowances do, and the derivatives are those at x. The complex
    step (no subtraction, a step of 10^-20 of the scale) needs no shift, and keeps f at x: a
    forward that is not finite near x (exp(x) without the shift) says so."""
    try:
        real = finite_diff.resolve_method(method, impl.complex_ok) != "complex"
    except ValueError:  # an unknown method: finite_diff says so
        real = False
    return at_gaps(x) if real else np.asarray(x, dtype=np.float64)


def at_gaps(x) -> np.ndarray:
    """x - max(x) over its finite entries (masked -inf entries stay -inf). Forming
    x_i - max(x) rounds by at most u |x_i - max(x)|, which the finite difference's input
    model (an error of eps max(1, max|x|) per coordinate) covers."""
    x = np.asarray(x, dtype=np.float64)
    fin = np.isfinite(x)
    if not fin.any():
        return x
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(fin, x - np.max(x[fin]), x)


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
    ratio = error_ratio(sums, allowed)
    pos = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    shown, allow_shown = pair(float(sums[pos]), float(allowed[pos]))
    res = CheckResult(
        name=name, passed=bool(np.all(ok)), max_abs_err=float(np.max(sums)),
        max_rel_err=None, max_ulp=None,
        tolerance={"formula": "sum of the summed entries' allowances", "atol": float(np.max(allowed))},
        worst={"row": int(rows[pos[0]]), "index": int(pos[1]) if len(pos) > 1 else None,
               "ratio": score(ratio, pos)},
        measured=f"|{label}| = {shown}", allowed=allow_shown,
        statement=statement, score=score(ratio, pos))
    if not res.passed:
        res.failures.append(Failure(
            "sum", row=int(rows[pos[0]]), index=int(pos[1]) if len(pos) > 1 else None,
            error=float(sums[pos]), allowance=float(allowed[pos]), extra={"label": label}))
    return res


@dataclass
class _Ok:
    ok: np.ndarray
