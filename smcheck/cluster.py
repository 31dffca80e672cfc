"""Chunks of rows on a Dask cluster (``--scheduler dask`` or ``--scheduler tcp://HOST:PORT``).

:mod:`smcheck.parallel` decides how chunks are scheduled and calls :func:`run_chunks` for these
two schedulers; this module only moves chunks to Dask workers and their reports back. Each task
carries the chunk function, where x and its companions (v, t, z) come from, and the chunk's
rows lo:hi, and cuts those rows on the worker:

- a memory-mapped file (a large .npy) travels as its file name, offset, dtype, shape and
  order, and is opened again on the worker (read-only): the workers must see the same path;
- another array-like (``shape`` and ``__getitem__``, a pickle that names its data rather than
  holding it: a store on disk) travels as it is;
- an array in memory: each task carries only its own rows.

At most :data:`IN_FLIGHT` chunks a worker are submitted at a time, so memory stays O(chunk) on
both sides; reports are handed back as they finish (the caller merges them in row order).
``dask`` and ``distributed`` are imported only here, and only when such a scheduler is asked
for.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .exceptions import InputError, SmcheckError, one_line
from .options import DASK, IN_FLIGHT
from .process import keep_freed_memory

#: a LocalCluster's scheduler without a dashboard, its HTTP routes (which it always serves) on
#: a free port: 8787, Dask's default, may be another cluster's
QUIET_HTTP = {"dashboard_address": ":0", "scheduler_kwargs": {"dashboard": False}}
#: seconds to reach the scheduler at an address before giving up (one error line)
CONNECT_TIMEOUT = 10.0
@dataclass(frozen=True)
class Mapped:
    """Where a memory-mapped array's data lies in its file: opened again, read-only, on a worker
    (numpy would pickle a memmap's every byte)."""

    filename: str
    offset: int
    dtype: np.dtype
    shape: tuple
    order: str

    def open(self) -> np.memmap:
        return np.memmap(self.filename, dtype=self.dtype, mode="r", offset=self.offset,
                         shape=self.shape, order=self.order)


@dataclass(frozen=True)
class Rows:
    """Rows already cut from an array in memory: the task carries only these."""

    array: np.ndarray


def mapped(a) -> Mapped | None:
    """``a`` as a :class:`Mapped` when it is a view of a file mapped by numpy (shared, not
    copy-on-write) whose data is one contiguous run of the file (a .npy read by smcheck, or
    its rows as an N-d input's view); None otherwise."""
    mm = getattr(a, "_mmap", None)
    if not isinstance(a, np.memmap) or mm is None or not getattr(a, "filename", None):
        return None
    if getattr(a, "mode", None) == "c":  # copy-on-write: what it holds may not be the file's
        return None
    order = "C" if a.flags.c_contiguous else "F" if a.flags.f_contiguous else None
    if order is None:
        return None
    import mmap  # (here, as logging and uuid below: this module is imported by every run)

    # the mapping starts at the file's offset rounded down to the allocation granularity
    # (np.memmap's own rule); a view's data lies further in by its distance from that start
    start = a.offset - a.offset % mmap.ALLOCATIONGRANULARITY
    base = np.frombuffer(mm, dtype=np.uint8).__array_interface__["data"][0]
    here = a.__array_interface__["data"][0]
    return Mapped(str(a.filename), start + here - base, a.dtype, tuple(a.shape), order)


def source(a):
    """What a task carries for array ``a`` (x or a companion): None, a vector (used for every
    row) as it is, a :class:`Mapped` file, None for an array in memory (cut per task, see
    :func:`payload`), or another array-like as it is."""
    if a is None or np.ndim(a) < 2:
        return a
    m = mapped(a)
    if m is not None:
        return m
    if isinstance(a, np.ndarray):
        return None  # cut per task
    return a


def payload(a, src, lo: int, hi: int):
    """What the task for rows lo:hi carries for ``a`` whose :func:`source` is ``src``."""
    if src is None and a is not None and np.ndim(a) >= 2:
        return Rows(np.ascontiguousarray(a[lo:hi]))
    return src


def rows_of(src, lo: int, hi: int):
    """On the worker: rows lo:hi of what the task carried."""
    if isinstance(src, Rows):
        return src.array
    if isinstance(src, Mapped):
        return np.asarray(src.open()[lo:hi])
    if src is None or np.ndim(src) < 2:
        return src
    return np.asarray(src[lo:hi])


#: whether this worker process keeps freed memory yet (see :func:`_task`)
_KEEPS_FREED: list = []


def _task(runner, fn, xs, comps: dict, lo: int, hi: int, fn_args: tuple, keep_arrays: bool,
          keep_result: bool, own: bool = False):
    """A chunk on a Dask worker: its rows read there, then ``runner`` (smcheck.parallel's).

    On a LocalCluster of this run (``own``), the worker process first keeps freed memory for
    reuse, as the smcheck process does (smcheck.process): a Dask worker returns freed memory
    to the system at once (its nanny sets MALLOC_TRIM_THRESHOLD_=65536), and the page faults
    of mapping every temporary afresh made a chunk 3 to 4 times slower
    (benchmarks/scheduler.py). A chunk's temporaries are what is kept: peak memory is
    unchanged. The workers of a cluster reached by address are someone else's: left as they
    are."""
    if own and not _KEEPS_FREED:
        keep_freed_memory()
        _KEEPS_FREED.append(True)
    x = rows_of(xs, lo, hi)
    part = {k: rows_of(s, lo, hi) for k, s in comps.items()}
    return runner((fn, x, part, lo, fn_args, keep_arrays, keep_result))


def missing(scheduler: str) -> SmcheckError:
    return SmcheckError(f"--scheduler {scheduler} needs dask.distributed: pip install "
                        "'smcheck[dask]'")


def _distributed(scheduler: str):
    try:
        import distributed
    except ImportError:
        raise missing(scheduler) from None
    return distributed


@contextlib.contextmanager
def client(scheduler: str, workers: int):
    """A ``distributed.Client``: of a LocalCluster of ``workers`` processes of one thread each,
    started and closed here (``dask``), or of the scheduler at an address, which must answer
    as a Dask scheduler and have a worker within :data:`CONNECT_TIMEOUT` seconds. Dask's own
    log lines (a task's failure logged by its worker, a lost connection) are kept quiet
    meanwhile: smcheck says what went wrong in one line."""
    import logging

    dist = _distributed(scheduler)
    quiet = logging.root.manager.disable
    logging.disable(logging.CRITICAL)  # Dask's loggers set levels of their own
    try:
        with contextlib.ExitStack() as stack:
            if scheduler == DASK:
                address = stack.enter_context(dist.LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True,
                    silence_logs=logging.CRITICAL, **QUIET_HTTP))
                c = dist.Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
            else:
                c = _reach(dist, scheduler)
            yield stack.enter_context(c)
    finally:
        logging.disable(quiet)


