"""hanode.system.paths: the walk that follows no symlink, the judge of who can change a
directory, and the operations through the pinned descriptor (renameat2 NOREPLACE)."""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from hanode.errors import Exit, Refused
from hanode.system import paths
from hanode.system.paths import UnsafePath, open_parent

NOBODY = 65534  # a user that is not root (Debian's nobody)


# -- unit: any user ---------------------------------------------------------------------


def test_the_walk_pins_the_directory_and_every_operation_goes_through_it(tmp_path: Path) -> None:
    (tmp_path / "etc" / "app").mkdir(parents=True)
    with open_parent(str(tmp_path / "etc" / "app" / "conf")) as parent:
        assert (parent.directory, parent.name, parent.unsafe) == (
            str(tmp_path / "etc" / "app"),
            "conf",
            None,
        )
        # the directory moves away and a symlink takes its place: the fd stays with it
        (tmp_path / "etc").rename(tmp_path / "moved")
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "etc").symlink_to(tmp_path / "elsewhere")
        (tmp_path / "etc" / "app").mkdir()
        # an O_PATH descriptor serves symlinkat, readlinkat, fstatat, renameat2, unlinkat
        parent.symlink("/srv/conf", "conf")
        assert parent.readlink("conf") == "/srv/conf"
        assert parent.exists("conf") and not parent.exists("other")
        assert parent.lstat("conf").st_size == len("/srv/conf")
        parent.rename_noreplace("conf", "conf.drbdlinks")
        assert parent.listdir() == ["conf.drbdlinks"]
        parent.unlink("conf.drbdlinks")
        parent.symlink("/srv/conf", "conf")
        assert parent.path("conf") == str(tmp_path / "etc" / "app" / "conf")  # for messages
    assert os.readlink(tmp_path / "moved" / "app" / "conf") == "/srv/conf"
    assert os.listdir(tmp_path / "elsewhere" / "app") == []


def test_a_symlink_on_the_way_is_refused_even_when_not_refusing(tmp_path: Path) -> None:
    (tmp_path / "real" / "app").mkdir(parents=True)
    (tmp_path / "link").symlink_to("real")
    for refuse in (True, False):
        with pytest.raises(UnsafePath) as caught:
            open_parent(str(tmp_path / "link" / "app" / "conf"), refuse=refuse)
        error = caught.value
        assert error.directory == str(tmp_path / "link")
        assert error.message == (
            f"{tmp_path}/link is a symlink (to real): hanode follows no symlink on the way "
            "to a path"
        )
        assert error.hint == f"name the path without symlinks instead: {tmp_path}/real/app/conf"
        assert isinstance(error, Refused) and error.code is Exit.REFUSED
    # the last component itself may be a symlink: it is an entry, never walked through
    (tmp_path / "real" / "app" / "conf").symlink_to("/nowhere")
    with open_parent(str(tmp_path / "real" / "app" / "conf")) as parent:
        assert parent.readlink("conf") == "/nowhere"


def test_what_is_not_there_or_not_a_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_parent(str(tmp_path / "missing" / "conf"))
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        open_parent(str(tmp_path / "file" / "conf"))
    for wrong in ("relative/conf", f"{tmp_path}/../conf", f"{tmp_path}/", "/"):
        with pytest.raises(ValueError, match="not an absolute path without '..'"):
            open_parent(wrong)


def test_a_directory_every_user_can_write_is_refused_on_the_way_and_at_the_end(
    tmp_path: Path,
) -> None:
    shared = tmp_path / "shared"
    (shared / "app").mkdir(parents=True)
    shared.chmod(0o777)
    for path in (shared / "conf", shared / "app" / "conf"):  # the parent, or further up
        with pytest.raises(UnsafePath) as caught:
            open_parent(str(path))
        assert caught.value.message == (
            f"{shared} is writable by every user: a user could swap an entry of it for a "
            "symlink and redirect root's renames"
        )
        assert caught.value.hint == (
            f"chown root:root {shared} and chmod go-w {shared}, or link a directory root controls"
        )
    # not refusing (stop, status): the walk goes on, and says what it found
    with open_parent(str(shared / "app" / "conf"), refuse=False) as parent:
        assert parent.unsafe is not None and parent.unsafe.directory == str(shared)


def test_a_sticky_directory_is_safe_on_the_way_but_not_where_names_are_made(
    tmp_path: Path,
) -> None:
    sticky = tmp_path / "tmp"
    (sticky / "ours").mkdir(parents=True)
    sticky.chmod(0o1777)
    # no user can rename what they do not own in a sticky directory: `ours` stays put
    with open_parent(str(sticky / "ours" / "conf")) as parent:
        assert parent.unsafe is None
    # but every user can create names in it, e.g. conf.drbdlinks before hanode does
    with pytest.raises(UnsafePath, match=r"writable by every user \(sticky, but a user can"):
        open_parent(str(sticky / "conf"))


