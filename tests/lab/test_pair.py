"""The two-node operations on the real lab: `hanode switchover` under the client's write
load, its rollback when the new node cannot serve, the drift check, a peer whose sshd is
down, and the restricted key that runs nothing but hanode's allowlisted verbs.

Each scenario starts from the snapshot taken after `labctl up` (node1 active, node2 a
replicating standby, the peer channel provisioned as an admin does: see
hanodelab.lab.provision_peer_channel) and records its figures in build/lab/summary.json.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hanodelab import lab
from hanodelab.faults import (
    WriteLoad,
    active_problems,
    expect,
    hanode,
    managed_state,
    standby_problems,
)
from hanodelab.vm import Node

pytestmark = pytest.mark.lab

NODE1, NODE2 = lab.NODES["node1"], lab.NODES["node2"]
MAC = {"node1": "52:54:00:c0:00:01", "node2": "52:54:00:c0:00:02"}  # eth0 (recipe overlay)


def roles() -> tuple[str, str]:
    """Each node, active or standby by the kernel and systemd (not by hanode)."""
    found = []
    for target in (NODE1, NODE2):
        state = managed_state(target)
        if not active_problems(state):
            found.append("active")
        elif not standby_problems(state):
            found.append("standby")
        else:
            found.append(f"neither: {active_problems(state)} / {standby_problems(state)}")
    return found[0], found[1]


def switchover(target: Node, *options: str) -> Any:
    """`hanode switchover` run on ``target``."""
    return hanode(target, " ".join(("switchover", *options)), timeout=900)


def timeline_nodes(output: str) -> set[str]:
    """The nodes named on the timeline's step lines."""
    return {word for line in output.splitlines() for word in line.split() if word in MAC}


def test_p1_switchover_there_and_back_under_load(scenario: dict[str, Any]) -> None:
    """node1 -> node2 run on node1, then node2 -> node1 run on node1 again (either node
    may run it), the client writing all along: every committed row is there, each run
    prints one timeline with both nodes' steps, and the old node sees the new one answer."""
    load = WriteLoad().start()
    load.wait_rows(5)
    for number, (old, new) in enumerate(((NODE1, NODE2), (NODE2, NODE1)), start=1):
        began = time.monotonic()
        done = expect(switchover(NODE1), 0, f"switchover {old.name} -> {new.name}")
        scenario["steps"][f"switchover {number} s"] = round(time.monotonic() - began, 2)
        assert timeline_nodes(done.stdout) == {"node1", "node2"}, done.stdout
        assert f"answered by {new.name}'s {MAC[new.name]}" in done.stdout, done.stdout
        expected = ("standby", "active") if new is NODE2 else ("active", "standby")
        assert roles() == expected, done.stdout
        load.wait_rows(5)
    load.stop()
    assert load.lost() == [], "committed rows are missing after the switchovers"
    scenario["steps"]["rows committed"] = len(load.committed)
    scenario["steps"]["client errors"] = len(load.failures)
    scenario["steps"]["longest client outage s"] = load.longest_outage
    scenario["steps"]["switchover"] = scenario["steps"]["switchover 1 s"]
    report = json.loads(hanode(NODE1, "status --json").stdout)
    assert report["last_start"]["ok"] is True


def test_p2_switchover_rolls_back_when_the_new_node_cannot_serve(
    scenario: dict[str, Any],
) -> None:
    """apache2 cannot bind its port on node2 (another process holds it: no drift check
    can see that): node2's start fails and rolls back, the switchover starts node1 again
    and exits 1, naming the unit; node1 serves the client again."""
    load = WriteLoad().start()
    load.wait_rows(3)
    NODE2.agent.sh(
        "setsid python3 -m http.server 80 </dev/null >/dev/null 2>&1 & "
        "for i in $(seq 50); do ss -Htln 'sport = :80' | grep -q . && break; sleep 0.1; done"
    )
    began = time.monotonic()
    done = expect(switchover(NODE1), 1, "switchover with port 80 taken on node2")
    scenario["steps"]["failed switchover and restore s"] = round(time.monotonic() - began, 2)
    output = done.stdout + done.stderr
    assert "apache2.service" in output, output
    assert roles() == ("active", "standby"), output
    load.wait_rows(3)
    load.stop()
    assert load.lost() == []
    scenario["steps"]["rows committed"] = len(load.committed)
    scenario["steps"]["longest client outage s"] = load.longest_outage


