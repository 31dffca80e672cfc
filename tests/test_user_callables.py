"""A user's own callable (``--impl module.path:function``, ``--impl path/to/file.py:function``,
or a function from Python): loaded from a file, a hint of the expected signature when it is
called with the wrong arity, its print() kept out of --json, and its warnings reported as a
note of the reference check instead of silenced (issue 17)."""

from __future__ import annotations

import sys
import textwrap
import warnings

import numpy as np
import pytest

import smcheck
from smcheck import ImplementationError
from smcheck.impls import get_implementation
from smcheck.options import Options
from smcheck.run import check_rows

X = [[1.0, 2.0, 3.0], [4.0, 5.0, 7.0], [0.5, -1.0, 2.0]]

IMPLS = textwrap.dedent('''
    import warnings
    import numpy as np

    def softmax(x):
        e = np.exp(x - np.max(x))
        return e / np.sum(e)

    def loud(x):
        print("hello from the kernel")
        return softmax(x)

    def warns(x):
        warnings.warn("my kernel is experimental")
        return softmax(x)

    def warns_two(x):
        warnings.warn("my kernel is experimental")
        warnings.warn("tile size guessed", RuntimeWarning)
        return softmax(x)

    def overflows(x):
        e = np.exp(x)  # overflows for x > 709: numpy's own warning, off while it runs
        return e / np.sum(e)

    def two_args(x, v):
        return softmax(x)

    def body_type_error(x):
        return len(x) + "oops"  # a TypeError of its own, not of its arguments

    def vjp(x, v):
        s = softmax(x)
        return s * (v - np.dot(v, s))
''')


