"""The DRBD resource: up, a bounded wait for the peer, a safe promotion; demote on stop.

start: ``drbdadm up`` unless up; wait for the peer with the timeout DRBD's own startup
logic would pick; promote only when safe (hanode.system.drbddecide.decide_promotion). A refusal
leaves the resource up as Secondary, replicating. stop: ``drbdadm secondary``; a device
still open is reported with its openers; ``on-demote-failure`` escalates to
``secondary --force`` (DRBD >= 9.1) or a reboot; ``stop --down`` also runs ``drbdadm down``.

State is read from /proc/drbd on 8.4 (one file read, cheap enough to poll while waiting)
with the minor from ``drbdadm dump``; from ``drbdsetup status --json`` on DRBD 9; from
``drbdadm role|cstate|dstate`` when neither can be read.
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
import time
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, NamedTuple

from hanode.config import Table, number
from hanode.errors import ConfigError, HanodeError, Refused, StepFailed
from hanode.resources import Context, Finding, Level, Resource, State, Status
from hanode.run import CommandError, Completed, run, stderr_tail, which
from hanode.system import drbdstate
from hanode.system.drbdstate import (
    ConnState,
    DumpInfo,
    HostSection,
    ParseError,
    ProcDrbd,
    ResourceState,
    Role,
)
from hanode.system.mountinfo import mount_points_of

if TYPE_CHECKING:  # start's decisions: imported by the methods that make them, not by status
    from hanode.system.drbddecide import MetaFlags, TimeoutChoice, Timeouts, WaitOutcome

log = logging.getLogger("hanode.drbd")

PROC_DRBD = drbdstate.PROC_DRBD
POLL_SECONDS = 0.25  # between reads of the state while waiting for the peer
COMMAND_TIMEOUT = 30.0  # s for one drbdadm call: they answer in milliseconds unless stuck
SECONDARY_FORCE_SINCE = (9, 1)  # `drbdsetup secondary --force` (I/O of openers fails)


class DemoteFailure(StrEnum):
    """What to do when ``drbdadm secondary`` fails on stop."""

    FAIL = "fail"
    FORCE = "force"
    REBOOT = "reboot"


class DrbdConfig(NamedTuple):
    """The [drbd] section."""

    resource: str
    wfc_timeout: int | None = None  # None: from `drbdadm dump`, else 10
    degr_wfc_timeout: int | None = None
    outdated_wfc_timeout: int | None = None
    become_primary_on: str | None = None  # None: from drbd.conf's startup section
    on_demote_failure: DemoteFailure = DemoteFailure.FAIL


def _timeout(table: Table, key: str) -> int | None:
    value: int | None = table.get(key, int, None)
    if value is None:
        return None
    if value == 0:
        raise table.error(
            key, "0 would wait for the peer forever; hanode never does", "give a timeout in seconds"
        )
    if not 1 <= value <= 86400:
        raise table.error(key, f"must be between 1 and 86400 seconds, got {number(value)}")
    return value


class _Demotion(NamedTuple):
    """Why ``drbdadm secondary`` failed, in words for the admin."""

    problem: str
    hint: str


class Drbd(Resource[DrbdConfig]):
    """One DRBD resource: Primary when started, Secondary (still up) when stopped."""

    section = "drbd"
    order = 10
    settings = DrbdConfig
    confirms_preflight = True  # start calls ctx.before_promotion() right before primary

    @classmethod
    def parse(cls, table: Table, parsed: Mapping[str, object]) -> DrbdConfig:
        """[drbd]: the resource name, the wfc timeouts, become-primary-on, escalation."""
        resource = table.string("resource")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", resource):
            raise table.error("resource", f"not a DRBD resource name: {resource!r}")
        node: str | None = table.get("become-primary-on", str, None)
        # a node name as `uname -n` gives it (or DRBD 8.4's "both"); "" would mean unset
        if node is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", node):
            raise table.error(
                "become-primary-on", f"not a node name: {node!r}", "the node's `uname -n`"
            )
        return DrbdConfig(
            resource=resource,
            wfc_timeout=_timeout(table, "wfc-timeout"),
            degr_wfc_timeout=_timeout(table, "degr-wfc-timeout"),
            outdated_wfc_timeout=_timeout(table, "outdated-wfc-timeout"),
            become_primary_on=node,
            on_demote_failure=table.choice("on-demote-failure", DemoteFailure, DemoteFailure.FAIL),
        )

    @classmethod
    def start_budget(cls, config: DrbdConfig) -> float:
        """drbdadm up and primary, and the longest wait for the peer configured."""
        from hanode.system import drbddecide

        configured = (config.wfc_timeout, config.degr_wfc_timeout, config.outdated_wfc_timeout)
        wait = max((t for t in configured if t is not None), default=drbddecide.DEFAULT_TIMEOUT)
        return 2 * COMMAND_TIMEOUT + wait

    @classmethod
    def stop_budget(cls, config: DrbdConfig) -> float:
        """drbdadm secondary, then secondary --force when so configured."""
        return 2 * COMMAND_TIMEOUT

    def __init__(
        self,
        config: DrbdConfig,
        *,
        proc_drbd: str | None = None,
        nodename: str | None = None,
        device: str | None = None,
        reboot: Callable[[str], None] | None = None,
    ) -> None:
        """``config`` is the [drbd] section; the keyword arguments exist for tests only."""
        super().__init__(config)
        self.resource = config.resource
        self._proc_path = proc_drbd or PROC_DRBD
        self._nodename = nodename or os.uname().nodename  # drbdadm's way of finding itself
        self._device_override = device
        self._reboot = reboot or request_reboot
        self._dump_info: DumpInfo | None = None
        self._json_status = True  # DRBD 9's `drbdsetup status --json`, until refused
        self._last_version: str | None = None  # of the module, from the last /proc/drbd read

    # -- reading ---------------------------------------------------------------------------

    def _dump(self) -> DumpInfo:
        if self._dump_info is None:
            argv = ["drbdadm", "dump", self.resource]
            result = run(argv, timeout=COMMAND_TIMEOUT, check=False)
            if result.returncode != 0:
                raise ConfigError(
                    f"`drbdadm dump {self.resource}` failed: {stderr_tail(result.stderr)}",
                    f"define resource {self.resource} in /etc/drbd.d/ or fix [drbd] resource",
                )
            try:
                self._dump_info = drbdstate.parse_dump(result.stdout, self.resource)
            except ParseError as err:
                raise ConfigError(str(err)) from None
        return self._dump_info

    def _host(self) -> HostSection:
        return self._dump().host(self._nodename)

    def _device(self) -> str:
        return self._device_override or self._host().device

    def _proc(self) -> ProcDrbd | None:
        """/proc/drbd, or None when the module is not loaded (then nothing is up)."""
        proc = drbdstate.read_proc_drbd(self._proc_path)
        if proc is not None:
            self._last_version = proc.version
        return proc

    def read_state(self) -> ResourceState | None:
        """The resource's state, or None when it is not up."""
        try:
            return self._read_state()
        except ParseError as err:
            raise StepFailed(f"cannot read the state of {self.resource}: {err}") from None

    def _read_state(self) -> ResourceState | None:
        try:
            proc = self._proc()
        except ParseError as err:
            log.debug("cannot read %s (%s): asking drbdadm", self._proc_path, err)
            return self._state_from_drbdadm()
        if proc is None:
            return None
        if proc.major >= 9:
            return self._state_v9()
        if not proc.devices:
            return None  # no minor is configured: no need to ask which one is ours
        return proc.devices.get(self._host().minor)

    def _state_v9(self) -> ResourceState | None:
        if self._json_status:
            argv = ["drbdsetup", "status", "--json", self.resource]
            result = run(argv, timeout=COMMAND_TIMEOUT, check=False)
            if result.returncode == 0:
                return drbdstate.parse_status_json(result.stdout, self.resource)
            if "No such resource" in result.stderr:
                return None  # not up
            if "unrecognized option" not in result.stderr:
                raise _failed(result)
            self._json_status = False  # an older drbdsetup: ask drbdadm from now on
        return self._state_from_drbdadm()

    def _state_from_drbdadm(self) -> ResourceState | None:
        results = [
            run(["drbdadm", what, self.resource], timeout=COMMAND_TIMEOUT, check=False)
            for what in ("role", "cstate", "dstate")
        ]
        role_result = results[0]
        if role_result.returncode != 0:
            failure = drbdstate.parse_failure(role_result.stderr)
            if failure is not None and failure.code == drbdstate.ERR_MINOR_INVALID:
                return None  # "Device minor not allocated": not up
            raise _failed(role_result)
        for result in results[1:]:
            if result.returncode != 0:
                raise _failed(result)
        local_role, peer_role = drbdstate.parse_role(results[0].stdout)
        disk, peer_disk = drbdstate.parse_dstate(results[2].stdout)
        return ResourceState(
            local_role, peer_role, drbdstate.parse_cstate(results[1].stdout), disk, peer_disk
        )

    def _version(self) -> str | None:
        try:
            proc = self._proc()
        except ParseError:
            return None
        return proc.version if proc else None

    def probe(self) -> Status:
        """Primary is UP; Secondary, or not up at all, is DOWN."""
        if which("drbdadm") is None:
            return Status(State.UNKNOWN, "drbdadm not found (install drbd-utils)")
        try:
            state = self.read_state()
        except (HanodeError, ParseError) as err:
            return Status(State.UNKNOWN, f"cannot read the state of {self.resource}: {err}")
        details: dict[str, object] = {"resource": self.resource}
        if self._last_version:
            details["drbd-version"] = self._last_version
        if state is None:
            details["up"] = False
            return Status(
                State.DOWN,
                f"{self.resource} is not up: not replicating (`hanode stop` brings it up)",
                details,
            )
        details["up"] = True
        details.update(state.details())
        summary = f"{self.resource} {state.describe()}"
        if not state.cstate.connected:
            summary += "; " + self._disconnected(state, details)
        return Status(State.UP if state.role is Role.PRIMARY else State.DOWN, summary, details)

    def _disconnected(self, state: ResourceState, details: dict[str, object]) -> str:
        """Why the peer is not connected, in words, with this node's data generation."""
        generation = self._data_generation()
        if generation is not None:
            details["data-generation"] = generation
        if state.cstate is ConnState.STANDALONE and self.split_brain():
            details["split-brain"] = True
            message, fix = drbdstate.split_brain_advice(self.resource, generation)
            return f"{message} ({fix})"
        if state.cstate is ConnState.STANDALONE:
            return (
                f"not replicating: {self.resource} does not try to connect (StandAlone; "
                f"`drbdadm connect {self.resource}`)"
            )
        return f"replication link down: the peer is not connected ({state.cstate})"

    def _data_generation(self) -> str | None:
        result = run(["drbdadm", "get-gi", self.resource], timeout=COMMAND_TIMEOUT, check=False)
        try:
            return drbdstate.data_generation(result.stdout) if result.returncode == 0 else None
        except ParseError:
            return None

    def split_brain(self) -> bool:
        """Whether the kernel found a split brain on the last connection attempt."""
        return drbdstate.split_brain_pending(kernel_messages(), self.resource, self._host().minor)

    def surely_starts(self) -> bool:
        """/proc/drbd (a file read) says so: the module not loaded, or DRBD 8.4 with no
        minor Primary (which one is this resource's takes `drbdadm dump`)."""
        try:
            return drbdstate.start_promotes(self._proc())
        except (OSError, ParseError):
            return False

    def settled(self, status: Status, *, starting: bool, ctx: Context) -> bool:
        """Start: Primary. Stop: up and Secondary, replicating; with --down: not up."""
        if starting or status.state is not State.DOWN:
            return super().settled(status, starting=starting, ctx=ctx)
        up = bool(status.details.get("up"))
        return not up if ctx.down else up

    # -- timeouts --------------------------------------------------------------------------

    def timeouts(self) -> Timeouts:
        """The three waits: hanode.toml, else drbd.conf's startup section, else 10 s."""
        from hanode.system import drbddecide

        configured = {
            drbddecide.TimeoutKind.WFC: self.config.wfc_timeout,
            drbddecide.TimeoutKind.DEGR_WFC: self.config.degr_wfc_timeout,
            drbddecide.TimeoutKind.OUTDATED_WFC: self.config.outdated_wfc_timeout,
        }
        return drbddecide.resolve_timeouts(configured, self._dump().startup)

    def become_primary_on(self) -> str | None:
        """hanode.toml's become-primary-on, else drbd.conf's startup section's."""
        if self.config.become_primary_on is not None:
            return self.config.become_primary_on
        value = self._dump().startup.get("become-primary-on")
        return value[0] if value else None

    def _meta_flags(self) -> MetaFlags | None:
        """The meta-data flags before ``up`` (DRBD's input for degr-wfc); None if unknown."""
        from hanode.system import drbddecide

        result = run(["drbdadm", "get-gi", self.resource], timeout=COMMAND_TIMEOUT, check=False)
        if result.returncode != 0:
            log.debug("drbdadm get-gi %s: %s", self.resource, stderr_tail(result.stderr))
            return None
        try:
            return drbddecide.parse_gi(result.stdout)
        except ParseError as err:
            log.debug("%s", err)
            return None

    # -- start -----------------------------------------------------------------------------

    def start(self, ctx: Context) -> None:
        """Up, wait for the peer (bounded), promote when safe; Refused leaves it Secondary."""
        from hanode.system import drbddecide

        timeouts = self.timeouts()  # a bad drbd.conf timeout is refused before touching anything
        self._host()
        state = self.read_state()
        flags = None
        if state is None:
            flags = self._meta_flags()
            state = self._up()
        if state.role is Role.PRIMARY:
            log.info("%s is already Primary", self.resource)
            return
        choice = drbddecide.choose_timeout(timeouts, peer_disk=state.peer_disk, flags=flags)
        outcome, state = self._wait_for_peer(state, choice, timeouts, ctx)
        verdict = drbddecide.decide_promotion(
            state,
            outcome,
            resource=self.resource,
            nodename=self._nodename,
            become_primary_on=self.become_primary_on(),
            force=ctx.force,
        )
        if verdict.promotion is drbddecide.Promotion.SKIP:
            log.info("%s", verdict.reason)
            return
        if verdict.promotion is drbddecide.Promotion.REFUSE:
            raise Refused(f"{verdict.reason}; {self.resource} stays up as Secondary", verdict.hint)
        for override in verdict.overrides:
            log.warning("--force overrides: %s", override)
        try:
            ctx.before_promotion()
        except Refused as err:
            raise err.with_context(f"{err.message}; {self.resource} stays up as Secondary") from err
        if verdict.degraded:
            log.warning(
                "promoting %s degraded: the peer did not connect within %ds (%s)",
                self.resource,
                choice.seconds,
                state.cstate,
            )
        self._promote(verdict.force_flag)

    def _up(self) -> ResourceState:
        if self._proc() is None:
            # the module is not loaded (drbdadm up does not load it on every version)
            run(["modprobe", "drbd"], timeout=COMMAND_TIMEOUT)
        argv = ["drbdadm", "up", self.resource]
        result = run(argv, timeout=COMMAND_TIMEOUT, check=False)
        state = self.read_state()
        if result.returncode != 0:
            if state is None:
                raise _failed(result)
            # up by someone else meanwhile (or by a cut run): what we wanted
            log.info(
                "%s was already up (drbdadm up: %s)", self.resource, stderr_tail(result.stderr)
            )
        elif result.stderr.strip():
            log.info("drbdadm up %s: %s", self.resource, stderr_tail(result.stderr))
        if state is None:
            raise StepFailed(
                f"`drbdadm up {self.resource}` succeeded but minor {self._host().minor} "
                f"is not in {self._proc_path}",
                "see the kernel log: `journalctl -k`",
            )
        return state

    def _wait_for_peer(
        self, state: ResourceState, choice: TimeoutChoice, timeouts: Timeouts, ctx: Context
    ) -> tuple[WaitOutcome, ResourceState]:
        from hanode.system import drbddecide

        outcome = drbddecide.wait_outcome(state)
        if outcome is not None:
            return outcome, state
        source = timeouts.sources.get(choice.kind, "default")
        log.info(
            "waiting up to %ds for the peer of %s (%s from %s: %s)",
            choice.seconds,
            self.resource,
            choice.kind,
            source,
            choice.why,
        )
        deadline = time.monotonic() + choice.seconds
        with ctx.waiting(f"waiting for the peer of {self.resource}") as line:
            while True:
                left = deadline - time.monotonic()
                line.update(f"{max(0, math.ceil(left))}s left, {state.cstate}")
                if left <= 0:
                    return drbddecide.WaitOutcome.TIMED_OUT, state
                time.sleep(min(POLL_SECONDS, left))
                new_state = self.read_state()
                if new_state is None:
                    raise StepFailed(
                        f"{self.resource} went down while waiting for the peer",
                        "someone ran `drbdadm down`? run `hanode start` again",
                    )
                state = new_state
                outcome = drbddecide.wait_outcome(state)
                if outcome is not None:
                    return outcome, state

    def _promote(self, force_flag: bool) -> None:
        argv = ["drbdadm", "primary", *(["--force"] if force_flag else []), self.resource]
        result = run(argv, timeout=COMMAND_TIMEOUT, check=False)
        if result.returncode != 0:
            failure = drbdstate.parse_failure(result.stderr)
            if failure is not None and failure.code == drbdstate.SS_TWO_PRIMARIES:
                # the peer was promoted between our read and our call: nothing changed here
                raise Refused(
                    f"the peer became Primary for {self.resource}: {failure.text}; "
                    f"{self.resource} stays up as Secondary",
                    "run `hanode stop` on the peer first",
                )
            raise _failed(result)
        state = self.read_state()
        if state is None or state.role is not Role.PRIMARY:
            raise StepFailed(f"`{' '.join(argv)}` succeeded but {self.resource} is not Primary")
        log.info("%s promoted: %s", self.resource, state.describe())

    def plan_start(self) -> list[str]:
        """What start would do from the probed state."""
        from hanode.system import drbddecide

        state = self.read_state()
        if state is not None and state.role is Role.PRIMARY:
            return []
        lines = [] if state is not None else [f"drbdadm up {self.resource}"]
        try:
            timeouts = self.timeouts()
            named = self.become_primary_on() or "unset"
        except HanodeError as err:
            # drbdadm absent or the resource undefined here: plan from hanode.toml alone
            wfc = self.config.wfc_timeout or "wfc-timeout"
            lines.append(f"wait for the peer up to {wfc}s (drbd.conf not readable: {err.message})")
            named = self.config.become_primary_on or "become-primary-on from drbd.conf"
        else:
            if state is None or not state.cstate.connected:
                wfc_seconds = timeouts.seconds(drbddecide.TimeoutKind.WFC)
                lines.append(
                    f"wait for the peer up to {wfc_seconds}s (wfc-timeout from "
                    f"{timeouts.sources.get(drbddecide.TimeoutKind.WFC)}; "
                    f"degr-wfc {timeouts.degr_wfc}s and "
                    f"outdated-wfc {timeouts.outdated_wfc}s when DRBD's meta-data says so)"
                )
        lines.append(
            f"drbdadm primary {self.resource} if safe: peer not Primary, local disk UpToDate; "
            f"peer absent: only on become-primary-on ({named}) or with --force"
        )
        return lines

    # -- stop ------------------------------------------------------------------------------

    def stop(self, ctx: Context) -> None:
        """Demote to Secondary (the resource stays up and connected; a resource that is not
        up is brought up, so a standby replicates); --down takes it down."""
        state = self.read_state()
        if state is None:
            if not ctx.down:
                self._host()
                state = self._up()
                log.info("%s is up as a standby: %s", self.resource, state.describe())
            return
        if state.role is Role.PRIMARY:
            self._demote()
        if ctx.down:
            result = run(["drbdadm", "down", self.resource], timeout=COMMAND_TIMEOUT, check=False)
            if result.returncode != 0:
                why = self._demote_failure(result)
                raise StepFailed(f"cannot take {self.resource} down: {why.problem}", why.hint)

    def _demote(self) -> None:
        result = run(["drbdadm", "secondary", self.resource], timeout=COMMAND_TIMEOUT, check=False)
        if result.returncode == 0:
            log.info("%s demoted to Secondary", self.resource)
            return
        why = self._demote_failure(result)
        problem = f"cannot demote {self.resource}: {why.problem}"
        policy = self.config.on_demote_failure
        if policy is DemoteFailure.FORCE:
            self._force_demote(problem, why)
            return
        if policy is DemoteFailure.REBOOT:
            log.error(
                "%s; on-demote-failure = reboot: rebooting so that the peer can take over", problem
            )
            try:
                self._reboot(problem)
            except HanodeError as err:
                raise StepFailed(
                    f"{problem}; the reboot could not be requested: {err}", why.hint
                ) from err
            raise StepFailed(f"{problem}; reboot requested so that the peer can take over")
        raise StepFailed(problem, why.hint)

    def _force_demote(self, problem: str, why: _Demotion) -> None:
        version = self._version() or "unknown"
        if not _at_least(version, SECONDARY_FORCE_SINCE):
            raise StepFailed(
                f"{problem}; on-demote-failure = force needs DRBD 9.1 or later for "
                f"`secondary --force`, this kernel has DRBD {version}",
                why.hint,
            )
        log.warning(
            "%s; on-demote-failure = force: `drbdadm secondary --force` (openers get I/O errors)",
            problem,
        )
        result = run(
            ["drbdadm", "secondary", "--force", self.resource], timeout=COMMAND_TIMEOUT, check=False
        )
        if result.returncode != 0:
            raise StepFailed(
                f"{problem}; `secondary --force` failed too: {stderr_tail(result.stderr)}", why.hint
            )
        log.warning("%s forced to Secondary", self.resource)

    def _demote_failure(self, result: Completed) -> _Demotion:
        failure = drbdstate.parse_failure(result.stderr)
        text = (
            failure.text
            if failure
            else stderr_tail(result.stderr) or f"exit status {result.returncode}"
        )
        if failure is None or failure.code != drbdstate.SS_DEVICE_IN_USE:
            return _Demotion(
                text, "see `drbdadm status` and the kernel log, then `hanode stop` again"
            )
        device = self._device()
        return _Demotion(
            f"{text}: {describe_openers(device)}",
            "stop what holds it (the steps above drbd should have), then `hanode stop` again",
        )

    def plan_stop(self) -> list[str]:
        """What stop would do from the probed state."""
        state = self.read_state()
        if state is None:
            return [f"drbdadm up {self.resource}: a standby replicates (--down: leave it down)"]
        lines = []
        if state.role is Role.PRIMARY:
            lines.append(
                f"drbdadm secondary {self.resource} (on failure: {self.config.on_demote_failure})"
            )
        lines.append(f"keep {self.resource} up and connected (`hanode stop --down`: drbdadm down)")
        return lines

    # -- check -----------------------------------------------------------------------------

    def check(self) -> list[Finding]:
        """drbd-utils, the resource in drbd.conf, this node in it, the timeouts, the module."""
        defined = self._definition_findings()
        if any(finding.level is Level.ERROR for finding in defined):
            return defined
        return [
            *defined,
            *self._startup_findings(),
            *self._module_findings(),
            *self._connection_findings(),
        ]

    def _definition_findings(self) -> list[Finding]:
        """drbd-utils installed, the resource in drbd.conf with this node in it."""
        if which("drbdadm") is None:
            return [
                Finding(Level.ERROR, "drbdadm not found", "apt install drbd-utils", missing=True)
            ]
        try:
            host = self._host()
        except ConfigError as err:
            return [Finding(Level.ERROR, err.message, err.hint)]
        return [
            Finding(
                Level.OK,
                f"{self.resource}: this node {self._nodename} uses {host.device} "
                f"(minor {host.minor})",
            )
        ]

    def _startup_findings(self) -> list[Finding]:
        """hanode's start: the waits for the peer and become-primary-on."""
        from hanode.system import drbddecide

        findings: list[Finding] = []
        try:
            timeouts = self.timeouts()
        except ConfigError as err:
            findings.append(Finding(Level.ERROR, err.message, err.hint))
        else:
            waits = ", ".join(
                f"{kind} {timeouts.seconds(kind)}s ({timeouts.sources.get(kind)})"
                for kind in drbddecide.TimeoutKind
            )
            findings.append(Finding(Level.OK, f"waits for the peer: {waits}"))
        named = self.become_primary_on()
        if named is None:
            findings.append(
                Finding(
                    Level.WARNING,
                    "become-primary-on is unset: with the peer absent, "
                    "no node promotes without --force",
                    "set become-primary-on in hanode.toml [drbd] or drbd.conf's startup section",
                )
            )
        elif named != "both" and named not in self._dump().hosts:
            findings.append(
                Finding(
                    Level.ERROR,
                    f"become-primary-on {named} is not a host of {self.resource}",
                    f"hosts: {', '.join(sorted(self._dump().hosts))}",
                )
            )
        else:
            here = drbddecide.is_become_primary_on(self._nodename, named)
            findings.append(
                Finding(
                    Level.OK, f"become-primary-on {named} ({'this node' if here else 'the peer'})"
                )
            )
        return findings

    def _module_findings(self) -> list[Finding]:
        """The kernel module loaded."""
        findings: list[Finding] = []
        try:
            version = self._version()
        except OSError as err:
            version = None
            findings.append(
                Finding(Level.WARNING, f"cannot read {self._proc_path}: {err.strerror}")
            )
        if version is None:
            findings.append(
                Finding(
                    Level.WARNING,
                    "the drbd kernel module is not loaded",
                    "start loads it with `modprobe drbd`",
                )
            )
        return findings

    def _connection_findings(self) -> list[Finding]:
        """A split brain or a cut replication link, named with what to do."""
        try:
            state = self.read_state()
        except (HanodeError, ParseError) as err:
            return [Finding(Level.WARNING, f"cannot read the state of {self.resource}: {err}")]
        if state is None:
            return [
                Finding(
                    Level.WARNING,
                    f"{self.resource} is not up: this node does not replicate",
                    "`hanode stop` brings it up as a standby (hanode-standby.service at boot)",
                )
            ]
        if state.cstate.connected:
            return []
        if state.cstate is ConnState.STANDALONE and self.split_brain():
            message, fix = drbdstate.split_brain_advice(self.resource, self._data_generation())
            return [Finding(Level.ERROR, message, fix)]
        return [
            Finding(
                Level.WARNING,
                f"{self.resource} is not connected to its peer ({state.cstate}): "
                "replication link down, the data is not mirrored",
                f"check the replication link; `drbdadm connect {self.resource}` if StandAlone",
            )
        ]