def test_p3_drift_is_named_and_refuses_the_switchover(scenario: dict[str, Any]) -> None:
    """On node2: a changed hanode.toml, a managed unit enabled at boot, the managed unit's
    package removed. `check --peer` names each (exit 1); switchover refuses (exit 4) and
    touches neither node."""
    expect(hanode(NODE1, "check --peer"), 0, "check --peer before any drift")
    NODE2.agent.sh(
        "sed -i 's/^timeout = 90$/timeout = 91/' /etc/hanode/hanode.toml"
        " && systemctl enable apache2.service 2>/dev/null"
    )
    drifted = expect(hanode(NODE1, "check --peer"), 1, "check --peer with drift")
    assert "config [services]" in drifted.stdout, drifted.stdout
    assert "unit apache2.service at boot" in drifted.stdout, drifted.stdout
    NODE2.agent.sh("systemctl disable apache2.service 2>/dev/null; dpkg -r apache2 >/dev/null")
    drifted = expect(hanode(NODE1, "check --peer"), 1, "check --peer with a package removed")
    assert "unit apache2.service package" in drifted.stdout, drifted.stdout
    scenario["steps"]["differences named"] = sum(
        1 for line in drifted.stdout.splitlines() if line.startswith("error")
    )
    refused = expect(switchover(NODE1), 4, "switchover with drift")
    assert "apache2.service" in refused.stdout + refused.stderr
    assert roles() == ("active", "standby")


def test_p4_peer_unreachable_refuses_and_touches_nothing(scenario: dict[str, Any]) -> None:
    """node2's sshd is stopped: switchover on node1 refuses with exit 4 and changes
    nothing; status --peer still shows node1 and says the peer is unreachable."""
    NODE2.agent.sh("systemctl stop ssh.service")
    refused = expect(switchover(NODE1), 4, "switchover with node2's sshd stopped")
    assert "node2" in refused.stdout + refused.stderr
    assert roles() == ("active", "standby")
    status = expect(hanode(NODE1, "status --peer"), 4, "status --peer, peer unreachable")
    assert status.stdout.startswith("node1: up\n") and "node2" in status.stderr
    scenario["steps"]["refused"] = "switchover and status --peer, exit 4"


def test_p5_the_restricted_key_runs_nothing_but_hanode(scenario: dict[str, Any]) -> None:
    """node1's hanode key, as node2's authorized_keys restricts it: a shell command, a
    pty, a command hidden after an allowed verb, a -c naming a file are refused, and
    none of them ran (no file made on node2); an allowed verb answers."""
    ssh = (
        "ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -i /etc/hanode/peer_ed25519"
        " -o UserKnownHostsFile=/etc/hanode/peer_known_hosts -o StrictHostKeyChecking=yes"
        " root@192.0.2.12"
    )
    allowed = NODE1.agent.sh(f"{ssh} hanode status --json")
    assert json.loads(allowed.stdout)["node"] == "node2", allowed.stderr
    refused = 0
    for command in (
        "touch /root/pwned",
        "'status; touch /root/pwned'",
        "'status $(touch /root/pwned)'",
        "hanode check -c /etc/shadow",
        "hanode start --force",
    ):
        result = NODE1.agent.sh(f"{ssh} {command}")
        assert result.exitcode == 2, (command, result.exitcode, result.stdout, result.stderr)
        refused += 1
    pty = NODE1.agent.sh(f"{ssh} -tt hanode status")
    assert pty.exitcode != 0 or "PTY allocation request failed" in pty.stderr
    assert NODE2.agent.sh("test -e /root/pwned").exitcode == 1, "a refused command ran"
    scenario["steps"]["shell commands refused"] = refused
