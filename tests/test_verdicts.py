"""SPEC "What a verdict means", one statement at a time, and the input conditions (exit 3).

Every expectation is decided independently of the allowance under test: by the exact values
(mpmath, through the independent reference of tests/mutants.py) or by what correct methods do on
the same input.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import mutants as M
import smcheck
from smcheck.dtypes import DTYPE_NAMES, dtype_info
from smcheck.impls import get_implementation
from smcheck.inputs import random_input
from smcheck.presets import PRESETS
from smcheck.reference import exact_softmax
from smcheck.sentences import failure_lines, note_lines
from smcheck.tolerance import (log_softmax_tolerance, normalization_allowance, softmax_rel,
                               softmax_tolerance, summation_allowance)

NP = {"float64": np.float64, "float32": np.float32, "float16": np.float16,
      "bfloat16": ml_dtypes.bfloat16}


def failed(report) -> set[str]:
    return {c.name for c in report.checks if c.status == "fail"}


# --- errors may grow with the gaps x_i - max(x), never with |x| itself -------------------------


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@given(st.lists(st.floats(-30, 0), min_size=1, max_size=12),
       st.integers(min_value=1, max_value=40))
@example([0.0, -1.0, -2.5], 26)
@example([0.0, -1.0, -2.5], 3)  # within float16's range too
def test_the_allowance_is_the_same_for_x_and_x_plus_c(dtype, gaps, k):
    """Shifting x by an exact c = 2^k changes no gap, so no allowance may change."""
    info = dtype_info(dtype)
    x = info.round(np.array([0.0] + gaps)).astype(np.float64)
    c = 2.0 ** k
    shifted = x + c
    if not np.array_equal(info.round(shifted).astype(np.float64) - c, x):
        return  # the dtype cannot hold x + c exactly: the gaps change, nothing to compare
    for X in (x, shifted):
        ex = exact_softmax(X[None], 30)
        tol = softmax_tolerance(ex.d, ex.s_hi, info)
        lt = log_softmax_tolerance(ex.d, ex.s_hi, ex.y_hi, info)
        if X is x:
            base = (tol.rtol.copy(), lt.atol.copy())
        else:
            assert np.array_equal(tol.rtol, base[0]) and np.array_equal(lt.atol, base[1])


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("impl", ["stable", "torch", "jax", "scipy"])
def test_equal_logits_of_any_size_are_one_half(dtype, impl):
    """softmax([1e8, 1e8]) = [0.5, 0.5] to rounding in every dtype, for every max-shifted
    implementation; log-softmax [-log 2, -log 2]."""
    if impl != "stable":
        pytest.importorskip(impl)
    for x in ([1e8, 1e8], [1e4, 1e4], [-3e4, -3e4]):
        if dtype == "float16" and abs(x[0]) > 6e4:
            continue
        rep = smcheck.check("forward", x, impl=impl, dtype=dtype)
        assert rep.passed and rep.result == [[0.5, 0.5]]  # one row, as shape [1, 2]
        log = smcheck.check("log_softmax", x, impl=impl, dtype=dtype)
        assert log.passed
        assert all(abs(v + math.log(2)) <= 2 * dtype_info(dtype).u for v in log.result[0])


def x_minus_logsumexp(x):
    """x - logsumexp(x), logsumexp = max + log S rounded at the magnitude of max (mlx 4169)."""
    m = np.max(x)
    return x - (m + np.log(np.sum(np.exp(x - m))))


def exp_x_minus_logsumexp(x):
    return np.exp(x_minus_logsumexp(x))


def ones(x):
    return np.ones_like(x)


@pytest.mark.parametrize("x,dtype", [([1e8, 1e8], "float32"), ([1e4, 1e4], "float32"),
                                     ([1e4, 1e4 - 0.5], "float32"), ([3e5, 3e5 - 1], "float64"),
                                     ([1e3, 999.0, 990.0], "bfloat16")])
def test_the_logsumexp_family_fails_where_x_is_large(x, dtype):
    """Its error is u |max(x)|: far more than any max-shifted method makes (decided by the
    independent criterion of the mutation corpus), so it fails, naming the magnitude."""
    X = M.round_to(np.array([x]), dtype)
    for cmd, f, log in (("forward", exp_x_minus_logsumexp, False),
                        ("log_softmax", x_minus_logsumexp, True)):
        c = np.array([f(X[0].astype(NP[dtype])).astype(np.float64)])
        if np.max(M.forward_ratio(c, X, dtype, log)) <= 1:  # real, decided independently
            assert log and dtype == "bfloat16"  # [0, 0, -8] for [-0.69, -0.69, -8.69]
            continue
        rep = smcheck.check(cmd, x, impl=f, dtype=dtype)
        assert "reference" in failed(rep)
        assert "rounding at |x|: |x| up to" in rep.checks[0].entries[0].cause
        if log and x == [1e8, 1e8]:  # README: [0, 0] for -log 2, 11.6 million ULP off
            assert rep.result == [[0.0, 0.0]]
            assert rep.checks[0].max_ulp == pytest.approx(1.163e7, rel=1e-3)


def test_probabilities_of_one_fail_whatever_x():
    """A softmax of [1e8, 1e8] that returns [1, 1] sums to 2: it fails, at every magnitude."""
    for x in ([1e8, 1e8], [0.0, 0.0], [-5.0, -5.0]):
        rep = smcheck.check("forward", x, impl=ones, dtype="float32")
        assert {"reference", "normalization"} <= failed(rep)


# --- no allowance may reach the size of the quantity it bounds ---------------------------------


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("n", [2, 100, 4096, 100_000, 1_000_000])
def test_normalization_allowance_stays_far_below_one(dtype, n):
    """The sum of a correct softmax is 1 to within its summation error, whatever x is: the
    allowance is a few u times log n, never the sum of the entries' allowances."""
    info = dtype_info(dtype)
    for d in (np.zeros(n), -np.linspace(0, 30, n)):
        s = np.exp(d) / np.sum(np.exp(d))
        a = normalization_allowance(d[None], s[None], info)[0]
        assert a < 0.25
        if (dtype, n) == ("float64", 2):  # the order of the README's 2.1e-15 at n = 3
            assert 1e-15 < a < 3e-15
        subnormal = info.eta * np.sum((s > 0) & (s < info.tiny))  # rounding them: honest
        if info.p < 24:  # float32 sums: a few u per binary digit of n
            assert a - subnormal < 3 * info.u * math.log2(n + 1) + 8 * info.u


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@given(st.lists(st.floats(-200, 0), min_size=1, max_size=40))
def test_the_relative_allowance_stays_below_one_where_the_dtype_resolves_s(dtype, gaps):
    """Where s_i is a normal number of the dtype, the honest relative allowance of a softmax
    entry stays below 1 (at most 0.8, at bfloat16's largest normal gap, 87): a bound that
    accepts any relative error is a defect of the bound."""
    info = dtype_info(dtype)
    x = info.round(np.array([0.0] + gaps)).astype(np.float64)[None]
    ex = exact_softmax(x, 30)
    r = softmax_rel(ex.d, ex.s_hi, info)
    normal = ex.s_hi >= info.tiny
    assert np.all(r[normal] < 0.8)


