"""The services step: systemd units started in the configured order, stopped in reverse.

Through systemd's D-Bus API (hanode.system.dbus), never ``systemctl``. Each start and stop is a
job waited for, bounded by ``[services] timeout`` per unit; a job still running then is
cancelled. A unit counts as started when its job is ``done`` AND its ActiveState is
active (a ``Type=simple`` job is done at fork), as stopped when it is inactive or failed.

A failed start raises at once and leaves the units it already started running: the
engine calls this step's ``stop()`` during rollback, which stops exactly the configured
units in reverse order (skipping those already down), so the node ends with no half-up
services and this step does not stop twice what the rollback stops anyway.

Managed units belong to hanode alone. ``check`` (and ``start``, before touching anything)
refuses a unit that does not exist, one enabled to start on its own, and one tied to
hanode's own unit (After=/Requires=/WantedBy= hanode-primary.service: hanode starts it
from inside that unit, so its job waits for hanode's to end, a deadlock until timeout).
``--force`` starts anyway (logged) except for a unit systemd cannot load.

A stop halts at the first unit that does not stop (like the engine): the units before
it in start order keep running rather than lose what they depend on.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from fnmatch import fnmatch
from typing import TYPE_CHECKING, NamedTuple

from hanode.config import Table, describe, first_duplicate
from hanode.errors import HanodeError, Refused, StepFailed
from hanode.resources import Context, Finding, Level, Resource, State, Status

if TYPE_CHECKING:
    from hanode.system.dbus import JobOutcome, Systemd, UnitInfo

log = logging.getLogger("hanode.services")

HANODE_UNIT = "hanode-primary.service"  # hanode's own unit (units/hanode-primary.service)
JOURNAL_LINES = 5  # the last lines of a failed unit quoted in the error
JOURNAL_SETTLE = 1.0  # s to let journald catch up with a unit that just failed
_ENABLED = ("enabled", "enabled-runtime")
# Debian's umbrella unit and the pattern of the real cluster units behind it.
_PG_UMBRELLA = "postgresql.service"
_PG_CLUSTERS = "postgresql@*.service"


UNIT_SUFFIXES = (".service", ".socket", ".target", ".mount", ".timer", ".path", ".scope")


class ServicesConfig(NamedTuple):
    """The [services] section."""

    units: tuple[str, ...]
    timeout: int = 90


class Services(Resource[ServicesConfig]):
    """systemd units, started in order and stopped in reverse (the last step)."""

    section = "services"
    order = 50
    settings = ServicesConfig

    @classmethod
    def parse(cls, table: Table, parsed: Mapping[str, object]) -> ServicesConfig:
        """[services]: the units, in start order, and the per-unit timeout."""
        units = table.get("units", list)
        if not units:
            raise table.error("units", "must list at least one unit", 'e.g. ["apache2.service"]')
        for unit in units:
            if not isinstance(unit, str):
                raise table.error("units", f"expected unit names, got {describe(unit)}")
            # systemd's own rule (unit_name_is_valid): these characters, at most 255 of them
            valid = re.fullmatch(r"[A-Za-z0-9:_.\\@-]{1,255}", unit)
            if not valid or not unit.endswith(UNIT_SUFFIXES) or unit.startswith("."):
                raise table.error(
                    "units", f"not a unit name: {unit!r}", 'units end in ".service", ".socket", ...'
                )
        duplicate = first_duplicate(units)
        if duplicate:
            raise table.error("units", f"{duplicate} is listed twice")
        return ServicesConfig(units=tuple(units), timeout=table.integer("timeout", 1, 3600, 90))

    @classmethod
    def start_budget(cls, config: ServicesConfig) -> float:
        """Each unit's start job, waited for up to the timeout."""
        return len(config.units) * config.timeout

    @classmethod
    def stop_budget(cls, config: ServicesConfig) -> float:
        """Each unit's stop job, waited for up to the timeout."""
        return len(config.units) * config.timeout

    # -- reading ----------------------------------------------------------------------

    def probe(self) -> Status:
        """Each unit's ActiveState/SubState; UNKNOWN when systemd cannot be asked."""
        try:
            with _connect() as bus:
                # Not the UnitFileState: systemd reads the unit directories for it, the
                # bulk of the probe's time; `hanode check` reports units enabled at boot.
                infos = bus.states(self.config.units)
        except HanodeError as err:
            return Status(State.UNKNOWN, str(err))
        details = {
            info.name: {
                "load": info.load_state,
                "active": info.active_state.value,
                "sub": info.sub_state,
            }
            for info in infos
        }
        described = ", ".join(_describe(info) for info in infos)
        if all(info.active_state.is_up for info in infos):
            return Status(State.UP, f"all active: {described}", details)
        if all(info.active_state.is_down for info in infos):
            return Status(State.DOWN, f"all down: {described}", details)
        return Status(State.PARTIAL, described, details)

    def plan_start(self) -> list[str]:
        """One line per unit a start would start, in order."""
        try:
            with _connect() as bus:
                infos = bus.states(self.config.units)
        except HanodeError as err:
            return self._blind_plan("start", self.config.units, err)
        return [
            f"start {info.name} (now {_state(info)}), wait up to {self.config.timeout}s"
            for info in infos
            if not info.active_state.is_up
        ]

    def plan_stop(self) -> list[str]:
        """One line per unit a stop would stop, in reverse order."""
        units = list(reversed(self.config.units))
        try:
            with _connect() as bus:
                infos = bus.states(units)
        except HanodeError as err:
            return self._blind_plan("stop", units, err)
        return [
            f"stop {info.name} (now {_state(info)}), wait up to {self.config.timeout}s"
            for info in infos
            if not info.active_state.is_down and info.load_state != "not-found"
        ]

    def _blind_plan(self, verb: str, units: Sequence[str], err: HanodeError) -> list[str]:
        """The plan from hanode.toml alone, when systemd cannot be asked (no bus here)."""
        return [
            *(f"{verb} {unit}, wait up to {self.config.timeout}s" for unit in units),
            f"(units' states unknown: {err.message})",
        ]

    def check(self) -> list[Finding]:
        """Every managed unit exists, is disabled at boot and is not tied to hanode's unit."""
        try:
            with _connect() as bus:
                primary = bus.unit(HANODE_UNIT, service=False)
                return [
                    finding
                    for unit in self.config.units
                    for finding in _findings_from_bus(bus, _full(bus, unit), primary)
                ]
        except HanodeError as err:
            message = f"cannot ask systemd about the units: {err.message}"
            return [Finding(Level.ERROR, message, err.hint)]

    # -- acting -----------------------------------------------------------------------

    def __init__(self, config: ServicesConfig) -> None:
        super().__init__(config)
        self._preflight_passed = False  # this run's preflight found no unit to refuse

    def preflight(self, ctx: Context) -> None:
        """Before anything changes: a unit that start would refuse (missing, enabled at
        boot, pulled in by another unit) refuses the whole start here, before DRBD is
        promoted, instead of after the filesystem, the links and the address; and the
        D-Bus library is loaded while the other steps wait on DRBD and the network."""
        with _connect() as bus:
            self._refuse(bus, ctx)
        self._preflight_passed = True

    def start(self, ctx: Context) -> None:
        """Start the units in order, each waited for; already active ones are skipped."""
        with _connect() as bus:
            if not self._preflight_passed:
                self._refuse(bus, ctx)
            for unit in self.config.units:
                (info,) = bus.states([unit])  # now: an earlier unit may have pulled it in
                if info.active_state.is_up:
                    log.info("%s is already %s", unit, _state(info))
                    continue
                self._job(bus, ctx, unit, "start")

    def stop(self, ctx: Context) -> None:
        """Stop the units in reverse order; those already down are skipped."""
        with _connect() as bus:
            for unit in reversed(self.config.units):
                (info,) = bus.states([unit])  # now: stopping a later unit may stop it too
                if info.active_state.is_down or info.load_state == "not-found":
                    log.info("%s is already %s", unit, _state(info))
                    continue
                self._job(bus, ctx, unit, "stop")

    def _job(self, bus: Systemd, ctx: Context, unit: str, verb: str) -> None:
        """Run one start or stop job to its end; raise StepFailed unless it got there."""
        from hanode.system.dbus import JobTimeout  # loaded already: the bus is open

        since = time.time()
        timeout = float(self.config.timeout)
        try:
            with ctx.waiting(f"{verb} {unit}") as line:

                def show(left: float) -> None:
                    line.update(f"{left:.0f}s left")

                if verb == "start":
                    outcome = bus.start(unit, timeout=timeout, progress=show)
                else:
                    outcome = bus.stop(unit, timeout=timeout, progress=show)
        except JobTimeout as err:
            raise StepFailed(_with_journal(err.message, unit, since), err.hint) from err
        (info,) = bus.states([unit])
        reached = info.active_state.is_up if verb == "start" else info.active_state.is_down
        if outcome.done and reached:
            log.info("%s: %s done in %.2fs, now %s", unit, verb, outcome.seconds, _state(info))
            return
        raise StepFailed(
            _with_journal(_job_failure(outcome, info, verb), unit, since),
            f"see `journalctl -u {unit}`",
        )

    def _refuse(self, bus: Systemd, ctx: Context) -> None:
        """Raise Refused for what check calls an error; --force passes all but missing units."""
        primary = bus.unit(HANODE_UNIT, service=False)
        for unit in self.config.units:
            info = _full(bus, unit)
            for finding in _findings_from_bus(bus, info, primary):
                if finding.level is not Level.ERROR:
                    continue
                if ctx.force and info.load_state == "loaded":
                    log.warning("--force: starting anyway although %s", finding.message)
                    continue
                raise Refused(finding.message, finding.hint)


