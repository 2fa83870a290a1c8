"""The lab as a whole: up (image, network, boot, provisioning, snapshot), reset, down.

After provisioning, node1 is rebooted so that hanode-primary.service brings it up at
boot; then both running guests are paused and saved (savevm "ready") at the same
instant, so that a scenario can start from that state again in about a second (loadvm on
both, paused together, resumed together: their DRBD connection stays consistent).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hanodelab import image, net, tools
from hanodelab.paths import DISKS, LAB, LOGS, RUN, TOP
from hanodelab.progress import Progress, say
from hanodelab.qga import ExecResult
from hanodelab.vm import Node

SNAPSHOT = "ready"
STATE = RUN / "state.json"
VIP = "192.0.2.10"
# Each node's own address on the public segment: [peer] addresses in provision/hanode.toml.
PUBLIC = {"node1": "192.0.2.11", "node2": "192.0.2.12"}
PROVISION = LAB / "provision"
NODES = {name: Node(name) for name in ("node1", "node2")}


class LabError(RuntimeError):
    """The lab could not be brought to the state asked for."""


def node(name: str) -> Node:
    """The node called name (node1 or node2)."""
    if name not in NODES:
        raise LabError(f"no node {name!r}: the lab's nodes are {', '.join(NODES)}")
    return NODES[name]


def load_state() -> dict[str, Any]:
    """What up recorded (image, .deb, timings), or {} when the lab is not up."""
    try:
        return dict(json.loads(STATE.read_text()))
    except (OSError, ValueError):
        return {}


def _save_state(state: dict[str, Any]) -> None:
    RUN.mkdir(parents=True, exist_ok=True)
    STATE.write_text(json.dumps(state, indent=2) + "\n")


def wait_for(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    progress: Progress | None = None,
    interval: float = 0.5,
) -> float:
    """Poll check until it is true; the seconds it took. LabError after timeout."""
    started = time.monotonic()
    while True:
        if check():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")
        if progress is not None:
            progress.update(what)
        time.sleep(interval)


def in_parallel(function: Callable[[Node], Any], nodes: list[Node] | None = None) -> list[Any]:
    """function(node) on each node at once; re-raises the first failure."""
    targets = nodes if nodes is not None else list(NODES.values())
    results: list[Any] = [None] * len(targets)
    errors: list[BaseException] = []

    def work(index: int, target: Node) -> None:
        try:
            results[index] = function(target)
        except BaseException as exc:  # handed to the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, t)) for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def background(function: Callable[[], Any], progress: Progress, what: str) -> Any:
    """function() in a thread while the progress line ticks; its result or its error."""
    outcome: list[Any] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            outcome.append(function())
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    while thread.is_alive():
        progress.update(what)
        thread.join(1)
    if failure:
        raise failure[0]
    return outcome[0]


def must(target: Node, script: str, timeout: float = 300) -> ExecResult:
    """Run a shell script in a guest; LabError with its output if it fails."""
    result = target.agent.sh(script, timeout=timeout)
    LOGS.mkdir(parents=True, exist_ok=True)
    with (LOGS / "lab-commands.log").open("a") as log:  # what the lab ran, for a post-mortem
        log.write(
            f"{target.name} [{result.exitcode}] {result.seconds:6.1f}s  {script}\n"
            f"{result.stdout}{result.stderr}"
        )
    if result.exitcode != 0:
        raise LabError(
            f"{target.name}: `{script}` exited {result.exitcode}:\n"
            f"{result.stdout}{result.stderr}"
        )
    return result


def build_deb() -> Path:
    """The hanode .deb: freshly built by scripts/build-deb (or $HANODE_LAB_DEB)."""
    given = os.environ.get("HANODE_LAB_DEB")
    if given:
        return Path(given)
    progress = Progress("building the hanode .deb")
    # The package's own tests run in the suite's other tiers: not again inside the build.
    env = {**os.environ, "DEB_BUILD_OPTIONS": os.environ.get("DEB_BUILD_OPTIONS", "nocheck")}
    done = subprocess.run(
        [str(TOP / "scripts" / "build-deb")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=env,
    )
    if done.returncode != 0:
        raise LabError(f"scripts/build-deb failed ({done.returncode}):\n{done.stderr[-3000:]}")
    lines = done.stdout.strip().splitlines()
    if not lines or not Path(lines[-1]).is_file():
        raise LabError(f"scripts/build-deb printed no .deb path: {done.stdout!r}")
    progress.done(Path(lines[-1]).name)
    return Path(lines[-1])


def boot(nodes: list[Node], img: image.Image, label: str) -> float:
    """Power on nodes from their disks and wait until their boot is over."""
    progress = Progress(label)
    for target in nodes:
        target.start(img)

    def booted(target: Node) -> None:
        target.wait_agent()
        result = target.agent.sh("systemctl is-system-running --wait", timeout=300)
        if result.stdout.strip() not in ("running", "degraded"):
            raise LabError(f"{target.name}: boot ended {result.stdout.strip()!r}")

    background(lambda: in_parallel(booted, nodes), progress, "the guests are booting")
    return progress.done("booted")


def provision(deb: Path, profile: str = image.PLAIN) -> float:
    """Set both nodes up like an admin would: hanode by dpkg, DRBD, /srv, hanode.toml;
    in the plain profile hanode-primary/-standby.service enabled at boot (the pacemaker
    profile's cluster is formed after, by hanodelab.pacemaker.form_cluster)."""
    progress = Progress("provisioning (dpkg -i hanode, DRBD srv, /srv, hanode.toml)")
    clustered = profile != image.PLAIN
    res = (PROVISION / "srv.res").read_bytes()
    toml = (PROVISION / "hanode.toml").read_bytes()
    deb_bytes = deb.read_bytes()

    def per_node(target: Node) -> None:
        target.agent.set_time()
        target.agent.write_file("/root/" + deb.name, deb_bytes)
        must(target, f"dpkg -i /root/{deb.name}")
        target.agent.write_file("/etc/drbd.d/srv.res", res)
        target.agent.write_file("/etc/hanode/hanode.toml", toml, mode=0o644)
        if clustered:
            from hanodelab import pacemaker

            pacemaker.prepare_drbd(target)
        must(target, "drbdadm create-md --force srv && drbdadm up srv")
        # hanode starts the cluster: PostgreSQL's generator must not pull it in at boot.
        must(
            target, "echo manual >/etc/postgresql/15/main/start.conf" " && systemctl daemon-reload"
        )

    in_parallel(per_node)
    node1, node2 = NODES["node1"], NODES["node2"]
    wait_for(
        lambda: must(node1, "drbdadm cstate srv").stdout.strip() == "Connected",
        60,
        "the DRBD connection of the new pair",
        progress,
    )
    progress.update("skipping the initial sync, making the filesystem, seeding /srv")
    must(node1, "drbdadm -- --clear-bitmap new-current-uuid srv")
    wait_for(
        lambda: must(node2, "drbdadm dstate srv").stdout.strip() == "UpToDate/UpToDate",
        30,
        "both disks UpToDate",
        progress,
    )
    node1.agent.write_file("/root/index.html", (PROVISION / "index.html").read_bytes())
    must(
        node1,
        " && ".join(
            [
                "drbdadm primary srv",
                "mkfs.ext4 -q -L srv /dev/drbd1",
                "mount /dev/drbd1 /srv",
                "cp -a /etc/apache2 /srv/etc-apache2",
                "cp -a /var/www /srv/var-www",
                "cp /root/index.html /srv/var-www/html/index.html",
                "cp -a /var/lib/postgresql /srv/postgresql",
                "umount /srv",
                "drbdadm secondary srv",
            ]
        ),
    )
    provision_peer_channel()
    in_parallel(lambda target: must(target, "hanode check"))
    if not clustered:
        must(node1, "systemctl enable hanode-primary.service")
        must(node2, "systemctl enable hanode-standby.service")
    return progress.done("provisioned")


def provision_peer_channel() -> None:
    """The peer channel as an admin sets it up (hanode.toml(5) [peer]): each node its own
    SSH host keys and its hanode key, the other node's `hanode peer-key` line in root's
    authorized_keys (restricted to `hanode peer-serve`), the other's host key in
    /etc/hanode/peer_known_hosts under the address [peer] reaches it at."""

    def keys(target: Node) -> None:
        must(target, "ssh-keygen -q -A && systemctl restart ssh.service")
        must(
            target,
            f"ssh-keygen -q -t ed25519 -N '' -C hanode@{target.name} -f /etc/hanode/peer_ed25519",
        )

    in_parallel(keys)
    for here, there in (("node1", "node2"), ("node2", "node1")):
        line = must(NODES[here], "hanode peer-key").stdout.strip()
        must(NODES[there], "install -d -m 700 /root/.ssh")
        NODES[there].agent.write_file("/root/.ssh/authorized_keys", (line + "\n").encode(), 0o600)
        host_key = must(NODES[there], "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()
        known = f"{PUBLIC[there]} {host_key[0]} {host_key[1]}\n"
        NODES[here].agent.write_file("/etc/hanode/peer_known_hosts", known.encode(), 0o644)


def _pause_all() -> None:
    in_parallel(lambda target: target.monitor.call("stop"))


def _resume_all() -> None:
    in_parallel(lambda target: target.monitor.call("cont"))


def save_snapshot() -> float:
    """savevm on both guests, paused together so their states match."""
    progress = Progress(f"saving snapshot {SNAPSHOT!r} of both nodes")
    _pause_all()
    try:
        for output in in_parallel(lambda target: target.monitor.hmp(f"savevm {SNAPSHOT}", 300)):
            if output.strip():
                raise LabError(f"savevm: {output.strip()}")
    finally:
        _resume_all()
    return progress.done("saved")


def current_image() -> image.Image:
    """The image the lab that is up was booted from."""
    state = load_state()
    if not state.get("ready"):
        raise LabError("the lab is not up: run `tests/lab/labctl up` first")
    paths = state["image"]
    return image.Image(
        Path(paths["root"]),
        Path(paths["kernel"]),
        Path(paths["initrd"]),
        image.MEMORY[state.get("profile", image.PLAIN)],
    )


def reset() -> float:
    """Both nodes back to the snapshot taken after up (node1 active, node2 standby)."""
    started = time.monotonic()
    img = current_image()

    def restore(target: Node) -> None:
        if target.running():
            target.monitor.call("stop")
            output = target.monitor.hmp(f"loadvm {SNAPSHOT}", 300)
            if output.strip():
                raise LabError(f"{target.name}: loadvm: {output.strip()}")
        else:
            target.start(img, loadvm=SNAPSHOT, paused=True)

    in_parallel(restore)
    # a scenario may have cut a link (a cable or the switch side): every link mended
    for target in NODES.values():
        for network in net.BRIDGES:
            net.set_tap(net.tap(target.name, network), up=True)
            target.monitor.call("set_link", {"name": network, "up": True})
    _resume_all()
    in_parallel(lambda target: target.agent.set_time())
    net.flush_neighbours()
    if load_state().get("profile", image.PLAIN) != image.PLAIN:
        from hanodelab import pacemaker

        pacemaker.after_reset()
    return time.monotonic() - started


def up(profile: str = image.PLAIN) -> dict[str, Any]:
    """Build what is missing, boot, provision, and return once node1 is up by its unit
    (plain profile) or by Pacemaker ("pacemaker" profile). A lab of the other profile is
    brought down first."""
    tools.require(tools.LAB)  # first: a missing command stops up before anything is touched
    state = load_state()
    if state.get("ready") and state.get("profile", image.PLAIN) != profile:
        say(f"the lab is up with the {state.get('profile', image.PLAIN)} profile: down first")
        state = {}
    if state.get("ready"):
        if all(target.running() for target in NODES.values()):
            say("the lab is already up")
            return state
        say("the lab is up but a node is off: both nodes back to the 'ready' snapshot")
        reset()
        return state
    down(quiet=True)
    timings: dict[str, float] = {}
    started = time.monotonic()
    img, built = image.ensure(profile)
    timings["image build"] = built if built is not None else 0.0
    timings["image cached"] = float(built is None)
    deb_started = time.monotonic()
    deb = build_deb()
    timings["deb build"] = time.monotonic() - deb_started
    net.up()
    for target in NODES.values():
        target.create_disks(img)
    try:
        timings["boot"] = boot(list(NODES.values()), img, "booting node1 and node2 (TCG)")
        timings["provision"] = provision(deb, profile)
        if profile == image.PLAIN:
            timings["reboot node1 + hanode-primary"] = _reboot_node1()
        else:
            from hanodelab import pacemaker

            timings["cluster"] = pacemaker.form_cluster()
        timings["savevm"] = save_snapshot()
    except BaseException:
        say(
            "up failed: the lab is left running for a look (labctl status, labctl exec);"
            " labctl down cleans it up"
        )
        raise
    timings["total"] = time.monotonic() - started
    state = {
        "ready": True,
        "profile": profile,
        "image": {"root": str(img.root), "kernel": str(img.kernel), "initrd": str(img.initrd)},
        "deb": str(deb),
        "deb_sha256": hashlib.sha256(deb.read_bytes()).hexdigest(),
        "timings": {key: round(value, 1) for key, value in timings.items()},
    }
    _save_state(state)
    return state


def _reboot_node1() -> float:
    """Reboot node1: hanode-primary.service must bring it up at boot."""
    node1 = NODES["node1"]
    progress = Progress("rebooting node1: hanode-primary.service brings it up at boot")
    node1.agent.exec(["/bin/systemctl", "reboot"], wait=False)
    wait_for(lambda: not node1.agent.ping(timeout=2), 120, "node1 going down", progress)
    node1.wait_agent(progress=progress)
    background(
        lambda: node1.agent.sh("systemctl is-system-running --wait", timeout=600),
        progress,
        "node1 is booting; hanode-primary.service runs hanode start",
    )
    unit = node1.agent.sh("systemctl is-active hanode-primary.service")
    if unit.stdout.strip() != "active":
        log = node1.agent.sh("journalctl -b -u hanode-primary.service --no-pager")
        raise LabError(
            f"hanode-primary.service on node1 is {unit.stdout.strip()!r}:\n" f"{log.stdout}"
        )
    return progress.done("node1 is active")


def down(quiet: bool = False) -> None:
    """Power off every lab VM, delete the namespace and the lab's disks and sockets."""
    for target in NODES.values():
        if target.running():
            if not quiet:
                say(f"powering off {target.name}")
            target.kill()
        for pid in target.orphans():  # only qemu started with this node's -name argument
            say(f"killing a leftover qemu of {target.name} (pid {pid})")
            os.kill(pid, signal.SIGKILL)
    net.down()
    shutil.rmtree(RUN, ignore_errors=True)
    shutil.rmtree(DISKS, ignore_errors=True)


def status() -> dict[str, Any]:
    """Which nodes run, whether their agents answer, the lab's recorded timings."""
    report: dict[str, Any] = {"namespace": net.exists(), "ready": bool(load_state().get("ready"))}
    for name, target in NODES.items():
        running = target.running()
        report[name] = {
            "running": running,
            "pid": target.pid(),
            "agent": running and target.agent.ping(timeout=3),
        }
    report["timings"] = load_state().get("timings", {})
    return report


def client(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run argv as the client (in the lab's namespace), capturing its output."""
    if not net.exists():
        raise LabError("the lab's namespace does not exist: run `tests/lab/labctl up` first")
    return subprocess.run(
        net.client_argv(argv), capture_output=True, text=True, timeout=timeout, check=False
    )
