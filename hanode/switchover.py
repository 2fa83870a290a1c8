"""hanode switchover: the standby node becomes the active one, the active node the standby.

Run on either node, it drives both through their own hanode verbs (hanode.nodelink):

1. preflight, changing nothing: ``survey`` of both nodes (their ``status --json``,
   ``check --json`` and ``facts`` in one call each); any Blocker refuses (exit 4);
2. ``hanode stop`` on the active node, then ``hanode start`` on the other one;
3. verify: the new node's status is all up (its services active, the address on it), and
   the old node, asked with ``status --json --arp``, sees the floating IPv4 address
   answered by the new node's MAC (the address step's ``mac`` detail): the old node's
   own view of the segment, through its own hanode, like every other look at it;
4. a failed start on the new node (its own rollback leaves it a standby) starts the old
   node again: exit 1 with both nodes' state and the cause, and the commands to run
   when that fails too.

One timeline shows the steps of both nodes, from each verb's report (``last_stop`` /
``last_start`` in ``status --json``) placed on this process's clock: the steps of a verb
run back to back, after the child's start-up (the verb's time beyond its steps).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from hanode.errors import Exit, HanodeError, StatusExit
from hanode.run import stderr_tail

if TYPE_CHECKING:
    from hanode.config import Config
    from hanode.nodelink import NodeLink, Reply
    from hanode.resources import ProgressLine

log = logging.getLogger("hanode.switchover")

# Beyond the steps' own bounds: the interpreter, the transport, the lock.
MARGIN_SECONDS = 60.0
READ_TIMEOUT = 120.0  # s for a status, check, facts or dry run: they only read
BOTH = "both"


class Difference(Protocol):
    """One way the two nodes differ (hanode.peer.drift's items)."""

    @property
    def must_match(self) -> bool:
        """Whether a switchover must refuse while they differ so."""
        ...

    def __str__(self) -> str: ...


DriftFunction = Callable[[Mapping[str, Any], Mapping[str, Any]], Sequence[Difference]]
ProgressFactory = Callable[[str], AbstractContextManager["ProgressLine"]]


@dataclass(frozen=True)
class VerbTimeouts:
    """How long each verb may take on a node, in seconds."""

    start: float
    stop: float
    read: float = READ_TIMEOUT


def verb_timeouts(config: Config) -> VerbTimeouts:
    """The configured steps' own worst cases (as the units' timeouts are computed): a
    start may roll back, so it gets the stop's budget too; plus a margin for each."""
    from hanode.resources import kinds

    configured = [(kind, config.settings[kind.section]) for kind in kinds()]
    configured = [(kind, value) for kind, value in configured if kind.section in config.settings]
    start = sum(kind.start_budget(value) for kind, value in configured)
    stop = sum(kind.stop_budget(value) for kind, value in configured)
    return VerbTimeouts(start=start + stop + MARGIN_SECONDS, stop=stop + MARGIN_SECONDS)


# -- what the preflight knows of a node ---------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One line of a node's ``check --json``."""

    step: str
    level: str  # ok, warning, error
    message: str
    hint: str | None = None


@dataclass(frozen=True)
class ResourceView:
    """One step of a node's ``status --json``."""

    name: str
    state: str  # up, down, partial, unknown
    summary: str
    details: Mapping[str, Any]


@dataclass(frozen=True)
class NodeView:
    """One node as its ``status --json`` and ``check --json`` describe it."""

    name: str
    status_exit: int | None  # None: its status could not be read (``unreadable`` says why)
    state: str = "unknown"  # up, partial, down, unknown
    resources: tuple[ResourceView, ...] = ()
    last_start: Mapping[str, Any] | None = None
    last_stop: Mapping[str, Any] | None = None
    unreadable: str | None = None
    check_exit: int | None = None
    findings: tuple[Finding, ...] = ()
    check_problem: str | None = None  # why its check could not be read

    @classmethod
    def parse(
        cls, name: str, status: Reply | HanodeError, check: Reply | HanodeError | None = None
    ) -> NodeView:
        """From the replies of ``status --json`` and ``check --json`` (or why they failed)."""
        return cls.of_documents(
            name,
            _document_or_why(status, "status --json"),
            None if check is None else _document_or_why(check, "check --json"),
        )

    @classmethod
    def of_documents(
        cls,
        name: str,
        status: Mapping[str, Any] | str,
        check: Mapping[str, Any] | str | None = None,
    ) -> NodeView:
        """From the documents ``status --json`` and ``check --json`` print (a string:
        why that document could not be had)."""
        if isinstance(status, str):
            return cls(name=name, status_exit=None, unreadable=status)
        try:
            view = cls(
                name=name,
                status_exit=int(status["exit"]),
                state=str(status["state"]),
                resources=tuple(
                    ResourceView(
                        str(item["name"]),
                        str(item["state"]),
                        str(item["summary"]),
                        dict(item.get("details") or {}),
                    )
                    for item in status["resources"]
                ),
                last_start=status.get("last_start"),
                last_stop=status.get("last_stop"),
            )
        except (KeyError, TypeError, ValueError) as err:
            why = f"`hanode status --json` said something unexpected ({type(err).__name__}: {err})"
            return cls(name=name, status_exit=None, unreadable=why)
        if check is None:
            return view
        if isinstance(check, str):
            return _replace(view, check_problem=check)
        try:
            findings = tuple(
                Finding(str(f["step"]), str(f["level"]), str(f["message"]), f.get("hint"))
                for f in check["findings"]
            )
            return _replace(view, check_exit=int(check["exit"]), findings=findings)
        except (KeyError, TypeError, ValueError) as err:
            why = f"`hanode check --json` said something unexpected ({type(err).__name__}: {err})"
            return _replace(view, check_problem=why)

    @property
    def active(self) -> bool:
        """Every step up: this node serves."""
        return self.status_exit == StatusExit.ALL_UP

    @property
    def standby(self) -> bool:
        """Every step down (DRBD Secondary counts as down)."""
        return self.status_exit == StatusExit.ALL_DOWN

    def resource(self, name: str) -> ResourceView | None:
        """The step called ``name``, if configured there."""
        return next((r for r in self.resources if r.name == name), None)

    def describe(self) -> str:
        """One line: what this node is, step by step."""
        if self.status_exit is None:
            return f"{self.name}: unknown ({self.unreadable})"
        word = _NODE_WORDS.get(self.status_exit, "unknown")
        steps = ", ".join(f"{r.name} {r.state}" for r in self.resources)
        return f"{self.name}: {word} ({steps})"


_NODE_WORDS = {
    int(StatusExit.ALL_UP): "active",
    int(StatusExit.ALL_DOWN): "standby",
    int(StatusExit.PARTLY_UP): "partly up",
}


class _Unreadable(Exception):
    """A verb's JSON could not be had: the node unreachable, or the verb failed."""


def _document(reply: Reply | HanodeError, verb: str) -> dict[str, Any]:
    if isinstance(reply, HanodeError):
        raise _Unreadable(f"unreachable: {reply}")
    try:
        document = json.loads(reply.stdout)
    except ValueError:
        cause = _cause(reply.stderr) or "no output"
        raise _Unreadable(f"`hanode {verb}` failed (exit {reply.exitcode}): {cause}") from None
    if not isinstance(document, dict):
        raise _Unreadable(f"`hanode {verb}` printed no JSON object")
    return document


def _document_or_why(reply: Reply | HanodeError, verb: str) -> dict[str, Any] | str:
    """A verb's JSON document, or why it could not be had."""
    try:
        return _document(reply, verb)
    except _Unreadable as err:
        return str(err)


def _replace(view: NodeView, **changes: Any) -> NodeView:
    import dataclasses

    return dataclasses.replace(view, **changes)


def _cause(stderr: str) -> str:
    """What a hanode verb said went wrong: its last error line, else its stderr's tail."""
    errors = [line for line in stderr.splitlines() if line.startswith("hanode: error: ")]
    if errors:
        return errors[-1].removeprefix("hanode: error: ").strip()
    return stderr_tail(stderr)


# -- the preflight ------------------------------------------------------------------------


@dataclass(frozen=True)
class Blocker:
    """One reason the switchover refuses: the node, the cause, the fix."""

    node: str
    cause: str
    fix: str

    def __str__(self) -> str:
        return f"{self.node}: {self.cause} ({self.fix})"


def preflight(
    local: NodeView, peer: NodeView, differences: Sequence[Difference] = ()
) -> list[Blocker]:
    """Every reason not to switch over now; [] when it is safe. Pure: from the views."""
    blockers: list[Blocker] = []
    for view in (local, peer):
        blockers.extend(_node_blockers(view))
    readable = [v for v in (local, peer) if v.status_exit is not None]
    if len(readable) == 2 and all(v.active or v.standby for v in readable):
        actives = [v.name for v in readable if v.active]
        if not actives:
            blockers.append(
                Blocker(
                    BOTH,
                    "neither node is active: there is nothing to switch over",
                    "run `hanode start` on the node that should serve",
                )
            )
        elif len(actives) == 2:
            blockers.append(
                Blocker(
                    BOTH,
                    "both nodes are active",
                    "see `hanode status` on both (a split brain?); stop one with `hanode stop`",
                )
            )
    if len(readable) == 2:
        steps = [tuple(r.name for r in v.resources) for v in readable]
        if steps[0] != steps[1]:
            blockers.append(
                Blocker(
                    BOTH,
                    f"the nodes manage different steps: {local.name} "
                    f"{', '.join(steps[0]) or 'none'}; {peer.name} {', '.join(steps[1]) or 'none'}",
                    "give both nodes the same hanode.toml sections",
                )
            )
    for difference in differences:
        if difference.must_match:
            blockers.append(
                Blocker(
                    BOTH,
                    f"the nodes differ: {difference}",
                    "make it match on both nodes (`hanode facts` on each shows it)",
                )
            )
    return blockers


def _node_blockers(view: NodeView) -> list[Blocker]:
    if view.status_exit is None:
        return [
            Blocker(
                view.name,
                f"its state cannot be read: {view.unreadable}",
                "check the link to it, and `hanode status` there",
            )
        ]
    blockers = []
    if view.status_exit == StatusExit.PARTLY_UP:
        steps = ", ".join(f"{r.name} {r.state}" for r in view.resources)
        blockers.append(
            Blocker(
                view.name,
                f"partly up ({steps})",
                "finish what was cut with `hanode start` or `hanode stop` there",
            )
        )
    elif view.status_exit not in (StatusExit.ALL_UP, StatusExit.ALL_DOWN):
        unknown = [f"{r.name}: {r.summary}" for r in view.resources if r.state == "unknown"]
        blockers.append(
            Blocker(
                view.name,
                f"state unknown ({'; '.join(unknown) or f'status exit {view.status_exit}'})",
                "see `hanode status` there",
            )
        )
    if view.check_problem is not None:
        blockers.append(
            Blocker(
                view.name,
                f"its check cannot be read: {view.check_problem}",
                "run `hanode check` there",
            )
        )
    for finding in view.findings:
        if finding.level == "error":
            blockers.append(
                Blocker(
                    view.name,
                    f"check: {finding.step}: {finding.message}",
                    finding.hint or "see `hanode check` there",
                )
            )
    if (
        view.check_problem is None
        and view.check_exit not in (None, 0)
        and not any(f.level == "error" for f in view.findings)
    ):
        blockers.append(
            Blocker(view.name, f"check failed (exit {view.check_exit})", "run `hanode check` there")
        )
    drbd = view.resource("drbd")
    if drbd is not None and drbd.state in ("up", "down"):
        blocker = _drbd_blocker(view.name, drbd.details)
        if blocker is not None:
            blockers.append(blocker)
    return blockers


def _drbd_blocker(node: str, details: Mapping[str, Any]) -> Blocker | None:
    """DRBD must be Connected and UpToDate/UpToDate, with no resync under way."""
    resource = details.get("resource", "?")
    if not details.get("up"):
        return Blocker(
            node,
            f"DRBD {resource} is not up: it does not replicate",
            "`hanode stop` there brings it up as a standby",
        )
    connection = details.get("connection")
    if "sync-percent" in details:
        finish = details.get("sync-finish")
        left = f", finish in {finish}" if finish else ""
        return Blocker(
            node,
            f"DRBD {resource} is resyncing ({connection}): "
            f"{float(details['sync-percent']):g}% in sync{left}",
            "wait for the resync to end, then switch over",
        )
    if details.get("split-brain"):
        return Blocker(
            node,
            f"DRBD {resource} is in split brain ({connection})",
            "see `hanode status` there for the recovery commands",
        )
    if connection != "Connected":
        return Blocker(
            node,
            f"DRBD {resource} is {connection}, not Connected: the other node's data is not current",
            "restore the replication link; `hanode status` says why it is down",
        )
    disks = f"{details.get('disk')}/{details.get('peer-disk')}"
    if disks != "UpToDate/UpToDate":
        return Blocker(
            node,
            f"DRBD {resource} disks are {disks}, not UpToDate/UpToDate",
            f"wait until `drbdadm dstate {resource}` says UpToDate/UpToDate",
        )
    return None


# -- the switchover -----------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One line of the timeline."""

    at: float  # seconds since the switchover began
    node: str
    verb: str  # preflight, stop, start, rollback, verify
    step: str  # the step, or "" for the whole verb
    result: str
    seconds: float
    note: str = ""

    def line(self) -> str:
        """``  +3.51s node1 stop     address     done          0.01s``."""
        text = (
            f"  +{self.at:.2f}s {self.node:<8} {self.verb:<9} {self.step:<11} "
            f"{self.result:<15} {self.seconds:6.2f}s"
        )
        return f"{text}  {self.note}" if self.note else text


@dataclass(frozen=True)
class _Call:
    """One verb run on one node."""

    node: str
    verb: str
    began: float  # seconds since the switchover began
    seconds: float
    exitcode: int | None  # None: it could not be run (unreachable, timed out)
    stdout: str
    cause: str  # one line: what went wrong, "" when it succeeded


@dataclass
class Outcome:
    """What the switchover ends with, printed or as JSON."""

    code: Exit
    headline: str
    source: str = ""
    target: str = ""
    blockers: list[Blocker] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)  # NodeView.describe() of each node
    todo: list[str] = field(default_factory=list)  # commands for the admin
    plan: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)  # what the verification saw


