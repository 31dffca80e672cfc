"""Row stores read lazily: a 2-D ``.npy`` memory-mapped, a directory of ``.npy`` shards, a zarr
array, a 2-D tensor of a ``.safetensors`` file. A store is what smcheck relies on a memmap
for: ``.shape``, ``.ndim``, ``.size``, ``.dtype``, ``len()`` and ``store[lo:hi]``, the rows lo
to hi as a numpy array, read then and no sooner. The checks take a batch a chunk of rows at a
time (:mod:`smcheck.parallel`), so a store larger than memory streams.

A store pickles by its absolute path, never its data: a process or machine that sees the same
path reads its own chunks. It is opened again, and checked to hold the same shape and dtype,
when that process first reads rows, not when it unpickles the store: on a Dask worker a path
it cannot see is then the task's error (one line), not a failure to load the task. ``np.asarray(store)`` reads it whole, which only
an N-d store, or softmax along another axis than the last, needs: that is refused beyond
``--max-size`` numbers (a streamed 2-D store is limited in the length of a row).

Values come as stored (float16, float32, float64, integers; the checks convert a chunk to
float64, exactly); integers beyond 2^53 are refused in the chunk that holds them. zarr is
imported only when a zarr store is read (``pip install 'smcheck[dask]'``).
"""

from __future__ import annotations

import bisect
import math
import os

import numpy as np

from .exceptions import InputError, one_line
from .limits import check_size
from .tensorfiles import decode, raw_dtype, tensor_layout, value_dtype

NPY_MAGIC = b"\x93NUMPY"
#: a directory holding one of these is a zarr store (v2 array, v2 group, v3 array or group)
ZARR_MARKERS = (".zarray", ".zgroup", "zarr.json")
ZARR_MISSING = "reading a zarr store needs zarr: pip install 'smcheck[dask]'"


def is_zarr(path: str) -> bool:
    return os.path.isdir(path) and any(os.path.exists(os.path.join(path, m))
                                       for m in ZARR_MARKERS)


def open_store(path: str, name: str | None, where: str, max_size: int | None):
    """The store at directory ``path``: zarr (array ``name`` of a group) or .npy shards."""
    if is_zarr(path):
        return ZarrRows(path, name, where, max_size)
    if name is not None:
        raise InputError(f"{where}: only zarr stores and .npz/.safetensors files take ':NAME' "
                         f"({path} is not a zarr store)")
    return ShardRows(path, where, max_size)


