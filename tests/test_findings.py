"""The README's findings about scipy and torch, each asserted (skipped when absent)."""

import numpy as np
import pytest

from smcheck.presets import PRESETS
from smcheck.run import run_forward, run_jacobian
from smcheck.sweep import run_sweep

FAST = [p for p in PRESETS if p != "large-n"]


@pytest.mark.parametrize("impl", ["scipy", "torch"])
def test_framework_passes_the_sweep(impl):
    pytest.importorskip(impl)
    res = run_sweep(impl, "all", FAST)
    assert res.passed, [c for c in res.cases if not c["passed"]][:2]


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


def test_bfloat16_large_n_scipy_versus_torch():
    pytest.importorskip("scipy")
    torch = pytest.importorskip("torch")  # noqa: F841
    x = PRESETS["large-n"].make()
    s = run_forward(x, impl="scipy", dtype="bfloat16")
    t = run_forward(x, impl="torch", dtype="bfloat16")
    assert s.passed and t.passed
    assert s.checks[0].max_ulp == pytest.approx(206.28, rel=1e-3)
    assert t.checks[0].max_ulp == pytest.approx(0.5005, rel=1e-3)
    assert np.isfinite(s.checks[0].max_ulp)
