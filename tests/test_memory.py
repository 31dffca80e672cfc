"""Peak memory: each pipeline holds a fixed number of arrays the size of its input, O(n).

Measured with tracemalloc, to which numpy reports every array it allocates, on one thread (the
blocks of two threads may overlap their temporaries differently from run to run). The counts
are in arrays of n float64 values; the bounds sit a little above what the pipelines hold now
(forward 18, forward float32 15, log-softmax 26, vjp 33 at n = 2^17), so that an array kept
alive by mistake fails here, and the count must not grow with n.
"""

from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest

from smcheck import beside, memory
from smcheck.blocks import using_threads
from smcheck.inputs import random_input
from smcheck.run import run_forward, run_jacobian, run_loss, run_vjp


def peak_arrays(fn, n: int, **kw) -> float:
    """The peak of traced memory during ``fn(x, **kw)`` for a random x of n entries, in
    arrays of n float64 values (x itself, allocated before, is not counted)."""
    x = random_input(n, seed=0, scale=3)
    fn(x[..., :1024], **kw)  # imports and tables, outside the measurement
    with using_threads(1):
        tracemalloc.start()
        try:
            fn(x, **kw)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return peak / (8 * n)


CASES = {
    "forward float64": (run_forward, {"engine": "dd"}, 21),
    "forward float32": (run_forward, {"dtype": "float32", "engine": "f64"}, 18),
    "forward log": (run_forward, {"engine": "dd", "log": True}, 29),
    "vjp": (run_vjp, {"engine": "dd"}, 36),
}


@pytest.mark.parametrize("name", list(CASES))
def test_peak_memory_is_a_fixed_number_of_input_sized_arrays(name):
    fn, kw, bound = CASES[name]
    small, large = peak_arrays(fn, 2 ** 16, **kw), peak_arrays(fn, 2 ** 17, **kw)
    assert large <= bound, f"{name}: peak of {large:.1f} arrays of n float64 (bound {bound})"
    # O(n): twice the entries, not more arrays of them (fixed-size tables weigh less)
    assert large <= small + 0.5, f"{name}: {small:.1f} arrays at n = 2^16, {large:.1f} at 2^17"


# --- the guard against runs that cannot fit (smcheck.memory) ------------------------------------


def _onehot(x):
    t = np.zeros(np.shape(x))
    t[..., 3] = 1.0
    return t


GUARDED = {
    "vjp": [(run_vjp, {})],
    # loss of softmax(x) and of z = v J(x): the figure covers both
    "loss": [(lambda x, **kw: run_loss(x, t=_onehot(x), **kw), {}),
             (lambda x, **kw: run_loss(x, t=_onehot(x), v=np.cos(np.arange(x.shape[-1])),
                                       **kw), {})],
    # beyond --max-dense: v^T J u on probe pairs, the command line's 4 and more
    "jacobian": [(run_jacobian, {"probes": 4}), (run_jacobian, {"probes": 12})],
}


@pytest.mark.parametrize("command", list(GUARDED))
def test_the_guards_bytes_an_entry_cover_what_the_pipeline_holds(command):
    """What the guard counts an entry is at least the peak numpy holds (a figure below it
    would let through a run the system then kills) and not far above it (a stale figure
    would refuse runs that fit), in every dtype."""
    n = 2 ** 17
    largest: dict[int, float] = {}  # the guard's figure -> the largest peak it covers
    for fn, kw in GUARDED[command]:
        measured = max(8 * peak_arrays(fn, n, engine="dd", dtype=dtype, **kw)
                       for dtype in ("float64", "float32", "bfloat16"))
        held = memory.held_bytes(command, n, probes=kw.get("probes", 4))
        assert measured <= held, (
            f"{command} {kw}: {measured:.0f} bytes an entry at the peak, the guard's {held}")
        largest[held] = max(largest.get(held, 0.0), measured)
    for held, measured in largest.items():
        assert held <= 1.25 * measured, f"{command}: the guard's {held}, the peak {measured:.0f}"
    # a dense Jacobian (rows of at most --max-dense) is chunked by its n^2 entries: no guard
    assert memory.held_bytes("jacobian", 2048) is None
    assert memory.held_bytes("forward", 10 ** 8) is None


