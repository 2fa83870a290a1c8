"""hanode.toml → frozen dataclasses, with one-line errors naming file, line and key.

Every section is optional; what is absent is not managed. The TOML is read with tomlkit
(the same library ``import-drbdlinks`` writes with, so comments survive). TOML syntax
errors carry tomlkit's own line; for a bad value the line of its key is found in the
text; a duplicated key (tomlkit's error has no line) is found the same way.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import tomlkit
import tomlkit.exceptions

from hanode.errors import ConfigError

DEFAULT_PATH = Path("/etc/hanode/hanode.toml")
IFNAMSIZ = 16  # the kernel's limit, NUL included: names and labels are <= 15 characters
UNIT_SUFFIXES = (".service", ".socket", ".target", ".mount", ".timer", ".path", ".scope")


class Fsck(StrEnum):
    """When to check the filesystem before mounting it."""

    NEVER = "never"
    AUTO = "auto"  # fsck -p: repairs what is safe, fails on what needs a person
    ALWAYS = "always"  # fsck -f -p: a full check even when marked clean


class DemoteFailure(StrEnum):
    """What to do when ``drbdadm secondary`` fails on stop."""

    FAIL = "fail"
    FORCE = "force"
    REBOOT = "reboot"


@dataclass(frozen=True)
class DrbdConfig:
    resource: str
    wfc_timeout: int | None = None  # None: from `drbdadm dump`, else 10
    degr_wfc_timeout: int | None = None
    outdated_wfc_timeout: int | None = None
    become_primary_on: str | None = None  # None: from drbd.conf's startup section
    on_demote_failure: DemoteFailure = DemoteFailure.FAIL


@dataclass(frozen=True)
class FilesystemConfig:
    device: str
    mountpoint: str
    type: str = "ext4"
    options: str = ""
    kill_holders: bool = True
    stop_timeout: int = 30
    fsck: Fsck = Fsck.NEVER


@dataclass(frozen=True)
class LinkSpec:
    path: str  # the place services look at, e.g. /etc/apache2
    target: str  # where it lives on the replicated filesystem, e.g. /srv/etc-apache2


@dataclass(frozen=True)
class LinksConfig:
    mountpoint: str
    links: tuple[LinkSpec, ...]


@dataclass(frozen=True)
class AddressConfig:
    ip: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    interface: str
    label: str  # IPv4 only: IPv6 addresses carry no label in Linux
    arp_count: int = 5
    probe: bool = True


@dataclass(frozen=True)
class ServicesConfig:
    units: tuple[str, ...]
    timeout: int = 90


@dataclass(frozen=True)
class Config:
    path: Path
    drbd: DrbdConfig | None = None
    filesystem: FilesystemConfig | None = None
    links: LinksConfig | None = None
    address: AddressConfig | None = None
    services: ServicesConfig | None = None

    def sections(self) -> list[str]:
        """Names of the configured sections, in start order."""
        return [name for name in SECTIONS if getattr(self, name) is not None]


SECTIONS = ("drbd", "filesystem", "links", "address", "services")


def config_path(cli_value: str | None) -> Path:
    """-c FILE, else $HANODE_CONFIG, else /etc/hanode/hanode.toml."""
    if cli_value:
        return Path(cli_value)
    env = os.environ.get("HANODE_CONFIG")
    return Path(env) if env else DEFAULT_PATH


def load(path: Path, *, insecure: bool = False) -> Config:
    """Read, check and return the configuration at ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file", "give the config with -c FILE or HANODE_CONFIG"
        ) from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot open: {err.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if not insecure:
            _check_ownership(path, os.fstat(handle.fileno()))
        raw = handle.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 at byte {err.start}") from None
    return parse(text, path)


def _check_ownership(path: Path, st: os.stat_result) -> None:
    # hanode runs as root and starts what the file names: only root may write it.
    if st.st_uid != 0:
        raise ConfigError(
            f"{path}: owned by uid {st.st_uid}, not root",
            f"chown root: {path}, or --insecure-config for tests",
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"{path}: writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})",
            f"chmod go-w {path}",
        )


def parse(text: str, path: Path) -> Config:
    """Parse TOML text into a Config; ``path`` is used in messages only."""
    lines = _Locator(text, path)
    try:
        document = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as err:
        raise ConfigError(f"{path}:{err.line}: invalid TOML: {_parse_reason(err)}") from None
    except tomlkit.exceptions.KeyAlreadyPresent as err:
        raise ConfigError(lines.duplicate_key_message(str(err))) from None
    data: dict[str, Any] = document.unwrap()

    for name, value in data.items():
        if name not in SECTIONS:
            raise ConfigError(
                f"{lines.at(name)}: unknown section [{name}]",
                f"known sections: {', '.join(SECTIONS)}",
            )
        if not isinstance(value, dict):
            raise ConfigError(f"{lines.at(name)}: {name} must be a [{name}] table")

    drbd = _drbd(_Section(data, "drbd", lines))
    filesystem = _filesystem(_Section(data, "filesystem", lines))
    links = _links(_Section(data, "links", lines), filesystem)
    address = _address(_Section(data, "address", lines))
    services = _services(_Section(data, "services", lines))
    return Config(path, drbd, filesystem, links, address, services)


def _parse_reason(err: tomlkit.exceptions.ParseError) -> str:
    # tomlkit's message ends with " at line L col C": we already lead with the line.
    return re.sub(r" at line \d+ col \d+$", "", str(err))


class _Locator:
    """Finds the line of a section, key or value in the text, for error messages."""

    def __init__(self, text: str, path: Path) -> None:
        self.path = path
        self.lines = text.splitlines()

    def _section_range(self, section: str) -> tuple[int, int] | None:
        header = re.compile(r"^\s*\[\s*" + re.escape(section) + r"\s*\]\s*(#.*)?$")
        any_header = re.compile(r"^\s*\[")
        for start, line in enumerate(self.lines):
            if header.match(line):
                end = next(
                    (
                        n
                        for n in range(start + 1, len(self.lines))
                        if any_header.match(self.lines[n])
                    ),
                    len(self.lines),
                )
                return start, end
        return None

    def line_of(self, section: str, key: str | None = None, value: str | None = None) -> int | None:
        span = self._section_range(section)
        if span is None:
            return None
        start, end = span
        if key is None:
            return start + 1
        key_re = re.compile(r"^\s*[\"']?" + re.escape(key) + r"[\"']?\s*=")
        for number in range(start + 1, end):
            if key_re.match(self.lines[number]):
                if value is None:
                    return number + 1
                # a value inside an array may sit on a later line of the same key
                for inner in range(number, end):
                    if value in self.lines[inner]:
                        return inner + 1
                return number + 1
        return start + 1

    def at(self, section: str, key: str | None = None, value: str | None = None) -> str:
        line = self.line_of(section, key, value)
        return f"{self.path}:{line}" if line else str(self.path)

    def duplicate_key_message(self, error: str) -> str:
        match = re.search(r'Key "(.+)" already exists', error)
        key = match.group(1) if match else None
        headers: dict[str, int] = {}
        keys: dict[tuple[str, str], int] = {}
        section = ""
        header_re = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]")
        key_re = re.compile(r"^\s*[\"']?([A-Za-z0-9_-]+)[\"']?\s*=")
        for number, line in enumerate(self.lines, start=1):
            found = header_re.match(line)
            if found:
                section = found.group(1)
                if section in headers:
                    return (
                        f"{self.path}:{number}: section [{section}] defined twice "
                        f"(first at line {headers[section]})"
                    )
                headers[section] = number
                continue
            found = key_re.match(line)
            if found:
                name = found.group(1)
                if (section, name) in keys:
                    where = f"[{section}] " if section else ""
                    return (
                        f"{self.path}:{number}: {where}{name} defined twice "
                        f"(first at line {keys[(section, name)]})"
                    )
                keys[(section, name)] = number
        return f"{self.path}: key {key or '?'} defined twice"


