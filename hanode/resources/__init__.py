"""What every resource is: probe, start, stop, check; and the registry of the kinds.

A resource kind is one module in this package: its class names its hanode.toml section,
its place in the start order, its config type and parser, and the worst-case seconds of
its start and stop (the unit's timeout budget). Everything else (the config's sections,
their order, the docs-agree tests) is derived from the classes found here. A resource
knows its own config section and nothing of the others, the engine or the CLI. The
engine probes before it acts, skips what is already in the wanted state and rolls back
on failure; a resource only has to make its own start and stop idempotent
and safe to call on a half-done state.
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, NamedTuple, Protocol, TypeVar

if TYPE_CHECKING:
    from hanode.config import Config, Table

SettingsT = TypeVar("SettingsT")


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


# The details of a Status given none: read-only, so that no holder can fill the shared one.
NO_DETAILS: Mapping[str, object] = MappingProxyType({})


class Status(NamedTuple):
    """The outcome of a probe: a state, one line for people, details for --json (a
    read-only mapping when the probe gave none: dict() it to extend or to dump it)."""

    state: State
    summary: str
    details: Mapping[str, object] = NO_DETAILS


class Finding(NamedTuple):
    """One line of ``hanode check``: what was found and, for problems, the fix."""

    level: Level
    message: str
    hint: str | None = None
    # a program or unit this node lacks (the OCF agent's "not installed", exit 5)
    missing: bool = False


class ProgressLine(Protocol):
    """A live line for a step that waits (seconds left, connection state...)."""

    def update(self, text: str) -> None:
        """Replace the text shown after the step's label."""


class Context(NamedTuple):
    """What the admin asked for, handed to every resource action."""

    force: bool = False  # start: override the safety refusals (each override is logged)
    down: bool = False  # stop: also take the DRBD resource down
    progress: Callable[[str], AbstractContextManager[ProgressLine]] | None = None
    # start: waits for the preflight checks (running alongside the first steps) and raises
    # Refused when one found the cluster active elsewhere; set by the engine
    preflight_verdict: Callable[[], None] | None = None

    def waiting(self, label: str) -> AbstractContextManager[ProgressLine]:
        """A progress line for something that lasts seconds; quiet when not wanted."""
        if self.progress is None:
            return _quiet_progress()
        return self.progress(label)

    def before_promotion(self) -> None:
        """Call right before the first change that makes this node the active one (the
        DRBD promotion): Refused if a preflight check found the cluster active elsewhere."""
        if self.preflight_verdict is not None:
            self.preflight_verdict()


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


class Resource(ABC, Generic[SettingsT]):
    """One step of the start/stop pipeline, configured by one hanode.toml section.

    Contract:
    - ``probe()`` reads, never changes, and never raises for a missing device or tool:
      it answers State.UNKNOWN with a summary saying what is missing.
    - ``start()``/``stop()`` are idempotent and converge from any half-done state.
      They raise hanode.errors.StepFailed (the engine rolls back, this step included)
      or hanode.errors.Refused (nothing was touched by this step; not rolled back).
    - ``plan_start()``/``plan_stop()`` describe, without changing anything, the actions
      the step would take from the probed state (for --dry-run).
    - ``check()`` validates this node for the config without changing anything.

    A kind declares ``section`` (its table in hanode.toml, also its step name), ``order``
    (its place in start; stop is the reverse), ``settings`` (the NamedTuple its
    ``parse`` returns) and the budgets; the registry (``kinds()``) finds it by itself.
    """

    section: ClassVar[str]
    order: ClassVar[int]
    settings: ClassVar[type]

    name: str  # the step's name in logs, reports and status: its section

    def __init__(self, config: SettingsT) -> None:
        self.config = config
        self.name = self.section

    # A kind overrides these three; kinds() refuses one that does not.

    @classmethod
    def parse(cls, table: Table, parsed: Mapping[str, object]) -> SettingsT:
        """This section's settings from its table; ``parsed``: the sections before it."""
        raise NotImplementedError

    @classmethod
    def start_budget(cls, config: SettingsT) -> float:
        """The longest a start of this step can take, in seconds, by its own bounds."""
        raise NotImplementedError

    @classmethod
    def stop_budget(cls, config: SettingsT) -> float:
        """The longest a stop of this step can take, in seconds, by its own bounds."""
        raise NotImplementedError

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

    # The engine asks the resource itself whether a probed state needs the action.
    def settled(self, status: Status, *, starting: bool, ctx: Context) -> bool:
        """Whether ``status`` is already what start (or stop) would leave: then it is skipped."""
        return status.state is (State.UP if starting else State.DOWN)

    # Whether start() calls ctx.before_promotion() itself before it makes the node active
    # (the engine then lets it run alongside the preflight checks instead of waiting).
    confirms_preflight: ClassVar[bool] = False

    def preflight(self, ctx: Context) -> None:
        """Before a start changes anything toward active: look, without changing anything,
        for the cluster being active elsewhere, and raise Refused if it is. Runs in a
        thread alongside the steps that only prepare (DRBD up and its wait for the peer)."""
        return None

    def step_probe(self) -> Status:
        """The probe the engine takes before and after this step acts: probe()'s state,
        without what only a person reads in a status (by default: probe() itself)."""
        return self.probe()

    def surely_starts(self) -> bool:
        """Whether a start will surely act on this step, from a look that costs nothing (no
        process, no import): then the engine begins the preflight checks before the first
        probe, so that their waits (the duplicate probe's second) overlap the probes.
        False when it cannot tell so cheaply: they begin as the first step acts."""
        return False


@functools.cache
def kinds() -> tuple[type[Resource[Any]], ...]:
    """Every resource kind of this package, in start order.

    Each module here defines at most one kind. The modules import their heavy libraries
    (pyroute2, jeepney, the journal) only when they act, so finding the kinds is cheap.
    """
    found: list[type[Resource[Any]]] = []
    for name in _module_names():
        module = importlib.import_module(f"{__name__}.{name}")
        found.extend(
            value
            for value in vars(module).values()
            if isinstance(value, type)
            and issubclass(value, Resource)
            and value.__module__ == module.__name__
            and "section" in vars(value)
        )
    orders = [kind.order for kind in found]
    if len(set(orders)) != len(orders) or len({kind.section for kind in found}) != len(found):
        raise RuntimeError(f"resource kinds share an order or a section: {found}")
    for kind in found:
        for method in ("parse", "start_budget", "stop_budget"):
            if method not in vars(kind):
                raise RuntimeError(f"resource kind {kind.__name__} does not define {method}()")
    return tuple(sorted(found, key=lambda kind: kind.order))


def _module_names() -> list[str]:
    """The modules of this package, as pkgutil.iter_modules() lists them (its import
    costs every run a millisecond): each file whose name is an identifier plus a module
    suffix (.py, .pyc, an extension's)."""
    suffixes = importlib.machinery.all_suffixes()
    names: set[str] = set()
    for directory in __path__:
        for entry in os.listdir(directory):
            for suffix in suffixes:
                stem = entry.removesuffix(suffix)
                if stem != entry and stem.isidentifier() and stem != "__init__":
                    names.add(stem)
    return sorted(names)


def build(config: Config) -> list[Resource[Any]]:
    """The configured resources, in start order."""
    return [
        kind(config.settings[kind.section]) for kind in kinds() if kind.section in config.settings
    ]
