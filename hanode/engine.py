"""The start/stop pipeline: resources in order, probe before acting, rollback, lock.

The engine knows nothing of DRBD or netlink: it asks each resource where it stands,
skips what is already in the wanted state, acts on the rest, times every step, and on a
failed start stops, in reverse, what this run started. One hanode runs at a time.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Any

from hanode import log as hlog
from hanode.errors import HanodeError, LockHeld, Refused, StatusExit, StepFailed, UsageError
from hanode.resources import Context, Finding, Level, Resource, State, Status

logger = logging.getLogger("hanode.engine")


class Action(StrEnum):
    START = "start"
    STOP = "stop"
    ROLLBACK = "rollback"


class Result(StrEnum):
    DONE = "done"
    SKIPPED = "skipped"  # already in the wanted state
    FAILED = "failed"
    REFUSED = "refused"
    ROLLED_BACK = "rolled-back"
    ROLLBACK_FAILED = "rollback-failed"

    @property
    def level(self) -> int:
        """The log level of a step that ended so."""
        if self is Result.FAILED:
            return logging.ERROR
        if self in (Result.REFUSED, Result.ROLLBACK_FAILED):
            return logging.WARNING
        return logging.INFO


@dataclass(frozen=True)
class StepReport:
    step: str
    action: Action
    result: Result
    seconds: float
    message: str = ""


@dataclass
class RunReport:
    """What a start or stop did, step by step; written to the state dir for status."""

    verb: Action
    started_at: float
    steps: list[StepReport] = field(default_factory=list)
    seconds: float = 0.0
    ok: bool = False

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class PlanLine:
    step: str
    state: State
    summary: str
    actions: tuple[str, ...]  # empty: skipped, already in the wanted state


class Interrupted(StepFailed):
    """SIGINT or SIGTERM arrived while a start or stop was under way."""


def run_dir() -> Path:
    """Where the lock and the last run reports live (/run; HANODE_RUN_DIR for tests)."""
    return Path(os.environ.get("HANODE_RUN_DIR", "/run"))


class Engine:
    """Runs the configured resources in start order, or in exact reverse to stop."""

    def __init__(
        self, resources: Sequence[Resource[Any]], *, state_dir: Path | None = None
    ) -> None:
        self.resources = list(resources)
        base = state_dir or run_dir()
        self.lock_path = base / "hanode.lock"
        self.state_dir = base / "hanode"

    # -- the lock ---------------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold /run/hanode.lock; a second hanode is refused at once, naming the holder."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except PermissionError:
            raise UsageError(
                f"cannot open the lock {self.lock_path}: permission denied", "run hanode as root"
            ) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                raise LockHeld(
                    f"another hanode is running (pid {holder}, lock {self.lock_path})",
                    "wait for it to finish, then try again",
                ) from None
            # The file is never unlinked: unlinking a flock()ed file lets two holders race.
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    # -- reading ----------------------------------------------------------------------

    def probe_all(self) -> list[tuple[Resource[Any], Status, float]]:
        """Every resource's status with the seconds its probe took."""
        results = []
        for resource in self.resources:
            began = time.monotonic()
            status = safe_probe(resource)
            results.append((resource, status, time.monotonic() - began))
        return results

    def plan(self, action: Action) -> list[PlanLine]:
        """What start or stop would do from here, step by step; changes nothing."""
        wanted = State.UP if action is Action.START else State.DOWN
        ordered = self.resources if action is Action.START else list(reversed(self.resources))
        lines = []
        for resource in ordered:
            status = safe_probe(resource)
            if status.state is wanted:
                actions: tuple[str, ...] = ()
            else:
                planner = resource.plan_start if action is Action.START else resource.plan_stop
                try:
                    actions = tuple(planner())
                except Exception as err:
                    actions = (f"(cannot plan: {err})",)
            lines.append(PlanLine(resource.name, status.state, status.summary, actions))
        return lines

    def check(self) -> list[tuple[str, Finding]]:
        """Every resource's findings about this node; changes nothing."""
        findings: list[tuple[str, Finding]] = []
        for resource in self.resources:
            try:
                found = resource.check()
            except HanodeError as err:
                found = [Finding(Level.ERROR, err.message, err.hint)]
            findings.extend((resource.name, finding) for finding in found)
        return findings

    def last_report(self, verb: Action) -> dict[str, object] | None:
        """The report of the last start or stop on this node since boot, if any."""
        try:
            data: dict[str, object] = json.loads((self.state_dir / f"last-{verb}.json").read_text())
        except (OSError, ValueError):
            return None
        return data

    # -- acting -----------------------------------------------------------------------

    def start(self, ctx: Context) -> RunReport:
        """Bring every resource up in order; on failure stop what this run started."""
        report = RunReport(Action.START, time.time())
        began = time.monotonic()
        started: list[Resource[Any]] = []
        with self.locked(), _signals_interrupt():
            try:
                for resource in self.resources:
                    self._start_one(resource, ctx, report, started)
            except Exception as err:
                failure = (
                    err
                    if isinstance(err, HanodeError)
                    else StepFailed(
                        f"internal error: {type(err).__name__}: {err}", "run with --debug"
                    )
                )
                rolled = self._rollback(started, ctx, report)
                report.seconds = time.monotonic() - began
                self._save(report)
                if rolled:
                    failure = failure.with_context(
                        f"{failure.message}; rolled back: {', '.join(rolled)}"
                    )
                raise failure from err
            report.ok = True
            report.seconds = time.monotonic() - began
            self._save(report)
        return report

    def _start_one(
        self, resource: Resource[Any], ctx: Context, report: RunReport, started: list[Resource[Any]]
    ) -> None:
        step_began = time.monotonic()
        status = safe_probe(resource)
        if status.state is State.UP:
            try:
                resource.refresh(ctx)
            except HanodeError as err:
                # upkeep of something already up: worth a warning, not a rollback
                logger.warning("%s is up, but refreshing it failed: %s", resource.name, err)
            self._record(
                report, resource.name, Action.START, Result.SKIPPED, step_began, status.summary
            )
            return
        try:
            resource.start(ctx)
        except Refused as err:
            # A refusal touched nothing in this step: only earlier steps are rolled back.
            self._record(report, resource.name, Action.START, Result.REFUSED, step_began, str(err))
            raise err.with_context(f"start refused at {resource.name}: {err.message}") from err
        except BaseException as err:
            # A failed step may be half done: its own stop converges it back.
            started.append(resource)
            self._record(report, resource.name, Action.START, Result.FAILED, step_began, _why(err))
            if isinstance(err, HanodeError):
                raise err.with_context(f"start failed at {resource.name}: {err.message}") from err
            raise
        started.append(resource)
        after = safe_probe(resource)
        self._record(report, resource.name, Action.START, Result.DONE, step_began, after.summary)

    def _rollback(self, started: list[Resource[Any]], ctx: Context, report: RunReport) -> list[str]:
        rolled: list[str] = []
        for resource in reversed(started):
            step_began = time.monotonic()
            try:
                resource.stop(ctx)
            except Exception as err:
                self._record(
                    report,
                    resource.name,
                    Action.ROLLBACK,
                    Result.ROLLBACK_FAILED,
                    step_began,
                    _why(err),
                )
                continue
            rolled.append(resource.name)
            self._record(report, resource.name, Action.ROLLBACK, Result.ROLLED_BACK, step_began, "")
        return rolled

    def stop(self, ctx: Context) -> RunReport:
        """Bring every resource down in exact reverse order; halt at the first failure."""
        report = RunReport(Action.STOP, time.time())
        began = time.monotonic()
        with self.locked(), _signals_interrupt():
            try:
                for resource in reversed(self.resources):
                    self._stop_one(resource, ctx, report)
                report.ok = True
            finally:
                report.seconds = time.monotonic() - began
                self._save(report)
        return report

    def _stop_one(self, resource: Resource[Any], ctx: Context, report: RunReport) -> None:
        step_began = time.monotonic()
        status = safe_probe(resource)
        if status.state is State.DOWN:
            self._record(
                report, resource.name, Action.STOP, Result.SKIPPED, step_began, status.summary
            )
            return
        try:
            resource.stop(ctx)
        except HanodeError as err:
            self._record(report, resource.name, Action.STOP, Result.FAILED, step_began, str(err))
            # Stop halts here: what is still up above this step keeps running, and the
            # steps below it (mount, DRBD) must not be pulled out from under it.
            raise err.with_context(
                f"stop failed at {resource.name}: {err.message}",
                err.hint or "fix the cause, then run `hanode stop` again",
            ) from err
        after = safe_probe(resource)
        self._record(report, resource.name, Action.STOP, Result.DONE, step_began, after.summary)

    # -- bookkeeping --------------------------------------------------------------------

    @staticmethod
    def _record(
        report: RunReport, step: str, action: Action, result: Result, began: float, message: str
    ) -> None:
        seconds = time.monotonic() - began
        report.steps.append(StepReport(step, action, result, round(seconds, 3), message))
        hlog.step_event(step, action.value, result.value, seconds, message, result.level)

    def _save(self, report: RunReport) -> None:
        try:
            self.state_dir.mkdir(mode=0o755, exist_ok=True)
            target = self.state_dir / f"last-{report.verb}.json"
            temporary = target.with_suffix(".tmp")
            temporary.write_text(json.dumps(report.to_json(), indent=1) + "\n")
            temporary.replace(target)
        except OSError as err:
            logger.warning("cannot save the run report in %s: %s", self.state_dir, err.strerror)


def safe_probe(resource: Resource[Any]) -> Status:
    """A probe that never raises: a broken probe is an UNKNOWN state, with the reason."""
    try:
        return resource.probe()
    except Exception as err:
        return Status(State.UNKNOWN, f"probe failed: {_why(err)}")


def overall(states: Sequence[State]) -> StatusExit:
    """The exit code of `hanode status` for these resource states."""
    if any(state is State.UNKNOWN for state in states):
        return StatusExit.UNKNOWN
    if all(state is State.UP for state in states):
        return StatusExit.ALL_UP
    if all(state is State.DOWN for state in states):
        return StatusExit.ALL_DOWN
    return StatusExit.PARTLY_UP


def _why(err: BaseException) -> str:
    if isinstance(err, HanodeError):
        return str(err)
    return f"{type(err).__name__}: {err}"


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """Turn SIGTERM (systemd's stop, a timeout) into an exception, so a cut start rolls back."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(f"interrupted by {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
