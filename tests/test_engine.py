"""The engine with small real resources (marker files in a temp dir): order, skip,
rollback, refusal, lock, dry-run, reports and interruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import PYTHON, wait_for

from hanode import interrupt
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
        stop_delay: float = 0.0,
        probe_delay: float = 0.0,
    ) -> None:
        self.name = name  # type: ignore[misc]
        self.marker = directory / f"{name}.up"
        self.journal = directory / "journal"
        self.fail_start = fail_start
        self.refuse_start = refuse_start
        self.fail_stop = fail_stop
        self.start_delay = start_delay
        self.stop_delay = stop_delay
        self.probe_delay = probe_delay  # the first probe only, journaled: a signal's target

    def _note(self, what: str) -> None:
        with self.journal.open("a") as handle:
            handle.write(f"{what} {self.name}\n")

    def probe(self) -> Status:
        if self.probe_delay:
            self._note("probe")
            delay, self.probe_delay = self.probe_delay, 0.0
            time.sleep(delay)
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
        time.sleep(self.stop_delay)  # before it acts: a signal here must not cut it
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


# -- signals: an interruption is never a probe's verdict, never cuts a rollback, never lost --

DRIVER = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from test_engine import Marker
    from hanode import log as hlog
    from hanode.engine import Engine
    from hanode.resources import Context
    work, spec = Path(sys.argv[1]), json.loads(sys.argv[3])
    hlog.setup()
    resources = [Marker(name, work, **kinds) for name, kinds in spec["resources"]]
    engine = Engine(resources, state_dir=work / "run")
    if spec.get("signal_when_saving"):
        save = engine._save
        def signalled_save(*args):
            os.kill(os.getpid(), signal.SIGTERM)  # the last step is done: the report is saved
            save(*args)
        engine._save = signalled_save
    try:
        getattr(engine, spec["verb"])(Context())
    except Exception as err:
        print(err, flush=True)
        sys.exit(err.code)
    print("ok", flush=True)
    """
)


def drive(
    workdir: Path, verb: str, *resources: tuple[str, dict[str, object]], **spec: object
) -> subprocess.Popen[str]:
    """``verb`` through the engine in a child hanode, with Marker resources; stdout: the error."""
    document = json.dumps({"verb": verb, "resources": resources, **spec})
    return subprocess.Popen(
        [PYTHON, "-c", DRIVER, str(workdir), str(ROOT / "tests"), document],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HANODE_NO_JOURNAL": "1"},
    )


def signal_when(child: subprocess.Popen[str], workdir: Path, line: str) -> None:
    """SIGTERM to the child once its journal has ``line``."""
    assert wait_for(lambda: line in journal(workdir), timeout=20), (journal(workdir), line)
    child.send_signal(signal.SIGTERM)


def test_an_interruption_is_no_exception_a_probe_could_swallow(workdir: Path) -> None:
    from hanode.engine import safe_probe
    from hanode.errors import Interrupted

    class Cut(Marker):
        def probe(self) -> Status:
            raise Interrupted(signal.SIGTERM)

    assert not issubclass(Interrupted, Exception)
    with pytest.raises(Interrupted, match="interrupted by SIGTERM"):
        safe_probe(Cut("a", workdir))


def test_sigterm_during_a_probe_of_start_rolls_back_and_fails(workdir: Path) -> None:
    child = drive(workdir, "start", ("a", {}), ("b", {"probe_delay": 30}), ("c", {}))
    signal_when(child, workdir, "probe b")
    out, err = child.communicate(timeout=20)
    assert child.returncode == Exit.FAILED, (out, err)
    assert "start failed at b: interrupted by SIGTERM; rolled back: a" in out
    assert journal(workdir) == ["start a", "probe b", "stop a"]  # b and c never started
    assert markers(workdir) == []


def test_sigterm_right_after_the_last_step_exits_0_with_the_node_up_and_says_so(
    workdir: Path,
) -> None:
    child = drive(workdir, "start", ("a", {}), ("b", {}), signal_when_saving=True)
    out, err = child.communicate(timeout=20)
    assert (child.returncode, out) == (0, "ok\n"), (out, err)
    assert "hanode: warning: SIGTERM arrived after the start completed; the node is active" in err
    assert markers(workdir) == ["a", "b"]
    assert journal(workdir) == ["start a", "start b"]
    saved = json.loads((workdir / "run" / "hanode" / "last-start.json").read_text())
    assert saved["ok"] is True


