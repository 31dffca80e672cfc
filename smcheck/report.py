"""Rendering: a Report becomes rich tables or one JSON document. Nothing else prints.

Every measured error is shown next to what was allowed, with the entry, the row and the cause.
"""

from __future__ import annotations

import json
import math

from .results import CheckResult, Report, jsonable

PASS, FAIL = "[green]✓ pass[/]", "[bold red]✗ FAIL[/]"


def to_json_text(report: Report, version: str, top: int | None = None) -> str:
    return json.dumps(report.to_json(version, top), indent=2, allow_nan=False)


def dumps(obj) -> str:
    return json.dumps(jsonable(obj), indent=2, allow_nan=False)


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


def make_console(stderr: bool = False):
    import os
    import sys

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else int(os.environ.get("COLUMNS", 120))
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)


def render(report: Report, console, top: int = 10) -> None:
    """The human report: header, checks with measured vs allowed, failures and notes, worst
    entries, command-specific findings, small vectors, and the verdict."""
    from rich.table import Table

    rows, n = report.shape
    console.print(f"[bold]smcheck {report.command}[/]  impl [cyan]{report.impl}[/]  dtype "
                  f"[cyan]{report.dtype}[/]  shape {rows} x {n}"
                  + ("  log-softmax" if report.options.get("log") else ""))
    console.print(f"reference: {report.reference}", style="dim")
    if report.checks:
        t = Table(title=None, show_lines=False, header_style="bold")
        for col in ("check", "measured", "allowed", "verdict"):
            t.add_column(col)
        for c in report.checks:
            t.add_row(c.name, c.measured, c.allowed, PASS if c.passed else FAIL)
        console.print(t)
    for c in report.checks:
        for line in c.failures:
            console.print(f"  [red]✗ {c.name}:[/] {line}")
    for c in report.checks:
        for line in c.notes:
            console.print(f"  [yellow]! {c.name}:[/] {line}")
    for line in report.notes:
        console.print(f"  [yellow]! {line}[/]")
    for u in report.undefined_rows:
        console.print(f"  [yellow]! row {u['row']}: {u['reason']} (not checked)[/]")
    # a passing reference check on a small input is covered by the vectors table below
    shown = [c for c in report.checks if c.entries and (not c.passed or (
        c.name == "reference" and not report.vectors))]
    for c in shown:
        _entries_table(c, console, top, batch=rows > 1)
    if "overflow" in report.blocks:
        _overflow(report.blocks["overflow"], console)
    if report.vectors:
        _vectors(report, console)
    verdict = ("[bold green]PASSED[/]" if report.passed else "[bold red]FAILED[/]")
    failed = sum(not c.passed for c in report.checks)
    console.print(f"{verdict}: {len(report.checks) - failed} of {len(report.checks)} checks "
                  "passed")


def _entries_table(c: CheckResult, console, top: int, batch: bool) -> None:
    from rich.table import Table

    if top <= 0:
        return
    t = Table(title=f"worst entries: {c.name}", title_justify="left", header_style="bold")
    cols = (["row"] if batch else []) + ["i", "x_i", "computed", "exact", "abs err", "rel err",
                                         "ULP", "allowed", "cause"]
    for col in cols:
        t.add_column(col, justify="left" if col == "cause" else "right", overflow="fold")
    for e in c.entries[:top]:
        style = "red" if e.abs_err > e.allowed or math.isnan(e.computed) else None
        cells = ([str(e.row)] if batch else []) + [
            str(e.index), num(e.x), num(e.computed, 10), num(e.reference, 10), num(e.abs_err, 3),
            num(e.rel_err, 3), num(e.ulp_err, 3), num(e.allowed, 3), e.cause]
        t.add_row(*cells, style=style)
    console.print(t)


def _overflow(b: dict, console) -> None:
    console.print(
        f"naive formula in {b['dtype']}: exp(x) overflows for x > {b['log_realmax']:.2f}, "
        f"underflows to 0 below about {b['log_min_subnormal']:.2f} (subnormal below "
        f"{b['log_min_normal']:.2f})", style="dim")
    if b["overflow_count"]:
        console.print(f"  [red]exp overflows at {b['overflow_count']} "
                      f"entr{'y' if b['overflow_count'] == 1 else 'ies'}:[/] "
                      f"{_short(b['overflow_indices'])}")
    if b["every_exp_underflows"]:
        console.print(f"  [red]every exp underflows[/] in rows "
                      f"{_short(b['rows_every_exp_underflows'])}")
    elif b["underflow_count"]:
        console.print(f"  exp underflows to 0 at {b['underflow_count']} entries")
    if b["sum_overflows"]:
        console.print(f"  [red]sum of exp overflows[/] in rows {_short(b['rows_sum_overflows'])}")


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
