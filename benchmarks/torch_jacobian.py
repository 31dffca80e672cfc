"""``smcheck jacobian --random 2048 --impl torch`` against ``torch.autograd.gradcheck`` (its
default slow mode, float64, on torch.softmax at n = 2048), each in a fresh process, as a user
runs them; issue 18's done-when: smcheck is the faster.

    python benchmarks/torch_jacobian.py          # 3 pairs, alternately
    python benchmarks/torch_jacobian.py 5        # 5 pairs

Each pair runs both programs one after the other (which goes first alternates); the wall time
and peak RSS (the child's VmHWM, imports included) of each run are printed, then the medians
and their ratio. Not part of the test suite's pass/fail: timings depend on the machine.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 2048

#: reports the program's own peak RSS (VmHWM) on stderr as it exits
_HWM = ("import atexit, sys\n"
        "def hwm():\n"
        "    with open('/proc/self/status') as f:\n"
        "        sys.stderr.write(next(l for l in f if l.startswith('VmHWM')))\n"
        "atexit.register(hwm)\n")

SMCHECK = _HWM + ("sys.argv = ['smcheck', 'jacobian', '--random', '%d', '--impl', 'torch',\n"
                  "            '--json', '--check']\n"
                  "from smcheck.cli import entry\n"
                  "entry()\n") % N

GRADCHECK = _HWM + ("import torch\n"
                    "x = torch.randn(1, %d, dtype=torch.float64, requires_grad=True)\n"
                    "ok = torch.autograd.gradcheck(lambda a: torch.softmax(a, dim=-1), (x,))\n"
                    "sys.exit(0 if ok else 1)\n") % N


def fresh(program: str) -> tuple[float, float]:
    """(seconds, peak RSS in MiB; nan where there is no /proc) of ``program`` in a fresh
    interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", program], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, env=env)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"exit {out.returncode}: {out.stderr[-2000:]}")
    kib = [line.split()[1] for line in out.stderr.splitlines() if line.startswith("VmHWM")]
    return seconds, (int(kib[-1]) / 1024 if kib else float("nan"))


def main(repeat: int = 3) -> dict:
    # byte-compiled first, as pip does when it installs a package (and as Python does on a
    # first run): neither side then pays for compiling source (torch's is compiled already)
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(ROOT, "smcheck")],
                   check=True)
    runs = {"smcheck": [], "gradcheck": []}
    programs = {"smcheck": SMCHECK, "gradcheck": GRADCHECK}
    for i in range(repeat):
        order = ("smcheck", "gradcheck") if i % 2 == 0 else ("gradcheck", "smcheck")
        for name in order:
            t, rss = fresh(programs[name])
            runs[name].append((t, rss))
            print(f"run {i + 1}: {name:<9} {t:7.2f} s  peak RSS {rss:7.0f} MiB", flush=True)
    med = {k: (statistics.median(t for t, _ in v), statistics.median(r for _, r in v))
           for k, v in runs.items()}
    (ts, rs), (tg, rg) = med["smcheck"], med["gradcheck"]
    print(f"median smcheck jacobian --random {N} --impl torch: {ts:.2f} s, {rs:.0f} MiB")
    print(f"median torch.autograd.gradcheck (slow mode, float64, n = {N}): {tg:.2f} s, "
          f"{rg:.0f} MiB")
    print(f"ratio smcheck / gradcheck: time {ts / tg:.2f}, peak RSS {rs / rg:.2f} "
          f"(target: time < 1)")
    return {"smcheck": med["smcheck"], "gradcheck": med["gradcheck"], "ratio": ts / tg}


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
