"""The framework adapters (``--impl scipy|torch|jax``): they really run the framework, in the
requested dtype, and pass smcheck's checks where the framework is right.

Measured with torch 2.13.0 (CPU) and scipy 1.17.1: every forward check on the presets below
passes in all four dtypes, softmax and log-softmax; the one finding is log-softmax on the
saturated ``one-hot`` input, where both return log s_0 = 0 (exact -1.35e-21): it passes the
default scaled metric and fails ``--metric strict`` (see test_log_softmax_one_hot_strict).
jax is not installed here: its tests skip.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from smcheck.dtypes import DTYPE_NAMES, dtype_info
from smcheck.exceptions import ImplementationError, InputError
from smcheck.impls import get_implementation
from smcheck.impls.adapters import _fix_masked_jacobian, _fix_masked_vjp, make_adapter
from smcheck.presets import PRESETS
from smcheck.run import run_forward, run_jacobian, run_loss, run_vjp
from smcheck.sentences import failure_lines

IMPLS = ("scipy", "torch")
FORWARD_PRESETS = ("benign", "overflow", "masked", "one-hot", "ties", "fully-masked")


def _need(impl: str):
    """The framework's module, or a skip where it is not installed."""
    return pytest.importorskip({"scipy": "scipy.special"}.get(impl, impl))


@pytest.fixture
def torch():
    return _need("torch")


@pytest.fixture
def scipy_special():
    return _need("scipy")


def _failed(rep) -> list[str]:
    return [f"{c.name}: {c.measured}; {'; '.join(failure_lines(c))}" for c in rep.checks if not c.passed]


def _benign():
    return PRESETS["benign"].make()


def _targets(x):
    # nonzero only where x is not masked: t_i > 0 where z_i = 0 would make the loss infinite
    t = np.abs(np.random.default_rng(3).standard_normal(np.shape(x)))
    return np.where(np.isfinite(x), t, 0.0)


# --- forward ------------------------------------------------------------------------------------


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log"])
@pytest.mark.parametrize("preset", FORWARD_PRESETS)
@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("impl", IMPLS)
def test_forward_presets_pass(impl, dtype, preset, log):
    _need(impl)
    # Both frameworks subtract the max, so overflow and masking are safe in every dtype; all of
    # these presets pass (worst reference error: 3.2 ULP, float16 one-hot softmax).
    rep = run_forward(PRESETS[preset].make(), impl=impl, dtype=dtype, log=log)
    assert rep.impl == impl
    assert rep.passed, _failed(rep)
    if preset == "fully-masked":
        assert [u["row"] for u in rep.undefined_rows] == [1]


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16"])
@pytest.mark.parametrize("impl", IMPLS)
def test_log_softmax_one_hot_strict(impl, dtype):
    _need(impl)
    # Finding: torch.log_softmax and scipy.special.log_softmax compute (x - max) - log(sum),
    # and log(1 + 1.35e-21) rounds to 0, so log s_0 = 0 instead of -1.35e-21 (7.2e15 ULP in
    # float64, 1.3e7 in float32, 204 in bfloat16). The default scaled metric accepts it (the
    # absolute error is tiny next to |x|); --metric strict does not. float16 is exempt: the
    # exact value is below its smallest subnormal, so 0 is the correct rounding there.
    x = PRESETS["one-hot"].make()
    rep = run_forward(x, impl=impl, dtype=dtype, log=True, metric="strict")
    assert not rep.passed
    assert rep.result[0][0] == 0.0
    ref = next(c for c in rep.checks if c.name == "reference")
    assert not ref.passed and ref.worst["index"] == 0
    assert run_forward(x, impl="stable", dtype=dtype, log=True, metric="strict").passed


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_torch_computes_in_the_dtype(torch, dtype):
    info = dtype_info(dtype)
    X = info.round(np.vstack([_benign(), _benign()[::-1] * 3])).astype(info.np_dtype)
    impl = get_implementation("torch")
    tdt = getattr(torch, dtype)
    for log in (False, True):
        got = impl.softmax(X, info, log)
        assert got.dtype == np.float64
        # every value is one of the dtype's: nothing was computed in a wider format and kept
        assert np.array_equal(got, info.round(got).astype(np.float64))
        fn = torch.log_softmax if log else torch.softmax
        direct = fn(torch.tensor(X.astype(np.float64)).to(tdt), dim=-1).double().numpy()
        assert np.array_equal(got, direct)


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_scipy_computes_in_the_dtype(scipy_special, dtype):
    info = dtype_info(dtype)
    X = info.round(_benign()[None, :]).astype(info.np_dtype)
    impl = get_implementation("scipy")
    got = impl.softmax(X, info)
    assert np.array_equal(got, info.round(got).astype(np.float64))
    direct = np.asarray(scipy_special.softmax(X, axis=-1))
    assert direct.dtype == info.np_dtype  # scipy keeps every dtype, bfloat16 included
    assert np.array_equal(got, direct.astype(np.float64))