CLONE_FIX = (
    "order this resource after the promotion of its ocf:linbit:drbd clone "
    "and colocate it with the Promoted role"
)


class PromotedByClone(Drbd):
    """[drbd] when Pacemaker's ocf:linbit:drbd promotable clone promotes and demotes the
    resource (the OCF agent's drbd=clone): start only reads that it is Primary here and
    refuses otherwise; stop leaves it as it is. Not a kind: it has no section of its own.
    """

    # it changes nothing, so it need not wait for the preflight verdict
    confirms_preflight = True

    def settled(self, status: Status, *, starting: bool, ctx: Context) -> bool:
        """Start: Primary. Stop: always, the clone demotes."""
        return status.state is State.UP if starting else True

    def surely_starts(self) -> bool:
        """Never: the clone promotes; start only reads, then refuses or passes."""
        return False

    def start(self, ctx: Context) -> None:
        """Refused, touching nothing, unless the resource is Primary here."""
        state = self.read_state()
        if state is not None and state.role is Role.PRIMARY:
            return
        where = "not up" if state is None else str(state.role)
        raise Refused(f"DRBD {self.resource} is {where} here", CLONE_FIX)

    def stop(self, ctx: Context) -> None:
        """Nothing: the clone demotes."""

    def plan_start(self) -> list[str]:
        """The check start makes."""
        return [f"check that {self.resource} is Primary here (its ocf:linbit:drbd clone promotes)"]

    def plan_stop(self) -> list[str]:
        """Nothing: the clone demotes."""
        return []

    def check(self) -> list[Finding]:
        """drbd-utils, the resource in drbd.conf with this node in it, the module, the
        link; hanode's waits and become-primary-on are left out: the clone promotes."""
        defined = self._definition_findings()
        if any(finding.level is Level.ERROR for finding in defined):
            return defined
        return [*defined, *self._module_findings(), *self._connection_findings()]


