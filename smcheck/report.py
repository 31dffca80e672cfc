"""Rendering: a Report becomes rich tables (here) or one JSON document (:mod:`smcheck.jsondoc`,
whose functions this module also offers). Nothing else prints.

Every measured error is shown next to what was allowed, with the entry, the row and the cause.
"""

from __future__ import annotations

import math

from .causes import cause_kind
from .console import make_console  # noqa: F401 - the CLI takes it from here
from .errors_ulp import error_ratio
from .ndim import row_name
from .jsondoc import (check_json, dumps, input_conditions, report_json,  # noqa: F401
                      to_json_text)
from .reference.verify import note
from .results import CheckResult, Report
from .sentences import failure_lines, note_lines, plural, rows_words

PASS, FAIL = "[green]✓ pass[/]", "[bold red]✗ FAIL[/]"
INPUT = "[bold yellow]! INPUT[/]"  # an input check that found its condition (exit 3)
VERDICT_CELL = {"pass": PASS, "fail": FAIL, "input_condition": INPUT}


def num(v, digits: int = 6) -> str:
    if v is None:
        return "-"
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    return f"{v:.{digits}g}"


def render(report: Report, console, top: int = 10) -> None:
    """The human report: header, checks with measured vs allowed, failures and notes, worst
    entries, command-specific findings, small vectors, and the verdict."""
    from rich.markup import escape as esc

    rows, n = report.shape
    console.print(f"[bold]smcheck {report.command}[/]  impl [cyan]{report.impl}[/]  dtype "
                  f"[cyan]{report.dtype}[/]  shape {rows} x {n}"
                  + ("  log-softmax" if report.options.get("log") else ""))
    console.print(f"reference: {report.reference}", style="dim")
    batch = tuple(report.options.get("batch_shape") or ())
    if len(batch) > 1:
        console.print(f"rows: softmax along axis {report.options.get('axis')} of x; its other "
                      f"axes {batch} are the rows, in C order (row r \\[i, j, ...])", style="dim")
    if "reference_verification" in report.blocks:
        _verification(report.blocks["reference_verification"], console)
    if report.checks:
        _summary(report, console, rows > 1, batch)
    for c in report.checks:
        mark = "[yellow]! " if c.kind == "input" else "[red]✗ "
        for line in failure_lines(c):
            console.print(f"  {mark}{c.name}:[/] {esc(line)}")
    for c in report.checks:
        for line in note_lines(c):
            console.print(f"  [yellow]! {c.name}:[/] {esc(line)}")
    for line in report.notes:
        console.print(f"  [yellow]! {esc(line)}[/]")
    for u in report.undefined_rows:
        console.print(f"  [yellow]! row {u['row']}: {esc(u['reason'])} (not checked)[/]")
    # a passing reference check on a small input is covered by the vectors table below
    shown = [c for c in report.checks if c.entries and (not c.passed or (
        c.name == "reference" and not report.vectors))]
    for c in shown:
        _entries_table(c, console, top, batch=rows > 1, x_label=report.options.get("x_label", "x_i"),
                       dtype=report.dtype, layout=batch)
    if "overflow" in report.blocks:
        _overflow(report.blocks["overflow"], console)
    if "zero_condition" in report.blocks:
        _zero_condition(report.blocks["zero_condition"], console)
    if report.vectors.get("matrix") is not None:
        _matrix(report, console)
    elif report.vectors:
        _vectors(report, console)
    conditions = input_conditions(report)
    impl_checks = [c for c in report.checks if c.kind == "implementation"]
    tail = (f"{sum(c.passed for c in impl_checks)} of {len(impl_checks)} checks"
            + (" of the implementation" if len(impl_checks) < len(report.checks) else "")
            + " passed")
    what = "; ".join(esc(c["message"]) for c in conditions[:3])
    if not report.passed:
        console.print(f"[bold red]FAILED[/]: {tail}"
                      + (f" (and input conditions: {what})" if conditions else ""))
    elif conditions:
        console.print(f"[bold yellow]INPUT CONDITION[/]: {tail}, but the input leaves something "
                      f"unjudgeable: {what}")
    else:
        console.print(f"[bold green]PASSED[/]: {tail}")


