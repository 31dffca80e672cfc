"""Scale (issue 19): peak memory and the cost per entry from 10^5 to 10^8 entries, each
figure from a fresh ``smcheck`` process as a user runs it (interpreter, imports and reading
the input included; peak RSS is the process's own VmHWM).

    python benchmarks/scale.py               # everything (about 5 minutes on 2 cores)
    python benchmarks/scale.py --quick       # up to 10^7 entries
    python benchmarks/scale.py --dir /data   # where the input files go (default: a temp dir)
    python benchmarks/scale.py --only curve  # one part: curve, memory, mpmath or rowmem
    python benchmarks/scale.py --repeat 3    # each point of the curve the median of 3 runs

1. The cost per entry (ns) of ``forward``, ``vjp`` and ``loss`` in float32 on batches of rows
   of 10^4 logits, 10^5 to 10^8 entries, read from memory-mapped ``.npy`` files (v and t too),
   printed as a curve with its spread (largest / smallest: the done-when asks for < 2): the
   run's own time per entry (after the imports), and its marginal cost, the run's time less
   that of a run on one row (the parsing, first touches and JSON every run pays); with every
   core (a batch of one chunk, 10^5 entries of forward, is checked in one process), then with
   ``--workers 1`` (one process at every size). Each point's times are the medians of
   ``--repeat`` runs timed alone; its memory comes from one more run, whose process tree is
   sampled (the sampling takes part of a core: that run is not timed). With both curves,
   the spread with every core is taken apart into three measured factors (:func:`factors`):
   every core against one process at the smallest size, one process's own spread, and the
   speed-up of every core at the largest size.
2. Peak RSS of ``forward`` over 10^8 float32 entries: the ``.npy`` (10^4 rows), the same
   array as a zarr store (when zarr is installed), as a bfloat16 ``.safetensors`` tensor, and
   one row of 10^8 entries.
3. ``smcheck forward --random 1000000`` (the program, ``python -m smcheck``) against the
   per-element mpmath loop (50 digits), each in fresh processes, alternately, timed alone
   (memory not sampled); the medians' ratio (the done-when asks for >= 20).
4. Peak memory per entry of ``vjp``, ``loss`` and ``jacobian`` (probes), which hold a row
   whole: one row of 4 10^6 entries, with ``--workers 1`` and with every core
   (smcheck.memory's figures).

Not part of the test suite's pass/fail: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
N = 10 ** 4  # logits per row in the batches

#: a program reporting its own peak RSS (VmHWM) on stderr as it exits
_HWM = ("import atexit, sys\n"
        "def hwm():\n"
        "    with open('/proc/self/status') as f:\n"
        "        sys.stderr.write(next(l for l in f if l.startswith('VmHWM')))\n"
        "atexit.register(hwm)\n")
#: smcheck as its program runs (smcheck.cli.entry, which runs the exit handlers and leaves
#: without tearing the interpreter down), timing its run after the imports as well (RUN
#: seconds on stderr): the cost per entry without the fixed start-up. mpmath and numpy.random
#: are among the imports (vjp and loss load them for their reference and random directions).
SMCHECK = _HWM + """
import time
from smcheck.cli import entry
import mpmath, numpy.random, smcheck.run, smcheck.sources, smcheck.jsondoc, smcheck.report
t0 = time.perf_counter()
atexit.register(lambda: sys.stderr.write(f"RUN {time.perf_counter() - t0}\\n"))
sys.argv = ["smcheck", *sys.argv[1:]]
entry()
"""
#: the smcheck program itself (python -m smcheck: the console script's entry point), for the
#: comparison with the mpmath loop, which times what a user runs
PROGRAM = ["-m", "smcheck"]
MPMATH_LOOP = _HWM + """
import mpmath, numpy as np
from smcheck.inputs import random_input
x = random_input(int(sys.argv[1]), seed=0)
with mpmath.workdps(50):  # exp, fsum, divide per element, as a hand-written reference does
    a = mpmath.mpf(float(np.max(x)))
    e = [mpmath.exp(mpmath.mpf(float(v)) - a) for v in x]
    S = mpmath.fsum(e)
    s = [float(v / S) for v in e]
"""


def _tree_pss_kib(root: int) -> int:
    """The proportional set size (PSS: a page shared by k processes counts 1/k in each) of
    ``root`` and every process below it (smcheck's forked workers, Dask's), in KiB."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        except (OSError, StopIteration):
            pass
    return total