def test_scipy_bfloat16_fallback_when_scipy_upcasts(scipy_special, monkeypatch):
    # a scipy that returns float64 for bfloat16 input: computed in float32, rounded once
    real = scipy_special.softmax
    monkeypatch.setattr(scipy_special, "softmax",
                        lambda x, axis=None: real(np.asarray(x, dtype=np.float64), axis=axis))
    info = dtype_info("bfloat16")
    X = info.round(_benign()[None, :]).astype(info.np_dtype)
    impl = make_adapter("scipy")
    got = impl.softmax(X, info)
    assert np.array_equal(got, info.round(got).astype(np.float64))
    assert "float32" in impl.note
    want = real(X.astype(np.float32), axis=-1).astype(info.np_dtype).astype(np.float64)
    assert np.array_equal(got, want)


# --- the adapters really call the framework ----------------------------------------------------


def test_torch_softmax_is_really_called(torch, monkeypatch):
    x = _benign()
    assert run_forward(x, impl="torch").passed
    monkeypatch.setattr(torch, "softmax", lambda t, dim=-1: t.softmax(dim) * 1.001)
    rep = run_forward(x, impl="torch")
    assert not rep.passed
    assert not next(c for c in rep.checks if c.name == "reference").passed
    # the Jacobian and the VJP differentiate that same function
    assert not run_jacobian(x, impl="torch").passed
    assert not run_vjp(x, impl="torch").passed
    assert run_forward(x, impl="torch", log=True).passed  # log_softmax is untouched


def test_torch_log_softmax_is_really_called(torch, monkeypatch):
    monkeypatch.setattr(torch, "log_softmax", lambda t, dim=-1: t.log_softmax(dim) * 1.001)
    assert not run_forward(_benign(), impl="torch", log=True).passed
    assert not run_jacobian(_benign(), impl="torch", log=True).passed


def test_scipy_softmax_is_really_called(scipy_special, monkeypatch):
    real = scipy_special.softmax
    monkeypatch.setattr(scipy_special, "softmax", lambda x, axis=None: real(x * 1.01, axis=axis))
    assert not run_forward(_benign(), impl="scipy").passed
    assert not run_jacobian(_benign(), impl="scipy").passed  # built on scipy's s


def test_scipy_log_softmax_is_really_called(scipy_special, monkeypatch):
    real = scipy_special.log_softmax
    monkeypatch.setattr(scipy_special, "log_softmax",
                        lambda x, axis=None: real(x, axis=axis) * 1.001)
    assert not run_forward(_benign(), impl="scipy", log=True).passed


# --- derivatives -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("impl", IMPLS)
def test_derivatives_benign(impl, dtype):
    _need(impl)
    x = _benign()
    for log in (False, True):
        rep = run_jacobian(x, impl=impl, dtype=dtype, log=log)
        assert rep.passed, (log, _failed(rep))
    rep = run_vjp(x, impl=impl, dtype=dtype)
    assert rep.passed, _failed(rep)
    rep = run_loss(x, _targets(x), impl=impl, dtype=dtype)
    assert rep.passed, _failed(rep)
    rep = run_loss(x, _targets(x), v=np.random.default_rng(5).standard_normal(x.shape),
                   impl=impl, dtype=dtype)
    assert next(c for c in rep.checks if c.name == "reference").passed, _failed(rep)


