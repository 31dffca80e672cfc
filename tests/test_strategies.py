"""smcheck.strategies: every kind of row is what it claims, in every dtype; smcheck's stable
softmax passes on the draws and the naive one fails on the overflow edge (the control)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

import smcheck
from smcheck.dtypes import DTYPE_NAMES, dtype_info

S = smcheck.strategies
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = S.shapes(max_rows=4, min_n=1, max_n=32)


def rows_of(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, x.shape[-1])


def exact_softmax(row: np.ndarray) -> np.ndarray:
    """float64 softmax of a row with a finite max (accurate to a few float64 ulps, subnormals
    to their absolute spacing: far inside the margins the kinds are built with)."""
    d = row - row.max()
    return np.exp(d - np.log(np.sum(np.exp(d))))


def representable(x: np.ndarray, dtype: str) -> bool:
    info = dtype_info(dtype)
    return bool(np.array_equal(x.astype(info.np_dtype).astype(np.float64), x))


# --- every draw: float64, in the dtype, no nan or +inf --------------------------------------------

@pytest.mark.parametrize("kind", list(S.KINDS))
@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_every_kind_draws_values_the_dtype_holds_and_no_nan(dtype, kind):
    @FEW
    @given(S.logits(dtype, SMALL, [kind], fully_masked=True))
    def check(x):
        assert x.dtype == np.float64 and x.ndim == 2
        assert not np.isnan(x).any() and not np.isposinf(x).any()
        assert representable(x, dtype)

    check()


def test_shapes_one_d_and_large_n():
    assert find(S.logits("float32", (7,)), lambda x: True).shape == (7,)
    x = find(S.large_n("float16", rows=2, min_n=5000, max_n=6000), lambda x: True)
    assert x.shape == (2, 5000)  # shrunk to the smallest n
    assert find(S.logits("float32", (300, 3)), lambda x: True).shape == (300, 3)  # > 16 rows


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown kinds"):
        S.logits("float32", (2, 2), ["overflow"])
    with pytest.raises(smcheck.InputError):
        S.logits("float8", (2, 2))
    with pytest.raises(ValueError, match="shape"):
        S.logits("float32", (2, 0))


# --- each kind is what it says ----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_overflow_edge_rows_reach_log_realmax_and_some_pass_it(dtype):
    info = dtype_info(dtype)

    @FEW
    @given(S.overflow_edge(dtype, SMALL))
    def check(x):
        assert np.isfinite(x).all()
        assert (rows_of(x).max(axis=1) >= 0.89 * info.log_max).all()

    check()
    past = find(S.overflow_edge(dtype, SMALL), lambda x: x.max() > info.log_max)
    assert past.max() > info.log_max and np.isfinite(past).all()


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_saturated_rows_have_one_entry_far_above_the_rest(dtype):
    @FEW
    @given(S.saturated(dtype, S.shapes(max_rows=4, min_n=2, max_n=32)))
    def check(x):
        for row in rows_of(x):
            top, second = np.sort(row)[-1], np.sort(row)[-2]
            assert top - second >= 3.0  # 5 before rounding to the dtype

    check()
    info = dtype_info(dtype)

    def saturates(x):  # the top entry rounds to 1 in the dtype, the others underflow to 0
        s = np.sort(info.round(exact_softmax(x[0])).astype(np.float64))
        return s[-2] == 0 and s[-1] == 1

    assert saturates(find(S.saturated(dtype, (1, 8)), saturates))


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_masked_rows_have_minus_inf_and_a_finite_entry(dtype):
    @FEW
    @given(S.masked(dtype, S.shapes(max_rows=4, min_n=2, max_n=32)))
    def check(x):
        r = rows_of(x)
        assert np.isneginf(r).any(axis=1).all() and np.isfinite(r).any(axis=1).all()

    check()
    whole = find(S.masked(dtype, (3, 4), fully_masked=True),
                 lambda x: np.isneginf(x).all(axis=1).any())
    assert np.isneginf(whole).all(axis=1).any()  # asked for: an all -inf row


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_ties_repeat_the_max(dtype):
    @FEW
    @given(S.ties(dtype, S.shapes(max_rows=4, min_n=2, max_n=32)))
    def check(x):
        for row in rows_of(x):
            assert np.sum(row == row.max()) >= 2

    check()


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_subnormal_rows_have_entries_whose_softmax_is_subnormal_in_the_dtype(dtype):
    info = dtype_info(dtype)

    @FEW
    @given(S.subnormal(dtype, S.shapes(max_rows=4, min_n=2, max_n=32)))
    def check(x):
        for row in rows_of(x):
            s = exact_softmax(row)
            assert ((s >= info.eta) & (s < info.tiny)).any(), (row, s)

    check()


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_wide_range_and_flat_rows(dtype):
    info = dtype_info(dtype)

    @FEW
    @given(S.wide_range(dtype, SMALL), S.flat(dtype, SMALL))
    def check(wide, flat):
        assert (np.abs(wide) >= 0.99).all() and (np.abs(wide) <= info.max / 4).all()
        assert (np.ptp(rows_of(flat), axis=1) <= 12).all()

    check()
    far = find(S.wide_range(dtype, (1, 8)), lambda x: np.ptp(x) > 3 * abs(info.log_eta))
    assert np.ptp(far) > 3 * abs(info.log_eta)  # gaps past the underflow threshold occur


def test_logits_mixes_kinds_and_shrinks_to_the_simplest_recipe():
    """Shrinking works on the recipe: n shrinks to 1, and the rows to the simplest recipe that
    can exceed 100 (benign rows cannot)."""
    x = find(S.logits("float32", S.shapes()), lambda x: x.max() > 100)
    assert x.shape[1] == 1 and x.max() > 100
    mixed = find(S.logits("float16", (8, 16)),
                 lambda x: np.isneginf(x).any() and np.ptp(x[np.isfinite(x)]) > 1000)
    assert np.isneginf(mixed).any()


# --- smcheck's verdicts on the draws ----------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_the_stable_softmax_passes_on_every_kind(dtype):
    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(S.logits(dtype, S.shapes(max_rows=4, min_n=1, max_n=24)))
    def check(x):
        smcheck.assert_correct("stable", x, dtype=dtype)

    check()


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_the_naive_softmax_fails_on_the_overflow_edge(dtype):
    """The control: a draw on which naive's own result is wrong (not only its shifted copies),
    and the stable softmax passes on that same draw."""
    def naive_wrong(x):
        report = smcheck.check("forward", x, impl="naive", dtype=dtype)
        return not next(c for c in report.checks if c.name == "reference").passed

    x = find(S.overflow_edge(dtype, (2, 8)), naive_wrong)
    assert x.max() > dtype_info(dtype).log_max - math.log(8)
    with pytest.raises(smcheck.SoftmaxCheckError):
        smcheck.assert_correct("naive", x, dtype=dtype)
    smcheck.assert_correct("stable", x, dtype=dtype)


@given(st.data())
@settings(max_examples=10, deadline=None)
def test_dtypes_and_logits_compose(data):
    dtype = data.draw(S.dtypes())
    x = data.draw(S.logits(dtype, (2, 8)))
    assert representable(x, dtype)


def test_import_smcheck_does_not_import_hypothesis():  # subprocess: a fresh interpreter
    script = textwrap.dedent("""
        import sys
        import smcheck
        smcheck.check_forward
        before = "hypothesis" in sys.modules
        smcheck.strategies.logits
        print("@@", before, "hypothesis" in sys.modules, "strategies" in dir(smcheck))
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       cwd=REPO, timeout=120, env={**os.environ, "PYTHONPATH": REPO})
    assert p.returncode == 0, p.stderr
    assert p.stdout.rsplit("@@", 1)[1].split() == ["False", "True", "True"]
