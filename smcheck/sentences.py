"""Every sentence a check's records turn into, written in one place, once, when a report is
rendered (its tables, its JSON). Checks and merges hand over records (:class:`Failure`,
:class:`Note`, :class:`Finding` of :mod:`smcheck.results`) and never write or edit these words.
"""

from __future__ import annotations

import math
from typing import Callable

from .results import ROWS_NAMED, CheckResult, Failure, Finding, Note, fmt


def ilist(idx, limit: int = 8) -> str:
    """Indices as "1, 2, 3", the first ``limit`` of them and how many in all."""
    idx = [int(i) for i in idx]
    s = ", ".join(str(i) for i in idx[:limit])
    return s + (f", ... ({len(idx)} in all)" if len(idx) > limit else "")


def pair(a: float, b: float, digits: int = 3) -> tuple[str, str]:
    """Two numbers shown side by side (a measure and its allowance), with as many digits as
    it takes for different numbers to read differently ("1.0004 exceeds 1", never "1
    exceeds 1")."""
    for d in range(digits, 18):
        sa, sb = fmt(a, d), fmt(b, d)
        if sa != sb or a == b or a != a or b != b:
            return sa, sb
    return fmt(a, 17), fmt(b, 17)


def measured_allowed(at: dict, unit: str = "ULP") -> tuple[str, str]:
    """The summary table's "measured" and "allowed" cells of a comparison, both at the entry
    whose error / allowance is largest (``at``: computed, exact, error, allowance, ulp and
    allowed_ulp there). A figure that would mean nothing is written as what it means: a
    relative error of a zero exact value, an error larger than the value itself, an
    allowance that reaches the value (the dtype cannot resolve the entry)."""
    c, x, err, a = at["computed"], at["exact"], at["error"], at["allowance"]
    ulp, aulp = pair(at["ulp"], at["allowed_ulp"])
    ax = abs(x)
    if not math.isfinite(c):
        measured = f"computed {fmt(c)} (exact {fmt(x + 0.0)})"
    elif ax == 0:
        measured = f"error {pair(err, a)[0]} (exact 0)"
    elif err > ax:
        measured = f"error > |exact| (computed {fmt(c)}, exact {fmt(x)})"
    else:
        measured = f"{ulp} {unit}, rel {pair(err / ax, a / ax)[0]}"
    if ax == 0:  # no ULP of 0 means anything: the allowance itself
        allowed = f"±{fmt(a)} (exact 0)"
    elif not math.isfinite(ax) or not math.isfinite(at["allowed_ulp"]):
        allowed = f"±{fmt(a)}"
    elif a >= ax:
        allowed = f"{aulp} {unit} >= |exact| (unresolvable)"
    else:
        allowed = f"{aulp} {unit}, rel {pair(err / ax, a / ax)[1]}"
    return measured, allowed


def _where(f: Failure) -> str:
    idx = (f"index {f.index}" if not isinstance(f.index, tuple) else
           "entry (" + ", ".join(map(str, f.index)) + ")")
    return f"row {f.row}, {idx}"


def plural(count: int, one: str, many: str | None = None) -> str:
    """"1 entry", "3 entries", "1 row", "2 rows"."""
    return f"{count} {one if count == 1 else (many or one + 's')}"


def rows_words(rows, limit: int = 8) -> str:
    """"row 3" or "rows 0, 4, 7" (the first ``limit``, and how many in all)."""
    rows = list(rows)
    return ("row " if len(rows) == 1 else "rows ") + ilist(rows, limit)


def _error_words(f: Failure) -> str:
    """An entry's error next to its allowance, or what its numbers mean when an error
    figure would not (a non-finite result, an error larger than the value)."""
    c, x = fmt(f.computed, 10), fmt(f.exact + 0.0, 10)  # -0 reads as 0
    if not math.isfinite(f.computed):
        return f"computed {c}, exact {x} (allowed ±{fmt(f.allowance)})"
    err, allowed = pair(f.error, f.allowance)
    if f.exact != 0 and f.error > abs(f.exact):
        return f"computed {c}, exact {x}: error {err} > |exact| (allowed {allowed})"
    return f"computed {c}, exact {x}, error {err} (allowed {allowed}, {fmt(f.ulp)} ULP)"


