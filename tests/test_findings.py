"""The README's findings about scipy, torch, jax and the built-in divfree, each asserted (the
framework's tests skip when it is absent; CI installs all three)."""

import numpy as np
import pytest

from smcheck.dtypes import dtype_info
from smcheck.inputs import random_input
from smcheck.presets import PRESETS
from smcheck.run import run_forward, run_jacobian
from smcheck.sentences import failure_lines, note_lines
from smcheck.sweep import run_sweep
from smcheck.tolerance import summation_allowance

FAST = [p for p in PRESETS if p != "large-n"]


@pytest.mark.parametrize("impl", ["scipy", "torch"])
def test_framework_passes_the_sweep(impl):
    pytest.importorskip(impl)
    res = run_sweep(impl, "all", FAST)
    assert res.passed, [c for c in res.cases if not c["passed"]][:2]


#: where jax on the CPU flushes subnormal results to zero (XLA: exp(-740.) is 0)
JAX_FTZ = {("subnormal", "float64", c) for c in ("forward", "jacobian", "vjp", "loss")} | {
    ("one-hot", "float32", "jacobian")}


def test_jax_fails_the_sweep_only_where_it_flushes_subnormals():
    pytest.importorskip("jax")
    res = run_sweep("jax", "all", FAST)
    failing = {(c["preset"], c["dtype"], c["command"]) for c in res.cases if not c["passed"]}
    assert failing == JAX_FTZ
    for c in res.cases:
        if not c["passed"]:
            assert any("flush-to-zero" in line for line in c["failures"]), c["failures"]
    assert run_sweep("jax", "all", FAST, allow_ftz=True).passed


@pytest.mark.parametrize("impl", ["scipy", "torch"])
@pytest.mark.parametrize("dtype,ulp", [("float64", 7.18e15), ("float32", 1.337e7),
                                       ("bfloat16", 204.0)])
def test_saturated_log_softmax_loses_the_largest_entry(impl, dtype, ulp):
    pytest.importorskip(impl)
    x = PRESETS["one-hot"].make()
    strict = run_forward(x, impl=impl, dtype=dtype, log=True, metric="strict")
    ref = strict.checks[0]
    assert not ref.passed and ref.max_ulp == pytest.approx(ulp, rel=1e-3)
    assert ref.entries[0].index == 0 and ref.entries[0].computed == 0.0
    assert run_forward(x, impl=impl, dtype=dtype, log=True).passed  # scaled: passes
    assert run_forward(x, dtype=dtype, log=True, metric="strict").passed  # stable: passes


@pytest.mark.parametrize("impl", ["scipy", "torch"])
def test_saturated_jacobian_diagonal_cancels(impl):
    pytest.importorskip(impl)
    x = PRESETS["one-hot"].make()
    rep = run_jacobian(x, impl=impl, metric="strict")
    e = rep.checks[0].entries[0]
    assert not rep.passed and e.index == (0, 0) and e.computed == 0.0
    assert e.reference == pytest.approx(1.3501248935747425e-21, rel=1e-12)
    assert run_jacobian(x, impl=impl).passed


def test_bfloat16_large_n_scipy_stalls_torch_does_not():
    """scipy's bfloat16 softmax sums in bfloat16: over 100,000 entries its probabilities sum to
    1.70 and it fails (206 ULP); torch sums in float32 (0.50 ULP) and passes."""
    pytest.importorskip("scipy")
    pytest.importorskip("torch")
    x = PRESETS["large-n"].make()
    s = run_forward(x, impl="scipy", dtype="bfloat16")
    t = run_forward(x, impl="torch", dtype="bfloat16")
    assert not s.passed and t.passed
    assert s.checks[0].max_ulp == pytest.approx(206.28, rel=1e-3)
    assert 1 + s.checks[1].max_abs_err == pytest.approx(1.7028, abs=1e-3)
    assert s.checks[1].tolerance["atol"] == pytest.approx(0.126, abs=1e-3)  # a correct sum's
    assert t.checks[0].max_ulp == pytest.approx(0.5005, rel=1e-3)
    assert "stalls" in failure_lines(s.checks[1])[0]


@pytest.mark.parametrize("dtype,ulp", [("float64", 235.0), ("float32", 16.38),
                                       ("float16", 255.2), ("bfloat16", 256.0)])
def test_divfree_fails_at_x_near_1000(dtype, ulp):
    """exp(x - logsumexp(x)) rounds logsumexp at |max(x)| = 1000: the overflow preset fails in
    every dtype, with the magnitude named; in float32 the rounding happens to be small there
    (16 ULP, within the entries' allowance) and the row's sum fails; in bfloat16 it returns 1
    for 0.5 (sum 2)."""
    rep = run_forward(PRESETS["overflow"].make(), impl="divfree", dtype=dtype)
    ref, norm = rep.checks[0], rep.checks[1]
    assert not rep.passed and not norm.passed and ref.max_ulp == pytest.approx(ulp, rel=1e-3)
    assert ref.passed == (dtype == "float32")
    if dtype == "float64":  # the allowance the README quotes beside the 235 ULP
        assert ref.allowed.startswith("16.8 ULP")
    if not ref.passed:
        assert "rounding at |x|: |x| up to" in ref.entries[0].cause
    if dtype == "bfloat16":
        assert norm.max_abs_err == pytest.approx(1.0, abs=1e-3)


