"""``python -m smcheck``: the same entry point as the ``smcheck`` console script."""

import os
import sys

if __name__ == "__main__":
    # `python -m` puts the current directory first on sys.path, where a numpy.py or torch.py
    # of the user's would be imported in place of the real package. smcheck itself is already
    # imported (its modules are found through the package), and `--impl module:function`
    # still imports from the current directory (smcheck.impls.load_callable adds it for that
    # one import), so the entry goes: the same search path as the `smcheck` program.
    if sys.path and os.path.abspath(sys.path[0] or os.curdir) == os.getcwd():
        del sys.path[0]
    from smcheck.cli import entry

    entry()
