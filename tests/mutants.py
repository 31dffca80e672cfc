"""A mutation corpus for smcheck: realistic wrong softmax code ("mutants") next to correct code
("controls"), the inputs to run them on, and an independent criterion for when a mutant's error
is real.

Mutants (each the bug as someone would write it):

* forward: no max shift, exp(x) / sum exp(x); the log of the softmax for log-softmax; float32
  arithmetic behind a float64 API; normalising a batch over the wrong axis; dividing by the max
  instead of the sum; the result rolled by one place; exp(x - logsumexp(x)) with logsumexp
  rounded at the magnitude of max(x) (its error grows with |x|, the pattern of mlx issue 4169);
  the normaliser summed one term after the other in float16/bfloat16 (it stalls once the sum
  outgrows its terms: executorch PR 20089, tract PR 2586); subnormal results flushed to zero;
* log-softmax: x - logsumexp(x) with logsumexp rounded at |max(x)|;
* jacobian: without its diagonal term (-s s^T); with a sign error (s s^T - diag(s)); the
  log-softmax Jacobian transposed (I - s 1^T instead of I - 1 s^T); built on the unshifted
  softmax (right on benign inputs, nan once exp overflows);
* vjp: + for - (s * (v + <v, s>)); without the factor s (v - <v, s>); mean(v) for <v, s>; built
  on the unshifted softmax;
* loss gradient: -z / t and t / z instead of -t / z.

Controls: the correct version of each (stable softmax, diag(s) - s s^T, I - 1 s^T,
s * (v - <v, s>), -t / z) as per-row callables in float64 and float32; formulas in the style of
the frameworks: torch's CPU kernel (a reciprocal and a product; log-softmax (x - max) - log S),
scipy's and jax's ((x - max) - log S for log-softmax), the online softmax of fused attention
kernels (a running max and a rescaled running sum), exp((x - max) - log S) (the max-shifted
division-free form); in float16 and bfloat16 the built-in ``stable`` (float32 sums), a softmax
computed in float32 and rounded once (torch's 16-bit CPU kernels), and one that sums pairwise in
the 16-bit format itself.

"Where its error is real" is decided here, never by smcheck. The subject is run exactly as smcheck
runs it (the input rounded to the dtype, the defined rows only, one row at a time for a callable)
and its output is compared with exact values computed with mpmath at 40 digits. An entry's error
is real when it exceeds ``FAR`` = 10 times a generous rounding budget of a correct method plus
2 eta (eta the dtype's smallest subnormal):

    softmax        u (16 + N + 2 k_i) s_i
    log-softmax    u (16 + N + 2 k_i + |y_i| + log n)       (absolute: log s is judged absolutely)
    Jacobian       u (16 + N + 4 k) (s_i s_k + [i=k] s_i)   (log: s_k + [i=k])
    VJP            u (16 + N + 4 k) s_i (|v_i| + sum_j |v_j| s_j)
    loss gradient  16 u |t_i / z_i|                         (z the rounded z the callable gets)

u is the dtype's unit roundoff, k_i = 2 (|x_i - max| + sum_j s_j |x_j - max|) (what perturbing
each gap x_j - max by a relative u does, twice over), k its maximum over the row. Nothing grows
with |x| itself: the SPEC's verdicts follow the gaps, which is all a max-shifted implementation
rounds. N is the error of summing n positive terms the ways a correct implementation does,
generously: 2 ceil(log2 n) roundings deep (pairwise) plus 10 sqrt(n) u_acc / u (a recursive sum
in an accumulator of unit roundoff u_acc: the dtype's own for float64 and float32, float32's for
the 16-bit formats, whose own accumulation stalls). On ill-conditioned inputs FAR times the
factor in front of the natural size (s_i, 1 + |y_i|, ...) is capped at ``CAP`` = 1/2: an error
of half the value's own size is always real. So is a non-finite output where the exact value is
finite (or the reverse). The criterion is also applied at the two shifted inputs of the SPEC's
``shift_invariance`` property (max(x + c) at log(realmax) * 1.02 + 1 and at log(min subnormal)
* 1.02 - 1), since every verdict covers them: the no-shift mutant is correct to rounding on
x = randn, but not at x + c.

A mutant must FAIL wherever its error is real; where it is not, nothing is asserted (the table
shows smcheck's verdict in lower case). A control must PASS on every input (cases are generated
only where the input has a row with a defined softmax in the dtype), and must itself be within
its budget by this criterion (that keeps the corpus honest). ``RESULTS`` collects one
:class:`Outcome` per case; tests/conftest.py prints them as tables at the end of the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import ml_dtypes
import mpmath
import numpy as np

import smcheck
from smcheck.dtypes import dtype_info
from smcheck.impls import Implementation, get_implementation
from smcheck.presets import PRESETS

FAR = 10.0  # "far more than rounding": this many (generous) rounding budgets
CAP = 0.5  # the relative part of a budget never exceeds this (ill-conditioned inputs)
DPS = 40  # digits of the independent mpmath reference

FORMATS = {"float64": np.dtype(np.float64), "float32": np.dtype(np.float32),
           "float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16)}


def _finfo(dtype: str):
    return ml_dtypes.finfo(FORMATS[dtype]) if dtype == "bfloat16" else np.finfo(FORMATS[dtype])


def unit_roundoff(dtype: str) -> float:
    return math.ldexp(1.0, -(_finfo(dtype).nmant + 1))


def smallest_subnormal(dtype: str) -> float:
    return float(_finfo(dtype).smallest_subnormal)


def round_to(a, dtype: str) -> np.ndarray:
    """``a`` rounded to the dtype (round to nearest, out of range to inf), as float64."""
    with np.errstate(over="ignore"):
        return np.asarray(a, dtype=np.float64).astype(FORMATS[dtype]).astype(np.float64)


def defined_rows(X: np.ndarray) -> np.ndarray:
    """Rows with a defined softmax: no nan, no +inf, not every entry -inf (SPEC)."""
    return np.array([r for r in range(X.shape[0])
                     if not (np.any(np.isnan(X[r])) or np.any(X[r] == np.inf)
                             or np.all(X[r] == -np.inf))], dtype=np.int64)


# --- the independent reference (mpmath) ---------------------------------------------------------


@dataclass
class Exact:
    """Exact softmax quantities of rows of float64 inputs, rounded to float64 at the end."""

    s: np.ndarray
    y: np.ndarray  # log-softmax (-inf where masked)
    om: np.ndarray  # 1 - s_i, without cancellation
    kappa: np.ndarray  # k_i of the module docstring
    s_mp: list = field(repr=False)  # mpf rows, for the VJP


_CACHE: dict = {}


def _exact_row(row: np.ndarray):
    with mpmath.workdps(DPS):
        fin = [v != -np.inf for v in row]
        m = mpmath.mpf(float(max(v for v, f in zip(row, fin) if f)))
        d = [mpmath.mpf(float(v)) - m if f else None for v, f in zip(row, fin)]
        e = [mpmath.exp(di) if di is not None else mpmath.mpf(0) for di in d]
        S = mpmath.fsum(e)
        logS = mpmath.log(S)
        s = [ei / S for ei in e]
        top = int(np.argmax(row))
        rest = mpmath.fsum(ei for j, ei in enumerate(e) if j != top)  # 1 - s_top, no cancellation
        om = [(rest if j == top else S - ei) / S for j, ei in enumerate(e)]
        y = [float(di - logS) if di is not None else -math.inf for di in d]
        return s, [float(v) for v in s], y, [float(v) for v in om]


def exact(X: np.ndarray) -> Exact:
    """Exact softmax of the rows of X (each defined), cached by content."""
    key = (X.shape, X.tobytes())
    if key not in _CACHE:
        rows = [_exact_row(r) for r in X]
        s = np.array([r[1] for r in rows]).reshape(X.shape)
        y = np.array([r[2] for r in rows]).reshape(X.shape)
        om = np.array([r[3] for r in rows]).reshape(X.shape)
        fin = np.isfinite(X)
        with np.errstate(all="ignore"):
            m = np.max(np.where(fin, X, -np.inf), axis=-1, keepdims=True)
            ax = np.where(fin, np.abs(X), 0.0)
            axm = np.where(fin, np.abs(X - m), 0.0)
            wm = np.sum(np.where(s > 0, s * axm, 0.0), axis=-1, keepdims=True)
            kappa = np.where(fin, 2 * (axm + wm), 0.0)
            del ax
        _CACHE[key] = Exact(s, y, om, kappa, [r[0] for r in rows])
    return _CACHE[key]


def sum_budget(n: int, dtype: str) -> float:
    """N of the module docstring: a correct sum of n positive terms, in units of u."""
    u_acc = unit_roundoff(dtype) if dtype in ("float64", "float32") else 2.0 ** -24
    return 2 * math.ceil(math.log2(max(n, 1))) + 10 * math.sqrt(n) * u_acc / unit_roundoff(dtype)


def _ratio(c: np.ndarray, r: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """|c - r| / threshold; inf where exactly one of them is not finite or c is nan."""
    with np.errstate(all="ignore"):
        err = np.where(c == r, 0.0, np.abs(c - r))
        err = np.where(np.isnan(err), np.inf, err)
        return np.where(np.isinf(err), np.inf, err / threshold)


def _rel(rho: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.minimum(FAR * np.where(np.isnan(rho), np.inf, rho), CAP)


def forward_ratio(c, X, dtype, log) -> np.ndarray:
    ex = exact(X)
    u, eta, n = unit_roundoff(dtype), smallest_subnormal(dtype), X.shape[-1]
    N = sum_budget(n, dtype)
    if log:  # absolute, the cap relative to 1 + |y_i|
        ay = np.abs(np.where(np.isfinite(ex.y), ex.y, 0.0))
        rel = _rel(u * (16 + N + 2 * ex.kappa + ay + math.log(n)) / (1 + ay))
        return _ratio(c, ex.y, rel * (1 + ay) + FAR * 2 * eta)
    return _ratio(c, ex.s, _rel(u * (16 + N + 2 * ex.kappa)) * ex.s + FAR * 2 * eta)


def jacobian_ratio(c, X, dtype, log) -> np.ndarray:
    ex = exact(X)
    u, eta, n = unit_roundoff(dtype), smallest_subnormal(dtype), X.shape[-1]
    N = sum_budget(n, dtype)
    s, om = ex.s, ex.om
    eye = np.eye(n)[None]
    with np.errstate(all="ignore"):
        if log:
            J = eye * om[:, None, :] - (1 - eye) * s[:, None, :]
            nat = s[:, None, :] + eye
        else:
            J = -(s[:, :, None] * s[:, None, :])
            idx = np.arange(n)
            J[:, idx, idx] = s * om
            nat = s[:, :, None] * s[:, None, :] + eye * s[:, :, None]
    rel = _rel(u * (16 + N + 4 * np.max(ex.kappa, axis=-1)))[:, None, None]
    return _ratio(c, J, rel * nat + FAR * 2 * eta)


def exact_vjp(X, V) -> np.ndarray:
    ex = exact(X)
    out = np.zeros(X.shape)
    with mpmath.workdps(DPS):
        for r, s in enumerate(ex.s_mp):
            v = [mpmath.mpf(float(a)) for a in V[r]]
            dot = mpmath.fsum(a * b for a, b in zip(v, s))
            out[r] = [float(si * (vi - dot)) for si, vi in zip(s, v)]
    return out


def vjp_ratio(c, X, V, dtype) -> np.ndarray:
    ex = exact(X)
    u, eta, n = unit_roundoff(dtype), smallest_subnormal(dtype), X.shape[-1]
    N = sum_budget(n, dtype)
    s, av = ex.s, np.abs(V)
    nat = s * (av + np.sum(av * s, axis=-1, keepdims=True))
    rel = _rel(u * (16 + N + 4 * np.max(ex.kappa, axis=-1)))[:, None]
    return _ratio(c, exact_vjp(X, V), rel * nat + FAR * 2 * eta)


def loss_ratio(c, Z, T, dtype) -> np.ndarray:
    """Only entries with z != 0 count (-t/z is undefined at 0, SPEC loss)."""
    u, eta = unit_roundoff(dtype), smallest_subnormal(dtype)
    with np.errstate(all="ignore"):
        g = -T / Z
        ratio = _ratio(c, g, FAR * 16 * u * np.abs(g) + FAR * 2 * eta)
    return np.where(Z != 0, ratio, 0.0)


# --- the subjects -------------------------------------------------------------------------------
# Per-row callables get a 1-D numpy array in the dtype and compute in it, like user code would.


def _softmax(x):
    e = np.exp(x - np.max(x))
    return e / np.sum(e)


def stable_softmax(x):
    """Control: exp(x - max) / sum exp(x - max)."""
    return _softmax(x)


def no_max_shift(x):
    """Mutant: exp(x) / sum exp(x), overflows above log(realmax), 0/0 below log(eta)."""
    e = np.exp(x)
    return e / np.sum(e)


def divide_by_max(x):
    """Mutant: exp(x - max) / max exp(x - max): normalised by the max, not the sum."""
    e = np.exp(x - np.max(x))
    return e / np.max(e)


def rolled(x):
    """Mutant: an off-by-one: the stable softmax rolled by one place."""
    return np.roll(_softmax(x), 1)


def float32_accumulation(x):
    """Mutant: computes in float32, returns float64 (a float64 API with float32 inside)."""
    x32 = np.asarray(x, dtype=np.float32)
    e = np.exp(x32 - np.max(x32))
    return (e / np.sum(e, dtype=np.float32)).astype(np.float64)


def log_of_softmax(x):
    """Mutant for log-softmax: log(softmax(x)); -inf where s_i underflows."""
    return np.log(_softmax(x))


def log_softmax_lse(x):
    """Control: x - logsumexp(x), logsumexp shifted by the max."""
    m = np.max(x)
    return x - (m + np.log(np.sum(np.exp(x - m))))


def divfree_softmax(x):
    """Mutant: exp(x - logsumexp(x)), no division; logsumexp = max + log S is rounded at the
    magnitude of max(x), an error that grows with |x| (the built-in ``divfree``)."""
    return np.exp(log_softmax_lse(x))


def torch_style_softmax(x):
    """Control: torch's CPU kernel: exp(x - max), then a reciprocal of the sum and a product."""
    e = np.exp(x - np.max(x))
    return e * (np.ones((), x.dtype) / np.sum(e))


