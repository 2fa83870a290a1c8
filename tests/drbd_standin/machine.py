"""A DRBD stand-in: a small state machine that answers drbdadm/drbdsetup as 8.4.11 did.

The host has no DRBD module, so tests drive hanode's DRBD resource through this. Its
state (this node and what it knows of the peer) is a JSON file in a state directory,
with a /proc/drbd replacement rendered next to it on every change. Every answer is a
capture from captures/ (real DRBD 8.4.11's, see captures/README.md), byte for byte,
chosen by the current state; where the real tools were never captured in that
situation, the answer is built from a captured answer of the same shape and logged to
``synthesized.log`` so a test can tell (the lab must capture those). Every call is
logged to ``calls.log``.

Tests change the peer (connects, Primary, vanishes, StandAlone) with ``StandIn``.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drbd_standin.fixtures import Catalog, StateKey, load, load_cache

STATE_FILE = "state.json"
PROC_FILE = "proc_drbd"
LAB = "lab-edges"  # the scenario of tests/lab/capture-drbd
CAPTURES_FILE = "captures.json"  # the fixtures, read once by the test and saved here
CONNECTED = {
    "Connected",
    "SyncSource",
    "SyncTarget",
    "WFBitMapS",
    "WFBitMapT",
    "PausedSyncS",
    "PausedSyncT",
    "VerifyS",
    "VerifyT",
    "StartingSyncS",
    "StartingSyncT",
    "WFSyncUUID",
}


def initial_state(node: str) -> dict[str, Any]:
    """A fresh pair after create-md: this node and the peer down, data UpToDate on both."""
    return {
        "node": node,
        "resource": "srv",
        "minor": 1,
        "up": False,
        "role": "Secondary",
        "disk": "UpToDate",  # the local disk once attached
        "cstate": None,  # forces a connected sub-state (e.g. "SyncTarget") while connected
        "held_open": False,  # someone has /dev/drbd1 open: secondary and down fail
        "kernel": "8.4.11",
        # 8.4's meta-data flags, as the kernel last wrote them (get-gi prints them)
        "meta": {
            "consistent": 1,
            "was_up_to_date": 1,
            "primary": 0,
            "connected": 1,
            "full_sync": 0,
            "peer_outdated": 0,
            "crashed_primary": 0,
        },
        # the peer as this node would see it once connected; link "standalone": refused
        "peer": {"up": False, "role": "Secondary", "disk": "UpToDate", "link": "ok"},
    }


@dataclass(frozen=True)
class Reply:
    """What a command prints and returns."""

    stdout: str
    stderr: str
    rc: int


def view(state: dict[str, Any]) -> StateKey | None:
    """The local view: role, peer role, cstate, disk, peer disk; None when not up."""
    if not state["up"]:
        return None
    peer = state["peer"]
    if peer["link"] == "standalone":
        return (state["role"], "Unknown", "StandAlone", state["disk"], "DUnknown")
    if peer["up"]:
        cstate = state["cstate"] or "Connected"
        return (state["role"], peer["role"], cstate, state["disk"], peer["disk"])
    peer_disk = "Outdated" if state["meta"]["peer_outdated"] else "DUnknown"
    return (state["role"], "Unknown", "WFConnection", state["disk"], peer_disk)


class Machine:
    """The state directory: load, change, save (under a lock), render /proc/drbd."""

    def __init__(self, directory: Path, catalog: Catalog | None = None) -> None:
        self.directory = directory
        if catalog is None:
            cache = directory / CAPTURES_FILE
            catalog = Catalog(load_cache(cache) if cache.exists() else load())
        self.catalog = catalog

    @contextmanager
    def changing(self) -> Iterator[dict[str, Any]]:
        """The state, locked for a read-modify-write; saved and rendered on exit."""
        with open(self.directory / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self.read()
            yield state
            self._remember(state)
            self.write(state)

    def read(self) -> dict[str, Any]:
        """The current state."""
        data: dict[str, Any] = json.loads((self.directory / STATE_FILE).read_text())
        return data

    def write(self, state: dict[str, Any]) -> None:
        """Save the state and render /proc/drbd, each replaced atomically."""
        _replace(self.directory / STATE_FILE, json.dumps(state, indent=1) + "\n")
        _replace(self.directory / PROC_FILE, self.proc_drbd(state))

    @staticmethod
    def _remember(state: dict[str, Any]) -> None:
        # the kernel writes the role and connection into the meta-data on each change
        key = view(state)
        if key is not None:
            state["meta"]["primary"] = int(key[0] == "Primary")
            state["meta"]["connected"] = int(key[2] in CONNECTED)

    def log(self, name: str, line: str) -> None:
        """Append one line to a log in the state directory."""
        with open(self.directory / name, "a") as handle:
            handle.write(line + "\n")

    # -- answers ---------------------------------------------------------------------------

    def captured(self, command: str, **match: object) -> Reply:
        """A capture, as it was."""
        state = self.read()
        capture = self.catalog.first(command, state["node"], **match)
        return Reply(capture.stdout, capture.stderr, capture.rc)

    def synthesized(self, argv: list[str], reply: Reply, why: str) -> Reply:
        """A reply never captured on real DRBD: logged so tests and the lab know."""
        self.log("synthesized.log", f"{' '.join(argv)}\t{why}")
        return reply

    def query(self, command: str, argv: list[str]) -> Reply:
        """role, cstate, dstate, /proc/drbd, status...: from a snapshot of this state."""
        state = self.read()
        key = view(state)
        if key is None:
            return self._query_not_up(command, argv)
        snapshot = self.catalog.snapshot(key, state["node"])
        if snapshot is not None and command in snapshot.answers:
            capture = snapshot.answers[command]
            return Reply(capture.stdout, capture.stderr, capture.rc)
        role, peer_role, cstate, disk, peer_disk = key
        shaped = {
            "drbdadm role srv": f"{role}/{peer_role}\n",
            "drbdadm cstate srv": f"{cstate}\n",
            "drbdadm dstate srv": f"{disk}/{peer_disk}\n",
            "cat /proc/drbd": self.proc_drbd(state),
        }
        if command not in shaped:
            return self.synthesized(
                argv,
                Reply("", f"drbd stand-in: {command!r} never captured in {key}\n", 99),
                "no capture of this state",
            )
        return self.synthesized(argv, Reply(shaped[command], "", 0), f"state {key} never captured")

    def _query_not_up(self, command: str, argv: list[str]) -> Reply:
        if command in ("drbdadm role srv", "drbdadm cstate srv"):
            return self.captured(command, stage="02-before-up")
        if command == "drbdadm dstate srv":
            # captured only inside `drbdadm role srv; drbdadm cstate srv; drbdadm dstate srv`,
            # where role and cstate print nothing on stdout: dstate's line is the first
            combined = self.catalog.first(
                "drbdadm role srv; drbdadm cstate srv; drbdadm dstate srv; cat /proc/drbd"
            )
            return Reply(combined.stdout.splitlines(keepends=True)[0], "", 0)
        if command == "cat /proc/drbd":
            return Reply(self.proc_drbd(self.read()), "", 0)
        if command in ("drbdadm status srv", "drbdsetup status srv --verbose --statistics"):
            return self.captured(command, stage="02-before-up")
        return self.captured(command, stage="02-before-up")

    def proc_drbd(self, state: dict[str, Any]) -> str:
        """/proc/drbd for this state: a capture of it, else a captured one re-labelled."""
        key = view(state)
        header = self.catalog.first("cat /proc/drbd", stage="02-before-up").stdout
        if key is None:
            return header
        snapshot = self.catalog.snapshot(key, state["node"])
        if snapshot is not None:
            return snapshot.answers["cat /proc/drbd"].stdout
        # same layout as the captured lines, with this state's words
        template = self.catalog.first("cat /proc/drbd", stage="08-node1-demoted").stdout
        role, peer_role, cstate, disk, peer_disk = key
        self.log("synthesized.log", f"/proc/drbd\tstate {key} never captured")
        return re.sub(
            r"cs:\S+ ro:\S+ ds:\S+",
            f"cs:{cstate} ro:{role}/{peer_role} ds:{disk}/{peer_disk}",
            template,
        )


def _replace(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)


# -- the commands ----------------------------------------------------------------------------


def drbdadm(machine: Machine, argv: list[str]) -> Reply:
    """drbdadm as 8.4.11 + drbd-utils 9.22 answered it."""
    args = argv[1:]
    line = " ".join(argv)
    if args == ["--version"]:
        return machine.captured("drbdadm --version")
    if len(args) < 2 or args[-1] != "srv":
        return machine.synthesized(
            argv, Reply("", f"drbd stand-in: no capture for {line!r}\n", 99), "unknown command"
        )
    verb, options = args[0], args[1:-1]
    if verb == "dump" and not options:
        return machine.captured("drbdadm dump srv")
    if verb in ("role", "cstate", "dstate", "status") and not options:
        return machine.query(line, argv)
    if verb == "get-gi" and not options:
        return _get_gi(machine, argv)
    if verb == "up" and not options:
        return _up(machine, argv)
    if verb == "down" and not options:
        return _down(machine, argv)
    if verb == "primary" and options in ([], ["--force"]):
        return _primary(machine, argv, force=bool(options))
    if verb == "secondary" and not options:
        return _secondary(machine, argv)
    if verb == "secondary" and options == ["--force"]:
        return machine.captured("drbdadm secondary --force srv")  # 8.4: unrecognized option
    return machine.synthesized(
        argv, Reply("", f"drbd stand-in: no capture for {line!r}\n", 99), "unknown command"
    )


def _get_gi(machine: Machine, argv: list[str]) -> Reply:
    meta = machine.read()["meta"]
    flags = ":".join(
        str(meta[name])
        for name in (
            "consistent",
            "was_up_to_date",
            "primary",
            "connected",
            "full_sync",
            "peer_outdated",
            "crashed_primary",
        )
    )
    for capture in machine.catalog.captures:
        if capture.command == "drbdadm get-gi srv" and capture.stdout.strip().endswith(flags):
            return Reply(capture.stdout, capture.stderr, capture.rc)
    # flags never caught together: the captured layout with these flags
    layout = machine.catalog.first("drbdadm get-gi srv").stdout.strip().split(":")
    return machine.synthesized(
        argv, Reply(":".join([*layout[:4], flags]) + "\n", "", 0), "get-gi flags never captured"
    )


def _up(machine: Machine, argv: list[str]) -> Reply:
    with machine.changing() as state:
        if state["up"]:
            return machine.captured("drbdadm up srv", scenario=LAB, stage="01-primary-mounted")
        crashed = bool(state["meta"]["primary"]) and not state["meta"]["connected"]
        state.update(up=True, role="Secondary")
    if crashed:
        return machine.captured(
            "drbdadm up srv", scenario="primary-crash", stage="10-node1-rejoins"
        )
    return machine.captured("drbdadm up srv", stage="04-up-both-secondary")


def _down(machine: Machine, argv: list[str]) -> Reply:
    with machine.changing() as state:
        if state["up"] and state["held_open"] and state["role"] == "Primary":
            return machine.captured("drbdadm down srv", scenario=LAB, rc=11)
        was_up = state["up"]
        state.update(up=False, role="Secondary", cstate=None)
    if not was_up:  # the second of two downs in a row
        return machine.captured("drbdadm down srv", scenario=LAB, stage="02-node2-down")
    return machine.captured("drbdadm down srv", stage="10-peer-down")


def _primary(machine: Machine, argv: list[str], *, force: bool) -> Reply:
    with machine.changing() as state:
        key = view(state)
        if key is None:
            return machine.captured("drbdadm primary srv", scenario=LAB, stage="02-node2-down")
        role, peer_role, cstate, disk, peer_disk = key
        connected = cstate in CONNECTED
        if connected and peer_role == "Primary":
            return machine.captured("drbdadm primary srv", rc=11)
        data_via_peer = connected and peer_disk == "UpToDate"
        if disk != "UpToDate" and not data_via_peer and not force:
            return machine.captured("drbdadm primary srv", scenario=LAB, rc=17)
        state["role"] = "Primary"
        if force:
            state["disk"] = "UpToDate"
    if force:
        return machine.captured("drbdadm primary --force srv")
    return machine.captured("drbdadm primary srv", stage="05-clear-bitmap")


def _secondary(machine: Machine, argv: list[str]) -> Reply:
    with machine.changing() as state:
        if not state["up"]:
            return machine.captured("drbdadm secondary srv", scenario=LAB, stage="02-node2-down")
        if state["held_open"] and state["role"] == "Primary":
            return machine.captured("drbdadm secondary srv", scenario=LAB, rc=11)
        state["role"] = "Secondary"
    # captured as part of `umount /srv/data && drbdadm secondary srv`, which printed nothing
    teardown = machine.catalog.first(
        "ip addr del 192.168.100.100/24 dev ens3; umount /srv/data && drbdadm secondary srv"
    )
    return Reply(teardown.stdout, teardown.stderr, teardown.rc)


def drbdsetup(machine: Machine, argv: list[str]) -> Reply:
    """drbdsetup as 8.4.11 answered it."""
    line = " ".join(argv)
    if argv[1:] == ["status", "--json", "srv"]:
        return machine.captured("drbdsetup status --json srv")
    if argv[1:] == ["status", "srv", "--verbose", "--statistics"]:
        return machine.query(line, argv)
    if argv[1:] == ["events2", "--now", "srv"]:
        return machine.query("timeout 3 drbdsetup events2 --now srv", argv)
    return machine.synthesized(
        argv, Reply("", f"drbd stand-in: no capture for {line!r}\n", 99), "unknown command"
    )


def state_directory(program: str) -> Path:
    """$DRBD_STANDIN_DIR, else the directory above the bin/ this program was run from."""
    if os.environ.get("DRBD_STANDIN_DIR"):
        return Path(os.environ["DRBD_STANDIN_DIR"])
    return Path(os.path.abspath(program)).parent.parent


def main(argv: list[str]) -> int:
    """Run one command: argv[0] names the tool (drbdadm or drbdsetup)."""
    tool = os.path.basename(argv[0])
    machine = Machine(state_directory(argv[0]))
    machine.log("calls.log", f"{time.time():.6f}\t{tool} {' '.join(argv[1:])}")
    reply = (drbdadm if tool == "drbdadm" else drbdsetup)(machine, [tool, *argv[1:]])
    sys.stdout.write(reply.stdout)
    sys.stderr.write(reply.stderr)
    return reply.rc
