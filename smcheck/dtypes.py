"""The four floating-point formats smcheck checks, and the facts about each that the
tolerances, ULPs and overflow thresholds are derived from.

Every number here follows from the format's precision p (significand bits, implicit bit
included), its minimum normal exponent and its largest finite value; nothing is tuned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .exceptions import InputError

DTYPE_NAMES = ("float64", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class DtypeInfo:
    """One floating-point format.

    ``u`` is the unit roundoff 2^-p (half the machine epsilon): a correctly rounded operation
    has relative error at most ``u``. ``eta`` is the smallest positive subnormal; the spacing of
    the subnormal range, so an underflow to 0 or within the subnormals errs by at most eta/2.
    """

    name: str
    np_dtype: np.dtype
    p: int  # significand bits, implicit bit included
    emin: int  # exponent of the smallest normal number: tiny = 2**emin
    max: float
    tiny: float
    eta: float

    @property
    def u(self) -> float:
        return math.ldexp(1.0, -self.p)

    @property
    def eps(self) -> float:
        return math.ldexp(1.0, 1 - self.p)

    @property
    def log_max(self) -> float:
        """log(realmax): exp(x) overflows for x above this (709.78 for float64)."""
        return math.log(self.max)

    @property
    def log_eta(self) -> float:
        """log(smallest subnormal): exp(x) underflows to 0 for x below about this."""
        return math.log(self.eta)

    @property
    def log_tiny(self) -> float:
        """log(smallest normal): below it exp(x) is subnormal and loses relative accuracy."""
        return math.log(self.tiny)

    @property
    def accumulator(self) -> np.dtype:
        """The dtype sums are accumulated in: float32 for the 16-bit formats (as numpy's
        pairwise sum for float16 and torch's CPU kernels do), the format itself otherwise."""
        return np.dtype(np.float32) if self.p < 24 else self.np_dtype

    def round(self, x: np.ndarray) -> np.ndarray:
        """``x`` rounded to this format (round to nearest even); out-of-range values become inf."""
        with np.errstate(over="ignore"):
            return np.asarray(x, dtype=np.float64).astype(self.np_dtype)

    def round64(self, x: np.ndarray) -> np.ndarray:
        """:meth:`round`, as float64 values (one copy in float64, not two)."""
        return self.round(x).astype(np.float64, copy=False)

    def summary(self) -> dict:
        return {
            "dtype": self.name,
            "precision_bits": self.p,
            "unit_roundoff": self.u,
            "realmax": self.max,
            "min_normal": self.tiny,
            "min_subnormal": self.eta,
        }


def _make(name: str) -> DtypeInfo:
    if name == "bfloat16":
        import ml_dtypes

        npd = np.dtype(ml_dtypes.bfloat16)
        fi = ml_dtypes.finfo(ml_dtypes.bfloat16)
    else:
        npd = np.dtype(name)
        fi = np.finfo(npd)
    p = int(fi.nmant) + 1
    emin = int(fi.minexp)
    return DtypeInfo(
        name=name,
        np_dtype=npd,
        p=p,
        emin=emin,
        max=float(fi.max),
        tiny=math.ldexp(1.0, emin),
        eta=math.ldexp(1.0, emin - p + 1),
    )


_CACHE: dict[str, DtypeInfo] = {}


def dtype_info(name: str) -> DtypeInfo:
    """The :class:`DtypeInfo` for ``name`` (one of :data:`DTYPE_NAMES`)."""
    key = str(name).strip().lower()
    if key not in DTYPE_NAMES:
        raise InputError(f"--dtype {name}: unknown dtype (use one of: {', '.join(DTYPE_NAMES)})")
    if key not in _CACHE:
        _CACHE[key] = _make(key)
    return _CACHE[key]