def _failed(result: Completed) -> CommandError:
    return CommandError(
        result.argv,
        result.returncode,
        result.stderr,
        f"failed with exit status {result.returncode}",
    )


def _at_least(version: str, wanted: tuple[int, int]) -> bool:
    numbers = re.match(r"(\d+)\.(\d+)", version)
    return numbers is not None and (int(numbers.group(1)), int(numbers.group(2))) >= wanted


def kernel_messages(path: str = "/dev/kmsg") -> list[str]:
    """The kernel log since boot (its ring buffer), one message a record; [] if unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return []
    messages = []
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                break  # the end of the buffer
            except BrokenPipeError:
                continue  # a record was overwritten while we read: go on with the next
            if not record:
                break
            # "priority,sequence,usec,flags;message\n continuation..."
            messages.append(record.decode(errors="replace").partition(";")[2].split("\n")[0])
    except OSError:
        pass
    finally:
        os.close(fd)
    return messages


def describe_openers(device: str) -> str:
    """Who holds ``device`` open: processes by pid and name, or the mounts on it."""
    try:
        st = os.stat(device)
    except OSError as err:
        return f"{device}: {err.strerror}"
    if not stat.S_ISBLK(st.st_mode):
        return f"{device} is not a block device"
    from hanode.system.holders import find_holders

    number = st.st_rdev
    holders = find_holders({number})
    parts = [f"held by {holder.describe()}" for holder in holders]
    parts.extend(f"mounted on {where}" for where in mount_points_of(number))
    if not parts:
        return f"{device} is open, but no process or mount holds it (a kernel user: LVM, md, loop?)"
    return f"{device} is " + "; ".join(parts)


def request_reboot(reason: str) -> None:
    """Write the journal to disk, then ask systemd-logind to reboot the machine."""
    from hanode.system.dbus import Systemd

    log.critical("rebooting: %s", reason)
    try:
        # journald holds recent entries in memory: write them before the machine goes
        run(["journalctl", "--sync"], timeout=10, check=False)
    except CommandError as err:
        log.warning("journalctl --sync: %s", err)
    os.sync()
    # the bounded connect and call of the services step: a hung bus cannot hang the stop
    with Systemd.connect() as bus:
        bus.reboot()
