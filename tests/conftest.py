"""Tiers: unit tests run anywhere; `root`, `systemd` and `lab` tests need more and skip
cleanly (with the reason) where it is missing. CI runs as root and tests/setup-host
installs the rest, so there a missing need fails instead (helpers.missing)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import SHM, missing

_NEEDS_ROOT = ("root", "systemd", "lab")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture of the test runs: skip it (fail it in CI) if its tier cannot run."""
    marks = {mark.name for mark in item.iter_markers()}
    if "lab" in marks and os.environ.get("HANODE_SKIP_LAB"):
        pytest.skip("HANODE_SKIP_LAB is set")  # asked for, so a skip in CI too
    if marks & set(_NEEDS_ROOT) and os.geteuid() != 0:
        missing("needs root")
    if "systemd" in marks and not shutil.which("systemd-nspawn"):
        missing("needs systemd-nspawn (systemd-container)")
    if "lab" in marks and not shutil.which("qemu-system-x86_64"):
        missing("needs qemu-system-x86_64")


@pytest.fixture
def shared_memory(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A directory of the test's own on the real mount /dev/shm (links' mountpoint)."""
    if not os.path.ismount(SHM):
        missing("/dev/shm is not a mount point")
    where = Path(tempfile.mkdtemp(prefix="hanode-test-", dir=SHM))
    yield where
    shutil.rmtree(where)
