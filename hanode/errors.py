"""Typed errors and the exit codes they map to.

Every error carries a one-line message naming the cause and, where there is one, a
hint naming the fix. The CLI prints ``hanode: <message> (<hint>)`` and exits with the
error's code; tracebacks only with --debug.
"""

from __future__ import annotations

import signal
from enum import IntEnum
from typing import Self


class Exit(IntEnum):
    """Exit codes of start/stop/check (status has its own, see StatusExit)."""

    OK = 0
    FAILED = 1  # failed, node left safe (a start rolled back)
    USAGE = 2  # usage or config error, nothing touched
    REFUSED = 4  # refused for safety, nothing touched


class StatusExit(IntEnum):
    """Exit codes of ``hanode status``."""

    ALL_UP = 0
    PARTLY_UP = 1
    ALL_DOWN = 3
    UNKNOWN = 4

    @property
    def verdict(self) -> str:
        """The node's state in one word, as status prints it."""
        return _VERDICTS[self]


_VERDICTS = {
    StatusExit.ALL_UP: "up",
    StatusExit.PARTLY_UP: "partial",
    StatusExit.ALL_DOWN: "down",
    StatusExit.UNKNOWN: "unknown",
}


class HanodeError(Exception):
    """Base of every error hanode reports to the admin."""

    code: Exit = Exit.FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def with_context(self, message: str, hint: str | None = None) -> Self:
        """The same error, same class and exit code, saying where it happened.

        The copy keeps every attribute of the original (a bus error's name, a command's
        argv); raise it ``from`` the original so --debug shows both.
        """
        new = type(self).__new__(type(self))  # no __init__: subclasses take other arguments
        new.__dict__.update(self.__dict__)
        Exception.__init__(new, message)
        new.message = message
        new.hint = hint or self.hint
        return new

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class ConfigError(HanodeError):
    """The configuration file is missing, unreadable, unsafe or invalid."""

    code = Exit.USAGE


class UsageError(HanodeError):
    """The command line asks for something that cannot be done."""

    code = Exit.USAGE


class StepFailed(HanodeError):
    """A resource could not reach the wanted state; the node was left safe."""

    code = Exit.FAILED


class Refused(HanodeError):
    """An action was refused because it could lose data or split the cluster."""

    code = Exit.REFUSED


class LockHeld(Refused):
    """Another hanode process holds the lock."""


class Interrupted(BaseException):
    """SIGTERM or SIGINT cut a start or stop (hanode.interrupt raises it).

    A BaseException, not a HanodeError: no ``except Exception`` (a probe that never raises,
    a resource's fallback) may take it for a failure and carry on. The engine catches it,
    rolls a start back, and reports it as a StepFailed (exit 1).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.step: str | None = None  # the step it cut, once the engine knows it
        self.acting = False  # whether it cut the step's action (not only its probe)
