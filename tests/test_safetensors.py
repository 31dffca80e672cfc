"""``.safetensors`` input (``--x-file f.safetensors[:name]``, and --v/--t/--z-file), and the
refusal of pickled checkpoints (.pt, .pth, .bin, .ckpt, .pkl, .pickle) before they are opened."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from smcheck.exceptions import InputError
from smcheck.inputs import load_file
from smcheck.sources import load_x

safetensors_numpy = pytest.importorskip("safetensors.numpy")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALUES = [1000.0, 999.0, -990.5, 0.0, -0.0, 1.5e-5, -np.inf, 3.0]


def error_of(call) -> str:
    with pytest.raises(InputError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and not message.lower().startswith("error")
    return message


def assert_cli_error(r, *words):
    """Exit 2, exactly one stderr line starting with 'error:', no traceback, and ``words``."""
    assert r.code == 2, (r.code, r.out, r.err)
    assert r.err.startswith("error: ") and r.err.count("\n") == 1, r.err
    assert "Traceback" not in r.err, r.err
    for word in words:
        assert word in r.err, (word, r.err)


def write_raw(path, header: dict, data: bytes = b"") -> str:
    """A .safetensors file spelled out: u64 little-endian header length, JSON header, data."""
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return str(path)


# --- every dtype round-trips exactly ------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_float_tensors_round_trip_exactly(tmp_path, dtype):
    x = np.array([VALUES, VALUES[::-1]], dtype=dtype)
    path = tmp_path / "logits.safetensors"
    safetensors_numpy.save_file({"logits": x}, str(path))
    got = load_file(str(path))
    assert got.shape == (2, len(VALUES))
    np.testing.assert_array_equal(np.asarray(got, dtype=np.float64), x.astype(np.float64))
    assert np.signbit(np.asarray(got, dtype=np.float64)[0, 4])  # -0.0 kept


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint16", "int32", "uint32",
                                   "int64", "uint64", "bool"])
def test_integer_and_bool_tensors_read_as_floats(tmp_path, dtype):
    x = np.array([0, 1, 7, 100], dtype=dtype) if dtype != "bool" else np.array([True, False])
    path = tmp_path / "ints.safetensors"
    safetensors_numpy.save_file({"x": x}, str(path))
    got = load_file(str(path))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, x.astype(np.float64))


def test_int64_beyond_2_53_is_refused_as_for_npy(tmp_path):
    path = tmp_path / "big.safetensors"
    safetensors_numpy.save_file({"x": np.array([2**60, 1], dtype=np.int64)}, str(path))
    assert "beyond 2^53" in error_of(lambda: load_file(str(path)))


@pytest.mark.parametrize("tdtype", ["bfloat16", "float8_e4m3fn", "float8_e5m2"])
def test_bfloat16_and_float8_tensors_written_by_torch_read_exactly(tmp_path, tdtype):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    dtype = getattr(torch, tdtype)
    source = torch.tensor([[448.0, -3.0, 0.1, 1e-3, -0.0], [2.0, 1.0, 0.5, -240.0, 7.0]])
    if tdtype == "bfloat16":
        source = torch.cat([source, torch.tensor([[3.0e38, -1e38, 1e-40, 0.0, 12.3]] * 2)])
    t = source.to(dtype)
    path = tmp_path / "t.safetensors"
    st_torch.save_file({"x": t}, str(path))
    got = load_file(f"{path}:x")
    assert got.dtype == np.float64 and got.shape == tuple(t.shape)
    np.testing.assert_array_equal(got, t.to(torch.float64).numpy())  # exact: every bit
    assert np.signbit(got[0, 4])


def test_bfloat16_reads_the_same_numbers_as_ml_dtypes(tmp_path):
    """Without torch: bfloat16 bits written by hand (safetensors' little-endian u16)."""
    import ml_dtypes

    x = np.array([1.0, -2.5, 3.0e38, 9.2e-41, np.inf, -np.inf], dtype=ml_dtypes.bfloat16)
    bits = x.view(np.uint16).astype("<u2").tobytes()
    path = write_raw(tmp_path / "bf.safetensors",
                     {"x": {"dtype": "BF16", "shape": [6], "data_offsets": [0, 12]}}, bits)
    np.testing.assert_array_equal(load_file(path), x.astype(np.float64))


def test_shapes_kept_scalars_widen_and_nd_is_kept(tmp_path):
    path = str(tmp_path / "s.safetensors")
    safetensors_numpy.save_file({"scalar": np.array(2.5), "row": np.arange(3.0),
                                 "cube": np.zeros((2, 2, 2)), "empty": np.zeros(0)}, path)
    np.testing.assert_array_equal(load_file(path + ":scalar"), [2.5])
    assert load_file(path + ":row").shape == (3,)
    assert load_file(path + ":cube").shape == (2, 2, 2)  # N-d: rows along --axis
    assert "empty input" in error_of(lambda: load_file(path + ":empty"))


# --- choosing a tensor ----------------------------------------------------------------------------

def test_name_picks_a_tensor_and_several_or_missing_names_are_listed(tmp_path):
    path = str(tmp_path / "two.safetensors")
    safetensors_numpy.save_file({"x": np.arange(3.0), "v": np.ones(3)}, path)
    np.testing.assert_array_equal(load_file(path + ":v", "v"), np.ones(3))
    assert error_of(lambda: load_file(path)) == (
        f"--x-file {path}: holds several tensors (v, x); pick one with :NAME")
    assert error_of(lambda: load_file(path + ":logits", "t")) == (
        f"--t-file {path}:logits: no tensor named 'logits' (tensors: v, x)")


def test_a_file_with_no_tensors(tmp_path):
    path = str(tmp_path / "none.safetensors")
    safetensors_numpy.save_file({}, path)
    assert "contains no tensors" in error_of(lambda: load_file(path))
    assert "no tensor named 'x' (tensors: none)" in error_of(lambda: load_file(path + ":x"))


# --- bad files: one line, no traceback ------------------------------------------------------------

def test_corrupt_truncated_missing_and_unsupported_files(tmp_path):
    good = tmp_path / "good.safetensors"
    safetensors_numpy.save_file({"x": np.arange(4.0)}, str(good))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-5])
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a tensor file at all")
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    for path in (cut, junk, empty):
        assert "corrupt or truncated .safetensors file" in error_of(lambda p=path: load_file(str(p)))
    assert "cannot read file" in error_of(lambda: load_file(str(tmp_path / "no.safetensors")))
    c64 = tmp_path / "c.safetensors"
    safetensors_numpy.save_file({"x": np.ones(2, dtype=np.complex64)}, str(c64))
    assert "complex values are not supported" in error_of(lambda: load_file(str(c64)))
    e8 = write_raw(tmp_path / "e8.safetensors",
                   {"x": {"dtype": "F8_E8M0", "shape": [2], "data_offsets": [0, 2]}}, b"\0\0")
    assert "dtype F8_E8M0, which smcheck does not read" in error_of(lambda: load_file(e8))


