"""Deliberately wrong (and one right) implementations, to see smcheck catch them.

    smcheck vjp --x-file examples/logits.txt --impl examples.wrong_impls:vjp_plus --check  # 1
    smcheck vjp --x-file examples/logits.txt --impl examples.wrong_impls:vjp_right --check # 0
    smcheck jacobian --preset one-hot --impl examples.wrong_impls:jacobian_textbook --metric strict
    smcheck loss --x-file examples/logits.txt --t 0,0,0,1,0,0,0,0 --impl examples.wrong_impls:grad_flipped --check
    smcheck forward --x 1e8,1e8 --log --dtype float32 --impl examples.wrong_impls:log_softmax_lse --check  # 1
    smcheck forward --random 4096 --dtype bfloat16 --impl examples.wrong_impls:softmax_sum_in_dtype --check  # 1
"""

import numpy as np


def _softmax(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def vjp_plus(x, v):
    """Sign error: s * (v + <v, s>)."""
    s = _softmax(x)
    return s * (np.asarray(v, np.float64) + np.dot(v, s))


def vjp_right(x, v):
    s = _softmax(x)
    return s * (np.asarray(v, np.float64) - np.dot(v, s))


def jacobian_textbook(x):
    """Correct formula, but the diagonal s_i - s_i^2 cancels when s_i is near 1."""
    s = _softmax(x)
    return np.diag(s) - np.outer(s, s)


def grad_flipped(z, t):
    """-z / t instead of -t / z."""
    return -np.asarray(z, np.float64) / np.asarray(t, np.float64)


def log_softmax_lse(x):
    """x - logsumexp(x), logsumexp = max + log S rounded at |max|: [0, 0] for [1e8, 1e8]."""
    m = np.max(x)
    return x - (m + np.log(np.sum(np.exp(x - m))))


def softmax_sum_in_dtype(x):
    """The normaliser added term by term in the input's own dtype: in bfloat16 or float16 the
    running sum stalls once it outgrows its terms, and the probabilities come out too large."""
    e = np.exp(x - np.max(x))
    return e / np.cumsum(e)[-1]
