"""The resource registry and typed errors: one place per resource kind, errors that keep
their class through the engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from hanode import config
from hanode.engine import Engine
from hanode.errors import Exit, HanodeError, LockHeld, Refused, StatusExit, StepFailed
from hanode.resources import Context, Resource, State, Status, kinds
from hanode.system.dbus import BusError, JobTimeout


def test_kinds_are_found_in_start_order_each_with_its_section() -> None:
    found = kinds()
    assert [kind.section for kind in found] == [
        "drbd",
        "filesystem",
        "links",
        "address",
        "services",
    ]
    assert [kind.order for kind in found] == sorted(kind.order for kind in found)
    for kind in found:
        # a NamedTuple: built without the dataclasses machinery, which status never loads
        assert issubclass(kind.settings, tuple) and hasattr(kind.settings, "_fields"), kind
        assert kind.__module__ == f"hanode.resources.{kind.__module__.rsplit('.', 1)[1]}"


def test_config_sections_come_from_the_registry() -> None:
    with pytest.raises(HanodeError) as caught:
        config.parse("[nonsense]\n", Path("h.toml"))
    assert str(caught.value) == (
        "h.toml:1: unknown section [nonsense] "
        "(known sections: drbd, filesystem, links, address, services, peer)"
    )


def test_budgets_follow_the_config() -> None:
    text = (
        '[filesystem]\ndevice = "/dev/drbd1"\nmountpoint = "/srv"\nstop-timeout = 7\n'
        '[services]\nunits = ["a.service", "b.service"]\ntimeout = 11\n'
    )
    parsed = config.parse(text, Path("h.toml"))
    by_section = {kind.section: kind for kind in kinds()}
    services = by_section["services"]
    filesystem = by_section["filesystem"]
    assert services.start_budget(parsed.settings["services"]) == 22
    assert services.stop_budget(parsed.settings["services"]) == 22
    assert filesystem.stop_budget(parsed.settings["filesystem"]) == 7


def test_with_context_keeps_class_code_and_attributes() -> None:
    timeout = JobTimeout("a.service", "start", 3.0)
    moved = timeout.with_context("start failed at services: a.service timed out")
    assert type(moved) is JobTimeout
    assert moved.unit == "a.service"
    assert moved.code is Exit.FAILED
    assert moved.hint == timeout.hint
    assert str(moved).startswith("start failed at services: a.service timed out (")
    bus = BusError("x failed", name="org.example.Err").with_context("at services: x failed")
    assert type(bus) is BusError and bus.name == "org.example.Err"
    held = LockHeld("another hanode", "wait").with_context("ctx", "new hint")
    assert isinstance(held, LockHeld) and held.code is Exit.REFUSED and held.hint == "new hint"


def test_status_exit_words() -> None:
    assert [code.verdict for code in StatusExit] == ["up", "partial", "down", "unknown"]


class _Refusing(Resource[None]):
    section = "refusing"
    order = 0

    def __init__(self) -> None:
        super().__init__(None)
        self.name = "refusing"

    def probe(self) -> Status:
        return Status(State.DOWN, "down")

    def start(self, ctx: Context) -> None:
        raise Refused("the peer is Primary", "stop it first")

    def stop(self, ctx: Context) -> None:
        pass

    def plan_start(self) -> list[str]:
        return []

    def plan_stop(self) -> list[str]:
        return []


def test_a_refusal_reaches_the_caller_as_a_refusal(tmp_path: Path) -> None:
    engine = Engine([_Refusing()], state_dir=tmp_path)
    with pytest.raises(Refused) as caught:
        engine.start(Context())
    assert caught.value.code is Exit.REFUSED
    assert caught.value.message == "start refused at refusing: the peer is Primary"
    assert not isinstance(caught.value, StepFailed)
