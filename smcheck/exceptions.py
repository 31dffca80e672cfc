"""The one domain exception of smcheck.

Everything the user can get wrong (a malformed number, a missing file, an unknown preset, an
implementation that raises) is raised as :class:`SmcheckError` with a message that says what is
wrong and what to do. The CLI catches it, prints ``error: <message>`` on stderr and exits 2;
library users catch it like any exception.
"""


class SmcheckError(Exception):
    """A usage or input error, with a one-line, actionable message (no ``error:`` prefix)."""


class InputError(SmcheckError):
    """The input (x, v, t or z) could not be read or is not a usable array of numbers."""


class ImplementationError(SmcheckError):
    """The implementation under test could not be loaded, raised, or returned a wrong shape."""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (numpy's and zarr's can span several; an
    ``error:`` line must not), or its type's name when it has none."""
    return " ".join(str(exc).split()) or type(exc).__name__
