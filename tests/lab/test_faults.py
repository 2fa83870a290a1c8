"""The fault matrix: every fault a two-node cluster meets, on the real lab, under the
client's PostgreSQL write load through the floating IP where there is a client to serve.

Each scenario starts from the snapshot taken after `labctl up` (node1 active, node2 a
replicating standby) and records in build/lab/summary.json: faults injected, committed
rows lost (must be 0), client errors, seconds to recover, and both nodes' end state as
the kernel and systemd tell it (hanodelab.faults.managed_state), not as hanode says it.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from hanodelab import faults, lab
from hanodelab.faults import (
    WriteLoad,
    active_problems,
    expect,
    hanode,
    managed_state,
    standby_problems,
    wait_primary_unit,
)
from hanodelab.vm import Node

pytestmark = pytest.mark.lab

NODE1, NODE2 = lab.NODES["node1"], lab.NODES["node2"]

# One kill point per step boundary, start then stop (the full sweep: tests/lab/kill-sweep).
START_POINTS = ("after:drbd", "after:filesystem", "after:links", "after:address")
STOP_POINTS = ("after:services", "after:address", "after:links", "after:filesystem")


def is_active(target: Node) -> None:
    """The node is exactly active, by the kernel and systemd, and hanode agrees."""
    problems = active_problems(managed_state(target))
    assert not problems, f"{target.name} is not active: {problems}"
    assert hanode(target, "status").exitcode == 0


def is_standby(target: Node, *, replicating: bool = True) -> None:
    """The node is exactly a standby; replicating: DRBD connected and UpToDate too."""
    state = managed_state(target)
    problems = standby_problems(state)
    assert not problems, f"{target.name} is not a clean standby: {problems}"
    if replicating:
        assert state["cstate"] == "Connected", state
        assert state["dstate"] == "UpToDate/UpToDate", state
    assert hanode(target, "status").exitcode == 3


def wait_in_sync(timeout: float = 120) -> float:
    """Wait until the pair is connected and both disks UpToDate; the seconds it took."""
    return lab.wait_for(
        lambda: NODE2.agent.sh("drbdadm cstate srv; drbdadm dstate srv").stdout.split()
        == ["Connected", "UpToDate/UpToDate"],
        timeout,
        "DRBD connected and UpToDate on both nodes",
    )


def power_on(targets: list[Node], label: str) -> float:
    """Boot powered-off nodes from their disks; the seconds until their boot is over."""
    return lab.boot(targets, lab.current_image(), label)


def record_end(scenario: dict[str, Any], load: WriteLoad | None = None) -> None:
    """Both nodes' end state, and the load's figures, into the scenario's record."""
    for target in (NODE1, NODE2):
        if target.running():
            state = managed_state(target)
            scenario["steps"][f"{target.name} end"] = (
                "active"
                if not active_problems(state)
                else "standby"
                if not standby_problems(state)
                else state
            )
    if load is not None:
        scenario["steps"]["rows committed"] = len(load.committed)
        scenario["steps"]["client errors"] = len(load.failures)
        scenario["steps"]["longest client outage s"] = load.longest_outage


def test_f1_killed_mid_run(scenario: dict[str, Any]) -> None:
    """SIGKILL `hanode start` and `hanode stop` at every step boundary: the same verb run
    again exits 0 and reaches exactly its end state. The kills alternate (a start killed
    and finished, then a stop killed and finished, from the state the start reached), so
    that each finished verb is the opposite verb's starting point and every run counts."""
    assert len(START_POINTS) == len(STOP_POINTS)
    faults.install_killer(NODE1)
    expect(hanode(NODE1, "stop"), 0, "hanode stop to begin from standby")
    tried = converged = 0
    for start_point, stop_point in zip(START_POINTS, STOP_POINTS, strict=True):
        for verb, point, check in (
            ("start", start_point, is_active),
            ("stop", stop_point, is_standby),
        ):
            outcome = faults.kill_at(NODE1, verb, point)
            assert outcome["killed"], outcome
            tried += 1
            expect(hanode(NODE1, verb), 0, f"{verb} again after a kill {outcome['where']}")
            check(NODE1)
            converged += 1
    expect(hanode(NODE1, "start"), 0, "start after the last kill")
    is_active(NODE1)
    is_standby(NODE2)
    scenario["steps"]["kill points tried / converged"] = f"{tried} / {converged}"
    record_end(scenario)


