"""smcheck benchmarks: each workload next to its baseline, in one run, as ratios.

    python benchmarks/run.py            # all workloads
    python benchmarks/run.py forward    # one of: forward jacobian vjp batch startup

Not part of the test suite's pass/fail: timings depend on the machine. Each line prints the
workload, the baseline, both times, the ratio and the target from the performance issue.
forward, jacobian and vjp run the command itself (``smcheck ... --json`` in this process, so
input, reference, checks and JSON are all timed), once on a small input first (imports,
tables, thread pool), as the baselines run after smcheck has imported numpy and mpmath;
then once more in a fresh ``smcheck`` process, for the time and peak RSS a user sees. The
batch row runs fresh processes only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def timed(fn, repeat=1):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


#: smcheck's workloads: best of this many runs (as timeit does); the first, which also pays
#: for first touching the process's memory, is printed beside it
REPEAT = 3
#: the batch row's pairs of fresh processes (1 worker, 2 workers) of a few seconds each
BATCH_REPEAT = 9


def timed_first(fn):
    """(best of REPEAT, first, result)."""
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    best, out = timed(fn, REPEAT - 1)
    return min(best, first), first, out


def row(name, base_name, t, tb, ratio, target, extra=""):
    line = (f"{name:<34} {t:9.3f} s | {base_name:<40} {tb:9.3f} s | ratio {ratio:8.2f} | "
            f"target {target}{(' | ' + extra) if extra else ''}")
    print(line, flush=True)
    return {"workload": name, "seconds": t, "baseline": base_name, "baseline_seconds": tb,
            "ratio": ratio, "target": target, "extra": extra}


#: the smcheck program, reporting its own peak RSS (VmHWM) on stderr as it exits: a child's
#: rusage would include this process's memory at the fork
_PROGRAM = ("import atexit, sys\n"
            "def hwm():\n"
            "    with open('/proc/self/status') as f:\n"
            "        sys.stderr.write(next(l for l in f if l.startswith('VmHWM')))\n"
            "atexit.register(hwm)\n"
            "sys.argv = ['smcheck', *sys.argv[1:]]\n"
            "from smcheck.cli import entry\n"
            "entry()\n")


def fresh(*args) -> tuple[float, float]:
    """``smcheck ARGS --json`` in a fresh process, as a user runs it: (seconds, peak RSS in
    MiB, interpreter and imports included; nan where there is no /proc)."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _PROGRAM, *map(str, args), "--json"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         check=True, cwd=os.path.dirname(HERE), timeout=600)
    seconds = time.perf_counter() - t0
    kb = [line.split()[1] for line in out.stderr.splitlines() if line.startswith("VmHWM")]
    return seconds, (int(kb[0]) / 1024 if kb else float("nan"))


def mpmath_loop(x, dps=50):
    """The baseline reference: exp, fsum, divide per element in mpmath at 50 digits."""
    import mpmath

    with mpmath.workdps(dps):
        a = mpmath.mpf(float(np.max(x)))
        e = [mpmath.exp(mpmath.mpf(float(v)) - a) for v in x]
        S = mpmath.fsum(e)
        return [float(v / S) for v in e]


def cli(*args) -> dict:
    """``smcheck ARGS --json`` in this process (the command end to end: input, reference,
    checks, JSON); its document."""
    import contextlib
    import io

    from smcheck.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            main([*map(str, args), "--json"])
        except SystemExit as exc:
            assert exc.code in (0, None), exc.code
    return json.loads(buf.getvalue())


def bench_forward():
    from smcheck.inputs import random_input

    n = 10 ** 6
    args = ("forward", "--random", n, "--scale", 3, "--seed", 0)
    cli("forward", "--random", 5000)  # warm-up: imports, tables, threads
    t, first, doc = timed_first(lambda: cli(*args))
    tb, ref = timed(lambda: mpmath_loop(random_input(n, seed=0, scale=3)))
    assert doc["passed"]
    ft, frss = fresh(*args)
    return row("forward n=1e6 float64 (end to end)", "per-element mpmath loop (50 digits)",
               t, tb, tb / t, ">= 20x", f"first run {first:.3f} s ({tb / first:.1f}x); "
               + doc["reference_engine"].split(",")[0] + f"; a fresh smcheck process: {ft:.3f} s, "
               f"peak RSS {frss:.0f} MiB")


def bench_jacobian():
    import torch

    from smcheck.inputs import random_input

    n = 2048
    cli("jacobian", "--random", 100)  # warm-up
    t, first, doc = timed_first(lambda: cli("jacobian", "--random", n, "--seed", 1))
    x = random_input(n, seed=1)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tb, ok = timed(lambda: torch.autograd.gradcheck(lambda v: torch.softmax(v, -1), (xt,),
                                                    fast_mode=False))
    assert doc["passed"] and ok
    fd = next(c for c in doc["checks"] if c["name"] == "finite_difference")
    ft, rss = fresh("jacobian", "--random", n, "--seed", 1)
    return row("jacobian n=2048 float64 (ref + FD)", "torch.autograd.gradcheck (slow mode)", t,
               tb, tb / t, "> 1x (faster)", f"first run {first:.3f} s ({tb / first:.2f}x); FD "
               f"error bound {fd['fd']['max_fd_error_bound']:.1e}; a fresh smcheck process: {ft:.3f} s, "
               f"peak RSS {rss:.0f} MiB")