_kept: list[Systemd] = []  # the main thread's connection to systemd, once opened
_kept_lock = threading.Lock()


@contextmanager
def _connect() -> Iterator[Systemd]:
    """The run's connection to systemd, opened at first use and kept: the status probe,
    the step and the probe after it ask on one connection, the main thread's. Another
    thread (the start's preflight, while DRBD and the network are waited on) opens its
    own and, done with it, hands it to the main thread if that has none yet: the start's
    services step then asks on it instead of connecting again once the address is up
    (connect, authentication and Hello: 0.05 to 0.1 s of a lab guest, on the critical
    path). One that failed, or that an exception other than hanode's own verdicts cut
    mid-call (a signal), is closed and forgotten: the next use connects again. The D-Bus
    library is imported only by what talks to systemd."""
    from hanode.system.dbus import BusError, Systemd

    main = threading.current_thread() is threading.main_thread()
    with _kept_lock:
        bus = _kept[0] if main and _kept else None
    if bus is None:
        bus = Systemd.connect()
        if main:
            with _kept_lock:
                _kept.insert(0, bus)
    try:
        yield bus
    except BaseException as err:
        if isinstance(err, BusError) or not isinstance(err, HanodeError):
            with _kept_lock:
                if bus in _kept:
                    _kept.remove(bus)
            bus.close()
        elif not main:
            bus.close()
        raise
    if not main:
        with _kept_lock:
            handed = not _kept
            if handed:
                _kept.append(bus)
        if not handed:
            bus.close()