def shifted_log_softmax(x):
    """Control: (x - max) - log(sum exp(x - max)), as torch, scipy and jax compute it."""
    d = x - np.max(x)
    return d - np.log(np.sum(np.exp(d)))


def shifted_divfree_softmax(x):
    """Control: exp((x - max) - log S): division-free, but shifted, so only gaps are rounded."""
    return np.exp(shifted_log_softmax(x))


def online_softmax(x, block=64):
    """Control: the online softmax of fused attention kernels: blocks of the row update a
    running max m and a running sum l rescaled by exp(m_old - m_new); then exp(x - m) / l."""
    m, s = -np.inf, np.zeros((), x.dtype)
    for b in range(0, x.size, block):
        blk = x[b:b + block]
        m_new = max(m, np.max(blk))
        s = s * np.exp(np.asarray(m - m_new, dtype=x.dtype)) + np.sum(np.exp(blk - m_new))
        m = m_new
    return np.exp(x - m) / s


def float32_then_round(x):
    """Control (16-bit formats): computed in float32 and rounded once to the format, as torch's
    CPU kernels do for float16 and bfloat16."""
    x32 = np.asarray(x, dtype=np.float32)
    e = np.exp(x32 - np.max(x32))
    return (e / np.sum(e)).astype(x.dtype)


