"""--scheduler dask and tcp://HOST:PORT: the chunks of rows of a batch on a Dask cluster give
the JSON of a local run, text for text (failures, masked entries and undefined rows merged
too); tasks read their own rows (a .npy by its path, an array in memory by its chunk); a
worker's smcheck error is the local run's error line; an unreachable address or a missing
dask is one error line."""

import json
import os
import pickle
import socket
import subprocess
import sys
from functools import partial

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from smcheck import cluster, parallel  # noqa: E402
from smcheck.checks import merge_reports  # noqa: E402
from smcheck.inputs import load_file  # noqa: E402
from smcheck.options import Options  # noqa: E402
from smcheck.report import report_json  # noqa: E402
from smcheck.run import check_rows, run_forward  # noqa: E402
from smcheck.stores import NpyRows  # noqa: E402

ROWS, N = 600, 512  # 3 chunks of forward, vjp and loss; 2.4 MB: a memory-mapped .npy


#: a LocalCluster of two worker processes, in a process of its own (its workers, and the
#: resource tracker that starting them leaves, are not this process's children: the forked
#: pool's tests count those), until its stdin closes
SERVE = ("import logging, sys\n"
         "from distributed import LocalCluster\n"
         "from smcheck.cluster import QUIET_HTTP\n"
         "with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,\n"
         "                  silence_logs=logging.CRITICAL, **QUIET_HTTP) as c:\n"
         "    print(c.scheduler_address, flush=True)\n"
         "    sys.stdin.read()\n")