class RowStore:
    """What every store shares: the interface, validation, the whole read and pickling.
    A subclass sets ``shape`` and ``dtype`` and reads rows in :meth:`_read`."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def __init__(self, where: str, max_size: int | None):
        self.where, self.max_size = where, max_size

    def _opened(self) -> None:
        """Validate what was opened, before any data is read: numbers, not empty, a row
        within --max-size (the whole of a 1-D store)."""
        self.shape = tuple(int(d) for d in self.shape)
        check_dtype(self.dtype, self.where)
        if not self.shape or math.prod(self.shape) == 0:
            raise InputError(f"{self.where}: empty input (shape {self.shape})")
        check_size(self.where, self.max_size, count=self.shape[-1], row=len(self.shape) > 1)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if getattr(self, "_pickled", None) is not None:
            self._reopen()
        if isinstance(key, slice):
            lo, hi, step = key.indices(self.shape[0])
            if step != 1:
                raise TypeError("a store is read in slices of consecutive rows")
            return self._valid(self._read(lo, max(lo, hi)))
        if isinstance(key, (int, np.integer)):
            k = int(key) + (self.shape[0] if key < 0 else 0)
            if not 0 <= k < self.shape[0]:
                raise IndexError(f"row {key} of {self.shape[0]}")
            return self._valid(self._read(k, k + 1))[0]
        raise TypeError(f"a store takes a row or a slice of rows, not {type(key).__name__}")

    def __array__(self, dtype=None, copy=None):
        """The whole store (an N-d store, or one taken along another axis than its last):
        refused beyond --max-size numbers, before it is read."""
        check_size(f"{self.where} (read whole: N-d, or softmax along another axis than the "
                   "last)", self.max_size, count=self.size)
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def _valid(self, rows: np.ndarray) -> np.ndarray:
        if rows.dtype.kind in "iu" and rows.dtype.itemsize >= 8 and rows.size:
            lim = 2 ** 53  # compared as integers: exact
            if bool(np.any(rows > lim)) or (rows.dtype.kind == "i" and bool(np.any(rows < -lim))):
                raise InputError(f"{self.where}: integers beyond 2^53 = 9007199254740992 are "
                                 "not exact in float64 (store them as floating-point numbers)")
        return rows

    def _read(self, lo: int, hi: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _args(self) -> tuple:  # pragma: no cover - abstract
        raise NotImplementedError

    def __reduce__(self):
        return _unpickled, (type(self), self._init_args(), self.shape, self.dtype, self.where,
                            self.max_size)

    def _init_args(self) -> tuple:
        """What the store is opened with (as it was pickled, where it is not opened yet)."""
        pickled = getattr(self, "_pickled", None)
        return self._args() if pickled is None else pickled[0]

    def _reopen(self) -> None:
        """Open a store unpickled here (see :func:`_unpickled`) as its first read needs it:
        what it holds must be what the pickling process saw."""
        args, shape, dtype = self._pickled
        where = self.where
        try:
            type(self).__init__(self, *args)
        except InputError as exc:
            raise InputError(f"{exc} (read where this run's chunks are checked: a Dask worker "
                             "must see the same path)") from None
        if (self.shape, self.dtype) != (shape, dtype):
            raise InputError(f"{where}: holds {self.shape} {self.dtype} where this run's chunks "
                             f"are checked, {shape} {dtype} where it started (a Dask worker must "
                             "see the same file)")
        self._pickled = None

    def __repr__(self) -> str:
        return (f"{type(self).__name__}{self._init_args()[:-2]} shape={self.shape} "
                f"dtype={self.dtype}")


def _unpickled(cls, args: tuple, shape: tuple, dtype: np.dtype, where: str,
               max_size: int | None) -> RowStore:
    """A store as it unpickles: what it holds as the pickling process saw it, opened at its
    first read (:meth:`RowStore._reopen`)."""
    store = cls.__new__(cls)
    store.where, store.max_size = where, max_size
    store.shape, store.dtype, store._pickled = shape, dtype, (args, shape, dtype)
    return store


def check_dtype(dtype: np.dtype, where: str) -> None:
    """Real numbers only: complex, structured, bytes and objects are refused by name."""
    if dtype.kind == "O":
        raise InputError(f"{where}: contains pickled objects; smcheck never unpickles files")
    if dtype.kind == "c":
        raise InputError(f"{where}: complex values are not supported (softmax needs real "
                         "numbers)")
    if dtype.kind not in "biuf":
        hint = (" (np.save writes bfloat16 as raw 2-byte values: save it as float32, which "
                "holds it exactly)" if dtype.kind == "V" and dtype.itemsize == 2 else "")
        raise InputError(f"{where}: expected numbers, got an array of dtype {dtype}{hint}")


def npy_header(fp, where: str, total_bytes: int, what: str) -> tuple[tuple, np.dtype]:
    """The shape and dtype of the .npy at ``fp`` (after its magic was checked), read before
    any data: object arrays (their data is a pickle) and data shorter than the shape needs
    are refused."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(fp)
        else:  # 3.0 only differs in the encoding of structured field names
            impl = getattr(np.lib, "_format_impl", fmt)  # numpy >= 2 keeps the reader there
            shape, _, dtype = impl._read_array_header(fp, version)
        data_start = fp.tell()
    except Exception as exc:  # noqa: BLE001 - numpy parses the header with ast and tokenize:
        # ValueError, SyntaxError, tokenize.TokenError, EOFError, ... all mean a corrupt file
        if "max_header_size" in str(exc):  # numpy's advice (to allow pickles) is not for us
            raise InputError(f"{where}: corrupt or truncated {what} (header larger than "
                             "numpy reads safely)") from None
        raise InputError(f"{where}: corrupt or truncated {what} ({one_line(exc)})") from None
    if dtype.hasobject:
        raise InputError(f"{where}: contains pickled objects; smcheck never unpickles files")
    need, have = math.prod(shape) * dtype.itemsize, total_bytes - data_start
    if need > have:
        raise InputError(f"{where}: corrupt or truncated {what} (shape {shape} of {dtype} "
                         f"needs {need:,} bytes of data, it has {max(have, 0):,})")
    return tuple(shape), dtype


