"""What smcheck must never do: unpickle a file, import code the user did not name, or write a
file the user did not ask for; and ``--help`` must not load the numerical stack.

The CLI runs in-process through ``smcheck.cli.main`` (see tests/test_fuzz_cli.py), a few checks
in a fresh ``python -m smcheck`` process.
"""

from __future__ import annotations

import io
import math
import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from clirunner import Result

from smcheck import inputs
from smcheck.exceptions import InputError


REPO = Path(__file__).resolve().parents[1]


def assert_error(r: Result, *words) -> None:
    assert r.code == 2, (r.code, r.out, r.err)
    assert r.err.startswith("error: ") and r.err.count("\n") == 1, r.err
    assert "Traceback" not in r.err and "internal error" not in r.err, r.err
    for w in words:
        assert w in r.err, (w, r.err)


# --- files are never unpickled ------------------------------------------------------------------

class Payload:
    """Unpickling this creates ``path`` (a harmless stand-in for running any code)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _object_array(marker) -> np.ndarray:
    return np.array([1.0, Payload(marker), None], dtype=object)


def _pickled_files(tmp_path: Path, marker: Path) -> dict[str, str]:
    """Files that carry a pickle, each a way numpy (with allow_pickle=True) would run it."""
    d = tmp_path / "in"
    d.mkdir()
    np.save(d / "obj.npy", _object_array(marker), allow_pickle=True)
    np.savez(d / "obj.npz", x=_object_array(marker))
    np.savez(d / "mixed.npz", good=np.ones(3), bad=_object_array(marker))
    (d / "raw.npy").write_bytes(pickle.dumps(Payload(marker)))  # a bare pickle
    (d / "raw.json").write_bytes(pickle.dumps(Payload(marker)))
    return {"obj.npy": str(d / "obj.npy"), "obj.npz": str(d / "obj.npz"),
            "mixed.npz:bad": str(d / "mixed.npz") + ":bad", "raw.npy": str(d / "raw.npy"),
            "raw.json": str(d / "raw.json")}


def test_the_payload_would_run_if_unpickled(tmp_path):
    """The control: numpy with allow_pickle=True does run it, so the tests below mean something."""
    marker = tmp_path / "control-marker"
    np.save(tmp_path / "obj.npy", _object_array(marker), allow_pickle=True)
    np.load(tmp_path / "obj.npy", allow_pickle=True)
    assert marker.exists()


@pytest.mark.parametrize("name", ["obj.npy", "obj.npz", "mixed.npz:bad", "raw.npy", "raw.json"])
@pytest.mark.parametrize("slot", ["x", "positional", "v", "t", "z"])
def test_pickled_files_are_refused_and_not_executed(cli, tmp_path, name, slot):
    marker = tmp_path / "marker"
    spec = _pickled_files(tmp_path, marker)[name]
    argv = {"x": ["forward", "--x-file", spec], "positional": ["jacobian", spec],
            "v": ["vjp", "--x", "1,2,3", "--v-file", spec],
            "t": ["loss", "--x", "1,2,3", "--t-file", spec],
            "z": ["loss", "--z-file", spec, "--t", "0,1,0"]}[slot]
    r = cli(*argv, "--json")
    assert_error(r, os.path.basename(spec.split(":")[0]))
    if name.startswith("obj") or name.startswith("mixed"):
        assert "pickle" in r.err
    assert not marker.exists(), "smcheck unpickled a file"


def test_claims_refuses_a_pickled_v_file(cli, tmp_path):
    marker = tmp_path / "marker"
    spec = _pickled_files(tmp_path, marker)["obj.npy"]
    assert_error(cli("claims", "--x", "1,2,3", "--v-file", spec), "obj.npy", "pickle")
    assert not marker.exists()


def test_a_pickled_array_in_an_npz_is_refused_without_reading_its_data(cli, tmp_path, monkeypatch):
    """The object dtype is seen in the member's header: numpy's reader is never called."""
    marker = tmp_path / "marker"
    spec = _pickled_files(tmp_path, marker)["obj.npz"]

    def refuse(*a, **k):
        raise AssertionError("the array data was read")

    monkeypatch.setattr(np.lib.format, "read_array", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    assert_error(cli("forward", "--x-file", spec), "pickle")
    assert not marker.exists()


# --- --impl imports only the module the user named ----------------------------------------------

def _plain(text: str) -> str:
    """Help text without rich's box drawing and line breaks."""
    return " ".join(re.sub(r"[\u2500-\u257f]", " ", text).split())


