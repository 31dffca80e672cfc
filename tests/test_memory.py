"""Peak memory: each pipeline holds a fixed number of arrays the size of its input, O(n).

Measured with tracemalloc, to which numpy reports every array it allocates, on one thread (the
blocks of two threads may overlap their temporaries differently from run to run). The counts
are in arrays of n float64 values; the bounds sit a little above what the pipelines hold now
(forward 23, forward float32 20, log-softmax 30, vjp 33 at n = 2^17), so that an array kept
alive by mistake fails here, and the count must not grow with n.
"""

from __future__ import annotations

import tracemalloc

import pytest

from smcheck.blocks import using_threads
from smcheck.inputs import random_input
from smcheck.run import run_forward, run_vjp


def peak_arrays(fn, n: int, **kw) -> float:
    """The peak of traced memory during ``fn(x, **kw)`` for a random x of n entries, in
    arrays of n float64 values (x itself, allocated before, is not counted)."""
    x = random_input(n, seed=0, scale=3)
    fn(x[..., :1024], **kw)  # imports and tables, outside the measurement
    with using_threads(1):
        tracemalloc.start()
        try:
            fn(x, **kw)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return peak / (8 * n)


CASES = {
    "forward float64": (run_forward, {"engine": "dd"}, 26),
    "forward float32": (run_forward, {"dtype": "float32", "engine": "f64"}, 23),
    "forward log": (run_forward, {"engine": "dd", "log": True}, 33),
    "vjp": (run_vjp, {"engine": "dd"}, 36),
}


@pytest.mark.parametrize("name", list(CASES))
def test_peak_memory_is_a_fixed_number_of_input_sized_arrays(name):
    fn, kw, bound = CASES[name]
    small, large = peak_arrays(fn, 2 ** 16, **kw), peak_arrays(fn, 2 ** 17, **kw)
    assert large <= bound, f"{name}: peak of {large:.1f} arrays of n float64 (bound {bound})"
    # O(n): twice the entries, not more arrays of them (fixed-size tables weigh less)
    assert large <= small + 0.5, f"{name}: {small:.1f} arrays at n = 2^16, {large:.1f} at 2^17"
