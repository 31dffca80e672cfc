"""ULP, error measurement and tolerance semantics, against numpy's own spacing and mpmath."""

import math

import mpmath
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from smcheck.dtypes import DTYPE_NAMES, dtype_info
from smcheck.errors_ulp import Overrides, Tolerance, apply_overrides, compare, ulp


@given(st.floats(min_value=0, max_value=1e300, allow_subnormal=True))
@example(5e-324)
@example(2.0 ** -1022)
@example(1.0)
def test_ulp_float64_matches_math_ulp(v):
    assert ulp(np.array([v]), np.array([0.0]), dtype_info("float64"))[0] == math.ulp(v)


@pytest.mark.parametrize("name", ["float32", "float16"])
@given(st.floats(min_value=0, max_value=60000, allow_subnormal=True))
def test_ulp_matches_numpy_spacing(name, v):
    info = dtype_info(name)
    r = np.float64(np.asarray(v).astype(info.np_dtype))  # a value of the format
    assert ulp(np.array([r]), np.array([0.0]), info)[0] == float(np.spacing(info.np_dtype.type(r)))


def test_ulp_just_below_a_power_of_two_uses_the_lower_binade():
    info = dtype_info("float64")
    # exact value 1 - 2^-60 rounds to hi = 1.0 with lo < 0: the ULP is that of [0.5, 1)
    assert ulp(np.array([1.0]), np.array([-(2.0 ** -60)]), info)[0] == 2.0 ** -53
    assert ulp(np.array([1.0]), np.array([2.0 ** -60]), info)[0] == 2.0 ** -52


@pytest.mark.parametrize("e", [-600, -1000, -1022])
def test_ulp_below_a_tiny_power_of_two(e):
    """The same at hi = 2^e so small that lo * hi underflows to 0 (an old test of the sign)."""
    info = dtype_info("float64")
    hi, lo = np.array([2.0 ** e, -(2.0 ** e)]), np.array([-(2.0 ** (e - 60)), 2.0 ** (e - 60)])
    expected = max(2.0 ** (e - 53), 5e-324)
    assert list(ulp(hi, lo, info)) == [expected, expected]
    assert list(ulp(hi, -lo, info)) == [max(2.0 ** (e - 52), 5e-324)] * 2


def test_ulp_of_non_finite_and_zero():
    for name in DTYPE_NAMES:
        info = dtype_info(name)
        out = ulp(np.array([np.inf, -np.inf, np.nan, 0.0, -0.0]), np.zeros(5), info)
        assert list(out[:3]) == [np.inf] * 3 and list(out[3:]) == [info.eta] * 2


@pytest.mark.parametrize("name", DTYPE_NAMES)
@given(st.floats(min_value=-1e4, max_value=1e4))
def test_correct_rounding_is_at_most_half_an_ulp(name, v):
    info = dtype_info(name)
    with mpmath.workdps(60):
        exact = mpmath.mpf(v) / 3  # not representable: a genuine rounding
        hi = float(exact)
        lo = float(exact - mpmath.mpf(hi))
    c = info.round(np.array([hi]))  # hi is within 2^-53 of exact: rounding it is near-correct
    tol = Tolerance(atol=0.0, rtol=0.0)
    cmp = compare(c, np.array([hi]), np.array([lo]), tol, info)
    assert cmp.ulp_err[0] <= 0.5 + 2.0 ** -40


@pytest.mark.parametrize("name", ["float32", "float16", "bfloat16"])  # float64: 0.3 eta is 0
def test_underflow_to_zero_is_within_half_an_ulp(name):
    info = dtype_info(name)
    exact = info.eta * 0.3  # below half the smallest subnormal: correctly rounds to 0
    cmp = compare(np.array([0.0]), np.array([exact]), np.array([0.0]),
                  Tolerance(atol=0.0, rtol=0.0), info)
    assert cmp.ulp_err[0] == pytest.approx(0.3)
    assert cmp.rel_err[0] == pytest.approx(1.0)


def test_errors_far_below_one_float64_ulp_are_measured():
    info = dtype_info("float64")
    with mpmath.workdps(50):
        exact = mpmath.mpf(1) / 3
        hi = float(exact)
        lo = float(exact - mpmath.mpf(hi))
        want = abs(mpmath.mpf(hi) - exact)
    cmp = compare(np.array([hi]), np.array([hi]), np.array([lo]), Tolerance(0.0, 0.0), info)
    assert cmp.abs_err[0] == pytest.approx(float(want), rel=1e-12)


