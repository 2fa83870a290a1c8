"""Telling the segment where a floating address now lives, and asking who else has it.

The kernel sends no gratuitous ARP when an address is added over netlink, and no
unsolicited neighbour advertisement after IPv6 DAD: without them, clients and routers
keep sending to the old node's MAC until their neighbour entries expire (minutes).

- IPv4: gratuitous ARPs in the RFC 5227 "ARP announcement" form (a request with sender
  and target IP both the address), struct-packed and sent from a raw AF_PACKET socket;
  no arping binary.
- IPv6: unsolicited neighbour advertisements (ICMPv6 type 136, override flag set) to
  ff02::1 with hop limit 255, from a raw ICMPv6 socket (the kernel fills in the
  checksum and the link header).
- The duplicate probe (hanode.system.arp): an ARP request with sender IP 0.0.0.0, as
  ``arping -D`` sends; whoever answers for the address holds it.

Schedule: ``count`` frames 200 ms apart, and the same burst again 2 s after the first
ends (a switch port or a client that missed the first burst catches the second). Only
the first frame is sent by the caller, so a send error surfaces in ``hanode start``; the
rest come from a detached process so that the start does not wait ~3 s for them:

    hanode start ─ fork ─ child: setsid, fork, exit at once (reaped by hanode start)
                              └─ grandchild: sends the rest, then exits

The grandchild is re-parented to init (or to systemd, the unit's reaper) and outlives
``hanode start``. It closes every inherited descriptor first but the socket the first
frame went out on (it sends the rest, and its release, which waits for the network
stack to quiesce, falls to it) — above all the flock()ed /run/hanode.lock, which would
otherwise stay held and refuse the next ``hanode stop`` — puts /dev/null on
stdin/stdout/stderr (a caller reading hanode's output is not kept waiting for EOF), and
freezes the garbage collector so that no object inherited from hanode can close a
descriptor number the grandchild has reused. Before every frame it asks ``still_ours()``
whether the address is still on the interface: a stop or a rollback in between ends the
announcing at once. Under systemd it stays in the unit's cgroup, so stopping the unit
ends it too. No interpreter is started: the grandchild already has everything imported
(its look before each frame runs `ip`, milliseconds), which keeps its cost near zero on
a slow one-CPU node.
"""

from __future__ import annotations

import gc
import ipaddress
import logging
import os
import signal
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

# The ARP frames are built in hanode.system.arp, with the duplicate probe.
from hanode.system.arp import ARPOP_REQUEST, ETH_P_ARP, arp_frame

log = logging.getLogger("hanode.announce")

ND_NEIGHBOR_ADVERT = 136
ND_NA_FLAG_OVERRIDE = 0x20000000
ND_OPT_TARGET_LINKADDR = 2
ALL_NODES = "ff02::1"
ND_HOP_LIMIT = 255  # receivers drop neighbour discovery with any other hop limit

INTERVAL = 0.2  # seconds between the frames of a burst
SECOND_BURST_AFTER = 2.0  # seconds from the end of the first burst to the second
_NA = struct.Struct("!BBHI16sBB6s")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Announcement(NamedTuple):
    """What to announce where: ``count`` frames now, and ``count`` more later."""

    ifname: str
    ifindex: int
    mac: bytes
    ip: IPAddress
    # the field hides tuple.count, which nothing calls on a record (mypy objects to it)
    count: int  # type: ignore[assignment]


def gratuitous_arp(mac: bytes, ip: ipaddress.IPv4Address) -> bytes:
    """An RFC 5227 ARP announcement: a broadcast request for our own address."""
    return arp_frame(ARPOP_REQUEST, mac, ip, ip)


def neighbour_advertisement(mac: bytes, ip: ipaddress.IPv6Address) -> bytes:
    """An unsolicited NA for ``ip`` at ``mac`` (override set); the kernel adds the checksum."""
    return _NA.pack(
        ND_NEIGHBOR_ADVERT, 0, 0, ND_NA_FLAG_OVERRIDE, ip.packed, ND_OPT_TARGET_LINKADDR, 1, mac
    )


