#!/usr/bin/python3
"""`hanode status`, and `hanode start`/`stop` with nothing to do, against the bare reads.

Each round runs, one after the other and each cold (a fresh process, as an admin or a
monitoring check runs them):

- the bare reads an admin would type instead, each its own process: ``drbdadm role``,
  ``cstate`` and ``dstate`` of the resource, ``findmnt`` of the mountpoint,
  ``ip -j address show``, ``systemctl is-active`` of the units (from the config's
  sections; a tool that is absent fails at once, and counts what that costs);
- ``hanode status``;
- ``hanode start`` on a node that is up, or ``hanode stop`` on one that is down: the
  idempotent no-op an admin runs to be sure (nothing to do; the address is announced
  again on start, from a detached process that the round waits for before it goes on);
- ``python3 -c pass``.

It prints every round's walls, the medians, and the ratios status/bare reads,
status/python, no-op start/status and no-op stop/status.

    bench/status_noop.py [--rounds 5] [-c /etc/hanode/hanode.toml] [--hanode /usr/bin/hanode]
    bench/status_noop.py --sandbox [--rounds 5] [--tree DIR]  # a host, root: a node made for it
    bench/status_noop.py --lab node1 node2        # in the lab VMs (tests/lab/labctl up first)

On a node, the no-op is the one its state allows (start when status says up, stop when
down). --sandbox makes, on a host without DRBD or systemd, a network namespace with an
eth0 holding the lab's floating address and an eth1 without its own, and two loop
devices: a "started" node ([filesystem] mounted, [links] linked, [address] present) and a
"stopped" one (all down), so that both no-ops run, beside ``hanode status`` with the
lab's full config (tests/lab/provision/hanode.toml: its DRBD and services probes answer
unknown here, the address probe does real work). It runs hanode from this work tree and
removes everything it made. With --lab the script copies itself into each running node
and runs there against the installed package; figures are the guest's (TCG: slow).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path

PYTHON = "/usr/bin/python3"
ROOT = Path(__file__).resolve().parent.parent
LAB_CONFIG = ROOT / "tests" / "lab" / "provision" / "hanode.toml"
DEFAULT_CONFIG = Path("/etc/hanode/hanode.toml")

# status exit codes that are answers, not failures: up, partial, down, unknown
_STATUS_ANSWERS = (0, 1, 3, 4)


def wall(argv: Sequence[str], env: dict[str, str] | None = None, ok: Sequence[int] = (0,)) -> float:
    """Seconds ``argv`` takes, start to exit; exits the bench when its status is not in ``ok``."""
    began = time.perf_counter()
    done = subprocess.run(
        list(argv), capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL, env=env
    )
    seconds = time.perf_counter() - began
    if done.returncode not in ok:
        sys.exit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return seconds


def bare_wall(argv: Sequence[str]) -> float:
    """Seconds one bare read takes, whether it answers or fails (a missing tool too)."""
    began = time.perf_counter()
    with contextlib.suppress(OSError):  # not installed: the shell would say so just as fast
        subprocess.run(
            list(argv), capture_output=True, check=False, stdin=subprocess.DEVNULL, timeout=60
        )
    return time.perf_counter() - began


def settle(limit: float = 10.0) -> None:
    """Wait until no hanode process is left: a no-op start announces the address again
    from a detached process for the next few seconds (two bursts), and its CPU would be
    counted against the commands timed next instead of the start that left it."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and _hanode_running():
        time.sleep(0.1)


def _hanode_running() -> bool:
    mine = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == mine:
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if any(arg.endswith(b"/hanode") or arg == b"hanode" for arg in argv[:2]):
            return True
    return False


def bare_reads(config: Path) -> list[list[str]]:
    """The commands an admin runs to see what hanode status shows, for this config."""
    sections = tomllib.loads(config.read_text())
    reads: list[list[str]] = []
    if "drbd" in sections:
        resource = sections["drbd"]["resource"]
        reads += [["drbdadm", what, resource] for what in ("role", "cstate", "dstate")]
    if "filesystem" in sections:
        reads.append(["findmnt", sections["filesystem"]["mountpoint"]])
    if "address" in sections:
        reads.append(["ip", "-j", "address", "show"])
    if "services" in sections:
        reads.append(["systemctl", "is-active", *sections["services"]["units"]])
    return reads


# /usr/bin/hanode as the .deb installs it (pybuild's entry point), for the work tree's copy
ENTRY_POINT = """#!/usr/bin/python3
import re
import sys
from hanode.entry import main
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit(main())
"""


