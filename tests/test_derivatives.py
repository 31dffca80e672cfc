"""jacobian, vjp and loss: exact references against mpmath at more digits, the built-ins, and
deliberately wrong implementations that must fail."""

import mpmath
import numpy as np
import pytest

from smcheck.presets import PRESETS
from smcheck.reference import exact_jacobian, exact_softmax, exact_vjp
from smcheck.run import run_jacobian, run_loss, run_vjp
from smcheck.sentences import failure_lines, note_lines


def mp_softmax(row, dps):
    with mpmath.workdps(dps):
        xs = [mpmath.mpf(float(v)) for v in row]
        a = max(xs)
        e = [mpmath.exp(v - a) for v in xs]
        S = mpmath.fsum(e)
        return [ei / S for ei in e]


@pytest.mark.parametrize("row", [[1.0, 2.0, 0.5, -1.0], [50.0, 0.0, 0.0, 0.0],
                                 [1000.0, 999.0, 990.0], [2.0, -np.inf, 0.5]])
@pytest.mark.parametrize("log", [False, True])
def test_exact_jacobian_agrees_with_mpmath(row, log):
    ex = exact_softmax(np.array([row]), 50, one_minus=True)
    hi, lo = exact_jacobian(ex, log)
    s = mp_softmax(row, 120)
    n = len(row)
    with mpmath.workdps(120):
        for i in range(n):
            for k in range(n):
                want = ((1 if i == k else 0) - s[k]) if log else s[i] * ((1 if i == k else 0) - s[k])
                got = mpmath.mpf(hi[0, i, k]) + mpmath.mpf(lo[0, i, k])
                assert abs(got - want) <= 2 ** -100 * abs(want) + mpmath.mpf(10) ** -320, (i, k)


def test_exact_vjp_agrees_with_mpmath():
    x = np.array([[1.0, 2.0, 0.5, -1.0, 40.0]])
    v = np.array([[0.3, -1.2, 0.7, 2.0, 0.1]])
    ex = exact_vjp(x, v, 50)
    s = mp_softmax(x[0], 120)
    with mpmath.workdps(120):
        d = mpmath.fsum(mpmath.mpf(float(vi)) * si for vi, si in zip(v[0], s))
        for i in range(5):
            want = s[i] * (mpmath.mpf(float(v[0, i])) - d)
            got = mpmath.mpf(ex.z_hi[0, i]) + mpmath.mpf(ex.z_lo[0, i])
            assert abs(got - want) <= 2 ** -100 * abs(want) + mpmath.mpf(10) ** -320


def status(rep):
    return {c.name: c.passed for c in rep.checks}


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "large-n"])
def test_builtin_jacobian_passes_strict_everywhere(dtype, preset):
    for log in (False, True):
        rep = run_jacobian(PRESETS[preset].make(), dtype=dtype, log=log, metric="strict")
        assert rep.passed, (log, [(c.name, c.failures) for c in rep.checks if not c.passed])


def test_check_names_follow_spec():
    x = PRESETS["benign"].make()
    assert [c.name for c in run_jacobian(x).checks] == ["reference", "finite_difference",
                                                         "symmetry", "zero_sums",
                                                         "shift_invariance"]
    assert [c.name for c in run_jacobian(x, log=True).checks] == ["reference",
                                                                  "finite_difference",
                                                                  "zero_sums",
                                                                  "shift_invariance"]
    assert [c.name for c in run_vjp(x).checks] == ["reference", "finite_difference", "zero_sum",
                                                   "shift_invariance"]
    assert [c.name for c in run_loss(x, t=np.ones(16) / 16).checks] == [
        "reference", "finite_difference", "zero_condition", "domain", "shift_invariance"]
    assert [c.name for c in run_loss(x, t=np.ones(16) / 16, v=np.ones(16)).checks] == [
        "reference", "finite_difference", "zero_condition", "domain", "shift_invariance"]
    # z given: no x to shift, so the check does not apply and is left out (SPEC)
    assert [c.name for c in run_loss(None, t=np.ones(4) / 4, z=np.ones(4) / 4).checks] == [
        "reference", "finite_difference", "zero_condition", "domain"]