def schedule(count: int) -> list[float]:
    """Seconds after the first frame at which each frame goes out (both bursts)."""
    if count <= 0:
        return []
    first = [n * INTERVAL for n in range(count)]
    second_start = first[-1] + SECOND_BURST_AFTER
    return first + [second_start + n * INTERVAL for n in range(count)]


# -- sockets ------------------------------------------------------------------------


class _Sender:
    """One open raw socket that sends the announcement frame of one address."""

    def __init__(self, what: Announcement) -> None:
        self.sock: socket.socket
        self.frame: bytes
        self.destination: tuple[str, int] | tuple[str, int, int, int]
        if isinstance(what.ip, ipaddress.IPv4Address):
            # Protocol 0 and no bind: a packet socket that receives nothing. One bound to
            # ARP would make the kernel wait for the whole network stack to quiesce
            # (synchronize_net, ~10 ms) at bind; each frame names its interface instead.
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            self.frame = gratuitous_arp(what.mac, what.ip)
            self.destination = (what.ifname, ETH_P_ARP)
        else:
            self.sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            try:
                self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ND_HOP_LIMIT)
                self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, what.ifindex)
                self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
                # the source is the address itself: receivers learn it from the packet too
                self.sock.bind((str(what.ip), 0, 0, what.ifindex))
            except OSError:
                self.sock.close()
                raise
            self.frame = neighbour_advertisement(what.mac, what.ip)
            self.destination = (ALL_NODES, 0, 0, what.ifindex)

    def send(self) -> None:
        self.sock.sendto(self.frame, self.destination)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


def announce(what: Announcement, still_ours: Callable[[], bool]) -> None:
    """Announce ``what``: the first frame now, the rest from a detached process.

    A failure to send the first frame raises OSError (the address would be
    unreachable for minutes: the caller fails the step). When no detached process can be
    made, the first burst is sent here and the second skipped, with a warning.
    """
    times = schedule(what.count)
    if not times:
        return
    sender = _Sender(what)
    try:
        began = time.monotonic()
        sender.send()
        # The detached process inherits the socket and closes it last: the release of a
        # packet socket waits for the network stack to quiesce (~10 ms), and dropping
        # this process's copy is no release.
        rest = times[1:]
        if _detach(lambda: _send_on_schedule(sender, rest, began, still_ours), sender.fileno()):
            return
        log.warning(
            "could not fork to announce %s later: sending the first burst now, no second burst",
            what.ip,
        )
        _send_on_schedule(sender, times[1 : what.count], began, still_ours)
    finally:
        sender.close()


def _send_on_schedule(
    sender: _Sender, times: Sequence[float], began: float, still_ours: Callable[[], bool]
) -> None:
    for offset in times:
        delay = began + offset - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if not still_ours():
            return
        sender.send()


def _detach(work: Callable[[], None], keep: int | None = None) -> bool:
    """Run ``work`` in a double-forked grandchild that outlives this process; it keeps
    the descriptor ``keep`` of all this process has open."""
    try:
        pid = os.fork()
    except OSError:
        return False
    if pid:
        # the middle child exits at once: reap it, no zombie is left behind
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status) == 0
    try:
        os.setsid()  # no controlling terminal: a Ctrl-C at hanode's prompt does not reach it
        if os.fork():
            os._exit(0)
    except BaseException:
        os._exit(1)  # the parent falls back to sending the first burst itself
    try:
        _sever(keep)
        work()
    except BaseException:  # noqa: S110 - nobody is left to tell; the first frame went out
        pass
    os._exit(0)


def _sever(keep: int | None = None) -> None:
    """Keep nothing of the parent but descriptor ``keep``: no other descriptor, no signal
    handler, no pending garbage."""
    gc.freeze()  # inherited objects must never be finalized: their fds are closed below
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd != keep:
            os.dup2(null, fd)
    top = os.sysconf("SC_OPEN_MAX")
    if keep is None or keep < 3:
        os.closerange(3, top)
    else:
        os.closerange(3, keep)
        os.closerange(keep + 1, top)


def raw_socket_problem(version: int) -> str | None:
    """None if this process may open the raw socket announcing needs, else why not."""
    try:
        if version == 4:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # the same right
        else:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    except OSError as err:
        return err.strerror or str(err)
    sock.close()
    return None