def _full(bus: Systemd, unit: str) -> UnitInfo:
    """Everything check needs of ``unit``; the service section only for Debian's
    PostgreSQL umbrella, the one unit whose findings read it."""
    return bus.unit(unit, service=unit == _PG_UMBRELLA)


def _state(info: UnitInfo) -> str:
    if info.load_state != "loaded":
        return info.load_state
    return f"{info.active_state.value}/{info.sub_state}"


def _describe(info: UnitInfo) -> str:
    return f"{info.name} {_state(info)}"


def _job_failure(outcome: JobOutcome, info: UnitInfo, verb: str) -> str:
    if outcome.done:
        # The job ended well but the unit did not stay there (a simple service that died).
        return f"{info.name}: {verb} job done but the unit is {_state(info)}"
    return f"{info.name}: {verb} failed (job result: {outcome.result}, unit {_state(info)})"


def _with_journal(message: str, unit: str, since: float) -> str:
    lines = journal_tail(unit, since)
    return f"{message}: {' / '.join(lines)}" if lines else message


def journal_tail(unit: str, since: float, count: int = JOURNAL_LINES) -> list[str]:
    """The unit's last journal lines since ``since`` (epoch s); best effort, [] if unreadable."""
    try:
        # Imported here: only a failure pays for it.
        from systemd import journal
    except ImportError:
        return []
    try:
        reader = journal.Reader()
        try:
            # The service's own output, and what systemd said about the unit.
            reader.add_match(_SYSTEMD_UNIT=unit)
            reader.add_disjunction()
            reader.add_match(UNIT=unit)
            reader.seek_realtime(int(since * 1_000_000))
            entries: list[tuple[bool, str]] = []
            deadline = time.monotonic() + JOURNAL_SETTLE
            while True:
                entries += [
                    (entry.get("SYSLOG_IDENTIFIER") == "systemd", str(entry.get("MESSAGE", "")))
                    for entry in reader
                ]
                # journald writes asynchronously: give a just-failed unit's lines a moment.
                if entries or time.monotonic() >= deadline:
                    break
                reader.wait(0.1)
            # The service's own words name the cause ("Address already in use"); systemd's
            # ("Failed with result 'exit-code'") only repeat the job result already given.
            own = [text.strip() for by_systemd, text in entries if not by_systemd and text.strip()]
            every = [text.strip() for _, text in entries if text.strip()]
            return (own or every)[-count:]
        finally:
            reader.close()
    except Exception as err:
        log.debug("cannot read the journal of %s: %s", unit, err)
        return []


