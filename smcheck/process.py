"""Settings of the smcheck process itself (the command line), not of smcheck as a library."""

from __future__ import annotations


def keep_freed_memory() -> None:
    """In the smcheck process (not when smcheck is imported as a library): let glibc serve
    large temporaries from the heap and keep freed memory for reuse, instead of mapping fresh
    pages for each array and returning them at once; the page faults of that churn cost a
    quarter of a 10^6-entry forward run (benchmarks/). Peak memory is unchanged: freed memory
    is reused, and returned when the process ends. No effect outside glibc."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    try:
        libc = ctypes.CDLL(None)
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
        libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1)
    except (OSError, AttributeError):  # pragma: no cover - no mallopt here
        pass
