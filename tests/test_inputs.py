"""Tests for smcheck.inputs: every text and file form, every error path, and source selection."""

import io
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from smcheck.exceptions import InputError
from smcheck.inputs import load_file, parse_text, random_input
from smcheck.sources import Source, load_vector

INF = float("inf")


def same(actual, expected):
    """Exact equality including shape, dtype float64, and nan in the same places."""
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.dtype == np.float64
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)


def raises(*words):
    """Context manager: InputError whose one-line message contains all ``words``."""

    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(InputError)
            self.info = self.ctx.__enter__()

        def __exit__(self, *exc):
            handled = self.ctx.__exit__(*exc)
            message = str(self.info.value)
            assert "\n" not in message and not message.lower().startswith("error")
            for word in words:
                assert word in message, f"{word!r} not in {message!r}"
            return handled

    return _Check()


# --- parse_text -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1,2,3", [1, 2, 3]),
        ("1 2\t3", [1, 2, 3]),
        ("1, 2  ,3 4", [1, 2, 3, 4]),
        ("  -0.5,1e-3,2E+2  ", [-0.5, 1e-3, 200]),
        ("7", [7]),
        ("1,2\n", [1, 2]),
        ("[1, 2.5, -3]", [1, 2.5, -3]),
        ("[[1, 2], [3, 4]]", [[1, 2], [3, 4]]),
        ('["inf", "-INF", 1, NaN, Infinity, -Infinity]', [INF, -INF, 1, math.nan, INF, -INF]),
        ("1,2;3,4", [[1, 2], [3, 4]]),
        ("1 2\n3 4\n\n", [[1, 2], [3, 4]]),
        ("1,2;\n;3,4;", [[1, 2], [3, 4]]),
        ("1,2;", [1, 2]),
        ("inf,-inf,+inf,nan", [INF, -INF, INF, math.nan]),
        ("INF,-Inf,+INFINITY,NaN,-infinity", [INF, -INF, INF, math.nan, -INF]),
    ],
)
def test_parse_text_forms(text, expected):
    same(parse_text(text), expected)


@pytest.mark.parametrize(
    "text, words",
    [
        ("", ["--x", "empty input"]),
        ("  \n ; ", ["empty input"]),
        ("[]", ["empty input"]),
        ("[[], []]", ["empty input"]),
        ("1,abc,3", ["--x: cannot read 'abc' as a number (token 2)"]),
        ("1,2;3,x4", ["'x4'", "row 1, token 2"]),
        ("1,,2", ["empty value", "token 2"]),
        ("1,2,3;4,5", ["--x: rows have different lengths (row 0 has 3, row 1 has 2)"]),
        ("[[1,2,3],[4,5]]", ["rows have different lengths (row 0 has 3, row 1 has 2)"]),
        ("[[[1, 2]]]", ["nested deeper than 2 levels"]),
        ("[1, [2]]", ["mixes numbers and lists"]),
        ("[1, null]", ["null", "not a number", "item 1"]),
        ("[1, true]", ["true", "not a number"]),
        ('[1, "one"]', ["'one'", "item 1"]),
        ("[1, 2", ["invalid JSON"]),
        ("[" + "9" * 400 + "]", ["too large"]),
    ],
)
def test_parse_text_errors(text, words):
    with raises(*words):
        parse_text(text)


def test_parse_text_uses_name_in_messages():
    with raises("--v: cannot read 'q'"):
        parse_text("1,q", name="v")


finite_or_special = st.floats(allow_nan=True, allow_infinity=True, width=64)


@given(
    st.integers(1, 4).flatmap(
        lambda n: st.lists(
            st.lists(finite_or_special, min_size=n, max_size=n), min_size=1, max_size=4
        )
    )
)
def test_parse_text_round_trips_repr(rows):
    text = ";".join(",".join(repr(v) for v in row) for row in rows)
    expected = np.array(rows[0] if len(rows) == 1 else rows, dtype=np.float64)
    same(parse_text(text), expected)
    # Signs of zero survive too, since repr keeps them (repr drops a nan's sign, so skip nans).
    got, numbers = parse_text(text), ~np.isnan(expected)
    np.testing.assert_array_equal(np.signbit(got[numbers]), np.signbit(expected[numbers]))


