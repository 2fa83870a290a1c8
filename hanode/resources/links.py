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
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from hanode.config import REQUIRED, Table, check_path, describe, is_below
from hanode.errors import ConfigError, StepFailed
from hanode.resources import Context, Finding, Level, Resource, State, Status

log = logging.getLogger("hanode.links")

SUFFIX = ".drbdlinks"  # drbdlinks' default suffix: the on-disk convention we share
ASIDE = ".hanode-"  # PATH.hanode-<timestamp>: what replaced a link, kept for the admin


@dataclass(frozen=True)
class LinkSpec:
    """One symlink of the drbdlinks convention."""

    path: str  # the place services look at, e.g. /etc/apache2
    target: str  # where it lives on the replicated filesystem, e.g. /srv/etc-apache2


@dataclass(frozen=True)
class LinksConfig:
    """The [links] section."""

    mountpoint: str
    links: tuple[LinkSpec, ...]


class LinkState(StrEnum):
    """Where one link stands."""

    LINKED = "linked"  # PATH -> TARGET (the original, if any, is PATH.drbdlinks)
    ORIGINAL = "original in place"  # no symlink of ours, nothing set aside
    DAMAGED = "damaged"  # something in between; ``why`` says what


@dataclass(frozen=True)
class LinkStatus:
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
    return link


def _same_target(path: str, target: str) -> bool:
    try:
        return os.path.normpath(os.readlink(path)) == os.path.normpath(target)
    except OSError:
        return False  # not a symlink, or gone


def is_our_link(link: LinkSpec) -> bool:
    """Whether PATH is a symlink to TARGET (whether TARGET exists or not)."""
    return os.path.islink(link.path) and _same_target(link.path, link.target)


def saved_original(link: LinkSpec) -> str:
    """Where the original PATH is kept while linked: PATH.drbdlinks."""
    return link.path + SUFFIX


def link_status(link: LinkSpec) -> LinkStatus:
    """Read one link's state from the filesystem; change nothing."""
    saved = os.path.lexists(saved_original(link))
    if is_our_link(link):
        if not os.path.exists(link.target):
            return LinkStatus(link, LinkState.DAMAGED, f"{link.target} is missing")
        return LinkStatus(link, LinkState.LINKED)
    present = os.path.lexists(link.path)
    if not saved:
        return LinkStatus(link, LinkState.ORIGINAL)
    if not present:
        return LinkStatus(
            link, LinkState.DAMAGED, f"nothing at {link.path}, original is {saved_original(link)}"
        )
    return LinkStatus(
        link,
        LinkState.DAMAGED,
        f"{link.path} replaced the link ({_kind(link.path)}); original is {saved_original(link)}",
    )


def _kind(path: str) -> str:
    if os.path.islink(path):
        return f"a symlink to {os.readlink(path)}"
    return "a directory" if os.path.isdir(path) else "a file"


