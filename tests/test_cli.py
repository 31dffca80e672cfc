"""The command line through its real entry point: ``smcheck.cli.main(argv)`` in-process (exit
status first, then stdout/stderr), and a few runs of ``python -m smcheck`` in a subprocess to
prove the installed entry point works (each costs about half a second, so they are few).

The contract under test is /work/shared/SPEC.md: exit status 0/1/2, one ``error:`` line on
stderr and never a traceback, the JSON keys, the forward check names, non-finite numbers as
strings, undefined rows reported rather than fatal, and user callables.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from clirunner import Result, strict_json

import smcheck
from smcheck import cli
from smcheck.presets import PRESETS

REPO = Path(__file__).resolve().parents[1]
DTYPES = ["float64", "float32", "float16", "bfloat16"]
FORWARD_CHECKS = ["reference", "normalization", "shift_invariance", "finite"]
CHECK_KEYS = ["name", "passed", "max_abs_err", "max_rel_err", "max_ulp", "tolerance", "worst"]
TOP_KEYS = ["smcheck", "command", "impl", "dtype", "dps", "shape", "passed", "checks",
            "undefined_rows", "overflow"]
OVERFLOW_KEYS = ["log_realmax", "log_min_subnormal", "overflow_indices", "every_exp_underflows"]
# large-n (100,000 entries) takes ~13 s of mpmath reference work: it is run once, below.
FAST_PRESETS = [name for name in PRESETS if name != "large-n"]


# --- helpers ------------------------------------------------------------------------------------

# smcheck ARGV in this process: the ``cli`` fixture (tests/conftest.py, tests/clirunner.py)

def run_json(cli, *argv, stdin: str = "") -> tuple[Result, dict]:
    """``cli(*argv, "--json")``: without --check the exit status is 0 whatever the verdict;
    with it 0, 1 or 3 (the caller asserts which), never 2."""
    r = cli(*argv, "--json", stdin=stdin)
    if "--check" in argv:
        assert r.code in (0, 1, 3), r.err
    else:
        assert r.code == 0, r.err
    assert r.err == ""
    return r, r.json()


def check(doc: dict, name: str) -> dict:
    matches = [c for c in doc["checks"] if c["name"] == name]
    assert len(matches) == 1, [c["name"] for c in doc["checks"]]
    return matches[0]


def assert_usage_error(r: Result, *words: str) -> None:
    """Exit 2, nothing on stdout, exactly one ``error:`` line on stderr naming ``words``."""
    assert r.code == 2, (r.code, r.out, r.err)
    assert "Traceback" not in r.out + r.err
    assert r.out == ""
    assert r.err.startswith("error: "), r.err
    assert r.err.endswith("\n") and r.err.count("\n") == 1, repr(r.err)
    assert "internal error" not in r.err, r.err
    for w in words:
        assert w in r.err, (w, r.err)


def finfo(dtype: str):
    return ml_dtypes.finfo(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.finfo(dtype)


def python_m_smcheck(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smcheck", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=120, **kwargs)


# --- version and help ---------------------------------------------------------------------------

def test_version(cli):
    r = cli("--version")
    assert r.code == 0
    assert r.out == f"smcheck {smcheck.__version__}\n"
    assert r.err == ""


@pytest.mark.parametrize("argv, shows", [
    (["--help"], "forward"), (["-h"], "presets"), (["forward", "--help"], "--impl"),
    (["presets", "--help"], "--json"),
])
def test_help_exits_0(cli, argv, shows):
    r = cli(*argv)
    assert r.code == 0
    assert shows in r.out
    assert r.err == ""


def test_no_arguments_shows_help_and_exits_0(cli):
    r = cli()
    assert r.code == 0
    assert "forward" in r.out


def test_python_m_smcheck_version():  # subprocess: the module entry point
    p = python_m_smcheck("--version")
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"smcheck {smcheck.__version__}\n"


HEAVY = ("mpmath", "torch", "jax", "numpy", "rich")


@pytest.mark.parametrize("argv", [["--help"], ["forward", "--help"], ["--version"], [],
                                  ["--show-completion", "bash"]])
def test_help_does_not_import_heavy_modules(argv):  # subprocess: a fresh interpreter
    script = textwrap.dedent(f"""
        import json, sys
        from smcheck.cli import main
        try:
            main({argv!r})
        except SystemExit as exc:
            code = exc.code
        print("@@" + json.dumps({{"code": code, "loaded": {{
            m: m in sys.modules for m in {HEAVY!r}}}}}))
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout.rsplit("@@", 1)[1])
    assert info["code"] in (0, None)
    assert info["loaded"] == {m: False for m in HEAVY}