def textbook_diag(x):
    """J = diag(s) - s s^T with the diagonal as s_i - s_i * s_i (cancels when s_i ~ 1)."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max())
    s = e / e.sum()
    return np.diag(s) - np.outer(s, s)


def test_strict_metric_fails_cancelled_diagonal_and_names_it():
    x = PRESETS["one-hot"].make()
    rep = run_jacobian(x, impl=textbook_diag, metric="strict")
    ref = rep.checks[0]
    assert not ref.passed
    assert any("cancellation" in f and "(0, 0)" in f for f in failure_lines(ref))
    assert ref.entries[0].index == (0, 0) and "s_0 - s_0^2" in ref.entries[0].cause
    scaled = run_jacobian(x, impl=textbook_diag)  # default metric: scaled
    assert scaled.checks[0].passed and "cancellation" in note_lines(scaled.checks[0])[0]
    assert run_jacobian(x, metric="strict").passed  # the built-in keeps the digits


def no_diagonal(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max())
    s = e / e.sum()
    return -np.outer(s, s)


def log_transposed(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max())
    s = e / e.sum()
    return (np.eye(len(s)) - np.outer(np.ones(len(s)), s)).T


@pytest.mark.parametrize("fn,log", [(no_diagonal, False), (log_transposed, True)])
def test_wrong_jacobians_fail(fn, log):
    rep = run_jacobian(PRESETS["benign"].make(), impl=fn, log=log)
    st = status(rep)
    assert not st["reference"] and not st["finite_difference"] and not st["zero_sums"]


def vjp_sign_error(x, v):
    x, v = np.asarray(x, np.float64), np.asarray(v, np.float64)
    e = np.exp(x - x.max())
    s = e / e.sum()
    return s * (v + np.dot(v, s))


def vjp_right(x, v):
    x, v = np.asarray(x, np.float64), np.asarray(v, np.float64)
    e = np.exp(x - x.max())
    s = e / e.sum()
    return s * (v - np.dot(v, s))


def test_vjp_wrong_fails_right_passes():
    x = PRESETS["benign"].make()
    assert not run_vjp(x, impl=vjp_sign_error).passed
    rep = run_vjp(x, impl=vjp_right)
    assert rep.passed, [(c.name, c.failures) for c in rep.checks]


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
@pytest.mark.parametrize("preset", ["benign", "overflow", "one-hot", "masked", "large-n"][:4])
def test_builtin_vjp_passes(dtype, preset):
    rep = run_vjp(PRESETS[preset].make(), dtype=dtype)
    assert rep.passed, [(c.name, c.failures) for c in rep.checks if not c.passed]


def test_probes_beyond_max_dense():
    x = np.random.default_rng(0).standard_normal(300)
    rep = run_jacobian(x, max_dense=100)
    assert rep.options["mode"] == "probes" and rep.passed
    assert "probe" in note_lines(rep.checks[0])[0]
    bad = run_jacobian(x * 400, impl="naive", max_dense=100)  # exp overflows: nan
    assert not bad.passed


def grad_wrong(z, t):
    return -np.asarray(z, np.float64) / np.asarray(t, np.float64)


def grad_right(z, t):
    return -np.asarray(t, np.float64) / np.asarray(z, np.float64)


def test_loss_gradient_wrong_fails():
    x = PRESETS["benign"].make()
    t = np.random.default_rng(1).uniform(0.1, 1, 16)
    assert not run_loss(x, t, impl=grad_wrong).passed
    assert run_loss(x, t, impl=grad_right).passed


def zero_v(x, k, v):
    """v with v_k = sum_{j != k} v_j s_j / (1 - s_k), so that z_k = 0 (to rounding)."""
    s = mp_softmax(x, 60)
    with mpmath.workdps(60):
        num = mpmath.fsum(mpmath.mpf(float(v[j])) * s[j] for j in range(len(x)) if j != k)
        den = mpmath.fsum(s[j] for j in range(len(x)) if j != k)
        out = np.array(v, dtype=np.float64)
        out[k] = float(num / den)
    return out


def test_loss_zero_condition_names_k_and_fails():
    x = np.array([1.0, 2.0, 0.5, -1.0])
    k = 2
    v = zero_v(x, k, [0.3, -1.2, 0.7, 2.0])
    t = np.zeros(4)
    t[k] = 1.0
    rep = run_loss(x, t, v=v)
    zc = next(c for c in rep.checks if c.name == "zero_condition")
    # the input, not the implementation: an input condition (exit 3), not a failure
    assert not zc.passed and zc.status == "input_condition" and rep.passed
    assert [c["kind"] for c in rep.input_conditions] == ["zero_condition"]
    assert rep.exit_status(check=True) == 3
    assert [0, k] in zc.details["zero_condition"]["unreliable_indices"] + \
        zc.details["zero_condition"]["exact_zero_indices"]
    assert f"v_{k} = " in failure_lines(zc)[0] and "<v, s> = " in failure_lines(zc)[0]
    entry = zc.details["zero_condition"]["entries"][0]
    assert entry["index"] == k and abs(entry["v_i"] - float(entry["<v,s>"])) < 1e-15
    # a benign loss: z = softmax(x), t a distribution
    assert run_loss(x, np.array([0.1, 0.6, 0.2, 0.1])).passed


def test_loss_domain_with_given_z():
    rep = run_loss(None, np.array([1.0, 1.0]), z=np.array([0.5, -0.5]))
    assert not status(rep)["domain"]
    assert run_loss(None, np.array([1.0, 0.0]), z=np.array([0.5, -0.5])).passed


def test_probe_mode_reports_every_applicable_check():
    x = np.random.default_rng(4).standard_normal(300)
    names = [c.name for c in run_jacobian(x, max_dense=100).checks]
    assert names == ["reference", "finite_difference", "symmetry", "zero_sums", "shift_invariance"]
    log = run_jacobian(x, max_dense=100, log=True)
    assert [c.name for c in log.checks] == ["reference", "finite_difference", "zero_sums",
                                            "shift_invariance"]
    assert log.passed and "v^T J 1" in log.checks[2].measured


@pytest.mark.parametrize("i,k", [(3, 1), (250, 7), (129, 128)])
def test_symmetry_finds_one_asymmetric_pair_across_tiles(i, k):
    """The symmetry check works in strips of rows: a pair in any strip is found and named."""
    import smcheck

    def jac(x):
        e = np.exp(x - x.max())
        s = e / e.sum()
        J = np.diag(s) - np.outer(s, s)
        J[i, k] += 1e-9
        return J

    rep = smcheck.check("jacobian", np.random.default_rng(0).standard_normal(300), impl=jac)
    c = next(c for c in rep.checks if c.name == "symmetry")
    assert not c.passed and sorted(c.worst["index"]) == sorted([i, k])
    assert c.max_abs_err == pytest.approx(1e-9, rel=1e-6)


def _exact_sum(row):
    from fractions import Fraction

    return sum((Fraction(float(t)) for t in row), Fraction(0))


@pytest.mark.parametrize("n", [5, 4095, 4096, 8192 * 3 + 17, 200_000])
@pytest.mark.parametrize("kind", ["positive", "wide", "cancelling"])
def test_fsum_rows_within_its_stated_bound(n, kind):
    """Both paths of fsum_rows (double-double below LONG_SUM_MIN terms, long double by blocks
    from it on where long double has 64 bits) against exact rational sums: the error is within
    the stated bound of sum |terms|, plus the final rounding to float64 (u |sum|)."""
    import math

    from smcheck.ddmath import LONG_SUM_MIN, fsum_rows

    rng = np.random.default_rng(n)
    if kind == "positive":  # no cancellation: rounding errors pile up in one direction
        a = 1.0 + rng.random((2, n))
    elif kind == "wide":
        a = rng.standard_normal((2, n)) * np.exp(rng.uniform(-30, 30, (2, n)))
    else:  # the sum is 2^-30 of sum |terms|: its relative error is amplified 2^30 times
        h = rng.standard_normal((2, n // 2))
        a = np.concatenate([h, -h * (1 + 2.0 ** -30), np.zeros((2, n % 2))], axis=1)
        a = rng.permuted(a, axis=1)
    got = fsum_rows(a)
    long_path = a.size >= LONG_SUM_MIN and np.finfo(np.longdouble).nmant >= 63
    bound = ((45 + math.log2(n)) * 2.0 ** -64 if long_path
             else math.ceil(math.log2(n)) * 2.0 ** -106)
    for r in range(2):
        exact = _exact_sum(a[r])
        err = abs(float(_exact_sum([got[r]]) - exact))
        assert err <= bound * float(np.sum(np.abs(a[r]))) + 2.0 ** -53 * abs(float(exact)), (
            r, err)


def test_fsum_rows_nan_for_non_finite_terms_and_any_axis():
    from smcheck.ddmath import fsum_rows

    rng = np.random.default_rng(3)
    for n in (7, 9000):  # both paths
        a = rng.standard_normal((3, n))
        a[0, 5] = np.inf
        a[1, 2], a[1, 3] = np.inf, -np.inf
        got = fsum_rows(a)
        assert np.isnan(got[0]) and np.isnan(got[1]) and np.isfinite(got[2])
        # the largest finite doubles: their sum overflows float64, not the sum itself
        big = np.full((1, n), np.finfo(np.float64).max)
        with np.errstate(over="ignore", invalid="ignore"):
            assert not np.isfinite(fsum_rows(big)[0])  # never a wrong finite number
    J = rng.standard_normal((2, 70, 70))
    for axis in (-1, 1):
        want = [[float(_exact_sum(np.moveaxis(J[r], axis if axis == -1 else 0, -1)[i]))
                 for i in range(70)] for r in range(2)]
        np.testing.assert_allclose(fsum_rows(J, axis=axis), want, rtol=1e-15, atol=1e-14)
