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
MISSING = ('reading .safetensors needs the safetensors package '
           '(pip install "smcheck[safetensors]")')


def refuse_pickle(ext: str, where: str) -> None:
    """An InputError for a file whose extension ``ext`` names a pickle format; else nothing."""
    if ext in PICKLE_FORMATS:
        raise InputError(f"{where}: {PICKLE_FORMATS[ext]} are pickles, which smcheck does not "
                         f"load (they can run code); {_SAVE_HINT}")


def load_safetensors(path: str, key: str | None, where: str,
                     check_count: Callable[[int], None]) -> np.ndarray:
    """Tensor ``key`` of the ``.safetensors`` file at ``path`` (its only tensor when ``key`` is
    None), in its own shape: float16/float32/float64 and integers as numpy reads them, bfloat16
    and float8 as exact float64. ``check_count(numbers)`` is called before its data is read
    (the --max-size limit)."""
    try:
        from safetensors import safe_open
    except ImportError:
        raise InputError(MISSING) from None
    try:
        with safe_open(path, framework="numpy") as f:
            keys = list(f.keys())
            listed = ", ".join(keys)
            if key is None:
                if not keys:
                    raise InputError(f"{where}: contains no tensors")
                if len(keys) > 1:
                    raise InputError(f"{where}: holds several tensors ({listed}); pick one with "
                                     ":NAME")
                key = keys[0]
            elif key not in keys:
                raise InputError(f"{where}: no tensor named '{key}' (tensors: "
                                 f"{listed or 'none'})")
            view = f.get_slice(key)
            dtype, shape = view.get_dtype(), tuple(view.get_shape())
            if dtype not in _NUMPY_DTYPES and dtype not in _ML_DTYPES:
                raise InputError(f"{where}: tensor '{key}' has dtype {dtype}, which smcheck does "
                                 "not read (use F64, F32, F16, BF16, F8_E4M3, F8_E5M2 or "
                                 "integers)")
            check_count(math.prod(shape))
            if dtype in _NUMPY_DTYPES:
                return f.get_tensor(key)
        return _read_raw(path, key, _ML_DTYPES[dtype], shape)
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


def _read_raw(path: str, key: str, ml_name: str, shape: tuple) -> np.ndarray:
    """The tensor's bytes, at the range the header gives (already validated by safe_open), as
    the ml_dtypes format ``ml_name`` (little-endian: read as unsigned integers, then viewed)
    and converted to float64 exactly."""
    import ml_dtypes

    ml_dtype = np.dtype(getattr(ml_dtypes, ml_name))
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        begin, end = json.loads(f.read(length))[key]["data_offsets"]
        f.seek(8 + length + begin)
        data = f.read(end - begin)
    raw = np.frombuffer(data, dtype=f"<u{ml_dtype.itemsize}").astype(f"=u{ml_dtype.itemsize}")
    return raw.view(ml_dtype).astype(np.float64).reshape(shape)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
