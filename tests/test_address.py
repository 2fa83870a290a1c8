"""The floating address: frames and decisions without root; then real netlink between two
network namespaces of our own — a "node" with `eth0` and a "peer" on the other end of
the veth that listens with a raw socket and keeps a neighbour table (arp_accept=1)."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import itertools
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from drbd_standin import fixtures as drbd_fixtures
from helpers import imported, run_hanode, wait_for

from hanode import early
from hanode.cmdline import build_parser
from hanode.config import parse
from hanode.errors import ConfigError, Exit, Refused, StatusExit, StepFailed
from hanode.resources import Context, Level, State, address
from hanode.resources.address import (
    IFA_F_DADFAILED,
    IFA_F_NODAD,
    IFA_F_SECONDARY,
    IFA_F_TENTATIVE,
    AddressConfig,
    AddressScan,
    Assigned,
    FloatingAddress,
    Interface,
    assess,
    look,
    netlink,
    scan,
    scan_json,
)
from hanode.run import SYSTEM_PATH, CommandError
from hanode.system import announce, drbdstate, networkd
from hanode.system import arp as arpmod

V4 = ipaddress.IPv4Interface("192.0.2.10/24")
V6 = ipaddress.IPv6Interface("2001:db8::10/64")
PEER_V4 = "192.0.2.1"
PEER_V6 = "2001:db8::1"
OLD_MAC = "02:00:00:00:00:99"  # the MAC of "the other node" in the peer's cache
ETH_P_ALL = 0x0003
ETH_P_IPV6 = 0x86DD


def address_config(
    ip: ipaddress.IPv4Interface | ipaddress.IPv6Interface = V4, **kw: object
) -> AddressConfig:
    values: dict[str, object] = {"ip": ip, "interface": "eth0", "label": "eth0:1", "arp_count": 2}
    values.update(kw)
    return AddressConfig(**values)  # type: ignore[arg-type]


# -- no root: frames, schedule, decisions ------------------------------------------

MAC = bytes.fromhex("020000000001")


def test_gratuitous_arp_frame_layout() -> None:
    frame = announce.gratuitous_arp(MAC, V4.ip)
    assert len(frame) == 60  # padded to the Ethernet minimum
    dst, src, ethertype = struct.unpack_from("!6s6sH", frame)
    assert (dst, src, ethertype) == (b"\xff" * 6, MAC, 0x0806)
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = struct.unpack_from(
        "!HHBBH6s4s6s4s", frame, 14
    )
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 1)
    assert sha == MAC and spa == tpa == V4.ip.packed and tha == b"\x00" * 6
    assert frame[42:] == b"\x00" * 18


def test_arp_probe_has_no_sender_ip_and_parses_back() -> None:
    arp = arpmod.parse_arp(arpmod.arp_probe(MAC, V4.ip))
    assert arp is not None
    assert arp.op == arpmod.ARPOP_REQUEST
    assert arp.sender_ip.is_unspecified
    assert arp.target_ip == V4.ip and arp.sender_mac == MAC


def test_parse_arp_ignores_other_frames() -> None:
    assert arpmod.parse_arp(b"\x00" * 10) is None
    ipv4_frame = struct.pack("!6s6sH", b"\xff" * 6, MAC, 0x0800) + b"\x00" * 46
    assert arpmod.parse_arp(ipv4_frame) is None


def test_neighbour_advertisement_layout() -> None:
    packet = announce.neighbour_advertisement(MAC, V6.ip)
    kind, code, checksum, flags = struct.unpack_from("!BBHI", packet)
    assert (kind, code, checksum) == (136, 0, 0)
    assert flags == 0x20000000  # override only: not a router, not solicited
    assert packet[8:24] == V6.ip.packed
    assert packet[24:] == bytes([2, 1]) + MAC


def test_schedule_two_bursts() -> None:
    assert announce.schedule(0) == []
    assert announce.schedule(1) == [0.0, 2.0]
    times = announce.schedule(3)
    assert times == pytest.approx([0.0, 0.2, 0.4, 2.4, 2.6, 2.8])


def test_mac_round_trip() -> None:
    assert address.format_mac(address.parse_mac("02:00:00:00:00:01")) == "02:00:00:00:00:01"
    with pytest.raises(ValueError, match="not an Ethernet MAC"):
        address.parse_mac("00:11")


def _assigned(ip: str, label: str | None = "eth0:1", index: int = 2, flags: int = 0) -> Assigned:
    return Assigned(
        index, "eth0" if index == 2 else "eth1", ipaddress.ip_interface(ip), label, flags
    )


LINK = Interface(2, "eth0", 0x10001, MAC)


@pytest.mark.parametrize(
    ("matches", "state", "words", "present"),
    [
        ((), State.DOWN, "not on eth0", False),
        ((_assigned("192.0.2.10/24"),), State.UP, "label eth0:1", True),
        ((_assigned("192.0.2.10/24", label="eth0"),), State.PARTIAL, "not as configured", True),
        ((_assigned("192.0.2.10/16"),), State.PARTIAL, "192.0.2.10/16", False),
        ((_assigned("192.0.2.10/24", index=3),), State.DOWN, "but on eth1", False),
    ],
)
def test_assess_v4(matches: tuple[Assigned, ...], state: State, words: str, present: bool) -> None:
    status = assess(address_config(), AddressScan(LINK, matches, matches))
    assert status.state is state
    assert words in status.summary
    assert status.details["interface"] == "eth0" and status.details["label"] == "eth0:1"
    assert status.details["present"] is present


@pytest.mark.parametrize(
    ("flags", "state", "words"),
    [
        (0, State.UP, "2001:db8::10/64 on eth0"),
        (IFA_F_TENTATIVE, State.PARTIAL, "tentative"),
        (IFA_F_TENTATIVE | IFA_F_DADFAILED, State.PARTIAL, "detection failed"),
    ],
)
def test_assess_v6(flags: int, state: State, words: str) -> None:
    found = (_assigned("2001:db8::10/64", label=None, flags=flags),)
    status = assess(address_config(V6), AddressScan(LINK, found, found))
    assert status.state is state and words in status.summary


def test_assess_missing_interface_is_unknown() -> None:
    status = assess(address_config(), AddressScan(None, (), ()))
    assert status.state is State.UNKNOWN
    assert "eth0 does not exist" in status.summary


def test_link_without_ethernet_address() -> None:
    """tun or wireguard: no MAC, so nothing to announce with and no ARP to probe with."""
    tun = AddressScan(Interface(2, "eth0", 0x10001, None), (), ())
    with pytest.raises(StepFailed, match="no Ethernet address") as caught:
        FloatingAddress(address_config())._usable_link(tun)
    assert "arp-count = 0" in str(caught.value)
    silent = FloatingAddress(address_config(arp_count=0))
    link = silent._usable_link(tun)
    assert not silent._probes(link)
    assert FloatingAddress(address_config())._probes(LINK)
    assert not FloatingAddress(address_config(probe=False))._probes(LINK)
    assert not FloatingAddress(address_config(V6))._probes(LINK)


# `ip -j address show` as iproute2 6.1 prints it (trimmed): a veth with a floating
# secondary, a tentative and a failed IPv6 address; a link down; a tunnel without MAC.
IP_JSON = json.dumps(
    [
        {
            "ifindex": 3,
            "link": "veth0",
            "ifname": "eth0",
            "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
            "operstate": "UP",
            "link_type": "ether",
            "address": "02:00:00:00:00:01",
            "addr_info": [
                {"family": "inet", "local": "192.0.2.2", "prefixlen": 24, "label": "eth0"},
                {
                    "family": "inet",
                    "local": "192.0.2.10",
                    "prefixlen": 24,
                    "secondary": True,
                    "label": "eth0:1",
                },
                {"family": "inet6", "local": "2001:db8::10", "prefixlen": 64, "tentative": True},
                {
                    "family": "inet6",
                    "local": "2001:db8::11",
                    "prefixlen": 64,
                    "nodad": True,
                    "dadfailed": True,
                    "tentative": True,
                },
            ],
        },
        {
            "ifindex": 5,
            "ifname": "eth1",
            "flags": ["NO-CARRIER", "BROADCAST", "MULTICAST", "UP"],
            "link_type": "ether",
            "address": "02:00:00:00:00:02",
            "addr_info": [{"family": "inet", "local": "10.0.0.1", "prefixlen": 32}],
        },
        {
            "ifindex": 7,
            "ifname": "tun0",
            "flags": ["POINTOPOINT", "NOARP"],
            "link_type": "none",
            "addr_info": [],
        },
        {
            "ifindex": 8,
            "ifname": "ipip0",
            "flags": ["NOARP", "UP", "LOWER_UP"],
            "link_type": "ipip",
            "address": "0.0.0.0",  # noqa: S104 - how ip shows an ipip tunnel's address
            "addr_info": [],
        },
    ]
)


def test_scan_json_reads_links_flags_and_labels() -> None:
    found = scan_json(IP_JSON, address_config())
    assert found.link == Interface(3, "eth0", 0x10001, MAC)
    assert found.link.up and found.link.carrier
    assert [(str(a.ip), a.label, a.flags) for a in found.on_link] == [
        ("192.0.2.2/24", "eth0", 0),
        ("192.0.2.10/24", "eth0:1", IFA_F_SECONDARY),
    ]
    assert found.exact(address_config()) == found.on_link[1]
    assert assess(address_config(), found).state is State.UP

    v6 = scan_json(IP_JSON, address_config(V6))
    assert [(str(a.ip), a.label, a.tentative, a.dad_failed) for a in v6.on_link] == [
        ("2001:db8::10/64", None, True, False),
        ("2001:db8::11/64", None, True, True),
    ]
    assert v6.on_link[1].flags == IFA_F_NODAD | IFA_F_DADFAILED | IFA_F_TENTATIVE
    assert "tentative" in assess(address_config(V6), v6).summary

    eth1 = scan_json(IP_JSON, address_config(interface="eth1", label="eth1:1")).link
    assert eth1 is not None and eth1.up and not eth1.carrier
    tun = scan_json(IP_JSON, address_config(interface="tun0", label="tun0:1")).link
    assert tun is not None and tun.mac is None and not tun.up
    ipip = scan_json(IP_JSON, address_config(interface="ipip0", label="ipip0:1")).link
    assert ipip is not None and ipip.mac is None  # an IPv4 "address" is no MAC
    missing = scan_json(IP_JSON, address_config(interface="eth7", label="eth7:1"))
    assert missing.link is None and assess(address_config(), missing).state is State.UNKNOWN
    assert scan_json("", address_config()) == AddressScan(None, (), ())  # no interface at all


@pytest.mark.parametrize(
    "text", ["{}", '[{"ifname": "eth0"}]', '[{"ifindex": 1, "ifname": "lo", "addr_info": 3}]']
)
def test_scan_json_refuses_what_it_does_not_understand(text: str) -> None:
    with pytest.raises(ValueError, match="not a list|unexpected layout"):
        scan_json(text, address_config())


def _toml(label: str) -> str:
    return f'[address]\nip = "192.0.2.10/24"\ninterface = "eth0"\nlabel = "{label}"\n'


def test_label_too_long_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="at most 15") as caught:
        parse(_toml("eth0:verylonglabel"), Path("hanode.toml"))
    assert caught.value.code is Exit.USAGE
    assert "hanode.toml:4" in str(caught.value)


def test_label_of_another_interface_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="must start with the interface name"):
        parse(_toml("eth1:1"), Path("hanode.toml"))


# -- namespaces ---------------------------------------------------------------------

_serial = itertools.count()


def ip(*args: str) -> str:
    """Run iproute2 (the tests' tool for setting the scene; hanode itself never does)."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def ipj(*args: str) -> list[dict[str, object]]:
    out = ip("-j", *args).strip()
    return json.loads(out) if out else []


@contextlib.contextmanager
def inside(netns: str) -> Iterator[None]:
    """Run this thread in ``netns`` for a while: sockets opened meanwhile stay there."""
    from pyroute2.netns import setns

    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        setns(netns, flags=0)
        try:
            yield
        finally:
            setns(home, flags=0)
    finally:
        os.close(home)


@dataclass
class Pair:
    node: str
    peer: str
    node_mac: str
    peer_mac: str

    def node_addresses(self, dev: str = "eth0") -> list[dict[str, object]]:
        links = ipj("-n", self.node, "address", "show", "dev", dev)
        return list(links[0]["addr_info"]) if links else []  # type: ignore[call-overload]

    def node_address_set(self) -> set[tuple[object, object, object]]:
        return {(a["local"], a["prefixlen"], a.get("label")) for a in self.node_addresses()}

    def node_has(self, addr: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> bool:
        return any(
            a["local"] == str(addr.ip) and a["prefixlen"] == addr.network.prefixlen
            for a in self.node_addresses()
        )

    def peer_neighbour(self, addr: str) -> str | None:
        entries = ipj("-n", self.peer, "neigh", "show", "to", addr, "dev", "veth0")
        return str(entries[0].get("lladdr")) if entries and "lladdr" in entries[0] else None


@pytest.fixture
def pair() -> Iterator[Pair]:
    """node (eth0, 192.0.2.2/24) <-veth-> peer (veth0, 192.0.2.1/24, arp_accept=1)."""
    tag = f"hat{os.getpid()}-{next(_serial)}"
    node, peer = f"{tag}-node", f"{tag}-peer"
    ip("netns", "add", node)
    try:
        ip("netns", "add", peer)
        ip(
            "-n",
            node,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "veth0",
            "netns",
            peer,
        )
        for ns, dev in ((node, "eth0"), (peer, "veth0")):
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "link", "set", dev, "up")
        ip("-n", node, "address", "add", "192.0.2.2/24", "dev", "eth0")
        ip("-n", peer, "address", "add", f"{PEER_V4}/24", "dev", "veth0")
        ip("-n", peer, "address", "add", f"{PEER_V6}/64", "dev", "veth0", "nodad")
        with inside(peer):
            for conf in ("all", "veth0"):
                Path(f"/proc/sys/net/ipv4/conf/{conf}/arp_accept").write_text("1\n")
        mac = {
            ns: str(ipj("-n", ns, "link", "show", "dev", dev)[0]["address"])
            for ns, dev in ((node, "eth0"), (peer, "veth0"))
        }
        yield Pair(node, peer, mac[node], mac[peer])
    finally:
        for ns in (node, peer):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


class Capture:
    """A raw socket in the peer namespace: every frame veth0 receives, with its time."""

    def __init__(self, pair: Pair, ethertype: int = arpmod.ETH_P_ARP) -> None:
        with inside(pair.peer):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ethertype))
            self.sock.bind(("veth0", ethertype))
        self.frames: list[tuple[float, bytes]] = []

    def collect(self, seconds: float) -> list[tuple[float, bytes]]:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.sock], [], [], left)
            if readable:
                data, address = self.sock.recvfrom(4096)
                if address[2] != arpmod.PACKET_OUTGOING:
                    self.frames.append((time.monotonic(), data))
        return self.frames

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def capture(pair: Pair, ethertype: int = arpmod.ETH_P_ARP) -> Iterator[Capture]:
    cap = Capture(pair, ethertype)
    try:
        yield cap
    finally:
        cap.close()