@pytest.mark.parametrize("scale", [1.7, 2.0])
@pytest.mark.parametrize("x", [[0.0, -1.0, -2.0], [1e8, 1e8 - 512, 1e8 - 1024], [-7e5, -7e5]])
def test_probabilities_that_sum_to_2_or_1_7_fail_normalization(scale, x):
    def inflated(v):
        e = np.exp(v - np.max(v))
        return scale * e / np.sum(e)

    for dtype in DTYPE_NAMES:
        if dtype == "float16" and abs(x[0]) > 6e4:
            continue
        assert "normalization" in failed(smcheck.check("forward", x, impl=inflated, dtype=dtype))


# --- a 16-bit sum that stalls is a defect; pairwise or wider accumulation passes ---------------


def sequential_sum(x):
    """The normaliser added one term after the other in the dtype itself."""
    e = np.exp(x - np.max(x))
    return e / np.cumsum(e)[-1]


ROWS = {"uniform": lambda n: np.zeros(n), "randn": lambda n: np.random.default_rng(n)
        .standard_normal(n) * 2}


STALLS = [(row, dtype, n) for row in ROWS
          for dtype, n in [("bfloat16", 300), ("bfloat16", 512), ("bfloat16", 1024),
                           ("bfloat16", 4096), ("bfloat16", 100_000), ("float16", 3000),
                           ("float16", 4096), ("float16", 100_000)]
          # on random rows of 300 and 512 the bfloat16 stall is within a correct sum's worst
          # case (|sum - 1| = 0.073 and 0.127): not real, nothing to assert
          if not (row == "randn" and n in (300, 512))]


