"""Whether systemd-networkd would take the floating IP away: a `check` concern.

systemd-networkd removes, when it (re)configures a link it manages, every address it did
not add itself ("foreign" ones), unless the link's .network file says
``KeepConfiguration=static`` (or ``yes``). hanode's floating IP is such an address: any
restart of systemd-networkd (an upgrade of systemd, its watchdog) would remove it from
the active node, silently. Hosts where networkd does not run (ifupdown) are not concerned.

Which .network file networkd applied to a link is its own answer over D-Bus (Link.Describe,
hanode.system.dbus); its drop-ins are found as systemd finds them (FILE.d/*.conf in each
of networkd's directories, a name in an earlier directory hiding the same name in a later
one, all in the order of their names). The files are systemd's INI dialect, read with
configparser (duplicate keys and sections allowed, the last value winning, as systemd
does for a single-valued setting such as KeepConfiguration).
"""

from __future__ import annotations

import configparser
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

log = logging.getLogger(__name__)

# systemd.network(5): where .network files and their drop-ins live, first wins
DIRECTORIES = (
    "/etc/systemd/network",
    "/run/systemd/network",
    "/usr/local/lib/systemd/network",
    "/usr/lib/systemd/network",
    "/lib/systemd/network",
)
# KeepConfiguration= values that keep an address of infinite lifetime (systemd.network(5))
_KEEPS_STATIC = frozenset({"static", "yes", "true", "on", "1"})

Describe = Callable[[int], "Mapping[str, Any] | None"]


class Managed(NamedTuple):
    """A link systemd-networkd configures: its .network file and what it says."""

    network_file: str
    keeps_static: bool  # KeepConfiguration= keeps a foreign address of infinite lifetime
    keep_configuration: str  # its value as written ("" when not set)


def describe_link(index: int) -> Mapping[str, Any] | None:
    """networkd's description of link ``index`` over the system bus (None: no networkd,
    no such link, or no bus to ask)."""
    from hanode.system.dbus import BusError, Systemd

    try:
        with Systemd.connect() as bus:
            return bus.network_link(index)
    except BusError as err:
        log.debug("cannot ask systemd-networkd about link %d: %s", index, err)
        return None


def dropins(network_file: str, directories: tuple[str, ...] | None = None) -> list[str]:
    """The drop-ins of a .network file, in the order systemd applies them (looked for in
    ``directories``, default DIRECTORIES)."""
    found: dict[str, str] = {}
    folder = os.path.basename(network_file) + ".d"
    for directory in DIRECTORIES if directories is None else directories:
        try:
            names = os.listdir(os.path.join(directory, folder))
        except OSError:
            continue
        for name in names:
            if name.endswith(".conf"):
                found.setdefault(name, os.path.join(directory, folder, name))
    return [found[name] for name in sorted(found)]


def managed(
    index: int,
    describe: Describe | None = None,
    directories: tuple[str, ...] | None = None,
) -> Managed | None:
    """What systemd-networkd applies to link ``index``; None when it does not manage it
    (networkd not running, the link unmanaged, or no .network file matched)."""
    described = (describe or describe_link)(index)
    network_file = str(described.get("NetworkFile") or "") if described else ""
    if not network_file:
        return None
    parser = configparser.ConfigParser(
        strict=False, interpolation=None, empty_lines_in_values=False
    )
    parser.optionxform = str  # type: ignore[assignment]  # systemd's keys are case-sensitive
    value = ""
    for path in (network_file, *dropins(network_file, directories)):  # the last one wins
        try:
            parser.read_string(Path(path).read_text(encoding="utf-8", errors="replace"), path)
        except (OSError, configparser.Error) as err:
            log.debug("cannot read %s: %s", path, err)
            continue
        if parser.has_option("Network", "KeepConfiguration"):
            value = parser.get("Network", "KeepConfiguration").strip()
    return Managed(network_file, value.lower() in _KEEPS_STATIC, value)
