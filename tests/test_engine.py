"""The double-double engine certified against mpmath at high precision: softmax, log-softmax,
1 - s, the VJP, v^T J u and the gradient in x, on random and adversarial inputs."""

import mpmath
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from smcheck.reference.dd import softmax_dd
from smcheck.reference import exact_bilinear, exact_grad_x, exact_softmax, exact_vjp
from smcheck.run import run_forward, run_jacobian, run_loss, run_vjp

BOUND = 2.0 ** -100


def agree(h1, l1, h2, l2, floor=1e-300, bound=BOUND):
    """|(h1 + l1) - (h2 + l2)| <= 2^-100 |h2| where h2 is normal; within one subnormal
    spacing (eta) below 1e-300, where the low parts of both pairs are rounded to eta."""
    with mpmath.workdps(60):
        for a, b, c, d in zip(np.ravel(h1), np.ravel(l1), np.ravel(h2), np.ravel(l2)):
            if not np.isfinite(c):
                assert a == c
                continue
            diff = abs((mpmath.mpf(a) + mpmath.mpf(b)) - (mpmath.mpf(c) + mpmath.mpf(d)))
            if abs(c) > floor:
                assert diff <= bound * abs(c), (a, c, diff)
            else:  # low parts are subnormal here: each pair is within eta/2 of the exact value
                assert diff <= mpmath.mpf(5e-324), (a, c, diff)


ADVERSARIAL = [
    [1000.0, 999.0, 990.0], [-1000.0, -1001.0, -1002.0], [50.0] + [0.0] * 7,
    [2.0, -np.inf, 0.5, -np.inf, -1.0, 3.0], [1e308, -1e308, 0.0, 1e307],
    [0.0, -708.0, -740.0, -746.0], [2500.0, 0.0, -1000.0, -6000.0], [0.7],
    [3.0, 3.0, 3.0, 1.0, 3.0], [1 + k * 1e-12 for k in range(10)], [0.0, -744.0, -745.5],
]


@pytest.mark.parametrize("row", ADVERSARIAL)
def test_softmax_dd_agrees_with_mpmath_at_the_extremes(row):
    X = np.array([row])
    a, b = softmax_dd(X, one_minus=True), exact_softmax(X, 60, one_minus=True)
    agree(a.s_hi, a.s_lo, b.s_hi, b.s_lo)
    agree(a.y_hi, a.y_lo, b.y_hi, b.y_lo)
    agree(a.om_hi, a.om_lo, b.om_hi, b.om_lo)


@given(st.lists(st.floats(min_value=-800, max_value=800), min_size=1, max_size=30))
@example([0.0, 141.0])
@example([500.75, -208.0])  # found by hypothesis: log s_0 = -1.56e-308 at the subnormal edge
def test_softmax_dd_agrees_random(row):
    X = np.array([row])
    a, b = softmax_dd(X), exact_softmax(X, 60)
    agree(a.s_hi, a.s_lo, b.s_hi, b.s_lo)
    agree(a.y_hi, a.y_lo, b.y_hi, b.y_lo)


def test_vjp_bilinear_grad_x_dd_agree():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((3, 60)) * 8
    X[0, 3] = -np.inf
    V, T = rng.standard_normal((3, 60)), rng.uniform(size=(3, 60))
    a, b = exact_vjp(X, V, 60, engine="dd"), exact_vjp(X, V, 60, engine="mpmath")
    agree(a.z_hi, a.z_lo, b.z_hi, b.z_lo)
    assert a.dot_str == b.dot_str
    Vp, Up = rng.standard_normal((3, 2, 60)), rng.standard_normal((3, 2, 60))
    for log in (False, True):
        ha, la = exact_bilinear(X, Vp, Up, 60, log, "dd")
        hb, lb = exact_bilinear(X, Vp, Up, 60, log, "mpmath")
        # v^T J u cancels: compare relative to the size of its terms
        assert np.all(np.abs((ha - hb) + (la - lb)) <= 1e-28 * (1 + np.abs(hb)))
    agree(*exact_grad_x(X, T, 60, "dd"), *exact_grad_x(X, T, 60, "mpmath"))


#: large enough for the engine's blocked sums (blocks.BLOCK = 2^15 entries) to run four whole
#: blocks and a partial one, then sum the blocks' sums; the mpmath sums over it take ~3 s
#: (at n = 10^6, 27 s, for the same property)
LARGE_N = 2 ** 17 + 1000


