"""``--impl torch``: its Jacobian (one batched backward pass, bit for bit what
torch.func.jacrev gives), ``--device`` (cpu here; an unusable device is one error line), and
benchmarks/gpu_torch_sweep.py (skips without a GPU, runs a small part on the cpu)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import smcheck
from smcheck.dtypes import DTYPE_NAMES, dtype_info
from smcheck.exceptions import ImplementationError, InputError
from smcheck.impls import get_implementation
from smcheck.impls.adapters import _fix_masked_jacobian, make_adapter
from smcheck.options import Options
from smcheck.sweep import run_sweep

torch = pytest.importorskip("torch")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_torch_sweep.py")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def _jacrev(X, info, log):
    """The adapter's previous Jacobian: torch.func.jacrev under vmap."""
    adapter = make_adapter("torch")
    fn = torch.log_softmax if log else torch.softmax
    with torch.enable_grad():
        J = torch.func.vmap(torch.func.jacrev(lambda r: fn(r, dim=-1)))(adapter._tensor(X, info))
    return _fix_masked_jacobian(adapter._numpy(J), X, log,
                                lambda: adapter.softmax(X, info, False))


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_jacobian_bit_for_bit_jacrev(dtype, log):
    info = dtype_info(dtype)
    rng = np.random.default_rng(18)
    X = np.vstack([rng.normal(size=9) * 3, rng.normal(size=9) * 30,
                   np.r_[rng.normal(size=8), -np.inf], np.r_[[5.0, 5.0], np.zeros(7)]])
    X = info.round(X).astype(np.float64)
    new = make_adapter("torch").jacobian(X, info, log)
    old = _jacrev(X, info, log)
    assert new.shape == old.shape == (4, 9, 9)
    assert new.dtype == np.float64 and new.flags.c_contiguous
    assert np.array_equal(new, old, equal_nan=True)


def test_jacobian_no_rows():
    assert make_adapter("torch").jacobian(np.zeros((0, 3)), dtype_info("float32")).shape == (
        0, 3, 3)


def test_jacobian_does_not_import_dynamo():
    """torch.func's first use imports torch._dynamo (about 1.5 s of a fresh process)."""
    code = ("import sys, smcheck\n"
            "smcheck.check_jacobian([[1.0, 2.0, 3.0]], impl='torch', fd='richardson')\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": ROOT}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# --- --device -------------------------------------------------------------------------------


def test_options_device():
    assert Options().device == "cpu"
    o = Options(impl="torch", device="CUDA")  # nothing is imported to say so
    assert o.device == "cuda" and o.impl == "torch"
    with pytest.raises(InputError, match="--device tpu: use cpu, cuda, cuda:N or mps"):
        Options(device="tpu")
    # a device for anything but torch (or a callable given torch tensors) is refused
    for impl in ("stable", "scipy", "jax"):
        with pytest.raises(InputError, match="runs on a device"):
            get_implementation(impl).for_options(Options(impl=impl, device="cuda"))
    with pytest.raises(InputError, match="only with --tensor torch"):
        get_implementation(np.exp).for_options(Options(device="cuda", tensor="numpy"))


def test_api_cpu_device():
    x = np.array([[1.0, 2.0, -3.0], [0.5, -np.inf, 2.0]])
    a = smcheck.check_forward(x, impl="torch", device="cpu", dtype="float32")
    b = smcheck.check_forward(x, impl="torch", dtype="float32")
    assert a.passed and a.result == b.result
    assert smcheck.check_jacobian(x, impl="torch", device="cpu").passed
    assert smcheck.check("vjp", x, impl="torch", device="cpu", dtype="bfloat16").passed
    adapter = get_implementation(Options(impl="torch", device="cpu").impl)
    assert adapter.device == "cpu"


@NO_CUDA
def test_api_cuda_unavailable():
    with pytest.raises(ImplementationError, match=r"torch.cuda.is_available\(\) is False"):
        smcheck.check_forward([1.0, 2.0], impl="torch", device="cuda")
    with pytest.raises(ImplementationError, match="torch.cuda.is_available"):
        run_sweep("torch", ["float32"], ["benign"], device="cuda:1")


def test_make_adapter_device_errors():
    with pytest.raises(ImplementationError, match="only --impl torch runs on a device"):
        make_adapter("scipy", "cuda")
    with pytest.raises(ImplementationError, match="not a torch device"):
        make_adapter("torch", "cuda:x")


@pytest.mark.parametrize("command", ["forward", "jacobian", "vjp", "loss"])
def test_cli_cpu_device(cli, command):
    extra = ["--t", "0,1,0"] if command == "loss" else []
    a = cli(command, "--x", "1,2,3", "--impl", "torch", "--device", "cpu", "--json", *extra)
    b = cli(command, "--x", "1,2,3", "--impl", "torch", "--json", *extra)
    assert a.code == 0 and a.err == ""
    assert a.json()["passed"] and a.json()["checks"] == b.json()["checks"]


def test_cli_sweep_cpu_device(cli):
    r = cli("sweep", "--impl", "torch", "--device", "cpu", "--preset", "benign", "--json")
    assert r.code == 0 and r.json()["passed"]


@NO_CUDA
@pytest.mark.parametrize("command", ["forward", "jacobian", "vjp", "sweep"])
def test_cli_cuda_unavailable(cli, command):
    args = ["--preset", "benign"] if command == "sweep" else ["--x", "1,2,3"]
    r = cli(command, *args, "--impl", "torch", "--device", "cuda")
    assert r.code == 2 and r.out == ""
    assert r.err == ("error: --device cuda: torch.cuda.is_available() is False on this "
                     "machine\n")


@pytest.mark.parametrize("impl", ["stable", "scipy"])
def test_cli_device_needs_torch(cli, impl):
    r = cli("forward", "--x", "1,2,3", "--impl", impl, "--device", "cuda")
    assert r.code == 2 and r.err.startswith("error: --device cuda: only --impl torch")
    assert len(r.err.splitlines()) == 1
    assert cli("forward", "--x", "1,2,3", "--impl", impl, "--device", "cpu").code == 0


def test_cli_bad_device(cli):
    r = cli("jacobian", "--x", "1,2", "--impl", "torch", "--device", "tpu")
    assert r.code == 2 and r.err == "error: --device tpu: use cpu, cuda, cuda:N or mps\n"


# --- benchmarks/gpu_torch_sweep.py -----------------------------------------------------------


def _script(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


@NO_CUDA
def test_gpu_script_skips_without_gpu():
    r = _script()
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("no GPU: ") and "nothing was run" in r.stdout


def test_gpu_script_on_cpu():
    r = _script("--device", "cpu", "--preset", "benign", "--preset", "masked",
                "--dtype", "float32", "--dtype", "bfloat16")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "findings: 0 of 20 cases fail" in out and "PASSED: 20 cases on cpu" in out
    for word in ("float32", "bfloat16", "forward", "log_softmax", "jacobian", "vjp", "loss"):
        assert word in out.split("timings")[1]