# finite_diff warns on the nan of (-inf) - (-inf) in the --log finite difference (see below)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPE_NAMES)
@pytest.mark.parametrize("impl", IMPLS)
def test_derivatives_masked(impl, dtype):
    _need(impl)
    x = PRESETS["masked"].make()
    m = ~np.isfinite(x)
    rep = run_jacobian(x, impl=impl, dtype=dtype)
    assert rep.passed, _failed(rep)
    J = np.array(rep.result)[0]
    assert np.all(J[m, :] == 0) and np.all(J[:, m] == 0)
    rep = run_vjp(x, impl=impl, dtype=dtype)
    assert rep.passed, _failed(rep)
    assert np.all(np.array(rep.result)[0][m] == 0)
    # log-softmax: J_ik = [i=k] - s_k, so a masked row is e_i - s and a masked column e_k. Only
    # the entry comparisons are asserted: smcheck's finite-difference check for --log on masked
    # input is not the adapters' business (with Richardson, f_i = -inf at masked i gives nan).
    rep = run_jacobian(x, impl=impl, dtype=dtype, log=True)
    for name in ("reference", "zero_sums"):
        assert next(c for c in rep.checks if c.name == name).passed, _failed(rep)
    J = np.array(rep.result)[0]
    i = int(np.flatnonzero(m)[0])
    assert np.array_equal(J[:, i], np.eye(x.size)[:, i])
    # row i shares -s_k with the unmasked row 0 off their diagonals
    others = [k for k in range(x.size) if k not in (0, i)]
    assert J[i, i] == 1 and np.array_equal(J[i, others], J[0, others])


def test_masked_fixups_replace_only_non_finite():
    X = np.array([[0.0, -np.inf, 1.0]])
    s = np.array([[0.25, 0.0, 0.75]])
    J = np.full((1, 3, 3), 0.5)
    J[0, 1, :] = np.nan
    J[0, 0, 1] = np.inf
    J[0, 2, 1] = 7.0  # wrong but finite: left alone, for the checks to catch
    out = _fix_masked_jacobian(J, X, False, lambda: s)
    assert np.all(out[0, 1, :] == 0) and out[0, 0, 1] == 0 and out[0, 2, 1] == 7.0
    out = _fix_masked_jacobian(J, X, True, lambda: s)
    assert np.array_equal(out[0, 1, :], [-0.25, 1.0, -0.75])
    assert out[0, 0, 1] == 0 and out[0, 2, 1] == 7.0
    z = _fix_masked_vjp(np.array([[0.1, np.nan, np.nan]]), X)
    assert z[0, 1] == 0 and np.isnan(z[0, 2])


def test_scipy_complex_step_is_exact(scipy_special):
    # scipy.special.softmax shifts by np.amax (for complex: the largest real part), then exp and
    # divide: analytic in complex128, so the complex step differentiates it (complex_ok)
    impl = get_implementation("scipy")
    assert impl.complex_ok is True
    x = np.array([0.3, -1.2, 2.0, 2.0, -np.inf, 0.7])
    n, fin = x.size, np.isfinite(x)
    s = np.exp(x - 2.0) / np.sum(np.exp(x[fin] - 2.0))
    h = 1e-20
    for log, J in ((False, np.diag(s) - np.outer(s, s)), (True, np.eye(n) - s[None, :])):
        f = impl.forward64(log)
        for k in np.flatnonzero(fin):
            Z = x.astype(np.complex128)[None, :]
            Z[0, k] += 1j * h
            col = f(Z)[0].imag / h
            assert np.allclose(col[fin], J[fin, k], rtol=1e-14, atol=1e-16), (log, k)


