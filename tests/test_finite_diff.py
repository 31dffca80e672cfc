"""Finite-difference derivatives against derivatives known independently (closed forms, and
the softmax Jacobian diag(s) - s s^T evaluated in mpmath): every estimate must lie within its
own reported error, and each method must reach the accuracy and the order it claims."""

import dataclasses
import math

import mpmath
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from smcheck.finite_diff import (COMPLEX_MESSAGE, METHODS, FDEstimate, central_difference,
                                 directional, jacobian, richardson_difference)

# Achieved accuracy, max |estimate - exact| / max |exact|, each method must beat on smooth
# functions at moderate x (their nominal accuracies are 1e-10, 1e-12 and 1e-16).
ACCURACY = {"central": 1e-8, "richardson": 1e-11, "complex": 1e-14}


def softmax(X):
    """Softmax along the last axis, for real or complex X (shifted by the max real part)."""
    X = np.asarray(X)
    e = np.exp(X - np.max(X.real, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def exact_softmax(x, dps=40):
    """softmax(x) in mpmath: the entries (mpf) of the exact softmax of the float64 x."""
    with mpmath.workdps(dps):
        e = [mpmath.exp(mpmath.mpf(float(v))) if v > -np.inf else mpmath.mpf(0) for v in x]
        total = mpmath.fsum(e)
        return [ei / total for ei in e]


def exact_softmax_jacobian(x):
    """diag(s) - s s^T to 40 digits, rounded once to float64."""
    with mpmath.workdps(40):
        s = exact_softmax(x)
        n = len(s)
        return np.array([[float((s[i] if i == k else 0) - s[i] * s[k]) for k in range(n)]
                         for i in range(n)])


def exact_softmax_directional(x, v, u):
    """<v J, u> = sum_k s_k (v_k - <v, s>) u_k to 40 digits."""
    with mpmath.workdps(40):
        s = exact_softmax(x)
        vm = [mpmath.mpf(float(a)) for a in v]
        g = mpmath.fsum(a * b for a, b in zip(vm, s))
        return float(mpmath.fsum(sk * (vk - g) * mpmath.mpf(float(uk))
                                 for sk, vk, uk in zip(s, vm, u)))


def smooth3(X):
    """f(x) = [sin(x0) x1, exp(x0 - x1), x0^3], batched; works for complex X too."""
    x0, x1 = X[:, 0], X[:, 1]
    return np.stack([np.sin(x0) * x1, np.exp(x0 - x1), x0 ** 3], axis=1)


def smooth3_jacobian(x):
    x0, x1 = x
    return np.array([[np.cos(x0) * x1, np.sin(x0)],
                     [np.exp(x0 - x1), -np.exp(x0 - x1)],
                     [3 * x0 ** 2, 0.0]])


def assert_honest(est: FDEstimate, exact: np.ndarray):
    """Every entry within its reported error."""
    assert est.value.shape == exact.shape == est.error.shape
    assert np.all(est.error >= 0)
    over = np.abs(est.value - exact) > est.error
    assert not over.any(), (
        f"{est.method}: {over.sum()} entries outside their error, worst ratio "
        f"{np.max(np.abs(est.value - exact) / np.maximum(est.error, 1e-300)):.3g}")


def rel_error(value, exact):
    return float(np.max(np.abs(value - exact)) / np.max(np.abs(exact)))


# ---------------------------------------------------------------------------------------
# Jacobians


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("x", [[0.7, -1.3], [2.5, 0.4], [-3.0, 1.1]])
def test_smooth_jacobian_is_within_its_error_and_accuracy(method, x):
    x = np.array(x)
    est = jacobian(smooth3, x, method)
    exact = smooth3_jacobian(x)
    assert est.method == method
    assert_honest(est, exact)
    assert rel_error(est.value, exact) < ACCURACY[method]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", range(4))
def test_softmax_jacobian_is_within_its_error_and_accuracy(method, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=6 + seed) * 2.0
    est = jacobian(softmax, x, method)
    exact = exact_softmax_jacobian(x)
    assert_honest(est, exact)
    assert rel_error(est.value, exact) < ACCURACY[method]
    # the reported error is itself of the method's order, not a vacuous bound
    assert np.max(est.error) / np.max(np.abs(exact)) < 100 * ACCURACY[method]


def test_numpy_formula_agrees_with_the_mpmath_reference():
    # the reference Jacobian used above is the textbook diag(s) - s s^T
    x = np.array([0.3, -1.2, 2.0, 0.0])
    s = softmax(x[None, :])[0]
    np.testing.assert_allclose(exact_softmax_jacobian(x), np.diag(s) - np.outer(s, s),
                               rtol=0, atol=1e-16)


@given(st.lists(st.floats(-30, 30), min_size=2, max_size=7),
       st.sampled_from([0.0, 5.0, -40.0]))
def test_softmax_errors_are_honest_on_random_inputs(xs, offset):
    x = np.array(xs) + offset
    exact = exact_softmax_jacobian(x)
    for method in METHODS:
        assert_honest(jacobian(softmax, x, method), exact)


@pytest.mark.parametrize("method", METHODS)
def test_errors_stay_honest_when_the_step_rule_is_too_coarse(method):
    # Near x = 1000 the rule h ~ max(1, |x|) gives Richardson steps of 0.7 up to 3 on a
    # function that varies on a scale of 1: the order check must catch it.
    x = 1000.0 + np.random.default_rng(7).normal(size=7)
    exact = exact_softmax_jacobian(x)
    assert_honest(jacobian(softmax, x, method), exact)


def test_complex_step_is_honest_on_a_saturated_softmax():
    # d s_0 / d x_0 = s_0 (1 - s_0) with s_0 ~ 1: built from 1 - s_0, which cancels
    x = np.array([12.0, 0.0, -1.0, 0.5])
    est = jacobian(softmax, x, "complex")
    exact = exact_softmax_jacobian(x)
    assert_honest(est, exact)
    assert abs(est.value[0, 0] - exact[0, 0]) / exact[0, 0] < 1e-10


def test_step_rules():
    x = np.array([0.1, -3.0, 1000.0])
    eps = np.finfo(np.float64).eps
    scale = np.maximum(1.0, np.abs(x))
    central = jacobian(softmax, x, "central").step
    richardson = jacobian(softmax, x, "richardson").step
    cplx = jacobian(softmax, x, "complex").step
    # rounding to (x + h) - x moves h by at most ulp(x): relative eps |x| / h < 1e-10
    np.testing.assert_allclose(central, (3 * eps) ** (1 / 3) * scale, rtol=1e-10)
    np.testing.assert_allclose(richardson, eps ** 0.2 * scale, rtol=1e-10)
    assert np.all((x + central) - x == central)  # the step taken is the step divided by
    assert np.all(np.abs(np.log2(cplx / (1e-20 * scale))) <= 0.5)
    assert np.all(np.log2(cplx) == np.round(np.log2(cplx)))  # powers of two


def test_estimate_carries_its_step_method_and_accuracy():
    est = jacobian(smooth3, np.array([0.5, 0.5]), "richardson")
    assert isinstance(est, FDEstimate)
    assert est.method == "richardson"
    assert "h^4" in est.expected_accuracy
    assert est.value.shape == est.error.shape == (3, 2)
    assert est.step.shape == (2,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        est.method = "central"


def test_jacobian_evaluates_in_batches_not_per_coordinate():
    calls = []

    def f(X):
        calls.append(X.shape)
        return softmax(X)

    n = 50
    jacobian(f, np.linspace(-1, 1, n), "richardson")
    assert len(calls) <= 10  # f(x) and the 8 stencil points x +- h/2, h, 2h, 4h
    assert max(rows for rows, _ in calls) == n


def test_jacobian_of_a_large_softmax():
    n = 512
    x = np.random.default_rng(3).normal(size=n)
    s = softmax(x[None, :])[0]
    exact = np.diag(s) - np.outer(s, s)
    est = jacobian(softmax, x, "complex")
    assert rel_error(est.value, exact) < 1e-14


# ---------------------------------------------------------------------------------------
# order of convergence


def test_central_difference_is_second_order():
    x = np.array([0.7, -1.3])
    exact = smooth3_jacobian(x)
    e1 = np.abs(central_difference(smooth3, x, 1e-2) - exact)
    e2 = np.abs(central_difference(smooth3, x, 5e-3) - exact)
    # entries with a nonzero third derivative along the coordinate
    for i, k in [(0, 0), (1, 0), (1, 1), (2, 0)]:
        assert e1[i, k] / e2[i, k] == pytest.approx(4.0, rel=0.01)


def test_richardson_difference_is_fourth_order():
    x = np.array([0.7, -1.3])
    exact = smooth3_jacobian(x)
    for h in (1e-2, 5e-2):
        e1 = np.abs(richardson_difference(smooth3, x, h) - exact)
        e2 = np.abs(richardson_difference(smooth3, x, h / 2) - exact)
        # entries with a nonzero fifth derivative (x0^3 has none: exact up to rounding)
        for i, k in [(0, 0), (1, 0), (1, 1)]:
            assert e1[i, k] / e2[i, k] == pytest.approx(16.0, rel=0.05)
    assert np.max(np.abs(richardson_difference(smooth3, x, 5e-2)[2] - exact[2])) < 1e-13


def test_per_coordinate_steps_and_masked_columns_in_the_bare_formulas():
    x = np.array([0.3, -np.inf, -0.5])
    d = central_difference(softmax, x, np.array([1e-4, 1e-4, 2e-4]))
    exact = exact_softmax_jacobian(x)
    assert np.all(d[:, 1] == 0)
    np.testing.assert_allclose(d, exact, atol=1e-8)


# ---------------------------------------------------------------------------------------
# directional derivatives


def weighted_softmax(v):
    return lambda X: np.sum(v * softmax(X), axis=-1)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", range(3))
def test_directional_matches_vjp_of_softmax(method, seed):
    rng = np.random.default_rng(100 + seed)
    n = 1000
    x, v, u = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    est = directional(weighted_softmax(v), x, u, method)
    exact = exact_softmax_directional(x, v, u)
    assert est.value.shape == ()
    assert_honest(est, np.asarray(exact))
    assert abs(float(est.value) - exact) / abs(exact) < 100 * ACCURACY[method]


def test_directional_with_several_outputs():
    rng = np.random.default_rng(5)
    n = 300
    x, v, w, u = (rng.normal(size=n) for _ in range(4))

    def g(X):
        s = softmax(X)
        return np.stack([np.sum(v * s, axis=-1), np.sum(w * s, axis=-1)], axis=-1)

    exact = np.array([exact_softmax_directional(x, v, u), exact_softmax_directional(x, w, u)])
    for method in METHODS:
        est = directional(g, x, u, method)
        assert est.value.shape == (2,)
        assert_honest(est, exact)


def test_directional_complex_step_on_a_million_entries():
    rng = np.random.default_rng(11)
    n = 10 ** 6
    x, v, u = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    est = directional(weighted_softmax(v), x, u, "complex")
    # exact up to float64's own rounding of s (1e-16 relative per term), summed exactly
    s = softmax(x[None, :])[0]
    exact = math.fsum(s * (v - math.fsum(v * s)) * u)
    assert abs(float(est.value) - exact) / abs(exact) < 1e-12
    assert float(est.error) / abs(exact) < 1e-12


def test_directional_of_the_jacobian_column_is_the_column():
    # along e_k the directional derivative is column k of the Jacobian
    x = np.array([0.2, 1.5, -0.7, 0.0])
    exact = exact_softmax_jacobian(x)
    for k in range(4):
        u = np.zeros(4)
        u[k] = 1.0
        est = directional(softmax, x, u, "richardson")
        assert_honest(est, exact[:, k])


def test_directional_uses_a_handful_of_points():
    calls = []

    def g(X):
        calls.append(X.shape)
        return np.sum(softmax(X), axis=-1)

    directional(g, np.zeros(100), np.ones(100), "richardson")
    assert len(calls) == 1 and calls[0][0] <= 9
    calls.clear()
    directional(g, np.zeros(100), np.ones(100), "complex")
    assert len(calls) == 1 and calls[0][0] <= 2


def test_zero_direction_gives_zero():
    est = directional(weighted_softmax(np.ones(3)), np.array([1.0, 2.0, 3.0]), np.zeros(3))
    assert float(est.value) == 0.0 and float(est.error) == 0.0


# ---------------------------------------------------------------------------------------
# masked (-inf) coordinates


def recording(f, seen):
    def wrapped(X):
        seen.append(np.array(X, copy=True))
        Y = f(X)
        seen.append(np.array(Y, copy=True))
        return Y

    return wrapped


@pytest.mark.parametrize("method", METHODS)
def test_masked_columns_are_zero_and_never_perturbed(method):
    x = np.array([0.5, -np.inf, -1.0, 2.0, -np.inf])
    masked = np.isneginf(x)
    seen = []
    est = jacobian(recording(softmax, seen), x, method)
    assert np.all(est.value[:, masked] == 0.0)
    assert np.all(est.error[:, masked] == 0.0)
    assert np.all(est.step[masked] == 0.0)
    inputs, outputs = seen[0::2], seen[1::2]
    for X in inputs:
        assert np.all(X[:, masked] == -np.inf)  # real part -inf, imaginary part 0
        assert not np.isnan(X).any()
    for Y in outputs:
        assert not np.isnan(Y).any()
    assert_honest(est, exact_softmax_jacobian(x))


@pytest.mark.parametrize("method", METHODS)
def test_directional_treats_u_as_zero_where_masked(method):
    rng = np.random.default_rng(9)
    x = rng.normal(size=200)
    x[::7] = -np.inf
    v, u = rng.normal(size=200), rng.normal(size=200)
    u[::7] = 1e3  # ignored: those coordinates are masked
    seen = []
    est = directional(recording(weighted_softmax(v), seen), x, u, method)
    for X in seen[0::2]:
        assert np.all(X[:, ::7] == -np.inf)
        assert not np.isnan(X).any()
    for Y in seen[1::2]:
        assert not np.isnan(Y).any()
    u_eff = np.where(np.isneginf(x), 0.0, u)
    assert_honest(est, np.asarray(exact_softmax_directional(x, v, u_eff)))


def test_all_masked_gives_zero_jacobian():
    est = jacobian(np.exp, np.array([-np.inf, -np.inf]), "central")
    assert est.value.shape == (2, 2)
    assert np.all(est.value == 0) and np.all(est.error == 0)


# ---------------------------------------------------------------------------------------
# method choice and misuse


def test_auto_picks_complex_when_allowed_else_richardson():
    x = np.array([0.1, 0.2, 0.3])
    assert jacobian(softmax, x).method == "complex"
    assert jacobian(softmax, x, complex_ok=False).method == "richardson"
    assert directional(softmax, x, np.ones(3)).method == "complex"
    assert directional(softmax, x, np.ones(3), complex_ok=False).method == "richardson"


def test_unknown_method_lists_the_methods():
    with pytest.raises(ValueError) as info:
        jacobian(softmax, np.array([0.0, 1.0]), "forward")
    for name in METHODS:
        assert name in str(info.value)
    with pytest.raises(ValueError):
        directional(softmax, np.array([0.0, 1.0]), np.ones(2), "five-point")


def real_only_raises(X):
    if np.iscomplexobj(X):
        raise TypeError("no complex here")
    return softmax(X)


def real_only_discards(X):
    return softmax(np.real(X))


@pytest.mark.parametrize("f", [real_only_raises, real_only_discards])
def test_complex_step_needs_complex_input(f):
    x = np.array([0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=COMPLEX_MESSAGE):
        jacobian(f, x, "complex")
    with pytest.raises(ValueError, match=COMPLEX_MESSAGE):
        directional(lambda X: f(X)[:, 0], x, np.ones(3), "complex")
    # the real methods do not need it
    assert_honest(jacobian(f, x, "richardson"), exact_softmax_jacobian(x))


def test_complex_message_is_the_documented_one():
    assert COMPLEX_MESSAGE == "complex step needs a function that accepts complex input"


@pytest.mark.parametrize("bad", [[0.0, np.nan], [np.inf, 0.0], [[0.0, 1.0]], []])
def test_bad_x_is_rejected(bad):
    with pytest.raises(ValueError):
        jacobian(softmax, np.array(bad, dtype=float), "central")


def test_wrong_output_shape_is_rejected():
    with pytest.raises(ValueError, match="one row per point"):
        jacobian(lambda X: softmax(X)[0], np.array([0.0, 1.0]), "central")


@pytest.mark.parametrize("method", ["central", "richardson"])
def test_blocked_extrapolation_is_bitwise_the_whole_array_one(monkeypatch, method):
    """The estimates and their error bounds are formed a block of columns at a time (cache-
    sized temporaries); the result is bit for bit that of one block of all the columns, the
    noise's sums over the coordinates included, masked coordinates too."""
    from smcheck import finite_diff as fd
    from smcheck.impls.formulas import exact_formula

    x = np.random.default_rng(5).normal(size=300) * 30
    x[7] = -np.inf
    u = np.random.default_rng(6).normal(size=300)
    u[7] = 0.0
    for f in (exact_formula("stable", False), exact_formula("stable", True)):
        monkeypatch.setattr(fd, "FD_BLOCK", 10 ** 9)
        whole = fd.jacobian(f, x, method)
        whole_dir = fd.directional(f, x, u, method)
        monkeypatch.setattr(fd, "FD_BLOCK", 1000)  # 3 columns a block here
        cut = fd.jacobian(f, x, method)
        cut_dir = fd.directional(f, x, u, method)
        for a, b in ((whole, cut), (whole_dir, cut_dir)):
            assert np.array_equal(a.value, b.value, equal_nan=True)
            assert np.array_equal(a.error, b.error, equal_nan=True)
