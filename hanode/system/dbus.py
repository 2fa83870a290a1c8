"""A small blocking client of systemd's Manager on the system bus (jeepney).

One connection per hanode action. Starting or stopping a unit is a job: we ask the bus
for JobRemoved signals and Subscribe BEFORE StartUnit/StopUnit, so the signal of a job
that ends at once cannot be missed, then wait, bounded, for the JobRemoved of exactly
that job. On expiry the job is cancelled. Every call has a timeout. ``systemctl`` is not
used. The bus address is jeepney's: $DBUS_SYSTEM_BUS_ADDRESS, else the standard socket.

Written against jeepney 0.8 (Debian 12); it uses only what 0.9 (Debian 13) keeps.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from types import TracebackType
from typing import Any, NamedTuple

from jeepney import (  # type: ignore[import]
    DBusAddress,
    MatchRule,
    Message,
    MessageType,
    new_method_call,
)
from jeepney.bus import get_bus  # type: ignore[import]
from jeepney.bus_messages import message_bus  # type: ignore[import]
from jeepney.io.blocking import DBusConnection, prep_socket  # type: ignore[import]
from jeepney.low_level import HeaderFields, MessageFlag  # type: ignore[import]

from hanode.errors import StepFailed

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT = "org.freedesktop.systemd1.Unit"
SERVICE = "org.freedesktop.systemd1.Service"
JOB = "org.freedesktop.systemd1.Job"
PROPERTIES = "org.freedesktop.DBus.Properties"
LOGIND = "org.freedesktop.login1"
NETWORK1 = "org.freedesktop.network1"  # systemd-networkd
NETWORK1_PATH = "/org/freedesktop/network1"
# the bus's answers when nobody owns the name (and it is not to be activated for us)
_NOT_RUNNING = (
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
)

CALL_TIMEOUT = 10.0  # s for one method call: systemd answers in milliseconds unless stuck
CANCEL_SETTLE = 2.0  # s to see the JobRemoved of a job we cancelled
_TICK = 1.0  # s between progress updates while a job runs

# The bus answers these when a job ended before we could cancel it.
_GONE_JOB_ERRORS = (
    "org.freedesktop.systemd1.NoSuchJob",
    "org.freedesktop.DBus.Error.UnknownObject",
    "org.freedesktop.DBus.Error.UnknownMethod",
)


class BusError(StepFailed):
    """systemd could not be reached on the system bus, or a call to it failed."""

    def __init__(self, message: str, hint: str | None = None, name: str | None = None) -> None:
        super().__init__(message, hint)
        self.name = name  # the D-Bus error name, when the bus answered with an error


class JobTimeout(StepFailed):
    """A start or stop job did not finish in time; it was cancelled."""

    def __init__(self, unit: str, verb: str, timeout: float) -> None:
        super().__init__(
            f"{unit}: {verb} did not finish within {timeout:g}s; the job was cancelled",
            f"see `journalctl -u {unit}`, or raise [services] timeout",
        )
        self.unit = unit


class ActiveState(StrEnum):
    """A unit's ActiveState, in systemd's own words."""

    ACTIVE = "active"
    RELOADING = "reloading"
    REFRESHING = "refreshing"  # systemd >= 255: active, refreshing mounts
    INACTIVE = "inactive"
    FAILED = "failed"
    ACTIVATING = "activating"
    DEACTIVATING = "deactivating"
    MAINTENANCE = "maintenance"  # systemd >= 250: active, cleaning

    @property
    def is_up(self) -> bool:
        """Running, as far as a start is concerned."""
        return self in (ActiveState.ACTIVE, ActiveState.RELOADING, ActiveState.REFRESHING)

    @property
    def is_down(self) -> bool:
        """Not running, as far as a stop is concerned (a failed unit runs nothing)."""
        return self in (ActiveState.INACTIVE, ActiveState.FAILED)


class JobResult(StrEnum):
    """The result word of a JobRemoved signal."""

    DONE = "done"
    CANCELED = "canceled"
    TIMEOUT = "timeout"
    FAILED = "failed"
    DEPENDENCY = "dependency"
    SKIPPED = "skipped"
    INVALID = "invalid"
    ASSERT = "assert"
    UNSUPPORTED = "unsupported"
    COLLECTED = "collected"
    ONCE = "once"


class UnitInfo(NamedTuple):
    """What hanode needs to know of one unit (from its D-Bus properties)."""

    name: str
    load_state: str  # loaded, not-found, bad-setting, error, masked
    active_state: ActiveState
    sub_state: str
    unit_file_state: str  # enabled, disabled, static, masked, enabled-runtime, ...
    after: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()  # Requires=, Requisite=, BindsTo= together
    wanted_by: tuple[str, ...] = ()  # WantedBy=, RequiredBy= together
    wants: tuple[str, ...] = ()  # what starting it pulls in: Wants=, Requires=, BindsTo=
    load_error: str = ""
    service_type: str = ""  # simple, oneshot, notify, ... (services only)
    exec_start: tuple[tuple[str, ...], ...] = ()  # argv of each ExecStart= (services only)
    need_daemon_reload: bool = False  # the unit file changed on disk since it was loaded


class JobOutcome(NamedTuple):
    """How a start or stop job ended."""

    unit: str
    job: str  # the job's object path
    result: str  # a JobResult word (kept as text: newer systemd may add words)
    seconds: float

    @property
    def done(self) -> bool:
        """The job did what was asked."""
        return self.result == JobResult.DONE


def _strings(value: object) -> tuple[str, ...]:
    return tuple(str(item) for item in value) if isinstance(value, list | tuple) else ()


def _shut(sock: socket.socket) -> None:
    """End a connection from another thread: a blocked receive on it returns at once."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def reboot_message() -> Any:
    """login1's Manager.Reboot(interactive=false): no polkit question, no prompt."""
    manager = DBusAddress("/org/freedesktop/login1", bus_name=LOGIND, interface=f"{LOGIND}.Manager")
    return new_method_call(manager, "Reboot", "b", (False,))