def test_a_second_sigterm_during_the_rollback_does_not_cut_it(workdir: Path) -> None:
    child = drive(workdir, "start", ("a", {}), ("b", {"start_delay": 30, "stop_delay": 2}))
    signal_when(child, workdir, "start b")
    signal_when(child, workdir, "stop b")  # b's stop waits 2 s before it acts: hit it there
    out, err = child.communicate(timeout=20)
    assert child.returncode == Exit.FAILED, (out, err)
    assert "start failed at b: interrupted by SIGTERM; rolled back: b, a" in out
    assert "SIGTERM arrived during the rollback, which was finished first" in err
    assert journal(workdir) == ["start a", "start b", "stop b", "stop a"]
    assert markers(workdir) == []


def test_sigterm_during_a_stop_halts_there_and_names_what_is_still_up(workdir: Path) -> None:
    for name in ("a", "b", "c"):
        (workdir / f"{name}.up").touch()
    child = drive(workdir, "stop", ("a", {}), ("b", {}), ("c", {"stop_delay": 30}))
    signal_when(child, workdir, "stop c")
    out, err = child.communicate(timeout=20)
    assert child.returncode == Exit.FAILED, (out, err)
    assert out.strip() == (
        "stop interrupted by SIGTERM at c; still up: c (half stopped), b, a "
        "(run `hanode stop` again to finish)"
    )
    assert journal(workdir) == ["stop c"]  # a stop never rolls back, nor goes on
    assert markers(workdir) == ["a", "b", "c"]


def test_sigterm_during_a_probe_of_stop_halts_there(workdir: Path) -> None:
    for name in ("a", "b", "c"):
        (workdir / f"{name}.up").touch()
    child = drive(workdir, "stop", ("a", {}), ("b", {}), ("c", {"probe_delay": 30}))
    signal_when(child, workdir, "probe c")
    out, err = child.communicate(timeout=20)
    assert child.returncode == Exit.FAILED, (out, err)
    assert "stop interrupted by SIGTERM at c; still up: c, b, a" in out
    assert journal(workdir) == ["probe c"]
    assert markers(workdir) == ["a", "b", "c"]


# -- the run directory: opened from / through no symlink, only root's to change ------------


