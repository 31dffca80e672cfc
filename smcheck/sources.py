"""Where each input comes from: exactly one source for x (--x, --x-file, --random, --preset,
or the command line's positional INPUT, sorted here into one of them), and the companions v, t
and z of the derivative commands, which must fit x's shape.

The arrays are read by :mod:`smcheck.inputs`; each comes back as a :class:`Source`, the array
and a short description for reports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TextIO

import numpy as np

from .exceptions import InputError, SmcheckError
from .inputs import DEFAULT_MAX_SIZE, check_size, load_file, parse_text, random_input
from .presets import PRESETS, get_preset
from .tensorfiles import PICKLE_FORMATS


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
    max_size: int | None = DEFAULT_MAX_SIZE,
) -> Source | None:
    """Read input ``name`` from exactly one of its sources; ``None`` if absent and not required.

    An input of more than ``max_size`` numbers is refused (``None``: no limit)."""
    check_size("--max-size", max_size)
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
        array = parse_text(text, name, max_size)
        return Source(array, f"--{name} ({_shape_words(array)})")
    if file is not None:
        array = load_file(file, name, stdin, max_size)
        return Source(array, f"{'stdin' if file == '-' else file} ({_shape_words(array)})")
    if random is not None:
        array = random_input(random, rows, seed, scale, max_size)
        return Source(array, f"random n={random} rows={rows} seed={seed} scale={scale:g}")
    assert preset is not None
    array = get_preset(preset).make()
    check_size(f"--preset {preset}", max_size, count=array.size)
    return Source(array, f"preset '{preset}'")


def _shape_words(array: np.ndarray) -> str:
    if array.ndim == 2:
        return f"{array.shape[0]} rows x {array.shape[1]}"
    if array.ndim > 2:
        return " x ".join(map(str, array.shape))
    return f"{array.size} value{'s' if array.size != 1 else ''}"


def load_x(positional, x, x_file, random, rows, seed, scale, preset,
           max_size=DEFAULT_MAX_SIZE):
    """The x array from exactly one source; the positional INPUT is sorted into one of them."""
    if positional is not None:
        p = positional
        stem = p.split(":")[0]
        if p == "-" or os.path.exists(stem) or os.path.splitext(stem)[1].lower() in (
                ".npy", ".npz", ".safetensors", ".json", ".csv", ".tsv", ".txt", *PICKLE_FORMATS):
            if x_file is not None:
                raise SmcheckError(f"give exactly one source for x, got INPUT '{p}' and --x-file")
            x_file = p
        elif p in PRESETS:
            if preset is not None:
                raise SmcheckError(f"give exactly one source for x, got INPUT '{p}' and --preset")
            preset = p
        else:
            if x is not None:
                raise SmcheckError(f"give exactly one source for x, got INPUT '{p}' and --x")
            x = p
    src = load_vector("x", text=x, file=x_file, random=random, rows=rows, seed=seed,
                      scale=scale, preset=preset, max_size=max_size)
    return src


def load_companion(name: str, text, file, required: bool = False,
                   max_size: int = DEFAULT_MAX_SIZE):
    src = load_vector(name, text=text, file=file, required=required, max_size=max_size)
    return None if src is None else src.array


def same_shape(name: str, arr, ref_name: str, ref) -> None:
    """Companion ``arr`` (v, t or z) fits ``ref`` (x, or z): the same rows x n, or one row of n
    for every row. Checked here, on the whole input: the core sees a batch in chunks of rows,
    and would name a chunk's shape."""
    if arr is None or ref is None:
        return
    shape, ref_shape = tuple(np.shape(arr)), tuple(np.shape(ref))
    rows_n = ref_shape if len(ref_shape) == 2 else (1, *ref_shape[-1:])
    if len(shape) == 1 and shape[0] == rows_n[1]:
        return
    if (shape if len(shape) == 2 else (1, *shape)) != rows_n:
        raise SmcheckError(f"{name} has shape {shape} but {ref_name} has shape {ref_shape}")


def flag_name(name: str, text, file) -> str:
    """How the user gave companion ``name``: --v or --v-file."""
    return f"--{name}-file" if file is not None and text is None else f"--{name}"