@pytest.mark.parametrize("command", ["forward", "jacobian", "vjp", "loss", "sweep"])
def test_help_says_impl_imports_only_the_named_module(cli, command):
    r = cli(command, "--help")
    assert r.code == 0
    text = _plain(r.out)
    assert "--impl" in text
    assert "module.path:function" in text
    assert "imports only that module" in text and "never other code" in text, text


USER_MODULE = """
import numpy as np

def softmax(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()

def log_softmax(x):
    return np.log(softmax(x))

def jac(x):
    s = softmax(x)
    return np.diag(s) - np.outer(s, s)

def vjp(x, v):
    s = softmax(x)
    v = np.asarray(v, dtype=np.float64)
    return s * (v - v @ s)

def grad(z, t):
    return -np.asarray(t, dtype=np.float64) / np.asarray(z, dtype=np.float64)
"""
#: a module that leaves a file behind when it is imported
TRAP = "open({marker!r}, 'w').close()\n"


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A cwd holding the user's module and trap modules; sys.path and sys.modules restored."""
    d = tmp_path / "work"
    d.mkdir()
    (d / "usermod.py").write_text(USER_MODULE)
    traps = {}
    for name in ("sibling", "stable", "naive", "divfree", "usermod_helpers", "conftest",
                 "sitecustomize", "smcheck_plugin"):
        marker = tmp_path / f"imported-{name}"
        (d / f"{name}.py").write_text(TRAP.format(marker=str(marker)))
        traps[name] = marker
    monkeypatch.chdir(d)
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_callable may add the cwd
    before = set(sys.modules)
    yield d, traps
    for name in set(sys.modules) - before:
        mod = sys.modules.get(name)
        if getattr(mod, "__file__", None) and str(d) in str(mod.__file__):
            del sys.modules[name]


def _modules_from(directory: Path) -> set[str]:
    return {name for name, mod in list(sys.modules.items())
            if getattr(mod, "__file__", None) and str(directory) in str(mod.__file__)}


@pytest.mark.parametrize("command, func", [
    (["forward"], "softmax"), (["forward", "--log"], "log_softmax"), (["jacobian"], "jac"),
    (["vjp"], "vjp"), (["loss", "--t", "0,1,0"], "grad"),
])
def test_user_impl_imports_just_that_module(cli, user_dir, command, func):
    d, traps = user_dir
    r = cli(*command, "--x", "1,2,3", "--impl", f"usermod:{func}", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["impl"] == f"usermod:{func}"
    assert _modules_from(d) == {"usermod"}
    assert not any(m.exists() for m in traps.values()), [n for n, m in traps.items()
                                                         if m.exists()]


@pytest.mark.parametrize("impl", ["stable", "naive", "divfree"])
@pytest.mark.parametrize("command", [["forward"], ["jacobian"], ["vjp"],
                                     ["loss", "--t", "0,1,0"]])
def test_builtin_impl_imports_no_user_module(cli, user_dir, impl, command):
    d, traps = user_dir
    r = cli(*command, "--x", "1,2,3", "--impl", impl, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["impl"] == impl
    assert _modules_from(d) == set()
    assert not any(m.exists() for m in traps.values())


def test_sweep_with_a_builtin_imports_no_user_module(cli, user_dir):
    d, traps = user_dir
    r = cli("sweep", "--preset", "benign", "--impl", "naive", "--json")
    assert r.code == 0, r.err
    assert _modules_from(d) == set()
    assert not any(m.exists() for m in traps.values())


def test_user_impl_missing_function_imports_only_that_module(cli, user_dir):
    d, traps = user_dir
    assert_error(cli("forward", "--x", "1,2", "--impl", "usermod:nope"), "usermod", "nope")
    assert _modules_from(d) == {"usermod"}
    assert not any(m.exists() for m in traps.values())


def test_python_m_smcheck_builtin_impl_imports_nothing_from_cwd(tmp_path):
    """In a real process (where ``python -m`` puts the cwd on sys.path) trap modules named
    like the built-ins stay unimported."""
    traps = {}
    for name in ("stable", "naive", "divfree", "sibling"):
        traps[name] = tmp_path / f"imported-{name}"
        (tmp_path / f"{name}.py").write_text(TRAP.format(marker=str(traps[name])))
    for impl in ("stable", "naive", "divfree"):
        p = subprocess.run([sys.executable, "-m", "smcheck", "forward", "--x", "1,2,3",
                            "--impl", impl, "--json"], capture_output=True, text=True,
                           cwd=tmp_path, timeout=120)
        assert p.returncode == 0, p.stderr
    assert not any(m.exists() for m in traps.values())


# --- nothing is written but what was asked for --------------------------------------------------

def _tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else b"")
            for p in sorted(directory.rglob("*"))}


