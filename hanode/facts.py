"""What the drift check compares between the two nodes: ``hanode facts``, and ``drift()``.

``gather(config)`` reads this node's facts into one JSON-able document; ``drift(local,
peer)`` compares two such documents and returns the differences, must-match ones
(errors: the pair cannot fail over cleanly) and warning ones (kernel, DRBD module,
libraries: worth aligning). Reading changes nothing; a tool that is absent gives null.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

from hanode import __version__
from hanode.config import Config
from hanode.run import CommandError, run

# hanode's runtime dependencies, as Debian packages them (debian/control's Depends)
PYTHON_PACKAGES = (
    "python3-jeepney",
    "python3-psutil",
    "python3-pyroute2",
    "python3-systemd",
    "python3-tomlkit",
)
FACTS_FORMAT = 1  # bumped when a fact changes its shape
_TOOL_TIMEOUT = 30.0


def plain(value: object) -> Any:
    """A config value as JSON data: records (NamedTuples) as objects keyed as hanode.toml
    names their keys, other tuples as lists, enums by value, anything else that is not a
    JSON scalar (an IP interface, a path) as its text."""
    fields: tuple[str, ...] | None = getattr(value, "_fields", None)
    if isinstance(value, tuple) and fields is not None:
        return {name.replace("_", "-"): plain(getattr(value, name)) for name in fields}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)  # an address, a path: as the config file writes it


def config_facts(config: Config) -> dict[str, Any]:
    """hanode.toml as parsed: each section's settings (not the file's bytes)."""
    settings = {name: plain(value) for name, value in config.settings.items()}
    if config.peer is not None:
        settings["peer"] = plain(config.peer)
    return settings


def file_hash(path: str) -> str | None:
    """The SHA-256 of a file's content, None when it cannot be read."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def normalise_drbd_dump(text: str) -> str:
    """``drbdadm dump`` without its comments (they name files and lines) and blank lines,
    each line stripped: the resource definition as drbdadm understood it."""
    kept = []
    for line in text.splitlines():
        code = line.split("#", 1)[0].strip()
        if code:
            kept.append(" ".join(code.split()))
    return "\n".join(kept)


def drbd_definition(resource: str) -> str | None:
    """The normalised ``drbdadm dump RESOURCE``; None when drbdadm is absent or fails."""
    try:
        done = run(["drbdadm", "dump", resource], timeout=_TOOL_TIMEOUT, check=False)
    except CommandError:
        return None
    if done.returncode != 0:
        return None
    return normalise_drbd_dump(done.stdout)


def owning_packages(paths: Sequence[str]) -> dict[str, str | None]:
    """The package that installed each path (``dpkg-query -S``), None for none."""
    found: dict[str, str | None] = {path: None for path in paths}
    if not paths:
        return found
    # /lib is /usr/lib on a merged-/usr system, and dpkg knows only the name it shipped
    aliases = [alias for path in paths if (alias := _usr_alias(path)) and alias not in found]
    try:
        done = run(["dpkg-query", "-S", "--", *paths, *aliases], timeout=_TOOL_TIMEOUT, check=False)
    except CommandError:
        return found
    for line in done.stdout.splitlines():
        packages, sep, path = line.partition(": ")
        if not sep or packages.startswith("diversion by"):
            continue
        for name in (path, _usr_alias(path)):
            if name in found and found[name] is None:
                found[name] = packages
    return found


def _usr_alias(path: str) -> str | None:
    for short, long in (("/lib/", "/usr/lib/"), ("/bin/", "/usr/bin/"), ("/sbin/", "/usr/sbin/")):
        if path.startswith(long):
            return short + path.removeprefix(long)
        if path.startswith(short):
            return long + path.removeprefix(short)
    return None


