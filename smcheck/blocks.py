"""Element-wise numpy work in cache-sized blocks.

The engine's double-double arithmetic is hundreds of numpy operations per entry, each a pass
over its arrays. On arrays of 10^6 entries every pass goes to main memory; on blocks of 2^15
entries they stay in cache, about three times faster (see benchmarks/). The functions here
cut a (rows, n) computation into such blocks and put the results back together; the
arithmetic, and so every result bit, is the same as on the whole arrays.

Blocks are independent, so they also run on threads (numpy releases the GIL inside each
operation): :func:`set_threads` (the CLI's ``--workers``; default every core). Each block
writes its own slice of the outputs and the blocks' partial sums are combined in a fixed
order, so the results are identical for any number of threads.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator

import numpy as np

#: entries per block: small enough for a few dozen arrays to stay in L2 cache
BLOCK = 1 << 15

_threads: int | None = None
_pool: tuple | None = None  # (its size, the ThreadPoolExecutor)


def set_threads(n: int | None) -> None:
    """Threads for the blocks (None: every core)."""
    global _threads
    _threads = None if n is None else max(1, int(n))


class using_threads:
    """``with using_threads(n):`` blocks run on n threads inside, as before after."""

    def __init__(self, n: int | None):
        self.n = n

    def __enter__(self):
        global _threads
        self.old, _threads = _threads, (None if self.n is None else max(1, int(self.n)))
        return self

    def __exit__(self, *exc):
        global _threads
        _threads = self.old


def threads() -> int:
    if _threads is not None:
        return _threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _forget_pool() -> None:  # a forked child has the pool object but not its threads
    global _pool
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def for_each(fn: Callable, items: list) -> None:
    """``fn(item)`` for every item, on :func:`threads` threads when there are several."""
    global _pool
    t = min(threads(), len(items))
    if t <= 1:
        for it in items:
            fn(it)
        return
    if _pool is None or _pool[0] < t:
        from concurrent.futures import ThreadPoolExecutor

        _pool = (t, ThreadPoolExecutor(max_workers=t, thread_name_prefix="smcheck-block"))
    for _ in _pool[1].map(fn, items):  # re-raises the first exception
        pass


def blocks(rows: int, n: int, block: int | None = None) -> Iterator[tuple[slice, slice]]:
    """(row slice, column slice) pairs covering a (rows, n) array, each about ``block``
    (default BLOCK) entries: runs of whole rows when rows are short, pieces of one row when
    they are long."""
    block = BLOCK if block is None else block
    if n >= block:
        for r in range(rows):
            for c in range(0, n, block):
                yield slice(r, r + 1), slice(c, min(c + block, n))
    else:
        step = max(1, block // max(n, 1))
        for r in range(0, rows, step):
            yield slice(r, min(r + step, rows)), slice(None)


def _cut(a, rs: slice, cs: slice):
    """The block of ``a``: a full (rows, n) array is cut both ways, a per-row (rows, 1) array
    by rows, a scalar is passed as it is."""
    if np.ndim(a) == 0:
        return a
    if a.shape[-1] == 1:
        return a[rs]
    return a[rs, cs]


def map_blocks(fn: Callable, args: tuple, shape: tuple[int, int], dtypes: tuple,
               block: int | None = None) -> tuple[np.ndarray, ...]:
    """``fn(*block_args)`` on every block of ``shape``; returns its outputs (one array per
    entry of ``dtypes``) assembled to ``shape``. ``fn`` must be element-wise."""
    rows, n = shape
    block = BLOCK if block is None else block
    outs = tuple(np.empty(shape, dtype=dt) for dt in dtypes)
    if rows * n == 0:
        return outs
    if rows * n <= block:  # one block: no copies
        res = fn(*args)
        res = res if isinstance(res, tuple) else (res,)
        for o, r in zip(outs, res):
            o[...] = r
        return outs

    def one(b):
        rs, cs = b
        res = fn(*(_cut(a, rs, cs) for a in args))
        res = res if isinstance(res, tuple) else (res,)
        for o, r in zip(outs, res):
            o[rs, cs] = r

    for_each(one, list(blocks(rows, n, block)))
    return outs


def row_reduce(fn: Callable, args: tuple, shape: tuple[int, int], nout: int,
               block: int | None = None, ops: tuple[str, ...] | None = None
               ) -> tuple[np.ndarray, ...]:
    """Per-row float64 reductions: ``fn(*block_args)`` returns ``nout`` arrays of shape
    (block rows,), the block's sums (or maxima, where ``ops`` says "max"); the pieces of a
    long row are combined in a fixed order."""
    ops = ops or ("sum",) * nout
    rows, n = shape
    block = BLOCK if block is None else block
    if rows * n <= block or n == 0:
        return tuple(fn(*args))
    if n < block:
        outs = tuple(np.empty(rows) for _ in range(nout))

        def rowblock(b):
            rs, cs = b
            for o, r in zip(outs, fn(*(_cut(a, rs, cs) for a in args))):
                o[rs] = r

        for_each(rowblock, list(blocks(rows, n, block)))
        return outs
    nb = -(-n // block)
    parts = tuple(np.zeros((rows, nb)) for _ in range(nout))

    def piece(b):
        rs, cs = b
        for p, r in zip(parts, fn(*(_cut(a, rs, cs) for a in args))):
            p[rs, cs.start // block] = r

    for_each(piece, list(blocks(rows, n, block)))
    return tuple(p.max(axis=-1) if op == "max" else p.sum(axis=-1)
                 for p, op in zip(parts, ops))
