"""The lab network: a namespace holding two bridges and the nodes' taps.

br-public (192.0.2.0/24) carries eth0 of both nodes and the namespace itself as the
client (192.0.2.100); br-cross (198.51.100.0/24) is the crossover link of eth2. Nothing
is routed or NATed out of the namespace; deleting it removes bridges and taps.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

from hanodelab.paths import LAB, NETNS

CLIENT_IP = "192.0.2.100/24"
BRIDGES = {"public": "br-public", "cross": "br-cross"}
NODES = ("node1", "node2")


def tap(node: str, network: str) -> str:
    """The tap device of a node's NIC on a network (public or cross)."""
    return f"{node[0]}{node[-1]}-{network}"  # e.g. n1-public: short, under IFNAMSIZ


def mac(node: str, network: str) -> str:
    """The MAC of a node's NIC; the image's .link files name NICs by these."""
    octet = {"public": "c0", "cross": "c6"}[network]
    return f"52:54:00:{octet}:00:0{node[-1]}"


def _ip(*args: str) -> None:
    subprocess.run(["ip", "-n", NETNS, *args], check=True, capture_output=True, timeout=30)


def set_tap(tap_name: str, up: bool) -> None:
    """Bring one of the lab's taps up or down (a cable cut on the switch side)."""
    _ip("link", "set", "dev", tap_name, "up" if up else "down")


def exists() -> bool:
    """True when the lab's namespace exists."""
    return Path("/run/netns", NETNS).exists()


def up() -> None:
    """Create the namespace, its bridges and the four taps (idempotent: kept if there)."""
    if exists():
        return
    subprocess.run(["ip", "netns", "add", NETNS], check=True, capture_output=True, timeout=30)
    try:
        # Quiet bridges: no IPv6 autoconfiguration chatter on the lab links.
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                NETNS,
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        _ip("link", "set", "lo", "up")
        for network, bridge in BRIDGES.items():
            _ip("link", "add", bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0")
            for node in NODES:
                name = tap(node, network)
                _ip("tuntap", "add", "dev", name, "mode", "tap")
                _ip("link", "set", name, "master", bridge, "up")
            _ip("link", "set", bridge, "up")
        _ip("addr", "add", CLIENT_IP, "dev", BRIDGES["public"])
    except BaseException:
        down()
        raise


def down() -> None:
    """Delete the namespace (its bridges and taps go with it)."""
    if exists():
        subprocess.run(
            ["ip", "netns", "delete", NETNS], check=True, capture_output=True, timeout=30
        )


def client_argv(argv: list[str]) -> list[str]:
    """argv run as the client, inside the lab's namespace."""
    return ["ip", "netns", "exec", NETNS, *argv]


def neighbour_mac(ip: str) -> str | None:
    """The MAC the client's ARP table holds for ip (None: no entry)."""
    out = subprocess.run(
        ["ip", "-n", NETNS, "-j", "neigh", "show", ip],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    entries = json.loads(out or "[]")
    for entry in entries:
        if "lladdr" in entry:
            return str(entry["lladdr"])
    return None


def flush_neighbours() -> None:
    """Forget the client's ARP entries (a fresh client for each scenario)."""
    _ip("neigh", "flush", "dev", BRIDGES["public"])


class ArpWatch:
    """The client listening for ARP frames sent from an address (hanodelab.arpwatch).

    with ArpWatch(VIP) as watch: ...; watch.frames(n, timeout) waits for n frames,
    returning what came (each frame's "t" counts from when the watch was ready).
    """

    def __init__(self, ip: str, seconds: float = 120) -> None:
        self.argv = client_argv(
            ["/usr/bin/python3", "-m", "hanodelab.arpwatch", BRIDGES["public"], ip, str(seconds)]
        )
        self.lines: list[dict[str, object]] = []
        self.process: subprocess.Popen[str] | None = None
        self.reader: threading.Thread | None = None

    def __enter__(self) -> ArpWatch:
        self.process = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(LAB)}
        )
        assert self.process.stdout is not None
        ready = self.process.stdout.readline()
        if json.loads(ready or "{}") != {"ready": True}:
            self.__exit__()
            raise RuntimeError(f"arpwatch did not start: {ready!r}")
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(json.loads(line))

    def frames(self, count: int, timeout: float) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout
        while len(self.lines) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return list(self.lines)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
