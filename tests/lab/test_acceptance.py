"""Acceptance scenarios on the two-node lab: real DRBD, systemd, apache2, PostgreSQL and
the hanode .deb installed by dpkg. Each scenario starts from the snapshot taken after
`labctl up` (node1 active by hanode-primary.service, node2 standby) and records its
steps' timings, and hanode's own (`hanode status --json`), in build/lab/summary.json.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from typing import Any

import pytest
from hanodelab import lab, net
from hanodelab.faults import WriteLoad, expect, hanode, psql
from hanodelab.vm import Node

pytestmark = pytest.mark.lab

NODE1, NODE2 = lab.NODES["node1"], lab.NODES["node2"]
ARP_COUNT = 5  # arp-count in tests/lab/provision/hanode.toml
MANAGED = (
    "drbdadm role srv; findmnt -n -o SOURCE /srv; ip -4 -br addr show dev eth0; "
    "ls -ld /etc/apache2 /var/www /var/lib/postgresql; "
    "systemctl is-active postgresql@15-main.service apache2.service; true"
)


def status(target: Node) -> dict[str, Any]:
    """`hanode status --json` of a node (its exit code in "exit")."""
    result = hanode(target, "status --json", timeout=120)
    assert result.exitcode in (0, 1, 3, 4), result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    assert document["exit"] == result.exitcode
    return document


def hanode_timings(document: dict[str, Any], verb: str) -> dict[str, Any]:
    """Per-step timings of the last start or stop in a status document."""
    report = document.get(f"last_{verb}") or {}
    return {
        "ok": report.get("ok"),
        "seconds": report.get("seconds"),
        "steps": {
            f"{step['step']} ({step['action']})": [step["result"], step["seconds"]]
            for step in report.get("steps", [])
        },
    }


def states(document: dict[str, Any]) -> dict[str, str]:
    """Each resource's state in a status document."""
    return {item["name"]: item["state"] for item in document["resources"]}


def fetch(path: str) -> str:
    """An HTTP GET through the floating IP, as the client."""
    done = lab.client(
        [
            "/usr/bin/python3",
            "-c",
            "import sys, urllib.request; "
            "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10)"
            ".read().decode())",
            f"http://{lab.VIP}{path}",
        ],
        timeout=60,
    )
    assert done.returncode == 0, f"GET {path} through {lab.VIP} failed: {done.stderr}"
    return done.stdout


def sql_ok(sql: str) -> str:
    """SQL through the floating IP that must succeed; its output."""
    done = psql(sql)
    assert done.returncode == 0, f"psql {sql!r}: {done.stderr}"
    return done.stdout


def needs_psql() -> None:
    """The SQL scenarios need the PostgreSQL client on the host (the client's tools)."""
    if shutil.which("psql") is None:
        pytest.skip("needs psql on the host (apt-get install postgresql-client)")


def timed(record: dict[str, Any], step: str, function: Any, *args: Any) -> Any:
    """Call function(*args), recording its wall-clock seconds under step."""
    started = time.monotonic()
    try:
        return function(*args)
    finally:
        record["steps"][step] = round(time.monotonic() - started, 2)


def test_1_boot(scenario: dict[str, Any]) -> None:
    """node1 was brought up by hanode-primary.service at boot; the client sees node1."""
    unit = NODE1.agent.sh(
        "systemctl is-active hanode-primary.service; " "systemctl is-enabled hanode-primary.service"
    )
    assert unit.stdout.split() == ["active", "enabled"]
    document = status(NODE1)
    scenario["hanode"]["node1 boot start"] = hanode_timings(document, "start")
    assert document["exit"] == 0 and document["state"] == "up", document
    assert set(states(document).values()) == {"up"}
    assert list(states(document)) == ["drbd", "filesystem", "links", "address", "services"]
    assert document["last_start"]["ok"] is True
    # one journal entry per step (the structured one), not a second copy from stderr
    journal = NODE1.agent.sh("journalctl -b -u hanode-primary.service -o cat --no-pager").stdout
    done = [line.split()[0] for line in journal.splitlines() if " start     done " in line]
    assert done == ["drbd", "filesystem", "links", "address", "services"], journal
    fields = NODE1.agent.sh("journalctl -b HANODE_STEP=address HANODE_RESULT=done -o cat").stdout
    assert len(fields.splitlines()) == 1, fields
    peer = status(NODE2)
    assert peer["exit"] == 3, peer
    assert (
        NODE2.agent.sh("systemctl is-enabled hanode-primary.service").stdout.strip() == "disabled"
    )
    assert "hanode lab" in timed(scenario, "GET / via VIP", fetch, "/")
    assert fetch("/cgi-bin/node").strip() == "served by node1"
    assert net.neighbour_mac(lab.VIP) == NODE1.mac()
    scenario["steps"]["lab boot"] = lab.load_state().get("timings", {}).get("boot")


