"""The mount table as the kernel writes it: /proc/PID/mountinfo (proc(5)), parsed once.

Mounts are found by device number, never by resolving a path through them: a
mountpoint whose filesystem is gone resolves to the filesystem below it.

The copies of mounts in other mount namespaces are hanode.system.namespaces' (a stop's
and a check's concern); whether a filesystem is still alive anywhere is here (a probe's).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from hanode.errors import StepFailed

MOUNTINFO = Path("/proc/self/mountinfo")
_SYS = "/sys"
# filesystem types whose driver keeps /sys/fs/DIR/NAME while a superblock on the block
# device NAME lives (ext2 and ext3 are served by the ext4 driver on Debian's kernels)
_SYSFS_DIRS = {"ext4": "ext4", "ext3": "ext4", "ext2": "ext4", "xfs": "xfs", "f2fs": "f2fs"}


class MountEntry(NamedTuple):
    """One line of /proc/self/mountinfo (see proc(5)), with escapes decoded."""

    mount_id: int
    parent_id: int
    device: int  # st_dev of the files on it; the st_rdev of its block device
    root: str  # the directory of the filesystem mounted here (not "/" for bind mounts)
    mountpoint: str
    options: str
    fstype: str
    source: str
    super_options: str


_ESCAPE = r"\\([0-7]{3})"  # compiled by re at first use (and cached there)


def _unescape(field: str) -> str:
    # the kernel writes space, tab, newline and backslash as \040 \011 \012 \134
    return re.sub(_ESCAPE, lambda match: chr(int(match.group(1), 8)), field)


def parse_mountinfo(text: str, source: Path = MOUNTINFO) -> list[MountEntry]:
    """The entries of a mountinfo text, in the kernel's order (parents before children).

    Format (proc(5)): ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE
    SOURCE SUPER_OPTIONS; fields are separated by single spaces, which the kernel
    escapes inside fields, so splitting on spaces is exact.
    """
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line:
            continue
        fields = line.split(" ")
        try:
            separator = fields.index("-", 6)
            major, minor = fields[2].split(":")
            entries.append(
                MountEntry(
                    mount_id=int(fields[0]),
                    parent_id=int(fields[1]),
                    device=os.makedev(int(major), int(minor)),
                    root=_unescape(fields[3]),
                    mountpoint=_unescape(fields[4]),
                    options=fields[5],
                    fstype=_unescape(fields[separator + 1]),
                    source=_unescape(fields[separator + 2]),
                    super_options=fields[separator + 3] if len(fields) > separator + 3 else "",
                )
            )
        except (ValueError, IndexError):
            raise StepFailed(
                f"{source}:{number}: cannot read this mount line: {line!r}",
                "please report it; hanode will not act on a mount table it cannot read",
            ) from None
    return entries


def read_mountinfo(path: Path = MOUNTINFO) -> list[MountEntry]:
    """This process's mount table (its mount namespace's), from /proc/self/mountinfo."""
    # surrogateescape: a path with bytes that are not UTF-8 still round-trips to os calls
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        return parse_mountinfo(handle.read(), path)


def top_mount_at(entries: Sequence[MountEntry], mountpoint: str) -> MountEntry | None:
    """The visible mount at ``mountpoint``: the last of a stack of mounts on one path."""
    at = [entry for entry in entries if entry.mountpoint == mountpoint]
    covered = {entry.parent_id for entry in at}
    visible = [entry for entry in at if entry.mount_id not in covered]
    return visible[-1] if visible else None


def submounts(entries: Sequence[MountEntry], mount: MountEntry) -> list[MountEntry]:
    """Every mount below ``mount`` in the mount tree, deepest first (the umount order)."""
    children: dict[int, list[MountEntry]] = {}
    for entry in entries:
        if entry.mount_id != entry.parent_id:
            children.setdefault(entry.parent_id, []).append(entry)
    ordered: list[MountEntry] = []

    def visit(parent: MountEntry) -> None:
        for child in reversed(children.get(parent.mount_id, [])):
            visit(child)
            ordered.append(child)

    visit(mount)
    return ordered


def mount_points_of(device_number: int, path: Path = MOUNTINFO) -> list[str]:
    """Where a device is mounted, by its device number; [] when the table cannot be read."""
    try:
        entries = read_mountinfo(path)
    except (OSError, StepFailed):
        return []
    return [entry.mountpoint for entry in entries if entry.device == device_number]


def filesystem_alive(device: int, fstype: str) -> bool:
    """Whether the kernel still has a ``fstype`` filesystem of block device ``device``.

    True while it is mounted in any mount namespace (even one without processes, kept
    by a bind mount of its ns file) or lazily unmounted and still in use: its driver's
    /sys/fs/TYPE/NAME directory lives as long as the superblock. False when it is gone,
    and for the types that keep no such directory (then nothing can be told this way).
    Two system calls, no device opened: cheap enough for every probe.
    """
    directory = _SYSFS_DIRS.get(fstype)
    if directory is None:
        return False
    try:
        # /sys/dev/block/MAJ:MIN -> .../block/drbd1: the name the kernel gives the device
        name = os.path.basename(
            os.readlink(f"{_SYS}/dev/block/{os.major(device)}:{os.minor(device)}")
        )
    except OSError:
        return False
    return os.path.isdir(f"{_SYS}/fs/{directory}/{name}")
