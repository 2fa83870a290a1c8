"""hanode under Pacemaker, on the lab's "pacemaker" profile (`labctl up --pacemaker`):
corosync two_node over two knet links, DRBD as an ocf:linbit:drbd promotable clone with
resource-level fencing (crm-fence-peer.sh), ocf:hanode:hanode (drbd=clone) running the
rest of the same hanode.toml on the Promoted node. stonith is off in the lab (see
hanode-ocf(7) for what production needs).

Each scenario starts from the snapshot taken after up (node1 active by Pacemaker, node2 a
replicating standby), runs under the client's write load through the VIP, and checks the
nodes by the kernel and systemd (hanodelab.faults.managed_state), not by Pacemaker's word.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from hanodelab import lab, pacemaker
from hanodelab.faults import (
    UNITS,
    Watch,
    WriteLoad,
    active_problems,
    managed_state,
    standby_problems,
)
from hanodelab.vm import Node

pytestmark = [pytest.mark.lab, pytest.mark.pacemaker]

NODE1, NODE2 = lab.NODES["node1"], lab.NODES["node2"]
FENCE_CONSTRAINT = "drbd-fence-by-handler-srv"  # crm-fence-peer.sh's id prefix


def is_active(target: Node) -> None:
    problems = active_problems(managed_state(target))
    assert not problems, f"{target.name} is not active: {problems}"


def is_standby(target: Node) -> None:
    state = managed_state(target)
    problems = standby_problems(state)
    assert not problems, f"{target.name} is not a clean standby: {problems}"
    assert (state["cstate"], state["dstate"]) == ("Connected", "UpToDate/UpToDate"), state


def fence_constraints(target: Node) -> list[str]:
    """The ids of the constraints crm-fence-peer.sh placed (and crm-unfence-peer.sh lifts)."""
    root = pacemaker.cib(target, "constraints")
    return [
        element.get("id", "")
        for element in root.iter("rsc_location")
        if element.get("id", "").startswith(FENCE_CONSTRAINT)
    ]


def test_c1_planned_move_and_back_under_load(pacemaker_scenario: dict[str, Any]) -> None:
    """`crm resource move hanode node2`, then back to node1, the client writing all along:
    the cluster moves DRBD's Promoted role with hanode, each node ends exactly active or
    standby, every committed row is there."""
    steps = pacemaker_scenario["steps"]
    load = WriteLoad().start()
    watch = Watch()
    try:
        load.wait_rows(5)
        for old, new in ((NODE1, NODE2), (NODE2, NODE1)):
            began = time.monotonic()
            pacemaker.crm(NODE1, f"resource move hanode {new.name}")
            steps[f"move to {new.name}: client served s"] = watch.first(new.name, began)
            pacemaker.settle(NODE1)
            steps[f"move to {new.name}: settled s"] = round(time.monotonic() - began, 2)
            pacemaker.crm(NODE1, "resource clear hanode")
            assert pacemaker.where(NODE1, "hanode") == new.name
            assert pacemaker.where(NODE1, "drbd_srv") == new.name
            is_active(new)
            is_standby(old)
            load.wait_rows(5)
    finally:
        watch.close()
        load.stop()
    assert load.lost() == [], "committed rows are missing after the moves"
    steps["rows committed"] = len(load.committed)
    steps["longest client outage s"] = load.longest_outage
    steps["switchover"] = steps["move to node2: client served s"]


def test_c2_active_crashes_fails_over_and_returns_without_split_brain(
    pacemaker_scenario: dict[str, Any],
) -> None:
    """node1 loses power under the write load: Pacemaker promotes node2 (DRBD's fence-peer
    handler bans the Promoted role from node1 meanwhile) and hanode starts there; every
    committed row is there. node1 powers on again: it joins, resyncs as the Unpromoted
    side (no split brain), the ban is lifted, and hanode stays on node2 (stickiness)."""
    steps = pacemaker_scenario["steps"]
    load = WriteLoad().start()
    watch = Watch()
    try:
        load.wait_rows(5)
        began = time.monotonic()
        NODE1.kill()
        steps["crash: client served by node2 s"] = watch.first("node2", began)
        pacemaker.settle(NODE2)
        is_active(NODE2)
        assert pacemaker.where(NODE2, "hanode") == "node2"
        banned = fence_constraints(NODE2)
        assert banned, "DRBD's fence-peer handler placed no constraint on the promotion"
        steps["fence constraint"] = banned
        load.wait_rows(5)

        began = time.monotonic()
        booted = lab.boot([NODE1], lab.current_image(), "node1 powers on again")
        steps["node1 boot s"] = round(booted, 1)
        lab.wait_for(
            lambda: pacemaker.online(NODE2) == {"node1", "node2"}, 300, "node1 back online"
        )
        lab.wait_for(
            lambda: not fence_constraints(NODE2), 300, "crm-unfence-peer.sh lifting the ban"
        )
        pacemaker.settle(NODE2)
        steps["node1 back, in sync, unbanned s"] = round(time.monotonic() - began, 1)
        is_standby(NODE1)
        is_active(NODE2)
        assert pacemaker.where(NODE2, "hanode") == "node2", "hanode moved back: stickiness?"
        split = NODE1.agent.sh("journalctl -b -k --no-pager | grep -ci 'split-brain' || true")
        assert split.stdout.strip() == "0", "node1's kernel log reports a split brain"
        load.wait_rows(5)
    finally:
        watch.close()
        load.stop()
    assert load.lost() == [], "committed rows are missing after the crash failover"
    steps["rows committed"] = len(load.committed)
    steps["longest client outage s"] = load.longest_outage


def test_c3_a_managed_unit_killed_by_hand_is_recovered(
    pacemaker_scenario: dict[str, Any],
) -> None:
    """The PostgreSQL unit's processes are SIGKILLed on node1 (the unit does not restart
    itself): hanode's monitor reports the resource partly up, Pacemaker stops and starts
    it on node1 (one failure counted), the client writes again and no row is lost."""
    steps = pacemaker_scenario["steps"]
    unit = UNITS[0]
    restart = NODE1.agent.sh(f"systemctl show -P Restart {unit}").stdout.strip()
    assert restart == "no", f"{unit} restarts itself ({restart}): it would hide the test"
    load = WriteLoad().start()
    try:
        load.wait_rows(5)
        began = time.monotonic()
        lab.must(NODE1, f"systemctl kill --signal=SIGKILL {unit}")
        lab.wait_for(
            lambda: pacemaker.fail_count(NODE1, "hanode", "node1") >= 1,
            120,
            "Pacemaker noticing the failed unit",
        )
        steps["noticed s"] = round(time.monotonic() - began, 1)
        load.wait_rows(5)
        steps["writing again s"] = round(time.monotonic() - began, 1)
        pacemaker.settle(NODE1)
    finally:
        load.stop()
    is_active(NODE1)
    is_standby(NODE2)
    assert pacemaker.where(NODE1, "hanode") == "node1"
    assert load.lost() == []
    steps["rows committed"] = len(load.committed)
    steps["longest client outage s"] = load.longest_outage
