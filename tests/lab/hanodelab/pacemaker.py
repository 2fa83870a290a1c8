"""The "pacemaker" lab profile: the two nodes as a corosync/Pacemaker cluster.

Provisioned as an admin does it (tests/lab/provision/pacemaker/): DRBD's resource-level
fencing (fencing.conf), one corosync.conf and one authkey on both nodes, corosync and
pacemaker enabled at boot, then the CIB (cluster.crm: DRBD as a promotable clone of
ocf:linbit:drbd, ocf:hanode:hanode on the Promoted node) loaded with crmsh. What the
cluster runs where is read from `crm_mon --output-as=xml`, never from its text output.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

from hanodelab import lab
from hanodelab.progress import Progress
from hanodelab.vm import Node

FILES = lab.PROVISION / "pacemaker"
SETTLE_TIMEOUT = 600


def crm_mon(target: Node) -> ET.Element:
    """The cluster as `crm_mon --output-as=xml` on ``target`` sees it."""
    result = lab.must(target, "crm_mon --one-shot --inactive --output-as=xml", timeout=60)
    return ET.fromstring(result.stdout)  # noqa: S314 (our own guest's crm_mon)


def online(target: Node) -> set[str]:
    """The nodes ``target``'s Pacemaker sees online (an elected DC; empty before)."""
    try:
        status = crm_mon(target)
    except (lab.LabError, ET.ParseError):
        return set()
    dc = status.find("summary/current_dc")
    if dc is None or dc.get("present") != "true":
        return set()
    return {
        node.get("name", "")
        for node in status.iterfind("nodes/node")
        if node.get("online") == "true"
    }


def where(target: Node, resource: str) -> str | None:
    """The node a primitive is active on (Started, or Promoted for the DRBD clone; a
    clone's instances are listed as RESOURCE:N, one per node)."""
    for element in crm_mon(target).iter("resource"):
        if element.get("id", "").split(":")[0] != resource:
            continue
        nodes = [node.get("name", "") for node in element.iterfind("node")]
        if element.get("role") in ("Started", "Promoted", "Master") and nodes:
            return nodes[0]
    return None


def cib(target: Node, scope: str) -> ET.Element:
    """A section of the CIB (configuration, constraints, status, ...) on ``target``."""
    result = lab.must(target, f"cibadmin --query --scope {scope}", timeout=60)
    return ET.fromstring(result.stdout)  # noqa: S314 (our own guest's cibadmin)


def fail_count(target: Node, resource: str, node: str) -> int:
    """How many failures Pacemaker counted for ``resource`` on ``node`` (every operation's
    fail-count-RESOURCE#OP_INTERVAL attribute in the CIB's status section, summed)."""
    total = 0
    for state in cib(target, "status").iterfind("node_state"):
        if state.get("uname") != node:
            continue
        for pair in state.iter("nvpair"):
            if pair.get("name", "").startswith(f"fail-count-{resource}#"):
                value = pair.get("value", "0")
                total += 1_000_000 if value == "INFINITY" else int(value)
    return total


def settle(target: Node, timeout: float = SETTLE_TIMEOUT) -> None:
    """Wait until the cluster has no action left to take (crm_resource --wait)."""
    lab.must(target, f"crm_resource --wait --timeout={int(timeout)}s", timeout=timeout + 30)


def crm(target: Node, command: str, timeout: float = 120) -> str:
    """Run `crm COMMAND` on a node; its output (LabError when it fails)."""
    return lab.must(target, f"crm {command}", timeout=timeout).stdout


def load(target: Node, name: str) -> None:
    """`crm configure load update` of a file of tests/lab/provision/pacemaker/."""
    target.agent.write_file(f"/root/{name}", (FILES / name).read_bytes())
    crm(target, f"configure load update /root/{name}")


def failures(target: Node) -> list[str]:
    """The failed operations crm_mon lists (resource, operation, node)."""
    return [
        f"{failure.get('op_key')} on {failure.get('node')}: {failure.get('exitreason', '')}"
        for failure in crm_mon(target).iterfind("failures/failure")
    ]


def after_reset() -> None:
    """After both guests are restored from the snapshot: wait for the cluster to be whole
    and idle again (their clocks jumped, corosync re-forms its ring), and clear failures
    a monitor might have recorded across the jump, so a scenario starts clean."""
    node1 = lab.NODES["node1"]
    lab.wait_for(lambda: online(node1) == {"node1", "node2"}, 300, "both nodes online again")
    settle(node1)
    if failures(node1):
        lab.must(node1, "crm_resource --cleanup")
        settle(node1)


def prepare_drbd(target: Node) -> None:
    """Before DRBD is first brought up: its resource-level fencing through Pacemaker."""
    conf = (FILES / "global_common.conf").read_bytes()
    target.agent.write_file("/etc/drbd.d/global_common.conf", conf, mode=0o644)


def form_cluster() -> float:
    """corosync and pacemaker on both nodes, the CIB loaded, hanode active on node1."""
    progress = Progress("forming the corosync/Pacemaker cluster (two_node, knet x2)")
    authkey = os.urandom(256)  # what corosync-keygen makes: 2048 random bits
    config = (FILES / "corosync.conf").read_bytes()

    def per_node(target: Node) -> None:
        target.agent.write_file("/etc/corosync/authkey", authkey, mode=0o400)
        target.agent.write_file("/etc/corosync/corosync.conf", config, mode=0o644)
        lab.must(target, "systemctl enable --now corosync.service pacemaker.service")

    lab.in_parallel(per_node)
    node1 = lab.NODES["node1"]
    lab.wait_for(
        lambda: online(node1) == {"node1", "node2"},
        300,
        "both nodes online in Pacemaker",
        progress,
    )
    progress.update("loading the CIB (DRBD clone, hanode's agent), waiting for it to settle")
    load(node1, "cluster.crm")
    lab.background(lambda: settle(node1), progress, "the cluster is starting hanode on node1")
    if where(node1, "hanode") != "node1":
        raise lab.LabError(
            "after the CIB was loaded, hanode is not Started on node1:\n"
            + lab.must(node1, "crm_mon --one-shot --inactive").stdout
        )
    return progress.done("hanode is active on node1, by Pacemaker")
