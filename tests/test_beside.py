"""Checks run beside the others in a forked process (smcheck.beside): the same report as
inline, the progress counted, a child's exception or death raised here, no child left."""

import json
import os
import signal

import numpy as np
import pytest

from smcheck import beside
from smcheck import checks as C
from smcheck.exceptions import SmcheckError
from smcheck.options import Options
from smcheck.report import report_json
from smcheck.run import check_rows

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")


@pytest.fixture
def small_fork_min(monkeypatch):
    """Fork from 2^10 entries (the real floor is 2^19), counting the forks."""
    monkeypatch.setattr(beside, "FORK_MIN", 1 << 10)
    forks = []
    real = beside.forked

    def counted(fn, case):
        forks.append(fn.__name__)
        return real(fn, case)

    monkeypatch.setattr(C, "forked", counted)
    return forks


def _no_children_left():
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def _doc(command, x, workers, companions=None, progress=None, **kw):
    rep = check_rows(command, x, Options(**kw), workers=workers, companions=companions or {},
                     progress=progress)
    return json.dumps(report_json(rep, "t"))


X = np.random.default_rng(3).standard_normal((3, 1500)) * 9  # auto: double-double, one chunk


@needs_fork
@pytest.mark.parametrize("command,kw,comp", [
    ("forward", {}, None), ("forward", {"dtype": "float32"}, None),
    ("forward", {"log": True, "metric": "strict"}, None), ("forward", {"impl": "naive"}, None),
    ("forward", {"impl": "scipy", "dtype": "float16"}, None),
    ("vjp", {}, {"v": np.random.default_rng(4).standard_normal((3, 1500))}),
    ("loss", {"dtype": "float32"}, {"t": np.eye(1500)[[5, 9, 1400]]})])
def test_forked_check_gives_the_inline_report(small_fork_min, command, kw, comp):
    inline = _doc(command, X, 1, comp, **kw)
    assert small_fork_min == []
    assert _doc(command, X, 2, comp, **kw) == inline
    assert small_fork_min == [f"{command}_shift_invariance"]
    _no_children_left()


@needs_fork
@pytest.mark.parametrize("why", ["one worker", "small", "a user's function", "a batch"])
def test_no_fork_where_it_cannot_pay_or_is_unsafe(small_fork_min, monkeypatch, tmp_path, why):
    x, workers, kw = X, 2, {}
    if why == "one worker":
        workers = 1
    elif why == "small":
        monkeypatch.setattr(beside, "FORK_MIN", X.size + 1)
    elif why == "a user's function":  # it may hold threads, or state, that a fork breaks
        (tmp_path / "k.py").write_text(
            "import numpy as np\n"
            "def softmax(x):\n"
            "    e = np.exp(x - x.max(axis=-1, keepdims=True))\n"
            "    return e / e.sum(axis=-1, keepdims=True)\n")
        kw = {"impl": f"{tmp_path / 'k.py'}:softmax"}
    else:  # chunks on worker processes: the processes are the parallelism
        x = np.tile(X, (40, 1))
    assert json.loads(_doc("forward", x, workers, **kw))["passed"]
    assert small_fork_min == []


@needs_fork
def test_the_childs_progress_is_counted_here(small_fork_min):
    seen = {}

    def count(workers):
        ticks = []
        _doc("forward", X, workers, progress=lambda k, total: ticks.append((k, total)))
        return sum(k for k, _ in ticks), {t for _, t in ticks}

    seen[1], seen[2] = count(1), count(2)
    assert small_fork_min == ["forward_shift_invariance"]
    assert seen[1] == seen[2] and seen[1][0] == 3 * X.size


def _replace_beside(monkeypatch, fn):
    table = {cmd: [(n, fn if n == "shift_invariance" else f, m) for n, f, m in rows]
             for cmd, rows in C.TABLE.items()}
    monkeypatch.setattr(C, "TABLE", table)


