"""From comparisons to verdicts: the pieces every command's checks share.

* :func:`comparison_result` — a :class:`~smcheck.results.CheckResult` from a comparison: the
  maxima, the worst entry with its allowance, and the counted findings that hold for any
  command (entries the dtype cannot resolve, results flushed to zero);
* :func:`dtype_finding` — an implementation that did not compute in the dtype it was asked for;
* :func:`warnings_finding` — the warnings an implementation (a user's callable) issued;
* :func:`shift_invariance` — the SPEC's shift check for every command: the implementation at
  the rounded x + c against the exact value there, for an overflow and an underflow shift;
* :func:`merge_shifts` — how a merged batch finishes shift_invariance (the table's merge).

Checks return results; nothing here prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ..causes import cause
from ..dtypes import DtypeInfo
from ..errors_ulp import Comparison, Overrides, error_ratio
from ..impls import Implementation
from ..results import CheckResult, Failure, Finding, fmt, merge_findings
from ..sentences import measured_allowed
from .worst import entry_order, top_entries


@dataclass(kw_only=True)
class Case:
    """What the checks of every command share: the rows checked (their numbers in the user's
    input), the dtype, the implementation, the tolerance overrides, the reference's digits
    and engine, how many worst entries to keep, the seed of random directions, and the
    options that change a verdict. Each command's case adds its arrays."""

    rows: np.ndarray
    info: DtypeInfo
    impl: Implementation
    overrides: Overrides | None
    dps: int
    top: int = 10
    seed: int = 0  # random directions and probes, per row
    engine: str = "auto"
    ftz: bool = False  # --allow-ftz: subnormal results may be flushed to zero
    strict_dtype: bool = False  # --strict-dtype: a result not in the dtype fails
    #: the index in its row of the first entry here (a segment of a long row, smcheck.longrow)
    col0: int = 0


def score(ratio: np.ndarray, pos) -> float:
    """The ratio at the worst entry, nan read as inf (as the worst is chosen)."""
    if pos is None or ratio.size == 0:
        return 0.0
    v = float(ratio[pos])
    return math.inf if math.isnan(v) else v


def exceed_words(bad: int, size: int) -> str:
    return f"{bad} of {size} entries exceed their allowance"


def where_words(rows, pos, col0: int = 0) -> str:
    """'row 3, index 5' or 'row 3, entry (2, 5)' for a position of a (rows, ...) array (whose
    entries start at index ``col0`` of their rows)."""
    rest = [int(p) for p in pos[1:]]
    idx = f"index {rest[0] + col0}" if len(rest) == 1 else "entry (" + ", ".join(map(str, rest)) + ")"
    return f"row {int(rows[pos[0]])}, {idx}"


def at_entry(cmp: Comparison, pos) -> dict:
    """The numbers of one entry of a comparison that a headline shows: computed, exact, the
    error and its allowance, both in ULPs, and their ratio."""
    err, a, ulp = float(cmp.abs_err[pos]), float(cmp.allowed[pos]), float(cmp.ulp[pos])
    return {"computed": float(cmp.computed[pos]), "exact": float(cmp.ref[pos]), "error": err,
            "allowance": a, "ulp": cmp.ulp_err_at(pos), "allowed_ulp": a / ulp if ulp else math.inf,
            "ratio": score(cmp.ratio, pos)}


def headline_from(res: CheckResult, cmp: Comparison, rows: np.ndarray, label: str) -> None:
    """Where a second quantity that ``res`` judges (the loss's gradient in x) is further over
    its allowance than the headline's, the table shows that one: measured, allowed, where
    and the ratio, named by ``label``; so a failing check never shows a ratio below 1."""
    w = cmp.worst_index()
    if w is None or res.score is None or score(cmp.ratio, w) <= res.score:
        return
    at = at_entry(cmp, w)
    measured, allowed = measured_allowed(at)
    res.measured, res.allowed = f"{label}: {measured}", allowed
    res.worst = {"row": int(rows[w[0]]), "index": int(w[1]), "ratio": at["ratio"]}
    res.score = at["ratio"]