class Run:
    """A fresh interpreter's run: wall seconds, the run's own seconds after the imports (smcheck
    only), peak memory of the whole process tree (PSS sampled every 20 ms: workers included;
    with ``sample=False`` not sampled, for timings alone: the sampling reads /proc and takes
    part of a core from a run that uses both), the exit status."""

    def __init__(self, program: str | list, *args, sample: bool = True):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        t0 = time.perf_counter()
        prefix = program if isinstance(program, list) else ["-c", program]
        proc = subprocess.Popen([sys.executable, *prefix, *map(str, args)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        peak = 0
        while sample and proc.poll() is None:
            peak = max(peak, _tree_pss_kib(proc.pid))
            time.sleep(0.02)
        err = proc.communicate()[1]
        self.seconds = time.perf_counter() - t0
        self.code = proc.returncode
        run = [line.split()[1] for line in err.splitlines() if line.startswith("RUN")]
        self.run_seconds = float(run[-1]) if run else float("nan")
        hwm = [int(line.split()[1]) for line in err.splitlines() if line.startswith("VmHWM")]
        self.mib = max(peak, hwm[-1] if hwm else 0) / 1024
        if self.code not in (0, 1):
            tail = [line for line in err.splitlines() if not line.startswith(("VmHWM", "RUN"))]
            print(f"    exit {self.code}: {' '.join(tail)[-300:]}")


def fresh(program: str | list, *args, sample: bool = True) -> tuple[float, float, int]:
    """(seconds, peak memory in MiB, exit status) of ``program ARGS`` in a fresh interpreter."""
    r = Run(program, *args, sample=sample)
    return r.seconds, r.mib, r.code


def save(path: str, rows: int, n: int, kind: str) -> str:
    """A float32 (rows, n) .npy written a block of rows at a time (never whole in memory):
    logits (standard normal, scale 3), v (standard normal), or t (one-hot targets)."""
    if os.path.exists(path):
        return path
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, n))
    rng = np.random.default_rng({"x": 0, "v": 1, "t": 2}[kind])
    step = max(1, 2 ** 22 // n)
    for lo in range(0, rows, step):
        hi = min(lo + step, rows)
        if kind == "t":
            block = np.zeros((hi - lo, n), dtype=np.float32)
            block[np.arange(hi - lo), rng.integers(0, n, hi - lo)] = 1.0
        else:
            block = rng.standard_normal((hi - lo, n)).astype(np.float32) * (3 if kind == "x" else 1)
        out[lo:hi] = block
    out.flush()
    del out
    return path


def save_bf16_safetensors(path: str, src) -> None:
    """``src`` (2-D) as the bfloat16 tensor "x" of a .safetensors file, written a block of
    rows at a time: u64 header length, JSON header, little-endian 2-byte values."""
    import json

    import ml_dtypes

    rows, n = src.shape
    header = json.dumps({"x": {"dtype": "BF16", "shape": [rows, n],
                               "data_offsets": [0, rows * n * 2]}}).encode()
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header)
        for lo in range(0, rows, 256):
            block = np.asarray(src[lo:lo + 256]).astype(ml_dtypes.bfloat16)
            f.write(block.view(np.uint16).astype("<u2").tobytes())


class Point:
    """One point of the curve: the medians of ``repeat`` runs timed alone (``run_seconds``,
    ``seconds``), and the peak memory of one more run whose process tree is sampled (the
    sampling reads /proc, taking part of a core from a run that uses both: not timed)."""

    def __init__(self, *args, repeat: int = 1):
        timed = [Run(SMCHECK, *args, sample=False) for _ in range(max(1, repeat))]
        self.run_seconds = statistics.median(r.run_seconds for r in timed)
        self.seconds = statistics.median(r.seconds for r in timed)
        self.mib = Run(SMCHECK, *args).mib


