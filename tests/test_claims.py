"""run_claims: every claim holds to 10^-(dps-5) on ordinary and extreme inputs, and each one
fails when the formula (or function) it is about is replaced by a wrong one."""

import math

import mpmath
import numpy as np
import pytest

import smcheck.claims as claims
from smcheck.claims import CLAIMS, run_claims
from smcheck.exceptions import InputError
from smcheck.report import report_json

NAMES = ["shift_invariance", "jacobian_formula", "jacobian_symmetry", "log_softmax_jacobian",
         "vjp_formula", "loss_gradient", "zero_condition"]

INPUTS = {
    "random": np.random.default_rng(7).standard_normal(5),
    "large": np.array([1000.0, 999.0, 990.0]),
    "one_hot_like": np.array([50.0, 0.0, 0.0, 0.0]),
    "masked": np.array([0.0, -np.inf, 3.0, -np.inf, 1.0]),
    "batch_with_undefined": np.array([[1.0, 2.0, 3.0], [np.nan, 0.0, 0.0]]),
    "extreme_range": np.array([1e308, -1e308, 0.0]),
    "tiny_probability": np.array([0.0, -1e6, 1.0]),
    "single": np.array([7.0]),
}


def by_name(report):
    return {c.name: c for c in report.checks}


def check_passes(report, dps):
    assert [c.name for c in report.checks] == NAMES
    for c in report.checks:
        assert c.passed, (c.name, c.failures)
        assert c.statement == CLAIMS[c.name]
        # the discrepancy as text keeps its size where float() would give 0.0
        assert mpmath.mpf(c.details["discrepancy"]) < mpmath.mpf(10) ** -(dps - 5)
        assert c.measured == c.details["discrepancy"]
        assert c.tolerance["dps"] == dps
        assert c.max_ulp is None


def test_claim_names_and_order():
    assert list(CLAIMS) == NAMES
    for statement in CLAIMS.values():
        assert statement and "\n" not in statement


@pytest.mark.parametrize("dps", [30, 60])
@pytest.mark.parametrize("case", list(INPUTS))
def test_every_claim_holds(case, dps):
    report = run_claims(INPUTS[case], dps=dps)
    check_passes(report, dps)
    assert report.command == "claims" and report.impl == "mpmath" and report.dtype == "mpmath"
    assert report.dps == dps and report.reference == f"mpmath, {dps} significant digits"
    assert report.options["claims"] == NAMES and report.options["seed"] == 0
    assert report.passed


def test_batch_lists_undefined_rows_and_checks_the_others():
    x = np.array([[1.0, 2.0, 3.0], [np.nan, 0.0, 0.0], [-np.inf] * 3, [0.0, np.inf, 1.0],
                  [-np.inf, 5.0, -3.0]])
    report = run_claims(x, dps=30)
    check_passes(report, 30)
    assert report.shape == [5, 3]
    assert [u["row"] for u in report.undefined_rows] == [1, 2, 3]
    assert "nan" in report.undefined_rows[0]["reason"]
    assert "-inf" in report.undefined_rows[1]["reason"]
    assert "+inf" in report.undefined_rows[2]["reason"]
    assert {c.worst["row"] for c in report.checks} <= {0, 4}


def test_masked_coordinates_are_left_out():
    report = run_claims(INPUTS["masked"], dps=30)
    for c in report.checks:
        index = c.worst["index"]
        for i in (index if isinstance(index, list) else [index]):
            assert i in (None, 0, 2, 4)
        assert any("masked" in n for n in c.notes)


def test_nothing_defined():
    report = run_claims(np.array([[np.nan, 1.0], [-np.inf, -np.inf]]), dps=30)
    assert report.checks == [] and len(report.undefined_rows) == 2
    assert report.notes and report.shape == [2, 2]


def test_discrepancies_below_float_range_are_reported_as_text():
    report = run_claims([0.5, -1.0, 2.0], dps=400)
    check_passes(report, 400)
    c = by_name(report)["jacobian_formula"]
    assert c.max_rel_err == 0.0 and c.tolerance["atol"] == 0.0  # both underflow in float
    assert c.measured != "0" and mpmath.mpf(c.measured) > 0
    assert mpmath.mpf(c.allowed) == mpmath.mpf("1e-395")


def test_tiny_probabilities_stay_visible():
    # s_1 = exp(-1e6) ~ 1e-434294: positive, and the zero condition's construction works there
    report = run_claims(INPUTS["tiny_probability"], dps=30)
    zc = by_name(report)["zero_condition"]
    assert zc.details["min_s"].endswith("e-434296")
    row = {d["k"]: d for d in zc.details["constructed"]}
    assert row[1]["v_k"] == row[1]["<v,s>"]


