"""What the tests share, one of each: the way to run the CLI (and the interpreter every
child runs on), the progress recorder, the wait, and the rule for what a test needs but
cannot find (skip here, fail in CI). Imported as ``helpers``: pytest puts tests/ on the
path (as for mountns)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from hanode.resources import ProgressLine

ROOT = Path(__file__).resolve().parent.parent
# Debian's python3 is what the .deb runs hanode on: every child interpreter is this one.
PYTHON = "/usr/bin/python3"


def missing(reason: str) -> NoReturn:
    """A test cannot run here (``reason``: "ruff is not installed", "needs root"): skip,
    but fail in CI, which runs every test (tests/setup-host installs what they need)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI runs every test (tests/setup-host installs what they need)")
    pytest.skip(reason)


def run_hanode(
    *args: str,
    run_dir: Path | None = None,
    prefix: Sequence[str] = (),
    timeout: float = 120.0,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python3 -m hanode ARGS`` from this work tree, as the .deb runs it: Debian's python3
    and a clean environment (PATH; HANODE_RUN_DIR for the lock and the reports when
    ``run_dir`` is given; never the host's journal), plus ``env``'s variables (e.g.
    PYTHONPROFILEIMPORTTIME). ``prefix`` runs it through another command, e.g.
    ``ip netns exec NODE``."""
    variables = {
        "PATH": os.environ["PATH"],
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(ROOT),
        "HANODE_NO_JOURNAL": "1",
        **(env or {}),
    }
    if run_dir is not None:
        variables["HANODE_RUN_DIR"] = str(run_dir)
    return subprocess.run(
        [*prefix, PYTHON, "-m", "hanode", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=variables,
        timeout=timeout,
    )


class Progress:
    """A Context progress callback that records what a resource shows while it waits: the
    labels, the updates, and both in order as lines; it can act on the first update."""

    def __init__(self, on_first_update: Callable[[], None] | None = None) -> None:
        self.labels: list[str] = []
        self.updates: list[str] = []
        self.lines: list[str] = []  # "label" when shown, then "label: text" per update
        self.on_first_update = on_first_update

    @contextmanager
    def __call__(self, label: str) -> Iterator[ProgressLine]:
        self.labels.append(label)
        self.lines.append(label)
        yield _RecordedLine(self, label)

    def _record(self, label: str, text: str) -> None:
        self.updates.append(text)
        self.lines.append(f"{label}: {text}")
        if len(self.updates) == 1 and self.on_first_update is not None:
            self.on_first_update()


class _RecordedLine:
    """The live line of one label, recorded by its Progress."""

    def __init__(self, progress: Progress, label: str) -> None:
        self.progress = progress
        self.label = label

    def update(self, text: str) -> None:
        self.progress._record(self.label, text)


def imported(stderr: str) -> set[str]:
    """The modules a child run with PYTHONPROFILEIMPORTTIME (-X importtime) imported, from
    the lines its stderr holds: ``import time: self | cumulative | name``."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


SHM = Path("/dev/shm")  # a real mount: the [links] tests' mountpoint


def links_config(tmp_path: Path, mountpoint: Path, srv: Path, count: int = 1) -> Path:
    """A node managing ``count`` links from tmp_path into ``srv`` (on ``mountpoint``);
    returns its config file."""
    entries = []
    for number in range(count):
        (srv / f"data{number}").mkdir(parents=True)
        (tmp_path / f"path{number}").mkdir()
        path, target = tmp_path / f"path{number}", srv / f"data{number}"
        entries.append(f'{{ path = "{path}", target = "{target}" }}')
    config = tmp_path / "hanode.toml"
    config.write_text(f'[links]\nmountpoint = "{mountpoint}"\nlinks = [{", ".join(entries)}]\n')
    return config
