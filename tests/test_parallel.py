"""Chunks of rows and worker processes: the merged report is the same for any number of
workers, row numbers refer to the whole input, and memory-mapped files stream."""

import json
from functools import partial

import numpy as np
import pytest

from smcheck import parallel
from smcheck.checks import merge_reports
from smcheck.inputs import load_file
from smcheck.options import Options
from smcheck.report import report_json
from smcheck.run import check_rows, run_forward, run_jacobian, run_loss, run_vjp
from smcheck.sentences import failure_lines

COMMAND = {run_forward: "forward", run_jacobian: "jacobian", run_vjp: "vjp", run_loss: "loss"}


def run_rows(fn, x, *, workers, chunk_rows=None, companions=None, keep_arrays=False, **kw):
    """A command over chunks of rows (smcheck.run.check_rows); a test's own chunk function
    (a command that misbehaves at a row) straight on the scheduler."""
    if fn in COMMAND:
        return check_rows(COMMAND[fn], x, Options(**kw), workers=workers, chunk_rows=chunk_rows,
                          companions=companions, keep_arrays=keep_arrays)
    return parallel.run_rows(partial(fn, **kw), x, workers=workers, chunk_rows=chunk_rows,
                             companions=companions, keep_arrays=keep_arrays,
                             merge=merge_reports)


def batch():
    x = np.random.default_rng(0).standard_normal((150, 12)) * 5
    x[7, :] = -np.inf  # an undefined row inside chunk 0
    x[140, 3] = 1000.0  # a hard row in the last chunk
    return x


@pytest.mark.parametrize("fn,kw", [(run_forward, {}), (run_forward, {"log": True}),
                                   (run_vjp, {}), (run_jacobian, {}),
                                   (run_loss, {"companions": {"t": np.eye(12)[[0] * 150]}})])
def test_identical_for_one_and_two_workers(fn, kw):
    x = batch()
    a = run_rows(fn, x, workers=1, chunk_rows=32, dtype="float32", **kw)
    b = run_rows(fn, x, workers=2, chunk_rows=32, dtype="float32", **kw)
    assert json.dumps(report_json(a, "t")) == json.dumps(report_json(b, "t"))
    assert [u["row"] for u in a.undefined_rows] == [7]


def test_two_threads_with_worker_pools_each_get_their_own_batch():
    """Forked workers see the batch through a module global: two threads of one process
    checking different batches at once must not see each other's."""
    from concurrent.futures import ThreadPoolExecutor

    xa, xb = batch(), np.random.default_rng(9).standard_normal((100, 12)) * 40
    alone = [run_rows(run_forward, x, workers=1, chunk_rows=16, dtype="float32")
             for x in (xa, xb)]
    with ThreadPoolExecutor(2) as threads:
        both = list(threads.map(lambda x: run_rows(run_forward, x, workers=2, chunk_rows=16,
                                                   dtype="float32"), [xa, xb, xb, xa]))
    for got, want in zip(both, alone + alone[::-1]):
        assert json.dumps(report_json(got, "t")) == json.dumps(report_json(want, "t"))


def test_chunks_keep_row_numbers_and_verdicts():
    x = batch()
    whole = run_forward(x, impl="naive", engine="dd")
    parts = run_rows(run_forward, x, workers=1, chunk_rows=32, impl="naive")
    assert [(c.name, c.passed) for c in whole.checks] == [(c.name, c.passed) for c in parts.checks]
    assert parts.blocks["overflow"]["overflow_indices"] == whole.blocks["overflow"]["overflow_indices"] == [[140, 3]]
    assert any("row 140" in f for f in failure_lines(parts.checks[0]))
    assert parts.checks[0].max_ulp == whole.checks[0].max_ulp


def test_per_row_random_directions_do_not_depend_on_chunking():
    x = batch()
    a = run_vjp(x, engine="dd")
    b = run_rows(run_vjp, x, workers=1, chunk_rows=16)
    assert a.blocks["dot"] == b.blocks["dot"]
    assert a.checks[0].max_ulp == b.checks[0].max_ulp


def test_large_npy_is_memory_mapped_and_streams(tmp_path, monkeypatch):
    import smcheck.inputs as inputs

    monkeypatch.setattr(inputs, "MMAP_MIN_BYTES", 1024)
    path = tmp_path / "big.npy"
    x = np.random.default_rng(1).standard_normal((200, 16)).astype(np.float32)
    np.save(path, x)
    arr = load_file(str(path))
    from smcheck.stores import NpyRows

    assert isinstance(arr, NpyRows) and not arr[0:3].flags.owndata  # a view of the mapping
    rep = run_rows(run_forward, arr, workers=1, chunk_rows=50, dtype="float32")
    assert rep.passed and rep.shape == [200, 16]


