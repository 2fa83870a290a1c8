"""DRBD's states in its own words and the parsers of its tools' outputs.

Pure: no command is run here. hanode.resources.drbd reads the outputs; this module turns
text into enums and states (what status needs), and hanode.system.drbddecide turns states
into a start's decisions, so every decision can be tested from hand-built states. Parsed
from DRBD 8.4 (``/proc/drbd``, ``drbdadm role|cstate|dstate|dump|get-gi``, drbdsetup's
failure lines) and DRBD 9 (``drbdsetup status --json``). Outputs captured on real
8.4.11: ../shared/fixtures/drbd-8.4.11. Its records are NamedTuples: every status
imports this module, and such a class is built at import for a fraction of what a
dataclass costs (which compiles its methods from source).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping
from enum import StrEnum
from typing import NamedTuple

from hanode.errors import ConfigError

PROC_DRBD = "/proc/drbd"


class ParseError(ValueError):
    """A DRBD tool printed something hanode cannot read."""


class Role(StrEnum):
    """A node's role, as ``drbdadm role`` and /proc/drbd's ro: print it."""

    PRIMARY = "Primary"
    SECONDARY = "Secondary"
    UNKNOWN = "Unknown"  # the peer's role while not connected


class ConnState(StrEnum):
    """The connection state: DRBD 8.4's cstate words, plus DRBD 9's Connecting."""

    STANDALONE = "StandAlone"
    DISCONNECTING = "Disconnecting"
    UNCONNECTED = "Unconnected"
    TIMEOUT = "Timeout"
    BROKEN_PIPE = "BrokenPipe"
    NETWORK_FAILURE = "NetworkFailure"
    PROTOCOL_ERROR = "ProtocolError"
    TEAR_DOWN = "TearDown"
    WF_CONNECTION = "WFConnection"
    CONNECTING = "Connecting"  # DRBD 9's name for WFConnection
    WF_REPORT_PARAMS = "WFReportParams"
    CONNECTED = "Connected"
    STARTING_SYNC_S = "StartingSyncS"
    STARTING_SYNC_T = "StartingSyncT"
    WF_BITMAP_S = "WFBitMapS"
    WF_BITMAP_T = "WFBitMapT"
    WF_SYNC_UUID = "WFSyncUUID"
    SYNC_SOURCE = "SyncSource"
    SYNC_TARGET = "SyncTarget"
    VERIFY_S = "VerifyS"
    VERIFY_T = "VerifyT"
    PAUSED_SYNC_S = "PausedSyncS"
    PAUSED_SYNC_T = "PausedSyncT"
    AHEAD = "Ahead"
    BEHIND = "Behind"

    @property
    def connected(self) -> bool:
        """The handshake with the peer is done (replicating, syncing or verifying)."""
        return self in _CONNECTED


_CONNECTED = frozenset(
    {
        ConnState.CONNECTED,
        ConnState.STARTING_SYNC_S,
        ConnState.STARTING_SYNC_T,
        ConnState.WF_BITMAP_S,
        ConnState.WF_BITMAP_T,
        ConnState.WF_SYNC_UUID,
        ConnState.SYNC_SOURCE,
        ConnState.SYNC_TARGET,
        ConnState.VERIFY_S,
        ConnState.VERIFY_T,
        ConnState.PAUSED_SYNC_S,
        ConnState.PAUSED_SYNC_T,
        ConnState.AHEAD,
        ConnState.BEHIND,
    }
)


class DiskState(StrEnum):
    """A disk state, as ``drbdadm dstate`` and /proc/drbd's ds: print it."""

    DISKLESS = "Diskless"
    ATTACHING = "Attaching"
    DETACHING = "Detaching"
    FAILED = "Failed"
    NEGOTIATING = "Negotiating"
    INCONSISTENT = "Inconsistent"
    OUTDATED = "Outdated"
    DUNKNOWN = "DUnknown"
    CONSISTENT = "Consistent"
    UP_TO_DATE = "UpToDate"


def _word(enum: type[Role] | type[ConnState] | type[DiskState], text: str) -> str:
    try:
        return enum(text).value
    except ValueError:
        raise ParseError(f"unknown {enum.__name__} {text!r}") from None


def role(text: str) -> Role:
    """A Role from DRBD's word for it."""
    return Role(_word(Role, text))