def test_torch_float32_at_a_million_entries_sums_per_lane():
    """torch's CPU kernel sums float32 one term after another per SIMD lane: at n = 10^6 on
    logits of scale 3 its normaliser is off by hundreds of ULP, far above a pairwise sum's
    ceil(log2 n) = 20, and still within the recursive sum's 5 sqrt(n) = 5000: it passes."""
    pytest.importorskip("torch")
    x = random_input(1_000_000, seed=1, scale=3)  # --random 1000000 --scale 3 --seed 1
    rep = run_forward(x, impl="torch", dtype="float32")
    norm = rep.checks[1]
    assert rep.passed
    assert 100 < norm.max_abs_err / 2.0 ** -24 < 5000


@pytest.mark.parametrize("dtype, n", [("float64", 100_000), ("float32", 1_000_000)])
def test_torch_drifts_on_one_dominant_logit_and_the_rest_equal(dtype, n):
    """[10 or 30 at index 5, 0 elsewhere]: the per-lane running sum, near 1, has the same small
    term added again and again, each rounding alike, so its error grows with the count, not
    its square root: beyond the usual sigma(n) u, within the (n - 1) u of a sum of n - 1
    equal terms (smcheck.coherence), and torch passes. So do the pairwise sums of scipy and
    jax and the stable built-in, well within the usual allowance."""
    pytest.importorskip("torch")
    big = 30.0 if dtype == "float64" else 10.0
    x = np.where(np.arange(n) == 5, big, 0.0)
    rep = run_forward(x, impl="torch", dtype=dtype)
    norm = rep.checks[1]
    assert rep.passed
    info = dtype_info(dtype)
    assert summation_allowance(n, info) * info.u < norm.max_abs_err <= (n - 1) * info.u
    for impl in ("scipy", "stable") + (("jax",) if dtype == "float64" else ()):
        if impl != "stable":
            pytest.importorskip(impl)
        other = run_forward(x, impl=impl, dtype=dtype)
        assert other.passed and other.checks[1].max_abs_err <= summation_allowance(
            n, info) * info.u, impl


@pytest.mark.parametrize("impl", ["torch", "jax"])
def test_float16_log_softmax_of_a_long_flat_row_is_minus_inf(impl):
    """10^5 equal logits in float16: the normaliser, 10^5, exceeds float16's 65504, and
    torch's and jax's log_softmax return -inf for every entry (exact -11.5); the cause names
    the overflowing sum. Their softmax of the same row is right (1.0014e-05), and so is
    `stable`'s log-softmax (log1p of a float32 sum)."""
    pytest.importorskip(impl)
    x = np.zeros(100_000)
    rep = run_forward(x, impl=impl, dtype="float16", log=True, allow_ftz=impl == "jax")
    ref = rep.checks[0]
    assert not ref.passed and ref.max_abs_err == np.inf
    assert "normaliser sum_j exp(x_j - max) = 1e+05 exceeds float16's largest" in (
        ref.entries[0].cause)
    assert run_forward(x, impl=impl, dtype="float16", allow_ftz=impl == "jax").passed
    assert run_forward(x, impl="stable", dtype="float16", log=True).passed


def test_the_readme_tour():
    """The numbers of the README's tour: naive on [1000, 999, 990] (the allowance of entry 0,
    and of the row's sum), stable on it (below 0.14 ULP), a bfloat16 batch (17.1 ULP, passing),
    and x_max - logsumexp(x) of [50, 0 x 7] in float32 (0 for -1.35e-21, a note)."""
    x = PRESETS["overflow"].make()
    naive = run_forward(x, impl="naive")
    assert [c.passed for c in naive.checks] == [False] * 4
    assert naive.checks[0].allowed == "16.8 ULP, rel 2.55e-15"
    assert naive.checks[0].measured == "computed nan (exact 0.731)"
    assert naive.checks[1].allowed == "2.14e-15"
    stable = run_forward(x)
    assert stable.passed and stable.checks[0].max_ulp < 0.14
    batch = run_forward(random_input(1000, rows=3, seed=0, scale=5), dtype="bfloat16")
    assert batch.passed and batch.checks[0].max_ulp == pytest.approx(17.1, abs=0.05)
    log = run_forward(PRESETS["one-hot"].make(), impl="divfree", dtype="float32", log=True)
    ref = log.checks[0]
    assert ref.passed and log.result[0][0] == 0.0 and "strict bound 4.72e-06" in note_lines(ref)[0]
