"""What monitoring reads from `hanode status`: a Nagios plugin line, a Prometheus textfile.

Both are built from what status already has (each step's probe, the last start and stop
reports, the last switchover's report): nothing is probed again. The textfile is written
atomically, in a directory only root can change, never through a symlink.

The Nagios mapping (a node may rightly be active or standby):

- every step up: OK, "active"; every step down: OK, "standby";
- some up, some down (a half-started or half-stopped node): CRITICAL;
- a step whose state cannot be read: UNKNOWN;
- DRBD: split brain, StandAlone (it no longer tries to connect) or a failed local disk:
  CRITICAL, since they need an admin; the replication link down, a resync, a peer disk
  not UpToDate, or the resource not up on a standby: WARNING, since they heal by
  themselves or are a known step of a failover;
- the latest start or stop failed or was refused: WARNING.

The worst wins, ranked OK < WARNING < UNKNOWN < CRITICAL: a known critical problem is
reported even when another step cannot be read.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

from hanode.errors import StatusExit, UsageError
from hanode.resources import State, Status
from hanode.system.drbdstate import ConnState, DiskState, Role
from hanode.system.paths import UnsafePath, open_parent, others_can_change

SWITCHOVER_REPORT = "last-switchover"  # beside the run reports (Engine.read_document)
# Local disk states that need an admin (DRBD detached it, or is detaching it).
_FAILED_DISKS = frozenset({DiskState.DISKLESS.value, DiskState.FAILED.value, "Detaching"})
_NODE_STATES = ("active", "standby", "partial", "unknown")


class NagiosCode(IntEnum):
    """A Nagios plugin's exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @property
    def rank(self) -> int:
        """How bad it is: OK < WARNING < UNKNOWN < CRITICAL."""
        return _RANK[self]


_RANK = {NagiosCode.OK: 0, NagiosCode.WARNING: 1, NagiosCode.UNKNOWN: 2, NagiosCode.CRITICAL: 3}


class TextfileError(UsageError):
    """The textfile cannot be written where asked (exit 2; any old file is left as it was)."""


@dataclass(frozen=True)
class Step:
    """One configured step as status probed it."""

    name: str
    status: Status
    probe_seconds: float


@dataclass(frozen=True)
class Switchover:
    """The last switchover's total, from its report or from this node's last stop + start."""

    seconds: float
    finished_at: float
    ok: bool
    source: str  # "report" or "stop+start"


@dataclass(frozen=True)
class Snapshot:
    """Everything `hanode status` knows, as the monitoring outputs read it."""

    node: str
    code: StatusExit
    steps: tuple[Step, ...]
    last_start: Mapping[str, object] | None = None
    last_stop: Mapping[str, object] | None = None
    switchover: Switchover | None = None

    @property
    def state(self) -> str:
        """The node's state in one word: active, standby, partial or unknown."""
        return _NODE_STATE[self.code]


_NODE_STATE = {
    StatusExit.ALL_UP: "active",
    StatusExit.ALL_DOWN: "standby",
    StatusExit.PARTLY_UP: "partial",
    StatusExit.UNKNOWN: "unknown",
}


# -- reading the reports --------------------------------------------------------------------


def last_switchover(
    report: Mapping[str, object] | None,
    last_start: Mapping[str, object] | None,
    last_stop: Mapping[str, object] | None,
) -> Switchover | None:
    """The switchover report's figures; without one, this node's last stop plus its last
    start when both are known (finished when the later one finished, ok if both were)."""
    if report is not None:
        seconds, finished = _number(report.get("seconds")), _number(report.get("finished_at"))
        if seconds is not None and finished is not None:
            return Switchover(seconds, finished, report.get("ok") is True, "report")
    runs = [_run_figures(run) for run in (last_stop, last_start)]
    if any(figures is None for figures in runs):
        return None
    known = [figures for figures in runs if figures is not None]
    return Switchover(
        sum(figures[1] for figures in known),
        max(figures[0] + figures[1] for figures in known),
        all(figures[2] for figures in known),
        "stop+start",
    )


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _run_figures(report: Mapping[str, object] | None) -> tuple[float, float, bool] | None:
    """(started_at, seconds, ok) of a run report, None if it lacks them."""
    if report is None:
        return None
    started, seconds = _number(report.get("started_at")), _number(report.get("seconds"))
    if started is None or seconds is None:
        return None
    return started, seconds, report.get("ok") is True


