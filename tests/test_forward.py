"""run_forward end to end: built-ins in every dtype, the verdicts, and reported errors checked
against an independent mpmath computation."""

import math

import mpmath
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import smcheck
from smcheck.dtypes import DTYPE_NAMES, dtype_info
from smcheck.exceptions import ImplementationError, InputError
from smcheck.impls import BUILTIN_NAMES, get_implementation
from smcheck.presets import PRESETS
from smcheck.run import run_forward
from smcheck.sentences import failure_lines, note_lines


def independent_ulp_errors(x, computed, info, log=False):
    """|computed - exact| in ULPs of info, from mpmath at 60 digits and numpy's spacing."""
    out = []
    with mpmath.workdps(60):
        xs = [mpmath.mpf(float(v)) for v in x]
        for i, c in enumerate(computed):
            tot = mpmath.fsum(mpmath.exp(xj - xs[i]) for xj in xs)
            exact = -mpmath.log(tot) if log else 1 / tot
            r = info.round(np.array([float(exact)]))[0]
            sp = float(np.spacing(np.abs(r))) if info.name != "bfloat16" else None
            if sp is None:  # bfloat16: 2^(e - 7), subnormals at 2^-133
                e = math.frexp(abs(float(exact)))[1] - 1 if exact != 0 else -126
                sp = 2.0 ** (max(e, -126) - 7)
            out.append(float(abs(mpmath.mpf(float(c)) - exact) / sp))
    return np.array(out)


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("impl", BUILTIN_NAMES)
@pytest.mark.parametrize("log", [False, True])
def test_reported_ulp_errors_match_an_independent_computation(dtype, impl, log):
    info = dtype_info(dtype)
    x = info.round(np.random.default_rng(3).standard_normal(24) * 2.5).astype(np.float64)
    rep = run_forward(x, impl=impl, dtype=dtype, log=log)
    computed = np.array(rep.result, dtype=np.float64)[0]
    want = independent_ulp_errors(x, computed, info, log)
    ref = rep.checks[0]
    assert ref.name == "reference"
    assert ref.max_ulp == pytest.approx(float(want.max()), rel=1e-6, abs=1e-9)
    # the shifted built-ins are correct on this benign input (naive log-softmax is not in the
    # 16-bit formats: log of a subnormal s_i keeps few digits)
    if impl != "naive":
        assert ref.passed


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@settings(max_examples=25)
@given(st.lists(st.floats(min_value=-60, max_value=60), min_size=1, max_size=40),
       st.floats(min_value=-2000, max_value=2000))
@example([0.0, 0.0], 1000.0)
@example([50.0, 0.0, 0.0], 0.0)
def test_stable_passes_every_check(dtype, row, shift):
    x = np.array(row) + shift
    for log in (False, True):
        rep = run_forward(x, impl="stable", dtype=dtype, log=log)
        assert rep.passed, [(c.name, c.failures) for c in rep.checks if not c.passed]


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_naive_fails_where_exp_overflows_and_names_it(dtype):
    info = dtype_info(dtype)
    x = np.array([info.log_max + 2, info.log_max + 1, 0.0])
    rep = run_forward(x, impl="naive", dtype=dtype)
    ref = rep.checks[0]
    assert not ref.passed
    assert any("overflows" in f and f"{info.log_max:.2f}" in f for f in failure_lines(ref))
    assert rep.blocks["overflow"]["overflow_indices"] == [0, 1]
    assert run_forward(x, impl="stable", dtype=dtype).passed


def test_naive_every_exp_underflows():
    rep = run_forward(np.array([-1000.0, -1001.0]), impl="naive")
    assert rep.blocks["overflow"]["every_exp_underflows"] is True
    assert not rep.checks[0].passed
    assert any("underflows" in f for f in failure_lines(rep.checks[0]))


def test_shift_invariance_catches_naive_on_benign_input():
    rep = run_forward(PRESETS["benign"].make(), impl="naive")
    status = {c.name: c.passed for c in rep.checks}
    assert status == {"reference": True, "normalization": True, "shift_invariance": False,
                      "finite": True}