def worst_failure(cmp: Comparison, rows: np.ndarray, cause: str = "", col0: int = 0) -> Failure:
    """A failing comparison as a record: how many entries, and the worst with its numbers next
    to what was allowed (and the cause, when one is known)."""
    w = cmp.worst_index()
    rest = tuple(int(p) for p in w[1:])
    return Failure("exceed", count=int((~cmp.ok).sum()), total=int(cmp.ok.size),
                   row=int(rows[w[0]]), index=rest[0] + col0 if len(rest) == 1 else rest,
                   computed=float(cmp.computed[w]),
                   exact=float(cmp.ref[w]), error=float(cmp.abs_err[w]),
                   allowance=float(cmp.allowed[w]), ulp=float(cmp.ulp_err_at(w)), cause=cause)


# --- flush-to-zero ------------------------------------------------------------------------------


def flushed(computed, ref, info: DtypeInfo) -> np.ndarray:
    """Entries computed as 0 whose exact value is a nonzero subnormal of the dtype (it rounds to
    one, not to 0): what flush-to-zero arithmetic (FTZ/DAZ) does to subnormal results."""
    a = np.abs(ref)
    with np.errstate(invalid="ignore"):
        return (computed == 0) & (a >= info.eta / 2) & (a < info.tiny)


FTZ_TEMPLATE = ("flush-to-zero: {count} entr{ies} whose exact value is subnormal in {dtype} "
                "came out 0, e.g. {example}: the arithmetic flushes subnormal results to zero "
                "(FTZ/DAZ, as GPU kernels and XLA on the CPU do); --allow-ftz accepts it")


def ftz_cause(c: float, ref: float, info: DtypeInfo) -> str:
    if flushed(np.float64(c), np.float64(ref), info):
        return cause("flush-to-zero", f"exact {fmt(ref)} is subnormal in {info.name}, computed "
                     "0 (--allow-ftz accepts it)")
    return ""


# --- comparison results ----------------------------------------------------------------------


UNRESOLVED_TEMPLATE = ("{count} entr{ies} cannot be resolved in {dtype}: the honest allowance "
                       "reaches the value itself, so passing says nothing about them (e.g. "
                       "{example})")


def comparison_result(name: str, cmp: Comparison, info: DtypeInfo, rows: np.ndarray,
                      statement: str, flushed_mask: np.ndarray | None = None,
                      col0: int = 0) -> CheckResult:
    """A CheckResult carrying a comparison's maxima, worst entry and allowance, and the
    findings every comparison may have: entries the dtype cannot resolve (a note), and
    results flushed to zero (the failure's cause; ``flushed_mask`` where a command knows more
    entries that a flush explains, e.g. a VJP entry whose s_i is subnormal)."""
    w = cmp.worst_index()
    at = None if w is None else at_entry(cmp, w)
    worst = None if w is None else {"row": int(rows[w[0]]),
                                    "index": int(w[1]) + col0 if len(w) == 2 else [int(i) for i in w[1:]],
                                    "ratio": at["ratio"]}
    m = cmp.maxima()
    bad = int(np.count_nonzero(~cmp.ok))
    measured, allowed = measured_allowed(at) if at is not None else ("-", "-")
    res = CheckResult(name=name, passed=cmp.passed, max_abs_err=m["max_abs_err"],
                      max_rel_err=m["max_rel_err"], max_ulp=m["max_ulp"],
                      tolerance=cmp.tolerance.to_json(info), worst=worst, measured=measured,
                      allowed=allowed, statement=statement)
    res.details["failing_entries"] = bad
    res.score = score(cmp.ratio, w)
    res.merge_data["entries"] = int(cmp.ok.size)
    unresolved = cmp.unresolved
    if unresolved.any():
        pos = tuple(np.argwhere(unresolved)[0])
        res.findings.append(Finding(
            "unresolvable", int(unresolved.sum()), int(cmp.ok.size),
            UNRESOLVED_TEMPLATE.replace("{dtype}", info.name),
            f"{where_words(rows, pos, col0)}: exact {fmt(cmp.ref[pos])}, allowed "
            f"{fmt(cmp.allowed[pos])}"))
    if bad:
        ftz = (flushed(cmp.computed, cmp.ref, info) if flushed_mask is None else
               flushed_mask) & ~cmp.ok
        if ftz.any():
            pos = tuple(np.argwhere(ftz)[0])
            res.findings.append(Finding(
                "flush_to_zero", int(ftz.sum()), int(cmp.ok.size),
                FTZ_TEMPLATE.replace("{dtype}", info.name),
                f"{where_words(rows, pos, col0)} (exact {fmt(cmp.ref[pos])})", fails=True))
    return res


