"""``python -m smcheck``: the same entry point as the ``smcheck`` console script."""

from .cli import entry

if __name__ == "__main__":
    entry()
