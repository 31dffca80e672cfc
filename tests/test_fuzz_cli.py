"""Fuzzing the real command line: random argument lists and random input files.

Every run must end with exit status 0, 1 or 2 and never show a traceback; every exit 2 must be
exactly one stderr line starting with ``error:`` that names the problem (the option or the file),
and never smcheck's "internal error" (an exception that escaped the core). The CLI runs
in-process through ``smcheck.cli.main(argv)`` (about 25 ms a run): an exception other than
SystemExit leaving ``main`` is a traceback, and fails the test. A few runs of ``python -m smcheck``
in a subprocess check the same end to end.

Cases are kept cheap (n <= 16, at most 4 rows, --dps 20 or 25 where valid, sweeps on small
presets only) so that the 2,300 hypothesis cases below run in about 70 s on two cores. Every
input that fuzzing turned up as a bug is pinned with @example or a test of its own.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from clirunner import Result, run_cli
from hypothesis import example, given, settings
from hypothesis import strategies as st


REPO = Path(__file__).resolve().parents[1]
COMMANDS = ["forward", "jacobian", "vjp", "loss", "claims"]
#: presets a sweep can run in a few tens of milliseconds (large-n takes seconds)
CHEAP_PRESETS = ["benign", "overflow", "masked", "fully-masked", "single", "huge", "subnormal"]

# the number of hypothesis cases of each test (2,300 in all; see test_case_budget). To search
# afresh and longer: HYPOTHESIS_PROFILE=explore SMCHECK_FUZZ_SCALE=10 pytest tests/test_fuzz_cli.py
_SCALE = max(1, int(os.environ.get("SMCHECK_FUZZ_SCALE", "1")))
N_FILES = 600 * _SCALE
N_TEXT = 500 * _SCALE
N_OPTIONS = 500 * _SCALE
N_ARGV = 500 * _SCALE
N_HEADERS = 200 * _SCALE


# --- running the CLI ----------------------------------------------------------------------------

# clirunner.run_cli (the runner behind the ``cli`` fixture) is called directly in the @given
# tests: a function-scoped fixture there is a hypothesis health-check error. It fails the test
# when an exception other than SystemExit leaves main() (the traceback a user would have seen).

def assert_contract(r: Result, names=(), json_out: bool = False) -> None:
    """Exit 0/1/2/3, no traceback; exit 1 and 3 only with --check or --quiet (which implies it;
    3: an input condition, which the JSON lists); exit 2 is one ``error:`` line that contains one of ``names`` (when given)
    and is not an internal error."""
    where = f"smcheck {' '.join(map(repr, r.argv))}\nexit {r.code}\nstderr: {r.err!r}"
    assert r.code in (0, 1, 2, 3), where
    assert "Traceback" not in r.out + r.err, where
    if r.code in (1, 3):
        assert "--check" in r.argv or "--quiet" in r.argv or "-q" in r.argv, where
    if r.code == 3 and json_out and "--quiet" not in r.argv:
        assert json.loads(r.out)["input_conditions"], where
    if r.code == 2:
        assert r.out == "", where
        assert r.err.startswith("error: ") and r.err.endswith("\n"), where
        assert r.err.count("\n") == 1, where
        assert "internal error" not in r.err, where
        if names:
            assert any(n and n in r.err for n in names), f"{where}\nnames none of {names}"
    else:
        assert r.err == "", where
        if json_out and "--quiet" not in r.argv:
            json.loads(r.out)  # one JSON document and nothing else


# --- strategies: numbers as text ----------------------------------------------------------------

SPECIAL_TOKENS = [
    "1e308", "-1e308", "1e400", "-1e400", "5e-324", "-5e-324", "1e-400", "2.2250738585072014e-308",
    "1.7976931348623157e308", "inf", "-inf", "nan", "-INF", "NaN", "+inf", "Infinity", "-0",
    "0", "+1", "1_000", "0x10", "1e", "--1", "1.2.3", "abc", "", " ", "\u0661", "\u00bd",
    "9" * 400, "1e99999", "-1e-99999", "null", "true",
]
TOKEN = st.one_of(
    st.floats(width=64).map(repr),
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(SPECIAL_TOKENS),
)
ROW = st.lists(TOKEN, max_size=16)
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers(-(10**30), 10**30)
    | st.sampled_from(["inf", "-inf", "nan", "x", ""]),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(
        st.sampled_from(["x", "v", "t", "z", "a"]), inner, max_size=3),
    max_leaves=40)


@st.composite
def number_text(draw) -> str:
    """What a user may type after --x: numbers with separators and rows, or a JSON array."""
    form = draw(st.sampled_from(["rows", "rows", "rows", "json", "text"]))
    if form == "json":
        return json.dumps(draw(JSON_VALUE))
    if form == "text":
        return draw(st.text(max_size=40))
    rows = draw(st.lists(ROW, min_size=1, max_size=4))
    sep = draw(st.sampled_from([",", " ", ", ", "\t", " ,  "]))
    row_sep = draw(st.sampled_from([";", "\n", " ; "]))
    return row_sep.join(sep.join(row) for row in rows)


def good_vector(n: int, seed: int = 0) -> str:
    return ",".join(repr(float(v)) for v in np.random.default_rng(seed).normal(size=n))


# --- strategies: files --------------------------------------------------------------------------

NPY_DTYPES = ["<f8", ">f8", "<f4", "<f2", "<i8", "|u1", "|b1", "<c16", "<U3", "|S2", "<M8[D]",
              "<m8[s]", "|V8", "struct", "object"]
SHAPES = [(), (0,), (1,), (3,), (16,), (2, 3), (4, 16), (0, 3), (3, 0), (2, 2, 2)]
SPECIAL_VALUES = [0.0, 1.0, -1.0, 1e308, -1e308, 5e-324, np.inf, -np.inf, np.nan, 1000.0]


class Boom:
    """A pickled object that would create a file if it were ever unpickled."""

    def __reduce__(self):
        return (open, (os.path.join(tempfile.gettempdir(), "smcheck-fuzz-unpickled"), "w"))


def _array(dtype: str, shape: tuple, values: list) -> np.ndarray:
    size = int(np.prod(shape))
    vals = (values * (size // max(len(values), 1) + 1))[:size] if values else [0.0] * size
    if dtype == "object":
        return np.array((vals + [Boom(), "a", None])[:size] or [], dtype=object).reshape(shape)
    if dtype == "struct":
        return np.zeros(shape, dtype=[("a", "<f8"), ("b", "<i4")])
    if dtype in ("<M8[D]", "<m8[s]"):
        return np.arange(size).astype(dtype).reshape(shape)
    if dtype == "|V8":
        return np.zeros(shape, dtype="V8")
    with np.errstate(all="ignore"):
        if dtype[1] in "iub":
            return np.nan_to_num(np.array(vals), posinf=7, neginf=-7).astype(dtype).reshape(shape)
        return np.array(vals).astype(dtype).reshape(shape)


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def npz_bytes(members: dict, compress: bool = False) -> bytes:
    buf = io.BytesIO()
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=mode) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """The bytes as they are, truncated, with a byte changed, or with junk appended."""
    how = draw(st.sampled_from(["none", "none", "truncate", "flip", "append"]))
    if how == "truncate" and data:
        return data[:draw(st.integers(0, len(data) - 1))]
    if how == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        return data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
    if how == "append":
        return data + draw(st.binary(min_size=1, max_size=16))
    return data


@st.composite
def npy_file(draw) -> tuple[str, bytes]:
    dtype = draw(st.sampled_from(NPY_DTYPES))
    shape = draw(st.sampled_from(SHAPES))
    values = draw(st.lists(st.sampled_from(SPECIAL_VALUES) | st.floats(-1e3, 1e3), max_size=8))
    return ".npy", draw(mutated(npy_bytes(_array(dtype, shape, values))))


@st.composite
def npz_file(draw) -> tuple[str, bytes]:
    members = {}
    for i in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["npy", "npy", "raw", "object"]))
        name = draw(st.sampled_from([f"arr_{i}.npy", "x.npy", "x", "data.bin", "a/b.npy"]))
        if kind == "npy":
            data = npy_bytes(_array(draw(st.sampled_from(NPY_DTYPES[:8])),
                                    draw(st.sampled_from(SHAPES)), [1.0, 2.0, -np.inf]))
        elif kind == "object":
            data = npy_bytes(_array("object", (3,), [1.0]))
        else:
            data = draw(st.binary(max_size=32))
        members[name] = draw(mutated(data))
    return ".npz", draw(mutated(npz_bytes(members, draw(st.booleans()))))


@st.composite
def text_file(draw) -> tuple[str, bytes]:
    ext = draw(st.sampled_from([".csv", ".tsv", ".txt"]))
    sep = {".csv": ",", ".tsv": "\t", ".txt": draw(st.sampled_from([" ", ",", ", "]))}[ext]
    rows = draw(st.lists(ROW, max_size=5))
    lines = [sep.join(r) for r in rows]
    if draw(st.booleans()):
        lines.insert(0, draw(st.sampled_from(["# comment", "a,b,c", "", "x\ty"])))
    text = "\n".join(lines) + draw(st.sampled_from(["", "\n", "\r\n"]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16"]))
    return ext, text.encode(encoding)


@st.composite
def json_file(draw) -> tuple[str, bytes]:
    if draw(st.booleans()):
        text = json.dumps(draw(JSON_VALUE))
    else:
        text = "[" + ",".join(draw(st.lists(TOKEN, max_size=8))) + "]"
    return ".json", draw(mutated(text.encode()))


@st.composite
def junk_file(draw) -> tuple[str, bytes]:
    ext = draw(st.sampled_from([".npy", ".npz", ".json", ".csv", ".tsv", ".txt"]))
    prefix = draw(st.sampled_from([b"", b"\x93NUMPY", b"PK\x03\x04", b"PK\x05\x06", b"\xef\xbb\xbf"]))
    return ext, prefix + draw(st.binary(max_size=64))


FILE_CONTENT = st.one_of(npy_file(), npz_file(), text_file(), json_file(), junk_file(),
                         st.just((".txt", b"")), st.just((".npy", b"")))
#: an extension other than the content's: junk for the loader of that type
OTHER_EXT = st.sampled_from(["", ".xyz", ".NPY", ".npy", ".npz", ".json", ".csv", ".txt", ".gz"])

# --- pinned cases that fuzzing found ------------------------------------------------------------

#: an .npz whose member is not an .npy: numpy hands back its raw bytes, which once reached the
#: core and ended as "internal error: AttributeError: 'bytes' object has no attribute 'ndim'"
RAW_MEMBER_NPZ = (".npz", npz_bytes({"x.bin": b"hello"}))
RAW_NPY_MEMBER_NPZ = (".npz", npz_bytes({"x.npy": b"hello"}))
#: an object array (a pickle) inside an .npz, and a truncated .npy
OBJECT_NPZ = (".npz", npz_bytes({"x.npy": npy_bytes(np.array([Boom()], dtype=object))}))
TRUNCATED_NPY = (".npy", npy_bytes(np.arange(16.0))[:-5])


# --- test 1: input files ------------------------------------------------------------------------

def _file_argv(cmd: str, slot: str, spec: str, n: int, flags: list) -> list:
    """``cmd`` with the file in ``slot`` and valid, length-``n`` values for the other inputs."""
    argv = [cmd, f"--{slot}-file" if slot != "pos" else None, spec]
    argv = [a for a in argv if a is not None]
    if slot not in ("x", "pos", "z"):
        argv += ["--x", good_vector(n)]
    if cmd == "loss" and slot != "t":
        argv += ["--t", good_vector(n, 1)]
    return argv + ["--dps", "20"] + flags


@settings(max_examples=N_FILES)
@given(content=FILE_CONTENT, ext=st.none() | OTHER_EXT,
       slot_cmd=st.sampled_from([("x", c) for c in COMMANDS] + [("pos", "forward"),
                                 ("pos", "jacobian"), ("v", "vjp"), ("v", "loss"), ("t", "loss"),
                                 ("z", "loss"), ("v", "claims")]),
       n=st.integers(1, 4), key=st.sampled_from([None, None, "x", "arr_0", "missing", ""]),
       flags=st.lists(st.sampled_from(["--json", "--check", "--quiet"]), unique=True))
@example(content=RAW_MEMBER_NPZ, ext=None, slot_cmd=("x", "forward"), n=3, key=None,
         flags=["--json"])
@example(content=RAW_NPY_MEMBER_NPZ, ext=None, slot_cmd=("v", "vjp"), n=3, key="x", flags=[])
@example(content=OBJECT_NPZ, ext=None, slot_cmd=("x", "forward"), n=3, key=None, flags=[])
@example(content=TRUNCATED_NPY, ext=None, slot_cmd=("t", "loss"), n=3, key=None, flags=[])
def test_fuzz_input_files(content, ext, slot_cmd, n, key, flags):
    """Any file in any input slot of any command: a report, or one error line naming it."""
    slot, cmd = slot_cmd
    default_ext, data = content
    suffix = default_ext if ext is None else ext
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"in{suffix}")
        with open(path, "wb") as fh:
            fh.write(data)
        spec = path if key is None or suffix != ".npz" else f"{path}:{key}"
        argv = _file_argv(cmd, slot, spec, n, flags)
        r = run_cli(*argv)
        marker = os.path.join(tempfile.gettempdir(), "smcheck-fuzz-unpickled")
        assert not os.path.exists(marker), "a pickle in an input file was executed"
        name = "x" if slot == "pos" else slot
        # the file by name, or the input it is (a length mismatch with x names --v, say)
        assert_contract(r, names=(os.path.basename(path), f"--{name}", f"{name} has"),
                        json_out="--json" in flags)


# --- test 2: numbers on the command line --------------------------------------------------------

@settings(max_examples=N_TEXT)
@given(cmd=st.sampled_from(COMMANDS), slot=st.sampled_from(["x", "x", "pos", "v", "t", "z"]),
       text=number_text(), n=st.integers(1, 16),
       flags=st.lists(st.sampled_from(["--json", "--check", "--quiet"]), unique=True))
@example(cmd="forward", slot="x", text="1e308,-1e308,0", n=3, flags=["--json", "--check"])
@example(cmd="jacobian", slot="x", text="1e400;-1e400", n=1, flags=["--json"])
@example(cmd="loss", slot="z", text="0,0,0", n=3, flags=["--json", "--check"])
@example(cmd="vjp", slot="v", text="1,2", n=3, flags=[])
@example(cmd="loss", slot="t", text="1,2;3", n=2, flags=[])
def test_fuzz_text_inputs(cmd, slot, text, n, flags):
    """Random numbers, rows, JSON and junk as --x/--v/--t/--z (or the positional INPUT)."""
    if slot in ("v", "t", "z") and cmd in ("forward", "jacobian"):
        slot = "x"
    if cmd == "vjp" and slot in ("t", "z"):
        slot = "v"
    if cmd == "claims" and slot == "z":
        slot = "t"
    opts = ["--dps", "20", *flags]
    if slot in ("v", "t") or (slot == "z" and n % 2):
        opts += ["--x", good_vector(n)]  # with --z, x is optional
    if cmd == "loss" and slot != "t":
        opts += ["--t", good_vector(n, 1)]
    if slot == "pos":  # after "--" a text like "-1,2" is INPUT, not an option
        argv = [cmd, *opts, "--", text] if text.startswith("-") else [cmd, text, *opts]
    elif n % 3 == 0:
        argv = [cmd, f"--{slot}={text}", *opts]
    else:
        argv = [cmd, f"--{slot}", text, *opts]
    r = run_cli(*argv, stdin="1,2,3\n")
    name = "x" if slot == "pos" else slot
    assert_contract(r, names=(f"--{name}", f"{name} has", f"{name}:", "INPUT", "No such option"),
                    json_out="--json" in flags)


# --- test 3: option values ----------------------------------------------------------------------

BAD_FLOATS = ["0", "1e-3", "-1", "nan", "inf", "-inf", "abc", "1e308", ""]
OPTION_VALUES = {
    "--dtype": ["float64", "float32", "float16", "bfloat16", "float8", "", "FLOAT32", "int32",
                "all", "float64,float32"],
    "--dps": ["20", "25", "0", "-1", "19", "100001", "abc", "1e3", str(2**70)],
    "--impl": ["stable", "naive", "divfree", "scipy", "os:system", "nonexistent.module:f", ":",
               "a:b:c", "", "stable:", ":f", "os:path", "math:exp", "numpy:exp", "sys:exit",
               "builtins:len", "builtins:abs", "smcheck.impls:nope", "..:x", "\u00e9:\u00fc",
               "numpy.linalg:norm", "os.path:basename", " stable "],
    "--rtol": BAD_FLOATS, "--atol": BAD_FLOATS, "--max-ulp": BAD_FLOATS,
    "--top": ["0", "1", "10", "-1", str(10**9), "x"],
    "--engine": ["auto", "mpmath", "dd", "bogus", ""],
    "--workers": ["1", "2", "0", "-1", "many"],
    "--max-size": ["1", "2", "5", "16", "100", "100000000", "0", "-1", "1e9", "abc"],
    "--metric": ["scaled", "strict", "bogus", ""],
    "--fd": ["central", "richardson", "complex", "auto", "bogus", ""],
    "--max-dense": ["1", "2", "2048", "0", "-1"],
    "--seed": ["0", "7", "-1", str(2**64)],
    "--random": ["1", "3", "16", "0", "-1", str(10**15)],
    "--rows": ["1", "2", "4", "0", "-3", str(10**9)],
    "--scale": ["1", "1e308", "-5", "0", "nan", "inf", "1e-320"],
    "--preset": ["benign", "overflow", "masked", "fully-masked", "huge", "nosuchpreset", ""],
    "--claim": ["shift_invariance", "zero_condition", "bogus", ""],
    "--log": None, "--check": None, "--json": None, "--quiet": None,
}
SHARED = ["--dtype", "--dps", "--impl", "--rtol", "--atol", "--max-ulp", "--top", "--engine",
          "--workers", "--max-size", "--seed", "--random", "--rows", "--scale", "--preset",
          "--check", "--json", "--quiet"]
COMMAND_OPTIONS = {
    "forward": SHARED + ["--metric", "--log"],
    "jacobian": SHARED + ["--metric", "--log", "--fd", "--max-dense"],
    "vjp": SHARED + ["--fd"],
    "loss": SHARED + ["--fd"],
    "claims": ["--dps", "--seed", "--random", "--rows", "--scale", "--preset", "--claim",
               "--max-size", "--check", "--json", "--quiet"],
    "sweep": ["--impl", "--dtype", "--dps", "--seed", "--engine", "--check", "--json", "--quiet"],
    "presets": ["--json"],
}
#: how an error message may name an option besides its spelling (the value is accepted too)
SYNONYMS = {"--dtype": ["dtype"], "--impl": ["implementation"], "--preset": ["preset"],
            "--claim": ["claim"]}
INPUTS = [[], ["--x", "1,2,3"], ["--x", "0,0;1,-inf"], ["overflow"], ["3,2,1"],
          ["--preset", "one-hot"]]


@st.composite
def command_options(draw):
    cmd = draw(st.sampled_from(list(COMMAND_OPTIONS)))
    pool = COMMAND_OPTIONS[cmd]
    if draw(st.integers(0, 9)) == 0:  # now and then an option the command does not have
        pool = list(OPTION_VALUES)
    names = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4))
    opts = []
    for name in names:
        values = OPTION_VALUES[name]
        opts.append((name, None if values is None else draw(st.sampled_from(values))))
    return cmd, opts


@settings(max_examples=N_OPTIONS)
@given(case=command_options(), source=st.sampled_from(INPUTS))
@example(case=("forward", [("--random", str(10**15))]), source=[])
@example(case=("claims", [("--random", "16"), ("--rows", str(10**9))]), source=[])
@example(case=("forward", [("--max-size", "2")]), source=["--x", "1,2,3"])
@example(case=("loss", [("--max-size", "0")]), source=["overflow"])
@example(case=("jacobian", [("--impl", "os:system")]), source=["--x", "1,2,3"])
@example(case=("vjp", [("--impl", "a:b:c")]), source=["--x", "1,2,3"])
@example(case=("forward", [("--impl", ":")]), source=["--x", "1,2,3"])
@example(case=("forward", [("--dps", "0")]), source=["--x", "1,2,3"])
@example(case=("forward", [("--top", "-1")]), source=["--x", "1,2,3"])
@example(case=("sweep", [("--dtype", "float8")]), source=[])
def test_fuzz_options(case, source):
    """Random values (many of them wrong) for the options of every command."""
    cmd, opts = case
    argv = [cmd]
    if cmd in ("sweep", "presets"):
        source = []
    if cmd == "sweep":  # a full sweep takes seconds: small presets only
        argv += ["--preset", CHEAP_PRESETS[len(opts) % len(CHEAP_PRESETS)]]
    argv += source
    if cmd == "loss":
        argv += ["--t", "0,1,0"]
    if cmd not in ("presets",) and not any(n == "--dps" for n, _ in opts):
        argv += ["--dps", "20"]
    names = []
    for name, value in opts:
        argv += [name] if value is None else [name, value]
        names += [name, *SYNONYMS.get(name, [])] + ([value] if value and len(value) > 1 else [])
    r = run_cli(*argv)
    # an input of the wrong length for --t, or a source next to --x, is named by its input
    assert_contract(r, names=names + ["--t", "--x", "No such option", "exactly one source"],
                    json_out=any(n == "--json" for n, _ in opts))


# --- test 4: random argument lists --------------------------------------------------------------

#: values for random argument lists: small or refused sizes only (a --random 2048 --rows 2048
#: would be a real, slow run, and a --random 10^8 a real 800 MB one)
ARGV_VALUES = ["0", "1", "2", "3", "16", "-1", "20", "25", "19", "1e308", "nan", "inf", "abc",
               "", "float32", "bfloat16", "float8", "all", "stable", "naive", "os:system",
               "a:b:c", ":", "mpmath", "dd", "bogus", "strict", "central", "complex", "benign",
               "overflow", "masked", "nosuchpreset", str(10**15), "shift_invariance",
               "1,2,3", "1;2", "[1, 2]", "nan,inf", "-1,2", "0,1,0"]
ARGV_OPTIONS = list(OPTION_VALUES) + ["--x", "--x-file", "--v", "--v-file", "--t", "--t-file",
                                      "--z", "--z-file", "--junit", "--frob", "--metric"]
ARGV_WORDS = (["forward", "jacobian", "vjp", "loss", "claims", "sweep", "presets",
               "frobnicate", "--help", "-h", "--version", "-q", "-", "--", " ", "=",
               "--x=1,2", "--dps=25", "--top=-1"] + ARGV_OPTIONS + ARGV_VALUES
              + ["{good.npy}", "{junk.npy}", "{two.npz}", "{x.csv}", "{ragged.csv}",
                 "{obj.npy}", "{missing.npy}", "{dir}", "{out.xml}"])
ARGV_FILES = {"good.npy": npy_bytes(np.array([[1.0, 2.0, 3.0], [0.0, -np.inf, 1.0]])),
              "junk.npy": b"\x93NUMPY\x01\x00junk",
              "two.npz": npz_bytes({"a.npy": npy_bytes(np.ones(3)),
                                    "b.npy": npy_bytes(np.ones(2))}),
              "x.csv": b"1,2,3\n4,5,6\n", "ragged.csv": b"1,2,3\n4,5\n",
              "obj.npy": npy_bytes(np.array([1.0, "a"], dtype=object))}


@settings(max_examples=N_ARGV)
@given(words=st.lists(st.sampled_from(ARGV_WORDS), max_size=8),
       stdin=st.sampled_from(["", "1,2,3\n", "\x00junk", "1\n2,3"]))
@example(words=["sweep", "--junit", "{dir}"], stdin="")
@example(words=["forward", "--random", str(10**15), "--max-size", str(10**15)], stdin="")
@example(words=["loss", "--z", "1,2,3", "--t", "0,1"], stdin="")
def test_fuzz_argv(words, stdin):
    """Random argument lists from smcheck's own words, values and files (made afresh)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"dir": tmp, "missing.npy": os.path.join(tmp, "missing.npy"),
                 "out.xml": os.path.join(tmp, "out.xml")}
        for name, data in ARGV_FILES.items():
            paths[name] = os.path.join(tmp, name)
            with open(paths[name], "wb") as fh:
                fh.write(data)
        argv = [paths[w[1:-1]] if w.startswith("{") else w for w in words]
        if argv and argv[0] in COMMANDS + ["sweep"]:
            argv[1:1] = ["--dps=20"]  # a later --dps wins
        if argv and argv[0] == "sweep":  # a full sweep takes seconds: one small preset
            argv[1:1] = ["--preset", "benign"]
        r = run_cli(*argv, stdin=stdin)
        assert_contract(r)