def _pairwise_sum(a):
    while a.size > 1:  # float16 overflows past 65504: numpy's warning is the expected inf
        if a.size % 2:
            a = np.concatenate([a, np.zeros(1, a.dtype)])
        a = a[0::2] + a[1::2]  # every sum rounded to a's dtype
    return a[0]


def pairwise_16bit(x):
    """Control (16-bit formats): exp in the format, the sum pairwise in the format itself (at
    most ceil(log2 n) roundings deep), the division in the format."""
    e = np.exp(x - np.max(x))
    with np.errstate(over="ignore"):
        return e / _pairwise_sum(e)


def sequential_16bit(x):
    """Mutant (16-bit formats): the sum accumulated one term after the other in the format
    itself, which stalls once the running sum outgrows its terms (executorch PR 20089, tract PR
    2586: a uniform row of 512 in bfloat16 gives 1/256 per entry)."""
    e = np.exp(x - np.max(x))
    return e / np.cumsum(e)[-1]  # add.accumulate: rounded to the format at every step


def flush_to_zero(x):
    """Mutant: the stable softmax on flush-to-zero hardware: subnormal results become 0."""
    s = _softmax(x)
    tiny = _finfo(x.dtype.name).tiny
    return np.where(np.abs(s) < tiny, np.zeros((), s.dtype), s)


