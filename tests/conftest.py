"""Tiers: unit tests run anywhere; `root`, `systemd` and `lab` tests need more and skip
cleanly (with the reason) where it is missing. CI runs as root, so it runs them all."""

from __future__ import annotations

import os
import shutil

import pytest

_NEEDS_ROOT = ("root", "systemd", "lab")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    is_root = os.geteuid() == 0
    for item in items:
        marks = {mark.name for mark in item.iter_markers()}
        if marks & set(_NEEDS_ROOT) and not is_root:
            item.add_marker(pytest.mark.skip(reason="needs root"))
        elif "systemd" in marks and not shutil.which("systemd-nspawn"):
            item.add_marker(pytest.mark.skip(reason="needs systemd-nspawn (systemd-container)"))
        elif "lab" in marks:
            if os.environ.get("HANODE_SKIP_LAB"):
                item.add_marker(pytest.mark.skip(reason="HANODE_SKIP_LAB is set"))
            elif not shutil.which("qemu-system-x86_64"):
                item.add_marker(pytest.mark.skip(reason="needs qemu-system-x86_64"))
