"""pyroute2's rtnetlink socket, loaded without the package's plugin scan.

hanode makes four rtnetlink requests: the links, the addresses of one family, adding and
deleting one address. It makes them with pyroute2's own socket and messages: a
``NetlinkSocket`` of the NETLINK_ROUTE family (pyroute2's generic netlink socket, which
its ``IPRSocket`` and IPRoute are built on) told by ``register_policy`` (its documented
way) that the answers are ``ifinfmsg`` and ``ifaddrmsg`` messages; those classes encode
the requests and decode the answers. ``Rtnl`` below makes the requests as IPRoute 0.7's
``get_links``, ``get_addr`` and ``addr`` make them.

Not through IPRoute: its module also imports ``pyroute2.lab`` (its test harness:
unittest.mock, and asyncio through it), 0.35 s of a lab guest's CPU on every start. Nor
through ``IPRSocket``: its module loads ``pyroute2.netlink.rtnl.marshal``, the decoders
of every rtnetlink message (routes, rules, neighbours, statistics and the traffic
control messages with all their classifiers and actions), 0.15 to 0.3 s of a lab guest's
CPU, for two kinds of answer; what IPRSocket adds to the generic socket (a proxy that
emulates link creation on kernels before 3.3, broadcast groups) hanode does not use.

``import pyroute2`` runs the package's ``__init__``, which asks importlib.metadata for
the entry points of every installed distribution and loads each of pyroute2's (NDB,
IPSet, the wireless and the remote APIs, ...): on Debian 12's pyroute2 0.7 that is 60%
of the import, 0.04 s on a server and 0.7 s of CPU in the lab's emulated guests, spent
on modules an address change never touches. hanode needs ordinary modules only:
``pyroute2.netlink.nlsocket``, ``pyroute2.netlink.rtnl.ifinfmsg``,
``pyroute2.netlink.rtnl.ifaddrmsg`` and ``pyroute2.netlink.exceptions``.

So, when nothing in the process has imported pyroute2 yet, the package is registered
from its own import spec without running its ``__init__`` (what the import system does
before it runs a package's code), and those modules are imported through it. Anything
else (another pyroute2 layout, an import error on the way) falls back to the package's
ordinary import: the lean path can only be faster, never different in what it loads
from these modules. The package registered so completes itself: the first name asked
of it that its ``__init__`` defines (``from pyroute2 import NetNS`` anywhere later in the
process) runs that ``__init__`` into it, as the ordinary import would have. A pyroute2
whose generic socket has no ``register_policy`` (the 0.9 rewrite) gets its IPRSocket.

``pyroute2.config``, which every one of those modules imports, records at import time
``platform.uname()`` (whose processor field runs ``uname -p``) and
``platform.architecture()`` (which runs ``file -b`` on the interpreter). Those two
children, 0.1 to 0.3 s of a lab guest's CPU in the start's busiest second, would be
found on the caller's PATH, not on hanode's fixed one (hanode.run): as root. While
pyroute2 loads here, platform answers both from ``os.uname()`` and the pointer size
instead, which is what it computes itself on Debian (coreutils' ``uname -p`` says
"unknown", which platform blanks; the bits are the interpreter's), and gets its own
functions back afterwards.
"""

from __future__ import annotations

import gc
import importlib
import importlib.machinery
import importlib.util
import ipaddress
import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any, NamedTuple

log = logging.getLogger(__name__)

PACKAGE = "pyroute2"
SOCKET_MODULE = "pyroute2.netlink.nlsocket"
RTNL_SOCKET_MODULE = "pyroute2.netlink.rtnl.iprsocket"  # the layouts without a policy
LINK_MODULE = "pyroute2.netlink.rtnl.ifinfmsg"
ADDRESS_MODULE = "pyroute2.netlink.rtnl.ifaddrmsg"
EXCEPTIONS_MODULE = "pyroute2.netlink.exceptions"
_MODULES = (SOCKET_MODULE, LINK_MODULE, ADDRESS_MODULE, EXCEPTIONS_MODULE)

# the warm-up thread and the step may both ask at once; reentrant: a module imported
# under it may complete the package (below)
_lock = threading.RLock()
_registered: dict[str, ModuleType] = {}  # the package module registered here, if any