def curve(folder: str, sizes: list[int], workers: int | None = None, repeat: int = 1) -> dict:
    print(f"1. cost per entry (ns), float32, rows of {N:,} logits, --workers "
          f"{workers or 'default (every core)'}, fresh processes, medians of {repeat} timed "
          "alone: the run after the imports (whole process in brackets), and peak memory "
          "(PSS, workers included, one more run)")
    print(f"   {'entries':>12}  {'forward':>16}  {'vjp':>16}  {'loss':>16}   MiB (fwd / vjp / loss)")
    table = {}
    for size in sizes:
        rows = size // N
        f = {k: save(os.path.join(folder, f"{k}_{rows}.npy"), rows, N, k) for k in "xvt"}
        common = ("--x-file", f["x"], "--dtype", "float32", "--json",
                  *(("--workers", workers) if workers else ()))
        runs = {"forward": Point("forward", *common, repeat=repeat),
                "vjp": Point("vjp", *common, "--v-file", f["v"], repeat=repeat),
                "loss": Point("loss", *common, "--t-file", f["t"], repeat=repeat)}
        table[size] = runs
        cells = "  ".join(f"{r.run_seconds / size * 1e9:>7.0f} [{r.seconds / size * 1e9:>6.0f}]"
                          for r in runs.values())
        mib = " / ".join(f"{r.mib:.0f}" for r in runs.values())
        print(f"   {size:>12,}  {cells}   {mib}", flush=True)
    # what a run costs whatever its size (parsing, threads, the first touches of memory, the
    # JSON): the run on one row of N logits, taken off each run's time
    x1 = save(os.path.join(folder, "x_1.npy"), 1, N, "x")
    v1, t1 = (save(os.path.join(folder, f"{k}_1.npy"), 1, N, k) for k in "vt")
    common = ("--x-file", x1, "--dtype", "float32", "--json",
              *(("--workers", workers) if workers else ()))
    fixed = {"forward": min(Run(SMCHECK, "forward", *common, sample=False).run_seconds
                            for _ in range(3)),
             "vjp": min(Run(SMCHECK, "vjp", *common, "--v-file", v1, sample=False).run_seconds
                        for _ in range(3)),
             "loss": min(Run(SMCHECK, "loss", *common, "--t-file", t1, sample=False).run_seconds
                         for _ in range(3))}
    print("   fixed cost of a run (one row, best of 3): " + ", ".join(
        f"{k} {v * 1e3:.0f} ms" for k, v in fixed.items()))
    print(f"   {'entries':>12}  marginal cost per entry, ns ((run - fixed) / entries)")
    for size in sizes:
        cells = "  ".join(f"{cmd} {(table[size][cmd].run_seconds - fixed[cmd]) / size * 1e9:>5.0f}"
                          for cmd in fixed)
        print(f"   {size:>12,}  {cells}")
    for cmd in ("forward", "vjp", "loss"):
        ns = [table[s][cmd].run_seconds / s for s in sizes]
        marginal = [(table[s][cmd].run_seconds - fixed[cmd]) / s for s in sizes]
        print(f"   {cmd}: largest / smallest cost per entry: of the run {max(ns) / min(ns):.2f}, "
              f"marginal {max(marginal) / min(marginal):.2f} (target < 2)")
    return table


def factors(every: dict, one: dict) -> None:
    """The spread with every core, taken apart (an identity of the measured medians): the
    smallest size with every core against one process there, the curve of one process, and
    the parallel speed-up at the largest size. Where the smallest size is one chunk (checked
    in one process whatever --workers says), the first factor is about 1 and the spread is
    at least the speed-up of the largest: a perfectly flat one-process curve on 2 cores
    still spreads by that much with every core."""
    small, large = min(every), max(every)
    print(f"   with every core, {small:,} against {large:,} entries, taken apart: (every core "
          f"against --workers 1 at {small:,}) x (--workers 1, {small:,} against {large:,}) x "
          f"(the speed-up of every core at {large:,})")
    for cmd in ("forward", "vjp", "loss"):
        e_s, e_l = every[small][cmd].run_seconds, every[large][cmd].run_seconds
        o_s, o_l = one[small][cmd].run_seconds, one[large][cmd].run_seconds
        print(f"   {cmd}: {(e_s / small) / (e_l / large):.2f} = {e_s / o_s:.2f} x "
              f"{(o_s / small) / (o_l / large):.2f} x {o_l / e_l:.2f}")


def memory(folder: str) -> None:
    print("2. peak RSS of forward over 10^8 float32 entries (fresh processes)")
    x = save(os.path.join(folder, f"x_{10 ** 4}.npy"), 10 ** 4, N, "x")
    t, rss, _ = fresh(SMCHECK, "forward", "--x-file", x, "--dtype", "float32", "--json")
    print(f"   .npy, 10^4 rows x 10^4: {rss:,.0f} MiB, {t:.1f} s, {t / 1e8 * 1e9:.0f} ns per entry")
    try:
        import zarr
    except ImportError:
        print("   zarr store: zarr is not installed (pip install 'smcheck[dask]')")
    else:
        store = os.path.join(folder, "x.zarr")
        if not os.path.exists(store):
            src = np.load(x, mmap_mode="r")
            z = zarr.open_array(store, mode="w", shape=src.shape, dtype=src.dtype,
                                chunks=(256, N))
            for lo in range(0, src.shape[0], 1024):
                z[lo:lo + 1024] = src[lo:lo + 1024]
        t, rss, _ = fresh(SMCHECK, "forward", "--x-file", store, "--dtype", "float32", "--json")
        print(f"   zarr store, chunks (256, 10^4): {rss:,.0f} MiB, {t:.1f} s, "
              f"{t / 1e8 * 1e9:.0f} ns per entry")
    st = os.path.join(folder, "x.safetensors")
    if not os.path.exists(st):
        save_bf16_safetensors(st, np.load(x, mmap_mode="r"))
    t, rss, _ = fresh(SMCHECK, "forward", "--x-file", st, "--dtype", "bfloat16", "--json")
    print(f"   .safetensors, the same as bfloat16 (10^4 x 10^4, 200 MB): {rss:,.0f} MiB, "
          f"{t:.1f} s, {t / 1e8 * 1e9:.0f} ns per entry")
    row = os.path.join(folder, "row.npy")
    if not os.path.exists(row):
        np.save(row, np.load(x, mmap_mode="r").reshape(1, -1))
    t, rss, code = fresh(SMCHECK, "forward", "--x-file", row, "--dtype", "float32", "--json")
    print(f"   .npy, one row of 10^8: exit {code}, {rss:,.0f} MiB, {t:.1f} s")