def test_junit_path_that_is_a_directory_names_the_option(cli):
    """Found by fuzzing: the error said 'cannot write DIR' without naming --junit."""
    with tempfile.TemporaryDirectory() as tmp:
        r = cli("sweep", "--preset", "benign", "--junit", tmp)
        assert_contract(r, names=("--junit",))
        assert tmp in r.err and r.code == 2


def test_loss_z_alone_names_z_not_an_x_never_given(cli):
    """Found by fuzzing: --z 1,2,3 --t 0,1 said '--t has shape (2,) but x has shape (3,)'."""
    r = cli("loss", "--z", "0.2,0.3,0.5", "--t", "0,1")
    assert_contract(r, names=("--z",))
    assert "--t" in r.err and " x " not in r.err


def test_huge_random_with_a_raised_limit_is_an_input_error(cli):
    """Found by fuzzing: --random 10^15 with --max-size 10^15 ended in an internal MemoryError."""
    r = cli("forward", "--random", str(10**15), "--max-size", str(10**15))
    assert_contract(r, names=("--random",))


# --- test 5: .npy headers -----------------------------------------------------------------------

HEADER_FIELDS = {
    "descr": ["'<f8'", "'|O'", "'<c16'", "'bogus'", "[('a', '<f8')]", "'<U5'", "'<M8[D]'", "3",
              "'>f4'", "'<f2'"],
    "fortran_order": ["False", "True", "'x'", "0"],
    "shape": ["(3,)", "()", "(2, 3)", "(-1,)", "(1000000000000000000000000000000,)", "(3",
              "'a'", "(1.5,)", "(0,)", "(200000000,)", "(2, 2, 2)"],
}


