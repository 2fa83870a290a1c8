"""hanode.toml → NamedTuples, with one-line errors naming file, line and key.

Every section is optional; what is absent is not managed. A config cannot hurt: it is
read only if it is a regular file of at most MAX_CONFIG_BYTES reached through no symlink
(and, unless --insecure-config, only root can change it or any directory above it); any
problem in it is a ConfigError (exit 2) whose one line starts with ``FILE:LINE:``.

The TOML is parsed with the standard library's tomllib, not tomlkit (which
import-drbdlinks writes with, to keep comments): tomlkit takes 2 s to parse 4 KB of
sub-tables and 200 s for 37 KB, tomllib milliseconds. Syntax errors carry tomllib's
line; a value's line is that of its key's statement, located in the text (regexes
locate, tomllib decodes quoted keys).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from functools import cached_property
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

from hanode.configfile import (
    DEFAULT_FILE,
    config_file,
    has_control,
    printable,
    read_bytes,
)
from hanode.errors import ConfigError

DEFAULT_PATH = Path(DEFAULT_FILE)
IFNAMSIZ = 16  # the kernel's limit, NUL included: names and labels are <= 15 characters
UNIT_SUFFIXES = (".service", ".socket", ".target", ".mount", ".timer", ".path", ".scope")
# No setting needs a longer line; it caps tomllib's quadratic case (see
# hanode.configfile.MAX_CONFIG_BYTES) at ~0.02 s a line.
MAX_LINE_CHARS = 4096


class Config(NamedTuple):
    """The parsed hanode.toml: each configured section's settings, in start order."""

    path: Path
    settings: Mapping[str, object] = MappingProxyType({})  # section -> its config
    peer: PeerConfig | None = None  # [peer]: how to reach the other node (not a step)

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
    return Path(config_file(cli_value))


def load(path: Path, *, insecure: bool = False) -> Config:
    """Read, check and return the configuration at ``path``.

    ``insecure`` (--insecure-config, for tests) skips the ownership checks of the file and
    of its directories; a symlink, a file that is not a regular one and an oversized file
    are refused either way, before a byte is read.
    """
    shown = printable(str(path))
    raw = read_bytes(path, insecure=insecure)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise ConfigError(
            f"{shown}:{line}: not UTF-8 (byte 0x{raw[err.start]:02x} at column {column})",
            "save the file as UTF-8",
        ) from None
    return parse(text, path)


def parse(text: str, path: Path) -> Config:
    """Parse TOML text into a Config; ``path`` is used in messages only."""
    lines = _Locator(text, path)
    data = _toml(text, lines)

    from hanode.resources import kinds

    known = {kind.section: kind for kind in kinds()}
    for name, value in data.items():
        if name not in known and name != PEER_SECTION:
            raise ConfigError(
                f"{lines.at((name,))}: unknown section [{printable(name)}]",
                f"known sections: {', '.join([*known, PEER_SECTION])}",
            )
        if not isinstance(value, dict):
            raise ConfigError(
                f"{lines.at((name,))}: {name} must be a [{name}] table, got {describe(value)}"
            )

    settings: dict[str, object] = {}
    for name, kind in known.items():
        if name in data:
            table = Table(data, name, lines)
            table.refuse_control_characters()
            settings[name] = kind.parse(table, settings)
            table.finish()
    peer = None
    if PEER_SECTION in data:
        table = Table(data, PEER_SECTION, lines)
        table.refuse_control_characters()
        peer = _parse_peer(table)
        table.finish()
    return Config(path, settings, peer)


PEER_SECTION = "peer"
# A host name (RFC 1123 labels) or an IPv4/IPv6 literal: what ssh takes as a destination
# and `uname -n` gives; never an option ("-oProxyCommand=...") nor a user@ or a port.
# Regexes are kept as text and compiled by re at first use (re caches them): a run whose
# config has no [peer], or no error to locate, never pays for compiling them.
_NODE_NAME_RE = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9-]{1,63})*"
_ADDRESS_RE = r"[A-Za-z0-9][A-Za-z0-9.:-]*"
_USER_RE = r"[a-z_][a-z0-9_-]{0,31}"


class PeerConfig(NamedTuple):
    """[peer]: the two nodes and how one reaches the other's hanode over SSH."""

    nodes: tuple[str, str]
    addresses: Mapping[str, str] = MappingProxyType({})  # node -> ssh destination
    user: str = "root"
    identity: str = "/etc/hanode/peer_ed25519"
    connect_timeout: int = 5
    known_hosts: str = "/etc/hanode/peer_known_hosts"

    def other(self, this: str) -> str | None:
        """The other node's name, seen from node ``this``; None if ``this`` is not one."""
        if this not in self.nodes:
            return None
        return self.nodes[1] if this == self.nodes[0] else self.nodes[0]

    def address(self, node: str) -> str:
        """Where ssh reaches ``node``: its [peer] addresses entry, else its name."""
        return self.addresses.get(node, node)


