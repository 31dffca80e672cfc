"""The JSON Schema of ``smcheck COMMAND --json`` (``smcheck/schema.json``, draft 2020-12),
shipped with the package: ``smcheck schema`` prints it, CI validates against it.

:func:`validate` needs the ``jsonschema`` package (``pip install jsonschema``); smcheck itself
runs without it, and it is imported only when a document is validated.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from importlib import resources

from .exceptions import SmcheckError


def schema_text() -> str:
    """The schema as it ships (one JSON document)."""
    return resources.files(__package__).joinpath("schema.json").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _schema() -> dict:
    return json.loads(schema_text())


def schema() -> dict:
    """The schema as a dict (a fresh copy: the caller may change it)."""
    return json.loads(schema_text())


class MissingJsonschema(SmcheckError):
    """``jsonschema`` is not installed: validation is impossible (not a verdict)."""


def errors(doc) -> list[str]:
    """Every way ``doc`` (a parsed ``--json`` document) breaks the schema, most relevant
    first, each as ``at $.path: message``; empty when it is valid."""
    try:
        import jsonschema
    except ImportError:
        raise MissingJsonschema("validating needs the jsonschema package: pip install "
                                "jsonschema (or smcheck[test])") from None
    from jsonschema.exceptions import best_match, relevance

    validator = jsonschema.Draft202012Validator(_schema())
    found = sorted(validator.iter_errors(doc), key=relevance, reverse=True)
    if found:  # the most relevant first, down into an anyOf's alternatives
        found[0] = best_match(found)
    return [f"at {e.json_path}: {_short(e.message)}" for e in found]


def validate(doc) -> None:
    """Raise :class:`SmcheckError` naming the first problem unless ``doc`` is valid."""
    problems = errors(doc)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise SmcheckError(f"not a valid smcheck document: {problems[0]}{more}")


def validate_file(path: str) -> tuple[int, str]:
    """``smcheck schema --validate PATH`` ("-": standard input): the exit status (0 valid, 1
    not a valid document) and the line to print (stdout for 0, stderr for 1). An unreadable
    file or a missing ``jsonschema`` raises :class:`SmcheckError` (exit status 2)."""
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
    except OSError as exc:
        raise SmcheckError(f"--validate {path}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise SmcheckError(f"--validate {path}: cannot read as text ({exc})") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return 1, f"error: {path}: not a valid smcheck document: not JSON ({exc})\n"
    problems = errors(doc)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return 1, f"error: {path}: not a valid smcheck document: {problems[0]}{more}\n"
    return 0, f"{path}: a valid smcheck {doc.get('command')} document\n"


def command(validate: str | None = None) -> int:
    """``smcheck schema [--validate PATH]``: print the schema, or validate a document (the
    line of :func:`validate_file` on stdout or stderr); the exit status."""
    code, text = (0, schema_text()) if validate is None else validate_file(validate)
    (sys.stderr if code else sys.stdout).write(text)
    return code


def _short(message: str, limit: int = 200) -> str:
    message = " ".join(message.split())
    return message if len(message) <= limit else message[:limit - 3] + "..."
