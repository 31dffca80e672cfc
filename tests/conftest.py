"""Shared test settings: hypothesis profiles, mpmath precision restored after every test, and
the ``cli`` fixture that runs smcheck's command line in this process."""

import os

import clirunner
import mpmath
import pytest
from hypothesis import HealthCheck, settings

# derandomized: CI runs the same examples every time (a counterexample found while developing
# is pinned with @example); HYPOTHESIS_PROFILE=explore searches afresh
settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _restore_mpmath_precision():
    dps = mpmath.mp.dps
    yield
    mpmath.mp.dps = dps


@pytest.fixture
def cli():
    """``cli(*argv, stdin="") -> Result``: ``smcheck ARGV`` in this process, with ``.code`` (0
    for None), ``.out``, ``.err`` and ``.json()`` (strict: no bare NaN / Infinity). Hypothesis
    tests call ``clirunner.run_cli`` itself (a fixture inside @given is a health-check error)."""
    return clirunner.run_cli


def pytest_terminal_summary(terminalreporter):
    """The mutation corpus's verdict tables (tests/test_mutations.py), when that module ran."""
    import sys

    mutants = sys.modules.get("mutants")
    results = getattr(mutants, "RESULTS", None)
    if results:
        terminalreporter.write_sep("=", "mutation corpus: smcheck verdicts")
        for line in mutants.format_tables(results):
            terminalreporter.write_line(line)


@pytest.fixture
def user_modules(tmp_path, monkeypatch):
    """``write({relative path: source})``: a user's Python files in a fresh directory that is
    the cwd and on sys.path (for ``--impl module:function`` and ``--impl file.py:function``);
    the top-level modules they define are forgotten before and after the test."""
    import sys

    names = []

    def write(files: dict):
        for rel, source in files.items():
            path = tmp_path / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source)
            if "/" not in rel:
                names.append(rel.removesuffix(".py"))
                sys.modules.pop(names[-1], None)
        return tmp_path

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield write
    for name in names:
        sys.modules.pop(name, None)