# -- Nagios ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing the Nagios line names, with how bad it is."""

    code: NagiosCode
    text: str


def problems(snapshot: Snapshot) -> list[Problem]:
    """What is wrong with this node, by the mapping in this module's docstring."""
    found: list[Problem] = []
    if snapshot.code is StatusExit.PARTLY_UP:
        found.append(
            Problem(
                NagiosCode.CRITICAL,
                "half up: some steps up, others down (`hanode start` or `hanode stop`)",
            )
        )
    for step in snapshot.steps:
        if step.status.state is State.UNKNOWN:
            found.append(Problem(NagiosCode.UNKNOWN, f"{step.name}: {step.status.summary}"))
        elif step.name == "drbd":
            found.extend(drbd_problems(step.status.details))
    latest = latest_run(snapshot.last_start, snapshot.last_stop)
    if latest is not None and latest.get("ok") is not True:
        found.append(Problem(NagiosCode.WARNING, _failed_run(latest)))
    return found


def drbd_problems(details: Mapping[str, object]) -> list[Problem]:
    """What the DRBD step's details say is wrong with the replication."""
    resource = details.get("resource", "?")
    if details.get("up") is not True:
        return [Problem(NagiosCode.WARNING, f"drbd {resource} is not up: not replicating")]
    found = []
    connection = str(details.get("connection"))
    connected = connection in {state.value for state in ConnState if state.connected}
    if details.get("split-brain") is True:
        found.append(Problem(NagiosCode.CRITICAL, f"drbd {resource}: split brain"))
    elif connection == ConnState.STANDALONE.value:
        found.append(
            Problem(
                NagiosCode.CRITICAL,
                f"drbd {resource}: StandAlone, not trying to connect "
                f"(`drbdadm connect {resource}`)",
            )
        )
    elif not connected:
        found.append(
            Problem(NagiosCode.WARNING, f"drbd {resource}: replication link down ({connection})")
        )
    disk, peer_disk = str(details.get("disk")), str(details.get("peer-disk"))
    sync = details.get("sync-percent")
    syncing = f", {sync}% in sync" if sync is not None else ""
    if disk in _FAILED_DISKS:
        found.append(Problem(NagiosCode.CRITICAL, f"drbd {resource}: local disk {disk}"))
    elif disk != DiskState.UP_TO_DATE.value:
        found.append(Problem(NagiosCode.WARNING, f"drbd {resource}: local disk {disk}{syncing}"))
    if connected and peer_disk != DiskState.UP_TO_DATE.value:
        text = f"drbd {resource}: peer disk {peer_disk}{syncing}"
        found.append(Problem(NagiosCode.WARNING, text))
    return found


def latest_run(*reports: Mapping[str, object] | None) -> Mapping[str, object] | None:
    """The report, of those given, that started last."""
    dated = [
        (figures[0], report)
        for report in reports
        if (figures := _run_figures(report)) is not None and report is not None
    ]
    return max(dated, key=lambda item: item[0])[1] if dated else None


def _failed_run(report: Mapping[str, object]) -> str:
    verb = report.get("verb", "run")
    steps = report.get("steps")
    if isinstance(steps, list):
        for step in steps:
            if isinstance(step, dict) and step.get("result") in ("failed", "refused"):
                return f"last {verb} {step['result']} at {step.get('step')}"
    return f"last {verb} failed"


