"""Hypothesis strategies for adversarial logits: the inputs where softmax kernels go wrong.

    from hypothesis import given
    import smcheck

    @given(smcheck.strategies.logits(dtype="bfloat16", shape=(8, 256)))
    def test_my_kernel(x):
        smcheck.assert_correct(my_kernel, x, dtype="bfloat16")

Needs hypothesis (``pip install "smcheck[hypothesis]"``); ``import smcheck`` does not import
this module until ``smcheck.strategies`` is used.

What a draw is: a float64 numpy array of ``shape`` (rows along the last axis) whose every
value is exactly representable in ``dtype``: rounding it to the dtype (``x.astype(...)``,
``torch.from_numpy(x).to(torch.bfloat16)``, or smcheck's ``dtype=``) changes nothing, so
the input your kernel sees is exactly the one smcheck's reference is computed for, and the
array works with every library (numpy has no bfloat16 of its own). ``-inf`` entries are masked
positions; no draw holds ``+inf`` or ``nan``.

Each row is of one kind (:data:`KINDS`); :func:`logits` mixes them row by row, and each kind is
also a strategy of its own (:func:`overflow_edge`, :func:`saturated`, ...).

Speed and shrinking: a (8, 4096) array drawn entry by entry would take 32768 draws from
hypothesis, which is slow and overruns its data budget. Instead each row draws a few
parameters from hypothesis (its kind, a scale, a shift, a seed: st.sampled_from, st.floats,
st.integers) and numpy builds the row from a Generator seeded with the drawn integer. A draw
costs a few microseconds per row, it replays exactly, and shrinking still works on what was
drawn: kinds shrink towards ``benign``, scales and shifts towards their simplest values, seeds
towards 0, and a ``shape`` given as a strategy (:func:`shapes`) shrinks rows and n. What
shrinking cannot do is simplify single entries (set one to 0, say): the minimal example is the
simplest *recipe*, not the array with the fewest distinct values. Beyond 16 rows, the rows
after the 16th reuse the drawn recipes in turn, each with its own seed.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import note
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from .dtypes import DTYPE_NAMES, DtypeInfo, dtype_info

#: the kinds of row, simplest first (hypothesis shrinks towards the first)
KINDS = {
    "benign": "standard normal values times a scale in [0, 4]: the case every kernel passes",
    "overflow_edge": "the max near log(realmax) of the dtype, 0.9 to 2 times it (often past "
                     "it): exp(x) without the max shift overflows; never nan",
    "saturated": "one entry 5 to 3 |log(min subnormal)| above the rest: its probability "
                 "is near 1 or rounds to 1, the others small, subnormal or 0",
    "masked": "-inf entries (masked positions) next to finite ones; at least one finite entry "
              "per row unless fully_masked=True",
    "ties": "a few distinct levels, the max repeated at least twice (n >= 2)",
    "subnormal": "entries whose exact softmax is subnormal in the dtype, next to an ordinary "
                 "row: flush-to-zero shows here",
    "wide_range": "magnitudes log-uniform from 1 up to between 10 and max/4 of the dtype, both "
                  "signs: gaps far beyond the underflow threshold",
    "flat": "values within a small spread of each other: every term counts in the sum, so a "
            "long row tests the accumulation (see large_n)",
}
#: rows whose recipe is drawn from hypothesis; further rows reuse these recipes
MAX_DRAWN_ROWS = 16
_SEEDS = st.integers(0, 2**32 - 1)


def dtypes() -> SearchStrategy[str]:
    """One of smcheck's dtype names (float64, float32, float16, bfloat16)."""
    return st.sampled_from(DTYPE_NAMES)


def shapes(max_rows: int = 8, min_n: int = 1, max_n: int = 4096) -> SearchStrategy[tuple]:
    """A batch shape (rows, n), for ``logits(shape=shapes())``; shrinks towards (1, min_n)."""
    return st.tuples(st.integers(1, max_rows), st.integers(min_n, max_n))