def _unshifted(x):
    e = np.exp(x)
    return e / np.sum(e)


class WrongAxis(Implementation):
    """Mutant: a batch softmax normalised along axis 0 (over the rows) instead of each row.

    A per-row callable cannot show this bug, so it is an Implementation (batch in, batch out),
    computed in the dtype."""

    name = "wrong_axis"

    def softmax(self, X, info, log=False):
        with np.errstate(all="ignore"):  # a masked column is -inf - (-inf) = nan
            e = np.exp(X - np.max(X, axis=0, keepdims=True))
            s = e / np.sum(e, axis=0, keepdims=True)
            return np.log(s) if log else s


def jac_textbook(x):
    """Control: diag(s) - s s^T (the diagonal as s_i - s_i^2)."""
    s = _softmax(x)
    return np.diag(s) - np.outer(s, s)


def jac_unshifted(x):
    """Mutant: diag(s) - s s^T from the unshifted exp(x) / sum exp(x): right on benign inputs,
    nan once exp overflows."""
    s = _unshifted(x)
    return np.diag(s) - np.outer(s, s)


def jac_no_diagonal(x):
    """Mutant: -s s^T, the diag(s) term forgotten."""
    s = _softmax(x)
    return -np.outer(s, s)


def jac_sign_error(x):
    """Mutant: s s^T - diag(s), the sign flipped."""
    s = _softmax(x)
    return np.outer(s, s) - np.diag(s)


def logjac(x):
    """Control: the log-softmax Jacobian I - 1 s^T, entry (i, k) = [i=k] - s_k."""
    s = _softmax(x)
    return np.eye(s.size, dtype=s.dtype) - s[None, :]


def logjac_transposed(x):
    """Mutant: I - s 1^T, entry (i, k) = [i=k] - s_i."""
    s = _softmax(x)
    return np.eye(s.size, dtype=s.dtype) - s[:, None]


def vjp(x, v):
    """Control: z = s * (v - <v, s>)."""
    s = _softmax(x)
    return s * (v - np.dot(v, s))


def vjp_unshifted(x, v):
    """Mutant: s * (v - <v, s>) from the unshifted softmax."""
    s = _unshifted(x)
    return s * (v - np.dot(v, s))


def vjp_plus(x, v):
    """Mutant: s * (v + <v, s>), + for -."""
    s = _softmax(x)
    return s * (v + np.dot(v, s))


def vjp_no_s(x, v):
    """Mutant: v - <v, s>, without the factor s."""
    s = _softmax(x)
    return v - np.dot(v, s)


def vjp_mean_v(x, v):
    """Mutant: s * (v - mean(v)), the mean of v for <v, s>."""
    s = _softmax(x)
    return s * (v - np.mean(v))


def loss_grad(z, t):
    """Control: D_z l = -t / z."""
    return -t / z


def loss_grad_neg_z_over_t(z, t):
    """Mutant: -z / t."""
    return -z / t


