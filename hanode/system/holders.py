"""Who holds a filesystem or block device open: `fuser -m` by device number, without fuser.

A process holds a device when its cwd, root, exe, any open fd (files, directories,
deleted files, or the block device node itself) or any memory map lies on it. Everything
is decided by device numbers read with stat() on /proc's magic links, never by resolving
a path through the mount: a path resolved through a failed or lazy unmount points at
another filesystem (often /), and killing by it is how `fuser -km` kills the world.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from typing import NamedTuple

_PROC = "/proc"
# Errors that mean "this process (or this fd of it) is gone or not ours to read".
_VANISHED = (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError)


class Holder(NamedTuple):
    """A process holding one of the devices, and each way it holds it."""

    pid: int
    name: str
    reasons: tuple[str, ...]  # "cwd", "root", "exe", "fd 3 /srv/x (deleted)", "mmap /srv/a.so"

    def describe(self) -> str:
        """One line for logs and errors: ``1234 (apache2): cwd, fd 3 /srv/x``."""
        return f"{self.pid} ({self.name}): {', '.join(self.reasons)}"

    def parent(self) -> int:
        """Its parent (0: gone): who starts it again if it is respawned. Asked only when
        a stop meets holders, so that a status that counts them never loads psutil."""
        import psutil

        try:
            return int(psutil.Process(self.pid).ppid())
        except psutil.Error:
            return 0


def protected_pids() -> set[int]:
    """This process and all its ancestors: never to be killed by hanode."""
    import psutil  # here: only a stop that meets holders pays for its import

    me = psutil.Process()
    pids = {me.pid, os.getppid()}
    # a parent that vanishes mid-walk: still protect the chain we can see
    with contextlib.suppress(psutil.Error):
        pids.update(parent.pid for parent in me.parents())
    return pids


def find_holders(
    devices: set[int],
    *,
    exclude_pids: set[int] | None = None,
    include_device_nodes: bool = True,
    pids: Iterable[int] | None = None,
) -> list[Holder]:
    """Every process holding a file on, or the block device of, one of ``devices``.

    ``devices`` are device numbers: the st_dev of files on a mounted filesystem, which is
    the st_rdev of its block device. Processes in ``exclude_pids`` are left out; by
    default (None) that is hanode itself (whoever ends holders also leaves out its
    ancestors: protected_pids()).
    With ``include_device_nodes`` false, an fd on the block device node itself does not
    count (it does not keep the filesystem busy). ``pids`` limits the walk to those
    processes (None: every process). Processes that vanish during the walk are skipped.
    The result is ordered by pid.
    """
    if not devices:
        return []
    excluded = {os.getpid()} if exclude_pids is None else exclude_pids
    scan = _ProcessScanner(devices, include_device_nodes)
    holders: list[Holder] = []
    for pid in _pids() if pids is None else sorted(set(pids)):
        if pid in excluded:
            continue
        holder = scan.process(pid)
        if holder is not None:
            holders.append(holder)
    return holders


def _pids() -> list[int]:
    return sorted(int(entry) for entry in os.listdir(_PROC) if entry.isdigit())


class _ProcessScanner:
    """One walk's matching rules; each process is read through a /proc/PID directory fd.

    The directory fd pins the process: if it exits and its pid is reused mid-walk, reads
    fail (ESRCH/ENOENT) instead of silently reading the new process.
    """

    def __init__(self, devices: set[int], device_nodes: bool) -> None:
        self.devices = devices
        self.device_nodes = device_nodes
        # /proc/PID/maps prints the device as "%02x:%02x" of major and minor (proc(5))
        self.map_fields = {_map_field(dev) for dev in devices}
        self.map_needles = [b" " + field + b" " for field in self.map_fields]

    def process(self, pid: int) -> Holder | None:
        try:
            directory = os.open(f"{_PROC}/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return None  # gone already
        try:
            reasons = self._links(directory) + self._fds(directory) + self._maps(directory)
            if not reasons:
                return None
            return Holder(pid, _name(directory), tuple(reasons))
        finally:
            os.close(directory)

    def _on_devices(self, st: os.stat_result, device_nodes: bool) -> bool:
        if st.st_dev in self.devices:
            return True
        # an fd on the block device node itself (e.g. a tool holding /dev/drbd1 open)
        return device_nodes and stat.S_ISBLK(st.st_mode) and st.st_rdev in self.devices

    def _links(self, directory: int) -> list[str]:
        reasons = []
        for link in ("cwd", "root", "exe"):
            try:
                # stat() of a /proc magic link reaches the inode directly, even if deleted
                if self._on_devices(os.stat(link, dir_fd=directory), device_nodes=False):
                    reasons.append(link)
            except _VANISHED:
                continue  # gone, a kernel thread (no exe), or not ours to read
        return reasons

    def _fds(self, directory: int) -> list[str]:
        try:
            listing = os.open("fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=directory)
        except _VANISHED:
            return []
        try:
            fds = os.listdir(listing)
        except _VANISHED:
            return []
        finally:
            os.close(listing)
        reasons = []
        for fd in sorted(fds, key=int):
            link = f"fd/{fd}"
            try:
                if not self._on_devices(os.stat(link, dir_fd=directory), self.device_nodes):
                    continue
                target = os.readlink(link, dir_fd=directory)
            except _VANISHED:
                continue  # closed (or the process ended) between listdir and stat
            reasons.append(f"fd {fd} {target}")
        return reasons

    def _maps(self, directory: int) -> list[str]:
        try:
            text = _read(directory, "maps")
        except OSError:
            return []  # vanished, or a kernel thread
        if not any(needle in text for needle in self.map_needles):
            return []  # the common case: one substring scan instead of splitting every line
        paths: list[str] = []
        for line in text.splitlines():
            # address perms offset dev inode [pathname]; the pathname may contain spaces
            fields = line.split(maxsplit=5)
            if len(fields) < 6 or fields[3] not in self.map_fields or fields[4] == b"0":
                continue
            path = os.fsdecode(fields[5])
            if path not in paths:
                paths.append(path)
        return [f"mmap {path}" for path in paths]


def _map_field(device: int) -> bytes:
    return f"{os.major(device):02x}:{os.minor(device):02x}".encode()


def _read(directory: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=directory)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _name(directory: int) -> str:
    try:
        return os.fsdecode(_read(directory, "comm").rstrip(b"\n"))
    except OSError:
        return "?"  # vanished: the pid is still worth reporting


def process_name(pid: int) -> str:
    """The command name of ``pid`` (/proc/PID/comm); "?" when it is gone."""
    try:
        directory = os.open(f"{_PROC}/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return "?"
    try:
        return _name(directory)
    finally:
        os.close(directory)
