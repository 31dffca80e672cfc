"""Rows in chunks, chunks across processes, the chunks' reports handed to a merge.

A batch is cut into chunks of rows (:func:`rows_per_chunk`, from the shape and the engine only,
*whatever the number of workers*), and each chunk
is checked exactly as it would be alone (rows are independent; the chunk knows its row offset),
so the merged report is identical for 1 worker or many. A memory-mapped input, or a store of
:mod:`smcheck.stores`, is read one chunk at a time (``x[lo:hi]``), so a batch larger than
memory streams.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Callable

import numpy as np

from . import cluster
from .beside import spare_processes
from .blocks import set_threads, using_threads
from .exceptions import InputError, SmcheckError
from .options import DASK, IN_FLIGHT, LOCAL, check_scheduler
from .results import NO_RESULT, RESULT_MAX, Report

#: entries per chunk: of x, or of the Jacobian (n^2 a row) for a dense one. 2^17 keeps a
#: chunk's temporaries at about 1 MB each, near the caches: 32 rows of 4096 logits were checked
#: faster, and scaled better on 2 workers, than 64 rows (median of 5 runs each)
CHUNK_ENTRIES = 2 ** 17
#: with the mpmath engine (about 10 us an entry) a chunk is smaller, so that the workers share
#: even a small batch
CHUNK_ENTRIES_MPMATH = 2 ** 11
#: vjp and loss cost 4 to 7 times more an entry than forward (the exact VJP, directional
#: finite differences, the gradient in x): a chunk of theirs is 4 times smaller, so that the
#: workers share a batch of 10 rows of 10^4 (fresh runs, 2 workers, float32: vjp 88-97
#: against 104-123 ms, loss 101-138 against 129-142 ms); 100 rows took as long (within the
#: machine's noise, 10-20 %)
CHUNK_ENTRIES_SLOW = 2 ** 15
#: entries of work (of x, of J for a dense command) from which one chunk's blocks run on
#: threads. Below it the threads cost more than they give: benchmarks/threads_fork.py (warm
#: forward, 2 cores, medians of 5), 1 thread against 2: 10 rows of 10^4 float32 17 against
#: 30 ms, one row of 3 10^5 float64 94 against 130 ms, of 10^6 333 against 382 ms, of 3 10^6
#: 879 against 988 ms; the Jacobian of 2048 logits (4 10^6 entries) gains from its checks'
#: threads (issue 18)
THREADS_MIN = 2 ** 22


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


#: the batch being checked, seen by forked worker processes without being sent to them
_INHERITED: dict = {}
_POOL_LOCK = threading.Lock()


def _call(args):
    set_threads(1)  # a worker process: the processes are the parallelism
    if isinstance(args[1], tuple):  # (lo, hi): rows of the batch this process inherited
        lo, hi = args[1]
        x, comp = _INHERITED["x"], _INHERITED["companions"]
        args = (args[0], x[lo:hi], {k: _part(a, lo, hi) for k, a in comp.items()}, *args[3:])
    return _run(args)


def _part(a, lo, hi):
    if a is None or np.ndim(a) < 2:
        return a
    return np.asarray(a[lo:hi])


def _run(args):
    fn, x, companions, offset, fn_args, keep_arrays, keep_result = args
    x = np.asarray(x, dtype=np.float64)
    extra = {k: (None if a is None else np.asarray(a, dtype=np.float64))
             for k, a in companions.items()}
    rep = fn(x, *fn_args, **extra, row_offset=offset)
    # what the merged report will not use does not travel back from a worker process
    if not keep_arrays:
        rep.arrays = {}
    if not keep_result:
        rep.result = NO_RESULT
    return rep


def rows_per_chunk(n: int, dense: bool = False, small: bool = False, slow: bool = False) -> int:
    """Rows per chunk for rows of n entries: CHUNK_ENTRIES of x (of J when ``dense``), fewer
    when each entry is slow (``small``: the mpmath engine; ``slow``: vjp and loss), at least
    one row."""
    per_row = max(1, n) * (max(1, n) if dense else 1)
    budget = CHUNK_ENTRIES_MPMATH if small else CHUNK_ENTRIES_SLOW if slow else CHUNK_ENTRIES
    return max(1, budget // per_row)


def run_rows(fn: Callable[..., Report], x, args: tuple = (), *, merge: Callable[..., Report],
             chunk_rows: int, workers: int | None = None, companions: dict | None = None,
             progress: Callable[[int, int], None] | None = None,
             keep_arrays: bool = False, scheduler: str = "local", row_work: int | None = None
             ) -> Report:
    """``fn(x, *args, row_offset=..., progress=..., **companions)`` over the rows of ``x`` in
    chunks of ``chunk_rows`` rows, on ``workers`` processes (default: every core), and
    ``merge(reports, shape)`` of the chunks' reports, in row order. ``companions`` are
    row-aligned arrays cut the same way; a 1-D companion is passed whole. What ``fn`` checks
    and how reports merge is the caller's: this module only schedules.

    ``scheduler``: ``local`` (this machine's processes: forked, or a process pool where there
    is no fork), ``dask`` (a Dask LocalCluster of ``workers`` processes, started for the run)
    or the address of a Dask scheduler (``workers``: at most so many of its threads busy;
    default all); see :mod:`smcheck.cluster`. One chunk is checked in this process whatever
    the scheduler; its blocks run on ``workers`` threads when it holds THREADS_MIN entries of
    work (``row_work`` a row: default the row length, n^2 for a dense Jacobian)."""
    companions = {k: a for k, a in (companions or {}).items()}
    x_is_batch = np.ndim(x) == 2
    rows = np.shape(x)[0] if x_is_batch else 1
    scheduler = check_scheduler(scheduler)
    given = workers
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise InputError(f"--workers {workers}: must be >= 1")
    if not x_is_batch or rows <= chunk_rows:  # one chunk: its blocks on `workers` threads
        work = int(np.size(x)) if row_work is None else rows * row_work
        # a batch is sliced, not converted whole: a store reads its rows (not np.asarray)
        with using_threads(workers if work >= THREADS_MIN else 1), \
                spare_processes(workers - 1):
            return fn(np.asarray(x[0:rows] if x_is_batch else x, dtype=np.float64), *args,
                      progress=progress, **{k: None if a is None else np.asarray(
                          _part(a, 0, rows), dtype=np.float64) for k, a in companions.items()})

    import multiprocessing as mp

    fork = workers > 1 and "fork" in mp.get_all_start_methods()
    bounds = [(lo, min(lo + chunk_rows, rows)) for lo in range(0, rows, chunk_rows)]
    total = int(np.prod(np.shape(x)))
    # forked workers inherit the batch and are sent only their rows' bounds; otherwise
    # (one worker, or no fork on this platform) each chunk is cut here
    jobs = ((fn, (lo, hi) if fork else np.asarray(x[lo:hi]),
             {} if fork else {k: _part(a, lo, hi) for k, a in companions.items()},
             lo, args, keep_arrays, total <= RESULT_MAX) for lo, hi in bounds)
    n = int(np.shape(x)[1])
    reports = _Reports(merge, n)  # chunks may finish out of order

    def done(rep, lo, hi):
        if not keep_arrays:
            rep.arrays = {}  # a streamed batch keeps only what the report needs
        reports.add(rep, lo, hi)
        if progress is not None:
            progress((hi - lo) * n, total)

    if scheduler != LOCAL:  # on a Dask cluster: tasks that read their own rows
        cluster.run_chunks(_call, fn, x, companions, bounds, args, keep_arrays=keep_arrays,
                           keep_result=total <= RESULT_MAX, scheduler=scheduler,
                           workers=workers if scheduler == DASK else given, done=done)
    elif workers == 1:
        with using_threads(1):
            for (lo, hi), job in zip(bounds, jobs):
                done(_run(job), lo, hi)
    else:
        import gc

        # one pool at a time: _INHERITED is what the workers forked now see (two threads of
        # one process checking batches at once wait for each other here)
        with _POOL_LOCK:
            _INHERITED.update(x=x, companions=companions)  # forked with the workers
            # the collector in a forked worker would touch (and so copy) every object it
            # inherited; frozen objects it leaves alone (unfrozen again here after the run)
            gc.freeze()
            try:
                if fork:
                    _forked(bounds, list(jobs), workers, done)
                else:
                    from concurrent.futures import ProcessPoolExecutor

                    with ProcessPoolExecutor(max_workers=workers) as pool:
                        _feed(pool, bounds, jobs, workers, done)
            finally:
                _INHERITED.clear()
                gc.unfreeze()
    return reports.merged(rows)


#: chunk reports held before the leading ones are merged into one, so that a batch of many
#: chunks holds a bounded number of reports, not one a chunk (10^4 rows of 10^4 in vjp's
#: chunks of 3 rows held about 100 MB of them); the merge is the same in any grouping (tests)
FOLD = 64


class _Reports:
    """The chunks' reports as they come (in any order): those of the leading rows, in row
    order, merged into one whenever more than FOLD are held."""

    def __init__(self, merge: Callable[..., Report], n: int):
        self.merge, self.n = merge, n
        self.waiting: dict[int, tuple[int, Report]] = {}  # first row -> (end row, report)
        self.head: list[Report] = []  # of rows [0, upto), in order
        self.upto = 0

    def add(self, rep: Report, lo: int, hi: int) -> None:
        self.waiting[lo] = (hi, rep)
        while self.upto in self.waiting:
            self.upto, r = self.waiting.pop(self.upto)
            self.head.append(r)
        if len(self.head) > FOLD:
            self.head = [self.merge(self.head, [self.upto, self.n])]

    def merged(self, rows: int) -> Report:
        if self.waiting or self.upto != rows:  # pragma: no cover - a scheduler's bug
            raise RuntimeError(f"chunks missing: rows {self.upto} to {rows} were not merged")
        return self.merge(self.head, [rows, self.n])


def _feed(pool, bounds, jobs, workers, done):
    """Submit the chunks to a process pool (where there is no fork), at most IN_FLIGHT per
    worker at a time; each is handed to ``done`` as soon as it finishes, in whatever order."""
    from concurrent.futures import FIRST_COMPLETED, wait

    pending: dict = {}
    for (lo, hi), job in zip(bounds, jobs):
        pending[pool.submit(_call, job)] = (lo, hi)
        while len(pending) >= IN_FLIGHT * workers:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                done(fut.result(), *pending.pop(fut))
    for fut in list(pending):  # the last ones, in order of submission
        done(fut.result(), *pending.pop(fut))


_STOP = -1  # the chunk number that tells a forked worker to exit


def _forked(bounds, jobs, workers, done):
    """The chunks on ``workers`` forked processes. They take the numbers of the next chunks
    from one shared pipe, each as soon as it is free (4-byte writes and reads of a pipe are
    atomic), and send each report back on a pipe of their own. The parent only hands out
    numbers and reads reports. A process pool's threads, queues and pickled jobs cost the
    parent twice the CPU (60 against 30 ms, medians of 10 runs of 2000 x 4096 float32 on 2
    workers), taken from the workers when there are as many as cores; the whole run took 3%
    longer (1.23 against 1.19 s).

    A worker's exception is raised here (the others are stopped); a worker that dies (killed,
    out of memory) is an error that says so."""
    import pickle
    import selectors
    import struct

    for stream in (sys.stdout, sys.stderr):  # a child must not write the parent's buffers
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    task_r, task_w = os.pipe()
    kids: dict[int, int] = {}  # result pipe -> pid
    sel = selectors.DefaultSelector()
    sent = received = 0
    ok = False
    try:
        for _ in range(min(workers, len(bounds))):  # no more processes than chunks
            res_r, res_w = os.pipe()
            try:
                pid = os.fork()
            except BaseException:
                os.close(res_r)
                os.close(res_w)
                raise
            if pid == 0:  # pragma: no cover - the child: its coverage is not collected
                os.close(task_w)
                os.close(res_r)
                for fd in kids:
                    os.close(fd)
                _worker(task_r, res_w, jobs)
            os.close(res_w)
            kids[res_r] = pid
            sel.register(res_r, selectors.EVENT_READ)
        os.close(task_r)
        task_r = -1

        def top_up():  # at most two numbers a worker not yet taken or finished
            nonlocal sent
            k = min(len(bounds) - sent, 2 * len(kids) - (sent - received))
            if k > 0:
                os.write(task_w, struct.pack(f"{k}i", *range(sent, sent + k)))
                sent += k
                if sent == len(bounds):
                    os.write(task_w, struct.pack(f"{len(kids)}i", *[_STOP] * len(kids)))

        top_up()
        while received < len(bounds):
            if not sel.get_map():
                raise RuntimeError("the worker processes exited before every chunk was checked")
            for key, _ in sel.select():
                msg = _receive(key.fd)
                if msg is None:  # the worker exited
                    sel.unregister(key.fd)
                    os.close(key.fd)
                    _reap(kids.pop(key.fd))
                    continue
                i, good, payload = pickle.loads(msg)
                if not good:
                    raise payload
                received += 1
                done(payload, *bounds[i])
                top_up()
        ok = True
    finally:
        if task_r >= 0:
            os.close(task_r)
        os.close(task_w)  # a worker still waiting for a number reads the end and exits
        if not ok:  # stop the others at once: their reports would not be used
            import signal

            for pid in kids.values():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:  # pragma: no cover - already gone
                    pass
        failed = None
        for fd, pid in kids.items():
            sel.unregister(fd)
            os.close(fd)
            if ok:
                try:
                    _reap(pid)
                except Exception as exc:  # pragma: no cover - a worker failing at its exit
                    failed = failed or exc
            else:
                os.waitpid(pid, 0)
        sel.close()
    if failed is not None:  # pragma: no cover
        raise failed


def _receive(fd: int) -> bytes | None:
    """One length-prefixed message from a worker's pipe; None at its end."""
    import struct

    head = _read(fd, 8)
    if head is None:
        return None
    (size,) = struct.unpack("q", head)
    body = _read(fd, size)
    if body is None:
        raise RuntimeError("a worker process exited while sending a report")
    return body