@pytest.mark.parametrize("row,dtype,n", STALLS)
def test_a_stalling_16bit_sum_fails_at_every_n(row, dtype, n):
    """Where the stall is real, decided independently: the mutant's probabilities sum further
    from 1 than twice the worst case of a correct sum and ten times what correct methods do on
    the same row (pairwise in the dtype, float32 accumulation). The correct methods and
    smcheck's own pass; the stall fails, saying why. The executorch pattern (a uniform row)
    is real from n = 300 in bfloat16 and n = 3000 in float16 on."""
    x = M.round_to(ROWS[row](n), dtype)
    dt = NP[dtype]

    def total(f):
        return math.fsum(np.asarray(f(x.astype(dt)), dtype=np.float64))

    # pairwise in float16 overflows beyond 65504 terms of 1: not a correct method there
    correct = [f for f in (M.pairwise_16bit, M.float32_then_round) if abs(total(f) - 1) < 0.5]
    stall = abs(total(sequential_sum) - 1)
    # real: beyond twice the worst case of a pairwise sum in the dtype with exp, division and
    # rounding, (ceil(log2 n) + 8) u, and beyond ten times what the correct methods do here
    u = dtype_info(dtype).u
    assert stall > max(2 * (math.ceil(math.log2(n)) + 8) * u,
                       10 * max(abs(total(f) - 1) for f in correct)), "no real stall here"
    rep = smcheck.check("forward", x, impl=sequential_sum, dtype=dtype)
    assert "reference" in failed(rep)
    lines = [line for c in rep.checks for line in failure_lines(c)]
    assert any("stalls" in line for line in lines), lines
    for f in correct + ["stable"]:
        assert smcheck.check("forward", x, impl=f, dtype=dtype).passed


def test_scipy_bfloat16_large_n_stalls():
    """scipy.special.softmax on a bfloat16 array sums in bfloat16 (ml_dtypes' sequential add):
    on the large-n preset its probabilities sum to 1.70. It fails; torch (float32 sums) and jax
    pass."""
    pytest.importorskip("scipy")
    x = PRESETS["large-n"].make()
    rep = smcheck.check("forward", x, impl="scipy", dtype="bfloat16")
    norm = next(c for c in rep.checks if c.name == "normalization")
    assert not norm.passed and 1.6 < 1 + norm.max_abs_err < 1.8
    for impl in ("torch", "jax"):
        pytest.importorskip(impl)
        assert smcheck.check("forward", x, impl=impl, dtype="bfloat16").passed


# --- flush-to-zero -----------------------------------------------------------------------------


def flushing(x):
    s = M.flush_to_zero(x)
    return s


@pytest.mark.parametrize("dtype,x", [("float64", [0.0, -712.0, -720.0, -730.0]),
                                     ("float32", [0.0, -1.0, -90.0, -95.0]),
                                     ("bfloat16", [0.0, -1.0, -90.0, -95.0])])