# --- load_file --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        np.array([1.0, -2.5, 3.0]),
        np.array([1.0, -2.5, 3.0], dtype=">f8"),
        np.array([1.0, 2.0], dtype=np.float16),
        np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32),
        np.array([1, -2, 3], dtype=np.int8),
        np.array([4, 5], dtype=">u4"),
        np.array([True, False, True]),
        np.array([INF, -INF, np.nan]),
    ],
)
def test_npy_real_dtypes_become_float64(tmp_path, array):
    """Every real dtype loads as float64, except float16 and float32, which float64 holds
    exactly: they stay as they are (converted a chunk of rows at a time by the core)."""
    path = tmp_path / "x.npy"
    np.save(path, array)
    loaded = load_file(str(path))
    if array.dtype in (np.float16, np.float32):
        assert loaded.dtype == array.dtype
        loaded = loaded.astype(np.float64)
    same(loaded, array.astype(np.float64))
    assert loaded.dtype.isnative


def test_npy_scalar_becomes_length_one(tmp_path):
    np.save(tmp_path / "x.npy", np.float64(2.5))
    same(load_file(str(tmp_path / "x.npy")), [2.5])


def test_extension_is_case_insensitive(tmp_path):
    np.save(tmp_path / "x.npy", np.array([1.0, 2.0]))
    (tmp_path / "x.npy").rename(tmp_path / "X.NPY")
    same(load_file(str(tmp_path / "X.NPY")), [1, 2])


def test_npz_single_array_and_keys(tmp_path):
    one = tmp_path / "one.npz"
    np.savez(one, logits=np.array([1.0, 2.0]))
    same(load_file(str(one)), [1, 2])
    same(load_file(f"{one}:logits"), [1, 2])

    several = tmp_path / "several.npz"
    np.savez(several, a=np.array([1.0]), b=np.array([[1, 2], [3, 4]]))
    same(load_file(f"{several}:b"), [[1, 2], [3, 4]])
    with raises("several arrays", "a, b", ":KEY"):
        load_file(str(several))
    with raises("no array named 'c'", "a, b"):
        load_file(f"{several}:c")


def test_npz_with_no_arrays(tmp_path):
    path = tmp_path / "empty.npz"
    np.savez(path)
    with raises("no arrays"):
        load_file(str(path))


def test_npz_object_array_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([1, "a", None], dtype=object))
    with raises("pickled objects", "never unpickles"):
        load_file(str(path))


