"""Rows too long to hold (smcheck.longrow): ``forward`` on a row of more than LONG_ROW entries,
a segment at a time. The limits are lowered here (rows of 2000 entries in segments of 333), so
every report can be compared with the whole-row pipeline's on the same input: the verdicts,
the worst entries with their global indices, the failures, findings and overflow block must be
the same; only the words of the shifted references differ (the whole row derives them from the
unshifted one, a long row computes them afresh). Memory and speed at 10^8 entries are in
benchmarks/scale.py."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

sys.path.insert(0, ".")

from smcheck import longrow  # noqa: E402
from smcheck.impls import formulas  # noqa: E402
from smcheck.jsondoc import report_json  # noqa: E402
from smcheck.options import Options  # noqa: E402
from smcheck.reference import segments  # noqa: E402
from smcheck.reference.dd import softmax_dd, softmax_f64  # noqa: E402
from smcheck.run import check_rows  # noqa: E402
from smcheck.dtypes import dtype_info  # noqa: E402

N = 2000


def whole_and_long(x, monkeypatch, **kw) -> tuple[dict, dict]:
    """The JSON documents of the whole-row pipeline and of the segmented one."""
    with monkeypatch.context() as m:
        m.setattr(longrow, "LONG_ROW", 10 ** 12)
        whole = report_json(check_rows("forward", x, Options(**kw), workers=1), "t")
    with monkeypatch.context() as m:
        m.setattr(longrow, "LONG_ROW", 1000)
        m.setattr(longrow, "SEGMENT", 333)
        long = report_json(check_rows("forward", x, Options(**kw), workers=1), "t")
    return whole, long


def differences(a, b, path=""):
    """Paths where two documents differ (floats within 1e-9 relative are equal), leaving out
    the shifted references' words and bounds."""
    shifts = "/shifts[" in path
    if shifts and path.endswith(("/reference", "/reference_bound")):
        return []
    # the float64 tier's shifted references (afresh, or derived) agree to its own precision
    rtol = 1e-6 if shifts else 1e-9
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in set(a) | set(b) for d in differences(a.get(k), b.get(k), f"{path}/{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (p, q) in enumerate(zip(a, b)) for d in differences(p, q, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and abs(a - b) <= rtol * max(abs(a), abs(b)):
        return []
    return [] if a == b else [(path, a, b)]


def batch(seed=0, rows=3, scale=5.0):
    x = np.random.default_rng(seed).standard_normal((rows, N)) * scale
    x[0, 7] = -np.inf
    x[1, :5] = -np.inf
    return x


def running(x):
    """softmax with its sum taken one term after another (np.cumsum): a correct method whose
    sum drifts on rows of equal terms (smcheck.coherence)."""
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.cumsum(e, axis=-1)[..., -1:]


def running_log(x):
    d = x - np.max(x, axis=-1, keepdims=True)
    return d - np.log(np.cumsum(np.exp(d), axis=-1)[..., -1:])


def dominant(big=30.0):
    """Row 0 random, rows 1 and 2 one logit ``big`` and the rest equal (a drifting sum)."""
    x = batch()
    x[1:] = 0.0
    x[1, 9], x[2, 1700] = big, big / 2
    return x


CASES = {
    "float64": (batch(), {}),
    "float32": (batch(), {"dtype": "float32"}),
    "float16": (batch(), {"dtype": "float16"}),
    "bfloat16 log": (batch(), {"dtype": "bfloat16", "log": True}),
    "a vector": (batch()[0], {}),
    "user atol": (batch(), {"atol": 1e-3}),
    "naive overflows": (np.where(np.arange(N) == 1500, 800.0, batch()), {"impl": "naive"}),
    "naive float32": (np.where(np.arange(N) == 1500, 800.0, batch()), {"impl": "naive",
                                                                          "dtype": "float32"}),
    "divfree float16": (batch() * 30, {"impl": "divfree", "dtype": "float16"}),
    "a running sum drifts": (dominant(), {"impl": running}),
    "a running sum drifts, log": (dominant(), {"impl": running_log, "log": True}),
    "a running sum drifts, float32": (dominant(10.0), {"impl": running, "dtype": "float32"}),
    "an undefined row": (np.where((np.arange(3)[:, None] == 2) & (np.arange(N) == 100),
                                  np.nan, batch()), {}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_long_row_is_judged_as_the_whole_row(name, monkeypatch):
    x, kw = CASES[name]
    whole, long = whole_and_long(x, monkeypatch, **kw)
    assert differences(whole, long) == []
    if name.startswith("a running sum"):  # passes, the drift noted alike
        assert long["passed"]
        norm = next(c for c in long["checks"] if c["name"] == "normalization")
        assert [f["kind"] for f in norm["findings"]] == ["drift"]
    if name.startswith(("naive", "divfree")):  # failures found, at the same global indices
        assert not long["passed"]
        assert long["checks"][0]["worst"]["index"] == whole["checks"][0]["worst"]["index"]


def test_strict_log_metric_on_a_long_row(monkeypatch):
    """Rows 0 and 1 have different worst shifts here: shift_invariance's maxima are still
    those of the shift worst over all rows (as the whole pipeline has them)."""
    whole, long = whole_and_long(batch(), monkeypatch, log=True, metric="strict")
    assert differences(whole, long) == []


def test_a_kernel_wrong_in_one_segment_fails_there(monkeypatch, tmp_path):
    """Control: an implementation off by 1e-6 relative at index 1400 (the fifth segment) fails
    the reference check there, in the long pipeline as in the whole one."""
    kernel = tmp_path / "kern.py"
    kernel.write_text(
        "import numpy as np\n"
        "def f(x):\n"
        "    e = np.exp(x - np.max(x))\n"
        "    s = e / np.sum(e)\n"
        "    s[1400] *= 1 + 1e-6\n"
        "    return s\n")
    x = batch()[0]
    whole, long = whole_and_long(x, monkeypatch, impl=f"{kernel}:f")
    assert not long["passed"] and not whole["passed"]
    ref = long["checks"][0]
    assert ref["worst"]["index"] == 1400 and ref["worst_entries"][0]["index"] == 1400
    assert differences(whole, long) == []


def test_segmented_engine_gives_the_whole_rows_exact_values():
    x = np.random.default_rng(3).standard_normal(50_000) * 30
    x[5] = -np.inf
    X = x[None, :]
    a, first = float(np.max(x)), int(np.argmax(x))
    second = float(np.max(np.delete(x, first)))
    for engine, whole in (("double-double", softmax_dd(X)), ("float64", softmax_f64(X))):
        K = segments.scale_of(second, a) if engine == "double-double" else 0
        cuts = [(c, min(c + 4096, x.size)) for c in range(0, x.size, 4096)]
        others = np.exp(np.where(np.arange(x.size) == first, -np.inf, x - a))[None, :]
        parts = [segments.dd_partial_sum(X[:, c:d], a, first, K, c)
                 if engine == "double-double" else (float(np.sum(others[:, c:d])), 0.0)
                 for c, d in cuts]
        consts = segments.row_constants(engine, x.size, a, first, K, parts)
        seg = [segments.segment_softmax(X[:, c:d], consts, 50) for c, d in cuts]
        hi = np.concatenate([s.s_hi for s in seg], axis=1)
        lo = np.concatenate([s.s_lo for s in seg], axis=1)
        y = np.concatenate([s.y_hi for s in seg], axis=1)
        live = whole.s_hi > 0
        rel = np.abs((hi - whole.s_hi) + (lo - whole.s_lo))[live] / whole.s_hi[live]
        bound = 2.0 ** -100 if engine == "double-double" else 2.0 ** -40
        assert np.max(rel) <= bound
        fin = np.isfinite(whole.y_hi)
        assert np.array_equal(np.isfinite(y), fin)
        assert np.max(np.abs(y[fin] - whole.y_hi[fin]) / np.maximum(np.abs(whole.y_hi[fin]),
                                                                     1e-300)) <= bound


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_built_ins_compute_a_long_row_in_segments_to_the_same_rounding(dtype, monkeypatch):
    """The built-ins' segmented form: the same formulas, the sum in another order, so within
    an ULP or two of the whole-row form (and the same non-finite entries)."""
    monkeypatch.setattr(formulas, "SEGMENT", 700)
    info = dtype_info(dtype)
    X = info.round(batch(scale=10.0)).astype(info.np_dtype)
    for name, fn in (("stable", formulas.stable_softmax), ("naive", formulas.naive_softmax),
                     ("divfree", formulas.divfree_softmax)):
        for log in (False, True):
            a = np.asarray(fn(X, info, log), dtype=np.float64)
            b = np.asarray(formulas._segmented(name, X, info, log), dtype=np.float64)
            assert np.array_equal(np.isfinite(a), np.isfinite(b))
            fin = np.isfinite(a) & (a != 0)
            # relative to s (log: to the largest |y| of the row, the size log's rounding has)
            scale = np.abs(a) if not log else np.max(np.abs(np.where(np.isfinite(a), a, 0)),
                                                     axis=-1, keepdims=True) * np.ones_like(a)
            assert np.all(np.abs(a[fin] - b[fin]) <= 4 * info.u * scale[fin] + 1e-300)


def test_long_rows_through_the_cli(cli, monkeypatch, tmp_path):
    """The command line takes the long path for a long row of a file: the same JSON as the
    whole pipeline but for the shifted references' words; --verify-reference is refused."""
    x = batch()
    np.save(tmp_path / "x.npy", x)
    monkeypatch.setattr(longrow, "LONG_ROW", 10 ** 12)
    whole = json.loads(cli("forward", "--x-file", str(tmp_path / "x.npy"), "--dtype",
                           "float32", "--json").out)
    monkeypatch.setattr(longrow, "LONG_ROW", 1000)
    monkeypatch.setattr(longrow, "SEGMENT", 333)
    long = json.loads(cli("forward", "--x-file", str(tmp_path / "x.npy"), "--dtype",
                          "float32", "--json").out)
    assert differences(whole, long) == []
    r = cli("forward", "--x-file", str(tmp_path / "x.npy"), "--verify-reference")
    assert r.code == 2 and r.err.startswith("error: --verify-reference")
    r = cli("forward", "--x-file", str(tmp_path / "x.npy"), "--plot", str(tmp_path / "p.png"))
    assert r.code == 2 and r.err.startswith("error: --plot draws every entry")
    assert len(r.err.splitlines()) == 1


def test_progress_counts_the_six_passes_over_each_row(monkeypatch):
    """Progress comes in entries of the passes over each row (the row and its two shifts,
    twice each), adding up to the total it announces; the control is the number of calls."""
    monkeypatch.setattr(longrow, "LONG_ROW", 1000)
    monkeypatch.setattr(longrow, "SEGMENT", 333)
    calls = []
    x = batch()
    check_rows("forward", x, Options(), workers=1, progress=lambda k, total: calls.append(
        (k, total)))
    assert {total for _, total in calls} == {6 * x.size}
    assert sum(k for k, _ in calls) == 6 * x.size
    assert len(calls) == 6 * 3 * 7  # 7 segments of 333 in a row of 2000, 3 rows


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_an_implementation_gets_c_order_rows_from_a_fortran_order_batch(dtype, monkeypatch):
    """Rows of a Fortran-order batch are strided; a batched implementation is handed them in C
    order (its sums along a row depend on the layout), by the long-row pipeline as by the
    whole-row one (smcheck.run._prepare), and the report is the C-order batch's. The control:
    the same callable sees the Fortran layout when it is called on the array directly."""
    seen = []

    def softmax(x):
        seen.append(bool(np.asarray(x).flags.c_contiguous))
        return running(x)

    x = np.asfortranarray(batch().astype(dtype))
    assert not x[1].flags.c_contiguous  # the control: a row of it is strided
    kw = {"impl": softmax, "dtype": dtype, "batched": True}
    f_whole, f_long = whole_and_long(x, monkeypatch, **kw)
    assert seen and all(seen)
    c_whole, c_long = whole_and_long(np.ascontiguousarray(x), monkeypatch, **kw)
    assert f_whole["checks"] == c_whole["checks"] and f_long["checks"] == c_long["checks"]
    seen.clear()
    softmax(x)
    assert seen == [False]