def test_large_n_dd_against_mpmath_sample():
    # n = LARGE_N: mpmath recomputes a sample of entries with the dd engine's S
    x = np.random.default_rng(2).standard_normal(LARGE_N) * 3
    a = softmax_dd(x[None, :])
    with mpmath.workdps(40):
        m = float(x.max())
        S = mpmath.fsum(mpmath.exp(mpmath.mpf(float(v)) - m) for v in x)
        for i in (0, 1, 123_456, LARGE_N - 1, int(np.argmax(x)), int(np.argmin(x))):
            want = mpmath.exp(mpmath.mpf(float(x[i])) - m) / S
            got = mpmath.mpf(a.s_hi[0, i]) + mpmath.mpf(a.s_lo[0, i])
            assert abs(got - want) <= BOUND * want
    # the fast tiers at the same n: the float64 tier, and the shifted references derived from
    # the base (c pushes max(x) past the overflow threshold; the exact x + c rounded)
    from smcheck.reference.dd import f64_bound, shift_bound, shifted_softmax_dd, softmax_f64

    b = softmax_f64(x[None, :])
    c = 725.0 - float(x.max())
    sh = shifted_softmax_dd(x[None, :], np.array([c]), a)
    xs = x + c
    maxD = 0.0
    with mpmath.workdps(40):
        m = float(x.max())
        for i in (0, 1, 123_456, LARGE_N - 1, int(np.argmax(x)), int(np.argmin(x))):
            want = mpmath.exp(mpmath.mpf(float(x[i])) - m) / S
            bound = f64_bound(np.array([x[i] - m]), x.size)[0]
            assert abs(mpmath.mpf(b.s_hi[0, i]) - want) <= bound * want
        ms = float(xs.max())
        Ss = mpmath.fsum(mpmath.exp(mpmath.mpf(float(v)) - ms) for v in xs)
    # the rounding of each x_i + c, exactly: math.fsum of three floats is exactly rounded, and
    # fl(x + c) - (x + c) is a float
    import math

    delta = np.array([-math.fsum((float(v), c, -float(w))) for v, w in zip(x, xs)])
    k = int(np.argmax(x))
    maxD = float(np.max(np.abs(delta - delta[k])))
    with mpmath.workdps(40):
        for i in (0, 1, 123_456, LARGE_N - 1, k, int(np.argmin(x))):
            want = mpmath.exp(mpmath.mpf(float(xs[i])) - ms) / Ss
            got = mpmath.mpf(sh.s_hi[0, i]) + mpmath.mpf(sh.s_lo[0, i])
            assert abs(got - want) <= shift_bound(maxD, x.size) * want
    assert shift_bound(maxD, x.size) < 2.0 ** -88


@pytest.mark.parametrize("preset_x", [np.array([50.0, 0, 0, 0]), np.array([1000.0, 999, 990]),
                                      np.random.default_rng(9).standard_normal(40) * 20])
@pytest.mark.parametrize("impl", ["stable", "naive", "divfree"])
@pytest.mark.parametrize("dtype", ["float64", "float16"])
def test_no_verdict_changes_between_engines(preset_x, impl, dtype):
    for fn, kw in ((run_forward, {}), (run_forward, {"log": True}), (run_jacobian, {}),
                   (run_vjp, {}), (run_loss, {"t": np.eye(len(preset_x))[0]})):
        a = fn(preset_x, impl=impl, dtype=dtype, engine="dd", **kw)
        b = fn(preset_x, impl=impl, dtype=dtype, engine="mpmath", **kw)
        assert [(c.name, c.passed) for c in a.checks] == [(c.name, c.passed) for c in b.checks]
        assert "double-double" in a.reference and "mpmath" in b.reference


@pytest.mark.parametrize("target", [725.0, -760.3])
@pytest.mark.parametrize("row", ADVERSARIAL + [list(np.random.default_rng(3).standard_normal(40) * 9)])
def test_shifted_softmax_from_the_base_agrees_with_mpmath(row, target):
    from smcheck.reference.dd import shift_bound, shifted_softmax_dd

    X = np.array([row])
    c = target - np.max(X, axis=1)
    got = shifted_softmax_dd(X, c, softmax_dd(X))
    with np.errstate(over="ignore"):
        Xs = X + c[:, None]  # float64 addition: the rounded x + c (1e308 + c overflows)
    want = exact_softmax(Xs, 60)
    # the stated bound, from the exact rounding errors D of the shift (mpmath)
    fin = np.isfinite(X[0])
    with mpmath.workdps(60):
        delta = [mpmath.mpf(Xs[0, i]) - (mpmath.mpf(X[0, i]) + mpmath.mpf(c[0])) if fin[i]
                 else mpmath.mpf(0) for i in range(X.shape[1])]
        m = int(np.argmax(np.where(fin, X[0], -np.inf)))
        maxD = float(max(abs(d - delta[m]) for d in delta))
    bound = shift_bound(maxD, X.shape[1]) if maxD <= 1e-10 else BOUND
    assert bound <= 2.0 ** -85
    agree(got.s_hi, got.s_lo, want.s_hi, want.s_lo, bound=bound)
    agree(got.y_hi, got.y_lo, want.y_hi, want.y_lo, bound=bound)
    if maxD <= 1e-10:
        assert "derived from the unshifted reference" in got.precision