@settings(max_examples=N_HEADERS)
@given(fields=st.fixed_dictionaries({k: st.sampled_from(v) for k, v in HEADER_FIELDS.items()}),
       drop=st.sampled_from([None, "descr", "shape"]), data=st.binary(max_size=48),
       version=st.sampled_from([b"\x01\x00", b"\x02\x00", b"\x03\x00", b"\x09\x00"]),
       max_size=st.sampled_from([None, "1", "100"]))
@example(fields={"descr": "'<f8'", "fortran_order": "False", "shape": "(200000000,)"},
         drop=None, data=b"", version=b"\x01\x00", max_size=None)
@example(fields={"descr": "'|O'", "fortran_order": "False", "shape": "(3,)"}, drop=None,
         data=b"\x80\x04N.", version=b"\x01\x00", max_size=None)
def test_fuzz_npy_headers(fields, drop, data, version, max_size):
    """Hand-made .npy headers: object dtypes, absurd shapes, bad syntax, every version."""
    body = "{" + "".join(f"'{k}': {v}, " for k, v in fields.items() if k != drop) + "}"
    header = body.encode("latin1") + b" \n"
    size = len(header).to_bytes(2 if version == b"\x01\x00" else 4, "little")
    blob = b"\x93NUMPY" + version + size + header + data
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "h.npy")
        with open(path, "wb") as fh:
            fh.write(blob)
        argv = ["forward", "--x-file", path, "--dps", "20", "--json"]
        r = run_cli(*argv, *(["--max-size", max_size] if max_size else []))
        assert_contract(r, names=("h.npy",), json_out=True)


