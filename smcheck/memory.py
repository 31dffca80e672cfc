"""What a run will hold at once, against the memory this machine has available.

``vjp`` and ``loss`` hold a row whole, with some twenty float64 arrays of its length beside it
(the exact values as pairs, the allowances, the finite-difference evaluations, the shifted
rows): a few hundred bytes an entry. A row of 10^8 entries then needs tens of GB, and the
operating system kills a process that asks for more than there is, without a word. So before
such a run starts, its need is estimated from the peak memory measured per entry
(``benchmarks/scale.py --only rowmem``) and compared with what the system reports available;
a run that cannot fit is refused with one ``error:`` line instead. ``jacobian`` beyond
--max-dense holds its probe pairs alike. ``forward`` checks a row too long to hold a segment
at a time (:mod:`smcheck.longrow`), and a dense Jacobian is chunked by its n^2 entries: they
need no such guard.

The forked check beside the others (:mod:`smcheck.beside`) holds a copy of part of that work:
it is started only where its share fits too.
"""

from __future__ import annotations

from .exceptions import InputError

#: peak memory of one process, bytes per entry of x held at once, less the interpreter's: a
#: little above the arrays numpy holds at the peak (vjp 261, loss 343 in float64, float32 and
#: bfloat16; z = v J(x) needs less: 318; tests/test_memory.py) and the process's peak RSS
#: (vjp 269-272, loss 352-356 on one row of 4 10^6 entries, --workers 1; ``benchmarks/scale.py
#: --only rowmem``). The shift check runs first in one process, and the other checks reuse its
#: memory (loss held 407-445 when it ran last)
HELD_BYTES = {"vjp": 280, "loss": 370}
#: ``jacobian`` beyond --max-dense (v^T J u on probe pairs of rows of n): JAC_BYTES + JAC_PROBE
#: per probe pair (numpy's peak 481 with 4 pairs, 1115 with 12; RSS 555-556 with the command
#: line's 4 pairs)
JAC_BYTES, JAC_PROBE = 230, 85
#: what the forked shift_invariance check adds, bytes per entry: the same rows with every core
#: against --workers 1 (``--only rowmem``: vjp 114-126, loss 226-250, loss of z = v J(x)
#: 141-150; forward 59 on one row of 4 10^6 float64 or float32 entries). In one process the
#: shift check's memory is reused by the other checks; beside them it is not
BESIDE_BYTES = {"forward": 70, "vjp": 130, "loss": 260}
#: the same for jacobian's probes, per probe pair (428-429 with 4 pairs)
JAC_BESIDE_PROBE = 110


def held_bytes(command: str, n: int, max_dense: int = 2048, probes: int = 4) -> int | None:
    """Bytes an entry of x that ``command`` holds at once on rows of n (None: a bounded
    amount whatever n: forward checks a long row a segment at a time, a dense Jacobian is
    chunked by its n^2 entries)."""
    if command == "jacobian":
        return JAC_BYTES + JAC_PROBE * probes if n > max_dense else None
    return HELD_BYTES.get(command)


def beside_bytes(case) -> int:
    """Bytes an entry of x that the forked check beside the others adds for ``case`` (its
    command's figure; the largest for a case of no known command)."""
    if not getattr(case, "dense", True):  # jacobian's probes
        return JAC_BESIDE_PROBE * int(getattr(case, "probes", 4))
    return BESIDE_BYTES.get(getattr(case, "command", None), max(BESIDE_BYTES.values()))


def _size(nbytes: float) -> str:
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.0f} MB"


def available_bytes() -> int | None:
    """Memory a new allocation can get without the system killing a process: MemAvailable
    and free swap (Linux), within a cgroup v2 limit where the process has one; None where
    this cannot be read (another system: no guard)."""
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f
                    if line.split(":")[0] in ("MemAvailable", "SwapFree")}
    except (OSError, ValueError, IndexError):
        return None
    if "MemAvailable" not in info:
        return None
    avail = info["MemAvailable"] + info.get("SwapFree", 0)
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if limit != "max":
            avail = min(avail, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(0, avail)


def fits(nbytes: float) -> bool:
    """Whether ``nbytes`` more can be held (True where the system does not say)."""
    avail = available_bytes()
    return avail is None or nbytes <= avail


def check_memory(command: str, entries: int, n: int, processes: int = 1,
                 per: int | None = None) -> None:
    """Refuse a ``command`` run that holds ``entries`` entries of x at once (rows of ``n``)
    in each of ``processes`` processes, ``per`` bytes an entry (None: no guard), where that
    cannot fit in the memory available."""
    if per is None:
        return
    need = float(per) * entries * max(1, processes)
    avail = available_bytes()
    if avail is None or need <= avail:
        return
    held = (f"rows of {n:,} entries, {entries:,} entries at once"
            + (f" in each of {processes} processes" if processes > 1 else ""))
    fewer = ("; fewer --workers hold fewer at once" if processes > 1 else "")
    raise InputError(
        f"{command} would need about {_size(need)} ({held}, about {per} bytes an entry), "
        f"more than the {_size(avail)} this machine has available: {command} "
        f"holds a row whole (forward checks a row too long to hold a segment at a time); "
        f"check shorter rows{fewer}, or run where there is more memory")


def spare_for_beside(case, entries: int) -> bool:
    """Whether a forked check beside the others on ``case`` (``entries`` entries of x) fits
    in the memory available."""
    return fits(float(beside_bytes(case)) * entries)

