"""Special values and their documented meaning (README "Special values"), each through the
real CLI: -inf masking, a fully masked row, +inf and nan entries, n = 0 and n = 1, subnormal
inputs, |x| up to 1e308, integer and boolean arrays, big-endian .npy files. Expected values
come from mpmath or from the definition, not from smcheck."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest



def doc(cli, *argv, code=0):
    r = cli(*argv, "--json", "--check")
    assert r.code == code, r.err
    d = r.json()
    d.pop("input", None)  # where the numbers came from (a file, --x): compared separately
    return d


def exact_softmax(x, dps=40):
    with mpmath.workdps(dps):
        xs = [mpmath.mpf(float(v)) for v in x]
        fin = [v for v in xs if v != mpmath.mpf("-inf")]
        m = max(fin)
        S = mpmath.fsum(mpmath.exp(v - m) for v in fin)
        return [0.0 if v == mpmath.mpf("-inf") else float(mpmath.exp(v - m) / S) for v in xs]


def close(got, want, ulps=4):
    for g, w in zip(got, want):
        assert abs(g - w) <= ulps * np.spacing(max(abs(w), 1e-300)), (got, want)


# --- -inf: a masked entry ---------------------------------------------------------------------

@pytest.mark.parametrize("command,extra", [("forward", []), ("forward", ["--log"]),
                                           ("jacobian", []), ("vjp", ["--v", "1,2,3,4"]),
                                           ("loss", ["--t", "0,0,1,0"])])
def test_minus_inf_is_a_masked_entry_with_probability_zero(cli, command, extra):
    x = [1.0, -np.inf, 2.0, 0.5]
    d = doc(cli, command, "--x", "1,-inf,2,0.5", *extra)
    assert d["passed"] and d["undefined_rows"] == [] and d["checks"]
    if command == "forward" and not extra:
        assert d["result"][0][1] == 0.0  # one row, as shape [1, 4]
        close([d["result"][0][i] for i in (0, 2, 3)], [exact_softmax(x)[i] for i in (0, 2, 3)])
    if command == "forward" and extra:
        assert d["result"][0][1] == "-inf"
    if command == "jacobian":
        J = np.array(d["result"][0], dtype=float)
        assert np.all(J[1] == 0) and np.all(J[:, 1] == 0)  # d s / d x of a masked entry: 0
    if command == "vjp":
        assert d["result"][0][1] == 0.0


# --- a fully masked row, +inf, nan: undefined rows, reported, not deciding the verdict --------

@pytest.mark.parametrize("row,reason", [("-inf,-inf,-inf", "fully masked"),
                                        ("1,inf,2", "+inf"), ("1,nan,2", "nan"),
                                        ("nan,-inf,inf", "")])
@pytest.mark.parametrize("command", ["forward", "jacobian", "vjp"])
def test_undefined_rows_are_reported_and_do_not_decide(cli, row, reason, command):
    d = doc(cli, command, "--x", f"{row}; 3,1,2")
    assert d["passed"] and d["shape"] == [2, 3]
    assert [u["row"] for u in d["undefined_rows"]] == [0]
    assert reason in d["undefined_rows"][0]["reason"]
    assert d["checks"], "the defined row is still checked"
    # alone, the row leaves nothing to check: no check failed, but --check exits 3 (an input
    # condition: a CI gate must not pass an input it could not judge), and it says so
    d1 = doc(cli, command, "--x", row, code=3)
    assert d1["passed"] and d1["checks"] == [] and d1["undefined_rows"]
    assert any("nothing to check" in n for n in d1["notes"])
    assert [c["kind"] for c in d1["input_conditions"]] == ["no_defined_row"]


def test_a_row_that_rounds_to_minus_inf_says_so(cli, monkeypatch):
    """Finite logits below -65504 are -inf in float16: the row has no softmax, and the reason
    names the value given (not "masked", which the user did not do); the long-row pipeline
    says the same. Control: a row masked as given keeps its words."""
    from smcheck import longrow

    want = ("softmax undefined: every entry is -inf in float16: x_1 = -70000 and every other "
            "finite entry round to -inf (below -65504)")
    long_rows = []
    monkeypatch.setattr(longrow, "forward_long_row",
                        lambda *a, f=longrow.forward_long_row, **k: long_rows.append(1) or f(*a, **k))
    for limit in (10 ** 12, 2):  # the whole-row pipeline, then rows of more than 2 entries
        monkeypatch.setattr(longrow, "LONG_ROW", limit)
        for engine in ("mpmath", "f64"):
            d = doc(cli, "forward", "--x", "-inf,-70000,-1e5; 1,2,3", "--dtype", "float16",
                    "--engine", engine)
            assert d["undefined_rows"] == [{"row": 0, "reason": want}]
            d = doc(cli, "forward", "--x", "-inf,-inf,-inf; 1,2,3", "--dtype", "float16",
                    "--engine", engine)
            assert d["undefined_rows"][0]["reason"].endswith("every entry is -inf (fully masked)")
    assert long_rows  # the long-row pipeline was among them


def test_undefined_row_with_a_wrong_implementation_elsewhere_still_fails(cli):
    d = doc(cli, "forward", "--x", "1,nan,0; 1000,999,990", "--impl", "naive", code=1)
    assert [u["row"] for u in d["undefined_rows"]] == [0]


# --- n = 0 and n = 1 ---------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["--x", ""], ["--x", "[]"], ["--x", " , "]])
def test_n_zero_is_an_input_error(cli, argv):
    r = cli("forward", *argv)
    assert r.code == 2 and r.out == ""
    assert r.err.startswith("error:") and "empty" in r.err and r.err.count("\n") == 1


def test_n_zero_from_a_file_is_an_input_error(cli, tmp_path):
    p = tmp_path / "empty.npy"
    np.save(p, np.zeros(0))
    r = cli("forward", "--x-file", p)
    assert r.code == 2 and r.err.startswith("error:") and r.err.count("\n") == 1


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_n_one_is_softmax_one_and_zero_derivatives(cli, dtype):
    assert doc(cli, "forward", "--x", "7.25", "--dtype", dtype)["result"] == [[1.0]]
    assert doc(cli, "forward", "--x", "-300", "--dtype", dtype, "--log")["result"] == [[0.0]]
    assert doc(cli, "jacobian", "--x", "3", "--dtype", dtype)["result"] == [[[0.0]]]
    assert doc(cli, "vjp", "--x", "3", "--v", "5", "--dtype", dtype)["result"] == [[0.0]]


# --- subnormal inputs and |x| up to 1e308 ------------------------------------------------------

def test_subnormal_inputs_are_exact_numbers(cli):
    x = [5e-324, 0.0, -5e-324, 2.5e-310]
    d = doc(cli, "forward", "--x", ",".join(repr(v) for v in x))
    close(d["result"][0], exact_softmax(x))
    assert all(abs(r - 0.25) < 1e-15 for r in d["result"][0])


def test_huge_magnitudes_up_to_1e308(cli):
    d = doc(cli, "forward", "--x", "1e308,-1e308,0,1e307")
    # x - max overflows to -inf in float64 arithmetic: the exact softmax is still [1, 0, 0, 0]
    assert d["result"] == [[1.0, 0.0, 0.0, 0.0]]
    d = doc(cli, "forward", "--x", "1e308,-1e308,0,1e307", "--log")
    assert d["result"][0][0] == 0.0 and d["result"][0][2] == -1e308
    # in float16 1e308 rounds to +inf: the row is undefined there, and says why
    d = doc(cli, "forward", "--x", "1e308,-1e308,0", "--dtype", "float16", code=3)
    assert d["undefined_rows"] and "inf" in d["undefined_rows"][0]["reason"]


def test_beyond_float64_reads_as_infinity(cli):
    """1e400 rounds to +inf in float64 (IEEE): the row is undefined, and says x_0 = +inf."""
    d = doc(cli, "forward", "--x", "1e400,0; 1,2")
    assert [u["row"] for u in d["undefined_rows"]] == [0]
    assert "+inf" in d["undefined_rows"][0]["reason"]
    d = doc(cli, "forward", "--x", "-1e400,0")  # -inf: a masked entry
    assert d["result"] == [[0.0, 1.0]]


# --- integer and boolean arrays, big-endian files ----------------------------------------------

@pytest.mark.parametrize("dtype", ["int8", "int32", "int64", "uint16", "bool"])
def test_integer_and_boolean_arrays_are_their_float_values(cli, tmp_path, dtype):
    values = {"bool": [1, 0, 1, 1], "uint16": [3, 2, 0, 7]}.get(dtype, [3, -2, 0, 7])
    a = np.array(values, dtype=dtype)
    p = tmp_path / f"x_{dtype}.npy"
    np.save(p, a)
    d = doc(cli, "forward", "--x-file", p)
    close(d["result"][0], exact_softmax(a.astype(float)))
    assert d == doc(cli, "forward", "--x", ",".join(str(float(v)) for v in a))


@pytest.mark.parametrize("dt", [">f8", ">f4", ">f2", ">i4", "<f8"])
def test_big_endian_npy_reads_the_same_numbers(cli, tmp_path, dt):
    a = np.array([[1.5, -2.0, 0.25], [100.0, 99.0, -3.0]], dtype=dt)
    p = tmp_path / "be.npy"
    np.save(p, a)
    d = doc(cli, "forward", "--x-file", p)
    native = doc(cli, "forward", "--x", "; ".join(",".join(repr(float(v)) for v in r)
                                                      for r in a))
    assert d == native
    for got, row in zip(d["result"], a):
        close(got, exact_softmax(row.astype(float)))


@pytest.mark.parametrize("dtype,value", [("int64", 2 ** 53 + 1), ("uint64", 2 ** 64 - 1),
                                         ("int64", -(2 ** 62))])
def test_integers_beyond_2_to_the_53_are_refused(cli, tmp_path, dtype, value):
    p = tmp_path / "big.npy"
    np.save(p, np.array([value, 0], dtype=dtype))
    r = cli("forward", "--x-file", p)
    assert r.code == 2 and r.out == "" and r.err.count("\n") == 1
    assert r.err.startswith("error:") and "2^53" in r.err


def test_integers_up_to_2_to_the_53_are_exact(cli, tmp_path):
    p = tmp_path / "ok.npy"
    np.save(p, np.array([2 ** 53, 0], dtype=np.int64))
    assert doc(cli, "forward", "--x-file", p)["result"] == [[1.0, 0.0]]