#: what only some runs use, imported where they use it (a beside check's threads, a Dask
#: cluster's logs and mapped files, a corrupt .npz, a callable given by file)
ONLY_SOME = ("concurrent.futures", "logging", "zipfile", "hashlib", "mmap")


def test_a_forward_run_imports_only_what_it_uses(tmp_path):  # subprocess: a fresh interpreter
    """A one-row forward over 10^4 float32 logits in a .npy (the CHANGELOG's start-up entry):
    none of ONLY_SOME is loaded; the control: the run itself was. (A float64 row short enough
    for the mpmath engine loads zipfile through gmpy2's importlib.metadata.)"""
    np.save(tmp_path / "x.npy", np.linspace(-3, 3, 10 ** 4, dtype=np.float32)[None])
    script = textwrap.dedent(f"""
        import json, sys
        from smcheck.cli import main
        try:
            main(["forward", "--x-file", {str(tmp_path / "x.npy")!r}, "--dtype", "float32",
                  "--json"])
        except SystemExit as exc:
            code = exc.code
        print("@@" + json.dumps({{"code": code, "loaded": sorted(sys.modules)}}))
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout.rsplit("@@", 1)[1])
    loaded = set(info["loaded"])
    assert info["code"] in (0, None) and {"smcheck.run", "smcheck.checks.forward"} <= loaded
    assert loaded.isdisjoint(ONLY_SOME), sorted(loaded & set(ONLY_SOME))


def test_command_help_groups_options_under_their_panels(cli):
    out = cli("forward", "--help").out
    heads = [line for line in out.splitlines() if line and not line[0].isspace()]
    assert heads == ["Usage: smcheck forward [OPTIONS] [input]", "Arguments:",
                     "Input (exactly one source for x):", "Options:", "Common options:"]
    common = out.split("Common options:")[1]
    assert "--dtype" in common and "--x-file" not in common
    assert "--x-file" in out.split("Input (exactly one source for x):")[1].split("Options:")[0]


def test_root_help_lists_every_command_whole(cli):
    out = cli("--help").out
    listed = out.split("Commands:")[1]
    for name in smcheck.cli.app.registered_commands:
        assert f"  {name.callback.__name__}  " in listed
    assert "..." not in listed  # each command's line is its short help, not a cut sentence


@pytest.mark.parametrize("argv", [
    ["forward", "--help"], ["vjp", "--bogus"], ["loss", "--x"], ["presets", "--json", "x"],
    ["jacobian", "--x", "1,2", "--dtype", "float8"], ["claims", "--dps", "abc"],
])
def test_one_command_app_parses_as_the_whole_app(cli, monkeypatch, argv):
    """main() builds only the named command: its output is the whole app's, word for word."""
    one = cli(*argv)
    monkeypatch.setattr(smcheck.cli, "_app_for", lambda args: smcheck.cli.app)
    whole = cli(*argv)
    assert (one.code, one.out, one.err) == (whole.code, whole.out, whole.err)


def test_app_for_keeps_the_whole_app_unless_a_command_is_named():
    assert cli._app_for(["--help"]) is cli.app
    assert cli._app_for(["frobnicate", "--x", "1"]) is cli.app
    assert cli._app_for([]) is cli.app
    one = cli._app_for(["--version", "vjp", "--x", "1,2"])
    assert [c.callback.__name__ for c in one.registered_commands] == ["vjp"]
    assert len(cli.app.registered_commands) == 8  # the app itself is untouched


@pytest.mark.parametrize("args, code", [
    (["--version"], 0), (["forward", "--x", "1,2,3", "--check"], 0),
    (["forward", "--x", "1000,999,990", "--impl", "naive", "--check"], 1),
    (["forward", "--x", "abc"], 2), (["frobnicate"], 2),
])
def test_program_exit_status_and_flushed_output(args, code):
    """``python -m smcheck`` runs entry(): main's status, all of its output, no traceback."""
    p = python_m_smcheck(*args)
    assert p.returncode == code, p.stderr
    assert "Traceback" not in p.stderr
    if code == 2:
        assert p.stderr.startswith("error: ") and p.stderr.count("\n") == 1
    else:
        assert p.stdout.strip() and p.stderr == ""


def test_program_output_piped_in_full():
    """A large JSON document reaches the pipe whole although the process exits at once."""
    p = python_m_smcheck("forward", "--random", "3000", "--json")
    assert p.returncode == 0, p.stderr
    assert len(p.stdout) > 65536  # more than a pipe's buffer and Python's
    doc = json.loads(p.stdout)
    assert len(doc["result"][0]) == 3000  # one row, as shape [1, 3000]


def test_program_into_a_closed_pipe_is_quiet():
    """smcheck ... | head, the reader gone before smcheck writes: it stops with a non-zero
    status (click's convention for a closed pipe) and says nothing more, no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "smcheck", "forward", "--random", "4000",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) != 0
    assert err == ""


# --- the overflow example -----------------------------------------------------------------------

def test_naive_overflow_fails_and_names_the_threshold(cli):
    r = cli("forward", "--x", "1000,999,990", "--impl", "naive", "--check")
    assert r.code == 1
    assert "overflow" in r.out
    assert "709.78" in r.out
    assert "Traceback" not in r.out + r.err


def test_stable_overflow_passes(cli):
    r = cli("forward", "--x", "1000,999,990", "--impl", "stable", "--check")
    assert r.code == 0, r.out
    assert "overflow" in r.out  # the naive-formula thresholds are still reported


def test_check_off_exits_0_even_when_checks_fail(cli):
    r = cli("forward", "--x", "1000,999,990", "--impl", "naive")
    assert r.code == 0


# --- JSON ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_json_document(cli, dtype):
    r, doc = run_json(cli, "forward", "--preset", "overflow", "--impl", "naive", "--dtype",
                      dtype)
    assert r.code == 0  # no --check
    for key in TOP_KEYS + ["result"]:
        assert key in doc, key
    assert doc["smcheck"] == smcheck.__version__
    assert doc["command"] == "forward"
    assert doc["impl"] == "naive"
    assert doc["dtype"] == dtype
    assert doc["dps"] == 50
    assert doc["shape"] == [1, 3]
    assert doc["passed"] is False
    assert doc["undefined_rows"] == []
    assert [c["name"] for c in doc["checks"]] == FORWARD_CHECKS
    for c in doc["checks"]:
        for key in CHECK_KEYS:
            assert key in c, (c["name"], key)
        assert isinstance(c["passed"], bool)
        assert isinstance(c["tolerance"], dict)
    assert doc["passed"] == all(c["passed"] for c in doc["checks"])
    # overflow block: thresholds computed here independently from the format's limits
    ov = doc["overflow"]
    for key in OVERFLOW_KEYS:
        assert key in ov, key
    fi = finfo(dtype)
    assert ov["log_realmax"] == pytest.approx(math.log(float(fi.max)), rel=1e-12)
    assert ov["log_min_subnormal"] == pytest.approx(math.log(float(fi.smallest_subnormal)),
                                                    rel=1e-12)
    assert round(ov["log_realmax"], 2) == {"float64": 709.78, "float32": 88.72,
                                           "float16": 11.09, "bfloat16": 88.72}[dtype]
    assert ov["overflow_indices"] == [0, 1, 2]  # 990 > 709.78 > 88.72 > 11.09
    assert ov["every_exp_underflows"] is False
    # inf/inf: non-finite values are the strings "nan", "inf", "-inf"
    assert "nan" in doc["result"][0]
    assert all(v in ("nan", "inf", "-inf") or isinstance(v, float) for v in doc["result"][0])
    assert check(doc, "reference")["max_ulp"] == "inf"
    assert check(doc, "finite")["passed"] is False


def test_json_underflow_block(cli):
    _, doc = run_json(cli, "forward", "--preset", "underflow", "--impl", "naive")
    assert doc["overflow"]["every_exp_underflows"] is True
    assert doc["overflow"]["overflow_indices"] == []
    assert "nan" in doc["result"][0]  # 0/0


def test_json_stable_small_result_and_worst(cli):
    r, doc = run_json(cli, "forward", "--x", "1,2,3", "--check")
    assert r.code == 0 and doc["passed"] is True
    s = np.exp([1.0, 2.0, 3.0]) / np.exp([1.0, 2.0, 3.0]).sum()
    np.testing.assert_allclose(doc["result"], [s], rtol=1e-15)
    w = check(doc, "reference")["worst"]
    assert w["row"] == 0 and 0 <= w["index"] < 3


@pytest.mark.parametrize("log", [False, True])
def test_json_check_names_in_order(cli, log):
    argv = ["forward", "--preset", "masked", "--dtype", "float32"] + (["--log"] if log else [])
    _, doc = run_json(cli, *argv)
    assert [c["name"] for c in doc["checks"]] == FORWARD_CHECKS


def test_json_masked_log_result_has_minus_inf_strings(cli):
    _, doc = run_json(cli, "forward", "--preset", "masked", "--log")
    assert doc["result"][0][1] == "-inf" and doc["result"][0][3] == "-inf"


def test_json_is_deterministic(cli):
    argv = ["forward", "--preset", "huge", "--impl", "naive", "--dtype", "float16", "--json"]
    a, b = cli(*argv), cli(*argv)
    assert a.code == b.code == 0
    assert a.out == b.out
    a.json()


def test_exit_status_is_deterministic(cli):
    argv = ["forward", "--preset", "wide-spread", "--impl", "naive", "--check", "--quiet"]
    assert cli(*argv).code == cli(*argv).code == 1


# --- --quiet ------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl, code", [("naive", 1), ("stable", 0)])
def test_quiet_prints_nothing_and_exit_is_the_verdict(cli, impl, code):
    r = cli("forward", "--x", "1000,999,990", "--impl", impl, "--check", "--quiet")
    assert r.code == code
    assert r.out == ""
    assert r.err == ""


def test_quiet_wins_over_json_and_implies_check(cli):
    """--quiet prints nothing, not even --json's document; its verdict is the exit status."""
    r = cli("forward", "--x", "1000,999,990", "--impl", "naive", "--quiet", "--json")
    assert r.code == 1
    assert r.out == ""


# --- every preset and dtype ---------------------------------------------------------------------

@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("preset", FAST_PRESETS)
def test_stable_passes_every_preset(cli, preset, dtype, log):
    argv = ["forward", "--preset", preset, "--dtype", dtype, "--impl", "stable", "--check",
            "--quiet"] + (["--log"] if log else [])
    r = cli(*argv)
    assert r.code == 0, f"stable failed on {preset} {dtype} log={log}: {r.err}"
    assert r.out == ""


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("preset", FAST_PRESETS)
def test_naive_fails_every_preset_on_shift_invariance(cli, preset, dtype):
    r, doc = run_json(cli, "forward", "--preset", preset, "--dtype", dtype, "--impl", "naive",
                      "--check")
    assert r.code == 1
    assert doc["passed"] is False
    assert check(doc, "shift_invariance")["passed"] is False


def test_large_n_stable_float64(cli):
    # slow (~13 s: 100,000 entries through the mpmath reference); run once, float64, stable
    r = cli("forward", "--preset", "large-n", "--dtype", "float64", "--impl",
            "stable", "--check", "--quiet")
    assert r.code == 0
    assert r.out == ""


@pytest.mark.parametrize("preset, passes", [
    ("overflow", False), ("underflow", False), ("wide-spread", False),
    ("benign", True), ("masked", True), ("ties", True), ("uniform", True),
    ("tiny-spread", True), ("single", True),
])
def test_naive_reference_check_float64(cli, preset, passes):
    _, doc = run_json(cli, "forward", "--preset", preset, "--impl", "naive")
    assert check(doc, "reference")["passed"] is passes


# --- batches and undefined rows -----------------------------------------------------------------

def test_batch_shape(cli):
    r, doc = run_json(cli, "forward", "--x", "1,2,3;4,5,6", "--check")
    assert r.code == 0
    assert doc["shape"] == [2, 3]
    assert len(doc["result"]) == 2 and all(len(row) == 3 for row in doc["result"])
    # shift invariance: both rows give the same softmax
    np.testing.assert_allclose(doc["result"][0], doc["result"][1], rtol=1e-15)


def test_fully_masked_row_is_undefined_not_fatal(cli):
    r, doc = run_json(cli, "forward", "--preset", "fully-masked", "--impl", "stable", "--check")
    assert r.code == 0
    assert doc["passed"] is True
    assert doc["shape"] == [2, 4]
    assert [u["row"] for u in doc["undefined_rows"]] == [1]
    assert doc["result"][0][3] == 0.0  # the masked entry of the good row is exactly 0
    assert "nan" not in json.dumps(doc["result"][0])


def test_fully_masked_row_is_listed_in_the_table_report(cli):
    r = cli("forward", "--preset", "fully-masked", "--check")
    assert r.code == 0
    assert "undefined" in r.out


@pytest.mark.parametrize("text", ["nan,1", "1,inf", "-inf,-inf", "NaN, 2, 3"])
def test_undefined_single_row_is_not_an_error(cli, text):
    """Not an input error (exit 2), not a failure (exit 1), not a pass (exit 0): nothing was
    checked, and --check says so with exit 3 (SPEC)."""
    r, doc = run_json(cli, "forward", "--x", text, "--check")
    assert r.code == 3
    assert [u["row"] for u in doc["undefined_rows"]] == [0]
    assert doc["passed"] is True  # no check of the implementation failed
    assert [c["kind"] for c in doc["input_conditions"]] == ["no_defined_row"]
    assert doc["checks"] == []  # nothing was checked; no check reports itself as passed
    assert cli("forward", "--x", text).code == 0  # without --check: ran


def test_undefined_row_next_to_defined_row(cli):
    r, doc = run_json(cli, "forward", "--x", "inf,1;1,2", "--check")
    assert r.code == 0
    assert [u["row"] for u in doc["undefined_rows"]] == [0]
    assert doc["result"][0] is None
    assert [c["name"] for c in doc["checks"]] == FORWARD_CHECKS


def test_undefined_single_row_still_has_result_key(cli):
    _, doc = run_json(cli, "forward", "--x", "nan,1")
    assert "result" in doc


# --- user callables -----------------------------------------------------------------------------

USER_MODULE = '''
import numpy as np

SEEN = []

def bad(x):
    e = np.exp(x - x.max())
    return e / e.max()          # wrong: divides by the largest term, not the sum

def ok(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()

def ok_log(x):
    x = np.asarray(x, dtype=np.float64)
    a = x.max()
    return x - (a + np.log(np.sum(np.exp(x - a))))

def spy(x):
    SEEN.append((type(x).__name__, x.dtype.name, x.ndim))
    return ok(x)

def wrong_shape(x):
    return np.zeros(len(x) + 1)

def raises(x):
    raise RuntimeError("kaboom")

def strings(x):
    return ["a"] * len(x)

def exits(x):
    import sys
    sys.exit(0)                 # a callable that ends the process "successfully"
'''


@pytest.fixture
def wrongsm(user_modules):
    """``wrongsm.py`` in a fresh directory that is the cwd and on sys.path."""
    return user_modules({"wrongsm.py": USER_MODULE})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("preset", ["benign", "overflow", "masked", "ties"])
def test_user_callable_wrong_fails_right_passes(cli, wrongsm, preset, dtype):
    bad = cli("forward", "--preset", preset, "--dtype", dtype, "--impl",
              "wrongsm:bad", "--check", "--quiet")
    assert bad.code == 1, bad.err
    ok = cli("forward", "--preset", preset, "--dtype", dtype, "--impl",
             "wrongsm:ok", "--check", "--quiet")
    assert ok.code == 0, ok.err


@pytest.mark.parametrize("dtype", ["float64", "bfloat16"])
def test_user_callable_log(cli, wrongsm, dtype):
    r = cli("forward", "--preset", "one-hot", "--log", "--dtype", dtype, "--impl",
            "wrongsm:ok_log", "--check", "--quiet")
    assert r.code == 0, r.err


@pytest.mark.parametrize("dtype", DTYPES)
def test_user_callable_receives_1d_rows_in_the_dtype(cli, wrongsm, dtype):
    r, doc = run_json(cli, "forward", "--x", "1,2,3;4,5,7", "--dtype", dtype, "--impl",
                      "wrongsm:spy", "--check")
    assert r.code == 0
    assert doc["impl"] == "wrongsm:spy"
    seen = sys.modules["wrongsm"].SEEN
    assert seen, "the callable was never called"
    assert set(seen) == {("ndarray", dtype, 1)}


@pytest.mark.parametrize("func", ["wrong_shape", "raises", "strings"])
def test_user_callable_misbehaving_is_exit_2(cli, wrongsm, func):
    r = cli("forward", "--preset", "benign", "--impl", f"wrongsm:{func}", "--check")
    assert_usage_error(r, f"wrongsm:{func}")


def test_user_callable_calling_sys_exit_is_not_a_pass(cli, wrongsm):
    r = cli("forward", "--x", "1000,999,990", "--impl", "wrongsm:exits", "--check",
            "--json")
    assert_usage_error(r, "wrongsm:exits")


def test_user_callable_missing_attribute(cli, wrongsm):
    r = cli("forward", "--x", "1,2", "--impl", "wrongsm:nope")
    assert_usage_error(r, "wrongsm", "nope")


# --- usage and input errors ---------------------------------------------------------------------

def _write_pickled_npy(tmp_path: Path) -> str:
    path = tmp_path / "objects.npy"
    np.save(path, np.array([1.0, "a", None], dtype=object), allow_pickle=True)
    return str(path)


def _write_unknown_type(tmp_path: Path) -> str:
    path = tmp_path / "logits.xyz"
    path.write_text("1 2 3\n")
    return str(path)


ERROR_CASES = {
    # id: (argv builder, words the error line must contain)
    "malformed-number": (lambda t: ["--x", "1,abc"], ["abc"]),
    "empty-input": (lambda t: ["--x", ""], ["empty"]),
    "two-sources": (lambda t: ["--x", "1,2", "--preset", "benign"], ["--x", "--preset"]),
    "no-source": (lambda t: [], ["--x"]),
    "unreadable-file": (lambda t: ["--x-file", str(t / "missing.npy")], ["missing.npy"]),
    "unknown-file-type": (lambda t: ["--x-file", _write_unknown_type(t)], [".xyz"]),
    "pickled-npy": (lambda t: ["--x-file", _write_pickled_npy(t)], ["objects.npy", "pickle"]),
    "unknown-preset": (lambda t: ["--preset", "nosuchpreset"], ["nosuchpreset"]),
    "unknown-dtype": (lambda t: ["--x", "1,2", "--dtype", "float8"], ["float8"]),
    "unknown-impl": (lambda t: ["--x", "1,2", "--impl", "bogus"], ["bogus"]),
    "impl-no-module": (lambda t: ["--x", "1,2", "--impl", "nosuchmodule:f"], ["nosuchmodule"]),
    "unknown-option": (lambda t: ["--x", "1,2", "--frobnicate"], ["--frobnicate"]),
    "dps-too-small": (lambda t: ["--x", "1,2", "--dps", "5"], ["--dps"]),
    "negative-rtol": (lambda t: ["--x", "1,2", "--rtol", "-1"], ["--rtol"]),
    "negative-atol": (lambda t: ["--x", "1,2", "--atol", "-1e-3"], ["--atol"]),
    "nan-max-ulp": (lambda t: ["--x", "1,2", "--max-ulp", "nan"], ["--max-ulp"]),
    "negative-top": (lambda t: ["--x", "1,2", "--top", "-1"], ["--top"]),
    "unknown-metric": (lambda t: ["--x", "1,2", "--log", "--metric", "bogus"], ["bogus"]),
    "dps-not-int": (lambda t: ["--x", "1,2", "--dps", "many"], ["--dps"]),
    "option-missing-value": (lambda t: ["--x", "1,2", "--dtype"], ["--dtype"]),
    "npz-several-arrays": (lambda t: ["--x-file", _write_npz_two(t)], ["two.npz"]),
}


def _write_npz_two(tmp_path: Path) -> str:
    path = tmp_path / "two.npz"
    np.savez(path, a=np.array([1.0, 2.0]), b=np.array([3.0]))
    return str(path)


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_usage_errors_exit_2_with_one_error_line(cli, tmp_path, case):
    build, words = ERROR_CASES[case]
    r = cli("forward", *build(tmp_path))
    assert_usage_error(r, *words)


def test_unknown_command_is_exit_2(cli):
    assert_usage_error(cli("frobnicate"), "frobnicate")


def test_error_in_a_real_process_has_no_traceback():  # subprocess
    p = python_m_smcheck("forward", "--x", "1,abc", "--check")
    assert p.returncode == 2
    assert p.stdout == ""
    assert p.stderr.startswith("error: ") and p.stderr.count("\n") == 1
    assert "Traceback" not in p.stderr


# --- input files and the positional INPUT -------------------------------------------------------

def _files(tmp_path: Path) -> dict[str, tuple[str, list[int]]]:
    """name -> (path to pass, expected shape)."""
    x = np.array([[0.5, -1.0, 2.0], [3.0, -np.inf, 1.0]])
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "one.npz", x[0])
    np.savez(tmp_path / "keyed.npz", logits=x, other=x[:1])
    (tmp_path / "x.json").write_text(json.dumps([[0.5, -1.0, 2.0], [3.0, 0.0, 1.0]]))
    (tmp_path / "x.csv").write_text("0.5,-1.0,2.0\n3.0,-inf,1.0\n")
    (tmp_path / "x.tsv").write_text("0.5\t-1.0\t2.0\n")
    (tmp_path / "x.txt").write_text("# a comment\n0.5 -1.0 2.0 7\n")
    return {
        "npy": (str(tmp_path / "x.npy"), [2, 3]),
        "npz": (str(tmp_path / "one.npz"), [1, 3]),
        "npz-key": (str(tmp_path / "keyed.npz") + ":other", [1, 3]),
        "json": (str(tmp_path / "x.json"), [2, 3]),
        "csv": (str(tmp_path / "x.csv"), [2, 3]),
        "tsv": (str(tmp_path / "x.tsv"), [1, 3]),
        "txt": (str(tmp_path / "x.txt"), [1, 4]),
    }