def test_json_files(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("[1, 2, 3]")
    same(load_file(str(path)), [1, 2, 3])
    path.write_text('[[1, "inf"], [3, "-inf"]]')
    same(load_file(str(path)), [[1, INF], [3, -INF]])
    path.write_text(json.dumps({"v": [0.5, 1.5], "other": "ignored"}))
    same(load_file(str(path), name="v"), [0.5, 1.5])
    with raises("no key 'x'", "'v'", "'other'"):
        load_file(str(path), name="x")
    path.write_text('{"x": 3}')
    with raises("expected a JSON array"):
        load_file(str(path))
    path.write_text("{not json")
    with raises("invalid JSON", "x.json"):
        load_file(str(path))


def test_csv_tsv_txt(tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("1,2,3\n4, 5 ,6\n\n")
    same(load_file(str(csv)), [[1, 2, 3], [4, 5, 6]])
    tsv = tmp_path / "x.tsv"
    tsv.write_text("1\t2\tinf\r\n")
    same(load_file(str(tsv)), [1, 2, INF])
    txt = tmp_path / "x.txt"
    txt.write_text("# logits from run 3\n1 2, 3\n  # indented comment\n4 5 6\n")
    same(load_file(str(txt)), [[1, 2, 3], [4, 5, 6]])


def test_text_file_with_utf8_bom(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes("\ufeff1,2\n".encode("utf-8"))
    same(load_file(str(path)), [1, 2])


def test_csv_header_row_is_explained(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with raises("x.csv", "line 1", "header", "remove"):
        load_file(str(path))


def test_text_file_errors_name_the_line(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("1,2\n3,oops\n")
    with raises("'oops'", "line 2, token 2"):
        load_file(str(path))
    path.write_text("1,2,3\n\n4,5\n")
    with raises("rows have different lengths (line 1 has 3, line 3 has 2)"):
        load_file(str(path))
    txt = tmp_path / "only_comments.txt"
    txt.write_text("# nothing here\n\n")
    with raises("empty input"):
        load_file(str(txt))


def test_stdin():
    same(load_file("-", stdin=io.StringIO("1 2 3\n4,5,6\n")), [[1, 2, 3], [4, 5, 6]])
    buf = io.BytesIO()
    np.save(buf, np.ones(3))
    for text in (buf.getvalue().decode("latin-1"),  # as read by a lenient decoder, or strictly
                 buf.getvalue().decode("utf-8", "surrogateescape")):
        with raises("--x-file - (stdin): binary .npy data", "pass the file's path"):
            load_file("-", stdin=io.StringIO(text))
    with raises("--v-file - (stdin)", "empty input"):
        load_file("-", name="v", stdin=io.StringIO("\n"))


def test_pickled_object_npy_is_refused(tmp_path):
    path = tmp_path / "data.npy"
    np.save(path, np.array([1, "a", {"b": 2}], dtype=object), allow_pickle=True)
    with raises(f"--x-file {path}: contains pickled objects; smcheck never unpickles files"):
        load_file(str(path))


def test_truncated_npy(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.arange(100.0))
    path.write_bytes(path.read_bytes()[:-40])
    with raises("corrupt or truncated"):
        load_file(str(path))


def _npy_with_shape(shape: bytes) -> bytes:
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': " + shape + b", }"
    header += b" " * (117 - len(header) - 10) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\x00" * 24


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("junk.npy", b"\x00\x01\x02garbage" * 10, ["not a .npy file"]),
        ("junk.npz", b"\x00\x01\x02garbage", ["not a .npz file"]),
        ("fake.npz", b"PK\x03\x04" + b"\x00" * 50, ["corrupt .npz"]),
        ("bad_shape.npy", _npy_with_shape(b"('a',)"), ["corrupt or truncated", "shape"]),
        ("lying_shape.npy", _npy_with_shape(b"(10000000000000,)"), ["corrupt or truncated"]),
        ("empty.npy", b"", ["empty file"]),
        ("empty.npz", b"", ["empty file"]),
        ("empty.json", b"  \n", ["empty input"]),
        ("empty.csv", b"", ["empty input"]),
        ("binary.txt", b"\xff\xfe\x00\x81", ["not a UTF-8 text file"]),
    ],
)
def test_bad_file_contents(tmp_path, name, content, words):
    path = tmp_path / name
    path.write_bytes(content)
    with raises(name, *words):
        load_file(str(path))


def test_unknown_or_missing_extension(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("foo.xyz", "foo"):
        (tmp_path / name).write_text("1,2,3\n")
    with raises(
        "--x-file foo.xyz: unknown file type '.xyz' (use .npy, .npz, .safetensors, .json, .csv, "
        ".tsv or .txt)"
    ):
        load_file("foo.xyz")
    with raises("no file extension", ".npy"):
        load_file("foo")
    with raises("only .npz and .safetensors files take a ':KEY'"):
        load_file("foo.npy:x")
    # nothing there: that, before what its name lacks
    for name in ("bar.xyz", "bar"):
        with raises(f"--x-file {name}: no such file or directory"):
            load_file(name)


def test_missing_file_and_directory(tmp_path):
    with raises("missing.npy", "cannot read file", "No such file"):
        load_file(str(tmp_path / "missing.npy"))
    with raises("missing.csv", "No such file"):
        load_file(str(tmp_path / "missing.csv"))
    with raises("not a valid file path"):
        load_file("bad\0name.csv")
    directory = tmp_path / "dir.npy"
    directory.mkdir()
    with raises("dir.npy", "empty directory"):  # a directory is a store (of .npy shards)
        load_file(str(directory))


@pytest.mark.parametrize(
    "array, words",
    [
        (np.array([1 + 2j, 3]), ["complex"]),
        (np.array(["1", "2"]), ["expected numbers", "dtype <U1"]),
        (np.zeros(2, dtype=[("a", "f8"), ("b", "i4")]), ["expected numbers"]),
        (np.array(["2020-01-01"], dtype="datetime64[D]"), ["expected numbers"]),
        (np.zeros(0), ["empty input"]),
        (np.zeros((3, 0)), ["empty input"]),
    ],
)
def test_unusable_arrays(tmp_path, array, words):
    np.save(tmp_path / "x.npy", array)
    with raises(*words):
        load_file(str(tmp_path / "x.npy"))


# --- random_input -----------------------------------------------------------------------------


def test_random_input_is_reproducible_and_shaped():
    a = random_input(5, seed=3, scale=2.0)
    assert a.shape == (5,) and a.dtype == np.float64
    same(random_input(5, seed=3, scale=2.0), a)
    same(a, np.random.default_rng(3).standard_normal((1, 5))[0] * 2.0)
    same(random_input(np.int64(5), seed=np.int64(3), scale=2), a)
    b = random_input(4, rows=3, seed=3)
    assert b.shape == (3, 4)
    assert not np.array_equal(random_input(5, seed=4), random_input(5, seed=3))


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"n": 0}, ["--random", "at least 1"]),
        ({"n": 3, "rows": 0}, ["--rows", "at least 1"]),
        ({"n": 3, "scale": INF}, ["--scale", "finite"]),
        ({"n": 3, "scale": math.nan}, ["--scale", "finite"]),
        ({"n": 3, "seed": -1}, ["--seed"]),
        ({"n": 2.5}, ["--random", "whole number"]),
        ({"n": True}, ["--random", "whole number"]),
    ],
)
def test_random_input_errors(kwargs, words):
    with raises(*words):
        random_input(**kwargs)


