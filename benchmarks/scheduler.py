"""The schedulers of chunks of rows, side by side: ``smcheck forward`` on a 2000 x 4096 float32
batch saved as .npy (memory-mapped), in fresh processes, as a user runs it:

- ``--scheduler local --workers 2``: today's forked pool;
- ``--scheduler local --workers 1``: one process;
- ``--scheduler dask --workers 2``: a Dask LocalCluster of two processes, started and closed
  by the run;
- ``--scheduler tcp://...``: the same cluster already running (started here once, before the
  runs): what a run costs without the cluster's start.

    python benchmarks/scheduler.py [REPEAT]

Each line: the median wall time of REPEAT runs (the order of the schedulers turned each
round, so that a drift of the machine favours none), entries/s, and the peak RSS of the
smcheck process and of its largest worker process (the kernel's high-water marks: the
process's own VmHWM, and RUSAGE_CHILDREN, the largest child reaped before it exited; the
tcp:// cluster's workers are not its children). Then whether every scheduler's JSON equals
the forked pool's, and the ratio forked pool / dask. Not part of the test suite: timings
depend on the machine (and on what else runs on it).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

ROWS, N = 2000, 4096
REPEAT = int(sys.argv[1]) if len(sys.argv) > 1 else 5

#: smcheck, reporting as it exits its own peak RSS and its largest reaped child's (kB)
_PROGRAM = ("import atexit, resource, sys\n"
            "def hwm():\n"
            "    with open('/proc/self/status') as f:\n"
            "        own = next(l for l in f if l.startswith('VmHWM')).split()[1]\n"
            "    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
            "    sys.stderr.write(f'HWM {own} {kids}\\n')\n"
            "atexit.register(hwm)\n"
            "sys.argv = ['smcheck', *sys.argv[1:]]\n"
            "from smcheck.cli import entry\n"
            "if __name__ == '__main__':\n"
            "    entry()\n")


def fresh(path, *args):
    """``smcheck forward PATH --dtype float32 ARGS --json`` in a fresh process: (seconds,
    own peak RSS MiB, largest child's MiB, stdout)."""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _PROGRAM, "forward", path, "--dtype", "float32",
                          *map(str, args), "--json"], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=600)
    seconds = time.perf_counter() - t0
    if out.returncode:
        raise SystemExit(f"smcheck {' '.join(args)} exited {out.returncode}: {out.stderr}")
    hwm = [line.split() for line in out.stderr.splitlines() if line.startswith("HWM ")]
    own, kids = (int(hwm[0][1]) / 1024, int(hwm[0][2]) / 1024) if hwm else (np.nan, np.nan)
    return seconds, own, kids, out.stdout


#: what the README's distributed.yaml sets for the workers of a cluster (glibc reads them)
WORKER_ENV = {"MALLOC_TRIM_THRESHOLD_": "2147483647", "MALLOC_MMAP_THRESHOLD_": "1073741824"}


def main():
    from distributed import LocalCluster

    from smcheck.cluster import QUIET_HTTP

    import dask

    x = np.random.default_rng(4).standard_normal((ROWS, N)).astype(np.float32)
    # the running cluster's workers keep freed memory for reuse, as the README advises for a
    # cluster of one's own (smcheck leaves the allocator of workers it did not start alone)
    with tempfile.TemporaryDirectory() as tmp, dask.config.set(
            {"distributed.nanny.pre-spawn-environ": WORKER_ENV}), LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, silence_logs=logging.CRITICAL,
            **QUIET_HTTP) as running:
        path = os.path.join(tmp, "batch.npy")
        np.save(path, x)
        kinds = {
            "local, forked pool, --workers 2": ("--scheduler", "local", "--workers", "2"),
            "local, --workers 1": ("--scheduler", "local", "--workers", "1"),
            "dask LocalCluster, --workers 2": ("--scheduler", "dask", "--workers", "2"),
            "tcp:// running cluster (2 workers, MALLOC_*)": ("--scheduler",
                                                             running.scheduler_address),
        }
        fresh(path, "--workers", "1")  # the file in the page cache, the imports compiled
        runs = {k: [] for k in kinds}
        docs = {}
        names = list(kinds)
        for r in range(REPEAT):
            for k in (names if r % 2 == 0 else names[::-1]):
                s, own, kids, doc = fresh(path, *kinds[k])
                runs[k].append((s, own, kids))
                docs.setdefault(k, doc)
    entries = ROWS * N
    print(f"smcheck forward, {ROWS} x {N} float32 .npy (memory-mapped), fresh processes, "
          f"median of {REPEAT}; {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at the end")
    med = {}
    for k, rs in runs.items():
        a = np.array(rs)
        med[k] = float(np.median(a[:, 0]))
        print(f"{k:<36} {med[k]:7.2f} s (min {a[:, 0].min():5.2f}, max {a[:, 0].max():5.2f}) "
              f"{entries / med[k] / 1e6:6.2f} M entries/s | peak RSS {np.median(a[:, 1]):6.0f} "
              f"MiB, largest worker {np.median(a[:, 2]):6.0f} MiB")
    base = docs[names[0]]
    for k in names[1:]:
        print(f"JSON of {k!r} equals the forked pool's: {docs[k] == base}")
    forked, dask = med[names[0]], med[names[2]]
    print(f"ratio forked pool / dask LocalCluster (time): {forked / dask:.2f} "
          f"(dask takes {dask / forked:.2f}x the forked pool's time); forked pool / tcp:// "
          f"running cluster: {forked / med[names[3]]:.2f}")


if __name__ == "__main__":
    main()