class Hanode:
    """How to run hanode: a command (the installed one by default), or this work tree's
    package through a copy of the installed entry point written in ``work_tree``."""

    def __init__(
        self,
        command: str | None,
        run_dir: Path | None = None,
        work_tree: Path | None = None,
        tree: Path = ROOT,
    ) -> None:
        self.env = dict(os.environ)
        # the .deb ships its modules byte-compiled: let the warm-up run write the .pyc files
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        if command:
            self.argv = [command]
        elif work_tree is not None:
            entry = work_tree / "hanode"
            entry.write_text(ENTRY_POINT)
            entry.chmod(0o755)
            self.argv = [str(entry)]
            self.env["PYTHONPATH"] = str(tree)
        else:
            self.argv = ["/usr/bin/hanode"]
        if run_dir is not None:
            self.env["HANODE_RUN_DIR"] = str(run_dir)

    def wall(self, config: Path, verb: str, ok: Sequence[int] = (0,)) -> float:
        """Seconds one ``hanode -c CONFIG VERB`` takes."""
        return wall([*self.argv, "-c", str(config), verb], self.env, ok)

    def state(self, config: Path) -> int:
        """hanode status's exit code: 0 up, 1 partial, 3 down, 4 unknown."""
        argv = [*self.argv, "-c", str(config), "status"]
        return subprocess.run(argv, capture_output=True, check=False, env=self.env).returncode


def median_ms(samples: Sequence[float]) -> float:
    """The median, in milliseconds."""
    return statistics.median(samples) * 1000


def measure(
    hanode: Hanode, status_config: Path, noops: dict[str, Path], rounds: int, where: str
) -> None:
    """The rounds, then the medians and ratios; ``noops``: verb -> config where it is a no-op."""
    reads = bare_reads(status_config)
    wall([PYTHON, "-c", "pass"])  # warm the page cache once, as an admin's shell has
    hanode.wall(status_config, "status", _STATUS_ANSWERS)
    for verb, config in noops.items():
        hanode.wall(config, verb)  # the first no-op may still write the state dir
    walls: dict[str, list[float]] = {}
    order = ["bare reads", "status", *(f"noop {verb}" for verb in noops)]
    order += [f"status ({verb} node)" for verb, config in noops.items() if config != status_config]
    order.append("python3 -c pass")
    print(f"{where}: {rounds} rounds, each command cold; bare reads: {len(reads)} commands")
    for number in range(1, rounds + 1):
        taken: dict[str, float] = {"bare reads": sum(bare_wall(argv) for argv in reads)}
        taken["status"] = hanode.wall(status_config, "status", _STATUS_ANSWERS)
        for verb, config in noops.items():
            if config != status_config:
                taken[f"status ({verb} node)"] = hanode.wall(config, "status", _STATUS_ANSWERS)
            taken[f"noop {verb}"] = hanode.wall(config, verb)
            settle()
        taken["python3 -c pass"] = wall([PYTHON, "-c", "pass"])
        for label, seconds in taken.items():
            walls.setdefault(label, []).append(seconds)
        shown = ", ".join(f"{label} {taken[label] * 1000:.1f}" for label in order)
        print(f"  round {number} (ms): {shown}", flush=True)
    print("medians (ms):")
    for label in order:
        samples = walls[label]
        print(
            f"  {label:<22} {median_ms(samples):8.1f}   "
            f"(min {min(samples) * 1000:.1f}, max {max(samples) * 1000:.1f})"
        )
    status = median_ms(walls["status"])
    print("ratios (medians):")
    print(f"  status / bare reads    {status / median_ms(walls['bare reads']):6.2f}")
    print(f"  status / python        {status / median_ms(walls['python3 -c pass']):6.2f}")
    for verb, config in noops.items():
        label = "status" if config == status_config else f"status ({verb} node)"
        ratio = median_ms(walls[f"noop {verb}"]) / median_ms(walls[label])
        print(f"  noop {verb} / {label:<17}{ratio:6.2f}")


def on_node(args: argparse.Namespace) -> None:
    """On a node as it is: the no-op its state allows."""
    config = Path(args.config or os.environ.get("HANODE_CONFIG") or DEFAULT_CONFIG)
    hanode = Hanode(args.hanode)
    state = hanode.state(config)
    noops = {0: {"start": config}, 3: {"stop": config}}.get(state, {})
    if not noops:
        print(f"status exits {state} (neither up nor down): no no-op to time here")
    measure(hanode, config, noops, args.rounds, os.uname().nodename)


# -- the sandbox: a started and a stopped node on a host ----------------------------

NETNS = f"hanode-bench-{os.getpid()}"
STARTED_IP, STOPPED_IP = "192.0.2.10/24", "198.51.100.10/24"


def sh(*argv: str) -> str:
    """Run a setup command; its stdout (the bench stops if it fails)."""
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def node_config(base: Path, device: str, interface: str, ip: str) -> str:
    """hanode.toml of a sandbox node: its filesystem, two links, its floating address."""
    links = ", ".join(
        f'{{ path = "{base}/{name}", target = "{base}/mnt/{name}" }}' for name in ("etc", "www")
    )
    return (
        f'[filesystem]\ndevice = "{device}"\nmountpoint = "{base}/mnt"\n\n'
        f"[links]\nlinks = [{links}]\n\n"
        f'[address]\nip = "{ip}"\ninterface = "{interface}"\n'
    )