def test_f2_replication_link_cut(scenario: dict[str, Any]) -> None:
    """The crossover is cut while node1 serves: node1 keeps serving, status names the cut
    on both nodes, node2 refuses to start; the link returns, DRBD resyncs, nothing lost."""
    load = WriteLoad().start()
    load.wait_rows(20)
    faults.set_link(NODE1, "cross", up=False)
    cut = time.monotonic()
    # node1 sees its carrier go at once; node2 only when its keep-alive times out
    lab.wait_for(
        lambda: all(
            target.agent.sh("drbdadm cstate srv").stdout.strip() != "Connected"
            for target in (NODE1, NODE2)
        ),
        60,
        "both nodes to notice the cut",
        interval=0.2,
    )
    scenario["steps"]["cut noticed by DRBD"] = round(time.monotonic() - cut, 2)
    load.wait_rows(20)  # node1 keeps serving without its peer
    for target in (NODE1, NODE2):
        text = hanode(target, "status").stdout
        assert "replication link down" in text, f"{target.name} status:\n{text}"
    refused = hanode(NODE2, "start")
    expect(refused, 4, "hanode start on node2 with the replication link cut")
    is_standby(NODE2, replicating=False)
    faults.set_link(NODE1, "cross", up=True)
    scenario["steps"]["resync after the link returned"] = round(wait_in_sync(), 2)
    load.stop()
    assert load.lost() == [], "committed rows lost"
    assert not load.failures, f"the client saw {len(load.failures)} errors while node1 served"
    is_active(NODE1)
    is_standby(NODE2)
    # the rows written while the link was cut reached node2 with the resync
    expect(hanode(NODE1, "stop"), 0, "stop on node1")
    expect(hanode(NODE2, "start"), 0, "start on node2 after the resync")
    assert load.lost() == [], "rows written during the cut are missing on node2"
    record_end(scenario, load)


def test_f3_managed_unit_fails(scenario: dict[str, Any]) -> None:
    """apache2 cannot bind its port on the new active node: the start rolls back to a clean
    standby, exit 1, naming the unit and quoting its journal; node1 takes the load back."""
    expect(hanode(NODE1, "stop"), 0, "stop on node1")
    NODE2.agent.sh(
        "setsid python3 -m http.server 80 </dev/null >/dev/null 2>&1 & "
        "for i in $(seq 50); do ss -Htln 'sport = :80' | grep -q . && break; sleep 0.1; done"
    )
    failed = expect(hanode(NODE2, "start"), 1, "start on node2 with port 80 taken")
    error = [line for line in failed.stderr.splitlines() if "error" in line]
    assert error and "apache2.service" in error[-1], failed.stderr
    assert "Address already in use" in failed.stderr, failed.stderr
    assert "rolled back" in error[-1], error[-1]
    is_standby(NODE2)
    started = time.monotonic()
    expect(hanode(NODE1, "start"), 0, "node1 takes it back")
    scenario["steps"]["recovery (start on node1)"] = round(time.monotonic() - started, 2)
    is_active(NODE1)
    record_end(scenario)


def test_f4_both_lose_power(scenario: dict[str, Any]) -> None:
    """Both nodes lose power at once under the load and boot together: node1 active by
    hanode-primary.service, node2 a replicating standby, every committed row there."""
    load = WriteLoad().start()
    load.wait_rows(30)
    lab.in_parallel(lambda target: target.kill())
    lost_power = time.monotonic()
    load.stop()
    scenario["steps"]["boot both"] = round(power_on([NODE1, NODE2], "booting both nodes"), 2)
    wait_primary_unit(NODE1)
    scenario["steps"]["recovery (power back to serving)"] = round(time.monotonic() - lost_power, 2)
    is_active(NODE1)
    wait_in_sync()
    is_standby(NODE2)
    assert load.lost() == [], "committed rows lost"
    record_end(scenario, load)


@pytest.mark.parametrize("verb", ["start", "stop"])
def test_f5_power_lost_mid_run(scenario: dict[str, Any], verb: str) -> None:
    """node1 loses power in the middle of `hanode start` (from standby) or `hanode stop`
    (while serving): it boots again and converges by itself (hanode-primary.service)."""
    load = WriteLoad().start()
    load.wait_rows(20)
    load.stop()
    if verb == "start":
        expect(hanode(NODE1, "stop"), 0, "stop on node1 first")
    point = "filesystem" if verb == "start" else "links"
    events = f"journalctl -b -o cat HANODE_RESULT=done HANODE_ACTION={verb} HANODE_STEP={point}"
    before = len(NODE1.agent.sh(events).stdout.splitlines())
    NODE1.agent.exec(["/usr/bin/hanode", verb], wait=False)
    lab.wait_for(
        lambda: len(NODE1.agent.sh(events).stdout.splitlines()) > before,
        120,
        f"node1's {verb} to pass its {point} step",
        interval=0.1,
    )
    NODE1.kill()  # the power goes in the middle of the run: the steps after are not done
    lost_power = time.monotonic()
    power_on([NODE1], "booting node1")
    wait_primary_unit(NODE1)
    scenario["steps"]["recovery (power back to serving)"] = round(time.monotonic() - lost_power, 2)
    is_active(NODE1)
    wait_in_sync()
    is_standby(NODE2)
    assert load.lost() == [], "committed rows lost"
    record_end(scenario, load)


