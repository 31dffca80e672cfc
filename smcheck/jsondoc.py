"""The JSON document of a report (the schema's keys: :mod:`smcheck.schema`), as plain Python
data and as text. Sentences come from :mod:`smcheck.sentences`, as in the tables."""

from __future__ import annotations

import json

from .results import (NO_RESULT, RESULT_MAX, CheckResult, Entry, Finding, Report, jnum, jsonable,
                      result_size)
from .sentences import failure_lines, finding_line, note_lines


def to_json_text(report: Report, version: str, top: int | None = None) -> str:
    return json.dumps(report_json(report, version, top), indent=2, allow_nan=False)


def input_conditions(report: Report) -> list[dict]:
    """The report's input conditions with their message: the first line of the check."""
    out = []
    for cond in report.input_conditions:
        if cond["check"] is None:
            msg = "no row has a defined softmax: nothing was checked"
        else:
            c = next(c for c in report.checks if c.name == cond["check"])
            msg = (failure_lines(c) or [c.measured])[0]
        out.append({**cond, "message": msg})
    return out


def entry_json(e: Entry) -> dict:
    idx = list(e.index) if isinstance(e.index, tuple) else e.index
    return {"row": e.row, "index": idx, "x": jnum(e.x), "computed": jnum(e.computed),
            "reference": jnum(e.reference), "abs_err": jnum(e.abs_err),
            "rel_err": jnum(e.rel_err), "ulp": jnum(e.ulp_err), "allowed": jnum(e.allowed),
            "cause": e.cause}


def finding_json(f: Finding) -> dict:
    return {"kind": f.kind, "count": f.count, "total": f.total, "fails": f.fails,
            "message": finding_line(f)}


def check_json(c: CheckResult, top: int | None = None) -> dict:
    """One check's JSON: every key always there (smcheck/schema.json). ``worst_entries`` is a
    list (at most ``top``; empty when ``top`` is 0) for a check that compares entry by entry
    (it counts ``failing_entries``), null for one that has no entries."""
    out = {"name": c.name, "passed": c.passed, "status": c.status, "kind": c.kind,
           "statement": c.statement, "max_abs_err": jnum(c.max_abs_err),
           "max_rel_err": jnum(c.max_rel_err), "max_ulp": jnum(c.max_ulp),
           "tolerance": jsonable(c.tolerance), "worst": jsonable(c.worst), "measured": c.measured,
           "allowed": c.allowed, "failures": failure_lines(c), "notes": note_lines(c),
           "findings": [finding_json(f) for f in c.findings],
           "worst_entries": [entry_json(e) for e in c.entries[:top]] if (
               c.entries or "failing_entries" in c.details) else None}
    out.update(jsonable(c.details))
    if isinstance(out.get("zero_condition"), dict):
        out["zero_condition"] = _zero_condition_json(out["zero_condition"])
    return out


#: the blocks of each command, null when the run has none (no defined row; not asked for)
BLOCKS = {"forward": ("overflow", "reference_verification"),
          "jacobian": ("reference_verification",),
          "vjp": ("dot", "v_values", "reference_verification"),
          "loss": ("zero_condition", "loss_value", "reference_verification")}


def _zero_condition_json(zc: dict) -> dict:
    """The zero condition's keys of z = v J(x) (``<v,s>``, an entry's ``v_i``), null when z
    is not a VJP."""
    return {**zc, "<v,s>": zc.get("<v,s>"),
            "entries": [{**e, "v_i": e.get("v_i"), "<v,s>": e.get("<v,s>")}
                        for e in zc["entries"]]}


def report_json(report: Report, version: str, top: int | None = None) -> dict:
    """The JSON document of a report (SPEC's keys, smcheck/schema.json), as plain Python
    data: every key of the command there, null where it has no value."""
    out = {"smcheck": version, "command": report.command, "impl": report.impl,
           "dtype": report.dtype, "dps": report.dps, "shape": report.shape,
           "passed": report.passed, "input_conditions": jsonable(input_conditions(report)),
           "reference_engine": report.reference,
           **jsonable({**report.options, "input": report.options.get("input")}),
           "checks": [check_json(c, top) for c in report.checks],
           "undefined_rows": report.undefined_rows, "notes": report.notes}
    out.update({k: None for k in BLOCKS.get(report.command, ())})
    if report.command in ("forward", "jacobian", "vjp", "loss"):
        out.setdefault("axis", -1)  # the axis softmax ran along; x's other axes, if N-d
        out.setdefault("batch_shape", None)
        for key, default in (("batched", False), ("tensor", "numpy"), ("device", "cpu")):
            out.setdefault(key, default)
    out.update(jsonable(report.blocks))
    if isinstance(out.get("zero_condition"), dict):
        out["zero_condition"] = _zero_condition_json(out["zero_condition"])
    if report.command in BLOCKS:  # the commands that compute values (not claims)
        size = result_size(report.command, report.shape)
        if report.result is not NO_RESULT and size <= RESULT_MAX:
            out["result"], out["result_omitted"] = jsonable(report.result), None
        else:
            why = (f"{size} numbers, more than the limit" if size > RESULT_MAX else
                   "the Jacobian is not formed for n > --max-dense (checked on probes)")
            out["result"] = None
            out["result_omitted"] = {"reason": why, "limit": RESULT_MAX}
    return out


def dumps(obj) -> str:
    return json.dumps(jsonable(obj), indent=2, allow_nan=False)
