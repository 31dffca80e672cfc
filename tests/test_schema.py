"""The JSON Schema that smcheck ships (smcheck/schema.json, ``smcheck schema``): every
command's ``--json`` document validates against it; the schema rejects real mistakes; keys are
present whenever they apply (null rather than absent); ``result`` is null with
``result_omitted`` above RESULT_MAX numbers and shaped like ``shape`` below; vjp says where v
came from and gives its values; the zero condition's index lists are capped, with exact counts,
the same for any chunking."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

jsonschema = pytest.importorskip("jsonschema")

from smcheck import schema as sch  # noqa: E402
from smcheck.exceptions import SmcheckError  # noqa: E402
from smcheck.options import Options  # noqa: E402
from smcheck.report import report_json  # noqa: E402
from smcheck.results import INDEX_LIST_MAX, RESULT_MAX  # noqa: E402
from smcheck.run import check_rows, run_loss  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VALIDATOR = jsonschema.Draft202012Validator(sch.schema())


def problems(doc) -> list[str]:
    return [f"{e.json_path}: {e.message[:200]}" for e in VALIDATOR.iter_errors(doc)]


def run_json(cli, *argv, code=0, stdin=""):
    r = cli(*argv, "--json", stdin=stdin)
    assert r.code == code, (argv, r.code, r.err)
    doc = r.json()
    assert problems(doc) == [], (argv, problems(doc)[:5])
    return doc


def test_the_schema_is_a_valid_draft_2020_12_schema():
    s = sch.schema()
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(s)
    assert set(s["$defs"]) >= {"forward", "jacobian", "vjp", "loss", "claims", "sweep",
                               "check", "overflow", "zeroCondition", "float"}


def test_smcheck_schema_prints_the_schema(cli):
    r = cli("schema")
    assert r.code == 0 and r.err == ""
    assert r.json() == sch.schema()


#: (argv, exit status): every command, the forms of input, the blocks
DOCUMENTS = [
    (["forward", "--x", "1,2,3"], 0),
    (["forward", "--x", "1,2,3", "--log", "--metric", "strict"], 0),
    (["forward", "--x", "1,2;3,4;5,6"], 0),
    (["forward", "--x", "1,2;nan,1;-inf,-inf", "--check"], 0),
    (["forward", "--x", "nan,1", "--check"], 3),  # every row undefined
    (["forward", "--preset", "overflow", "--impl", "naive"], 0),
    (["forward", "--preset", "one-hot", "--log", "--dtype", "float32"], 0),
    (["forward", "--preset", "masked", "--verify-reference"], 0),
    (["forward", "--random", "300", "--rows", "20", "--dtype", "bfloat16", "--workers", "2"], 0),
    (["jacobian", "--x", "1,2,3"], 0),
    (["jacobian", "--x", "1,2,3", "--log"], 0),
    (["jacobian", "--random", "80"], 0),  # 6400 numbers: result omitted
    (["jacobian", "--random", "20", "--max-dense", "8"], 0),  # probes: J never formed
    (["vjp", "--random", "5"], 0),
    (["vjp", "--x", "1,2,3", "--v", "1,0,0"], 0),
    (["vjp", "--x", "1,2;3,4;nan,0"], 0),
    (["loss", "--x", "1,2,3", "--t", "0,1,0"], 0),
    (["loss", "--x", "1,2,3", "--v", "1,0,0", "--t", "0,1,0"], 0),
    (["loss", "--z", "0.2,0.3,0.5", "--t", "0,1,0"], 0),
    (["loss", "--x", "0,-1000,-1000", "--t", "0,1,0", "--check"], 3),  # z_1 = 0, t_1 = 1
    (["loss", "--x", "1,2;nan,1", "--t", "0,1"], 0),
    (["claims", "--x", "1,2,3"], 0),
    (["claims", "--x", "1,2;3,-inf", "--claim", "zero_condition"], 0),
    (["sweep", "--preset", "overflow", "--dtype", "float64"], 0),
    (["sweep", "--preset", "ties", "--dtype", "float32", "--dtype", "float16", "--impl", "naive"],
     0),
]


@pytest.mark.parametrize("argv,code", DOCUMENTS, ids=[" ".join(a) for a, _ in DOCUMENTS])
def test_every_command_validates(cli, argv, code):
    doc = run_json(cli, *argv, code=code)
    assert doc["command"] == argv[0]


def test_keys_are_present_with_null(cli):
    fwd = run_json(cli, "forward", "--x", "1,2,3")
    assert fwd["reference_verification"] is None and fwd["result_omitted"] is None
    by_name = {c["name"]: c for c in fwd["checks"]}
    assert by_name["reference"]["worst_entries"] and by_name["reference"]["cancelled"] is None
    assert by_name["normalization"]["worst_entries"] is None
    assert by_name["finite"]["non_finite"] == []
    log = run_json(cli, "forward", "--x", "1,2,3", "--log")
    assert log["checks"][0]["cancelled"] == []  # looked for with --log: none
    top0 = run_json(cli, "forward", "--x", "1,2,3", "--top", "0")
    assert top0["checks"][0]["worst_entries"] == []
    loss = run_json(cli, "loss", "--z", "0.2,0.3,0.5", "--t", "0,1,0")
    assert loss["input"] is None  # z given: no x
    assert loss["zero_condition"]["<v,s>"] is None
    ref = loss["checks"][0]
    assert ref["grad_x"] is None and loss["checks"][3]["domain_violations"] == []
    undefined = run_json(cli, "loss", "--x", "nan,1", "--t", "0,1")
    assert undefined["zero_condition"] is None and undefined["loss_value"] is None
    assert undefined["result"] == [None] and undefined["result_omitted"] is None
    vjp = run_json(cli, "vjp", "--x", "nan,1")
    assert vjp["dot"] is None and vjp["result"] == [None]


# --- the schema rejects real mistakes -------------------------------------------------------


@pytest.fixture(scope="module")
def forward_doc():
    from clirunner import run_cli

    return run_cli("forward", "--x", "1000,999,990", "--impl", "naive", "--json").json()


def _broken(doc, path, value=KeyError):
    out = copy.deepcopy(doc)
    *head, last = path
    target = out
    for p in head:
        target = target[p]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return out


@pytest.mark.parametrize("path,value", [
    (["result"], KeyError),  # a required key removed
    (["result_omitted"], KeyError),
    (["checks", 0, "worst_entries"], KeyError),
    (["checks", 0, "failing_entries"], KeyError),
    (["overflow", "overflow_count"], KeyError),
    (["input"], KeyError),
    (["dps"], "50"),  # a wrong type
    (["passed"], 1),
    (["shape"], [3]),
    (["checks", 0, "max_ulp"], float("nan")),  # a NaN float instead of "nan"
    (["checks", 0, "max_abs_err"], float("inf")),
    (["checks", 0, "max_rel_err"], "NaN"),
    (["result", 0, 0], float("nan")),
    (["result"], [0.1, 0.2, 0.7]),  # a 1-row result not nested like shape
    (["checks", 0, "status"], "ok"),  # outside an enum
    (["checks", 0, "status"], "pass"),  # contradicts passed: false
    (["checks", 0, "kind"], "impl"),
    (["checks", 1, "name"], "normalisation"),
    (["command"], "fwd"),
    (["dtype"], "float8"),
    (["result_omitted"], {"reason": "too big", "limit": 4096}),  # but the result is there
])
def test_the_schema_rejects_a_broken_document(forward_doc, path, value):
    assert problems(forward_doc) == []
    assert problems(_broken(forward_doc, path, value)), (path, value)


def test_nan_from_a_bare_constant_is_refused():
    """A parser turns a bare NaN / Infinity into a float: the schema refuses it."""
    from clirunner import run_cli

    import re

    text = run_cli("forward", "--x", "1,2,3", "--json").out
    assert problems(json.loads(text)) == []
    for bare in ("NaN", "Infinity", "-Infinity"):
        broken = re.sub(r'"max_abs_err": [^,]+', f'"max_abs_err": {bare}', text, count=1)
        assert broken != text
        assert problems(json.loads(broken)), bare


# --- result: null with result_omitted above RESULT_MAX; nested like shape ----------------------


def test_result_is_null_with_a_reason_above_the_limit(cli):
    small = run_json(cli, "forward", "--random", "64", "--rows", str(RESULT_MAX // 64))
    assert len(small["result"]) == RESULT_MAX // 64 and small["result_omitted"] is None
    big = run_json(cli, "forward", "--random", str(RESULT_MAX + 1))
    assert big["result"] is None
    assert big["result_omitted"] == {"reason": f"{RESULT_MAX + 1} numbers, more than the limit",
                                     "limit": RESULT_MAX}
    jac = run_json(cli, "jacobian", "--random", "65")  # 65 x 65 numbers
    assert jac["result"] is None and jac["result_omitted"]["limit"] == RESULT_MAX
    probes = run_json(cli, "jacobian", "--random", "20", "--max-dense", "8")
    assert probes["result"] is None and "max-dense" in probes["result_omitted"]["reason"]


@pytest.mark.parametrize("command,extra", [("forward", []), ("forward", ["--log"]),
                                           ("jacobian", []), ("vjp", ["--v", "1,0,-1"]),
                                           ("loss", ["--t", "0,1,0"])])
def test_one_row_result_is_nested_like_shape(cli, command, extra):
    vec = run_json(cli, command, "--x", "1,2,3", *extra)
    row = run_json(cli, command, "--x", "[[1, 2, 3]]", *extra)
    assert vec["shape"] == row["shape"] == [1, 3]
    assert len(vec["result"]) == 1 and len(vec["result"][0]) == 3
    if command == "jacobian":
        assert np.shape(vec["result"]) == (1, 3, 3)
    assert vec["result"] == row["result"]
    del vec["input"], row["input"]
    assert vec == row  # a vector and a batch of one row: one document


# --- vjp: where v came from, and its values ---------------------------------------------------


def test_vjp_says_whether_v_was_random_or_given(cli):
    r = run_json(cli, "vjp", "--random", "5", "--seed", "3")
    assert r["v"] == "random (seed 3)"
    again = run_json(cli, "vjp", "--random", "5", "--seed", "3")
    assert again["v_values"] == r["v_values"] and np.shape(r["v_values"]) == (1, 5)
    other = run_json(cli, "vjp", "--x", ",".join(map(str, np.ravel(r["result"]))), "--seed", "4")
    assert other["v"] == "random (seed 4)" and other["v_values"] != r["v_values"]
    given = run_json(cli, "vjp", "--x", "1,2,3", "--v", "0.5,-1,2")
    assert given["v"] == "given" and given["v_values"] == [[0.5, -1.0, 2.0]]
    batch = run_json(cli, "vjp", "--x", "1,2,3;4,5,6", "--v", "0.5,-1,2")
    assert batch["v_values"] == [[0.5, -1.0, 2.0]] * 2  # one v for every row
    rounded = run_json(cli, "vjp", "--x", "1,2", "--v", "0.1,0.2", "--dtype", "float16")
    assert rounded["v_values"] == [[float(np.float16(0.1)), float(np.float16(0.2))]]


def test_vjp_v_values_are_null_above_the_limit(cli):
    r = run_json(cli, "vjp", "--random", "1100", "--rows", "4", "--workers", "2")
    assert r["v"] == "random (seed 0)" and r["v_values"] is None and r["result"] is None
    small = run_json(cli, "vjp", "--random", "1000", "--rows", "4", "--workers", "2")
    assert np.shape(small["v_values"]) == (4, 1000)


# --- the zero condition: capped lists, exact counts, the same for any chunking ---------------


def zero_batch(rows=40, n=64):
    """Every entry but the first of each row is 1000 below it: its softmax, z, is exactly 0
    in float64 (rows x (n - 1) exact zeros); t = 1 at index 0 (no input condition)."""
    x = np.full((rows, n), -1000.0)
    x[:, 0] = 0.0
    t = np.zeros((rows, n))
    t[:, 0] = 1.0
    return x, t


def test_zero_condition_lists_are_capped_with_exact_counts():
    x, t = zero_batch()
    zeros = 40 * 63
    assert zeros > INDEX_LIST_MAX
    rep = run_loss(x, t, impl="naive")
    doc = report_json(rep, "t")
    assert problems(doc) == []
    for zc in (doc["zero_condition"], doc["checks"][2]["zero_condition"]):
        assert zc["exact_zero_count"] == zeros and zc["unreliable_count"] == 0
        assert len(zc["exact_zero_indices"]) == INDEX_LIST_MAX
        assert zc["exact_zero_indices"][:2] == [[0, 1], [0, 2]]  # row order
        assert len(zc["entries"]) == 100
    assert doc["checks"][2]["measured"].startswith(f"{zeros} exact zero(s)")


@pytest.mark.parametrize("impl", ["stable", "naive"])
@pytest.mark.parametrize("chunk_rows", [7, 13])
def test_zero_condition_is_the_same_for_any_chunking(chunk_rows, impl):
    x, t = zero_batch()
    opts = Options(impl=impl)
    one = check_rows("loss", x, opts, companions={"t": t}, chunk_rows=x.shape[0])
    cut = check_rows("loss", x, opts, companions={"t": t}, chunk_rows=chunk_rows)
    a, b = report_json(one, "t"), report_json(cut, "t")
    assert a["zero_condition"]["exact_zero_count"] == 40 * 63
    assert len(a["zero_condition"]["exact_zero_indices"]) == INDEX_LIST_MAX
    assert a["zero_condition"] == b["zero_condition"]
    assert a["checks"][2] == b["checks"][2]  # the zero_condition check
    # the whole document: naive's shift_invariance keeps the worst gradient-in-x failure
    # of each shift, whatever the chunking (it listed every chunk's)
    assert json.dumps(a) == json.dumps(b)
    if impl == "naive":
        lines = [f for f in a["checks"][4]["failures"] if f.startswith("gradient in x")]
        assert 1 <= len(lines) <= 2, lines


def test_zero_condition_on_workers_matches_one_process(cli, tmp_path):
    x, t = zero_batch(rows=300, n=16)
    t[5, 3] = 1.0  # z_3 = 0 in row 5 where t_3 != 0: an input condition (exit 3)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "t.npy", t)
    argv = ["loss", "--x-file", tmp_path / "x.npy", "--t-file", tmp_path / "t.npy", "--check"]
    one = run_json(cli, *argv, "--workers", "1", code=3)
    two = run_json(cli, *argv, "--workers", "2", code=3)
    assert one == two
    zc = one["zero_condition"]
    assert zc["exact_zero_count"] == 300 * 15 and len(zc["exact_zero_indices"]) == INDEX_LIST_MAX
    assert one["input_conditions"][0]["kind"] == "zero_condition"


# --- smcheck schema --validate ------------------------------------------------------------------


def test_validate_a_document(cli, tmp_path, forward_doc):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(forward_doc))
    r = cli("schema", "--validate", good)
    assert r.code == 0 and r.out == f"{good}: a valid smcheck forward document\n"
    r = cli("schema", "--validate", "-", stdin=json.dumps(forward_doc))
    assert r.code == 0
    sch.validate(forward_doc)  # the Python API: None when valid, SmcheckError naming the problem
    with pytest.raises(SmcheckError, match=r"at \$\.checks\[0\]\.status"):
        sch.validate(_broken(forward_doc, ["checks", 0, "status"], "ok"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_broken(forward_doc, ["checks", 0, "status"], "ok")))
    r = cli("schema", "--validate", bad)
    assert r.code == 1 and r.out == ""
    assert r.err.startswith(f"error: {bad}: not a valid smcheck document: at $.checks[0].status:")
    assert len(r.err.splitlines()) == 1
    r = cli("schema", "--validate", "-", stdin="not json")
    assert r.code == 1 and r.err.startswith("error: -: not a valid smcheck document: not JSON")
    r = cli("schema", "--validate", tmp_path / "missing.json")
    assert r.code == 2 and r.err.startswith("error: --validate") and "cannot read" in r.err


def test_validate_without_jsonschema_says_what_to_install(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # `import jsonschema` raises
    path = tmp_path / "doc.json"
    path.write_text("{}")
    r = cli("schema", "--validate", path)
    assert r.code == 2 and r.err.startswith("error:") and "pip install jsonschema" in r.err
    assert len(r.err.splitlines()) == 1
    assert cli("schema").code == 0  # printing the schema needs nothing


def test_schema_command_imports_nothing_heavy():  # subprocess: a fresh interpreter
    script = textwrap.dedent("""
        import contextlib, io, json, sys
        from smcheck.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                main(["schema"])
            except SystemExit as exc:
                code = exc.code
        print("@@" + json.dumps({"code": code, "loaded": [m for m in
              ("numpy", "mpmath", "jsonschema", "torch", "jax", "rich") if m in sys.modules]}))
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout.rsplit("@@", 1)[1])
    assert info == {"code": 0, "loaded": []}


