"""Paths root acts on, walked so that no other user can redirect what root does there.

A directory a non-root user can write lets that user swap one of its entries for a
symlink between root's check and root's rename, and root then renames or deletes in a
directory the user picked. So the directory holding a path is opened from "/" one
component at a time (O_PATH | O_NOFOLLOW: no symlink on the way is ever followed, as
openat2's RESOLVE_NO_SYMLINKS), each directory is judged on the way, and every operation
then runs relative to that pinned descriptor (fstatat, symlinkat, unlinkat, renameat2):
whatever is swapped in along the path after the walk is never seen.
"""

from __future__ import annotations

import errno
import functools
import grp
import os
import pwd
import stat
import struct
from collections.abc import Callable
from types import TracebackType

from hanode.errors import Refused

RENAME_NOREPLACE = 1  # <linux/fs.h>: renameat2 fails with EEXIST instead of replacing

# O_PATH: a handle for *at() calls, no read access needed; O_NOFOLLOW: a symlink fails
_WALK = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

_ACL_ACCESS = "system.posix_acl_access"
_ACL_USER, _ACL_GROUP, _ACL_WRITE = 0x02, 0x08, 0x02  # <linux/posix_acl.h>
_ACL_HEADER = 4  # the xattr's version word, then (tag u16, perm u16, id u32) entries


class UnsafePath(Refused):
    """A directory on the way to a path is a symlink, or a non-root user can change it."""

    def __init__(self, message: str, hint: str | None, directory: str) -> None:
        super().__init__(message, hint)
        self.directory = directory  # the directory at fault


