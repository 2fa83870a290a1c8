"""The engine with small real resources (marker files in a temp dir): order, skip,
rollback, refusal, lock, dry-run, reports and interruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from helpers import PYTHON, wait_for

from hanode.engine import Action, Engine, Result, overall
from hanode.errors import Exit, HanodeError, LockHeld, Refused, StatusExit, StepFailed
from hanode.resources import Context, Resource, State, Status

ROOT = Path(__file__).resolve().parent.parent


class Marker(Resource):
    """A real resource: UP when its marker file exists. Every action is journaled."""

    def __init__(
        self,
        name: str,
        directory: Path,
        *,
        fail_start: bool = False,
        refuse_start: bool = False,
        fail_stop: bool = False,
        start_delay: float = 0.0,
    ) -> None:
        self.name = name  # type: ignore[misc]
        self.marker = directory / f"{name}.up"
        self.journal = directory / "journal"
        self.fail_start = fail_start
        self.refuse_start = refuse_start
        self.fail_stop = fail_stop
        self.start_delay = start_delay

    def _note(self, what: str) -> None:
        with self.journal.open("a") as handle:
            handle.write(f"{what} {self.name}\n")

    def probe(self) -> Status:
        if self.marker.exists():
            return Status(State.UP, f"{self.marker.name} present")
        return Status(State.DOWN, f"{self.marker.name} absent")

    def start(self, ctx: Context) -> None:
        if self.refuse_start:
            raise Refused(f"{self.name} refuses", "do something else")
        self._note("start")
        self.marker.touch()  # half done before failing: rollback must undo it
        time.sleep(self.start_delay)
        if self.fail_start:
            raise StepFailed(f"{self.name} broke", "fix it")

    def refresh(self, ctx: Context) -> None:
        self._note("refresh")

    def stop(self, ctx: Context) -> None:
        self._note("stop")
        if self.fail_stop:
            raise StepFailed(f"{self.name} is stuck")
        self.marker.unlink(missing_ok=True)

    def plan_start(self) -> list[str]:
        return [f"create {self.marker}"]

    def plan_stop(self) -> list[str]:
        return [f"remove {self.marker}"]


def journal(directory: Path) -> list[str]:
    path = directory / "journal"
    return path.read_text().splitlines() if path.exists() else []


def markers(directory: Path) -> list[str]:
    return sorted(path.stem for path in directory.glob("*.up"))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "run").mkdir()
    return tmp_path


def engine_of(workdir: Path, *resources: Resource) -> Engine:
    return Engine(resources, state_dir=workdir / "run")


def three(workdir: Path, **kinds: dict[str, bool]) -> list[Resource]:
    return [Marker(name, workdir, **kinds.get(name, {})) for name in ("a", "b", "c")]


def test_start_in_order_stop_in_reverse(workdir: Path) -> None:
    engine = engine_of(workdir, *three(workdir))
    report = engine.start(Context())
    assert report.ok
    assert [step.result for step in report.steps] == [Result.DONE] * 3
    assert markers(workdir) == ["a", "b", "c"]
    engine.stop(Context())
    assert journal(workdir) == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
    assert markers(workdir) == []


def test_start_twice_and_stop_twice_change_nothing(workdir: Path) -> None:
    engine = engine_of(workdir, *three(workdir))
    engine.start(Context())
    again = engine.start(Context())
    assert [step.result for step in again.steps] == [Result.SKIPPED] * 3
    engine.stop(Context())
    again = engine.stop(Context())
    assert [step.result for step in again.steps] == [Result.SKIPPED] * 3
    assert journal(workdir) == [
        "start a", "start b", "start c",
        "refresh a", "refresh b", "refresh c",  # what is up gets its upkeep, nothing more
        "stop c", "stop b", "stop a",
    ]  # fmt: skip


def test_failed_start_rolls_back_in_reverse_including_the_half_done_step(workdir: Path) -> None:
    engine = engine_of(workdir, *three(workdir, c={"fail_start": True}))
    with pytest.raises(HanodeError) as caught:
        engine.start(Context())
    assert caught.value.code == Exit.FAILED
    assert str(caught.value) == "start failed at c: c broke; rolled back: c, b, a (fix it)"
    assert journal(workdir) == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
    assert markers(workdir) == []


def test_rollback_leaves_what_was_up_before_the_run(workdir: Path) -> None:
    (workdir / "a.up").touch()
    engine = engine_of(workdir, *three(workdir, c={"fail_start": True}))
    with pytest.raises(HanodeError):
        engine.start(Context())
    assert journal(workdir) == ["refresh a", "start b", "start c", "stop c", "stop b"]
    assert markers(workdir) == ["a"]


def test_refusal_exits_4_and_does_not_stop_the_refusing_step(workdir: Path) -> None:
    (workdir / "b.up").unlink(missing_ok=True)
    engine = engine_of(workdir, *three(workdir, b={"refuse_start": True}))
    with pytest.raises(HanodeError) as caught:
        engine.start(Context())
    assert caught.value.code == Exit.REFUSED
    assert "start refused at b: b refuses; rolled back: a" in str(caught.value)
    assert journal(workdir) == ["start a", "stop a"]
    assert markers(workdir) == []


def test_failed_rollback_is_reported_and_the_rest_still_rolled_back(workdir: Path) -> None:
    engine = engine_of(workdir, *three(workdir, b={"fail_stop": True}, c={"fail_start": True}))
    with pytest.raises(HanodeError) as caught:
        engine.start(Context())
    assert "rolled back: c, a" in str(caught.value)
    report = engine.last_report(Action.START)
    assert report is not None
    results = [(step["step"], step["result"]) for step in report["steps"]]  # type: ignore[union-attr, index]
    assert results == [
        ("a", "done"),
        ("b", "done"),
        ("c", "failed"),
        ("c", "rolled-back"),
        ("b", "rollback-failed"),
        ("a", "rolled-back"),
    ]
    assert markers(workdir) == ["b"]


def test_stop_halts_at_the_first_failure_and_converges_when_run_again(workdir: Path) -> None:
    resources = three(workdir, b={"fail_stop": True})
    engine = engine_of(workdir, *resources)
    engine.start(Context())
    with pytest.raises(HanodeError) as caught:
        engine.stop(Context())
    assert caught.value.code == Exit.FAILED
    assert "stop failed at b: b is stuck" in str(caught.value)
    assert markers(workdir) == ["a", "b"]  # a stays up under b
    resources[1].fail_stop = False  # type: ignore[attr-defined]  # the admin fixed the cause
    engine.stop(Context())
    assert markers(workdir) == []


def test_dry_run_plans_without_touching(workdir: Path) -> None:
    (workdir / "b.up").touch()
    engine = engine_of(workdir, *three(workdir))
    plan = engine.plan(Action.START)
    assert [(line.step, line.state, line.actions) for line in plan] == [
        ("a", State.DOWN, (f"create {workdir / 'a.up'}",)),
        ("b", State.UP, ()),
        ("c", State.DOWN, (f"create {workdir / 'c.up'}",)),
    ]
    stop_plan = engine.plan(Action.STOP)
    assert [line.step for line in stop_plan] == ["c", "b", "a"]
    assert [line.actions for line in stop_plan] == [(), (f"remove {workdir / 'b.up'}",), ()]
    assert journal(workdir) == []
    assert markers(workdir) == ["b"]


def test_reports_are_saved_with_timings(workdir: Path) -> None:
    # b's start sleeps 0.5 s: its step must be timed around the action, and only its own
    resources = [Marker("a", workdir), Marker("b", workdir, start_delay=0.5), Marker("c", workdir)]
    engine = engine_of(workdir, *resources)
    engine.start(Context())
    saved = json.loads((workdir / "run" / "hanode" / "last-start.json").read_text())
    assert saved["ok"] is True
    seconds = {step["step"]: step["seconds"] for step in saved["steps"]}
    assert list(seconds) == ["a", "b", "c"]
    assert seconds["b"] >= 0.5, seconds
    assert seconds["a"] < 0.5 and seconds["c"] < 0.5, seconds
    assert engine.last_report(Action.STOP) is None


@pytest.mark.parametrize(
    ("states", "code"),
    [
        ([State.UP, State.UP], StatusExit.ALL_UP),
        ([State.DOWN, State.DOWN], StatusExit.ALL_DOWN),
        ([State.UP, State.DOWN], StatusExit.PARTLY_UP),
        ([State.PARTIAL, State.UP], StatusExit.PARTLY_UP),
        ([State.UP, State.UNKNOWN], StatusExit.UNKNOWN),
    ],
)
def test_status_exit_codes(states: list[State], code: StatusExit) -> None:
    assert overall(states) is code


class Broken(Marker):
    def probe(self) -> Status:
        raise OSError(5, "Input/output error")


def test_a_broken_probe_is_unknown_not_a_crash(workdir: Path) -> None:
    engine = engine_of(workdir, Broken("a", workdir), Marker("b", workdir))
    (resource_a, status_a, _), (_, status_b, _) = engine.probe_all()
    assert resource_a.name == "a"
    assert status_a.state is State.UNKNOWN
    assert "Input/output error" in status_a.summary
    assert status_b.state is State.DOWN


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from hanode.engine import Engine
    with Engine([], state_dir=Path(sys.argv[1])).locked():
        print("locked", flush=True)
        time.sleep(30)
    """
)