def test_nan_and_inf_handling():
    info = dtype_info("float16")
    hi = np.array([0.5, -70000.0, -np.inf, 0.25])
    c = np.array([np.nan, -np.inf, -np.inf, np.inf])
    cmp = compare(c, hi, np.zeros(4), Tolerance(atol=1e-3, rtol=0.0), info)
    assert cmp.abs_err[0] == np.inf and not cmp.ok[0]  # nan is infinitely wrong
    assert cmp.abs_err[1] == 0 and cmp.ok[1]  # -70000 rounds to -inf in float16: exact match
    assert cmp.ok[2]  # -inf where exact is -inf
    assert not cmp.ok[3]


def test_overrides_replace_their_part():
    base = Tolerance(atol=np.array([1e-20]), rtol=np.array([1e-15]))
    t = apply_overrides(base, Overrides(rtol=1e-3))
    assert t.rtol == 1e-3 and t.atol is base.atol and t.source == "user"
    t = apply_overrides(base, Overrides(max_ulp=2.0))
    assert t.atol is None and t.rtol is None and t.max_ulp == 2.0
    info = dtype_info("float64")
    cmp = compare(np.array([1.0 + 2 ** -52 * 3]), np.array([1.0]), np.array([0.0]), t, info)
    assert cmp.ulp_err[0] == 3.0 and not cmp.ok[0]
    assert apply_overrides(base, Overrides()) is base


def test_error_ratio_has_one_rule_for_a_zero_allowance():
    """error / allowance everywhere (checks, merges, the sweep): an allowance of 0 (or nan)
    makes a zero error 0 and any other error, nan included, inf; numbers and arrays agree."""
    from smcheck.errors_ulp import error_ratio

    err = np.array([0.0, 1e-300, np.nan, 2.0, np.inf, 3.0])
    allowed = np.array([0.0, 0.0, 0.0, 4.0, 1.0, np.nan])
    want = [0.0, np.inf, np.inf, 0.5, np.inf, np.inf]
    np.testing.assert_array_equal(error_ratio(err, allowed), want)
    assert [error_ratio(e, a) for e, a in zip(err, allowed)] == want
    assert np.isnan(error_ratio(np.nan, 1.0))  # over a positive allowance nan stays nan


def test_a_comparison_ranks_by_error_ratio_with_zero_allowances():
    """--atol 0 --rtol 0 gives every entry a zero allowance: the exact entries rank 0, the
    others inf, and the worst is the first inexact one."""
    from smcheck.errors_ulp import Overrides, Tolerance, apply_overrides, compare, error_ratio

    info = dtype_info("float64")
    hi = np.array([[0.25, 0.5, 0.25]])
    computed = np.array([[0.25, 0.5000000000000001, 0.25]])
    tol = apply_overrides(Tolerance(atol=1e-16, rtol=0.0), Overrides(rtol=0.0, atol=0.0))
    cmp = compare(computed, hi, np.zeros_like(hi), tol, info)
    np.testing.assert_array_equal(cmp.ratio, error_ratio(cmp.abs_err, cmp.allowed))
    assert cmp.ratio.tolist() == [[0.0, np.inf, 0.0]] and cmp.worst_index() == (0, 1)


def test_gap_stats_answers_again_for_the_same_arrays_only():
    """tolerance.gap_stats gives its last answer again for the same two arrays (a forward
    run's tolerance and normalization allowance), and computes afresh for any other."""
    from smcheck.tolerance import gap_stats

    rng = np.random.default_rng(0)
    d = -np.abs(rng.standard_normal((3, 5000)))
    s = np.exp(d) / np.exp(d).sum(axis=-1, keepdims=True)
    first = gap_stats(d, s)
    assert gap_stats(d, s) is first
    other = d.copy()
    other[0, 0] = -50.0
    again = gap_stats(other, s)
    assert again is not first and again[0][0] != first[0][0]
    W = np.sum(s * np.abs(d), axis=-1)
    np.testing.assert_allclose(first[0], W, rtol=1e-12)