def test_case_budget():
    """CI runs at least 2,000 fuzz cases: every @given test of this module runs with its budget
    N_* as its effective max_examples (its own @settings over the loaded profile; a test whose
    @settings was dropped or changed would run the profile's 60, or another number), the
    budgets add up, and the CI profile is derandomized (the same cases on every run)."""
    budgets = {"test_fuzz_input_files": N_FILES, "test_fuzz_text_inputs": N_TEXT,
               "test_fuzz_options": N_OPTIONS, "test_fuzz_argv": N_ARGV,
               "test_fuzz_npy_headers": N_HEADERS}
    given_tests = {name: f for name, f in globals().items()
                   if name.startswith("test_") and hasattr(f, "hypothesis")}
    assert set(given_tests) == set(budgets)
    # the settings hypothesis runs each test with (its pytest plugin reads the same attribute)
    effective = {name: f._hypothesis_internal_use_settings for name, f in given_tests.items()}
    assert {name: s.max_examples for name, s in effective.items()} == budgets
    assert sum(budgets.values()) >= 2000 * _SCALE
    if os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci":
        assert all(s.derandomize for s in effective.values())


# --- end to end: python -m smcheck in a subprocess ----------------------------------------------

def _e2e_files(tmp: Path) -> dict:
    (tmp / "trunc.npy").write_bytes(TRUNCATED_NPY[1])
    (tmp / "obj.npy").write_bytes(npy_bytes(np.array([1.0, "a", None], dtype=object)))
    (tmp / "junk.json").write_bytes(b"\xff\xfe\x00junk")
    (tmp / "ragged.csv").write_text("1,2,3\n4,5\n")
    (tmp / "raw.npz").write_bytes(RAW_MEMBER_NPZ[1])
    return {k: str(tmp / k) for k in ("trunc.npy", "obj.npy", "junk.json", "ragged.csv",
                                      "raw.npz")}