def test_2_refusal(scenario: dict[str, Any]) -> None:
    """`hanode start` on node2 while node1 is Primary: exit 4, nothing changed anywhere."""
    before = {n.name: n.agent.sh(MANAGED).stdout for n in (NODE1, NODE2)}
    assert before["node2"].startswith("Secondary/Primary")
    result = timed(scenario, "start on node2 (refused)", hanode, NODE2, "start")
    expect(result, 4, "hanode start on node2 while node1 is Primary")
    after = {n.name: n.agent.sh(MANAGED).stdout for n in (NODE1, NODE2)}
    assert after == before
    assert status(NODE1)["exit"] == 0
    assert status(NODE2)["exit"] == 3
    assert fetch("/cgi-bin/node").strip() == "served by node1"
    scenario["hanode"]["node2 refused start"] = hanode_timings(status(NODE2), "start")


def test_3_switchover(scenario: dict[str, Any]) -> None:
    """A planned switchover with /srv held open: every row is there, ARP follows at once."""
    needs_psql()
    sql_ok("create table rows (id integer primary key, at text default inet_server_addr())")
    sql_ok("insert into rows (id) select generate_series(1, 500)")
    for single in range(501, 511):  # and some single-row transactions
        sql_ok(f"insert into rows (id) values ({single})")  # noqa: S608 (an int)
    assert net.neighbour_mac(lab.VIP) == NODE1.mac()
    holder = NODE1.agent.sh(
        "cd /srv && (setsid sleep 3600 </dev/null >/dev/null 2>&1 &" " echo $!)"
    )
    pid = holder.stdout.strip()
    assert pid.isdigit() and NODE1.agent.sh(f"readlink /proc/{pid}/cwd").stdout.strip() == "/srv"
    started = time.monotonic()
    expect(timed(scenario, "stop on node1", hanode, NODE1, "stop"), 0, "hanode stop on node1")
    with net.ArpWatch(lab.VIP) as arp:
        started_node2 = expect(
            timed(scenario, "start on node2", hanode, NODE2, "--debug start"),
            0,
            "hanode start on node2",
        )
        scenario["steps"]["switchover"] = round(time.monotonic() - started, 2)
        # Right away, before any traffic: the gratuitous ARPs updated the client's entry.
        assert net.neighbour_mac(lab.VIP) == NODE2.mac()
        frames = arp.frames(2 * ARP_COUNT, timeout=15)
    # Two bursts of arp-count announcements (sender = target = the VIP) from node2's MAC,
    # the second ~2 s after the first.
    announced = [f for f in frames if f["mac"] == NODE2.mac() and f["target"] == lab.VIP]
    assert len(announced) == 2 * ARP_COUNT, frames
    times = [float(str(f["t"])) for f in announced]
    gap = times[ARP_COUNT] - times[ARP_COUNT - 1]
    scenario["steps"]["ARP bursts (s after the first frame)"] = [
        round(t - times[0], 2) for t in times
    ]
    assert gap >= 1.5, times
    # The duplicate probe went out as /usr/bin/hanode parsed its arguments, and its verdict
    # is the one the promotion waited for (hanode.early).
    assert (
        "the duplicate probe begun at startup decides" in started_node2.stderr
    ), started_node2.stderr
    assert NODE1.agent.sh(f"test -e /proc/{pid}").exitcode != 0, "the holder still runs"
    assert sql_ok("select count(*), min(id), max(id) from rows").strip() == "510|1|510"
    assert fetch("/cgi-bin/node").strip() == "served by node2"
    first, second = status(NODE1), status(NODE2)
    assert first["exit"] == 3 and second["exit"] == 0, (first, second)
    scenario["hanode"]["node1 stop"] = hanode_timings(first, "stop")
    scenario["hanode"]["node2 start"] = hanode_timings(second, "start")
    # The address step did not wait for its announcements: had it sent them all, it
    # would have lasted the ARP probe (1 s) plus first-to-last frame, and more.
    (address,) = [
        step["seconds"] for step in second["last_start"]["steps"] if step["step"] == "address"
    ]
    assert address < 1.0 + times[-1] - times[0], (address, times)


