"""Sums of equal terms (smcheck.coherence): a running sum adds copies of one value with the
same rounding each time, so a correct softmax summed one term after another drifts by up to
(n - 1) u on rows such as [30, 0, ..., 0]; the allowance takes that in for the row's shared
factor only, and an entry's error of its own still fails.

The running sum here is np.cumsum, which adds term after term (numpy's np.sum is pairwise).
Each expectation is decided without the allowance under test: the sum's real error from
math.fsum, and the mutants' errors are of a different shape (per entry, not per row)."""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest

import smcheck
import smcheck.coherence as coh
from smcheck.dtypes import dtype_info
from smcheck.impls.builtin import Builtin
from smcheck.tolerance import LAMBDA, normalization_allowance, summation_allowance

N64, N32 = 10_000, 100_000


def dominant(n: int, big: float) -> np.ndarray:
    """One logit ``big`` at index 5, the other n - 1 equal (0): a peaked classifier's row."""
    return np.where(np.arange(n) == 5, big, 0.0)


ROWS = {  # (dtype, x): rows on which a running sum drifts past the usual allowance
    "float64 [30, 0 x 9999]": ("float64", dominant(N64, 30.0)),
    "float32 [10, 0 x 99999]": ("float32", dominant(N32, 10.0)),
    "float32 integers 0..9": ("float32",
                              np.random.default_rng(0).integers(0, 10, N32).astype(float)),
}


def running(x):
    """softmax with its sum taken one term after another, in x's dtype: a correct method."""
    e = np.exp(x - np.max(x))
    return e / np.cumsum(e)[-1]


def running_log(x):
    d = x - np.max(x)
    return d - np.log(np.cumsum(np.exp(d))[-1])


def running_vjp(x, v):
    s = running(x)
    return s * (v - np.sum(v * s))


def narrow(x):
    """exp in a narrower format than x's (float32 for float64, float16 for float32)."""
    return np.float32 if x.dtype == np.float64 else np.float16


def exp_narrow(x):
    e = np.exp((x - np.max(x)).astype(narrow(x))).astype(x.dtype)
    return e / np.sum(e)


def exp_narrow_log(x):
    return np.log(exp_narrow(x))


def vjp_mean(x, v):
    """<v, 1>/n for <v, s>: a wrong VJP."""
    return running(x) * (v - np.mean(v))


def vjp_exp_narrow(x, v):
    s = exp_narrow(x)
    return s * (v - np.sum(v * s))


@pytest.fixture
def usual_only(monkeypatch):
    """The usual allowance alone: no row's equal terms are counted."""
    monkeypatch.setattr(coh, "coherence", lambda *a, **k: None)


def _v(n):
    return np.random.default_rng(1).standard_normal(n)


@pytest.mark.parametrize("name", list(ROWS))
def test_the_running_sum_really_drifts_there(name):
    """Independent of smcheck's allowance: the running sum's error is beyond the usual
    sigma(n) u (so those rows need the rule) and within the deterministic (n - 1) u."""
    dtype, x = ROWS[name]
    info = dtype_info(dtype)
    e = np.exp((x - x.max()).astype(info.np_dtype))
    exact = math.fsum(e.astype(np.float64))
    err = abs(float(np.cumsum(e)[-1]) - exact) / exact
    assert summation_allowance(x.size, info) * info.u < err <= (x.size - 1) * info.u


@pytest.mark.parametrize("command, fn", [("forward", running), ("log_softmax", running_log),
                                         ("vjp", running_vjp)])
@pytest.mark.parametrize("name", list(ROWS))
def test_a_running_sum_passes_where_equal_terms_repeat(name, command, fn):
    dtype, x = ROWS[name]
    kw = {"v": _v(x.size)} if command == "vjp" else {}
    assert smcheck.check(command, x, impl=fn, dtype=dtype, **kw).passed


@pytest.mark.parametrize("command, fn", [("forward", running), ("log_softmax", running_log),
                                         ("vjp", running_vjp)])