def garps(
    frames: list[tuple[float, bytes]], addr: ipaddress.IPv4Address
) -> list[tuple[float, arpmod.Arp]]:
    found = []
    for when, frame in frames:
        arp = arpmod.parse_arp(frame)
        if arp and arp.sender_ip == addr and arp.target_ip == addr:
            found.append((when, arp))
    return found


def node_start(pair: Pair, config: AddressConfig, ctx: Context | None = None) -> float:
    began = time.monotonic()
    with inside(pair.node):
        FloatingAddress(config).start(ctx or Context())
    return time.monotonic() - began


def node_stop(pair: Pair, config: AddressConfig) -> None:
    with inside(pair.node):
        FloatingAddress(config).stop(Context())


def node_probe(pair: Pair, config: AddressConfig) -> tuple[State, str, dict[str, object]]:
    with inside(pair.node):
        status = FloatingAddress(config).probe()
    return status.state, status.summary, dict(status.details)


# -- IPv4 ---------------------------------------------------------------------------


@pytest.mark.root
def test_start_adds_probes_and_announces_in_two_bursts(pair: Pair) -> None:
    config = address_config(arp_count=2)
    with capture(pair) as cap:
        began = time.monotonic()
        node_start(pair, config)
        returned = time.monotonic()
        frames = cap.collect(3.5)

    info = [a for a in pair.node_addresses() if a["local"] == "192.0.2.10"]
    assert len(info) == 1
    assert info[0]["prefixlen"] == 24
    assert info[0]["broadcast"] == "192.0.2.255"
    assert info[0]["label"] == "eth0:1"
    assert info[0].get("secondary") is True  # the node's own 192.0.2.2 stays primary

    node_mac = address.parse_mac(pair.node_mac)
    probes = [a for _, f in frames if (a := arpmod.parse_arp(f)) and a.sender_ip.is_unspecified]
    assert len(probes) == arpmod.PROBE_SENDS
    assert all(p.target_ip == V4.ip and p.sender_mac == node_mac for p in probes)

    sent = garps(frames, V4.ip)
    assert len(sent) == 4, [str(a) for _, a in sent]
    for _, arp in sent:
        assert arp.sender_mac == node_mac
        assert arp.op == arpmod.ARPOP_REQUEST
    # start returned before the second burst: the bursts do not hold it
    assert [when for when, _ in sent if when > returned]
    offsets = [when - began for when, _ in sent]
    assert offsets[1] - offsets[0] == pytest.approx(0.2, abs=0.1)
    assert offsets[2] - offsets[1] == pytest.approx(2.0, abs=0.3)  # the second burst
    assert offsets[3] - offsets[2] == pytest.approx(0.2, abs=0.1)
    ours = [f for _, f in frames if (a := arpmod.parse_arp(f)) and a.sender_ip == V4.ip]
    assert all(f[:6] == b"\xff" * 6 for f in ours)  # broadcast, so every host updates

    # arp_accept=1: the peer learnt the address from the announcement alone
    assert pair.peer_neighbour("192.0.2.10") == pair.node_mac
    state, summary, details = node_probe(pair, config)
    assert state is State.UP, summary
    assert details["present"] is True and details["label"] == "eth0:1"


