"""What every hostile-input test checks (issues 17 and 34), shared by tests/test_hostile*.py: the command ends in
one line on stderr that says where and what (`error: ...`), exit status 2, no traceback, and nothing on disk
changed (inputs byte-identical, nothing new)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rait.cli import main


def jsonl(*rows) -> str:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


def fill(text: str, tmp: Path, model: Path) -> str:
    return text.replace("{tmp}", str(tmp)).replace("{model}", str(model))


def snapshot(folder: Path) -> dict:
    """Every path under `folder` (links as links, not followed) with its bytes."""
    return {p: (os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else None)
            for p in folder.rglob("*")}


def assert_refused(argv: list[str], folder: Path, capfd, fragments: list[str]) -> None:
    """`argv`, run in-process through `rait.cli.main`, ends in one error line holding `fragments`, exit 2, and
    leaves `folder` as it was. An exception escaping the CLI fails the test, as it would print a traceback."""
    before = snapshot(folder)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert all(f in lines[0] for f in fragments), (fragments, lines[0])
    assert "Traceback" not in err
    assert snapshot(folder) == before


def assert_refused_in_a_process(argv: list[str], folder: Path, env: dict[str, str | None] | None = None) -> None:
    """The same in a real process, reading its stderr: what a user sees. `env` sets variables (None unsets one)."""
    before = snapshot(folder)
    environ = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name, value in (env or {}).items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    done = subprocess.run([sys.executable, "-m", "rait", *argv], capture_output=True, text=True, timeout=300,
                          env=environ)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert len([line for line in done.stderr.splitlines() if line.strip()]) == 1, done.stderr
    assert snapshot(folder) == before
