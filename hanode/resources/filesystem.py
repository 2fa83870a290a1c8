"""The replicated filesystem: check, mount, and on stop unmount even when it is held.

The mount state is read from /proc/self/mountinfo (proc(5)), never by resolving paths
through the mount: a mountpoint whose filesystem is gone resolves to the filesystem
below it, and acting on that (killing its users) would take the whole node down.
mount, umount and fsck run through hanode.run.

A stop is done when the filesystem is released, not when it is gone from this mount
namespace: copies of the mount in other namespaces (containers, services with a private
mount namespace) keep the superblock alive and the device open, so stop unmounts them
there too, ending their holders if kill-holders allows, and checks that none is left.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import stat
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from hanode.config import Table
from hanode.errors import Refused, StepFailed
from hanode.resources import Context, Finding, Level, ProgressLine, Resource, State, Status
from hanode.run import CommandError, run, stderr_tail, which
from hanode.system.mountinfo import (
    MountEntry,
    filesystem_alive,
    read_mountinfo,
    submounts,
    top_mount_at,
)

if TYPE_CHECKING:  # the /proc walks: imported where a stop, its plan or check look
    from hanode.system.holders import Holder
    from hanode.system.namespaces import NamespaceCopy

log = logging.getLogger("hanode.filesystem")

FSTAB = Path("/etc/fstab")
MOUNT_TIMEOUT = 300.0  # a journal replay after a crash can take minutes
FSCK_TIMEOUT = 4 * 3600.0  # a full check of a large filesystem takes hours; never cut short
POLL = 0.2  # seconds between holder scans while waiting for them to exit
GONE_POLL = 0.01  # seconds between looks at the signalled holders: umount as soon as they exit
SHOWN_HOLDERS = 10  # holders named in one error line; the log has them all

# fsck(8) exit status bits: 1 errors corrected, 2 reboot advised, 4 errors left
_FSCK_CORRECTED = 1
_FSCK_REBOOT = 2


class Fsck(StrEnum):
    """When to check the filesystem before mounting it."""

    NEVER = "never"
    AUTO = "auto"  # fsck -p: repairs what is safe, fails on what needs a person
    ALWAYS = "always"  # fsck -f -p: a full check even when marked clean


class FilesystemConfig(NamedTuple):
    """The [filesystem] section."""

    device: str
    mountpoint: str
    type: str = "ext4"
    options: str = ""
    kill_holders: bool = True
    stop_timeout: int = 30
    fsck: Fsck = Fsck.NEVER


class Filesystem(Resource[FilesystemConfig]):
    """The [filesystem] section: a block device mounted on a mountpoint."""

    section = "filesystem"
    order = 20
    settings = FilesystemConfig

    @classmethod
    def parse(cls, table: Table, parsed: Mapping[str, object]) -> FilesystemConfig:
        """[filesystem]: device, mountpoint, type and options; stop and fsck behaviour."""
        config = FilesystemConfig(
            device=table.path("device"),
            mountpoint=table.path("mountpoint"),
            type=table.string("type", "ext4"),
            options=table.get("options", str, ""),
            kill_holders=table.get("kill-holders", bool, True),
            stop_timeout=table.integer("stop-timeout", 1, 3600, 30),
            fsck=table.choice("fsck", Fsck, Fsck.NEVER),
        )
        if config.mountpoint == "/":
            raise table.error("mountpoint", "must not be /")
        if not re.fullmatch(r"[a-z0-9.]+", config.type):
            raise table.error("type", f"not a filesystem type: {config.type!r}")
        if any(ch.isspace() for ch in config.options):
            raise table.error("options", "must not contain white space", 'use "opt1,opt2"')
        return config

    @classmethod
    def start_budget(cls, config: FilesystemConfig) -> float:
        """The mount (a journal replay), and fsck when configured (never cut short)."""
        return MOUNT_TIMEOUT + (0 if config.fsck is Fsck.NEVER else FSCK_TIMEOUT)

    @classmethod
    def stop_budget(cls, config: FilesystemConfig) -> float:
        """umount, ending the holders within stop-timeout."""
        return float(config.stop_timeout)

    def __init__(self, config: FilesystemConfig) -> None:
        super().__init__(config)
        # the kernel reports canonical paths: compare with the mountpoint's canonical form
        self.mountpoint = os.path.realpath(config.mountpoint)

    # -- reading the state ------------------------------------------------------------

    def _device_number(self) -> int | None:
        try:
            st = os.stat(self.config.device)
        except OSError:
            return None
        return st.st_rdev if stat.S_ISBLK(st.st_mode) else None

    def _is_ours(self, entry: MountEntry, rdev: int | None) -> bool:
        if rdev is not None:
            return entry.device == rdev
        # the device node is gone (DRBD down?) but its filesystem may still be mounted
        return os.path.realpath(entry.source) == os.path.realpath(self.config.device)

    def _scan(self) -> _MountScan:
        entries = read_mountinfo()
        rdev = self._device_number()
        top = top_mount_at(entries, self.mountpoint)
        ours = [entry for entry in entries if self._is_ours(entry, rdev)]
        # ours on the mountpoint, even if something was stacked over it (a submount then)
        here = next((entry for entry in ours if entry.mountpoint == self.mountpoint), None)
        tree = {entry.mount_id for entry in ([here, *submounts(entries, here)] if here else [])}
        elsewhere = [entry for entry in ours if entry.mount_id not in tree]
        return _MountScan(entries, rdev, top, here, elsewhere)

    def probe(self) -> Status:
        """Mounted or not, from which device, and how many processes hold it."""
        return self._probe(count_holders=True)

    def step_probe(self) -> Status:
        """probe() without the holders count, a walk through every process's files (0.4 s
        in a lab guest right after the mount): a step's line does not need it, and stop
        finds the holders itself when the unmount meets them."""
        return self._probe(count_holders=False)

    def _probe(self, *, count_holders: bool) -> Status:
        try:
            scan = self._scan()
        except (OSError, StepFailed) as err:
            return Status(State.UNKNOWN, f"cannot read the mount table: {err}")
        details: dict[str, object] = {
            "device": self.config.device,
            "mountpoint": self.config.mountpoint,
            "device_present": scan.rdev is not None,
        }
        if scan.elsewhere:
            places = ", ".join(entry.mountpoint for entry in scan.elsewhere)
            details["also_mounted_on"] = [entry.mountpoint for entry in scan.elsewhere]
            return Status(State.UNKNOWN, f"{self.config.device} is mounted on {places}", details)
        if scan.here is not None:
            subs = submounts(scan.entries, scan.here)
            details.update(
                mounted=True,
                source=scan.here.source,
                fstype=scan.here.fstype,
                options=scan.here.options,
                submounts=[entry.mountpoint for entry in subs],
            )
            what = scan.here.fstype
            if count_holders:
                holders = _holders_of(scan.entries, [scan.here, *subs])
                details["holders"] = len(holders)
                what += f", {len(holders)} holders"
            return Status(
                State.UP, f"{scan.here.source} mounted on {self.mountpoint} ({what})", details
            )
        details["mounted"] = False
        if scan.top is not None:
            details["foreign"] = scan.top.source
            return Status(
                State.UNKNOWN,
                f"{scan.top.source} is mounted on {self.mountpoint}, not {self.config.device}",
                details,
            )
        if scan.rdev is not None and filesystem_alive(scan.rdev, self.config.type):
            # not here, yet alive: a copy in another mount namespace (stop unmounts it)
            details["alive_elsewhere"] = True
            return Status(
                State.PARTIAL,
                f"{self.config.device} is not mounted on {self.mountpoint}, but its "
                "filesystem is still in use (mounted in another mount namespace?)",
                details,
            )
        return Status(State.DOWN, f"{self.config.device} not mounted", details)

    # -- start ------------------------------------------------------------------------

    def plan_start(self) -> list[str]:
        """What start would do, from the current mount table."""
        scan = self._scan()
        if scan.here is not None:
            return []
        lines = []
        if not os.path.isdir(self.config.mountpoint):
            lines.append(f"mkdir {self.config.mountpoint}")
        if self.config.fsck is not Fsck.NEVER:
            lines.append(" ".join(self._fsck_argv()))
        lines.append(" ".join(self._mount_argv()))
        return lines

    def start(self, ctx: Context) -> None:
        """Check, optionally fsck, and mount; skip if already mounted right."""
        config = self.config
        try:
            st = os.stat(config.device)
        except FileNotFoundError:
            raise StepFailed(
                f"{config.device} does not exist", "is the DRBD resource up and Primary?"
            ) from None
        if not stat.S_ISBLK(st.st_mode):
            raise StepFailed(f"{config.device} is not a block device", "check [filesystem] device")
        scan = self._scan()
        if scan.elsewhere:
            places = ", ".join(entry.mountpoint for entry in scan.elsewhere)
            raise Refused(
                f"{config.device} is already mounted on {places}",
                f"umount it there; hanode mounts it only on {config.mountpoint}",
            )
        if scan.here is not None:
            log.info("%s already mounted on %s", config.device, self.mountpoint)
            return
        if scan.top is not None:
            raise Refused(
                f"{scan.top.source} is mounted on {self.mountpoint}, not {config.device}",
                f"umount {self.mountpoint} first if it should not be there",
            )
        self._make_mountpoint()
        if config.fsck is not Fsck.NEVER:
            self._fsck(ctx)
        with ctx.waiting(f"mount {self.mountpoint}"):
            run(self._mount_argv(), timeout=MOUNT_TIMEOUT)
        after = self._scan()
        if after.here is None:
            raise StepFailed(
                f"mount reported success but {config.device} is not on {self.mountpoint}",
                "see /proc/self/mountinfo",
            )
        log.info("mounted %s on %s", config.device, self.mountpoint)

    def _make_mountpoint(self) -> None:
        path = self.config.mountpoint
        if os.path.isdir(path):
            return
        if os.path.lexists(path):
            raise StepFailed(f"mountpoint {path} exists and is not a directory")
        os.makedirs(path, mode=0o755, exist_ok=True)
        self.mountpoint = os.path.realpath(path)
        log.info("created mountpoint %s", path)

    def _mount_argv(self) -> list[str]:
        argv = ["mount", "-t", self.config.type]
        if self.config.options:
            argv += ["-o", self.config.options]
        return [*argv, "--", self.config.device, self.config.mountpoint]

    def _fsck_argv(self) -> list[str]:
        # -T: no banner; -M: never a mounted filesystem (one mounted in another namespace);
        # -p (the checker's "preen"): repair what is safe, never ask. No "--": fsck takes
        # what follows it as checker options and, with no device left, checks all of fstab.
        argv = ["fsck", "-T", "-M", "-t", self.config.type, "-p"]
        if self.config.fsck is Fsck.ALWAYS:
            argv.append("-f")
        return [*argv, self.config.device]

    def _fsck(self, ctx: Context) -> None:
        argv = self._fsck_argv()
        with ctx.waiting(f"fsck {self.config.device}"):
            result = run(argv, timeout=FSCK_TIMEOUT, check=False)
        code = result.returncode
        if code & ~(_FSCK_CORRECTED | _FSCK_REBOOT):
            raise StepFailed(
                f"fsck of {self.config.device} failed with status {code}: "
                f"{stderr_tail(result.stderr or result.stdout)}",
                f"repair it by hand (fsck {self.config.device}) before starting",
            )
        if code:
            log.warning("fsck corrected errors on %s (status %d)", self.config.device, code)

    # -- stop -------------------------------------------------------------------------

    def plan_stop(self) -> list[str]:
        """What stop would do, from the current mount tables and holders."""
        from hanode.system.namespaces import namespace_copies

        scan = self._scan()
        verb = "TERM, then KILL," if self.config.kill_holders else "fail on"
        lines = []
        if scan.here is not None:
            targets = [*submounts(scan.entries, scan.here), scan.here]
            lines += [f"umount {entry.mountpoint}" for entry in targets]
            holders = _holders_of(scan.entries, targets)
            if holders:
                pids = " ".join(str(holder.pid) for holder in holders)
                lines.append(f"if busy: {verb} {len(holders)} holders ({pids})")
        device = _device_of(scan)
        if device is None:
            return lines
        copies = namespace_copies(device)
        for copy in copies:
            where = copy.where()
            lines += [f"umount {entry.mountpoint} in {where}" for entry in copy.targets]
        if copies:
            lines.append(f"if busy there: {verb} the holders of {self.config.device}")
        return lines

    def stop(self, ctx: Context) -> None:
        """Unmount the submounts then the filesystem, ending its holders if allowed; then
        its copies in other mount namespaces, until the filesystem is released."""
        scan = self._scan()
        if scan.elsewhere:
            places = ", ".join(entry.mountpoint for entry in scan.elsewhere)
            raise StepFailed(
                f"{self.config.device} is also mounted on {places}, outside {self.mountpoint}",
                "umount it there, or the device stays in use",
            )
        deadline = time.monotonic() + self.config.stop_timeout
        if scan.here is not None:
            self._leave_mount(scan.rdev)
            self._umount_here(ctx, deadline)
        device = _device_of(scan)
        if device is not None:
            fstype = scan.here.fstype if scan.here is not None else self.config.type
            self._release_elsewhere(ctx, device, fstype, deadline)

    def _umount_here(self, ctx: Context, deadline: float) -> None:
        """umount, deepest first; while busy, end the holders and try again, to the deadline.

        Every round tries the umount again as soon as the holders it signalled are gone:
        a worker respawned by a parent that holds nothing here is ended again each time,
        and the umount gets through in a moment when none is running.
        """
        from hanode.system.holders import protected_pids

        failure = self._umount_all(deadline)
        if failure is None:
            return
        if not self.config.kill_holders:
            raise self._busy(
                failure, "kill-holders is false", "stop them, or set kill-holders = true"
            )
        ending = _Ending(deadline, self.config.stop_timeout)
        with ctx.waiting(f"umount {self.mountpoint}: ending holders") as line:
            while failure is not None:
                entries, targets = self._targets()
                devices = kill_devices(entries, targets)
                found = _holders_of(entries, targets, exclude_pids={os.getpid()})
                protected = protected_pids()
                holders = [holder for holder in found if holder.pid not in protected]
                if not holders and found:
                    # only hanode's parents hold it (an admin's shell in /srv): never ended
                    raise self._busy(
                        failure,
                        "held by hanode's own parents",
                        f"cd out of {self.mountpoint} there, then run `hanode stop` again",
                    )
                if time.monotonic() >= deadline:
                    why, hint = ending.verdict(holders)
                    raise self._busy(failure, why, hint)
                ending.round(holders, devices, line)
                failure = self._umount_all(deadline)

    def _leave_mount(self, rdev: int | None) -> None:
        # hanode's own cwd on the mount (started from a shell in /srv) would block umount
        try:
            on_it = rdev is not None and os.stat(".").st_dev == rdev
        except OSError:
            return
        if on_it:
            log.info("leaving %s: hanode's working directory was on it", os.getcwd())
            os.chdir("/")

    def _targets(self) -> tuple[list[MountEntry], list[MountEntry]]:
        scan = self._scan()
        if scan.here is None:
            return scan.entries, []
        return scan.entries, [*submounts(scan.entries, scan.here), scan.here]

    def _umount_all(self, deadline: float) -> str | None:
        """Plain umount of every target, deepest first; None when all are gone.

        Otherwise the failure: which mountpoint, and what umount said.
        """
        _, targets = self._targets()
        for entry in targets:
            timeout = max(deadline - time.monotonic(), 10.0)
            try:
                run(["umount", "--", entry.mountpoint], timeout=timeout)
            except CommandError as err:
                _, left = self._targets()
                if any(other.mount_id == entry.mount_id for other in left):
                    failure = f"umount {entry.mountpoint}: {stderr_tail(err.stderr) or err}"
                    log.info("%s", failure)
                    return failure
                continue  # it went away meanwhile: that is what we wanted
            log.info("unmounted %s", entry.mountpoint)
        left = self._targets()[1]
        return f"{left[0].mountpoint} is still mounted" if left else None

    # -- stop: the copies in other mount namespaces -------------------------------------

    def _release_elsewhere(self, ctx: Context, device: int, fstype: str, deadline: float) -> None:
        """Unmount ``device``'s copies in other mount namespaces, until it is released.

        A copy nobody holds is unmounted inside its namespace (nothing is killed for that).
        One that is held (its namespace's processes hold the device: cwd, root, open
        files) is not touched, so a failure leaves it as it was: with kill-holders, the
        holders are ended as here and the umount tried again, to the deadline; without
        it, stop fails naming the namespace. Done only when no process's mount table lists
        the device and its filesystem is gone from the kernel (a namespace without
        processes cannot be seen otherwise).
        """
        from hanode.system.holders import find_holders, protected_pids
        from hanode.system.namespaces import namespace_copies

        copies = namespace_copies(device)
        if not copies and not filesystem_alive(device, fstype):
            return  # the common case: one stat per process, nothing else
        ending = _Ending(deadline, self.config.stop_timeout)
        with ctx.waiting(f"{self.config.device}: other mount namespaces") as line:
            while True:
                found = find_holders(
                    {device}, exclude_pids={os.getpid()}, include_device_nodes=False
                )
                failures = self._umount_copies(copies, found, deadline)
                left = namespace_copies(device)
                self._log_gone(copies, left, failures)
                copies = left
                if not copies and not filesystem_alive(device, fstype):
                    return
                # the namespaces where an umount failed first: a message names the first one;
                # a failure in a namespace that has gone meanwhile is no failure
                copies.sort(key=lambda copy: failures.get(copy.namespace.inode) is None)
                failure = failures.get(copies[0].namespace.inode) if copies else None
                protected = protected_pids()
                holders = [holder for holder in found if holder.pid not in protected]
                if (failure is not None or found) and not self.config.kill_holders:
                    raise self._still_used(
                        copies,
                        failure,
                        found,
                        "kill-holders is false",
                        "stop what uses it there (a container, or a service with a private "
                        "mount namespace), or set kill-holders = true",
                    )
                if found and not holders:
                    raise self._still_used(
                        copies,
                        failure,
                        found,
                        "held by hanode's own parents",
                        f"cd out of {self.mountpoint} there, then run `hanode stop` again",
                    )
                if time.monotonic() >= deadline:
                    why, hint = ending.verdict(holders)
                    raise self._still_used(copies, failure, found, why, hint)
                # no copy left to see: only the teardown of an ended namespace to wait for
                ending.round(holders, {device}, line, idle=POLL if copies else GONE_POLL * 5)

    def _umount_copies(
        self, copies: Sequence[NamespaceCopy], holders: Sequence[Holder], deadline: float
    ) -> dict[int, str | None]:
        """Unmount the copies nobody holds inside their namespace, deepest first.

        By namespace: None when all its targets were unmounted, else why not. A copy
        held by a process of its namespace, or on which the namespace's root is, is left
        whole: unmounting what is below it (a container's /proc, its own mounts) first
        and then failing on it would break what the failure leaves running.
        """
        outcome: dict[int, str | None] = {}
        for copy in copies:
            where = copy.where()
            members = set(copy.namespace.pids)
            if any(entry.mountpoint == "/" for entry in copy.mounts):
                outcome[copy.namespace.inode] = "it is the root of that namespace"
                continue
            if any(holder.pid in members for holder in holders):
                outcome[copy.namespace.inode] = "busy"
                continue
            outcome[copy.namespace.inode] = None
            for entry in copy.targets:
                failure = _umount_in_namespace(copy, entry, deadline)
                if failure is None:
                    # a container loses what it saw there: worth more than an info line
                    log.warning("unmounted %s in %s", entry.mountpoint, where)
                    continue
                log.info("umount %s in %s: %s", entry.mountpoint, where, failure)
                outcome[copy.namespace.inode] = f"umount {entry.mountpoint} there: {failure}"
                break  # the mounts above it cannot go while it is there
        return outcome

    @staticmethod
    def _log_gone(
        before: Sequence[NamespaceCopy],
        after: Sequence[NamespaceCopy],
        failures: Mapping[int, str | None],
    ) -> None:
        """Say which copies went without an umount of ours: their namespace has ended."""
        still = {copy.namespace.inode for copy in after}
        for copy in before:
            if copy.namespace.inode in still or failures.get(copy.namespace.inode) is None:
                continue  # still there, or unmounted by us (said already)
            if os.path.exists(copy.file):
                log.info("the copy on %s in %s is gone", copy.place(), copy.where())
            else:
                log.info(
                    "%s has ended with its processes, and its copy on %s with it",
                    copy.where(),
                    copy.place(),
                )

    def _still_used(
        self,
        copies: Sequence[NamespaceCopy],
        failure: str | None,
        holders: Sequence[Holder],
        why: str,
        hint: str,
    ) -> StepFailed:
        device = self.config.device
        if copies:
            first = copies[0]
            where = f"{first.place()} in {first.where()}"
            if len(copies) > 1:
                others = ", ".join(copy.where() for copy in copies[1:])
                where += f", and in {others}"
            message = f"{device} is still mounted on {where}"
        else:
            message = f"{device} is unmounted everywhere, but its filesystem is still in use"
        if failure is not None:
            message += f": {failure}"
        if holders:
            return StepFailed(f"{message} ({why}), held by {_named(holders, device)}", hint)
        if not copies:
            return StepFailed(
                f"{message} ({why}), by no process",
                "a mount namespace kept without processes (a bind mount of its ns file: "
                "findmnt -t nsfs) holds it; umount that, then run `hanode stop` again",
            )
        return StepFailed(f"{message} ({why})", hint)

    def _busy(self, failure: str, why: str, hint: str) -> StepFailed:
        entries, targets = self._targets()
        endable = kill_devices(entries, targets)
        shared = [entry.mountpoint for entry in targets if entry.device not in endable]
        if shared:
            # binds of filesystems mounted elsewhere: their users are the whole node's
            failure += (
                f"; {', '.join(shared)} shares its device with mounts outside "
                f"{self.mountpoint}, so its users are not looked for"
            )
        holders = self._holders_for_report()
        if not holders and shared:
            return StepFailed(f"{failure} ({why})", f"umount {shared[0]} by hand")
        if not holders:
            return StepFailed(
                f"{failure} ({why}), and no process holds it",
                "a swap file, a loop device or an NFS export on it, or a mount namespace "
                "without processes can keep it busy: see /proc/swaps, losetup -l, exportfs",
            )
        return StepFailed(f"{failure} ({why}), held by {_named(holders, self.mountpoint)}", hint)

    def _holders_for_report(self) -> list[Holder]:
        # include hanode's own parents (never killed): an admin's shell in /srv is common
        return _holders_of(*self._targets(), exclude_pids={os.getpid()})

    # -- check ------------------------------------------------------------------------

    def check(self) -> list[Finding]:
        """The device, mountpoint, filesystem type and fsck tool, without changing them."""
        config = self.config
        findings: list[Finding] = []
        try:
            st = os.stat(config.device)
            if stat.S_ISBLK(st.st_mode):
                findings.append(Finding(Level.OK, f"{config.device} is a block device"))
            else:
                findings.append(
                    Finding(Level.ERROR, f"{config.device} is not a block device", "check device")
                )
        except FileNotFoundError:
            findings.append(
                Finding(
                    Level.WARNING,
                    f"{config.device} does not exist (yet)",
                    "it appears when the DRBD resource is up",
                )
            )
        if os.path.isdir(config.mountpoint):
            findings.append(Finding(Level.OK, f"mountpoint {config.mountpoint} exists"))
        elif os.path.lexists(config.mountpoint):
            findings.append(
                Finding(Level.ERROR, f"mountpoint {config.mountpoint} is not a directory")
            )
        else:
            findings.append(
                Finding(
                    Level.WARNING, f"mountpoint {config.mountpoint} is missing", "start creates it"
                )
            )
        status = self.probe()
        if status.state is State.UNKNOWN:
            findings.append(Finding(Level.ERROR, status.summary, "umount it"))
        findings += self._namespace_findings(status)
        findings += self._fstab_findings()
        if config.fsck is not Fsck.NEVER and not _which(f"fsck.{config.type}"):
            findings.append(
                Finding(
                    Level.ERROR,
                    f"fsck = {config.fsck.value} but fsck.{config.type} is not installed",
                    'install the filesystem\'s tools, or set fsck = "never"',
                    missing=True,
                )
            )
        return findings

    def _namespace_findings(self, status: Status) -> list[Finding]:
        """Copies of the mount in other mount namespaces: stop has to unmount them there."""
        from hanode.system.namespaces import namespace_copies

        rdev = self._device_number()
        copies = namespace_copies(rdev) if rdev is not None else []
        hint = (
            "a container or a service with a private mount namespace started while it was "
            "mounted; `hanode stop` unmounts it there, or ends its holders if kill-holders "
            "allows"
        )
        findings = [
            Finding(
                Level.WARNING,
                f"{self.config.device} is also mounted on {copy.place()} in {copy.where()}",
                hint,
            )
            for copy in copies
        ]
        if status.state is State.PARTIAL and not copies:
            findings.append(Finding(Level.WARNING, status.summary, "`hanode stop` releases it"))
        return findings

    def _fstab_findings(self) -> list[Finding]:
        """An fstab entry for the device or mountpoint without noauto: boot would mount it."""
        findings = []
        for entry in fstab_entries():
            source, target = entry.get("source"), entry.get("target")
            options = str(entry.get("options") or "").split(",")
            device = os.path.realpath(self.config.device)
            ours = bool(source) and os.path.realpath(str(source)) == device
            if not ours and target != self.mountpoint:
                continue
            if "noauto" in options:
                continue
            findings.append(
                Finding(
                    Level.WARNING,
                    f"{FSTAB} mounts {source} on {target} at boot",
                    "add noauto to its options: only hanode may mount it, on the active node",
                )
            )
        return findings


def fstab_entries() -> list[dict[str, object]]:
    """The entries of /etc/fstab as libmount reads them (through findmnt --json)."""
    argv = ["findmnt", "--fstab", "--tab-file", str(FSTAB), "--json", "--evaluate"]
    try:
        result = run([*argv, "--output", "SOURCE,TARGET,OPTIONS"], timeout=10, check=False)
    except CommandError:
        return []  # findmnt missing: nothing to say about fstab
    if result.returncode != 0 or not result.stdout.strip():
        return []  # no fstab, or no entries in it
    try:
        entries = json.loads(result.stdout)["filesystems"]
    except (ValueError, KeyError, TypeError):
        return []
    return [entry for entry in entries if isinstance(entry, dict)]


class _MountScan(NamedTuple):
    """One read of the mount table, as the probe and the stop look at it."""

    entries: list[MountEntry]
    rdev: int | None  # the device's number; None when the node is missing
    top: MountEntry | None  # what is visible on the mountpoint
    here: MountEntry | None  # our device on the mountpoint
    elsewhere: list[MountEntry]  # our device mounted outside the mountpoint's tree


def kill_devices(entries: Sequence[MountEntry], targets: Iterable[MountEntry]) -> set[int]:
    """The devices of ``targets`` whose users may be ended: those mounted only there.

    A submount that binds a filesystem also mounted elsewhere (the root filesystem,
    /proc...) shares its device number with the whole node: killing its holders would
    kill everything. Those are only unmounted, never killed for.
    """
    inside = {entry.mount_id for entry in targets}
    devices = {entry.device for entry in entries if entry.mount_id in inside}
    outside = {entry.device for entry in entries if entry.mount_id not in inside}
    return devices - outside


def _holders_of(
    entries: Sequence[MountEntry],
    targets: Sequence[MountEntry],
    exclude_pids: set[int] | None = None,
) -> list[Holder]:
    from hanode.system.holders import find_holders

    # an fd on the block device node does not keep the filesystem busy: not ours to end
    return find_holders(
        kill_devices(entries, targets), exclude_pids=exclude_pids, include_device_nodes=False
    )


def _device_of(scan: _MountScan) -> int | None:
    # the node may be gone (DRBD down) while its filesystem is mounted: mountinfo knows it
    if scan.rdev is not None:
        return scan.rdev
    return scan.here.device if scan.here is not None else None


def _named(holders: Sequence[Holder], what: str) -> str:
    """The holders in one line, the first SHOWN_HOLDERS of them; each one in the log."""
    from hanode.system.holders import protected_pids

    protected = protected_pids()
    mark = " [hanode's parent: never ended]"
    described = [
        holder.describe() + (mark if holder.pid in protected else "") for holder in holders
    ]
    shown = "; ".join(described[:SHOWN_HOLDERS])
    more = len(holders) - SHOWN_HOLDERS
    if more > 0:
        shown += f"; and {more} more"
    for line in described:
        log.error("holds %s: %s", what, line)
    return shown


# Run as `python3 -I -S -c THIS NSFILE INODE PATH`: enter the mount namespace, make sure it
# is still the one scanned (a pid can be reused), and umount2(2) PATH there. Nothing is
# executed from inside: a container's own umount could be anything, and hanode is root.
_UMOUNT_IN_NAMESPACE = """\
import ctypes, os, sys
ns_file, inode, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
libc = ctypes.CDLL(None, use_errno=True)
try:
    fd = os.open(ns_file, os.O_RDONLY | os.O_CLOEXEC)
except OSError:
    sys.exit("its processes have ended")
if os.fstat(fd).st_ino != inode:
    sys.exit("its processes have ended")
if libc.setns(fd, 0x00020000) != 0:  # CLONE_NEWNS
    sys.exit("setns: " + os.strerror(ctypes.get_errno()))
if libc.umount2(os.fsencode(path), 8) != 0:  # UMOUNT_NOFOLLOW
    sys.exit(os.strerror(ctypes.get_errno()))
"""


def _umount_in_namespace(copy: NamespaceCopy, entry: MountEntry, deadline: float) -> str | None:
    """umount ``entry`` inside the namespace of ``copy``; None when done, else why not."""
    argv = [
        "python3",
        "-I",
        "-S",
        "-c",
        _UMOUNT_IN_NAMESPACE,
        copy.file,
        str(copy.namespace.inode),
        entry.mountpoint,
    ]
    try:
        result = run(argv, timeout=max(deadline - time.monotonic(), 10.0), check=False)
    except CommandError as err:
        return str(err)
    if result.returncode == 0:
        return None
    return stderr_tail(result.stderr) or f"exit status {result.returncode}"


class _Ending:
    """Ends holders over rounds, up to a deadline: TERM each once, then KILL from kill_at.

    It remembers whom it signalled and who started them, so that a stop that runs out of
    time can name the parent that keeps starting new holders (a respawning worker).
    """

    def __init__(self, deadline: float, timeout: float) -> None:
        self.deadline = deadline
        self.timeout = timeout
        # leave the last part of the timeout for KILL to take effect and umount to run
        self.kill_at = deadline - min(5.0, timeout / 3)
        self.termed: set[int] = set()
        self.killed: set[int] = set()
        self.first: set[int] | None = None  # the holders of the first round
        self.starters: Counter[int] = Counter()  # the parents of those that came after

    def round(
        self,
        holders: Sequence[Holder],
        devices: set[int],
        line: ProgressLine,
        idle: float = POLL,
    ) -> None:
        """Signal ``holders``, then wait until none holds ``devices`` (at most POLL).

        Returning as soon as they let go is what beats a respawner: the next umount
        comes before its next worker. With no holders, wait ``idle`` seconds.
        """
        from hanode.system.holders import find_holders

        now = time.monotonic()
        if self.first is None:
            self.first = {holder.pid for holder in holders}
        killing = now >= self.kill_at
        for holder in holders:
            if killing and holder.pid not in self.killed:
                log.warning("KILL %s", holder.describe())
                _signal(holder.pid, signal.SIGKILL)
                self.killed.add(holder.pid)
            elif not killing and holder.pid not in self.termed:
                log.warning("TERM %s", holder.describe())
                _signal(holder.pid, signal.SIGTERM)
                self.termed.add(holder.pid)
            else:
                continue
            if holder.pid not in self.first:
                self.starters[holder.parent()] += 1
        _show(line, holders, killing, self.kill_at - now, self.deadline - now)
        until = min(now + (POLL if holders else idle), self.deadline)
        pids = {holder.pid for holder in holders}
        spent = 0.0
        while time.monotonic() < until:
            # never more than half the time looking: many holders that ignore TERM are slow
            time.sleep(max(GONE_POLL, spent) if pids else max(until - time.monotonic(), 0.0))
            if pids:
                began = time.monotonic()
                still = find_holders(
                    devices, exclude_pids=set(), include_device_nodes=False, pids=pids
                )
                spent = time.monotonic() - began
                pids = {holder.pid for holder in still}
                if not pids:
                    return

    def verdict(self, holders: Sequence[Holder]) -> tuple[str, str]:
        """Why the deadline passed, and the fix: the parent that keeps starting holders."""
        from hanode.system.holders import process_name

        why = f"still busy after {self.timeout:g}s"
        hint = "stop them by hand, then run `hanode stop` again"
        ended = self.termed | self.killed
        new = len(ended - (self.first or set()))
        held = ended | {holder.pid for holder in holders}
        # a parent that is a holder itself is ended too; one that is not keeps respawning
        starters = [pid for pid, _ in self.starters.most_common() if pid and pid not in held]
        if new and starters:
            starter = f"{starters[0]} ({process_name(starters[0])})"
            why += f"; {new} new holders appeared meanwhile, started by {starter}"
            hint = f"stop {starter}, or its service, then run `hanode stop` again"
        return why, hint


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended on its own
        os.kill(pid, signum)


def _show(
    line: ProgressLine, holders: Sequence[Holder], killing: bool, to_kill: float, left: float
) -> None:
    if killing:
        line.update(f"{len(holders)} holders left after KILL, {left:.0f}s left")
    else:
        line.update(f"{len(holders)} holders left after TERM, KILL in {to_kill:.0f}s")


def _which(program: str) -> bool:
    return which(program) is not None