def _exceed(f: Failure) -> str:
    return (f"{f.count} of {plural(f.total, 'entry', 'entries')} "
            f"{'exceeds its' if f.count == 1 else 'exceed their'} allowance; "
            f"worst: {_where(f)}: {_error_words(f)}" + (f" — {f.cause}" if f.cause else ""))


def _exp_overflow(f: Failure) -> str:
    e = f.extra
    return (f"row {f.row}: exp(x_i) overflows at indices {ilist(e['indices'])} (x_i > "
            f"log(realmax) = {e['log_max']:.2f} in {e['dtype']}): shift by max(x) to avoid it")


def _exp_underflow(f: Failure) -> str:
    e = f.extra
    return (f"row {f.row}: every exp(x_i) underflows (x_i < log(min subnormal) = "
            f"{e['log_eta']:.2f} in {e['dtype']}): shift by max(x)")


def _more_rows(f: Failure) -> str:
    """After the first ROWS_NAMED rows where exp overflows or underflows: how many more."""
    if f.count <= ROWS_NAMED:
        return ""
    return (f"and {plural(f.count - ROWS_NAMED, 'more row')} where exp overflows or every exp "
            f"underflows ({plural(f.total, 'entry', 'entries')} in the "
            f"{f.count} rows)")


def _normalization(f: Failure) -> str:
    e = f.extra
    stall = (f" — the normaliser is off (a sum accumulated in {e['stall_dtype']} stalls once it "
             "outgrows its terms: accumulate in float32 or pairwise)" if e["stall_dtype"] else "")
    err, allowed = pair(f.error, f.allowance)
    return (f"row {f.row}: {e['what']} = {err} exceeds {allowed} (sum = "
            f"{fmt(e['sum'], 17)}){stall}")


def _non_finite(f: Failure) -> str:
    e = f.extra
    kinds = ", ".join(f"{e[k]} {k}" for k in ("nan", "inf") if e[k])
    return f"{plural(f.count, 'non-finite entry', 'non-finite entries')} ({kinds}); first: {e['first']}"


def _fd(f: Failure) -> str:
    e = f.extra
    where = f"row {f.row}{'' if f.index is None else ', entry ' + str(f.index)}"
    if not math.isfinite(f.exact):
        return (f"{where}: computed {fmt(f.computed, 10)}; the finite difference ({e['method']}) "
                f"is {fmt(f.exact)}: the implementation is not finite near x")
    diff, allowed = pair(f.error, f.allowance)
    return (f"{where}: computed {fmt(f.computed, 10)}, finite difference {fmt(f.exact, 10)} ± "
            f"{fmt(e['fd_error'])} ({e['method']}), difference {diff} > allowed {allowed}")


def _sum(f: Failure) -> str:
    err, allowed = pair(f.error, f.allowance)
    return (f"row {f.row}{'' if f.index is None else ', index ' + str(f.index)}: "
            f"|{f.extra['label']}| = {err} exceeds {allowed}")


def _probe(f: Failure) -> str:
    return (f"row {f.row}, probe {f.index}: computed {fmt(f.computed, 10)}, exact "
            f"{fmt(f.exact, 10)}")


def _symmetry(f: Failure) -> str:
    i, k = f.index
    if i == k or not (math.isfinite(f.computed) and math.isfinite(f.exact)):
        bad = [f"J[{a}, {b}] = {fmt(v, 10)}" for a, b, v in ((i, k, f.computed), (k, i, f.exact))
               if not math.isfinite(v)][:1 if i == k else 2]
        return f"row {f.row}: {' and '.join(bad)} is not a number: J cannot be symmetric"
    return (f"row {f.row}: J[{i}, {k}] = {fmt(f.computed, 10)} but J[{k}, {i}] = "
            f"{fmt(f.exact, 10)}")


