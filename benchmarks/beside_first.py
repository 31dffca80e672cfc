"""The shift check first in one process: the measurements behind ``smcheck.checks.run_checks``
running its BESIDE checks (shift_invariance) before the others where all run in one process.

    python benchmarks/beside_first.py          # about 2 minutes on 2 cores
    python benchmarks/beside_first.py 16       # 16 alternated pairs (default 12)

1. Peak traced memory (tracemalloc, to which numpy reports its arrays) of a forward run on one
   row of 10^6 float64 entries, ``--workers 1``: the shift check first, and in the table's
   order (the control: no BESIDE check, as ``tests/test_beside.py`` does on 2^18 entries).
2. Fresh ``smcheck`` processes, the run's time after the imports, the two orders alternated
   (which of a pair runs first alternates too), on float32 rows of 10^4 logits read from a
   ``.npy``: medians, and in how many pairs the shift check first was faster.

Not part of the test suite's pass/fail: timings depend on the machine.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import tracemalloc

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

#: the smcheck program, in the table's order where its first argument is "table"; its run's
#: time after the imports on stderr (RUN seconds)
PROGRAM = ("import atexit, sys, time\n"
           "import smcheck.checks as C\n"
           "from smcheck.cli import entry\n"
           "import mpmath, numpy.random, smcheck.run, smcheck.sources, smcheck.jsondoc\n"
           "if sys.argv[1] == 'table':\n"
           "    C.BESIDE = ()\n"
           "t0 = time.perf_counter()\n"
           "atexit.register(lambda: sys.stderr.write(f'RUN {time.perf_counter() - t0}\\n'))\n"
           "sys.argv = ['smcheck', *sys.argv[2:]]\n"
           "entry()\n")


def peaks() -> None:
    import smcheck
    import smcheck.checks as C
    from smcheck.inputs import random_input

    x = random_input(10 ** 6, seed=0)
    smcheck.check_forward(x[:1000], workers=1)  # imports and tables, outside the measurement
    out, first = {}, C.BESIDE
    for order, beside in (("shift check first", first), ("table's order", ())):
        C.BESIDE = beside
        tracemalloc.start()
        smcheck.check_forward(x, workers=1)
        out[order] = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
    C.BESIDE = first
    print("1. peak traced memory, forward on one row of 10^6 float64, --workers 1: " + ", ".join(
        f"{k} {v:.0f} MB" for k, v in out.items()))


def run_seconds(order: str, args: list[str]) -> float:
    p = subprocess.run([sys.executable, "-c", PROGRAM, order, *args], cwd=ROOT,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return float([line for line in p.stderr.splitlines() if line.startswith("RUN")][-1].split()[1])


def pairs(folder: str, pairs_: int) -> None:
    rng = np.random.default_rng(0)
    files = {}
    for name, rows in (("x10", 10), ("x100", 100)):
        files[name] = os.path.join(folder, f"{name}.npy")
        np.save(files[name], (rng.standard_normal((rows, 10 ** 4)) * 3).astype(np.float32))
    files["v10"] = os.path.join(folder, "v10.npy")
    np.save(files["v10"], rng.standard_normal((10, 10 ** 4)).astype(np.float32))
    t = np.zeros((10, 10 ** 4), dtype=np.float32)
    t[np.arange(10), rng.integers(0, 10 ** 4, 10)] = 1
    files["t10"] = os.path.join(folder, "t10.npy")
    np.save(files["t10"], t)
    common = ["--dtype", "float32", "--json"]
    cases = {"forward, 10 rows": ["forward", "--x-file", files["x10"], *common],
             "forward, 100 rows": ["forward", "--x-file", files["x100"], *common],
             "vjp, 10 rows": ["vjp", "--x-file", files["x10"], "--v-file", files["v10"], *common],
             "loss, 10 rows": ["loss", "--x-file", files["x10"], "--t-file", files["t10"],
                               *common]}
    print(f"2. fresh runs, time after the imports, {pairs_} alternated pairs: shift check "
          "first against the table's order (medians)")
    for label, args in cases.items():
        got = {"first": [], "table": []}
        for i in range(pairs_):
            for order in (("first", "table") if i % 2 == 0 else ("table", "first")):
                got[order].append(run_seconds(order, args))
        wins = sum(a < b for a, b in zip(got["first"], got["table"]))
        print(f"   {label:<18} {statistics.median(got['first']) * 1e3:6.1f} against "
              f"{statistics.median(got['table']) * 1e3:6.1f} ms (first faster in {wins} of "
              f"{pairs_})", flush=True)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    peaks()
    with tempfile.TemporaryDirectory() as folder:
        pairs(folder, n)


if __name__ == "__main__":
    main()