_T = TypeVar("_T")
_REQUIRED: Any = object()


class _Section:
    """Typed access to one section's keys; unknown keys are errors."""

    def __init__(self, data: Mapping[str, Any], name: str, lines: _Locator) -> None:
        self.name = name
        self.lines = lines
        self.present = name in data
        self.raw: Mapping[str, Any] = data.get(name, {})
        self.taken: set[str] = set()

    def error(self, key: str | None, message: str, hint: str | None = None) -> ConfigError:
        where = self.lines.at(self.name, key)
        what = f"[{self.name}] {key}" if key else f"[{self.name}]"
        return ConfigError(f"{where}: {what}: {message}", hint)

    def get(self, key: str, kind: type[_T], default: _T = _REQUIRED) -> _T:
        self.taken.add(key)
        if key not in self.raw:
            if default is _REQUIRED:
                raise self.error(None, f"missing required key {key}")
            return default
        value = self.raw[key]
        # bool is an int in Python, never in TOML: keep them apart
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(key, f"expected {_kind_name(kind)}, got {_describe(value)}")
        return value

    def string(self, key: str, default: str = _REQUIRED) -> str:
        value = self.get(key, str, default)
        if value is not default and not value.strip():
            raise self.error(key, "must not be empty")
        return value

    def integer(self, key: str, low: int, high: int, default: Any = _REQUIRED) -> Any:
        value = self.get(key, int, default)
        if value is not default and not low <= value <= high:
            raise self.error(key, f"must be between {low} and {high}, got {value}")
        return value

    def path(self, key: str, default: str = _REQUIRED) -> str:
        value = self.string(key, default)
        if value is default:
            return value
        _check_path(value, lambda message: self.error(key, message))
        return value

    def choice(self, key: str, enum: type[_E], default: _E) -> _E:
        value = self.get(key, str, default.value)
        try:
            return enum(value)
        except ValueError:
            allowed = ", ".join(f'"{member.value}"' for member in enum)
            raise self.error(key, f"expected one of {allowed}, got {value!r}") from None

    def finish(self) -> None:
        unknown = [key for key in self.raw if key not in self.taken]
        if unknown:
            key = unknown[0]
            known = ", ".join(sorted(self.taken))
            raise self.error(key, "unknown key", f"known keys here: {known}")


