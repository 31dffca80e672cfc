"""Kernels as people ship them (issue 18): N-d inputs along --axis, a user's function called
once on the whole batch (--batched), and given torch tensors or jax arrays (--tensor)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import smcheck
from smcheck.options import Options
from smcheck.run import check_rows

KERNELS = '''
import numpy as np
calls = []

def _sm(x, axis):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)

def last(x):
    calls.append(np.shape(x))
    return _sm(x, -1).astype(np.asarray(x).dtype)

def axis1(x):
    calls.append(np.shape(x))
    return _sm(x, 1).astype(np.asarray(x).dtype)

def axis0(x):
    calls.append(np.shape(x))
    return _sm(x, 0).astype(np.asarray(x).dtype)

def vjp(x, v):
    s = _sm(x, -1)
    v = np.asarray(v, dtype=np.float64)
    return (s * (v - (v * s).sum(-1, keepdims=True))).astype(np.asarray(x).dtype)

def jac(x):
    s = _sm(x, -1)
    return (s[..., :, None] * (np.eye(s.shape[-1]) - s[..., None, :])).astype(np.asarray(x).dtype)

def grad(z, t):
    return (-np.asarray(t, dtype=np.float64) / np.asarray(z, dtype=np.float64)).astype(
        np.asarray(z).dtype)

def wrong_shape(x):
    return np.asarray(x)[..., :-1]

def torch_sm(x):
    import torch
    assert isinstance(x, torch.Tensor), type(x)
    calls.append((tuple(x.shape), str(x.dtype), str(x.device)))
    return torch.softmax(x, dim=-1)

def jax_sm(x):
    import jax
    assert isinstance(x, jax.Array), type(x)
    calls.append(tuple(x.shape))
    return jax.nn.softmax(x, axis=-1)
'''


@pytest.fixture
def kernels(user_modules):
    import importlib

    user_modules({"bkernels.py": KERNELS})
    return importlib.import_module("bkernels")


def scores(shape=(2, 3, 4, 16), seed=0):
    return np.random.default_rng(seed).normal(size=shape) * 3


def doc(cli, *argv, code=0):
    r = cli(*argv, "--json")
    assert r.code == code, r.err
    return json.loads(r.out)


def test_an_nd_input_is_checked_as_rows_named_by_their_index(cli, tmp_path):
    x = scores()
    np.save(tmp_path / "att.npy", x.astype(np.float32))
    d = doc(cli, "forward", "--x-file", tmp_path / "att.npy", "--dtype", "float32")
    assert d["passed"] and d["shape"] == [24, 16]
    assert d["axis"] == -1 and d["batch_shape"] == [2, 3, 4]
    text = cli("forward", "--x-file", tmp_path / "att.npy", "--dtype", "float32",
               "--impl", "naive", "--scale", "1").out
    assert "its other axes (2, 3, 4) are the rows" in text
    assert "[0, 0, 0]" in text  # a row named by its N-d index
    # the rows are x's last-axis vectors in C order: row 17 is x[1, 1, 1]
    rep = smcheck.check_forward(x)
    assert rep.shape == [24, 16] and rep.options["batch_shape"] == [2, 3, 4]
    np.testing.assert_allclose(np.asarray(rep.result)[17], np.exp(x[1, 1, 1]) /
                               np.exp(x[1, 1, 1]).sum(), rtol=1e-14)


def test_axis_chooses_the_softmax_axis(kernels):
    x = scores((3, 5, 7))
    good = smcheck.check_forward(x, impl=kernels.axis1, axis=1, batched=True)
    assert good.passed and good.options["batch_shape"] == [3, 7]
    # one call per evaluation (x, then the two shifts), in the input's layout
    assert kernels.calls == [(3, 5, 7)] * 3
    # the control: a kernel that normalises the last axis fails when softmax runs along axis 1
    bad = smcheck.check_forward(x, impl=kernels.last, axis=1, batched=True)
    assert not bad.passed and not bad.checks[0].passed
    # per row, x's axis-1 vectors: the same verdicts
    assert smcheck.check_forward(x, impl=kernels.last, axis=1).passed


def test_a_2d_batch_along_axis_0_is_handed_over_as_it_is(kernels):
    x = scores((6, 4))  # softmax down the columns
    rep = smcheck.check_forward(x, impl=kernels.axis0, axis=0, batched=True)
    assert rep.passed and rep.shape == [4, 6] and kernels.calls[0] == (6, 4)
    assert not smcheck.check_forward(x, impl=kernels.last, axis=0, batched=True).passed


def test_batched_equals_row_by_row(kernels):
    x = scores((4, 6, 32))
    per_row = smcheck.check_forward(x, impl=kernels.last, dtype="float32")
    one = smcheck.check_forward(x, impl=kernels.last, dtype="float32", batched=True)
    assert per_row.passed and one.passed
    assert [(c.name, c.max_ulp, c.worst) for c in per_row.checks] == [
        (c.name, c.max_ulp, c.worst) for c in one.checks]
    # row by row: 24 calls on 1-D rows for the reference check alone; batched: a few
    assert len(kernels.calls) > 24 + 5
    assert kernels.calls[-1] == (4, 6, 32)


def test_a_chunked_batch_gets_whole_slices_of_its_first_axis(kernels):
    x = scores((10, 3, 16))
    o = Options(impl=kernels.last, batched=True)
    rep = check_rows("forward", x, o, workers=1, chunk_rows=7)
    assert rep.passed
    # 7 rows is not a whole number of (3, 16) slices: chunks of 2 slices (6 rows)
    shapes = {s for s in kernels.calls if len(s) == 3}
    assert shapes and all(s[1:] == (3, 16) for s in shapes), kernels.calls
    assert max(s[0] for s in shapes) == 2


@pytest.mark.parametrize("command,fn", [("vjp", "vjp"), ("jacobian", "jac"), ("loss", "grad")])
def test_every_command_takes_a_batched_function(kernels, command, fn):
    x = scores((2, 3, 8))
    kw = {"v": np.random.default_rng(1).normal(size=x.shape)} if command == "vjp" else {}
    if command == "loss":
        t = np.zeros(x.shape)
        t[..., 0] = 1.0
        kw = {"t": t}
    rep = smcheck.api.check(command, x, impl=getattr(kernels, fn), batched=True, **kw)
    assert rep.passed, smcheck.render_text(rep)
    assert rep.options["batch_shape"] == [2, 3]


def test_torch_tensors_on_the_device(kernels, cli):
    pytest.importorskip("torch")
    x = scores((2, 4, 64))
    rep = smcheck.check_forward(x, impl=kernels.torch_sm, dtype="bfloat16", batched=True,
                                tensor="torch", device="cpu")
    assert rep.passed, smcheck.render_text(rep)
    assert ((2, 4, 64), "torch.bfloat16", "cpu") in kernels.calls
    # row by row with tensors too
    kernels.calls.clear()
    assert smcheck.check_forward(x[0], impl=kernels.torch_sm, tensor="torch").passed
    assert kernels.calls[0] == ((64,), "torch.float64", "cpu")


def test_jax_arrays(kernels):
    pytest.importorskip("jax")
    x = scores((3, 32))
    rep = smcheck.check_forward(x, impl=kernels.jax_sm, dtype="float32", batched=True,
                                tensor="jax")
    assert rep.passed, smcheck.render_text(rep)
    assert (3, 32) in kernels.calls


def test_the_cli_runs_a_batched_torch_kernel(kernels, cli, tmp_path):
    pytest.importorskip("torch")
    np.save(tmp_path / "att.npy", scores().astype(np.float32))
    d = doc(cli, "forward", "--x-file", tmp_path / "att.npy", "--dtype", "float32", "--impl",
            "bkernels:torch_sm", "--batched", "--tensor", "torch", "--check")
    assert d["passed"] and d["batch_shape"] == [2, 3, 4]


@pytest.mark.parametrize("argv,words", [
    (["--impl", "naive", "--batched"], "--batched and --tensor apply to your own function"),
    (["--impl", "bkernels:last", "--tensor", "cupy"], "--tensor cupy: use one of"),
    (["--impl", "bkernels:last", "--axis", "5"], "--axis 5: x has 4 axes"),
    (["--impl", "bkernels:wrong_shape", "--batched"], "returned shape (1, 3, 4, 15)"),
])
def test_bad_options_are_one_error_line(kernels, cli, tmp_path, argv, words):
    np.save(tmp_path / "att.npy", scores((1, 3, 4, 16)))
    r = cli("forward", "--x-file", tmp_path / "att.npy", *argv)
    assert r.code == 2, r.err
    assert r.err.startswith("error:") and words in r.err and r.err.count("\n") == 1, r.err


def test_a_companion_must_have_the_layout_of_x(cli, tmp_path):
    np.save(tmp_path / "x.npy", scores((2, 3, 8)))
    np.save(tmp_path / "v.npy", scores((3, 2, 8)))
    r = cli("vjp", "--x-file", tmp_path / "x.npy", "--v-file", tmp_path / "v.npy")
    assert r.code == 2 and r.err.startswith("error:"), r.err


def test_assert_correct_takes_batched_axis_and_device(kernels):
    x = scores((2, 5, 7))
    smcheck.assert_correct(kernels.axis1, x, batched=True, axis=1, device="cpu")
    with pytest.raises(smcheck.api.SoftmaxCheckError):
        smcheck.assert_correct(kernels.last, x, batched=True, axis=1)
