"""The input size limit, ``--max-size``: what must be held at once.

An input read whole (text, JSON, .npz, .safetensors, a small .npy, ``--random``, a preset) is
limited in its total count of numbers. A streamed input (a memory-mapped .npy, a directory of
.npy shards, a zarr store: :mod:`smcheck.stores`) is read a chunk of rows at a time, and an
implementation is handed a row at once: the limit is on the length of one row, n.
"""

from __future__ import annotations

import numbers

from .exceptions import InputError

#: The largest input (x, v, t or z), in numbers, read unless ``--max-size`` raises it: 10^8
#: float64 numbers are 800 MB, twelve times a 2000 x 4096 batch and a hundred vocabularies of 10^6.
DEFAULT_MAX_SIZE = 10**8
#: rows longer than this are not held whole beside their checks: ``forward`` checks them a segment
#: at a time (smcheck.longrow), the built-ins compute them a segment at a time
#: (smcheck.impls.formulas)
LONG_ROW = 2 ** 22
#: Bytes of text allowed per number of the limit, checked before a text input is read: the
#: longest float64 spelling, -2.2250738585072014e-308, takes 24 characters, plus separators.
TEXT_BYTES_PER_NUMBER = 32


def check_size(where: str, max_size: int | None, *, count: int | None = None,
               text: int | None = None, unit: str = "bytes", row: bool = False) -> None:
    """The input size limit (``--max-size``), enforced here and nowhere else.

    ``count`` is a number of numbers (a file's shape, read from its header before the data;
    ``--random N`` times ``--rows``; the numbers parsed so far), ``text`` the length of a text
    input before it is parsed (limit: TEXT_BYTES_PER_NUMBER per number). ``max_size=None``
    means no limit (library use); with neither ``count`` nor ``text`` only the limit itself is
    validated. ``row``: ``count`` is the length of one row of a streamed input.
    """
    if max_size is None:
        return
    if isinstance(max_size, bool) or not isinstance(max_size, numbers.Integral) or max_size < 1:
        raise InputError(f"--max-size must be a whole number of at least 1, got {max_size!r}")
    if count is not None and count > max_size and row:
        raise InputError(f"{where}: rows of {count:,} numbers, more than the limit of "
                         f"{max_size:,} (a streamed input is held a row at a time; raise it "
                         "with --max-size)")
    if count is not None and count > max_size:
        raise InputError(f"{where}: {count:,} numbers, more than the limit of {max_size:,} "
                         "(raise it with --max-size)")
    limit = max_size * TEXT_BYTES_PER_NUMBER
    if text is not None and text > limit:
        raise InputError(
            f"{where}: {text:,} {unit} of text, more than the limit of {limit:,} "
            f"({TEXT_BYTES_PER_NUMBER} per number of --max-size {max_size:,}; raise it with "
            "--max-size)")
