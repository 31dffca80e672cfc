"""One report from the reports of consecutive chunks of rows, as one chunk of all the rows
would give it: maxima and counts over every chunk, the worst chunk's worst entry, records
(failures, findings, notes) combined as data, detail lists in row order. A check whose headline
is a count is finished by its own merge (the third column of the table in
:mod:`smcheck.checks`). Nothing here edits text.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np

from ..errors_ulp import error_ratio
from ..reference.verify import merge as merge_verification
from ..results import (CAPPED_BLOCK_LISTS, CAPPED_LISTS, LIST_MAX, NO_RESULT, RESULT_MAX,
                       ROWS_NAMED, SUMMED_DETAILS, CheckResult, Failure, Note, Report,
                       merge_findings, result_size)
from .common import finding_totals, merge_tolerance, nanmax
from .worst import entry_order

#: a check's own merge: (merged result, the chunks' results, top) -> None, finishing it
Hook = Callable[[CheckResult, list[CheckResult], int], None]


def _worst_chunk(results: list[CheckResult]) -> CheckResult:
    """The chunk whose worst entry one chunk of all the rows would have chosen: the first
    largest ``score`` (the quantity each check ranks its entries by); without scores, the
    first failing chunk, else the largest first entry or error."""
    if all(c.score is not None for c in results):
        return max(results, key=lambda c: c.score)  # max keeps the first of equals
    failing = [c for c in results if not c.passed]
    if failing:
        return failing[0]

    def key(c):
        if c.entries:
            e = c.entries[0]
            return float(np.nan_to_num(error_ratio(e.abs_err, e.allowed), nan=np.inf))
        return c.max_abs_err or 0.0

    return max(results, key=key)


def _max(values):
    """The largest, nan if any is nan (as numpy's max over one chunk of all the rows)."""
    vals = [v for v in values if v is not None]
    return nanmax(*vals) if vals else None


def merge_checks(results: list[CheckResult], top: int, hook: Hook | None = None) -> CheckResult:
    """One check's results from consecutive chunks of rows (in row order) as one chunk of
    all the rows would give them; ``hook`` (the check's own merge) finishes it."""
    w = _worst_chunk(results)
    out = CheckResult(
        name=w.name, passed=all(c.passed for c in results),
        max_abs_err=_max(c.max_abs_err for c in results),
        max_rel_err=_max(c.max_rel_err for c in results),
        max_ulp=_max(c.max_ulp for c in results), tolerance=w.tolerance, worst=w.worst,
        measured=w.measured, allowed=w.allowed, statement=w.statement, score=w.score,
        merge_data=dict(w.merge_data))
    out.tolerance = merge_tolerance([c.tolerance for c in results], w.tolerance)
    out.notes = _merge_notes([c.notes for c in results], w.notes)
    out.failures = _merge_failures(results, w)
    for key in ("entries", "row_count"):
        if key in w.merge_data:
            out.merge_data[key] = sum(c.merge_data.get(key, 0) for c in results)
    entries = sorted((e for c in results for e in c.entries), key=entry_order)
    out.entries = entries[:max(top, 0)]
    out.details = _merge_details([c.details for c in results], w.details)
    out.findings = finding_totals(merge_findings([c.findings for c in results]),
                                  [(c.findings, c.merge_data) for c in results])
    out.kind = w.kind
    if hook is not None:
        hook(out, results, top)
    return out


#: failure records of which a check lists one per row, for the first rows in row order
ROW_KINDS = ("exp_overflow", "exp_underflow")
#: failure records of which a check lists its worst entry's, whatever chunk it is in (a
#: quantity the check judges beside its headline: the loss's gradient in x)
WORST_KINDS = ("grad_x",)


def _merge_failures(results: list[CheckResult], w: CheckResult) -> list:
    """The failure records of one chunk of all the rows, from the chunks': by kind, in the
    order the kinds come (the worst chunk's first). ``exceed``: the worst chunk's record with
    every chunk's counts; one-per-row kinds: the first ROWS_NAMED rows; worst-entry kinds: the
    largest error / allowance; any other kind: the worst chunk's. Plain lines: every chunk's."""
    by_kind: dict[str, list] = {}
    lines: list = []
    for c in [w] + [c for c in results if c is not w]:
        for f in c.failures:
            if isinstance(f, Failure):
                by_kind.setdefault(f.kind, [])
            else:
                lines.append(f)
    out = []
    for kind in by_kind:
        mine = [f for f in w.failures if isinstance(f, Failure) and f.kind == kind]
        every = [f for c in results for f in c.failures
                 if isinstance(f, Failure) and f.kind == kind]
        if kind in ROW_KINDS:
            out += every[:ROWS_NAMED]
        elif kind == "more_rows":
            out.append(Failure(kind, count=sum(f.count for f in every),
                               total=sum(f.total for f in every)))
        elif kind in WORST_KINDS:
            out.append(max(every, key=lambda f: np.nan_to_num(error_ratio(f.error, f.allowance),
                                                              nan=np.inf)))
        elif kind == "exceed" and mine and "entries" in w.merge_data:
            # "N of M entries exceed their allowance" counts every chunk's entries
            out.append(replace(mine[0],
                               count=sum(c.details.get("failing_entries", 0) for c in results),
                               total=sum(c.merge_data.get("entries", 0) for c in results)))
        else:
            out += mine or every[:1]
    return out + lines


#: notes that state a maximum over the entries (kind: its number): merged, the largest of
#: every chunk's, not the worst chunk's (whose headline may be another quantity)
MAX_NOTES = {"grad_x": "max_ulp"}


def _merge_notes(parts: list[list], worst: list) -> list:
    """The worst chunk's notes, then one note of each further kind (a Note's kind; a plain
    line is its own kind), in row order; a MAX_NOTES note with the largest of its number."""
    def kind(n):
        return n.kind if isinstance(n, Note) else n

    out = list(worst)
    for notes in parts:
        kinds = {kind(n) for n in out}
        out += [n for n in notes if kind(n) not in kinds]
    for i, n in enumerate(out):
        if isinstance(n, Note) and n.kind in MAX_NOTES:
            key = MAX_NOTES[n.kind]
            values = [m.extra[key] for notes in parts for m in notes
                      if isinstance(m, Note) and m.kind == n.kind]
            out[i] = Note(n.kind, {**n.extra, key: nanmax(*values)})
    return out


def _merge_details(parts: list[dict], worst: dict, nested: bool = False) -> dict:
    """Details of consecutive chunks: lists concatenated in row order (those cut at LIST_MAX
    entries cut again), dicts merged alike, ``failing_entries`` summed, other numbers the
    worst chunk's (within a dict: the maximum, e.g. grad_x), ``shifts`` per shift."""
    out: dict = {}
    for d in parts:
        for k, v in d.items():
            if k not in out:
                out[k] = (list(v) if isinstance(v, list) else
                          _merge_details([v], v, True) if isinstance(v, dict) else
                          v if nested or k in SUMMED_DETAILS else worst.get(k, v))
            elif isinstance(v, list) and isinstance(out[k], list):
                out[k] = out[k] + v
            elif isinstance(v, dict) and isinstance(out[k], dict):
                out[k] = _merge_details([out[k], v], out[k], True)
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(
                    out[k], (int, float)):
                if k in SUMMED_DETAILS:
                    out[k] = out[k] + v
                elif nested:
                    out[k] = nanmax(out[k], v)
            elif isinstance(v, bool) and nested and k == "passed":
                out[k] = out[k] and v
    for k in CAPPED_LISTS:
        if isinstance(out.get(k), list):
            out[k] = out[k][:LIST_MAX]
    for k, limit in CAPPED_BLOCK_LISTS.items():  # the zero condition's lists, as a detail
        if isinstance(out.get(k), list):
            out[k] = out[k][:limit]
    if "shifts" in out:
        out["shifts"] = _merge_by(out["shifts"], "shift")
    return out


#: tolerance numbers that describe the worst entry (the finite-difference step of its row),
def _merge_by(items: list[dict], key: str) -> list[dict]:
    """Per-label maxima of lists of dicts (e.g. the two shifts of each chunk): numbers their
    maximum, ``passed`` all of them."""
    merged: dict = {}
    for it in items:
        m = merged.setdefault(it[key], dict(it))
        if (it.get("reference_bound") or 0.0) > (m.get("reference_bound") or 0.0):
            m["reference"] = it["reference"]  # the words of the weakest stated precision
        for k, v in it.items():
            if k == "passed":
                m[k] = m[k] and v
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(
                    m.get(k), (int, float)):
                m[k] = nanmax(m[k], v)
            elif m.get(k) is None:
                m[k] = v
    return list(merged.values())


def merge_blocks(blocks: list[dict]) -> dict:
    out: dict = {}
    for b in blocks:
        for k, v in b.items():
            if k not in out:
                out[k] = merge_blocks([v]) if isinstance(v, dict) else v
            elif isinstance(v, dict):
                out[k] = merge_blocks([out[k], v])
            elif isinstance(v, list):
                out[k] = out[k] + v
            elif isinstance(v, bool):
                out[k] = out[k] or v
            elif isinstance(v, int) and k.endswith("_count"):
                out[k] = out[k] + v
    for k, limit in CAPPED_BLOCK_LISTS.items():
        if isinstance(out.get(k), list):
            out[k] = out[k][:limit]
    return out


#: blocks of values per entry, kept like the JSON's "result": while they are small enough
RESULT_SIZED_BLOCKS = ("v_values",)


def _merged_blocks(reports: list[Report], shape: list[int]) -> dict:
    ver = [r.blocks["reference_verification"] for r in reports
           if "reference_verification" in r.blocks]
    apart = ("reference_verification", *RESULT_SIZED_BLOCKS)
    out = merge_blocks([{k: v for k, v in r.blocks.items() if k not in apart}
                        for r in reports])
    if ver:
        out["reference_verification"] = merge_verification(ver)
    for k in RESULT_SIZED_BLOCKS:
        parts = [r.blocks[k] for r in reports if k in r.blocks]
        if parts:
            small = all(p is not None for p in parts) and np.prod(shape) <= RESULT_MAX
            out[k] = [row for p in parts for row in p] if small else None
    return out


def merge(reports: list[Report], shape: list[int], top: int = 10,
          hooks: dict[str, Hook] | None = None) -> Report:
    """One report from the reports of consecutive chunks of rows; ``hooks``: the checks' own
    merges, by check name (from the table of the report's command)."""
    hooks = hooks or {}
    first = reports[0]
    names = [c.name for c in max(reports, key=lambda r: len(r.checks)).checks]
    checks = []
    for name in names:
        parts = [c for r in reports for c in r.checks if c.name == name]
        checks.append(merge_checks(parts, top, hooks.get(name)))
    result = NO_RESULT
    if all(r.result is not NO_RESULT for r in reports) and result_size(
            first.command, shape) <= RESULT_MAX:
        result = [row for r in reports for row in r.result]
    arrays = {}
    if all(r.arrays for r in reports):
        arrays = {k: np.concatenate([r.arrays[k] for r in reports]) for k in first.arrays}
    notes = []
    for r in reports:
        notes += [n for n in r.notes if n not in notes and not n.startswith("no row has")]
    if not any(r.checks for r in reports):
        notes.append("no row has a defined softmax: nothing to check")
    # the reference's words: those of the weakest precision stated by a chunk (the float64
    # tier's bound grows with |x_i - max|), so that they hold for every row
    stated = max((r for r in reports if r.checks), default=first,
                 key=lambda r: r.reference_bound or 0.0)
    return Report(command=first.command, impl=first.impl, dtype=first.dtype, dps=first.dps,
                  shape=shape, checks=checks, reference=stated.reference,
                  undefined_rows=[u for r in reports for u in r.undefined_rows], notes=notes,
                  blocks=_merged_blocks(reports, shape), options=first.options,
                  vectors={}, result=result, arrays=arrays,
                  reference_bound=stated.reference_bound)


def merge_shift_parts(parts: list[dict], top: int) -> dict:
    """One shift's part of shift_invariance (:func:`.common.shift_one`) from the parts of the
    segments of one row (:mod:`smcheck.longrow`), as the whole row would give it."""
    per = dict(parts[0]["per"])
    per.update(passed=all(p["per"]["passed"] for p in parts),
               **{k: _max(p["per"][k] for p in parts)
                  for k in ("max_abs_err", "max_rel_err", "max_ulp", "reference_bound")})
    bys = [p["by"] for p in parts]
    by = {"failing": sum(b["failing"] for b in bys),
          "entries": sorted((e for b in bys for e in b["entries"]), key=entry_order)[:top],
          "findings": finding_totals(merge_findings([b["findings"] for b in bys]),
                                     [(b["findings"], p["one"].merge_data)
                                      for b, p in zip(bys, parts)]),
          "extra": [f for b in bys for f in b["extra"]]}
    return {"label": parts[0]["label"], "one": merge_checks([p["one"] for p in parts], top),
            "per": per, "by": by, "key": max(p["key"] for p in parts)}
