"""Tensor files from ML frameworks: ``.safetensors`` is read; pickled checkpoints are refused.

A ``.safetensors`` file is a little-endian u64 header length, a JSON header (each tensor's
dtype, shape and byte range) and the raw data; nothing in it can run code. It is read with the
``safetensors`` package (an optional extra, ``pip install "smcheck[safetensors]"``, imported
only when such a file is read), which validates the header before any data is read. Its numpy
reader knows no bfloat16 or float8, so those tensors are read from their validated byte range
and viewed as the ml_dtypes format, whose values float64 holds exactly.

``.pt``, ``.pth``, ``.bin``, ``.ckpt``, ``.pkl`` and ``.pickle`` files are pickles (torch.save,
pickle.dump): loading one can run arbitrary code, so smcheck refuses them by their extension,
before opening them, and says how to save the tensor instead.
"""

from __future__ import annotations

import json
import math
import struct
from contextlib import contextmanager
from typing import Callable

import numpy as np

from .exceptions import InputError

#: what each pickled format is, for the refusal message
PICKLE_FORMATS = {
    ".pt": "PyTorch .pt files",
    ".pth": "PyTorch .pth files",
    ".bin": ".bin checkpoints (PyTorch's pytorch_model.bin)",
    ".ckpt": ".ckpt checkpoints (PyTorch Lightning)",
    ".pkl": "Python .pkl files",
    ".pickle": "Python .pickle files",
}
_SAVE_HINT = ('save the tensor with safetensors (safetensors.torch.save_file({"x": t}, '
              '"x.safetensors")) or numpy (np.save)')
#: the safetensors dtypes its numpy reader cannot make, read here as these ml_dtypes formats
_ML_DTYPES = {"BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
#: the safetensors dtypes its numpy reader makes (complex is refused later, as for .npy)
_NUMPY_DTYPES = {"F64", "F32", "F16", "I64", "U64", "I32", "U32", "I16", "U16", "I8", "U8",
                 "BOOL", "C64"}
#: each dtype's bytes as numpy reads them from the file (little-endian), for reading rows
_RAW_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "U64": "<u8",
               "I32": "<i4", "U32": "<u4", "I16": "<i2", "U16": "<u2", "I8": "|i1",
               "U8": "|u1", "BOOL": "|b1", "C64": "<c8", "BF16": "<u2", "F8_E4M3": "|u1",
               "F8_E5M2": "|u1"}
MISSING = ('reading .safetensors needs the safetensors package '
           '(pip install "smcheck[safetensors]")')


def refuse_pickle(ext: str, where: str) -> None:
    """An InputError for a file whose extension ``ext`` names a pickle format; else nothing."""
    if ext in PICKLE_FORMATS:
        raise InputError(f"{where}: {PICKLE_FORMATS[ext]} are pickles, which smcheck does not "
                         f"load (they can run code); {_SAVE_HINT}")


