"""Implementations under test: the built-ins (:mod:`.builtin`), a user's own callable
(:mod:`.user`), and the frameworks' (:mod:`.adapters`), all following :mod:`.base`.

Built-ins run in the requested format: every elementwise operation rounds to it (numpy's
float16 and ml_dtypes' bfloat16 ufuncs compute in float32 and round each result), while sums of
16-bit values accumulate in float32, as numpy's pairwise sum for float16 and torch's CPU kernels
do. They work on a batch at once (rows along the last axis).

* ``stable``  — shift by the max: exp(x - max) / sum exp(x - max); log-softmax as
  (x - max) - log1p(sum over the non-maximal entries), so the largest entry keeps its digits.
* ``naive``   — exp(x) / sum exp(x), no shift: overflows above log(realmax); log of it for --log.
* ``divfree`` — exp(x - logsumexp(x)) with a shifted logsumexp; x - logsumexp(x) for --log.
* ``module.path:function`` or ``path/to/file.py:function`` — a user's callable, called once per
  row (see :class:`UserCallable`).
"""

from __future__ import annotations

from ..exceptions import ImplementationError
from .adapters import make_adapter
from .base import Implementation
from .builtin import Builtin
from .formulas import (_BUILTINS, BUILTIN_NAMES, builtin_jacobian, builtin_loss_grad, builtin_vjp,
                       vjp_at)
from .user import UserCallable, load_callable, to_numpy

__all__ = ["ADAPTER_NAMES", "BUILTIN_NAMES", "Builtin", "Implementation", "UserCallable",
           "builtin_jacobian", "builtin_loss_grad", "builtin_vjp", "vjp_at", "get_implementation",
           "load_callable", "to_numpy"]

ADAPTER_NAMES = ("scipy", "torch", "jax")


def get_implementation(spec) -> Implementation:
    """The implementation named by ``--impl`` (or, from Python, an Implementation or a plain
    callable, which is treated like a user's ``module:function``); how it runs (torch's
    ``--device``, a callable's ``--batched``) is :meth:`Implementation.for_options`'s."""
    if isinstance(spec, Implementation):
        return spec
    if callable(spec):
        return UserCallable(getattr(spec, "__qualname__", None) or repr(spec), spec)
    spec = (spec or "").strip() if isinstance(spec, str) else ""
    if spec in _BUILTINS:
        return Builtin(spec)
    if spec in ADAPTER_NAMES:
        return make_adapter(spec)
    if ":" in spec:  # module.path:function, or path/to/file.py:function
        return UserCallable(spec, load_callable(spec))
    raise ImplementationError(
        f"unknown implementation '{spec}' (built in: {', '.join(BUILTIN_NAMES)}; adapters: "
        f"{', '.join(ADAPTER_NAMES)}; or module.path:function or path/to/file.py:function "
        "for your own)")