class Switchover:
    """Drives both nodes through their hanode verbs; ``run()`` returns the exit code."""

    def __init__(
        self,
        local: NodeLink,
        peer: NodeLink,
        *,
        drift: DriftFunction | None = None,
        timeouts: VerbTimeouts | None = None,
        clock: Callable[[], float] = time.monotonic,
        progress: ProgressFactory | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.local = local
        self.peer = peer
        self.drift = drift
        self.timeouts = timeouts or VerbTimeouts(start=900.0, stop=900.0)
        self.clock = clock
        self.progress = progress
        self.out = out or sys.stdout
        self.events: list[Event] = []
        self._began = 0.0

    def run(self, *, dry_run: bool = False, as_json: bool = False) -> Exit:
        """Preflight, stop, start, verify (or roll back); print the outcome."""
        self._began = self.clock()
        self.events = []
        outcome = self._switch(dry_run)
        total = self._now()
        if as_json:
            self._print_json(outcome, total)
        else:
            self._print(outcome, total)
        return outcome.code

    # -- the sequence ---------------------------------------------------------------------

    def _switch(self, dry_run: bool) -> Outcome:
        began = self._now()
        local, peer, differences, facts_problems = self._survey()
        blockers = facts_problems + preflight(local, peer, differences)
        self.events.append(
            Event(
                began, BOTH, "preflight", "", "refused" if blockers else "ok", self._now() - began
            )
        )
        if blockers:
            return Outcome(
                Exit.REFUSED,
                "switchover refused, nothing was changed",
                blockers=blockers,
                nodes=[local.describe(), peer.describe()],
            )
        old, new = (self.local, self.peer) if local.active else (self.peer, self.local)
        old_before, new_before = (local, peer) if local.active else (peer, local)
        if dry_run:
            return self._plan(old, new, new_before)
        stop = self._verb(old, ["stop"], self.timeouts.stop)
        if stop.exitcode != 0:
            old_after = self._look(old)
            self._add_report(stop, old_after.last_stop, old_before.last_stop)
            return Outcome(
                Exit.FAILED,
                f"switchover failed: `hanode stop` on {old.name} failed: {stop.cause}; "
                f"{new.name} was not touched",
                old.name,
                new.name,
                nodes=[old_after.describe(), new_before.describe()],
                todo=[
                    f"on {old.name}: fix the cause, then `hanode stop`, and on {new.name}: "
                    f"`hanode start` (or `hanode switchover` again)",
                    f"or, to keep {old.name} serving: on {old.name}: `hanode start`",
                ],
            )
        start = self._verb(new, ["start"], self.timeouts.start)
        if start.exitcode != 0:
            new_after = self._look(new)
            self._add_report(start, new_after.last_start, new_before.last_start)
            return self._restore(old, new, start, new_after, old_before)
        verify_began = self._now()
        new_after, old_after = self._look_both(new, old)
        self._add_report(start, new_after.last_start, new_before.last_start)
        self._add_report(stop, old_after.last_stop, old_before.last_stop)
        return self._verify(old.name, new.name, old_after, new_after, verify_began)

    def _survey(self) -> tuple[NodeView, NodeView, Sequence[Difference], list[Blocker]]:
        """Both nodes' status, check (and facts), the two nodes side by side."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=2) as pool:
            local_job = pool.submit(self._read_node, self.local)
            peer_job = pool.submit(self._read_node, self.peer)
            (local, local_facts), (peer, peer_facts) = local_job.result(), peer_job.result()
        problems: list[Blocker] = []
        differences: Sequence[Difference] = ()
        if self.drift is not None:
            for name, facts in ((local.name, local_facts), (peer.name, peer_facts)):
                if isinstance(facts, str):
                    problems.append(
                        Blocker(
                            name, f"its facts cannot be read: {facts}", "run `hanode facts` there"
                        )
                    )
            if isinstance(local_facts, dict) and isinstance(peer_facts, dict):
                differences = self.drift(local_facts, peer_facts)
        return local, peer, differences, problems

    def _read_node(self, link: NodeLink) -> tuple[NodeView, dict[str, Any] | str | None]:
        """One ``survey`` call: the node's status, check and facts (one SSH round trip
        and one interpreter start per node instead of three)."""
        reply = self._reply(link, ["survey"])
        try:
            survey = _document(reply, "survey")
        except _Unreadable as err:
            return NodeView(name=link.name, status_exit=None, unreadable=str(err)), str(err)

        def part(key: str) -> dict[str, Any] | str:
            document = survey.get(key)
            return document if isinstance(document, dict) else f"`hanode survey` gave no {key}"

        view = NodeView.of_documents(link.name, part("status"), part("check"))
        if self.drift is None:
            return view, None
        facts = survey.get("facts")
        if isinstance(facts, dict):
            return view, facts
        return view, f"`hanode facts` failed there: {survey.get('facts_error', 'no facts')}"

    def _reply(self, link: NodeLink, argv: Sequence[str]) -> Reply | HanodeError:
        try:
            return link.call(argv, self.timeouts.read)
        except HanodeError as err:
            return err

    def _look_both(self, new: NodeLink, old: NodeLink) -> tuple[NodeView, NodeView]:
        """The verification's two reads at once: the new node's status, and the old
        node's with its ARP look at the address (who answers for it, seen from the node
        that just gave it up). Neither depends on the other; in sequence they cost an
        SSH round trip and an interpreter start more."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=2) as pool:
            new_job = pool.submit(self._look, new)
            old_job = pool.submit(self._look, old, arp=True)
            return new_job.result(), old_job.result()

    def _look(self, link: NodeLink, *, arp: bool = False) -> NodeView:
        argv = ["status", "--json", *(["--arp"] if arp else [])]
        return NodeView.parse(link.name, self._reply(link, argv))

    def _verb(self, link: NodeLink, argv: Sequence[str], timeout: float) -> _Call:
        """Run a verb that acts, with a progress line while it runs."""
        verb = argv[0]
        log.info("%s: hanode %s", link.name, " ".join(argv))
        began = self._now()
        try:
            with self._progress(f"{link.name}: hanode {verb}") as line:
                line.update("running")
                reply = link.call(argv, timeout)
        except HanodeError as err:
            return _Call(link.name, verb, began, self._now() - began, None, "", str(err))
        cause = "" if reply.exitcode == 0 else _cause(reply.stderr) or f"exit {reply.exitcode}"
        return _Call(link.name, verb, began, reply.seconds, reply.exitcode, reply.stdout, cause)

    def _progress(self, label: str) -> AbstractContextManager[ProgressLine]:
        if self.progress is None:
            return nullcontext(_SilentLine())
        return self.progress(label)

    def _plan(self, old: NodeLink, new: NodeLink, new_before: NodeView) -> Outcome:
        plan = []
        failed = []
        for number, (link, verb) in enumerate(((old, "stop"), (new, "start")), start=1):
            plan.append(f"{number}. on {link.name}: hanode {verb}")
            reply = self._reply(link, [verb, "--dry-run"])
            if isinstance(reply, HanodeError) or reply.exitcode != 0:
                cause = str(reply) if isinstance(reply, HanodeError) else _cause(reply.stderr)
                failed.append(f"`hanode {verb} --dry-run` on {link.name}: {cause}")
                plan.append(f"   (cannot plan: {cause})")
                continue
            plan.extend(f"   {line}" for line in reply.stdout.splitlines())
        plan.append(f"3. verify: {_verification(new.name, old.name, new_before)}")
        if failed:
            return Outcome(Exit.FAILED, "; ".join(failed), old.name, new.name, plan=plan)
        return Outcome(
            Exit.OK,
            f"dry run: would switch over from {old.name} to {new.name}; nothing was changed",
            old.name,
            new.name,
            plan=plan,
        )

    def _restore(
        self, old: NodeLink, new: NodeLink, start: _Call, new_after: NodeView, old_before: NodeView
    ) -> Outcome:
        """The new node's start failed: start the old node again."""
        cause = f"`hanode start` on {new.name} failed: {start.cause}"
        log.warning("%s; starting %s again", cause, old.name)
        restart = self._verb(old, ["start"], self.timeouts.start)
        old_after = self._look(old)
        self._add_report(restart, old_after.last_start, old_before.last_start)
        nodes = [old_after.describe(), new_after.describe()]
        if restart.exitcode == 0:
            todo = [] if new_after.standby else [f"on {new.name}: `hanode stop`"]
            return Outcome(
                Exit.FAILED,
                f"switchover failed: {cause}; {old.name} is active again",
                old.name,
                new.name,
                nodes=nodes,
                todo=[*todo, f"fix the cause on {new.name}, then `hanode switchover` again"],
            )
        todo = []
        if not new_after.standby:
            todo.append(f"on {new.name}: `hanode stop` (its rollback left it {new_after.state})")
        todo.append(
            f"on {old.name}: fix {restart.cause or 'the cause'}, then `hanode start` "
            f"(or on {new.name}: fix its cause, then `hanode start`)"
        )
        return Outcome(
            Exit.FAILED,
            f"switchover failed: {cause}; starting {old.name} again failed too: "
            f"{restart.cause}; no node serves",
            old.name,
            new.name,
            nodes=nodes,
            todo=todo,
        )

    def _verify(
        self, old: str, new: str, old_after: NodeView, new_after: NodeView, began: float
    ) -> Outcome:
        checks, problems = verify(old_after, new_after)
        self.events.append(
            Event(
                began,
                new,
                "verify",
                "",
                "failed" if problems else "ok",
                self._now() - began,
                "; ".join(problems or checks),
            )
        )
        nodes = [old_after.describe(), new_after.describe()]
        if problems:
            return Outcome(
                Exit.FAILED,
                f"switched over to {new}, but it does not serve as it should: "
                f"{'; '.join(problems)}",
                old,
                new,
                nodes=nodes,
                checks=checks,
                todo=[f"see `hanode status` on {new} and `hanode status --arp` on {old}"],
            )
        return Outcome(
            Exit.OK, f"{new} is active, {old} is the standby", old, new, nodes=nodes, checks=checks
        )

    # -- the timeline ---------------------------------------------------------------------

    def _now(self) -> float:
        return self.clock() - self._began

    def _add_report(
        self, call: _Call, report: Mapping[str, Any] | None, before: Mapping[str, Any] | None
    ) -> None:
        """The verb's steps from its report (one the verb wrote: not the one of before)."""
        result = "ok" if call.exitcode == 0 else "failed"
        fresh = report is not None and (
            before is None or report.get("started_at") != before.get("started_at")
        )
        if not fresh or report is None:
            note = "no report of its steps" + (f": {call.cause}" if call.cause else "")
            self.events.append(
                Event(call.began, call.node, call.verb, "", result, call.seconds, note)
            )
            return
        steps = report.get("steps") or []
        steps_seconds = float(report.get("seconds") or 0.0)
        at = call.began + max(0.0, call.seconds - steps_seconds)
        for step in steps:
            seconds = float(step.get("seconds") or 0.0)
            self.events.append(
                Event(
                    at,
                    call.node,
                    str(step.get("action", call.verb)),
                    str(step.get("step", "?")),
                    str(step.get("result", "?")),
                    seconds,
                )
            )
            at += seconds
        self.events.append(
            Event(
                call.began,
                call.node,
                call.verb,
                "(all)",
                result,
                call.seconds,
                f"steps {steps_seconds:.2f}s" + (f"; {call.cause}" if call.cause else ""),
            )
        )

    # -- output ---------------------------------------------------------------------------

    def _print(self, outcome: Outcome, total: float) -> None:
        out = self.out
        if outcome.source:
            out.write(f"switchover {outcome.source} -> {outcome.target}\n")
        for event in sorted(self.events, key=lambda e: e.at):
            out.write(event.line() + "\n")
        out.write(f"  total {total:.2f}s\n")
        if outcome.blockers:
            out.write(f"{outcome.headline}:\n")
            for blocker in outcome.blockers:
                out.write(f"  {blocker}\n")
        else:
            out.write(f"{outcome.headline}\n")
        if outcome.plan:
            out.write("plan (dry run: nothing is changed):\n")
            for line in outcome.plan:
                out.write(f"  {line}\n")
        for line in outcome.nodes:
            out.write(f"  {line}\n")
        if outcome.todo:
            out.write("to do:\n")
            for line in outcome.todo:
                out.write(f"  {line}\n")

    def _print_json(self, outcome: Outcome, total: float) -> None:
        document = {
            "exit": int(outcome.code),
            "result": outcome.headline,
            "from": outcome.source or None,
            "to": outcome.target or None,
            "seconds": round(total, 3),
            "blockers": [asdict(b) for b in outcome.blockers],
            "timeline": [asdict(e) for e in sorted(self.events, key=lambda e: e.at)],
            "nodes": outcome.nodes,
            "checks": outcome.checks,
            "plan": outcome.plan,
            "todo": outcome.todo,
        }
        json.dump(document, self.out, indent=1)
        self.out.write("\n")


