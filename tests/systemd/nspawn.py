"""systemd as PID 1 in a systemd-nspawn container, for the `systemd` test tier.

The rootfs is a small Debian 12 (mmdebstrap minbase + systemd, dbus, python3 and hanode's
Python dependencies) carrying the test units of tests/systemd/units. It is built once and
cached under /var/cache/hanode-nspawn, keyed by a hash of its recipe (this file's recipe
constants and the unit files), so it is rebuilt exactly when the recipe changes.

Each boot runs with ``--volatile=overlay`` (a tmpfs over the cached tree, so no test ever
changes the cache) and the host's hanode/ bound read-only at /opt/hanode/hanode. Commands
run inside through ``nsenter`` into the namespaces of the container's PID 1.

    /usr/bin/python3 tests/systemd/nspawn.py build   # build (or find) the rootfs
    /usr/bin/python3 tests/systemd/nspawn.py boot    # boot, report timings, power off
    /usr/bin/python3 tests/systemd/nspawn.py bench   # also D-Bus job latency, import time
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOP = HERE.parent.parent
UNITS = HERE / "units"
CACHE = Path("/var/cache/hanode-nspawn")

SUITE = "bookworm"
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "python3-jeepney",
    "python3-systemd",
    "python3-psutil",
    "python3-tomlkit",
    "python3-pyroute2",
    "iproute2",  # a Depends of the .deb: status reads the address with `ip -j`
)
# Units enabled in the image ([Install] section honoured by `systemctl --root enable`).
ENABLED = ("hanode-test-enabled.service", "hanode-test-wantedby.service")
# What Debian's postgresql generator links at boot, made static here.
WANTS = (("postgresql.service", "postgresql@15-main.service"),)
# Units that only slow the boot of a throwaway container down.
MASKED = (
    "console-getty.service",
    "getty@.service",
    "systemd-firstboot.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_reap.service",
)
# Keep the image small: no docs, manuals or translations.
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
)
RECIPE_VERSION = "1"

ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
}
BOOT_TIMEOUT = 30.0
POWEROFF_TIMEOUT = 5.0  # s; a clean poweroff takes ~0.2 s


def recipe_hash() -> str:
    """A short hash of everything the rootfs is built from."""
    digest = hashlib.sha256()
    for item in (RECIPE_VERSION, SUITE, *PACKAGES, *ENABLED, *MASKED, *DPKG_EXCLUDES):
        digest.update(item.encode() + b"\0")
    for parent, child in WANTS:
        digest.update(f"{parent}>{child}".encode() + b"\0")
    for path in sorted(UNITS.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    # How it is built counts too, not only from what.
    for function in (_customize_hooks, _mmdebstrap_argv):
        digest.update(inspect.getsource(function).encode())
    return digest.hexdigest()[:16]


def _customize_hooks() -> list[str]:
    hooks = [f'copy-in {" ".join(str(p) for p in sorted(UNITS.iterdir()))} /etc/systemd/system/']
    hooks += [f'systemctl --root="$1" enable {unit}' for unit in ENABLED]
    hooks += [f'systemctl --root="$1" mask {unit}' for unit in MASKED]
    for parent, child in WANTS:
        wants = f'"$1"/etc/systemd/system/{parent}.wants'
        template = child.split("@", 1)[0] + "@.service"
        hooks.append(f"mkdir -p {wants} && ln -s ../{template} {wants}/{child}")
    # An empty machine-id: nspawn hands the container a transient one at each boot.
    hooks.append('truncate -s 0 "$1"/etc/machine-id')
    hooks.append('rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin')
    return hooks


def rootfs(log: bool = False) -> Path:
    """The cached rootfs for the current recipe, built first if missing (~1 min)."""
    key = recipe_hash()
    root = CACHE / key
    if (root / "etc/os-release").exists():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f"{key}.", suffix=".building", dir=CACHE))
    try:
        subprocess.run(
            _mmdebstrap_argv(building),
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=None if log else subprocess.DEVNULL,
            stderr=None if log else subprocess.PIPE,
            text=True,
        )
    except subprocess.CalledProcessError as err:
        shutil.rmtree(building, ignore_errors=True)
        raise RuntimeError(f"mmdebstrap failed: {(err.stderr or '')[-2000:]}") from err
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    try:
        building.rename(root)
    except OSError:
        # A concurrent run finished the same recipe first: use its tree.
        shutil.rmtree(building, ignore_errors=True)
        if not (root / "etc/os-release").exists():
            raise
    # Old recipes, and builds that died an hour ago or more, are dead weight.
    for other in CACHE.iterdir():
        stale = time.time() - other.stat().st_mtime > 3600
        if other != root and (stale or not other.name.endswith(".building")):
            shutil.rmtree(other, ignore_errors=True)
    return root


def _mmdebstrap_argv(target: Path) -> list[str]:
    return [
        "mmdebstrap",
        "--variant=minbase",
        "--mode=root",
        "--format=directory",
        f"--include={','.join(PACKAGES)}",
        *(f"--dpkgopt={opt}" for opt in DPKG_EXCLUDES),
        *(f"--customize-hook={hook}" for hook in _customize_hooks()),
        SUITE,
        str(target),
    ]


class Container:
    """A booted container: ``run()`` commands inside, ``close()`` to power it off."""

    def __init__(self, root: Path, binds: dict[Path, str] | None = None) -> None:
        self.root = root
        self.binds = {TOP / "hanode": "/opt/hanode/hanode", HERE: "/opt/hanode-tests"}
        self.binds.update(binds or {})
        self.log = tempfile.NamedTemporaryFile(prefix="hanode-nspawn.", suffix=".log")  # noqa: SIM115
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader: int | None = None
        self._leader_start: int | None = None
        self.boot_seconds: float | None = None

    def boot(self) -> Container:
        """Start the container and wait until its systemd reports the system running."""
        argv = [
            "systemd-nspawn",
            "--boot",
            "--keep-unit",
            "--register=no",
            "--volatile=overlay",
            "--console=passive",
            "--quiet",
            f"--directory={self.root}",
            "--machine=hanode-test",
            *(f"--bind-ro={src}:{dst}" for src, dst in self.binds.items()),
        ]
        started = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so teardown can kill it all
        )
        try:
            self.leader = self._wait_leader(started + BOOT_TIMEOUT)
            self._leader_start = _start_time(self.leader)
            self._wait_running(started + BOOT_TIMEOUT)
        except BaseException:
            self.close()
            raise
        self.boot_seconds = time.monotonic() - started
        return self

    def _wait_leader(self, deadline: float) -> int:
        """The host PID of the container's PID 1 (a descendant of nspawn)."""
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited early: {self.output()}")
            for pid in _descendants(self.proc.pid):
                if _ns_pid(pid) == 1:
                    return pid
            time.sleep(0.02)
        raise TimeoutError(f"no container PID 1 after {BOOT_TIMEOUT}s: {self.output()}")

    def _wait_running(self, deadline: float) -> None:
        state = ""
        while time.monotonic() < deadline:
            result = self.run(["systemctl", "is-system-running"], check=False, timeout=10)
            state = result.stdout.strip()
            if state in ("running", "degraded"):
                if state == "degraded":
                    failed = self.run(["systemctl", "--failed", "--no-legend"], check=False)
                    raise RuntimeError(f"container booted degraded: {failed.stdout.strip()}")
                return
            time.sleep(0.05)
        raise TimeoutError(f"not running after {BOOT_TIMEOUT}s ({state}): {self.output()}")

    def run(
        self,
        argv: list[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the container (all of PID 1's namespaces, root dir, cwd)."""
        assert self.leader is not None
        environment = {**ENV, "PYTHONPATH": "/opt/hanode", **(env or {})}
        full = ["nsenter", f"--target={self.leader}", "--all", "env", "-i"]
        full += [f"{key}={value}" for key, value in environment.items()]
        full += argv
        return subprocess.run(
            full,
            check=check,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def hanode(
        self, *args: str, check: bool = False, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """``python3 -m hanode ARGS`` inside the container."""
        return self.run(["/usr/bin/python3", "-m", "hanode", *args], check=check, timeout=timeout)

    def output(self) -> str:
        """What nspawn and the container's console printed so far (last 2000 chars)."""
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def close(self) -> None:
        """Power the container off; if it does not go in time, kill its PID 1 and nspawn.

        A poweroff can hang (a unit whose stop never ends), and the container's PID 1 is
        in its own session, out of reach of nspawn's process group: killing it ends its
        PID namespace, every process in it included, and then nspawn exits by itself.
        """
        proc, self.proc = self.proc, None
        if proc is None:
            return
        leader, self.leader = self.leader, None
        if proc.poll() is None:
            # nspawn forwards SIGTERM to the container's systemd as a poweroff request.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=POWEROFF_TIMEOUT)
            except subprocess.TimeoutExpired:
                if leader is not None and self._is_leader(leader):
                    os.kill(leader, signal.SIGKILL)
                try:
                    proc.wait(timeout=POWEROFF_TIMEOUT)
                except subprocess.TimeoutExpired:
                    _killpg(proc.pid)
                    proc.wait(timeout=POWEROFF_TIMEOUT)
        _killpg(proc.pid)  # anything left in nspawn's group (nothing, normally)
        if leader is not None and self._is_leader(leader):
            os.kill(leader, signal.SIGKILL)  # nspawn gone, container not: never leak it
        self.log.close()

    def _is_leader(self, pid: int) -> bool:
        """Is ``pid`` still our container's PID 1 (not a reused PID)?"""
        return self._leader_start is not None and _start_time(pid) == self._leader_start

    def __enter__(self) -> Container:
        return self.boot()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
        except FileNotFoundError:
            continue
        found += [int(child) for child in text.split()]
    return found


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        children = _children(todo.pop())
        found += children
        todo += children
    return found


def _start_time(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks since boot), to tell a reused PID apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    # Field 22; counted after the ")" that ends the command name, which may hold spaces.
    return int(stat.rsplit(")", 1)[1].split()[19])


def _ns_pid(pid: int) -> int | None:
    """The PID of ``pid`` in its innermost PID namespace (NSpid's last field)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    return None


def _bench(container: Container) -> None:
    driver = ["/usr/bin/python3", "/opt/hanode-tests/driver.py", "bench"]
    units = ["hanode-test-first.service", "hanode-test-third.service"]
    for unit in units:
        print(unit, container.run([*driver, unit], timeout=300).stdout.strip())
    imports = container.run(
        ["/usr/bin/python3", "-X", "importtime", "-c", "import hanode.system.dbus"]
    )
    for line in imports.stderr.splitlines():
        if line.rstrip().endswith(("hanode.system.dbus", " jeepney")):
            print("import time (µs self | cumulative):", line.split(":", 1)[1].strip())


def main() -> int:
    """build: build the rootfs; boot: boot it once and print the timings."""
    verb = sys.argv[1] if len(sys.argv) > 1 else "build"
    started = time.monotonic()
    root = rootfs(log=True)
    print(f"rootfs {root} ready in {time.monotonic() - started:.1f}s")
    if verb in ("boot", "bench"):
        with Container(root) as container:
            print(f"booted to running in {container.boot_seconds:.2f}s")
            print(container.run(["systemctl", "is-system-running"], check=False).stdout.strip())
            if verb == "bench":
                _bench(container)
        print(f"powered off, {time.monotonic() - started:.1f}s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
