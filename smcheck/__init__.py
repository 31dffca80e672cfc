"""smcheck: verify softmax, log-softmax and their derivatives against an mpmath reference.

The public API is small and importable without the CLI::

    import smcheck
    report = smcheck.check_forward([1000, 999, 990], impl="naive")
    report.passed            # False: exp overflows
    report.checks[0].max_ulp # errors per check

Heavy modules (numpy, mpmath) load on first use, so ``smcheck --help`` stays fast.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "check_forward", "SmcheckError", "InputError", "ImplementationError"]

from .exceptions import ImplementationError, InputError, SmcheckError  # noqa: E402


def __getattr__(name):
    if name == "check_forward":
        from .run import run_forward

        return run_forward
    raise AttributeError(f"module 'smcheck' has no attribute {name!r}")