def nagios(snapshot: Snapshot) -> tuple[NagiosCode, str]:
    """The plugin's exit code and its one line: status, text, then `|` and perfdata."""
    node_code = {
        StatusExit.ALL_UP: NagiosCode.OK,
        StatusExit.ALL_DOWN: NagiosCode.OK,
        StatusExit.PARTLY_UP: NagiosCode.CRITICAL,
        StatusExit.UNKNOWN: NagiosCode.UNKNOWN,
    }[snapshot.code]
    found = problems(snapshot)
    code = max([node_code, *(problem.code for problem in found)], key=lambda code: code.rank)
    steps = ", ".join(f"{step.name} {step.status.state.value}" for step in snapshot.steps)
    text = f"{snapshot.node} {snapshot.state}: {steps}"
    for problem in sorted(found, key=lambda problem: -problem.code.rank):
        text += f"; {problem.text}"
    return code, f"HANODE {code.name} - {_plain(text)} | {' '.join(perfdata(snapshot))}"


def _plain(text: str) -> str:
    """Text fit for the plugin line: one line, no `|` (it starts the perfdata)."""
    return " ".join(text.replace("|", "/").split())


def perfdata(snapshot: Snapshot) -> list[str]:
    """Each step's probe time, the last start's steps, the last start, stop and switchover."""
    data = [_perf(f"{step.name}_probe", step.probe_seconds) for step in snapshot.steps]
    for verb, report in (("start", snapshot.last_start), ("stop", snapshot.last_stop)):
        figures = _run_figures(report)
        if figures is not None:
            data.append(_perf(f"last_{verb}", figures[1]))
    if snapshot.switchover is not None:
        data.append(_perf("last_switchover", snapshot.switchover.seconds))
    for step, seconds in _step_seconds(snapshot.last_start, "start"):
        data.append(_perf(f"start_{step}", seconds))
    return data


def _perf(label: str, seconds: float) -> str:
    """``'label'=value[UOM];[warn];[crit];[min];[max]``, in seconds, minimum 0."""
    if any(char in label for char in " ='"):
        label = "'" + label.replace("'", "''") + "'"
    return f"{label}={seconds:.4f}s;;;0"


def _step_seconds(report: Mapping[str, object] | None, action: str) -> list[tuple[str, float]]:
    """(step, seconds) of the report's steps that ran ``action`` (not its rollback)."""
    steps = report.get("steps") if report is not None else None
    found = []
    for step in steps if isinstance(steps, list) else []:
        if isinstance(step, dict) and step.get("action") == action:
            seconds = _number(step.get("seconds"))
            if seconds is not None:
                found.append((str(step.get("step")), seconds))
    return found


# -- Prometheus -------------------------------------------------------------------------------


class _Exposition:
    """Prometheus text exposition format 0.0.4: each family's HELP and TYPE, then samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self, name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]
    ) -> None:
        """One metric family; skipped when it has no sample."""
        samples = list(samples)
        if not samples:
            return
        escaped = help_text.replace("\\", "\\\\").replace("\n", "\\n")
        self.lines += [f"# HELP {name} {escaped}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(labels)} {_value(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    pairs = (f'{key}="{_escape(value)}"' for key, value in labels.items())
    return "{" + ",".join(pairs) + "}"


def _escape(value: str) -> str:
    """A label value: backslash, double quote and line feed escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def prometheus(snapshot: Snapshot) -> str:
    """The node's state in the Prometheus text format, for node-exporter's textfile
    collector."""
    out = _Exposition()
    out.family(
        "hanode_state",
        "gauge",
        "1 for the node's state: active, standby, partial or unknown",
        (({"state": state}, state == snapshot.state) for state in _NODE_STATES),
    )
    out.family(
        "hanode_status_exit_code",
        "gauge",
        "what `hanode status` exits with: 0 all up, 1 partly up, 3 all down, 4 unknown",
        [({}, int(snapshot.code))],
    )
    out.family(
        "hanode_up",
        "gauge",
        "1 when the step is up (as start leaves it), else 0",
        (({"step": step.name}, step.status.state is State.UP) for step in snapshot.steps),
    )
    out.family(
        "hanode_step_state",
        "gauge",
        "1 for the step's state: up, down, partial or unknown",
        (
            ({"step": step.name, "state": state.value}, step.status.state is state)
            for step in snapshot.steps
            for state in State
        ),
    )
    out.family(
        "hanode_step_probe_seconds",
        "gauge",
        "how long this status took to probe the step",
        (({"step": step.name}, step.probe_seconds) for step in snapshot.steps),
    )
    for step in snapshot.steps:
        if step.name == "drbd" and step.status.state is not State.UNKNOWN:
            _drbd_metrics(out, step.status.details)
    _run_metrics(out, snapshot)
    return out.text()