def test_max_size_is_checked_from_the_header(tmp_path):
    path = str(tmp_path / "big.safetensors")
    safetensors_numpy.save_file({"x": np.zeros((10, 10), dtype=np.float32)}, path)
    assert "100 numbers, more than the limit of 99" in error_of(
        lambda: load_file(path, max_size=99))
    assert load_file(path, max_size=100).shape == (10, 10)


def test_without_the_safetensors_package_the_error_says_how_to_install(tmp_path, monkeypatch):
    path = str(tmp_path / "x.safetensors")
    safetensors_numpy.save_file({"x": np.arange(3.0)}, path)
    monkeypatch.setitem(sys.modules, "safetensors", None)  # import safetensors -> ImportError
    assert error_of(lambda: load_file(path)) == (
        'reading .safetensors needs the safetensors package (pip install "smcheck[safetensors]")')


def test_help_and_import_load_no_safetensors():  # subprocess: a fresh interpreter
    script = textwrap.dedent("""
        import sys
        import smcheck
        from smcheck.cli import main
        try:
            main(["forward", "--help"])
        except SystemExit:
            pass
        print("@@", [m for m in ("safetensors", "hypothesis", "numpy") if m in sys.modules])
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       cwd=REPO, timeout=120,
                       env={**os.environ, "PYTHONPATH": REPO})
    assert p.returncode == 0, p.stderr
    assert p.stdout.rsplit("@@", 1)[1].strip() == "[]"


# --- through the command line ---------------------------------------------------------------------

def test_cli_reads_safetensors_for_x_v_t_and_z(cli, tmp_path):
    path = str(tmp_path / "io.safetensors")
    safetensors_numpy.save_file({"x": np.array([[1000.0, 999.0, 990.0], [1.0, 2.0, 3.0]],
                                                dtype=np.float32),
                                 "v": np.array([1.0, 0.0, -1.0]), "t": np.array([0.0, 1.0, 0.0]),
                                 "z": np.array([0.2, 0.3, 0.5])}, path)
    r = cli("forward", "--x-file", path + ":x", "--json", "--check")
    assert r.code == 0, r.err
    assert r.json()["shape"] == [2, 3]
    r = cli("vjp", path + ":x", "--v-file", path + ":v", "--json", "--check")
    assert r.code == 0, r.err
    r = cli("loss", "--z-file", path + ":z", "--t-file", path + ":t", "--json", "--check")
    assert r.code == 0, r.err
    assert_cli_error(cli("forward", path), "several tensors (t, v, x, z)")


def test_cli_checks_a_bfloat16_tensor_in_bfloat16(cli, tmp_path):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    path = str(tmp_path / "bf.safetensors")
    st_torch.save_file({"logits": torch.tensor([[100.0, 99.5, -3.0, 1.0]], dtype=torch.bfloat16)},
                       path)
    r = cli("forward", path, "--dtype", "bfloat16", "--json", "--check")
    assert r.code == 0, r.err
    r = cli("forward", path, "--dtype", "bfloat16", "--impl", "naive", "--json", "--check")
    assert r.code == 1  # the control: exp(100) overflows bfloat16


# --- pickled checkpoints are refused, unopened ----------------------------------------------------

class Payload:
    """Unpickling this creates ``path`` (a harmless stand-in for running any code)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("ext, what", [(".pt", "PyTorch .pt files"),
                                       (".pth", "PyTorch .pth files"),
                                       (".bin", ".bin checkpoints (PyTorch's pytorch_model.bin)"),
                                       (".ckpt", ".ckpt checkpoints (PyTorch Lightning)"),
                                       (".pkl", "Python .pkl files"),
                                       (".PICKLE", "Python .pickle files")])
@pytest.mark.parametrize("slot", ["x", "positional", "v", "t", "z"])
def test_pickled_checkpoints_are_refused_with_a_hint(cli, tmp_path, ext, what, slot):
    marker = tmp_path / "marker"
    path = tmp_path / f"model{ext}"
    path.write_bytes(pickle.dumps(Payload(marker)))
    spec = str(path)
    argv = {"x": ["forward", "--x-file", spec], "positional": ["jacobian", spec],
            "v": ["vjp", "--x", "1,2,3", "--v-file", spec],
            "t": ["loss", "--x", "1,2,3", "--t-file", spec],
            "z": ["loss", "--z-file", spec, "--t", "0,1,0"]}[slot]
    r = cli(*argv)
    flag = {"positional": "x"}.get(slot, slot)
    assert_cli_error(r, f"error: --{flag}-file {spec}: {what} are pickles, which smcheck does "
                        "not load (they can run code); save the tensor with safetensors "
                        '(safetensors.torch.save_file({"x": t}, "x.safetensors")) or numpy '
                        "(np.save)")
    assert not marker.exists(), "smcheck unpickled a file"


def test_the_pt_message_is_exactly_the_documented_one(cli):
    r = cli("forward", "--x-file", "model.pt")  # refused by name: the file need not exist
    assert r.code == 2
    assert r.err == ('error: --x-file model.pt: PyTorch .pt files are pickles, which smcheck '
                     'does not load (they can run code); save the tensor with safetensors '
                     '(safetensors.torch.save_file({"x": t}, "x.safetensors")) or numpy '
                     '(np.save)\n')


def test_a_positional_safetensors_or_pt_path_that_does_not_exist_is_a_file(tmp_path):
    """INPUT 'missing.safetensors:x' is a file (not numbers to parse) even when it is absent."""
    with pytest.raises(InputError, match="cannot read file"):
        load_x(str(tmp_path / "missing.safetensors:x"), None, None, None, 1, 0, 1.0, None)
    with pytest.raises(InputError, match="are pickles"):
        load_x("weights.pth", None, None, None, 1, 0, 1.0, None)