E2E = [
    (["forward", "--x-file", "{trunc.npy}"], "trunc.npy"),
    (["vjp", "--x", "1,2,3", "--v-file", "{obj.npy}"], "pickle"),
    (["loss", "--x", "1,2", "--t-file", "{junk.json}"], "junk.json"),
    (["jacobian", "{ragged.csv}"], "ragged.csv"),
    (["claims", "--x-file", "{raw.npz}"], "raw.npz"),
    (["forward", "--random", str(10**15)], "--max-size"),
    (["forward", "--x", "1,2", "--impl", "nonexistent.module:f"], "nonexistent.module"),
    (["sweep", "--preset", "nosuchpreset"], "nosuchpreset"),
]


@pytest.mark.parametrize("argv, needle", E2E, ids=[" ".join(a[:2]) for a, _ in E2E])
def test_python_m_smcheck_errors_have_no_traceback(tmp_path, argv, needle):
    files = _e2e_files(tmp_path)
    argv = [files[a[1:-1]] if a.startswith("{") else a for a in argv]
    p = subprocess.run([sys.executable, "-m", "smcheck", *argv], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120,
                       env={k: v for k, v in os.environ.items() if k != "SMCHECK_DEBUG"})
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stdout + p.stderr
    assert p.stdout == ""
    assert p.stderr.startswith("error: ") and p.stderr.count("\n") == 1, p.stderr
    assert needle in p.stderr, p.stderr


def test_python_m_smcheck_undefined_rows_and_huge_numbers_run():
    p = subprocess.run([sys.executable, "-m", "smcheck", "forward", "--x",
                        "1e308,-1e308,0;nan,1,2;-inf,-inf,-inf", "--json", "--check"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr  # row 0 is defined and passes: rows 1, 2 do not decide
    assert "Traceback" not in p.stderr
    doc = json.loads(p.stdout)
    assert [u["row"] for u in doc["undefined_rows"]] == [1, 2]