def test_log_cancellation_is_reported_and_strict_fails_it():
    x = PRESETS["one-hot"].make()
    rep = run_forward(x, impl="divfree", log=True)
    ref = rep.checks[0]
    assert ref.passed and "cancellation" in note_lines(ref)[0]
    assert ref.details["cancelled"] == [[0, 0]]
    strict = run_forward(x, impl="divfree", log=True, metric="strict")
    assert not strict.checks[0].passed
    assert "cancellation" in strict.checks[0].entries[0].cause
    assert run_forward(x, impl="stable", log=True, metric="strict").passed


def wrong_max(x):
    e = np.exp(x - x.max())
    return e / e.max()


def wrong_f32_sum(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / np.float64(np.sum(e.astype(np.float32), dtype=np.float32))


def right(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


@pytest.mark.parametrize("fn", [wrong_max, wrong_f32_sum])
def test_wrong_user_callables_fail(fn):
    x = np.random.default_rng(0).standard_normal(50)
    rep = run_forward(x, impl=fn)
    assert not rep.passed and not rep.checks[0].passed


def test_correct_user_callable_passes_in_float64():
    for name in ("benign", "overflow", "underflow", "masked", "ties", "one-hot", "tiny-spread"):
        assert run_forward(PRESETS[name].make(), impl=right).passed, name


def test_impl_errors_are_domain_errors():
    with pytest.raises(ImplementationError, match="shape"):
        run_forward([1.0, 2.0], impl=lambda x: x[:1])
    with pytest.raises(ImplementationError, match="raised ZeroDivisionError"):
        run_forward([1.0, 2.0], impl=lambda x: 1 / 0)
    with pytest.raises(ImplementationError, match="unknown implementation"):
        get_implementation("fast")
    with pytest.raises(InputError, match="dtype"):
        run_forward([1.0], dtype="float8")
    with pytest.raises(InputError, match="--dps"):
        run_forward([1.0], dps=5)


def test_undefined_rows_are_reported_not_checked():
    x = np.array([[1.0, 2.0], [-np.inf, -np.inf], [np.nan, 1.0], [np.inf, 0.0]])
    rep = run_forward(x)
    assert [u["row"] for u in rep.undefined_rows] == [1, 2, 3]
    assert rep.passed and rep.result[1] is None
    assert "70000" in run_forward([7e4, 0.0], dtype="float16").undefined_rows[0]["reason"]


def test_public_api():
    # the API's entry point: N-d inputs and --axis, then run_forward's report
    assert smcheck.check_forward is smcheck.api.check_forward
    x = [1.0, 2.0, 30.0]
    assert smcheck.check_forward(x).checks[0].max_ulp == run_forward(x).checks[0].max_ulp
    assert smcheck.__version__


def test_stable_is_correctly_rounded_on_the_overflow_preset():
    rep = run_forward(PRESETS["overflow"].make())
    assert rep.passed and rep.checks[0].max_ulp < 0.5


FAST = [p for p in PRESETS if p != "large-n"]


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_divfree_fails_where_x_is_large_against_its_gaps(dtype):
    """README finding: exp(x - logsumexp(x)) rounds logsumexp at the magnitude of max(x), an
    error that grows with |x| itself. It passes the reference check where |x| is small and
    fails at |x| ~ 1000 (the overflow preset), and the shift to max(x + c) past log(realmax)
    fails it on every input; the cause names the magnitude."""
    ref = run_forward(PRESETS["benign"].make(), impl="divfree", dtype=dtype).checks[0]
    assert ref.passed
    big = run_forward(PRESETS["overflow"].make(), impl="divfree", dtype=dtype)
    assert not big.passed
    if not big.checks[0].passed:  # float32: the row's sum fails, the entries are within
        assert "rounding at |x|: |x| up to" in big.checks[0].entries[0].cause
    shift = next(c for c in run_forward(PRESETS["benign"].make(), impl="divfree",
                                        dtype=dtype).checks if c.name == "shift_invariance")
    if dtype in ("float64", "float32"):  # max(x + c) = 725 and 91.5 against gaps of 3
        assert not shift.passed and not shift.details["shifts"][0]["passed"]
    if dtype == "bfloat16":  # rounded at |x| = 1000 in bfloat16 (spacing 4): sums to 2
        assert big.checks[1].max_abs_err >= 0.5