def conn_state(text: str) -> ConnState:
    """A ConnState from DRBD's word for it."""
    return ConnState(_word(ConnState, text))


def disk_state(text: str) -> DiskState:
    """A DiskState from DRBD's word for it."""
    return DiskState(_word(DiskState, text))


class SyncProgress(NamedTuple):
    """A resync (or online verify) under way, as /proc/drbd shows it."""

    percent: float  # how much is in sync
    finish: str | None  # estimated time left, "H:MM:SS" as /proc/drbd prints it
    out_of_sync_kib: int | None = None
    total_kib: int | None = None
    speed: str | None = None  # "1,120 K/sec"


class ResourceState(NamedTuple):
    """One resource that is up: both roles, the connection and both disks."""

    role: Role
    peer_role: Role
    cstate: ConnState
    disk: DiskState
    peer_disk: DiskState
    sync: SyncProgress | None = None

    def details(self) -> dict[str, object]:
        """For ``hanode status --json``."""
        details: dict[str, object] = {
            "role": self.role.value,
            "peer-role": self.peer_role.value,
            "connection": self.cstate.value,
            "disk": self.disk.value,
            "peer-disk": self.peer_disk.value,
        }
        if self.sync is not None:
            details["sync-percent"] = self.sync.percent
            if self.sync.finish is not None:
                details["sync-finish"] = self.sync.finish
        return details

    def describe(self) -> str:
        """One line: ``Secondary/Primary Connected UpToDate/UpToDate``, plus any sync."""
        line = f"{self.role}/{self.peer_role} {self.cstate} {self.disk}/{self.peer_disk}"
        if self.sync is not None:
            line += f", {self.sync.percent:g}% in sync"
            if self.sync.finish:
                line += f", finish in {self.sync.finish}"
        return line


# -- /proc/drbd (8.4) -----------------------------------------------------------------------

# Regexes as text, compiled by re at first use (and cached there): a node without
# /proc/drbd, or a run that never reads it, does not compile them.
_DEVICE_LINE = (
    r"^\s*(?P<minor>\d+): cs:(?P<cs>\w+)"
    r"(?: ro:(?P<ro>\w+)/(?P<pro>\w+) ds:(?P<ds>\w+)/(?P<pds>\w+))?"
)
_SYNC_LINE = (
    r"(?:sync'ed|verified):\s*(?P<pct>[\d.]+)% \((?P<oos>\d+)/(?P<total>\d+)\)(?P<unit>[KMG])"
)
_FINISH_LINE = r"finish: (?P<finish>\S+) speed: (?P<speed>[\d,]+) .*?(?P<unit>[KMG])/sec"
_UNIT = {"K": 1, "M": 1024, "G": 1024 * 1024}
UNCONFIGURED = "Unconfigured"  # /proc/drbd's word for a minor that is allocated but not set up


class ProcDrbd(NamedTuple):
    """/proc/drbd: the module version and one state per configured minor."""

    version: str  # "8.4.11"
    devices: Mapping[int, ResourceState]  # configured minors only

    @property
    def major(self) -> int:
        """The version's first number: 8 or 9."""
        return int(self.version.split(".")[0])


def start_promotes(proc: ProcDrbd | None) -> bool:
    """Whether a start will surely promote, by /proc/drbd alone (``proc``; None when the
    module is not loaded: nothing is up): DRBD 8.4 with no minor Primary. Which minor is
    the resource's takes `drbdadm dump`; DRBD 9's /proc/drbd lists none: it cannot tell."""
    if proc is None:
        return True
    return proc.major < 9 and not any(state.role is Role.PRIMARY for state in proc.devices.values())