def _summary(report: Report, console, batch: bool, layout: tuple = ()) -> None:
    """One line per check: what was measured and what was allowed, both at the entry where
    error / allowance is largest (that entry, and the ratio, beside them)."""
    from rich.markup import escape as esc
    from rich.table import Table

    claims = report.command == "claims"
    t = Table(title=None, show_lines=claims, header_style="bold", box=_box(console))
    cols = (("claim", "statement", "discrepancy", "allowed", "verdict") if claims else
            ("check", "at", "measured", "allowed", "ratio", "verdict"))
    for col in cols:
        t.add_column(col, overflow="fold", no_wrap=col in ("check", "claim", "at", "ratio", "verdict"),
                     justify="right" if col == "ratio" else "left")
    for c in report.checks:
        if claims:
            t.add_row(c.name, esc(c.statement), esc(c.measured), esc(c.allowed),
                      VERDICT_CELL[c.status])
        else:
            t.add_row(c.name, _at(c.worst, batch, layout), esc(c.measured), esc(c.allowed),
                      "" if c.score is None or c.kind == "input" else num(c.score, 2),
                      VERDICT_CELL[c.status])
    console.print(t)
    if not claims:
        console.print("measured and allowed: at the entry where error / allowance (the ratio; "
                      "> 1 fails) is largest; the JSON has the maxima over all entries",
                      style="dim")


def _at(worst: dict | None, batch: bool, layout: tuple = ()) -> str:
    """Where a check's headline was measured: "row 2, i 5", "i 5", "(i, k) (0, 1)"."""
    if not worst:
        return ""
    idx = worst.get("index")
    if isinstance(idx, list):
        where = f"({', '.join(map(str, idx))})"
    elif idx is not None:
        where = f"i {idx}"
    elif worst.get("probe") is not None:
        where = f"probe {worst['probe']}"
    else:
        where = ""
    row = row_name(worst["row"], layout) if batch or not where else ""
    return ", ".join(p for p in (row, where) if p)


def _box(console):
    """Lines between columns where the terminal is wide; at 80 columns, none (the numbers
    keep the room)."""
    from rich import box

    return box.HEAVY_HEAD if console.width >= 100 else box.SIMPLE_HEAD


#: significant digits that tell a dtype's numbers apart (computed), and two more (exact)
DIGITS = {"float64": 17, "float32": 9, "float16": 5, "bfloat16": 4}


def _entries_table(c: CheckResult, console, top: int, batch: bool, x_label: str = "x_i",
                   dtype: str = "float64", layout: tuple = ()) -> None:
    """The entries of ``c`` with the largest error / allowance, largest first: a table, or
    where the terminal is too narrow to keep every number whole, one line per entry. Causes
    are named by their kind in the table and written out once below it."""
    from rich.table import Table

    if top <= 0:
        return
    entries = c.entries[:top]
    d = DIGITS.get(dtype, 17)
    title = f"worst entries of {c.name}, by error / allowance (ratio)"
    t = Table(title=title, title_justify="left", header_style="bold", box=_box(console))
    pair_index = bool(entries) and isinstance(entries[0].index, tuple)
    cols = (["row"] if batch else []) + ["i, k" if pair_index else "i", x_label, "computed", "exact", "ULP", "allowed ULP",
                                         "ratio", "cause"]
    for col in cols:
        t.add_column(col, justify="left" if col == "cause" else "right",
                     no_wrap=col != "cause", overflow="fold")
    lines, widths = [], [len(col) for col in cols]
    for e in entries:
        ratio = error_ratio(e.abs_err, e.allowed)
        style = "red" if not ratio <= 1 else None
        a_ulp = e.allowed / e.ulp if e.ulp > 0 else None
        cells = ([row_name(e.row, layout)[4:]] if batch else []) + [
            _index(e.index), num(e.x), num(e.computed, d), num(e.reference, min(d + 2, 17)),
            _finite(e.ulp_err), _finite(a_ulp), num(ratio, 2), cause_kind(e.cause) or
            ("" if not e.cause else "see below")]
        t.add_row(*cells, style=style)
        widths = [max(w, len(cell)) for w, cell in zip(widths, cells)]
        where = f"entry ({_index(e.index)})" if isinstance(e.index, tuple) else f"i {e.index}"
        lines.append((row_name(e.row, layout) + ", " if batch else "") + f"{where}: "
                     f"x {num(e.x)}, computed {cells[-6]}, exact {cells[-5]}, "
                     f"{cells[-4]} ULP (allowed {cells[-3]}), ratio {cells[-2]}"
                     + (f", {cells[-1]}" if cells[-1] else ""))
    # every number whole, and room for the cause's kind: else one line per entry
    if sum(widths) + 3 * len(cols) + 1 <= console.width:
        console.print(t)
    else:
        console.print(title)
        for line in lines:
            console.print("  " + _esc(line))
    seen: dict[str, str] = {}
    for e in entries:
        kind = cause_kind(e.cause) or e.cause
        if e.cause and kind not in seen:
            seen[kind] = e.cause
    for text in seen.values():
        console.print(f"  cause: {_esc(text)}", style="dim")


