"""The floating address: one IP on one interface, added over netlink and announced.

Changes (add, delete, and the looks they act on) go through pyroute2's rtnetlink socket
in the current network namespace (hanode.system.pyroute.Rtnl: pyroute2's generic
netlink socket and its link and address messages, written against Debian 12's pyroute2
0.7; 0.9's IPRSocket where the generic socket differs). Reading alone
(status, the preflight, plans, checks, the re-announcement of an address already held)
goes through iproute2's ``ip -j address show``, its JSON parsed by the json module:
importing pyroute2 costs ~0.1 s of a cold start on a server (it pulls in asyncio and
unittest.mock), a second in the lab's emulated guests, and `ip` answers in milliseconds;
once a run has pyroute2 loaded anyway (a start, from its preflight on), its looks are
netlink dumps, cheaper than running `ip`. Changes load pyroute2's socket and messages
without the package's plugin scan, without IPRoute's module and without the decoders of
the other rtnetlink messages: a fifth of that. Where `ip` is not installed, reads go
through pyroute2 too.

Idempotency is by errno, as pyroute2 itself does it: EEXIST on add and EADDRNOTAVAIL on
delete mean "already so". Only the configured address (IP and prefix) on the configured
interface is ever added or removed; an address hanode did not put there the way the
config says (another prefix, another label, another interface) is reported and left
alone, and start refuses rather than fight over it.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from hanode import early
from hanode.config import Table
from hanode.errors import HanodeError, Refused, StepFailed
from hanode.resources import Context, Finding, Level, Resource, State, Status
from hanode.run import CommandError, run, which

if TYPE_CHECKING:
    from hanode.system.pyroute import Rtnl

# hanode.system.announce (the ARP and NA frames) and hanode.system.arp (the duplicate
# probe) are imported by the functions that send, listen or size those: status reads the
# address without them.
log = logging.getLogger("hanode.address")

# the detached announcer looks (through `ip`) at most this often, so once per burst
LOOK_EVERY = 1.0

# linux/if.h, linux/if_addr.h and linux/if_arp.h: stable kernel ABI, not worth importing
# pyroute2 for
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
IFA_F_SECONDARY = 0x01
IFA_F_NODAD = 0x02
IFA_F_OPTIMISTIC = 0x04
IFA_F_DADFAILED = 0x08
IFA_F_DEPRECATED = 0x20
IFA_F_TENTATIVE = 0x40

# The words `ip -j address show` uses for those bits (iproute2's ipaddress.c: the link's
# "flags" list, and one true key per address flag; "temporary" is IPv6's secondary).
_LINK_FLAG_WORDS = {"UP": IFF_UP, "LOWER_UP": IFF_LOWER_UP}
_ADDRESS_FLAG_WORDS = {
    "secondary": IFA_F_SECONDARY,
    "temporary": IFA_F_SECONDARY,
    "nodad": IFA_F_NODAD,
    "optimistic": IFA_F_OPTIMISTIC,
    "dadfailed": IFA_F_DADFAILED,
    "deprecated": IFA_F_DEPRECATED,
    "tentative": IFA_F_TENTATIVE,
}
_FAMILIES = {4: "inet", 6: "inet6"}
IP_TIMEOUT = 10.0  # s for one `ip address show`: it answers in milliseconds unless stuck

DAD_POLL = 0.05  # seconds between looks at the tentative flag
DAD_MARGIN = 3.0  # seconds allowed beyond the kernel's own DAD time

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def format_mac(mac: bytes) -> str:
    """aa:bb:cc:dd:ee:ff."""
    return mac.hex(":")


def parse_mac(text: str) -> bytes:
    """The 6 bytes of a MAC written aa:bb:cc:dd:ee:ff (as netlink reports it)."""
    mac = bytes.fromhex(text.replace(":", ""))
    if len(mac) != 6:
        raise ValueError(f"not an Ethernet MAC address: {text!r}")
    return mac


IFNAMSIZ = 16  # the kernel's limit, NUL included: names and labels are <= 15 characters


class AddressConfig(NamedTuple):
    """The [address] section."""

    ip: IPInterface
    interface: str
    label: str  # IPv4 only: IPv6 addresses carry no label in Linux
    arp_count: int = 5
    probe: bool = True


def _ip(table: Table) -> IPInterface:
    text = table.string("ip")
    if "/" not in text:
        raise table.error("ip", f"needs a prefix length, got {text!r}", 'e.g. "192.0.2.10/24"')
    try:
        ip = ipaddress.ip_interface(text)
    except ValueError as err:
        raise table.error("ip", f"not an IP address with prefix: {err}") from None
    if isinstance(ip, ipaddress.IPv6Interface) and ip.scope_id:
        raise table.error(
            "ip",
            f"{text!r} has a scope ID (%{ip.scope_id}); a floating address has none",
            "drop it: [address] interface names the interface",
        )
    if ip.ip.is_link_local:
        raise table.error("ip", f"{ip.ip} is link-local: it cannot float, no router forwards to it")
    if ip.network.prefixlen == 0:
        raise table.error(
            "ip",
            f"prefix /0 would make every address on-link through {ip.ip}",
            "give the subnet's prefix length, e.g. /24",
        )
    if ip.ip.is_multicast or ip.ip.is_unspecified or ip.ip.is_loopback:
        raise table.error("ip", f"{ip.ip} cannot be a floating address")
    edges = (ip.network.network_address, ip.network.broadcast_address)
    if ip.version == 4 and ip.network.prefixlen < 31 and ip.ip in edges:
        raise table.error("ip", f"{ip.ip} is the network or broadcast address of {ip.network}")
    return ip


class Interface(NamedTuple):
    """One network interface as netlink lists it."""

    # the field hides tuple.index, which nothing calls on a record (mypy objects to it)
    index: int  # type: ignore[assignment]
    name: str
    flags: int
    mac: bytes | None  # None: no Ethernet address (tun, wireguard...)

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def carrier(self) -> bool:
        return bool(self.flags & IFF_LOWER_UP)


class Assigned(NamedTuple):
    """One address on one interface as netlink lists it."""

    index: int  # type: ignore[assignment]  # hides tuple.index, as Interface's does
    ifname: str
    ip: IPInterface
    label: str | None  # IPv4 only
    flags: int

    @property
    def tentative(self) -> bool:
        return bool(self.flags & IFA_F_TENTATIVE)

    @property
    def dad_failed(self) -> bool:
        return bool(self.flags & IFA_F_DADFAILED)

    def __str__(self) -> str:
        label = f" label {self.label}" if self.label and self.label != self.ifname else ""
        return f"{self.ip} on {self.ifname}{label}"


class AddressScan(NamedTuple):
    """What netlink shows about the configured address and interface, at one moment."""

    link: Interface | None  # the configured interface; None: it does not exist
    on_link: tuple[Assigned, ...]  # every address of the same family on that interface
    matches: tuple[Assigned, ...]  # the configured IP (any prefix) on any interface

    def exact(self, config: AddressConfig) -> Assigned | None:
        """The configured IP with the configured prefix on the configured interface."""
        for found in self.matches:
            if self.link and found.index == self.link.index and found.ip == config.ip:
                return found
        return None

    def elsewhere(self) -> list[Assigned]:
        """The configured IP on interfaces other than the configured one."""
        return [m for m in self.matches if self.link is None or m.index != self.link.index]

    def mismatched(self, config: AddressConfig) -> list[Assigned]:
        """The configured IP on the configured interface, but not as configured."""
        return [
            m
            for m in self.matches
            if self.link is not None
            and m.index == self.link.index
            and (m.ip != config.ip or not _label_matches(m, config))
        ]


def _label_matches(found: Assigned, config: AddressConfig) -> bool:
    return config.ip.version == 6 or found.label == config.label


def assess(config: AddressConfig, scan: AddressScan) -> Status:
    """Where the floating address stands, from one scan (pure: no netlink here)."""
    details: dict[str, object] = {
        "ip": str(config.ip),
        "interface": config.interface,
        "label": config.label if config.ip.version == 4 else None,
        "present": False,
        "found": [_describe(m) for m in scan.matches],
    }
    if scan.link is None:
        return Status(State.UNKNOWN, f"interface {config.interface} does not exist", details)
    details["link"] = _link_state(scan.link)
    # the MAC that answers for the address when it is here (a switchover's ARP check)
    details["mac"] = format_mac(scan.link.mac) if scan.link.mac else None
    exact = scan.exact(config)
    mismatched = scan.mismatched(config)
    if exact is not None and not mismatched:
        details["present"] = True
        if exact.dad_failed:
            return Status(
                State.PARTIAL,
                f"{config.ip} on {config.interface}: duplicate address detection failed",
                details,
            )
        if exact.tentative:
            return Status(
                State.PARTIAL,
                f"{config.ip} on {config.interface}: tentative (duplicate address detection)",
                details,
            )
        label = f" label {config.label}" if config.ip.version == 4 else ""
        return Status(State.UP, f"{config.ip} on {config.interface}{label}", details)
    if mismatched:
        details["present"] = exact is not None
        return Status(
            State.PARTIAL, f"{', '.join(map(str, mismatched))}, not as configured", details
        )
    elsewhere = scan.elsewhere()
    if elsewhere:
        where = ", ".join(m.ifname for m in elsewhere)
        return Status(
            State.DOWN, f"{config.ip.ip} not on {config.interface} (but on {where})", details
        )
    return Status(State.DOWN, f"{config.ip} not on {config.interface}", details)


def _describe(found: Assigned) -> dict[str, object]:
    return {
        "ip": str(found.ip),
        "interface": found.ifname,
        "label": found.label,
        "tentative": found.tentative,
        "dadfailed": found.dad_failed,
    }


def _link_state(link: Interface) -> str:
    if not link.up:
        return "down"
    return "up" if link.carrier else "no-carrier"


# -- netlink ------------------------------------------------------------------------


@contextmanager
def netlink() -> Iterator[Rtnl]:
    """An rtnetlink socket in the current network namespace (pyroute2 imported here)."""
    from hanode.system import pyroute

    with pyroute.Rtnl() as rtnl:
        yield rtnl


def _netlink_errno(err: BaseException) -> int | None:
    """The errno of a pyroute2 NetlinkError; None for anything else."""
    from hanode.system import pyroute

    return getattr(err, "code", None) if isinstance(err, pyroute.netlink_error()) else None


def read_links(ipr: Rtnl) -> dict[int, Interface]:
    """Every interface of this namespace by index."""
    links: dict[int, Interface] = {}
    for msg in ipr.links():
        mac_text = msg.get_attr("IFLA_ADDRESS")
        mac: bytes | None = None
        if mac_text:
            try:
                mac = parse_mac(mac_text)
            except ValueError:
                mac = None
        links[msg["index"]] = Interface(
            msg["index"], msg.get_attr("IFLA_IFNAME"), msg["flags"], mac
        )
    return links


def read_addresses(ipr: Rtnl, links: dict[int, Interface], version: int) -> list[Assigned]:
    """Every address of one IP version, on every interface."""
    from socket import AF_INET, AF_INET6

    found: list[Assigned] = []
    for msg in ipr.addresses(AF_INET if version == 4 else AF_INET6):
        # IFA_LOCAL is the address itself; IFA_ADDRESS is the far end on point-to-point
        text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        if not text:
            continue
        flags = msg.get_attr("IFA_FLAGS")
        if flags is None:
            flags = msg["flags"]  # kernels before 3.14 have only the 8 bits of the header
        link = links.get(msg["index"])
        found.append(
            Assigned(
                index=msg["index"],
                ifname=link.name if link else f"#{msg['index']}",
                ip=ipaddress.ip_interface(f"{text}/{msg['prefixlen']}"),
                label=msg.get_attr("IFA_LABEL"),
                flags=flags,
            )
        )
    return found


def scan(ipr: Rtnl, config: AddressConfig) -> AddressScan:
    """Look at the configured interface and every place the configured IP sits."""
    links = read_links(ipr)
    return _assemble(config, links, read_addresses(ipr, links, config.ip.version))


def _assemble(
    config: AddressConfig, links: Mapping[int, Interface], addresses: list[Assigned]
) -> AddressScan:
    link = next((lk for lk in links.values() if lk.name == config.interface), None)
    on_link = tuple(a for a in addresses if link is not None and a.index == link.index)
    matches = tuple(a for a in addresses if a.ip.ip == config.ip.ip)
    return AddressScan(link, on_link, matches)


# -- iproute2: reading without pyroute2 ---------------------------------------------


def look(config: AddressConfig) -> AddressScan:
    """One scan that only reads: through `ip -j address show` (every interface: the IP
    may sit on another one), or netlink where iproute2 is not installed.

    StepFailed when `ip` fails or says something this does not understand.
    """
    if which("ip") is None:
        with netlink() as ipr:
            return scan(ipr, config)
    result = run(["ip", "-j", "address", "show"], timeout=IP_TIMEOUT)
    try:
        return scan_json(result.stdout, config)
    except ValueError as err:
        raise StepFailed(f"cannot read `ip -j address show`: {err}") from None


def scan_json(text: str, config: AddressConfig) -> AddressScan:
    """The scan from the output of `ip -j address show`; ValueError if it is not that."""
    document = json.loads(text or "[]")
    if not isinstance(document, list):
        raise ValueError("not a list of interfaces")
    links: dict[int, Interface] = {}
    addresses: list[Assigned] = []
    family = _FAMILIES[config.ip.version]
    try:
        for entry in document:
            link = _json_link(entry)
            links[link.index] = link
            for info in entry.get("addr_info", ()):
                if info.get("family") == family and "local" in info:
                    addresses.append(_json_address(link, info))
    except (AttributeError, KeyError, TypeError) as err:
        raise ValueError(f"unexpected layout ({type(err).__name__}: {err})") from None
    return _assemble(config, links, addresses)


def _json_link(entry: dict[str, Any]) -> Interface:
    flags = 0
    for word in entry.get("flags", ()):
        flags |= _LINK_FLAG_WORDS.get(word, 0)
    mac: bytes | None = None
    text = entry.get("address")
    if isinstance(text, str):
        try:
            mac = parse_mac(text)
        except ValueError:
            mac = None  # not Ethernet: a tunnel's IPv4 address, InfiniBand's 20 bytes
    return Interface(int(entry["ifindex"]), str(entry["ifname"]), flags, mac)


def _json_address(link: Interface, info: dict[str, Any]) -> Assigned:
    flags = 0
    for word, bit in _ADDRESS_FLAG_WORDS.items():
        if info.get(word) is True:
            flags |= bit
    label = info.get("label")
    return Assigned(
        index=link.index,
        ifname=link.name,
        ip=ipaddress.ip_interface(f"{info['local']}/{int(info['prefixlen'])}"),
        label=str(label) if label is not None else None,
        flags=flags,
    )


def _ask_arp(link: Interface, ip: ipaddress.IPv4Address) -> bytes | None:
    """The MAC that answers ARP for ``ip`` on ``link`` (arp.probe_duplicate)."""
    from hanode.system import arp

    assert link.mac is not None  # the callers made sure
    try:
        return arp.probe_duplicate(link.name, link.mac, ip)
    except OSError as err:
        raise _probe_failed(link.name, ip, err) from err


def _answer(probe: early.Probe) -> bytes | None:
    """The answer of a probe run in its thread, its failure as _ask_arp's."""
    try:
        return probe.answer()
    except OSError as err:
        raise _probe_failed(probe.ifname, probe.ip, err) from err