def logits(dtype: str = "float32", shape=(8, 4096), kinds=None, *,
           fully_masked: bool = False) -> SearchStrategy[np.ndarray]:
    """Arrays of ``shape`` (a tuple, or a strategy of tuples such as :func:`shapes`) whose
    rows are each of one of ``kinds`` (default: every kind in :data:`KINDS`), with values
    representable in ``dtype``; ``fully_masked=True`` lets a masked row be all -inf (a row with
    no defined softmax, which smcheck reports and does not judge)."""
    info = dtype_info(dtype)
    names = list(KINDS) if kinds is None else [kinds] if isinstance(kinds, str) else list(kinds)
    unknown = [k for k in names if k not in KINDS]
    if unknown or not names:
        raise ValueError(f"unknown kinds {unknown} (use some of: {', '.join(KINDS)})")
    names.sort(key=list(KINDS).index)
    if not isinstance(shape, SearchStrategy):
        shape = _checked_shape(shape)
    return _batches(info, shape, names, fully_masked)


def _checked_shape(shape) -> tuple:
    shape = tuple(int(d) for d in shape)
    if len(shape) not in (1, 2) or min(shape) < 1:
        raise ValueError(f"shape must be (n,) or (rows, n) with every size >= 1, got {shape}")
    return shape


def _kind(name: str, doc: str):
    def strategy(dtype: str = "float32", shape=(8, 4096), **kw) -> SearchStrategy[np.ndarray]:
        return logits(dtype, shape, [name], **kw)

    strategy.__name__ = strategy.__qualname__ = name
    strategy.__doc__ = f"Rows of kind {name!r}: {doc}. Arguments as :func:`logits`."
    return strategy


benign = _kind("benign", KINDS["benign"])
overflow_edge = _kind("overflow_edge", KINDS["overflow_edge"])
saturated = _kind("saturated", KINDS["saturated"])
masked = _kind("masked", KINDS["masked"])
ties = _kind("ties", KINDS["ties"])
subnormal = _kind("subnormal", KINDS["subnormal"])
wide_range = _kind("wide_range", KINDS["wide_range"])
flat = _kind("flat", KINDS["flat"])


def large_n(dtype: str = "float32", rows: int = 1, min_n: int = 4096,
            max_n: int = 65536) -> SearchStrategy[np.ndarray]:
    """Long rows (n drawn from [min_n, max_n]) of kind ``flat``: sums of many comparable terms,
    where an accumulator of too few bits stalls."""
    return logits(dtype, st.tuples(st.just(rows), st.integers(min_n, max_n)), ["flat"])