def test_4_crash(scenario: dict[str, Any]) -> None:
    """node1 dies under a write load: node2 refuses alone without --force, takes over with
    it, and every committed row is there."""
    needs_psql()
    load = WriteLoad().start()
    load.wait_rows(30)
    killed = time.monotonic()
    NODE1.kill()
    lab.wait_for(
        lambda: NODE2.agent.sh("drbdadm cstate srv").stdout.strip() != "Connected",
        60,
        "node2 to notice the dead peer",
        interval=0.2,
    )
    scenario["steps"]["peer loss noticed by DRBD"] = round(time.monotonic() - killed, 2)
    load.stop()
    assert load.failures, "the load did not notice the crash"
    assert load.committed, "no row committed before the crash"
    scenario["steps"]["rows committed"] = len(load.committed)
    before = NODE2.agent.sh(MANAGED).stdout
    refused = timed(scenario, "start on node2 (refused)", hanode, NODE2, "start")
    expect(refused, 4, "hanode start on node2 with the peer gone, without --force")
    assert NODE2.agent.sh(MANAGED).stdout == before
    forced = timed(scenario, "start --force on node2", hanode, NODE2, "start --force")
    expect(forced, 0, "hanode start --force on node2")
    scenario["steps"]["switchover"] = round(time.monotonic() - killed, 2)
    assert net.neighbour_mac(lab.VIP) == NODE2.mac()
    missing = load.lost()
    assert not missing, f"committed rows lost in the crash: {missing}"
    scenario["hanode"]["node2 forced start"] = hanode_timings(status(NODE2), "start")


def test_5_shutdown(scenario: dict[str, Any]) -> None:
    """`systemctl poweroff` on the active node runs hanode stop: node2 sees node1 become
    Secondary before the link drops."""
    NODE2.agent.sh(
        "setsid sh -c 'exec drbdsetup events2 --timestamps srv'"
        " </dev/null >/root/events2.log 2>&1 &"
    )
    lab.wait_for(
        lambda: "exists -" in NODE2.agent.sh("cat /root/events2.log").stdout,
        30,
        "drbdsetup events2 on node2",
    )
    started = time.monotonic()
    NODE1.agent.exec(["/bin/systemctl", "poweroff"], wait=False)
    assert NODE1.wait_exit(300), "node1 did not power off within 300 s"
    scenario["steps"]["poweroff"] = round(time.monotonic() - started, 2)

    def changes() -> list[str]:
        events = NODE2.agent.sh("cat /root/events2.log").stdout.splitlines()
        return [line for line in events if " change connection " in line]

    def dropped_in(lines: list[str]) -> list[int]:
        return [
            i
            for i, line in enumerate(lines)
            if "connection:" in line and "connection:Connected" not in line
        ]

    # A clean `drbdadm down` on node1 drops the link at once; a node1 that went without
    # it is seen gone by node2's keep-alive (ping-int 3 s + ping-timeout 1 s in srv.res).
    with contextlib.suppress(lab.LabError):  # the assertions below say what is missing
        scenario["steps"]["link drop seen"] = round(
            lab.wait_for(lambda: bool(dropped_in(changes())), 15, "node2 to see the link drop"), 2
        )
    lines = changes()
    demoted = [i for i, line in enumerate(lines) if "role:Secondary" in line]
    dropped = dropped_in(lines)
    assert demoted and dropped, "\n".join(lines)
    assert demoted[0] < dropped[0], "\n".join(lines)
    assert NODE2.agent.sh("drbdadm dstate srv").stdout.startswith("UpToDate/")
    assert NODE2.agent.sh("drbdadm role srv").stdout.startswith("Secondary/")
    scenario["steps"]["events2"] = [line.split(" ", 1)[1] for line in lines]