def test_f6_standby_reboots(scenario: dict[str, Any]) -> None:
    """node2 reboots while node1 serves: it comes back a replicating standby by itself
    (hanode-standby.service), the resync completes, the client sees no error."""
    load = WriteLoad().start()
    load.wait_rows(10)
    started = time.monotonic()
    NODE2.agent.exec(["/bin/systemctl", "reboot"], wait=False)
    lab.wait_for(lambda: not NODE2.agent.ping(timeout=2), 120, "node2 going down")
    load.wait_rows(10)  # writes while node2 is away: a resync will carry them
    NODE2.wait_agent()
    NODE2.agent.sh("systemctl is-system-running --wait", timeout=600)
    scenario["steps"]["back in sync after the reboot"] = round(
        wait_in_sync() + time.monotonic() - started, 2
    )
    load.wait_rows(5)
    load.stop()
    assert not load.failures, f"the client saw {len(load.failures)} errors"
    assert load.lost() == [], "committed rows lost"
    is_standby(NODE2)
    is_active(NODE1)
    record_end(scenario, load)


@pytest.mark.parametrize("link", ["up", "down"])
def test_f7_crashed_active_returns_after_forced_takeover(
    scenario: dict[str, Any], link: str
) -> None:
    """node1 crashes, node2 takes over with --force and serves new writes; node1 boots
    (hanode-primary.service) with the replication link up or cut: it never becomes a
    second active node, and once connected it syncs from node2, losing nothing."""
    load = WriteLoad().start()
    load.wait_rows(20)
    NODE1.kill()
    lab.wait_for(
        lambda: NODE2.agent.sh("drbdadm cstate srv").stdout.strip() != "Connected",
        60,
        "node2 to notice the dead peer",
        interval=0.2,
    )
    expect(hanode(NODE2, "start --force"), 0, "forced takeover on node2")
    load.wait_rows(20)  # new writes on node2 only
    if link == "down":
        # the crossover is broken while node1 is off (its qemu is gone: cut the switch side)
        faults.set_tap(NODE1, "cross", up=False)
    power_on([NODE1], "booting node1 after its crash")
    wait_primary_unit(NODE1)
    journal = NODE1.agent.sh("journalctl -b -u hanode-primary.service -o cat").stdout
    assert "refused" in journal, journal
    state = managed_state(NODE1)
    assert not standby_problems(state), f"node1 after its boot: {state}"
    assert state["role"].startswith("Secondary/"), state
    is_active(NODE2)
    if link == "down":
        faults.set_tap(NODE1, "cross", up=True)
    scenario["steps"]["node1 in sync again"] = round(wait_in_sync(180), 2)
    split = NODE2.agent.sh("dmesg | grep -c 'Split-Brain detected' || true").stdout.strip()
    assert split == "0", "a split brain was detected"
    load.wait_rows(5)
    load.stop()
    assert load.lost() == [], "committed rows lost"
    is_standby(NODE1)
    record_end(scenario, load)


def test_f8_split_brain_is_named_never_resolved(scenario: dict[str, Any]) -> None:
    """Both nodes promoted with --force while the link is cut: when it returns, status and
    check on both say split brain, name the data generations and the recovery commands,
    and hanode discards nothing by itself."""
    faults.set_link(NODE1, "cross", up=False)
    lab.wait_for(
        lambda: NODE2.agent.sh("drbdadm cstate srv").stdout.strip() != "Connected",
        60,
        "node2 to notice the cut",
        interval=0.2,
    )
    NODE1.agent.sh("date > /srv/var-www/html/written-on-node1")
    expect(hanode(NODE2, "start --force"), 0, "forced start on node2 during the cut")
    NODE2.agent.sh("date > /srv/var-www/html/written-on-node2")
    faults.set_link(NODE1, "cross", up=True)
    lab.wait_for(
        lambda: all(
            target.agent.sh("drbdadm cstate srv").stdout.strip() == "StandAlone"
            for target in (NODE1, NODE2)
        ),
        60,
        "both nodes to see the split brain (StandAlone)",
    )
    for target in (NODE1, NODE2):
        for verb in ("status", "check"):
            text = hanode(target, verb).stdout
            assert "split brain" in text, f"{target.name} {verb}:\n{text}"
            assert "--discard-my-data" in text, f"{target.name} {verb}:\n{text}"
        generations = hanode(target, "status --json").stdout
        assert '"data-generation"' in generations, generations
    # nothing was discarded: each node still has what it wrote
    assert NODE1.agent.sh("cat /srv/var-www/html/written-on-node1").exitcode == 0
    assert NODE2.agent.sh("cat /srv/var-www/html/written-on-node2").exitcode == 0
    assert NODE1.agent.sh("drbdadm role srv").stdout.startswith("Primary/")
    assert NODE2.agent.sh("drbdadm role srv").stdout.startswith("Primary/")
    record_end(scenario)
