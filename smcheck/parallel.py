"""Rows in chunks, chunks across processes, reports merged into one.

A batch is cut into chunks of rows (:func:`rows_per_chunk`, from the shape and the engine only,
*whatever the number of workers*), and each chunk
is checked exactly as it would be alone (rows are independent; the chunk knows its row offset),
so the merged report is identical for 1 worker or many. A memory-mapped input is read one
chunk at a time, so a batch larger than memory streams.
"""

from __future__ import annotations

import os
import threading
from typing import Callable

import numpy as np

from .results import NO_RESULT, CheckResult, Report

#: entries per chunk: of x, or of the Jacobian (n^2 a row) for a dense one. 2^17 keeps a
#: chunk's temporaries at about 1 MB each, near the caches: 32 rows of 4096 logits were checked
#: faster, and scaled better on 2 workers, than 64 rows (median of 5 runs each)
CHUNK_ENTRIES = 2 ** 17
#: with the mpmath engine (about 10 us an entry) a chunk is smaller, so that the workers share
#: even a small batch
CHUNK_ENTRIES_MPMATH = 2 ** 11
#: the merged report lists computed values up to this many numbers (as the JSON does)
RESULT_MAX = 4096


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


#: the batch being checked, seen by forked worker processes without being sent to them
_INHERITED: dict = {}
_POOL_LOCK = threading.Lock()


def _call(args):
    from .blocks import set_threads

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
    fn, x, companions, offset, kw, keep_arrays, keep_result = args
    x = np.asarray(x, dtype=np.float64)
    extra = {k: (None if a is None else np.asarray(a, dtype=np.float64))
             for k, a in companions.items()}
    rep = fn(x, **extra, row_offset=offset, **kw)
    # what the merged report will not use does not travel back from a worker process
    if not keep_arrays:
        rep.arrays = {}
    if not keep_result:
        rep.result = NO_RESULT
    return rep


