"""The human report can be trusted at a glance (issue 17): what a table shows as measured is
never above what it shows as allowed on a passing check, the figures mean something, every
cause is one of the named kinds, batches list their rows the same way however they are
chunked, and at 80 columns every number is whole."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from rich.console import Console

from smcheck.causes import CAUSES, cause_kind
from smcheck.options import Options
from smcheck.presets import PRESETS
from smcheck.report import render, render_sweep, render_text
from smcheck.results import ROWS_NAMED, Failure
from smcheck.run import check_rows
from smcheck.sentences import FAILURES, line
from smcheck.sweep import COMMANDS, run_case, run_sweep

DTYPES = ("float64", "float32", "float16", "bfloat16")
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[+-]?\d+)?(?![\w.])")


def reports(impl: str, dtypes=DTYPES, presets=tuple(PRESETS)):
    for p in presets:
        x = PRESETS[p].make()
        for dt in dtypes:
            for cmd in COMMANDS:
                yield (p, dt, cmd), run_case(cmd, x, impl, dt, 50)


def _first_number(text: str) -> float | None:
    text = text.removeprefix("gradient in x: ")  # the loss's second quantity, when worse
    m = re.search(r"=\s*(\S+)|^(\S+) ULP", text)
    if not m:
        return None
    tok = (m.group(1) or m.group(2)).rstrip(",")
    try:
        return float(tok)
    except ValueError:
        return None


@pytest.fixture(scope="module")
def stable_reports():
    return list(reports("stable"))


@pytest.fixture(scope="module")
def broken_reports():
    return [r for impl in ("naive", "divfree") for r in reports(impl, ("float64", "float16"))]


def test_a_passing_check_never_shows_measured_above_allowed(stable_reports):
    """Every preset x dtype x command with the stable softmax: on each passing check the
    ratio at the headline entry is at most 1, and the number shown as measured is at most the
    number shown as allowed (both at that entry, in the same unit)."""
    seen = 0
    for key, rep in stable_reports:
        for c in rep.checks:
            if c.status != "pass" or c.kind != "implementation" or not c.worst:
                continue
            ratio = c.worst.get("ratio")
            if ratio is not None:
                assert ratio <= 1, (key, c.name, c.measured, c.allowed)
            m, a = _first_number(c.measured), _first_number(c.allowed.split(" (")[0])
            if m is None or a is None or "ULP" in c.measured and "ULP" not in c.allowed:
                continue
            assert m <= a, (key, c.name, c.measured, c.allowed)
            seen += 1
    assert seen > 400  # the comparison ran on most checks, not on a handful


def test_a_control_shows_measured_above_allowed_when_it_fails(broken_reports):
    """The control: the same reading finds measured above allowed on failing checks."""
    above = 0
    for _, rep in broken_reports:
        for c in rep.checks:
            if c.status == "fail" and c.worst and (c.worst.get("ratio") or 0) > 1:
                m, a = _first_number(c.measured), _first_number(c.allowed)
                above += m is not None and a is not None and m > a
    assert above > 10


ABSURD = [r"\binf ULP", r"\bnan ULP", r"allowed nan", r"rel -", r"\b1 entries\b",
          r"\brows 0\b(?!,)", r"\b1 rows\b", r" but J\[(\d+), (\d+)\] = nan"]


def test_no_figure_that_means_nothing(broken_reports, stable_reports):
    """The naive and divfree formulas fail on the presets in many ways: no table cell or
    failure line shows an infinite ULP count, a relative figure of an exact zero, an
    allowance that is nan, a relative allowance of 1 or more, or a wrong plural."""
    for key, rep in broken_reports + stable_reports[::7]:
        text = render_text(rep, width=200)
        for pat in ABSURD:
            assert not re.search(pat, text), (key, pat, text)
        for c in rep.checks:
            for cell in (c.measured, c.allowed):
                for rel in re.findall(r"rel (\S+)", cell):
                    assert float(rel.rstrip(",)")) <= 1, (key, c.name, cell)


def test_every_cause_is_a_named_kind(broken_reports):
    kinds = set()
    for key, rep in broken_reports:
        for c in rep.checks:
            for e in c.entries:
                if e.cause:
                    assert cause_kind(e.cause) in CAUSES, (key, e.cause)
                    kinds.add(cause_kind(e.cause))
    # the presets exercise overflow, a division by a zero or infinite sum, and rounding at |x|
    assert {"overflow", "zero sum"} <= kinds, kinds


def test_worst_entries_are_sorted_by_ratio_and_say_so(broken_reports):
    for key, rep in broken_reports[:40]:
        for c in rep.checks:
            ratios = [e.abs_err / e.allowed if e.allowed > 0 else np.inf for e in c.entries]
            ratios = [np.inf if r != r else r for r in ratios]
            assert ratios == sorted(ratios, reverse=True), (key, c.name)
    text = render_text(next(r for _, r in broken_reports if not r.passed), width=200)
    assert "by error / allowance (ratio)" in text


def test_symmetry_of_a_nan_diagonal_entry_is_not_a_comparison():
    nan = float("nan")
    same = line(Failure("symmetry", row=0, index=(0, 0), computed=nan, exact=nan))
    assert "but" not in same and "J[0, 0] = nan is not a number" in same
    both = line(Failure("symmetry", row=2, index=(0, 1), computed=nan, exact=0.5))
    assert "J[0, 1] = nan" in both and "J[1, 0]" not in both
    plain = line(Failure("symmetry", row=0, index=(0, 1), computed=0.25, exact=0.5))
    assert "J[0, 1] = 0.25 but J[1, 0] = 0.5" in plain
    assert set(FAILURES) >= {"symmetry", "more_rows"}


@pytest.mark.parametrize("dtype,x0", [("float16", 12.0), ("float32", 100.0)])
def test_a_division_by_an_infinite_sum_is_not_called_a_flush(dtype, x0):
    """naive softmax of [12, 1, -30] in float16: exp(12) overflows, so s_1 = e^1 / inf = 0
    although its exact value (1.67e-05) is subnormal there: the cause is the infinite sum."""
    rep = run_case("forward", np.array([x0, 1.0, -30.0]), "naive", dtype, 50)
    causes = {e.index: cause_kind(e.cause) for e in rep.checks[0].entries}
    assert causes[1] == "infinite sum" and causes[0] == "overflow", causes


def test_each_failing_shift_names_its_own_cause():
    rep = run_case("forward", PRESETS["overflow"].make(), "naive", "float64", 50)
    shift = next(c for c in rep.checks if c.name == "shift_invariance")
    text = [line(f) for f in shift.failures]
    assert any(t.startswith("at the overflow shift") and "— overflow:" in t for t in text), text
    assert any(t.startswith("at the underflow shift") and "— zero sum:" in t for t in text), text


def test_sweep_cells_name_the_failing_command_and_check():
    res = run_sweep("naive", dtypes=["float64"], presets=["overflow", "benign"],
                    commands=["forward", "vjp"])
    buf = io.StringIO()
    render_sweep(res, Console(file=buf, width=120, no_color=True))
    text = buf.getvalue()
    assert "✗ forward/reference" in text  # overflow: the naive formula's nan
    assert "✗ forward/shift_invariance" in text  # benign: fails only when shifted
    assert not re.search(r"✗ \d", text)  # never a bare ratio beside a cross


@pytest.mark.parametrize("chunk_rows", [7, 32])
def test_batch_rows_are_listed_in_row_order_whatever_the_chunking(chunk_rows):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 40)) * 800
    o = Options(impl="naive", top=3)
    one = check_rows("forward", x, o, chunk_rows=60)
    cut = check_rows("forward", x, o, chunk_rows=chunk_rows)
    lines = [line(f) for f in one.checks[0].failures]
    assert lines == [line(f) for f in cut.checks[0].failures]
    rows = [int(m) for ln in lines for m in re.findall(r"^row (\d+): exp", ln)]
    assert rows == sorted(rows) and len(rows) == ROWS_NAMED
    more = [ln for ln in lines if ln.startswith("and ")]
    assert more and f"and {60 - ROWS_NAMED} more rows" in more[0], lines


CASES_80 = [("forward", "overflow", "naive", "float64"), ("vjp", "wide-spread", "stable", "float16"),
            ("jacobian", "overflow", "naive", "float32"), ("loss", "masked", "divfree", "bfloat16"),
            ("forward", "benign", "stable", "float64")]


@pytest.mark.parametrize("cmd,preset,impl,dtype", CASES_80)
def test_every_number_is_whole_at_80_columns(cmd, preset, impl, dtype):
    """At 80 columns the report shows the same numbers as at 200: none is cut across lines
    (a cut number leaves fragments that the wide report does not have)."""
    rep = run_case(cmd, PRESETS[preset].make(), impl, dtype, 50)
    narrow, wide = render_text(rep, width=80), render_text(rep, width=200)
    assert max(len(ln) for ln in narrow.splitlines()) <= 80
    assert set(NUMBER.findall(narrow)) == set(NUMBER.findall(wide)), (
        set(NUMBER.findall(narrow)) ^ set(NUMBER.findall(wide)))


def test_the_80_column_check_is_not_blind():
    """The control: a table folded into 80 columns with overflow='fold' cuts its numbers,
    and the comparison of number sets sees it."""
    from rich.table import Table

    def table(width):
        t = Table()
        for col in "abcdefgh":
            t.add_column(col, overflow="fold")
        t.add_row(*["0.73103431559513277"] * 8)
        buf = io.StringIO()
        Console(file=buf, width=width, no_color=True).print(t)
        return buf.getvalue()

    assert set(NUMBER.findall(table(80))) != set(NUMBER.findall(table(200)))


def test_render_keeps_to_the_console_width():
    rep = run_case("vjp", PRESETS["overflow"].make(), "naive", "float32", 50)
    buf = io.StringIO()
    render(rep, Console(file=buf, width=80, no_color=True), top=10)
    assert max(len(ln) for ln in buf.getvalue().splitlines()) <= 80