def test_available_bytes_reads_this_system():
    avail = memory.available_bytes()
    if not os.path.exists("/proc/meminfo"):
        assert avail is None
        return
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    assert 0 < avail <= info["MemTotal"] + info.get("SwapTotal", 0)


@pytest.fixture
def scarce(monkeypatch):
    """A machine with ``limit`` bytes available (default 10 MB)."""

    def set_limit(limit: int = 10 ** 7):
        monkeypatch.setattr(memory, "available_bytes", lambda: limit)

    set_limit()
    return set_limit


def test_a_run_that_cannot_fit_is_refused_with_one_error_line(cli, scarce, tmp_path):
    # 10^5 entries of vjp need about 28 MB, of loss 47 MB, of jacobian's probes 60 MB
    np.save(tmp_path / "t.npy", _onehot(np.zeros(100000)))
    for argv in (["vjp", "--random", "100000"],
                 ["loss", "--random", "100000", "--t-file", str(tmp_path / "t.npy")],
                 ["jacobian", "--random", "100000"]):
        r = cli(*argv)
        assert r.code == 2, (argv, r.err)
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), r.err
        need = 100000 * memory.held_bytes(argv[0], 100000) / 1e6
        assert f"{argv[0]} would need about {need:.0f} MB" in lines[0], lines[0]
        assert "more than the 10 MB this machine has available" in lines[0], lines[0]
        assert r.out == ""


def test_the_guard_counts_every_worker_and_passes_what_fits(cli, scarce, tmp_path):
    from smcheck.parallel import rows_per_chunk

    n = 4096
    chunk = rows_per_chunk(n, slow=True)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((3 * chunk, n)))
    one = chunk * n * memory.HELD_BYTES["vjp"]  # what a worker holds: a chunk of rows
    args = ("vjp", "--x-file", str(tmp_path / "x.npy"), "--quiet", "--check")
    scarce(2 * one + 1)
    assert cli(*args, "--workers", "2").code == 0
    scarce(2 * one - 1)  # one worker fits, two do not
    r = cli(*args[:3], "--workers", "2")
    assert r.code == 2 and "in each of 2 processes" in r.err and "fewer --workers" in r.err
    assert cli(*args, "--workers", "1").code == 0
    scarce(one - 1)
    assert cli(*args, "--workers", "1").code == 2
    # forward checks a long row a segment at a time: it is not guarded
    scarce(1)
    assert cli("forward", "--random", "10000", "--quiet", "--check").code == 0


def test_the_forked_check_is_left_out_where_it_cannot_fit(scarce, monkeypatch):
    class Impl:
        fork_safe = True

    class Case:
        impl = Impl()

    monkeypatch.setattr(beside, "_spare", 1)
    size = 2 * beside.FORK_MIN
    scarce(10 ** 12)
    assert beside.can_fork(Case(), size)
    # a case of no known command: the largest figure
    scarce(int(max(memory.BESIDE_BYTES.values()) * size) - 1)
    assert not beside.can_fork(Case(), size)
    # each command's own figure
    for command, per in memory.BESIDE_BYTES.items():
        Case.command = command
        scarce(int(per * size) - 1)
        assert not beside.can_fork(Case(), size)
        scarce(int(per * size) + 1)
        assert beside.can_fork(Case(), size)
    # jacobian's probes: a share per probe pair
    Case.dense, Case.probes = False, 4
    scarce(int(memory.JAC_BESIDE_PROBE * 4 * size) - 1)
    assert not beside.can_fork(Case(), size)
    scarce(int(memory.JAC_BESIDE_PROBE * 4 * size) + 1)
    assert beside.can_fork(Case(), size)