def read_proc_drbd(path: str = PROC_DRBD) -> ProcDrbd | None:
    """/proc/drbd (``path``) read and parsed; None when the module is not loaded (then
    nothing is up). OSError if it cannot be read, ParseError if it makes no sense."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    return parse_proc_drbd(text)


def parse_proc_drbd(text: str) -> ProcDrbd:
    """Parse /proc/drbd (8.4's layout; DRBD 9's has the version line only)."""
    lines = text.splitlines()
    version = re.match(r"version: (\d+\.\d+\.\d+)", lines[0]) if lines else None
    if version is None:
        raise ParseError("/proc/drbd has no version line")
    devices: dict[int, ResourceState] = {}
    for minor, block in _device_blocks(lines[1:]):
        state = _device_state(block)
        if state is not None:
            devices[minor] = state
    return ProcDrbd(version.group(1), devices)


def _device_blocks(lines: list[str]) -> Iterator[tuple[int, list[str]]]:
    minor: int | None = None
    block: list[str] = []
    for line in lines:
        found = re.match(r"^\s*(\d+): cs:", line)
        if found:
            if minor is not None:
                yield minor, block
            minor, block = int(found.group(1)), [line]
        elif minor is not None:
            block.append(line)
    if minor is not None:
        yield minor, block


def _device_state(block: list[str]) -> ResourceState | None:
    head = re.match(_DEVICE_LINE, block[0])
    if head is None:
        raise ParseError(f"/proc/drbd: cannot read {block[0].strip()!r}")
    if head.group("cs") == UNCONFIGURED:
        return None
    if head.group("ro") is None:
        raise ParseError(f"/proc/drbd: no roles or disk states in {block[0].strip()!r}")
    return ResourceState(
        role=role(head.group("ro")),
        peer_role=role(head.group("pro")),
        cstate=conn_state(head.group("cs")),
        disk=disk_state(head.group("ds")),
        peer_disk=disk_state(head.group("pds")),
        sync=_sync(block[1:]),
    )


def _sync(lines: list[str]) -> SyncProgress | None:
    text = "\n".join(lines)
    synced = re.search(_SYNC_LINE, text)
    if synced is None:
        return None
    scale = _UNIT[synced.group("unit")]
    finish = re.search(_FINISH_LINE, text)
    return SyncProgress(
        percent=float(synced.group("pct")),
        finish=finish.group("finish") if finish else None,
        out_of_sync_kib=int(synced.group("oos")) * scale,
        total_kib=int(synced.group("total")) * scale,
        speed=f"{finish.group('speed')} {finish.group('unit')}/sec" if finish else None,
    )


# -- drbdadm role|cstate|dstate (8.4) -------------------------------------------------------


def parse_role(stdout: str) -> tuple[Role, Role]:
    """``drbdadm role RES`` → (local, peer), from "Primary/Secondary"."""
    local, peer = _pair(stdout, "role")
    return role(local), role(peer)


def parse_cstate(stdout: str) -> ConnState:
    """``drbdadm cstate RES`` → the connection state."""
    words = stdout.split()
    if len(words) != 1:
        raise ParseError(f"drbdadm cstate: expected one word, got {stdout.strip()!r}")
    return conn_state(words[0])


def parse_dstate(stdout: str) -> tuple[DiskState, DiskState]:
    """``drbdadm dstate RES`` → (local, peer), from "UpToDate/DUnknown"."""
    local, peer = _pair(stdout, "dstate")
    return disk_state(local), disk_state(peer)


def _pair(stdout: str, what: str) -> tuple[str, str]:
    words = stdout.split()
    if len(words) != 1 or words[0].count("/") != 1:
        raise ParseError(f"drbdadm {what}: expected LOCAL/PEER, got {stdout.strip()!r}")
    local, peer = words[0].split("/")
    return local, peer


# -- drbdsetup status --json (DRBD 9) -------------------------------------------------------


def parse_status_json(stdout: str, resource: str) -> ResourceState | None:
    """``drbdsetup status --json RES`` (DRBD 9) → the state; None if the resource is absent.

    Two nodes: the first connection and the first volume are the ones hanode manages.
    """
    try:
        data = json.loads(stdout)
    except ValueError as err:
        raise ParseError(f"drbdsetup status --json: not JSON: {err}") from None
    if not isinstance(data, list):
        raise ParseError("drbdsetup status --json: expected a list of resources")
    found = [item for item in data if isinstance(item, dict) and item.get("name") == resource]
    if not found:
        return None
    res = found[0]
    try:
        device = res["devices"][0]
        connections = res.get("connections") or []
        if connections:
            conn = connections[0]
            peers = conn.get("peer_devices") or conn.get("peer-devices") or []
            peer_device = peers[0] if peers else {}
            connection = conn_state(conn["connection-state"])
            peer_role = role(conn.get("peer-role", "Unknown"))
            peer_disk = disk_state(peer_device.get("peer-disk-state", "DUnknown"))
            replication = peer_device.get("replication-state", "Off")
        else:
            connection, peer_role, peer_disk, replication = (
                ConnState.STANDALONE,
                Role.UNKNOWN,
                DiskState.DUNKNOWN,
                "Off",
            )
        # DRBD 9 splits 8.4's cstate in two: connected, then a replication state
        cstate = connection
        if connection is ConnState.CONNECTED and replication not in ("Established", "Off"):
            cstate = conn_state(replication)
        sync = None
        if (
            cstate in (ConnState.SYNC_SOURCE, ConnState.SYNC_TARGET)
            and "percent-in-sync" in peer_device
        ):
            sync = SyncProgress(percent=float(peer_device["percent-in-sync"]), finish=None)
        return ResourceState(
            role=role(res["role"]),
            peer_role=peer_role,
            cstate=cstate,
            disk=disk_state(device["disk-state"]),
            peer_disk=peer_disk,
            sync=sync,
        )
    except (KeyError, IndexError, TypeError) as err:
        raise ParseError(f"drbdsetup status --json: missing {err}") from None


# -- drbdadm dump ------------------------------------------------------------------------------


class HostSection(NamedTuple):
    """One ``on HOST { ... }`` of a resource."""

    device: str  # /dev/drbd1
    minor: int


class DumpInfo(NamedTuple):
    """What hanode needs from ``drbdadm dump RES``."""

    resource: str
    hosts: Mapping[str, HostSection]
    startup: Mapping[str, tuple[str, int]]  # option -> (value, line in the dump)

    def host(self, nodename: str) -> HostSection:
        """This node's section, found by name as drbdadm does (uname's nodename)."""
        short = nodename.split(".")[0]
        for name in (nodename, short):
            if name in self.hosts:
                return self.hosts[name]
        known = ", ".join(sorted(self.hosts)) or "none"
        raise ConfigError(
            f"DRBD resource {self.resource} has no `on {nodename}` section (it has: {known})",
            "the node's hostname must match an `on` section of drbd.conf",
        )


class _Node(NamedTuple):
    """A statement of drbd.conf (its words and line), or a section with its children."""

    words: list[str]
    line: int
    children: list[_Node] | None = None  # None: a statement ending in ';'


def parse_dump(text: str, resource: str) -> DumpInfo:
    """Parse ``drbdadm dump RES``: its hosts (device, minor) and its startup section."""
    tree = _parse_config(text)
    found = [node for node in tree if node.words[:2] == ["resource", resource]]
    if not found or found[0].children is None:
        raise ParseError(f"drbdadm dump: no `resource {resource}` in the output")
    hosts: dict[str, HostSection] = {}
    startup: dict[str, tuple[str, int]] = {}
    for node in found[0].children:
        if node.words[0] == "on" and node.children is not None:
            section = _host_section(node.children)
            for host in node.words[1:]:
                if section is not None:
                    hosts[host] = section
        elif node.words == ["startup"] and node.children is not None:
            for option in node.children:
                if option.children is None and option.words:
                    startup[option.words[0]] = (" ".join(option.words[1:]), option.line)
    return DumpInfo(resource, hosts, startup)


def _host_section(children: list[_Node]) -> HostSection | None:
    for node in children:
        if node.words[0] == "device" and node.children is None:
            return _device(node.words[1:])
        if node.words[0] == "volume" and node.children:
            # several volumes: hanode manages one resource with one volume, the first
            inner = _host_section(node.children)
            if inner is not None:
                return inner
    return None


def _device(words: list[str]) -> HostSection:
    # "device /dev/drbd1 minor 1", "device minor 1" or "device /dev/drbd1"
    path = words[0] if words and words[0] != "minor" else None
    minor: int | None = None
    if "minor" in words:
        index = words.index("minor")
        if index + 1 < len(words) and words[index + 1].isdigit():
            minor = int(words[index + 1])
    if minor is None and path is not None:
        match = re.fullmatch(r"/dev/drbd(\d+)", path)
        minor = int(match.group(1)) if match else None
    if minor is None:
        raise ParseError(f"drbdadm dump: cannot tell the minor of `device {' '.join(words)}`")
    return HostSection(path or f"/dev/drbd{minor}", minor)


def _parse_config(text: str) -> list[_Node]:
    """drbd.conf's grammar: words ending in ';' or opening a '{ ... }' section."""
    lexer = shlex.shlex(text, posix=True)
    lexer.commenters = "#"
    lexer.whitespace_split = False
    lexer.wordchars = "".join(chr(code) for code in range(33, 127) if chr(code) not in "{};\"'#")
    stack: list[list[_Node]] = [[]]
    words: list[str] = []
    line = 1
    try:
        for token in lexer:
            if token == ";":  # noqa: S105
                if words:
                    stack[-1].append(_Node(words, line))
                words = []
            elif token == "{":  # noqa: S105
                node = _Node(words or ["?"], line, [])
                stack[-1].append(node)
                assert node.children is not None
                stack.append(node.children)
                words = []
            elif token == "}":  # noqa: S105
                if len(stack) == 1:
                    raise ParseError(f"drbdadm dump: unbalanced '}}' at line {lexer.lineno}")
                stack.pop()
                words = []
            else:
                if not words:
                    line = lexer.lineno
                words.append(token)
    except ValueError as err:  # shlex: an unclosed quote
        raise ParseError(f"drbdadm dump: {err}") from None
    if len(stack) != 1:
        raise ParseError("drbdadm dump: unbalanced '{'")
    return stack[0]