def test_flush_to_zero_fails_by_default_named_and_allow_ftz_accepts_it(dtype, x):
    rep = smcheck.check("forward", x, impl=flushing, dtype=dtype)
    ref = rep.checks[0]
    assert not ref.passed
    assert [f.kind for f in ref.findings if f.fails] == ["flush_to_zero"]
    assert failure_lines(ref)[-1].startswith("flush-to-zero")
    assert "flush-to-zero" in ref.entries[0].cause
    assert smcheck.check("forward", x, impl=flushing, dtype=dtype, allow_ftz=True).passed
    # --allow-ftz accepts flushing, not other errors: a softmax that sums to 2 still fails
    assert not smcheck.check("forward", x, impl=lambda v: 2 * flushing(v), dtype=dtype,
                             allow_ftz=True).passed


def test_jax_flushes_subnormals_on_the_cpu():
    """jax's CPU backend runs flush-to-zero: exp(-740.) is 0 there (numpy: 4.2e-322). The
    subnormal preset fails naming the cause; --allow-ftz accepts it."""
    pytest.importorskip("jax")
    x = PRESETS["subnormal"].make()
    rep = smcheck.check("forward", x, impl="jax")
    assert not rep.passed and any(f.kind == "flush_to_zero" for c in rep.checks
                                  for f in c.findings)
    assert smcheck.check("forward", x, impl="jax", allow_ftz=True).passed


# --- the dtype an implementation computes in --------------------------------------------------