_E = TypeVar("_E", bound=StrEnum)


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", bool: "true or false", list: "an array"}.get(
        kind, kind.__name__
    )


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _check_path(value: str, error: Any) -> None:
    if not value.startswith("/"):
        raise error(f"must be an absolute path, got {value!r}")
    if ".." in PurePosixPath(value).parts:
        raise error(f"must not contain '..', got {value!r}")
    if value != "/" and value.endswith("/"):
        raise error(f"must not end with '/', got {value!r}")


def _timeout(section: _Section, key: str) -> int | None:
    value: int | None = section.get(key, int, None)
    if value is None:
        return None
    if value == 0:
        raise section.error(
            key, "0 would wait for the peer forever; hanode never does", "give a timeout in seconds"
        )
    if not 1 <= value <= 86400:
        raise section.error(key, f"must be between 1 and 86400 seconds, got {value}")
    return value


def _drbd(section: _Section) -> DrbdConfig | None:
    if not section.present:
        return None
    resource = section.string("resource")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", resource):
        raise section.error("resource", f"not a DRBD resource name: {resource!r}")
    config = DrbdConfig(
        resource=resource,
        wfc_timeout=_timeout(section, "wfc-timeout"),
        degr_wfc_timeout=_timeout(section, "degr-wfc-timeout"),
        outdated_wfc_timeout=_timeout(section, "outdated-wfc-timeout"),
        become_primary_on=section.get("become-primary-on", str, None),
        on_demote_failure=section.choice("on-demote-failure", DemoteFailure, DemoteFailure.FAIL),
    )
    section.finish()
    return config


def _filesystem(section: _Section) -> FilesystemConfig | None:
    if not section.present:
        return None
    config = FilesystemConfig(
        device=section.path("device"),
        mountpoint=section.path("mountpoint"),
        type=section.string("type", "ext4"),
        options=section.get("options", str, ""),
        kill_holders=section.get("kill-holders", bool, True),
        stop_timeout=section.integer("stop-timeout", 1, 3600, 30),
        fsck=section.choice("fsck", Fsck, Fsck.NEVER),
    )
    if config.mountpoint == "/":
        raise section.error("mountpoint", "must not be /")
    if not re.fullmatch(r"[a-z0-9.]+", config.type):
        raise section.error("type", f"not a filesystem type: {config.type!r}")
    if any(ch.isspace() for ch in config.options):
        raise section.error("options", "must not contain white space", 'use "opt1,opt2"')
    section.finish()
    return config