@pytest.fixture
def clean_cwd(tmp_path, monkeypatch):
    """An empty cwd, and input files in a directory of their own."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    np.save(inputs / "x.npy", np.array([[1.0, 2.0, 3.0], [0.5, -np.inf, 2.0]]))
    (inputs / "v.csv").write_text("1,0,2\n")
    (inputs / "t.json").write_text("[0, 1, 0]")
    np.savez(inputs / "z.npz", z=np.array([0.2, 0.3, 0.5]))
    monkeypatch.chdir(cwd)
    return cwd, inputs


COMMANDS = {
    "forward": ["forward", "--x-file", "{in}/x.npy"],
    "forward-log": ["forward", "{in}/x.npy", "--log"],
    "jacobian": ["jacobian", "--x-file", "{in}/x.npy"],
    "vjp": ["vjp", "--x-file", "{in}/x.npy", "--v-file", "{in}/v.csv"],
    "loss": ["loss", "--x-file", "{in}/x.npy", "--t-file", "{in}/t.json"],
    "loss-z": ["loss", "--z-file", "{in}/z.npz", "--t-file", "{in}/t.json"],
    "claims": ["claims", "--x-file", "{in}/x.npy", "--v-file", "{in}/v.csv"],
    "presets": ["presets"],
    "sweep": ["sweep", "--preset", "benign", "--preset", "masked", "--dtype", "all"],
}


@pytest.mark.parametrize("output", [["--json"], [], ["--quiet", "--check"]])
@pytest.mark.parametrize("name", list(COMMANDS))
def test_commands_write_no_file(cli, clean_cwd, name, output):
    cwd, inputs = clean_cwd
    before = _tree(inputs)
    argv = [a.replace("{in}", str(inputs)) for a in COMMANDS[name]]
    if name == "presets":
        output = [o for o in output if o == "--json"]
    r = cli(*argv, *output)
    # the built-in impl passes on these inputs; loss --check exits 3: t = 1 at the masked entry
    # of x's second row (an input condition); without --check every run exits 0
    assert r.code == (3 if name == "loss" and "--check" in output else 0), r.err
    assert _tree(cwd) == {}, "a file appeared in the working directory"
    assert _tree(inputs) == before, "the input directory changed"


@pytest.mark.parametrize("name", ["forward", "vjp", "sweep"])
def test_python_m_smcheck_writes_no_file(clean_cwd, name):
    cwd, inputs = clean_cwd
    before = _tree(inputs)
    argv = [a.replace("{in}", str(inputs)) for a in COMMANDS[name]]
    p = subprocess.run([sys.executable, "-m", "smcheck", *argv, "--json"], capture_output=True,
                       text=True, cwd=cwd, timeout=120)
    assert p.returncode == 0, p.stderr  # without --check: 0 whatever the verdict
    json.loads(p.stdout)
    assert _tree(cwd) == {}
    assert _tree(inputs) == before


def test_errors_write_no_file(cli, clean_cwd):
    cwd, inputs = clean_cwd
    before = _tree(inputs)
    assert_error(cli("sweep", "--preset", "nosuch", "--junit", "out.xml"), "nosuch")
    assert_error(cli("forward", "--x", "1,abc", "--plot", "p.png"), "abc")
    assert _tree(cwd) == {} and _tree(inputs) == before


def test_junit_writes_only_the_named_path(cli, clean_cwd):
    cwd, inputs = clean_cwd
    before = _tree(inputs)
    out = cwd / "reports" / "junit.xml"
    out.parent.mkdir()
    r = cli("sweep", "--preset", "benign", "--junit", out, "--json")
    assert r.code == 0, r.err  # without --check: 0 whatever the verdict
    assert set(_tree(cwd)) == {"reports", "reports/junit.xml"}
    assert out.read_text().lstrip().startswith("<?xml")
    assert _tree(inputs) == before


def test_junit_to_a_missing_directory_is_an_error_naming_the_option(cli, clean_cwd):
    cwd, _ = clean_cwd
    assert_error(cli("sweep", "--preset", "benign", "--junit", cwd / "no" / "j.xml"),
                 "--junit", "j.xml")
    assert _tree(cwd) == {}


@pytest.mark.parametrize("argv", [
    ["forward", "--x-file", "{in}/x.npy", "--plot", "{out}"],
    ["sweep", "--preset", "benign", "--plot", "{out}"],
])
def test_plot_writes_only_the_named_path(cli, clean_cwd, argv):
    pytest.importorskip("matplotlib")
    cwd, inputs = clean_cwd
    before = _tree(inputs)
    out = cwd / "figs" / "plot.png"
    out.parent.mkdir()
    argv = [a.replace("{in}", str(inputs)).replace("{out}", str(out)) for a in argv]
    r = cli(*argv, "--json")
    assert r.code == 0, r.err  # without --check: 0 whatever the verdict
    assert set(_tree(cwd)) == {"figs", "figs/plot.png"}
    assert out.read_bytes().startswith(b"\x89PNG")
    assert _tree(inputs) == before


# --- --help loads nothing heavy -----------------------------------------------------------------

def test_command_help_does_not_import_heavy_modules():
    """``smcheck --help`` is covered in test_cli.py; here every command's own --help."""
    script = textwrap.dedent("""
        import json, sys
        from smcheck.cli import main
        seen = {}
        for argv in (["forward", "--help"], ["jacobian", "--help"], ["vjp", "--help"],
                     ["loss", "--help"], ["claims", "--help"], ["sweep", "--help"],
                     ["presets", "--help"], ["--help"]):
            try:
                main(argv)
            except SystemExit as exc:
                assert exc.code in (0, None), (argv, exc.code)
            seen[" ".join(argv)] = [m for m in ("numpy", "mpmath", "torch", "jax", "scipy")
                                    if m in sys.modules]
        print("@@" + json.dumps(seen))
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    seen = json.loads(p.stdout.rsplit("@@", 1)[1])
    assert seen == {k: [] for k in seen}, seen


# --- the input size limit (--max-size) ----------------------------------------------------------

def test_max_size_default_is_the_documented_one():
    from smcheck import cli, inputs

    assert cli.MAX_SIZE == inputs.DEFAULT_MAX_SIZE == 10**8
    # the real workloads fit: a 2000 x 4096 batch, a vocabulary of 10^6
    inputs.check_size("--x", inputs.DEFAULT_MAX_SIZE, count=2000 * 4096)
    inputs.check_size("--x", inputs.DEFAULT_MAX_SIZE, count=10**6)
    inputs.check_size("--x-file", inputs.DEFAULT_MAX_SIZE, text=len("-1.2345678901234567e-300,")
                      * 2000 * 4096)


@pytest.mark.parametrize("command", ["forward", "jacobian", "vjp", "loss", "claims"])
def test_every_input_command_has_max_size_in_its_help(cli, command):
    text = _plain(cli(command, "--help").out)
    assert "--max-size" in text and "100000000" in text, text


def _limit_error(r: Result, *words) -> None:
    assert_error(r, "--max-size", *words)


def test_over_the_limit_is_refused_from_every_source(cli, tmp_path, monkeypatch):
    np.save(tmp_path / "x.npy", np.arange(12.0).reshape(3, 4))
    np.savez(tmp_path / "x.npz", x=np.arange(12.0))
    (tmp_path / "x.csv").write_text("1,2,3,4\n5,6,7,8\n")
    (tmp_path / "x.json").write_text("[[1, 2, 3, 4], [5, 6, 7, 8]]")
    cases = [
        (["--x", "1,2,3;4,5,6"], "6 numbers"),
        (["--x", "[1, 2, 3, 4, 5, 6]"], "6 numbers"),
        (["--x-file", tmp_path / "x.npy"], "12 numbers"),
        ([tmp_path / "x.npy"], "12 numbers"),
        (["--x-file", tmp_path / "x.npz"], "12 numbers"),
        (["--x-file", tmp_path / "x.csv"], "8 numbers"),
        (["--x-file", tmp_path / "x.json"], "8 numbers"),
        (["--random", "3", "--rows", "2"], "6 numbers"),
        (["--preset", "large-n"], "100,000 numbers"),
    ]
    for argv, size in cases:
        r = cli("forward", *argv, "--max-size", "5")
        _limit_error(r, size, "limit of 5")
        # within the limit (large-n: exactly 100,000 numbers) each runs; without --check: 0
        ok = cli("forward", *argv, "--max-size", "100000", "--json")
        assert ok.code == 0, (argv, ok.err)


def test_text_over_the_limit_is_refused_by_its_length_before_parsing(cli, tmp_path, monkeypatch):
    from smcheck import inputs

    def refuse(*a, **k):
        raise AssertionError("parsed anyway")

    monkeypatch.setattr(inputs, "_parse_rows", refuse)
    monkeypatch.setattr(inputs, "_json_loads", refuse)
    (tmp_path / "x.txt").write_text("1 " * 40)  # 80 bytes > 32 x 2
    _limit_error(cli("forward", "--x-file", tmp_path / "x.txt", "--max-size", "2"),
                 "80 bytes", "limit of 64")
    _limit_error(cli("forward", "--x", "1," * 40, "--max-size", "2"), "80 characters")


def test_stdin_over_the_limit_is_refused(cli):
    _limit_error(cli("forward", "-", "--max-size", "10", stdin="1 2 3 4 5 6\n" * 1000), "stdin",
                 "characters")
    _limit_error(cli("forward", "-", "--max-size", "5", stdin="1 2 3 4 5 6\n"), "6 numbers")


def _sparse_npy(path, shape) -> None:
    """A .npy whose header claims ``shape`` of float64, its data a sparse hole (no disk)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": shape})
    with open(path, "wb") as fh:
        fh.write(header.getvalue())
        fh.truncate(len(header.getvalue()) + 8 * math.prod(shape))


def test_npy_over_the_limit_is_refused_from_its_header_alone(cli, tmp_path, monkeypatch):
    """Only the header is read: a file claiming rows of 10^9 float64 with its data all there
    would be 8 GB, so a header plus a sparse file stands in for it. A large 2-D .npy streams
    (memory-mapped, a chunk of rows at a time): --max-size limits the length of its rows."""
    path = tmp_path / "huge.npy"
    _sparse_npy(path, (1, 10**9))
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("the data was read"))
    monkeypatch.setattr(np.lib.format, "open_memmap", lambda *a, **k: pytest.fail("mapped"))
    r = cli("forward", "--x-file", path)
    _limit_error(r, "huge.npy", "rows of 1,000,000,000 numbers", "limit of 100,000,000")