def _findings_from_bus(bus: Systemd, info: UnitInfo, primary: UnitInfo) -> list[Finding]:
    """The findings of ``check`` for one unit, asking the bus what else is needed."""
    clusters: list[str] = []
    if info.name == _PG_UMBRELLA:
        # The umbrella Wants= its clusters (Debian's generator links them at boot).
        clusters = sorted(name for name in info.wants if fnmatch(name, _PG_CLUSTERS))
        clusters = clusters or [name for name, _active in bus.units_matching([_PG_CLUSTERS])]
    return unit_findings(info, primary, clusters)


def unit_findings(info: UnitInfo, primary: UnitInfo, clusters: Sequence[str] = ()) -> list[Finding]:
    """The findings of ``check`` for one unit, from its state alone.

    ``primary`` is hanode's own unit; ``clusters`` the postgresql@ units known, for the
    warning about Debian's postgresql.service umbrella.
    """
    unit = info.name
    if info.load_state == "not-found":
        return [
            Finding(
                Level.ERROR,
                f"{unit} does not exist (LoadState not-found)",
                "install its package, or correct the name in [services] units",
                missing=True,
            )
        ]
    if info.load_state == "masked":
        return [Finding(Level.ERROR, f"{unit} is masked", f"systemctl unmask {unit}")]
    if info.load_state != "loaded":
        detail = f": {info.load_error}" if info.load_error else ""
        return [
            Finding(
                Level.ERROR,
                f"{unit} cannot be loaded (LoadState {info.load_state}){detail}",
                f"fix the unit file, see `systemd-analyze verify {unit}`",
            )
        ]
    found: list[Finding] = []
    if info.unit_file_state in _ENABLED:
        runtime = info.unit_file_state == "enabled-runtime"
        hint = f"systemctl disable{' --runtime' if runtime else ''} {unit}"
        if unit.startswith("postgresql@"):
            hint += "; and set the cluster's start.conf to manual"
        found.append(
            Finding(
                Level.ERROR,
                f"{unit} is enabled{' (at runtime)' if runtime else ''}: it starts at boot "
                "on its own, whichever node is active",
                hint,
            )
        )
    elif info.unit_file_state == "indirect":
        found.append(
            Finding(
                Level.WARNING,
                f"{unit} is enabled indirectly (a socket or another unit may start it)",
                f"disable the units named in Also= of {unit}",
            )
        )
    if HANODE_UNIT in info.after:
        found.append(
            Finding(
                Level.ERROR,
                f"{unit} is ordered After={HANODE_UNIT}: hanode starts it from inside that "
                "unit, so its start would wait for hanode's own (a deadlock until timeout)",
                f"remove After={HANODE_UNIT} from {unit} (systemctl edit {unit})",
            )
        )
    if HANODE_UNIT in info.requires:
        found.append(
            Finding(
                Level.ERROR,
                f"{unit} requires {HANODE_UNIT} (Requires=/Requisite=/BindsTo=): starting it "
                "would start hanode from inside hanode",
                f"remove the dependency on {HANODE_UNIT} from {unit} (systemctl edit {unit})",
            )
        )
    # A WantedBy= shows on the unit only while hanode's unit is loaded: ask both sides.
    if HANODE_UNIT in info.wanted_by or unit in primary.wants:
        found.append(
            Finding(
                Level.ERROR,
                f"{unit} is pulled in by {HANODE_UNIT} (WantedBy=/RequiredBy=): systemd would "
                "start it alongside hanode, before its data is there",
                f"systemctl disable {unit}",
            )
        )
    if unit == _PG_UMBRELLA and info.service_type == "oneshot":
        named = ", ".join(clusters) if clusters else "postgresql@VERSION-CLUSTER.service"
        found.append(
            Finding(
                Level.WARNING,
                f"{unit} is Debian's umbrella unit (a oneshot running "
                f"{_argv0(info)}): its state says nothing of the database clusters",
                f"manage the cluster unit instead: {named}",
            )
        )
    if info.need_daemon_reload:
        found.append(
            Finding(
                Level.WARNING,
                f"{unit} changed on disk since systemd read it: a start would use the old one",
                "systemctl daemon-reload",
            )
        )
    if not found:
        found.append(Finding(Level.OK, f"{unit}: {info.unit_file_state}, {_state(info)}"))
    return found


def _argv0(info: UnitInfo) -> str:
    return info.exec_start[0][0] if info.exec_start and info.exec_start[0] else "nothing"
