"""Who holds a filesystem or block device open: `fuser -m` by device number, without fuser.

A process holds a device when its cwd, root, exe, any open fd (files, directories,
deleted files, or the block device node itself) or any memory map lies on it. Everything
is decided by device numbers read with stat() on /proc's magic links, never by resolving
a path through the mount: a path resolved through a failed or lazy unmount points at
another filesystem (often /), and killing by it is how `fuser -km` kills the world.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

_PROC = "/proc"
# Errors that mean "this process (or this fd of it) is gone or not ours to read".
_VANISHED = (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError)


@dataclass(frozen=True)
class Holder:
    """A process holding one of the devices, and each way it holds it."""

    pid: int
    name: str
    reasons: tuple[str, ...]  # "cwd", "root", "exe", "fd 3 /srv/x (deleted)", "mmap /srv/a.so"

    def describe(self) -> str:
        """One line for logs and errors: ``1234 (apache2): cwd, fd 3 /srv/x``."""
        return f"{self.pid} ({self.name}): {', '.join(self.reasons)}"


def protected_pids() -> set[int]:
    """This process and all its ancestors: never to be killed by hanode."""
    me = psutil.Process()
    pids = {me.pid}
    try:
        pids.update(parent.pid for parent in me.parents())
    except psutil.Error:
        # a parent vanished mid-walk: still protect the chain we can see
        pids.add(os.getppid())
    return pids


def find_holders(
    devices: set[int],
    *,
    exclude_pids: set[int] | None = None,
    include_device_nodes: bool = True,
) -> list[Holder]:
    """Every process holding a file on, or the block device of, one of ``devices``.

    ``devices`` are device numbers: the st_dev of files on a mounted filesystem, which is
    the st_rdev of its block device. Processes in ``exclude_pids`` are left out; by
    default (None) that is hanode itself and its ancestors, which must never be killed.
    With ``include_device_nodes`` false, an fd on the block device node itself does not
    count (it does not keep the filesystem busy). Processes that vanish during the walk
    are skipped. The result is ordered by pid.
    """
    if not devices:
        return []
    excluded = protected_pids() if exclude_pids is None else exclude_pids
    map_devices = _map_device_fields(devices)
    holders: list[Holder] = []
    for pid in _pids():
        if pid in excluded:
            continue
        reasons = _reasons(pid, devices, map_devices, include_device_nodes)
        if reasons:
            holders.append(Holder(pid, _name(pid), tuple(reasons)))
    return holders


def _pids() -> list[int]:
    return sorted(int(entry) for entry in os.listdir(_PROC) if entry.isdigit())


def _name(pid: int) -> str:
    try:
        with open(f"{_PROC}/{pid}/comm", encoding="utf-8", errors="replace") as handle:
            return handle.read().rstrip("\n")
    except OSError:
        return "?"  # vanished: the pid is still worth reporting


def _on_devices(st: os.stat_result, devices: set[int], device_nodes: bool) -> bool:
    if st.st_dev in devices:
        return True
    # an fd on the block device node itself (e.g. a tool holding /dev/drbd1 open)
    return device_nodes and stat.S_ISBLK(st.st_mode) and st.st_rdev in devices


def _reasons(pid: int, devices: set[int], map_devices: set[str], device_nodes: bool) -> list[str]:
    base = f"{_PROC}/{pid}"
    reasons: list[str] = []
    for link in ("cwd", "root", "exe"):
        try:
            # stat() of a /proc magic link reaches the inode directly, even if deleted
            if _on_devices(os.stat(f"{base}/{link}"), devices, device_nodes=False):
                reasons.append(link)
        except _VANISHED:
            continue  # gone, a kernel thread (no exe), or not ours to read
    reasons.extend(_fd_reasons(base, devices, device_nodes))
    reasons.extend(_map_reasons(base, map_devices))
    return reasons


def _fd_reasons(base: str, devices: set[int], device_nodes: bool) -> list[str]:
    try:
        fds = os.listdir(f"{base}/fd")
    except _VANISHED:
        return []
    reasons = []
    for fd in sorted(fds, key=int):
        link = f"{base}/fd/{fd}"
        try:
            if not _on_devices(os.stat(link), devices, device_nodes):
                continue
            target = os.readlink(link)
        except _VANISHED:
            continue  # the fd was closed (or the process ended) between listdir and stat
        reasons.append(f"fd {fd} {target}")
    return reasons


def _map_device_fields(devices: Iterable[int]) -> set[str]:
    # /proc/PID/maps prints the device as "%02x:%02x" of major and minor (proc(5))
    return {f"{os.major(dev):02x}:{os.minor(dev):02x}" for dev in devices}


def _map_reasons(base: str, map_devices: set[str]) -> list[str]:
    try:
        with open(f"{base}/maps", encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return []  # vanished, or a kernel thread
    if not any(field in text for field in map_devices):
        return []  # the common case: one substring scan instead of splitting every line
    paths: list[str] = []
    for line in text.splitlines():
        # address perms offset dev inode [pathname]; the pathname may contain spaces
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or fields[3] not in map_devices or fields[4] == "0":
            continue
        path = fields[5]
        if path not in paths:
            paths.append(path)
    return [f"mmap {path}" for path in paths]