def _unreached(scheduler: str, why) -> InputError:
    return InputError(f"--scheduler {scheduler}: no Dask scheduler reached there ({why})")


def _reach(dist, scheduler: str):
    """A client of the Dask scheduler at ``scheduler``, which has a worker. Its handshake is
    exchanged first within CONNECT_TIMEOUT: distributed's Client waits for the answer without
    a limit, so a server that takes the connection and never answers (a web server) would
    hang the run, and one that answers otherwise made Dask allocate what its bytes said."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from distributed.comm import connect

    async def handshake():
        comm = await asyncio.wait_for(connect(scheduler, timeout=CONNECT_TIMEOUT),
                                      CONNECT_TIMEOUT)
        await comm.close()

    # on a thread of its own: the caller may be running an event loop (a notebook)
    with ThreadPoolExecutor(1) as ex:
        try:
            ex.submit(asyncio.run, handshake()).result()
        except (Exception, MemoryError) as exc:  # noqa: BLE001 - whatever the far end did
            why = (f"no answer as a Dask scheduler within {CONNECT_TIMEOUT:g} s"
                   if isinstance(exc, (TimeoutError, asyncio.TimeoutError))
                   else "its answer is not Dask's" if isinstance(exc, MemoryError)
                   else one_line(exc) or type(exc).__name__)
            raise _unreached(scheduler, why) from None
    try:
        c = dist.Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except Exception as exc:  # noqa: BLE001 - a worker's address, a refused client
        raise _unreached(scheduler, one_line(exc) or type(exc).__name__) from None
    try:
        c.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
    except (TimeoutError, dist.TimeoutError, OSError):
        c.close()
        raise InputError(f"--scheduler {scheduler}: the Dask scheduler there has no workers "
                         f"(none joined within {CONNECT_TIMEOUT:g} s)") from None
    return c


def _cluster_failed(scheduler: str, exc: BaseException, dist) -> SmcheckError | None:
    """The one line for a task lost to the cluster rather than failed in smcheck's code (which
    stays its own error): None for the latter."""
    from concurrent.futures import CancelledError

    if isinstance(exc, RuntimeError) and "deserializ" in str(exc):
        return SmcheckError(f"--scheduler {scheduler}: the workers could not load a task (they "
                            "need smcheck and its dependencies, in versions like this "
                            "process's)")
    if isinstance(exc, (CancelledError, dist.CancelledError, dist.KilledWorker, OSError,
                        TimeoutError, dist.TimeoutError)):
        return SmcheckError(f"--scheduler {scheduler}: the cluster failed during the run "
                            f"({type(exc).__name__}: {one_line(exc)})")
    return None


def threads_of(c) -> int:
    """The worker threads of the cluster behind client ``c`` (at least 1)."""
    return max(1, sum(w.get("nthreads", 1) for w in c.scheduler_info()["workers"].values()))


def run_chunks(runner: Callable, fn, x, companions: dict, bounds: list, fn_args: tuple, *,
               keep_arrays: bool, keep_result: bool, scheduler: str, workers: int | None,
               done: Callable) -> None:
    """Rows ``bounds`` [(lo, hi), ...] of x as tasks on the cluster ``scheduler`` names,
    each ``runner((fn, rows, companions' rows, lo, fn_args, keep_arrays, keep_result))`` on a
    worker; ``done(report, lo, hi)`` as each finishes, in whatever order. ``workers``: the
    LocalCluster's processes (``dask``); with an address, the most worker threads this run
    keeps busy (default: all of the cluster's). A task's exception is raised here."""
    import uuid

    xs = source(x)
    comp_src = {k: source(a) for k, a in companions.items()}
    with client(scheduler, workers or 1) as c:
        dist = _distributed(scheduler)
        slots = IN_FLIGHT * (workers or threads_of(c))
        todo = iter(bounds)
        where: dict = {}
        run = uuid.uuid4().hex[:12]  # task keys of this run, unique on a shared cluster

        def submit():
            for lo, hi in todo:
                fut = c.submit(_task, runner, fn, payload(x, xs, lo, hi),
                               {k: payload(companions[k], s, lo, hi)
                                for k, s in comp_src.items()},
                               lo, hi, fn_args, keep_arrays, keep_result, scheduler == DASK,
                               pure=False,
                               key=f"smcheck-rows-{lo}-{hi}-{run}")
                where[fut.key] = (lo, hi)
                return fut
            return None

        first = [f for f in (submit() for _ in range(slots)) if f is not None]
        pending = dist.as_completed(first, loop=c.loop)
        # a task's exception (pickled back) is raised by result(); leaving the client then
        # releases the tasks still pending, and a LocalCluster of this run is closed
        for fut in pending:
            try:
                rep = fut.result()
            except SmcheckError:
                raise
            except Exception as exc:  # lost to the cluster, or a bug of smcheck (raised as is)
                lost = _cluster_failed(scheduler, exc, dist)
                if lost is None:
                    raise
                raise lost from None
            done(rep, *where.pop(fut.key))
            nxt = submit()
            if nxt is not None:
                pending.add(nxt)
            del fut, rep  # the report and its task's data are not kept here
