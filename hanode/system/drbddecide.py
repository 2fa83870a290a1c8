"""What a start decides from DRBD's state: the meta-data flags, which wait for the peer
and how long, how the wait ended, and whether to promote.

Pure, like hanode.system.drbdstate (whose states it decides from), and apart from it so
that the status path, which only reads states, does not build these classes; only
start, stop's and check's plans, and the budgets import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import NamedTuple

from hanode.errors import ConfigError
from hanode.system.drbdstate import ConnState, DiskState, ParseError, ResourceState, Role

DEFAULT_TIMEOUT = 10  # s: hanode's wait for the peer when neither hanode.toml nor drbd.conf says


# -- drbdadm get-gi (8.4 meta-data flags) ---------------------------------------------------


class MetaFlags(NamedTuple):
    """The flags of 8.4's meta-data, in the order ``get-gi`` prints them after the UUIDs."""

    consistent: bool
    was_up_to_date: bool
    primary: bool  # was Primary when last written
    connected: bool  # was connected when last written
    full_sync: bool
    peer_outdated: bool
    crashed_primary: bool

    @property
    def degraded(self) -> bool:
        """Was a Primary without its peer: DRBD's condition for degr-wfc-timeout."""
        return self.primary and not self.connected


def parse_gi(stdout: str) -> MetaFlags:
    """``drbdadm get-gi RES`` on 8.4: four UUIDs then seven 0/1 flags, colon separated."""
    fields = stdout.strip().split(":")
    if len(fields) != 11 or any(flag not in ("0", "1") for flag in fields[4:]):
        raise ParseError(f"drbdadm get-gi: unexpected {stdout.strip()!r}")
    flags = [flag == "1" for flag in fields[4:]]
    return MetaFlags(*flags)


# -- decisions ---------------------------------------------------------------------------------


class TimeoutKind(StrEnum):
    """Which of DRBD's startup timeouts applies."""

    WFC = "wfc-timeout"
    DEGR_WFC = "degr-wfc-timeout"
    OUTDATED_WFC = "outdated-wfc-timeout"


class Timeouts(NamedTuple):
    """The three waits, in seconds, each with where it came from."""

    wfc: int
    degr_wfc: int
    outdated_wfc: int
    sources: Mapping[TimeoutKind, str] = MappingProxyType({})

    def seconds(self, kind: TimeoutKind) -> int:
        """The value for one kind."""
        return {
            TimeoutKind.WFC: self.wfc,
            TimeoutKind.DEGR_WFC: self.degr_wfc,
            TimeoutKind.OUTDATED_WFC: self.outdated_wfc,
        }[kind]


def resolve_timeouts(
    configured: Mapping[TimeoutKind, int | None], startup: Mapping[str, tuple[str, int]]
) -> Timeouts:
    """hanode.toml's value, else drbd.conf's startup section, else 10 s; never 0."""
    values: dict[TimeoutKind, int] = {}
    sources: dict[TimeoutKind, str] = {}
    for kind in TimeoutKind:
        own = configured.get(kind)
        if own is not None:
            values[kind], sources[kind] = own, "hanode.toml"
        elif kind.value in startup:
            text, line = startup[kind.value]
            values[kind] = _drbd_conf_timeout(kind, text, line)
            sources[kind] = "drbd.conf"
        else:
            values[kind], sources[kind] = DEFAULT_TIMEOUT, "default"
    return Timeouts(
        values[TimeoutKind.WFC],
        values[TimeoutKind.DEGR_WFC],
        values[TimeoutKind.OUTDATED_WFC],
        sources,
    )


def _drbd_conf_timeout(kind: TimeoutKind, text: str, line: int) -> int:
    key = kind.value
    if not text.isdigit():
        raise ConfigError(
            f"drbd.conf startup {{ {key} {text}; }} (line {line} of `drbdadm dump`) "
            "is not a number",
            f"set {key} in hanode.toml [drbd]",
        )
    value = int(text)
    if value == 0:
        raise ConfigError(
            f"drbd.conf startup {{ {key} 0; }} would wait for the peer forever; hanode never does",
            f"set {key} = 10 (seconds) in hanode.toml [drbd], or a non-zero value in drbd.conf",
        )
    return value


class TimeoutChoice(NamedTuple):
    """The wait for the peer: which timeout, how long, and why that one."""

    kind: TimeoutKind
    seconds: int
    why: str