def test_streamed_npy_is_limited_in_its_rows_not_its_total(tmp_path):
    """10^9 numbers in rows of 10^4 stream under the default limit (nothing read yet); the
    same file read whole (along --axis 0) is refused by its total, before it is read."""
    path = tmp_path / "huge.npy"
    _sparse_npy(path, (10**5, 10**4))
    x = inputs.load_file(str(path))
    assert x.shape == (10**5, 10**4) and x.size == 10**9
    assert inputs.load_file(str(path), max_size=10**4).shape == (10**5, 10**4)
    with pytest.raises(InputError, match="rows of 10,000 numbers, more than the limit of 9,999"):
        inputs.load_file(str(path), max_size=10**4 - 1)
    with pytest.raises(InputError, match="read whole.*1,000,000,000 numbers"):
        np.asarray(x)


@pytest.mark.parametrize("argv, name", [
    (["vjp", "--x", "1,2", "--v", "1,2,3"], "--v"),
    (["loss", "--x", "1,2", "--t", "0,1,0"], "--t"),
    (["loss", "--z", "0.2,0.3,0.5", "--t", "0,1"], "--z"),
    (["claims", "--x", "1,2", "--v", "1,2,3"], "--v"),
])
def test_companions_over_the_limit_are_refused(cli, argv, name):
    _limit_error(cli(*argv, "--max-size", "2"), name, "3 numbers")