def loss_grad_t_over_z(z, t):
    """Mutant: t / z, the sign lost."""
    return t / z


@dataclass(frozen=True, eq=False)
class Subject:
    """A mutant or control: what it computes (``command``), how (``impl``: a per-row callable, an
    Implementation or a built-in name), in which dtypes, on which inputs (None: every input of
    its command; a predicate otherwise)."""

    name: str
    kind: str  # "mutant" | "control"
    command: str  # forward | log_softmax | jacobian | log_jacobian | vjp | loss
    impl: object
    dtypes: tuple
    only: object = None  # Input -> bool


def _batch(inp) -> bool:
    return inp.x is not None and np.ndim(inp.x) == 2


def _one_row(inp) -> bool:
    return inp.x is not None and np.ndim(inp.x) == 1


F64, F32, F16, BF16 = "float64", "float32", "float16", "bfloat16"
SUBJECTS = [
    # forward
    Subject("no_max_shift", "mutant", "forward", no_max_shift, (F64, F32)),
    Subject("divide_by_max", "mutant", "forward", divide_by_max, (F64, F32)),
    Subject("rolled", "mutant", "forward", rolled, (F64, F32)),
    Subject("float32_accumulation", "mutant", "forward", float32_accumulation, (F64,)),
    Subject("wrong_axis", "mutant", "forward", WrongAxis(), (F64, F32), only=_batch),
    Subject("divfree_softmax", "mutant", "forward", divfree_softmax, (F64, F32, BF16)),
    Subject("sequential_16bit", "mutant", "forward", sequential_16bit, (F16, BF16)),
    Subject("flush_to_zero", "mutant", "forward", flush_to_zero, (F64, F32)),
    Subject("stable_softmax", "control", "forward", stable_softmax, (F64, F32)),
    Subject("torch_style_softmax", "control", "forward", torch_style_softmax, (F64, F32)),
    Subject("shifted_divfree_softmax", "control", "forward", shifted_divfree_softmax, (F64, F32)),
    Subject("online_softmax", "control", "forward", online_softmax, (F64, F32), only=_one_row),
    Subject("builtin:stable", "control", "forward", "stable", (F16, BF16)),
    Subject("float32_then_round", "control", "forward", float32_then_round, (F16, BF16)),
    Subject("pairwise_16bit", "control", "forward", pairwise_16bit, (F16, BF16)),
    # log-softmax
    Subject("log_of_softmax", "mutant", "log_softmax", log_of_softmax, (F64, F32)),
    Subject("log_softmax_lse", "mutant", "log_softmax", log_softmax_lse, (F64, F32, BF16)),
    Subject("shifted_log_softmax", "control", "log_softmax", shifted_log_softmax, (F64, F32)),
    Subject("builtin:stable", "control", "log_softmax", "stable", (BF16,)),
    # jacobian
    Subject("jac_no_diagonal", "mutant", "jacobian", jac_no_diagonal, (F64, F32)),
    Subject("jac_unshifted", "mutant", "jacobian", jac_unshifted, (F64, F32)),
    Subject("jac_sign_error", "mutant", "jacobian", jac_sign_error, (F64, F32)),
    Subject("jac_textbook", "control", "jacobian", jac_textbook, (F64, F32)),
    Subject("builtin:stable", "control", "jacobian", "stable", ("bfloat16",)),
    Subject("logjac_transposed", "mutant", "log_jacobian", logjac_transposed, (F64, F32)),
    Subject("logjac", "control", "log_jacobian", logjac, (F64, F32)),
    Subject("builtin:stable", "control", "log_jacobian", "stable", ("float16",)),
    # vjp
    Subject("vjp_plus", "mutant", "vjp", vjp_plus, (F64, F32)),
    Subject("vjp_unshifted", "mutant", "vjp", vjp_unshifted, (F64, F32)),
    Subject("vjp_no_s", "mutant", "vjp", vjp_no_s, (F64, F32)),
    Subject("vjp_mean_v", "mutant", "vjp", vjp_mean_v, (F64, F32)),
    Subject("vjp", "control", "vjp", vjp, (F64, F32)),
    Subject("builtin:stable", "control", "vjp", "stable", ("bfloat16",)),
    # loss gradient
    Subject("grad_neg_z_over_t", "mutant", "loss", loss_grad_neg_z_over_t, (F64, F32)),
    Subject("grad_t_over_z", "mutant", "loss", loss_grad_t_over_z, (F64, F32)),
    Subject("loss_grad", "control", "loss", loss_grad, (F64, F32)),
    Subject("builtin:stable", "control", "loss", "stable", ("float16",)),
]

# --- the inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Input:
    """x (1-D or a batch), and for vjp/loss the companions: v, t, or a given z (x None)."""

    name: str
    x: np.ndarray | None
    v: np.ndarray | None = None
    t: np.ndarray | None = None
    z: np.ndarray | None = None


def _randn(seed: int, shape, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape) * scale


