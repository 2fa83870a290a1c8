"""The one way hanode runs an external command.

Argument lists only (never a shell), stdin from /dev/null (or a given text), a clean
environment with LANG=C.UTF-8, a timeout that kills the whole process group (drbdadm and
mount can hang), and on failure a typed error carrying the argv, the exit status and the
tail of stderr.

Commands are looked up on a fixed system PATH, never the caller's: hanode runs as root,
and a `findmnt` planted in an admin's PATH would run as root. A child is spawned where no
SIGTERM can cut in (hanode.interrupt.deferred): once it exists, any exception while it
runs (the engine's Interrupted included) kills its whole process group and reaps it, so
no `mount` finishes after the rollback that was meant to undo it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from hanode import SYSTEM_PATH, interrupt
from hanode.errors import StepFailed, UsageError
from hanode.system.paths import UnsafePath, open_parent

log = logging.getLogger("hanode.run")

# What children may inherit; NOTIFY_SOCKET and friends are deliberately not passed on, and
# PATH is never the caller's (search_path()).
_KEEP_ENV = ("TERM",)
# How long a killed child may take to be reaped: one stuck in the kernel (D state) ignores
# SIGKILL until its I/O ends, and the rollback must not wait for it forever.
_REAP_TIMEOUT = 10.0


class Completed(NamedTuple):
    """The outcome of a command that ran to its end (whatever its exit status)."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class CommandError(StepFailed):
    """A command exited non-zero, timed out, or could not be started."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stderr: str,
        reason: str,
        hint: str | None = None,
    ) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        tail = stderr_tail(stderr)
        message = f"`{shlex.join(self.argv)}` {reason}"
        if tail:
            message += f": {tail}"
        super().__init__(message, hint)


def stderr_tail(stderr: str, lines: int = 3) -> str:
    """The last few non-empty lines of stderr, joined into one line."""
    kept = [line.strip() for line in stderr.splitlines() if line.strip()]
    return " / ".join(kept[-lines:])


def search_path() -> str:
    """Where commands are looked up: SYSTEM_PATH, or $HANODE_PATH if every directory is safe.

    HANODE_PATH (tests: the DRBD stand-in's drbdadm first) replaces SYSTEM_PATH. Each of
    its directories but the system ones must be reached from / through no symlink and be
    changeable by root alone (hanode.system.paths), else it is refused (UnsafePath, exit
    4), naming the directory and the fix: a root-owned place is the only override.
    """
    override = os.environ.get("HANODE_PATH")
    if override is None:
        return SYSTEM_PATH
    system = SYSTEM_PATH.split(":")
    for directory in override.split(":"):
        if directory in system:
            continue
        try:
            with open_parent(os.path.join(directory, "-")):  # pins and judges the directory
                pass
        except UnsafePath as err:
            message = f"HANODE_PATH: unsafe directory {directory}: {err.message}"
            raise err.with_context(message) from err
        except (ValueError, OSError) as err:
            raise UsageError(
                f"HANODE_PATH: {directory!r} is not an absolute path to a directory ({err})",
                "list root's directories, separated by ':'",
            ) from None
    return override


def which(program: str, path: str | None = None) -> str | None:
    """Where ``program`` is on ``path`` (default: search_path()), as shutil.which finds
    it; None when it is not there. Here to spare every run shutil's imports."""
    if "/" in program:
        return program if _executable(program) else None
    for directory in (path or search_path()).split(":"):
        candidate = os.path.join(directory, program)
        if _executable(candidate):
            return candidate
    return None


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment for children: the fixed PATH, LANG=C.UTF-8, nothing from systemd.

    ``extra`` adds variables; it cannot change PATH.
    """
    env = {key: os.environ[key] for key in _KEEP_ENV if key in os.environ}
    env["LANG"] = env["LC_ALL"] = "C.UTF-8"
    if extra:
        env.update(extra)
    env["PATH"] = search_path()
    return env


def run(
    argv: Sequence[str],
    *,
    timeout: float = 60.0,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
) -> Completed:
    """Run ``argv`` and return its outcome.

    With ``check`` (the default) a non-zero exit raises CommandError; without it the
    caller inspects ``returncode`` (drbdadm's exit codes carry meaning). A timeout or a
    missing program always raises. On timeout, and on any exception while it runs (a
    SIGTERM's Interrupted), the whole process group is killed and reaped. ``stdin``: what
    the command reads (`ip -batch -`'s commands), else /dev/null.
    """
    argv = [str(arg) for arg in argv]
    child_env = clean_env(env)
    program = which(argv[0], path=child_env["PATH"])
    if program is None:
        where = child_env["PATH"]
        raise CommandError(
            argv, None, "", f"could not be run: not found in {where}", f"is {argv[0]} installed?"
        )
    log.debug("+ %s", shlex.join(argv))
    proc: subprocess.Popen[str] | None = None
    try:
        # A signal here is raised only once proc holds the child: none escapes the kill below.
        with interrupt.deferred():
            proc = _spawn(program, argv, child_env, piped=stdin is not None)
        stdout, stderr = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        if proc is None:  # only communicate() times out: proc exists
            raise
        with interrupt.deferred():  # the kill and the reaping are never cut
            stderr = _end(proc, argv)
        raise CommandError(argv, None, stderr, f"timed out after {timeout:g}s") from err
    except BaseException:
        if proc is not None:
            with interrupt.deferred():  # the kill and the reaping are never cut
                _end(proc, argv)
        raise
    result = Completed(tuple(argv), proc.returncode, stdout, stderr)
    if stdout.strip():
        log.debug("  stdout: %s", stdout.rstrip())
    if stderr.strip():
        log.debug("  stderr: %s", stderr.rstrip())
    if check and proc.returncode != 0:
        raise CommandError(
            argv, proc.returncode, stderr, f"failed with exit status {proc.returncode}"
        )
    return result


def _spawn(
    program: str, argv: Sequence[str], env: Mapping[str, str], *, piped: bool = False
) -> subprocess.Popen[str]:
    """Start ``program`` (the resolved path of argv[0]) with argv as its arguments; its
    stdin a pipe (``piped``) or /dev/null."""
    try:
        return subprocess.Popen(
            argv,
            executable=program,  # argv[0] stays as given: messages and logs name the command
            stdin=subprocess.PIPE if piped else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group, so a kill ends it all
        )
    except FileNotFoundError as err:
        raise CommandError(argv, None, "", "could not be run", f"is {argv[0]} installed?") from err
    except PermissionError as err:
        raise CommandError(argv, None, "", f"could not be run: {err.strerror}") from err


def _end(proc: subprocess.Popen[str], argv: Sequence[str]) -> str:
    """Kill the child's whole process group and reap it; what it wrote to stderr."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        return proc.communicate(timeout=_REAP_TIMEOUT)[1]
    except subprocess.TimeoutExpired:
        log.warning(
            "`%s` (pid %d) still runs %gs after SIGKILL: stuck in the kernel, left behind",
            shlex.join(argv),
            proc.pid,
            _REAP_TIMEOUT,
        )
        return ""
