"""The one way hanode runs an external command.

Argument lists only (never a shell), stdin from /dev/null, a clean environment with
LANG=C.UTF-8, a timeout that kills the whole process group (drbdadm and mount can hang),
and on failure a typed error carrying the argv, the exit status and the tail of stderr.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hanode.errors import StepFailed

log = logging.getLogger("hanode.run")

# What children may inherit; NOTIFY_SOCKET and friends are deliberately not passed on.
_KEEP_ENV = ("PATH", "TERM")
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Completed:
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


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment for children: PATH, LANG=C.UTF-8, nothing from systemd."""
    env = {key: os.environ[key] for key in _KEEP_ENV if key in os.environ}
    env.setdefault("PATH", _DEFAULT_PATH)
    env["LANG"] = env["LC_ALL"] = "C.UTF-8"
    if extra:
        env.update(extra)
    return env


def run(
    argv: Sequence[str],
    *,
    timeout: float = 60.0,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> Completed:
    """Run ``argv`` and return its outcome.

    With ``check`` (the default) a non-zero exit raises CommandError; without it the
    caller inspects ``returncode`` (drbdadm's exit codes carry meaning). A timeout or a
    missing program always raises. On timeout the whole process group is killed.
    """
    argv = [str(arg) for arg in argv]
    log.debug("+ %s", shlex.join(argv))
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env(env),
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group, so a timeout kills it all
        )
    except FileNotFoundError as err:
        raise CommandError(argv, None, "", "could not be run", f"is {argv[0]} installed?") from err
    except PermissionError as err:
        raise CommandError(argv, None, "", f"could not be run: {err.strerror}") from err
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as err:
        _kill_group(proc)
        stdout, stderr = proc.communicate()
        raise CommandError(argv, None, stderr, f"timed out after {timeout:g}s") from err
    except BaseException:
        _kill_group(proc)
        proc.wait()
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


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