def test_rename_noreplace_never_replaces(tmp_path: Path) -> None:
    (tmp_path / "conf").write_text("original\n")
    (tmp_path / "conf.drbdlinks").write_text("there first\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir.drbdlinks").mkdir()
    with open_parent(str(tmp_path / "conf")) as parent:
        for name in ("conf", "dir"):
            with pytest.raises(FileExistsError):
                parent.rename_noreplace(name, f"{name}.drbdlinks")
        parent.rename_noreplace("conf", "conf.free")
    assert (tmp_path / "conf.drbdlinks").read_text() == "there first\n"
    assert (tmp_path / "conf.free").read_text() == "original\n"
    assert (tmp_path / "dir").is_dir() and (tmp_path / "dir.drbdlinks").is_dir()


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ENOSYS])
def test_without_rename_noreplace_files_fall_back_to_link_and_directories_fail(
    tmp_path: Path, code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(dir_fd: int, source: str, destination: str, flags: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(paths, "_renameat2", unsupported)
    (tmp_path / "conf").write_text("original\n")
    (tmp_path / "taken").write_text("there first\n")
    (tmp_path / "link").symlink_to("/srv/x")
    (tmp_path / "dir").mkdir()
    with open_parent(str(tmp_path / "conf")) as parent:
        with pytest.raises(FileExistsError):
            parent.rename_noreplace("conf", "taken")
        parent.rename_noreplace("conf", "conf.drbdlinks")
        parent.rename_noreplace("link", "link.drbdlinks")  # the symlink, not its target
        with pytest.raises(OSError, match="cannot rename a directory without risking"):
            parent.rename_noreplace("dir", "dir.drbdlinks")
    assert sorted(os.listdir(tmp_path)) == ["conf.drbdlinks", "dir", "link.drbdlinks", "taken"]
    assert (tmp_path / "conf.drbdlinks").read_text() == "original\n"
    assert (tmp_path / "taken").read_text() == "there first\n"
    assert os.readlink(tmp_path / "link.drbdlinks") == "/srv/x"


# -- root: other users' directories, and a real non-root user ---------------------------


@pytest.mark.root
def test_a_directory_another_user_owns_is_refused_whatever_its_mode(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "15").mkdir(parents=True)
    home.chmod(0o755)
    os.chown(home, NOBODY, NOBODY)  # like /var/lib/postgresql: postgres can chmod it
    for path in (home / "conf", home / "15" / "conf"):
        with pytest.raises(UnsafePath) as caught:
            open_parent(str(path))
        assert caught.value.message.startswith(f"{home} is owned by ")
        assert caught.value.message.split(": ")[0].endswith(f"({NOBODY})")
    with open_parent(str(home / "15" / "conf"), refuse=False) as parent:
        assert parent.unsafe is not None and parent.unsafe.directory == str(home)


@pytest.mark.root
def test_a_sticky_directory_on_the_way_needs_the_next_directory_to_be_roots(
    tmp_path: Path,
) -> None:
    sticky = tmp_path / "tmp"
    (sticky / "theirs").mkdir(parents=True)
    sticky.chmod(0o1777)
    os.chown(sticky / "theirs", NOBODY, NOBODY)  # its owner may rename it, sticky or not
    with pytest.raises(UnsafePath, match=f"^{sticky}/theirs is owned by "):
        open_parent(str(sticky / "theirs" / "conf"))


@pytest.mark.root
def test_group_write_is_refused_unless_the_group_is_root_with_no_acl(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o775)
    with open_parent(str(shared / "conf")) as parent:  # group root: root alone
        assert parent.unsafe is None
    os.chown(shared, 0, NOBODY)
    with pytest.raises(UnsafePath, match=f"^{shared} is writable by group "):
        open_parent(str(shared / "conf"))
    os.chown(shared, 0, 0)
    # setfacl -m u:nobody:rwx: the group bits become the ACL's mask (rwx)
    acl = struct.pack("<I", 2) + b"".join(
        struct.pack("<HHI", tag, perm, ident)
        for tag, perm, ident in [
            (0x01, 7, 0xFFFFFFFF),  # user::rwx
            (0x02, 7, NOBODY),  # user:nobody:rwx
            (0x04, 5, 0xFFFFFFFF),  # group::r-x
            (0x10, 7, 0xFFFFFFFF),  # mask::rwx
            (0x20, 5, 0xFFFFFFFF),  # other::r-x
        ]
    )
    try:
        os.setxattr(shared, "system.posix_acl_access", acl)
    except OSError as err:
        pytest.skip(f"no POSIX ACLs on {tmp_path}'s filesystem: {err.strerror}")
    with pytest.raises(UnsafePath, match=rf"writable by user .*\({NOBODY}\) \(its ACL\)"):
        open_parent(str(shared / "conf"))


def _as_nobody(directory: Path, action: Callable[[], None]) -> int:
    """Run ``action`` in a forked child as uid/gid 65534 with ``directory`` as its cwd
    (entered as root: nobody need not reach it); the child's exit code (0: no OSError)."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 2
        try:
            os.chdir(directory)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            action()
            code = 0
        except OSError as err:
            code = 100 + (err.errno or 0) % 100
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.root
def test_the_sticky_rule_is_the_kernels(tmp_path: Path) -> None:
    """What the sticky exception rests on, checked with a real non-root user."""
    for name, mode in (("sticky", 0o1777), ("plain", 0o777)):
        (tmp_path / name / "roots").mkdir(parents=True)
        (tmp_path / name).chmod(mode)
    swap = lambda: os.rename("roots", "moved")  # noqa: E731
    assert _as_nobody(tmp_path / "sticky", swap) == 100 + errno.EPERM
    assert (tmp_path / "sticky" / "roots").is_dir()
    assert _as_nobody(tmp_path / "plain", swap) == 0
    assert (tmp_path / "plain" / "moved").is_dir()
    # yet a user can plant a name in a sticky directory: why it is refused as a parent
    plant = lambda: os.symlink("/root", "conf.drbdlinks")  # noqa: E731
    assert _as_nobody(tmp_path / "sticky", plant) == 0
    assert os.lstat(tmp_path / "sticky" / "conf.drbdlinks").st_uid == NOBODY
