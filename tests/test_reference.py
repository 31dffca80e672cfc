"""The mpmath reference against an independent recomputation with more digits.

The independent formula is s_i = 1 / sum_j exp(x_j - x_i) (no max, no log1p), evaluated at
three times the digits; log s_i = -log(sum_j exp(x_j - x_i)).
"""

import mpmath
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from smcheck.reference import exact_softmax


def independent(row, dps):
    with mpmath.workdps(dps):
        xs = [mpmath.mpf(float(v)) for v in row]
        fin = [v for v in xs if v != mpmath.ninf]
        s, y = [], []
        for xi in xs:
            if xi == mpmath.ninf:
                s.append(mpmath.mpf(0))
                y.append(mpmath.ninf)
                continue
            tot = mpmath.fsum(mpmath.exp(mpmath.fsub(xj, xi, exact=True)) for xj in fin)
            s.append(1 / tot)
            y.append(-mpmath.log(tot))
        return s, y


def assert_agrees(X, dps=50):
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    ref = exact_softmax(X, dps)
    for r, row in enumerate(X):
        s, y = independent(row, 3 * dps)
        with mpmath.workdps(3 * dps):
            for i in range(len(row)):
                got_s = mpmath.mpf(ref.s_hi[r, i]) + mpmath.mpf(ref.s_lo[r, i])
                # double-double keeps ~106 bits: compare at that precision where representable
                if s[i] > mpmath.mpf(2) ** -1000:
                    assert abs(got_s - s[i]) <= 2 ** -100 * s[i], (r, i, got_s, s[i])
                else:
                    assert float(s[i]) == ref.s_hi[r, i]
                if y[i] == mpmath.ninf:
                    assert ref.y_hi[r, i] == -np.inf
                elif abs(y[i]) > 1.7e308:
                    assert ref.y_hi[r, i] == float(y[i])  # rounds to -inf in float64
                else:
                    got_y = mpmath.mpf(ref.y_hi[r, i]) + mpmath.mpf(ref.y_lo[r, i])
                    tol = 2 ** -100 * abs(y[i]) + mpmath.mpf(10) ** -300
                    assert abs(got_y - y[i]) <= tol, (r, i, got_y, y[i])


@pytest.mark.parametrize("row", [
    [1000.0, 999.0, 990.0],
    [-1000.0, -1001.0, -1002.0],
    [1e308, -1e308, 0.0, 1e307],
    [50.0] + [0.0] * 7,
    [2.0, -np.inf, 0.5, -np.inf],
    [1 + k * 1e-12 for k in range(10)],
    [0.0, -708.0, -740.0, -746.0],
    [2500.0, 0.0, -1000.0, -6000.0],
    [0.7],
    [3.0, 3.0, 3.0, 1.0, 3.0],
])
def test_reference_extremes_agree_with_more_digits(row):
    assert_agrees(row)


def test_saturated_log_softmax_keeps_relative_accuracy():
    # log softmax of the max entry of [1000, 0] is -log1p(e^-1000) = -e^-1000 (subnormal-free
    # in mpmath, 0 in float64) and of [40, 0] is -4.25e-18: relative accuracy must hold.
    ref = exact_softmax(np.array([[40.0, 0.0]]), 50)
    with mpmath.workdps(100):
        exact = -mpmath.log1p(mpmath.exp(-40))
        got = mpmath.mpf(ref.y_hi[0, 0]) + mpmath.mpf(ref.y_lo[0, 0])
        assert abs(got - exact) <= 2 ** -100 * abs(exact)


@given(st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1,
                max_size=12))
@example([0.0, -np.inf])  # masked entries
@example([745.5, -745.5])
@example([0.0, 141.0])  # found by hypothesis: at 30 digits y_0 = -5.8e-62 kept only 1e-30
def test_reference_agrees_random(row):
    assert_agrees(row, dps=40)  # 2^-100 needs more than 30 digits


def test_reference_precision_is_scoped():
    before = mpmath.mp.dps
    exact_softmax(np.array([[1.0, 2.0]]), 200)
    assert mpmath.mp.dps == before


def test_exact_shift_invariance_of_reference():
    # x + c is exact here (small integers), so the exact softmax must be identical.
    x = np.array([[3.0, 1.0, -2.0, 0.0]])
    a = exact_softmax(x, 50)
    b = exact_softmax(x + 1024.0, 50)
    np.testing.assert_array_equal(a.s_hi, b.s_hi)
    np.testing.assert_array_equal(a.s_lo, b.s_lo)


def test_large_n_closed_form():
    # n = 10^5 entries of two values: the softmax has a closed form, computed independently.
    n, k = 100_000, 7
    x = np.zeros(n)
    x[:k] = 5.0
    ref = exact_softmax(x[None, :], 40)
    with mpmath.workdps(60):
        S = k * mpmath.exp(5) + (n - k)
        big, small = mpmath.exp(5) / S, 1 / S
        for i, want in ((0, big), (k, small), (n - 1, small)):
            got = mpmath.mpf(ref.s_hi[0, i]) + mpmath.mpf(ref.s_lo[0, i])
            assert abs(got - want) <= 2 ** -100 * want
