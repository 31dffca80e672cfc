"""The derivative commands through the real entry point: exit codes, JSON, messages."""

import pytest



def test_vjp_gate_builtin_passes_wrong_callable_fails(cli, monkeypatch):
    monkeypatch.syspath_prepend(".")
    r = cli("vjp", "--x-file", "examples/logits.txt", "--check", "--quiet")
    assert r.code == 0
    r = cli("vjp", "--x-file", "examples/logits.txt", "--impl",
            "examples.wrong_impls:vjp_plus", "--check", "--quiet")
    assert r.code == 1


def test_claims_check_lists_seven_claims(cli):
    r = cli("claims", "--check", "--json")
    doc = r.json()
    assert r.code == 0 and doc["passed"]
    assert [c["name"] for c in doc["checks"]] == [
        "shift_invariance", "jacobian_formula", "jacobian_symmetry", "log_softmax_jacobian",
        "vjp_formula", "loss_gradient", "zero_condition"]
    for c in doc["checks"]:
        assert float(c["measured"]) < 1e-45  # near 10^-dps, dps = 50


def test_loss_zero_condition_example(cli):
    args = ("loss", "--x-file", "examples/zero_z/x.txt", "--v-file", "examples/zero_z/v.txt",
            "--t-file", "examples/zero_z/t.txt")
    r = cli(*args, "--check")
    out = r.out
    assert r.code == 3  # the input, not the implementation: an input condition (SPEC)
    assert "index 2" in out and "v_2 = -0.6983744232164841" in out and "<v, s>" in out
    assert "INPUT CONDITION" in out
    r = cli(*args, "--json")
    doc = r.json()
    assert r.code == 0
    assert doc["passed"] is True
    assert [c["kind"] for c in doc["input_conditions"]] == ["zero_condition"]
    zc_check = next(c for c in doc["checks"] if c["name"] == "zero_condition")
    assert zc_check["status"] == "input_condition" and zc_check["kind"] == "input"
    zc = doc["zero_condition"]
    assert [0, 2] in zc["unreliable_indices"] + zc["exact_zero_indices"]
    assert zc["<v,s>"][0]["value"].startswith("-0.6983744232164841")


def test_loss_benign_passes(cli):
    r = cli("loss", "--x-file", "examples/logits.txt", "--t", "0,0,0,1,0,0,0,0", "--check",
            "--quiet")
    assert r.code == 0


def test_jacobian_strict_names_cancelled_entries(cli, monkeypatch):
    monkeypatch.syspath_prepend(".")
    r = cli("jacobian", "--preset", "one-hot", "--impl",
            "examples.wrong_impls:jacobian_textbook", "--metric", "strict", "--check")
    assert r.code == 1 and "cancellation" in r.out and "(0, 0)" in r.out
    r = cli("jacobian", "--preset", "one-hot", "--metric", "strict", "--check")
    assert r.code == 0


def test_jacobian_json_and_log_has_no_symmetry(cli):
    r = cli("jacobian", "--x", "1,2,3", "--log", "--json")
    doc = r.json()
    assert r.code == 0 and doc["command"] == "jacobian"
    assert [c["name"] for c in doc["checks"]] == ["reference", "finite_difference", "zero_sums",
                                                  "shift_invariance"]
    assert len(doc["result"]) == 1 and len(doc["result"][0]) == 3  # [rows][n][n]


@pytest.mark.parametrize("argv,needle", [
    (("jacobian", "--x", "1,2", "--fd", "forward"), "--fd"),
    (("jacobian", "--x", "1,2", "--metric", "loose"), "--metric"),
    (("vjp", "--x", "1,2", "--v", "1,2,3"), "--v"),
    (("vjp", "--x", "1,2", "--v", "1,nan"), "--v"),
    (("loss", "--x", "1,2"), "--t"),
    (("loss", "--x", "1,2", "--t", "1,0", "--v", "1,2", "--z", "0.5,0.5"), "not both"),
    (("claims", "--claim", "bogus"), "unknown claim"),
])
def test_derivative_input_errors(cli, argv, needle):
    r = cli(*argv)
    assert r.code == 2 and r.out == ""
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0]