# --- the README documents the schema's keys --------------------------------------------------


def _schema_words(node, props: set, enums: set) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "properties" and isinstance(v, dict):
                props.update(v)
            if k == "enum":
                enums.update(e for e in v if isinstance(e, str))
            _schema_words(v, props, enums)
    elif isinstance(node, list):
        for v in node:
            _schema_words(v, props, enums)


def _readme_json_section() -> str:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("\n## JSON and exit status")
    return readme[start:readme.index("\n## ", start + 5)]


def test_the_readme_names_every_key_of_the_schema():
    """Every key the schema defines, and every kind of finding, is named (in backticks) in
    the README's "JSON and exit status" section: what a CI script may read is documented."""
    props, enums = set(), set()
    _schema_words(sch.schema(), props, enums)
    section = _readme_json_section()
    assert len(props) > 100  # the walk found the schema's keys, not a handful
    assert [k for k in sorted(props) if f"`{k}`" not in section] == []
    finding_kinds = set(sch.schema()["$defs"]["finding"]["properties"]["kind"]["enum"])
    assert [k for k in sorted(finding_kinds) if f"`{k}`" not in section] == []


def test_the_readme_check_fails_on_an_undocumented_key():
    """The control: a key the README does not name is caught."""
    props, enums = set(), set()
    _schema_words({"properties": {"a_key_nobody_documented": {}}}, props, enums)
    assert [k for k in props if f"`{k}`" not in _readme_json_section()] == [
        "a_key_nobody_documented"]