def test_a_second_hanode_is_refused_at_once_with_the_holders_pid(workdir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen(
        [PYTHON, "-c", HOLDER, str(workdir / "run")],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        engine = engine_of(workdir, *three(workdir))
        began = time.monotonic()
        with pytest.raises(LockHeld) as caught:
            engine.start(Context())
        assert time.monotonic() - began < 1
        assert caught.value.code == Exit.REFUSED
        assert f"another hanode is running (pid {holder.pid}" in str(caught.value)
        assert journal(workdir) == []
    finally:
        holder.kill()
        holder.wait()
    engine.start(Context())  # the lock died with its holder
    assert markers(workdir) == ["a", "b", "c"]


SLOW_START = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from test_engine import Marker
    from hanode.engine import Engine
    from hanode.resources import Context
    work = Path(sys.argv[1])
    engine = Engine([Marker("a", work), Marker("b", work, start_delay=30)], state_dir=work / "run")
    try:
        engine.start(Context())
    except Exception as err:
        print(err, flush=True)
        sys.exit(err.code)
    """
)


def test_sigterm_during_start_rolls_back(workdir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [PYTHON, "-c", SLOW_START, str(workdir), str(ROOT / "tests")],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    in_b = wait_for(lambda: "start b" in journal(workdir), timeout=20)
    child.send_signal(signal.SIGTERM)
    out, _ = child.communicate(timeout=20)
    assert in_b, (journal(workdir), out)
    assert child.returncode == Exit.FAILED
    assert "start failed at b: interrupted by SIGTERM; rolled back: b, a" in out
    assert journal(workdir) == ["start a", "start b", "stop b", "stop a"]
    assert markers(workdir) == []
