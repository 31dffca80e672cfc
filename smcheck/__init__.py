"""smcheck: verify softmax, log-softmax and their derivatives against an mpmath reference.

The public API is small and importable without the CLI::

    import smcheck
    report = smcheck.check_forward([1000, 999, 990], impl="naive")
    report.passed            # False: exp overflows
    report.checks[0].max_ulp # errors per check

Heavy modules (numpy, mpmath) load on first use, so ``smcheck --help`` stays fast; so does
``smcheck.strategies`` (hypothesis strategies for adversarial logits; needs hypothesis).
"""

__version__ = "0.1.0"

from .exceptions import ImplementationError, InputError, SmcheckError

_LAZY = {
    "check_forward": ("api", "check_forward"),
    "check_jacobian": ("api", "check_jacobian"),
    "check_vjp": ("api", "check_vjp"),
    "check_loss": ("api", "check_loss"),
    "check_claims": ("claims", "run_claims"),
    "sweep": ("sweep", "run_sweep"),
    "check": ("api", "check"),
    "assert_correct": ("api", "assert_correct"),
    "SoftmaxCheckError": ("api", "SoftmaxCheckError"),
    "render_text": ("report", "render_text"),
    "Options": ("options", "Options"),
}
#: submodules loaded on first access: ``smcheck.strategies`` imports hypothesis
_LAZY_MODULES = ("strategies",)

__all__ = ["__version__", "SmcheckError", "InputError", "ImplementationError", *_LAZY]


def __getattr__(name):
    if name in _LAZY_MODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'smcheck' has no attribute {name!r}")
