#!/usr/bin/python3
"""Wall time of `hanode start` with only [address] configured, cold Python included.

Builds a "node" network namespace (eth0, 192.0.2.2/24) and a "peer" on the other end
of a veth, writes a config with only an [address] section, then times, run after run,

    ip netns exec NODE /usr/bin/python3 -m hanode -c FILE --insecure-config start

(and the `stop` after it) for IPv4 with and without the duplicate ARP probe and IPv6
with and without DAD. Baselines show where the time goes: a bare interpreter, the
import of hanode's CLI, the import of pyroute2. Needs root; removes its namespaces.

    bench/address_start.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = "/usr/bin/python3"

SCENARIOS = {
    "ipv4, probe (default)": 'ip = "192.0.2.10/24"\ninterface = "eth0"\n',
    "ipv4, probe = false": 'ip = "192.0.2.10/24"\ninterface = "eth0"\nprobe = false\n',
    "ipv6, DAD": 'ip = "2001:db8::10/64"\ninterface = "eth0"\n',
    "ipv6, probe = false (nodad)": 'ip = "2001:db8::10/64"\ninterface = "eth0"\nprobe = false\n',
}

BASELINES = {
    "python3 -c pass": ["-c", "pass"],
    "python3 -c 'import hanode.cli'": ["-c", "import hanode.cli"],
    "python3 -c 'import hanode.cli, pyroute2'": ["-c", "import hanode.cli, pyroute2"],
}


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def timed(argv: list[str], env: dict[str, str]) -> float:
    """Seconds ``argv`` took; it must succeed."""
    began = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return seconds


def line(name: str, samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return (
        f"{name:42} median {statistics.median(ms):7.0f} ms   "
        f"min {min(ms):7.0f}   max {max(ms):7.0f}   (n={len(ms)})"
    )


def main() -> int:
    """Set up the namespaces, time every scenario, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/address_start.py: needs root (network namespaces)", file=sys.stderr)
        return 2

    tag = f"hab{os.getpid()}"
    node, peer = f"{tag}-node", f"{tag}-peer"
    ip("netns", "add", node)
    ip("netns", "add", peer)
    try:
        veth = ("type", "veth", "peer", "name", "veth0", "netns", peer)
        ip("-n", node, "link", "add", "eth0", *veth)
        for ns, dev in ((node, "eth0"), (peer, "veth0")):
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "link", "set", dev, "up")
        ip("-n", node, "address", "add", "192.0.2.2/24", "dev", "eth0")
        ip("-n", peer, "address", "add", "192.0.2.1/24", "dev", "veth0")
        with tempfile.TemporaryDirectory(prefix="hanode-bench-") as tmp:
            env = dict(os.environ, HANODE_RUN_DIR=tmp, PYTHONPATH=str(ROOT))
            in_node = ["ip", "netns", "exec", node, PYTHON]
            print(f"pyroute2: {pyroute2_version(env)}; {args.runs} runs each; load {load()}")
            for name, extra in BASELINES.items():
                samples = [timed([*in_node, *extra], env) for _ in range(args.runs)]
                print(line(name, samples))
            for name, section in SCENARIOS.items():
                config = Path(tmp, "hanode.toml")
                config.write_text(f"[address]\n{section}")
                cli = [*in_node, "-m", "hanode", "-c", str(config), "--insecure-config"]
                starts, stops, statuses = [], [], []
                for _ in range(args.runs):
                    starts.append(timed([*cli, "start"], env))
                    statuses.append(timed([*cli, "status"], env))
                    stops.append(timed([*cli, "stop"], env))
                    time.sleep(0.3)
                print(line(f"hanode start: {name}", starts))
                print(line(f"hanode status (up): {name}", statuses))
                print(line(f"hanode stop: {name}", stops))
    finally:
        for ns in (node, peer):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
    return 0


def pyroute2_version(env: dict[str, str]) -> str:
    done = subprocess.run(
        [PYTHON, "-c", "import importlib.metadata as m; print(m.version('pyroute2'))"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "?"


def load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


if __name__ == "__main__":
    raise SystemExit(main())
