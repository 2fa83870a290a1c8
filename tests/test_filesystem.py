"""The filesystem resource: mountinfo reading (unit) and real loop mounts (root)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import PYTHON, Progress, run_hanode
from mountns import (
    HOLD_MMAP,
    Processes,
    in_mount_namespace,
    loop_ext4,
    mounted,
)

from hanode.errors import Refused, StepFailed
from hanode.resources import Context, State
from hanode.resources.filesystem import (
    Filesystem,
    FilesystemConfig,
    Fsck,
    kill_devices,
)
from hanode.system.mountinfo import mount_points_of, parse_mountinfo, submounts, top_mount_at

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