def _shift(f: Failure) -> str:
    e = f.extra
    rel = e["max_rel_err"]
    if not (math.isfinite(f.ulp) and math.isfinite(rel)):
        what = "results that are not finite"
    elif rel > 1:
        what = f"errors larger than the values (max rel {fmt(rel)})"
    else:
        what = f"max {fmt(f.ulp)} ULP, rel {fmt(rel)}"
    return (f"at the {e['shift']} shift (max(x + c) = {fmt(e['max_of_shifted_x'], 4)}): "
            f"{what}" + (f" — {f.cause}" if f.cause else ""))


def _grad_x(f: Failure) -> str:
    at = f" at the {f.extra['shift']} shift" if f.extra.get("shift") else ""
    return (f"gradient in x (s * sum(t) - t){at}, row {f.row}, index {f.index}: computed "
            f"{fmt(f.computed, 10)}, exact {fmt(f.exact, 10)}")


def _zero_condition(f: Failure) -> str:
    e = f.extra
    side = (f"v_{f.index} = {e['v_i']!r} vs <v, s> = {e['<v,s>']}, " if "v_i" in e else "")
    return (f"row {f.row}, index {f.index} ({e['kind']}): {side}z = {fmt(f.exact)}, floor "
            f"{fmt(f.allowance)}, t = {fmt(e['t_i'])}: the gradient -t/z there is "
            + ("undefined" if e["kind"] == "exact zero" else "unreliable (sign and size)"))


#: entries named in the domain check's failure line
DOMAIN_ITEMS = 6


def _domain(f: Failure) -> str:
    items = [f"row {r} index {i} (z = {fmt(z)}, t = {fmt(t)})"
             for r, i, z, t in f.extra["items"][:DOMAIN_ITEMS]]
    return "log z_i undefined at " + ", ".join(items) + (" ..." if f.count > DOMAIN_ITEMS else "")


#: the sentence of each kind of failure record
FAILURES: dict[str, Callable[[Failure], str]] = {
    "exceed": _exceed, "exp_overflow": _exp_overflow, "exp_underflow": _exp_underflow,
    "more_rows": _more_rows,
    "normalization": _normalization, "non_finite": _non_finite, "fd": _fd, "sum": _sum,
    "probe": _probe, "symmetry": _symmetry, "shift": _shift, "grad_x": _grad_x,
    "zero_condition": _zero_condition, "domain": _domain,
}

#: the sentence of each kind of note
NOTES: dict[str, Callable[[Note], str]] = {
    "probes": lambda n: (f"n = {n.extra['n']} > --max-dense: checked v^T J u on "
                         f"{n.extra['probes']} random probe pairs per row instead of every entry"),
    "grad_x": lambda n: f"gradient in x, s * sum(t) - t: max {fmt(n.extra['max_ulp'])} ULP",
    "grad_x_beyond": lambda n: (
        f"gradient in x not judged where -t_i/z_i lies beyond {n.extra['dtype']}'s range, "
        f"e.g. row {n.extra['row']}, index {n.extra['index']}: -t/z = "
        f"{fmt(n.extra['quotient'])}, correctly infinite in {n.extra['dtype']}; the gradient "
        "through it cannot be formed in the dtype (those rows are left out)"),
}


def finding_line(f: Finding) -> str:
    return f.template.format(count=f.count, total=f.total, example=f.example,
                             ies="y" if f.count == 1 else "ies", s="" if f.count == 1 else "s",
                             its="its" if f.count == 1 else "their")


def line(item) -> str:
    """A record's sentence; a plain line (claims write their own) is kept as it is."""
    if isinstance(item, Failure):
        return FAILURES[item.kind](item)
    if isinstance(item, Note):
        return NOTES[item.kind](item)
    if isinstance(item, Finding):
        return finding_line(item)
    return item


def failure_lines(c: CheckResult) -> list[str]:
    """Why ``c`` failed: its failure records, then the findings that fail it."""
    return [s for s in (line(f) for f in c.failures) if s] + [
        finding_line(f) for f in c.findings if f.fails]


def note_lines(c: CheckResult) -> list[str]:
    """What is worth knowing about ``c`` although it passed: notes, then the other findings."""
    return [line(n) for n in c.notes] + [finding_line(f) for f in c.findings if not f.fails]
