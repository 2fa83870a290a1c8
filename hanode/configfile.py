"""Reading hanode.toml safely: from /, one directory at a time, no link followed.

hanode runs as root and starts what its config names, so only root may be able to change
the file or any directory above it. The rules are hanode.config's (load() reads through
read_bytes()); they live in this small module so that a start can peek at its config
before the rest of hanode loads (hanode.early): it imports no pathlib, no tomllib and
none of hanode's resources.
"""

from __future__ import annotations

import os
import stat
import unicodedata

from hanode.errors import ConfigError

DEFAULT_FILE = "/etc/hanode/hanode.toml"
# Refused unread above this: the shipped file is 3.5 KB and 64 KiB holds ~800 links, and
# the bound keeps any content parsed in well under a second (tomllib is quadratic in the
# depth of one dotted key: 0.3 s for a 16 KB one).
MAX_CONFIG_BYTES = 64 * 1024
# Characters no string in hanode.toml may hold: controls (NUL, newline, ESC, DEL, C1),
# invisible format characters (U+202E reverses text), line and paragraph separators.
_CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def config_file(cli_value: str | None) -> str:
    """-c FILE, else $HANODE_CONFIG, else /etc/hanode/hanode.toml."""
    return cli_value or os.environ.get("HANODE_CONFIG") or DEFAULT_FILE


def read_bytes(path: str | os.PathLike[str], *, insecure: bool = False) -> bytes:
    """The file's bytes, read as load() reads them: the same refusals (ConfigError)."""
    shown = printable(str(path))
    if "\0" in str(path):
        raise ConfigError(f"{shown}: not a file name (it holds a NUL byte)")
    return _read(path, shown, insecure=insecure)


_WALK = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC  # a directory, never a link
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO must not block


def _read(path: str | os.PathLike[str], shown: str, *, insecure: bool) -> bytes:
    """The file's bytes, reached from / one directory at a time without following a link."""
    try:
        absolute = os.path.join(os.getcwd(), path)  # getcwd has no symlinks: safe to walk
    except OSError as err:
        message = f"{shown}: cannot resolve the current directory: {err.strerror}"
        raise ConfigError(message) from None
    names = [name for name in absolute.split("/") if name not in ("", ".")]
    if not names:
        names = ["."]  # "/" itself: reported as a directory
    directory = "/"
    fd = os.open("/", _WALK)
    try:
        if not insecure:
            _check_directory(shown, directory, os.fstat(fd))
        for name in names[:-1]:
            below = os.path.normpath(os.path.join(directory, name))
            try:
                inner = os.open(name, _WALK, dir_fd=fd)
            except OSError as err:
                raise _unreachable(shown, fd, name, below, err) from None
            os.close(fd)
            fd, directory = inner, below
            if not insecure:
                _check_directory(shown, directory, os.fstat(fd))
        return _read_file(shown, fd, os.path.join(directory, names[-1]), insecure=insecure)
    finally:
        os.close(fd)


def _read_file(shown: str, dir_fd: int, where: str, *, insecure: bool) -> bytes:
    # lstat before open: a device is never opened (a tape rewinds), a FIFO never waited on
    name = os.path.basename(where)
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as err:
        raise _missing(shown, err) from None
    _check_kind(shown, where, st)
    try:
        fd = os.open(name, _READ, dir_fd=dir_fd)
    except OSError as err:
        raise _missing(shown, err) from None
    with os.fdopen(fd, "rb") as handle:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
            raise ConfigError(f"{shown}: replaced while being opened", "run hanode again")
        _check_kind(shown, where, opened)
        if not insecure:
            _check_ownership(shown, opened)
        raw = handle.read(MAX_CONFIG_BYTES + 1)  # it may have grown since the fstat
    if len(raw) > MAX_CONFIG_BYTES:
        raise _too_big(shown, len(raw))
    return raw


_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFLNK: "a symlink",
}


def _check_kind(shown: str, where: str, st: os.stat_result) -> None:
    kind = stat.S_IFMT(st.st_mode)
    if kind == stat.S_IFLNK:
        real = printable(os.path.realpath(where))
        raise ConfigError(
            f"{shown}: is a symlink (to {real}); hanode reads no config through one",
            f"give the file itself, -c {real}, or put the file in the symlink's place",
        )
    if kind != stat.S_IFREG:
        raise ConfigError(
            f"{shown}: is {_KINDS.get(kind, 'not a regular file')}, not a regular file",
            "give the config file itself with -c FILE",
        )
    if st.st_size > MAX_CONFIG_BYTES:
        raise _too_big(shown, st.st_size)


def _too_big(shown: str, size: int) -> ConfigError:
    return ConfigError(
        f"{shown}: is {size} bytes, over the {MAX_CONFIG_BYTES} a config may have",
        "hanode.toml is a few KiB: is this the right file?",
    )


def _missing(shown: str, err: OSError) -> ConfigError:
    if isinstance(err, FileNotFoundError):
        return ConfigError(
            f"{shown}: no such file", "give the config with -c FILE or HANODE_CONFIG"
        )
    return ConfigError(f"{shown}: cannot open: {err.strerror}")


def _unreachable(shown: str, dir_fd: int, name: str, below: str, err: OSError) -> ConfigError:
    """Why the directory ``below`` (``name`` in ``dir_fd``) cannot be walked into."""
    if isinstance(err, FileNotFoundError):
        return _missing(shown, err)
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return ConfigError(f"{shown}: cannot open {printable(below)}: {err.strerror}")
    if stat.S_ISLNK(st.st_mode):
        real = printable(os.path.realpath(below))
        return ConfigError(
            f"{shown}: {printable(below)} is a symlink (to {real}); hanode reads no config "
            "through one",
            f"give the path through {real} with -c FILE",
        )
    if not stat.S_ISDIR(st.st_mode):
        return ConfigError(f"{shown}: {printable(below)} is not a directory")
    return ConfigError(f"{shown}: cannot open {printable(below)}: {err.strerror}")


def _check_directory(shown: str, directory: str, st: os.stat_result) -> None:
    # Whoever can rename entries in a directory above the file can swap the file.
    where = printable(directory)
    if st.st_uid != 0:
        raise ConfigError(
            f"{shown}: directory {where} is owned by uid {st.st_uid}, not root",
            f"chown root: {where}, or --insecure-config for tests",
        )
    # Sticky and root's (/tmp): others cannot rename or unlink root's entries in it, and
    # the next component down is required to be root's like every other one.
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        raise ConfigError(
            f"{shown}: directory {where} is writable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o})",
            f"chmod go-w {where}, or keep the config where only root can write",
        )


def _check_ownership(shown: str, st: os.stat_result) -> None:
    # hanode runs as root and starts what the file names: only root may write it.
    if st.st_uid != 0:
        raise ConfigError(
            f"{shown}: owned by uid {st.st_uid}, not root",
            f"chown root: {shown}, or --insecure-config for tests",
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"{shown}: writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})",
            f"chmod go-w {shown}",
        )


def has_control(text: str) -> bool:
    """Whether ``text`` holds a control, invisible format or line separator character."""
    return any(unicodedata.category(char) in _CONTROL_CATEGORIES for char in text)


def printable(text: str) -> str:
    """``text`` for a one-line message: as is when plain, else quoted with escapes."""
    return repr(text) if not text or has_control(text) else text