@pytest.mark.parametrize("kind", ["npy", "npz", "npz-key", "json", "csv", "tsv", "txt"])
@pytest.mark.parametrize("how", ["--x-file", "positional"])
def test_input_files(cli, tmp_path, kind, how):
    path, shape = _files(tmp_path)[kind]
    argv = ["forward", "--x-file", path] if how == "--x-file" else ["forward", path]
    r, doc = run_json(cli, *argv, "--check")
    assert r.code == 0
    assert doc["shape"] == shape
    assert doc["undefined_rows"] == []


def test_x_file_stdin_subprocess():  # subprocess: real standard input
    p = python_m_smcheck("forward", "--x-file", "-", "--check", "--json",
                         input="1 2 3\n4 5 6\n")
    assert p.returncode == 0, p.stderr
    assert strict_json(p.stdout)["shape"] == [2, 3]


def test_positional_dash_reads_stdin(cli):
    r, doc = run_json(cli, "forward", "-", "--impl", "naive", "--check", stdin="1000, 999, 990\n")
    assert r.code == 1
    assert doc["overflow"]["overflow_indices"] == [0, 1, 2]


@pytest.mark.parametrize("arg, shape", [
    ("one-hot", [1, 8]),       # a preset name
    ("fully-masked", [2, 4]),  # a batch preset
    ("1,2,3", [1, 3]),         # numbers
    ("1 2; 3 4", [2, 2]),      # rows
    ("[[1, 2], [3, 4]]", [2, 2]),  # a JSON array
])
def test_positional_preset_and_numbers(cli, arg, shape):
    r, doc = run_json(cli, "forward", arg, "--check")
    assert r.code == 0
    assert doc["shape"] == shape