def test_6_idempotency(scenario: dict[str, Any]) -> None:
    """From standby: start twice, stop twice on the same node. The second of each finds
    everything done, changes nothing and exits 0."""
    expect(timed(scenario, "stop (to standby)", hanode, NODE1, "stop"), 0, "hanode stop")
    for label, wanted in (("start #1", 0), ("start #2", 0), ("stop #1", 3), ("stop #2", 3)):
        verb = label.split()[0]
        expect(timed(scenario, label, hanode, NODE1, verb), 0, f"hanode {label} on node1")
        document = status(NODE1)
        scenario["hanode"][label] = hanode_timings(document, verb)
        assert document["exit"] == wanted, document
        results = {step["result"] for step in document[f"last_{verb}"]["steps"]}
        if label.endswith("#1"):
            assert results == {"done"}, document[f"last_{verb}"]
        else:
            assert results == {"skipped"}, document[f"last_{verb}"]
        if label == "start #2":
            assert fetch("/cgi-bin/node").strip() == "served by node1"


def test_7_networkd_keeps_the_vip(scenario: dict[str, Any]) -> None:
    """The lab's eth0 .network files say KeepConfiguration=static: `hanode check` finds no
    fault and a restart of systemd-networkd leaves the VIP on node1. A drop-in undoing it
    is named by check (a warning: exit 0) with the file and the fix, and then the same
    restart removes the VIP, as check said; `hanode start` puts it back."""
    expect(hanode(NODE1, "check"), 0, "check on node1")
    NODE1.agent.sh("systemctl restart systemd-networkd.service")
    assert vip_count(NODE1) == 1, "a restart of systemd-networkd removed the VIP"
    dropin = "/run/systemd/network/20-node1-eth0.network.d"
    NODE1.agent.sh(
        f"mkdir -p {dropin} && printf '[Network]\\nKeepConfiguration=no\\n' >{dropin}/50-lab.conf"
        " && networkctl reload"
    )
    checked = expect(hanode(NODE1, "check --json"), 0, "check with KeepConfiguration=no")
    address = [  # the other steps may warn too (the active node's /srv seen in a unit's
        # private mount namespace), not about this
        (finding["level"], finding["message"])
        for finding in json.loads(checked.stdout)["findings"]
        if finding["step"] == "address"
    ]
    assert address == [
        (
            "warning",
            "systemd-networkd manages eth0 (/etc/systemd/network/20-node1-eth0.network, "
            "KeepConfiguration=no): a restart of systemd-networkd (a systemd upgrade) removes "
            f"{lab.VIP}/24 from the active node",
        )
    ], checked.stdout
    NODE1.agent.sh("systemctl restart systemd-networkd.service")
    lab.wait_for(lambda: vip_count(NODE1) == 0, 30, "networkd removing the VIP")
    expect(hanode(NODE1, "status"), 1, "status with the VIP gone")
    NODE1.agent.sh(f"rm -r {dropin} && networkctl reload")
    expect(hanode(NODE1, "start"), 0, "start puts the VIP back")
    assert vip_count(NODE1) == 1
    scenario["steps"]["warning"] = address[0][1]


def vip_count(target: Node) -> int:
    """How many times the VIP is on the node's eth0."""
    shown = target.agent.sh("ip -4 -o addr show dev eth0").stdout
    return shown.count(f" {lab.VIP}/")