def load() -> None:
    """Import what Rtnl needs (a warm-up ahead of the step that acts)."""
    with _collector_paused():  # once for all of them: a collection after each frees nothing
        for name in _MODULES:
            _module(name)


def netlink_error() -> type[BaseException]:
    """pyroute2's NetlinkError: what a refused netlink request raises."""
    module: Any = _module(EXCEPTIONS_MODULE)
    error: type[BaseException] = module.NetlinkError
    return error


class Rtnl:
    """An rtnetlink socket in the current network namespace, and the requests hanode
    makes through it; the answers are pyroute2's messages (``msg["index"]``,
    ``msg.get_attr("IFA_LABEL")``). A refused request raises pyroute2's NetlinkError,
    its ``code`` the errno."""

    def __init__(self) -> None:
        self._socket: Any = _socket()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket."""
        self._socket.close()

    def links(self) -> tuple[Any, ...]:
        """Every interface (RTM_GETLINK dump): ifinfmsg messages."""
        from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST
        from pyroute2.netlink.rtnl import RTM_GETLINK

        message = _module(LINK_MODULE).ifinfmsg()
        return self._request(message, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP)

    def addresses(self, family: int) -> tuple[Any, ...]:
        """Every address of one family (RTM_GETADDR dump): ifaddrmsg messages."""
        from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST
        from pyroute2.netlink.rtnl import RTM_GETADDR

        message = _module(ADDRESS_MODULE).ifaddrmsg()
        message["family"] = family
        return self._request(message, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP)

    def add_address(
        self,
        index: int,
        ip: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
        *,
        label: str | None = None,
        broadcast: str | None = None,
        flags: int | None = None,
    ) -> None:
        """RTM_NEWADDR, create only (EEXIST when it is there), acknowledged."""
        from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
        from pyroute2.netlink.rtnl import RTM_NEWADDR

        asked = {"IFA_LABEL": label, "IFA_BROADCAST": broadcast, "IFA_FLAGS": flags}
        message = self._address(index, ip, [(k, v) for k, v in asked.items() if v is not None])
        self._acked(message, RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)

    def delete_address(
        self, index: int, ip: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    ) -> None:
        """RTM_DELADDR of exactly that address and prefix (EADDRNOTAVAIL when absent)."""
        from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
        from pyroute2.netlink.rtnl import RTM_DELADDR

        self._acked(self._address(index, ip, []), RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK)

    def _address(
        self,
        index: int,
        ip: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
        extra: list[tuple[str, object]],
    ) -> Any:
        """An ifaddrmsg as IPRoute 0.7's addr() builds it: IFA_ADDRESS, and for IPv4
        IFA_LOCAL too (the address itself; IFA_ADDRESS is the far end on a
        point-to-point link, here the same)."""
        from socket import AF_INET, AF_INET6

        message = _module(ADDRESS_MODULE).ifaddrmsg()
        message["family"] = AF_INET if ip.version == 4 else AF_INET6
        message["prefixlen"] = ip.network.prefixlen
        message["index"] = index
        attrs: list[tuple[str, object]] = [("IFA_ADDRESS", str(ip.ip))]
        if ip.version == 4:
            attrs.append(("IFA_LOCAL", str(ip.ip)))
        message["attrs"] = [list(attr) for attr in (*attrs, *extra)]
        return message

    def _request(self, message: Any, kind: int, flags: int) -> tuple[Any, ...]:
        return tuple(self._socket.nlm_request(message, msg_type=kind, msg_flags=flags))

    def _acked(self, message: Any, kind: int, flags: int) -> None:
        from pyroute2.netlink import NLMSG_ERROR

        def last(answer: Any) -> bool:
            return bool(answer["header"]["type"] == NLMSG_ERROR)

        tuple(self._socket.nlm_request(message, msg_type=kind, msg_flags=flags, terminate=last))


def _socket() -> Any:
    """A NETLINK_ROUTE socket that decodes link and address messages."""
    load()
    from pyroute2.netlink import NETLINK_ROUTE
    from pyroute2.netlink.rtnl import (
        RTM_DELADDR,
        RTM_GETADDR,
        RTM_GETLINK,
        RTM_NEWADDR,
        RTM_NEWLINK,
    )

    generic = _module(SOCKET_MODULE).NetlinkSocket
    if not hasattr(generic, "register_policy"):
        return _module(RTNL_SOCKET_MODULE).IPRSocket()
    link, address = _module(LINK_MODULE).ifinfmsg, _module(ADDRESS_MODULE).ifaddrmsg
    sock = generic(NETLINK_ROUTE)
    sock.register_policy(
        {
            RTM_NEWLINK: link,
            RTM_GETLINK: link,
            RTM_NEWADDR: address,
            RTM_DELADDR: address,
            RTM_GETADDR: address,
        }
    )
    return sock


def lean() -> bool:
    """Whether pyroute2 was loaded here without its package ``__init__``."""
    return PACKAGE in _registered and sys.modules.get(PACKAGE) is _registered[PACKAGE]


def _module(name: str) -> ModuleType:
    with _collector_paused(), _lock:
        loaded = sys.modules.get(name)
        if loaded is not None:
            return loaded
        with _platform_answered():
            return _import(name)


def _import(name: str) -> ModuleType:
    if PACKAGE not in sys.modules:
        try:
            return _import_lean(name)
        except Exception as err:  # any surprise: the ordinary import decides
            log.debug("pyroute2 without its plugin scan failed (%s): importing it whole", err)
            _forget()
    return importlib.import_module(name)


class _Uname(NamedTuple):
    """platform.uname()'s fields, processor included."""

    system: str
    node: str
    release: str
    version: str
    machine: str
    processor: str