def _presets(skip=()) -> list[Input]:
    # large-n (100,000 entries) is left out: the mpmath references would dominate the runtime
    return [Input(f"preset:{p}", PRESETS[p].make()) for p in PRESETS
            if p != "large-n" and p not in skip]


FORWARD_INPUTS = [
    Input("randn-n2", _randn(11, 2)),
    Input("randn-n16", _randn(12, 16)),
    Input("randn-n200-x5", _randn(13, 200, 5.0)),
    Input("randn-n1000-x3", _randn(14, 1000, 3.0)),
    Input("randn-n64-x30", _randn(15, 64, 30.0)),
    Input("randn-n16-plus500", _randn(19, 16, 2.0) + 500.0),  # large logits, no overflow yet
    Input("gradual-underflow", np.array([0.0, -712.0, -720.0, -725.0, -730.0])),  # s subnormal
    Input("subnormal-f32", np.array([0.0, -1.0, -90.0, -95.0, -100.0])),  # s subnormal in f32
    Input("subnormal-16bit", np.array([0.0, -1.0, -12.0, -14.0, -90.0, -95.0])),  # f16, bf16
    Input("equal-1e8", np.array([1e8, 1e8])),  # [0.5, 0.5] to rounding in every dtype
    Input("randn-n16-plus1e4", _randn(41, 16, 2.0) + 1e4),  # |x| large, gaps small
    Input("uniform-n512", np.zeros(512)),  # a 16-bit running sum stalls at 256 (bfloat16)
    Input("randn-n4096", _randn(42, 4096)),
    Input("uniform-n4096", np.zeros(4096)),  # a float16 running sum stalls at 2048
    Input("batch-4x16-x2", _randn(16, (4, 16), 2.0)),
    Input("batch-3x6-x10", _randn(17, (3, 6), 10.0)),
    Input("batch-2x5-equal", np.tile(_randn(18, 5), (2, 1))),
] + _presets()

JACOBIAN_INPUTS = [
    Input("randn-n2", _randn(21, 2)),
    Input("randn-n8", _randn(22, 8)),
    Input("randn-n64-x5", _randn(23, 64, 5.0)),
    Input("batch-3x8-x2", _randn(24, (3, 8), 2.0)),
] + _presets()


def _with_v(inp: Input, seed: int) -> Input:
    return Input(inp.name, inp.x, v=_randn(seed, np.shape(inp.x)))


VJP_INPUTS = [_with_v(inp, 100 + k) for k, inp in enumerate(
    [Input("randn-n1000-x3", _randn(25, 1000, 3.0))] + JACOBIAN_INPUTS)]


def _one_hot(z: np.ndarray, pick=np.argmax) -> np.ndarray:
    """A one-hot target per row, at ``pick`` of the row (the largest entry by default)."""
    z2 = np.atleast_2d(z)
    t = np.zeros(z2.shape)
    for r in range(z2.shape[0]):
        t[r, pick(np.where(np.isfinite(z2[r]), z2[r], -np.inf))] = 1.0
    return t.reshape(np.shape(z))


def _np_softmax(x):
    with np.errstate(all="ignore"):
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        e = np.exp(x - np.max(x, axis=-1, keepdims=True))
        return e / np.sum(e, axis=-1, keepdims=True)


