"""The host commands the lab runs: found on PATH, else installed by `tests/setup-host lab`.

What cannot be had is one line naming the fix (ToolError), never a traceback: on a fresh
machine the README's first command installs what it needs, as tests/run does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from hanodelab.paths import TOP
from hanodelab.progress import say

SETUP_HOST = TOP / "tests" / "setup-host"
# Where Debian installs commands: one there but not on PATH needs PATH fixed, not apt.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NO_INSTALL = "HANODE_LAB_NO_INSTALL"  # set: report what is missing, never run apt-get

# Each command the lab runs and its Debian package (in tests/setup-host's lab group).
PACKAGES = {
    "mmdebstrap": "mmdebstrap",  # the guest image
    "mke2fs": "e2fsprogs",  # its root filesystem
    "qemu-img": "qemu-utils",  # its qcow2 disks
    "qemu-system-x86_64": "qemu-system-x86",  # the VMs
    "ip": "iproute2",  # the namespace, its bridges and taps
    "sysctl": "procps",  # quiet bridges in the namespace
    "dpkg-buildpackage": "dpkg-dev",  # scripts/build-deb builds the .deb
    "dh": "debhelper",
    "psql": "postgresql-client",  # the client's write load through the floating IP
}
LAB = tuple(PACKAGES)  # up and demo may run every one of them
VMS = ("qemu-system-x86_64", "ip")  # boot and reset start qemu in the namespace
NET = ("ip",)  # client and down
IMAGES = ("mmdebstrap", "mke2fs", "qemu-img")  # images builds them


class ToolError(RuntimeError):
    """A command the lab needs is missing; str() is the one line that says what to do."""


def require(commands: Iterable[str]) -> None:
    """Return when every command is on PATH (no subprocess then); install what is missing
    when root (tests/setup-host lab), else ToolError naming the fix."""
    wanted = list(commands)
    absent = [name for name in _off_path(wanted) if not _installed(name)]
    if absent:
        why = _install()
        still = [name for name in absent if not _installed(name)]
        if still:
            raise ToolError(_missing_line(still, why or "tests/setup-host lab did not install it"))
    off_path = {name: _installed(name) for name in _off_path(wanted)}
    if off_path:
        folders = sorted({str(Path(path).parent) for path in off_path.values() if path})
        raise ToolError(
            f"{_names(list(off_path))} not on PATH but installed in {', '.join(folders)}: "
            f"add {':'.join(folders)} to PATH"
        )


def could_not_run(error: BaseException) -> bool:
    """True when error is subprocess failing to start a program (not a file that is missing)."""
    if not isinstance(error, FileNotFoundError) or error.filename is None:
        return False
    trace = error.__traceback__
    innermost = None
    while trace is not None:
        innermost, trace = trace.tb_frame.f_code, trace.tb_next
    return innermost is not None and (innermost.co_filename, innermost.co_name) == (
        subprocess.__file__,
        "_execute_child",
    )


def explain(error: FileNotFoundError) -> str:
    """The one line for a program subprocess could not start (see could_not_run)."""
    name = os.fsdecode(error.filename)
    if name in PACKAGES:
        return f"{name} is missing: {_fix([name])}"
    return f"{name} is missing (it could not be run): install it, then run labctl again"


def _off_path(commands: list[str]) -> list[str]:
    return [name for name in commands if shutil.which(name) is None]


def _installed(name: str) -> str | None:
    return shutil.which(name, path=SYSTEM_PATH)


def _names(commands: list[str]) -> str:
    return ", ".join(commands) + (" is" if len(commands) == 1 else " are")


def _fix(commands: list[str]) -> str:
    packages = " ".join(dict.fromkeys(PACKAGES.get(name, name) for name in commands))
    return f"run tests/setup-host lab as root, or apt-get install {packages}"


def _missing_line(commands: list[str], why: str) -> str:
    return f"{_names(commands)} missing and could not be installed ({why}): {_fix(commands)}"


def _install() -> str | None:
    """Run tests/setup-host lab; None when it worked, else why it could not."""
    if os.environ.get(NO_INSTALL):
        return f"{NO_INSTALL} is set"
    if os.geteuid() != 0:
        return "not root"
    say("labctl: installing what the lab needs (tests/setup-host lab)")
    try:
        # apt's output goes to stderr: labctl's stdout is the output of exec, client, status.
        done = subprocess.run(
            [str(SETUP_HOST), "lab"],
            stdout=2,
            env={**os.environ, "PATH": SYSTEM_PATH},
            check=False,
        )
    except OSError as exc:
        return f"tests/setup-host: {exc.strerror}"
    if done.returncode != 0:
        return f"tests/setup-host lab failed with exit status {done.returncode}"
    return None