def _uname() -> _Uname:
    """platform.uname() without running ``uname -p``."""
    real = os.uname()
    return _Uname(real.sysname, real.nodename, real.release, real.version, real.machine, "")


@contextmanager
def _platform_answered() -> Iterator[None]:
    """platform.uname() and platform.architecture() answered without a child process
    while pyroute2.config records them (see the module's docstring); platform's own
    functions are back after, whatever happened."""
    import platform
    import struct

    uname, architecture = platform.uname, platform.architecture

    def this_architecture(
        executable: str = sys.executable, bits: str = "", linkage: str = ""
    ) -> tuple[str, str]:
        if executable != sys.executable:
            return architecture(executable, bits, linkage)  # not asked by pyroute2
        return f"{struct.calcsize('P') * 8}bit", linkage or "ELF"

    platform.uname, platform.architecture = _uname, this_architecture  # type: ignore[assignment]
    try:
        yield
    finally:
        platform.uname, platform.architecture = uname, architecture


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic collector off while pyroute2 loads: the import builds some 30,000
    objects that live as long as the process (its modules, classes and message tables),
    so the 35 collections it would trigger free nothing (a tenth of the import's time)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _import_lean(name: str) -> ModuleType:
    """Import ``name`` under a package module that is registered but not executed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"{PACKAGE} is not an importable package")
    package = importlib.util.module_from_spec(spec)
    package.__dict__["__getattr__"] = _completion(package, spec)
    sys.modules[PACKAGE] = package
    _registered[PACKAGE] = package
    return importlib.import_module(name)


def _completion(package: ModuleType, spec: importlib.machinery.ModuleSpec) -> Any:
    """The package's module __getattr__ (PEP 562): on the first public name it lacks, run
    the package's own ``__init__`` into it, then answer from what that defined."""

    def __getattr__(name: str) -> Any:
        if name.startswith("__") and name not in ("__all__", "__version__"):
            return _missing(name)
        if _submodule(package, name):
            return _missing(name)  # `from pyroute2 import config`: the import system loads it
        with _lock:
            if package.__dict__.pop("__getattr__", None) is not None and spec.loader:
                log.debug("pyroute2.%s asked for: running the package's __init__", name)
                spec.loader.exec_module(package)
        return package.__dict__[name] if name in package.__dict__ else _missing(name)

    return __getattr__


def _submodule(package: ModuleType, name: str) -> bool:
    """Whether ``name`` is a module or subpackage of the package (imported or not)."""
    if f"{PACKAGE}.{name}" in sys.modules:
        return True
    found = importlib.machinery.PathFinder.find_spec(f"{PACKAGE}.{name}", list(package.__path__))
    return found is not None


def _missing(name: str) -> Any:
    raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}")


def _forget() -> None:
    """Drop every pyroute2 module a failed lean import left, so the whole one starts clean."""
    for loaded in [key for key in sys.modules if key == PACKAGE or key.startswith(PACKAGE + ".")]:
        del sys.modules[loaded]
    _registered.clear()
