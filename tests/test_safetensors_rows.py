"""A 2-D tensor of a large ``.safetensors`` file is read a chunk of rows at a time
(smcheck.stores.SafetensorsRows), as a large .npy is: the same JSON as the .npy of the same
numbers, bfloat16 included, the file's rows read in chunks and never whole, a store that
pickles by its path, and one-line errors for a file cut short."""

from __future__ import annotations

import json
import pickle

import ml_dtypes
import numpy as np
import pytest

st = pytest.importorskip("safetensors.numpy")

from smcheck import inputs, parallel  # noqa: E402
from smcheck.stores import SafetensorsRows  # noqa: E402

N = 64


@pytest.fixture(autouse=True)
def streamed(monkeypatch):
    """Files from 1 kB on are streamed, in chunks of 16 rows of 64."""
    monkeypatch.setattr(inputs, "MMAP_MIN_BYTES", 1024)
    monkeypatch.setattr(parallel, "CHUNK_ENTRIES", 16 * N)
    monkeypatch.setattr(parallel, "CHUNK_ENTRIES_SLOW", 16 * N)


def logits(rows=200, seed=0):
    x = np.random.default_rng(seed).standard_normal((rows, N)) * 8
    x[3, :40] = -np.inf
    x[17] = -np.inf  # no softmax
    x[100:104, :3] = 800.0
    return x


def without_input(result):
    assert result.code in (0, 1), (result.code, result.err)
    doc = result.json()
    doc.pop("input")
    return doc


def write_bf16(path, name: str, a: np.ndarray) -> str:
    """A BF16 tensor spelled out (numpy's safetensors writer has no bfloat16): u64 header
    length, JSON header, little-endian 2-byte values."""
    data = a.astype(ml_dtypes.bfloat16).view(np.uint16).astype("<u2").tobytes()
    header = json.dumps({name: {"dtype": "BF16", "shape": list(a.shape),
                                "data_offsets": [0, len(data)]}}).encode()
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header + data)
    return str(path)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_a_tensor_streams_and_reports_as_the_npy_does(cli, tmp_path, dtype):
    x = logits().astype(dtype)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "v.npy", np.random.default_rng(3).standard_normal(x.shape))
    st.save_file({"logits": x, "other": np.zeros(3)}, str(tmp_path / "x.safetensors"))
    store = inputs.load_file(str(tmp_path / "x.safetensors") + ":logits")
    assert isinstance(store, SafetensorsRows) and store.shape == x.shape
    assert store.dtype == x.dtype
    np.testing.assert_array_equal(store[5:40], x[5:40])
    for command, extra in (("forward", []), ("vjp", ["--v-file", str(tmp_path / "v.npy")])):
        a, b = (without_input(cli(command, "--x-file", src, "--dtype", dtype, "--workers", "2",
                                  "--json", *extra))
                for src in (str(tmp_path / "x.npy"), str(tmp_path / "x.safetensors:logits")))
        assert a == b
        assert [u["row"] for u in a["undefined_rows"]] == [17]


def test_bfloat16_tensors_stream_as_exact_float32(cli, tmp_path):
    x = logits().astype(ml_dtypes.bfloat16)
    path = write_bf16(tmp_path / "x.safetensors", "x", x.astype(np.float64))
    store = inputs.load_file(path)
    assert isinstance(store, SafetensorsRows) and store.dtype == np.float32
    np.testing.assert_array_equal(store[0:200], x.astype(np.float32))
    np.save(tmp_path / "x.npy", x.astype(np.float32))  # float32 holds bfloat16 exactly
    a, b = (without_input(cli("forward", "--x-file", src, "--dtype", "bfloat16", "--json"))
            for src in (str(tmp_path / "x.npy"), path))
    assert a == b and a["dtype"] == "bfloat16"
    # control: the same bytes read as U16 integers are other numbers
    assert not np.array_equal(x.view(np.uint16).astype(np.float32), x.astype(np.float32))


def test_the_file_is_read_in_chunks_never_whole(cli, tmp_path, monkeypatch):
    x = logits()
    st.save_file({"x": x}, str(tmp_path / "x.safetensors"))
    sizes = []
    read = SafetensorsRows._read
    monkeypatch.setattr(SafetensorsRows, "_read",
                        lambda s, lo, hi: sizes.append(hi - lo) or read(s, lo, hi))
    monkeypatch.setattr(SafetensorsRows, "__array__", lambda *a, **k: pytest.fail("whole"))
    assert cli("forward", "--x-file", str(tmp_path / "x.safetensors"), "--workers", "1",
               "--json").code == 0
    assert max(sizes) == 16 and sum(sizes) == 200


def test_small_files_and_other_shapes_are_read_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs, "MMAP_MIN_BYTES", 10 ** 6)
    st.save_file({"x": logits()}, str(tmp_path / "small.safetensors"))
    assert isinstance(inputs.load_file(str(tmp_path / "small.safetensors")), np.ndarray)
    monkeypatch.setattr(inputs, "MMAP_MIN_BYTES", 1024)
    st.save_file({"x": logits().reshape(20, 10, N)}, str(tmp_path / "nd.safetensors"))
    got = inputs.load_file(str(tmp_path / "nd.safetensors"))
    assert isinstance(got, np.ndarray) and got.shape == (20, 10, N)


def test_the_store_pickles_by_its_path(tmp_path):
    x = np.random.default_rng(1).standard_normal((1250, 1000))  # 10 MB
    st.save_file({"a": np.ones(4), "x": x}, str(tmp_path / "big.safetensors"))
    store = SafetensorsRows(str(tmp_path / "big.safetensors"), "x", "x")
    data = pickle.dumps(store)
    assert len(data) < 4096
    back = pickle.loads(data)
    np.testing.assert_array_equal(back[1200:1250], x[1200:1250])
    np.testing.assert_array_equal(back[7], x[7])


def test_limits_and_errors_are_one_line(cli, tmp_path):
    x = logits()
    st.save_file({"x": x}, str(tmp_path / "x.safetensors"))
    r = cli("forward", "--x-file", str(tmp_path / "x.safetensors"), "--max-size", "32")
    assert r.code == 2 and r.err.startswith("error: ") and "rows of 64 numbers" in r.err, r.err
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((tmp_path / "x.safetensors").read_bytes()[:-100])
    r = cli("forward", "--x-file", str(cut))
    assert r.code == 2 and r.err.startswith("error: ") and r.err.count("\n") == 1, r.err
    assert "corrupt or truncated" in r.err
    r = cli("forward", "--x-file", str(tmp_path / "x.safetensors:nope"))
    assert r.code == 2 and "no tensor named 'nope'" in r.err