def package_versions(packages: Sequence[str]) -> dict[str, str | None]:
    """Each installed package's version (``dpkg-query -W``), None when not installed."""
    versions: dict[str, str | None] = {package: None for package in packages}
    if not packages:
        return versions
    try:
        done = run(
            ["dpkg-query", "-W", "-f", _DPKG_FORMAT, "--", *packages],
            timeout=_TOOL_TIMEOUT,
            check=False,
        )
    except CommandError:
        return versions
    for line in done.stdout.splitlines():
        fields = line.split("\t")
        if len(fields) == 3 and fields[0] in versions and fields[2].startswith("ii"):
            versions[fields[0]] = fields[1]
    return versions


_DPKG_FORMAT = "${Package}\\t${Version}\\t${db:Status-Abbrev}\\n"  # dpkg-query expands the escapes
UNIT_PROPERTIES = ("FragmentPath", "DropInPaths", "UnitFileState")


def unit_facts(units: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each unit's file (path, hash, owning package and its version), its drop-ins (path,
    hash) and whether it is enabled at boot (UnitFileState), from ``systemctl show``."""
    shown = unit_properties(units)
    owners = owning_packages(fragment_paths(shown))
    versions = package_versions(sorted({owner for owner in owners.values() if owner}))
    return describe_units(shown, owners, versions)


def unit_properties(units: Sequence[str]) -> dict[str, dict[str, str]]:
    """UNIT_PROPERTIES of each unit: the running systemd's, else read from the files."""
    shown = _systemd_unit_properties(units) if units else {}
    if units and not shown:
        shown = {unit: _unit_files_offline(unit) for unit in units}
    return shown


def fragment_paths(shown: Mapping[str, Mapping[str, str]]) -> list[str]:
    """The unit files of unit_properties' answer (a unit without one has none)."""
    return [path for props in shown.values() if (path := props.get("FragmentPath", ""))]


def describe_units(
    shown: Mapping[str, Mapping[str, str]],
    owners: Mapping[str, str | None],
    versions: Mapping[str, str | None],
) -> dict[str, dict[str, Any]]:
    """unit_facts from the units' properties, their files' owners and those versions."""
    facts: dict[str, dict[str, Any]] = {}
    for unit, props in shown.items():
        fragment = props.get("FragmentPath") or None
        owner = owners.get(fragment) if fragment else None
        dropins = props.get("DropInPaths", "").split()
        facts[unit] = {
            "file": fragment,
            "hash": file_hash(fragment) if fragment else None,
            "package": owner,
            "package-version": versions.get(owner) if owner else None,
            "drop-ins": {path: file_hash(path) for path in dropins},
            "unit-file-state": props.get("UnitFileState") or None,
        }
    return facts


def _systemd_unit_properties(units: Sequence[str]) -> dict[str, dict[str, str]]:
    """UNIT_PROPERTIES of each unit as the running systemd sees them; {} without one."""
    try:
        done = run(
            ["systemctl", "show", "--property=" + ",".join(UNIT_PROPERTIES), "--", *units],
            timeout=_TOOL_TIMEOUT,
            check=False,
        )
    except CommandError:
        return {}
    if done.returncode != 0:
        return {}
    # one block of KEY=VALUE lines per unit, in the order asked, a blank line between
    shown: dict[str, dict[str, str]] = {}
    for unit, block in zip(units, done.stdout.split("\n\n"), strict=False):
        shown[unit] = dict(line.partition("=")[::2] for line in block.splitlines())
    return shown


# systemd's unit search path (system units), first wins: what FragmentPath would be
UNIT_DIRECTORIES = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)