def choose_timeout(
    timeouts: Timeouts, *, peer_disk: DiskState | None, flags: MetaFlags | None
) -> TimeoutChoice:
    """Pick the wait as DRBD's kernel does for ``wait-connect`` (drbd_adm_get_timeout_type).

    outdated-wfc when the peer's disk is known Outdated; degr-wfc when this node was a
    Primary without its peer when it went down (a degraded cluster that crashed); else wfc.
    ``flags`` are the meta-data flags read before ``up`` (None when unknown).
    """
    if peer_disk is DiskState.OUTDATED or (flags is not None and flags.peer_outdated):
        kind, why = TimeoutKind.OUTDATED_WFC, "the peer's disk is known Outdated"
    elif flags is not None and flags.degraded:
        kind, why = (
            TimeoutKind.DEGR_WFC,
            "this node was a Primary without its peer when it went down",
        )
    else:
        kind, why = TimeoutKind.WFC, "a normal start"
    return TimeoutChoice(kind, timeouts.seconds(kind), why)


class WaitOutcome(StrEnum):
    """How the wait for the peer ended."""

    CONNECTED = "connected"
    TIMED_OUT = "timed out"  # the peer is absent (down, or the link is cut)
    STANDALONE = "StandAlone"  # refused connection or split brain: never promote


def wait_outcome(state: ResourceState) -> WaitOutcome | None:
    """The outcome this state settles, or None to keep waiting."""
    if state.cstate is ConnState.STANDALONE:
        return WaitOutcome.STANDALONE
    if state.cstate.connected:
        return WaitOutcome.CONNECTED
    return None


class Promotion(StrEnum):
    """What start does about the role."""

    PROMOTE = "promote"
    SKIP = "skip"  # already Primary
    REFUSE = "refuse"


class Verdict(NamedTuple):
    """The promotion decision, with everything the log must say about it."""

    promotion: Promotion
    reason: str
    hint: str | None = None
    overrides: tuple[str, ...] = ()  # what --force overrode, each named for the log
    degraded: bool = False  # promoting without the peer
    force_flag: bool = False  # `drbdadm primary --force`: no UpToDate data is reachable


def is_become_primary_on(nodename: str, become_primary_on: str | None) -> bool:
    """Whether this node is the one named by become-primary-on (drbdadm's way: uname)."""
    if become_primary_on is None:
        return False
    if become_primary_on == "both":
        return True
    return become_primary_on in (nodename, nodename.split(".")[0])


def decide_promotion(
    state: ResourceState,
    outcome: WaitOutcome,
    *,
    resource: str,
    nodename: str,
    become_primary_on: str | None,
    force: bool,
) -> Verdict:
    """Whether start may promote this node, from the state after the wait for the peer."""
    if state.role is Role.PRIMARY:
        return Verdict(Promotion.SKIP, f"{resource} is already Primary")
    if outcome is WaitOutcome.STANDALONE or state.cstate is ConnState.STANDALONE:
        return Verdict(
            Promotion.REFUSE,
            f"{resource} is StandAlone: the peer refused the connection or a split brain "
            "was detected; not promoting (--force does not override this)",
            f"see `drbdadm status {resource}` and the kernel log; resolve the split brain, "
            f"then `drbdadm connect {resource}` on both nodes and `hanode start` again",
        )
    if state.peer_role is Role.PRIMARY:
        return Verdict(
            Promotion.REFUSE,
            f"the peer is Primary for {resource}; two Primaries would split the data",
            "run `hanode stop` on the peer first; --force does not override this",
        )
    connected = outcome is WaitOutcome.CONNECTED and state.cstate.connected
    data_via_peer = connected and state.peer_disk is DiskState.UP_TO_DATE
    overrides: list[str] = []
    if state.disk is not DiskState.UP_TO_DATE:
        if state.disk is DiskState.DISKLESS and not data_via_peer:
            return Verdict(
                Promotion.REFUSE,
                f"{resource} has no local disk (Diskless) and no UpToDate peer to read from",
                f"attach the disk (`drbdadm attach {resource}`) and `hanode start` again",
            )
        where = f"the peer's disk is {state.peer_disk}" if connected else "the peer is absent"
        problem = f"the local disk is {state.disk}, not UpToDate ({where})"
        if not force:
            return Verdict(
                Promotion.REFUSE,
                f"{resource}: {problem}",
                "wait for the resync or the peer; if this node's data is the one to keep, "
                "`hanode start --force`",
            )
        overrides.append(problem)
    degraded = False
    if not connected:
        degraded = True
        if not is_become_primary_on(nodename, become_primary_on):
            named = become_primary_on or "unset"
            if not force:
                return Verdict(
                    Promotion.REFUSE,
                    "peer unreachable: make sure it is down, then `hanode start --force`",
                    f"this node ({nodename}) is not become-primary-on ({named}); a cut link "
                    "must not become a split brain",
                )
            overrides.append(
                f"the peer is unreachable and this node ({nodename}) is not "
                f"become-primary-on ({named})"
            )
    force_flag = state.disk is not DiskState.UP_TO_DATE and not data_via_peer
    how = "degraded (peer absent)" if degraded else "peer connected"
    return Verdict(
        Promotion.PROMOTE,
        f"promote {resource}: {how}, local disk {state.disk}",
        overrides=tuple(overrides),
        degraded=degraded,
        force_flag=force_flag,
    )