@pytest.mark.parametrize("name", ["float64 [30, 0 x 9999]", "float32 integers 0..9"])
def test_control_the_usual_allowance_alone_fails_it(usual_only, name, command, fn):
    dtype, x = ROWS[name]
    kw = {"v": _v(x.size)} if command == "vjp" else {}
    assert not smcheck.check(command, x, impl=fn, dtype=dtype, **kw).passed


@pytest.mark.parametrize("command, fn", [("forward", exp_narrow), ("log_softmax", exp_narrow_log),
                                         ("vjp", vjp_mean), ("vjp", vjp_exp_narrow)])
@pytest.mark.parametrize("name", ["float64 [30, 0 x 9999]", "float32 integers 0..9"])
def test_an_error_of_the_entries_own_still_fails_there(name, command, fn):
    """exp in a narrower format, or a wrong dot product: not one factor per row."""
    dtype, x = ROWS[name]
    kw = {"v": _v(x.size)} if command == "vjp" else {}
    rep = smcheck.check(command, x, impl=fn, dtype=dtype, **kw)
    assert "reference" in {c.name for c in rep.checks if not c.passed}


def test_torch_jacobian_probes_on_a_long_dominant_row():
    """n = 10^5, [30, 0 x 99,999] in float64: torch's probes v^T J u were 1.7 times their
    allowance (the drift of 1 - s_max, 9.4e-9, by 1.2e-12) and 1^T J u as much; the factor
    fitted on the probes covers both, and a Jacobian with a wrong sign still fails."""
    pytest.importorskip("torch")
    x = dominant(100_000, 30.0)
    rep = smcheck.check("jacobian", x, impl="torch", dtype="float64", max_dense=64)
    assert rep.passed

    class WrongSign(Builtin):  # its VJP (the probes use it) with + <v, s>
        def vjp(self, X, V, info):
            s = super().softmax(X, info)
            return s * (V + np.sum(V * s, axis=-1, keepdims=True))

    bad = smcheck.check("jacobian", x, impl=WrongSign("stable"), dtype="float64",
                        max_dense=64)
    assert "reference" in {c.name for c in bad.checks if not c.passed}


def test_a_sum_off_by_more_than_drift_fails_normalization():
    """Every entry divided by a sum 1 + 1e-9 too large (10^5 times what drift may do on
    [30, 0 x 9999] in float64): one shared factor, beyond the drifting sum's allowance."""
    x = ROWS["float64 [30, 0 x 9999]"][1]
    rep = smcheck.check("forward", x, impl=lambda x: running(x) / (1 + 1e-9), dtype="float64")
    assert {"reference", "normalization"} <= {c.name for c in rep.checks if not c.passed}


def running_jacobian(x):
    s = running(x)
    return np.diag(s) - np.outer(s, s)


def jacobian_exp_narrow(x):
    s = exp_narrow(x)
    return np.diag(s) - np.outer(s, s)


@pytest.mark.parametrize("dtype, big", [("float64", 30.0), ("float32", 10.0)])
def test_a_dense_jacobian_from_a_running_sum(dtype, big):
    """n = 2048 (dense): the running sum drifts past sigma(n) = 237 in float64; J built on it
    passes, J built on exp in a narrower format fails there."""
    x = dominant(2048, big)
    assert smcheck.check("jacobian", x, impl=running_jacobian, dtype=dtype).passed
    bad = smcheck.check("jacobian", x, impl=jacobian_exp_narrow, dtype=dtype)
    assert "reference" in {c.name for c in bad.checks if not c.passed}


def test_control_a_dense_jacobian_from_a_running_sum_fails_the_usual_allowance(usual_only):
    rep = smcheck.check("jacobian", dominant(2048, 30.0), impl=running_jacobian,
                        dtype="float64")
    assert {"reference", "zero_sums"} <= {c.name for c in rep.checks if not c.passed}