def _read(fd: int, size: int) -> bytes | None:
    parts, left = [], size
    while left:
        b = os.read(fd, min(left, 1 << 20))
        if not b:
            if left == size:
                return None
            raise RuntimeError("a worker process exited while sending a report")
        parts.append(b)
        left -= len(b)
    return b"".join(parts)


def _reap(pid: int) -> None:
    """Wait for a worker; one killed by a signal or exiting with an error is an error."""
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        import signal

        sig = signal.Signals(os.WTERMSIG(status)).name
        raise SmcheckError(f"a worker process was killed ({sig})"
                           + (", most likely for want of memory: try fewer --workers"
                              if sig == "SIGKILL" else ""))
    if os.WEXITSTATUS(status):
        raise RuntimeError(f"a worker process exited with status {os.WEXITSTATUS(status)}")


def one_thread_each() -> None:
    """In a forked worker: the worker processes are the parallelism, so a framework's own
    thread pool gets one thread. With torch's default (a thread a core, whose idle threads
    spin) in each of 2 workers on 2 cores, the Jacobian of 512 rows of 64 took 19.0 s against
    2.1 s in one process, and 2.9 s with one thread a worker. torch, imported already (the
    parent built the implementation), is told so; a framework imported later in the worker
    reads OMP_NUM_THREADS. (Dask's nanny sets OMP_NUM_THREADS=1 for its workers itself.)"""
    os.environ["OMP_NUM_THREADS"] = "1"
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _worker(task_r: int, res_w: int, jobs) -> None:  # pragma: no cover - runs in a child
    """A forked worker: check the chunks whose numbers it reads, send back each report (or
    the exception it raised); exit at the stop number or the end of the pipe."""
    import pickle
    import struct

    code = 0
    try:
        one_thread_each()
        out = os.fdopen(res_w, "wb")
        while True:
            b = _read(task_r, 4)  # every write and read of it is whole numbers: 4 bytes
            if b is None:  # the parent is gone, or stopped the run
                break
            (i,) = struct.unpack("i", b)
            if i == _STOP:
                break
            try:
                msg = (i, True, _call(jobs[i]))
            except Exception as exc:  # sent to the parent, which raises it
                try:
                    pickle.loads(pickle.dumps(exc))
                except Exception:
                    exc = RuntimeError(f"{type(exc).__name__}: {exc}")
                msg = (i, False, exc)
            data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
            out.write(struct.pack("q", len(data)))
            out.write(data)
            out.flush()
            if not msg[1]:
                break
    except BaseException:  # interrupted, or the parent is gone: exit without a word
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
