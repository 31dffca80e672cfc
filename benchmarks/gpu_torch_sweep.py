"""smcheck's sweep of torch on a GPU: torch.softmax, torch.log_softmax and torch's autograd
(the forward, log_softmax, jacobian, vjp and loss commands) on every preset, in float32,
float16 and bfloat16, with ``--device cuda``.

    python benchmarks/gpu_torch_sweep.py                      # on cuda; exits 0 without one
    python benchmarks/gpu_torch_sweep.py --device cpu --preset benign --dtype float32
    python benchmarks/gpu_torch_sweep.py --allow-ftz          # accept flush-to-zero (GPUs)

Prints each failing case with its failure lines, then the time per dtype and command, and a
summary line. Exit status: 0 when every case passed (or when there is no GPU: a message says
so, nothing is run), 1 when a case failed, 2 when torch is not installed or the device cannot
be used. Not part of the test suite's verdicts: tests/test_torch_device.py checks only that it
skips cleanly without a GPU and runs a small part of the sweep on the cpu.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DTYPES = ("float32", "float16", "bfloat16")


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, mps or cpu")
    p.add_argument("--dtype", action="append", choices=DTYPES + ("float64",),
                   help="repeatable (default: float32, float16, bfloat16)")
    p.add_argument("--preset", action="append", help="repeatable (default: all)")
    p.add_argument("--command", action="append",
                   choices=("forward", "log_softmax", "jacobian", "vjp", "loss"),
                   help="repeatable (default: all five)")
    p.add_argument("--allow-ftz", action="store_true",
                   help="accept subnormal results flushed to zero (common on GPUs)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    try:
        import torch
    except ImportError:
        print("error: torch is not installed (pip install torch)", file=sys.stderr)
        return 2
    kind = args.device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        print(f"no GPU: torch {torch.__version__} reports torch.cuda.is_available() is False; "
              "nothing was run (pass --device cpu to run the sweep on the cpu)")
        return 0
    from smcheck.exceptions import SmcheckError
    from smcheck.sweep import COMMANDS, run_sweep

    where = args.device
    if kind == "cuda":
        where += f" ({torch.cuda.get_device_name(torch.device(args.device))})"
    print(f"smcheck sweep of torch {torch.__version__} on {where}", flush=True)
    done = []

    def progress(label):  # on a terminal only: a log gets the findings, not 300 labels
        done.append(label)
        if sys.stderr.isatty():
            print(f"\r  case {len(done)}: {label:<48}", end="", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    try:
        res = run_sweep("torch", list(args.dtype or DTYPES), args.preset,
                        commands=tuple(args.command or COMMANDS), progress=progress,
                        allow_ftz=args.allow_ftz, device=args.device)
    except SmcheckError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    total = time.perf_counter() - t0
    if sys.stderr.isatty():
        print(file=sys.stderr)
    failing = [c for c in res.cases if not c["passed"]]
    print(f"\nfindings: {len(failing)} of {len(res.cases)} cases fail")
    for c in failing:
        print(f"  {c['preset']} / {c['dtype']} / {c['command']}: max ULP {c['max_ulp']}, "
              f"error / allowance {c['scaled']}")
        for line in c["failures"]:
            print(f"      {line}")
    seconds = defaultdict(float)
    for c in res.cases:
        seconds[c["dtype"], c["command"]] += c["seconds"]
    print("\ntimings (seconds, all presets):")
    print(f"  {'dtype':<10}" + "".join(f"{c:>12}" for c in res.commands))
    for dt in res.dtypes:
        print(f"  {dt:<10}" + "".join(f"{seconds[dt, c]:12.2f}" for c in res.commands))
    print(f"\n{'PASSED' if res.passed else 'FAILED'}: {len(res.cases)} cases on {args.device} "
          f"in {total:.1f} s")
    return 0 if res.passed else 1


if __name__ == "__main__":
    sys.exit(main())