def test_dd_exp_agrees_with_mpmath_to_2_to_the_minus_104():
    """The exp kernel alone (Cody-Waite reduction, table, Horner in pairs), on its whole
    domain (-800, 0], next to the table points and with low parts."""
    from smcheck.ddmath import dd_exp

    rng = np.random.default_rng(5)
    dh = np.concatenate([-rng.uniform(0, 800, 1500), -rng.uniform(0, 1, 500),
                         -rng.uniform(0, 1e-8, 100), [0.0, -1e-300, -0.0054152, -799.99],
                         -(np.arange(1, 400) * (np.log(2) / 64))])
    dl = dh * rng.uniform(-1.1e-16, 1.1e-16, dh.size)
    k, mh, ml = dd_exp(dh, dl)
    with mpmath.workdps(60):
        for a, b, kk, h, lo in zip(dh, dl, k, mh, ml):
            want = mpmath.exp(mpmath.mpf(a) + mpmath.mpf(b))
            got = mpmath.ldexp(mpmath.mpf(h) + mpmath.mpf(lo), int(kk))
            assert abs(got - want) <= 2.0 ** -104 * want, (a, b)


def test_exp_table_is_mpmaths_2_to_the_j_over_64_as_pairs():
    """The table (computed with the decimal module, so that a forward run never imports
    mpmath) is the correctly rounded pair of 2^(j/64) from mpmath at 60 digits."""
    from smcheck.ddmath import _table

    hi, lo = _table()
    with mpmath.workdps(60):
        for j in range(64):
            v = mpmath.power(2, mpmath.mpf(j) / 64)
            assert hi[j] == float(v) and lo[j] == float(v - mpmath.mpf(hi[j])), j


# --- the float64 tier (forward, float32/float16/bfloat16 results) -----------------------------

@pytest.mark.parametrize("row", ADVERSARIAL + [list(np.random.default_rng(4).standard_normal(3000)
                                                    * 12)])
def test_float64_tier_within_its_stated_bound_of_mpmath(row):
    from smcheck.reference.dd import f64_bound, softmax_f64

    X = np.array([row])
    got = softmax_f64(X, one_minus=True)
    want = exact_softmax(X, 60, one_minus=True)
    bound = f64_bound(want.d, X.shape[1])
    with mpmath.workdps(60):
        for i in range(X.shape[1]):
            w = mpmath.mpf(want.s_hi[0, i]) + mpmath.mpf(want.s_lo[0, i])
            diff = abs(mpmath.mpf(got.s_hi[0, i]) - w)
            if w > 1e-300:
                assert diff <= bound[0, i] * w, (i, row[i] if len(row) < 50 else None)
                wo = mpmath.mpf(want.om_hi[0, i]) + mpmath.mpf(want.om_lo[0, i])
                assert abs(mpmath.mpf(got.om_hi[0, i]) - wo) <= 4 * bound[0, i] * wo + 1e-300
            else:  # below the float64 normal range: within a float64 subnormal spacing-ish
                assert diff <= 1e-300
    assert got.rel_bound <= 2.0 ** -43 and "float64 tier" in got.precision


def test_float64_tier_is_what_auto_uses_for_narrow_results():
    x = np.random.default_rng(2).standard_normal(5000)
    for dt, want in (("float64", "double-double"), ("float32", "float64 tier"),
                     ("float16", "float64 tier"), ("bfloat16", "float64 tier")):
        assert want in run_forward(x, dtype=dt).reference
    assert "mpmath" in run_forward(x[:100], dtype="float32").reference
    from smcheck.exceptions import InputError

    with pytest.raises(InputError, match="f64"):
        run_forward(x, dtype="float64", engine="f64")
    with pytest.raises(InputError, match="forward only"):
        run_vjp(x, engine="f64", dtype="float32")


@pytest.mark.parametrize("preset_x", [np.array([50.0, 0, 0, 0]), np.array([1000.0, 999, 990]),
                                      np.array([0.0, -100.0, -104.0, -110.0]),
                                      np.random.default_rng(9).standard_normal(40) * 20])
@pytest.mark.parametrize("impl", ["stable", "naive", "divfree"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("log", [False, True])
def test_no_verdict_changes_between_the_float64_tier_and_mpmath(preset_x, impl, dtype, log):
    a = run_forward(preset_x, impl=impl, dtype=dtype, engine="f64", log=log)
    b = run_forward(preset_x, impl=impl, dtype=dtype, engine="mpmath", log=log)
    assert [(c.name, c.passed) for c in a.checks] == [(c.name, c.passed) for c in b.checks]
    assert "float64 tier" in a.reference
    ra = next(c for c in a.checks if c.name == "reference")
    rb = next(c for c in b.checks if c.name == "reference")
    assert ra.max_ulp == pytest.approx(rb.max_ulp, rel=1e-6, abs=1e-6)
