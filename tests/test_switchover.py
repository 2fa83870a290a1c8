"""hanode switchover: the preflight from hand-built node states, the orchestration with
scripted nodes whose replies are the real verbs' JSON (tests/data/switchover: captured
from `hanode status --json` / `check --json` on this host, see its README), and, as
root, a real switchover of a floating address between two network namespaces."""

from __future__ import annotations

import io
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import PYTHON, ROOT, run_hanode

from hanode.errors import Exit, HanodeError, StepFailed
from hanode.nodelink import Reply
from hanode.run import run
from hanode.switchover import NodeView, Switchover, preflight
from hanode.system.drbdstate import ConnState, DiskState, ResourceState, Role, SyncProgress

DATA = Path(__file__).resolve().parent / "data" / "switchover"
NEW_MAC = "1a:03:84:c8:fc:37"  # node2's eth0 in the captured standby sample


def sample(name: str) -> dict[str, Any]:
    """A captured document (a fresh copy)."""
    document: dict[str, Any] = json.loads((DATA / name).read_text())
    return document


def drbd_entry(
    role: Role = Role.PRIMARY,
    peer_role: Role = Role.SECONDARY,
    cstate: ConnState = ConnState.CONNECTED,
    disks: tuple[DiskState, DiskState] = (DiskState.UP_TO_DATE, DiskState.UP_TO_DATE),
    sync: SyncProgress | None = None,
) -> dict[str, Any]:
    """The drbd step of `status --json`, its details as Drbd.probe writes them."""
    state = ResourceState(role, peer_role, cstate, disks[0], disks[1], sync)
    return {
        "name": "drbd",
        "state": "up" if role is Role.PRIMARY else "down",
        "summary": f"srv {state.describe()}",
        "details": {"resource": "srv", "up": True, **state.details()},
        "probe_seconds": 0.001,
    }


