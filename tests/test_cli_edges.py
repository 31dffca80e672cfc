"""The command line's rough edges (issue: a report a user can trust), each through the CLI."""

import json

import pytest

ZERO_Z = ("loss", "--x-file", "examples/zero_z/x.txt", "--v-file", "examples/zero_z/v.txt",
          "--t-file", "examples/zero_z/t.txt")


@pytest.mark.parametrize("argv,code", [
    (("forward", "--preset", "overflow", "--impl", "naive"), 1),
    (("forward", "--preset", "overflow"), 0),
    (ZERO_Z, 3),
    (("sweep", "--impl", "naive", "--preset", "overflow", "--dtype", "float32"), 1),
])
def test_quiet_implies_check(cli, monkeypatch, argv, code):
    """--quiet prints nothing, so its verdict is the exit status: a failing implementation
    exits 1 without --check (it used to exit 0), an input condition 3, a pass 0."""
    monkeypatch.chdir(__import__("pathlib").Path(__file__).resolve().parents[1])
    r = cli(*argv, "--quiet")
    assert (r.code, r.out, r.err) == (code, "", "")
    assert cli(*argv, "--quiet", "--check").code == code  # the same with --check


def test_loss_refuses_x_beside_z(cli):
    """With --z the gradient is -t/z and x is not used: giving x too is refused, not ignored."""
    r = cli("loss", "--x", "1,2,3", "--z", "0.2,0.3,0.5", "--t", "0,1,0")
    assert r.code == 2 and r.out == ""
    assert r.err.startswith("error: ") and "not both" in r.err and r.err.count("\n") == 1
    assert cli("loss", "--z", "0.2,0.3,0.5", "--t", "0,1,0", "--json").json()["z"] == "given"


def test_loss_help_says_what_z_is_without_v(cli):
    """loss --help no longer says v is random by default: without --v or --z, z = softmax(x),
    which is what the run does."""
    text = " ".join(cli("loss", "--help").out.split())
    assert "z = softmax(x)" in text and "random from --seed)" not in text.split("--v-file")[0]
    assert cli("loss", "--x", "1,2,3", "--t", "0,1,0", "--json").json()["z"] == "softmax"


def test_claims_takes_t_from_a_file(cli, tmp_path):
    """claims has --t-file beside --v-file; t from a file is used as given."""
    (tmp_path / "t.txt").write_text("0 1 0\n")
    a = cli("claims", "--x", "1,2,3", "--t-file", str(tmp_path / "t.txt"), "--json")
    b = cli("claims", "--x", "1,2,3", "--t", "0,1,0", "--json")
    assert a.code == 0 and a.json()["t"] == "given"
    assert [c["discrepancy"] for c in a.json()["checks"]] == [
        c["discrepancy"] for c in b.json()["checks"]]
    bad = cli("claims", "--x", "1,2,3", "--t-file", str(tmp_path / "none.txt"))
    assert bad.code == 2 and bad.err.startswith("error: ")


def test_dps_help_gives_its_range_and_the_range_is_enforced(cli):
    assert "20 to 100000" in " ".join(cli("forward", "--help").out.split())
    for dps in ("19", "100001"):
        r = cli("forward", "--x", "1,2", "--dps", dps)
        assert r.code == 2 and "20 to 100000" in r.err
    assert cli("forward", "--x", "1,2", "--dps", "20").code == 0


@pytest.mark.parametrize("command", ["forward", "vjp", "claims", "sweep"])
def test_a_negative_seed_gets_an_error_line(cli, command):
    args = ("--preset", "overflow") if command == "sweep" else ("--random", "4")
    r = cli(command, *args, "--seed", "-1")
    assert (r.code, r.out) == (2, "")
    assert r.err == "error: --seed -1: must be a whole number >= 0\n"


def test_unknown_options_get_close_suggestions_or_none(cli):
    """click offered --rows for --verbose; a suggestion now has to look like the option."""
    r = cli("forward", "--random", "4", "--verbose")
    assert r.code == 2
    assert r.err == "error: no such option: --verbose; see 'smcheck forward --help'\n"
    r = cli("forward", "--random", "4", "--row", "3")
    assert r.err == "error: no such option: --row (did you mean --rows?)\n"
    r = cli("vjp", "--random", "4", "--vfile", "v.txt")
    assert r.err == "error: no such option: --vfile (did you mean --v-file or --x-file?)\n"


def test_sweep_help_does_not_list_seed_under_input(cli):
    """sweep has no input options (it runs the presets): --seed is not under "Input"."""
    out = cli("sweep", "--help").out
    assert "Input" not in out and "--seed" in out
    assert json.loads(cli("sweep", "--preset", "overflow", "--seed", "3", "--json").out)["passed"]


def test_a_json_array_on_stdin(cli):
    """`echo '[1,2,3]' | smcheck forward -` reads a JSON array as --x does (rows nested)."""
    one = cli("forward", "-", "--json", stdin="[1, 2, 3]\n").json()
    assert one["shape"] == [1, 3] and one["input"] == "stdin (3 values)"
    assert one["result"] == cli("forward", "--x", "1,2,3", "--json").json()["result"]
    two = cli("forward", "-", "--json", stdin=' [[1, 2, 3], [4, 5, "-inf"]]').json()
    assert two["shape"] == [2, 3] and two["result"][1][2] == 0.0
    bad = cli("forward", "-", stdin='[[1, 2, 3], [4, 5, "x"]]')
    assert bad.code == 2 and bad.err.startswith("error: --x-file - (stdin): ")


@pytest.mark.parametrize("word", ["-1,2", "-1 2 3", "-.5,1", "-inf,0,1"])
def test_negative_numbers_as_the_input(cli, word):
    """`smcheck forward -1,2`: numbers that begin with a minus are the input, not an option;
    the values of options (--scale -5) stay theirs."""
    r = cli("forward", word, "--json")
    assert r.code == 0, r.err
    assert r.json()["result"] == cli("forward", "--x", word, "--json").json()["result"]
    assert cli("forward", "--random", "3", "--scale", "-5", "--quiet").code == 0
    assert cli("vjp", word, "--seed", "2", "--quiet").code == 0
    both = cli("forward", word, "--x", "3,4")
    assert both.code == 2 and "exactly one source" in both.err


def test_metric_applies_to_log_softmax_not_softmax(cli):
    """--metric strict without --log was silently ignored, and the JSON said "relative", a
    value --metric does not take: it is refused, and the JSON's metric is null for softmax."""
    r = cli("forward", "--x", "1,2,3", "--metric", "strict")
    assert r.code == 2 and r.err.startswith("error: --metric strict applies to log-softmax")
    assert cli("forward", "--x", "1,2,3", "--json").json()["metric"] is None
    assert cli("forward", "--x", "1,2,3", "--log", "--metric", "strict",
               "--json").json()["metric"] == "strict"
    assert cli("jacobian", "--x", "1,2,3", "--metric", "strict", "--json").json()[
        "metric"] == "strict"
