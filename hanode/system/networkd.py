"""Whether systemd-networkd would take the floating IP away: a `check` concern.

systemd-networkd removes, when it (re)configures a link it manages, every address it did
not add itself ("foreign" ones), unless the link's .network file says
``KeepConfiguration=static`` (or ``yes``). hanode's floating IP is such an address: any
restart of systemd-networkd (an upgrade of systemd, its watchdog) would remove it from
the active node, silently. ifupdown and NetworkManager-less hosts are not concerned.

What networkd applies to a link is in its state file, /run/systemd/netif/links/INDEX
(``NETWORK_FILE=``, ``NETWORK_FILE_DROPINS=``); the files are systemd's INI dialect, read
with configparser (duplicate keys and sections allowed, the last value winning, as
systemd does for a single-valued setting such as KeepConfiguration).
"""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path
from typing import NamedTuple

NETIF_LINKS = Path("/run/systemd/netif/links")
# KeepConfiguration= values that keep an address with an infinite lifetime (systemd.network(5))
_KEEPS_STATIC = frozenset({"static", "yes", "true", "on", "1"})


class Managed(NamedTuple):
    """A link systemd-networkd configures: its .network file(s) and what they say."""

    network_file: str
    keeps_static: bool  # KeepConfiguration= keeps a foreign address of infinite lifetime
    keep_configuration: str  # its value as written ("" when not set)


def _state(index: int, links: Path) -> dict[str, str]:
    """The link's networkd state file as KEY=VALUE pairs ({} when networkd has none)."""
    try:
        text = (links / str(index)).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    state = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            state[key.strip()] = value.strip()
    return state


def managed(index: int, links: Path | None = None) -> Managed | None:
    """What systemd-networkd applies to link ``index`` (state files in ``links``, default
    NETIF_LINKS); None when it does not manage it (no networkd, an unmanaged link, or no
    .network file matched)."""
    state = _state(index, NETIF_LINKS if links is None else links)
    network_file = state.get("NETWORK_FILE", "")
    if not network_file:
        return None
    files = [network_file, *shlex.split(state.get("NETWORK_FILE_DROPINS", ""))]
    parser = configparser.ConfigParser(
        strict=False, interpolation=None, empty_lines_in_values=False
    )
    parser.optionxform = str  # type: ignore[assignment]  # systemd's keys are case-sensitive
    value = ""
    for path in files:  # the main file, then its drop-ins in networkd's order: last wins
        try:
            parser.read_string(Path(path).read_text(encoding="utf-8", errors="replace"), path)
        except (OSError, configparser.Error):
            continue
        if parser.has_option("Network", "KeepConfiguration"):
            value = parser.get("Network", "KeepConfiguration")
    return Managed(network_file, value.strip().lower() in _KEEPS_STATIC, value.strip())