def _parse_peer(table: Table) -> PeerConfig:
    nodes = table.get("nodes", list)
    if len(nodes) != 2:
        raise table.error(
            "nodes", f"must name exactly two nodes, got {len(nodes)}", 'nodes = ["node1", "node2"]'
        )
    for index, node in enumerate(nodes):
        if not isinstance(node, str) or not re.fullmatch(_NODE_NAME_RE, node):
            shown = node if isinstance(node, str) else None
            raise table.item_error(
                "nodes",
                index,
                f"expected a node name (its `uname -n`), got {describe(node)}",
                value=shown,
            )
    if nodes[0] == nodes[1]:
        raise table.item_error("nodes", 1, f"{nodes[1]} is named twice", value=nodes[1])
    addresses = table.get("addresses", dict, {})
    for node, address in addresses.items():
        if node not in nodes:
            raise table.error(
                "addresses", f"{printable(node)} is not one of nodes", f"nodes: {', '.join(nodes)}"
            )
        if not isinstance(address, str) or not re.fullmatch(_ADDRESS_RE, address):
            raise table.error(
                "addresses",
                f"{node}: expected a host name or IP address, got {describe(address)}",
            )
    user = table.string("user", "root")
    if not re.fullmatch(_USER_RE, user):
        raise table.error("user", f"expected a user name, got {user!r}")
    return PeerConfig(
        nodes=(nodes[0], nodes[1]),
        addresses=dict(addresses),
        user=user,
        identity=table.path("identity", "/etc/hanode/peer_ed25519"),
        connect_timeout=table.integer("connect-timeout", 1, 300, 5),
        known_hosts=table.path("known-hosts", "/etc/hanode/peer_known_hosts"),
    )


def _toml(text: str, lines: _Locator) -> dict[str, Any]:
    for count, content in enumerate(lines.raw, start=1):
        if len(content) > MAX_LINE_CHARS:
            raise ConfigError(
                f"{lines.shown}:{count}: line of {len(content)} characters, over the "
                f"{MAX_LINE_CHARS} a config line may have"
            )
    if text.startswith("\ufeff"):  # invisible in an editor: tomllib's "Invalid statement" puzzles
        raise ConfigError(
            f"{lines.shown}:1: starts with a byte order mark (U+FEFF)", "save it without BOM"
        )
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(lines.syntax_error(str(err))) from None
    except Exception as err:
        # The parser is a function of the text alone: whatever else it raises is the
        # text's fault (RecursionError for values nested a few hundred deep).
        line = lines.first_failing(type(err))
        reason = "values nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise ConfigError(f"{lines.shown}:{line}: invalid TOML: {printable(reason)}") from None


# What locates a statement: a TOML key (bare, "basic" or 'literal', dotted) heading a
# line as `[key]`, `[[key]]` or `key =`. Only to find lines; tomllib decodes the key.
_BARE_KEY = r"[A-Za-z0-9_-]+"
_KEY_PART = rf"""(?:{_BARE_KEY}|"(?:[^"\\]|\\.)*"|'[^']*')"""
_KEY = rf"{_KEY_PART}(?:[ \t]*\.[ \t]*{_KEY_PART})*"
_HEADER_RE = rf"[ \t]*(\[\[?)[ \t]*({_KEY})[ \t]*\]\]?[ \t]*(?:#.*)?"
_ASSIGN_RE = rf"[ \t]*({_KEY})[ \t]*="
_BARE_DOTTED_RE = rf"{_BARE_KEY}(?:[ \t]*\.[ \t]*{_BARE_KEY})*"
_WHERE_RE = r" \(at line (\d+), column (\d+)\)$"
_AT_END = " (at end of document)"
_REDEFINED = ("Cannot overwrite", "Cannot declare", "Cannot redefine", "Cannot mutate")


class _Statement(NamedTuple):
    """A line that names a key: a table header or the start of a key = value pair."""

    line: int
    table: tuple[str, ...]  # the table it is in (a header: the table it opens)
    key: tuple[str, ...]  # the key, dotted parts (a header: none)
    header: str  # "[" or "[[" for a header, "" for key = value

    @property
    def path(self) -> tuple[str, ...]:
        return self.table + self.key