def rows_per_chunk(n: int, dense: bool = False, engine: str = "dd") -> int:
    """Rows per chunk for rows of n entries: CHUNK_ENTRIES of x (of J when ``dense``), fewer
    with the mpmath engine, at least one row."""
    per_row = max(1, n) * (max(1, n) if dense else 1)
    budget = CHUNK_ENTRIES_MPMATH if engine == "mpmath" else CHUNK_ENTRIES
    return max(1, budget // per_row)


def run_rows(fn: Callable[..., Report], x, *, workers: int | None = None,
             chunk_rows: int | None = None, companions: dict | None = None,
             progress: Callable[[int, int], None] | None = None, keep_arrays: bool = False,
             **kw) -> Report:
    """``fn(x, **kw)`` (a run_* function) over the rows of ``x`` in chunks, on ``workers``
    processes (default: every core), merged. ``companions`` are row-aligned arrays (v, t, z)
    cut the same way; a 1-D companion is passed whole. ``chunk_rows`` defaults to
    :func:`rows_per_chunk` of the row length, the kind of reference and the engine."""
    companions = {k: a for k, a in (companions or {}).items()}
    x_is_batch = np.ndim(x) == 2
    rows = np.shape(x)[0] if x_is_batch else 1
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        from .exceptions import InputError

        raise InputError(f"--workers {workers}: must be >= 1")
    if kw.get("engine", "auto") == "auto":  # decided on the whole input, not per chunk
        from .reference import use_dd

        dense = getattr(fn, "dense_reference", False)
        kw["engine"] = ("dd" if use_dd(np.empty(0) if np.size(x) == 0 else x, "auto", dense)
                        else "mpmath")
        if kw["engine"] == "dd" and getattr(fn, "tiered_reference", False) and kw.get(
                "dtype", "float64") != "float64":
            kw["engine"] = "f64"
    from .blocks import using_threads

    if chunk_rows is None:
        chunk_rows = rows_per_chunk(int(np.shape(x)[-1]) if np.ndim(x) else 1,
                                    getattr(fn, "dense_reference", False), kw["engine"])
    if not x_is_batch or rows <= chunk_rows:  # one chunk: its blocks on `workers` threads
        with using_threads(workers):
            return fn(np.asarray(x, dtype=np.float64), progress=progress, **kw,
                      **{k: None if a is None else np.asarray(a, dtype=np.float64)
                         for k, a in companions.items()})

    import multiprocessing as mp

    fork = workers > 1 and "fork" in mp.get_all_start_methods()
    bounds = [(lo, min(lo + chunk_rows, rows)) for lo in range(0, rows, chunk_rows)]
    total = int(np.prod(np.shape(x)))
    # forked workers inherit the batch and are sent only their rows' bounds; otherwise
    # (one worker, or no fork on this platform) each chunk is cut here
    jobs = ((fn, (lo, hi) if fork else np.asarray(x[lo:hi]),
             {} if fork else {k: _part(a, lo, hi) for k, a in companions.items()},
             lo, kw, keep_arrays, total <= RESULT_MAX) for lo, hi in bounds)
    n = int(np.shape(x)[1])
    reports: dict[int, Report] = {}  # by first row: chunks may finish out of order

    def done(rep, lo, hi):
        if not keep_arrays:
            rep.arrays = {}  # a streamed batch keeps only what the report needs
        reports[lo] = rep
        if progress is not None:
            progress((hi - lo) * n, total)

    if workers == 1:
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
    return merge([reports[lo] for lo in sorted(reports)], shape=[rows, int(np.shape(x)[1])],
                 top=kw.get("top", 10))


#: chunks in flight per worker: enough that a worker never waits for the next while a slower
#: one finishes, few enough that memory stays O(chunk)
IN_FLIGHT = 3


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
    import sys

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
        from .exceptions import SmcheckError

        raise SmcheckError(f"a worker process was killed ({sig})"
                           + (", most likely for want of memory: try fewer --workers"
                              if sig == "SIGKILL" else ""))
    if os.WEXITSTATUS(status):
        raise RuntimeError(f"a worker process exited with status {os.WEXITSTATUS(status)}")


def _worker(task_r: int, res_w: int, jobs) -> None:  # pragma: no cover - runs in a child
    """A forked worker: check the chunks whose numbers it reads, send back each report (or
    the exception it raised); exit at the stop number or the end of the pipe."""
    import pickle
    import struct
    import sys

    code = 0
    try:
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


def _worst_chunk(results: list[CheckResult]) -> CheckResult:
    """The chunk whose worst entry one chunk of all the rows would have chosen: the first
    largest ``score`` (the quantity each check ranks its entries by); without scores, the
    first failing chunk, else the largest first entry or error."""
    if all(c.score is not None for c in results):
        return max(results, key=lambda c: c.score)  # max keeps the first of equals
    failing = [c for c in results if not c.passed]
    if failing:
        return failing[0]

    def key(c):
        if c.entries:
            e = c.entries[0]
            return e.abs_err / e.allowed if e.allowed > 0 else 0.0
        return c.max_abs_err or 0.0

    return max(results, key=key)


def _max(values):
    """The largest, nan if any is nan (as numpy's max over one chunk of all the rows)."""
    vals = [v for v in values if v is not None]
    return _nanmax(*vals) if vals else None


def _nanmax(*vals):
    return float("nan") if any(v != v for v in vals) else max(vals)


def merge_checks(results: list[CheckResult], top: int) -> CheckResult:
    """One check's results from consecutive chunks of rows (in row order) as one chunk of
    all the rows would give them: maxima and counts over every chunk, the worst chunk's worst
    entry and words, detail lists in row order (cut where a chunk's are cut); a check whose
    headline is a count is finished by its own hook (:data:`smcheck.checks.MERGE`)."""
    from .checks import REGISTRY
    from .results import merge_findings
    from .verdicts import MERGE, entry_order, exceed_words

    if results[0].name not in {name for name, _ in REGISTRY.get("forward", [])}:
        # a derivative check: its module registers its hooks (workers ran the checks, so this
        # process may not have imported it); a forward batch does not pay for that import
        from . import deriv_checks  # noqa: F401

    w = _worst_chunk(results)
    out = CheckResult(
        name=w.name, passed=all(c.passed for c in results),
        max_abs_err=_max(c.max_abs_err for c in results),
        max_rel_err=_max(c.max_rel_err for c in results),
        max_ulp=_max(c.max_ulp for c in results), tolerance=w.tolerance, worst=w.worst,
        measured=w.measured, allowed=w.allowed, statement=w.statement, score=w.score,
        merge_data=dict(w.merge_data))
    if w.max_ulp is not None and out.max_ulp is not None and w.measured.startswith("max "):
        from .verdicts import fmt

        out.measured = f"max {fmt(out.max_ulp)} ULP, rel {fmt(out.max_rel_err)}"
    out.tolerance = _merge_tolerance([c.tolerance for c in results], w.tolerance)
    out.notes = list(w.notes)
    for c in results:
        # one note per kind: a note's words before its first number name its kind
        kinds = {_kind(n) for n in out.notes}
        out.notes += [n for n in c.notes if _kind(n) not in kinds]
    # the worst chunk's first line (a check's summary of its worst entry), then every chunk's
    # further lines (about single rows) in row order
    out.failures = w.failures[:1] + [f for c in results for f in c.failures[1:]]
    if "entries" in w.merge_data and "failing_entries" in w.details and out.failures:
        # "N of M entries exceed their allowance" counts every chunk's entries
        bad = sum(c.details.get("failing_entries", 0) for c in results)
        size = sum(c.merge_data.get("entries", 0) for c in results)
        first = exceed_words(w.details["failing_entries"], w.merge_data["entries"])
        if out.failures[0].startswith(first):
            out.failures[0] = exceed_words(bad, size) + out.failures[0][len(first):]
        out.merge_data["entries"] = size
    out.failures = out.failures[:20]
    entries = sorted((e for c in results for e in c.entries), key=entry_order)
    out.entries = entries[:max(top, 0)]
    out.details = _merge_details([c.details for c in results], w.details)
    out.findings = merge_findings([c.findings for c in results])
    out.kind = w.kind
    if out.name in MERGE:
        MERGE[out.name](out, results, top)
    return out


def _merge_details(parts: list[dict], worst: dict, nested: bool = False) -> dict:
    """Details of consecutive chunks: lists concatenated in row order (those cut at LIST_MAX
    entries cut again), dicts merged alike, ``failing_entries`` summed, other numbers the
    worst chunk's (within a dict: the maximum, e.g. grad_x), ``shifts`` per shift."""
    from .results import CAPPED_LISTS, LIST_MAX, SUMMED_DETAILS

    out: dict = {}
    for d in parts:
        for k, v in d.items():
            if k not in out:
                out[k] = (list(v) if isinstance(v, list) else
                          _merge_details([v], v, True) if isinstance(v, dict) else
                          v if nested or k in SUMMED_DETAILS else worst.get(k, v))
            elif isinstance(v, list) and isinstance(out[k], list):
                out[k] = out[k] + v
            elif isinstance(v, dict) and isinstance(out[k], dict):
                out[k] = _merge_details([out[k], v], out[k], True)
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(
                    out[k], (int, float)):
                if k in SUMMED_DETAILS:
                    out[k] = out[k] + v
                elif nested:
                    out[k] = _nanmax(out[k], v)
            elif isinstance(v, bool) and nested and k == "passed":
                out[k] = out[k] and v
    for k in CAPPED_LISTS:
        if isinstance(out.get(k), list):
            out[k] = out[k][:LIST_MAX]
    if "shifts" in out:
        out["shifts"] = _merge_by(out["shifts"], "shift")
    return out


def _kind(note: str) -> str:
    import re

    return re.split(r"\d", note, maxsplit=1)[0]


#: tolerance numbers that describe the worst entry (the finite-difference step of its row),
#: not a maximum over the entries
WORST_TOLERANCE = ("step",)


def _merge_tolerance(parts: list[dict], worst: dict) -> dict:
    out = dict(worst)
    for t in parts:
        for k, v in t.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(
                    out.get(k), (int, float)) and k not in WORST_TOLERANCE:
                out[k] = _nanmax(out[k], v)
    return out


def _merge_by(items: list[dict], key: str) -> list[dict]:
    """Per-label maxima of lists of dicts (e.g. the two shifts of each chunk): numbers their
    maximum, ``passed`` all of them."""
    merged: dict = {}
    for it in items:
        m = merged.setdefault(it[key], dict(it))
        if (it.get("reference_bound") or 0.0) > (m.get("reference_bound") or 0.0):
            m["reference"] = it["reference"]  # the words of the weakest stated precision
        for k, v in it.items():
            if k == "passed":
                m[k] = m[k] and v
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(
                    m.get(k), (int, float)):
                m[k] = _nanmax(m[k], v)
            elif m.get(k) is None:
                m[k] = v
    return list(merged.values())


def merge_blocks(blocks: list[dict]) -> dict:
    out: dict = {}
    for b in blocks:
        for k, v in b.items():
            if k not in out:
                out[k] = merge_blocks([v]) if isinstance(v, dict) else v
            elif isinstance(v, dict):
                out[k] = merge_blocks([out[k], v])
            elif isinstance(v, list):
                out[k] = out[k] + v
            elif isinstance(v, bool):
                out[k] = out[k] or v
            elif isinstance(v, int) and k.endswith("_count"):
                out[k] = out[k] + v
    return out


def _merged_blocks(reports: list[Report]) -> dict:
    ver = [r.blocks["reference_verification"] for r in reports
           if "reference_verification" in r.blocks]
    out = merge_blocks([{k: v for k, v in r.blocks.items() if k != "reference_verification"}
                        for r in reports])
    if ver:
        from .verify import merge as merge_verification

        out["reference_verification"] = merge_verification(ver)
    return out


def merge(reports: list[Report], shape: list[int], top: int = 10) -> Report:
    """One report from the reports of consecutive chunks of rows."""
    first = reports[0]
    names = [c.name for c in max(reports, key=lambda r: len(r.checks)).checks]
    checks = []
    for name in names:
        parts = [c for r in reports for c in r.checks if c.name == name]
        checks.append(merge_checks(parts, top))
    result = NO_RESULT
    if all(r.result is not NO_RESULT for r in reports) and np.prod(shape) <= RESULT_MAX:
        result = [row for r in reports for row in r.result]
    arrays = {}
    if all(r.arrays for r in reports):
        arrays = {k: np.concatenate([r.arrays[k] for r in reports]) for k in first.arrays}
    notes = []
    for r in reports:
        notes += [n for n in r.notes if n not in notes and not n.startswith("no row has")]
    if not any(r.checks for r in reports):
        notes.append("no row has a defined softmax: nothing to check")
    # the reference's words: those of the weakest precision stated by a chunk (the float64
    # tier's bound grows with |x_i - max|), so that they hold for every row
    stated = max((r for r in reports if r.checks), default=first,
                 key=lambda r: r.reference_bound or 0.0)
    return Report(command=first.command, impl=first.impl, dtype=first.dtype, dps=first.dps,
                  shape=shape, checks=checks, reference=stated.reference,
                  undefined_rows=[u for r in reports for u in r.undefined_rows], notes=notes,
                  blocks=_merged_blocks(reports), options=first.options,
                  vectors={}, result=result, arrays=arrays,
                  reference_bound=stated.reference_bound)
