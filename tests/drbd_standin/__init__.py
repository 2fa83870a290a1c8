"""A DRBD stand-in for hosts without the DRBD module, fed by captures of real DRBD 8.4.11.

``StandIn(directory, node)`` makes a state directory with ``bin/drbdadm`` and
``bin/drbdsetup`` (links to the executables here: put ``bin_dir`` first on HANODE_PATH,
hanode ignores PATH) and a /proc/drbd replacement (``proc_path``). Tests play the peer
through it: ``peer(up=True)``
(it connects), ``peer(role="Primary")``, ``peer(up=False)`` (it vanishes),
``peer(link="standalone")`` (connection refused / split brain), and ``crash()`` this node.
hanode.run passes children only PATH, so the tools find their state from the bin/
directory they were run from (or $DRBD_STANDIN_DIR when set).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from drbd_standin.fixtures import Catalog, load, save_cache
from drbd_standin.machine import CAPTURES_FILE, PROC_FILE, Machine, initial_state, view

BIN = Path(__file__).resolve().parent / "bin"

__all__ = ["StandIn", "load"]


class StandIn:
    """One node's DRBD, as seen through drbdadm, drbdsetup and /proc/drbd."""

    def __init__(self, directory: Path, node: str = "node1", **state: Any) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.bin_dir = directory / "bin"
        self.bin_dir.mkdir(exist_ok=True)
        for tool in ("drbdadm", "drbdsetup"):
            link = self.bin_dir / tool
            if not link.exists():
                link.symlink_to(BIN / tool)
        captures = load()
        save_cache(captures, directory / CAPTURES_FILE)
        self.machine = Machine(directory, Catalog(captures))
        initial = initial_state(node)
        initial.update(state)
        self.machine.write(initial)

    @property
    def proc_path(self) -> Path:
        """The /proc/drbd replacement."""
        return self.directory / PROC_FILE

    def state(self) -> dict[str, Any]:
        """The whole state, as the tools see it."""
        return self.machine.read()

    def view(self) -> tuple[str, str, str, str, str] | None:
        """(role, peer role, cstate, disk, peer disk), or None when not up."""
        return view(self.state())

    def update(self, **changes: Any) -> None:
        """Change this node's state (role, disk, up, held_open, cstate, meta...)."""
        with self.machine.changing() as state:
            for key, value in changes.items():
                if key == "meta":
                    state["meta"].update(value)
                else:
                    state[key] = value

    def peer(self, **changes: Any) -> None:
        """Change the peer: up (connected), role, disk, link ("ok" or "standalone")."""
        with self.machine.changing() as state:
            state["peer"].update(changes)

    def crash(self) -> None:
        """This node loses power: not up; the meta-data keeps what the kernel last wrote."""
        # the meta-data flags are re-derived only while up: the crash keeps the last ones
        with self.machine.changing() as state:
            state.update(up=False, role="Secondary", cstate=None)

    def calls(self) -> list[str]:
        """Every command run so far, "drbdadm role srv" style."""
        path = self.directory / "calls.log"
        if not path.exists():
            return []
        return [line.split("\t", 1)[1] for line in path.read_text().splitlines()]

    def synthesized(self) -> list[str]:
        """The answers that were not captures (each with why)."""
        path = self.directory / "synthesized.log"
        return path.read_text().splitlines() if path.exists() else []

    def dump(self) -> str:
        """The state as JSON, for assertion messages."""
        return json.dumps(self.state(), indent=1)
