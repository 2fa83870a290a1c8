"""A start's duplicate-address probe, begun as soon as the command line is parsed.

A floating IPv4 address that another host answers for refuses a start before DRBD is
promoted (hanode.resources.address): the promotion waits for the probe's second. Begun
by the address step's preflight, that second would start only once the interpreter has
loaded hanode and read the config (half a second to a second in the lab's emulated
guests, some 50 ms on a server), and the promotion would wait for all of it. Begun here,
by /usr/bin/hanode right after parsing its arguments, the second runs while hanode
loads, and the preflight adopts the probe: its verdict comes that much earlier.

Only for a ``hanode start`` (not --dry-run) whose config has an [address] with an IPv4
``ip``, an ``interface`` and the probe on, and a [drbd] section, when /proc/drbd says the
start will promote: the rule by which the engine begins the preflight before its first
probe (hanode.system.drbdstate.start_promotes). The config is read as hanode.config reads
it (from /, no link followed, ownership checked: hanode.configfile) and parsed by
tomllib, but not checked: this is a peek. What the first request needs comes first, and
only that (the small hanode.system.arp, no pathlib, no logging): the request goes out in
this thread before /proc/drbd is read and drbdstate's parsers are loaded to read it, and
a start that will not promote drops the probe unheard: one ARP request asked, nothing
waited for. The preflight adopts the probe only if the checked config names the same
interface and address, the interface still has the MAC the probe went out from (the
preflight's look says), and the probe is still listening or ended at most FRESH seconds
ago (a start that waited for another hanode's lock probes again). Anything else, and any
error here, leaves the probe to the preflight, as before. Nothing changes meanwhile on
this node or the segment: ARP probes carry no sender address (as ``arping -D``'s).
"""

from __future__ import annotations

import argparse
import ipaddress
import threading
import time
from typing import TYPE_CHECKING

from hanode.errors import HanodeError

if TYPE_CHECKING:
    from hanode.system.arp import DuplicateProbe

# The longest a finished probe's verdict is adopted after its end, in seconds.
FRESH = 1.0

_lock = threading.Lock()
_pending: list[Probe] = []  # the probe begin() started, until the preflight takes it


class Probe:
    """The duplicate probe of one address on one interface, listening in a thread of its
    own. ``sent``: its first request, already out; else it is sent here."""

    def __init__(
        self,
        ifname: str,
        mac: bytes,
        ip: ipaddress.IPv4Address,
        sent: DuplicateProbe | None = None,
    ) -> None:
        self.ifname = ifname
        self.mac = mac
        self.ip = ip
        self._holder: bytes | None = None
        self._failure: OSError | None = None
        self._ended: float | None = None
        self._thread: threading.Thread | None = None
        if sent is None:
            from hanode.system import arp

            try:
                sent = arp.DuplicateProbe(ifname, mac, ip)
            except OSError as err:  # answer() raises it: the preflight says why
                self._failure = err
                self._ended = time.monotonic()
                return
        self._thread = threading.Thread(
            target=self._ask, args=(sent,), name="hanode-arp-probe", daemon=True
        )
        self._thread.start()

    def _ask(self, sent: DuplicateProbe) -> None:
        try:
            self._holder = sent.listen()
        except OSError as err:
            self._failure = err
        finally:
            self._ended = time.monotonic()

    def fresh(self) -> bool:
        """Still listening, or ended at most FRESH seconds ago."""
        ended = self._ended
        return ended is None or time.monotonic() - ended <= FRESH

    def answer(self) -> bytes | None:
        """The MAC that answered, once the probe is over (None: nobody did); the OSError
        that kept it from running, raised."""
        if self._thread is not None:
            self._thread.join()
        if self._failure is not None:
            raise self._failure
        return self._holder


def link_mac(ifname: str) -> bytes | None:
    """The interface's Ethernet address, from a packet socket bound to it in this network
    namespace (its name as the kernel gives it back); None when it has none, or there is
    no such interface. Only a probe asks it, so hanode.system.arp (loaded by the probe
    next) is imported here, not by status, which loads this module too."""
    import socket

    from hanode.system import arp

    try:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:  # receives nothing
            sock.bind((ifname, 0))
            _name, _proto, _type, hatype, mac = sock.getsockname()
    except (OSError, ValueError):  # ValueError: a name with a NUL byte
        return None
    return mac if hatype == arp.ARPHRD_ETHER and len(mac) == 6 else None


def begin(args: argparse.Namespace) -> None:
    """Start the probe for a start that will promote (see above); else do nothing."""
    if args.verb != "start" or args.dry_run:
        return
    try:
        wanted = _wanted(args)
    except (OSError, ValueError, HanodeError):  # the preflight will probe, or say why not
        return
    if wanted is None:
        return
    ifname, ip = wanted
    mac = link_mac(ifname)
    if mac is None:
        return
    from hanode.system import arp

    try:
        sent = arp.DuplicateProbe(ifname, mac, ip)  # its first request is out
    except OSError:
        return  # the preflight probes again, and says why it cannot
    try:
        promotes = _promotes()
    except (OSError, ValueError, HanodeError):
        promotes = False
    if not promotes:
        sent.close()  # unheard: the start will not promote
        return
    with _lock:
        _pending[:] = [Probe(ifname, mac, ip, sent)]


def take(ifname: str, ip: ipaddress.IPv4Address) -> Probe | None:
    """The probe begun for ``ip`` on ``ifname`` if it is fresh, once; None otherwise."""
    with _lock:
        probe = _pending.pop() if _pending else None
    if probe is None or (probe.ifname, probe.ip) != (ifname, ip) or not probe.fresh():
        return None
    return probe


def _wanted(args: argparse.Namespace) -> tuple[str, ipaddress.IPv4Address] | None:
    """The interface and IPv4 address to probe, by a peek at the config; None when the
    start will not probe one."""
    import tomllib

    from hanode import configfile

    path = configfile.config_file(getattr(args, "config", None))
    raw = configfile.read_bytes(path, insecure=getattr(args, "insecure_config", False))
    document = tomllib.loads(raw.decode("utf-8"))
    section = document.get("address")
    if "drbd" not in document or not isinstance(section, dict):
        return None
    text, ifname = section.get("ip"), section.get("interface")
    if section.get("probe", True) is not True or not isinstance(text, str):
        return None
    ip = ipaddress.ip_interface(text).ip
    if not isinstance(ip, ipaddress.IPv4Address) or not isinstance(ifname, str):
        return None
    return ifname, ip


def _promotes() -> bool:
    from hanode.system import drbdstate

    return drbdstate.start_promotes(drbdstate.read_proc_drbd(drbdstate.PROC_DRBD))
