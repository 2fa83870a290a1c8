"""The filesystem resource: mountinfo reading (unit) and real loop mounts (root)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import PYTHON, Progress, run_hanode, wait_for
from mountns import (
    HOLD_CWD,
    HOLD_MMAP,
    HOLD_ROOT,
    RESPAWN,
    Processes,
    entered,
    in_mount_namespace,
    listed_by,
    loop_ext4,
    mounted,
    unshared,
)

from hanode.errors import Refused, StepFailed
from hanode.resources import Context, Level, State
from hanode.resources.filesystem import (
    Filesystem,
    FilesystemConfig,
    Fsck,
    kill_devices,
)
from hanode.system import holders as holders_module
from hanode.system.mountinfo import (
    filesystem_alive,
    mount_points_of,
    parse_mountinfo,
    submounts,
    top_mount_at,
)
from hanode.system.namespaces import namespace_copies

TOP = Path(__file__).resolve().parent.parent

MOUNTINFO = (
    "22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
    "23 22 0:21 / /proc rw,nosuid shared:12 - proc proc rw\n"
    "40 22 147:1 / /srv rw,noatime shared:20 - ext4 /dev/drbd1 rw\n"
    "41 40 0:50 / /srv/cache rw master:3 - tmpfs tmpfs rw,size=1024k\n"
    "42 41 0:51 / /srv/cache/deep rw - tmpfs none rw\n"
    "43 40 252:1 /usr /srv/usr rw - ext4 /dev/vda1 rw\n"
    "44 22 7:0 / /mnt/with\\040space\\134x rw - ext4 /dev/loop0 rw\n"
    "45 40 0:52 / /srv rw - tmpfs over rw\n"
)


# -- unit: mountinfo --------------------------------------------------------------------


def test_parse_mountinfo_fields_and_escapes() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    assert len(entries) == 8
    srv = entries[2]
    assert (srv.mount_id, srv.parent_id, srv.device) == (40, 22, os.makedev(147, 1))
    assert (srv.mountpoint, srv.fstype, srv.source, srv.options) == (
        "/srv",
        "ext4",
        "/dev/drbd1",
        "rw,noatime",
    )
    # the optional fields (shared:, master:) may be absent or several
    assert entries[4].fstype == "tmpfs" and entries[4].source == "none"
    assert entries[5].root == "/usr"
    assert entries[6].mountpoint == "/mnt/with space\\x"


def test_parse_mountinfo_refuses_a_line_it_cannot_read() -> None:
    with pytest.raises(StepFailed, match="cannot read this mount line"):
        parse_mountinfo("22 1 252:1 / / rw shared:1 ext4 /dev/vda1 rw\n")


def test_mount_points_of_a_device_number_with_escapes(tmp_path: Path) -> None:
    table = tmp_path / "mountinfo"
    table.write_text(MOUNTINFO + "41 22 147:1 /www /var/my\\040www rw - ext4 /dev/drbd1 rw\n")
    assert mount_points_of(os.makedev(147, 1), table)[-1] == "/var/my www"
    assert "/srv" in mount_points_of(os.makedev(147, 1), table)
    assert mount_points_of(os.makedev(9, 9), table) == []
    assert mount_points_of(os.makedev(147, 1), tmp_path / "absent") == []


def test_top_mount_is_the_last_of_a_stack() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    top = top_mount_at(entries, "/srv")
    assert top is not None and top.mount_id == 45
    assert top_mount_at(entries, "/nowhere") is None


def test_submounts_deepest_first() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    srv = next(entry for entry in entries if entry.mount_id == 40)
    order = [entry.mount_id for entry in submounts(entries, srv)]
    assert order == [45, 43, 42, 41]  # the stacked mount first, every child before parent


def test_a_device_also_mounted_outside_is_never_killed_for() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    srv = next(entry for entry in entries if entry.mount_id == 40)
    targets = [*submounts(entries, srv), srv]
    devices = kill_devices(entries, targets)
    # /srv/usr binds the root filesystem: its users are the whole node
    assert os.makedev(252, 1) not in devices
    assert devices == {
        os.makedev(147, 1),
        os.makedev(0, 50),
        os.makedev(0, 51),
        os.makedev(0, 52),
    }


def test_plan_and_probe_without_the_device(tmp_path: Path) -> None:
    fs = Filesystem(FilesystemConfig(device=str(tmp_path / "nodev"), mountpoint=str(tmp_path)))
    status = fs.probe()
    assert status.state is State.DOWN
    assert status.details["device_present"] is False
    with pytest.raises(StepFailed, match="does not exist"):
        fs.start(Context())
    assert fs.plan_start()[-1] == f"mount -t ext4 -- {tmp_path}/nodev {tmp_path}"


def test_fsck_command_line() -> None:
    config = FilesystemConfig(device="/dev/drbd1", mountpoint="/srv", fsck=Fsck.ALWAYS)
    assert Filesystem(config)._fsck_argv() == [
        "fsck",
        "-T",
        "-M",
        "-t",
        "ext4",
        "-p",
        "-f",
        "/dev/drbd1",
    ]


# -- root: real loop devices in a private mount namespace -------------------------------


def _fs(loop: str, mountpoint: Path, **kwargs: object) -> Filesystem:
    return Filesystem(FilesystemConfig(device=loop, mountpoint=str(mountpoint), **kwargs))  # type: ignore[arg-type]


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[str]:
    with loop_ext4(tmp_path) as device:
        yield device


@pytest.mark.root
def test_start_and_stop_twice_each(tmp_path: Path, loop: str) -> None:
    mountpoint = tmp_path / "not yet" / "srv"  # missing, with a space (mountinfo's \040)

    def scenario() -> None:
        fs = _fs(loop, mountpoint, options="noatime", fsck=Fsck.ALWAYS)
        assert fs.probe().state is State.DOWN
        assert fs.plan_start() == [
            f"mkdir {mountpoint}",
            f"fsck -T -M -t ext4 -p -f {loop}",
            f"mount -t ext4 -o noatime -- {loop} {mountpoint}",
        ]
        progress = Progress()
        fs.start(Context(progress=progress))
        assert f"fsck {loop}" in progress.lines and f"mount {mountpoint}" in progress.lines
        status = fs.probe()
        assert status.state is State.UP, status.summary
        assert status.details["holders"] == 0 and status.details["source"] == loop
        assert "noatime" in str(status.details["options"])
        fs.start(Context())  # already mounted right: nothing to do
        assert fs.plan_start() == []
        assert mounted(str(mountpoint))
        assert fs.plan_stop() == [f"umount {mountpoint}"]
        fs.stop(Context())
        assert not mounted(str(mountpoint))
        assert fs.probe().state is State.DOWN
        fs.stop(Context())
        assert fs.plan_stop() == []
        fs.start(Context())
        assert fs.probe().state is State.UP
        fs.stop(Context())
        assert fs.probe().state is State.DOWN

    in_mount_namespace(scenario)


@pytest.mark.root
def test_stop_ends_every_kind_of_holder(tmp_path: Path, loop: str) -> None:
    mountpoint = tmp_path / "srv"

    def scenario() -> None:
        fs = _fs(loop, mountpoint, stop_timeout=8)
        fs.start(Context())
        mnt = str(mountpoint)
        (mountpoint / "data").write_bytes(b"d" * 8192)
        (mountpoint / "dir").mkdir()
        (mountpoint / "lib.bin").write_bytes(b"m" * 8192)
        shutil.copy("/usr/bin/sleep", mountpoint / "sleep-copy")
        procs = Processes()
        try:
            kinds = {"cwd": procs.spawn(["sleep", "1000"], cwd=mnt)}
            with open(mountpoint / "data", "rb") as data:
                kinds["file"] = procs.spawn(["sleep", "1000"], stdin=data, cwd="/")
            dir_fd = os.open(mountpoint / "dir", os.O_RDONLY | os.O_DIRECTORY)
            kinds["dir"] = procs.spawn(["sleep", "1000"], pass_fds=[dir_fd], cwd="/")
            os.close(dir_fd)
            with open(mountpoint / "gone", "w") as gone:
                kinds["deleted"] = procs.spawn(["sleep", "1000"], pass_fds=[gone.fileno()], cwd="/")
            os.unlink(mountpoint / "gone")
            kinds["mmap"] = procs.python(HOLD_MMAP, f"{mnt}/lib.bin", cwd="/")
            kinds["exe"] = procs.spawn([f"{mnt}/sleep-copy", "1000"], cwd="/")
            stubborn = procs.python(
                "import os, signal, sys, time\n"
                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "os.chdir(sys.argv[1])\n"
                "print('ready', flush=True)\n"
                "time.sleep(1000)\n",
                mnt,
                cwd="/",
            )
            bystander = procs.spawn(["sleep", "1000"], cwd="/")
            status = fs.probe()
            assert status.details["holders"] == len(kinds) + 1
            assert f"{len(kinds) + 1} holders" in status.summary
            # the engine's probe around a step: the same state, no walk through /proc
            walk = holders_module.find_holders
            holders_module.find_holders = None  # type: ignore[assignment]  # a call: TypeError
            try:
                step = fs.step_probe()
            finally:
                holders_module.find_holders = walk
            assert (step.state, step.details) == (
                status.state,
                {k: v for k, v in status.details.items() if k != "holders"},
            )
            assert step.summary == f"{loop} mounted on {mnt} (ext4)"
            plan = fs.plan_stop()
            assert plan[0] == f"umount {mnt}"
            assert plan[1].startswith(f"if busy: TERM, then KILL, {len(kinds) + 1} holders")

            progress = Progress()
            fs.stop(Context(progress=progress))

            assert not mounted(mnt)
            for kind, proc in kinds.items():
                assert proc.wait(5) == -signal.SIGTERM, kind
            assert stubborn.wait(5) == -signal.SIGKILL  # it ignored TERM
            assert bystander.poll() is None  # not on the mount: untouched
            assert any("holders left after TERM, KILL in" in line for line in progress.lines)
        finally:
            procs.close()

    in_mount_namespace(scenario)


@pytest.mark.root
def test_busy_without_kill_holders_names_them_and_stays_mounted(tmp_path: Path, loop: str) -> None:
    mountpoint = tmp_path / "srv"

    def scenario() -> None:
        fs = _fs(loop, mountpoint, kill_holders=False)
        fs.start(Context())
        procs = Processes()
        try:
            holder = procs.spawn(["sleep", "1000"], cwd=str(mountpoint))
            with pytest.raises(StepFailed, match=rf"held by {holder.pid} \(sleep\): cwd") as err:
                fs.stop(Context())
            assert err.value.hint == "stop them, or set kill-holders = true"
            assert mounted(str(mountpoint))
            assert holder.poll() is None
            holder.kill()
            holder.wait()
            fs.stop(Context())  # converges once the holder is gone
            assert not mounted(str(mountpoint))
        finally:
            procs.close()

    in_mount_namespace(scenario)


@pytest.mark.root
def test_submounts_are_unmounted_first_and_their_holders_ended(tmp_path: Path, loop: str) -> None:
    mountpoint = tmp_path / "srv"

    def scenario() -> None:
        fs = _fs(loop, mountpoint, stop_timeout=6)
        fs.start(Context())
        sub = mountpoint / "cache"
        sub.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "none", str(sub)], check=True)
        (sub / "deep").mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "none", str(sub / "deep")], check=True)
        procs = Processes()
        try:
            holder = procs.spawn(["sleep", "1000"], cwd=str(sub / "deep"))
            assert fs.plan_stop()[:3] == [
                f"umount {sub}/deep",
                f"umount {sub}",
                f"umount {mountpoint}",
            ]
            fs.stop(Context())
            assert holder.wait(5) == -signal.SIGTERM
            assert not mounted(str(sub / "deep")) and not mounted(str(sub))
            assert not mounted(str(mountpoint))
        finally:
            procs.close()

    in_mount_namespace(scenario)


@pytest.mark.root
def test_a_mount_stacked_over_ours_is_unmounted_first(tmp_path: Path, loop: str) -> None:
    mountpoint = tmp_path / "srv"

    def scenario() -> None:
        fs = _fs(loop, mountpoint)
        fs.start(Context())
        subprocess.run(["mount", "-t", "tmpfs", "over", str(mountpoint)], check=True)
        status = fs.probe()
        assert status.state is State.UP
        assert status.details["submounts"] == [str(mountpoint)]
        fs.start(Context())  # ours is mounted there: nothing to do
        assert fs.plan_stop() == [f"umount {mountpoint}", f"umount {mountpoint}"]
        fs.stop(Context())
        assert not mounted(str(mountpoint))

    in_mount_namespace(scenario)


@pytest.mark.root
def test_a_bind_of_the_root_filesystem_inside_is_never_killed_for(
    tmp_path: Path, loop: str
) -> None:
    mountpoint = tmp_path / "srv"

    def scenario() -> None:
        fs = _fs(loop, mountpoint, stop_timeout=2)
        fs.start(Context())
        bind = mountpoint / "usr"
        bind.mkdir()
        subprocess.run(["mount", "--bind", "/usr", str(bind)], check=True)
        procs = Processes()
        try:
            # its device is the root filesystem's: ending its users would end everything
            holder = procs.spawn(["sleep", "1000"], cwd=str(bind / "bin"))
            with pytest.raises(StepFailed, match=f"{bind} shares its device") as err:
                fs.stop(Context())
            assert err.value.hint == f"umount {bind} by hand"
            assert holder.poll() is None
            assert mounted(str(bind))
            holder.kill()
            holder.wait()
            fs.stop(Context())
            assert not mounted(str(mountpoint))
        finally:
            procs.close()

    in_mount_namespace(scenario)


@pytest.mark.root
def test_hanode_leaves_its_own_working_directory_on_the_mount(tmp_path: Path, loop: str) -> None:
    mountpoint = tmp_path / "srv"

    def scenario() -> None:
        fs = _fs(loop, mountpoint)
        fs.start(Context())
        os.chdir(mountpoint)
        fs.stop(Context())
        assert os.getcwd() == "/"
        assert not mounted(str(mountpoint))

    in_mount_namespace(scenario)


@pytest.mark.root
def test_hanodes_parent_is_never_ended(tmp_path: Path, loop: str) -> None:
    mountpoint = tmp_path / "srv"
    config = FilesystemConfig(device=loop, mountpoint=str(mountpoint), stop_timeout=2)
    stop = (
        "import sys\n"
        "from hanode.resources.filesystem import FilesystemConfig\n"
        "from hanode.resources import Context\n"
        "from hanode.resources.filesystem import Filesystem\n"
        "from hanode.errors import StepFailed\n"
        f"fs = Filesystem(FilesystemConfig(device={loop!r}, mountpoint={str(mountpoint)!r}, "
        "stop_timeout=2))\n"
        "try:\n"
        "    fs.stop(Context())\n"
        "except StepFailed as err:\n"
        "    print(err)\n"
        "    sys.exit(1)\n"
    )

    def scenario() -> None:
        Filesystem(config).start(Context())
        os.chdir(mountpoint)  # like an admin's shell in /srv running `hanode stop`
        done = subprocess.run(
            [PYTHON, "-c", stop],
            cwd="/",
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PYTHONPATH": str(TOP)},
        )
        assert done.returncode == 1, done.stderr
        assert f"{os.getpid()} (" in done.stdout
        assert "[hanode's parent: never ended]" in done.stdout
        assert mounted(str(mountpoint))
        os.chdir("/")
        Filesystem(config).stop(Context())
        assert not mounted(str(mountpoint))

    in_mount_namespace(scenario)


@pytest.mark.root
def test_wrong_device_on_the_mountpoint_is_refused(tmp_path: Path, loop: str) -> None:
    mountpoint = tmp_path / "srv"
    mountpoint.mkdir()

    def scenario() -> None:
        subprocess.run(["mount", "-t", "tmpfs", "impostor", str(mountpoint)], check=True)
        (mountpoint / "keep").write_text("not ours")
        fs = _fs(loop, mountpoint)
        status = fs.probe()
        assert status.state is State.UNKNOWN
        assert "impostor is mounted on" in status.summary
        with pytest.raises(Refused, match=f"impostor is mounted on {mountpoint}, not {loop}"):
            fs.start(Context())
        assert (mountpoint / "keep").read_text() == "not ours"  # touched nothing
        fs.stop(Context())  # not ours to unmount
        assert mounted(str(mountpoint))
        subprocess.run(["umount", str(mountpoint)], check=True)

    in_mount_namespace(scenario)


@pytest.mark.root
def test_device_mounted_elsewhere_is_refused(tmp_path: Path, loop: str) -> None:
    mountpoint = tmp_path / "srv"
    other = tmp_path / "other"
    other.mkdir()

    def scenario() -> None:
        subprocess.run(["mount", loop, str(other)], check=True)
        fs = _fs(loop, mountpoint)
        assert fs.probe().state is State.UNKNOWN
        with pytest.raises(Refused, match=f"already mounted on {other}"):
            fs.start(Context())
        assert not mounted(str(mountpoint))
        with pytest.raises(StepFailed, match=f"also mounted on {other}"):
            fs.stop(Context())
        assert mounted(str(other))
        subprocess.run(["umount", str(other)], check=True)

    in_mount_namespace(scenario)


@pytest.mark.root
def test_fsck_repairs_what_is_safe_and_stops_on_the_rest(tmp_path: Path, loop: str) -> None:
    mountpoint = tmp_path / "srv"
    # the "errors" state: fsck -p checks it (even with fsck = auto) and reports corrections
    subprocess.run(["debugfs", "-w", "-R", "ssv state 2", loop], check=True, capture_output=True)

    def repaired() -> None:
        fs = _fs(loop, mountpoint, fsck=Fsck.AUTO)
        fs.start(Context())
        assert mounted(str(mountpoint))
        fs.stop(Context())

    in_mount_namespace(repaired)
    # zeroed group descriptors: beyond what fsck -p may repair on its own
    with open(loop, "r+b") as device:
        device.seek(2048)
        device.write(bytes(4096))

    def broken() -> None:
        fs = _fs(loop, mountpoint, fsck=Fsck.AUTO)
        with pytest.raises(StepFailed, match=f"fsck of {loop} failed with status 4") as err:
            fs.start(Context())
        assert err.value.hint == f"repair it by hand (fsck {loop}) before starting"
        assert not mounted(str(mountpoint))

    in_mount_namespace(broken)


@pytest.mark.root
def test_a_failing_mount_is_a_step_failure(tmp_path: Path, loop: str) -> None:
    mountpoint = tmp_path / "srv"

    def scenario() -> None:
        fs = _fs(loop, mountpoint, type="xfs")
        with pytest.raises(StepFailed, match="mount -t xfs"):
            fs.start(Context())
        assert fs.probe().state is State.DOWN
        fs.stop(Context())  # the rollback of a failed start is a no-op

    in_mount_namespace(scenario)


@pytest.mark.root
def test_holders_are_logged(tmp_path: Path, loop: str) -> None:
    mountpoint = tmp_path / "srv"

    def scenario() -> None:
        records: list[str] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                records.append(record.getMessage())

        logger = logging.getLogger("hanode.filesystem")
        logger.addHandler(Keep())
        logger.setLevel(logging.INFO)
        fs = _fs(loop, mountpoint)
        fs.start(Context())
        procs = Processes()
        try:
            holder = procs.spawn(
                [PYTHON, "-c", "import time; time.sleep(1000)"], cwd=str(mountpoint)
            )
            fs.stop(Context())
            assert holder.wait(5) == -signal.SIGTERM
            assert f"TERM {holder.pid} (python3): cwd" in records
        finally:
            procs.close()

    in_mount_namespace(scenario)


# -- root: respawned holders --------------------------------------------------------------


@pytest.mark.root
@pytest.mark.parametrize(
    ("mode", "delay"),
    [("restart", "0.1"), ("restart", "0.2"), ("every", "0.1")],
    ids=["restarted-0.1s-after-it-ends", "restarted-0.2s-after-it-ends", "a-new-one-every-0.1s"],
)
def test_respawned_holders_are_ended_until_the_umount_gets_through(
    tmp_path: Path, loop: str, mode: str, delay: str
) -> None:
    # The stop used to give up after its first scan that found no holder (the next worker
    # came before its umount: failed in 0.2-0.7 s), or never tried the umount again while
    # workers kept coming (failed after the whole stop-timeout).
    mountpoint = tmp_path / "srv"

    def scenario() -> None:
        fs = _fs(loop, mountpoint, stop_timeout=8)
        fs.start(Context())
        procs = Processes()
        try:
            respawner = procs.spawn(
                [PYTHON, "-c", RESPAWN, str(mountpoint), mode, delay],
                ready=True,
                cwd="/",
                start_new_session=True,
            )
            began = time.monotonic()
            fs.stop(Context())
            took = time.monotonic() - began
            assert not mounted(str(mountpoint))
            assert respawner.poll() is None  # it holds nothing on the mount: never ended
            assert took < 4, f"stop took {took:.1f}s"
        finally:
            procs.close()

    in_mount_namespace(scenario)


@pytest.mark.root
def test_a_respawner_faster_than_the_umount_is_named_when_time_runs_out(
    tmp_path: Path, loop: str
) -> None:
    mountpoint = tmp_path / "srv"

    def scenario() -> None:
        fs = _fs(loop, mountpoint, stop_timeout=2)
        fs.start(Context())
        procs = Processes()
        try:
            # a new worker the moment the last one ends: no umount can get in between
            respawner = procs.spawn(
                [PYTHON, "-c", RESPAWN, str(mountpoint), "restart", "0"],
                ready=True,
                cwd="/",
                start_new_session=True,
            )
            began = time.monotonic()
            with pytest.raises(StepFailed) as err:
                fs.stop(Context())
            assert 2 <= time.monotonic() - began < 5  # to the end of stop-timeout, no longer
            starter = f"{respawner.pid} (python3)"
            assert f"new holders appeared meanwhile, started by {starter}), held by" in str(
                err.value
            )
            assert err.value.hint == f"stop {starter}, or its service, then run `hanode stop` again"
            assert "\n" not in str(err.value)
            assert mounted(str(mountpoint))
            assert respawner.poll() is None
        finally:
            procs.close()

    in_mount_namespace(scenario)


# -- root: copies of the mount in other mount namespaces ----------------------------------


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@contextmanager
def _recorded() -> Iterator[list[str]]:
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("hanode.filesystem")
    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def _namespace_of_sleep(procs: Processes) -> subprocess.Popen[bytes]:
    """A `sleep` in a new mount namespace with a copy of every mount here (a container)."""
    other = procs.spawn(unshared(["sleep", "1000"]), cwd="/")
    assert wait_for(lambda: _comm(other.pid) == "sleep"), "unshare did not exec sleep"
    return other


@pytest.mark.root
def test_stop_unmounts_the_copies_in_other_mount_namespaces(tmp_path: Path, loop: str) -> None:
    mountpoint = tmp_path / "srv"
    cache = mountpoint / "cache"

    def scenario() -> None:
        fs = _fs(loop, mountpoint)
        fs.start(Context())
        cache.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "cache", str(cache)], check=True)
        device = os.stat(loop).st_rdev
        procs = Processes()
        try:
            other = _namespace_of_sleep(procs)
            where = f"the mount namespace of pid {other.pid} (sleep)"
            assert other.pid in listed_by(device)
            assert filesystem_alive(device, "ext4")
            with _recorded() as records:
                fs.stop(Context())
            assert not mounted(str(mountpoint))
            # in no mount namespace any more: the superblock is gone, the device released
            assert listed_by(device) == []
            assert not filesystem_alive(device, "ext4")
            assert other.poll() is None  # unmounted there, nothing killed
            assert records[-2:] == [
                f"unmounted {cache} in {where}",
                f"unmounted {mountpoint} in {where}",
            ]
            assert fs.probe().state is State.DOWN
        finally:
            procs.close()

    in_mount_namespace(scenario)


@pytest.mark.root
def test_check_and_plan_show_the_copies_in_other_mount_namespaces(
    tmp_path: Path, loop: str
) -> None:
    mountpoint = tmp_path / "srv"
    cache = mountpoint / "cache"

    def scenario() -> None:
        fs = _fs(loop, mountpoint, kill_holders=False)
        fs.start(Context())
        cache.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "cache", str(cache)], check=True)
        device = os.stat(loop).st_rdev
        procs = Processes()
        try:
            assert namespace_copies(device) == []
            assert not [finding for finding in fs.check() if "also mounted" in finding.message]
            other = _namespace_of_sleep(procs)
            where = f"the mount namespace of pid {other.pid} (sleep)"
            copies = namespace_copies(device)
            assert [(copy.pid, copy.name, copy.place()) for copy in copies] == [
                (other.pid, "sleep", str(mountpoint))
            ]
            # deepest first: the order of the umounts there
            assert [entry.mountpoint for entry in copies[0].targets] == [
                str(cache),
                str(mountpoint),
            ]
            warnings = [finding for finding in fs.check() if finding.level is Level.WARNING]
            assert [finding.message for finding in warnings] == [
                f"{loop} is also mounted on {mountpoint} in {where}"
            ]
            assert fs.plan_stop() == [
                f"umount {cache}",
                f"umount {mountpoint}",
                f"umount {cache} in {where}",
                f"umount {mountpoint} in {where}",
                f"if busy there: fail on the holders of {loop}",
            ]
        finally:
            procs.close()

    in_mount_namespace(scenario)


@pytest.mark.root
def test_a_held_copy_elsewhere_fails_the_stop_without_kill_holders(
    tmp_path: Path, loop: str
) -> None:
    mountpoint = tmp_path / "srv"

    def scenario() -> None:
        fs = _fs(loop, mountpoint, kill_holders=False)
        fs.start(Context())
        device = os.stat(loop).st_rdev
        procs = Processes()
        try:
            other = _namespace_of_sleep(procs)
            holder = procs.spawn(
                entered(other.pid, [PYTHON, "-c", HOLD_CWD, str(mountpoint)]), ready=True, cwd="/"
            )
            with pytest.raises(StepFailed) as err:
                fs.stop(Context())
            assert err.value.message == (
                f"{loop} is still mounted on {mountpoint} in the mount namespace of pid "
                f"{other.pid} (sleep): busy (kill-holders is false), "
                f"held by {holder.pid} (python3): cwd"
            )
            assert err.value.hint == (
                "stop what uses it there (a container, or a service with a private mount "
                "namespace), or set kill-holders = true"
            )
            assert not mounted(str(mountpoint))  # here it is unmounted: nobody held it here
            assert holder.poll() is None and other.poll() is None  # nothing killed
            assert sorted(listed_by(device)) == sorted([other.pid, holder.pid])  # untouched
            status = fs.probe()
            assert status.state is State.PARTIAL, status.summary  # not done: stop runs again
            assert "still in use" in status.summary

            holder.kill()
            holder.wait()
            with _recorded() as records:
                fs.stop(Context())  # converges: the copy is no longer held, so it goes
            assert records == [
                f"unmounted {mountpoint} in the mount namespace of pid {other.pid} (sleep)"
            ]
            assert listed_by(device) == []
            assert other.poll() is None
            assert fs.probe().state is State.DOWN
        finally:
            procs.close()

    in_mount_namespace(scenario)


@pytest.mark.root
def test_stop_ends_the_holders_of_a_copy_elsewhere_then_unmounts_it(
    tmp_path: Path, loop: str
) -> None:
    mountpoint = tmp_path / "srv"

    def scenario() -> None:
        fs = _fs(loop, mountpoint, stop_timeout=6)
        fs.start(Context())
        device = os.stat(loop).st_rdev
        procs = Processes()
        try:
            other = _namespace_of_sleep(procs)
            holder = procs.spawn(
                entered(other.pid, [PYTHON, "-c", HOLD_CWD, str(mountpoint)]), ready=True, cwd="/"
            )
            with _recorded() as records:
                fs.stop(Context())
            assert holder.wait(5) == -signal.SIGTERM
            assert other.poll() is None  # not a holder: its namespace lives on, without the copy
            assert listed_by(device) == []
            assert not filesystem_alive(device, "ext4")
            assert f"TERM {holder.pid} (python3): cwd" in records
            assert (
                records[-1]
                == f"unmounted {mountpoint} in the mount namespace of pid {other.pid} (sleep)"
            )
        finally:
            procs.close()

    in_mount_namespace(scenario)


@pytest.mark.root
def test_a_namespace_living_on_the_filesystem_is_never_unmounted_under_it(
    tmp_path: Path, loop: str
) -> None:
    mountpoint = tmp_path / "srv"
    cache = mountpoint / "cache"
    config = FilesystemConfig(device=loop, mountpoint=str(mountpoint), stop_timeout=6)

    def scenario() -> None:
        Filesystem(config).start(Context())
        cache.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "cache", str(cache)], check=True)
        device = os.stat(loop).st_rdev
        procs = Processes()
        try:
            # a container whose root is on the filesystem: its mounts hang below it
            rooted = procs.spawn(
                unshared([PYTHON, "-c", HOLD_ROOT, str(mountpoint)]), ready=True, cwd="/"
            )
            table = Path(f"/proc/{rooted.pid}/mountinfo")
            before = table.read_text()
            assert [line.split()[4] for line in before.splitlines()] == ["/", "/cache"]
            with pytest.raises(StepFailed) as err:
                Filesystem(config._replace(kill_holders=False)).stop(Context())
            assert err.value.message == (
                f"{loop} is still mounted on / in the mount namespace of pid {rooted.pid} "
                "(python3): it is the root of that namespace (kill-holders is false), "
                f"held by {rooted.pid} (python3): root"
            )
            assert table.read_text() == before  # not even its submounts were touched
            assert rooted.poll() is None

            Filesystem(config).stop(Context())  # kill-holders: the container ends
            assert rooted.wait(5) == -signal.SIGTERM
            assert listed_by(device) == []
            assert not filesystem_alive(device, "ext4")
        finally:
            procs.close()

    in_mount_namespace(scenario)


# -- root: the whole thing through the CLI and engine -----------------------------------


def _hanode(config: Path, run_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return run_hanode("-c", str(config), "--insecure-config", *argv, run_dir=run_dir)


@pytest.mark.root
def test_cli_start_stop_with_filesystem_and_links(tmp_path: Path, loop: str) -> None:
    srv, etc, run_dir = tmp_path / "srv", tmp_path / "etc", tmp_path / "run"
    etc.mkdir()
    run_dir.mkdir()
    (etc / "apache2").mkdir()
    (etc / "apache2" / "ports.conf").write_text("Listen 80\n")
    config = tmp_path / "hanode.toml"
    config.write_text(
        f'[filesystem]\ndevice = "{loop}"\nmountpoint = "{srv}"\nstop-timeout = 5\n\n'
        f'[links]\nlinks = [{{ path = "{etc}/apache2", target = "{srv}/etc-apache2" }}]\n'
    )

    def scenario() -> None:
        # the target is not on the new filesystem yet: links fail, the mount is rolled back
        failed = _hanode(config, run_dir, "start")
        assert failed.returncode == 1, failed.stderr
        assert f"link target missing: {srv}/etc-apache2" in failed.stderr
        assert not mounted(str(srv))
        assert (etc / "apache2" / "ports.conf").read_text() == "Listen 80\n"

        subprocess.run(["mount", loop, str(srv)], check=True)
        shutil.copytree(etc / "apache2", srv / "etc-apache2")
        (srv / "etc-apache2" / "ports.conf").write_text("Listen 8080\n")
        subprocess.run(["umount", str(srv)], check=True)

        started = _hanode(config, run_dir, "start")
        assert started.returncode == 0, started.stderr
        assert (etc / "apache2" / "ports.conf").read_text() == "Listen 8080\n"
        assert _hanode(config, run_dir, "status").returncode == 0
        again = _hanode(config, run_dir, "start")
        assert again.returncode == 0, again.stderr

        procs = Processes()
        try:
            holder = procs.spawn(["sleep", "1000"], cwd=str(etc / "apache2"))  # via the link
            stopped = _hanode(config, run_dir, "stop")
            assert stopped.returncode == 0, stopped.stderr
            assert holder.wait(5) == -signal.SIGTERM
        finally:
            procs.close()
        assert not mounted(str(srv))
        assert (etc / "apache2" / "ports.conf").read_text() == "Listen 80\n"
        assert _hanode(config, run_dir, "status").returncode == 3
        assert _hanode(config, run_dir, "stop").returncode == 0

        # someone else's filesystem on the mountpoint: refused, nothing touched
        subprocess.run(["mount", "-t", "tmpfs", "impostor", str(srv)], check=True)
        refused = _hanode(config, run_dir, "start")
        assert refused.returncode == 4, refused.stderr
        assert "impostor is mounted on" in refused.stderr
        assert not (etc / "apache2").is_symlink()
        subprocess.run(["umount", str(srv)], check=True)

    in_mount_namespace(scenario)


@pytest.mark.root
def test_cli_stop_is_done_only_when_no_namespace_holds_a_copy(tmp_path: Path, loop: str) -> None:
    srv, run_dir = tmp_path / "srv", tmp_path / "run"
    run_dir.mkdir()
    config = tmp_path / "hanode.toml"
    config.write_text(
        f'[filesystem]\ndevice = "{loop}"\nmountpoint = "{srv}"\nkill-holders = false\n'
    )

    def scenario() -> None:
        assert _hanode(config, run_dir, "start").returncode == 0
        device = os.stat(loop).st_rdev
        procs = Processes()
        try:
            other = _namespace_of_sleep(procs)
            holder = procs.spawn(
                entered(other.pid, [PYTHON, "-c", HOLD_CWD, str(srv)]), ready=True, cwd="/"
            )
            failed = _hanode(config, run_dir, "stop")
            assert failed.returncode == 1, failed.stderr
            assert f"the mount namespace of pid {other.pid} (sleep): busy" in failed.stderr
            assert holder.poll() is None
            # unmounted here, in use there: partly up, and a second stop is not skipped
            assert _hanode(config, run_dir, "status").returncode == 1
            again = _hanode(config, run_dir, "stop")
            assert again.returncode == 1, again.stderr
            holder.kill()
            holder.wait()
            done = _hanode(config, run_dir, "stop")
            assert done.returncode == 0, done.stderr
            assert listed_by(device) == []
            assert other.poll() is None
            assert _hanode(config, run_dir, "status").returncode == 3
        finally:
            procs.close()

    in_mount_namespace(scenario)


def test_check_warns_about_an_fstab_entry_without_noauto(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hanode.resources import filesystem as filesystem_module

    fstab = tmp_path / "fstab"
    fstab.write_text(
        "# static file system information\n"
        "/dev/vda1 / ext4 defaults 0 1\n"
        "/dev/drbd1 /srv ext4 defaults,noatime 0 2\n"
        "/dev/drbd1 /srv2 ext4 noauto,noatime 0 0\n"
    )
    monkeypatch.setattr(filesystem_module, "FSTAB", fstab)
    fs = Filesystem(FilesystemConfig(device="/dev/drbd1", mountpoint="/srv"))
    warnings = [f.message for f in fs.check() if "fstab" in f.message]
    assert warnings == [f"{fstab} mounts /dev/drbd1 on /srv at boot"]
    fstab.write_text("/dev/drbd1 /srv ext4 noauto 0 0\n")
    assert not [f for f in fs.check() if "fstab" in f.message]
    fstab.unlink()
    assert not [f for f in fs.check() if "fstab" in f.message]