def status(active: bool, drbd: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    """An active or standby node's `status --json`, with a drbd step when given."""
    document = sample("status-active.json" if active else "status-standby-arp.json")
    if drbd is None:
        drbd = drbd_entry() if active else drbd_entry(Role.SECONDARY, Role.PRIMARY)
    document["resources"].insert(0, drbd)
    document.update(changes)
    return document


def reply(node: str, argv: Sequence[str], document: object, code: int = 0) -> Reply:
    return Reply(node, tuple(argv), code, json.dumps(document), "", 0.5)


def check_error(step: str, message: str, hint: str) -> dict[str, Any]:
    document = sample("check.json")
    document["exit"] = 1
    document["findings"].append({"step": step, "level": "error", "message": message, "hint": hint})
    return document


def view(
    name: str, document: dict[str, Any] | HanodeError, check: dict[str, Any] | None = None
) -> NodeView:
    answer = document if isinstance(document, HanodeError) else reply(name, ["status"], document)
    checked = reply(name, ["check", "--json"], check or sample("check.json"))
    return NodeView.parse(name, answer, checked)


@dataclass
class Drift:
    text: str
    must_match: bool

    def __str__(self) -> str:
        return self.text


# -- the preflight ------------------------------------------------------------------------


def test_a_clean_pair_has_no_blocker() -> None:
    node1, node2 = view("node1", status(True)), view("node2", status(False))
    assert node1.active and node2.standby
    assert preflight(node1, node2, [Drift("kernel 6.1 / 6.1.1", must_match=False)]) == []


SYNCING = SyncProgress(percent=42.5, finish="0:01:10")


@pytest.mark.parametrize(
    ("node1", "node2", "expected"),
    [
        pytest.param(
            status(True),
            StepFailed("`ssh node2` timed out after 10s"),
            "node2: its state cannot be read: unreachable: `ssh node2` timed out after 10s "
            "(check the link to it, and `hanode status` there)",
            id="peer-unreachable",
        ),
        pytest.param(
            status(True),
            status(False, state="partial", exit=1),
            "node2: partly up (drbd down, address down) "
            "(finish what was cut with `hanode start` or `hanode stop` there)",
            id="partly-up",
        ),
        pytest.param(
            status(False),
            status(False),
            "both: neither node is active: there is nothing to switch over "
            "(run `hanode start` on the node that should serve)",
            id="none-active",
        ),
        pytest.param(
            status(True),
            status(True),
            "both: both nodes are active (see `hanode status` on both (a split brain?); "
            "stop one with `hanode stop`)",
            id="two-active",
        ),
        pytest.param(
            status(True, drbd_entry(cstate=ConnState.WF_CONNECTION)),
            status(False),
            "node1: DRBD srv is WFConnection, not Connected: the other node's data is not "
            "current (restore the replication link; `hanode status` says why it is down)",
            id="not-connected",
        ),
        pytest.param(
            status(True),
            status(
                False,
                drbd_entry(
                    Role.SECONDARY, Role.PRIMARY, disks=(DiskState.OUTDATED, DiskState.UP_TO_DATE)
                ),
            ),
            "node2: DRBD srv disks are Outdated/UpToDate, not UpToDate/UpToDate "
            "(wait until `drbdadm dstate srv` says UpToDate/UpToDate)",
            id="not-uptodate",
        ),
        pytest.param(
            status(
                True,
                drbd_entry(
                    cstate=ConnState.SYNC_SOURCE,
                    disks=(DiskState.UP_TO_DATE, DiskState.INCONSISTENT),
                    sync=SYNCING,
                ),
            ),
            status(False),
            "node1: DRBD srv is resyncing (SyncSource): 42.5% in sync, finish in 0:01:10 "
            "(wait for the resync to end, then switch over)",
            id="syncing",
        ),
    ],
)
def test_each_refusal_is_one_line_naming_node_cause_and_fix(
    node1: dict[str, Any], node2: dict[str, Any] | HanodeError, expected: str
) -> None:
    blockers = preflight(view("node1", node1), view("node2", node2))
    assert [str(b) for b in blockers] == [expected]


def test_check_errors_on_either_node_refuse() -> None:
    node1 = view("node1", status(True), check_error("services", "apache2 is enabled", "disable"))
    node2 = view("node2", status(False), check_error("drbd", "drbdadm not found", "apt install"))
    assert [str(b) for b in preflight(node1, node2)] == [
        "node1: check: services: apache2 is enabled (disable)",
        "node2: check: drbd: drbdadm not found (apt install)",
    ]


def test_a_check_that_cannot_run_refuses() -> None:
    answer = reply("node2", ["status"], status(False))
    usage = Reply("node2", ("check", "--json"), 2, "", "hanode: error: unknown option\n", 0.1)
    node2 = NodeView.parse("node2", answer, usage)
    assert [str(b) for b in preflight(view("node1", status(True)), node2)] == [
        "node2: its check cannot be read: `hanode check --json` failed (exit 2): "
        "unknown option (run `hanode check` there)"
    ]


def test_must_match_drift_refuses_and_other_drift_does_not() -> None:
    differences = [Drift("[address] ip: 192.0.2.10/24 / 192.0.2.11/24", True), Drift("x", False)]
    blockers = preflight(view("node1", status(True)), view("node2", status(False)), differences)
    assert [str(b) for b in blockers] == [
        "both: the nodes differ: [address] ip: 192.0.2.10/24 / 192.0.2.11/24 "
        "(make it match on both nodes (`hanode facts` on each shows it))"
    ]


def test_nodes_managing_different_steps_refuse() -> None:
    node2 = status(False)
    node2["resources"] = node2["resources"][1:]  # no [drbd] there
    blockers = preflight(view("node1", status(True)), view("node2", node2))
    assert [b.cause for b in blockers] == [
        "the nodes manage different steps: node1 drbd, address; node2 address"
    ]


# -- the orchestration, with scripted nodes -----------------------------------------------


class Clock:
    """A monotonic clock that the scripted nodes advance by each verb's seconds."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class ScriptedNode:
    """A NodeLink answering each argv with the next of its scripted replies (the last one
    repeats); every call goes to the shared journal."""

    def __init__(self, name: str, clock: Clock, journal: list[tuple[str, tuple[str, ...]]]):
        self._name = name
        self.clock = clock
        self.journal = journal
        self.script: dict[tuple[str, ...], list[tuple[int, object, str, float] | HanodeError]] = {}

    @property
    def name(self) -> str:
        return self._name

    def on(
        self, *argv: str, code: int = 0, out: object = "", err: str = "", s: float = 0.5
    ) -> None:
        self.script.setdefault(tuple(argv), []).append((code, out, err, s))

    def fails(self, *argv: str, error: HanodeError) -> None:
        self.script.setdefault(tuple(argv), []).append(error)

    def call(self, argv: Sequence[str], timeout: float) -> Reply:
        key = tuple(argv)
        if key == ("survey",) and key not in self.script:
            return self._survey()
        self.journal.append((self._name, key))
        answers = self.script[key]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, HanodeError):
            raise answer
        code, out, err, seconds = answer
        self.clock.now += seconds
        stdout = out if isinstance(out, str) else json.dumps(out)
        return Reply(self._name, key, code, stdout, err, seconds)

    def _survey(self) -> Reply:
        """`survey` as the real verb answers it: the scripted status, check and facts in
        one document (a part that fails is null, as its JSON would be missing)."""
        document: dict[str, object] = {}
        for part, argv in (("status", ("status", "--json")), ("check", ("check", "--json"))):
            document[part] = self._part(argv)
        if ("facts",) in self.script:
            document["facts"] = self._part(("facts",))
        self.journal.append((self._name, ("survey",)))
        return Reply(self._name, ("survey",), 0, json.dumps(document), "", 0.5)

    def _part(self, argv: tuple[str, ...]) -> object:
        reply = self.call(argv, 60)
        try:
            return json.loads(reply.stdout)
        except ValueError:
            return None


def run_report(verb: str, steps: list[tuple[str, str, str, float]], at: float) -> dict[str, Any]:
    """The engine's report, as `status --json` shows it in last_start / last_stop."""
    return {
        "verb": verb,
        "started_at": at,
        "steps": [
            {"step": step, "action": action, "result": result, "seconds": s, "message": ""}
            for step, action, result, s in steps
        ],
        "seconds": sum(step[3] for step in steps),
        "ok": all(step[2] in ("done", "skipped") for step in steps),
    }


STOPPED = run_report(
    "stop", [("address", "stop", "done", 0.02), ("drbd", "stop", "done", 0.3)], 2e9
)
STARTED = run_report(
    "start", [("drbd", "start", "done", 0.4), ("address", "start", "done", 1.04)], 2e9 + 5
)


def standby_seen_from(holder: str | None, **report: Any) -> dict[str, Any]:
    """The old node's `status --json --arp` after its stop."""
    document = status(False, last_stop=STOPPED, **report)
    document["resources"][1]["details"]["arp-holder"] = holder
    return document


def active_now(**changes: Any) -> dict[str, Any]:
    """The new node's `status --json` after its start: the standby sample's MAC, up."""
    document = status(True, last_start=STARTED, **changes)
    document["resources"][1]["details"]["mac"] = NEW_MAC
    return document


@pytest.fixture
def pair() -> tuple[ScriptedNode, ScriptedNode, list[tuple[str, tuple[str, ...]]], Clock]:
    """node1 active, node2 standby, both checks clean."""
    clock, journal = Clock(), []
    node1, node2 = ScriptedNode("node1", clock, journal), ScriptedNode("node2", clock, journal)
    node1.on("status", "--json", out=status(True))
    node2.on("status", "--json", out=status(False))
    for node in (node1, node2):
        node.on("check", "--json", out=sample("check.json"))
    return node1, node2, journal, clock


def acting(journal: list[tuple[str, tuple[str, ...]]]) -> list[tuple[str, str]]:
    """The calls that change something, in order."""
    return [(node, argv[0]) for node, argv in journal if argv in (("start",), ("stop",))]


def switch(node1: ScriptedNode, node2: ScriptedNode, clock: Clock, **run: bool) -> tuple[Exit, str]:
    out = io.StringIO()
    code = Switchover(node1, node2, clock=clock, out=out).run(**run)
    return code, out.getvalue()


Pair = tuple[ScriptedNode, ScriptedNode, list[tuple[str, tuple[str, ...]]], Clock]


def script_a_clean_switchover(node1: ScriptedNode, node2: ScriptedNode) -> None:
    """node1's stop and node2's start succeed; node2 is then up, and node1 sees the
    address answered by node2's MAC."""
    node1.on("stop", s=1.0)
    node2.on("start", s=2.0)
    node2.on("status", "--json", out=active_now())
    node1.on("status", "--json", "--arp", out=standby_seen_from(NEW_MAC))


def test_switchover_stops_the_active_starts_the_standby_and_verifies(pair: Pair) -> None:
    node1, node2, journal, clock = pair
    script_a_clean_switchover(node1, node2)
    code, text = switch(node1, node2, clock)
    assert code is Exit.OK
    assert acting(journal) == [("node1", "stop"), ("node2", "start")]
    assert ("node1", ("status", "--json", "--arp")) in journal
    lines = text.splitlines()
    assert lines[0] == "switchover node1 -> node2"
    timeline = [line.split()[1:5] for line in lines if line.startswith("  +")]
    assert [row[:3] for row in timeline] == [
        ["both", "preflight", "ok"],
        ["node1", "stop", "(all)"],
        ["node1", "stop", "address"],
        ["node1", "stop", "drbd"],
        ["node2", "start", "(all)"],
        ["node2", "start", "drbd"],
        ["node2", "start", "address"],
        ["node2", "verify", "ok"],
    ]
    assert lines[len(timeline) + 1] == "  total 6.00s"  # 4 reads, stop, start, 2 reads
    # the steps sit on this process's clock: node1's stop began after the preflight's 2 reads
    # of each node (0.5 s each), its steps after its start-up (1.0 s - 0.32 s of steps)
    assert "  +2.00s node1    stop      (all)" in text
    assert "  +2.68s node1    stop      address" in text
    assert "  +3.00s node2    start     (all)" in text
    assert f"node1 sees 192.0.2.10/24 answered by node2's {NEW_MAC}" in text
    assert "node2 is active, node1 is the standby" in text


def test_dry_run_plans_with_both_nodes_dry_runs_and_changes_nothing(pair: Pair) -> None:
    node1, node2, journal, clock = pair
    node1.on("stop", "--dry-run", out="plan for stop (dry run: nothing is changed)\n1. address")
    node2.on("start", "--dry-run", out="plan for start (dry run: nothing is changed)\n1. drbd")
    code, text = switch(node1, node2, clock, dry_run=True)
    assert code is Exit.OK
    assert acting(journal) == []
    assert "  1. on node1: hanode stop\n     plan for stop" in text
    assert "  2. on node2: hanode start\n     plan for start" in text
    assert "3. verify: node2 all up, 192.0.2.10/24 on it" in text


def test_a_blocker_refuses_with_exit_4_and_touches_nothing(pair: Pair) -> None:
    node1, node2, journal, clock = pair
    syncing = drbd_entry(cstate=ConnState.SYNC_SOURCE, sync=SYNCING)
    node1.script[("status", "--json")] = [(0, status(True, syncing), "", 0.5)]
    code, text = switch(node1, node2, clock)
    assert code is Exit.REFUSED
    assert acting(journal) == []
    assert "switchover refused, nothing was changed:\n  node1: DRBD srv is resyncing" in text
    assert "42.5% in sync" in text


def test_a_failed_start_on_the_new_node_starts_the_old_one_again(pair: Pair) -> None:
    node1, node2, journal, clock = pair
    node1.on("stop")
    cause = "start failed at address: 192.0.2.10 is in use: 52:54:00:00:00:09 answers ARP"
    node2.on("start", code=4, err=f"hanode: error: {cause}; rolled back: drbd\n")
    rolled = run_report(
        "start",
        [
            ("drbd", "start", "done", 0.4),
            ("address", "start", "refused", 1.0),
            ("drbd", "rollback", "rolled-back", 0.2),
        ],
        2e9 + 5,
    )
    node2.on("status", "--json", out=status(False, last_start=rolled))
    node1.on("start")
    node1.on("status", "--json", out=status(True, last_start=STARTED))
    code, text = switch(node1, node2, clock)
    assert code is Exit.FAILED
    assert acting(journal) == [("node1", "stop"), ("node2", "start"), ("node1", "start")]
    assert (
        f"`hanode start` on node2 failed: {cause}; rolled back: drbd; node1 is active again" in text
    )
    assert "node1: active (drbd up, address up)" in text
    assert "node2: standby (drbd down, address down)" in text
    assert "node2    rollback  drbd        rolled-back" in text


def test_when_the_old_node_cannot_start_again_it_says_what_each_node_is_and_what_to_run(
    pair: Pair,
) -> None:
    node1, node2, journal, clock = pair
    node1.on("stop")
    node2.on("start", code=1, err="hanode: error: start failed at drbd: peer absent\n")
    node2.on("status", "--json", out=status(False, state="partial", exit=1))
    node1.on("start", code=1, err="hanode: error: start failed at services: apache2 failed\n")
    node1.on("status", "--json", out=status(False))
    code, text = switch(node1, node2, clock)
    assert code is Exit.FAILED
    assert acting(journal) == [("node1", "stop"), ("node2", "start"), ("node1", "start")]
    assert "starting node1 again failed too: start failed at services: apache2 failed" in text
    assert "no node serves" in text
    assert "to do:\n  on node2: `hanode stop` (its rollback left it partial)" in text
    assert "  on node1: fix start failed at services: apache2 failed, then `hanode start`" in text


def test_a_failed_stop_leaves_the_other_node_untouched(pair: Pair) -> None:
    node1, node2, journal, clock = pair
    node1.on("stop", code=1, err="hanode: error: stop failed at filesystem: /srv is busy\n")
    node1.on("status", "--json", out=status(True, state="partial", exit=1))
    code, text = switch(node1, node2, clock)
    assert code is Exit.FAILED
    assert acting(journal) == [("node1", "stop")]
    assert "`hanode stop` on node1 failed: stop failed at filesystem: /srv is busy" in text
    assert "node2 was not touched" in text


def test_the_new_node_unreachable_during_its_start_starts_the_old_one_again(pair: Pair) -> None:
    node1, node2, journal, clock = pair
    node1.on("stop")
    node2.fails("start", error=StepFailed("`ssh node2` timed out after 960s"))
    # after the fixture's standby status (the preflight's): unreachable
    node2.fails("status", "--json", error=StepFailed("`ssh node2`: no route to host"))
    node1.on("start")
    node1.on("status", "--json", out=status(True, last_start=STARTED))
    code, text = switch(node1, node2, clock)
    assert code is Exit.FAILED
    assert acting(journal) == [("node1", "stop"), ("node2", "start"), ("node1", "start")]
    assert "node2: unknown (unreachable: `ssh node2`: no route to host)" in text
    assert "to do:\n  on node2: `hanode stop`" in text


class MeetingNode(ScriptedNode):
    """A ScriptedNode whose call of one argv, once the switchover has started a node, waits
    at a barrier shared with the other node: both calls must be under way at the same
    time, or the barrier times out (the survey's reads, before, pass as usual)."""

    def __init__(self, node: ScriptedNode, argv: tuple[str, ...], barrier: threading.Barrier):
        super().__init__(node.name, node.clock, node.journal)
        self.script = node.script
        self.meet = (argv, barrier)

    def call(self, argv: Sequence[str], timeout: float) -> Reply:
        started = any(call == ("start",) for _, call in self.journal)
        if started and tuple(argv) == self.meet[0]:
            self.meet[1].wait()
        return super().call(argv, timeout)


def test_the_verifications_two_reads_run_at_once(pair: Pair) -> None:
    node1, node2, journal, clock = pair
    script_a_clean_switchover(node1, node2)
    barrier = threading.Barrier(2, timeout=10)
    old = MeetingNode(node1, ("status", "--json", "--arp"), barrier)
    new = MeetingNode(node2, ("status", "--json"), barrier)
    code, text = switch(old, new, clock)
    assert not barrier.broken, "the verification's two reads ran one after the other"
    assert code is Exit.OK, text
    assert sorted(journal[-2:]) == [
        ("node1", ("status", "--json", "--arp")),
        ("node2", ("status", "--json")),
    ]
    assert f"node1 sees 192.0.2.10/24 answered by node2's {NEW_MAC}" in text


def test_verify_fails_when_the_old_node_sees_another_mac_answer(pair: Pair) -> None:
    node1, node2, journal, clock = pair
    node1.on("stop")
    node2.on("start")
    node2.on("status", "--json", out=active_now())
    node1.on("status", "--json", "--arp", out=standby_seen_from("52:54:00:00:00:09"))
    code, text = switch(node1, node2, clock)
    assert code is Exit.FAILED
    assert (
        f"node1 sees 192.0.2.10/24 answered by 52:54:00:00:00:09, not by node2's {NEW_MAC}" in text
    )


def test_json_report(pair: Pair) -> None:
    node1, node2, journal, clock = pair
    node1.on("stop")
    node2.on("start")
    node2.on("status", "--json", out=active_now())
    node1.on("status", "--json", "--arp", out=standby_seen_from(NEW_MAC))
    out = io.StringIO()
    code = Switchover(node1, node2, clock=clock, out=out).run(as_json=True)
    document = json.loads(out.getvalue())
    assert code is Exit.OK and document["exit"] == 0
    assert (document["from"], document["to"]) == ("node1", "node2")
    steps = [(e["node"], e["verb"], e["step"]) for e in document["timeline"]]
    assert ("node1", "stop", "drbd") in steps and ("node2", "start", "address") in steps
    assert document["blockers"] == []


# -- real nodes: two network namespaces, each a hanode with [address] ----------------------


class NetnsNode:
    """A NodeLink running this tree's hanode in a network namespace (a real child)."""

    def __init__(self, name: str, config: Path, run_dir: Path) -> None:
        self._name, self.config, self.run_dir = name, config, run_dir

    @property
    def name(self) -> str:
        return self._name

    def call(self, argv: Sequence[str], timeout: float) -> Reply:
        command = [
            "ip",
            "netns",
            "exec",
            self._name,
            PYTHON,
            "-m",
            "hanode",
            "-c",
            str(self.config),
        ]
        env = {
            "PYTHONPATH": str(ROOT),
            "HANODE_NO_JOURNAL": "1",
            "HANODE_RUN_DIR": str(self.run_dir),
        }
        began = time.monotonic()
        done = run([*command, "--insecure-config", *argv], timeout=timeout, check=False, env=env)
        seconds = time.monotonic() - began
        return Reply(self._name, tuple(argv), done.returncode, done.stdout, done.stderr, seconds)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def namespaces(tmp_path: Path) -> Iterator[tuple[NetnsNode, NetnsNode]]:
    """Two namespaces on one veth segment (192.0.2.1, .2), each with [address] 192.0.2.10."""
    names = [f"hsw{os.getpid()}-{n}" for n in (1, 2)]
    for name in names:
        _ip("netns", "add", name)
    try:
        _ip("-n", names[0], "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
            "netns", names[1])  # fmt: skip
        nodes = []
        for number, name in enumerate(names, start=1):
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", name, "link", "set", "eth0", "up")
            _ip("-n", name, "address", "add", f"192.0.2.{number}/24", "dev", "eth0")
            home = tmp_path / name
            (home / "run").mkdir(parents=True)
            config = home / "hanode.toml"
            config.write_text('[address]\nip = "192.0.2.10/24"\ninterface = "eth0"\n')
            nodes.append(NetnsNode(name, config, home / "run"))
        yield nodes[0], nodes[1]
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def _holds_vip(node: NetnsNode) -> bool:
    shown = subprocess.run(
        ["ip", "-n", node.name, "-j", "address", "show", "dev", "eth0"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return any(a["local"] == "192.0.2.10" for a in json.loads(shown)[0]["addr_info"])


@pytest.mark.root
def test_real_switchover_moves_the_address_and_the_old_node_sees_the_new_mac(
    namespaces: tuple[NetnsNode, NetnsNode],
) -> None:
    node1, node2 = namespaces
    assert node1.call(["start"], 60).exitcode == 0
    assert node2.call(["stop"], 60).exitcode == 0
    out = io.StringIO()
    code = Switchover(node2, node1, out=out).run()  # run from the standby's side
    text = out.getvalue()
    assert code is Exit.OK, text
    assert _holds_vip(node2) and not _holds_vip(node1)
    mac = json.loads(node2.call(["status", "--json"], 60).stdout)["resources"][0]["details"]["mac"]
    assert f"{node1.name} sees 192.0.2.10/24 answered by {node2.name}'s {mac}" in text
    assert f"{node1.name} stop      address     done" in text
    assert f"{node2.name} start     address     done" in text
    # and back, the other way round
    assert Switchover(node1, node2, out=io.StringIO()).run() is Exit.OK
    assert _holds_vip(node1) and not _holds_vip(node2)


@pytest.mark.root
def test_real_preflight_refuses_when_the_standby_cannot_carry_the_address(
    namespaces: tuple[NetnsNode, NetnsNode],
) -> None:
    node1, node2 = namespaces
    assert node1.call(["start"], 60).exitcode == 0
    _ip("-n", node2.name, "link", "set", "eth0", "down")
    out = io.StringIO()
    code = Switchover(node1, node2, out=out).run()
    assert code is Exit.REFUSED
    assert f"{node2.name}: check: address: interface eth0 is down (ip link set eth0 up)" in (
        out.getvalue()
    )
    assert _holds_vip(node1)


def test_the_cli_without_peer_says_how_to_name_the_other_node(tmp_path: Path) -> None:
    config = tmp_path / "hanode.toml"
    config.write_text('[address]\nip = "192.0.2.10/24"\ninterface = "eth0"\n')
    done = run_hanode("-c", str(config), "--insecure-config", "switchover", "--dry-run")
    assert done.returncode == Exit.USAGE
    error = done.stderr.strip().splitlines()
    assert len(error) == 1, done.stderr
    assert error[0].startswith(f"hanode: error: {config}: no [peer] section: "), error
    assert 'add [peer] with nodes = ["THIS-NODE", "OTHER-NODE"]' in error[0]


def test_survey_is_status_check_and_facts_in_one_document(tmp_path: Path) -> None:
    """What the preflight asks of each node in one call: the three documents, each as its
    own verb prints it (exit 0: the parts carry their exits)."""
    config = tmp_path / "hanode.toml"
    config.write_text('[services]\nunits = ["hanode-test-absent.service"]\n')
    done = run_hanode("-c", str(config), "--insecure-config", "survey")
    assert done.returncode == 0, done.stderr
    survey = json.loads(done.stdout)
    status = json.loads(
        run_hanode("-c", str(config), "--insecure-config", "status", "--json").stdout
    )
    assert survey["status"]["exit"] == status["exit"]
    assert [r["name"] for r in survey["status"]["resources"]] == ["services"]
    checked = run_hanode("-c", str(config), "--insecure-config", "check", "--json")
    assert survey["check"]["exit"] == checked.returncode == json.loads(checked.stdout)["exit"]
    assert survey["facts"]["config"]["services"]["units"] == ["hanode-test-absent.service"]
