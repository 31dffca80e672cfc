"""N-d inputs: an array whose softmax is taken along one axis (attention scores of shape
(batch, heads, L, L), softmax over the last) is checked as rows. Every other axis becomes a
row index, in C order: row r is the N-d index ``np.unravel_index(r, batch_shape)``, which the
reports print beside it. Companions (v, t, z) of the same shape are turned into rows the same
way, and a batched callable gets its chunk back in the input's layout.
"""

from __future__ import annotations

import numpy as np

from .exceptions import InputError
from .stores import RowStore


def as_rows(x, axis: int = -1, name: str = "x") -> tuple[np.ndarray, tuple[int, ...] | None]:
    """``x`` as a 1-D vector or a 2-D batch of rows along ``axis``, and the shape of the other
    axes (None for an input that is already a vector or a batch with ``axis`` last). A 2-D
    store (:mod:`smcheck.stores`) along its last axis stays a store, read a chunk of rows at a
    time; along another axis, or N-d, it is read whole (within --max-size)."""
    if isinstance(x, RowStore) and x.ndim == 2 and axis in (-1, 1):
        return x, None
    a = x if isinstance(x, np.ndarray) else np.asarray(x)
    if a.ndim == 0:
        return a, None
    if not -a.ndim <= axis < a.ndim:
        raise InputError(f"--axis {axis}: {name} has {a.ndim} "
                         f"ax{'is' if a.ndim == 1 else 'es'} (shape {a.shape})")
    axis = axis % a.ndim
    if a.ndim == 1 or (a.ndim == 2 and axis == 1):
        return a, None
    moved = np.moveaxis(a, axis, -1)
    batch = tuple(int(d) for d in moved.shape[:-1])
    return moved.reshape(-1, moved.shape[-1]), batch


def companion_rows(arr, axis: int, batch: tuple[int, ...] | None, name: str):
    """A companion (v, t, z) shaped like x, as rows like x's; a vector (used for every row)
    and an input without N-d layout stay as they are."""
    if arr is None or batch is None:
        return arr
    if np.ndim(arr) == 1:
        return np.asarray(arr)
    rows, shape = as_rows(arr, axis, name)
    if shape != batch:
        raise InputError(f"--{name} has shape {np.shape(arr)} but x's rows along --axis {axis} are "
                         f"{batch} (each of length n)")
    return rows


def row_index(r: int, batch: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """The N-d index of row ``r`` (None without an N-d layout)."""
    if not batch or len(batch) < 2:
        return None
    return tuple(int(i) for i in np.unravel_index(int(r), batch))


def row_name(r: int, batch: tuple[int, ...] | None) -> str:
    """``"row 5"``, or ``"row 5 [0, 1, 1]"`` with its N-d index."""
    idx = row_index(r, batch)
    return f"row {r}" if idx is None else f"row {r} [{', '.join(map(str, idx))}]"


def to_layout(rows: np.ndarray, batch: tuple[int, ...] | None, axis: int,
              ndim: int | None = None) -> np.ndarray:
    """Rows (k, n) of an N-d input back in its layout: (k // inner, *batch[1:], n) with n at
    ``axis``, when k is a whole number of slices of the first axis (inner = prod(batch[1:]));
    otherwise the rows as they are."""
    if not batch:
        return rows
    inner = int(np.prod(batch[1:]))
    k = rows.shape[0]
    if k % inner:
        return rows
    shaped = rows.reshape((k // inner,) + tuple(batch[1:]) + rows.shape[1:])
    nd = len(batch) + 1 if ndim is None else ndim
    return np.moveaxis(shaped, len(batch), axis % nd) if rows.ndim == 2 else shaped


def from_layout(out: np.ndarray, batch: tuple[int, ...] | None, axis: int, rows: int,
                tail: tuple[int, ...]) -> np.ndarray:
    """A batched result in the input's layout back as rows (rows, *tail)."""
    a = np.asarray(out)
    if batch and a.ndim == len(batch) + len(tail) and len(tail) == 1:
        a = np.moveaxis(a, axis % a.ndim, -1)
    return a.reshape((rows,) + tuple(tail))  # its shape was checked against the layout
