"""hanode.toml → frozen dataclasses, with one-line errors naming file, line and key.

Every section is optional; what is absent is not managed. The TOML is read with tomlkit
(the same library ``import-drbdlinks`` writes with, so comments survive). TOML syntax
errors carry tomlkit's own line; for a bad value the line of its key is found in the
text; a duplicated key (tomlkit's error has no line) is found the same way.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import tomlkit
import tomlkit.exceptions

from hanode.errors import ConfigError

DEFAULT_PATH = Path("/etc/hanode/hanode.toml")
IFNAMSIZ = 16  # the kernel's limit, NUL included: names and labels are <= 15 characters
UNIT_SUFFIXES = (".service", ".socket", ".target", ".mount", ".timer", ".path", ".scope")


@dataclass(frozen=True)
class Config:
    """The parsed hanode.toml: each configured section's settings, in start order."""

    path: Path
    settings: Mapping[str, object] = field(default_factory=dict)  # section -> its config

    def sections(self) -> list[str]:
        """Names of the configured sections, in start order."""
        return list(self.settings)

    def of(self, kind: type[_T]) -> _T | None:
        """The settings of the section whose config type is ``kind``; None when absent."""
        for value in self.settings.values():
            if isinstance(value, kind):
                return value
        return None


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

    from hanode.resources import kinds

    known = {kind.section: kind for kind in kinds()}
    for name, value in data.items():
        if name not in known:
            raise ConfigError(
                f"{lines.at(name)}: unknown section [{name}]",
                f"known sections: {', '.join(known)}",
            )
        if not isinstance(value, dict):
            raise ConfigError(f"{lines.at(name)}: {name} must be a [{name}] table")

    settings: dict[str, object] = {}
    for name, kind in known.items():
        if name in data:
            table = Table(data, name, lines)
            settings[name] = kind.parse(table, settings)
            table.finish()
    return Config(path, settings)


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
REQUIRED: Any = object()


class Table:
    """Typed access to one section's keys, for its resource kind's parser.

    Every error names the file and the line of the key; keys left unread are errors.
    """

    def __init__(self, data: Mapping[str, Any], name: str, lines: _Locator) -> None:
        self.name = name
        self.lines = lines
        self.raw: Mapping[str, Any] = data.get(name, {})
        self.taken: set[str] = set()

    def error(self, key: str | None, message: str, hint: str | None = None) -> ConfigError:
        where = self.lines.at(self.name, key)
        what = f"[{self.name}] {key}" if key else f"[{self.name}]"
        return ConfigError(f"{where}: {what}: {message}", hint)

    def item_error(
        self, key: str, index: int, message: str, hint: str | None = None, value: str | None = None
    ) -> ConfigError:
        """An error in entry ``index`` of the array ``key``, at the line showing ``value``."""
        where = self.lines.at(self.name, key, value)
        return ConfigError(f"{where}: [{self.name}] {key}[{index}]: {message}", hint)

    def get(self, key: str, kind: type[_T], default: _T = REQUIRED) -> _T:
        self.taken.add(key)
        if key not in self.raw:
            if default is REQUIRED:
                raise self.error(None, f"missing required key {key}")
            return default
        value = self.raw[key]
        # bool is an int in Python, never in TOML: keep them apart
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(key, f"expected {_kind_name(kind)}, got {describe(value)}")
        return value

    def string(self, key: str, default: str = REQUIRED) -> str:
        value = self.get(key, str, default)
        if value is not default and not value.strip():
            raise self.error(key, "must not be empty")
        return value

    def integer(self, key: str, low: int, high: int, default: Any = REQUIRED) -> Any:
        value = self.get(key, int, default)
        if value is not default and not low <= value <= high:
            raise self.error(key, f"must be between {low} and {high}, got {value}")
        return value

    def path(self, key: str, default: str = REQUIRED) -> str:
        value = self.string(key, default)
        if value is default:
            return value
        check_path(value, lambda message: self.error(key, message))
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


def describe(value: object) -> str:
    """A TOML value named for an error message."""
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


def check_path(value: str, error: Callable[[str], ConfigError]) -> None:
    """Refuse a path that is relative, climbs with .., or ends with /."""
    if not value.startswith("/"):
        raise error(f"must be an absolute path, got {value!r}")
    if ".." in PurePosixPath(value).parts:
        raise error(f"must not contain '..', got {value!r}")
    if value != "/" and value.endswith("/"):
        raise error(f"must not end with '/', got {value!r}")


def is_below(path: str, directory: str) -> bool:
    """Whether ``path`` lies strictly inside ``directory`` (lexically)."""
    inner = PurePosixPath(path)
    outer = PurePosixPath(directory)
    return inner != outer and inner.is_relative_to(outer)


def first_duplicate(items: Iterable[str]) -> str | None:
    """The first item that appears a second time, if any."""
    seen: set[str] = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return None
