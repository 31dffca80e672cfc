"""Reading the arrays smcheck checks: from the command line, from files, from stdin, at random.

Every way of getting an input ends in a float64 array that is 1-D (one vector) or 2-D (a batch of
rows). Anything that cannot be read that way raises :class:`~smcheck.exceptions.InputError` with a
one-line message naming the flag or file and what is wrong with it; numpy, json and OS exceptions
never escape from the public functions. Which of its sources an input is read from:
:mod:`smcheck.sources`.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import sys
from typing import TextIO

import numpy as np

from smcheck import stores, tensorfiles
from smcheck.exceptions import InputError, one_line as _one_line
from smcheck.limits import DEFAULT_MAX_SIZE, TEXT_BYTES_PER_NUMBER, check_size  # noqa: F401

_FILE_TYPES = ".npy, .npz, .safetensors, .json, .csv, .tsv or .txt"
_TEXT_SEPARATORS = {
    ".csv": re.compile(r","),
    ".tsv": re.compile(r"\t"),
    ".txt": re.compile(r"\s*,\s*|\s+"),
}
_NPY_MAGIC = b"\x93NUMPY"
# A zip local-file header, or the end-of-directory record an archive with no members starts with.
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")

def _read_text(stream, max_size: int | None):
    """All of ``stream`` (bytes or str), but no more than one unit past the text limit of
    ``max_size``, read in pieces: enough to see the limit exceeded, whatever is behind it."""
    if max_size is None:
        return stream.read()
    limit = max_size * TEXT_BYTES_PER_NUMBER + 1
    parts, total = [], 0
    while total < limit:
        part = stream.read(min(1 << 20, limit - total))
        if not part:
            break
        parts.append(part)
        total += len(part)
    return parts[0][:0].join(parts) if parts else stream.read(0)


def parse_text(text: str, name: str = "x", max_size: int | None = DEFAULT_MAX_SIZE
               ) -> np.ndarray:
    """Parse numbers given on the command line: ``1,2 3``, ``1,2;3,4`` (rows) or a JSON array."""
    where = f"--{name}"
    check_size(where, max_size, text=len(text), unit="characters")
    text = text.strip()
    if not text:
        raise InputError(f"{where}: empty input")
    if text.startswith("["):
        return _from_json(_json_loads(text, where), where, max_size)
    rows = [row for row in re.split(r"[;\n]", text) if row.strip()]
    labelled = [(f"row {i}" if len(rows) > 1 else "", row) for i, row in enumerate(rows)]
    return _parse_rows(labelled, _TEXT_SEPARATORS[".txt"], where, max_size)


def load_file(spec: str, name: str = "x", stdin: TextIO | None = None,
              max_size: int | None = DEFAULT_MAX_SIZE) -> np.ndarray:
    """Load an array from ``PATH``, ``PATH.npz:KEY``, ``PATH.safetensors:NAME`` or ``-`` (text
    on stdin), by file extension; pickle formats (.pt, .pkl, ...) are refused unopened. A
    directory is a store read lazily (:mod:`smcheck.stores`): zarr (``DIR:NAME``, an array of a
    group), else .npy shards; so is a 2-D .npy of MMAP_MIN_BYTES or more.

    Inputs beyond ``max_size`` numbers are refused before their data is read (see
    :func:`check_size`); a streamed one (a store) when its rows are longer than that."""
    check_size("--max-size", max_size)
    if spec == "-":
        where = f"--{name}-file - (stdin)"
        try:
            text = _read_text(stdin if stdin is not None else sys.stdin, max_size)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise InputError(f"{where}: cannot read stdin ({_one_line(exc)})") from None
        check_size(where, max_size, text=len(text), unit="characters")
        if text.startswith(("\x93NUMPY", "\udc93NUMPY")):  # decoded leniently or strictly
            raise InputError(f"{where}: binary .npy data; stdin takes text (numbers, or a JSON "
                             "array): pass the file's path instead")
        if text.lstrip().startswith("["):  # a JSON array, as --x takes one
            return _from_json(_json_loads(text, where), where, max_size)
        return _parse_text_file(text, ".txt", where, max_size)

    where = f"--{name}-file {spec}"
    path, key = spec, None
    head, sep, tail = spec.rpartition(":")
    if os.path.isdir(spec) or (sep and os.path.isdir(head)):  # streamed, a row limited
        return stores.open_store(*((spec, None) if os.path.isdir(spec) else (head, tail)),
                                 where, max_size)
    if sep and head.lower().endswith((".npz", ".safetensors")):
        path, key = head, tail
    ext = os.path.splitext(path)[1].lower()
    tensorfiles.refuse_pickle(ext.partition(":")[0], where)
    if ":" in ext:
        raise InputError(f"{where}: only .npz and .safetensors files take a ':KEY'")
    if ext == ".safetensors":
        if _big(path):  # a 2-D tensor streams, as a large .npy does; its rows are limited
            key, code, shape, _ = tensorfiles.tensor_layout(path, key, where)
            if len(shape) == 2 and math.prod(shape) and code != "C64":
                return stores.SafetensorsRows(path, key, where, max_size)
        return _as_float_array(tensorfiles.load_safetensors(
            path, key, where, lambda count: check_size(where, max_size, count=count)), where)
    if ext == ".zarr":
        raise InputError(f"{where}: no such zarr store (a directory)")
    if ext not in (".npy", ".npz", ".json", *_TEXT_SEPARATORS):
        if not os.path.exists(path):  # what is wrong first: there is nothing there
            raise InputError(f"{where}: no such file or directory")
        kind = f"unknown file type '{ext}'" if ext else "no file extension"
        raise InputError(f"{where}: {kind} (use {_FILE_TYPES})")

    try:
        with open(path, "rb") as f:
            if ext == ".npy":
                return _load_npy(f, where, path, max_size)
            if ext == ".npz":
                return _load_npz(f, key, where, max_size)
            check_size(where, max_size, text=os.fstat(f.fileno()).st_size)
            data = _read_text(f, max_size)  # a special file's size says nothing
            check_size(where, max_size, text=len(data))
    except OSError as exc:
        raise InputError(f"{where}: cannot read file ({exc.strerror or _one_line(exc)})") from None
    except ValueError:  # open() itself, on a path with a NUL byte
        raise InputError(f"{where}: not a valid file path") from None

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{where}: not a UTF-8 text file") from None
    if ext == ".json":
        if not text.strip():
            raise InputError(f"{where}: empty input")
        value = _json_loads(text, where)
        if isinstance(value, dict):
            if name not in value:
                keys = ", ".join(repr(k) for k in value) or "none"
                raise InputError(f"{where}: JSON object has no key '{name}' (keys: {keys})")
            value = value[name]
        if not isinstance(value, list):
            raise InputError(f"{where}: expected a JSON array, or an object with key '{name}'")
        return _from_json(value, where, max_size)
    return _parse_text_file(text, ext, where, max_size)


def random_input(n: int, rows: int = 1, seed: int = 0, scale: float = 1.0,
                 max_size: int | None = DEFAULT_MAX_SIZE) -> np.ndarray:
    """Standard normal values times ``scale``; the same arguments always give the same array."""
    for flag, value in (("--random", n), ("--rows", rows)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise InputError(f"{flag} must be a whole number of at least 1, got {value!r}")
    check_size(f"--random {n} --rows {rows}", max_size, count=n * rows)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputError(f"--seed must be a non-negative whole number, got {seed!r}")
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        raise InputError(f"--scale must be a number, got {scale!r}") from None
    if not math.isfinite(scale):
        raise InputError(f"--scale must be finite, got {scale!r}")
    try:
        out = np.random.default_rng(seed).standard_normal((rows, n)) * scale
    except (MemoryError, ValueError, OverflowError) as exc:  # a --max-size beyond the memory
        raise InputError(f"--random {n} --rows {rows}: cannot make {n * rows:,} numbers "
                         f"({_one_line(exc)})") from None
    return out[0] if rows == 1 else out


def _parse_rows(rows: list[tuple[str, str]], sep: re.Pattern, where: str,
                max_size: int | None = DEFAULT_MAX_SIZE) -> np.ndarray:
    """Parse (location label, line) pairs into a float64 vector (one row) or batch."""
    values: list[list[float]] = []
    count = 0
    for label, row in rows:
        tokens = sep.split(row.strip())
        count += len(tokens)
        check_size(where, max_size, count=count)
        numbers = []
        for index, token in enumerate(tokens, start=1):
            token = token.strip()
            try:
                numbers.append(float(token))
            except ValueError:
                at = f"{label}, token {index}" if label else f"token {index}"
                if not token:
                    raise InputError(f"{where}: empty value ({at})") from None
                raise InputError(f"{where}: cannot read {token!r} as a number ({at})") from None
        values.append(numbers)
    return _rows_to_array(values, [label or "row 0" for label, _ in rows], where)


def _rows_to_array(values: list[list[float]], labels: list[str], where: str) -> np.ndarray:
    for i, row in enumerate(values[1:], start=1):
        if len(row) != len(values[0]):
            raise InputError(
                f"{where}: rows have different lengths "
                f"({labels[0]} has {len(values[0])}, {labels[i]} has {len(row)})"
            )
    if not values or not values[0]:
        raise InputError(f"{where}: empty input")
    array = np.array(values, dtype=np.float64)
    return array[0] if len(values) == 1 else array


def _parse_text_file(text: str, ext: str, where: str,
                     max_size: int | None = DEFAULT_MAX_SIZE) -> np.ndarray:
    """One row per non-blank line; '#' comment lines in .txt; a header row gets its own message."""
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or (ext == ".txt" and line.lstrip().startswith("#")):
            continue
        rows.append((f"line {lineno}", line))
    if not rows:
        raise InputError(f"{where}: empty input")
    label, first = rows[0]
    tokens = [t.strip() for t in _TEXT_SEPARATORS[ext].split(first.strip())]
    if not any(_is_number(t) for t in tokens):
        raise InputError(
            f"{where}: {label} looks like a header ({first.strip()!r}); "
            "smcheck reads numbers only, remove that line"
        )
    return _parse_rows(rows, _TEXT_SEPARATORS[ext], where, max_size)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _json_loads(text: str, where: str):
    try:
        # Python's json also reads NaN/Infinity/-Infinity, which is what we want here.
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{where}: invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except (ValueError, RecursionError) as exc:
        if "int_max_str_digits" in str(exc):  # Python's advice is not the user's to follow
            raise InputError(f"{where}: integer too large for float64 (thousands of digits)"
                             ) from None
        raise InputError(f"{where}: invalid JSON ({_one_line(exc)})") from None


def _from_json(value: list, where: str, max_size: int | None = DEFAULT_MAX_SIZE) -> np.ndarray:
    """A JSON list of numbers (a vector) or of equal-length lists of numbers (a batch)."""
    if not value:
        raise InputError(f"{where}: empty input")
    nested = [isinstance(item, list) for item in value]
    if any(nested) and not all(nested):
        raise InputError(f"{where}: JSON array mixes numbers and lists (use all one or the other)")
    rows = value if all(nested) else [value]
    check_size(where, max_size, count=sum(len(row) for row in rows))
    values = [
        [_json_number(item, where, (f"row {r}, " if len(rows) > 1 else "") + f"item {i}")
         for i, item in enumerate(row)]
        for r, row in enumerate(rows)
    ]
    return _rows_to_array(values, [f"row {r}" for r in range(len(rows))], where)


def _json_number(item, where: str, at: str) -> float:
    if isinstance(item, list):
        raise InputError(f"{where}: JSON array is nested deeper than 2 levels ({at})")
    if isinstance(item, str):
        # Strings cover what JSON itself cannot spell: "inf", "-inf", "nan".
        try:
            return float(item)
        except ValueError:
            raise InputError(f"{where}: cannot read {item!r} as a number ({at})") from None
    if isinstance(item, bool) or not isinstance(item, (int, float)):
        raise InputError(f"{where}: {json.dumps(item)} is not a number ({at})")
    try:
        return float(item)
    except OverflowError:
        raise InputError(f"{where}: integer too large for float64 ({at})") from None


#: a 2-D .npy (or .safetensors tensor) in a file larger than this is read a chunk of rows at a
#: time (:class:`~smcheck.stores.NpyRows`, :class:`~smcheck.stores.SafetensorsRows`), not
#: whole: a batch larger than memory streams
MMAP_MIN_BYTES = 2 ** 20


def _big(path: str) -> bool:
    try:
        return os.path.getsize(path) >= MMAP_MIN_BYTES
    except OSError:  # reported by the reader, with the file's name
        return False


def _load_npy(f, where: str, path: str | None = None,
              max_size: int | None = DEFAULT_MAX_SIZE):
    # Check the magic first: np.load treats anything unrecognised as a pickle, and its message
    # for junk would wrongly say "pickled data".
    magic = f.read(len(_NPY_MAGIC))
    if not magic:
        raise InputError(f"{where}: empty file")
    if magic != _NPY_MAGIC:
        raise InputError(f"{where}: not a .npy file (no NPY header)")
    f.seek(0)
    size = os.fstat(f.fileno()).st_size
    shape, dtype = stores.npy_header(f, where, size, ".npy file")
    if (path is not None and size >= MMAP_MIN_BYTES and len(shape) == 2
            and dtype.kind in "biuf" and math.prod(shape)):
        return stores.NpyRows(path, where, max_size)  # --max-size limits its rows' length
    check_size(where, max_size, count=math.prod(shape))
    f.seek(0)
    return _checked(lambda: np.load(f, allow_pickle=False), where, "corrupt or truncated .npy file")


def _check_npy_header(fp, where: str, max_size: int | None, total_bytes: int, what: str) -> None:
    """Read the .npy header at ``fp`` and, before any data is read, refuse object arrays (their
    data is a pickle), data shorter than the shape needs, and a shape beyond ``max_size``."""
    shape, _ = stores.npy_header(fp, where, total_bytes, what)
    check_size(where, max_size, count=math.prod(shape))


def _load_npz(f, key: str | None, where: str,
              max_size: int | None = DEFAULT_MAX_SIZE) -> np.ndarray:
    magic = f.read(4)
    if not magic:
        raise InputError(f"{where}: empty file")
    if magic not in _ZIP_MAGICS:
        raise InputError(f"{where}: not a .npz file (not a zip archive)")
    f.seek(0)
    archive = _checked(lambda: np.load(f, allow_pickle=False), where, "corrupt .npz file")
    with archive:
        key = tensorfiles.pick(list(archive.files), key, where, "array", ":KEY")
        # the member numpy would read for this key (numpy's own lookup order)
        member = key if key in archive.zip.namelist() else key + ".npy"

        def header():
            info = archive.zip.getinfo(member)
            with archive.zip.open(info) as m:
                if m.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
                    # numpy would hand back the member's raw bytes
                    raise InputError(f"{where}: '{key}' is not a .npy array")
            with archive.zip.open(info) as m:
                _check_npy_header(m, where, max_size, info.file_size, f".npy array '{key}'")

        _checked(header, where, "corrupt .npz file")
        return _checked(lambda: archive[key], where, "corrupt .npz file")


#: what a loader raises on a corrupt file (MemoryError: a header can claim a shape far larger
#: than the file); with zipfile's and zlib's, imported when a load fails (:func:`_load_errors`)
_LOAD_ERRORS = (EOFError, OSError, KeyError, TypeError, MemoryError, NotImplementedError,
                RuntimeError)


def _load_errors() -> tuple:
    """_LOAD_ERRORS and a corrupt .npz's (zipfile is imported only here: it costs every run's
    start-up otherwise)."""
    import zipfile
    import zlib

    return _LOAD_ERRORS + (zipfile.BadZipFile, zlib.error)


def _checked(load, where: str, what: str):
    """Run a numpy loader, turning its exceptions into InputError, then validate arrays."""
    try:
        result = load()
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise InputError(
                f"{where}: contains pickled objects; smcheck never unpickles files"
            ) from None
        raise InputError(f"{where}: {what} ({_one_line(exc)})") from None
    except Exception as exc:
        if not isinstance(exc, _load_errors()):
            raise
        raise InputError(f"{where}: {what} ({_one_line(exc)})") from None
    return _as_float_array(result, where) if isinstance(result, np.ndarray) else result


def _as_float_array(array: np.ndarray, where: str) -> np.ndarray:
    """Accept any real numeric dtype as float64; a scalar becomes a length-1 vector.
    Integers beyond 2^53 are refused: float64 cannot hold them exactly. float16 and float32
    arrays stay as they are (float64 holds them exactly; the core converts them a chunk of rows
    at a time, so a 32-bit batch is not doubled in memory before it is checked)."""
    kind = array.dtype.kind
    if kind in "iu" and array.size and array.dtype.itemsize >= 8:
        lim = 2 ** 53  # compared as integers: exact
        if bool(np.any(array > lim)) or (kind == "i" and bool(np.any(array < -lim))):
            raise InputError(f"{where}: integers beyond 2^53 = 9007199254740992 are not exact "
                             "in float64 (write them as floating-point numbers to round them)")
    if kind == "c":
        raise InputError(f"{where}: complex values are not supported (softmax needs real numbers)")
    if kind not in "biuf":
        raise InputError(f"{where}: expected numbers, got an array of dtype {array.dtype}")
    if array.size == 0:
        raise InputError(f"{where}: empty input")
    if kind == "f" and array.dtype.itemsize < 8 and array.dtype.isnative:
        return np.atleast_1d(array)
    return np.array(array, dtype=np.float64, ndmin=1)