def _unit_files_offline(unit: str) -> dict[str, str]:
    """UNIT_PROPERTIES of a unit read from the unit directories, for a node whose systemd
    does not answer (a container, a chroot): the first file found, every drop-in, and
    ``systemctl is-enabled`` (which reads the files)."""
    fragment = next(
        (
            os.path.realpath(path)
            for path in (os.path.join(directory, unit) for directory in UNIT_DIRECTORIES)
            if os.path.isfile(path)  # a masked unit is a link to /dev/null: no file
        ),
        "",
    )
    dropins: dict[str, str] = {}
    for directory in reversed(UNIT_DIRECTORIES):  # a higher directory's drop-in wins
        folder = Path(directory, unit + ".d")
        if folder.is_dir():
            dropins.update({entry.name: str(entry) for entry in folder.glob("*.conf")})
    state = ""
    try:
        done = run(["systemctl", "is-enabled", "--", unit], timeout=_TOOL_TIMEOUT, check=False)
        state = done.stdout.strip()
    except CommandError:
        pass
    return {
        "FragmentPath": fragment,
        "DropInPaths": " ".join(dropins[name] for name in sorted(dropins)),
        "UnitFileState": state,
    }


def link_facts(links: Sequence[Any]) -> dict[str, dict[str, bool]]:
    """Each link's PATH: whether it is linked (a symlink to its target) and whether its
    original (PATH.drbdlinks, else PATH itself when it is no link) is there."""
    from hanode.resources.links import SUFFIX

    facts = {}
    for link in links:
        path, target = link.path, link.target
        linked = os.path.islink(path) and os.readlink(path) == target
        aside = os.path.lexists(path + SUFFIX)
        in_place = os.path.lexists(path) and not os.path.islink(path)
        facts[path] = {"linked": linked, "original": aside or in_place}
    return facts


def drbd_module_version() -> str | None:
    """The DRBD kernel module's version: /proc/drbd's first line, else modinfo's."""
    try:
        with open("/proc/drbd", encoding="utf-8", errors="replace") as proc:
            first = proc.readline().strip()
        if first:
            return first
    except OSError:
        pass
    try:
        done = run(["modinfo", "-F", "version", "drbd"], timeout=_TOOL_TIMEOUT, check=False)
    except CommandError:
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def gather(config: Config) -> dict[str, Any]:
    """This node's facts, for ``hanode facts`` and the drift check."""
    from hanode.resources.drbd import DrbdConfig
    from hanode.resources.links import LinksConfig
    from hanode.resources.services import ServicesConfig

    drbd = config.of(DrbdConfig)
    services = config.of(ServicesConfig)
    links = config.of(LinksConfig)
    link_paths = [link.path for link in links.links] if links else []
    shown = unit_properties(list(services.units)) if services else {}
    # one dpkg-query -S and one -W for every question: each -S run reads all the
    # packages' file lists (0.5-0.9 s in a lab guest), each -W the status database
    fragments = fragment_paths(shown)
    owners = owning_packages([*fragments, *link_paths])
    unit_packages = {owners.get(path) for path in fragments}
    versions = package_versions(
        sorted({package for package in unit_packages if package} | set(PYTHON_PACKAGES))
    )
    return {
        "format": FACTS_FORMAT,
        "node": os.uname().nodename,
        "version": __version__,
        "config": config_facts(config),
        "drbd": drbd_definition(drbd.resource) if drbd else None,
        "units": describe_units(shown, owners, versions),
        "links": link_facts(links.links) if links else {},
        "kernel": os.uname().release,
        "drbd-module": drbd_module_version(),
        "python-packages": {package: versions[package] for package in PYTHON_PACKAGES},
        "link-packages": {path: owners[path] for path in link_paths},
    }


class Severity(StrEnum):
    """How much a difference matters."""

    ERROR = "error"  # must match: a failover may not work, or work differently
    WARNING = "warning"  # should match


