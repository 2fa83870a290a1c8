"""Test helpers: ext4 loop devices and a private mount namespace per scenario.

A scenario runs in a forked child that first unshares its mount namespace and makes
every mount private, so whatever it mounts never reaches the host; when the child exits
its namespace (and every mount in it) goes away with it. The loop device is made and
detached (`losetup -d`) by the parent, always.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import PYTHON

CLONE_NEWNS = 0x00020000

# mmap(2) then close(2): only the map is left (Python's mmap module would keep an fd)
HOLD_MMAP = """
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
fd = os.open(sys.argv[1], os.O_RDONLY)
address = libc.mmap(None, 4096, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
assert address not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
os.close(fd)
print("ready", flush=True)
time.sleep(1000)
"""

HOLD_ROOT = """
import os, sys, time
os.chroot(sys.argv[1])
print("ready", flush=True)
time.sleep(1000)
"""

HOLD_CWD = """
import os, sys, time
os.chdir(sys.argv[1])
print("ready", flush=True)
time.sleep(1000)
"""

# A parent that holds nothing on the mount (its cwd is /) and starts workers that hold it
# (their cwd), again and again: argv[1] the mount; argv[2] "restart": a new worker DELAY
# (argv[3]) seconds after the last one ended, or "every": a new worker every DELAY seconds.
# "ready" once the first worker holds the mount. Start it with start_new_session=True:
# Processes.close() ends its whole group, workers included.
RESPAWN = """
import os, sys, time
mount, mode, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
os.chdir("/")

def worker():
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.chdir(mount)
        os.write(ready_w, b"x")
        time.sleep(1000)  # SIGTERM's default action ends it
        os._exit(0)
    os.close(ready_w)
    os.read(ready_r, 1)
    os.close(ready_r)
    return pid

def reap():
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass

first = worker()
print("ready", flush=True)
if mode == "restart":
    os.waitpid(first, 0)
while True:
    time.sleep(delay)
    if mode == "restart":
        os.waitpid(worker(), 0)
    else:
        worker()
        reap()
"""


def unshared(argv: list[str]) -> list[str]:
    """``argv`` run in a new mount namespace holding a private copy of every mount here
    (as a container or a service with PrivateTmp= does); unshare execs it, same pid."""
    return ["unshare", "--mount", "--propagation", "private", "--", *argv]


def entered(pid: int, argv: list[str]) -> list[str]:
    """``argv`` run in the mount namespace of ``pid``; nsenter execs it, same pid."""
    return ["nsenter", f"--mount=/proc/{pid}/ns/mnt", "--", *argv]


def listed_by(device: int) -> list[int]:
    """Every process whose mount table (in any mount namespace) lists ``device``."""
    needle = f" {os.major(device)}:{os.minor(device)} "
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/mountinfo", encoding="utf-8", errors="replace") as table:
                if needle in table.read():
                    pids.append(int(name))
        except OSError:
            continue  # ended meanwhile
    return pids


def _unshare_mounts() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno), "unshare(CLONE_NEWNS)")
    # private: nothing mounted or unmounted here propagates back to the host
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)


def in_mount_namespace(scenario: Callable[[], None]) -> None:
    """Run ``scenario`` in a forked child in a new private mount namespace.

    A failure in the child (assertion or any exception) fails the calling test with the
    child's traceback.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            _unshare_mounts()
            scenario()
            code = 0
        except BaseException:
            os.write(write_end, traceback.format_exc().encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        pytest.fail(f"scenario failed in the mount namespace:\n{report}", pytrace=False)


@contextmanager
def loop_ext4(directory: Path, size_mib: int = 32) -> Iterator[str]:
    """A fresh ext4 filesystem on a loop device; the device is detached on exit."""
    image = directory / "fs.img"
    with open(image, "wb") as handle:
        handle.truncate(size_mib << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    device = subprocess.run(
        ["losetup", "--find", "--show", str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def mounted(path: str) -> bool:
    """Whether ``path`` is a mountpoint in this process's namespace (mountinfo, exact)."""
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        # octal escapes (\040 for a space) decoded by Python's own escape codec
        return any(line.split(" ")[4].encode().decode("unicode_escape") == path for line in handle)


class Processes:
    """Real processes spawned by a scenario; every one is killed and reaped at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.groups: list[int] = []  # leaders of the sessions started (their workers too)

    def spawn(self, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start ``argv``; with ``ready=True`` wait for it to print a line first."""
        ready = bool(kwargs.pop("ready", False))
        if ready:
            kwargs["stdout"] = subprocess.PIPE
        proc: subprocess.Popen[bytes] = subprocess.Popen(argv, **kwargs)  # type: ignore[call-overload]
        self.procs.append(proc)
        if kwargs.get("start_new_session"):
            self.groups.append(proc.pid)
        if ready:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line, f"{argv} exited before it was ready"
        return proc

    def python(self, code: str, *args: str, **kwargs: object) -> subprocess.Popen[bytes]:
        """A Python holder that prints "ready" once it holds what it should."""
        return self.spawn([PYTHON, "-c", code, *args], ready=True, **kwargs)

    def wait_gone(self, proc: subprocess.Popen[bytes], timeout: float = 10) -> int:
        """The exit status of ``proc`` (negative: killed by that signal)."""
        return proc.wait(timeout)

    def close(self) -> None:
        """Kill and reap every process still running, and every process of their sessions."""
        for group in self.groups:
            with contextlib.suppress(ProcessLookupError):  # the whole group has ended
                os.killpg(group, signal.SIGKILL)
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
            if proc.stdout:
                proc.stdout.close()