def aside_name(path: str) -> str:
    """A free PATH.hanode-<timestamp>[-N] to move something aside to."""
    base = f"{path}{ASIDE}{time.strftime('%Y%m%dT%H%M%S')}"
    candidate, number = base, 0
    while os.path.lexists(candidate):
        number += 1
        candidate = f"{base}-{number}"
    return candidate


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
        for index, entry in enumerate(entries):
            link = _link_spec(table, index, entry, mountpoint)
            if link.path in (seen.path for seen in links):
                raise table.item_error(
                    "links", index, f"path {link.path} is linked twice", value=link.path
                )
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

    def statuses(self) -> list[LinkStatus]:
        """Every link's state, in config order."""
        return [link_status(link) for link in self.config.links]

    def probe(self) -> Status:
        """Linked / original in place / damaged, per link."""
        try:
            statuses = self.statuses()
        except OSError as err:
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
        """The renames and symlinks start would make."""
        lines: list[str] = []
        for status in self.statuses():
            link = status.link
            if status.state is LinkState.LINKED:
                continue
            saved = saved_original(link)
            replaced = os.path.lexists(link.path) and not is_our_link(link)
            if os.path.lexists(saved):
                if replaced:
                    lines.append(_aside_plan(link))
            elif os.path.lexists(link.path) and not is_our_link(link):
                lines.append(f"mv {link.path} {saved}")
            if not is_our_link(link):
                lines.append(f"ln -s {link.target} {link.path}")
        return lines

    def start(self, ctx: Context) -> None:
        """LinkSpec every path, in order; each link done already is skipped."""
        self._check_before_start()
        for link in self.config.links:
            self._link(link)

    def _link(self, link: LinkSpec) -> None:
        if is_our_link(link):
            return
        saved = saved_original(link)
        if os.path.lexists(saved):
            # set aside by an earlier start (ours or drbdlinks'): never overwrite it
            if os.path.lexists(link.path):
                self._move_aside(link, "replaced the link while the original was set aside")
        elif os.path.lexists(link.path):
            _rename(link.path, saved)
            log.info("renamed %s to %s", link.path, saved)
        try:
            os.symlink(link.target, link.path)
        except OSError as err:
            raise StepFailed(f"cannot link {link.path} -> {link.target}: {err.strerror}") from None
        log.info("linked %s -> %s", link.path, link.target)

    # -- stop -------------------------------------------------------------------------

    def plan_stop(self) -> list[str]:
        """The removals and renames stop would make."""
        lines: list[str] = []
        for status in reversed(self.statuses()):
            link = status.link
            saved = saved_original(link)
            has_saved = os.path.lexists(saved)
            if is_our_link(link):
                lines.append(f"rm {link.path} (symlink to {link.target})")
            elif has_saved and os.path.lexists(link.path):
                lines.append(_aside_plan(link))
            if has_saved:
                lines.append(f"mv {saved} {link.path}")
        return lines

    def stop(self, ctx: Context) -> None:
        """Unlink every path in reverse order and put the originals back."""
        for link in reversed(self.config.links):
            self._unlink(link)

    def _unlink(self, link: LinkSpec) -> None:
        saved = saved_original(link)
        has_saved = os.path.lexists(saved)
        if is_our_link(link):
            os.unlink(link.path)
            log.info("removed the link %s -> %s", link.path, link.target)
        elif os.path.lexists(link.path):
            if not has_saved:
                return  # the original is in place: nothing of ours here
            self._move_aside(link, "replaced the link")
        if has_saved:
            _rename(saved, link.path)
            log.info("renamed %s back to %s", saved, link.path)

    def _move_aside(self, link: LinkSpec, why: str) -> None:
        aside = aside_name(link.path)
        kind = _kind(link.path)
        _rename(link.path, aside)
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
        """Targets present (when mounted), paths' parents present, nothing damaged."""
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
        for status in self.statuses():
            link = status.link
            parent = os.path.dirname(link.path)
            if not os.path.isdir(parent):
                findings.append(
                    Finding(Level.ERROR, f"{link.path}: directory {parent} does not exist")
                )
            if mounted and not os.path.exists(link.target):
                findings.append(
                    Finding(
                        Level.ERROR,
                        f"{link.path}: target {link.target} does not exist",
                        f"create it on {mountpoint}, or remove the link",
                    )
                )
            if status.state is LinkState.DAMAGED:
                findings.append(
                    Finding(Level.WARNING, status.line(), "`hanode stop` or `start` repairs it")
                )
            for leftover in _asides(link.path):
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


def _asides(path: str) -> list[str]:
    directory, name = os.path.split(path)
    try:
        entries = os.listdir(directory)
    except OSError:
        return []
    return sorted(
        os.path.join(directory, entry) for entry in entries if entry.startswith(name + ASIDE)
    )


def _rename(source: str, destination: str) -> None:
    # refuse to replace: os.rename would silently overwrite a file at the destination
    if os.path.lexists(destination):
        raise StepFailed(
            f"cannot rename {source} to {destination}: it exists",
            f"move {destination} out of the way by hand (hanode never overwrites it)",
        )
    try:
        os.rename(source, destination)
    except OSError as err:
        raise StepFailed(f"cannot rename {source} to {destination}: {err.strerror}") from None