@pytest.mark.parametrize("command", ["forward", "log_softmax", "vjp", "jacobian"])
def test_identical_results_for_any_number_of_threads(command):
    """The engine's blocks run on threads: the report is the same bit for bit with 1 or 3
    (small blocks, so that a 40,000-entry input really is cut into many)."""
    import json

    import smcheck
    from smcheck import blocks

    x = np.random.default_rng(5).standard_normal((4, 10_000)) * 7
    if command == "jacobian":
        x = x[:1, :300]
    docs = []
    old = blocks.BLOCK
    try:
        blocks.BLOCK = 1 << 11
        for t in (1, 3):
            with blocks.using_threads(t):
                rep = smcheck.check(command, x, engine="dd", dtype="float64")
            docs.append(json.dumps(report_json(rep, "v")))
    finally:
        blocks.BLOCK = old
    assert docs[0] == docs[1]


def test_rows_per_chunk_bounds_the_entries_of_a_chunk():
    from smcheck.parallel import (CHUNK_ENTRIES, CHUNK_ENTRIES_MPMATH, CHUNK_ENTRIES_SLOW,
                                  rows_per_chunk)

    assert rows_per_chunk(4096) == 32
    assert rows_per_chunk(10 ** 6) == 1 and rows_per_chunk(0) == CHUNK_ENTRIES
    assert rows_per_chunk(256, dense=True) == 2 and rows_per_chunk(257, dense=True) == 1
    assert rows_per_chunk(16, small=True) == CHUNK_ENTRIES_MPMATH // 16
    assert rows_per_chunk(10 ** 4, slow=True) == CHUNK_ENTRIES_SLOW // 10 ** 4 == 3
    for n in (1, 7, 100, 4096, 5000):
        for dense in (False, True):
            r = rows_per_chunk(n, dense)
            per_row = n * (n if dense else 1)
            assert r * per_row <= max(CHUNK_ENTRIES, per_row) < (r + 1) * per_row


def test_default_chunks_give_the_report_of_one_chunk():
    x = np.random.default_rng(3).standard_normal((70, 4096)).astype(np.float32) * 8
    x[45, 17] = 300.0
    whole = run_rows(run_forward, x, workers=1, chunk_rows=70, dtype="float32")
    for workers in (1, 2):
        parts = run_rows(run_forward, x, workers=workers, dtype="float32")  # 3 chunks of <= 32
        assert json.dumps(report_json(parts, "t")) == json.dumps(report_json(whole, "t"))


def test_merged_loss_keeps_the_maxima_of_the_gradient_in_x():
    """The loss check's grad_x details are the maxima over every chunk, as for one chunk."""
    x = np.random.default_rng(8).standard_normal((40, 64)) * 6
    x[33, 5] = 90.0
    t = np.eye(64)[np.arange(40) % 64]
    whole = run_rows(run_loss, x, workers=1, chunk_rows=40, dtype="float32",
                     companions={"t": t})
    parts = run_rows(run_loss, x, workers=2, chunk_rows=6, dtype="float32",
                     companions={"t": t})
    gw, gp = whole.checks[0].details["grad_x"], parts.checks[0].details["grad_x"]
    assert gp == gw
    assert parts.passed == whole.passed


def _merge_cases():
    rng = np.random.default_rng(21)
    rows, n = 7, 6
    x = rng.standard_normal((rows, n)) * 4
    x[2, 1], x[5, 4] = 800.0, 900.0  # the naive formula overflows in two chunks
    x[4, 0] = -np.inf
    v = np.tile(np.arange(1.0, n + 1), (rows, 1))
    xz = np.zeros((rows, n))  # s uniform
    v_zero = np.tile([1.0, 2.0, 3.0, 4.0, 5.0, 3.0], (rows, 1))  # <v, s> = 3: z_2 = z_5 = 0
    t = np.ones((rows, n))
    t[::2, 2] = 0.0  # even rows: t = 0 where z = 0 (allowed), odd rows fail
    z = rng.random((rows, n))
    z[1, 3], z[5, 0], z[6, 2] = -0.5, 0.0, -1.0  # domain violations in three chunks
    return [
        ("forward naive", run_forward, x, {"impl": "naive"}),
        ("forward naive log float32", run_forward, x, {"impl": "naive", "log": True,
                                                       "dtype": "float32"}),
        ("forward stable float16", run_forward, x, {"dtype": "float16"}),
        ("vjp naive", run_vjp, x, {"impl": "naive", "companions": {"v": v}}),
        ("vjp stable", run_vjp, x, {}),
        ("jacobian naive", run_jacobian, x, {"impl": "naive"}),
        ("jacobian log float32", run_jacobian, x, {"log": True, "dtype": "float32"}),
        ("loss zero condition", run_loss, xz, {"companions": {"v": v_zero, "t": t}}),
        ("loss given z", run_loss, None, {"companions": {"z": z, "t": t}}),
        ("loss softmax", run_loss, x, {"companions": {"t": np.eye(n)[np.arange(rows) % n]}}),
    ]


