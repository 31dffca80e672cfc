"""The JSON of the README's examples (and of one multi-chunk batch per command) is the same,
byte for byte, as the files in tests/golden/: a refactoring that changes what a user's CI reads
fails here. After a deliberate change of the output, regenerate them and read the diff:

    python tests/test_golden_json.py
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden"

#: the README's example command lines (tour, findings table), the CI example's, and batches
#: cut into several chunks (on 2 workers), so that merging chunk reports is covered
COMMANDS = [
    "forward --x 1000,999,990 --impl naive --top 2",
    "forward --x-file examples/batch.csv --dtype bfloat16",
    "forward --random 1000 --rows 3 --scale 5 --dtype bfloat16 --top 4",
    "forward --preset one-hot --log --impl divfree --dtype float32",
    "forward --preset overflow --impl naive",
    "forward --preset overflow --impl divfree",
    "forward --preset overflow",
    "forward --x-file examples/overflow.json --impl naive",
    "forward --x-file examples/logits.txt --dtype float16 --log",
    "forward --preset one-hot --log --impl stable --metric strict",
    "jacobian --preset one-hot --metric strict",
    "jacobian --x-file examples/logits.txt --impl naive --dtype float32",
    "vjp --x-file examples/logits.txt --dtype float16",
    "vjp --preset overflow --impl naive",
    "loss --x-file examples/zero_z/x.txt --v-file examples/zero_z/v.txt"
    " --t-file examples/zero_z/t.txt",
    "loss --preset overflow --t 0,1,0 --dtype float32",
    "claims --x 1,2,3",
    "sweep --impl naive --preset overflow --preset ties --dtype float32",
    "forward --random 4096 --rows 100 --scale 30 --dtype bfloat16 --workers 2 --top 5",
    "forward --random 4096 --rows 100 --scale 800 --impl naive --workers 2 --top 5",
    "forward --random 512 --rows 300 --scale 800 --impl divfree --log --workers 2",
    "jacobian --random 64 --rows 40 --scale 800 --impl naive --workers 2 --max-dense 64",
    "vjp --random 4096 --rows 70 --scale 800 --impl naive --dtype float32 --workers 2",
    "loss --random 512 --rows 300 --scale 3 --t-file {t} --dtype float32 --workers 2",
    "loss --random 512 --rows 300 --scale 2 --impl naive --dtype float16 --t-file {t} --workers 2",
]


def t_file(directory: Path) -> Path:
    """One-hot targets for the 300 x 512 loss batch (class 7 of each row)."""
    import numpy as np

    t = np.zeros((300, 512))
    t[:, 7] = 1.0
    path = directory / "t_300x512.npy"
    np.save(path, t)
    return path


def golden_path(command: str) -> Path:
    slug = command.split()[0] + "-" + hashlib.sha1(command.encode()).hexdigest()[:10]
    return GOLDEN / f"{slug}.json"


def run_json(command: str, directory: Path) -> str:
    """``smcheck COMMAND --json`` in this process, from the repository root: its stdout."""
    import contextlib
    import io
    import os

    from smcheck.cli import main

    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main([*shlex.split(command.format(t=t_file(directory))), "--json"])
            except SystemExit as exc:
                assert exc.code in (None, 0), (command, exc.code, err.getvalue())
    finally:
        os.chdir(cwd)
    return out.getvalue()


@pytest.mark.parametrize("command", COMMANDS)
def test_json_is_byte_identical(command, tmp_path):
    want = golden_path(command).read_text()
    got = run_json(command, tmp_path)
    json.loads(got)  # one JSON document
    assert got == want, f"smcheck {command} --json differs from {golden_path(command).name}"


if __name__ == "__main__":
    import tempfile

    GOLDEN.mkdir(exist_ok=True)
    for cmd in COMMANDS:
        with tempfile.TemporaryDirectory() as tmp:
            golden_path(cmd).write_text(run_json(cmd, Path(tmp)))
        print(golden_path(cmd).name, cmd, file=sys.stderr)