@pytest.mark.root
def test_announcement_moves_the_peer_off_the_old_mac(pair: Pair) -> None:
    """The failover case: the peer's cache still points at the old node."""
    ip(
        "-n",
        pair.peer,
        "neigh",
        "replace",
        "192.0.2.10",
        "lladdr",
        OLD_MAC,
        "dev",
        "veth0",
        "nud",
        "stale",
    )
    assert pair.peer_neighbour("192.0.2.10") == OLD_MAC
    node_start(pair, address_config(arp_count=1, probe=False))
    moved = wait_for(lambda: pair.peer_neighbour("192.0.2.10") == pair.node_mac, timeout=1.0)
    assert moved, pair.peer_neighbour("192.0.2.10")


@pytest.mark.root
def test_probe_false_sends_no_probe(pair: Pair) -> None:
    with capture(pair) as cap:
        node_start(pair, address_config(arp_count=1, probe=False))
        frames = cap.collect(0.5)
    assert len(garps(frames, V4.ip)) == 1
    assert not [f for _, f in frames if (a := arpmod.parse_arp(f)) and a.sender_ip.is_unspecified]


@pytest.mark.root
def test_duplicate_probe_refuses_and_names_the_mac(pair: Pair) -> None:
    ip("-n", pair.peer, "address", "add", "192.0.2.10/24", "dev", "veth0")
    config = address_config()
    with pytest.raises(Refused) as caught:
        node_start(pair, config)
    assert caught.value.code is Exit.REFUSED
    assert pair.peer_mac in caught.value.message
    assert "192.0.2.10 is in use" in caught.value.message
    assert not pair.node_has(V4)  # nothing touched
    state, _, _ = node_probe(pair, config)
    assert state is State.DOWN


@pytest.mark.root
def test_preflight_refuses_when_the_address_answers_elsewhere(pair: Pair) -> None:
    ip("-n", pair.peer, "address", "add", "192.0.2.10/24", "dev", "veth0")
    with inside(pair.node), pytest.raises(Refused) as caught:
        FloatingAddress(address_config()).preflight(Context())
    assert f"192.0.2.10 is in use: {pair.peer_mac} answers ARP for it" in caught.value.message
    assert not pair.node_has(V4)


