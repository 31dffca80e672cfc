"""Stores read lazily (smcheck/stores.py): a batch as one .npy, as a directory of .npy shards and
as a zarr store gives the same JSON, but for the input's description; a store pickles by its
path; nothing on the way from the command line to the chunks reads a store whole; --max-size
limits a streamed input's rows and any other input's total."""

from __future__ import annotations

import json
import os
import pickle
import sys

import ml_dtypes
import numpy as np
import pytest

zarr = pytest.importorskip("zarr")

from smcheck import inputs, parallel  # noqa: E402
from smcheck.exceptions import InputError  # noqa: E402
from smcheck.options import Options  # noqa: E402
from smcheck.report import report_json  # noqa: E402
from smcheck.run import check_rows  # noqa: E402
from smcheck.stores import NpyRows, RowStore, ShardRows, ZarrRows  # noqa: E402

N = 64


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Chunks of 16 rows of 64: a 300-row batch is cut into many."""
    monkeypatch.setattr(parallel, "CHUNK_ENTRIES", 16 * N)
    monkeypatch.setattr(parallel, "CHUNK_ENTRIES_SLOW", 16 * N)  # vjp's and loss's


def batch(seed=0, rows=300):
    """Logits with partly masked rows (-inf), rows with no softmax (all -inf, nan, +inf) and
    rows that overflow a naive exp (entries near 800)."""
    x = np.random.default_rng(seed).standard_normal((rows, N)) * 8
    x[3, :40] = -np.inf
    x[17] = -np.inf
    x[40, 5] = np.nan
    x[41, 9] = np.inf
    x[100:104, :3] = 800.0
    x[250, 0] = -np.inf
    return x


def targets(rows=300):
    t = np.random.default_rng(9).random((rows, N))
    return t / t.sum(axis=1, keepdims=True)


def save_shards(directory, a, cuts=(90, 91, 230), names=("s0.npy", "s1.npy", "s2.npy",
                                                         "s3.npy")):
    """Uneven .npy shards (one of them a 1-D row) in ``directory``."""
    directory.mkdir()
    parts = np.split(a, cuts)
    for name, part in zip(names, parts):
        np.save(directory / name, part[0] if part.shape[0] == 1 else part)
    return directory


def save_zarr(path, a, chunks=(7, N), **kw):
    z = zarr.create_array(str(path), shape=a.shape, dtype=a.dtype, chunks=chunks, **kw)
    z[...] = a
    return path


def without_input(result):
    assert result.code in (0, 1), (result.code, result.err)
    doc = result.json()
    doc.pop("input")
    return json.dumps(doc, sort_keys=True)


def same_json(cli, argv, sources, flag="--x-file"):
    """The JSON of ``argv`` with each of ``sources`` as ``flag``: all identical but for the
    description of the input (returned, for more assertions)."""
    docs = [without_input(cli(*argv, *([flag] if flag else []), str(s), "--json"))
            for s in sources]
    for d in docs[1:]:
        assert d == docs[0]
    return json.loads(docs[0])


@pytest.fixture
def files(tmp_path):
    x, t = batch(), targets()
    v = np.random.default_rng(4).standard_normal(x.shape)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "v.npy", v)
    np.save(tmp_path / "t.npy", t)
    return {"x": x, "npy": tmp_path / "x.npy", "shards": save_shards(tmp_path / "sh", x),
            "zarr": save_zarr(tmp_path / "x.zarr", x),
            "zarr2": save_zarr(tmp_path / "x2.zarr", x, chunks=(11, N), zarr_format=2),
            "v.npy": tmp_path / "v.npy", "v.zarr": save_zarr(tmp_path / "v.zarr", v),
            "t.npy": tmp_path / "t.npy", "t.shards": save_shards(tmp_path / "tsh", t, (150,)),
            "t.zarr": save_zarr(tmp_path / "t.zarr", t, chunks=(50, 32)), "tmp": tmp_path}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_forward_is_the_same_from_npy_shards_and_zarr(cli, files, workers):
    doc = same_json(cli, ["forward", "--workers", workers],
                    [files["npy"], files["shards"], files["zarr"], files["zarr2"]])
    assert doc["shape"] == [300, N]
    assert [u["row"] for u in doc["undefined_rows"]] == [17, 40, 41]
    assert all(c["passed"] for c in doc["checks"])


def test_a_failing_implementation_fails_the_same_way(cli, files):
    doc = same_json(cli, ["forward", "--impl", "naive", "--workers", "2"],
                    [files["npy"], files["shards"], files["zarr"]])
    failed = [c for c in doc["checks"] if not c["passed"]]
    assert failed and "100" in json.dumps(failed)  # the overflowing rows, found in each


def test_vjp_with_v_from_zarr_and_loss_with_t_from_a_store(cli, files):
    same_json(cli, ["vjp", "--x-file", str(files["npy"]), "--v-file"],
              [files["v.npy"], files["v.zarr"]], flag=None)
    same_json(cli, ["vjp", "--v-file", str(files["v.zarr"])],
              [files["npy"], files["shards"], files["zarr"]])
    for t in ("t.npy", "t.shards", "t.zarr"):
        same_json(cli, ["loss", "--t-file", str(files[t])],
                  [files["npy"], files["shards"], files["zarr"]])


def test_control_shards_in_another_order_are_another_batch(cli, files, tmp_path):
    """Shards are read in sorted name order: named the other way round, the rows are in
    another order and the JSON differs."""
    swapped = save_shards(tmp_path / "swapped", files["x"],
                          names=("s3.npy", "s2.npy", "s1.npy", "s0.npy"))
    a = without_input(cli("forward", "--x-file", str(files["shards"]), "--json"))
    b = without_input(cli("forward", "--x-file", str(swapped), "--json"))
    assert a != b


def test_memory_mapped_npy_is_a_store_too(cli, files, monkeypatch):
    monkeypatch.setattr(inputs, "MMAP_MIN_BYTES", 1024)
    assert isinstance(inputs.load_file(str(files["npy"])), NpyRows)
    same_json(cli, ["forward"], [files["npy"], files["zarr"]])


def test_the_layout_of_the_input_does_not_change_the_report(cli, files, monkeypatch):
    """The same numbers give the same report whatever their layout: a C-order and a
    Fortran-order .npy, a Fortran-order zarr store, the transposed array read with --axis 0,
    and (vjp) a Fortran-order v. An implementation is handed its rows in C order, as a
    contiguous batch. The control shows why it matters: the built-in's float32 sums along
    Fortran-ordered rows give other bits than along C-ordered ones."""
    from smcheck.dtypes import dtype_info
    from smcheck.impls import get_implementation

    monkeypatch.setattr(inputs, "MMAP_MIN_BYTES", 1024)
    x = np.where(np.isfinite(files["x"]), files["x"], 0.0).astype(np.float32)
    tmp = files["tmp"]
    np.save(tmp / "c.npy", x)
    np.save(tmp / "f.npy", np.asfortranarray(x))
    np.save(tmp / "t.npy", np.ascontiguousarray(x.T))
    save_zarr(tmp / "f.zarr", x, chunks=(64, N), order="F", zarr_format=2)
    assert not np.asarray(zarr.open_array(str(tmp / "f.zarr"))[:8]).flags.c_contiguous
    store = inputs.load_file(str(tmp / "f.npy"))
    assert store[3:9].flags.c_contiguous and np.array_equal(store[3:9], x[3:9])
    for workers in ("1", "2"):
        doc = same_json(cli, ["forward", "--dtype", "float32", "--workers", workers],
                        [tmp / "c.npy", tmp / "f.npy", tmp / "f.zarr"])
        by_axis = without_input(cli("forward", "--dtype", "float32", "--workers", workers,
                                    "--axis", "0", "--x-file", str(tmp / "t.npy"), "--json"))
        assert json.loads(by_axis)["checks"] == doc["checks"]
    direct = report_json(check_rows("forward", np.asfortranarray(x.astype(np.float64)),
                                    Options(dtype="float32"), workers=1), "x")
    assert direct["checks"] == doc["checks"]
    v = np.random.default_rng(5).standard_normal(x.shape).astype(np.float32)
    np.save(tmp / "vc.npy", v)
    save_zarr(tmp / "vf.zarr", v, chunks=(64, N), order="F", zarr_format=2)
    same_json(cli, ["vjp", "--dtype", "float32", "--x-file", str(tmp / "c.npy"), "--v-file"],
              [tmp / "vc.npy", tmp / "vf.zarr"], flag=None)
    # control: the layout changes the built-in's own float32 results
    info, impl = dtype_info("float32"), get_implementation("stable")
    wide = np.random.default_rng(6).standard_normal((64, 4096)).astype(np.float32) * 3
    c_out = np.asarray(impl.softmax(wide, info))
    f_out = np.asarray(impl.softmax(np.asfortranarray(wide), info))
    assert not np.array_equal(c_out, f_out)


def test_float16_stores_and_bfloat16_values_in_a_float32_store(cli, tmp_path):
    x = batch()
    for dtype, name in ((np.float16, "float16"), (ml_dtypes.bfloat16, "bfloat16")):
        a = x.astype(dtype).astype(np.float32 if name == "bfloat16" else dtype)
        np.save(tmp_path / f"{name}.npy", a)
        doc = same_json(cli, ["forward", "--dtype", name],
                        [tmp_path / f"{name}.npy", save_shards(tmp_path / name, a),
                         save_zarr(tmp_path / f"{name}.zarr", a)])
        assert doc["dtype"] == name
    assert ZarrRows(str(tmp_path / "float16.zarr"), None, "x").dtype == np.float16


def test_bfloat16_a_store_cannot_hold_is_a_clear_error(cli, tmp_path):
    """np.save writes bfloat16 as 2-byte voids; zarr-python has no bfloat16 (a zarr.json
    naming it, as other writers make, is refused with the way out)."""
    d = tmp_path / "bf"
    d.mkdir()
    np.save(d / "a.npy", np.ones((2, 4), dtype=ml_dtypes.bfloat16))
    assert_error(cli("forward", "--x-file", str(d)), "dtype |V2", "save it as float32")
    z = save_zarr(tmp_path / "bf.zarr", np.ones((4, 8), np.float32))
    meta = json.loads((z / "zarr.json").read_text())
    meta["data_type"] = "bfloat16"
    (z / "zarr.json").write_text(json.dumps(meta))
    assert_error(cli("forward", "--x-file", str(z)), "bfloat16", "store them as float32")


def test_pickling_a_store_carries_its_path_not_its_data(tmp_path):
    big = np.random.default_rng(2).standard_normal((1250, 1000))  # 10 MB
    np.save(tmp_path / "big.npy", big)
    stores = [NpyRows(str(tmp_path / "big.npy"), "x"),
              ShardRows(str(save_shards(tmp_path / "sh", big, (400, 401, 1000))), "x"),
              ZarrRows(str(save_zarr(tmp_path / "z.zarr", big, chunks=(100, 1000))), None, "x")]
    for s in stores:
        s[0:5]  # opened and read: what it holds then is not pickled either
        data = pickle.dumps(s)
        assert len(data) < 4096, (type(s), len(data))
        back = pickle.loads(data)
        assert back.shape == big.shape and back.dtype == big.dtype
        np.testing.assert_array_equal(back[395:1005], big[395:1005])  # across shards
        np.testing.assert_array_equal(back[7], big[7])
    assert len(pickle.dumps(big)) > 10**7  # control: the data itself


def test_a_store_pickles_by_its_absolute_path_and_opens_where_it_is_read(tmp_path,
                                                                         monkeypatch):
    """A relative path is made absolute when the store is made (a Dask worker has a working
    directory of its own); an unpickled store is opened at its first read, not as it
    unpickles, so a path that process cannot see, or a file that changed, is an error of the
    read (one line), and the control reads the same bytes where the file is there."""
    a = np.random.default_rng(3).standard_normal((40, 30))
    np.save(tmp_path / "a.npy", a)
    save_shards(tmp_path / "sh", a, (10, 11, 25))
    save_zarr(tmp_path / "z.zarr", a, chunks=(8, 30))
    monkeypatch.chdir(tmp_path)
    made = [NpyRows("a.npy", "--x-file a.npy"), ShardRows("sh", "--x-file sh"),
            ZarrRows("z.zarr", None, "--x-file z.zarr")]
    assert [os.path.isabs(s.path) for s in made] == [True] * 3
    data = [pickle.dumps(s) for s in made]
    monkeypatch.chdir("/")
    for d in data:  # the control: the same rows, read from elsewhere
        np.testing.assert_array_equal(pickle.loads(d)[5:12], a[5:12])
    for path in ("a.npy", "sh", "z.zarr"):
        (tmp_path / path).rename(tmp_path / f"gone-{path}")
    for d, flag in zip(data, ("a.npy", "sh", "z.zarr")):
        back = pickle.loads(d)  # unpickles: nothing is opened yet
        assert back.shape == a.shape and back.dtype == a.dtype
        with pytest.raises(InputError) as e:
            back[0:3]
        msg = str(e.value)
        assert msg.startswith(f"--x-file {flag}: ") and "\n" not in msg
        assert msg.endswith("a Dask worker must see the same path)")
    np.save(tmp_path / "a.npy", a[:, :20])  # another file at the same path
    with pytest.raises(InputError, match=r"holds \(40, 20\) float64 where this run's chunks "
                       r"are checked, \(40, 30\) float64 where it started"):
        pickle.loads(data[0])[0:3]
    again = pickle.loads(pickle.dumps(pickle.loads(data[1])))  # pickled again unopened
    assert "sh" in repr(again) and again.shape == a.shape


class Recording(RowStore):
    """An array behind the store interface that records the slices asked of it and fails
    when asked for the whole."""

    def __init__(self, a):
        super().__init__("recording", None)
        self.a, self.shape, self.dtype, self.sizes = a, a.shape, a.dtype, []

    def _read(self, lo, hi):
        self.sizes.append(hi - lo)
        return self.a[lo:hi]

    def __array__(self, dtype=None, copy=None):
        raise AssertionError("the whole store was read")

    def _args(self):
        return (self.a,)


@pytest.mark.parametrize("command", ["forward", "vjp", "loss", "jacobian"])
def test_nothing_reads_a_store_whole(command):
    x = batch()
    v = np.random.default_rng(5).standard_normal(x.shape)
    companions = {"vjp": {"v": v}, "loss": {"t": targets()}}.get(command, {})
    if command == "jacobian":
        x = x[:, :16]
    store = Recording(x)
    comps = {k: Recording(a) for k, a in companions.items()}
    options = Options(engine="dd")
    got = check_rows(command, store, options, companions=comps, workers=1)
    want = check_rows(command, x, options, companions=companions, workers=1)
    assert json.dumps(report_json(got, "v")) == json.dumps(report_json(want, "v"))
    rows = parallel.rows_per_chunk(x.shape[1], command == "jacobian",
                                   slow=command in ("vjp", "loss"))
    assert sum(store.sizes) == x.shape[0] and max(store.sizes) == rows < x.shape[0] / 4
    for c in comps.values():
        assert max(c.sizes) == rows
    with pytest.raises(AssertionError, match="whole"):  # control: the wrapper does catch it
        np.asarray(store)


def test_the_cli_reads_a_store_a_chunk_at_a_time(cli, files, monkeypatch):
    sizes = []
    read = ShardRows._read
    monkeypatch.setattr(ShardRows, "_read", lambda s, lo, hi: sizes.append(hi - lo) or
                        read(s, lo, hi))
    monkeypatch.setattr(ShardRows, "__array__", lambda *a, **k: pytest.fail("read whole"))
    assert cli("vjp", "--x-file", str(files["shards"]), "--v-file", str(files["t.shards"]),
               "--workers", "1", "--json").code == 0
    assert max(sizes) == 16 and sum(sizes) == 2 * 300


def assert_error(r, *words):
    assert r.code == 2, (r.code, r.out, r.err)
    assert r.err.startswith("error: ") and r.err.count("\n") == 1, r.err
    assert "Traceback" not in r.err and "internal error" not in r.err, r.err
    for w in words:
        assert w in r.err, (w, r.err)


def test_shards_of_either_byte_order_and_hidden_files(cli, files, tmp_path):
    """Shards saved big-endian and little-endian hold the same numbers: one batch. A hidden
    name (an editor's or a copy's temporary) is not a shard; the control: the same file
    unhidden is read as the first shard, another batch."""
    x = files["x"]
    sh = tmp_path / "bo"
    sh.mkdir()
    np.save(sh / "s0.npy", x[:100].astype(">f8"))
    np.save(sh / "s1.npy", x[100:])
    np.save(sh / ".s-partial.npy", x[:7])
    same_json(cli, ["forward"], [files["npy"], sh])
    (sh / ".s-partial.npy").rename(sh / "a-partial.npy")
    doc = without_input(cli("forward", "--x-file", str(sh), "--json"))
    assert json.loads(doc)["shape"] == [307, N]


def test_store_errors_are_one_line(cli, tmp_path, files):
    def d(name, **arrays):
        path = tmp_path / name
        path.mkdir()
        for k, a in arrays.items():
            np.save(path / k, a, allow_pickle=True)
        return str(path)

    x = batch()[:10]
    cases = [
        (d("empty"), "empty directory"),
        (d("mixed", **{"a.npy": x}), None),  # made valid, then a text file added below
        (d("n", **{"a.npy": x, "b.npy": x[:, :5]}), "shard b.npy has rows of 5 float64"),
        (d("dt", **{"a.npy": x, "b.npy": x.astype(np.float32)}), "rows of 64 float32"),
        (d("obj", **{"a.npy": np.array([[1.0], ["a"]], dtype=object)}), "pickled objects"),
        (d("nd", **{"a.npy": np.ones((2, 2, 2))}), "a shard is 2-D"),
        (d("cplx", **{"a.npy": x + 1j}), "complex values"),
        (d("big", **{"a.npy": np.array([[2**60, 1]])}), "beyond 2^53"),
        (str(tmp_path / "missing.zarr"), "no such zarr store"),
    ]
    (tmp_path / "mixed" / "notes.txt").write_text("hi")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.npy").write_text("1,2,3")
    cases.append((str(tmp_path / "junk"), "shard a.npy: not a .npy file (no NPY header)"))
    cases[1] = (cases[1][0], "shard notes.txt is not a .npy file")
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("a", shape=(3, 4), dtype="f8")
    g.create_array("b", shape=(3, 4), dtype="f8")
    cases += [(str(tmp_path / "g.zarr"), "holding 2 arrays (a, b); pick one with :NAME"),
              (str(tmp_path / "g.zarr") + ":c", "no array named 'c'"),
              (str(files["zarr"]) + ":a", "is a zarr array, not a group"),
              (str(files["shards"]) + ":a", "only zarr stores"),
              (str(save_zarr(tmp_path / "i.zarr", np.full((600, 4), 2**60))), "beyond 2^53")]
    for spec, words in cases:
        assert_error(cli("forward", "--x-file", spec, "--workers", "2"), "--x-file", words)
    narrow = save_zarr(tmp_path / "narrow.zarr", np.ones((300, 32)))
    assert_error(cli("vjp", "--x-file", str(files["zarr"]), "--v-file", str(narrow)),
                 "--v-file has shape (300, 32) but x has shape (300, 64)")


def test_a_group_member_is_read_by_name(cli, tmp_path, files):
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("logits", shape=files["x"].shape, dtype="f8", chunks=(13, N))[...] = files["x"]
    same_json(cli, ["forward"], [files["npy"], f"{tmp_path / 'g.zarr'}:logits"])
    g.create_array("other", shape=(1, 2), dtype="f8")
    same_json(cli, ["forward"], [files["npy"], f"{tmp_path / 'g.zarr'}:logits"])


def test_without_zarr_the_error_names_the_extra(cli, files, monkeypatch):
    monkeypatch.setitem(sys.modules, "zarr", None)
    assert_error(cli("forward", "--x-file", str(files["zarr"])), "pip install 'smcheck[dask]'")


def test_max_size_limits_a_streamed_row_and_a_whole_input_in_all(cli, files, tmp_path):
    """300 x 64: a store streams under --max-size 64 (its rows), not under 63; the same
    numbers read whole (.npz, or a .npy under 1 MiB) are refused under 64 (their total), taken
    at 19,200."""
    for store in (files["shards"], files["zarr"]):
        ok = cli("forward", "--x-file", str(store), "--max-size", "64", "--json")
        assert ok.code == 0 and ok.json()["shape"] == [300, N]
        assert_error(cli("forward", "--x-file", str(store), "--max-size", "63"),
                     "rows of 64 numbers, more than the limit of 63")
    np.savez(tmp_path / "x.npz", x=files["x"])
    for whole in (tmp_path / "x.npz", files["npy"]):
        assert_error(cli("forward", "--x-file", str(whole), "--max-size", "64"),
                     "19,200 numbers, more than the limit of 64")
        assert cli("forward", "--x-file", str(whole), "--max-size", "19200").code == 0
    assert_error(cli("forward", "--random", "64", "--rows", "2", "--max-size", "64"),
                 "128 numbers")


def test_nd_store_is_read_whole_within_the_limit(cli, tmp_path):
    """An N-d store, or a 2-D one along --axis 0, is read whole: the same JSON as the .npy,
    and --max-size is its total."""
    x = np.random.default_rng(3).standard_normal((3, 4, 16))
    np.save(tmp_path / "x.npy", x)
    z = save_zarr(tmp_path / "x.zarr", x, chunks=(1, 2, 16))
    same_json(cli, ["forward"], [tmp_path / "x.npy", z])
    same_json(cli, ["forward", "--axis", "1"], [tmp_path / "x.npy", z])
    assert cli("forward", "--x-file", str(z), "--max-size", "192").code == 0
    assert_error(cli("forward", "--x-file", str(z), "--max-size", "191"), "read whole",
                 "192 numbers, more than the limit of 191")
    x2 = x.reshape(12, 16)
    np.save(tmp_path / "x2.npy", x2)
    same_json(cli, ["forward", "--axis", "0"],
              [tmp_path / "x2.npy", save_shards(tmp_path / "sh", x2, (5,))])


def test_loss_from_z_alone_in_a_store(cli, files, tmp_path):
    z = np.random.default_rng(8).random((300, N)) + 0.01
    np.save(tmp_path / "z.npy", z)
    same_json(cli, ["loss", "--t-file", str(files["t.zarr"])],
              [tmp_path / "z.npy", save_zarr(tmp_path / "z.zarr", z)], flag="--z-file")


def test_store_rows_are_validated_as_they_are_read(tmp_path):
    s = ZarrRows(str(save_zarr(tmp_path / "i.zarr", np.array([[1, 2], [2**60, 3]]),
                               chunks=(1, 2))), None, "--x-file i.zarr")
    np.testing.assert_array_equal(s[0:1], [[1, 2]])
    with pytest.raises(InputError, match="beyond 2"):
        s[0:2]