def _links(section: _Section, filesystem: FilesystemConfig | None) -> LinksConfig | None:
    if not section.present:
        return None
    if filesystem is None and "mountpoint" not in section.raw:
        raise section.error(None, "missing mountpoint (no [filesystem] section to take it from)")
    mountpoint = section.path("mountpoint", filesystem.mountpoint if filesystem else _REQUIRED)
    entries = section.get("links", list)
    if not entries:
        raise section.error("links", "must list at least one link")
    links: list[LinkSpec] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):

        def error(
            message: str, hint: str | None = None, value: str | None = None, index: int = index
        ) -> ConfigError:
            line = section.lines.at(section.name, "links", value)
            return ConfigError(f"{line}: [links] links[{index}]: {message}", hint)

        if not isinstance(entry, dict):
            raise error(f"expected a table {{ path = ..., target = ... }}, got {_describe(entry)}")
        unknown = sorted(set(entry) - {"path", "target"})
        if unknown:
            raise error(f"unknown key {unknown[0]}", "known keys here: path, target")
        for key in ("path", "target"):
            if key not in entry:
                raise error(f"missing {key}")
            if not isinstance(entry[key], str):
                raise error(f"{key}: expected a string, got {_describe(entry[key])}")
            _check_path(entry[key], lambda message, v=entry[key]: error(message, value=v))
        link = LinkSpec(entry["path"], entry["target"])
        if not _is_below(link.target, mountpoint):
            raise error(
                f"target {link.target} is outside the mountpoint {mountpoint}",
                "targets live on the replicated filesystem",
                link.target,
            )
        if _is_below(link.path, mountpoint) or link.path == mountpoint:
            raise error(f"path {link.path} is inside the mountpoint {mountpoint}", value=link.path)
        if link.path in seen:
            raise error(f"path {link.path} is linked twice", value=link.path)
        seen.add(link.path)
        links.append(link)
    section.finish()
    return LinksConfig(mountpoint, tuple(links))


def _is_below(path: str, directory: str) -> bool:
    inner = PurePosixPath(path)
    outer = PurePosixPath(directory)
    return inner != outer and inner.is_relative_to(outer)


def _address(section: _Section) -> AddressConfig | None:
    if not section.present:
        return None
    text = section.string("ip")
    if "/" not in text:
        raise section.error("ip", f"needs a prefix length, got {text!r}", 'e.g. "192.0.2.10/24"')
    try:
        ip = ipaddress.ip_interface(text)
    except ValueError as err:
        raise section.error("ip", f"not an IP address with prefix: {err}") from None
    if ip.ip.is_multicast or ip.ip.is_unspecified or ip.ip.is_loopback:
        raise section.error("ip", f"{ip.ip} cannot be a floating address")
    if (
        ip.version == 4
        and ip.network.prefixlen < 31
        and ip.ip
        in (
            ip.network.network_address,
            ip.network.broadcast_address,
        )
    ):
        raise section.error("ip", f"{ip.ip} is the network or broadcast address of {ip.network}")
    interface = section.string("interface")
    if len(interface) >= IFNAMSIZ or not re.fullmatch(r"[A-Za-z0-9_.@-]+", interface):
        raise section.error("interface", f"not an interface name: {interface!r}")
    label = section.string("label", f"{interface}:1")
    if len(label) >= IFNAMSIZ:
        raise section.error(
            "label", f"{label!r} is {len(label)} characters; the kernel allows at most 15"
        )
    if not label.startswith(interface):
        raise section.error(
            "label",
            f"{label!r} must start with the interface name {interface!r}",
            f'e.g. "{interface}:1"',
        )
    config = AddressConfig(
        ip=ip,
        interface=interface,
        label=label,
        arp_count=section.integer("arp-count", 0, 100, 5),
        probe=section.get("probe", bool, True),
    )
    section.finish()
    return config


def _services(section: _Section) -> ServicesConfig | None:
    if not section.present:
        return None
    units = section.get("units", list)
    if not units:
        raise section.error("units", "must list at least one unit", 'e.g. ["apache2.service"]')
    for unit in units:
        if not isinstance(unit, str):
            raise section.error("units", f"expected unit names, got {_describe(unit)}")
        if not unit.endswith(UNIT_SUFFIXES) or "/" in unit or unit.startswith("."):
            raise section.error(
                "units", f"not a unit name: {unit!r}", 'units end in ".service", ".socket", ...'
            )
    duplicates = _first_duplicate(units)
    if duplicates:
        raise section.error("units", f"{duplicates} is listed twice")
    config = ServicesConfig(units=tuple(units), timeout=section.integer("timeout", 1, 3600, 90))
    section.finish()
    return config


def _first_duplicate(items: Iterable[str]) -> str | None:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return None