class Systemd:
    """A connection to systemd's Manager; use as a context manager."""

    def __init__(self, connection: Any, *, call_timeout: float = CALL_TIMEOUT) -> None:
        self._conn: DBusConnection = connection
        self.call_timeout = call_timeout
        self._subscribed = False

    @classmethod
    def connect(cls, bus: str = "SYSTEM", *, timeout: float = CALL_TIMEOUT) -> Systemd:
        """Open the system bus ($DBUS_SYSTEM_BUS_ADDRESS overrides the address)."""
        try:
            sock = prep_socket(get_bus(bus), timeout=timeout)  # connect + auth, bounded
        except (OSError, RuntimeError, ValueError, KeyError) as err:
            raise BusError(
                f"cannot connect to the system bus: {err}",
                "is dbus running? See `systemctl status dbus.service`",
            ) from err
        # DBusConnection() says Hello and waits for the answer without a time limit: a
        # bus that authenticates and then hangs would hang hanode. Cut it off in time.
        cut = threading.Event()  # set before the cut, so the failure it causes knows why

        def cut_off() -> None:
            cut.set()
            _shut(sock)

        hung = threading.Timer(timeout, cut_off)
        hung.start()
        try:
            connection = DBusConnection(sock)
        except (OSError, RuntimeError, ValueError) as err:
            sock.close()
            why = f"no answer to Hello within {timeout:g}s" if cut.is_set() else err
            raise BusError(
                f"the system bus does not answer: {why}",
                "is dbus-daemon hung? See `systemctl status dbus.service`",
            ) from err
        finally:
            hung.cancel()
        return cls(connection, call_timeout=timeout)

    def reboot(self) -> None:
        """Ask systemd-logind for a clean reboot, as `systemctl reboot` does."""
        self._send(reboot_message(), "login1 Reboot")

    def close(self) -> None:
        """Close the connection (systemd drops our subscription with it)."""
        self._conn.close()

    def __enter__(self) -> Systemd:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- calls ------------------------------------------------------------------------

    def _send(self, message: Any, what: str, timeout: float | None = None) -> tuple[Any, ...]:
        """Send a method call, wait (bounded) for its reply, return the reply's body."""
        limit = self.call_timeout if timeout is None else timeout
        try:
            reply: Message = self._conn.send_and_get_reply(message, timeout=limit)
        except TimeoutError as err:
            raise BusError(f"systemd did not answer {what} within {limit:g}s") from err
        except OSError as err:
            raise BusError(f"lost the system bus during {what}: {err}") from err
        if reply.header.message_type == MessageType.error:
            name = reply.header.fields.get(HeaderFields.error_name, "?")
            detail = reply.body[0] if reply.body else name
            raise BusError(f"{what} failed: {detail}", name=str(name))
        return tuple(reply.body)

    def _call(
        self,
        path: str,
        interface: str,
        method: str,
        signature: str | None = None,
        body: tuple[Any, ...] = (),
    ) -> tuple[Any, ...]:
        address = DBusAddress(path, bus_name=SYSTEMD, interface=interface)
        # Name the call with its first argument (the unit), so an error says which.
        what = f"{method}({body[0]})" if body and isinstance(body[0], str) else method
        return self._send(new_method_call(address, method, signature, body), what)

    def _properties(self, path: str, interface: str) -> dict[str, Any]:
        (props,) = self._call(path, PROPERTIES, "GetAll", "s", (interface,))
        # jeepney gives each variant as (signature, value).
        return {name: value for name, (_sig, value) in props.items()}

    def unit_path(self, unit: str) -> str:
        """The object path of ``unit``, loading it if systemd has not yet (LoadUnit)."""
        (path,) = self._call(MANAGER_PATH, MANAGER, "LoadUnit", "s", (unit,))
        return str(path)

    def unit(self, unit: str, *, service: bool = True) -> UnitInfo:
        """The state, enablement and dependencies of ``unit``; with ``service``, also what
        its service section says (Type, ExecStart: a second, larger reply, which knowing
        the unit's state does not need)."""
        path = self.unit_path(unit)
        props = self._properties(path, UNIT)
        details: Mapping[str, Any] = {}
        if service and unit.endswith(".service") and props.get("LoadState") == "loaded":
            details = self._properties(path, SERVICE)
        load_error = props.get("LoadError") or ("", "")
        active = _active_state(unit, props.get("ActiveState", ""))
        return UnitInfo(
            name=unit,
            load_state=str(props.get("LoadState", "")),
            active_state=active,
            sub_state=str(props.get("SubState", "")),
            unit_file_state=str(props.get("UnitFileState", "")),
            after=_strings(props.get("After")),
            requires=_strings(props.get("Requires"))
            + _strings(props.get("Requisite"))
            + _strings(props.get("BindsTo")),
            wanted_by=_strings(props.get("WantedBy")) + _strings(props.get("RequiredBy")),
            wants=_strings(props.get("Wants"))
            + _strings(props.get("Requires"))
            + _strings(props.get("BindsTo")),
            load_error=str(load_error[1]) if len(load_error) > 1 else "",
            service_type=str(details.get("Type", "")),
            exec_start=tuple(
                tuple(str(arg) for arg in entry[1]) for entry in details.get("ExecStart", ())
            ),
            need_daemon_reload=bool(props.get("NeedDaemonReload", False)),
        )

    def states(self, units: Sequence[str]) -> list[UnitInfo]:
        """Each unit's LoadState, ActiveState and SubState, in one call for all of them
        (ListUnitsByNames: systemd loads a unit it has not yet, as LoadUnit does; its reply
        is a line per unit where GetAll's is a hundred properties, among them the
        UnitFileState, for which systemd reads the unit directories: in the lab's guests
        13 ms for two units against 95). The file state, the dependencies, the load error
        and the service's settings are left empty: ``unit`` reads those."""
        if not units:
            return []
        (entries,) = self._call(MANAGER_PATH, MANAGER, "ListUnitsByNames", "as", (list(units),))
        # (name, description, load, active, sub, following, path, job id, type, path): one
        # per name asked, in order, named by the unit's main name (an alias asked for is
        # answered under the name it aliases); a name that is not a unit name is skipped.
        if len(entries) != len(units):
            listed = {str(entry[0]) for entry in entries}
            missing = ", ".join(unit for unit in units if unit not in listed)
            raise BusError(f"ListUnitsByNames failed: systemd did not list {missing}")
        infos = []
        for unit, entry in zip(units, entries, strict=True):
            infos.append(
                UnitInfo(
                    name=unit,
                    load_state=str(entry[2]),
                    active_state=_active_state(unit, entry[3]),
                    sub_state=str(entry[4]),
                    unit_file_state="",
                )
            )
        return infos

    def units_matching(self, patterns: Sequence[str]) -> list[tuple[str, str]]:
        """(name, ActiveState) of the loaded units whose names match the glob patterns."""
        (units,) = self._call(
            MANAGER_PATH, MANAGER, "ListUnitsByPatterns", "asas", ([], list(patterns))
        )
        return sorted((str(entry[0]), str(entry[3])) for entry in units)

    def network_link(self, index: int) -> dict[str, Any] | None:
        """systemd-networkd's description of link ``index`` (its Link.Describe(), the JSON
        `networkctl status --json` prints: NetworkFile names the .network file applied);
        None when networkd does not run (the question never starts it: no auto-start)
        or does not know the link."""
        import json

        def call(path: str, interface: str, method: str, *args: Any) -> tuple[Any, ...]:
            address = DBusAddress(path, bus_name=NETWORK1, interface=interface)
            message = new_method_call(address, method, "i" if args else None, args)
            message.header.flags |= MessageFlag.no_auto_start
            return self._send(message, f"systemd-networkd's {method}")

        try:
            _name, path = call(NETWORK1_PATH, f"{NETWORK1}.Manager", "GetLinkByIndex", index)
            (text,) = call(str(path), f"{NETWORK1}.Link", "Describe")
        except BusError as err:
            if err.name in _NOT_RUNNING or err.name == f"{NETWORK1}.NoSuchLink":
                return None
            raise
        described = json.loads(text)
        return described if isinstance(described, dict) else None

    def _subscribe(self) -> None:
        """Have the bus route systemd's JobRemoved to us, and systemd send it."""
        if self._subscribed:
            return
        # The bus-side rule may name systemd's well-known name: the bus resolves it.
        rule = MatchRule(
            type="signal", sender=SYSTEMD, interface=MANAGER, member="JobRemoved", path=MANAGER_PATH
        )
        self._send(message_bus.AddMatch(rule), "AddMatch")
        self._call(MANAGER_PATH, MANAGER, "Subscribe")
        self._subscribed = True

    def start(
        self, unit: str, *, timeout: float, progress: Callable[[float], None] | None = None
    ) -> JobOutcome:
        """StartUnit(unit, "replace") and wait for its job; cancel it on ``timeout``."""
        return self._job("StartUnit", "start", unit, timeout, progress)

    def stop(
        self, unit: str, *, timeout: float, progress: Callable[[float], None] | None = None
    ) -> JobOutcome:
        """StopUnit(unit, "replace") and wait for its job; cancel it on ``timeout``."""
        return self._job("StopUnit", "stop", unit, timeout, progress)

    def _job(
        self,
        method: str,
        verb: str,
        unit: str,
        timeout: float,
        progress: Callable[[float], None] | None,
    ) -> JobOutcome:
        # Signals arrive from systemd's unique name, not "org.freedesktop.systemd1": the
        # local rule must not name a sender. An unbounded deque loses no signal.
        rule = MatchRule(type="signal", interface=MANAGER, member="JobRemoved", path=MANAGER_PATH)
        removed: deque[Any] = deque()
        with self._conn.filter(rule, queue=removed):
            self._subscribe()
            started = time.monotonic()
            deadline = started + timeout
            (job,) = self._call(MANAGER_PATH, MANAGER, method, "ss", (unit, "replace"))
            while True:
                result = _job_result(removed, job)
                if result is not None:
                    return JobOutcome(unit, str(job), result, time.monotonic() - started)
                left = deadline - time.monotonic()
                if left <= 0:
                    self._cancel(job, removed)
                    raise JobTimeout(unit, verb, timeout)
                if progress is not None:
                    progress(left)
                self._receive(min(_TICK, left), f"the {verb} job of {unit}")

    def _receive(self, timeout: float, what: str) -> None:
        """Read one message into the filters, or return after ``timeout`` s of silence."""
        try:
            self._conn.recv_messages(timeout=timeout)
        except TimeoutError:
            return
        except OSError as err:
            raise BusError(f"lost the system bus while waiting for {what}: {err}") from err

    def _cancel(self, job: str, removed: deque[Any]) -> None:
        """Cancel ``job`` (it may have just ended) and give its JobRemoved a moment."""
        try:
            self._call(job, JOB, "Cancel")
        except BusError as err:
            if err.name not in _GONE_JOB_ERRORS:
                raise
            return
        deadline = time.monotonic() + CANCEL_SETTLE
        while _job_result(removed, job) is None and time.monotonic() < deadline:
            self._receive(deadline - time.monotonic(), "a cancelled job")


def _active_state(unit: str, value: object) -> ActiveState:
    try:
        return ActiveState(str(value))
    except ValueError as err:
        raise BusError(f"{unit}: unknown ActiveState {value!r}") from err


def _job_result(removed: deque[Any], job: str) -> str | None:
    """The result of ``job`` if its JobRemoved (id, job, unit, result) has arrived."""
    while removed:
        message = removed.popleft()
        if len(message.body) == 4 and message.body[1] == job:
            return str(message.body[3])
    return None
