"""The one list of causes smcheck names for an entry that is off (the tables' "cause" column,
the failure lines, the JSON's "cause"). A cause is written ``"<kind>: <what happened here>"``;
the kind is one of :data:`CAUSES`, so a reader (and a test) can tell them apart."""

from __future__ import annotations

#: every kind of cause, with what it means
CAUSES: dict[str, str] = {
    "overflow": "exp(x_j) overflows in the dtype (x_j > log(realmax)): shift by max(x)",
    "underflow": "a result that is a normal number came out 0 or subnormal",
    "flush-to-zero": "a subnormal value was flushed to zero (FTZ/DAZ arithmetic)",
    "infinite sum": "division by an infinite sum: exp overflowed in the normaliser",
    "zero sum": "division by a zero sum: every exp underflowed",
    "cancellation": "a difference of nearly equal numbers lost its relative digits",
    "stall": "a sum accumulated in a narrow dtype stopped growing once it outgrew its terms",
    "normaliser": "the row's sum is off, so every entry divided by it is",
    "rounding at |x|": "rounding at the magnitude of x, not of the gaps x_i - max(x)",
    "non-finite softmax": "the softmax the quantity is built from is not finite",
}


def cause(kind: str, detail: str) -> str:
    """A cause in words: its kind (one of :data:`CAUSES`), then what happened at the entry."""
    if kind not in CAUSES:
        raise KeyError(f"unknown cause {kind!r}")
    return f"{kind}: {detail}"


def cause_kind(text: str) -> str:
    """The kind of a cause written by :func:`cause` ('' for none)."""
    kind = text.split(":", 1)[0]
    return kind if kind in CAUSES else ""
