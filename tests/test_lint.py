"""ruff and mypy (strict) as tests: skipped where the tool is missing locally (e.g. the
package build: ruff is not in Debian 12), enforced when CI is set."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import missing

ROOT = Path(__file__).resolve().parent.parent


LINTED = [folder for folder in ("hanode", "tests", "bench") if (ROOT / folder).is_dir()]


def tool(name: str) -> str:
    # the venv's ruff sits beside the interpreter running the tests
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        missing(f"{name} is not installed")
    return found


def test_ruff() -> None:
    result = subprocess.run(
        [tool("ruff"), "check", "--no-cache", *LINTED],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = subprocess.run(
        [tool("mypy"), "--config-file", "mypy.ini", "--no-incremental", "--cache-dir", os.devnull],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_shell_true_anywhere() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for folder in LINTED
        for path in (ROOT / folder).rglob("*.py")
        if "shell=" + "True" in path.read_text()
    ]
    assert offenders == []