@pytest.mark.parametrize("command", ["forward", "log_softmax", "vjp", "jacobian", "loss"])
def test_torch_passes_on_one_dominant_logit_and_the_rest_equal(command):
    """torch's CPU kernel sums per SIMD lane, one term after another: on [30, 0 x 9999] in
    float64 its normaliser is off by about 10^3 ULP, beyond the usual sigma(n) = 514 and
    within the drift's (n - 1) u. It passes every command (the loss: -t/z and the gradient in
    x through its softmax)."""
    torch = pytest.importorskip("torch")
    x = ROWS["float64 [30, 0 x 9999]"][1]
    e = torch.softmax(torch.tensor(x), -1).numpy()
    off = abs(math.fsum(e) - 1)
    u = 2.0 ** -53
    assert summation_allowance(x.size, dtype_info("float64")) * u < off <= (x.size - 1) * u
    assert 800 * u < off < 1400 * u  # README: 1,074 u
    kw = {"v": _v(x.size)} if command == "vjp" else {}
    if command == "jacobian":
        kw["max_dense"] = 64  # probes
    if command == "loss":  # the gradient in x through torch's own softmax
        kw["t"] = np.where(np.arange(x.size) == 7, 1.0, 0.0)
    assert smcheck.check(command, x, impl="torch", dtype="float64", **kw).passed


# --- the count itself ---------------------------------------------------------------------------


def _independent_G(d, info):
    """G from the module docstring's formula with collections.Counter, in plain floats."""
    fin = [v for v in d if math.isfinite(v)]
    counts = collections.Counter(fin)
    S = math.fsum(k * math.exp(v) for v, k in counts.items())
    acc = 2.0 ** -53 if info.name == "float64" else 2.0 ** -24
    kw = [k * min(math.exp(v) / (acc * S), 1.0) for v, k in counts.items()]
    return min(LAMBDA * math.sqrt(math.fsum(w * w for w in kw)), math.fsum(kw), 0.25 / acc)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_coherent_terms_against_an_independent_count(dtype):
    info = dtype_info(dtype)
    rng = np.random.default_rng(3)
    rows = [np.r_[0.0, np.full(999, -30.0)],  # one group: the deterministic sum of weights
            rng.integers(-9, 1, 5000).astype(float),  # ten groups: Hoeffding over groups
            np.r_[0.0, np.full(300, -800.0), np.full(50, -np.inf), np.full(20, -2.0)]]
    for d in rows:
        assert coh.coherent_terms(d, info) == pytest.approx(_independent_G(d, info), rel=1e-12)
    assert coh.coherent_terms(-rng.random(1000), info) == 0  # no value repeats


def test_terms_far_below_the_sums_spacing_weigh_their_size():
    """[0, -800 x 300]: exp(-800) = 0 in float64, nothing to round: the 300 copies weigh 0
    and G stays below the usual lambda sqrt(n); [0, -40 x 300]: each copy may be lost whole
    (e^-40 < u), 300 e^-40 / u = 1.3 in all."""
    info = dtype_info("float64")
    assert coh.coherent_terms(np.r_[0.0, np.full(300, -800.0)], info) <= LAMBDA * math.sqrt(301)
    assert coh.coherent_terms(np.r_[0.0, np.full(300, -40.0)], info) == pytest.approx(
        1 + 300 * math.exp(-40) / 2.0 ** -53, rel=1e-9)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_sixteen_bit_formats_count_no_groups(dtype):
    """Their sums are float32's, 2^-13 (2^-16) of their u: nothing to widen."""
    assert coh.coherent_terms(np.r_[0.0, np.full(999, -5.0)], dtype_info(dtype)) == 0.0


