"""The captured outputs of real DRBD 8.4.11 + drbd-utils 9.22, read from the fixture files
in captures/ (drbd-8.4.11/: the switchover and crash scenarios; lab-edges/: the lab's own).

A fixture file is a list of blocks: ``### nodeN $ command``, ``### rc=N``, stdout, then
optionally ``### stderr:`` and stderr; the capture tool ends each block with one empty
line. Nothing is retyped here: the stand-in answers with these bytes.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

# Part of the repository (captures/README.md says where each came from): never skipped.
CAPTURES = Path(__file__).resolve().parent / "captures"
# Real DRBD 8.4.11 on two Debian 12 guests, one folder per scenario, one file per stage.
REAL_CAPTURES = CAPTURES / "drbd-8.4.11"
# What those never caught, captured the same way from the lab's real DRBD by
# tests/lab/capture-drbd (refusals, repeats, StandAlone, Outdated): scenario "lab-edges".
LAB_CAPTURES = CAPTURES / "lab-edges"
_HEADER = re.compile(r"^### (node\d+) \$ (.*)\n### rc=(\d+)\n", re.MULTILINE)

# Queries whose answer depends on the resource's state: answered from a snapshot.
STATE_QUERIES = (
    "drbdadm role srv",
    "drbdadm cstate srv",
    "drbdadm dstate srv",
    "cat /proc/drbd",
    "drbdadm status srv",
    "drbdsetup status srv --verbose --statistics",
    "timeout 3 drbdsetup events2 --now srv",
)


@dataclass(frozen=True)
class Capture:
    """One command as it ran on a real node."""

    scenario: str  # "switchover"
    stage: str  # "04-up-both-secondary"
    node: str  # "node1"
    command: str  # "drbdadm role srv" (a trailing "# comment" removed)
    rc: int
    stdout: str
    stderr: str


def parse_file(text: str, scenario: str, stage: str) -> list[Capture]:
    """The blocks of one fixture file."""
    captures = []
    headers = list(_HEADER.finditer(text))
    for index, header in enumerate(headers):
        end = headers[index + 1].start() if index + 1 < len(headers) else len(text)
        body = text[header.end() : end]
        # the capture tool separates blocks with one empty line
        if body.endswith("\n"):
            body = body[:-1]
        stdout, marker, stderr = body.partition("### stderr:\n")
        command = re.sub(r"\s+#.*$", "", header.group(2))
        captures.append(
            Capture(
                scenario,
                stage,
                header.group(1),
                command,
                int(header.group(3)),
                stdout,
                stderr if marker else "",
            )
        )
    return captures


def scenario_folders() -> list[Path]:
    """The folders of captures, one per scenario: real DRBD 8.4.11's, then the lab's."""
    real = sorted(path for path in REAL_CAPTURES.iterdir() if path.is_dir())
    if not real:
        raise FileNotFoundError(f"no DRBD scenario folders in {REAL_CAPTURES}")
    return [*real, LAB_CAPTURES]


def load() -> list[Capture]:
    """Every capture of every scenario, in file order: real DRBD 8.4.11's, then the lab's."""
    return [capture for folder in scenario_folders() for capture in _load(folder)]


@functools.lru_cache(maxsize=8)
def _load(folder: Path) -> tuple[Capture, ...]:
    captures: list[Capture] = []
    for path in sorted(folder.glob("*.txt")):
        captures.extend(parse_file(path.read_text(), folder.name, path.stem))
    if not captures:
        raise FileNotFoundError(f"no DRBD captures in {folder}")
    return tuple(captures)


def save_cache(captures: Iterable[Capture], path: Path) -> None:
    """The captures as JSON: the stand-in's tools start faster reading one file."""
    path.write_text(json.dumps([asdict(capture) for capture in captures]))


def load_cache(path: Path) -> list[Capture]:
    """Captures saved by save_cache."""
    return [Capture(**item) for item in json.loads(path.read_text())]


StateKey = tuple[str, str, str, str, str]  # role, peer role, cstate, disk, peer disk


@dataclass(frozen=True)
class Snapshot:
    """The state queries one node answered at one stage, and the state they show."""

    key: StateKey
    node: str
    answers: dict[str, Capture]


class Catalog:
    """The captures, indexed for the stand-in."""

    def __init__(self, captures: Iterable[Capture]) -> None:
        self.captures = list(captures)
        self.snapshots = self._snapshots()

    def first(self, command: str, node: str | None = None, **match: object) -> Capture:
        """The first capture of ``command`` (on ``node`` when there is one there)."""
        found = [
            capture
            for capture in self.captures
            if capture.command == command
            and all(getattr(capture, name) == value for name, value in match.items())
        ]
        if not found:
            raise LookupError(f"no capture of {command!r} with {match}")
        mine = [capture for capture in found if capture.node == node]
        return (mine or found)[0]

    def snapshot(self, key: StateKey, node: str) -> Snapshot | None:
        """A snapshot of exactly this state, preferably taken on ``node``."""
        found = [snapshot for snapshot in self.snapshots if snapshot.key == key]
        mine = [snapshot for snapshot in found if snapshot.node == node]
        return (mine or found or [None])[0]

    def _snapshots(self) -> list[Snapshot]:
        groups: dict[tuple[str, str, str], dict[str, Capture]] = {}
        for capture in self.captures:
            if capture.command in STATE_QUERIES and capture.rc == 0:
                groups.setdefault((capture.scenario, capture.stage, capture.node), {})[
                    capture.command
                ] = capture
        snapshots = []
        for (_, _, node), answers in groups.items():
            if not all(q in answers for q in STATE_QUERIES[:3]):
                continue
            roles = answers["drbdadm role srv"].stdout.strip().split("/")
            disks = answers["drbdadm dstate srv"].stdout.strip().split("/")
            cstate = answers["drbdadm cstate srv"].stdout.strip()
            key = (roles[0], roles[1], cstate, disks[0], disks[1])
            snapshots.append(Snapshot(key, node, answers))
        return snapshots
