"""A check run beside the others, on a forked copy of this process.

The checks that build cases of their own (shift invariance: the implementation and the exact
values at shifted inputs) only read the command's case, so they can run while the other checks
do. Where one chunk is checked in this process and a core is spare (:class:`spare_processes`,
set by :func:`smcheck.parallel.run_rows`), such a check runs in a forked child: it inherits
the case without a copy and sends back its result (pickled: a few kB). A fork costs a few
milliseconds and the pages both processes then write; from FORK_MIN entries it pays.
``benchmarks/threads_fork.py`` (2 cores, fresh processes, medians of 5), without the fork
against with it: 10^5 float64 entries 203 against 207 ms, 1.5 10^5 231 against 231 ms,
3 10^5 301 against 286 ms, 10^6 576 against 470 ms (1.23x); threads gained nothing there
(their many small numpy operations contend): hence a forked process, from 2^19 entries.

Only implementations that survive a fork (``Implementation.fork_safe``: numpy code) run there,
and only where the child's share of the work fits in the memory available
(:mod:`smcheck.memory`); a child that dies is an error that says so, and an exception in it
is raised here.
"""

from __future__ import annotations

import os
from dataclasses import fields, replace
from typing import Callable

from .exceptions import SmcheckError
from .memory import spare_for_beside

#: entries of x from which a check is worth a forked process
FORK_MIN = 2 ** 19

_spare = 0  # processes the chunk checked here may fork (0: none; in a child: none)


class spare_processes:
    """``with spare_processes(k):`` the checks inside may fork up to k processes."""

    def __init__(self, k: int):
        self.k = max(0, int(k))

    def __enter__(self):
        global _spare
        self.old, _spare = _spare, self.k
        return self

    def __exit__(self, *exc):
        global _spare
        _spare = self.old


def can_fork(case, size: int) -> bool:
    """Whether a check on ``case`` (``size`` entries of x) may run in a forked process."""
    return (_spare > 0 and hasattr(os, "fork") and size >= FORK_MIN
            and getattr(case.impl, "fork_safe", False) and spare_for_beside(case, size))


def forked(fn: Callable, case) -> "Child":
    """Start ``fn(case)`` in a forked child; its :meth:`Child.wait` gives the result (or
    raises the child's exception). The child's progress ticks are counted there and passed on
    by ``wait`` (it must not draw on the terminal itself). ``wait`` or ``cancel`` (which kills
    a child whose result is no longer wanted) must be called: they reap the child."""
    import gc
    import pickle

    counted = [0]
    child_case = case
    if "progress" in {f.name for f in fields(case)}:
        child_case = replace(case, progress=lambda k: counted.__setitem__(0, counted[0] + k))
    rfd, wfd = os.pipe()
    gc.freeze()  # the child's collector would touch (and so copy) every inherited object
    try:
        pid = os.fork()
    finally:
        gc.unfreeze()
    if pid == 0:  # pragma: no cover - runs in the child
        global _spare
        _spare = 0
        code = 0
        try:
            os.close(rfd)
            try:
                msg = (True, fn(child_case), counted[0])
            except Exception as exc:  # raised again in the parent
                try:
                    pickle.loads(pickle.dumps(exc))
                except Exception:
                    exc = RuntimeError(f"{type(exc).__name__}: {exc}")
                msg = (False, exc, 0)
            with os.fdopen(wfd, "wb") as out:
                out.write(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))
        except BaseException:  # interrupted, or the parent is gone
            code = 1
        finally:
            os._exit(code)
    os.close(wfd)
    return Child(pid, os.fdopen(rfd, "rb"), getattr(fn, "__name__", "a check"),
                 getattr(case, "progress", None))


class Child:
    """A forked check: :meth:`wait` for its result, or :meth:`cancel` it; either reaps it,
    once."""

    def __init__(self, pid: int, pipe, name: str, tick):
        self.pid, self.pipe, self.name, self.tick = pid, pipe, name, tick
        self.status: int | None = None

    def _reap(self) -> int:
        if self.status is None:
            self.pipe.close()
            self.status = os.waitpid(self.pid, 0)[1]
        return self.status

    def wait(self):
        import pickle

        try:
            data = self.pipe.read()
        except BaseException:  # interrupted while waiting: the child is not wanted
            self.cancel()
            raise
        status = self._reap()
        if not data:
            what = f"the process checking {self.name} beside the others"
            if os.WIFSIGNALED(status):
                import signal

                sig = signal.Signals(os.WTERMSIG(status)).name
                raise SmcheckError(f"{what} was killed ({sig})" + (
                    ", most likely for want of memory: try --workers 1"
                    if sig == "SIGKILL" else ""))
            raise RuntimeError(f"{what} exited with status {os.WEXITSTATUS(status)}")
        ok, value, ticks = pickle.loads(data)
        if not ok:
            raise value
        if self.tick is not None and ticks:
            self.tick(ticks)
        return value

    def cancel(self) -> None:
        if self.status is not None:
            return
        import signal

        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:  # pragma: no cover - it had finished
            pass
        self._reap()