def test_only_failing_rows_are_counted(monkeypatch):
    """The count sorts a row: rows that pass the usual allowance are never counted."""
    seen = []
    real = coh.coherent_terms
    monkeypatch.setattr(coh, "coherent_terms",
                        lambda d, info: seen.append(np.unique(d).size) or real(d, info))
    X = np.stack([np.random.default_rng(5).standard_normal(N64) * 3] * 3)
    assert smcheck.check("forward", X, impl=running, dtype="float64").passed
    assert not seen
    X[1] = dominant(N64, 30.0)
    assert smcheck.check("forward", X, impl=running, dtype="float64").passed
    assert seen and set(seen) == {2}  # row 1 alone (two values), wherever it failed


def test_the_readme_figures():
    """README "Equal terms drift": np.cumsum's running sum on [30, 0 x 9,999] in float64 is
    off by about 8,600 u (0.86 (n - 1) u, 17 times sigma(n) = 514); on [15, 0 x 999,999] in
    float32 by about 4 %; the pairwise np.sum within 10 u on both."""
    for dtype, x, lo, hi in (("float64", dominant(N64, 30.0), 8000, N64 - 1),
                             ("float32", dominant(10 ** 6, 15.0), 0.03 / 2.0 ** -24,
                              0.05 / 2.0 ** -24)):
        info = dtype_info(dtype)
        e = np.exp((x - x.max()).astype(info.np_dtype))
        exact = math.fsum(e.astype(np.float64))
        in_u = abs(float(np.cumsum(e)[-1]) - exact) / exact / info.u
        assert lo <= in_u <= hi, (dtype, in_u)
        assert abs(float(np.sum(e)) - exact) / exact / info.u <= 10.5
    assert summation_allowance(N64, dtype_info("float64")) == 514
    # the float32 row's sum may be 6 % off: n u, the drift's deterministic bound
    f32, x = dtype_info("float32"), dominant(10 ** 6, 15.0)
    d = (x - x.max())[None]
    G = coh.coherence(d, f32, [0])
    assert G is not None and G[0] == pytest.approx(10 ** 6)  # every term, the max too
    s = np.exp(d) / np.sum(np.exp(d))
    assert normalization_allowance(d, s, f32, coherent=G)[0] == pytest.approx(0.06, abs=0.001)


def test_the_drift_allowance_stays_below_the_sum(monkeypatch):
    """A sum allowed to drift is never allowed to be as large as itself: G u_acc <= 1/4. On
    [0, a x (10^7 - 1)] in float32, a = log(0.49 * 2^-23) (each copy of e^a under half the
    spacing at 1), a running sum stays at 1 and drops every copy: 37 % of the exact sum
    (math.fsum). Uncounted, G = sum k w would allow that loss; the cap fails it."""
    f32 = dtype_info("float32")
    n, a = 10 ** 7, float(np.log(np.float32(0.49 * 2.0 ** -23)))
    d = np.full((1, n), a)
    d[0, 0] = 0.0
    e = np.exp(d)
    S = math.fsum(e[0])
    lost = (S - 1.0) / S  # a running sum that adds nothing to its first term, 1
    assert np.float32(1.0) + np.float32(math.exp(a)) == np.float32(1.0)  # each copy is lost
    assert 0.36 < lost < 0.38
    s = e / S
    G = coh.coherence(d, f32, [0])
    assert G is not None and G[0] * 2.0 ** -24 == 0.25
    allowed = normalization_allowance(d, s, f32, coherent=G)[0]
    assert 0.25 < allowed < 0.26 < lost
    # control: without the cap, the sum's own loss would pass
    monkeypatch.setattr(coh, "G_MAX", math.inf)
    G = coh.coherence(d, f32, [0])
    assert normalization_allowance(d, s, f32, coherent=G)[0] > lost