@pytest.mark.parametrize("case", _merge_cases(), ids=lambda c: c[0])
@pytest.mark.parametrize("chunk_rows,workers", [(1, 1), (3, 1), (3, 2)])
def test_merged_chunks_give_the_report_of_one_chunk(case, chunk_rows, workers):
    """Counts, worst entries (ties in row order), detail lists, failure lines and words of a
    batch merged from chunks are those of one chunk holding every row."""
    _, fn, x, kw = case
    kw = dict(kw)
    comp = kw.pop("companions", {})
    if x is None:  # loss with a given z: the rows come from z
        x = np.zeros_like(comp["z"])
    one = run_rows(fn, x, workers=1, chunk_rows=x.shape[0], companions=comp, **kw)
    parts = run_rows(fn, x, workers=workers, chunk_rows=chunk_rows, companions=comp, **kw)
    a, b = report_json(one, "t"), report_json(parts, "t")
    for ca, cb in zip(a["checks"], b["checks"]):
        assert ca == cb, ca["name"]
    assert a == b


def test_cli_batch_on_workers_merges_counts_in_a_fresh_process(tmp_path):
    """The smcheck process itself runs no check when workers do (forked): the merge hooks of
    the derivative checks must still apply. Rows of 70,000 logits: one chunk each."""
    import subprocess
    import sys

    n, rows = 70_000, 3
    v = np.tile(np.arange(n, dtype=float), (rows, 1))  # <v, s> = (n - 1) / 2
    t = np.zeros((rows, n))
    t[:, 0] = 1.0  # z_0 = s_0 (0 - <v, s>) < 0 in every row
    t[1, 1] = 1.0
    for name, a in (("x", np.zeros((rows, n))), ("v", v), ("t", t)):
        np.save(tmp_path / f"{name}.npy", a)
    out = subprocess.run(
        [sys.executable, "-m", "smcheck", "loss", "--x-file", str(tmp_path / "x.npy"),
         "--v-file", str(tmp_path / "v.npy"), "--t-file", str(tmp_path / "t.npy"),
         "--workers", "2", "--json"], capture_output=True, text=True, cwd=tmp_path)
    doc = json.loads(out.stdout)
    domain = next(c for c in doc["checks"] if c["name"] == "domain")
    assert domain["domain_violations"] == [[0, 0], [1, 0], [1, 1], [2, 0]]
    assert domain["measured"].startswith("4 entries")
    assert domain["failures"][0].count("row ") == 4


# --- forked workers: what a worker raises, or dies of, reaches the caller ---------------------

needs_fork = pytest.mark.skipif(
    "fork" not in __import__("multiprocessing").get_all_start_methods(),
    reason="worker processes are forked only where there is fork")


class _Deadline:
    """Fails the test instead of hanging it, should waiting for the workers never end."""

    def __enter__(self):
        import signal

        def late(*_):
            raise AssertionError("the workers were not stopped within 60 s")

        self.old = signal.signal(signal.SIGALRM, late)
        signal.alarm(60)

    def __exit__(self, *exc):
        import signal

        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)


def _no_children_left():
    import os

    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def _failing_at(row, action):
    def fn(x, row_offset=0, **kw):
        if row_offset == row:
            action()
        return run_forward(x, row_offset=row_offset, **kw)
    return fn


class _Unpicklable(Exception):
    def __init__(self, a, b):  # pickle re-creates it with one argument: it cannot come back
        super().__init__(f"{a} and {b}")
        # nor by its __dict__, as tblib pickles exceptions once distributed is imported
        # (tests/test_cluster.py imports it into this process)
        self.lock = __import__("threading").Lock()


def _raise(exc):
    def go():
        raise exc
    return go


