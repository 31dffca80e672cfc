"""A torch softmax kernel checked batched (one call on the whole batch, ``--batched --tensor
torch``) against the same kernel called row by row (``--tensor torch``), on a 2000 x 4096
float32 batch (issue 18's target: batched at least 5x faster).

    python benchmarks/batched_torch.py [rows] [n]

Two figures, each batched against row by row in the same run:

* the calls of the implementation under test, as smcheck makes them (in this process, with
  the CLI's memory setting; the user callable's ``softmax`` on the rows: conversion to
  tensors, the kernel, the results back to numpy), best of 3 after one warm-up: what
  ``--batched`` changes;
* the whole command in fresh ``smcheck`` processes (input, exact reference, every check,
  JSON): what a user waits for, with the reference's cost in both, so the ratio is smaller.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

KERNEL = '''
import torch

def softmax(x):
    return torch.softmax(x, dim=-1)
'''


def best_of(fn, repeat=3):
    fn()  # warm-up: torch's first call, the allocator
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def in_process(rows: int, n: int, path: str, cli_memory: bool) -> tuple[float, float]:
    from smcheck.dtypes import dtype_info
    from smcheck.impls import get_implementation
    from smcheck.options import Options
    from smcheck.process import keep_freed_memory

    if cli_memory:  # as the CLI does: freed memory is reused, not mapped and touched anew
        keep_freed_memory()

    info = dtype_info("float32")
    X = np.random.default_rng(0).normal(size=(rows, n)).astype(np.float32)
    base = get_implementation(f"{path}:softmax")
    per_row = base.for_options(Options(tensor="torch")).for_rows(np.arange(rows))
    batched = base.for_options(Options(tensor="torch", batched=True)).for_rows(np.arange(rows))
    a = per_row.softmax(X, info)
    b = batched.softmax(X, info)
    assert np.array_equal(a, b), "batched and row-by-row results differ"
    return best_of(lambda: per_row.softmax(X, info)), best_of(lambda: batched.softmax(X, info))


def fresh(rows: int, n: int, path: str, batched: bool) -> float:
    cmd = [os.path.join(os.path.dirname(sys.executable), "smcheck"), "forward", "--random",
           str(n), "--rows", str(rows), "--dtype", "float32", "--impl", f"{path}:softmax",
           "--tensor", "torch", "--json", "--workers", "1", "-o", os.devnull]
    t0 = time.perf_counter()
    subprocess.run(cmd + (["--batched"] if batched else []), check=True)
    return time.perf_counter() - t0


def calls(rows: int, n: int, path: str, cli_memory: bool) -> str:
    """The implementation's calls, measured in a process of their own (the memory setting is
    process-wide)."""
    out = subprocess.run([sys.executable, __file__, "--calls", str(rows), str(n), path,
                          str(int(cli_memory))], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def main(rows: int = 2000, n: int = 4096) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "kernel.py")
        with open(path, "w") as f:
            f.write(KERNEL)
        for cli_memory, where in ((True, "as the CLI runs"), (False, "as a library (API)")):
            t_rows, t_batch = map(float, calls(rows, n, path, cli_memory).split())
            print(f"implementation calls, {where}, {rows} x {n} float32, torch.softmax: row by "
                  f"row {t_rows:.3f} s, batched {t_batch:.3f} s: ratio {t_rows / t_batch:.1f} "
                  "(target >= 5)", flush=True)
        runs = {True: [], False: []}
        for _ in range(3):  # alternately, the machine's spells fall on both
            for b in (False, True):
                runs[b].append(fresh(rows, n, path, b))
        tr, tb = np.median(runs[False]), np.median(runs[True])
        print(f"whole command, fresh processes (median of 3): row by row {tr:.2f} s, batched "
              f"{tb:.2f} s: ratio {tr / tb:.2f} (both include smcheck's reference and checks)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--calls"]:
        r, c, kernel, mem = sys.argv[2:6]
        print(*in_process(int(r), int(c), kernel, bool(int(mem))))
    else:
        main(*[int(a) for a in sys.argv[1:3]])