class _SilentLine:
    def update(self, text: str) -> None:
        pass


def verify(old_after: NodeView, new_after: NodeView) -> tuple[list[str], list[str]]:
    """What the new node's status and the old node's ARP look show: (checks, problems)."""
    checks: list[str] = []
    problems: list[str] = []
    new, old = new_after.name, old_after.name
    if new_after.active:
        checks.append(f"{new} is up")
    else:
        problems.append(f"{new} is not up: {new_after.describe()}")
    if old_after.status_exit is not None and not old_after.standby:
        problems.append(f"{old} is not a clean standby: {old_after.describe()}")
    services = new_after.resource("services")
    if services is not None and services.state == "up":
        checks.append(f"services active on {new}")
    address = new_after.resource("address")
    if address is None:
        return checks, problems
    ip = str(address.details.get("ip", "?"))
    mac = address.details.get("mac")
    if address.details.get("present"):
        checks.append(f"{ip} on {new}")
    if ":" in ip:  # IPv6 (its details' ip is always written by ipaddress)
        checks.append(f"{ip} is IPv6: no ARP check")
        return checks, problems
    seen = old_after.resource("address")
    if seen is None or old_after.status_exit is None:
        problems.append(f"{old} cannot tell who answers ARP for {ip}: {old_after.unreadable}")
    elif seen.details.get("present"):
        problems.append(f"{ip} is still on {old}")
    elif "arp-holder" not in seen.details:
        problems.append(f"{old} did not look who answers ARP for {ip}")
    elif seen.details["arp-holder"] is None:
        why = seen.details.get("arp-error") or "no answer within the probe"
        problems.append(f"{old} sees no ARP answer for {ip}: {why}")
    elif seen.details["arp-holder"] != mac:
        problems.append(
            f"{old} sees {ip} answered by {seen.details['arp-holder']}, not by {new}'s {mac}"
        )
    else:
        checks.append(f"{old} sees {ip} answered by {new}'s {mac}")
    return checks, problems


def _verification(new: str, old: str, new_before: NodeView) -> str:
    """What the verification will look at, for the plan."""
    parts = [f"{new} all up"]
    if new_before.resource("services") is not None:
        parts.append("its services active")
    address = new_before.resource("address")
    if address is not None:
        ip = address.details.get("ip", "the floating address")
        parts.append(f"{ip} on it, and ARP for it answered by {new}'s MAC as {old} sees it")
    return ", ".join(parts)