# --- load_vector ------------------------------------------------------------------------------


def test_load_vector_each_source(tmp_path):
    s = load_vector("x", text="1,2,3")
    assert isinstance(s, Source) and s.description == "--x (3 values)"
    same(s.array, [1, 2, 3])
    assert load_vector("x", text="1").description == "--x (1 value)"

    path = tmp_path / "x.npy"
    np.save(path, np.ones((2, 5)))
    s = load_vector("x", file=str(path))
    assert s.description == f"{path} (2 rows x 5)"
    same(s.array, np.ones((2, 5)))

    s = load_vector("x", random=100, seed=0)
    assert s.description == "random n=100 rows=1 seed=0 scale=1"
    same(s.array, random_input(100))
    s = load_vector("x", random=4, rows=2, seed=7, scale=0.5)
    assert s.description == "random n=4 rows=2 seed=7 scale=0.5"
    assert s.array.shape == (2, 4)

    s = load_vector("x", preset="overflow")
    assert s.description == "preset 'overflow'"
    same(s.array, [1000, 999, 990])

    s = load_vector("v", file="-", stdin=io.StringIO("0.5 0.5\n"))
    assert s.description == "stdin (2 values)"


def test_load_vector_ignores_random_options_without_random():
    same(load_vector("x", text="1,2", rows=5, seed=9, scale=INF).array, [1, 2])


def test_load_vector_source_counting():
    with raises("no input for x: give --x, --x-file, --random N or --preset NAME"):
        load_vector("x")
    with raises("no input for v: give --v or --v-file"):
        load_vector("v")
    assert load_vector("t", required=False) is None
    with raises("give exactly one source for x, got --x and --preset"):
        load_vector("x", text="1", preset="benign")
    with raises("got --x, --x-file and --random"):
        load_vector("x", text="1", file="a.npy", random=3)
    # An empty string is still a given source, and then an empty input.
    with raises("--z: empty input"):
        load_vector("z", text="")


def test_load_vector_passes_errors_through():
    with raises("unknown preset 'nope'", "smcheck presets"):
        load_vector("x", preset="nope")
    with raises("--random", "at least 1"):
        load_vector("x", random=0)