def test_constructed_examples_balance_v_k():
    report = run_claims(INPUTS["random"], dps=50)
    shown = by_name(report)["zero_condition"].details["constructed"]
    assert [d["k"] for d in shown] == [0, 1, 2, 3, 4]
    for d in shown:
        assert d["v_k"] == d["<v,s>"]  # equal to 20 digits
        assert abs(mpmath.mpf(d["z_k"])) < mpmath.mpf(10) ** -45


def test_columns_subset_for_large_rows():
    x = np.random.default_rng(1).standard_normal(40)
    report = run_claims(x, dps=25, claim=["jacobian_formula", "shift_invariance"])
    check_passes_names = [c.name for c in report.checks]
    assert check_passes_names == ["shift_invariance", "jacobian_formula"]
    assert all(c.passed for c in report.checks)
    jf = by_name(report)["jacobian_formula"]
    assert any("of 40 columns" in n for n in jf.notes)
    assert not any("columns" in n for n in by_name(report)["shift_invariance"].notes)


# --- each claim can fail -----------------------------------------------------------------

def _fails(monkeypatch, attr, fake, name, x=None, only=True):
    monkeypatch.setattr(claims, attr, fake)
    report = run_claims(INPUTS["random"] if x is None else x, dps=30)
    checks = by_name(report)
    assert not checks[name].passed
    assert checks[name].failures and "discrepancy" in checks[name].failures[0]
    assert mpmath.mpf(checks[name].measured) > mpmath.mpf(10) ** -25
    if only:  # the other claims do not use this formula
        assert [c.name for c in report.checks if not c.passed] == [name]
    return checks[name]


def test_shift_invariance_can_fail(monkeypatch):
    def not_shift_invariant(x):
        e = [mpmath.exp(xi) for xi in x]
        S = 1 + mpmath.fsum(e)
        return [ei / S for ei in e]

    _fails(monkeypatch, "softmax", not_shift_invariant, "shift_invariance", only=False)


def test_jacobian_formula_can_fail(monkeypatch):
    def no_diagonal(s, k):
        return [-si * s[k] for si in s]

    c = _fails(monkeypatch, "jacobian_formula", no_diagonal, "jacobian_formula")
    assert c.worst["index"][0] == c.worst["index"][1]


def test_jacobian_formula_error_on_a_tiny_probability_is_seen(monkeypatch):
    # s_1 ~ 1e-88: an error of 1e-10 relative there is ~1e-98 absolute, far below the
    # allowance 1e-25 in absolute terms; the column scale s_k makes it visible
    real = claims.jacobian_formula

    def off_on_1(s, k):
        col = real(s, k)
        if k == 1:
            col[1] *= 1 + mpmath.mpf("1e-10")
        return col

    c = _fails(monkeypatch, "jacobian_formula", off_on_1, "jacobian_formula",
               x=np.array([0.0, -200.0, 1.0]))
    assert c.worst["index"] == [1, 1]


def test_jacobian_symmetry_can_fail(monkeypatch):
    real = claims.softmax

    def asymmetric(x):  # adds s_i / 100 to column 0 of the derivative only
        return [si * (1 + x[0] / 100) for si in real(x)]

    c = _fails(monkeypatch, "softmax", asymmetric, "jacobian_symmetry", only=False)
    assert 0 in c.worst["index"]


def test_log_softmax_jacobian_can_fail(monkeypatch):
    def wrong_sign(s, k):
        return [(1 if i == k else 0) + s[k] for i in range(len(s))]

    _fails(monkeypatch, "log_softmax_jacobian_formula", wrong_sign, "log_softmax_jacobian")


def test_vjp_formula_can_fail(monkeypatch):
    def plus(s, v):
        vs = mpmath.fdot(v, s)
        return [si * (vi + vs) for si, vi in zip(s, v)]

    monkeypatch.setattr(claims, "vjp_formula", plus)
    checks = by_name(run_claims(INPUTS["random"], dps=30))
    assert not checks["vjp_formula"].passed
    # the zero condition's converse, z_i = s_i (v_i - <v, s>), relies on the same formula
    assert not checks["zero_condition"].passed
    assert [n for n, c in checks.items() if not c.passed] == ["vjp_formula", "zero_condition"]