def test_positional_and_option_are_two_sources(cli):
    assert_usage_error(cli("forward", "1,2", "--x", "3,4"))
    assert_usage_error(cli("forward", "benign", "--preset", "ties"))


def test_random_input(cli):
    r, doc = run_json(cli, "forward", "--random", "12", "--rows", "3", "--seed", "5",
                      "--dtype", "float32", "--check")
    assert r.code == 0
    assert doc["shape"] == [3, 12]


# --- tolerance overrides ------------------------------------------------------------------------

def test_rtol_atol_override_is_reported_as_user(cli):
    _, default = run_json(cli, "forward", "--preset", "benign")
    _, user = run_json(cli, "forward", "--preset", "benign", "--rtol", "0", "--atol", "0")
    assert check(default, "reference")["tolerance"]["source"] == "derived"
    ref = check(user, "reference")
    assert ref["tolerance"]["source"] == "user"
    # with no allowance at all, any rounding error fails the entry
    assert ref["passed"] is (ref["max_abs_err"] == 0)


def test_max_ulp_override_changes_the_verdict(cli):
    argv = ["forward", "--preset", "overflow", "--impl", "divfree", "--dtype", "bfloat16"]
    _, default = run_json(cli, *argv)
    _, loose = run_json(cli, *argv, "--max-ulp", "1000")
    d, l_ = check(default, "reference"), check(loose, "reference")
    assert l_["tolerance"]["source"] == "user"
    assert l_["tolerance"]["max_ulp"] == 1000
    assert d["max_ulp"] == l_["max_ulp"]  # the same errors, judged differently
    assert d["passed"] != l_["passed"]
    assert l_["passed"] is (l_["max_ulp"] <= 1000)