def _drbd_metrics(out: _Exposition, details: Mapping[str, object]) -> None:
    resource = str(details.get("resource", ""))
    up = details.get("up") is True
    out.family(
        "hanode_drbd_resource_up",
        "gauge",
        "1 when the DRBD resource is up (configured in the kernel), else 0",
        [({"resource": resource}, up)],
    )
    if not up:
        return
    out.family(
        "hanode_drbd_role",
        "gauge",
        "1 for the DRBD role of this node (node=local) and of the peer (node=peer)",
        (
            ({"resource": resource, "node": node, "role": role.value}, details.get(key) == role)
            for node, key in (("local", "role"), ("peer", "peer-role"))
            for role in Role
        ),
    )
    out.family(
        "hanode_drbd_connection_state",
        "gauge",
        "1 for the DRBD connection state (Connected when replicating)",
        (
            ({"resource": resource, "state": state.value}, details.get("connection") == state)
            for state in ConnState
        ),
    )
    out.family(
        "hanode_drbd_disk_state",
        "gauge",
        "1 for the disk state of this node's disk (disk=local) and of the peer's (disk=peer)",
        (
            ({"resource": resource, "disk": disk, "state": state.value}, details.get(key) == state)
            for disk, key in (("local", "disk"), ("peer", "peer-disk"))
            for state in DiskState
        ),
    )
    out.family(
        "hanode_drbd_split_brain",
        "gauge",
        "1 when the kernel found a split brain not resolved since",
        [({"resource": resource}, details.get("split-brain") is True)],
    )
    sync = _number(details.get("sync-percent"))
    out.family(
        "hanode_drbd_sync_percent",
        "gauge",
        "how much of the disk is in sync during a resync, in percent",
        [({"resource": resource}, sync)] if sync is not None else [],
    )


def _run_metrics(out: _Exposition, snapshot: Snapshot) -> None:
    runs = [
        (verb, figures)
        for verb, report in (("start", snapshot.last_start), ("stop", snapshot.last_stop))
        if (figures := _run_figures(report)) is not None
    ]
    out.family(
        "hanode_last_run_seconds",
        "gauge",
        "how long the last start or stop since boot took",
        (({"verb": verb}, figures[1]) for verb, figures in runs),
    )
    out.family(
        "hanode_last_run_success",
        "gauge",
        "1 when the last start or stop since boot succeeded, 0 when it failed or was refused",
        (({"verb": verb}, figures[2]) for verb, figures in runs),
    )
    out.family(
        "hanode_last_run_timestamp_seconds",
        "gauge",
        "when the last start or stop since boot finished, in seconds since the epoch",
        (({"verb": verb}, figures[0] + figures[1]) for verb, figures in runs),
    )
    out.family(
        "hanode_last_run_step_seconds",
        "gauge",
        "how long each step of the last start or stop took (action=rollback: its undoing)",
        (
            ({"verb": verb, "step": str(step["step"]), "action": str(step["action"])}, seconds)
            for verb, report in (("start", snapshot.last_start), ("stop", snapshot.last_stop))
            for step, seconds in _all_steps(report)
        ),
    )
    switchover = snapshot.switchover
    if switchover is None:
        return
    source = {"source": switchover.source}
    out.family(
        "hanode_last_switchover_seconds",
        "gauge",
        "how long the last switchover took in all (source=stop+start: this node's last "
        "stop plus its last start, when no switchover report exists)",
        [(source, switchover.seconds)],
    )
    out.family(
        "hanode_last_switchover_success",
        "gauge",
        "1 when the last switchover succeeded",
        [(source, switchover.ok)],
    )
    out.family(
        "hanode_last_switchover_timestamp_seconds",
        "gauge",
        "when the last switchover finished, in seconds since the epoch",
        [(source, switchover.finished_at)],
    )


