"""The exact references' result types: double-double arrays with the precision they state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

Progress = Callable[[int], None]

#: what the double-double engine (:mod:`smcheck.reference.dd`) states
DD_PRECISION = "double-double (106-bit float64 pairs), relative error below 2^-100 (7.9e-31)"


@dataclass
class ExactSoftmax:
    """Exact softmax and log-softmax of rows of float64 inputs, as double-double arrays."""

    s_hi: np.ndarray
    s_lo: np.ndarray
    _y_hi: np.ndarray | None  # log softmax (see y_hi; None until asked for when _y_maker)
    _y_lo: np.ndarray | None
    d: np.ndarray  # x - max(x) rounded to float64 (-inf where masked): for the tolerances
    dps: int
    om_hi: np.ndarray | None = None  # 1 - s_i, without cancellation (when asked for)
    om_lo: np.ndarray | None = None
    engine: str = "mpmath"
    state: tuple | None = field(default=None, repr=False)  # the dd engine's, for shifts
    _y_maker: Callable | None = field(default=None, repr=False)  # computes (y_hi, y_lo)
    precision_note: str | None = field(default=None, repr=False)  # overrides the engine's
    rel_bound: float | None = field(default=None, repr=False)  # the stated relative error

    def _log(self):
        if self._y_hi is None and self._y_maker is not None:
            self._y_hi, self._y_lo = self._y_maker()
            self._y_maker = None
        return self._y_hi, self._y_lo

    @property
    def y_hi(self) -> np.ndarray:
        """log softmax (hi part), computed on first use by the double-double engine."""
        return self._log()[0]

    @property
    def y_lo(self) -> np.ndarray:
        return self._log()[1]

    @property
    def precision(self) -> str:
        if self.precision_note:
            return self.precision_note
        if self.engine == "double-double":
            return DD_PRECISION + ", certified against mpmath"
        return f"{self.engine}, {self.dps} significant digits (relative error below 1e-{self.dps - 2})"


@dataclass
class ExactVJP:
    """z = s * (v - <v, s>) (double-double), <v, s> per row, and sum_j |v_j| s_j per row."""

    z_hi: np.ndarray
    z_lo: np.ndarray
    dot: np.ndarray  # <v, s>, float64, (rows,)
    dot_str: list  # <v, s> to 17 digits, as text (for reports)
    abs_dot: np.ndarray  # sum_j |v_j| s_j
    exact_zero: list  # per row: indices where v_i = <v, s> to the reference's precision
    softmax: ExactSoftmax