def _key_path(text: str) -> tuple[str, ...] | None:
    """The parts of a dotted key as written in the text; None if tomllib refuses it."""
    if re.fullmatch(_BARE_DOTTED_RE, text):
        return tuple(part.strip(" \t") for part in text.split("."))
    try:
        node: object = tomllib.loads(f"{text} = 0")
    except tomllib.TOMLDecodeError:
        return None
    parts: list[str] = []
    while isinstance(node, dict) and len(node) == 1:
        key, node = next(iter(node.items()))
        parts.append(key)
    return tuple(parts)


def _first(count: int, holds: Callable[[int], bool]) -> int:
    """The least n in 1..count for which ``holds(n)``, by bisection (``holds(count)``)."""
    low, high = 1, max(count, 1)
    while low < high:
        middle = (low + high) // 2
        if holds(middle):
            high = middle
        else:
            low = middle + 1
    return low


class _Locator:
    """Finds the line of a section, key or value in the text, for error messages.

    Every line it gives is a line of the file: a statement that names the key, else the
    one that opens its table, else (never seen) the first line up to which tomllib
    finds the key.
    """

    def __init__(self, text: str, path: Path) -> None:
        self.path = path
        self.shown = printable(str(path))
        self.raw = text.split("\n")  # as tomllib counts lines (splitlines also splits on \x85)

    @cached_property
    def statements(self) -> list[_Statement]:
        """Every header and key = value line, in file order (built on the first error)."""
        found: list[_Statement] = []
        table: tuple[str, ...] = ()
        for number, raw in enumerate(self.raw, start=1):
            line = raw.removesuffix("\r")
            header = re.fullmatch(_HEADER_RE, line)
            if header:
                key = _key_path(header.group(2))
                if key is not None:
                    table = key
                    found.append(_Statement(number, key, (), header.group(1)))
                continue
            assign = re.match(_ASSIGN_RE, line)
            if assign:
                key = _key_path(assign.group(1))
                if key is not None:
                    found.append(_Statement(number, table, key, ""))
        return found

    def _statement(self, path: tuple[str, ...]) -> _Statement | None:
        """The statement naming ``path``, else the deepest one holding it, else the first
        one inside it (a section made only of sub-tables or dotted keys)."""
        statements = self.statements
        exact = [s for s in statements if s.path == path]
        if exact:
            return exact[0]
        holding = [s for s in statements if s.path == path[: len(s.path)]]
        if holding:
            return max(holding, key=lambda s: len(s.path))  # the first of the deepest
        return next((s for s in statements if s.path[: len(path)] == path), None)

    def line_of(self, path: tuple[str, ...], value: str | None = None) -> int:
        """The line of the key at ``path``; with ``value``, the line of the key's value
        that shows it (an array's entries may sit on later lines)."""
        found = self._statement(path)
        if found is None:
            return self._first_defining(path)
        if value is None or not value:
            return found.line
        end = next((s.line for s in self.statements if s.line > found.line), len(self.raw) + 1)
        # quoted first: "/etc/a" must not be found in the line of "/etc/a/b"
        for shown in (f'"{value}"', f"'{value}'", value):
            for number in range(found.line, end):
                if shown in self.raw[number - 1]:
                    return number
        return found.line

    def at(self, path: tuple[str, ...], value: str | None = None) -> str:
        """``FILE:LINE`` of the key at ``path`` (and ``value``), for an error message."""
        return f"{self.shown}:{self.line_of(path, value)}"

    def _first_defining(self, path: tuple[str, ...]) -> int:
        def defines(count: int) -> bool:
            try:
                node: object = tomllib.loads("\n".join(self.raw[:count]))
            except Exception:
                return False  # a prefix that ends inside a value: not there yet
            for key in path:
                if not isinstance(node, dict) or key not in node:
                    return False
                node = node[key]
            return True

        return _first(len(self.raw), defines)

    def first_failing(self, kind: type[BaseException]) -> int:
        """The first line whose inclusion makes tomllib raise ``kind``: what it choked on."""

        def fails(count: int) -> bool:
            try:
                tomllib.loads("\n".join(self.raw[:count]))
            except Exception as err:
                return type(err) is kind
            return False

        return _first(len(self.raw), fails)

    def last_line(self) -> int:
        """The last line that holds anything: where an unclosed value runs out."""
        return next(
            (n for n in range(len(self.raw), 0, -1) if self.raw[n - 1].strip()), len(self.raw)
        )

    def syntax_error(self, message: str) -> str:
        """The error line for a TOMLDecodeError's message: a redefinition names both lines."""
        where = re.search(_WHERE_RE, message)
        column = ""
        if where:
            line, reason = int(where.group(1)), message[: where.start()]
            column = f" (column {where.group(2)})"
        elif message.endswith(_AT_END):
            line, reason = self.last_line(), message.removesuffix(_AT_END) + " at the end"
        else:
            line, reason = self.first_failing(tomllib.TOMLDecodeError), message
        if reason.startswith(_REDEFINED):
            twice = self._defined_twice(line)
            if twice:
                return twice
        return f"{self.shown}:{line}: invalid TOML: {printable(reason)}{column}"

    def _defined_twice(self, line: int) -> str | None:
        here = next((s for s in self.statements if s.line == line), None)
        if here is None:
            return None
        before = [s for s in self.statements if s.line < line]
        same = [s for s in before if s.path == here.path]
        first = same or [s for s in before if s.path[: len(here.path)] == here.path]
        where = f"{self.shown}:{line}"
        if not first:
            # a key = value above it: an inline table or an array is closed for good
            value = [s for s in before if not s.header and s.path == here.path[: len(s.path)]]
            if not value:
                return None
            return (
                f"{where}: {_dotted(here.path)}: {_dotted(value[0].path)} is a value "
                f"(line {value[0].line}), it cannot be extended"
            )
        earlier = first[0]
        if here.header and same and earlier.header and len(here.path) == 1:
            section = printable(here.path[0])
            return f"{where}: section [{section}] defined twice (first at line {earlier.line})"
        if not here.header and same and not earlier.header:
            key = f"[{_dotted(here.table)}] " if here.table else ""
            key += _dotted(here.key)
            return f"{where}: {key} defined twice (first at line {earlier.line})"
        return f"{where}: {_dotted(here.path)} is already defined at line {earlier.line}"


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(printable(part) for part in path)


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
        """An error in ``key`` (None: in the section), at the line of its key."""
        where = self.lines.at((self.name, key) if key is not None else (self.name,))
        what = f"[{self.name}] {printable(key)}" if key is not None else f"[{self.name}]"
        return ConfigError(f"{where}: {what}: {message}", hint)

    def item_error(
        self, key: str, index: int, message: str, hint: str | None = None, value: str | None = None
    ) -> ConfigError:
        """An error in entry ``index`` of the array ``key``, at the line showing ``value``."""
        where = self.lines.at((self.name, key), value)
        return ConfigError(f"{where}: [{self.name}] {printable(key)}[{index}]: {message}", hint)

    def refuse_control_characters(self) -> None:
        """No key or string in the section may hold a control character (NUL, newline...):
        paths, names and labels go to syscalls, argv and logs, where they cut or forge."""
        for key, value in self.raw.items():
            found = _control_string(key) or _control_string(value)
            if found is None:
                continue
            message = f"must not contain control characters, got {found!r}"
            if isinstance(value, list) and found != key:
                index = next(n for n, item in enumerate(value) if _control_string(item))
                raise self.item_error(key, index, message)
            raise self.error(key, message)

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
            raise self.error(key, f"must be between {low} and {high}, got {number(value)}")
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
        """Refuse the keys the section's parser did not read: a typo must not pass."""
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
        return f"number {number(value)}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def number(value: float) -> str:
    """A number for a message: Python refuses to print an int of over 4300 digits."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"{'-' if value < 0 else ''}0x{abs(value):x}"[:24] + "..."
    return str(value)


def _control_string(value: object) -> str | None:
    """The first key or string in ``value`` holding a control character, if any."""
    pending = [value]
    while pending:  # a loop, not recursion: arrays may nest hundreds deep
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(reversed([part for pair in item.items() for part in pair]))
        elif isinstance(item, list):
            pending.extend(reversed(item))
        elif isinstance(item, str) and has_control(item):
            return item
    return None


def check_path(value: str, error: Callable[[str], ConfigError]) -> None:
    """Refuse a path that holds control characters, is relative, climbs with .., ends
    with / or is not written the one way the kernel and hanode's comparisons agree on."""
    if has_control(value):
        raise error(f"must not contain control characters, got {value!r}")
    if not value.startswith("/"):
        raise error(f"must be an absolute path, got {value!r}")
    if ".." in PurePosixPath(value).parts:
        raise error(f"must not contain '..', got {value!r}")
    if value != "/" and value.endswith("/"):
        raise error(f"must not end with '/', got {value!r}")
    # "/etc//a" and "/etc/./a" are "/etc/a" to the kernel but not to a string compare
    normal = "/" + "/".join(part for part in value.split("/") if part not in ("", "."))
    if value != normal:
        raise error(f"{value!r} is not in normal form: write it as {normal!r}")


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