@pytest.mark.root
def test_the_preflight_probes_while_it_looks(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """The duplicate probe goes out at once; the look through `ip` (here made to take
    1.5 s) runs meanwhile, and its answer still decides: another host's answer refuses."""
    ip("-n", pair.peer, "address", "add", "192.0.2.10/24", "dev", "veth0")
    slow = Path(f"/run/hanode-test-slow-ip-{os.getpid()}")
    slow.mkdir(mode=0o755)
    try:
        wrapper = slow / "ip"
        wrapper.write_text(
            '#!/bin/sh\ncase "$*" in *address*show*) sleep 1.5;; esac\nexec /bin/ip "$@"\n'
        )
        wrapper.chmod(0o755)
        monkeypatch.setenv("HANODE_PATH", f"{slow}:{SYSTEM_PATH}")
        frames: list[tuple[float, bytes]] = []
        with capture(pair) as cap:
            listening = threading.Thread(target=lambda: frames.extend(cap.collect(2.5)))
            listening.start()
            began = time.monotonic()
            with inside(pair.node), pytest.raises(Refused) as caught:
                FloatingAddress(address_config()).preflight(Context())
            looked = time.monotonic() - began
            listening.join()
    finally:
        shutil.rmtree(slow)
    assert f"192.0.2.10 is in use: {pair.peer_mac} answers ARP" in caught.value.message
    probes = [when - began for when in probes_of(frames)]
    # the probe went out before the look ended (it stops at the first answer), and no
    # second probe followed the look
    assert looked >= 1.5 and probes and max(probes) < 1.0, (looked, probes)


@pytest.mark.root
def test_a_start_after_a_clean_preflight_probes_once(pair: Pair) -> None:
    config = address_config(arp_count=0)
    with capture(pair) as cap, inside(pair.node):
        resource = FloatingAddress(config)
        resource.preflight(Context())
        resource.start(Context())
        frames = cap.collect(0.5)
    arps = [arpmod.parse_arp(frame) for _, frame in frames]
    probes = [
        arp
        for arp in arps
        if arp and arp.target_ip == V4.ip and arp.sender_ip == ipaddress.IPv4Address(0)
    ]
    assert len(probes) == arpmod.PROBE_SENDS, probes  # the preflight's, none from start
    assert pair.node_has(V4)
    with inside(pair.node):
        FloatingAddress(config).preflight(Context())  # ours already: no probe, no refusal


@pytest.mark.root
def test_force_takes_the_address_despite_an_answer(pair: Pair) -> None:
    ip("-n", pair.peer, "address", "add", "192.0.2.10/24", "dev", "veth0")
    node_start(pair, address_config(arp_count=1), Context(force=True))
    assert pair.node_has(V4)


@pytest.mark.root
def test_interface_down_fails_naming_it(pair: Pair) -> None:
    ip("-n", pair.node, "link", "set", "eth0", "down")
    config = address_config()
    with pytest.raises(StepFailed, match="interface eth0 is down") as caught:
        node_start(pair, config)
    assert caught.value.code is Exit.FAILED
    assert "ip link set eth0 up" in str(caught.value)
    assert not pair.node_has(V4)
    with inside(pair.node):
        findings = FloatingAddress(config).check()
    assert [f.level for f in findings] == [Level.ERROR]
    assert "eth0 is down" in findings[0].message


@pytest.mark.root
def test_no_carrier_fails(pair: Pair) -> None:
    ip("-n", pair.peer, "link", "set", "veth0", "down")  # our end loses its carrier
    with pytest.raises(StepFailed, match="eth0 has no carrier"):
        node_start(pair, address_config())


@pytest.mark.root
def test_missing_interface_fails_and_probes_unknown(pair: Pair) -> None:
    config = address_config(interface="eth7", label="eth7:1")
    with pytest.raises(StepFailed, match="interface eth7 does not exist"):
        node_start(pair, config)
    state, summary, _ = node_probe(pair, config)
    assert state is State.UNKNOWN and "eth7" in summary
    node_stop(pair, config)  # nothing to remove: fine


@pytest.mark.root
def test_start_and_stop_twice_touch_nothing_else(pair: Pair) -> None:
    before = pair.node_address_set()
    config = address_config(arp_count=1)
    node_start(pair, config)
    with capture(pair) as cap:
        node_start(pair, config)  # already there: no second add, still announced
        frames = cap.collect(0.5)
    probes = [f for _, f in frames if (a := arpmod.parse_arp(f)) and a.sender_ip.is_unspecified]
    assert not probes, "an address already held is not probed for again"
    assert len(garps(frames, V4.ip)) == 1
    assert len([a for a in pair.node_addresses() if a["local"] == "192.0.2.10"]) == 1
    assert node_probe(pair, config)[0] is State.UP

    node_stop(pair, config)
    node_stop(pair, config)
    assert pair.node_address_set() == before
    state, summary, details = node_probe(pair, config)
    assert state is State.DOWN and details["present"] is False, summary


@pytest.mark.root
def test_stop_before_the_second_burst_silences_it(pair: Pair) -> None:
    config = address_config(arp_count=2, probe=False)
    with capture(pair) as cap:
        node_start(pair, config)
        node_stop(pair, config)
        stopped = time.monotonic()
        frames = cap.collect(3.0)
    late = [when for when, _ in garps(frames, V4.ip) if when > stopped + 0.05]
    assert not late, "an address no longer ours was announced"
    assert garps(frames, V4.ip)  # the first frame did go out


@pytest.mark.root
def test_the_announcer_looks_once_per_burst_and_binds_in_between(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten frames in two bursts: the detached announcer asks `ip` once per burst whether
    the address is still ours (a process each: they took a lab guest's CPU from the units
    starting beside them), and a bind() before the other frames."""
    logged = Path(f"/run/hanode-test-ip-{os.getpid()}")
    logged.mkdir(mode=0o755)
    try:
        calls = logged / "calls"
        wrapper = logged / "ip"
        wrapper.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec /bin/ip "$@"\n')
        wrapper.chmod(0o755)
        monkeypatch.setenv("HANODE_PATH", f"{logged}:{SYSTEM_PATH}")
        config = address_config(arp_count=5, probe=False)
        with capture(pair) as cap:
            node_start(pair, config)
            before = calls.read_text().splitlines() if calls.exists() else []
            frames = cap.collect(4.2)
        after = calls.read_text().splitlines()[len(before) :]
    finally:
        shutil.rmtree(logged)
    assert len(garps(frames, V4.ip)) == 10  # both bursts went out
    assert len(after) == 2 and all("address" in line for line in after), after


@pytest.mark.root
def test_address_on_another_interface_is_refused(pair: Pair) -> None:
    ip("-n", pair.node, "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p")
    for dev in ("eth1", "eth1p"):
        ip("-n", pair.node, "link", "set", dev, "up")
    ip("-n", pair.node, "address", "add", "192.0.2.10/24", "dev", "eth1")
    config = address_config()
    with pytest.raises(Refused, match="192.0.2.10 is already on another interface: .*eth1"):
        node_start(pair, config)
    assert not pair.node_has(V4)
    state, summary, _ = node_probe(pair, config)
    assert state is State.DOWN and "but on eth1" in summary
    node_stop(pair, config)  # not ours: left alone
    assert ipj("-n", pair.node, "address", "show", "dev", "eth1")[0]["addr_info"]
    with inside(pair.node):
        findings = FloatingAddress(config).check()
    assert any(f.level is Level.ERROR and "eth1" in f.message for f in findings)


@pytest.mark.root
def test_wrong_label_is_refused_but_stop_removes_it(pair: Pair) -> None:
    ip("-n", pair.node, "address", "add", "192.0.2.10/24", "dev", "eth0")  # label eth0
    config = address_config()
    state, _, _ = node_probe(pair, config)
    assert state is State.PARTIAL
    with pytest.raises(Refused, match="not as configured"):
        node_start(pair, config)
    node_stop(pair, config)
    assert not pair.node_has(V4)
    assert pair.node_has(ipaddress.IPv4Interface("192.0.2.2/24"))


@pytest.mark.root
def test_stop_keeps_secondaries_of_a_primary_floating_address(pair: Pair) -> None:
    ip("-n", pair.node, "address", "flush", "dev", "eth0")
    config = address_config(arp_count=0, probe=False)
    node_start(pair, config)  # alone in its subnet: the floating address is primary
    ip("-n", pair.node, "address", "add", "192.0.2.20/24", "dev", "eth0")
    flags = {
        a["local"]: a.get("secondary", False)
        for a in pair.node_addresses()
        if "." in str(a["local"])
    }
    assert flags == {"192.0.2.10": False, "192.0.2.20": True}
    with inside(pair.node):
        Path("/proc/sys/net/ipv4/conf/all/promote_secondaries").write_text("0\n")
        Path("/proc/sys/net/ipv4/conf/eth0/promote_secondaries").write_text("0\n")
    with pytest.raises(StepFailed, match="would also remove 192.0.2.20/24"):
        node_stop(pair, config)
    assert pair.node_has(V4)  # nothing removed
    with inside(pair.node):
        Path("/proc/sys/net/ipv4/conf/eth0/promote_secondaries").write_text("1\n")
    node_stop(pair, config)
    assert not pair.node_has(V4)
    assert pair.node_has(ipaddress.IPv4Interface("192.0.2.20/24"))


@pytest.mark.root
def test_plans_follow_the_state(pair: Pair) -> None:
    config = address_config(arp_count=3)
    resource = FloatingAddress(config)
    with inside(pair.node):
        plan = resource.plan_start()
        assert resource.plan_stop() == []
    assert plan[0].startswith("probe 192.0.2.10")
    assert plan[1] == "add 192.0.2.10/24 brd 192.0.2.255 label eth0:1 to eth0"
    assert plan[2].startswith("announce: 3 gratuitous ARPs 200 ms apart")
    assert not pair.node_has(V4)  # planning changed nothing
    node_start(pair, config)
    with inside(pair.node):
        assert resource.plan_stop() == ["remove 192.0.2.10/24 from eth0"]
        findings = resource.check()
    assert [f.level for f in findings] == [Level.OK]


@pytest.mark.root
def test_host_route_address_has_no_broadcast_and_arp_count_0_is_silent(pair: Pair) -> None:
    host = ipaddress.IPv4Interface("192.0.2.10/32")
    config = address_config(host, arp_count=0, probe=False)
    with capture(pair) as cap:
        node_start(pair, config)
        frames = cap.collect(0.5)
    info = [a for a in pair.node_addresses() if a["local"] == "192.0.2.10"]
    assert len(info) == 1 and info[0]["prefixlen"] == 32
    assert "broadcast" not in info[0]
    assert not garps(frames, V4.ip)
    assert node_probe(pair, config)[0] is State.UP
    node_stop(pair, config)
    assert not pair.node_has(host)


# -- reading through `ip`, agreeing with netlink ------------------------------------


def _essence(found: AddressScan) -> tuple[object, ...]:
    """What the decisions read of a scan (netlink has more flag bits than `ip` names)."""

    def one(a: Assigned) -> tuple[object, ...]:
        secondary = bool(a.flags & IFA_F_SECONDARY)
        return (a.index, a.ifname, str(a.ip), a.label, a.tentative, a.dad_failed, secondary)

    link = found.link
    shown = link and (link.index, link.name, link.up, link.carrier, link.mac)
    return (shown, sorted(map(one, found.on_link)), sorted(map(one, found.matches)))


def _both_ways(pair: Pair, config: AddressConfig) -> tuple[AddressScan, AddressScan]:
    with inside(pair.node):
        through_ip = look(config)
        with netlink() as ipr:
            through_netlink = scan(ipr, config)
    return through_ip, through_netlink


def _second_link(pair: Pair, carrier: bool = True) -> None:
    """eth1 in the node, its peer end eth1p beside it (down: eth1 has no carrier)."""
    ip("-n", pair.node, "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p")
    ip("-n", pair.node, "link", "set", "eth1", "up")
    if carrier:
        ip("-n", pair.node, "link", "set", "eth1p", "up")


SCENES = {
    "absent": ([], address_config(), State.DOWN),
    "present": (
        [["address", "add", "192.0.2.10/24", "dev", "eth0", "label", "eth0:1"]],
        address_config(),
        State.UP,
    ),
    "label mismatch": (
        [["address", "add", "192.0.2.10/24", "dev", "eth0"]],
        address_config(),
        State.PARTIAL,
    ),
    "another prefix": (
        [["address", "add", "192.0.2.10/16", "dev", "eth0", "label", "eth0:1"]],
        address_config(),
        State.PARTIAL,
    ),
    "another interface": (
        [["address", "add", "192.0.2.10/24", "dev", "eth1"]],
        address_config(),
        State.DOWN,
    ),
    "missing interface": ([], address_config(interface="eth7", label="eth7:1"), State.UNKNOWN),
    "interface down": (
        [["link", "set", "eth0", "down"], ["address", "add", "192.0.2.10/24", "dev", "eth0"]],
        address_config(),
        State.PARTIAL,
    ),
    "ipv6 tentative": (
        [["address", "add", str(V6), "dev", "eth1"]],  # no carrier: DAD cannot end
        address_config(V6, interface="eth1", label="eth1:1"),
        State.PARTIAL,
    ),
    "ipv6 present": (
        [["address", "add", str(V6), "dev", "eth0", "nodad"]],
        address_config(V6),
        State.UP,
    ),
}


@pytest.mark.root
@pytest.mark.parametrize("scene", SCENES)
def test_the_look_through_ip_reads_what_netlink_reads(pair: Pair, scene: str) -> None:
    commands, config, state = SCENES[scene]
    _second_link(pair, carrier=scene != "ipv6 tentative")
    for command in commands:
        ip("-n", pair.node, *command)
    through_ip, through_netlink = _both_ways(pair, config)
    assert _essence(through_ip) == _essence(through_netlink)
    status = assess(config, through_ip)
    assert status == assess(config, through_netlink)
    assert status.state is state, status.summary
    state_seen, _, _ = node_probe(pair, config)
    assert state_seen is state  # the probe itself reads through ip


@pytest.mark.root
def test_the_look_through_ip_sees_a_failed_duplicate_address_detection(pair: Pair) -> None:
    ip("-n", pair.peer, "address", "add", str(V6), "dev", "veth0", "nodad")
    ip("-n", pair.node, "address", "add", str(V6), "dev", "eth0")
    config = address_config(V6)

    def failed() -> bool:
        found = _both_ways(pair, config)[0].exact(config)
        return found is not None and found.dad_failed

    assert wait_for(failed, timeout=10)
    through_ip, through_netlink = _both_ways(pair, config)
    assert _essence(through_ip) == _essence(through_netlink)
    assert "duplicate address detection failed" in assess(config, through_ip).summary


@pytest.mark.root
def test_without_ip_installed_the_look_goes_through_netlink(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    ip("-n", pair.node, "address", "add", "192.0.2.10/24", "dev", "eth0", "label", "eth0:1")
    monkeypatch.setattr(address, "which", lambda program: None)
    monkeypatch.setattr(address, "run", lambda *a, **kw: pytest.fail("ran a command"))
    through_ip, through_netlink = _both_ways(pair, address_config())
    assert through_ip == through_netlink
    assert node_probe(pair, address_config())[0] is State.UP


@pytest.mark.root
def test_once_a_start_loaded_netlink_its_looks_run_no_command(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe after the address step (and any look after it in the same run) is a
    netlink dump, reading what a fresh resource reads through `ip`."""
    config = address_config(arp_count=0, probe=False)
    with inside(pair.node):
        resource = FloatingAddress(config)
        assert resource.probe().state is State.DOWN
        resource.start(Context())
        through_ip = FloatingAddress(config).probe()
        monkeypatch.setattr(address, "run", lambda *a, **kw: pytest.fail("ran a command"))
        through_netlink = resource.probe()
    assert through_netlink == through_ip
    assert through_netlink.state is State.UP


@pytest.mark.root
def test_without_ip_installed_stop_removes_through_netlink(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = address_config(arp_count=0, probe=False)
    node_start(pair, config)
    monkeypatch.setattr(address, "which", lambda program: None)
    monkeypatch.setattr(address, "run", lambda *a, **kw: pytest.fail("ran a command"))
    node_stop(pair, config)
    assert not pair.node_has(V4)


@pytest.mark.root
def test_stop_after_the_address_went_by_another_hand_is_done(pair: Pair) -> None:
    """The engine probes, then stops: the address removed in between is already so."""
    config = address_config(arp_count=0, probe=False)
    node_start(pair, config)
    with inside(pair.node):
        resource = FloatingAddress(config)
        assert resource.probe().state is State.UP
        ip("-n", pair.node, "address", "del", "192.0.2.10/24", "dev", "eth0")
        resource.stop(Context())  # `ip address del` fails; a fresh look finds it gone
        assert resource.probe().state is State.DOWN
    assert pair.node_has(ipaddress.IPv4Interface("192.0.2.2/24"))


@pytest.mark.root
def test_stop_deletes_and_looks_after_in_one_ip(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's probe, the stop and the probe after it: two `ip` runs, not three;
    the probe after is the look the stop's `ip` took after deleting, and says what a
    fresh look says."""
    config = address_config(arp_count=0, probe=False)
    node_start(pair, config)
    ran: list[tuple[str, ...]] = []
    real_run = address.run

    def recording(argv: list[str], **kwargs: Any) -> Any:
        ran.append(tuple(argv))
        return real_run(argv, **kwargs)

    monkeypatch.setattr(address, "run", recording)
    with inside(pair.node):
        resource = FloatingAddress(config)
        assert resource.probe().state is State.UP
        resource.stop(Context())
        after = resource.probe()
        fresh = FloatingAddress(config).probe()
    assert ran[:2] == [
        ("ip", "-j", "address", "show"),
        ("ip", "-json", "-force", "-batch", "-"),
    ]
    assert len(ran) == 3  # the third: the fresh look
    assert after == fresh and after.state is State.DOWN
    assert not pair.node_has(V4)


@pytest.mark.root
def test_a_failed_delete_that_leaves_the_address_fails_the_stop(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ip` refused the delete and its look still shows the address: the stop fails,
    naming the command, and the probe after it looks afresh."""
    config = address_config(arp_count=0, probe=False)
    node_start(pair, config)
    real_run = address.run

    def refusing(argv: list[str], **kwargs: Any) -> Any:
        if "-batch" in argv:  # a delete of an address that is not there: refused
            kwargs["stdin"] = kwargs["stdin"].replace(str(config.ip), "192.0.2.99/24")
        return real_run(argv, **kwargs)

    monkeypatch.setattr(address, "run", refusing)
    with inside(pair.node):
        resource = FloatingAddress(config)
        assert resource.probe().state is State.UP
        with pytest.raises(CommandError) as caught:
            resource.stop(Context())
        assert resource.probe().state is State.UP
    assert "-batch" in str(caught.value)
    assert pair.node_has(V4)


@pytest.mark.root
def test_ip_failing_makes_the_probe_unknown(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    from hanode.run import Completed

    def garbled(argv: list[str], **kw: object) -> Completed:
        return Completed(tuple(argv), 0, "not json", "")

    monkeypatch.setattr(address, "run", garbled)
    state, summary, _ = node_probe(pair, address_config())
    assert state is State.UNKNOWN and "cannot read `ip -j address show`" in summary


# -- IPv6 ---------------------------------------------------------------------------


@pytest.mark.root
def test_ipv6_disabled_on_the_interface_fails_naming_it(pair: Pair) -> None:
    with inside(pair.node):
        Path("/proc/sys/net/ipv6/conf/eth0/disable_ipv6").write_text("1\n")
    config = address_config(V6)
    with pytest.raises(StepFailed, match="IPv6 is disabled on eth0"):
        node_start(pair, config)
    with inside(pair.node):
        findings = FloatingAddress(config).check()
    assert any(f.level is Level.ERROR and "disable_ipv6=0" in (f.hint or "") for f in findings)


def icmp6(frames: list[tuple[float, bytes]]) -> list[tuple[float, bytes, bytes]]:
    """(time, Ethernet + IPv6 header, ICMPv6 message) of every ICMPv6 frame."""
    found = []
    for when, frame in frames:
        if len(frame) < 58 or struct.unpack_from("!H", frame, 12)[0] != ETH_P_IPV6:
            continue
        if frame[14 + 6] == socket.IPPROTO_ICMPV6:
            found.append((when, frame[:54], frame[54:]))
    return found


@pytest.mark.root
def test_ipv6_waits_for_dad_then_advertises(pair: Pair) -> None:
    ip(
        "-n",
        pair.peer,
        "-6",
        "neigh",
        "replace",
        str(V6.ip),
        "lladdr",
        OLD_MAC,
        "dev",
        "veth0",
        "nud",
        "stale",
    )
    config = address_config(V6, arp_count=2)
    with capture(pair, ETH_P_IPV6) as cap:
        took = node_start(pair, config)
        frames = cap.collect(3.0)
    info = [a for a in pair.node_addresses() if a["local"] == str(V6.ip)]
    assert len(info) == 1 and info[0]["prefixlen"] == 64
    assert not info[0].get("tentative") and not info[0].get("dadfailed")
    assert took < 5.0

    # DAD ran: the kernel's neighbour solicitation from :: went out before the NAs
    messages = icmp6(frames)
    dad = [
        when
        for when, header, body in messages
        if body[0] == 135 and header[14 + 8 : 14 + 24] == bytes(16) and body[8:24] == V6.ip.packed
    ]
    assert dad, "no duplicate address detection solicitation was seen"
    nas = [(when, header, body) for when, header, body in messages if body[0] == 136]
    assert dad[0] < nas[0][0]
    assert len(nas) == 4, len(nas)
    node_mac = address.parse_mac(pair.node_mac)
    for _, header, body in nas:
        assert header[:6] == bytes.fromhex("333300000001")  # to ff02::1
        assert header[14 + 7] == 255  # hop limit
        assert header[14 + 8 : 14 + 24] == V6.ip.packed  # from the address itself
        assert header[14 + 24 : 14 + 40] == ipaddress.IPv6Address("ff02::1").packed
        flags = struct.unpack_from("!I", body, 4)[0]
        assert flags == 0x20000000  # override, unsolicited
        assert body[8:24] == V6.ip.packed
        assert body[24:32] == bytes([2, 1]) + node_mac
    assert pair.peer_neighbour(str(V6.ip)) == pair.node_mac
    assert node_probe(pair, config)[0] is State.UP
    node_stop(pair, config)
    assert not pair.node_has(V6)


@pytest.mark.root
def test_ipv6_dad_failure_fails_and_removes_the_address(pair: Pair) -> None:
    ip("-n", pair.peer, "address", "add", str(V6), "dev", "veth0", "nodad")
    config = address_config(V6)
    with pytest.raises(StepFailed, match="duplicate address detection failed") as caught:
        node_start(pair, config)
    assert caught.value.code is Exit.FAILED
    assert not pair.node_has(V6)


@pytest.mark.root
def test_ipv6_probe_false_skips_dad(pair: Pair) -> None:
    config = address_config(V6, arp_count=1, probe=False)
    with capture(pair, ETH_P_IPV6) as cap:
        node_start(pair, config)
        info = [a for a in pair.node_addresses() if a["local"] == str(V6.ip)]
        frames = cap.collect(1.5)
    assert info and not info[0].get("tentative")  # usable at once
    kinds = [body[0] for _, _, body in icmp6(frames) if body[8:24] == V6.ip.packed]
    assert 135 not in kinds, "a DAD solicitation went out despite probe = false"
    assert kinds.count(136) == 1


# -- through the CLI ----------------------------------------------------------------


def _cli(pair: Pair, tmp_path: Path, verb: str, config: str) -> tuple[int, str]:
    path = tmp_path / "hanode.toml"
    path.write_text(config)
    in_node = ["ip", "netns", "exec", pair.node]
    argv = ["-c", str(path), "--insecure-config", verb]
    done = run_hanode(*argv, run_dir=tmp_path, prefix=in_node, timeout=30)
    return done.returncode, done.stdout + done.stderr


CLI_CONFIG = textwrap.dedent(
    """\
    [address]
    ip = "192.0.2.10/24"
    interface = "eth0"
    arp-count = 3
    """
)


@pytest.mark.root
def test_cli_start_returns_before_the_second_burst_and_releases_the_lock(
    pair: Pair, tmp_path: Path
) -> None:
    with capture(pair) as cap:
        code, output = _cli(pair, tmp_path, "start", CLI_CONFIG)
        returned = time.monotonic()
        assert code == Exit.OK, output
        code, output = _cli(pair, tmp_path, "status", CLI_CONFIG)
        assert code == StatusExit.ALL_UP, output
        frames = cap.collect(3.5)
    sent = garps(frames, V4.ip)
    assert len(sent) == 6
    # hanode start had exited (and its captured output had reached EOF) while the
    # detached announcer was still sending: it holds none of hanode's descriptors
    assert [when for when, _ in sent if when > returned]
    code, output = _cli(pair, tmp_path, "stop", CLI_CONFIG)
    assert code == Exit.OK, output
    code, output = _cli(pair, tmp_path, "status", CLI_CONFIG)
    assert code == StatusExit.ALL_DOWN, output


@pytest.mark.root
def test_cli_stop_right_after_start_is_not_locked_out(pair: Pair, tmp_path: Path) -> None:
    code, output = _cli(pair, tmp_path, "start", CLI_CONFIG)
    assert code == Exit.OK, output
    code, output = _cli(pair, tmp_path, "stop", CLI_CONFIG)
    assert code == Exit.OK, output  # not "another hanode is running"
    assert not pair.node_has(V4)


@pytest.mark.root
def test_cli_refusal_exits_4(pair: Pair, tmp_path: Path) -> None:
    ip("-n", pair.peer, "address", "add", "192.0.2.10/24", "dev", "veth0")
    code, output = _cli(pair, tmp_path, "start", CLI_CONFIG)
    assert code == Exit.REFUSED, output
    assert pair.peer_mac in output


@pytest.mark.root
def test_cli_reads_without_pyroute2_unless_it_changes_the_address(
    pair: Pair, tmp_path: Path
) -> None:
    """status, and a stop or a start with nothing to do (the start announces again), read
    through `ip`: none of them loads the netlink library; a start that adds it does."""
    path = tmp_path / "hanode.toml"
    path.write_text(CLI_CONFIG)
    in_node = ["ip", "netns", "exec", pair.node]

    def run(verb: str) -> tuple[int, set[str], str]:
        argv = ["-c", str(path), "--insecure-config", verb]
        done = run_hanode(
            *argv,
            run_dir=tmp_path,
            prefix=in_node,
            timeout=30,
            env={"PYTHONPROFILEIMPORTTIME": "1"},
        )
        netlink_modules = {m for m in imported(done.stderr) if m.startswith("pyroute2")}
        return done.returncode, netlink_modules, done.stdout + done.stderr[-2000:]

    for verb, wanted in (("stop", Exit.OK), ("status", StatusExit.ALL_DOWN)):
        code, netlink_modules, output = run(verb)
        assert (code, netlink_modules) == (wanted, set()), output
    code, netlink_modules, output = run("start")  # adds the address: through netlink
    assert code == Exit.OK and netlink_modules, output
    with capture(pair) as cap:
        for verb, wanted in (("start", Exit.OK), ("status", StatusExit.ALL_UP)):
            code, netlink_modules, output = run(verb)
            assert (code, netlink_modules) == (wanted, set()), output
        frames = cap.collect(0.5)
    assert garps(frames, V4.ip), "the start with nothing to do announced the address again"


def test_address_config_replace_keeps_types() -> None:
    """The tests build configs by hand: they must stay what config.py makes."""
    text = '[address]\nip = "192.0.2.10/24"\ninterface = "eth0"\narp-count = 2\n'
    loaded = parse(text, Path("t.toml")).of(AddressConfig)
    assert loaded is not None
    assert loaded == address_config()
    assert loaded._replace(probe=False) == address_config(probe=False)


# -- the duplicate probe begun at startup (hanode.early) ---------------------------------

EARLY_CONFIG = '[drbd]\nresource = "srv"\n\n[address]\nip = "192.0.2.10/24"\ninterface = "eth0"\n'


@pytest.fixture
def no_probe_pending() -> Iterator[None]:
    early._pending.clear()
    yield
    early._pending.clear()


def early_args(config: Path, *verb: str) -> argparse.Namespace:
    return build_parser().parse_args(["-c", str(config), "--insecure-config", *verb])


def captured_proc_drbd(role: str) -> str:
    """A /proc/drbd that real DRBD 8.4.11 printed, with this node's role ``role``."""
    for captured in drbd_fixtures.load():
        if captured.command == "cat /proc/drbd" and f" ro:{role}/" in captured.stdout:
            return captured.stdout
    raise AssertionError(f"no captured /proc/drbd with ro:{role}/")


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        (EARLY_CONFIG, ("eth0", V4.ip)),
        (EARLY_CONFIG + "probe = false\n", None),
        (EARLY_CONFIG.replace("192.0.2.10/24", "2001:db8::10/64"), None),  # IPv6: DAD
        (EARLY_CONFIG.split("\n\n")[1], None),  # no [drbd]: the engine waits too
        ('[drbd]\nresource = "srv"\n', None),  # no [address]
        (EARLY_CONFIG.replace('interface = "eth0"', "interface = 0"), None),
    ],
)
def test_the_startup_peek_finds_the_address_to_probe(
    tmp_path: Path, text: str, wanted: tuple[str, ipaddress.IPv4Address] | None
) -> None:
    config = tmp_path / "hanode.toml"
    config.write_text(text)
    assert early._wanted(early_args(config, "start")) == wanted


@pytest.mark.parametrize(
    ("proc", "promotes"),
    [
        (None, True),  # no module: modprobe, up, promote
        ("Secondary", True),  # up, Secondary: promote
        ("Primary", False),  # Primary here: maybe nothing to do
    ],
)
def test_the_startup_probe_is_for_a_start_that_will_promote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proc: str | None, promotes: bool
) -> None:
    proc_path = tmp_path / "proc-drbd"
    if proc is not None:
        proc_path.write_text(captured_proc_drbd(proc))
    monkeypatch.setattr(drbdstate, "PROC_DRBD", str(proc_path))
    assert early._promotes() is promotes


@pytest.mark.root
def test_a_start_that_will_not_promote_drops_the_probe_after_its_first_request(
    pair: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_probe_pending: None
) -> None:
    """The first request goes out before /proc/drbd is read; Primary already, the probe
    is dropped unheard: no second request, nothing left for the preflight."""
    config = tmp_path / "hanode.toml"
    config.write_text(EARLY_CONFIG)
    proc_path = tmp_path / "proc-drbd"
    proc_path.write_text(captured_proc_drbd("Primary"))
    monkeypatch.setattr(drbdstate, "PROC_DRBD", str(proc_path))
    with capture(pair) as cap:
        with inside(pair.node):
            early.begin(early_args(config, "start"))
        frames = cap.collect(arpmod.PROBE_TIMEOUT + 0.3)
    assert len(probes_of(frames)) == 1
    assert early._pending == []


@pytest.mark.parametrize(
    ("text", "verb"),
    [
        (EARLY_CONFIG, ("stop",)),
        (EARLY_CONFIG, ("start", "--dry-run")),
        (EARLY_CONFIG.replace('interface = "eth0"', 'interface = "hanode-none0"'), ("start",)),
        ("[address\n", ("start",)),  # broken: the config's load says where
        (None, ("start",)),  # no such file
    ],
)
def test_no_probe_at_startup_when_it_cannot_or_need_not(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_probe_pending: None,
    text: str | None,
    verb: tuple[str, ...],
) -> None:
    config = tmp_path / "hanode.toml"
    if text is not None:
        config.write_text(text)
    monkeypatch.setattr(drbdstate, "PROC_DRBD", str(tmp_path / "absent"))
    early.begin(early_args(config, *verb))  # never raises: the preflight decides
    assert early._pending == []


def probes_of(frames: list[tuple[float, bytes]]) -> list[float]:
    return [
        when
        for when, frame in frames
        if (arp := arpmod.parse_arp(frame)) and arp.sender_ip.is_unspecified
    ]


def begin_in_node(pair: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> early.Probe:
    config = tmp_path / "hanode.toml"
    config.write_text(EARLY_CONFIG)
    monkeypatch.setattr(drbdstate, "PROC_DRBD", str(tmp_path / "absent"))  # no module
    with inside(pair.node):
        early.begin(early_args(config, "start"))
    assert len(early._pending) == 1
    return early._pending[0]


@pytest.mark.root
def test_the_preflight_adopts_the_probe_begun_at_startup(
    pair: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_probe_pending: None
) -> None:
    with capture(pair) as cap:
        begin_in_node(pair, tmp_path, monkeypatch)
        assert wait_for(lambda: bool(probes_of(cap.collect(0.05))), 2.0)  # out before
        with inside(pair.node):
            FloatingAddress(address_config()).preflight(Context())  # nobody answers
        frames = cap.collect(0.3)
    assert len(probes_of(frames)) == arpmod.PROBE_SENDS  # that one probe, not a second
    assert early._pending == []  # taken once


@pytest.mark.root
def test_the_probe_begun_at_startup_refuses_when_the_address_answers_elsewhere(
    pair: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_probe_pending: None
) -> None:
    ip("-n", pair.peer, "address", "add", "192.0.2.10/24", "dev", "veth0")
    begin_in_node(pair, tmp_path, monkeypatch)
    with inside(pair.node), pytest.raises(Refused) as caught:
        FloatingAddress(address_config()).preflight(Context())
    assert f"192.0.2.10 is in use: {pair.peer_mac} answers ARP for it" in caught.value.message
    assert not pair.node_has(V4)


@pytest.mark.root
@pytest.mark.parametrize("why", ["stale", "another address"])
def test_a_probe_begun_at_startup_that_does_not_fit_is_left(
    pair: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_probe_pending: None, why: str
) -> None:
    config = address_config()
    if why == "stale":
        monkeypatch.setattr(early, "FRESH", 0.0)
    else:
        config = address_config(ipaddress.IPv4Interface("192.0.2.11/24"))
    with capture(pair) as cap:
        begin_in_node(pair, tmp_path, monkeypatch).answer()  # over, and nobody answered
        ip("-n", pair.peer, "address", "add", str(config.ip), "dev", "veth0")
        with inside(pair.node), pytest.raises(Refused) as caught:
            FloatingAddress(config).preflight(Context())  # probes anew, and hears the peer
        frames = cap.collect(0.3)
    assert f"{config.ip.ip} is in use: {pair.peer_mac}" in caught.value.message
    assert len(probes_of(frames)) > arpmod.PROBE_SENDS  # the startup's, then its own
    assert early._pending == []


# -- systemd-networkd would remove the address ---------------------------------------

# Link.Describe() of eth0, captured from a lab guest (systemd 252): see its README
DESCRIBED = json.loads((Path(__file__).parent / "data/networkd/describe-eth0.json").read_text())


def _networkd(folder: Path, network: str, *dropins: tuple[str, str]) -> dict[str, object]:
    """A .network file with the given [Network] lines, drop-ins (directory, text) beside
    it in networkd's directories under ``folder``; the captured Describe() naming it."""
    etc = folder / "etc"
    etc.mkdir(exist_ok=True)
    main = etc / "20-eth0.network"
    main.write_text(f"[Match]\nName=eth0\n\n[Network]\nAddress=192.0.2.2/24\n{network}")
    for number, (directory, text) in enumerate(dropins):
        folder_d = folder / directory / "20-eth0.network.d"
        folder_d.mkdir(parents=True, exist_ok=True)
        (folder_d / f"{number}-x.conf").write_text(f"[Network]\n{text}")
    return {**DESCRIBED, "NetworkFile": str(main)}


@pytest.mark.parametrize(
    ("network", "dropins", "keeps", "value"),
    [
        ("", (), False, ""),
        ("KeepConfiguration=static\n", (), True, "static"),
        ("KeepConfiguration=yes\nAddress=192.0.2.3/24\n", (), True, "yes"),
        ("KeepConfiguration=dhcp\n", (), False, "dhcp"),
        ("KeepConfiguration=static\n", (("run", "KeepConfiguration=no\n"),), False, "no"),
        ("", (("etc", "KeepConfiguration=static\n"),), True, "static"),
        ("keepconfiguration=static\n", (), False, ""),  # systemd's keys are case-sensitive
        # 0-x.conf in etc hides 0-x.conf in run; 1-x.conf (run) comes after it
        (
            "",
            (("etc", "KeepConfiguration=no\n"), ("run", "KeepConfiguration=static\n")),
            True,
            "static",
        ),
    ],
)
def test_networkd_keep_configuration_read_from_the_files_it_applies(
    tmp_path: Path, network: str, dropins: tuple[tuple[str, str], ...], keeps: bool, value: str
) -> None:
    described = _networkd(tmp_path, network, *dropins)
    directories = (str(tmp_path / "etc"), str(tmp_path / "run"))
    found = networkd.managed(2, lambda index: described, directories)
    assert found == networkd.Managed(str(tmp_path / "etc/20-eth0.network"), keeps, value)


def test_networkd_hidden_dropin_and_no_networkd(tmp_path: Path) -> None:
    (tmp_path / "run/20-eth0.network.d").mkdir(parents=True)
    (tmp_path / "run/20-eth0.network.d/a.conf").write_text("[Network]\nKeepConfiguration=no\n")
    described = _networkd(tmp_path, "KeepConfiguration=static\n", ("etc", "x"))
    (tmp_path / "etc/20-eth0.network.d/a.conf").write_text("[Network]\n")  # hides run's
    directories = (str(tmp_path / "etc"), str(tmp_path / "run"))
    assert networkd.dropins(described["NetworkFile"], directories) == [  # type: ignore[arg-type]
        str(tmp_path / "etc/20-eth0.network.d/0-x.conf"),
        str(tmp_path / "etc/20-eth0.network.d/a.conf"),
    ]
    found = networkd.managed(2, lambda index: described, directories)
    assert found is not None and found.keeps_static
    assert networkd.managed(2, lambda index: None, directories) is None  # no networkd
    unmanaged = {key: value for key, value in DESCRIBED.items() if key != "NetworkFile"}
    assert networkd.managed(2, lambda index: unmanaged, directories) is None


def test_no_system_bus_means_no_networkd_to_ask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/hanode-test-bus")
    assert networkd.describe_link(2) is None


@pytest.mark.root
def test_check_warns_when_networkd_would_remove_the_address(
    pair: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = int(ipj("-n", pair.node, "link", "show", "dev", "eth0")[0]["ifindex"])  # type: ignore[call-overload]
    asked: list[int] = []
    # the file keeps it, a drop-in of its own (networkd's directories: here, etc) undoes it
    described = _networkd(tmp_path, "KeepConfiguration=static\n", ("etc", "KeepConfiguration=no\n"))
    monkeypatch.setattr(networkd, "describe_link", lambda i: asked.append(i) or described)
    monkeypatch.setattr(networkd, "DIRECTORIES", (str(tmp_path / "etc"),))
    config = address_config()
    with inside(pair.node):
        findings = FloatingAddress(config).check()
    assert asked == [index]
    assert [f.level for f in findings] == [Level.WARNING], findings
    assert findings[0].message == (
        f"systemd-networkd manages eth0 ({tmp_path}/etc/20-eth0.network, "
        "KeepConfiguration=no): a restart of systemd-networkd (a systemd upgrade) removes "
        "192.0.2.10/24 from the active node"
    )
    assert "add KeepConfiguration=static to [Network]" in (findings[0].hint or "")
    (tmp_path / "etc/20-eth0.network.d/0-x.conf").unlink()
    with inside(pair.node):
        findings = FloatingAddress(config).check()
    assert [f.level for f in findings] == [Level.OK], findings