@contextmanager
def _reading(where: str):
    """The errors of reading a .safetensors file, each one ``error:`` line."""
    try:
        yield
    except InputError:
        raise
    except OSError as exc:
        raise InputError(f"{where}: cannot read file ({exc.strerror or _one_line(exc)})"
                         ) from None
    except MemoryError as exc:
        raise InputError(f"{where}: cannot hold the tensor ({_one_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - safetensors' own SafetensorError, and whatever
        # its header parser or numpy raise for a corrupt file: each means the same to the user
        raise InputError(f"{where}: corrupt or truncated .safetensors file "
                         f"({_one_line(exc)})") from None


def _safe_open():
    try:
        from safetensors import safe_open
    except ImportError:
        raise InputError(MISSING) from None
    return safe_open


def pick(keys: list[str], key: str | None, where: str, noun: str, flag: str) -> str:
    """The member ``key`` of a file holding ``keys`` (``noun``s: arrays of a .npz, tensors of a
    .safetensors), or its only one when ``key`` is None (``flag`` names how to choose)."""
    listed = ", ".join(keys)
    if key is None:
        if not keys:
            raise InputError(f"{where}: contains no {noun}s")
        if len(keys) > 1:
            raise InputError(f"{where}: holds several {noun}s ({listed}); pick one with {flag}")
        return keys[0]
    if key not in keys:
        raise InputError(f"{where}: no {noun} named '{key}' ({noun}s: {listed or 'none'})")
    return key


def _describe(f, key: str | None, where: str) -> tuple[str, str, tuple]:
    """(name, safetensors dtype, shape) of tensor ``key`` of the opened file ``f`` (its only
    tensor when ``key`` is None); an unknown name or dtype is refused."""
    key = pick(list(f.keys()), key, where, "tensor", ":NAME")
    view = f.get_slice(key)
    dtype, shape = view.get_dtype(), tuple(view.get_shape())
    if dtype not in _NUMPY_DTYPES and dtype not in _ML_DTYPES:
        raise InputError(f"{where}: tensor '{key}' has dtype {dtype}, which smcheck does not "
                         "read (use F64, F32, F16, BF16, F8_E4M3, F8_E5M2 or integers)")
    return key, dtype, shape


def load_safetensors(path: str, key: str | None, where: str,
                     check_count: Callable[[int], None]) -> np.ndarray:
    """Tensor ``key`` of the ``.safetensors`` file at ``path`` (its only tensor when ``key`` is
    None), in its own shape: float16/float32/float64 and integers as numpy reads them, bfloat16
    and float8 as exact float64. ``check_count(numbers)`` is called before its data is read
    (the --max-size limit)."""
    safe_open = _safe_open()
    with _reading(where):
        with safe_open(path, framework="numpy") as f:
            key, dtype, shape = _describe(f, key, where)
            check_count(math.prod(shape))
            if dtype in _NUMPY_DTYPES:
                return f.get_tensor(key)
        return _read_raw(path, key, _ML_DTYPES[dtype], shape)


def tensor_layout(path: str, key: str | None, where: str) -> tuple[str, str, tuple, int]:
    """Where tensor ``key`` lies in the file, to read it a slice of rows at a time
    (:class:`smcheck.stores.SafetensorsRows`): its name, its safetensors dtype, its shape and
    the offset of its first byte. The header is validated by the safetensors package first."""
    safe_open = _safe_open()
    with _reading(where):
        with safe_open(path, framework="numpy") as f:
            key, dtype, shape = _describe(f, key, where)
        begin = _data_range(path, key)[0]
    return key, dtype, shape, begin


def raw_dtype(code: str) -> np.dtype:
    """How the bytes of a tensor of safetensors dtype ``code`` are read (little-endian;
    bfloat16 and float8 as unsigned integers of their width)."""
    return np.dtype(_RAW_DTYPES[code])


def value_dtype(code: str) -> np.dtype:
    """The dtype :func:`decode` gives: float32 for bfloat16 and float8 (exact), else the
    tensor's own in native byte order."""
    return np.dtype(np.float32) if code in _ML_DTYPES else raw_dtype(code).newbyteorder("=")


def decode(raw: np.ndarray, code: str) -> np.ndarray:
    """Bytes read as :func:`raw_dtype` as numbers of :func:`value_dtype`."""
    native = raw.astype(raw.dtype.newbyteorder("="), copy=False)
    if code not in _ML_DTYPES:
        return native
    import ml_dtypes

    return native.view(np.dtype(getattr(ml_dtypes, _ML_DTYPES[code]))).astype(np.float32)


def _data_range(path: str, key: str) -> tuple[int, int]:
    """The absolute byte range of tensor ``key``'s data (header already validated)."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        begin, end = json.loads(f.read(length))[key]["data_offsets"]
    return 8 + length + begin, 8 + length + end


def _read_raw(path: str, key: str, ml_name: str, shape: tuple) -> np.ndarray:
    """The tensor's bytes, at the range the header gives (already validated by safe_open), as
    the ml_dtypes format ``ml_name`` (little-endian: read as unsigned integers, then viewed)
    and converted to float64 exactly."""
    import ml_dtypes

    ml_dtype = np.dtype(getattr(ml_dtypes, ml_name))
    begin, end = _data_range(path, key)
    with open(path, "rb") as f:
        f.seek(begin)
        data = f.read(end - begin)
    raw = np.frombuffer(data, dtype=f"<u{ml_dtype.itemsize}").astype(f"=u{ml_dtype.itemsize}")
    return raw.view(ml_dtype).astype(np.float64).reshape(shape)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