# -- drbdadm get-gi -----------------------------------------------------------------------------


def data_generation(stdout: str) -> str:
    """The current data generation (UUID) in ``drbdadm get-gi RES``: its first field."""
    first = stdout.strip().split(":")[0]
    if not re.fullmatch(r"[0-9A-Fa-f]{16}", first):
        raise ParseError(f"drbdadm get-gi: unexpected {stdout.strip()!r}")
    return first


# The kernel's words (8.4 drbd_receiver.c / drbd_state.c) on a resource's connection.
_SPLIT_BRAIN = "Split-Brain detected but unresolved"
_KERNEL_CONNECTED = r"conn\( \w+ -> Connected \)"


def split_brain_pending(messages: Iterable[str], resource: str, minor: int) -> bool:
    """Whether the kernel's last word on this resource's connection, in its log since
    boot, is an unresolved split brain (and not a later successful connection)."""
    names = (f"drbd {resource}: ", f"block drbd{minor}: ", f"drbd{minor}: ")
    pending = False
    for message in messages:
        if not any(name in message for name in names):
            continue
        if _SPLIT_BRAIN in message:
            pending = True
        elif re.search(_KERNEL_CONNECTED, message):
            pending = False
    return pending


def split_brain_advice(resource: str, generation: str | None) -> tuple[str, str]:
    """The message and the recovery commands for a split brain (hanode never picks)."""
    here = f" (this node's data generation {generation})" if generation else ""
    return (
        f"split brain: both nodes wrote to {resource} while apart{here}; "
        "hanode discards nothing by itself",
        f"compare the data generations of both nodes (hanode status), keep one node's data; "
        f"on the other: `hanode stop`, then `drbdadm connect --discard-my-data {resource}`; "
        f"on the one kept: `drbdadm connect {resource}`",
    )