class _Unpicklable(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a} and {b}")
        self.lock = __import__("threading").Lock()


@needs_fork
@pytest.mark.parametrize("exc,kind,words", [
    (ValueError("shift went wrong"), ValueError, "shift went wrong"),
    (_Unpicklable("this", "that"), RuntimeError, "_Unpicklable: this and that")])
def test_an_exception_in_the_child_is_raised_here(small_fork_min, monkeypatch, exc, kind,
                                                   words):
    def shift_invariance(case):
        raise exc

    _replace_beside(monkeypatch, shift_invariance)
    with pytest.raises(kind, match=words):
        _doc("forward", X, 2)
    assert small_fork_min == ["shift_invariance"]
    _no_children_left()


@needs_fork
def test_a_killed_child_is_an_error_that_says_so(small_fork_min, monkeypatch):
    def shift_invariance(case):
        os.kill(os.getpid(), signal.SIGKILL)

    _replace_beside(monkeypatch, shift_invariance)
    with pytest.raises(SmcheckError, match=r"beside the others was killed \(SIGKILL\).*"
                                           r"--workers 1"):
        _doc("forward", X, 2)
    _no_children_left()


def _slow_check(marker):
    """A check that sleeps 5 s, then leaves ``marker``: a child that was stopped leaves none."""
    def shift_invariance(case):
        import time

        time.sleep(5)
        marker.write_text("the child ran to its end")
    return shift_invariance


@needs_fork
def test_a_failing_check_here_stops_the_child(small_fork_min, monkeypatch, tmp_path):
    marker = tmp_path / "ran"

    def reference(case):
        raise ValueError("the reference check failed")

    _replace_beside(monkeypatch, _slow_check(marker))
    table = {cmd: [(n, reference if n == "reference" else f, m) for n, f, m in rows]
             for cmd, rows in C.TABLE.items()}
    monkeypatch.setattr(C, "TABLE", table)
    with pytest.raises(ValueError, match="the reference check failed"):
        _doc("forward", X, 2)
    _no_children_left()
    assert not marker.exists()  # killed, not waited for


@needs_fork
def test_interrupted_while_waiting_stops_the_child(small_fork_min, monkeypatch, tmp_path):
    marker = tmp_path / "ran"

    def interrupt(*_):
        raise KeyboardInterrupt

    _replace_beside(monkeypatch, _slow_check(marker))
    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.alarm(2)  # the checks here take well under 2 s: then it waits for the child
        with pytest.raises(KeyboardInterrupt):
            _doc("forward", X, 2)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    _no_children_left()
    assert not marker.exists()  # killed, not waited for


def test_in_one_process_the_shift_check_runs_first_and_holds_less(monkeypatch):
    """Checked in one process (--workers 1), shift_invariance runs before the other checks,
    so that their comparisons reuse the memory its shifted cases freed: the peak (tracemalloc)
    of a forward run on one row of 2^18 float64 entries is lower than in the table's order
    (the control: no BESIDE check), the report the same bits, in the table's order."""
    import tracemalloc

    order = []
    table = [(name, (lambda case, _fn=fn, _name=name: (order.append(_name), _fn(case))[1]), m)
             for name, fn, m in C.TABLE["forward"]]
    monkeypatch.setitem(C.TABLE, "forward", table)
    x = np.random.default_rng(8).standard_normal((1, 2 ** 18)) * 5

    def peak():
        tracemalloc.start()
        try:
            doc = _doc("forward", x, 1)
            return doc, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    first, first_peak = peak()
    assert order == ["shift_invariance", "reference", "normalization", "finite"]
    assert [c["name"] for c in json.loads(first)["checks"]] == C.check_names("forward")
    order.clear()
    monkeypatch.setattr(C, "BESIDE", ())
    table_order, table_peak = peak()
    assert order == C.check_names("forward") and table_order == first
    assert first_peak < 0.85 * table_peak, (first_peak, table_peak)