@needs_fork
@pytest.mark.parametrize("exc,kind,words", [
    (ValueError("chunk at row 64 is bad"), ValueError, "chunk at row 64 is bad"),
    (_Unpicklable("this", "that"), RuntimeError, "_Unpicklable: this and that")])
def test_an_exception_in_a_worker_is_raised_to_the_caller(exc, kind, words):
    with _Deadline(), pytest.raises(kind, match=words):
        run_rows(_failing_at(64, _raise(exc)), batch(), workers=2, chunk_rows=16,
                 dtype="float32")
    _no_children_left()


@needs_fork
def test_a_killed_worker_is_an_error_that_says_so():
    import os
    import signal

    from smcheck.exceptions import SmcheckError

    with _Deadline(), pytest.raises(SmcheckError, match=r"killed \(SIGKILL\).*fewer --workers"):
        run_rows(_failing_at(64, lambda: os.kill(os.getpid(), signal.SIGKILL)), batch(),
                 workers=2, chunk_rows=16, dtype="float32")
    _no_children_left()


@needs_fork
def test_a_worker_that_exits_quietly_is_not_a_silent_gap_in_the_report():
    import os

    with _Deadline(), pytest.raises(RuntimeError, match="before every chunk was checked"):
        run_rows(_failing_at(64, lambda: os._exit(0)), batch(), workers=2, chunk_rows=16,
                 dtype="float32")
    _no_children_left()


def test_reports_larger_than_a_pipe_come_back_whole():
    """keep_arrays sends each chunk's arrays back (MBs, past a pipe's 64 KB buffer)."""
    x = np.random.default_rng(3).standard_normal((96, 4096))
    a = run_rows(run_forward, x, workers=1, chunk_rows=32, keep_arrays=True, dtype="float32")
    b = run_rows(run_forward, x, workers=2, chunk_rows=32, keep_arrays=True, dtype="float32")
    assert a.arrays.keys() == b.arrays.keys() and a.arrays["ulp_err"].shape == (96, 4096)
    for k in a.arrays:
        np.testing.assert_array_equal(a.arrays[k], b.arrays[k])
    assert json.dumps(report_json(a, "t")) == json.dumps(report_json(b, "t"))


@pytest.mark.parametrize("chunk_rows", [1, 3, 16])
def test_a_failing_batch_lists_the_same_failures_however_it_is_chunked(chunk_rows):
    """Every row overflows: one chunk of all 40 rows names the first rows (in row order) where
    exp overflows; chunks of 1, 3 or 16 rows name the same ones, not each chunk's first."""
    x = np.random.default_rng(8).standard_normal((40, 64)) * 3 + 800.0
    one = run_rows(run_forward, x, workers=1, chunk_rows=40, impl="naive")
    parts = run_rows(run_forward, x, workers=2, chunk_rows=chunk_rows, impl="naive")
    lines = failure_lines(one.checks[0])
    assert [ln.split(":")[0] for ln in lines[1:6]] == [f"row {r}" for r in range(5)]
    assert lines[6].startswith("and 35 more rows where exp overflows")  # the rest, counted
    assert "(2560 entries in the 40 rows)" in lines[6]
    assert failure_lines(parts.checks[0]) == lines
    assert report_json(parts, "t") == report_json(one, "t")


def test_a_findings_total_counts_the_chunks_without_it_too():
    """"N of M entries": M is every entry of the batch, also where a chunk has no such
    entry (the chunks' totals were added only where the finding was: 130560 of 153088 here).
    The control is one chunk of every row."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 512)) * 6
    v = rng.standard_normal((300, 512))
    one = run_rows(run_vjp, x, workers=1, chunk_rows=300, companions={"v": v},
                   dtype="float32")
    parts = run_rows(run_vjp, x, workers=1, chunk_rows=16, companions={"v": v},
                     dtype="float32")
    found = [(c.name, f.kind, f.count, f.total) for c in one.checks for f in c.findings]
    assert found and all(total in (300 * 512, 300) for *_, total in found)
    assert [(c.name, f.kind, f.count, f.total) for c in parts.checks for f in c.findings] == found


def test_shift_invariance_maxima_are_the_worst_shifts_over_every_chunk():
    """shift_invariance's max errors are those of the shift that is worst over all rows, as
    one chunk has them, also where each chunk's own worst shift is another (row 0's worst
    shift here is not row 1's: chunks of one row mixed the two)."""
    x = np.random.default_rng(0).standard_normal((3, 2000)) * 5
    x[0, 7] = -np.inf
    x[1, :5] = -np.inf
    kw = {"log": True, "metric": "strict"}
    one = run_rows(run_forward, x, workers=1, chunk_rows=3, **kw).checks[2]
    parts = run_rows(run_forward, x, workers=1, chunk_rows=1, **kw).checks[2]
    assert parts.name == "shift_invariance"
    worst = next(s for s in one.details["shifts"] if s["shift"] == one.merge_data["worst_shift"])
    assert one.max_ulp == worst["max_ulp"]
    for key in ("max_abs_err", "max_rel_err", "max_ulp"):
        assert getattr(parts, key) == getattr(one, key)