def float64_inside(x):
    """Ignores --dtype: computes in float64 whatever it is given."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - np.max(x))
    return e / np.sum(e)


def test_a_callable_that_ignores_dtype_is_reported_and_strict_dtype_fails_it():
    x = np.random.default_rng(3).standard_normal(64)
    rep = smcheck.check("forward", x, impl=float64_inside, dtype="bfloat16")
    ref = rep.checks[0]
    assert rep.passed and [f.kind for f in ref.findings] == ["dtype"]
    line = note_lines(ref)[-1]
    assert "returned float64 arrays for --dtype bfloat16" in line and "64 of 64" in line
    strict = smcheck.check("forward", x, impl=float64_inside, dtype="bfloat16",
                           strict_dtype=True)
    assert not strict.passed and "returned float64" in failure_lines(strict.checks[0])[-1]
    # one that honours the dtype has no such finding
    assert not smcheck.check("forward", x, impl=M.float32_then_round,
                             dtype="bfloat16").checks[0].findings


# --- shift invariance of the derivatives -------------------------------------------------------


@pytest.mark.parametrize("command,impl", [("jacobian", M.jac_unshifted),
                                          ("vjp", M.vjp_unshifted)])
def test_derivatives_built_on_the_unshifted_softmax_fail_shift_invariance(command, impl):
    """Right on a benign input (every other check passes), wrong once x + c overflows."""
    x = PRESETS["benign"].make()[:8]
    rep = smcheck.check(command, x, impl=impl)
    assert failed(rep) == {"shift_invariance"}
    shift = next(c for c in rep.checks if c.name == "shift_invariance")
    assert not shift.details["shifts"][0]["passed"]  # the overflow shift
    assert smcheck.check(command, x, impl="stable").passed


# --- input conditions: exit 3, apart from failures ---------------------------------------------


@pytest.mark.parametrize("impl", ["stable", "torch"])
def test_a_target_on_an_underflowed_probability_is_an_input_condition(impl):
    """Cross-entropy with t = 1 where softmax underflows to 0 in the dtype: -t/z is undefined
    there whatever the implementation does. A correct loss gradient is not a failure (exit 3),
    and the JSON says which condition."""
    if impl != "stable":
        pytest.importorskip(impl)
    x, t = [0.0, -800.0, -1.0], [0.0, 1.0, 0.0]
    rep = smcheck.check("loss", x, impl=impl, t=t)
    assert rep.passed and rep.exit_status(check=True) == 3
    # z_1 = 0: below its rounding floor, and log z_1 undefined
    assert [c["kind"] for c in rep.input_conditions] == ["zero_condition", "domain"]
    assert rep.exit_status(check=False) == 0


def test_a_failure_outranks_an_input_condition():
    def wrong(z, t):
        return t / z  # the sign lost

    rep = smcheck.check("loss", [0.0, -800.0, -1.0], impl=wrong, t=[0.5, 0.5, 0.0])
    assert not rep.passed and rep.input_conditions and rep.exit_status(check=True) == 1


def test_a_negative_z_under_a_target_is_a_domain_condition():
    rep = smcheck.check("loss", None, impl="stable", z=[0.5, -0.25, 0.75], t=[0.2, 0.3, 0.5])
    assert rep.passed and "domain" in [c["kind"] for c in rep.input_conditions]
    assert rep.exit_status(check=True) == 3


def test_every_row_undefined_is_an_input_condition():
    rep = smcheck.check("forward", [[np.nan, 1.0], [-np.inf, -np.inf]])
    assert rep.passed and not rep.checks
    assert [c["kind"] for c in rep.input_conditions] == ["no_defined_row"]
    assert rep.exit_status(check=True) == 3


def test_summation_allowance_follows_the_accumulator():
    """Pairwise in the dtype (ceil(log2 n)), or a recursive sum in float32-or-wider: for the
    16-bit formats the sqrt(n) term is float32's, so it never makes their bound vacuous."""
    for n in (10, 10 ** 4, 10 ** 6):
        for name in ("float16", "bfloat16"):
            assert summation_allowance(n, dtype_info(name)) < math.ceil(math.log2(n)) + 1
        f32 = summation_allowance(n, dtype_info("float32"))
        assert f32 == pytest.approx(math.ceil(math.log2(n)) + 5 * math.sqrt(n))
    # README: the float32 part is 0.08 for bfloat16 at n = 10^6; sqrt(n) u alone reaches 1
    # from n = 65,536 on
    assert summation_allowance(10 ** 6, dtype_info("bfloat16")) - 20 == pytest.approx(0.076,
                                                                                     abs=1e-3)
    assert math.sqrt(65536) * dtype_info("bfloat16").u == 1.0


# --- real kernels on wide inputs (false failures found by sweeping them) -----------------------


@pytest.mark.parametrize("impl", ["torch", "jax"])
def test_autograd_log_softmax_jacobian_on_a_wide_input(impl):
    """Autograd forms the log-softmax Jacobian I - 1 s^T with s = exp(log-softmax), which rounds
    the gap twice: u |d_k| more than dividing by the sum. At gaps of 130 in float64 that is the
    whole error; the allowance of that formula takes it (decided against the corpus's
    independent budget: the error is not real)."""
    pytest.importorskip(impl)
    x = random_input(64, seed=64, scale=30)
    X = M.round_to(x[None], "float64")
    J = get_implementation(impl).jacobian(X, dtype_info("float64"), True)
    assert np.max(M.jacobian_ratio(np.asarray(J), X, "float64", True)) <= 1
    assert smcheck.check("jacobian", x, impl=impl, log=True, allow_ftz=impl == "jax").passed


@pytest.mark.parametrize("impl", ["torch", "scipy"])
def test_a_loss_gradient_beyond_the_dtype_is_infinite_not_a_failure(impl):
    """Soft targets on a wide float32 input: where z_i is subnormal, -t_i/z_i overflows float32
    and inf is its correct rounding; the finite difference leaves those entries out."""
    pytest.importorskip(impl)
    x = random_input(64, seed=64, scale=30)
    rep = smcheck.check("loss", x, impl=impl, dtype="float32", t=np.full(64, 1 / 64))
    assert "finite_difference" not in failed(rep) and "reference" not in failed(rep)


