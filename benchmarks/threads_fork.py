"""Where threads and the forked shift check pay: the measurements behind
``smcheck.parallel.THREADS_MIN`` (a chunk's blocks on threads from 2^22 entries of work) and
``smcheck.beside.FORK_MIN`` (shift_invariance in a forked process from 2^19 entries).

    python benchmarks/threads_fork.py          # about 2 minutes on 2 cores
    python benchmarks/threads_fork.py 9        # 9 alternating runs of each (default 5)

1. Threads: ``forward`` on one chunk in this process (warm), its blocks on 1 thread and on 2,
   alternately; medians. Below THREADS_MIN a run uses one thread whatever --workers says.
2. Fork: ``smcheck forward --x-file`` in fresh processes (the program), with the forked
   shift check allowed from any size and not at all, alternately; medians. The ratio is
   time without the fork / time with it (> 1: the fork pays).

Not part of the test suite's pass/fail: timings depend on the machine.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

#: the smcheck program with FORK_MIN set from its first argument
PROGRAM = ("import sys, smcheck.beside as b\n"
           "b.FORK_MIN = int(sys.argv[1])\n"
           "sys.argv = ['smcheck', *sys.argv[2:]]\n"
           "from smcheck.cli import entry\n"
           "entry()\n")


def threads(repeat: int) -> None:
    from smcheck.beside import spare_processes
    from smcheck.blocks import using_threads
    from smcheck.options import Options
    from smcheck.process import keep_freed_memory
    from smcheck.run import run_forward

    keep_freed_memory()
    rng = np.random.default_rng(0)
    cases = [("10 rows of 10^4, float32", rng.standard_normal((10, 10 ** 4)) * 3, "float32"),
             ("one row of 3 10^5, float64", rng.standard_normal((1, 3 * 10 ** 5)) * 3,
              "float64"),
             ("one row of 10^6, float64", rng.standard_normal((1, 10 ** 6)) * 3, "float64"),
             ("one row of 3 10^6, float64", rng.standard_normal((1, 3 * 10 ** 6)) * 3,
              "float64")]
    print("1. forward on one chunk, warm, its blocks on 1 thread and on 2 (medians of "
          f"{repeat}; > 1: the threads pay)")
    for label, x, dtype in cases:
        times = {1: [], 2: []}
        for t in (1, 2):  # warm-up
            with using_threads(t), spare_processes(0):
                run_forward(x, Options(dtype=dtype))
        for i in range(repeat):
            for t in ((1, 2) if i % 2 == 0 else (2, 1)):
                with using_threads(t), spare_processes(0):
                    t0 = time.perf_counter()
                    run_forward(x, Options(dtype=dtype))
                    times[t].append(time.perf_counter() - t0)
        a, b = statistics.median(times[1]), statistics.median(times[2])
        print(f"   {label:<28} 1 thread {a * 1e3:7.1f} ms, 2 threads {b * 1e3:7.1f} ms: "
              f"{a / b:.2f}x")


def fork(repeat: int) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    print(f"2. smcheck forward --x-file (float64, one row) in fresh processes, the shift check "
          f"forked or not (medians of {repeat}; > 1: the fork pays)")
    with tempfile.TemporaryDirectory() as folder:
        for n in (10 ** 5, 150_000, 300_000, 10 ** 6):
            path = os.path.join(folder, f"x{n}.npy")
            np.save(path, np.random.default_rng(1).standard_normal((1, n)) * 3)
            times = {"fork": [], "none": []}
            for i in range(repeat):
                for mode in (("fork", "none") if i % 2 == 0 else ("none", "fork")):
                    t0 = time.perf_counter()
                    subprocess.run([sys.executable, "-c", PROGRAM,
                                    "1" if mode == "fork" else str(2 ** 62), "forward",
                                    "--x-file", path, "--json"], env=env, check=True,
                                   stdout=subprocess.DEVNULL)
                    times[mode].append(time.perf_counter() - t0)
            a, b = statistics.median(times["none"]), statistics.median(times["fork"])
            print(f"   {n:>9,} entries: without {a * 1e3:6.0f} ms, forked {b * 1e3:6.0f} ms: "
                  f"{a / b:.2f}x")


def main() -> None:
    repeat = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(ROOT, "smcheck")],
                   check=True)
    threads(repeat)
    fork(repeat)


if __name__ == "__main__":
    main()