def _npy_file_header(path: str, where: str, what: str) -> tuple[tuple, np.dtype]:
    try:
        with open(path, "rb") as f:
            magic = f.read(len(NPY_MAGIC))
            if magic != NPY_MAGIC:
                raise InputError(f"{where}: " + ("not a .npy file (no NPY header)" if magic
                                                 else "empty file"))
            f.seek(0)
            return npy_header(f, where, os.fstat(f.fileno()).st_size, what)
    except OSError as exc:
        raise InputError(f"{where}: cannot read file ({exc.strerror or one_line(exc)})") from None


def _memmap(path: str, where: str) -> np.memmap:
    try:
        return np.lib.format.open_memmap(path, mode="r")
    except (OSError, ValueError) as exc:
        raise InputError(f"{where}: corrupt or truncated .npy file ({one_line(exc)})") from None


class NpyRows(RowStore):
    """A 2-D .npy file, memory-mapped (mapped again in a process that unpickles it)."""

    def __init__(self, path: str, where: str, max_size: int | None = None):
        super().__init__(where, max_size)
        self.path = os.path.abspath(os.fspath(path))
        self.shape, self.dtype = _npy_file_header(self.path, where, ".npy file")
        self._opened()
        self._mm = None

    def _read(self, lo, hi):
        if self._mm is None:
            self._mm = _memmap(self.path, self.where)
        mm = self._mm
        if not mm.flags.c_contiguous:  # Fortran order: a row is not one run of bytes
            return np.ascontiguousarray(mm[lo:hi])
        # read, not viewed through the map: pages of the mapping stay resident (and count in
        # the process's memory) while it lives, a read buffer is freed with its chunk
        n = self.shape[1]
        with open(self.path, "rb") as f:
            rows = np.fromfile(f, dtype=self.dtype, count=(hi - lo) * n,
                               offset=mm.offset + lo * n * self.dtype.itemsize)
        return rows.reshape(hi - lo, n)

    def _args(self):
        return self.path, self.where, self.max_size


class ShardRows(RowStore):
    """A directory of .npy shards in sorted name order, their rows one after another: each
    2-D (rows x n) or 1-D (one row), all of one n and one dtype (either byte order). Hidden
    names (starting with a dot: an editor's or a copy's temporary file) are not shards."""

    def __init__(self, path: str, where: str, max_size: int | None = None):
        super().__init__(where, max_size)
        self.path = os.path.abspath(os.fspath(path))
        try:
            names = sorted(name for name in os.listdir(self.path) if not name.startswith("."))
        except OSError as exc:
            raise InputError(f"{where}: cannot read directory ({exc.strerror or one_line(exc)})"
                             ) from None
        if not names:
            raise InputError(f"{where}: empty directory (expected .npy shards, or a zarr store)")
        self.files, starts, n, dtype, rows = [], [], None, None, 0
        for name in names:
            file = os.path.join(self.path, name)
            at = f"{where}: shard {name}"
            if not name.lower().endswith(".npy") or not os.path.isfile(file):
                raise InputError(f"{at} is not a .npy file (a directory of shards holds .npy "
                                 "files only, read in sorted name order)")
            shape, dt = _npy_file_header(file, at, ".npy file")
            if len(shape) not in (1, 2):
                raise InputError(f"{at} has shape {shape}: a shard is 2-D (rows x n) or 1-D "
                                 "(one row)")
            dt = dt.newbyteorder("=")  # the values, whichever the byte order
            if n is None:
                n, dtype = shape[-1], dt
            elif (shape[-1], dt) != (n, dtype):
                raise InputError(f"{at} has rows of {shape[-1]} {dt}, the first shard rows of "
                                 f"{n} {dtype}: shards must match")
            count = 1 if len(shape) == 1 else shape[0]
            if count and shape[-1]:
                self.files.append(file)
                starts.append(rows)
                rows += count
        self.starts = starts
        self.shape, self.dtype = (rows, n), dtype
        self._opened()
        self._maps: dict[int, np.ndarray] = {}

    def _shard(self, i: int) -> np.ndarray:
        if i not in self._maps:
            mm = _memmap(self.files[i], self.where)
            self._maps[i] = mm.reshape(1, -1) if mm.ndim == 1 else mm
        return self._maps[i]

    def _read(self, lo, hi):
        parts = []
        i = max(0, bisect.bisect_right(self.starts, lo) - 1)
        while lo < hi:
            start = self.starts[i]
            shard = self._shard(i)
            take = min(hi, start + shard.shape[0])
            parts.append(shard[lo - start:take - start])
            lo, i = take, i + 1
        if not parts:
            return np.empty((0, self.shape[1]), self.dtype)
        return np.asarray(parts[0]) if len(parts) == 1 else np.concatenate(parts)

    def _args(self):
        return self.path, self.where, self.max_size


