"""The drbdlinks step: local paths replaced by symlinks into the replicated filesystem.

On disk exactly as drbdlinks does it, so a node can switch between the two: on start
``PATH`` is renamed ``PATH.drbdlinks`` and ``PATH -> TARGET`` is created; on stop the
symlink is removed and ``PATH.drbdlinks`` renamed back. Unlike drbdlinks, a stop never
deletes what is at ``PATH`` unless it is our own symlink: a file or directory that
replaced the link (``sed -i`` replaces a symlink with a file) is moved aside to
``PATH.hanode-<timestamp>`` with a loud warning, never lost.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Mapping
from enum import StrEnum
from typing import NamedTuple

from hanode.config import REQUIRED, Table, check_path, describe, is_below
from hanode.errors import ConfigError, StepFailed
from hanode.resources import Context, Finding, Level, Resource, State, Status
from hanode.system.paths import Parent, UnsafePath, open_parent

log = logging.getLogger("hanode.links")

SUFFIX = ".drbdlinks"  # drbdlinks' default suffix: the on-disk convention we share
ASIDE = ".hanode-"  # PATH.hanode-<timestamp>: what replaced a link, kept for the admin


class LinkSpec(NamedTuple):
    """One symlink of the drbdlinks convention."""

    path: str  # the place services look at, e.g. /etc/apache2
    target: str  # where it lives on the replicated filesystem, e.g. /srv/etc-apache2


class LinksConfig(NamedTuple):
    """The [links] section."""

    mountpoint: str
    links: tuple[LinkSpec, ...]


class LinkState(StrEnum):
    """Where one link stands."""

    LINKED = "linked"  # PATH -> TARGET (the original, if any, is PATH.drbdlinks)
    ORIGINAL = "original in place"  # no symlink of ours, nothing set aside
    DAMAGED = "damaged"  # something in between; ``why`` says what


class LinkStatus(NamedTuple):
    """One link's state, with the reason when it is damaged."""

    link: LinkSpec
    state: LinkState
    why: str = ""

    def line(self) -> str:
        """``/etc/apache2: linked`` or ``/etc/x: damaged (why)``, for status output."""
        text = f"{self.link.path}: {self.state.value}"
        return f"{text} ({self.why})" if self.why else text


def _link_spec(table: Table, index: int, entry: object, mountpoint: str) -> LinkSpec:
    """One entry of [links] links, checked on its own and against the mountpoint."""
    if not isinstance(entry, dict):
        raise table.item_error(
            "links",
            index,
            f"expected a table {{ path = ..., target = ... }}, got {describe(entry)}",
        )
    unknown = sorted(set(entry) - {"path", "target"})
    if unknown:
        raise table.item_error(
            "links", index, f"unknown key {unknown[0]}", "known keys here: path, target"
        )
    for key in ("path", "target"):
        if key not in entry:
            raise table.item_error("links", index, f"missing {key}")
        value = entry[key]
        if not isinstance(value, str):
            raise table.item_error(
                "links", index, f"{key}: expected a string, got {describe(value)}"
            )

        def error(message: str, value: str = value) -> ConfigError:
            return table.item_error("links", index, message, value=value)

        check_path(value, error)
    link = LinkSpec(entry["path"], entry["target"])
    if not is_below(link.target, mountpoint):
        raise table.item_error(
            "links",
            index,
            f"target {link.target} is outside the mountpoint {mountpoint}",
            "targets live on the replicated filesystem",
            link.target,
        )
    if is_below(link.path, mountpoint) or link.path == mountpoint:
        raise table.item_error(
            "links",
            index,
            f"path {link.path} is inside the mountpoint {mountpoint}",
            value=link.path,
        )
    # start renames PATH aside: / or a parent of the mountpoint would take the mount along
    if link.path == "/" or is_below(mountpoint, link.path):
        raise table.item_error(
            "links",
            index,
            f"path {link.path} holds the mountpoint {mountpoint}",
            "link the directories below it instead",
            link.path,
        )
    return link


