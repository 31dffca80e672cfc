"""Named adversarial inputs for ``--preset``: the cases where softmax implementations go wrong.

Each preset builds a deterministic float64 array (1-D, or 2-D for a batch), so a report naming a
preset can be reproduced exactly. ``smcheck presets`` lists them with their descriptions.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from smcheck.exceptions import InputError


@dataclass(frozen=True)
class Preset:
    """A named input: ``make()`` returns a fresh float64 array each call."""

    name: str
    description: str
    make: Callable[[], np.ndarray]


def _const(*rows: list[float]) -> Callable[[], np.ndarray]:
    # A fresh array per call, so a caller that writes into it cannot change the preset.
    return lambda: np.array(rows[0] if len(rows) == 1 else rows, dtype=np.float64)


_INF = float("inf")

_ALL = [
    Preset("benign", "16 standard normal values (seed 0): the easy case every implementation "
           "should pass", lambda: np.random.default_rng(0).standard_normal(16)),
    Preset("overflow", "[1000, 999, 990]: above log(float64 max) = 709.78, so exp(x) without "
           "subtracting the max overflows to inf", _const([1000.0, 999.0, 990.0])),
    Preset("underflow", "[-1000, -1001, -1002]: below log(smallest subnormal) = -744.44, so "
           "exp(x) without subtracting the max is 0 and 0/0 = nan",
           _const([-1000.0, -1001.0, -1002.0])),
    Preset("masked", "-inf entries (masked positions) next to finite ones: they must give "
           "exactly 0, not nan", _const([2.0, -_INF, 0.5, -_INF, -1.0, 3.0])),
    Preset("fully-masked", "a batch whose row 1 is all -inf (softmax undefined) next to a normal "
           "row: the bad row must not spill into the good one",
           _const([1.0, 2.0, 3.0, -_INF], [-_INF] * 4)),
    Preset("ties", "[3, 3, 3, 1, 3]: several equal maxima, which argmax-based tricks get wrong",
           _const([3.0, 3.0, 3.0, 1.0, 3.0])),
    Preset("one-hot", "[50, 0 x 7]: saturated, s_0 = 1 - 1.35e-21 rounds to 1 and the others "
           "(1.93e-22) must not flush to 0", _const([50.0] + [0.0] * 7)),
    Preset("uniform", "10 zeros: the exact answer is 0.1 everywhere",
           lambda: np.zeros(10)),
    Preset("tiny-spread", "1 + k*1e-12 for k = 0..9: nearly but not exactly uniform; the "
           "differences are far below float32 resolution", lambda: 1.0 + np.arange(10) * 1e-12),
    Preset("wide-spread", "[2500, 0, -1000, ..., -6000]: range of 8500, one dominant value and "
           "the rest underflowing to exactly 0",
           lambda: np.concatenate([[2500.0], np.linspace(0.0, -6000.0, 7)])),
    Preset("single", "one value [0.7]: the answer is exactly [1.0]", _const([0.7])),
    Preset("large-n", "100,000 normal values x 3 (seed 1): long sums, where naive summation "
           "loses accuracy", lambda: np.random.default_rng(1).standard_normal(100_000) * 3.0),
    Preset("near-overflow-float16", "[11.5, 10, 3, -2]: exp(11.5) exceeds float16 max (log is "
           "11.09), so a float16 exp without max subtraction overflows",
           _const([11.5, 10.0, 3.0, -2.0])),
    Preset("huge", "2 rows near the limits: [1e308, -1e308, 0, 1e307] (x - max overflows to "
           "-inf, which must still give 0; rounds to +inf, undefined, below float64) and "
           "[3e4, -3e4, 0, 1e4] (inside float16's range)",
           _const([1e308, -1e308, 0.0, 1e307], [3e4, -3e4, 0.0, 1e4])),
    Preset("subnormal", "[0, -708, -740, -746]: exp of the gaps lands at the normal/subnormal "
           "boundary, in the subnormals and at 0; flush-to-zero hardware differs here",
           _const([0.0, -708.0, -740.0, -746.0])),
]

PRESETS: dict[str, Preset] = {preset.name: preset for preset in _ALL}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an InputError suggesting close names if there is none."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        pass
    close = difflib.get_close_matches(str(name), PRESETS, n=3)
    hint = "; did you mean " + " or ".join(repr(c) for c in close) + "?" if close else ""
    raise InputError(f"unknown preset {name!r}{hint} (see 'smcheck presets')")