def _loss_inputs() -> list[Input]:
    rng = np.random.default_rng(31)
    x16, x8, xb = _randn(32, 16), _randn(33, 8), _randn(34, (3, 8))
    v8 = _randn(35, 8)
    s8 = _np_softmax(x8)[0]
    z_vjp = s8 * (v8 - np.dot(v8, s8))
    out = [
        Input("onehot-at-max-n16", x16, t=_one_hot(x16)),
        Input("onehot-at-median-n16", x16,
              t=_one_hot(x16, pick=lambda a: int(np.argsort(a)[a.size // 2]))),
        Input("soft-t-n8", x8, t=rng.dirichlet(np.ones(8))),
        # t = z exactly (smcheck's z is the exact softmax rounded): -z/t = -t/z = -1, so that
        # mutant is right here
        Input("t-equals-z-n8", x8, t=exact(x8[None]).s[0]),
        Input("vjp-z-n8", x8, v=v8, t=_one_hot(z_vjp)),
        Input("given-z-n6", None, t=rng.dirichlet(np.ones(6)), z=rng.dirichlet(np.ones(6))),
        Input("batch-3x8", xb, t=_one_hot(xb)),
    ]
    for p in ("overflow", "masked", "one-hot", "fully-masked", "wide-spread"):
        x = PRESETS[p].make()
        out.append(Input(f"preset:{p}", x, t=_one_hot(x)))
    return out


LOSS_INPUTS = _loss_inputs()

INPUTS = {"forward": FORWARD_INPUTS, "log_softmax": FORWARD_INPUTS,
          "jacobian": JACOBIAN_INPUTS, "log_jacobian": JACOBIAN_INPUTS, "vjp": VJP_INPUTS,
          "loss": LOSS_INPUTS}

# --- cases --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Case:
    subject: Subject
    inp: Input
    dtype: str

    @property
    def id(self) -> str:
        return f"{self.subject.command}-{self.subject.name}-{self.dtype}-{self.inp.name}"


def _has_defined_row(inp: Input, dtype: str) -> bool:
    if inp.x is None:
        return True
    return defined_rows(np.atleast_2d(round_to(inp.x, dtype))).size > 0


CASES = [Case(s, inp, d) for s in SUBJECTS for d in s.dtypes for inp in INPUTS[s.command]
         if (s.only is None or s.only(inp)) and _has_defined_row(inp, d)]

# --- running a case -----------------------------------------------------------------------------


def _impl(subject: Subject):
    return get_implementation(subject.impl) if isinstance(subject.impl, str) else subject.impl


def evaluate(subject: Subject, dtype: str, *arrays, log: bool = False) -> np.ndarray:
    """The subject's values on rows (float64 arrays already rounded to the dtype), obtained as
    smcheck obtains them: a batch for an Implementation, one row at a time for a callable."""
    impl, info = _impl(subject), dtype_info(dtype)
    npdt = info.np_dtype
    cmd = subject.command
    with np.errstate(all="ignore"):
        if isinstance(impl, Implementation):
            a = arrays[0].astype(npdt)
            if cmd in ("forward", "log_softmax"):
                out = impl.softmax(a, info, log)
            elif cmd in ("jacobian", "log_jacobian"):
                out = impl.jacobian(a, info, cmd == "log_jacobian")
            elif cmd == "vjp":
                out = impl.vjp(a, arrays[1], info)
            else:
                out = impl.loss_grad(a, arrays[1], info)
            return np.asarray(out).astype(np.float64)
        return np.array([np.asarray(impl(*(a[r].astype(npdt) for a in arrays)), dtype=np.float64)
                         for r in range(arrays[0].shape[0])])


def shift_targets(dtype: str) -> dict:
    """SPEC shift_invariance: max(x + c) just past the overflow threshold, and every entry below
    the underflow threshold."""
    return {"x+c(over)": math.log(float(_finfo(dtype).max)) * 1.02 + 1.0,
            "x+c(under)": math.log(smallest_subnormal(dtype)) * 1.02 - 1.0}


def real_error(case: Case) -> tuple[list[str], float]:
    """Where the subject's error is real (labels of the inputs evaluated: "x" and the two
    shifts of x; a given z has no shifts), and the worst ratio error / threshold (> 1 is
    real)."""
    s, inp, dtype = case.subject, case.inp, case.dtype
    cmd = s.command
    where, worst = [], 0.0

    def note(label, ratio):
        nonlocal worst
        m = float(np.max(ratio)) if ratio.size else 0.0
        worst = max(worst, m)
        if m > 1:
            where.append(label)

    if cmd == "loss" and inp.z is not None:
        Z = np.atleast_2d(round_to(inp.z, dtype))
        T = np.atleast_2d(round_to(np.broadcast_to(inp.t, Z.shape), dtype))
        note("x", loss_ratio(evaluate(s, dtype, Z, T), Z, T, dtype))
        return where, worst
    X0 = np.atleast_2d(round_to(inp.x, dtype))
    rows = defined_rows(X0)
    companion = inp.v if cmd in ("vjp", "loss") else None
    V = None if companion is None else round_to(np.broadcast_to(companion, X0.shape), dtype)[rows]
    T = None if cmd != "loss" else round_to(np.broadcast_to(inp.t, X0.shape), dtype)[rows]
    X0 = X0[rows]
    a = np.max(X0, axis=-1, keepdims=True)
    inputs = [("x", X0)]
    for label, target in shift_targets(dtype).items():
        with np.errstate(over="ignore", invalid="ignore"):
            inputs.append((label, round_to(X0 + (target - a), dtype)))
    for label, X in inputs:
        keep = defined_rows(X)
        X = X[keep]
        if cmd in ("jacobian", "log_jacobian"):
            note(label, jacobian_ratio(evaluate(s, dtype, X), X, dtype, cmd == "log_jacobian"))
        elif cmd == "vjp":
            note(label, vjp_ratio(evaluate(s, dtype, X, V[keep]), X, V[keep], dtype))
        elif cmd == "loss":
            Z = round_to(exact_vjp(X, V[keep]) if V is not None else exact(X).s, dtype)
            note(label, loss_ratio(evaluate(s, dtype, Z, T[keep]), Z, T[keep], dtype))
        else:
            log = cmd == "log_softmax"
            note(label, forward_ratio(evaluate(s, dtype, X, log=log), X, dtype, log))
    return where, worst


def run_smcheck(case: Case):
    """smcheck's report for the case, through the public API."""
    s, inp = case.subject, case.inp
    impl = s.impl
    opts = {"dtype": case.dtype, "top": 3}
    if s.command in ("forward", "log_softmax"):
        return smcheck.check(s.command, inp.x, impl=impl, **opts)
    if s.command in ("jacobian", "log_jacobian"):
        return smcheck.check("jacobian", inp.x, impl=impl, log=s.command == "log_jacobian",
                             **opts)
    if s.command == "vjp":
        return smcheck.check("vjp", inp.x, impl=impl, v=inp.v, **opts)
    extra = {"v": inp.v} if inp.v is not None else {"z": inp.z} if inp.z is not None else {}
    return smcheck.check("loss", inp.x, impl=impl, t=inp.t, **extra, **opts)


@dataclass
class Outcome:
    """One row of the table."""

    case_id: str
    kind: str
    command: str
    subject: str
    dtype: str
    input: str
    real: list  # where the error is real ("x", "x+c(over)", "x+c(under)")
    worst: float  # max error / real-error threshold
    expected: str  # "FAIL" | "PASS" | "-" (a mutant whose error is not real here)
    verdict: str  # smcheck's: "PASS" | "FAIL"
    failed_checks: list
    known_bug: str = ""

    @property
    def status(self) -> str:
        if self.expected == "-":
            return "not real"
        if self.expected == self.verdict:
            return "OK"
        return "FALSE PASS" if self.verdict == "PASS" else "FALSE FAIL"


RESULTS: list[Outcome] = []


def run_case(case: Case, known_bug: str = "") -> tuple[Outcome, object]:
    """Decide where the error is real, run smcheck, record and return the outcome and report."""
    where, worst = real_error(case)
    rep = run_smcheck(case)
    s = case.subject
    expected = "PASS" if s.kind == "control" else ("FAIL" if where else "-")
    out = Outcome(case.id, s.kind, s.command, s.name, case.dtype, case.inp.name, where, worst,
                  expected, "PASS" if rep.passed else "FAIL",
                  [c.name for c in rep.checks if not c.passed], known_bug)
    RESULTS.append(out)
    return out, rep


# --- the table ----------------------------------------------------------------------------------

COMMAND_GROUPS = [("forward / log_softmax", ("forward", "log_softmax"), FORWARD_INPUTS),
                  ("jacobian / log_jacobian", ("jacobian", "log_jacobian"), JACOBIAN_INPUTS),
                  ("vjp", ("vjp",), VJP_INPUTS), ("loss", ("loss",), LOSS_INPUTS)]


def _cell(o: Outcome) -> str:
    letter = o.verdict[0]
    if o.status == "not real":
        return letter.lower()
    if o.status == "OK":
        return letter
    return letter + ("x" if o.known_bug else "!")


def format_tables(results: list[Outcome]) -> list[str]:
    """One matrix per command: a row per subject and dtype, a column per input. Each cell is
    smcheck's verdict: F or P where it matches the expectation (mutant with a real error: FAIL;
    control: PASS), f or p (lower case) where a mutant's error is not real (nothing asserted),
    F! / P! for a FALSE FAIL / FALSE PASS (Fx / Px: known smcheck bug, xfail), . not run."""
    lines = ["cells: smcheck's verdict. F/P = as expected (mutant with a real error FAILs, control "
             "PASSes); f/p = mutant whose error is not real on that input (no assertion); "
             "P!/F! = FALSE PASS/FALSE FAIL; Px/Fx = the same, known smcheck bug (xfail); "
             ". = not run"]
    by_key = {(o.command, o.subject, o.dtype, o.input): o for o in results}
    for title, commands, inputs in COMMAND_GROUPS:
        mine = [o for o in results if o.command in commands]
        if not mine:
            continue
        names = [inp.name for inp in inputs]
        rows = []
        for o in mine:
            key = (o.kind, o.command, o.subject, o.dtype)
            if key not in rows:
                rows.append(key)
        rows.sort(key=lambda k: (commands.index(k[1]), k[0] != "mutant"))
        label_w = max(len(f"{k[0]} {k[1]} {k[2]} {k[3]}") for k in rows) + 1
        lines.append("")
        lines.append(f"{title}: " + ", ".join(f"{j + 1}={n}" for j, n in enumerate(names)))
        lines.append(" " * label_w + "".join(f"{j + 1:>3}" for j in range(len(names)))
                     + "   ok/asserted")
        for kind, cmd, subj, dt in rows:
            cells, ok, asserted = [], 0, 0
            for n in names:
                o = by_key.get((cmd, subj, dt, n))
                cells.append(f"{_cell(o) if o else '.':>3}")
                if o and o.status != "not real":
                    asserted += 1
                    ok += o.status == "OK"
            lines.append(f"{kind} {cmd} {subj} {dt}".ljust(label_w) + "".join(cells)
                         + f"   {ok}/{asserted}")
    bad = [o for o in results if o.status in ("FALSE PASS", "FALSE FAIL")]
    counts = {k: sum(o.status == k for o in results)
              for k in ("OK", "not real", "FALSE PASS", "FALSE FAIL")}
    lines.append("")
    lines.append(f"{len(results)} cases: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for o in bad:
        lines.append(f"  {o.status}: {o.case_id} (real at {', '.join(o.real) or '-'}, error "
                     f"{o.worst:.3g} x threshold; failed: {', '.join(o.failed_checks) or 'none'})"
                     + (f" [known smcheck bug: {o.known_bug}]" if o.known_bug else ""))
    return lines