@st.composite
def _batches(draw, info: DtypeInfo, shape, names: list, fully_masked: bool) -> np.ndarray:
    if isinstance(shape, SearchStrategy):
        shape = _checked_shape(draw(shape))
    rows, n = (1, shape[0]) if len(shape) == 1 else shape
    recipes = [_recipe(draw, info, names, n) for _ in range(min(rows, MAX_DRAWN_ROWS))]
    note(f"smcheck.strategies rows: {[r[0] for r in recipes]}")
    out = np.empty((rows, n))
    for i in range(rows):
        kind, seed, params = recipes[i % len(recipes)]
        rng = np.random.default_rng([seed, i // len(recipes)])
        out[i] = _BUILD[kind](rng, n, info, fully_masked, *params)
    with np.errstate(over="ignore"):  # every builder stays in range; rounding cannot overflow
        out = out.astype(info.np_dtype).astype(np.float64)
    return out.reshape(shape)


def _recipe(draw, info: DtypeInfo, names: list, n: int) -> tuple:
    """(kind, seed, parameters) of one row: the few numbers hypothesis draws and shrinks."""
    kind = draw(st.sampled_from(names))
    seed = draw(_SEEDS)
    unit = st.floats(0.0, 1.0)  # positions within each kind's range: shrink to its simplest end
    params = {"benign": (unit,), "overflow_edge": (unit, unit), "saturated": (unit, unit),
              "masked": (unit, unit), "ties": (st.integers(1, 4), unit), "subnormal": (unit,),
              "wide_range": (unit,), "flat": (unit, st.integers(-8, 8))}[kind]
    return kind, seed, tuple(draw(p) for p in params)


def _normal(rng, n: int, scale: float) -> np.ndarray:
    return rng.standard_normal(n) * scale


def _benign(rng, n, info, fully_masked, scale):
    return _normal(rng, n, 4.0 * scale)


def _overflow_edge(rng, n, info, fully_masked, where, spread):
    top = info.log_max * (0.9 + 1.1 * where)  # 0.9 to 2 times log(realmax)
    x = top - np.abs(_normal(rng, n, 0.1 + 20.0 * spread))
    x[rng.integers(n)] = top
    return x


def _saturated(rng, n, info, fully_masked, scale, gap):
    x = _normal(rng, n, 3.0 * scale)
    x[rng.integers(n)] = x.max() + 5.0 + gap * (3.0 * abs(info.log_eta) - 5.0)
    return x


def _masked(rng, n, info, fully_masked, scale, fraction):
    x = _normal(rng, n, 4.0 * scale)
    keep, hide = (rng.choice(n, size=2, replace=False) if n >= 2 else (0, None))
    x[rng.random(n) < 0.05 + 0.9 * fraction] = -math.inf
    if hide is not None:
        x[hide] = -math.inf  # at least one masked entry, and (below) one finite
    if fully_masked and rng.random() < 0.25:
        x[:] = -math.inf
    elif not np.isfinite(x[keep]):
        x[keep] = 0.0
    return x


def _ties(rng, n, info, fully_masked, levels, scale):
    values = np.sort(_normal(rng, levels, 1.0 + 10.0 * scale))
    x = values[rng.integers(levels, size=n)]
    if n >= 2:
        x[rng.choice(n, size=2, replace=False)] = values[-1]
    return np.round(x)  # whole numbers: representable in every dtype here, so ties stay ties


def _subnormal(rng, n, info, fully_masked, scale):
    """An ordinary row at shift c, with entries placed at c + log(S) + h, where S is the sum of
    exp(x_j - c) of the ordinary entries and h lies inside (log(min subnormal) + 1,
    log(min normal) - 0.5): their softmax exp(h) is subnormal, whatever the rounding."""
    c = float(rng.integers(-8, 9))
    x = c - np.abs(_normal(rng, n, 1.0 + 3.0 * scale))
    top = rng.integers(n)
    x[top] = c
    if n < 2:
        return x
    others = np.flatnonzero(np.arange(n) != top)
    picked = rng.choice(others, size=max(1, min(len(others), int(rng.integers(1, n // 4 + 2)))),
                        replace=False)
    rest = np.ones(n, dtype=bool)
    rest[picked] = False
    x = x.astype(info.np_dtype).astype(np.float64)  # S of the values the dtype holds
    S = np.sum(np.exp(x[rest] - c))
    h = rng.uniform(info.log_eta + 1.0, info.log_tiny - 0.5, size=len(picked))
    x[picked] = c + np.log(S) + h
    return x


def _wide_range(rng, n, info, fully_masked, reach):
    top = math.log(10.0) + reach * (math.log(info.max / 4) - math.log(10.0))
    return np.exp(rng.uniform(0.0, top, size=n)) * rng.choice([-1.0, 1.0], size=n)


def _flat(rng, n, info, fully_masked, spread, shift):
    return float(shift) + _normal(rng, n, spread)


_BUILD = {"benign": _benign, "overflow_edge": _overflow_edge, "saturated": _saturated,
          "masked": _masked, "ties": _ties, "subnormal": _subnormal, "wide_range": _wide_range,
          "flat": _flat}
