"""What every resource is: probe, start, stop, check; and the fixed order of them.

A resource knows its own config section and nothing of the others, the engine or the
CLI. The engine probes before it acts, skips what is already in the wanted state and
rolls back on failure; a resource only has to make its own start and stop idempotent
and safe to call on a half-done state.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from hanode.config import Config


class State(StrEnum):
    """Where a resource stands, as far as a probe can tell."""

    UP = "up"  # in the state `start` produces
    DOWN = "down"  # in the state `stop` produces
    PARTIAL = "partial"  # somewhere in between (a cut start or stop)
    UNKNOWN = "unknown"  # cannot tell (a tool or device is missing, a probe failed)


class Level(StrEnum):
    """How serious a finding of ``check`` is."""

    OK = "ok"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Status:
    """The outcome of a probe: a state, one line for people, details for --json."""

    state: State
    summary: str
    details: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    """One line of ``hanode check``: what was found and, for problems, the fix."""

    level: Level
    message: str
    hint: str | None = None


class ProgressLine(Protocol):
    """A live line for a step that waits (seconds left, connection state...)."""

    def update(self, text: str) -> None:
        """Replace the text shown after the step's label."""


@dataclass(frozen=True)
class Context:
    """What the admin asked for, handed to every resource action."""

    force: bool = False  # start: override the safety refusals (each override is logged)
    down: bool = False  # stop: also take the DRBD resource down
    progress: Callable[[str], AbstractContextManager[ProgressLine]] | None = None

    def waiting(self, label: str) -> AbstractContextManager[ProgressLine]:
        """A progress line for something that lasts seconds; quiet when not wanted."""
        if self.progress is None:
            return _quiet_progress()
        return self.progress(label)


class _QuietLine:
    def update(self, text: str) -> None:
        pass


class _QuietProgress(AbstractContextManager[ProgressLine]):
    def __enter__(self) -> ProgressLine:
        return _QuietLine()

    def __exit__(self, *exc: object) -> None:
        return None


def _quiet_progress() -> AbstractContextManager[ProgressLine]:
    return _QuietProgress()


class Resource(ABC):
    """One step of the start/stop pipeline.

    Contract:
    - ``probe()`` reads, never changes, and never raises for a missing device or tool:
      it answers State.UNKNOWN with a summary saying what is missing.
    - ``start()``/``stop()`` are idempotent and converge from any half-done state.
      They raise hanode.errors.StepFailed (the engine rolls back, this step included)
      or hanode.errors.Refused (nothing was touched by this step; not rolled back).
    - ``plan_start()``/``plan_stop()`` describe, without changing anything, the actions
      the step would take from the probed state (for --dry-run).
    - ``check()`` validates this node for the config without changing anything.
    """

    name: ClassVar[str]

    @abstractmethod
    def probe(self) -> Status:
        """The current state of the resource on this node."""

    @abstractmethod
    def start(self, ctx: Context) -> None:
        """Bring the resource to State.UP."""

    @abstractmethod
    def stop(self, ctx: Context) -> None:
        """Bring the resource to State.DOWN."""

    @abstractmethod
    def plan_start(self) -> list[str]:
        """The actions ``start`` would take, one line each."""

    @abstractmethod
    def plan_stop(self) -> list[str]:
        """The actions ``stop`` would take, one line each."""

    def refresh(self, ctx: Context) -> None:
        """On start, when the probe already says UP: cheap, idempotent upkeep.

        Most resources have nothing to do; the floating address announces itself again,
        so a repeated `hanode start` also repairs the clients' ARP caches.
        """
        return None

    def check(self) -> list[Finding]:
        """Validate this node for this resource's config; change nothing."""
        return []


# The fixed start order; stop is the exact reverse. (section, module, class)
ORDER: tuple[tuple[str, str, str], ...] = (
    ("drbd", "hanode.resources.drbd", "Drbd"),
    ("filesystem", "hanode.resources.filesystem", "Filesystem"),
    ("links", "hanode.resources.links", "Links"),
    ("address", "hanode.resources.address", "FloatingAddress"),
    ("services", "hanode.resources.services", "Services"),
)


def build(config: Config) -> list[Resource]:
    """The configured resources in start order.

    Modules are imported only for configured sections, so a node that uses a few steps
    does not pay the import time of the others (pyroute2 is the heaviest).
    """
    return list(_iter_build(config))


def _iter_build(config: Config) -> Iterator[Resource]:
    for section, module_name, class_name in ORDER:
        section_config = getattr(config, section)
        if section_config is None:
            continue
        module = importlib.import_module(module_name)
        yield getattr(module, class_name)(section_config)
