"""The sweep (its verdicts equal the per-command runs; JSON and JUnit parsed back) and the
Python API with its assertion helper."""

import xml.etree.ElementTree as ET

import numpy as np
import pytest

import smcheck
from smcheck.presets import PRESETS
from smcheck.sweep import COMMANDS, junit_xml, one_hot_targets, run_case, run_sweep


def test_sweep_verdicts_match_per_command_runs():
    res = run_sweep("naive", ["float64", "float16"], ["benign", "overflow"])
    assert len(res.cases) == 2 * 2 * len(COMMANDS)
    for c in res.cases:
        rep = run_case(c["command"], PRESETS[c["preset"]].make(), "naive", c["dtype"], 50)
        assert rep.passed == c["passed"], c
    assert not res.passed  # naive fails shift invariance everywhere


def test_sweep_stable_passes_every_fast_preset():
    res = run_sweep("stable", "all", [p for p in PRESETS if p != "large-n"])
    assert res.passed, [c for c in res.cases if not c["passed"]][:3]


def test_junit_is_valid_and_carries_the_numbers():
    res = run_sweep("naive", ["float64"], ["overflow", "benign"], commands=("forward", "vjp"))
    root = ET.fromstring(junit_xml(res))
    cases = root.findall(".//testcase")
    assert len(cases) == 4
    assert int(root.get("failures")) == sum(not c["passed"] for c in res.cases) > 0
    failed = [tc for tc in cases if tc.find("failure") is not None]
    assert failed and all("max ULP" in tc.find("failure").get("message") for tc in failed)
    assert {tc.get("name") for tc in cases} == {"overflow.forward", "overflow.vjp",
                                                 "benign.forward", "benign.vjp"}


def test_sweep_cli_json_junit_exit_code(tmp_path, cli):
    out = tmp_path / "out.xml"
    r = cli("sweep", "--impl", "naive", "--preset", "overflow", "--dtype", "float32", "--json",
            "--check", "--junit", out)
    assert r.code == 1
    doc = r.json()
    assert doc["command"] == "sweep" and doc["passed"] is False
    assert {c["command"] for c in doc["cases"]} == set(COMMANDS)
    assert ET.parse(out).getroot().tag == "testsuites"


def test_one_hot_targets_pick_the_max():
    t = one_hot_targets(np.array([[1.0, 3.0, -np.inf], [0.0, -1.0, 2.0]]))
    assert t.tolist() == [[0, 1, 0], [0, 0, 1]]


def bad(x):
    e = np.exp(x - x.max())
    return e / e.max()


def test_assert_correct_raises_with_the_report():
    with pytest.raises(smcheck.SoftmaxCheckError) as exc:
        smcheck.assert_correct(bad, [1.0, 2.0, 3.0])
    msg = str(exc.value)
    assert msg.startswith("smcheck forward: reference") and "normalization" in msg
    assert "exceed their allowance" in msg
    assert isinstance(exc.value, AssertionError) and not exc.value.report.passed
    smcheck.assert_correct("stable", [1000.0, 999.0, 990.0], command="vjp")
    smcheck.assert_correct("stable", [1000.0, 999.0, 990.0], command="log_softmax",
                           dtype="bfloat16")


def test_api_functions():
    rep = smcheck.check("jacobian", [1.0, 2.0], impl="stable")
    assert rep.passed and rep.command == "jacobian"
    assert smcheck.check_claims(np.array([1.0, 2.0])).passed
    with pytest.raises(smcheck.InputError):
        smcheck.check("hessian", [1.0])