# -- failures of drbdsetup (through drbdadm) ------------------------------------------------

# The kernel's codes (drbd_strings.c / drbd_nl): state-change refusals are negative.
SS_TWO_PRIMARIES = -1  # "Multiple primaries not allowed by config"
SS_NO_UP_TO_DATE_DISK = -2  # "Need access to UpToDate data"
SS_DEVICE_IN_USE = -12  # "Device is held open by someone"
ERR_MINOR_INVALID = 127  # "Device minor not allocated": the resource is not up


class DrbdFailure(NamedTuple):
    """``1: State change failed: (-1) Multiple primaries not allowed by config``.

    drbdsetup-84 names the minor for a device's change (primary, secondary) and the
    resource for a resource's (``srv: State change failed: (-12) ...`` from ``down``).
    """

    minor: int | None  # None: the line named the resource
    code: int
    text: str


_FAILURE = (
    r"^(?:(?P<minor>\d+)|[\w.+-]+): (?:State change failed|Failure): "
    r"\((?P<code>-?\d+)\) (?P<text>.+)$"
)


def parse_failure(stderr: str) -> DrbdFailure | None:
    """The first failure line drbdsetup printed, if any."""
    for line in stderr.splitlines():
        found = re.match(_FAILURE, line.strip())
        if found:
            minor = found.group("minor")
            return DrbdFailure(
                int(minor) if minor else None, int(found.group("code")), found.group("text")
            )
    return None