class Parent:
    """The directory holding one path, pinned: every operation is relative to its fd.

    ``name`` is the path's last component; ``unsafe`` says why a non-root user could
    change the directories on the way, when the walk was asked not to refuse that.
    """

    def __init__(self, directory: str, fd: int, name: str, unsafe: UnsafePath | None) -> None:
        self.directory = directory
        self.name = name
        self.unsafe = unsafe
        self._fd = fd

    def fileno(self) -> int:
        """The pinned O_PATH descriptor of the directory."""
        return self._fd

    def path(self, name: str) -> str:
        """``name`` in this directory, as a path for messages (never for acting)."""
        return os.path.join(self.directory, name)

    def lstat(self, name: str) -> os.stat_result:
        """fstatat(AT_SYMLINK_NOFOLLOW) of an entry."""
        return os.stat(name, dir_fd=self._fd, follow_symlinks=False)

    def exists(self, name: str) -> bool:
        """Whether the entry exists, a dangling symlink included (os.path.lexists)."""
        try:
            self.lstat(name)
        except FileNotFoundError:
            return False
        return True

    def readlink(self, name: str) -> str:
        """The content of the symlink ``name`` (OSError if it is not one)."""
        return os.readlink(name, dir_fd=self._fd)

    def symlink(self, target: str, name: str) -> None:
        """Create ``name -> target``; FileExistsError if anything is at ``name``."""
        os.symlink(target, name, dir_fd=self._fd)

    def unlink(self, name: str) -> None:
        """Remove the entry ``name`` (a symlink itself, never what it points to)."""
        os.unlink(name, dir_fd=self._fd)

    def listdir(self) -> list[str]:
        """The entries of the directory."""
        # an O_PATH descriptor cannot be read: open the same directory for reading
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self._fd)
        try:
            return os.listdir(fd)
        finally:
            os.close(fd)

    def rename_noreplace(self, source: str, destination: str) -> None:
        """Rename ``source`` to ``destination`` in this directory, never replacing.

        FileExistsError if ``destination`` exists, however late it appeared: the kernel
        checks and renames in one step (renameat2 RENAME_NOREPLACE).
        """
        try:
            _renameat2(self._fd, source, destination, RENAME_NOREPLACE)
            return
        except OSError as err:
            if err.errno not in (errno.EINVAL, errno.ENOSYS):
                raise
            unsupported = err
        # no RENAME_NOREPLACE on this kernel or filesystem: link(2) never replaces either
        if stat.S_ISDIR(self.lstat(source).st_mode):
            raise OSError(
                unsupported.errno,
                "this filesystem cannot rename a directory without risking an overwrite "
                "(no RENAME_NOREPLACE)",
                source,
                None,
                destination,
            ) from unsupported
        fd = self._fd
        os.link(source, destination, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
        os.unlink(source, dir_fd=self._fd)

    def close(self) -> None:
        """Close the pinned descriptor (again: no-op)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Parent:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def open_parent(path: str, *, refuse: bool = True) -> Parent:
    """Pin the directory holding ``path``, walked from "/" without following a symlink.

    Raises UnsafePath if a directory on the way is a symlink (always: the walk cannot
    go on without following it) or, with ``refuse``, if a non-root user can change one
    (see ``_writer``); without ``refuse`` that is kept in ``Parent.unsafe``. A missing
    directory raises FileNotFoundError, a non-directory NotADirectoryError.
    """
    directory, name = os.path.split(path)
    parts = [part for part in directory.split("/") if part not in ("", ".")]
    if not path.startswith("/") or name in ("", ".", "..") or ".." in parts:
        raise ValueError(f"not an absolute path without '..': {path!r}")
    walked = "/"
    fd = os.open("/", _WALK)
    unsafe: UnsafePath | None = None
    depth = 0
    try:
        while True:
            last = depth == len(parts)
            reason = _writer(os.fstat(fd), fd, last)
            if reason is not None and unsafe is None:
                unsafe = UnsafePath(
                    f"{walked} is {reason}: a user could swap an entry of it for a symlink "
                    "and redirect root's renames",
                    f"chown root:root {walked} and chmod go-w {walked}, "
                    "or link a directory root controls",
                    walked,
                )
                if refuse:
                    raise unsafe
            if last:
                return Parent(walked, fd, name, unsafe)
            child = os.path.join(walked, parts[depth])
            try:
                next_fd = os.open(parts[depth], _WALK, dir_fd=fd)
            except OSError as err:
                if err.errno in (errno.ENOTDIR, errno.ELOOP):  # Linux says ENOTDIR here
                    _refuse_symlink(fd, parts[depth], child, path)
                raise
            os.close(fd)
            fd, walked, depth = next_fd, child, depth + 1
    except BaseException:
        os.close(fd)
        raise


def _refuse_symlink(fd: int, part: str, child: str, path: str) -> None:
    """Raise UnsafePath if ``part`` in ``fd`` is a symlink (else return: not a directory)."""
    try:
        content = os.readlink(part, dir_fd=fd)
    except OSError:
        return
    real = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    raise UnsafePath(
        f"{child} is a symlink (to {content}): hanode follows no symlink on the way to a path",
        f"name the path without symlinks instead: {real}",
        child,
    )


def _trusted(uid: int) -> bool:
    # root, and the user acting (root in production; a test's user cannot attack itself)
    return uid in (0, os.geteuid())


def others_can_change(parent: Parent) -> UnsafePath | None:
    """Whether a user other than root can rename the entries of the pinned directory
    itself (its ancestors aside); None: nobody can."""
    reason = _writer(os.fstat(parent.fileno()), parent.fileno(), True)
    if reason is None:
        return None
    return UnsafePath(
        f"{parent.directory} is {reason}: a user could plant the names root creates there",
        f"chown root:root {parent.directory} and chmod go-w {parent.directory}",
        parent.directory,
    )


def _writer(st: os.stat_result, fd: int, last: bool) -> str | None:
    """Who, other than root, can rename the entries of this directory; None: nobody."""
    if not _trusted(st.st_uid):
        # its owner can chmod it and rename its entries, whatever its mode says
        return f"owned by {_user(st.st_uid)}"
    if st.st_mode & stat.S_IWOTH:
        who = "writable by every user"
    elif st.st_mode & stat.S_IWGRP and st.st_gid != 0:
        who = f"writable by group {_group(st.st_gid)}"
    elif st.st_mode & stat.S_IWGRP:
        # group root holds root alone, but with an ACL the group bits are its mask
        acl = _acl_writers(fd)
        if acl is None:
            return None
        who = f"writable by {acl} (its ACL)"
    else:
        return None
    if st.st_mode & stat.S_ISVTX:
        if not last:
            # sticky (/tmp): a user renames only their own entries, and the next
            # directory down is judged next, so it must be root's
            return None
        return f"{who} (sticky, but a user can plant the names hanode creates there)"
    return who


def _acl_writers(fd: int) -> str | None:
    """The first user or group other than root that the directory's ACL lets write."""
    try:
        # an O_PATH descriptor has no fgetxattr: its /proc link reaches the same inode
        data = os.getxattr(f"/proc/self/fd/{fd}", _ACL_ACCESS)
    except OSError as err:
        if err.errno in (errno.ENODATA, errno.EOPNOTSUPP):
            return None  # no ACL: the group bits are root's group's
        return f"whoever its ACL names (cannot read it: {err.strerror})"
    for tag, perm, ident in struct.iter_unpack("<HHI", data[_ACL_HEADER:]):
        if perm & _ACL_WRITE:
            if tag == _ACL_USER and not _trusted(ident):
                return f"user {_user(ident)}"
            if tag == _ACL_GROUP and ident != 0:
                return f"group {_group(ident)}"
    return None


def _user(uid: int) -> str:
    """``nobody (65534)``, or the bare number when the user has no name."""
    try:
        return f"{pwd.getpwuid(uid).pw_name} ({uid})"
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    """``staff (50)``, or the bare number when the group has no name."""
    try:
        return f"{grp.getgrgid(gid).gr_name} ({gid})"
    except KeyError:
        return str(gid)


@functools.cache
def _libc_renameat2() -> Callable[..., int]:
    import ctypes  # here: only a rename pays for it, not every run that reads a path

    libc = ctypes.CDLL(None, use_errno=True)
    function = libc.renameat2  # glibc >= 2.28 (Debian 12: 2.36)
    function.argtypes = [ctypes.c_int, ctypes.c_char_p] * 2 + [ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def _renameat2(dir_fd: int, source: str, destination: str, flags: int) -> None:
    """renameat2(2) within one directory; OSError (FileExistsError for EEXIST) on failure."""
    try:
        function = _libc_renameat2()
    except AttributeError:
        raise OSError(errno.ENOSYS, "renameat2 is missing from the C library") from None
    if function(dir_fd, os.fsencode(source), dir_fd, os.fsencode(destination), flags) != 0:
        import ctypes  # loaded already by _libc_renameat2

        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), source, None, destination)
