"""--verify-reference: the reference recomputed with more digits agrees within its stated
precision on every preset and command, a corrupted reference is caught, and results are
deterministic (two identical runs give identical JSON)."""

import numpy as np
import pytest

import smcheck
from smcheck.presets import PRESETS, get_preset
from smcheck.reference.verify import PAIR_FLOOR, compare_pairs, stated_bound, verify_dps

COMMANDS = [("forward", {}), ("log_softmax", {}), ("jacobian", {}), ("vjp", {}),
            ("loss", {"t": "one-hot"}), ("loss", {"t": "one-hot", "v": "random"})]


def _kw(kw, x):
    x = np.atleast_2d(x)
    out = dict(kw)
    if out.get("t") == "one-hot":
        out["t"] = np.eye(x.shape[1])[0]
    if out.get("v") == "random":
        out["v"] = np.random.default_rng(1).standard_normal(x.shape[1])
    return out


SMALL = [p for p in PRESETS if p != "large-n"]


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("command,kw", COMMANDS)
def test_reference_verifies_itself_on_every_preset(name, command, kw):
    x = get_preset(name).make()
    rep = smcheck.check(command, x, verify=True, **_kw(kw, x))
    if not rep.checks:  # no defined row (fully masked): nothing to verify
        assert "reference_verification" not in rep.blocks
        return
    b = rep.blocks["reference_verification"]
    assert b["passed"], b
    assert b["recomputed_with"] == "mpmath, 70 significant digits"
    assert all(q["disagreeing"] == 0 and q["entries"] > 0 for q in b["quantities"])


@pytest.mark.parametrize("engine", ["dd", "mpmath"])
@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16"])
def test_both_engines_verify_on_random_and_extreme_rows(engine, dtype):
    rng = np.random.default_rng(7)
    x = np.vstack([rng.standard_normal(300) * 30, np.r_[rng.standard_normal(299) * 3, 1e300],
                   np.r_[-745.0, -700.0, np.zeros(298)]])
    rep = smcheck.check("forward", x, dtype=dtype, engine=engine, verify=True, log=True)
    b = rep.blocks["reference_verification"]
    assert b["passed"], b
    assert b["stated_relative_bound"] == stated_bound(
        type("E", (), {"engine": "double-double" if engine == "dd" else "mpmath", "dps": 50}))


def test_a_wrong_reference_is_caught(monkeypatch):
    """Corrupt one entry of the double-double reference by one ULP of float64: the
    verification names it and the run fails, though every check passes against the
    corrupted reference."""
    import smcheck.reference.dd as engine

    real = engine.softmax_dd

    def corrupt(X, one_minus=False):
        ex = real(X, one_minus)
        ex.s_hi = ex.s_hi.copy()
        ex.s_hi[0, 3] = np.nextafter(ex.s_hi[0, 3], np.inf)
        return ex

    monkeypatch.setattr(engine, "softmax_dd", corrupt)
    x = np.random.default_rng(0).standard_normal(40)
    rep = smcheck.check("forward", x, engine="dd", verify=True)
    b = rep.blocks["reference_verification"]
    assert not b["passed"] and not rep.passed
    q = b["quantities"][0]
    assert q["disagreeing"] == 1 and q["first_disagreeing"] == [[0, 3]]
    assert q["max_rel_diff"] > 1e-17
    text = smcheck.render_text(rep)
    assert "reference verification FAILED" in text and "row 0, index 3" in text
    # without --verify-reference the same run passes: only the verification sees it
    assert all(c.passed for c in rep.checks)
    assert smcheck.check("forward", x, engine="dd").passed


def test_compare_pairs_bound_and_floor():
    rows = np.array([5])
    want = (np.array([[1.0, 1e-320]]), np.zeros((1, 2)))
    ok = compare_pairs("s", (want[0], np.array([[1e-32, 0.0]])), want, want[0], 2.0 ** -100, rows)
    assert ok["disagreeing"] == 0
    bad = compare_pairs("s", (want[0], np.array([[1e-29, 3 * PAIR_FLOOR]])), want, want[0],
                        2.0 ** -100, rows)
    assert bad["disagreeing"] == 2 and bad["first_disagreeing"] == [[5, 0], [5, 1]]
    assert verify_dps(50) == 70 and verify_dps(100) == 120


def test_batch_verification_merges_across_chunks_and_workers():
    from smcheck.options import Options
    from smcheck.run import check_rows

    x = np.random.default_rng(3).standard_normal((10, 30)) * 5
    a = check_rows("forward", x, Options(verify=True), workers=1, chunk_rows=3)
    b = check_rows("forward", x, Options(verify=True), workers=2, chunk_rows=3)
    assert a.blocks["reference_verification"] == b.blocks["reference_verification"]
    q = a.blocks["reference_verification"]["quantities"][0]
    assert q["entries"] == 300 and a.blocks["reference_verification"]["passed"]


@pytest.mark.parametrize("args", [
    ["forward", "--random", "50", "--rows", "3", "--seed", "4"],
    ["forward", "--preset", "overflow", "--log", "--dtype", "bfloat16"],
    ["jacobian", "--random", "12", "--seed", "2"],
    ["vjp", "--random", "5000", "--seed", "1"],
    ["loss", "--random", "10", "--t", "0,0,1,0,0,0,0,0,0,0", "--v", "1,2,3,4,5,6,7,8,9,10"],
    ["claims", "--x", "1,2,3"],
    ["sweep", "--preset", "one-hot", "--dtype", "all"],
])
def test_two_identical_runs_give_identical_json(cli, args):
    """Results are deterministic for a given seed: byte-identical JSON."""

    a, b = cli(*args, "--json"), cli(*args, "--json")
    assert a.code == b.code == 0, a.err  # without --check: 0 whatever the verdict
    assert a.out == b.out
    a.json()


@pytest.mark.parametrize("args", [["forward", "--random", "30", "--rows", "2"],
                                  ["forward", "--random", "30", "--log", "--dtype", "float16"],
                                  ["jacobian", "--random", "8"], ["vjp", "--random", "40"],
                                  ["loss", "--x", "1,2,3", "--t", "0,1,0"],
                                  ["loss", "--x", "1,2,3", "--t", "1,0,0", "--v", "3,1,2"]])
def test_cli_flag_adds_the_block_and_keeps_the_exit_status(cli, args):

    r = cli(*args, "--verify-reference", "--json", "--check")
    assert r.code == 0, r.err
    d = r.json()
    b = d["reference_verification"]
    assert b["passed"] and b["recomputed_with"] == "mpmath, 70 significant digits"
    r = cli(*args, "--verify-reference")
    assert r.code == 0, r.err
    assert "reference verified" in r.out