class ZarrRows(RowStore):
    """A zarr array (v2 or v3 store): the store itself, or array ``name`` of a group (its only
    array when ``name`` is None). Read through zarr's slicing, a slice of rows at a time."""

    def __init__(self, path: str, name: str | None, where: str, max_size: int | None = None):
        super().__init__(where, max_size)
        self.path, self.name = os.path.abspath(os.fspath(path)), name
        self._pid, self._array = None, None
        array = self._open()
        try:
            self.dtype = np.dtype(array.dtype)
        except TypeError:
            raise InputError(f"{where}: expected numbers, got zarr data type {array.dtype}"
                             ) from None
        self.shape = tuple(array.shape)
        self._opened()

    def _open(self):
        if self._pid == os.getpid():
            return self._array
        try:
            import zarr
        except ImportError:
            raise InputError(ZARR_MISSING) from None
        try:
            node = zarr.open(self.path, mode="r")
        except Exception as exc:  # noqa: BLE001 - zarr's errors for a corrupt store, an
            # unknown data type (bfloat16), missing metadata: each means the store is unreadable
            hint = ("; zarr-python reads no bfloat16 arrays: store them as float32, which holds "
                    "bfloat16 exactly, and check with --dtype bfloat16"
                    if "bfloat16" in str(exc) else "")
            raise InputError(f"{self.where}: not a readable zarr store ({one_line(exc)}){hint}"
                             ) from None
        if isinstance(node, zarr.Array):
            if self.name is not None:
                raise InputError(f"{self.where}: {self.path} is a zarr array, not a group: "
                                 f"drop ':{self.name}'")
            array = node
        else:
            names = sorted(node.array_keys())
            listed = ", ".join(names) or "none"
            if self.name is None and len(names) != 1:
                raise InputError(f"{self.where}: a zarr group holding {len(names)} arrays "
                                 f"({listed}); pick one with :NAME")
            key = names[0] if self.name is None else self.name
            try:
                array = node[key]
            except KeyError:
                array = None
            if not isinstance(array, zarr.Array):
                raise InputError(f"{self.where}: no array named '{key}' in the zarr group "
                                 f"(arrays: {listed})")
        self._pid, self._array = os.getpid(), array
        return array

    def _read(self, lo, hi):
        try:
            return np.asarray(self._open()[lo:hi])
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - a missing or corrupt chunk
            raise InputError(f"{self.where}: cannot read rows {lo} to {hi} of the zarr store "
                             f"({one_line(exc)})") from None

    def _args(self):
        return self.path, self.name, self.where, self.max_size


class SafetensorsRows(RowStore):
    """A 2-D tensor of a ``.safetensors`` file (``name``: which; its only one when None), read
    a slice of rows at a time from its byte range, after the safetensors package validated the
    header. bfloat16 and float8 come as float32 (exact), the rest as stored."""

    def __init__(self, path: str, name: str | None, where: str, max_size: int | None = None):
        super().__init__(where, max_size)
        self.path = os.path.abspath(os.fspath(path))
        self.name, self.code, self.shape, self.offset = tensor_layout(self.path, name, where)
        self.dtype = value_dtype(self.code)
        self._opened()

    def _read(self, lo, hi):
        n, raw = self.shape[1], raw_dtype(self.code)
        count = (hi - lo) * n
        try:
            with open(self.path, "rb") as f:
                rows = np.fromfile(f, dtype=raw, count=count,
                                   offset=self.offset + lo * n * raw.itemsize)
        except OSError as exc:
            raise InputError(f"{self.where}: cannot read file ({exc.strerror or one_line(exc)})"
                             ) from None
        if rows.size != count:
            raise InputError(f"{self.where}: corrupt or truncated .safetensors file (rows {lo} "
                             f"to {hi} lie past its end)")
        return decode(rows, self.code).reshape(hi - lo, n)

    def _args(self):
        return self.path, self.name, self.where, self.max_size
