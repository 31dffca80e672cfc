"""The worst entries of a comparison: the k furthest over (or closest to) their allowance,
worst first, in one order everywhere (a check's list, the merge of chunks, the sweep)."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..errors_ulp import Comparison, error_ratio
from ..results import Entry


def top_entries(cmp: Comparison, X: np.ndarray | None, rows: np.ndarray, k: int,
                cause: Callable[..., str], col0: int = 0) -> list[Entry]:
    """The k entries furthest over (or closest to) their allowance, worst first. Works for
    (rows, n) comparisons (index i) and (rows, n, n) ones (index (i, k); x is x_i); X None:
    the entries are not entries of x (probes), their x is nan."""
    k = max(int(k), 0)
    flat = cmp.ratio.ravel()
    if k == 0 or flat.size == 0:
        return []
    key = np.where(np.isnan(flat), np.inf, flat) if np.isnan(flat).any() else flat
    if flat.size > k:
        # the k largest; of equal ratios at the cut, the first in row-major order
        kth = _kth_largest(key, k)
        above = np.flatnonzero(key > kth)
        idx = np.concatenate([above, np.flatnonzero(key == kth)[:k - above.size]])
    else:
        idx = np.arange(flat.size)
    idx = idx[np.lexsort((idx, -key[idx]))]  # worst first, equal ratios in row-major order
    out = []
    for f in idx:
        pos = np.unravel_index(int(f), cmp.ratio.shape)
        r, rest = int(pos[0]), tuple(int(p) for p in pos[1:])
        index = rest[0] + col0 if len(rest) == 1 else rest
        out.append(Entry(row=int(rows[r]), index=index,
                         x=math.nan if X is None else float(X[r, rest[0]]),
                         computed=float(cmp.computed[pos]), reference=float(cmp.ref[pos]),
                         abs_err=float(cmp.abs_err[pos]), rel_err=cmp.rel_err_at(pos),
                         ulp_err=cmp.ulp_err_at(pos), allowed=float(cmp.allowed[pos]),
                         cause=cause(r, *rest), ulp=float(cmp.ulp[pos])))
    return out


def _kth_largest(key: np.ndarray, k: int) -> float:
    """The k-th largest value of ``key`` (1-D, no nan, more than k values). It is at least the
    k-th largest of the maxima of runs of up to 1024 (at least k runs: they reach it), so it
    is that bound itself or the k-th largest of the few values above it: a partition of
    those, never of every value (numpy's partition is ten times slower on many equal values,
    as the ratios of a loss are, most of them 0 where t_i = 0: 3.9 against 0.35 ms on
    30,000; a sort of 10^4 ratios took a tenth of a one-row forward run)."""
    run = min(1024, key.size // k)
    full = key.size - key.size % run
    maxima = np.max(key[:full].reshape(-1, run), axis=-1)
    if full < key.size:
        maxima = np.append(maxima, np.max(key[full:]))
    bound = np.sort(maxima)[maxima.size - k]
    above = key[key > bound]
    if above.size < k:
        return float(bound)
    return float(np.sort(above)[above.size - k]) if above.size < 4096 else float(
        np.partition(above, above.size - k)[above.size - k])


def entry_order(e):
    """Worst first, as top_entries ranks them; equal ratios in row and index order."""
    ratio = error_ratio(e.abs_err, e.allowed)
    return (-ratio if ratio == ratio else float("-inf"), e.row,
            e.index if isinstance(e.index, tuple) else (e.index,))
