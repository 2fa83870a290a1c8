"""find_holders: every kind of hold, found by device number on real processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from helpers import PYTHON
from mountns import HOLD_MMAP, HOLD_ROOT, Processes, in_mount_namespace, loop_ext4

from hanode.system.holders import _map_field, find_holders, process_name, protected_pids


def test_map_device_fields_use_the_kernels_hex_format() -> None:
    # proc(5): "%02x:%02x"; a minor above 255 is just more hex digits
    assert _map_field(os.makedev(8, 1)) == b"08:01"
    assert _map_field(os.makedev(259, 1000)) == b"103:3e8"


def test_no_devices_means_no_holders() -> None:
    assert find_holders(set()) == []


def test_protected_pids_are_this_process_and_its_ancestors() -> None:
    protected = protected_pids()
    assert os.getpid() in protected
    assert os.getppid() in protected
    assert 1 in protected


def test_finds_own_children_by_cwd_and_fd_without_root(tmp_path: Path) -> None:
    # on the filesystem of tmp_path: not a private mount, so only look at our own children
    device = os.stat(tmp_path).st_dev
    procs = Processes()
    try:
        (tmp_path / "data").write_bytes(b"x" * 4096)
        by_cwd = procs.spawn(["sleep", "1000"], cwd=tmp_path)
        with open(tmp_path / "data", "rb") as data:
            by_fd = procs.spawn(["sleep", "1000"], stdin=data, cwd="/")
        holders = {holder.pid: holder for holder in find_holders({device})}
        assert "cwd" in holders[by_cwd.pid].reasons
        assert f"fd 0 {tmp_path}/data" in holders[by_fd.pid].reasons
        assert os.getpid() not in holders  # hanode (here: pytest) is never a holder
        protected = protected_pids()
        assert os.getppid() in protected  # whoever ends holders leaves hanode's parents out
        spared = {holder.pid for holder in find_holders({device}, exclude_pids=protected)}
        assert os.getppid() not in spared and by_cwd.pid in spared
    finally:
        procs.close()


def test_a_walk_limited_to_some_processes_and_the_holders_parents(tmp_path: Path) -> None:
    # the stop looks again at only the holders it signalled, to umount as soon as they exit
    device = os.stat(tmp_path).st_dev
    procs = Processes()
    try:
        one = procs.spawn(["sleep", "1000"], cwd=tmp_path)
        two = procs.spawn(["sleep", "1000"], cwd=tmp_path)
        gone = procs.spawn(["true"], cwd=tmp_path)
        gone.wait()
        limited = find_holders({device}, pids=[two.pid, gone.pid], exclude_pids=set())
        assert [holder.pid for holder in limited] == [two.pid]
        assert limited[0].parent() == os.getpid()  # who would start it again
        everyone = {holder.pid for holder in find_holders({device})}
        assert {one.pid, two.pid} <= everyone
        assert process_name(one.pid) == "sleep"
        assert process_name(gone.pid) == "?"
    finally:
        procs.close()


def test_processes_vanishing_mid_walk_are_tolerated() -> None:
    device = os.stat("/").st_dev
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            subprocess.run(["true"], check=False)

    churners = [threading.Thread(target=churn) for _ in range(4)]
    for thread in churners:
        thread.start()
    try:
        for _ in range(30):
            holders = find_holders({device})
            assert all(holder.reasons for holder in holders)
    finally:
        stop.set()
        for thread in churners:
            thread.join()


@pytest.mark.root
def test_every_kind_of_holder_on_a_private_mount(tmp_path: Path) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    with loop_ext4(tmp_path) as loop:

        def scenario() -> None:
            subprocess.run(["mount", "-t", "ext4", loop, str(mountpoint)], check=True)
            mnt = str(mountpoint)
            device = os.stat(mnt).st_dev
            assert device == os.stat(loop).st_rdev
            procs = Processes()
            try:
                (mountpoint / "data").write_bytes(b"d" * 8192)
                (mountpoint / "dir").mkdir()
                (mountpoint / "lib.bin").write_bytes(b"m" * 8192)
                shutil.copy("/usr/bin/sleep", mountpoint / "sleep-copy")
                (mountpoint / "empty").mkdir()

                by_cwd = procs.spawn(["sleep", "1000"], cwd=mnt)
                with open(mountpoint / "data", "rb") as data:
                    by_file = procs.spawn(["sleep", "1000"], stdin=data, cwd="/")
                dir_fd = os.open(mountpoint / "dir", os.O_RDONLY | os.O_DIRECTORY)
                by_dir = procs.spawn(["sleep", "1000"], pass_fds=[dir_fd], cwd="/")
                os.close(dir_fd)
                gone = open(mountpoint / "gone", "w")  # noqa: SIM115 (closed below)
                by_deleted = procs.spawn(["sleep", "1000"], pass_fds=[gone.fileno()], cwd="/")
                gone_fd = gone.fileno()
                gone.close()
                os.unlink(mountpoint / "gone")
                by_mmap = procs.spawn(
                    [PYTHON, "-c", HOLD_MMAP, f"{mnt}/lib.bin"], ready=True, cwd="/"
                )
                by_exe = procs.spawn([f"{mnt}/sleep-copy", "1000"], cwd="/")
                by_root = procs.spawn(
                    [PYTHON, "-c", HOLD_ROOT, f"{mnt}/empty"], ready=True, cwd="/"
                )
                with open(loop, "rb") as node:
                    by_node = procs.spawn(["sleep", "1000"], stdin=node, cwd="/")
                bystander = procs.spawn(["sleep", "1000"], cwd="/")

                # this process holds the mount too, and is left out by default
                with open(mountpoint / "data", "rb"):
                    found = {holder.pid: holder.reasons for holder in find_holders({device})}
                    everyone = find_holders({device}, exclude_pids=set())
                assert os.getpid() in {holder.pid for holder in everyone}

                assert found == {
                    by_cwd.pid: ("cwd",),
                    by_file.pid: (f"fd 0 {mnt}/data",),
                    by_dir.pid: (f"fd {dir_fd} {mnt}/dir",),
                    by_deleted.pid: (f"fd {gone_fd} {mnt}/gone (deleted)",),
                    by_mmap.pid: (f"mmap {mnt}/lib.bin",),
                    by_exe.pid: ("exe", f"mmap {mnt}/sleep-copy"),
                    by_root.pid: ("root",),
                    by_node.pid: (f"fd 0 {loop}",),
                }
                assert bystander.pid not in found
                names = {holder.pid: holder.name for holder in find_holders({device})}
                assert names[by_exe.pid] == "sleep-copy"

                # an fd on the block device node does not hold the filesystem busy
                no_nodes = find_holders({device}, include_device_nodes=False)
                assert by_node.pid not in {holder.pid for holder in no_nodes}
                assert len(no_nodes) == len(found) - 1
            finally:
                procs.close()
                subprocess.run(["umount", mnt], check=True)

        in_mount_namespace(scenario)