@pytest.mark.parametrize("value", ["0", "-1"])
def test_max_size_must_be_positive(cli, value):
    assert_error(cli("forward", "--preset", "benign", "--max-size", value), "--max-size")


def test_sweep_and_presets_take_no_max_size(cli):
    assert_error(cli("sweep", "--max-size", "5"), "--max-size")
    assert_error(cli("presets", "--max-size", "5"), "--max-size")


def test_python_m_smcheck_ignores_framework_files_in_the_current_directory(tmp_path):
    """`python -m smcheck` puts the current directory first on sys.path: a numpy.py, typer.py,
    mpmath.py or scipy.py there must not be imported in place of the real package, while
    `--impl module:function` still finds the user's module there."""
    (tmp_path / "usermod.py").write_text(USER_MODULE)
    markers = {}
    for name in ("numpy", "typer", "mpmath", "scipy", "rich", "ml_dtypes"):
        markers[name] = tmp_path / f"imported-{name}"
        (tmp_path / f"{name}.py").write_text(TRAP.format(marker=str(markers[name])))
    runs = [["forward", "--x", "1,2,3", "--check"],
            ["forward", "--x", "1,2,3", "--impl", "scipy", "--check"],
            ["forward", "--x", "1,2,3", "--impl", "usermod:softmax", "--check"],
            ["forward", "--x", "1,2,3", "--check"]]  # the table: rich
    for args in runs:
        p = subprocess.run([sys.executable, "-m", "smcheck", *args], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
        if "--impl" in args and "scipy" in args and "No module named 'scipy" in p.stderr:
            continue  # scipy not installed: nothing to shadow
        assert p.returncode == 0, (args, p.stderr)
    assert [name for name, m in markers.items() if m.exists()] == []
