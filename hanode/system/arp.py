"""ARP frames, and the duplicate probe: who else answers for an IPv4 address?

The probe is an ARP request with sender IP 0.0.0.0, as ``arping -D`` sends it; whoever
answers for the address holds it. Its first request goes out as the probe is made, in
the caller's thread; ``listen()`` sends the others and waits for an answer (a thread of
its own in a start, hanode.early).

Light on purpose: a start imports this module right after its command line is parsed,
before the rest of hanode loads, so that the probe's second begins as early as it can
(on a one-CPU node, every module loaded first delays it). hanode.system.announce, which
sends the gratuitous ARPs, builds its frames here too.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import time
from typing import NamedTuple

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
ARPOP_REPLY = 2
PACKET_OUTGOING = 4  # sockaddr_ll pkttype of our own frames, looped back to packet sockets
BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
ZERO_IP = b"\x00" * 4
ETH_MIN_FRAME = 60  # without FCS: short frames are padded, as NICs and switches expect

PROBE_TIMEOUT = 1.0  # seconds the duplicate probe listens for an answer, at most
PROBE_SENDS = 3  # probe requests within PROBE_TIMEOUT: one lost frame is no false "free"

_ETHER = struct.Struct("!6s6sH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")


class Arp(NamedTuple):
    """The fields of an Ethernet/IPv4 ARP packet that matter here."""

    op: int
    sender_mac: bytes
    sender_ip: ipaddress.IPv4Address
    target_mac: bytes
    target_ip: ipaddress.IPv4Address


def arp_frame(
    op: int,
    sender_mac: bytes,
    sender_ip: ipaddress.IPv4Address | None,
    target_ip: ipaddress.IPv4Address,
    *,
    target_mac: bytes = ZERO_MAC,
    destination: bytes = BROADCAST_MAC,
) -> bytes:
    """A complete Ethernet frame carrying an ARP packet (sender_ip None: 0.0.0.0)."""
    ether = _ETHER.pack(destination, sender_mac, ETH_P_ARP)
    arp = _ARP.pack(
        ARPHRD_ETHER,
        ETH_P_IP,
        6,
        4,
        op,
        sender_mac,
        sender_ip.packed if sender_ip is not None else ZERO_IP,
        target_mac,
        target_ip.packed,
    )
    return (ether + arp).ljust(ETH_MIN_FRAME, b"\x00")


def arp_probe(mac: bytes, ip: ipaddress.IPv4Address) -> bytes:
    """An ARP probe as ``arping -D`` sends it: who has ``ip``? (sender IP 0.0.0.0)."""
    return arp_frame(ARPOP_REQUEST, mac, None, ip)


def parse_arp(frame: bytes) -> Arp | None:
    """The ARP packet in an Ethernet frame; None for anything else."""
    header = _ETHER.size + _ARP.size
    if len(frame) < header:
        return None
    _, _, ethertype = _ETHER.unpack_from(frame)
    if ethertype != ETH_P_ARP:
        return None
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(frame, _ETHER.size)
    if (htype, ptype, hlen, plen) != (ARPHRD_ETHER, ETH_P_IP, 6, 4):
        return None
    return Arp(op, sha, ipaddress.IPv4Address(spa), tha, ipaddress.IPv4Address(tpa))


# -- the duplicate probe ------------------------------------------------------------


class DuplicateProbe:
    """The duplicate probe of ``ip`` on ``ifname``: its first request is sent as it is
    made (an OSError then says why it cannot run); listen() sends the others, spread over
    ``timeout`` seconds, and says who answered. A reply for ``ip``, or any ARP that
    another MAC sends from ``ip`` (its own announcement), counts as "taken"."""

    def __init__(
        self, ifname: str, mac: bytes, ip: ipaddress.IPv4Address, timeout: float = PROBE_TIMEOUT
    ) -> None:
        self.mac = mac
        self.ip = ip
        self._frame = arp_probe(mac, ip)
        # Made with protocol 0, given ARP at bind: a packet socket that changes protocol or
        # interface at bind makes the kernel wait for the network stack to quiesce (~10 ms).
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self._sock.bind((ifname, ETH_P_ARP))
            began = time.monotonic()
            self._sock.send(self._frame)
        except BaseException:
            self._sock.close()
            raise
        self._deadline = began + timeout
        self._sends = [began + n * timeout / PROBE_SENDS for n in range(1, PROBE_SENDS)]

    def listen(self) -> bytes | None:
        """The MAC of a host that answers for the address; None if none does by the
        deadline. The socket is closed after, whatever happened."""
        sock, sends = self._sock, self._sends
        try:
            while True:
                now = time.monotonic()
                while sends and sends[0] <= now:
                    sends.pop(0)
                    sock.send(self._frame)
                if now >= self._deadline:
                    return None
                wake = min(self._deadline, sends[0]) if sends else self._deadline
                readable, _, _ = select.select([sock], [], [], max(0.0, wake - now))
                if not readable:
                    continue
                data, address = sock.recvfrom(2048)
                if address[2] == PACKET_OUTGOING:
                    continue
                holder = _holder(parse_arp(data), self.mac, self.ip)
                if holder is not None:
                    return holder
        finally:
            sock.close()

    def close(self) -> None:
        """Drop the probe without listening (its socket closed)."""
        self._sock.close()


def probe_duplicate(
    ifname: str, mac: bytes, ip: ipaddress.IPv4Address, timeout: float = PROBE_TIMEOUT
) -> bytes | None:
    """The MAC of a host that answers ARP for ``ip`` on ``ifname``; None if none does
    within ``timeout`` seconds (DuplicateProbe, made and listened to)."""
    return DuplicateProbe(ifname, mac, ip, timeout).listen()


def _holder(arp: Arp | None, mac: bytes, ip: ipaddress.IPv4Address) -> bytes | None:
    if arp is None or arp.sender_mac == mac:
        return None
    if arp.sender_ip == ip and arp.op in (ARPOP_REPLY, ARPOP_REQUEST):
        return arp.sender_mac
    return None
