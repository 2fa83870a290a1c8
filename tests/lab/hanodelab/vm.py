"""One lab node: a qemu process (TCG) in the lab's namespace, its disks and sockets."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from hanodelab import net
from hanodelab.image import Image
from hanodelab.paths import DISKS, LOGS, RUN
from hanodelab.progress import Progress
from hanodelab.qga import Agent, AgentError, Monitor

DATA_DISK_SIZE = "256M"
MARKER = "hanode-lab"  # in every lab qemu's command line: down() kills only those
# Virtual CPUs per guest: 1, the lab's measure (CI and the README's figures); a benchmark
# may ask more (HANODE_LAB_CPUS=2 tests/lab/labctl up) to see a multi-core server's figures.
CPUS_VARIABLE = "HANODE_LAB_CPUS"


def guest_cpus() -> int:
    """$HANODE_LAB_CPUS (1 to 4), else 1."""
    text = os.environ.get(CPUS_VARIABLE, "1")
    if not text.isdigit() or not 1 <= int(text) <= 4:
        raise ValueError(f"{CPUS_VARIABLE}={text!r}: give 1 to 4 virtual CPUs")
    return int(text)


class Node:
    """A lab VM by name (node1, node2)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.root_disk = DISKS / f"{name}-root.qcow2"
        self.data_disk = DISKS / f"{name}-data.qcow2"
        self.pidfile = RUN / f"{name}.pid"
        self.agent = Agent(RUN / f"{name}.qga")
        self.monitor = Monitor(RUN / f"{name}.qmp")
        self.serial_log = LOGS / f"{name}-serial.log"

    def mac(self, network: str = "public") -> str:
        """The MAC of this node's NIC on a network."""
        return net.mac(self.name, network)

    def create_disks(self, image: Image) -> None:
        """Fresh disks: a copy-on-write overlay of the image, an empty DRBD backing disk."""
        DISKS.mkdir(parents=True, exist_ok=True)
        for disk in (self.root_disk, self.data_disk):
            disk.unlink(missing_ok=True)
        subprocess.run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                str(image.root),
                str(self.root_disk),
            ],
            check=True,
            timeout=60,
        )
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(self.data_disk), DATA_DISK_SIZE],
            check=True,
            timeout=60,
        )

    @property
    def _name_argument(self) -> bytes:
        return f"{self.name},process={MARKER}-{self.name}".encode()

    def _is_ours(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return self._name_argument in cmdline

    def pid(self) -> int | None:
        """The pid of this node's qemu if it runs (checked against its command line)."""
        try:
            pid = int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if self._is_ours(pid) else None

    def orphans(self) -> list[int]:
        """qemu processes of this node whose pid file is gone (a crashed lab run)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and self._is_ours(int(entry.name)):
                found.append(int(entry.name))
        return [pid for pid in found if pid != self.pid()]

    def running(self) -> bool:
        """True while this node's qemu process lives."""
        return self.pid() is not None

    def start(self, image: Image, loadvm: str | None = None, paused: bool = False) -> None:
        """Launch qemu in the background (booting, or resuming from a snapshot)."""
        RUN.mkdir(parents=True, exist_ok=True)
        LOGS.mkdir(parents=True, exist_ok=True)
        for path in (self.agent.path, self.monitor.path, self.pidfile):
            path.unlink(missing_ok=True)
        append = (
            f"root=/dev/vda rw console=ttyS0 systemd.hostname={self.name} "
            "systemd.show_status=true loglevel=4"
        )
        argv = [
            "qemu-system-x86_64",
            "-name",
            f"{self.name},process={MARKER}-{self.name}",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-accel",
            "tcg,tb-size=128",
            "-cpu",
            "max",
            "-m",
            str(image.memory),
            "-smp",
            str(guest_cpus()),
            "-rtc",
            "base=utc,clock=host",
            "-kernel",
            str(image.kernel),
            "-initrd",
            str(image.initrd),
            "-append",
            append,
            "-drive",
            f"file={self.root_disk},if=virtio,format=qcow2,discard=unmap",
            "-drive",
            f"file={self.data_disk},if=virtio,format=qcow2",
            "-device",
            "virtio-rng-pci",
            "-chardev",
            f"socket,id=qga,path={self.agent.path},server=on,wait=off",
            "-device",
            "virtio-serial-pci",
            "-device",
            "virtserialport,chardev=qga,name=org.qemu.guest_agent.0",
            "-qmp",
            f"unix:{self.monitor.path},server=on,wait=off",
            "-chardev",
            f"file,id=serial,path={self.serial_log},append=on",
            "-serial",
            "chardev:serial",
            "-pidfile",
            str(self.pidfile),
            "-daemonize",
        ]
        for network in ("public", "cross"):  # public first: the kernel's eth0 is eth0
            tap = net.tap(self.name, network)
            argv += [
                "-netdev",
                f"tap,id={network},ifname={tap},script=no,downscript=no",
                "-device",
                f"virtio-net-pci,netdev={network},mac={self.mac(network)}",
            ]
        if loadvm is not None:
            argv += ["-loadvm", loadvm]
        if paused:
            argv.append("-S")
        done = subprocess.run(
            net.client_argv(argv), capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"qemu for {self.name} failed: {done.stderr.strip()}")

    def wait_agent(self, timeout: float = 600, progress: Progress | None = None) -> float:
        """Wait until the guest agent answers; the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if progress is not None:
                progress.update(f"waiting for {self.name}'s guest agent")
            if not self.running():
                raise RuntimeError(f"{self.name} stopped; see {self.serial_log}")
            if self.agent.ping(timeout=3):
                return time.monotonic() - started
            time.sleep(0.5)
        raise AgentError(f"{self.name}: no guest agent after {timeout} s; see {self.serial_log}")

    def kill(self, timeout: float = 15) -> None:
        """Hard power-off: qemu quits at once, the guest gets no shutdown."""
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(OSError, AgentError):  # it may die before answering
            self.monitor.call("quit", timeout=5)
        if not self.wait_exit(timeout):
            os.kill(pid, signal.SIGKILL)
            self.wait_exit(timeout)

    def wait_exit(self, timeout: float) -> bool:
        """Wait for qemu to exit; False if it still runs after timeout seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                return True
            time.sleep(0.1)
        return not self.running()