def _probe_failed(ifname: str, ip: ipaddress.IPv4Address, err: OSError) -> StepFailed:
    return StepFailed(
        f"cannot probe {ip} on {ifname}: {err.strerror or err}", "hanode needs root: CAP_NET_RAW"
    )


def _bindable(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool | None:
    """Whether a socket can bind to ``ip``: False when the address is not on this host
    (EADDRNOTAVAIL); None when bind says something else (then only a look can tell).
    With net.ipv4.ip_nonlocal_bind=1 it is always True: the looks still catch a removal."""
    import socket

    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((str(ip), 0))
    except OSError as err:
        return False if err.errno == errno.EADDRNOTAVAIL else None
    return True


def _warm_netlink(loaded: threading.Event) -> None:
    """Import pyroute2 in the background: a start about to add the address needs it, and
    meanwhile waits (the duplicate probe listens, DRBD connects) leave the CPU idle.
    ``loaded`` is set once it is imported."""

    def load() -> None:
        from hanode.system import pyroute

        try:
            pyroute.load()
        except Exception as err:  # the step that needs it will say so
            log.debug("cannot import pyroute2 ahead: %s", err)
        else:
            loaded.set()

    threading.Thread(target=load, name="hanode-netlink-import", daemon=True).start()


# -- the resource -------------------------------------------------------------------


class FloatingAddress(Resource[AddressConfig]):
    """The service address that follows the active node."""

    section = "address"
    order = 40
    settings = AddressConfig

    @classmethod
    def parse(cls, table: Table, parsed: Mapping[str, object]) -> AddressConfig:
        """[address]: ip/prefix, interface and label; the announcements and the probe."""
        ip = _ip(table)
        interface = table.string("interface")
        if len(interface) >= IFNAMSIZ or not re.fullmatch(r"[A-Za-z0-9_.@-]+", interface):
            raise table.error("interface", f"not an interface name: {interface!r}")
        if interface in (".", ".."):
            raise table.error(
                "interface", f"not an interface name: {interface!r}", "the kernel refuses . and .."
            )
        label = table.string("label", f"{interface}:1")
        # the kernel takes any bytes; these are what `ip` and the logs can show back
        if not re.fullmatch(r"[A-Za-z0-9_.@:-]+", label):
            raise table.error("label", f"not an address label: {label!r}", f'e.g. "{interface}:1"')
        if len(label) >= IFNAMSIZ:
            raise table.error(
                "label", f"{label!r} is {len(label)} characters; the kernel allows at most 15"
            )
        if not label.startswith(interface):
            raise table.error(
                "label",
                f"{label!r} must start with the interface name {interface!r}",
                f'e.g. "{interface}:1"',
            )
        return AddressConfig(
            ip=ip,
            interface=interface,
            label=label,
            arp_count=table.integer("arp-count", 0, 100, 5),
            probe=table.get("probe", bool, True),
        )

    @classmethod
    def start_budget(cls, config: AddressConfig) -> float:
        """The duplicate probe, IPv6's DAD (a second by default), the first burst."""
        from hanode.system import announce, arp

        probe = arp.PROBE_TIMEOUT if config.probe else 0.0
        dad = 0.0 if config.ip.version == 4 else 1.0 + DAD_MARGIN
        return probe + dad + config.arp_count * announce.INTERVAL

    @classmethod
    def stop_budget(cls, config: AddressConfig) -> float:
        """One netlink delete."""
        return 1.0

    def __init__(self, config: AddressConfig) -> None:
        super().__init__(config)
        self._probed_free = False  # this run's preflight found nobody answering for the IP
        self._probed: AddressScan | None = None  # the last probe's look, for refresh and stop
        self._looked_after: AddressScan | None = None  # the stop's look after, for the probe
        # pyroute2 is imported for this resource's run: its looks are netlink dumps then
        self._netlink_loaded = threading.Event()

    @property
    def _v4(self) -> bool:
        return self.config.ip.version == 4

    def preflight(self, ctx: Context) -> None:
        """Before anything changes: the floating IP answered by another host on the segment
        means the cluster is active elsewhere (a peer that took over while this node was
        away): Refused, before DRBD is promoted, since a promotion alone forks the data.

        The probe is the one /usr/bin/hanode began as it started (hanode.early), else it
        starts at once, with the interface's MAC from a packet socket bound to it; the
        look through `ip` (a process: a quarter of a second in a busy lab guest) runs
        meanwhile: it says whether the answer matters (not when the address is here
        already, or on an interface the step will refuse) and that the MAC is still the
        probe's. The verdict comes when the probe's second is over, not a look later."""
        begun = self._early_probe()
        # the step will add it: the import runs within the probe's wait
        _warm_netlink(self._netlink_loaded)
        found = look(self.config)  # not netlink: the import has just begun
        link = found.link
        if found.exact(self.config) is not None or link is None or self._interface_problems(found):
            return  # ours already, or the address step will say what is wrong
        if not self._probes(link):
            return
        if begun is not None and begun.mac == link.mac:
            holder = _answer(begun)
        else:  # no early probe, or the MAC changed meanwhile: probe as the look says
            holder = _ask_arp(link, self._v4_ip)
        self._judge(holder, link, ctx)
        self._probed_free = True

    def _early_probe(self) -> early.Probe | None:
        """The probe /usr/bin/hanode began at startup for this address, if it fits and is
        fresh (hanode.early); else one begun now."""
        if not (self._v4 and self.config.probe):
            return None
        begun = early.take(self.config.interface, self._v4_ip)
        if begun is not None:
            log.debug("%s: the duplicate probe begun at startup decides", self.config.ip.ip)
            return begun
        mac = early.link_mac(self.config.interface)
        if mac is None:
            return None
        return early.Probe(self.config.interface, mac, self._v4_ip)

    @property
    def _v4_ip(self) -> ipaddress.IPv4Address:
        ip = self.config.ip.ip
        assert isinstance(ip, ipaddress.IPv4Address)  # _probes() made sure
        return ip

    def _scan(self) -> AddressScan:
        """A look that changes nothing: through netlink once this resource has pyroute2
        loaded (its preflight's warm-up, or a change it made: the start's address step
        and the probe after it; two dumps cost a lab guest 0.05 s where running `ip`
        costs 0.2 to 0.4 s), else as look() does it (no pyroute2 import where `ip` is
        installed)."""
        if self._netlink_loaded.is_set():
            with netlink() as ipr:
                return scan(ipr, self.config)
        return look(self.config)

    def probe(self) -> Status:
        """Present or not, on which interface, with which label (right after a stop
        through `ip`: the look that stop's `ip` took after its delete)."""
        self._probed = None
        after, self._looked_after = self._looked_after, None
        try:
            found = after or self._scan()
        except (OSError, HanodeError) as err:
            return Status(State.UNKNOWN, f"cannot read the addresses: {err}")
        self._probed = found
        return assess(self.config, found)

    def arp_holder(self) -> str | None:
        """The MAC that answers ARP for the IPv4 floating address on the configured
        interface, as this node sees the segment; None when none answers within the
        probe's window. Only for an address that is not on this node (a node ignores its
        own answers): StepFailed when it is here, IPv6, or the interface cannot probe."""
        found = self._scan()
        ip = self.config.ip.ip
        if not isinstance(ip, ipaddress.IPv4Address):
            raise StepFailed(f"{ip} is IPv6: ARP cannot tell who holds it")
        if found.exact(self.config) is not None:
            raise StepFailed(f"{ip} is on this node: it cannot see who else answers for it")
        link = self._usable_link(found)
        if link.mac is None:
            raise StepFailed(f"interface {link.name} has no Ethernet address: no ARP")
        holder = _ask_arp(link, ip)
        return format_mac(holder) if holder is not None else None

    # -- start ----------------------------------------------------------------------

    def start(self, ctx: Context) -> None:
        """Add the address (after the duplicate probe) and announce it."""
        config = self.config
        with netlink() as ipr:
            self._netlink_loaded.set()
            found = scan(ipr, config)
            link = self._usable_link(found)
            self._refuse_foreign(found)
            exact = found.exact(config)
            if exact is not None and exact.dad_failed:
                # a leftover of an earlier failed start: try again, DAD decides anew
                log.info("removing %s: it failed duplicate address detection earlier", exact)
                self._delete(ipr, link)
                exact = None
            if exact is None:
                if self._probes(link) and not self._probed_free:
                    self._probe_duplicate(link, ctx)
                self._add(ipr, link)
            else:
                log.info("%s is already on %s", config.ip, link.name)
            if not self._v4:
                self._wait_for_dad(ipr, link, ctx)
        self._announce(link)

    def refresh(self, ctx: Context) -> None:
        """Already up: announce it again, so a repeated start repairs the clients' ARP
        caches. What start would check first is checked on a look through `ip` (no
        netlink library to load: the engine's probe, right before, took it); anything not
        as the probe saw it gets start itself."""
        found, self._probed = self._probed or self._scan(), None
        exact = found.exact(self.config)
        if exact is None or exact.tentative or exact.dad_failed:
            self.start(ctx)  # changed since the probe: start decides, and repairs
            return
        link = self._usable_link(found)
        self._refuse_foreign(found)
        self._announce(link)

    def _interface_problems(self, found: AddressScan) -> list[Finding]:
        """What keeps the configured interface from carrying the address (start and check)."""
        name = self.config.interface
        link = found.link
        if link is None:
            return [
                Finding(
                    Level.ERROR,
                    f"interface {name} does not exist",
                    "check [address] interface; `ip link` lists them",
                )
            ]
        problems = []
        if not link.up:
            problems.append(
                Finding(Level.ERROR, f"interface {name} is down", f"ip link set {name} up")
            )
        elif not link.carrier:
            problems.append(
                Finding(
                    Level.ERROR,
                    f"interface {name} has no carrier (link down)",
                    "check its cable or switch port",
                )
            )
        if not self._v4 and ipv6_disabled(name):
            problems.append(
                Finding(
                    Level.ERROR,
                    f"IPv6 is disabled on {name}",
                    f"sysctl -w net.ipv6.conf.{name}.disable_ipv6=0",
                )
            )
        if self._v4 and self.config.arp_count and link.mac is None:
            problems.append(
                Finding(
                    Level.ERROR,
                    f"interface {name} has no Ethernet address: "
                    f"cannot announce {self.config.ip.ip}",
                    "set [address] arp-count = 0 for a non-Ethernet interface",
                )
            )
        return problems

    def _usable_link(self, found: AddressScan) -> Interface:
        problems = self._interface_problems(found)
        if problems or found.link is None:
            first = problems[0]
            raise StepFailed(first.message, first.hint)
        return found.link

    def _refuse_foreign(self, found: AddressScan) -> None:
        config = self.config
        elsewhere = found.elsewhere()
        if elsewhere:
            other = elsewhere[0]
            raise Refused(
                f"{config.ip.ip} is already on another interface: {other}",
                f"remove it there (ip address del {other.ip} dev {other.ifname}) "
                f"or fix [address] interface",
            )
        mismatched = found.mismatched(config)
        if mismatched:
            other = mismatched[0]
            wanted = f"{config.ip}" + (f" label {config.label}" if self._v4 else "")
            raise Refused(
                f"{other} is not as configured ({wanted})",
                f"remove it (ip address del {other.ip} dev {other.ifname}) or fix [address]",
            )

    def _probes(self, link: Interface) -> bool:
        """Whether start probes for a duplicate by ARP (IPv6 has the kernel's DAD)."""
        # a link without an Ethernet address (tun, wireguard) has no ARP to probe with
        return self._v4 and self.config.probe and link.mac is not None

    def _probe_duplicate(self, link: Interface, ctx: Context) -> None:
        ip = self._v4_ip
        with ctx.waiting(f"probing for another holder of {ip}") as line:
            line.update(f"ARP on {link.name}")
            holder = _ask_arp(link, ip)
        self._judge(holder, link, ctx)

    def _judge(self, holder: bytes | None, link: Interface, ctx: Context) -> None:
        """Refused when another host answered ARP for the address (unless --force)."""
        if holder is None:
            return
        ip = self.config.ip.ip
        mac = format_mac(holder)
        if ctx.force:
            log.warning("--force: taking %s although %s answers ARP for it", ip, mac)
            return
        raise Refused(
            f"{ip} is in use: {mac} answers ARP for it on {link.name}",
            "is the peer still holding it? Run `hanode stop` there, or find that host",
        )

    def _request(self) -> dict[str, Any]:
        """What the add asks beside the address and its prefix."""
        config = self.config
        request: dict[str, Any] = {}
        if self._v4:
            request["label"] = config.label
            if config.ip.network.prefixlen < 31:
                request["broadcast"] = str(config.ip.network.broadcast_address)
        elif not config.probe:
            request["flags"] = IFA_F_NODAD  # probe = false: no duplicate address detection
        return request

    def _add(self, ipr: Rtnl, link: Interface) -> None:
        try:
            ipr.add_address(link.index, self.config.ip, **self._request())
        except Exception as err:
            code = _netlink_errno(err)
            if code == errno.EEXIST:
                return  # added meanwhile: already so
            if code is None:
                raise
            raise StepFailed(
                f"cannot add {self.config.ip} to {link.name}: {os.strerror(code)}"
            ) from err
        log.info("added %s to %s", self.config.ip, link.name)

    def _delete(self, ipr: Rtnl, link: Interface) -> bool:
        """Remove exactly the configured address; False if it was not there."""
        try:
            ipr.delete_address(link.index, self.config.ip)
        except Exception as err:
            code = _netlink_errno(err)
            if code in (errno.EADDRNOTAVAIL, errno.ENODEV):
                return False  # gone already: already so
            if code is None:
                raise
            raise StepFailed(
                f"cannot remove {self.config.ip} from {link.name}: {os.strerror(code)}"
            ) from err
        return True

    def _wait_for_dad(self, ipr: Rtnl, link: Interface, ctx: Context) -> None:
        config = self.config
        limit = dad_seconds(link.name) + DAD_MARGIN
        deadline = time.monotonic() + limit
        with ctx.waiting(f"duplicate address detection for {config.ip.ip}") as line:
            while True:
                exact = scan(ipr, config).exact(config)
                if exact is None:
                    raise StepFailed(
                        f"{config.ip} vanished from {link.name} during duplicate address detection"
                    )
                if exact.dad_failed:
                    self._delete(ipr, link)
                    raise StepFailed(
                        f"{config.ip.ip} is in use by another host on {link.name} "
                        "(IPv6 duplicate address detection failed)",
                        "is the peer still holding it? Run `hanode stop` there",
                    )
                if not exact.tentative:
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StepFailed(
                        f"duplicate address detection for {config.ip.ip} on {link.name} "
                        f"did not finish within {limit:g}s"
                    )
                line.update(f"tentative, {left:.0f}s left")
                time.sleep(DAD_POLL)

    def _announce(self, link: Interface) -> None:
        from hanode.system import announce

        config = self.config
        if config.arp_count == 0 or link.mac is None:
            return
        what = announce.Announcement(
            link.name, link.index, link.mac, config.ip.ip, config.arp_count
        )
        try:
            announce.announce(what, self._still_ours(link.index))
        except OSError as err:
            raise StepFailed(
                f"cannot announce {config.ip.ip} on {link.name}: {err.strerror or err}",
                "hanode needs root, CAP_NET_RAW; clients would keep the old MAC for minutes",
            ) from err
        log.info("announced %s on %s (%s)", config.ip.ip, link.name, format_mac(link.mac))

    def _still_ours(self, index: int) -> Callable[[], bool]:
        """The detached announcer's question before each frame: is the address still
        this node's? A full look (through `ip`: the interface, the label, not tentative,
        not failed) at most every LOOK_EVERY seconds, so once per burst; between two, a
        bind() to the address, which the kernel refuses (EADDRNOTAVAIL) the moment the
        address is gone. A look is a process: one per frame cost a lab guest half a
        second of CPU per announcement, taken from the services starting beside it."""
        config = self.config
        looked = -math.inf  # when still_ours last looked

        def looks_ours() -> bool:
            try:
                found = look(config)
            except Exception:
                return False
            exact = found.exact(config)
            return (
                exact is not None
                and exact.index == index
                and not exact.tentative
                and not exact.dad_failed
            )

        def still_ours() -> bool:
            nonlocal looked
            now = time.monotonic()
            if now - looked >= LOOK_EVERY:
                looked = now
                return looks_ours()
            bound = _bindable(config.ip.ip)
            return looks_ours() if bound is None else bound

        return still_ours

    # -- stop -----------------------------------------------------------------------

    def stop(self, ctx: Context) -> None:
        """Remove the configured address from the interface; nothing else is touched.

        Where iproute2 is installed, through `ip`: the stop has no wait to hide pyroute2's
        import behind (a second and more of CPU on a small guest), and the look before it
        is the one the engine's probe just took."""
        config = self.config
        if which("ip") is None:
            with netlink() as ipr:
                self._remove(scan(ipr, config), lambda link: self._delete(ipr, link))
            return
        found, self._probed = self._probed or self._scan(), None
        try:
            self._remove(found, self._delete_with_ip)
        except BaseException:
            self._looked_after = None  # the step failed: the engine looks no further
            raise

    def _remove(self, found: AddressScan, delete: Callable[[Interface], bool]) -> None:
        config = self.config
        link = found.link
        if link is None:
            log.info("no interface %s: %s is not on it", config.interface, config.ip)
            return
        exact = found.exact(config)
        if exact is not None:
            self._guard_secondaries(found, exact)
            if delete(link):
                log.info("removed %s from %s", config.ip, link.name)
        other_prefix = [m for m in found.mismatched(config) if m.ip != config.ip]
        if other_prefix:
            # the node would keep answering for the address: the peer could not take it
            stray = other_prefix[0]
            raise StepFailed(
                f"{stray} remains: not hanode's ({config.ip} is configured)",
                f"remove it by hand: ip address del {stray.ip} dev {stray.ifname}",
            )

    def _delete_with_ip(self, link: Interface) -> bool:
        """`ip address del` of exactly the configured address, then `ip address show`,
        in one `ip` (its -batch): the look after the delete costs no process of its own
        (0.06 to 0.1 s of a lab guest's CPU, in the services' downtime), and it is the
        step's probe after (probe() takes it, once). False if the address was not there;
        a failure is judged by that look, not by the words of `ip`'s message. The
        interface's name is one word to the batch as it is: [address] interface
        allows no character that iproute2 reads as a comment or quoting (parse()).
        """
        spec = str(self.config.ip)
        argv = ["ip", "-json", "-force", "-batch", "-"]
        batch = f"address del {spec} dev {link.name}\naddress show\n"
        result = run(argv, stdin=batch, timeout=IP_TIMEOUT, check=False)
        try:
            if not result.stdout.strip():
                raise ValueError("no look")  # an empty dump would read as "gone"
            after = scan_json(result.stdout, self.config)
        except ValueError:  # the look failed or said nothing: one more, on its own
            after = self._scan()
        if result.returncode == 0:
            self._looked_after = after
            return True
        if after.exact(self.config) is None:
            self._looked_after = after
            return False  # gone already (another hand, or the interface went): already so
        raise CommandError(argv, result.returncode, result.stderr, "failed")

    def _guard_secondaries(self, found: AddressScan, exact: Assigned) -> None:
        """Refuse to delete a primary IPv4 address whose secondaries the kernel would drop."""
        if not self._v4 or exact.flags & IFA_F_SECONDARY:
            return
        dependants = [
            a
            for a in found.on_link
            if a.flags & IFA_F_SECONDARY and a.ip.network == exact.ip.network and a != exact
        ]
        if not dependants or promote_secondaries(exact.ifname):
            return
        names = ", ".join(str(a.ip) for a in dependants)
        raise StepFailed(
            f"removing {exact.ip} from {exact.ifname} would also remove {names} "
            f"(it is their primary address and promote_secondaries is off)",
            f"sysctl -w net.ipv4.conf.{exact.ifname}.promote_secondaries=1, then stop again",
        )

    # -- plans and checks -----------------------------------------------------------

    def plan_start(self) -> list[str]:
        """What start would do from the current state."""
        from hanode.system import announce, arp

        config = self.config
        found = self._scan()
        lines: list[str] = []
        link = found.link
        if link is None:
            return [f"fail: interface {config.interface} does not exist"]
        if not link.up or not link.carrier:
            return [f"fail: interface {config.interface} is {_link_state(link)}"]
        try:
            self._refuse_foreign(found)
        except Refused as err:
            return [f"refuse: {err.message}"]
        exact = found.exact(config)
        if exact is None or exact.dad_failed:
            if self._probes(link):
                lines.append(
                    f"probe {config.ip.ip} for another holder "
                    f"(ARP on {link.name}, {arp.PROBE_TIMEOUT:g}s at most)"
                )
            lines.append(f"add {_spec(self._request(), config)} to {link.name}")
        if not self._v4:
            lines.append("wait for duplicate address detection")
        if config.arp_count:
            kind = "gratuitous ARPs" if self._v4 else "unsolicited neighbour advertisements"
            lines.append(
                f"announce: {config.arp_count} {kind} "
                f"{announce.INTERVAL * 1000:.0f} ms apart, the same again "
                f"{announce.SECOND_BURST_AFTER:g}s later (in the background)"
            )
        return lines

    def plan_stop(self) -> list[str]:
        """What stop would do from the current state."""
        found = self._scan()
        exact = found.exact(self.config)
        if found.link is None or exact is None:
            return []
        return [f"remove {self.config.ip} from {self.config.interface}"]

    def check(self) -> list[Finding]:
        """The interface is there and up, the address is not elsewhere, raw sockets open."""
        from hanode.system import announce

        config = self.config
        try:
            found = self._scan()
        except (OSError, HanodeError) as err:
            return [Finding(Level.ERROR, f"cannot read the interfaces: {err}")]
        findings = self._interface_problems(found)
        if found.link is None:
            return findings
        try:
            self._refuse_foreign(found)
        except Refused as err:
            findings.append(Finding(Level.ERROR, err.message, err.hint))
        problem = announce.raw_socket_problem(config.ip.version)
        if problem:
            findings.append(
                Finding(Level.ERROR, f"cannot open a raw socket: {problem}", "run hanode as root")
            )
        findings += self._network_daemon_problems(found.link.index)
        if not findings:
            where = "present" if found.exact(config) else "not present"
            findings.append(
                Finding(
                    Level.OK, f"interface {config.interface} is up; {config.ip} is {where} on it"
                )
            )
        return findings

    def _network_daemon_problems(self, index: int) -> list[Finding]:
        """A systemd-networkd that would remove the address when it restarts."""
        from hanode.system import networkd

        managed = networkd.managed(index)
        if managed is None or managed.keeps_static:
            return []
        written = (
            f"KeepConfiguration={managed.keep_configuration}"
            if managed.keep_configuration
            else "no KeepConfiguration="
        )
        return [
            Finding(
                Level.WARNING,
                f"systemd-networkd manages {self.config.interface} ({managed.network_file}, "
                f"{written}): a restart of systemd-networkd (a systemd upgrade) removes "
                f"{self.config.ip} from the active node",
                f"add KeepConfiguration=static to [Network] in {managed.network_file}, "
                "then `networkctl reload`",
            )
        ]


def _spec(request: dict[str, Any], config: AddressConfig) -> str:
    text = str(config.ip)
    if "broadcast" in request:
        text += f" brd {request['broadcast']}"
    if "label" in request:
        text += f" label {request['label']}"
    if "flags" in request:
        text += " nodad"
    return text


# -- sysctls ------------------------------------------------------------------------


def _sysctl(path: str, default: int) -> int:
    try:
        return int(Path("/proc/sys", path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def dad_seconds(ifname: str) -> float:
    """How long the kernel's IPv6 DAD may take on ``ifname``: random delay + probes."""
    transmits = _sysctl(f"net/ipv6/conf/{ifname}/dad_transmits", 1)
    retrans_ms = _sysctl(f"net/ipv6/neigh/{ifname}/retrans_time_ms", 1000)
    delay = _sysctl(f"net/ipv6/conf/{ifname}/router_solicitation_delay", 1)
    return delay + transmits * retrans_ms / 1000


def promote_secondaries(ifname: str) -> bool:
    """Whether the kernel keeps secondaries when their primary goes (all OR the device)."""
    return any(
        _sysctl(f"net/ipv4/conf/{scope}/promote_secondaries", 0) for scope in ("all", ifname)
    )


def ipv6_disabled(ifname: str) -> bool:
    """Whether IPv6 is switched off on ``ifname`` (or the kernel has none)."""
    if not Path("/proc/sys/net/ipv6").exists():
        return True
    return _sysctl(f"net/ipv6/conf/{ifname}/disable_ipv6", 0) == 1