def _parents(path: str) -> list[str]:
    """The directories above a normalized absolute path, / excluded: /a/b/c -> /a, /a/b."""
    parts = path.split("/")
    return ["/".join(parts[:count]) for count in range(2, len(parts))]


def _same_target(parent: Parent, target: str) -> bool:
    try:
        return os.path.normpath(parent.readlink(parent.name)) == os.path.normpath(target)
    except OSError:
        return False  # not a symlink, or gone


def _open(link: LinkSpec, *, refuse: bool) -> Parent | None:
    """PATH's directory, pinned (walked from / without following a symlink); None if it
    does not exist. UnsafePath (a Refused) names PATH: see hanode.system.paths."""
    try:
        return open_parent(link.path, refuse=refuse)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except UnsafePath as err:
        raise err.with_context(f"{link.path}: {err.message}") from None


def is_our_link(link: LinkSpec) -> bool:
    """Whether PATH is a symlink to TARGET (whether TARGET exists or not)."""
    parent = _open(link, refuse=False)
    if parent is None:
        return False
    with parent:
        return _same_target(parent, link.target)


def saved_original(link: LinkSpec) -> str:
    """Where the original PATH is kept while linked: PATH.drbdlinks."""
    return link.path + SUFFIX


def link_status(link: LinkSpec, parent: Parent | None = None) -> LinkStatus:
    """Read one link's state from the filesystem; change nothing.

    Reads go through ``parent`` (PATH's pinned directory), opened here when not given;
    UnsafePath if a directory on the way to PATH is a symlink.
    """
    if parent is None:
        opened = _open(link, refuse=False)
        if opened is None:
            return LinkStatus(link, LinkState.ORIGINAL)  # no directory: nothing of ours
        with opened:
            return link_status(link, opened)
    saved = parent.exists(parent.name + SUFFIX)
    if _same_target(parent, link.target):
        if not os.path.exists(link.target):
            return LinkStatus(link, LinkState.DAMAGED, f"{link.target} is missing")
        return LinkStatus(link, LinkState.LINKED)
    present = parent.exists(parent.name)
    if not saved:
        return LinkStatus(link, LinkState.ORIGINAL)
    if not present:
        return LinkStatus(
            link, LinkState.DAMAGED, f"nothing at {link.path}, original is {saved_original(link)}"
        )
    return LinkStatus(
        link,
        LinkState.DAMAGED,
        f"{link.path} replaced the link ({_kind(parent, parent.name)}); "
        f"original is {saved_original(link)}",
    )


def _kind(parent: Parent, name: str) -> str:
    mode = parent.lstat(name).st_mode
    if stat.S_ISLNK(mode):
        return f"a symlink to {parent.readlink(name)}"
    return "a directory" if stat.S_ISDIR(mode) else "a file"


def _aside_names(name: str) -> list[str]:
    """NAME.hanode-<timestamp>, then -1, -2...: the names to move something aside to."""
    base = f"{name}{ASIDE}{time.strftime('%Y%m%dT%H%M%S')}"
    return [base] + [f"{base}-{number}" for number in range(1, _ASIDE_TRIES)]


_ASIDE_TRIES = 100  # names taken in one second: only something racing us takes them all