def test_vjp_zero_sum_part_can_fail(monkeypatch):
    real = claims.vjp_formula

    def shifted(s, v):  # right at every checked entry but one: its sum is no longer 0
        z = real(s, v)
        z[0] += mpmath.mpf("1e-3")
        return z

    monkeypatch.setattr(claims, "vjp_formula", shifted)
    c = by_name(run_claims(INPUTS["random"], dps=30, claim="vjp_formula"))["vjp_formula"]
    assert not c.passed


def test_loss_gradient_can_fail(monkeypatch):
    def squared(z, t):
        return [-ti / zi**2 for zi, ti in zip(z, t)]

    _fails(monkeypatch, "loss_gradient_formula", squared, "loss_gradient")


def test_zero_condition_can_fail(monkeypatch):
    def unbalanced(s, v, k):  # <v, s> of the original v: not a solution of v_k = <v, s>
        return mpmath.fdot(v, s)

    c = _fails(monkeypatch, "balancing_value", unbalanced, "zero_condition")
    assert c.details["constructed"][0]["v_k"] != c.details["constructed"][0]["<v,s>"]


# --- options -----------------------------------------------------------------------------

def test_claim_filter():
    report = run_claims(INPUTS["random"], claim="vjp_formula", dps=30)
    assert [c.name for c in report.checks] == ["vjp_formula"]
    assert report.options["claims"] == ["vjp_formula"]
    # CLAIMS order, whatever order they are asked in
    report = run_claims(INPUTS["random"], claim=["zero_condition", "shift_invariance"], dps=30)
    assert [c.name for c in report.checks] == ["shift_invariance", "zero_condition"]


def test_unknown_claim():
    with pytest.raises(InputError) as err:
        run_claims(INPUTS["random"], claim="foo")
    assert str(err.value) == f"unknown claim 'foo' (claims: {', '.join(NAMES)})"


@pytest.mark.parametrize("dps", [19, 0, -5, 30.5])
def test_bad_dps(dps):
    with pytest.raises(InputError):
        run_claims(INPUTS["random"], dps=dps)


def test_mpmath_precision_is_unchanged():
    mpmath.mp.dps = 23
    run_claims(INPUTS["random"], dps=40)
    assert mpmath.mp.dps == 23
    with pytest.raises(InputError):
        run_claims(INPUTS["random"], dps=40, v=[1.0, 2.0])
    assert mpmath.mp.dps == 23


def test_v_and_t_reproducible_and_given():
    a = run_claims(INPUTS["random"], dps=30, seed=3)
    b = run_claims(INPUTS["random"], dps=30, seed=3)
    c = run_claims(INPUTS["random"], dps=30, seed=4)
    za = by_name(a)["zero_condition"].details["constructed"]
    assert za == by_name(b)["zero_condition"].details["constructed"]
    assert za != by_name(c)["zero_condition"].details["constructed"]
    assert a.options["v"] == "random"

    v = np.array([1.0, -2.0, 0.5, 3.0, 0.0])
    given = run_claims(INPUTS["random"], dps=30, v=v, t=np.ones(5))
    check_passes(given, 30)
    assert given.options["v"] == "given" and given.options["t"] == "given"
    s = np.exp(INPUTS["random"]) / np.exp(INPUTS["random"]).sum()
    shown = by_name(given)["zero_condition"].details["constructed"]
    assert math.isclose(float(shown[0]["<v,s>"]),
                        (s[1:] @ v[1:]) / s[1:].sum(), rel_tol=1e-12)
    # one v for every row of a batch, or one per row
    x2 = np.vstack([INPUTS["random"], INPUTS["random"][::-1]])
    check_passes(run_claims(x2, dps=30, v=v), 30)
    check_passes(run_claims(x2, dps=30, v=np.vstack([v, -v]), t=np.full((2, 5), 2.0)), 30)


@pytest.mark.parametrize("kw", [{"v": [1.0, 2.0]}, {"t": np.ones((3, 5))},
                                {"v": [1.0, np.nan, 0, 0, 0]}, {"t": [1.0, np.inf, 0, 0, 0]}])
def test_bad_v_or_t(kw):
    with pytest.raises(InputError):
        run_claims(INPUTS["random"], dps=30, **kw)


@pytest.mark.parametrize("x", [[], [[[1.0]]], "abc"])
def test_bad_x(x):
    with pytest.raises(InputError):
        run_claims(x)


def test_json_ready():
    import json

    from smcheck.results import jsonable

    report = run_claims(INPUTS["masked"], dps=30)
    text = json.dumps(report_json(report, "0"))
    doc = json.loads(text)
    assert [c["name"] for c in doc["checks"]] == NAMES
    assert doc["checks"][-1]["constructed"]
    assert jsonable(report.options)["claims"] == NAMES
