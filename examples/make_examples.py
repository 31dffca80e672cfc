"""Regenerate examples/logits.npy deterministically.

    python examples/make_examples.py

32 standard normal values from numpy's default_rng(7), times 4: the same array as
``smcheck forward --random 32 --seed 7 --scale 4``. Saved as float64 without pickle.
"""

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def make_logits() -> np.ndarray:
    return np.random.default_rng(7).standard_normal(32) * 4.0


def main() -> None:
    path = HERE / "logits.npy"
    np.save(path, make_logits().astype(np.float64), allow_pickle=False)
    print(f"wrote {path.relative_to(HERE.parent)} (32 float64 values, seed 7, scale 4)")


if __name__ == "__main__":
    main()