def _finite(v) -> str:
    """A ULP figure, or "-" where none means anything (a non-finite result, an exact 0)."""
    return num(v, 3) if v is not None and math.isfinite(v) else "-"


def _index(index) -> str:
    return ", ".join(map(str, index)) if isinstance(index, tuple) else str(index)


def _verification(b: dict, console) -> None:
    worst = max((q["max_rel_diff"] for q in b["quantities"]), default=0.0)
    what = ", ".join(f"{q['entries']} {q['quantity']}" for q in b["quantities"])
    if b["passed"]:
        console.print(f"reference verified: {b['recomputed_with']} agrees on {what} entries "
                      f"within the stated {b['stated_relative_bound']:.1e} relative (max "
                      f"relative difference {worst:.1e})", style="green")
    else:
        console.print(f"  [red]✗ {_esc(note(b))}[/]")


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _overflow(b: dict, console) -> None:
    console.print(
        f"naive formula in {b['dtype']}: exp(x) overflows for x > {b['log_realmax']:.2f}, "
        f"underflows to 0 below about {b['log_min_subnormal']:.2f} (subnormal below "
        f"{b['log_min_normal']:.2f})", style="dim")
    if b["overflow_count"]:
        console.print(f"  [red]exp overflows at {plural(b['overflow_count'], 'entry', 'entries')}"
                      f":[/] {_short(b['overflow_indices'])}")
    if b["every_exp_underflows"]:
        console.print(f"  [red]every exp underflows[/] in "
                      f"{rows_words(b['rows_every_exp_underflows'], 10)}")
    elif b["underflow_count"]:
        console.print(f"  exp underflows to 0 at {plural(b['underflow_count'], 'entry', 'entries')}")
    if b["sum_overflows"]:
        console.print(f"  [red]sum of exp overflows[/] in {rows_words(b['rows_sum_overflows'], 10)}")


def _zero_condition(b: dict, console) -> None:
    from rich.table import Table

    for d in b.get("<v,s>", [])[:4]:
        console.print(f"<v, s> = {d['value']} (row {d['row']})", style="dim")
    if not b["entries"]:
        console.print("z_i = 0 condition: no entry of z is zero or below its rounding floor",
                      style="dim")
        return
    t = Table(title="z_i = 0 condition: entries whose sign cannot be trusted", title_justify="left",
              header_style="bold")
    has_v = "v_i" in b["entries"][0]
    for col in ["row", "i", "kind"] + (["v_i", "<v, s>"] if has_v else []) + [
            "z_i (exact)", "floor", "t_i"]:
        t.add_column(col, justify="right")
    for e in b["entries"][:20]:
        t.add_row(str(e["row"]), str(e["index"]), e["kind"],
                  *([repr(e["v_i"]), e["<v,s>"]] if has_v else []),
                  num(e["z_i"], 6), num(e["floor"], 3), num(e["t_i"], 6),
                  style="red" if e["t_i"] != 0 else None)
    console.print(t)