def test_a_symlinked_run_dir_is_refused_and_nothing_is_written(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = workdir / "elsewhere"
    real.mkdir()
    (workdir / "linked").symlink_to(real)
    monkeypatch.setenv("HANODE_RUN_DIR", str(workdir / "linked"))
    engine = Engine(three(workdir))
    with pytest.raises(HanodeError, match="linked is a symlink") as caught:
        engine.start(Context())
    assert caught.value.code == Exit.REFUSED
    assert "\n" not in str(caught.value)
    assert list(real.iterdir()) == []
    assert journal(workdir) == []


def test_a_run_dir_others_can_write_is_refused(workdir: Path) -> None:
    (workdir / "run").chmod(0o777)
    with pytest.raises(HanodeError, match="writable by every user") as caught:
        engine_of(workdir, *three(workdir)).start(Context())
    assert caught.value.code == Exit.REFUSED
    assert journal(workdir) == []


@pytest.mark.parametrize(
    ("link", "why"),
    [
        (Path.symlink_to, "hanode.lock: it is a symbolic link"),
        (Path.hardlink_to, "hanode.lock is not a plain file with one link"),
    ],
)
def test_a_link_at_the_lock_never_truncates_its_target(
    workdir: Path, link: Callable[[Path, Path], None], why: str
) -> None:
    victim = workdir / "victim"
    victim.write_text("precious\n")
    link(workdir / "run" / "hanode.lock", victim)
    with pytest.raises(HanodeError, match=why) as caught:
        engine_of(workdir, *three(workdir)).start(Context())
    assert caught.value.code == Exit.REFUSED
    assert victim.read_text() == "precious\n"
    assert journal(workdir) == []


@pytest.mark.parametrize("planted", ["last-start.tmp", "last-start.json"])
def test_a_symlink_in_the_state_dir_is_never_written_through(workdir: Path, planted: str) -> None:
    victim = workdir / "victim"
    victim.write_text('{"planted": true}\n')
    state = workdir / "run" / "hanode"
    state.mkdir()
    (state / planted).symlink_to(victim)
    (state / "last-stop.json").symlink_to(victim)
    engine = engine_of(workdir, *three(workdir))
    engine.start(Context())
    assert victim.read_text() == '{"planted": true}\n'
    assert not (state / "last-start.json").is_symlink()
    assert json.loads((state / "last-start.json").read_text())["ok"] is True
    assert engine.last_report(Action.STOP) is None  # never read through a symlink either


def test_a_symlinked_state_dir_gets_no_report(workdir: Path) -> None:
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    (workdir / "run" / "hanode").symlink_to(elsewhere)
    engine = engine_of(workdir, *three(workdir))
    engine.start(Context())  # the report is lost (a warning), the start is not
    assert markers(workdir) == ["a", "b", "c"]
    assert list(elsewhere.iterdir()) == []
    assert engine.last_report(Action.START) is None


# -- preflight: the cluster active elsewhere refuses before any promotion ------------------


class Promoting(Marker):
    """Prepares (its marker: like DRBD up and the wait), then asks for the preflight verdict
    right before it "promotes" (a second marker), as the DRBD step does."""

    confirms_preflight = True

    def start(self, ctx: Context) -> None:
        self._note("prepare")
        time.sleep(self.start_delay)
        ctx.before_promotion()
        self._note("promote")
        self.marker.touch()


class ActiveElsewhere(Marker):
    """Its preflight looks for a while, then finds the cluster active elsewhere."""

    def __init__(self, name: str, directory: Path, *, look: float, answered: bool) -> None:
        super().__init__(name, directory)
        self.look = look
        self.answered = answered

    def preflight(self, ctx: Context) -> None:
        time.sleep(self.look)
        self._note("preflight")
        if self.answered:
            raise Refused("192.0.2.10 is in use: 52:54:00:c0:00:02 answers ARP for it")


def test_a_preflight_refusal_stops_the_promotion_and_changes_nothing(workdir: Path) -> None:
    promoting = Promoting("drbd", workdir, start_delay=0.1)
    later = ActiveElsewhere("address", workdir, look=0.3, answered=True)
    engine = engine_of(workdir, promoting, Marker("filesystem", workdir), later)
    with pytest.raises(Refused) as caught:
        engine.start(Context())
    assert caught.value.message == (
        "start refused at drbd: 192.0.2.10 is in use: 52:54:00:c0:00:02 answers ARP for it"
    )
    # prepared (DRBD up, waited) but never promoted; the steps after never started
    assert journal(workdir) == ["prepare drbd", "preflight address"]
    assert markers(workdir) == []


def test_the_preflight_runs_beside_the_first_step(workdir: Path) -> None:
    promoting = Promoting("drbd", workdir, start_delay=0.6)
    later = ActiveElsewhere("address", workdir, look=0.6, answered=False)
    engine = engine_of(workdir, promoting, later)
    began = time.monotonic()
    engine.start(Context())
    took = time.monotonic() - began
    # one after the other they would take 1.2 s: overlapped, the longer of the two
    assert took < 1.1, took
    assert journal(workdir).index("preflight address") < journal(workdir).index("promote drbd")


def test_without_a_promoting_step_the_first_step_waits_for_the_verdict(workdir: Path) -> None:
    first = Marker("filesystem", workdir)
    later = ActiveElsewhere("address", workdir, look=0.2, answered=True)
    with pytest.raises(Refused):
        engine_of(workdir, first, later).start(Context())
    assert journal(workdir) == ["preflight address"]  # nothing started
    assert markers(workdir) == []


def test_a_start_with_nothing_to_do_runs_no_preflight(workdir: Path) -> None:
    """The verdict is needed only before a step acts: when none does, no check runs (the
    address's would send a duplicate probe for an address this node holds)."""
    for name in ("drbd", "address"):
        (workdir / f"{name}.up").touch()
    promoting = Promoting("drbd", workdir)
    later = ActiveElsewhere("address", workdir, look=0.0, answered=True)
    report = engine_of(workdir, promoting, later).start(Context())
    assert [step.result for step in report.steps] == [Result.SKIPPED, Result.SKIPPED]
    assert journal(workdir) == ["refresh drbd", "refresh address"]  # no "preflight"


def test_the_preflight_begins_with_the_first_step_that_acts(workdir: Path) -> None:
    (workdir / "drbd.up").touch()  # settled: the preflight has not begun at its refresh
    promoting = Promoting("drbd", workdir)
    first = Marker("filesystem", workdir)
    later = ActiveElsewhere("address", workdir, look=0.1, answered=True)
    with pytest.raises(Refused):
        engine_of(workdir, promoting, first, later).start(Context())
    assert journal(workdir) == ["refresh drbd", "preflight address"]  # filesystem: refused
    assert markers(workdir) == ["drbd"]


class SurelyStarting(Promoting):
    """Says at no cost that its start will act (as DRBD does from /proc/drbd); its probe
    waits, up to 5 s, for a preflight check to have begun, and journals whether one had."""

    def __init__(self, name: str, directory: Path, checking: threading.Event) -> None:
        super().__init__(name, directory)
        self.checking = checking

    def surely_starts(self) -> bool:
        return True

    def probe(self) -> Status:
        self._note("probe after a preflight began" if self.checking.wait(5) else "probe alone")
        return super().probe()


class Announcing(ActiveElsewhere):
    """Its preflight says that it began."""

    def __init__(self, name: str, directory: Path, began: threading.Event) -> None:
        super().__init__(name, directory, look=0.0, answered=False)
        self.began = began

    def preflight(self, ctx: Context) -> None:
        self.began.set()
        super().preflight(ctx)


def test_a_step_that_surely_starts_begins_the_preflight_before_the_first_probe(
    workdir: Path,
) -> None:
    began = threading.Event()
    drbd = SurelyStarting("drbd", workdir, began)
    address = Announcing("address", workdir, began)
    engine_of(workdir, drbd, address).start(Context())
    # (the preflight's own line may come before or after the probe's)
    assert "probe after a preflight began drbd" in journal(workdir)
    assert markers(workdir) == ["address", "drbd"]


class Rendezvous(Marker):
    """Its preflight says it began, then waits for another's to begin too: both finish only
    when they run side by side (one after the other, the first would wait in vain)."""

    def __init__(
        self,
        name: str,
        directory: Path,
        *,
        began: threading.Event,
        other: threading.Event,
        linger: float = 0.0,
    ) -> None:
        super().__init__(name, directory)
        self.began = began
        self.other = other
        self.linger = linger

    def preflight(self, ctx: Context) -> None:
        self.began.set()
        met = self.other.wait(10)
        time.sleep(self.linger)  # so that the other one's refusal comes first
        self._note("met" if met else "alone")
        raise Refused(f"{self.name} found the cluster active elsewhere")


def test_the_preflight_checks_run_side_by_side_and_the_first_in_order_refuses(
    workdir: Path,
) -> None:
    address_began, services_began = threading.Event(), threading.Event()
    address = Rendezvous("address", workdir, began=address_began, other=services_began, linger=0.3)
    services = Rendezvous("services", workdir, began=services_began, other=address_began)
    promoting = Promoting("drbd", workdir)
    with pytest.raises(Refused) as caught:
        engine_of(workdir, promoting, address, services).start(Context())
    # both checks met: neither waited for the other to end first
    assert sorted(journal(workdir)) == ["met address", "met services", "prepare drbd"]
    # services' refusal came first; the one reported is the step first in start order
    assert journal(workdir).index("met services") < journal(workdir).index("met address")
    assert caught.value.message == (
        "start refused at drbd: address found the cluster active elsewhere"
    )
    assert markers(workdir) == []


def test_only_the_main_thread_counts_deferred_sections() -> None:
    """Signals reach the main thread only: another thread's deferred section (a probe or
    preflight thread spawning a command) must neither defer the main thread's signal nor
    raise it in that thread."""
    depths: list[int] = []
    with interrupt.guarded() as guard, guard.interruptible():

        def other() -> None:
            with interrupt.deferred():
                depths.append(guard.depth)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        with interrupt.deferred():
            depths.append(guard.depth)
    assert depths == [0, 1]


class Standby(Marker):
    """Settled for stop only when its marker says "standby" (like DRBD up as Secondary)."""

    def settled(self, status: Status, *, starting: bool, ctx: Context) -> bool:
        if starting:
            return super().settled(status, starting=starting, ctx=ctx)
        return (self.marker.parent / "standby").exists()

    def stop(self, ctx: Context) -> None:
        super().stop(ctx)
        (self.marker.parent / "standby").touch()


def test_a_resource_decides_what_is_settled(workdir: Path) -> None:
    engine = engine_of(workdir, Standby("drbd", workdir))
    assert engine.plan(Action.STOP)[0].actions == (f"remove {workdir / 'drbd.up'}",)
    engine.stop(Context())  # DOWN by its probe, but not settled: stop runs
    assert journal(workdir) == ["stop drbd"]
    engine.stop(Context())
    assert journal(workdir) == ["stop drbd"]
    assert engine.plan(Action.STOP)[0].actions == ()


def test_a_switchover_report_is_kept_where_monitoring_reads_it(workdir: Path) -> None:
    from hanode import monitor

    engine = engine_of(workdir)
    engine.save_document(
        monitor.SWITCHOVER_REPORT, {"seconds": 9.5, "finished_at": 1e9, "ok": True}
    )
    report = engine.read_document(monitor.SWITCHOVER_REPORT)
    assert report == {"seconds": 9.5, "finished_at": 1e9, "ok": True}
    assert monitor.last_switchover(report, None, None) == monitor.Switchover(
        9.5, 1e9, True, "report"
    )