# --- the dtype an implementation computed in -----------------------------------------------------


DTYPE_TEMPLATE = ("{example}: it computes in a wider format than --dtype asks for, so this "
                  "run does not test the dtype ({count} of {total} values are not numbers of "
                  "it; --strict-dtype fails this)")


def dtype_finding(impl, computed: np.ndarray, info: DtypeInfo, strict: bool) -> Finding | None:
    """A finding when ``impl`` did not compute in the dtype: it returned arrays of another
    dtype (a user's callable) or values that the dtype cannot hold. Fails with ``strict``."""
    if getattr(impl, "honours_dtype", False):
        return None  # built-ins and adapters round into the dtype themselves
    c = np.asarray(computed, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        fin = np.isfinite(c)
        off = fin & (info.round64(c) != c)
    returned = getattr(impl, "returned_dtype", None)
    foreign = returned is not None and returned != info.name
    count = int(off.sum())
    if not count and not foreign:
        return None
    what = f"--impl {impl.name} returned " + (f"{returned} arrays" if foreign else "values")
    example = f"{what} for --dtype {info.name}"
    template = DTYPE_TEMPLATE
    if not count:
        template = ("{example} (every value is a number of the dtype; --strict-dtype fails "
                    "this)")
    return Finding("dtype", count, int(c.size), template, example, fails=strict)


# --- shift invariance, for every command ------------------------------------------------------


def shift_targets(info: DtypeInfo) -> dict[str, float]:
    """Where the shifts put max(x + c): just past the overflow threshold log(realmax), and
    with every entry below the underflow threshold log(min subnormal)."""
    return {"overflow": info.log_max * 1.02 + 1.0, "underflow": info.log_eta * 1.02 - 1.0}


def shift_statement(quantity: str, info: DtypeInfo) -> str:
    t = shift_targets(info)
    return (f"{quantity} at x + c agrees with the exact {quantity} of the rounded x + c, for c "
            f"putting max(x + c) at {fmt(t['overflow'], 4)} (past log(realmax) = "
            f"{info.log_max:.2f}) and at {fmt(t['underflow'], 4)} (all x below log(min "
            f"subnormal) = {info.log_eta:.2f})")


def shift_invariance(case, quantity: str) -> CheckResult:
    """The implementation at the rounded x + c for each shift of :func:`shift_targets`,
    compared with the exact value there under the same tolerance model. ``case`` gives
    ``at(Xs, c)``, a case for the shifted rows whose ``cmp`` is that comparison and whose
    ``cause(r, *index)`` explains an entry. Each shift's arrays are dropped once its result
    is taken (a fifth of the peak memory of a 10^6-entry forward run)."""
    info = case.info
    a = np.max(case.X, axis=-1, keepdims=True)
    statement = shift_statement(quantity, info)
    parts = []
    for label, target in shift_targets(info).items():
        with np.errstate(over="ignore", invalid="ignore"):
            c = target - a
            Xs = info.round64(case.X + c)
        parts.append(shift_one(case.at(Xs, c[:, 0]), label, target, statement, case.rows,
                               case.top))
        del Xs
    return shift_combine(parts)


def shift_one(shifted, label: str, target: float, statement: str, rows, top: int) -> dict:
    """One shift's part of shift_invariance: the comparison at the shifted rows (``shifted``,
    a case whose ``cmp`` compares there) as a result, its line of the per-shift table, its
    worst entries and findings, and how bad it is (``key``)."""
    cmp = shifted.cmp
    one = comparison_result("shift_invariance", cmp, shifted.info, rows, statement,
                            getattr(shifted, "flushed", None), col0=shifted.col0)
    if getattr(shifted, "grad_x", None) is not None:
        headline_from(one, shifted.grad_x, rows, "gradient in x")
    # what fails beside the compared quantity (the loss's gradient in x)
    extra = [replace(f, extra={**f.extra, "shift": label}) for f in (
        shifted.extra_failures() if hasattr(shifted, "extra_failures") else [])]
    one.passed = one.passed and not extra
    exact = shifted.exact_softmax
    per = {"shift": label, "max_of_shifted_x": float(target), "passed": one.passed,
           "max_abs_err": one.max_abs_err, "max_rel_err": one.max_rel_err,
           "max_ulp": one.max_ulp, "reference": exact.precision,
           "reference_bound": exact.rel_bound}
    # each shift's worst entries: a merged batch shows those of the worst shift overall
    by = {"failing": one.details["failing_entries"], "entries": top_entries(
        cmp, shifted.X if getattr(shifted, "dense", True) else None, rows, top,
        shifted.cause, shifted.col0), "findings": one.findings, "extra": extra}
    key = float(np.max(cmp.ratio)) if cmp.ratio.size else 0.0
    if getattr(shifted, "grad_x", None) is not None and one.score is not None:
        key = max(key, one.score)  # the gradient in x, when it is the worse
    return {"label": label, "one": one, "per": per, "by": by, "key": key}


def nanmax(*vals):
    return float("nan") if any(v != v for v in vals) else max(vals)


#: not a maximum over the entries
WORST_TOLERANCE = ("step",)


def merge_tolerance(parts: list[dict], worst: dict) -> dict:
    """One tolerance record from several parts' (chunks, shifts): the worst part's, its numbers
    the largest of any part's (an allowance's largest value over every entry judged)."""
    out = dict(worst)
    for t in parts:
        for k, v in t.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(
                    out.get(k), (int, float)) and k not in WORST_TOLERANCE:
                out[k] = nanmax(out[k], v)
    return out


def shift_combine(parts: list[dict]) -> CheckResult:
    """shift_invariance from its shifts' parts (:func:`shift_one`): the worst shift's result
    (the first of equals), every shift's line and worst entries."""
    worst = parts[0]
    for p in parts[1:]:
        if p["key"] > worst["key"]:
            worst = p
    res = worst["one"]
    # the allowance over every entry judged, at both shifts (as chunks of rows merge it: the
    # same for a batch and for its rows checked one at a time, whose worst shifts may differ)
    res.tolerance = merge_tolerance([p["one"].tolerance for p in parts], res.tolerance)
    by_shift = {p["label"]: p["by"] for p in parts}
    res.passed = all(p["per"]["passed"] for p in parts)
    res.details["shifts"] = [p["per"] for p in parts]
    res.merge_data["extra"] = [line for s in by_shift.values() for line in s["extra"]]
    res.entries = worst["by"]["entries"]
    res.merge_data.update(worst_shift=worst["label"], by_shift=by_shift)
    res.findings = worst["by"]["findings"]
    res.failures = _shift_lines(res, {k: _first_cause(v["entries"]) for k, v in by_shift.items()})
    return res


def _shift_lines(res: CheckResult, causes: dict[str, str]) -> list[Failure]:
    """One record per failing shift, each with the cause of its own worst entry (``causes``:
    shift -> cause); then what else failed (the command's extra failures)."""
    return [Failure("shift", ulp=p["max_ulp"], cause=causes.get(p["shift"], ""),
                    extra={k: p[k] for k in ("shift", "max_of_shifted_x", "max_rel_err")})
            for p in res.details["shifts"] if not p["passed"]] + res.merge_data.get("extra", [])


def _first_cause(entries) -> str:
    return next((e.cause for e in entries if e.cause), "")


def merge_shifts(out: CheckResult, parts: list[CheckResult], top: int) -> None:
    label = out.merge_data["worst_shift"]
    # every shift's worst entries, failing count and findings over every chunk, kept in the
    # merged result as in a chunk's, so that merged results merge again alike
    by = {}
    for key in out.merge_data["by_shift"]:
        each = [p.merge_data["by_shift"][key] for p in parts]
        by[key] = {"failing": sum(s["failing"] for s in each),
                   "entries": sorted((e for s in each for e in s["entries"]),
                                     key=entry_order)[:top],
                   "findings": finding_totals(
                       merge_findings([s["findings"] for s in each]),
                       [(s["findings"], p.merge_data) for s, p in zip(each, parts)]),
                   "extra": _worst_of_each_kind([f for s in each for f in s["extra"]])}
    out.merge_data["by_shift"] = by
    # the maxima of the worst shift over every chunk, as one chunk has them (each chunk's
    # own worst shift may be the other one)
    lines = [s for p in parts for s in p.details["shifts"] if s["shift"] == label]
    for key in ("max_abs_err", "max_rel_err", "max_ulp"):
        vals = [s[key] for s in lines if s[key] is not None]
        if vals:
            setattr(out, key, math.nan if any(v != v for v in vals) else max(vals))
    out.entries = by[label]["entries"]
    out.details["failing_entries"] = by[label]["failing"]
    out.findings = by[label]["findings"]
    out.merge_data["extra"] = _worst_of_each_kind(
        [f for p in parts for f in p.merge_data.get("extra", [])])
    out.failures = _shift_lines(out, {key: _first_cause(b["entries"]) for key, b in by.items()})


def finding_totals(findings: list, parts: list[tuple[list, dict]]) -> list:
    """Merged findings with each total ("N of M entries") over every chunk, those without
    the finding too: ``parts`` are each chunk's (findings, merge_data); the total is the
    chunks' entries (or rows) where that is what the chunks that have the finding count."""
    for f in findings:
        having = [(data, g) for found, data in parts for g in found if g.kind == f.kind]
        for key in ("entries", "row_count"):
            if having and all(data.get(key) == g.total for data, g in having):
                f.total = sum(data.get(key, 0) for _, data in parts)
                break
    return findings


def _worst_of_each_kind(records: list) -> list:
    """Of failure records of one kind from every chunk (the loss's gradient in x at each
    shift), the one with the largest error / allowance, as one chunk of all rows keeps."""
    best: dict = {}
    for f in records:
        key = (f.kind, f.extra.get("shift") if isinstance(f.extra, dict) else None)
        r = error_ratio(f.error, f.allowance)
        r = math.inf if r != r else r
        if key not in best or r > best[key][0]:
            best[key] = (r, f)
    return [f for _, f in best.values()]


def add_run_findings(res: CheckResult, impl, computed, info: DtypeInfo, strict: bool) -> None:
    """What the reference check says about how ``impl`` ran: the finding of
    :func:`dtype_finding` (failing ``res`` if strict), and that of :func:`warnings_finding`
    (a note: warnings never change the verdict)."""
    f = dtype_finding(impl, computed, info, strict)
    if f is not None:
        res.findings.append(f)
        res.passed = res.passed and not f.fails
    w = warnings_finding(impl)
    if w is not None:
        res.findings.append(w)


WARNINGS_TEMPLATE = ("the implementation warned {count} time{s} while computing the checked "
                     "values (calls made: {total}): {example}")


def warnings_finding(impl) -> Finding | None:
    """A note when ``impl`` issued warnings in this run so far (a user's callable records
    them in ``warned``, {(category, message): times}; numpy's floating-point warnings are
    off while it runs): how many, the first message, and how many distinct ones. The
    reference check adds it, so it counts the calls that computed the values it judges."""
    warned = getattr(impl, "warned", None)
    if not warned:
        return None
    more = int(getattr(impl, "warned_more", 0))
    (category, message), _ = next(iter(warned.items()))
    example = f"{category}: {message}"
    if len(warned) > 1 or more:
        example += (f" (and {len(warned) - 1}{'+' if more else ''} other distinct "
                    f"message{'' if len(warned) == 2 and not more else 's'})")
    calls = max(int(getattr(impl, "calls", 0)), 1)
    return Finding("warnings", sum(warned.values()) + more, calls, WARNINGS_TEMPLATE, example)