def _matrix(report: Report, console) -> None:
    from rich.table import Table

    v = report.vectors
    J, bad = v["matrix"], v["failing"]
    t = Table(title="computed Jacobian (row 0; red: beyond its allowance)", title_justify="left",
              header_style="bold")
    t.add_column("i \\ k", justify="right")
    for k in range(len(J)):
        t.add_column(str(k), justify="right")
    for i, row in enumerate(J):
        t.add_row(str(i), *[f"[red]{num(val, 4)}[/]" if bad[i][k] else num(val, 4)
                            for k, val in enumerate(row)])
    console.print(t)


def _short(items, limit: int = 10) -> str:
    items = list(items)
    s = ", ".join(str(i) for i in items[:limit])
    return s + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _vectors(report: Report, console) -> None:
    from rich.table import Table

    v = report.vectors
    batch = len(v["rows"]) > 1
    t = Table(title="vectors", title_justify="left", header_style="bold")
    for col in (["row"] if batch else []) + ["i", "x_i", "computed", "exact"]:
        t.add_column(col, justify="right")
    for r in v["rows"]:
        for i in range(len(v["x"][r])):
            t.add_row(*([str(r)] if batch else []), str(i), num(v["x"][r][i], 17),
                      num(v["computed"][r][i], 17), num(v["reference"][r][i], 17))
    console.print(t)


def render_sweep(res, console) -> None:
    """The sweep matrix (presets x dtypes; each cell the verdict over every command and the
    worst ULP of the reference checks), then every failure with its numbers."""
    from rich.markup import escape as esc
    from rich.table import Table

    console.print(f"[bold]smcheck sweep[/]  impl [cyan]{res.impl}[/]  commands "
                  f"{', '.join(res.commands)}  reference: mpmath, {res.dps} digits")
    t = Table(header_style="bold")
    t.add_column("preset")
    for dt in res.dtypes:
        t.add_column(dt, justify="center")
    for p in res.presets:
        cells = []
        for dt in res.dtypes:
            cs = [c for c in res.cases if c["preset"] == p and c["dtype"] == dt]
            ratios = [float(c["scaled"]) if not isinstance(c["scaled"], str) else float("inf")
                      for c in cs if c["scaled"] is not None]
            worst = num(max(ratios), 2) if ratios else "-"
            failed = [f"{c['command']}/{name}" for c in cs if not c["passed"]
                      for name, ok in c["checks"].items() if not ok]
            if not failed:
                cells.append(f"[green]✓[/] {worst}")
            else:  # the failing command / check, not a ratio that reads as a pass
                more = f" +{len(failed) - 1}" if len(failed) > 1 else ""
                cells.append(f"[bold red]✗[/] {esc(failed[0])}{more}")
        t.add_row(p, *cells)
    console.print(t)
    console.print("cells: the verdict over " + ", ".join(res.commands) + "; ✓ with the worst "
                  "error of the reference checks as a fraction of its allowance (<= 1 passes), "
                  "✗ with the first failing command/check (+N: how many more); the JSON has "
                  "the ULPs", style="dim")
    failed = [c for c in res.cases if not c["passed"]]
    for c in failed:
        console.print(f"  [red]✗ {c['preset']} / {c['dtype']} / {c['command']}[/]")
        for line in c["failures"][:3]:
            console.print(f"      {esc(line)}")
    for c in res.cases:  # the input, not the implementation: listed, not failed
        for cond in c.get("input_conditions", [])[:1]:
            console.print(f"  [yellow]! {c['preset']} / {c['dtype']} / {c['command']}: input "
                          f"condition[/] {esc(cond['message'])}")
    verdict = "[bold green]PASSED[/]" if not failed else "[bold red]FAILED[/]"
    console.print(f"{verdict}: {len(res.cases) - len(failed)} of {len(res.cases)} cases passed")


def render_text(report, top: int = 10, width: int = 100) -> str:
    """The human report as plain text (no colour), e.g. for an assertion message."""
    import io

    from rich.console import Console

    buf = io.StringIO()
    render(report, Console(file=buf, width=width, no_color=True, highlight=False,
                           force_terminal=False), top)
    return buf.getvalue()