def rowmem(folder: str, n: int = 4 * 10 ** 6) -> None:
    """Peak memory per entry of the commands that hold a row whole (vjp, loss, jacobian's
    probes beyond --max-dense): one row of n
    float32 logits, --workers 1 (one process) and every core (the forked shift check beside),
    less a one-row run of 10^4 (the interpreter): smcheck.memory's HELD_BYTES and
    BESIDE_BYTES, which refuse a run that cannot fit, come from these."""
    print(f"4. peak memory per entry, one row of {n:,} entries held whole (fresh processes)")
    x = os.path.join(folder, f"row_{n}.npy")
    if not os.path.exists(x):
        rng = np.random.default_rng(0)
        np.save(x, (rng.standard_normal((1, n)) * 3).astype(np.float32))
        np.save(x + ".v.npy", rng.standard_normal((1, n)).astype(np.float32))
        t = np.zeros((1, n), dtype=np.float32)
        t[0, 5] = 1.0
        np.save(x + ".t.npy", t)
    x1 = save(os.path.join(folder, "x_1.npy"), 1, N, "x")
    kinds = {"vjp": ("vjp", "--v-file", x + ".v.npy"), "loss": ("loss", "--t-file", x + ".t.npy"),
             "loss, z = v J(x)": ("loss", "--t-file", x + ".t.npy", "--v-file", x + ".v.npy"),
             "jacobian (probes)": ("jacobian",)}
    for dtype in ("float32", "float64"):
        base = Run(SMCHECK, "forward", "--x-file", x1, "--dtype", dtype, "--json").mib
        for label, (cmd, *extra) in kinds.items():
            per = {}
            for workers in (1, None):
                r = Run(SMCHECK, cmd, "--x-file", x, "--dtype", dtype, "--json", *extra,
                        *(("--workers", workers) if workers else ()))
                per[workers] = (r.mib - base) * 2 ** 20 / n
            print(f"   {label:<18} {dtype}: {per[1]:5.0f} bytes an entry with --workers 1, "
                  f"{per[None]:5.0f} with every core", flush=True)


def versus_mpmath(repeat: int = 5) -> float:
    n = 10 ** 6
    print(f"3. smcheck forward --random {n:,} against the per-element mpmath loop, fresh "
          f"processes, {repeat} pairs")
    ours, loop = [], []
    for i in range(repeat):
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for which in order:
            if which == 0:
                ours.append(fresh(PROGRAM, "forward", "--random", n, "--json", sample=False)[0])
            else:
                loop.append(fresh(MPMATH_LOOP, n, sample=False)[0])
    a, b = statistics.median(ours), statistics.median(loop)
    print(f"   smcheck {a:.2f} s (runs {', '.join(f'{t:.2f}' for t in ours)}), mpmath loop "
          f"{b:.2f} s: {b / a:.1f}x (target >= 20x)")
    return b / a


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="up to 10^7 entries")
    p.add_argument("--dir", default=None, help="where the input files go")
    p.add_argument("--workers", type=int, default=None,
                   help="--workers for the curve (default: smcheck's, every core; then the "
                   "curve again with --workers 1, the cost per entry of one process)")
    p.add_argument("--only", choices=("curve", "memory", "mpmath", "rowmem"), default=None,
                   help="run one part")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs timed per point of the curve, the median taken (default 1)")
    a = p.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(ROOT, "smcheck")],
                   check=True)
    with tempfile.TemporaryDirectory(dir=a.dir) as folder:
        sizes = [10 ** 5, 10 ** 6, 10 ** 7] + ([] if a.quick else [10 ** 8])
        if a.only in (None, "curve"):
            every = curve(folder, sizes, a.workers, a.repeat)
            if a.workers is None:  # what one process costs an entry, with no parallel gain
                factors(every, curve(folder, sizes, 1, a.repeat))
        if a.only in (None, "memory") and not a.quick:
            memory(folder)
        if a.only in (None, "mpmath"):
            versus_mpmath()
        if a.only in (None, "rowmem"):
            rowmem(folder)


if __name__ == "__main__":
    main()