def test_merged_loss_note_states_the_largest_gradient_error_of_every_chunk():
    """The loss's note "gradient in x: max N ULP" is the maximum over every row, not that of
    the chunk whose headline is worst (chunks of 64 rows said 16 where one chunk says 18.6)."""
    from smcheck.sentences import note_lines

    x = np.random.default_rng(0).standard_normal((300, 512)) * 3
    t = np.zeros((300, 512))
    t[:, 7] = 1.0
    one = run_rows(run_loss, x, workers=1, chunk_rows=300, companions={"t": t}, dtype="float32")
    parts = run_rows(run_loss, x, workers=1, chunk_rows=64, companions={"t": t}, dtype="float32")
    words = [note_lines(rep.checks[0]) for rep in (one, parts)]
    assert words[0] == words[1] and "gradient in x" in words[0][0]
    assert json.dumps(report_json(one, "t")) == json.dumps(report_json(parts, "t"))


@pytest.mark.parametrize("case", _merge_cases(), ids=lambda c: c[0])
@pytest.mark.parametrize("workers", [1, 2])
def test_reports_folded_as_they_come_give_the_report_of_one_chunk(case, workers, monkeypatch):
    """The leading chunks' reports are merged into one whenever more than FOLD are held (so a
    batch of many chunks holds a bounded number): folded after every second report, chunks of
    one row give the report of one chunk holding every row."""
    monkeypatch.setattr(parallel, "FOLD", 1)
    _, fn, x, kw = case
    kw = dict(kw)
    comp = kw.pop("companions", {})
    if x is None:
        x = np.zeros_like(comp["z"])
    one = run_rows(fn, x, workers=1, chunk_rows=x.shape[0], companions=comp, **kw)
    parts = run_rows(fn, x, workers=workers, chunk_rows=1, companions=comp, **kw)
    assert report_json(one, "t") == report_json(parts, "t")


def test_a_long_batch_holds_a_bounded_number_of_reports(monkeypatch):
    """500 chunks: never more than FOLD + 1 reports of leading rows held at once."""
    held = []
    real = parallel._Reports.add

    def add(self, rep, lo, hi):
        real(self, rep, lo, hi)
        held.append(len(self.head) + len(self.waiting))

    monkeypatch.setattr(parallel._Reports, "add", add)
    x = np.random.default_rng(2).standard_normal((500, 8))
    one = run_rows(run_forward, x, workers=1, chunk_rows=500, dtype="float32")
    parts = run_rows(run_forward, x, workers=1, chunk_rows=1, dtype="float32")
    assert max(held) <= parallel.FOLD + 1 and len(held) == 500
    assert report_json(one, "t") == report_json(parts, "t")


def test_forked_workers_give_torch_one_thread(tmp_path, monkeypatch):
    """Each forked worker runs torch on one thread (the workers are the parallelism): a
    callable that refuses to run on more passes on 2 workers over many chunks; in this process
    torch has more threads, so the same callable fails here (the control)."""
    torch = pytest.importorskip("torch")
    if torch.get_num_threads() < 2:
        pytest.skip("one core: torch has one thread anyway")
    (tmp_path / "threads_probe.py").write_text(
        "import numpy as np\nimport torch\n\n\n"
        "def sm(x):\n"
        "    if torch.get_num_threads() != 1:\n"
        "        raise RuntimeError(f'{torch.get_num_threads()} torch threads')\n"
        "    e = np.exp(x - np.max(x))\n"
        "    return e / np.sum(e)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    x = np.random.default_rng(3).standard_normal((40, 64))
    opts = Options(impl="threads_probe:sm")
    rep = check_rows("forward", x, opts, workers=2, chunk_rows=4)
    assert rep.passed
    with pytest.raises(Exception, match="torch threads"):
        check_rows("forward", x[:4], opts, workers=1)
