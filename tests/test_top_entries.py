"""The worst entries a check lists: the cut at the k-th largest ratio, fast on many equal
ratios, against a full sort."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_kth_largest_of_the_worst_entries_is_a_full_sorts(data):
    """top_entries' cut (smcheck.checks.common._kth_largest) against np.sort, on random
    arrays and on arrays of many equal values (a loss's ratios: mostly 0)."""
    from smcheck.checks.worst import _kth_largest

    n = data.draw(st.integers(11, 20000))
    kind = data.draw(st.sampled_from(["random", "few nonzero", "three values", "plateau"]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    if kind == "random":
        a = rng.random(n)
    elif kind == "few nonzero":
        a = np.zeros(n)
        a[rng.integers(0, n, rng.integers(0, 20))] = rng.random()
    elif kind == "three values":
        a = rng.integers(0, 3, n).astype(float)
    else:
        a = np.full(n, 0.5)
        a[rng.integers(0, n, 50)] = rng.choice([0.7, 0.9], 50)
    k = data.draw(st.integers(1, 10))
    assert _kth_largest(a, k) == np.sort(a)[n - k]