@contextlib.contextmanager
def sandbox() -> Iterator[Path]:
    """A network namespace and two loop-device filesystems; yields the directory."""
    top = Path(tempfile.mkdtemp(prefix="hanode-bench-", dir="/run"))  # root's alone
    loops: list[str] = []
    mounted: list[Path] = []
    sh("ip", "netns", "add", NETNS)
    try:
        for dev, peer in (("eth0", "veth0"), ("eth1", "veth1")):
            sh("ip", "-n", NETNS, "link", "add", dev, "type", "veth", "peer", "name", peer)
            for name in (dev, peer):
                sh("ip", "-n", NETNS, "link", "set", name, "up")
        sh("ip", "-n", NETNS, "link", "set", "lo", "up")
        sh("ip", "-n", NETNS, "address", "add", "192.0.2.2/24", "dev", "eth0")
        sh("ip", "-n", NETNS, "address", "add", STARTED_IP, "dev", "eth0", "label", "eth0:1")
        sh("ip", "-n", NETNS, "address", "add", "198.51.100.2/24", "dev", "eth1")
        nodes = (("started", "eth0", STARTED_IP), ("stopped", "eth1", STOPPED_IP))
        for name, interface, ip in nodes:
            base = top / name
            (base / "mnt").mkdir(parents=True)
            image = top / f"{name}.img"
            with image.open("wb") as handle:
                handle.truncate(16 << 20)
            sh("mkfs.ext4", "-q", "-F", str(image))
            device = sh("losetup", "--find", "--show", str(image)).strip()
            loops.append(device)
            for link in ("etc", "www"):
                (base / link).mkdir()  # the originals
            if name == "started":
                sh("mount", "-t", "ext4", "--", device, str(base / "mnt"))
                mounted.append(base / "mnt")
                for link in ("etc", "www"):
                    (base / "mnt" / link).mkdir()
                    (base / link).rename(base / f"{link}.drbdlinks")
                    (base / link).symlink_to(base / "mnt" / link)
            (top / f"{name}.toml").write_text(node_config(base, device, interface, ip))
        shutil.copyfile(LAB_CONFIG, top / "full.toml")
        (top / "run").mkdir()
        yield top
    finally:
        for path in mounted:
            subprocess.run(["umount", "--", str(path)], check=False)
        for device in loops:
            subprocess.run(["losetup", "-d", device], check=False)
        subprocess.run(["ip", "netns", "del", NETNS], check=False)
        shutil.rmtree(top, ignore_errors=True)


def in_sandbox(args: argparse.Namespace) -> None:
    """Build the sandbox, then run this script again inside its network namespace."""
    if os.geteuid() != 0:
        sys.exit("--sandbox needs root (a network namespace, loop devices, mounts)")
    with sandbox() as top:
        argv = [
            *("ip", "netns", "exec", NETNS),
            *(PYTHON, str(Path(__file__).resolve()), "--inside", str(top)),
            *("--rounds", str(args.rounds)),
        ]
        if args.hanode:
            argv += ["--hanode", args.hanode]
        argv += ["--tree", args.tree]
        done = subprocess.run(argv, check=False)
        if done.returncode:
            sys.exit(done.returncode)


def inside(args: argparse.Namespace) -> None:
    """In the sandbox's network namespace: the rounds, with both no-ops."""
    top = Path(args.inside)
    hanode = Hanode(args.hanode, top / "run", top, Path(args.tree).resolve())
    noops = {"start": top / "started.toml", "stop": top / "stopped.toml"}
    for verb, config in noops.items():
        wanted = 0 if verb == "start" else 3
        state = hanode.state(config)
        if state != wanted:
            sys.exit(f"the sandbox's {verb} node is not {'up' if wanted == 0 else 'down'}")
    where = "sandbox (host; full config: lab's, eth0 holds its address)"
    measure(hanode, top / "full.toml", noops, args.rounds, where)


# -- the lab ------------------------------------------------------------------------


def lab(nodes: list[str], rounds: int) -> None:
    """Copy this script into each lab node and run it there, against the installed hanode."""
    sys.path.insert(0, str(ROOT / "tests" / "lab"))
    from hanodelab import lab as hanodelab

    source = Path(__file__).read_bytes()
    for name in nodes:
        node = hanodelab.node(name)
        node.agent.write_file("/root/status_noop.py", source, 0o755)
        result = node.agent.sh(f"{PYTHON} /root/status_noop.py --rounds {rounds}", timeout=1800)
        print(f"== {name} (lab guest, TCG)")
        print(result.stdout, end="")
        if result.exitcode:
            sys.exit(f"{name}: exit {result.exitcode}: {result.stderr.strip()}")


def main() -> None:
    """Parse the arguments, then measure where they say."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="at least 3 (default 5)")
    parser.add_argument("-c", "--config", help="on a node: default /etc/hanode/hanode.toml")
    parser.add_argument("--hanode", help="the hanode command (default: the installed one)")
    parser.add_argument(
        "--tree", default=str(ROOT), help="--sandbox: the source tree to run (default: this one)"
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--sandbox", action="store_true", help="host: make a node for it (root)")
    where.add_argument("--lab", nargs="+", metavar="NODE", help="run in these lab nodes")
    where.add_argument("--inside", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds: at least 3")
    if args.lab:
        lab(args.lab, args.rounds)
    elif args.sandbox:
        in_sandbox(args)
    elif args.inside:
        inside(args)
    else:
        on_node(args)


if __name__ == "__main__":
    main()