def test_torch_forward64_is_float64_and_real_only(torch):
    impl = get_implementation("torch")
    assert impl.complex_ok is False and "float64" in impl.fd_source
    X = np.vstack([_benign(), _benign() + 1000])
    y = impl.forward64()(X)
    assert y.dtype == np.float64 and y.shape == X.shape
    assert np.allclose(y[0], y[1], rtol=1e-12)
    with pytest.raises(InputError, match="complex"):
        run_jacobian(_benign(), impl="torch", fd="complex")


# --- a user's callable returning a tensor ------------------------------------------------------


def test_user_callable_returning_bfloat16_tensor(torch):
    calls = []

    def f(x):
        calls.append(x.dtype.name)
        t = torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16)
        return torch.softmax(t, dim=-1)

    rep = run_forward(_benign(), impl=f, dtype="bfloat16")
    assert rep.passed, _failed(rep)
    assert set(calls) == {"bfloat16"}


# --- missing frameworks, and the CLI -----------------------------------------------------------


@pytest.mark.parametrize("name,module", [("jax", "jax"), ("torch", "torch"),
                                         ("scipy", "scipy")])
def test_missing_framework(monkeypatch, name, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import <module>` raise ImportError
    if name == "scipy":
        monkeypatch.setitem(sys.modules, "scipy.special", None)
    with pytest.raises(ImplementationError) as exc:
        get_implementation(name)
    assert str(exc.value) == f'{name} is not installed (pip install "smcheck[{name}]")'


def test_cli_torch_bfloat16(torch, cli):
    r = cli("forward", "--impl", "torch", "--dtype", "bfloat16", "--preset", "benign", "--check",
            "--quiet")
    assert (r.code, r.out, r.err) == (0, "", "")


def test_cli_missing_jax(cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)
    r = cli("forward", "--impl", "jax", "--preset", "benign")
    assert r.code == 2 and r.out == ""
    assert r.err == 'error: jax is not installed (pip install "smcheck[jax]")\n'


def test_importing_smcheck_imports_no_framework():
    code = ("import sys, smcheck, smcheck.cli, smcheck.impls.adapters; "
            "print(sorted(m for m in ('torch', 'jax', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# --- jax (skipped where it is not installed) ---------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_jax_forward(dtype):
    jax = pytest.importorskip("jax")
    impl = get_implementation("jax")
    # make_adapter switched jax_enable_x64 on: without it float64 would silently be float32
    assert jax.numpy.zeros(1, dtype=jax.numpy.float64).dtype == np.float64
    for preset in ("benign", "overflow", "masked", "fully-masked"):
        for log in (False, True):
            rep = run_forward(PRESETS[preset].make(), impl=impl, dtype=dtype, log=log)
            assert rep.passed, (preset, log, _failed(rep))
    info = dtype_info(dtype)
    X = info.round(_benign()[None, :]).astype(info.np_dtype)
    got = impl.softmax(X, info)
    assert np.array_equal(got, info.round(got).astype(np.float64))


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_jax_derivatives_benign(dtype):
    pytest.importorskip("jax")
    x = _benign()
    for log in (False, True):
        rep = run_jacobian(x, impl="jax", dtype=dtype, log=log)
        assert rep.passed, (log, _failed(rep))
    assert run_vjp(x, impl="jax", dtype=dtype).passed
    rep = run_loss(x, _targets(x), impl="jax", dtype=dtype)
    assert rep.passed, _failed(rep)


def test_jax_masked_derivatives_are_finite():
    pytest.importorskip("jax")
    x = PRESETS["masked"].make()
    rep = run_jacobian(x, impl="jax")
    assert rep.passed, _failed(rep)
    assert np.all(np.isfinite(np.array(rep.result)))
    rep = run_vjp(x, impl="jax")
    assert rep.passed, _failed(rep)


def test_jax_softmax_is_really_called(monkeypatch):
    jax = pytest.importorskip("jax")
    real = jax.nn.softmax
    monkeypatch.setattr(jax.nn, "softmax", lambda a, axis=-1: real(a, axis=axis) * 1.001)
    assert not run_forward(_benign(), impl="jax").passed