@dataclass(frozen=True)
class Difference:
    """One fact that differs between the two nodes (or is wrong on one of them)."""

    severity: Severity
    fact: str  # which fact, e.g. "unit postgresql@15-main.service file"
    local: object
    peer: object
    why: str = ""  # for a fact wrong on its own (a unit enabled at boot): what is wrong

    @property
    def must_match(self) -> bool:
        """Whether it refuses a switchover (an error, not a warning)."""
        return self.severity is Severity.ERROR

    def __str__(self) -> str:
        text = f"{self.fact}: here {shown(self.local)}, peer {shown(self.peer)}"
        return f"{text} ({self.why})" if self.why else text

    def to_json(self) -> dict[str, object]:
        """The difference as JSON data."""
        return {
            "severity": self.severity.value,
            "fact": self.fact,
            "local": self.local,
            "peer": self.peer,
            "why": self.why,
        }


def shown(value: object) -> str:
    """A fact's value in one line."""
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 200 else text[:197] + "..."


def drift(local: Mapping[str, Any], peer: Mapping[str, Any]) -> list[Difference]:
    """The differences between two nodes' facts (``gather``'s documents); none: no drift.

    Must match (errors): hanode's version, the parsed config, the DRBD resource
    definition, each unit's file, drop-ins, package and version, every unit disabled at
    boot on both nodes, each link's original present where the link is not in place (the
    standby). Warnings: kernel, DRBD module, python packages, packages owning link paths.
    """
    found: list[Difference] = []

    def compare(fact: str, here: object, there: object, severity: Severity) -> None:
        if here != there:
            found.append(Difference(severity, fact, here, there))

    error, warning = Severity.ERROR, Severity.WARNING
    compare("hanode version", local.get("version"), peer.get("version"), error)
    compare("facts format", local.get("format"), peer.get("format"), error)
    here_config, there_config = local.get("config") or {}, peer.get("config") or {}
    for section in sorted(set(here_config) | set(there_config)):
        compare(f"config [{section}]", here_config.get(section), there_config.get(section), error)
    compare("DRBD resource definition", local.get("drbd"), peer.get("drbd"), error)

    here_units, there_units = local.get("units") or {}, peer.get("units") or {}
    for unit in sorted(set(here_units) | set(there_units)):
        mine, theirs = here_units.get(unit) or {}, there_units.get(unit) or {}
        for key, label in (
            ("file", "file"),
            ("hash", "file content (sha256)"),
            ("drop-ins", "drop-ins (path: sha256)"),
            ("package", "package"),
            ("package-version", "package version"),
        ):
            compare(f"unit {unit} {label}", mine.get(key), theirs.get(key), error)
        for side, facts in (("local", mine), ("peer", theirs)):
            state = facts.get("unit-file-state")
            if state in ("enabled", "enabled-runtime", "linked", "linked-runtime", "alias"):
                values = (state, theirs.get("unit-file-state"))
                if side == "peer":
                    values = (mine.get("unit-file-state"), state)
                found.append(
                    Difference(
                        error,
                        f"unit {unit} at boot",
                        *values,
                        why=f"{state} on the {side} node: hanode starts it, "
                        f"`systemctl disable {unit}` there",
                    )
                )

    here_links, there_links = local.get("links") or {}, peer.get("links") or {}
    for path in sorted(set(here_links) | set(there_links)):
        mine, theirs = here_links.get(path) or {}, there_links.get(path) or {}
        for side, facts in (("local", mine), ("peer", theirs)):
            if facts and not facts.get("linked") and not facts.get("original"):
                found.append(
                    Difference(
                        error,
                        f"link {path} original",
                        mine.get("original"),
                        theirs.get("original"),
                        why=f"neither {path} nor {path}.drbdlinks on the {side} node (standby)",
                    )
                )

    compare("kernel release", local.get("kernel"), peer.get("kernel"), warning)
    compare("DRBD module", local.get("drbd-module"), peer.get("drbd-module"), warning)
    for kind, label in (("python-packages", "package"), ("link-packages", "owner of")):
        mine, theirs = local.get(kind) or {}, peer.get(kind) or {}
        for name in sorted(set(mine) | set(theirs)):
            compare(f"{label} {name}", mine.get(name), theirs.get(name), warning)
    return found