def bench_vjp():
    from smcheck.checks.fd import row_rng
    from smcheck.inputs import random_input

    n = 10 ** 6
    x = random_input(n, seed=2, scale=3)
    v = row_rng(2, 1, 0).standard_normal(n)  # the v that `vjp --seed 2` draws for row 0

    def numpy_vjp():
        e = np.exp(x - x.max())
        s = e / e.sum()
        return s * (v - np.dot(v, s))

    tb, _ = timed(numpy_vjp, repeat=5)
    cli("vjp", "--random", 5000)  # warm-up
    t, first, doc = timed_first(lambda: cli("vjp", "--random", n, "--scale", 3, "--seed", 2))
    assert doc["passed"]
    # memory as a user's process has it (this one holds the other rows' data too): O(n) is
    # the growth from n = 10^5 to 10^6, per entry
    ft, rss = fresh("vjp", "--random", n, "--scale", 3, "--seed", 2)
    _, rss5 = fresh("vjp", "--random", n // 10, "--scale", 3, "--seed", 2)
    per_entry = (rss - rss5) * 2 ** 20 / (n - n // 10)
    return row("vjp n=1e6 float64", "numpy computing the VJP itself", t, tb, t / tb,
               "<= 50x numpy", f"first run {first:.3f} s ({first / tb:.0f}x); a fresh smcheck "
               f"process: {ft:.3f} s, peak RSS {rss:.0f} MiB (n = 1e5: {rss5:.0f} MiB; "
               f"{per_entry:.0f} bytes an entry)")


def bench_batch():
    """Two fresh ``smcheck forward`` processes on a 2000 x 4096 float32 file, --workers 1 and
    --workers 2: what a user runs (each pays its own start-up and first-touch costs)."""
    import tempfile

    x = np.random.default_rng(4).standard_normal((2000, 4096)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "batch.npy")
        np.save(path, x)

        def run(workers):
            out = subprocess.run([sys.executable, "-m", "smcheck", "forward", "--x-file", path,
                                  "--dtype", "float32", "--workers", str(workers), "--json"],
                                 capture_output=True, check=True, cwd=os.path.dirname(HERE),
                                 timeout=600)
            return out.stdout

        # back-to-back pairs, the order turned every other pair (1 2, 2 1, 1 2, ...): a pair's
        # two runs share the machine's spell, and a drift within it does not favour either
        t1, t2, a, b = [], [], None, None
        for k in range(BATCH_REPEAT):
            for w in ((1, 2) if k % 2 == 0 else (2, 1)):
                d, out = timed(lambda w=w: run(w))
                if w == 1:
                    t1.append(d)
                    a = out
                else:
                    t2.append(d)
                    b = out
    same = a == b
    pairs = np.array(t1) / np.array(t2)
    paired = float(np.median(pairs))
    med = float(np.median(t1) / np.median(t2))
    ceiling = machine_ceiling()
    # the ratio: the median of the pairs' ratios. The ratio of the two fastest runs compares
    # the luckiest run of each kind, which may come from different spells of the machine
    return row("batch 2000x4096 float32, 2 workers", "the same with 1 worker",
               float(np.median(t2)), float(np.median(t1)), paired, ">= 1.7x",
               f"identical JSON: {same}; fresh processes, start-up included; median of "
               f"{BATCH_REPEAT} back-to-back pairs (pairs {pairs.min():.2f}x-{pairs.max():.2f}x; "
               f"ratio of the medians {med:.2f}x, of the bests {min(t1) / min(t2):.2f}x); this "
               f"machine's own ceiling: {ceiling}")


#: a fixed pure-Python loop (no memory traffic, no numpy): what two cores give two processes
SPIN = "s = 0\nfor i in range(4_000_000):\n    s += i * i"


def machine_ceiling(repeat=3) -> str:
    """Two copies of a CPU-bound loop side by side against one copy after the other, 3 times:
    what the machine's two cores deliver to two processes right now (2.00x on two idle cores)."""
    cmd = [sys.executable, "-c", SPIN]
    ratios = []
    for _ in range(repeat):
        one, _ = timed(lambda: subprocess.run(cmd, check=True))

        def pair():
            procs = [subprocess.Popen(cmd) for _ in range(2)]
            for p in procs:
                p.wait()

        two, _ = timed(pair)
        ratios.append(2 * one / two)
    return (f"2 CPU-bound processes side by side ran {min(ratios):.2f}x-{max(ratios):.2f}x as "
            f"fast as one after the other")


def bench_startup():
    def run(args):
        return subprocess.run([sys.executable, *args], capture_output=True, check=True)

    tb, _ = timed(lambda: run(["-c", "pass"]), repeat=5)
    t, _ = timed(lambda: run(["-m", "smcheck", "--version"]), repeat=5)
    th, _ = timed(lambda: run(["-m", "smcheck", "--help"]), repeat=5)
    mods = run(["-c", "import sys; from smcheck.cli import main\ntry: main(['--help'])\n"
                "except SystemExit: pass\nprint(sorted(m for m in ('numpy','mpmath','rich','torch','jax')"
                " if m in sys.modules), file=sys.stderr)"]).stderr.decode().strip()
    return row("smcheck --version (--help)", "python -c pass", t, tb, t - tb,
               "start-up < 0.25 s", f"--help {th:.3f} s; heavy modules loaded by --help: {mods}")


BENCHES = {"forward": bench_forward, "jacobian": bench_jacobian, "vjp": bench_vjp,
           "batch": bench_batch, "startup": bench_startup}

if __name__ == "__main__":
    import platform

    names = sys.argv[1:] or list(BENCHES)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, numpy {np.__version__}")
    print("(startup row: 'ratio' is the extra start-up time in seconds over python -c pass)")
    results = [BENCHES[n]() for n in names]
    with open(os.path.join(HERE, "last_run.json"), "w") as fh:
        json.dump(results, fh, indent=2)
