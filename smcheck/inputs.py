"""Reading the arrays smcheck checks: from the command line, from files, from stdin, at random.

Every way of getting an input ends in a float64 array that is 1-D (one vector) or 2-D (a batch of
rows). Anything that cannot be read that way raises :class:`~smcheck.exceptions.InputError` with a
one-line message naming the flag or file and what is wrong with it; numpy, json and OS exceptions
never escape from the public functions.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import sys
import zipfile
from dataclasses import dataclass
from typing import TextIO

import numpy as np

from smcheck.exceptions import InputError
from smcheck.presets import get_preset

_FILE_TYPES = ".npy, .npz, .json, .csv, .tsv or .txt"
_TEXT_SEPARATORS = {
    ".csv": re.compile(r","),
    ".tsv": re.compile(r"\t"),
    ".txt": re.compile(r"\s*,\s*|\s+"),
}
_NPY_MAGIC = b"\x93NUMPY"
# A zip local-file header, or the end-of-directory record an archive with no members starts with.
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


def parse_text(text: str, name: str = "x") -> np.ndarray:
    """Parse numbers given on the command line: ``1,2 3``, ``1,2;3,4`` (rows) or a JSON array."""
    where = f"--{name}"
    text = text.strip()
    if not text:
        raise InputError(f"{where}: empty input")
    if text.startswith("["):
        return _from_json(_json_loads(text, where), where)
    rows = [row for row in re.split(r"[;\n]", text) if row.strip()]
    labelled = [(f"row {i}" if len(rows) > 1 else "", row) for i, row in enumerate(rows)]
    return _parse_rows(labelled, _TEXT_SEPARATORS[".txt"], where)


def load_file(spec: str, name: str = "x", stdin: TextIO | None = None) -> np.ndarray:
    """Load an array from ``PATH``, ``PATH.npz:KEY`` or ``-`` (text on stdin), by file extension."""
    if spec == "-":
        where = f"--{name}-file - (stdin)"
        try:
            text = (stdin if stdin is not None else sys.stdin).read()
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise InputError(f"{where}: cannot read stdin ({_one_line(exc)})") from None
        return _parse_text_file(text, ".txt", where)

    where = f"--{name}-file {spec}"
    path, key = spec, None
    head, sep, tail = spec.rpartition(":")
    if sep and head.lower().endswith(".npz"):
        path, key = head, tail
    ext = os.path.splitext(path)[1].lower()
    if ":" in ext:
        raise InputError(f"{where}: only .npz files take a ':KEY'")
    if ext not in (".npy", ".npz", ".json", *_TEXT_SEPARATORS):
        kind = f"unknown file type '{ext}'" if ext else "no file extension"
        raise InputError(f"{where}: {kind} (use {_FILE_TYPES})")

    try:
        with open(path, "rb") as f:
            if ext == ".npy":
                return _load_npy(f, where, path)
            if ext == ".npz":
                return _load_npz(f, key, where)
            data = f.read()
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
        return _from_json(value, where)
    return _parse_text_file(text, ext, where)


def random_input(n: int, rows: int = 1, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    """Standard normal values times ``scale``; the same arguments always give the same array."""
    for flag, value in (("--random", n), ("--rows", rows)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise InputError(f"{flag} must be a whole number of at least 1, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputError(f"--seed must be a non-negative whole number, got {seed!r}")
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        raise InputError(f"--scale must be a number, got {scale!r}") from None
    if not math.isfinite(scale):
        raise InputError(f"--scale must be finite, got {scale!r}")
    out = np.random.default_rng(seed).standard_normal((rows, n)) * scale
    return out[0] if rows == 1 else out


# eq=False: a generated __eq__/__hash__ would compare numpy arrays, which is ambiguous.
@dataclass(frozen=True, eq=False)
class Source:
    """An input array and a short human description of where it came from (for reports)."""

    array: np.ndarray
    description: str


def load_vector(
    name: str,
    *,
    text: str | None = None,
    file: str | None = None,
    random: int | None = None,
    rows: int = 1,
    seed: int = 0,
    scale: float = 1.0,
    preset: str | None = None,
    stdin: TextIO | None = None,
    required: bool = True,
) -> Source | None:
    """Read input ``name`` from exactly one of its sources; ``None`` if absent and not required."""
    flags = {f"--{name}": text, f"--{name}-file": file, "--random": random, "--preset": preset}
    given = [flag for flag, value in flags.items() if value is not None]
    if not given:
        if not required:
            return None
        choices = "--x, --x-file, --random N or --preset NAME" if name == "x" else (
            f"--{name} or --{name}-file"
        )
        raise InputError(f"no input for {name}: give {choices}")
    if len(given) > 1:
        listed = ", ".join(given[:-1]) + " and " + given[-1]
        raise InputError(f"give exactly one source for {name}, got {listed}")

    if text is not None:
        array = parse_text(text, name)
        return Source(array, f"--{name} ({_shape_words(array)})")
    if file is not None:
        array = load_file(file, name, stdin)
        return Source(array, f"{'stdin' if file == '-' else file} ({_shape_words(array)})")
    if random is not None:
        array = random_input(random, rows, seed, scale)
        return Source(array, f"random n={random} rows={rows} seed={seed} scale={scale:g}")
    assert preset is not None
    return Source(get_preset(preset).make(), f"preset '{preset}'")


def _shape_words(array: np.ndarray) -> str:
    if array.ndim == 2:
        return f"{array.shape[0]} rows x {array.shape[1]}"
    return f"{array.size} value{'s' if array.size != 1 else ''}"


def _parse_rows(rows: list[tuple[str, str]], sep: re.Pattern, where: str) -> np.ndarray:
    """Parse (location label, line) pairs into a float64 vector (one row) or batch."""
    values: list[list[float]] = []
    for label, row in rows:
        tokens = sep.split(row.strip())
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


def _parse_text_file(text: str, ext: str, where: str) -> np.ndarray:
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
    return _parse_rows(rows, _TEXT_SEPARATORS[ext], where)


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
        raise InputError(f"{where}: invalid JSON ({exc})") from None


def _from_json(value: list, where: str) -> np.ndarray:
    """A JSON list of numbers (a vector) or of equal-length lists of numbers (a batch)."""
    if not value:
        raise InputError(f"{where}: empty input")
    nested = [isinstance(item, list) for item in value]
    if any(nested) and not all(nested):
        raise InputError(f"{where}: JSON array mixes numbers and lists (use all one or the other)")
    rows = value if all(nested) else [value]
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


#: a 2-D .npy larger than this is memory-mapped, not read: the checks read it a chunk of rows
#: at a time, so a batch larger than memory streams
MMAP_MIN_BYTES = 64 * 2 ** 20


def _load_npy(f, where: str, path: str | None = None) -> np.ndarray:
    # Check the magic first: np.load treats anything unrecognised as a pickle, and its message
    # for junk would wrongly say "pickled data".
    magic = f.read(len(_NPY_MAGIC))
    if not magic:
        raise InputError(f"{where}: empty file")
    if magic != _NPY_MAGIC:
        raise InputError(f"{where}: not a .npy file (no NPY header)")
    f.seek(0)
    if path is not None and os.path.getsize(path) >= MMAP_MIN_BYTES:
        mm = _checked(lambda: np.lib.format.open_memmap(path, mode="r"), where,
                      "corrupt or truncated .npy file")
        if mm.ndim == 2 and mm.dtype.kind in "biuf" and mm.size:
            return mm  # float64 conversion happens chunk by chunk
        del mm
    return _checked(lambda: np.load(f, allow_pickle=False), where, "corrupt or truncated .npy file")


def _load_npz(f, key: str | None, where: str) -> np.ndarray:
    magic = f.read(4)
    if not magic:
        raise InputError(f"{where}: empty file")
    if magic not in _ZIP_MAGICS:
        raise InputError(f"{where}: not a .npz file (not a zip archive)")
    f.seek(0)
    archive = _checked(lambda: np.load(f, allow_pickle=False), where, "corrupt .npz file")
    with archive:
        keys = list(archive.files)
        listed = ", ".join(keys)
        if key is None:
            if not keys:
                raise InputError(f"{where}: contains no arrays")
            if len(keys) > 1:
                raise InputError(f"{where}: holds several arrays ({listed}); pick one with :KEY")
            key = keys[0]
        elif key not in keys:
            raise InputError(f"{where}: no array named '{key}' (arrays: {listed or 'none'})")
        return _checked(lambda: archive[key], where, "corrupt .npz file")


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
    # MemoryError: a corrupt header can claim a shape far larger than the file.
    except (EOFError, OSError, zipfile.BadZipFile, KeyError, TypeError, MemoryError) as exc:
        raise InputError(f"{where}: {what} ({_one_line(exc)})") from None
    return _as_float_array(result, where) if isinstance(result, np.ndarray) else result


def _one_line(exc: BaseException) -> str:
    # numpy's header errors can span lines; InputError messages must not.
    return " ".join(str(exc).split()) or type(exc).__name__


def _as_float_array(array: np.ndarray, where: str) -> np.ndarray:
    """Accept any real numeric dtype as float64; a scalar becomes a length-1 vector."""
    if isinstance(array, np.memmap):
        return array  # a large file, converted a chunk of rows at a time
    kind = array.dtype.kind
    if kind == "c":
        raise InputError(f"{where}: complex values are not supported (softmax needs real numbers)")
    if kind not in "biuf":
        raise InputError(f"{where}: expected numbers, got an array of dtype {array.dtype}")
    if array.ndim > 2:
        raise InputError(f"{where}: expected a vector or a 2-D batch, got shape {array.shape}")
    if array.size == 0:
        raise InputError(f"{where}: empty input")
    return np.array(array, dtype=np.float64, ndmin=1)