@pytest.fixture(scope="module")
def address():
    """One LocalCluster of two worker processes for the module: its tcp:// address."""
    here = os.path.dirname(os.path.abspath(__file__))  # its workers import OnDisk from here
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (here, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen([sys.executable, "-c", SERVE], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        addr = proc.stdout.readline().strip()
        assert addr.startswith("tcp://"), addr
        yield addr
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()


def hard_batch(rows, n, seed=0):
    """Normal logits with masked entries (-inf), undefined rows (all -inf, nan, +inf), and
    rows that overflow a naive exp (so --impl naive fails in more than one chunk)."""
    x = np.random.default_rng(seed).standard_normal((rows, n)) * 3
    x[3, : n // 2] = -np.inf  # masked half: defined
    x[5, :] = -np.inf  # fully masked: undefined
    x[rows // 2, 2] = np.nan  # undefined, in a middle chunk
    x[rows - 2, 0] = np.inf  # undefined, in the last chunk
    x[rows // 3, 3] = 1000.0  # exp overflows in float64
    x[rows - 7, 9] = 800.0
    x[rows - 9, :: 3] = -np.inf  # masked entries in the last chunk
    return x


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cluster")
    x = hard_batch(ROWS, N)
    paths = {"x": d / "x.npy", "v": d / "v.npy", "t": d / "t.npy", "jx": d / "jx.npy",
             "other": d / "other.npy", "bad": d / "bad_impl.py"}
    np.save(paths["x"], x)
    np.save(paths["v"], np.random.default_rng(1).standard_normal((ROWS, N)))
    np.save(paths["t"], np.eye(N)[np.arange(ROWS) % N])
    np.save(paths["jx"], hard_batch(120, 40, seed=2))  # 2 chunks of the Jacobian, in memory
    y = x.copy()
    y[ROWS - 20, 100] += 1.0  # the control: one entry of the last chunk differs
    np.save(paths["other"], y)
    paths["bad"].write_text(
        "import numpy as np\n\n\n"
        "def softmax(x):\n"
        "    if np.ptp(x[np.isfinite(x)]) > 500:  # the rows made to overflow\n"
        "        raise ValueError('row too wide')\n"
        "    e = np.exp(x - x.max())\n"
        "    return e / e.sum()\n")
    for k in ("x", "v", "t"):  # big enough that smcheck streams the file, not reads it
        assert isinstance(load_file(str(paths[k])), NpyRows)
    assert not isinstance(load_file(str(paths["jx"])), NpyRows)
    return {k: str(p) for k, p in paths.items()}


def both(cli, scheduler, *argv):
    """The same command with --scheduler local and with ``scheduler``: (local, cluster)."""
    local = cli(*argv, "--json", "--scheduler", "local", "--workers", "2")
    remote = cli(*argv, "--json", "--scheduler", scheduler, "--workers", "2")
    return local, remote


def same(local, remote):
    assert local.code == remote.code and local.err == remote.err == ""
    assert local.out == remote.out  # the whole JSON text
    return local.json()


def test_forward_json_identical_on_the_cluster_with_failures_merged(cli, files, address,
                                                                   monkeypatch):
    carried = []
    payload = cluster.payload
    monkeypatch.setattr(cluster, "payload", lambda a, src, lo, hi: carried.append(
        payload(a, src, lo, hi)) or carried[-1])
    local, remote = both(cli, address, "forward", files["x"],
                         "--impl", "naive", "--check")
    # the tasks named the file (a store pickles as its path), its 3 chunks each by their
    # rows: no data was sent
    assert len(carried) == 3 and all(isinstance(c, NpyRows) for c in carried)
    assert all(len(pickle.dumps(c)) < 1000 for c in carried)
    doc = same(local, remote)
    assert local.code == 1 and doc["passed"] is False  # naive overflows in two chunks
    assert [u["row"] for u in doc["undefined_rows"]] == [5, ROWS // 2, ROWS - 2]
    assert doc["shape"] == [ROWS, N]
    overflow = {tuple(i) for i in doc["overflow"]["overflow_indices"]}
    assert {(ROWS // 3, 3), (ROWS - 7, 9)} <= overflow


def test_vjp_with_v_from_a_mapped_file(cli, files, address):
    doc = same(*both(cli, address, "vjp", files["x"], "--v-file", files["v"], "--dtype",
                     "float32"))
    assert doc["shape"] == [ROWS, N] and len(doc["undefined_rows"]) == 3


def test_loss_with_targets_from_a_mapped_file(cli, files, address):
    doc = same(*both(cli, address, "loss", files["x"], "--t-file", files["t"], "--impl",
                     "naive"))
    assert doc["passed"] is False


def test_jacobian_of_an_array_in_memory(cli, files, address):
    doc = same(*both(cli, address, "jacobian", files["jx"], "--impl", "naive"))
    assert doc["passed"] is False and [u["row"] for u in doc["undefined_rows"]] == [5, 60, 118]


def test_scheduler_dask_starts_its_own_cluster(cli, files):
    """In a fresh smcheck process, as a user runs it (its cluster's processes are that
    process's children, not this one's)."""
    argv = ("forward", files["x"], "--dtype", "float32", "--log", "--json")
    local = cli(*argv)
    remote = subprocess.run([sys.executable, "-m", "smcheck", *argv, "--scheduler", "dask",
                             "--workers", "2"], capture_output=True, text=True, timeout=300)
    assert (remote.returncode, remote.stderr) == (local.code, local.err) == (0, "")
    assert remote.stdout == local.out
    assert local.json()["shape"] == [ROWS, N]


def test_control_a_differing_input_gives_different_json(cli, files, address):
    a = cli("forward", files["x"], "--json", "--scheduler", address)
    b = cli("forward", files["other"], "--json", "--scheduler", address.split("://")[1])
    assert a.code == b.code == 0 and a.out != b.out


def test_a_workers_smcheck_error_is_the_local_error_line(cli, files, address):
    argv = ("forward", files["x"], "--impl", f"{files['bad']}:softmax", "--json")
    local = cli(*argv, "--workers", "2")
    remote = cli(*argv, "--scheduler", address)
    assert local.code == remote.code == 2 and local.out == remote.out == ""
    assert remote.err == local.err == (f"error: --impl {files['bad']}:softmax raised "
                                       f"ValueError on row {ROWS // 3}: row too wide\n")


def test_smcheck_errors_pickle_across():
    """By plain pickle, in a process without distributed (which, imported, makes tblib
    pickle every exception, as it is in this one)."""
    code = ("import pickle, sys\n"
            "from smcheck.exceptions import ImplementationError, InputError\n"
            "for exc in (ImplementationError('--impl f raised ValueError on row 3: no'),\n"
            "            InputError('--v must be finite')):\n"
            "    back = pickle.loads(pickle.dumps(exc))\n"
            "    assert type(back) is type(exc) and str(back) == str(exc)\n"
            "assert 'distributed' not in sys.modules\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout == "ok\n", out.stderr


def test_an_unreachable_address_is_one_error_line(cli, files, monkeypatch):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", 1.0)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = cli("forward", files["x"], "--scheduler", f"tcp://127.0.0.1:{port}")
    assert r.code == 2 and r.out == ""
    assert r.err.startswith(f"error: --scheduler tcp://127.0.0.1:{port}: no Dask scheduler "
                            "reached there") and r.err.count("\n") == 1


def test_a_malformed_scheduler_is_one_error_line(cli, files):
    r = cli("forward", files["x"], "--scheduler", "nowhere")
    assert (r.code, r.err) == (2, "error: --scheduler nowhere: use local, dask, or the address "
                                  "of a Dask scheduler (tcp://HOST:PORT)\n")


def test_without_dask_distributed_one_error_line(cli, files, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed: ImportError
    r = cli("forward", files["x"], "--scheduler", "dask")
    assert (r.code, r.err) == (2, "error: --scheduler dask needs dask.distributed: pip install "
                                  "'smcheck[dask]'\n")
    assert cli("forward", files["x"], "--json").code == 0  # local needs no dask


def test_a_device_runs_in_this_process_only(cli, files):
    r = cli("forward", files["x"], "--device", "cuda", "--scheduler", "dask")
    assert (r.code, r.err) == (2, "error: --device cuda runs in this process: use --scheduler "
                                  "local, not dask\n")


# --- what a task carries ---------------------------------------------------------------------

def test_a_mapped_view_travels_as_its_place_in_the_file(files):
    """A memmap a caller of the Python API passes (the CLI reads files as stores)."""
    mm = np.load(files["x"], mmap_mode="r")
    for view in (mm, mm[37:245], mm.reshape(ROWS * 2, N // 2)[10:]):
        src = cluster.source(view)
        assert isinstance(src, cluster.Mapped) and len(pickle.dumps(src)) < 1000
        np.testing.assert_array_equal(cluster.rows_of(src, 3, 9), np.asarray(view[3:9]))
    strided = mm[:, ::2]  # not one run of the file: cut per task like an array in memory
    assert cluster.source(strided) is None
    cow = np.load(files["x"], mmap_mode="c")  # copy-on-write: its changes are not the file's
    cow[0, 0] = 7.0
    assert cluster.source(cow) is None


def test_an_array_in_memory_travels_one_chunk_a_task():
    x = np.arange(40.0).reshape(10, 4)
    src = cluster.source(x)
    p = cluster.payload(x, src, 2, 5)
    assert isinstance(p, cluster.Rows) and p.array.shape == (3, 4)
    np.testing.assert_array_equal(cluster.rows_of(p, 2, 5), x[2:5])
    v = np.ones(4)  # a vector for every row travels whole
    assert cluster.payload(v, cluster.source(v), 2, 5) is v


class OnDisk:
    """An array-like that pickles by its path (as a store of smcheck.stores would)."""

    def __init__(self, path):
        self.path = path
        arr = np.load(path, mmap_mode="r")
        self.shape, self.ndim, self.dtype = arr.shape, arr.ndim, arr.dtype

    def __getitem__(self, key):
        return np.load(self.path, mmap_mode="r")[key]

    def __reduce__(self):
        return OnDisk, (self.path,)


def test_an_array_like_travels_as_it_is_and_is_read_on_the_workers(files, address):
    lazy = OnDisk(files["x"])
    assert cluster.source(lazy) is lazy and len(pickle.dumps(lazy)) < 1000
    fn = partial(run_forward, options=Options(impl="naive"))
    kw = dict(chunk_rows=256, merge=lambda r, s: merge_reports(r, s, 10))
    there = parallel.run_rows(fn, lazy, scheduler=address, **kw)
    here = parallel.run_rows(fn, np.load(files["x"]), workers=1, **kw)
    assert json.dumps(report_json(there, "t")) == json.dumps(report_json(here, "t"))


def test_api_and_progress_on_the_cluster(files, address):
    import smcheck

    x, v = np.load(files["x"])[:300], np.load(files["v"])[:300]
    # the same chunks here: a finding's "total" counts only the chunks that have it (as
    # --workers does; one chunk of all the rows counts them all)
    local = check_rows("vjp", x, Options(dtype="float32"), companions={"v": v}, workers=2)
    remote = smcheck.check_vjp(x, v, dtype="float32", scheduler=address)
    assert json.dumps(report_json(local, "t")) == json.dumps(report_json(remote, "t"))
    ticks = []
    rep = check_rows("forward", x, Options(), scheduler=address,
                     progress=lambda k, total: ticks.append((k, total)))
    assert rep.shape == [300, N]
    assert sorted(k for k, _ in ticks) == [44 * N, 256 * N] and {t for _, t in ticks} == {300 * N}


def test_a_relative_path_reaches_workers_in_another_directory(cli, files, address,
                                                             monkeypatch, tmp_path):
    """The cluster's workers run where the module started them; the run names its store
    relative to a directory of its own: the store travels by its absolute path."""
    import shutil

    shutil.copy(files["x"], tmp_path / "x.npy")
    monkeypatch.chdir(tmp_path)
    local, remote = both(cli, address, "forward", "--x-file", "x.npy")
    same(local, remote)


def test_a_store_a_worker_cannot_read_is_one_error_line(files, address, tmp_path):
    """The store is opened where the run starts, then its file goes away: the workers' read
    is the run's one error (an InputError), not a task that fails to load."""
    import shutil

    from smcheck.exceptions import InputError

    shutil.copy(files["x"], tmp_path / "x.npy")
    store = load_file(str(tmp_path / "x.npy"))
    assert isinstance(store, NpyRows)
    os.remove(tmp_path / "x.npy")
    with pytest.raises(InputError) as e:
        check_rows("forward", store, Options(), scheduler=address)
    assert "a Dask worker must see the same path" in str(e.value)


@pytest.fixture
def silent_server():
    """A TCP server that takes connections and answers nothing (a web server waiting for a
    request line), or, with ``answer``, answers bytes that are not Dask's."""
    import threading

    def serve(answer: bytes | None):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        held = []

        def loop():
            while True:
                try:
                    conn, _ = s.accept()
                except OSError:
                    return
                held.append(conn)
                if answer is not None:
                    conn.sendall(answer)

        threading.Thread(target=loop, daemon=True).start()
        servers.append((s, held))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"

    servers: list = []
    yield serve
    for s, held in servers:
        s.close()
        for c in held:
            c.close()


@pytest.mark.parametrize("answer,why", [
    (None, "no answer as a Dask scheduler within 1 s"),
    (b"HTTP/1.0 400 Bad request\r\n\r\n" * 4, "its answer is not Dask's")])
def test_a_server_that_is_not_a_dask_scheduler_is_one_error_line(cli, files, monkeypatch,
                                                                  silent_server, answer, why):
    """distributed's Client waits for the handshake's answer without a limit (the run hung),
    and read an HTTP answer as a frame length (out of memory): the handshake is exchanged
    first under the connection timeout, and each is one error line saying which."""
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", 1.0)
    addr = silent_server(answer)
    r = cli("forward", files["x"], "--scheduler", addr)
    assert (r.code, r.out) == (2, "")
    assert r.err == f"error: --scheduler {addr}: no Dask scheduler reached there ({why})\n"


def test_a_scheduler_without_workers_is_one_error_line(cli, files, monkeypatch):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", 1.0)
    with distributed.LocalCluster(n_workers=0, processes=False, **cluster.QUIET_HTTP) as c:
        r = cli("forward", files["x"], "--scheduler", c.scheduler_address)
    assert (r.code, r.out) == (2, "")
    assert r.err == (f"error: --scheduler {c.scheduler_address}: the Dask scheduler there has "
                     "no workers (none joined within 1 s)\n")


def test_a_task_lost_to_the_cluster_is_one_line_and_a_bug_stays_a_bug():
    from distributed.client import FutureCancelledError

    lost = cluster._cluster_failed(
        "tcp://h:1", FutureCancelledError("k", reason="scheduler-connection-lost"), distributed)
    assert str(lost).startswith("--scheduler tcp://h:1: the cluster failed during the run "
                                "(FutureCancelledError: ")
    assert cluster._cluster_failed("tcp://h:1", ValueError("a bug"), distributed) is None
    assert "could not load a task" in str(cluster._cluster_failed(
        "tcp://h:1", RuntimeError("Error during deserialization of the task graph"),
        distributed))
