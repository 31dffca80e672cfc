"""Result objects: what a check found, as data. Nothing here prints or writes sentences:
sentences.py words the records, report.py renders tables and JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Entry:
    """One entry of a comparison, for the table of worst entries."""

    row: int
    index: int | tuple
    x: float
    computed: float
    reference: float
    abs_err: float
    rel_err: float
    ulp_err: float
    allowed: float
    cause: str = ""
    ulp: float = math.nan  # the spacing of the dtype at the exact value (allowed / ulp: ULPs)


@dataclass
class Finding:
    """Something a check found at a number of entries, kept as data until it is rendered:
    chunks of a batch add their counts up, and the line is written once, from the totals.
    ``template`` is formatted with count, total, example and ``ies`` ("y" or "ies")."""

    kind: str  # "unresolvable", "flush_to_zero", "dtype", ...
    count: int
    total: int
    template: str
    example: str = ""  # the first entry found (row order)
    fails: bool = False  # whether it makes the check fail (a failure line, else a note)


def merge_findings(parts: list[list[Finding]]) -> list[Finding]:
    """The findings of consecutive chunks: counts added, the first example kept."""
    out: dict[str, Finding] = {}
    for fs in parts:
        for f in fs:
            if f.kind not in out:
                out[f.kind] = Finding(**vars(f))
            else:
                m = out[f.kind]
                m.count += f.count
                m.total += f.total
                m.fails = m.fails or f.fails
    return list(out.values())


@dataclass(frozen=True)
class Failure:
    """Why a check failed, as data (torch.testing's ErrorMeta habit): the kind of failure,
    where (row, index), the numbers (computed, exact, error, allowance, ULP) and the cause;
    ``count`` of ``total`` entries when one record stands for many (the worst for the rest),
    and what a kind's sentence needs beside them in ``extra``. Chunks of a batch combine
    records; :mod:`smcheck.sentences` writes each sentence once, when the report is rendered."""

    kind: str  # "exceed", "fd", "sum", "normalization", "shift", ...: see sentences.FAILURES
    row: int | None = None
    index: Any = None
    computed: float = math.nan
    exact: float = math.nan
    error: float = math.nan
    allowance: float = math.nan
    ulp: float = math.nan
    cause: str = ""
    count: int = 1
    total: int = 1
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Note:
    """A note of a check, as data: merging chunks keeps one of each kind (the worst chunk's, or
    the largest of a maximum it states: checks.merge.MAX_NOTES);
    :mod:`smcheck.sentences` writes it."""

    kind: str  # "probes", "grad_x": see sentences.NOTES
    extra: dict = field(default_factory=dict)


def fmt(v: float | None, digits: int = 3) -> str:
    """A number in a sentence: ``digits`` significant digits; "-" for None."""
    if v is None:
        return "-"
    v = float(v)
    if math.isnan(v) or math.isinf(v):
        return str(v)
    return f"{v:.{digits}g}"


#: the JSON's "result" (the computed values) holds at most this many numbers; a larger one is
#: null, with "result_omitted" saying why (the checks cover every entry)
RESULT_MAX = 4096
#: per-row failure lines a check lists (e.g. where exp overflows): its first rows in row order
ROWS_NAMED = 5
#: lists of entries in a check's details stop at this many (the counts cover every entry)
LIST_MAX = 100
#: the details' counts that chunks of a batch add up (other numbers: the worst chunk's)
SUMMED_DETAILS = ("failing_entries", "condition_count", "exact_zero_count", "unreliable_count")
#: the details' lists that are cut at LIST_MAX (the others hold one item per row or per entry)
CAPPED_LISTS = ("non_finite", "domain_violations", "cancelled", "entries")
#: the blocks' lists of indices stop at this many (overflow, zero condition; their counts
#: cover every entry)
INDEX_LIST_MAX = 1000
#: the blocks' lists that are cut, and where (chunks of a batch are cut the same way; the
#: zero condition's lists are also a check's details)
CAPPED_BLOCK_LISTS = {"overflow_indices": INDEX_LIST_MAX, "underflow_indices": INDEX_LIST_MAX,
                      "exact_zero_indices": INDEX_LIST_MAX,
                      "unreliable_indices": INDEX_LIST_MAX, "entries": LIST_MAX}


def result_size(command: str, shape: list[int]) -> int:
    """How many numbers the JSON's "result" of ``command`` on ``shape`` = [rows, n] holds:
    rows x n x n for the Jacobian, rows x n otherwise."""
    size = math.prod(shape) if shape else 0
    return size * shape[-1] if command == "jacobian" and shape else size


@dataclass
class CheckResult:
    """The outcome of one named check (SPEC "Check names")."""

    name: str
    passed: bool  # for an input check (``kind``): whether the input is free of its condition
    max_abs_err: float | None
    max_rel_err: float | None
    max_ulp: float | None
    tolerance: dict
    worst: dict | None  # {"row": r, "index": i}
    measured: str  # headline measurement, for the summary table
    allowed: str  # headline allowance, next to it
    statement: str = ""  # what the check verifies, one line
    failures: list = field(default_factory=list)  # why it failed: Failure records, lines
    notes: list = field(default_factory=list)  # worth knowing although it passed (Note, str)
    entries: list[Entry] = field(default_factory=list)  # worst entries, worst first
    details: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)  # counted findings (lines at render)
    #: "implementation": the check judges the implementation (a failure is exit 1);
    #: "input": it reports a property of the input (zero_condition, domain: exit 3 if present)
    kind: str = "implementation"
    # not in the JSON; what merging the reports of chunks of rows needs (checks.merge):
    score: float | None = None  # what the worst entry was chosen by (its error / allowance)
    merge_data: dict[str, Any] = field(default_factory=dict)  # counts, rows: see the merges in checks.TABLE

    @property
    def status(self) -> str:
        """"pass", "fail", or "input_condition" (an input check that found its condition)."""
        if self.passed:
            return "pass"
        return "input_condition" if self.kind == "input" else "fail"


class _NoResult:
    """A command that computes no values (claims) has no "result" key. A singleton that
    survives pickling (reports come back from worker processes)."""

    def __repr__(self):
        return "NO_RESULT"

    def __reduce__(self):
        return "NO_RESULT"


NO_RESULT = _NoResult()


@dataclass
class Report:
    """Everything one command found; report.py turns it into tables or JSON."""

    command: str
    impl: str
    dtype: str
    dps: int
    shape: list[int]
    checks: list[CheckResult]
    reference: str  # engine and its precision, in words
    undefined_rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    blocks: dict[str, Any] = field(default_factory=dict)  # command-specific: "overflow", ...
    options: dict[str, Any] = field(default_factory=dict)  # log, metric, ...
    vectors: dict[str, Any] = field(default_factory=dict)  # x, computed, reference (small n)
    result: Any = NO_RESULT  # computed values, input-shaped, None for undefined rows
    arrays: dict[str, Any] = field(default_factory=dict, repr=False)  # for plots; not in JSON
    #: the relative error bound that ``reference`` states, when it depends on the input (the
    #: float64 tier): merging chunks keeps the words of the largest. Not in JSON.
    reference_bound: float | None = field(default=None, repr=False)

    @property
    def passed(self) -> bool:
        """No check of the implementation failed (and the reference verified itself, when
        asked to). Input conditions do not count: see :attr:`input_conditions`."""
        verified = self.blocks.get("reference_verification", {}).get("passed", True)
        return all(c.passed for c in self.checks if c.kind == "implementation") and bool(
            verified)

    @property
    def input_conditions(self) -> list[dict]:
        """What the input leaves unjudgeable (SPEC exit status 3): every row undefined, so
        nothing was checked; or an input check (zero_condition, domain) that found its
        condition. Each with its kind, the check and a count (the report writes the words)."""
        out = []
        if not self.checks and self.undefined_rows and self.command != "claims":
            out.append({"kind": "no_defined_row", "check": None,
                        "count": len(self.undefined_rows)})
        for c in self.checks:
            if c.kind == "input" and not c.passed:
                out.append({"kind": c.name, "check": c.name,
                            "count": c.details.get("condition_count", 0)})
        return out

    def exit_status(self, check: bool) -> int:
        """0, 1 (a check of the implementation failed) or 3 (none did, but the input leaves
        something unjudgeable); only with ``check``, else 0. A failure outranks a condition."""
        if not check:
            return 0
        if not self.passed:
            return 1
        return 3 if self.input_conditions else 0


def jnum(v):
    """A float for JSON: non-finite numbers become the strings "inf", "-inf", "nan"."""
    if v is None:
        return None
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def jsonable(obj):
    """Plain JSON types throughout (numpy scalars and arrays included)."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return jnum(obj)
    return obj
