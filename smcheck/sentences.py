"""Every sentence a check's records turn into, written in one place, once, when a report is
rendered (its tables, its JSON). Checks and merges hand over records (:class:`Failure`,
:class:`Note`, :class:`Finding` of :mod:`smcheck.results`) and never write or edit these words.
"""

from __future__ import annotations

from typing import Callable

from .results import CheckResult, Failure, Finding, Note, fmt


def ilist(idx, limit: int = 8) -> str:
    """Indices as "1, 2, 3", the first ``limit`` of them and how many in all."""
    idx = [int(i) for i in idx]
    s = ", ".join(str(i) for i in idx[:limit])
    return s + (f", ... ({len(idx)} in all)" if len(idx) > limit else "")


def _where(f: Failure) -> str:
    idx = (f"index {f.index}" if not isinstance(f.index, tuple) else
           "entry (" + ", ".join(map(str, f.index)) + ")")
    return f"row {f.row}, {idx}"


def _exceed(f: Failure) -> str:
    return (f"{f.count} of {f.total} entries exceed their allowance; worst: {_where(f)}: "
            f"computed {fmt(f.computed, 10)}, exact {fmt(f.exact, 10)}, error {fmt(f.error)} "
            f"(allowed {fmt(f.allowance)}, {fmt(f.ulp)} ULP)" + (f" — {f.cause}" if f.cause else ""))


def _exp_overflow(f: Failure) -> str:
    e = f.extra
    return (f"row {f.row}: exp(x_i) overflows at indices {ilist(e['indices'])} (x_i > "
            f"log(realmax) = {e['log_max']:.2f} in {e['dtype']}): shift by max(x) to avoid it")


def _exp_underflow(f: Failure) -> str:
    e = f.extra
    return (f"row {f.row}: every exp(x_i) underflows (x_i < log(min subnormal) = "
            f"{e['log_eta']:.2f} in {e['dtype']}): shift by max(x)")


def _normalization(f: Failure) -> str:
    e = f.extra
    stall = (f" — the normaliser is off (a sum accumulated in {e['stall_dtype']} stalls once it "
             "outgrows its terms: accumulate in float32 or pairwise)" if e["stall_dtype"] else "")
    return (f"row {f.row}: {e['what']} = {fmt(f.error)} exceeds {fmt(f.allowance)} (sum = "
            f"{fmt(e['sum'], 17)}){stall}")


def _non_finite(f: Failure) -> str:
    e = f.extra
    kinds = ", ".join(f"{e[k]} {k}" for k in ("nan", "inf") if e[k])
    return f"{f.count} non-finite entries ({kinds}); first: {e['first']}"


def _fd(f: Failure) -> str:
    e = f.extra
    return (f"row {f.row}{'' if f.index is None else ', entry ' + str(f.index)}: computed "
            f"{fmt(f.computed, 10)}, finite difference {fmt(f.exact, 10)} ± {fmt(e['fd_error'])} "
            f"({e['method']}), difference {fmt(f.error)} > allowed {fmt(f.allowance)}")


def _sum(f: Failure) -> str:
    return (f"row {f.row}{'' if f.index is None else ', index ' + str(f.index)}: "
            f"|{f.extra['label']}| = {fmt(f.error)} exceeds {fmt(f.allowance)}")


def _probe(f: Failure) -> str:
    return (f"row {f.row}, probe {f.index}: computed {fmt(f.computed, 10)}, exact "
            f"{fmt(f.exact, 10)}")


def _symmetry(f: Failure) -> str:
    i, k = f.index
    return (f"row {f.row}: J[{i}, {k}] = {fmt(f.computed, 10)} but J[{k}, {i}] = "
            f"{fmt(f.exact, 10)}")


def _shift(f: Failure) -> str:
    e = f.extra
    return (f"at the {e['shift']} shift (max(x + c) = {fmt(e['max_of_shifted_x'], 4)}): "
            f"max {fmt(f.ulp)} ULP, rel {fmt(e['max_rel_err'])}"
            + (f" — {f.cause}" if f.cause else ""))


def _grad_x(f: Failure) -> str:
    return (f"gradient in x (s * sum(t) - t), row {f.row}, index {f.index}: computed "
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
    "normalization": _normalization, "non_finite": _non_finite, "fd": _fd, "sum": _sum,
    "probe": _probe, "symmetry": _symmetry, "shift": _shift, "grad_x": _grad_x,
    "zero_condition": _zero_condition, "domain": _domain,
}

#: the sentence of each kind of note
NOTES: dict[str, Callable[[Note], str]] = {
    "probes": lambda n: (f"n = {n.extra['n']} > --max-dense: checked v^T J u on "
                         f"{n.extra['probes']} random probe pairs per row instead of every entry"),
    "grad_x": lambda n: f"gradient in x, s * sum(t) - t: max {fmt(n.extra['max_ulp'])} ULP",
}


def finding_line(f: Finding) -> str:
    return f.template.format(count=f.count, total=f.total, example=f.example,
                             ies="y" if f.count == 1 else "ies", s="" if f.count == 1 else "s")


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
    return [line(f) for f in c.failures] + [finding_line(f) for f in c.findings if f.fails]


def note_lines(c: CheckResult) -> list[str]:
    """What is worth knowing about ``c`` although it passed: notes, then the other findings."""
    return [line(n) for n in c.notes] + [finding_line(f) for f in c.findings if not f.fails]