@pytest.mark.parametrize("impl", ["torch", "jax", "scipy"])
def test_a_gradient_in_x_through_an_infinite_quotient_is_left_out_not_failed(impl):
    """float16, x = [0, -12]: z_1 = 6.1e-6 (subnormal), and -0.5 / z_1 = -8.2e4 lies beyond
    float16's 65504, so -inf is its correct rounding and the implementation's -t/z passes.
    The gradient in x that smcheck forms through it in float16 is inf whatever the
    implementation: that row is left out, with a note, not failed (it failed before). The
    other row's gradient in x is still judged, and a wrong -t/z still fails."""
    pytest.importorskip(impl)
    x = np.array([[0.0, -12.0], [0.0, -1.0]])
    t = np.full((2, 2), 0.5)
    rep = smcheck.check("loss", x, impl=impl, dtype="float16", t=t)
    ref = next(c for c in rep.checks if c.name == "reference")
    assert rep.passed, failed(rep)
    notes = [n for n in ref.notes if getattr(n, "kind", None) == "grad_x_beyond"]
    assert len(notes) == 1 and notes[0].extra["row"] == 0 and notes[0].extra["index"] == 1
    assert math.isinf(notes[0].extra["quotient"]) is False and notes[0].extra["quotient"] < -65504
    # the other row is judged: its gradient in x, s * sum(t) - t, has a real maximum error
    assert ref.details["grad_x"]["max_ulp"] > 0
    assert any(getattr(n, "kind", None) == "grad_x" for n in ref.notes)
    # control: the row alone leaves nothing of the gradient in x judged, and says so only once
    alone = smcheck.check("loss", x[:1], impl=impl, dtype="float16", t=t[:1])
    kinds = [getattr(n, "kind", None) for n in alone.checks[0].notes]
    assert alone.passed and kinds == ["grad_x_beyond"]


def test_a_wrong_quotient_still_fails_where_the_gradient_in_x_is_left_out():
    def wrong(z, t):  # -t/z, 1 % off: the reference check of -t/z itself catches it
        return (-t / z * 1.01).astype(z.dtype)

    x = np.array([[0.0, -12.0], [0.0, -1.0]])
    rep = smcheck.check("loss", x, impl=wrong, dtype="float16", t=np.full((2, 2), 0.5))
    assert "reference" in failed(rep)


def _wide_one_hot(scale: float, seed: int = 4):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((6, 2000)) * scale
    T = np.zeros_like(X)
    T[np.arange(6), rng.integers(0, 2000, 6)] = 1.0
    return X, T


@pytest.mark.parametrize("impl", ["torch", "scipy"])
def test_the_gradient_in_x_goes_back_through_the_z_the_loss_was_given(impl):
    """bfloat16, one-hot targets at gaps up to ~75 (x of scale 30): the gradient in x is taken
    back through z itself, as autograd takes it through its saved output, so g_j z_j = -t_j to
    a rounding and every entry is within a few ULPs. Through a softmax recomputed in the dtype
    (what smcheck did), g_j s'_j = -t_j s'_j / z_j carried s'_j's error at the target (u times
    the gap) into every entry: the control shows that route beyond the allowance here."""
    pytest.importorskip(impl)
    from smcheck.impls import builtin_vjp
    from smcheck.reference import exact_grad_x
    from smcheck.tolerance import grad_x_tolerance

    X, T = _wide_one_hot(30.0)
    rep = smcheck.check("loss", X, impl=impl, dtype="bfloat16", t=T)
    assert rep.passed, failed(rep)
    gx = next(c for c in rep.checks if c.name == "reference").details["grad_x"]
    assert gx["passed"] and gx["max_ulp"] < 2
    # control: the old route on the same input and the same g
    info = dtype_info("bfloat16")
    Xr = info.round64(X)
    ex = exact_softmax(Xr, engine="dd")
    Z = info.round64(ex.s_hi)
    rows = np.any((T != 0) & (Z == 0), axis=-1)  # left out either way
    with np.errstate(all="ignore"):
        g = np.where(T == 0, 0.0, get_implementation(impl).loss_grad(Z, T, info))
        old = builtin_vjp("stable", Xr.astype(info.np_dtype), g, info).astype(np.float64)
    hi, _ = exact_grad_x(Xr, T, engine="dd")
    tol = grad_x_tolerance(ex.d, ex.s_hi, T, info)
    assert np.max(np.abs(old - hi)[~rows] / tol.atol[~rows]) > 1