def test_max_ulp_zero_fails_an_inexact_result(cli):
    _, doc = run_json(cli, "forward", "--preset", "benign", "--max-ulp", "0")
    ref = check(doc, "reference")
    assert ref["max_ulp"] > 0
    assert ref["passed"] is False


def test_loose_max_ulp_alone_keeps_a_correct_impl_passing(cli):
    r, doc = run_json(cli, "forward", "--preset", "benign", "--max-ulp", "1000", "--check")
    assert check(doc, "reference")["passed"] is True
    assert r.code == 0, [(c["name"], c["failures"]) for c in doc["checks"] if not c["passed"]]


def test_top_limits_worst_entries(cli):
    _, doc = run_json(cli, "forward", "--preset", "benign", "--top", "2")
    assert len(check(doc, "reference").get("worst_entries", [])) <= 2


# --- presets command ----------------------------------------------------------------------------

def test_presets_command(cli):
    r = cli("presets")
    assert r.code == 0
    for name in PRESETS:
        assert name in r.out
    r = cli("presets", "--json")
    assert r.code == 0
    items = r.json()
    assert [it["name"] for it in items] == list(PRESETS)


# --- the CI example -----------------------------------------------------------------------------

def test_examples_ci_check_script():  # subprocess: ~4 s, seven smcheck runs
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    p = subprocess.run(["bash", "examples/ci-check.sh"], capture_output=True, text=True,
                       cwd=REPO, env=env, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "naive --check exit status: 1" in p.stdout
    assert "[0, 1, 2]" in p.stdout  # the overflow indices read from the JSON
    assert "Traceback" not in p.stdout + p.stderr


def test_examples_logits_npy_is_reproducible():
    spec = importlib.util.spec_from_file_location("make_examples",
                                                  REPO / "examples" / "make_examples.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    saved = np.load(REPO / "examples" / "logits.npy", allow_pickle=False)
    assert saved.shape == (32,) and saved.dtype == np.float64
    np.testing.assert_array_equal(saved, mod.make_logits())
