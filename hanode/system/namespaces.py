"""Other mount namespaces and the copies of a device's mounts in them.

Other mount namespaces (containers, services with PrivateTmp= or ProtectSystem=) hold
copies of the mounts that existed when they were made; a copy keeps the filesystem alive
after it is unmounted here. They are found through the processes in them
(/proc/PID/ns/mnt, /proc/PID/mountinfo), by the same device numbers. Apart from
hanode.system.mountinfo so that status, which never looks for copies, does not load this.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from hanode.system.mountinfo import MountEntry, parse_mountinfo, submounts

_PROC = "/proc"


class MountNamespace(NamedTuple):
    """A mount namespace with processes in it, named by one of them."""

    inode: int  # of /proc/PID/ns/mnt: the namespace's identity
    pids: tuple[int, ...]  # every process in it, ascending

    @property
    def pid(self) -> int:
        """The lowest pid in it: usually the container's init or the service's main process."""
        return self.pids[0]


class NamespaceCopy(NamedTuple):
    """A device's mounts in another mount namespace, as one process there sees them."""

    namespace: MountNamespace
    pid: int  # the process whose mountinfo this is (its paths are relative to its root)
    name: str  # its command name, read when found (it may be ended later)
    entries: list[MountEntry]  # that namespace's whole table
    mounts: list[MountEntry]  # the device's mounts in it
    targets: list[MountEntry]  # those and every mount below them, deepest first

    def place(self) -> str:
        """Where the copies are, for messages: ``/srv, /data``."""
        return ", ".join(entry.mountpoint for entry in self.mounts)

    @property
    def file(self) -> str:
        """The namespace's file, which setns(2) enters: /proc/PID/ns/mnt of ``pid``."""
        return f"{_PROC}/{self.pid}/ns/mnt"

    def where(self) -> str:
        """The namespace, for messages: ``the mount namespace of pid 1234 (unshare)``."""
        return f"the mount namespace of pid {self.pid} ({self.name})"


def own_namespace() -> int:
    """The inode of this process's mount namespace."""
    return os.stat(f"{_PROC}/self/ns/mnt").st_ino


def mount_namespaces() -> list[MountNamespace]:
    """Every mount namespace that has a process in it, except this process's own.

    One stat() per process (/proc/PID/ns/mnt): about 20 ms among 2,000 processes.
    Processes that vanish, zombies and (without root) others' processes are skipped.
    """
    own = own_namespace()
    members: dict[int, list[int]] = {}
    for name in os.listdir(_PROC):
        if not name.isdigit():
            continue
        try:
            inode = os.stat(f"{_PROC}/{name}/ns/mnt").st_ino
        except OSError:
            continue  # gone, a zombie (no namespace any more), or not ours to read
        if inode != own:
            members.setdefault(inode, []).append(int(name))
    found = [MountNamespace(inode, tuple(sorted(pids))) for inode, pids in members.items()]
    return sorted(found, key=lambda namespace: namespace.pid)


def namespace_copies(device: int) -> list[NamespaceCopy]:
    """The mounts of ``device`` in every other mount namespace, by device number.

    Each namespace's table is read through its processes, lowest pid first; a namespace
    whose processes all vanish meanwhile is gone, and its copies with it.
    """
    needle = f" {os.major(device)}:{os.minor(device)} "
    copies = []
    for namespace in mount_namespaces():
        read = _namespace_table(namespace, needle)
        if read is None:
            continue
        pid, entries = read
        mounts = [entry for entry in entries if entry.device == device]
        inside = {entry.mount_id for entry in mounts}
        for mount in mounts:
            inside.update(entry.mount_id for entry in submounts(entries, mount))
        # the kernel lists parents before children: backwards, children come first
        targets = [entry for entry in reversed(entries) if entry.mount_id in inside]
        copies.append(NamespaceCopy(namespace, pid, _comm(pid), entries, mounts, targets))
    return copies


def _comm(pid: int) -> str:
    try:
        return Path(_PROC, str(pid), "comm").read_text(errors="replace").rstrip("\n")
    except OSError:
        return "?"  # ended meanwhile: the pid still says where it was


def _namespace_table(namespace: MountNamespace, needle: str) -> tuple[int, list[MountEntry]] | None:
    for pid in namespace.pids:
        path = Path(_PROC, str(pid), "mountinfo")
        try:
            text = path.read_text(encoding="utf-8", errors="surrogateescape")
            # still in that namespace: not gone, moved (setns) or a reused pid
            if os.stat(f"{_PROC}/{pid}/ns/mnt").st_ino != namespace.inode:
                continue
        except OSError:
            continue
        if needle not in text:
            return None  # the common case: no copy of the device there, nothing to parse
        return pid, parse_mountinfo(text, path)
    return None