def _all_steps(report: Mapping[str, object] | None) -> list[tuple[Mapping[str, object], float]]:
    steps = report.get("steps") if report is not None else None
    found: list[tuple[Mapping[str, object], float]] = []
    for step in steps if isinstance(steps, list) else []:
        if isinstance(step, dict) and (seconds := _number(step.get("seconds"))) is not None:
            found.append((step, seconds))
    return found


# -- writing the textfile ---------------------------------------------------------------------


def write_textfile(path: str, text: str) -> None:
    """Replace the file at ``path`` with ``text``, atomically: a new file beside it
    (O_EXCL | O_NOFOLLOW), fsync'ed, then renamed over it; the directory is reached from /
    through no symlink and must be root's alone, its ancestors may be another user's
    (hanode.system.paths). On any failure the
    old file stays as it was, and TextfileError (exit 2) says why.
    """
    absolute = os.path.abspath(path)
    try:
        parent = open_parent(absolute, refuse=False)
        # An ancestor another user owns is no danger here (Debian's /var/lib/prometheus
        # belongs to user prometheus): the walk followed no symlink and every operation
        # below is relative to the pinned directory and follows none. The directory the
        # file goes into must be root's alone: there a user could plant the names root
        # creates.
        unsafe = others_can_change(parent)
        if unsafe is not None:
            parent.close()
            raise unsafe
    except UnsafePath as err:
        raise TextfileError(
            f"--textfile {absolute}: {err.message}", err.hint or "pick a directory of root's"
        ) from None
    except (FileNotFoundError, NotADirectoryError):
        raise TextfileError(
            f"--textfile {absolute}: the directory {os.path.dirname(absolute)} is missing",
            "create it (node-exporter's is /var/lib/prometheus/node-exporter)",
        ) from None
    except ValueError as err:
        raise TextfileError(f"--textfile: {err}") from None
    with parent:
        _replace(parent.fileno(), parent.name, absolute, text)


def _replace(directory: int, name: str, absolute: str, text: str) -> None:
    try:
        existing = os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        existing = None
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        raise TextfileError(
            f"--textfile {absolute} is not a plain file (a symlink, a directory...)",
            "remove it, or name another file: hanode replaces only a file of its own",
        )
    # node-exporter's textfile collector reads *.prom only: a temporary name it skips
    temporary = f".{name}.{os.getpid()}.tmp"
    try:
        fd = os.open(
            temporary,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
            dir_fd=directory,
        )
    except OSError as err:
        raise TextfileError(
            f"--textfile {absolute}: cannot create its temporary file: {err.strerror}"
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, name, src_dir_fd=directory, dst_dir_fd=directory)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=directory)
        raise TextfileError(
            f"cannot write --textfile {absolute}: {err.strerror}", "the old file is left as it was"
        ) from None
    with contextlib.suppress(OSError):  # the rename is durable once the directory is
        dirfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=directory)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)


def snapshot_of(
    node: str,
    code: StatusExit,
    probes: Sequence[tuple[str, Status, float]],
    last_start: Mapping[str, object] | None,
    last_stop: Mapping[str, object] | None,
    switchover_report: Mapping[str, object] | None,
) -> Snapshot:
    """A Snapshot from what `hanode status` read."""
    return Snapshot(
        node=node,
        code=code,
        steps=tuple(Step(name, status, seconds) for name, status, seconds in probes),
        last_start=last_start,
        last_stop=last_stop,
        switchover=last_switchover(switchover_report, last_start, last_stop),
    )