def test_the_drift_note_names_the_rows_in_any_chunking():
    """The normalization check notes the rows whose sums were allowed their drift (a
    "drift" finding: how many, and the first), the same for one chunk or a chunk a row, and
    the document follows the schema."""
    from smcheck import __version__
    from smcheck.jsondoc import report_json
    from smcheck.options import Options
    from smcheck.run import check_rows
    from smcheck.schema import errors

    rng = np.random.default_rng(9)
    X = np.stack([rng.standard_normal(N64), dominant(N64, 30.0), rng.standard_normal(N64),
                  dominant(N64, 20.0)])
    docs = [report_json(check_rows("forward", X, Options(impl=running, dtype="float64"),
                                   workers=w, chunk_rows=c), __version__)
            for w, c in ((1, None), (2, 1))]
    assert docs[0] == docs[1]
    norm = next(c for c in docs[0]["checks"] if c["name"] == "normalization")
    drift = [f for f in norm["findings"] if f["kind"] == "drift"]
    assert len(drift) == 1 and drift[0]["count"] == 2 and drift[0]["total"] == 4
    assert "row 1: 9,999 equal terms" in drift[0]["message"] and not drift[0]["fails"]
    assert docs[0]["passed"] and not errors(docs[0])
    # no note where no sum drifts
    plain = report_json(check_rows("forward", X[[0, 2]], Options(impl=running,
                                                               dtype="float64")), __version__)
    assert not any(f["kind"] == "drift" for c in plain["checks"] for f in c["findings"])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_counted_a_segment_at_a_time_as_the_whole_row(dtype):
    """A row too long to hold is counted a segment at a time (smcheck.longrow): the same G as
    the whole row's where each segment repeats its values; a value held once in every segment
    is counted alone there (at most one term a segment), so G is at least the distinct
    terms'."""
    info = dtype_info(dtype)
    rng = np.random.default_rng(2)
    for d in (np.r_[0.0, np.full(1999, -30.0)], rng.integers(-9, 1, 2000).astype(float)):
        S = math.fsum(np.exp(d))
        G, k = coh.coherent_segments((d[a:a + 333] for a in range(0, d.size, 333)), S, info)
        assert G == pytest.approx(coh.coherent_terms(d, info), rel=1e-12)
        assert k == np.unique(d, return_counts=True)[1].max()
    d = -rng.random(2000)  # distinct: every term alone
    G, k = coh.coherent_segments((d[a:a + 333] for a in range(0, d.size, 333)),
                                 math.fsum(np.exp(d)), info)
    assert (G, k) == (0.0, 0)


class RunningBuiltin(Builtin):
    """The built-in's formulas on a softmax summed one term after another (its gradient in x
    of the loss is s sum(t) - t on that softmax)."""

    def softmax(self, X, info, log=False):
        return np.stack([running_log(x) if log else running(x) for x in X])


def _loss_of_running(impl):
    x = ROWS["float64 [30, 0 x 9999]"][1]
    t = np.where(np.arange(x.size) == 7, 1.0, 0.0)
    rep = smcheck.check("loss", x, t=t, impl=impl, dtype="float64")
    return rep, next(c for c in rep.checks if c.name == "reference")


def test_the_loss_gradient_in_x_notes_its_drift():
    """The loss's gradient in x from a softmax whose sum drifts (a running sum on
    [30, 0 x 9999] in float64): allowed the row's shared factor, and noted (a "drift"
    finding on the reference check, never a failure); a gradient off by more still fails."""
    rep, ref = _loss_of_running(RunningBuiltin("stable"))
    assert rep.passed and ref.details["grad_x"]["passed"]
    drift = [f for f in ref.findings if f.kind == "drift"]
    assert len(drift) == 1 and not drift[0].fails and "9,999 equal terms" in drift[0].example

    class Off(RunningBuiltin):  # every s 1e-9 too large: beyond what drift allows
        def softmax(self, X, info, log=False):
            return super().softmax(X, info, log) * (1 + 1e-9)

    rep, ref = _loss_of_running(Off("stable"))
    assert not rep.passed and not ref.details["grad_x"]["passed"]


def test_the_loss_gradient_in_x_of_a_drifting_sum_fails_uncounted(usual_only):
    """The control of the test above: with the equal terms not counted, the running sum's
    gradient in x fails."""
    rep, ref = _loss_of_running(RunningBuiltin("stable"))
    assert not rep.passed and not ref.details["grad_x"]["passed"]