def test_the_loss_finite_difference_holds_where_z_is_tiny():
    """float64, soft targets at gaps of ~700 (x of scale 100): z_i near the bottom of float64.
    The finite difference of -sum t log(z (1 + h r)) lost z h r to underflow (2.5 % of the
    estimate: the stable built-in and torch failed); as log z + log1p(h r) it does not. A
    gradient 10^-6 off still fails it."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((4, 2000)) * 100
    T = rng.random(X.shape)
    T /= T.sum(axis=1, keepdims=True)
    for impl in ("stable", "torch"):
        rep = smcheck.check("loss", X, impl=impl, dtype="float64", t=T)
        assert "finite_difference" not in failed(rep), impl

    def off(z, t):
        return -t / z * (1 + 1e-6)

    rep = smcheck.check("loss", X, impl=off, dtype="float64", t=T)
    assert "finite_difference" in failed(rep) and "reference" in failed(rep)


def test_flushed_targets_leave_the_gradient_in_x_out_under_allow_ftz():
    """jax (XLA's CPU flushes subnormals): z_j subnormal under a target is read as 0, and
    --allow-ftz leaves that -t_j/z_j unjudged; the gradient in x through it is left out too.
    Without --allow-ftz the same run fails, named flush-to-zero."""
    pytest.importorskip("jax")
    X, T = _wide_one_hot(30.0)
    assert smcheck.check("loss", X, impl="jax", dtype="float32", t=T, allow_ftz=True).passed
    rep = smcheck.check("loss", X, impl="jax", dtype="float32", t=T)
    ref = next(c for c in rep.checks if c.name == "reference")
    assert not ref.passed and "flush_to_zero" in [f.kind for f in ref.findings]


@pytest.mark.parametrize("impl", ["torch", "jax"])
def test_finite_differences_of_an_offset_input_follow_its_gaps(impl):
    """x = 10^4 + N(0, 3): torch and jax take no complex step, and a real step scaled by
    max(1, |x|) was 7.4 wide: the Richardson estimate missed by ten times its error bound and
    `finite_difference` failed correct Jacobians. Differentiated at x - max(x) (the same
    derivatives: softmax is shift-invariant), the steps follow the gaps. The control: the same
    estimate at x itself is off by more than its bound; and a Jacobian 10^-6 off still fails."""
    pytest.importorskip(impl)
    from smcheck import finite_diff
    from smcheck.checks.fd import at_gaps

    x = np.random.default_rng(11).standard_normal((2, 300)) * 3 + 1e4
    for cmd in ("jacobian", "vjp"):
        rep = smcheck.check(cmd, x, impl=impl)
        assert "finite_difference" not in failed(rep), (cmd, failed(rep))
    f = get_implementation(impl).forward64(False)
    u = np.random.default_rng(12).standard_normal(300)
    exact = get_implementation("stable").jacobian(x[:1], dtype_info("float64"))[0]
    want = exact @ u  # J u, J symmetric: the exact directional derivative to rounding
    at_x = finite_diff.directional(f, x[0], u, "richardson")
    assert np.max(np.abs(at_x.value - want) - at_x.error) > 0  # control: beyond its bound
    shifted = finite_diff.directional(f, at_gaps(x[0]), u, "richardson")
    assert np.all(np.abs(shifted.value - want) <= shifted.error)

    def off(z):  # your f(x) -> J: the stable Jacobian, 10^-6 relative too large
        return np.asarray(get_implementation("stable").jacobian(
            np.atleast_2d(z), dtype_info("float64")))[0] * (1 + 1e-6)

    assert "finite_difference" in failed(smcheck.check("jacobian", x[0], impl=off))


# --- the sum's share of an entry's allowance: as large as the row's sum shows -----------------


def _fast_exp(d):
    """exp(d) as 2^k p(f), p the Taylor polynomial of degree 4 on |f| <= ln2 / 2: relative
    error up to about 4e-5, the kind of approximate exp a hand-written kernel uses."""
    t = d * (1.0 / math.log(2.0))
    k = np.rint(t)
    f = (t - k) * math.log(2.0)
    p = 1.0 + f * (1.0 + f * (0.5 + f * (1.0 / 6.0 + f * (1.0 / 24.0))))
    return np.ldexp(p, k.astype(np.int64))


def fast_exp_softmax(x):
    x = np.asarray(x)
    e = _fast_exp((x - np.max(x)).astype(np.float64)).astype(x.dtype)
    return e / np.sum(e, dtype=x.dtype)


def exact_exp_softmax(x):  # the control: the same kernel with the exp it stands for
    x = np.asarray(x)
    e = np.exp(x - np.max(x))
    return e / np.sum(e, dtype=x.dtype)


def lanes_softmax(x):
    """A correct method whose sum is taken one term after another in each of 16 lanes, then
    the lanes added (torch's CPU kernel): its sum is off by far more than a pairwise sum's,
    an error every entry shares, which the row's sum shows."""
    x = np.asarray(x)
    e = np.exp(x - np.max(x))
    lanes = np.concatenate([e, np.zeros(-len(e) % 16, dtype=e.dtype)]).reshape(-1, 16)
    return e / np.sum(np.cumsum(lanes, axis=0)[-1], dtype=e.dtype)


def division_free_softmax(x):  # exp(x - max - log S): the gap rounded twice, correct
    x = np.asarray(x)
    d = x - np.max(x)
    return np.exp(d - np.log(np.sum(np.exp(d))))


@pytest.mark.parametrize("n", [1000, 100000])
def test_an_error_of_each_entry_fails_however_long_the_row(n):
    """sigma(n) (5 sqrt(n) u: 1,600 u at 10^5 entries) bounds a sum taken one term after
    another; it is an error every entry shares, and the computed row's sum shows it. An entry
    is now allowed that share only as far as the row's sum shows it: a softmax whose exp errs
    by up to 4e-5 in each entry (over 300 ULP of float32, its row sum within 1 ULP) failed at
    1,000 entries and passed at 10^5; it fails at both. Controls: the same kernel with numpy's
    exp, sums in running lanes (off by more, an error the row's sum shows), and the
    division-free form on wide rows, pass."""
    x = (random_input(n, seed=3) * 3).astype(np.float32)
    d = (x - x.max()).astype(np.float64)
    err = np.max(np.abs(_fast_exp(d) / np.exp(d) - 1))
    u = 2.0 ** -24
    # its error is real, far above a correct exp's, and within what sigma(10^5) u allowed
    assert 300 * u < err < summation_allowance(10 ** 5, dtype_info("float32")) * u
    rep = smcheck.check("forward", x, impl=fast_exp_softmax, dtype="float32")
    assert not rep.checks[0].passed and rep.checks[1].passed  # each entry off; the sum is not
    for control in (exact_exp_softmax, lanes_softmax):
        assert smcheck.check("forward", x, impl=control, dtype="float32").passed, control
    wide = random_input(n, seed=4) * 30
    for dtype in ("float64", "float32"):
        assert smcheck.check("forward", wide, impl=division_free_softmax, dtype=dtype).passed
