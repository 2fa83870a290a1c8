"""The start/stop pipeline: resources in order, probe before acting, rollback, lock.

The engine knows nothing of DRBD or netlink: it asks each resource where it stands,
skips what is already in the wanted state, acts on the rest, times every step, and on a
failed start stops, in reverse, what this run started. One hanode runs at a time.

SIGTERM or SIGINT (hanode.interrupt) cuts the steps, never a probe's verdict (it is an
Interrupted, which no probe catches), never a rollback (remembered, logged after it),
and never the end: after the last step it is logged and the exit says the node's state.
The run directory and everything in it are opened from / without following symlinks.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import signal
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

from hanode import interrupt
from hanode import log as hlog
from hanode.errors import (
    HanodeError,
    Interrupted,
    LockHeld,
    Refused,
    StatusExit,
    StepFailed,
    UsageError,
)
from hanode.resources import Context, Finding, Level, Resource, State, Status
from hanode.system.paths import UnsafePath, open_parent

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


class StepReport(NamedTuple):
    """One step of a run: what it did and how it ended, in how many seconds."""

    step: str
    action: Action
    result: Result
    seconds: float
    message: str = ""


class RunReport:
    """What a start or stop did, step by step; written to the state dir for status.

    Filled in as the run goes: each step as it ends, then the seconds and whether it succeeded.
    """

    __slots__ = ("ok", "seconds", "started_at", "steps", "verb")

    def __init__(
        self,
        verb: Action,
        started_at: float,
        steps: list[StepReport] | None = None,
        seconds: float = 0.0,
        ok: bool = False,
    ) -> None:
        self.verb = verb
        self.started_at = started_at
        self.steps: list[StepReport] = [] if steps is None else steps
        self.seconds = seconds
        self.ok = ok

    def __repr__(self) -> str:
        return (
            f"RunReport(verb={self.verb!r}, started_at={self.started_at!r}, "
            f"steps={self.steps!r}, seconds={self.seconds!r}, ok={self.ok!r})"
        )

    def to_json(self) -> dict[str, object]:
        """The report as last-start.json and last-stop.json keep it."""
        return {
            "verb": self.verb,
            "started_at": self.started_at,
            "steps": [step._asdict() for step in self.steps],
            "seconds": self.seconds,
            "ok": self.ok,
        }


class PlanLine(NamedTuple):
    """One step of a plan: where it stands, and what start or stop would do there."""

    step: str
    state: State
    summary: str
    actions: tuple[str, ...]  # empty: skipped, already in the wanted state


_LOCK = "hanode.lock"
_STATE = "hanode"  # the state dir in the run dir: the last reports
_NEW_FILE = os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


def run_dir() -> Path:
    """Where the lock and the last run reports live (/run; HANODE_RUN_DIR for tests)."""
    return Path(os.environ.get("HANODE_RUN_DIR", "/run"))


class Engine:
    """Runs the configured resources in start order, or in exact reverse to stop."""

    def __init__(
        self, resources: Sequence[Resource[Any]], *, state_dir: Path | None = None
    ) -> None:
        self.resources = list(resources)
        self.base = Path(os.path.abspath(state_dir or run_dir()))
        self.lock_path = self.base / _LOCK
        self.state_dir = self.base / _STATE

    # -- the run directory and the lock -----------------------------------------------

    @staticmethod
    @contextmanager
    def _pinned(directory: Path, what: str) -> Iterator[int]:
        """``directory``'s descriptor, walked from / through no symlink, only root's to change.

        hanode.system.paths judges every directory on the way; an unsafe one is refused
        (UnsafePath, exit 4), a missing one is a UsageError.
        """
        try:
            parent = open_parent(str(directory / "-"))  # pins the directory holding any name
        except UnsafePath as err:
            raise err.with_context(f"unsafe {what} {directory}: {err.message}") from err
        except (FileNotFoundError, NotADirectoryError) as err:
            raise UsageError(
                f"{what} {directory} is missing or not a directory: {err.strerror}",
                "create it (root's, mode 755)",
            ) from None
        with parent:
            yield parent.fileno()

    @contextmanager
    def locked(self) -> Iterator[int]:
        """Hold /run/hanode.lock; a second hanode is refused at once, naming the holder.

        Yields the run directory's descriptor, for the reports.
        """
        with self._pinned(self.base, "run directory") as base, self._lock(base):
            yield base

    @contextmanager
    def _lock(self, base: int) -> Iterator[None]:
        try:
            # O_NOFOLLOW: a symlink planted here must not make root truncate its target.
            fd = os.open(_LOCK, os.O_RDWR | _NEW_FILE, 0o644, dir_fd=base)
        except PermissionError:
            raise UsageError(
                f"cannot open the lock {self.lock_path}: permission denied", "run hanode as root"
            ) from None
        except OSError as err:
            if err.errno != errno.ELOOP:
                raise
            raise Refused(
                f"cannot open the lock {self.lock_path}: it is a symbolic link",
                "remove it: hanode creates the lock itself",
            ) from None
        try:
            _check_file(fd, self.lock_path, "the lock")
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
        """Every resource's status with the seconds its probe took.

        One after the other: side by side in threads measured slower (the probes are
        mostly Python work, and threads hand the interpreter lock over in 5 ms slices).
        """
        results = []
        for resource in self.resources:
            began = time.monotonic()
            status = safe_probe(resource)
            results.append((resource, status, time.monotonic() - began))
        return results

    def plan(self, action: Action, ctx: Context | None = None) -> list[PlanLine]:
        """What start or stop would do from here, step by step; changes nothing."""
        ctx = ctx or Context()
        starting = action is Action.START
        ordered = self.resources if starting else list(reversed(self.resources))
        lines = []
        for resource in ordered:
            status = safe_probe(resource)
            if resource.settled(status, starting=starting, ctx=ctx):
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
        return self.read_document(f"last-{verb}")

    def read_document(self, stem: str) -> dict[str, object] | None:
        """STEM.json from beside the run reports (save_document's), read through no
        symlink; None when it is absent, unreadable or not a JSON object."""
        try:
            with self._pinned(self.state_dir, "state directory") as state:
                fd = os.open(f"{stem}.json", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=state)
            with os.fdopen(fd, "rb") as handle:
                data = json.loads(handle.read())
        except (OSError, ValueError, HanodeError):
            return None
        return data if isinstance(data, dict) else None

    # -- acting -----------------------------------------------------------------------

    def start(self, ctx: Context) -> RunReport:
        """Bring every resource up in order; on failure stop what this run started.

        A SIGTERM or SIGINT during the steps fails the start like an error (exit 1, rolled
        back); one during the rollback is logged after it; one after the last step is
        logged and the start stands.
        """
        report = RunReport(Action.START, time.time())
        began = time.monotonic()
        started: list[Resource[Any]] = []
        with interrupt.guarded() as guard, self.locked() as base:
            try:
                checks = _Preflight(self.resources, ctx)
                ctx = ctx._replace(preflight_verdict=checks.verdict)
                if any(resource.surely_starts() for resource in self.resources):
                    checks.begin()  # something will act: the checks overlap the probes
                with guard.interruptible():
                    for resource in self.resources:
                        self._start_one(resource, ctx, report, started, checks)
            except (Exception, Interrupted) as err:
                failure = _start_failure(err)
                # Not interruptible here: a signal now is remembered, the rollback finishes.
                rolled = self._rollback(started, ctx, report)
                report.seconds = time.monotonic() - began
                self._save(report, base)
                for signum in guard.take():
                    logger.warning(
                        "%s arrived during the rollback, which was finished first",
                        signal.Signals(signum).name,
                    )
                if rolled:
                    failure = failure.with_context(
                        f"{failure.message}; rolled back: {', '.join(rolled)}"
                    )
                raise failure from err
            report.ok = True
            report.seconds = time.monotonic() - began
            self._save(report, base)
            guard.finished("the start completed; the node is active")
        return report

    def _start_one(
        self,
        resource: Resource[Any],
        ctx: Context,
        report: RunReport,
        started: list[Resource[Any]],
        checks: _Preflight,
    ) -> None:
        step_began = time.monotonic()
        try:
            self._start_step(resource, ctx, report, started, step_began, checks)
        except Interrupted as err:
            err.step = resource.name
            err.acting = resource in started
            self._record(report, resource.name, Action.START, Result.FAILED, step_began, str(err))
            raise

    def _start_step(
        self,
        resource: Resource[Any],
        ctx: Context,
        report: RunReport,
        started: list[Resource[Any]],
        step_began: float,
        checks: _Preflight,
    ) -> None:
        status = safe_probe(resource, step=True)
        if resource.settled(status, starting=True, ctx=ctx):
            try:
                resource.refresh(ctx)
            except HanodeError as err:
                # upkeep of something already up: worth a warning, not a rollback
                logger.warning("%s is up, but refreshing it failed: %s", resource.name, err)
            self._record(
                report, resource.name, Action.START, Result.SKIPPED, step_began, status.summary
            )
            return
        # The first step to act starts the preflight checks: a start with nothing to do
        # needs no verdict (and pays no duplicate-address probe).
        checks.begin()
        # Listed before it acts: a signal the moment start() returns still rolls it back.
        started.append(resource)
        try:
            if not resource.confirms_preflight:
                ctx.before_promotion()  # the cluster active elsewhere refuses before any change
            resource.start(ctx)
        except Refused as err:
            # A refusal touched nothing in this step: only earlier steps are rolled back.
            started.remove(resource)
            self._record(report, resource.name, Action.START, Result.REFUSED, step_began, str(err))
            raise err.with_context(f"start refused at {resource.name}: {err.message}") from err
        except Exception as err:
            # A failed step may be half done (it stays listed): its own stop converges it back.
            self._record(report, resource.name, Action.START, Result.FAILED, step_began, _why(err))
            if isinstance(err, HanodeError):
                raise err.with_context(f"start failed at {resource.name}: {err.message}") from err
            raise
        after = safe_probe(resource, step=True)
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
        """Bring every resource down in exact reverse order; halt at the first failure.

        A SIGTERM or SIGINT halts it where it is too (a stop never rolls back): exit 1,
        naming the step and what is still up. One after the last step is only logged.
        """
        report = RunReport(Action.STOP, time.time())
        began = time.monotonic()
        ordered = list(reversed(self.resources))
        with interrupt.guarded() as guard, self.locked() as base:
            try:
                try:
                    with guard.interruptible():
                        for resource in ordered:
                            self._stop_one(resource, ctx, report)
                except Interrupted as err:
                    halted = _stop_interrupted(err, ordered, report)
                    if halted is not None:
                        raise halted from err
                    guard.pending.append(err.signum)  # cut in the last probe: the stop is done
                report.ok = True
            finally:
                report.seconds = time.monotonic() - began
                self._save(report, base)
            guard.finished("the stop completed; the node is standby")
        return report

    def _stop_one(self, resource: Resource[Any], ctx: Context, report: RunReport) -> None:
        step_began = time.monotonic()
        phase = "probe"  # where a signal cut the step: "probe", "stop" or "after" it
        try:
            status = safe_probe(resource, step=True)
            if resource.settled(status, starting=False, ctx=ctx):
                self._record(
                    report, resource.name, Action.STOP, Result.SKIPPED, step_began, status.summary
                )
                return
            phase = "stop"
            try:
                resource.stop(ctx)
            except HanodeError as err:
                self._record(
                    report, resource.name, Action.STOP, Result.FAILED, step_began, str(err)
                )
                # Stop halts here: what is still up above this step keeps running, and the
                # steps below it (mount, DRBD) must not be pulled out from under it.
                raise err.with_context(
                    f"stop failed at {resource.name}: {err.message}",
                    err.hint or "fix the cause, then run `hanode stop` again",
                ) from err
            phase = "after"
            after = safe_probe(resource, step=True)
        except Interrupted as err:
            err.step = resource.name
            err.acting = phase == "stop"
            # cut in the probe after it, the step itself was done
            result = Result.DONE if phase == "after" else Result.FAILED
            self._record(report, resource.name, Action.STOP, result, step_began, str(err))
            raise
        self._record(report, resource.name, Action.STOP, Result.DONE, step_began, after.summary)

    # -- bookkeeping --------------------------------------------------------------------

    @staticmethod
    def _record(
        report: RunReport, step: str, action: Action, result: Result, began: float, message: str
    ) -> None:
        seconds = time.monotonic() - began
        report.steps.append(StepReport(step, action, result, round(seconds, 3), message))
        hlog.step_event(step, action.value, result.value, seconds, message, result.level)

    def _save(self, report: RunReport, base: int) -> None:
        """Write the report into the state dir of the run directory ``base``, atomically."""
        self._save_document(f"last-{report.verb}", report.to_json(), base)

    def save_document(self, stem: str, document: dict[str, object]) -> None:
        """Keep ``document`` as STEM.json beside the run reports (a switchover's report)."""
        try:
            with self._pinned(self.base, "run directory") as base:
                self._save_document(stem, document, base)
        except HanodeError as err:
            logger.warning("cannot save %s.json: %s", stem, err)

    def _save_document(self, stem: str, document: dict[str, object], base: int) -> None:
        """Write STEM.json into the state dir of the run directory ``base``, atomically.

        Every name is opened relative to a descriptor, never following a symlink: one
        planted at the state dir, the report or its temporary file is refused or replaced,
        never written through.
        """
        target = f"{stem}.json"
        temporary = f"{stem}.tmp"
        try:
            with contextlib.suppress(FileExistsError):  # mkdirat never follows a symlink
                os.mkdir(_STATE, 0o755, dir_fd=base)
            with self._pinned(self.state_dir, "state directory") as state:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary, dir_fd=state)  # a leftover, or a planted symlink
                fd = os.open(temporary, os.O_WRONLY | os.O_EXCL | _NEW_FILE, 0o644, dir_fd=state)
                with os.fdopen(fd, "w") as handle:
                    handle.write(json.dumps(document, indent=1) + "\n")
                os.replace(temporary, target, src_dir_fd=state, dst_dir_fd=state)
        except OSError as err:
            logger.warning("cannot save the run report in %s: %s", self.state_dir, err.strerror)
        except HanodeError as err:
            logger.warning("cannot save the run report: %s", err)


class _Preflight:
    """The resources' preflight checks of a start, each in its own thread beside the first
    steps (the DRBD wait), so that the refusal they may find costs no time of its own.

    Side by side, not one after the other: the duplicate-address probe spends its second
    listening and the units' checks wait on systemd's answers, so the verdict comes after
    the longest of them, not their sum. A refusal is reported for the first resource (in
    start order) that found one, whichever thread ended first.

    They begin before the first probe when a resource can tell at no cost that the start
    will act on it (``Resource.surely_starts``: DRBD's /proc/drbd shows nothing Primary),
    else when the first step is about to act (``begin``), or when the verdict is asked
    for: a start that finds every step done already runs none of them.
    """

    def __init__(self, resources: Sequence[Resource[Any]], ctx: Context) -> None:
        # quiet: its progress would interleave with the step's on the terminal
        self._ctx = ctx._replace(progress=None, preflight_verdict=None)
        checking = [r for r in resources if type(r).preflight is not Resource.preflight]
        self._refusals: dict[int, Refused] = {}
        self._threads = [
            threading.Thread(
                target=self._check,
                args=(index, resource),
                name=f"hanode-preflight-{resource.name}",
                daemon=True,
            )
            for index, resource in enumerate(checking)
        ]

    def begin(self) -> None:
        """Start the checks in their threads, once."""
        for thread in self._threads:
            if thread.ident is None:
                thread.start()

    def _check(self, index: int, resource: Resource[Any]) -> None:
        try:
            resource.preflight(self._ctx)
        except Refused as err:
            self._refusals[index] = err
        except Exception as err:
            logger.warning("%s: preflight check failed: %s", resource.name, _why(err))

    def verdict(self) -> None:
        """Wait for the checks; Refused if one found the cluster active elsewhere."""
        self.begin()
        for thread in self._threads:
            thread.join()
        if self._refusals:
            raise self._refusals[min(self._refusals)]


def safe_probe(resource: Resource[Any], *, step: bool = False) -> Status:
    """A probe that never fails: a broken probe is an UNKNOWN state, with the reason.
    ``step``: the probe around a step's action (Resource.step_probe).

    A signal's Interrupted is no failure of the probe: it passes through (a BaseException).
    """
    try:
        return resource.step_probe() if step else resource.probe()
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
    if isinstance(err, HanodeError | Interrupted):
        return str(err)
    return f"{type(err).__name__}: {err}"


def _start_failure(err: BaseException) -> HanodeError:
    """What a start that ``err`` ended reports (before the rollback is added to it)."""
    if isinstance(err, HanodeError):
        return err
    if isinstance(err, Interrupted):
        if err.step is None:
            return StepFailed(f"start {err}")
        return StepFailed(f"start failed at {err.step}: {err}")
    return StepFailed(f"internal error: {type(err).__name__}: {err}", "run with --debug")


def _stop_interrupted(
    err: Interrupted, ordered: Sequence[Resource[Any]], report: RunReport
) -> StepFailed | None:
    """What a stop that a signal halted reports: where, and what is still up (None: nothing)."""
    down = {
        step.step
        for step in report.steps
        if step.action is Action.STOP and step.result in (Result.DONE, Result.SKIPPED)
    }
    left = [
        f"{resource.name} (half stopped)"
        if err.acting and resource.name == err.step
        else resource.name
        for resource in ordered
        if resource.name not in down
    ]
    if not left:
        return None
    where = f" at {err.step}" if err.step else ""
    return StepFailed(
        f"stop {err}{where}; still up: {', '.join(left)}", "run `hanode stop` again to finish"
    )


def _check_file(fd: int, path: Path, what: str) -> None:
    """Refuse a file hanode writes that is not a plain file of its own (one link, root's)."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        raise Refused(
            f"{what} {path} is not a plain file with one link", "remove it: hanode creates it"
        )
    if info.st_uid not in (0, os.geteuid()):
        raise Refused(f"{what} {path} is owned by uid {info.st_uid}", "remove it")
