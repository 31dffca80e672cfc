"""The reference checks itself: ``--verify-reference`` recomputes it with more digits.

Each command's reference rests on one exact quantity per entry: the softmax s (and log s with
``--log``; 1 - s for the Jacobian's diagonal) or the VJP z. This module recomputes that
quantity with mpmath at ``dps + 20`` digits (at least 70) and compares entry by entry with
what the run used, against the precision the run's engine states:

* double-double engine: relative 2^-100;
* the float64 tier (float32, float16, bfloat16 results): the largest of its per-entry bounds
  (|x_i - max| + ceil(log2 n) + 20) 2^-53 in the run;
* mpmath engine at D digits: relative 10^-(D - 2), but at least 2^-104 (the results are
  float64 pairs: two correct pairs of one value may differ in the last bit of the low part);

plus one subnormal spacing (5e-324), the resolution of a float64 pair. The VJP is allowed
the same relative error of s_i (|v_i| + |<v, s>|), its natural size: where v_i is close to
<v, s> the entry is a cancellation, and no engine promises it relative digits.

The result is a block of the report, ``"reference_verification"``; an entry beyond the
bound makes the run fail (the reference, and so the verdict, cannot be trusted) and is
named in the report.
"""

from __future__ import annotations

import numpy as np

from ..ddmath import two_sum
from .dd import shift_bound
from .dispatch import exact_softmax, exact_vjp

#: the resolution of a float64 pair (hi + lo): one subnormal spacing
PAIR_FLOOR = 5e-324
#: how many disagreeing entries the report names
LIST_MAX = 20


def verify_dps(dps: int) -> int:
    """Digits of the recomputation: 20 more than the run's, at least 70."""
    return max(int(dps) + 20, 70)


#: a float64 pair holds about 106 bits: two correct pairs of one value may differ by this
PAIR_RESOLUTION = 2.0 ** -104


def stated_bound(exact) -> float:
    """The relative error an ExactSoftmax's engine states (see the module docstring), but
    not below what a float64 pair resolves."""
    if getattr(exact, "rel_bound", None) is not None:
        return max(exact.rel_bound, PAIR_RESOLUTION)
    if exact.engine == "double-double":
        return shift_bound(0.0, 1)
    return max(10.0 ** -(int(exact.dps) - 2), PAIR_RESOLUTION)


def _pair_diff(h1, l1, h2, l2) -> np.ndarray:
    """|(h1 + l1) - (h2 + l2)| to about 2^-106 of the difference (two_sum of the hi parts)."""
    with np.errstate(invalid="ignore", over="ignore"):
        s, e = two_sum(h1, -h2)
        d = np.abs(s + (e + (l1 - l2)))
        same = (h1 == h2) & ~np.isfinite(h1)  # the same infinity (masked log-softmax)
    return np.where(same, 0.0, np.where(np.isnan(d), np.inf, d))


def compare_pairs(name: str, got: tuple, want: tuple, scale: np.ndarray, bound: float,
                  rows: np.ndarray) -> dict:
    """One quantity: entries where |got - want| > bound * scale + PAIR_FLOOR."""
    diff = _pair_diff(*got, *want)
    allowed = bound * np.abs(scale) + PAIR_FLOOR
    bad = diff > allowed
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(np.abs(scale) > 0, diff / np.abs(scale), np.where(diff > 0, np.inf, 0.0))
    idx = np.argwhere(bad)
    return {"quantity": name, "entries": int(diff.size),
            "max_rel_diff": float(np.max(rel)) if rel.size else 0.0,
            "disagreeing": int(idx.shape[0]),
            "first_disagreeing": [[int(rows[r]), int(i)] for r, i in idx[:LIST_MAX]]}


def verify_softmax(X: np.ndarray, exact, rows: np.ndarray, dps: int, log: bool = False,
                   one_minus: bool = False) -> dict:
    """The softmax reference (and log s, 1 - s when used) against mpmath at more digits."""
    more = verify_dps(dps)
    again = exact_softmax(X, more, one_minus=one_minus, engine="mpmath")
    bound = stated_bound(exact)
    parts = [compare_pairs("softmax", (exact.s_hi, exact.s_lo), (again.s_hi, again.s_lo),
                           again.s_hi, bound, rows)]
    if log:
        parts.append(compare_pairs("log_softmax", (exact.y_hi, exact.y_lo),
                                   (again.y_hi, again.y_lo), np.where(np.isfinite(again.y_hi),
                                                                      again.y_hi, 0.0),
                                   bound, rows))
    if one_minus and exact.om_hi is not None:
        parts.append(compare_pairs("1 - softmax", (exact.om_hi, exact.om_lo),
                                   (again.om_hi, again.om_lo), again.om_hi, bound, rows))
    return _block(exact.precision, bound, more, parts)


def verify_vjp(X: np.ndarray, V: np.ndarray, ex, rows: np.ndarray, dps: int) -> dict:
    """The VJP reference z (and the softmax under it) against mpmath at more digits."""
    more = verify_dps(dps)
    again = exact_vjp(X, V, more, engine="mpmath")
    bound = stated_bound(ex.softmax)
    s = again.softmax.s_hi
    fin = np.isfinite(again.softmax.d)
    natural = s * (np.where(fin, np.abs(V), 0.0) + np.abs(again.dot)[:, None])
    parts = [compare_pairs("softmax", (ex.softmax.s_hi, ex.softmax.s_lo),
                           (again.softmax.s_hi, again.softmax.s_lo), s, bound, rows),
             compare_pairs("vjp", (ex.z_hi, ex.z_lo), (again.z_hi, again.z_lo),
                           4 * natural, bound, rows)]
    return _block(ex.softmax.precision, bound, more, parts)


def _block(precision: str, bound: float, more: int, parts: list[dict]) -> dict:
    return {"passed": all(p["disagreeing"] == 0 for p in parts),
            "reference": precision, "stated_relative_bound": bound,
            "recomputed_with": f"mpmath, {more} significant digits",
            "quantities": parts}


def note(block: dict) -> str | None:
    """A line for the report when the verification failed."""
    if block["passed"]:
        return None
    bad = [p for p in block["quantities"] if p["disagreeing"]]
    p = bad[0]
    r, i = p["first_disagreeing"][0]
    return (f"reference verification FAILED: {p['disagreeing']} {p['quantity']} entr"
            f"{'y' if p['disagreeing'] == 1 else 'ies'} differ from the recomputation "
            f"({block['recomputed_with']}) by more than the stated {block['stated_relative_bound']:.1e}"
            f" relative, first at row {r}, index {i} (max relative difference "
            f"{p['max_rel_diff']:.2e}): the verdict cannot be trusted; please report it")


def merge(blocks: list[dict]) -> dict:
    """One block from the blocks of consecutive chunks of rows."""
    out = dict(blocks[0])
    out["passed"] = all(b["passed"] for b in blocks)
    merged: dict = {}
    for b in blocks:
        for q in b["quantities"]:
            m = merged.setdefault(q["quantity"], {**q, "entries": 0, "disagreeing": 0,
                                                  "max_rel_diff": 0.0, "first_disagreeing": []})
            m["entries"] += q["entries"]
            m["disagreeing"] += q["disagreeing"]
            m["max_rel_diff"] = max(m["max_rel_diff"], q["max_rel_diff"])
            m["first_disagreeing"] = (m["first_disagreeing"] + q["first_disagreeing"])[:LIST_MAX]
    out["quantities"] = list(merged.values())
    return out