class Links(Resource[LinksConfig]):
    """The [links] section: drbdlinks-compatible symlinks into the mountpoint."""

    section = "links"
    order = 30
    settings = LinksConfig

    @classmethod
    def parse(cls, table: Table, parsed: Mapping[str, object]) -> LinksConfig:
        """[links]: the mountpoint (default: [filesystem]'s) and the links, in order."""
        from hanode.resources.filesystem import FilesystemConfig

        filesystem = parsed.get("filesystem")
        default = filesystem.mountpoint if isinstance(filesystem, FilesystemConfig) else REQUIRED
        if default is REQUIRED and "mountpoint" not in table.raw:
            raise table.error(None, "missing mountpoint (no [filesystem] section to take it from)")
        mountpoint = table.path("mountpoint", default)
        entries = table.get("links", list)
        if not entries:
            raise table.error("links", "must list at least one link")
        links: list[LinkSpec] = []
        indexes: dict[str, int] = {}  # a link's path -> its index
        above: dict[str, int] = {}  # a directory above a link's path -> that link's index
        for index, entry in enumerate(entries):
            link = _link_spec(table, index, entry, mountpoint)
            if link.path in indexes:
                raise table.item_error(
                    "links", index, f"path {link.path} is linked twice", value=link.path
                )
            # once the outer one is a symlink, the inner one's rename lands on the mount
            outer = [indexes[parent] for parent in _parents(link.path) if parent in indexes]
            nested = outer[0] if outer else above.get(link.path)
            if nested is not None:
                raise table.item_error(
                    "links",
                    index,
                    f"path {link.path} and links[{nested}]'s {links[nested].path} are nested",
                    "link only the outer one",
                    link.path,
                )
            indexes[link.path] = index
            for parent in _parents(link.path):
                above.setdefault(parent, index)
            links.append(link)
        return LinksConfig(mountpoint, tuple(links))

    @classmethod
    def start_budget(cls, config: LinksConfig) -> float:
        """Renames and symlinks: no waits."""
        return 1.0

    @classmethod
    def stop_budget(cls, config: LinksConfig) -> float:
        """Unlinks and renames: no waits."""
        return 1.0

    def __init__(self, config: LinksConfig) -> None:
        super().__init__(config)
        # PATH -> its directory, pinned for one start or stop (None: it does not exist)
        self._parents: dict[str, Parent | None] = {}

    def statuses(self) -> list[LinkStatus]:
        """Every link's state, in config order."""
        return [link_status(link) for link in self.config.links]

    def probe(self) -> Status:
        """Linked / original in place / damaged, per link."""
        try:
            statuses = self.statuses()
        except (OSError, UnsafePath) as err:
            return Status(State.UNKNOWN, f"cannot read the links: {err}")
        details: dict[str, object] = {
            "links": [
                {"path": s.link.path, "target": s.link.target, "state": s.state.value, "why": s.why}
                for s in statuses
            ]
        }
        linked = sum(s.state is LinkState.LINKED for s in statuses)
        damaged = [s for s in statuses if s.state is LinkState.DAMAGED]
        total = len(statuses)
        if linked == total:
            return Status(State.UP, f"{total} links in place", details)
        if not damaged and linked == 0:
            return Status(State.DOWN, f"{total} originals in place", details)
        summary = f"{linked} of {total} linked"
        if damaged:
            summary += "; " + "; ".join(s.line() for s in damaged)
        return Status(State.PARTIAL, summary, details)

    # -- start ------------------------------------------------------------------------

    def _check_before_start(self) -> None:
        mountpoint = self.config.mountpoint
        if not os.path.ismount(mountpoint):
            raise StepFailed(
                f"{mountpoint} is not mounted: the links would point into an empty directory",
                "mount the replicated filesystem first: the [filesystem] section",
            )
        missing = [link.target for link in self.config.links if not os.path.exists(link.target)]
        if missing:
            raise StepFailed(
                f"link target{'s' if len(missing) > 1 else ''} missing: {', '.join(missing)}",
                f"create {'them' if len(missing) > 1 else 'it'} on {mountpoint} "
                "(a copy of the original), or remove the link from [links]",
            )

    def plan_start(self) -> list[str]:
        """The renames and symlinks start would make (Refused: start would refuse)."""
        lines: list[str] = []
        for link in self.config.links:
            parent = _open(link, refuse=True)
            if parent is None:
                lines.append(f"ln -s {link.target} {link.path}")
                continue
            with parent:
                name = parent.name
                if _same_target(parent, link.target):
                    continue
                if parent.exists(name + SUFFIX):
                    if parent.exists(name):
                        lines.append(_aside_plan(link))
                elif parent.exists(name):
                    lines.append(f"mv {link.path} {saved_original(link)}")
                lines.append(f"ln -s {link.target} {link.path}")
        return lines

    def start(self, ctx: Context) -> None:
        """LinkSpec every path, in order; each link done already is skipped.

        Refused, before anything changes, when a directory on the way to a PATH is a
        symlink or a non-root user can change it; every file operation then goes
        through the directories pinned by that walk, so a swap after it is never seen.
        """
        try:
            self._pin(refuse=True)
            self._check_before_start()
            for link in self.config.links:
                self._link(link)
        finally:
            self._unpin()

    def _pin(self, *, refuse: bool) -> None:
        """Walk to and hold every PATH's directory for this start or stop."""
        for link in self.config.links:
            try:
                self._parents[link.path] = _open(link, refuse=refuse)
            except OSError as err:
                raise StepFailed(
                    f"cannot open the directory of {link.path}: {err.strerror}"
                ) from None

    def _unpin(self) -> None:
        for parent in self._parents.values():
            if parent is not None:
                parent.close()
        self._parents.clear()

    def _parent(self, link: LinkSpec) -> Parent | None:
        """PATH's directory as pinned by this start or stop (None: it does not exist)."""
        return self._parents[link.path]

    def _link(self, link: LinkSpec) -> None:
        parent = self._parent(link)
        if parent is None:
            directory = os.path.dirname(link.path)
            raise StepFailed(
                f"cannot link {link.path} -> {link.target}: directory {directory} does not exist",
                f"create {directory}, or remove the link from [links]",
            )
        if _same_target(parent, link.target):
            return
        name = parent.name
        saved = name + SUFFIX
        if parent.exists(saved):
            # set aside by an earlier start (ours or drbdlinks'): never overwrite it
            if parent.exists(name):
                self._move_aside(parent, link, "replaced the link while the original was set aside")
        elif parent.exists(name):
            _rename(parent, name, saved)
            log.info("renamed %s to %s", link.path, saved_original(link))
        try:
            parent.symlink(link.target, name)
        except OSError as err:
            raise StepFailed(f"cannot link {link.path} -> {link.target}: {err.strerror}") from None
        log.info("linked %s -> %s", link.path, link.target)

    # -- stop -------------------------------------------------------------------------

    def plan_stop(self) -> list[str]:
        """The removals and renames stop would make."""
        lines: list[str] = []
        for link in reversed(self.config.links):
            parent = _open(link, refuse=False)
            if parent is None:
                continue
            with parent:
                name = parent.name
                has_saved = parent.exists(name + SUFFIX)
                if _same_target(parent, link.target):
                    lines.append(f"rm {link.path} (symlink to {link.target})")
                elif has_saved and parent.exists(name):
                    lines.append(_aside_plan(link))
                if has_saved:
                    lines.append(f"mv {saved_original(link)} {link.path}")
        return lines

    def stop(self, ctx: Context) -> None:
        """Unlink every path in reverse order and put the originals back.

        Through the directories walked without following a symlink, like start; a
        directory a non-root user controls is not refused here (the node must be able
        to step down), only warned about.
        """
        try:
            self._pin(refuse=False)
            for link in reversed(self.config.links):
                self._unlink(link)
        finally:
            self._unpin()

    def _unlink(self, link: LinkSpec) -> None:
        parent = self._parent(link)
        if parent is None:
            return  # no directory: nothing of ours there
        if parent.unsafe is not None:
            log.warning("%s: %s (%s)", link.path, parent.unsafe.message, parent.unsafe.hint)
        name = parent.name
        saved = name + SUFFIX
        has_saved = parent.exists(saved)
        if _same_target(parent, link.target):
            parent.unlink(name)
            log.info("removed the link %s -> %s", link.path, link.target)
        elif parent.exists(name):
            if not has_saved:
                return  # the original is in place: nothing of ours here
            self._move_aside(parent, link, "replaced the link")
        if has_saved:
            _rename(parent, saved, name)
            log.info("renamed %s back to %s", saved_original(link), link.path)

    def _move_aside(self, parent: Parent, link: LinkSpec, why: str) -> None:
        kind = _kind(parent, parent.name)
        names = _aside_names(parent.name)
        for candidate in names:
            try:
                parent.rename_noreplace(parent.name, candidate)
                break
            except FileExistsError:
                continue  # taken (a move aside in the same second): the next number
            except OSError as err:
                raise StepFailed(
                    f"cannot rename {link.path} to {parent.path(candidate)}: {err.strerror}"
                ) from None
        else:
            raise StepFailed(
                f"cannot move {link.path} aside: {parent.path(names[0])} up to -"
                f"{len(names) - 1} all exist",
                f"move {link.path} out of the way by hand (hanode never overwrites)",
            )
        aside = parent.path(candidate)
        log.warning(
            "%s (%s) %s: moved it to %s, NOT deleted. It may hold changes made while this "
            "node was active (e.g. `sed -i` on the link); compare it with %s and merge what "
            "is needed, then delete it.",
            link.path,
            kind,
            why,
            aside,
            link.target,
        )

    # -- check ------------------------------------------------------------------------

    def check(self) -> list[Finding]:
        """Targets present (when mounted), paths' directories present and root's alone
        (no symlink on the way, nothing a non-root user can change), nothing damaged."""
        findings: list[Finding] = []
        mountpoint = self.config.mountpoint
        mounted = os.path.ismount(mountpoint)
        if not mounted:
            findings.append(
                Finding(
                    Level.WARNING,
                    f"{mountpoint} is not mounted: link targets not checked",
                    "run check on the active node to check them",
                )
            )
        for link in self.config.links:
            try:
                parent = _open(link, refuse=False)
            except UnsafePath as err:  # a symlink on the way: nothing more to read
                findings.append(Finding(Level.ERROR, err.message, err.hint))
                parent = None
            except OSError as err:
                directory = os.path.dirname(link.path)
                findings.append(
                    Finding(Level.ERROR, f"{link.path}: cannot open {directory}: {err.strerror}")
                )
                parent = None
            else:
                if parent is None:
                    directory = os.path.dirname(link.path)
                    findings.append(
                        Finding(Level.ERROR, f"{link.path}: directory {directory} does not exist")
                    )
                elif parent.unsafe is not None:
                    findings.append(
                        Finding(
                            Level.ERROR,
                            f"{link.path}: {parent.unsafe.message}; start refuses it",
                            parent.unsafe.hint,
                        )
                    )
            if mounted and not os.path.exists(link.target):
                findings.append(
                    Finding(
                        Level.ERROR,
                        f"{link.path}: target {link.target} does not exist",
                        f"create it on {mountpoint}, or remove the link",
                    )
                )
            if parent is None:
                continue
            with parent:
                status = link_status(link, parent)
                leftovers = _asides(parent)
            if status.state is LinkState.DAMAGED:
                findings.append(
                    Finding(Level.WARNING, status.line(), "`hanode stop` or `start` repairs it")
                )
            for leftover in leftovers:
                findings.append(
                    Finding(
                        Level.WARNING,
                        f"{leftover} was set aside by hanode (it replaced the link)",
                        f"merge it into {link.target} if needed, then delete it",
                    )
                )
        if not any(finding.level is not Level.OK for finding in findings):
            findings.append(Finding(Level.OK, f"{len(self.config.links)} links look right"))
        return findings


def _aside_plan(link: LinkSpec) -> str:
    return f"mv {link.path} {link.path}{ASIDE}<timestamp> (it replaced the link; kept)"


def _asides(parent: Parent) -> list[str]:
    try:
        entries = parent.listdir()
    except OSError:
        return []
    return sorted(parent.path(entry) for entry in entries if entry.startswith(parent.name + ASIDE))


def _rename(parent: Parent, source: str, destination: str) -> None:
    # never replaces: the kernel checks and renames at once (RENAME_NOREPLACE), so even
    # a file created at the destination a moment ago is not overwritten
    try:
        parent.rename_noreplace(source, destination)
    except FileExistsError:
        raise StepFailed(
            f"cannot rename {parent.path(source)} to {parent.path(destination)}: it exists",
            f"move {parent.path(destination)} out of the way by hand "
            "(hanode never overwrites it)",
        ) from None
    except OSError as err:
        raise StepFailed(
            f"cannot rename {parent.path(source)} to {parent.path(destination)}: {err.strerror}"
        ) from None