def softmax64(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def check_named(doc: dict, name: str) -> dict:
    [c] = [c for c in doc["checks"] if c["name"] == name]
    return c


def assert_one_error_line(r, *words):
    """Exit 2, nothing on stdout, one ``error:`` line on stderr naming ``words``."""
    assert r.code == 2, (r.code, r.out, r.err)
    assert r.out == ""
    assert "Traceback" not in r.err
    assert r.err.startswith("error: ") and r.err.count("\n") == 1, repr(r.err)
    for w in words:
        assert w in r.err, (w, r.err)


@pytest.fixture
def userdir(user_modules):
    """``impls/kernels.py`` and ``ukern.py`` (a module) in a fresh cwd that is on sys.path."""
    return user_modules({"impls/kernels.py": IMPLS, "ukern.py": IMPLS})


# --- 1. a function from a file path ---------------------------------------------------------------


@pytest.mark.parametrize("absolute", [False, True])
def test_impl_from_a_file_path(cli, userdir, absolute):
    path = (userdir / "impls" / "kernels.py") if absolute else "impls/kernels.py"
    r = cli("forward", "--x", "1,2,3;4,5,7;0.5,-1,2", "--impl", f"{path}:softmax", "--check",
            "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["passed"] and doc["impl"] == f"{path}:softmax"
    np.testing.assert_allclose(np.array(doc["result"], dtype=float), softmax64(X), rtol=1e-15)


def test_a_file_path_is_split_at_its_last_colon(cli, userdir):
    (userdir / "a:b").mkdir()
    (userdir / "a:b" / "k.py").write_text(IMPLS)
    r = cli("forward", "--x", "1,2,3", "--impl", "a:b/k.py:softmax", "--check", "--quiet")
    assert r.code == 0, r.err


def test_impl_from_a_file_through_python(userdir):
    rep = smcheck.check_forward(X, impl="impls/kernels.py:softmax")
    assert rep.passed
    np.testing.assert_allclose(np.array(rep.result, dtype=float), softmax64(X), rtol=1e-15)


def test_a_wrong_file_is_one_error_line(cli, userdir):
    (userdir / "broken.py").write_text("raise ValueError('boom at import')\n")
    (userdir / "notes.txt").write_text("x = 1\n")
    r = cli("forward", "--x", "1,2", "--impl", "missing/kernels.py:softmax")
    assert_one_error_line(r, "missing/kernels.py", "no such file", str(userdir))
    r = cli("forward", "--x", "1,2", "--impl", "broken.py:f")
    assert_one_error_line(r, "broken.py", "ValueError", "boom at import")
    r = cli("forward", "--x", "1,2", "--impl", "impls:softmax")  # a directory, not a module
    assert_one_error_line(r, "impls")
    r = cli("forward", "--x", "1,2", "--impl", "notes.txt:f")
    assert_one_error_line(r, "notes.txt", "not a Python file")
    r = cli("forward", "--x", "1,2", "--impl", "impls/kernels.py:nope")
    assert_one_error_line(r, "impls/kernels.py", "nope")
    assert not [m for m in sys.modules if m.startswith("_smcheck_impl_broken")]
    with pytest.raises(ImplementationError, match="boom at import"):
        get_implementation("broken.py:f")


# --- 2. the expected signature, when the arity is wrong ---------------------------------------------


@pytest.mark.parametrize("argv, func, expected", [
    (["vjp", "--x", "1,2,3"], "softmax", "expected f(x, v) -> z"),
    (["loss", "--x", "1,2,3", "--t", "1,0,0"], "softmax", "expected f(z, t) -> -t/z"),
    (["forward", "--x", "1,2,3"], "two_args", "expected f(x) -> s"),
    (["forward", "--x", "1,2,3", "--log"], "two_args", "expected f(x) -> log s"),
    (["jacobian", "--x", "1,2,3"], "two_args", "expected f(x) -> J (n x n)"),
])
def test_wrong_arity_names_the_expected_signature(cli, userdir, argv, func, expected):
    r = cli(*argv, "--impl", f"ukern:{func}")
    assert_one_error_line(r, f"--impl ukern:{func} raised TypeError on row 0:", expected)
    assert r.err.rstrip().endswith(expected)


def test_a_forward_used_as_a_jacobian_names_the_signature_in_the_shape_error(cli, userdir):
    r = cli("jacobian", "--x", "1,2,3", "--impl", "ukern:softmax")
    assert_one_error_line(r, "returned shape (3,)", "(3, 3)", "f(x) -> J (n x n)")


def test_a_type_error_inside_the_callable_gets_no_signature_hint(cli, userdir):
    r = cli("forward", "--x", "1,2,3", "--impl", "ukern:body_type_error")
    assert_one_error_line(r, "raised TypeError on row 0")
    assert "expected f(" not in r.err


def test_wrong_arity_through_python():
    with pytest.raises(ImplementationError, match=r"; expected f\(x, v\) -> z$"):
        smcheck.check_vjp([1.0, 2.0, 3.0], impl=softmax64)
    with pytest.raises(ImplementationError, match=r"; expected f\(x\) -> s$"):
        smcheck.check_forward([1.0, 2.0, 3.0], impl=lambda x, v: x)


# --- 3. the callable's print() goes to stderr -------------------------------------------------------


@pytest.mark.parametrize("impl", ["noisy:loud", "impls/noisy.py:loud"])
def test_print_does_not_corrupt_json(cli, userdir, impl):
    noisy = 'print("loading impl")  # at import: must not reach stdout either\n' + IMPLS
    (userdir / "noisy.py").write_text(noisy)
    (userdir / "impls" / "noisy.py").write_text(noisy)
    sys.modules.pop("noisy", None)
    r = cli("forward", "--x", "1,2,3;4,5,7;0.5,-1,2", "--impl", impl, "--json", "--check")
    assert r.code == 0, r.err
    doc = r.json()  # stdout is one JSON document
    assert doc["passed"]
    assert r.err.count("hello from the kernel") >= len(X)  # once per row, at least
    assert "loading impl" in r.err and "loading impl" not in r.out
    assert "hello" not in r.out
    sys.modules.pop("noisy", None)


def test_print_goes_to_stderr_through_python(capsys):
    def loud(x):
        print("kernel says hi")
        return softmax64(x)

    assert smcheck.check_forward(X, impl=loud).passed
    out, err = capsys.readouterr()
    assert "kernel says hi" not in out
    assert err.count("kernel says hi") >= len(X)


# --- 4. the callable's warnings, reported ----------------------------------------------------------


def _warnings_finding(check: dict) -> dict:
    found = [f for f in check["findings"] if f["kind"] == "warnings"]
    assert len(found) == 1, check["findings"]
    return found[0]


def test_warnings_are_a_note_of_the_reference_check(cli, userdir):
    r = cli("forward", "--x", "1,2,3;4,5,7;0.5,-1,2", "--impl", "ukern:warns", "--json",
            "--check")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["passed"]
    ref = check_named(doc, "reference")
    assert ref["passed"]
    f = _warnings_finding(ref)
    assert f["count"] == len(X) and f["total"] == len(X) and not f["fails"]  # one per row
    assert f["message"] in ref["notes"]
    assert "UserWarning: my kernel is experimental" in f["message"]
    assert f"warned {len(X)} times" in f["message"]
    for c in doc["checks"]:
        if c["name"] != "reference":
            assert all(g["kind"] != "warnings" for g in c.get("findings", []))
    assert "my kernel is experimental" not in r.err  # recorded, not printed as well


def test_distinct_warnings_are_counted(cli, userdir):
    r = cli("forward", "--x", "1,2,3;4,5,7", "--impl", "impls/kernels.py:warns_two", "--json")
    f = _warnings_finding(check_named(r.json(), "reference"))
    assert f["count"] == 4  # two warnings on each of two rows
    assert "UserWarning: my kernel is experimental" in f["message"]
    assert "(and 1 other distinct message)" in f["message"]


def test_warnings_of_a_vjp_callable(cli, userdir):
    (userdir / "wvjp.py").write_text(IMPLS + textwrap.dedent('''
        def warned_vjp(x, v):
            warnings.warn("vjp in a hurry")
            return vjp(x, v)
    '''))
    r = cli("vjp", "--x", "1,2,3;0,1,0", "--impl", "wvjp.py:warned_vjp", "--json", "--check")
    assert r.code == 0, r.err
    ref = check_named(r.json(), "reference")
    f = _warnings_finding(ref)
    assert f["count"] == 2 and "UserWarning: vjp in a hurry" in f["message"]


def test_no_warnings_no_finding_and_numpy_float_warnings_stay_off(cli, userdir):
    for impl in ("ukern:softmax", "ukern:overflows"):
        r = cli("forward", "--x", "1,2,1000", "--impl", impl, "--json")
        assert r.code == 0, r.err
        ref = check_named(r.json(), "reference")
        assert all(f["kind"] != "warnings" for f in ref["findings"]), ref["findings"]


def test_warnings_through_python_each_run_counts_its_own():
    def warns(x):
        warnings.warn("python-side warning", DeprecationWarning, stacklevel=2)
        return softmax64(x)

    impl = get_implementation(warns)
    for _ in range(2):  # the object is shared; each run records on its own copy
        rep = smcheck.check_forward(X, impl=impl)
        assert rep.passed
        [f] = [f for f in rep.checks[0].findings if f.kind == "warnings"]
        assert (f.count, f.total, f.fails) == (len(X), len(X), False)
        assert f.example == "DeprecationWarning: python-side warning"
    assert not impl.warned  # the shared object itself records nothing


def test_warnings_of_chunks_add_up():
    def warns(x):
        warnings.warn("chunked", stacklevel=2)
        return softmax64(x)

    x = np.random.default_rng(1).standard_normal((7, 4))
    rep = check_rows("forward", x, Options(impl=warns), workers=1, chunk_rows=2)
    assert rep.passed
    [f] = [f for f in rep.checks[0].findings if f.kind == "warnings"]
    assert (f.count, f.total) == (7, 7)
