"""The DRBD resource driven through the DRBD stand-in (tests/drbd_standin): the host has
no DRBD module, so drbdadm, drbdsetup and /proc/drbd answer with captures of real DRBD
8.4.11. Tests play the peer: it connects, is Primary, vanishes, refuses (StandAlone)."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from drbd_standin import StandIn
from helpers import PYTHON, Progress

from hanode.errors import Exit, HanodeError, Refused, StepFailed
from hanode.resources import Context, Level, State
from hanode.resources.drbd import DemoteFailure, Drbd, DrbdConfig
from hanode.run import SYSTEM_PATH
from hanode.system import dbus


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StandIn:
    node = StandIn(tmp_path / "node1", "node1")
    monkeypatch.setenv("HANODE_PATH", f"{node.bin_dir}:{SYSTEM_PATH}")  # hanode ignores PATH
    monkeypatch.delenv("DRBD_STANDIN_DIR", raising=False)
    return node


NOT_UP = "srv is not up: not replicating (`hanode stop` brings it up)"


def make(standin: StandIn, node: str = "node1", **config: object) -> Drbd:
    settings: dict[str, object] = {
        "wfc_timeout": 1,
        "degr_wfc_timeout": 1,
        "outdated_wfc_timeout": 1,
    }
    settings.update(config)
    return Drbd(
        DrbdConfig("srv", **settings),  # type: ignore[arg-type]
        proc_drbd=str(standin.proc_path),
        nodename=node,
    )


def ctx(*, force: bool = False, down: bool = False) -> tuple[Context, Progress]:
    progress = Progress()
    return Context(force=force, down=down, progress=progress), progress


def actions(standin: StandIn) -> list[str]:
    """The calls that change something (queries left out)."""
    changing = ("up", "down", "primary", "secondary")
    return [call for call in standin.calls() if call.split()[1] in changing]


# -- start -------------------------------------------------------------------------------------


def test_up_wait_promote_with_the_peer_there(standin: StandIn) -> None:
    standin.peer(up=True)
    resource = make(standin)
    assert resource.probe().state is State.DOWN
    context, progress = ctx()
    resource.start(context)
    assert standin.view() == ("Primary", "Secondary", "Connected", "UpToDate", "UpToDate")
    assert actions(standin) == ["drbdadm up srv", "drbdadm primary srv"]
    assert progress.labels == []  # connected at once: no wait shown
    status = resource.probe()
    assert status.state is State.UP
    assert status.details["role"] == "Primary" and status.details["peer-role"] == "Secondary"
    assert status.details["connection"] == "Connected"
    assert standin.synthesized() == []  # every answer was a capture of real DRBD


def test_the_wait_ends_when_the_peer_connects(standin: StandIn) -> None:
    resource = make(standin, wfc_timeout=20)
    timers: list[threading.Timer] = []
    waited: list[float] = []

    def connect_in_a_second() -> None:
        waited.append(time.monotonic())
        timers.append(threading.Timer(1.0, standin.peer, kwargs={"up": True}))
        timers[0].start()

    progress = Progress(connect_in_a_second)
    try:
        resource.start(Context(progress=progress))
    finally:
        for timer in timers:
            timer.cancel()
    took = time.monotonic() - waited[0]
    assert 0.9 < took < 10, took  # ended by the peer, long before wfc-timeout's 20 s
    assert standin.view() == ("Primary", "Secondary", "Connected", "UpToDate", "UpToDate")
    assert progress.labels == ["waiting for the peer of srv"]
    assert progress.updates[0] == "20s left, WFConnection"
    assert all(text.endswith("s left, WFConnection") for text in progress.updates)


def test_refused_while_the_peer_is_primary(standin: StandIn) -> None:
    standin.peer(up=True, role="Primary")
    resource = make(standin)
    for force in (False, True):
        with pytest.raises(Refused, match="peer is Primary") as caught:
            resource.start(ctx(force=force)[0])
        assert caught.value.code is Exit.REFUSED
        assert "stays up as Secondary" in caught.value.message
    assert standin.view() == ("Secondary", "Primary", "Connected", "UpToDate", "UpToDate")
    assert "drbdadm primary srv" not in standin.calls()
    assert resource.probe().state is State.DOWN


def test_the_peer_promoted_between_read_and_primary_is_a_refusal(
    standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    standin.peer(up=True)
    resource = make(standin)
    real_promote = resource._promote

    def peer_wins(force_flag: bool) -> None:
        standin.peer(role="Primary")
        real_promote(force_flag)

    monkeypatch.setattr(resource, "_promote", peer_wins)
    with pytest.raises(Refused, match="Multiple primaries not allowed by config"):
        resource.start(ctx()[0])
    assert standin.view() == ("Secondary", "Primary", "Connected", "UpToDate", "UpToDate")


def test_degraded_takeover_on_the_become_primary_on_node(
    standin: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    resource = make(standin, become_primary_on="node1")
    context, progress = ctx()
    began = time.monotonic()
    with caplog.at_level(logging.INFO, logger="hanode.drbd"):
        resource.start(context)
    assert time.monotonic() - began > 0.9  # waited wfc-timeout's 1 s
    assert standin.view() == ("Primary", "Unknown", "WFConnection", "UpToDate", "DUnknown")
    assert any("promoting srv degraded" in r.message for r in caplog.records)
    assert not any("--force overrides" in r.message for r in caplog.records)
    assert progress.updates and progress.updates[-1] == "0s left, WFConnection"


def test_degraded_takeover_on_the_other_node_needs_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    node2 = StandIn(tmp_path / "node2", "node2")
    monkeypatch.setenv("HANODE_PATH", f"{node2.bin_dir}:{SYSTEM_PATH}")
    resource = make(node2, "node2", become_primary_on="node1")
    with pytest.raises(Refused) as caught:
        resource.start(ctx()[0])
    assert caught.value.message.startswith(
        "peer unreachable: make sure it is down, then `hanode start --force`"
    )
    assert node2.view() == ("Secondary", "Unknown", "WFConnection", "UpToDate", "DUnknown")
    with caplog.at_level(logging.WARNING, logger="hanode.drbd"):
        resource.start(ctx(force=True)[0])
    assert node2.view() == ("Primary", "Unknown", "WFConnection", "UpToDate", "DUnknown")
    overrides = [r.message for r in caplog.records if "--force overrides" in r.message]
    assert overrides == [
        "--force overrides: the peer is unreachable and this node (node2) "
        "is not become-primary-on (node1)"
    ]
    assert actions(node2) == ["drbdadm up srv", "drbdadm primary srv"]


def test_without_become_primary_on_anywhere_no_node_promotes_alone(standin: StandIn) -> None:
    resource = make(standin)  # the captured drbd.conf has no startup section
    assert resource.become_primary_on() is None
    with pytest.raises(Refused, match="peer unreachable"):
        resource.start(ctx()[0])
    assert standin.view() is not None and standin.view()[0] == "Secondary"  # type: ignore[index]
    findings = resource.check()
    assert any(
        f.level is Level.WARNING and "become-primary-on is unset" in f.message for f in findings
    )


@pytest.mark.parametrize("force", [False, True])
def test_standalone_is_refused(standin: StandIn, force: bool) -> None:
    standin.peer(up=True, link="standalone")
    resource = make(standin, become_primary_on="node1")
    context, progress = ctx(force=force)
    with pytest.raises(Refused, match="StandAlone") as caught:
        resource.start(context)
    assert progress.labels == []  # StandAlone settles the wait at once
    assert caught.value.hint and "drbdadm connect srv" in caught.value.hint
    assert standin.view() == ("Secondary", "Unknown", "StandAlone", "UpToDate", "DUnknown")
    assert "drbdadm primary srv" not in standin.calls()


def test_not_up_to_date_is_refused_then_forced(
    standin: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    standin.update(disk="Consistent")
    resource = make(standin, become_primary_on="node1")
    with pytest.raises(Refused, match="local disk is Consistent, not UpToDate"):
        resource.start(ctx()[0])
    assert standin.view() == ("Secondary", "Unknown", "WFConnection", "Consistent", "DUnknown")
    with caplog.at_level(logging.WARNING, logger="hanode.drbd"):
        resource.start(ctx(force=True)[0])
    assert actions(standin)[-1] == "drbdadm primary --force srv"
    assert standin.view() == ("Primary", "Unknown", "WFConnection", "UpToDate", "DUnknown")
    assert [r.message for r in caplog.records if "--force overrides" in r.message] == [
        "--force overrides: the local disk is Consistent, not UpToDate (the peer is absent)"
    ]


def test_sync_target_is_refused_and_status_shows_the_resync(standin: StandIn) -> None:
    standin.peer(up=True, role="Primary")
    standin.update(disk="Inconsistent", cstate="SyncTarget")
    resource = make(standin)
    standin.update(up=True)
    status = resource.probe()
    assert status.state is State.DOWN
    assert status.details["sync-percent"] == 3.2
    assert status.details["sync-finish"] == "0:02:08"
    assert "3.2% in sync, finish in 0:02:08" in status.summary
    standin.peer(role="Secondary")
    with pytest.raises(Refused, match="local disk is Inconsistent"):
        resource.start(ctx()[0])


def test_degr_wfc_after_a_crash_as_a_degraded_primary(
    standin: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    resource = make(standin, wfc_timeout=30, degr_wfc_timeout=1, become_primary_on="node1")
    resource.start(ctx()[0])  # alone: degraded Primary
    assert standin.state()["meta"]["primary"] == 1 and standin.state()["meta"]["connected"] == 0
    standin.crash()
    began = time.monotonic()
    with caplog.at_level(logging.INFO, logger="hanode.drbd"):
        make(standin, wfc_timeout=30, degr_wfc_timeout=1, become_primary_on="node1").start(ctx()[0])
    assert time.monotonic() - began < 20  # degr-wfc's 1 s, not wfc's 30 s
    assert any("degr-wfc-timeout from hanode.toml" in r.message for r in caplog.records)
    assert standin.view() is not None and standin.view()[0] == "Primary"  # type: ignore[index]


def test_outdated_wfc_when_the_peer_is_known_outdated(
    standin: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    standin.update(meta={"peer_outdated": 1})
    resource = make(standin, wfc_timeout=30, outdated_wfc_timeout=1, become_primary_on="node1")
    began = time.monotonic()
    with caplog.at_level(logging.INFO, logger="hanode.drbd"):
        resource.start(ctx()[0])
    assert time.monotonic() - began < 20  # outdated-wfc's 1 s, not wfc's 30 s
    assert any("outdated-wfc-timeout" in r.message for r in caplog.records)
    assert standin.view() == ("Primary", "Unknown", "WFConnection", "UpToDate", "Outdated")


def test_the_peer_vanishes_under_a_primary(standin: StandIn) -> None:
    standin.peer(up=True)
    resource = make(standin)
    resource.start(ctx()[0])
    standin.peer(up=False)
    status = resource.probe()
    assert status.state is State.UP
    assert status.summary == (
        "srv Primary/Unknown WFConnection UpToDate/DUnknown; "
        "replication link down: the peer is not connected (WFConnection)"
    )
    assert status.details["drbd-version"] == "8.4.11"
    resource.stop(ctx()[0])
    assert standin.view() == ("Secondary", "Unknown", "WFConnection", "UpToDate", "DUnknown")
    # every state in this scenario was captured on real DRBD (node2, primary-crash)
    assert not [line for line in standin.synthesized() if "proc" in line or "role" in line]


# -- idempotency -------------------------------------------------------------------------------


def test_start_and_stop_are_idempotent(standin: StandIn) -> None:
    standin.peer(up=True)
    resource = make(standin)
    resource.start(ctx()[0])
    resource.start(ctx()[0])
    assert actions(standin) == ["drbdadm up srv", "drbdadm primary srv"]
    resource.stop(ctx()[0])
    resource.stop(ctx()[0])
    assert actions(standin)[2:] == ["drbdadm secondary srv"]
    # stopped: Secondary, still up and connected so the peer can take over
    assert standin.view() == ("Secondary", "Secondary", "Connected", "UpToDate", "UpToDate")
    assert resource.probe().state is State.DOWN
    # up already, Secondary: start promotes without a second `drbdadm up`
    resource.start(ctx()[0])
    assert actions(standin)[3:] == ["drbdadm primary srv"]


def test_stop_down_takes_it_down_and_is_idempotent(standin: StandIn) -> None:
    standin.peer(up=True)
    resource = make(standin)
    resource.start(ctx()[0])
    resource.stop(ctx(down=True)[0])
    resource.stop(ctx(down=True)[0])
    assert actions(standin)[2:] == ["drbdadm secondary srv", "drbdadm down srv"]
    assert standin.view() is None
    status = resource.probe()
    assert (status.state, status.summary, status.details["up"]) == (
        State.DOWN,
        NOT_UP,
        False,
    )


def test_stop_brings_a_resource_that_is_not_up_up_as_a_standby(standin: StandIn) -> None:
    standin.peer(up=True)
    resource = make(standin)
    stopping = Context()
    assert not resource.settled(resource.probe(), starting=False, ctx=stopping)
    resource.stop(stopping)
    assert actions(standin) == ["drbdadm up srv"]
    assert standin.view() == ("Secondary", "Secondary", "Connected", "UpToDate", "UpToDate")
    assert resource.settled(resource.probe(), starting=False, ctx=stopping)
    resource.stop(stopping)  # again: nothing to do
    assert actions(standin) == ["drbdadm up srv"]
    # --down wants it down: a Secondary that is up is not settled for it
    down = Context(down=True)
    assert not resource.settled(resource.probe(), starting=False, ctx=down)
    resource.stop(down)
    assert actions(standin) == ["drbdadm up srv", "drbdadm down srv"]
    assert resource.settled(resource.probe(), starting=False, ctx=down)


def test_up_done_by_someone_else_meanwhile_converges(
    standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    standin.peer(up=True)
    resource = make(standin)
    real_read = resource.read_state
    calls = {"n": 0}

    def stale_first_read() -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            standin.update(up=True)  # another `drbdadm up` ran between our read and ours
            return None
        return real_read()

    monkeypatch.setattr(resource, "read_state", stale_first_read)
    resource.start(ctx()[0])
    assert standin.view() is not None and standin.view()[0] == "Primary"  # type: ignore[index]
    # our `drbdadm up` met the lab-captured "Device '1' is configured!" and went on
    assert "drbdadm up srv" in actions(standin)
    assert standin.synthesized() == []


# -- stop: the device is held open -------------------------------------------------------------


def _primary_held_open(standin: StandIn) -> None:
    standin.peer(up=True)
    standin.update(up=True, role="Primary", held_open=True)


@pytest.mark.root
def test_demote_names_the_opener(standin: StandIn, tmp_path: Path) -> None:
    backing = tmp_path / "backing.img"
    backing.write_bytes(b"\0" * (1 << 20))
    loop = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], capture_output=True, text=True, check=True
    ).stdout.strip()
    holder = None
    try:
        with open(loop, "rb") as handle:
            holder = subprocess.Popen(["sleep", "60"], stdin=handle)
        _primary_held_open(standin)
        resource = Drbd(
            DrbdConfig("srv"), proc_drbd=str(standin.proc_path), nodename="node1", device=loop
        )
        with pytest.raises(StepFailed) as caught:
            resource.stop(ctx()[0])
        message = caught.value.message
        assert "cannot demote srv: Device is held open by someone" in message
        assert f"{loop} is held by {holder.pid} (sleep): fd 0 {loop}" in message
        assert standin.view() is not None and standin.view()[0] == "Primary"  # type: ignore[index]
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        subprocess.run(["losetup", "-d", loop], check=False)


def test_demote_held_open_device_missing(standin: StandIn) -> None:
    _primary_held_open(standin)
    resource = Drbd(
        DrbdConfig("srv"), proc_drbd=str(standin.proc_path), nodename="node1", device="/nonexistent"
    )
    with pytest.raises(StepFailed, match="Device is held open by someone: /nonexistent"):
        resource.stop(ctx()[0])


def test_on_demote_failure_force_on_8_4_says_why_not(standin: StandIn) -> None:
    _primary_held_open(standin)
    resource = make(standin, on_demote_failure=DemoteFailure.FORCE)
    with pytest.raises(StepFailed, match="needs DRBD 9.1 or later .* DRBD 8.4.11"):
        resource.stop(ctx()[0])
    assert "drbdadm secondary --force srv" not in standin.calls()


def test_on_demote_failure_reboot_asks_for_a_reboot(standin: StandIn) -> None:
    _primary_held_open(standin)
    asked: list[str] = []
    resource = Drbd(
        DrbdConfig("srv", on_demote_failure=DemoteFailure.REBOOT),
        proc_drbd=str(standin.proc_path),
        nodename="node1",
        reboot=asked.append,
    )
    with pytest.raises(StepFailed, match="reboot requested so that the peer can take over"):
        resource.stop(ctx()[0])
    assert len(asked) == 1 and "Device is held open by someone" in asked[0]


def test_the_reboot_request_is_logind_reboot_without_asking() -> None:
    message = dbus.reboot_message()
    fields = {key.name: value for key, value in message.header.fields.items()}  # type: ignore[attr-defined]
    assert fields["destination"] == "org.freedesktop.login1"
    assert fields["path"] == "/org/freedesktop/login1"
    assert fields["interface"] == "org.freedesktop.login1.Manager"
    assert fields["member"] == "Reboot"
    assert message.body == (False,)  # type: ignore[attr-defined]


# -- reading the state: the number of calls ----------------------------------------------------


def test_a_probe_costs_one_drbdadm_call_and_a_file_read(standin: StandIn) -> None:
    standin.peer(up=True)
    standin.update(up=True)
    before = len(standin.calls())
    began = time.perf_counter()
    status = make(standin).probe()
    took = time.perf_counter() - began
    assert status.state is State.DOWN
    assert standin.calls()[before:] == ["drbdadm dump srv"]
    # nothing configured in /proc/drbd: not up, without asking drbdadm at all
    standin.update(up=False)
    before = len(standin.calls())
    assert make(standin).probe().summary == NOT_UP
    assert standin.calls()[before:] == []
    print(f"probe through the stand-in: 1 drbdadm call, {took * 1000:.1f} ms")
    assert took < 2


def test_unreadable_proc_drbd_falls_back_to_drbdadm(standin: StandIn, tmp_path: Path) -> None:
    standin.peer(up=True, role="Primary")
    standin.update(up=True)
    garbage = tmp_path / "garbage"
    garbage.write_text("something else entirely\n")
    resource = Drbd(DrbdConfig("srv"), proc_drbd=str(garbage), nodename="node1")
    status = resource.probe()
    assert status.details["role"] == "Secondary" and status.details["peer-role"] == "Primary"
    assert standin.calls()[-3:] == ["drbdadm role srv", "drbdadm cstate srv", "drbdadm dstate srv"]
    standin.update(up=False)
    assert resource.probe().summary == NOT_UP  # role's "Device minor not allocated"


def test_drbd9_json_is_tried_once_then_drbdadm(standin: StandIn, tmp_path: Path) -> None:
    standin.peer(up=True)
    standin.update(up=True)
    nine = tmp_path / "proc9"
    nine.write_text("version: 9.2.12 (api:2/proto:86-122)\n")
    resource = Drbd(DrbdConfig("srv"), proc_drbd=str(nine), nodename="node1")
    assert resource.probe().details["connection"] == "Connected"
    assert resource.probe().details["connection"] == "Connected"
    json_calls = [c for c in standin.calls() if c == "drbdsetup status --json srv"]
    assert len(json_calls) == 1  # 8.4's drbdsetup refused it (rc 20): not asked again


def test_missing_drbdadm_is_unknown(standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANODE_PATH", str(standin.directory))  # a safe dir without drbdadm
    status = make(standin).probe()
    assert status.state is State.UNKNOWN
    assert "drbdadm not found" in status.summary


def test_check_reports_node_device_and_waits(standin: StandIn) -> None:
    findings = make(standin, become_primary_on="node1").check()
    messages = [f.message for f in findings if f.level is Level.OK]
    assert "srv: this node node1 uses /dev/drbd1 (minor 1)" in messages
    assert any(m.startswith("waits for the peer: wfc-timeout 1s (hanode.toml)") for m in messages)
    assert "become-primary-on node1 (this node)" in messages
    errors = make(standin, "node3").check()
    assert [f.level for f in errors] == [Level.ERROR]
    assert "no `on node3` section" in errors[0].message


def test_plans(standin: StandIn) -> None:
    resource = make(standin, become_primary_on="node1")
    plan = resource.plan_start()
    assert plan[0] == "drbdadm up srv"
    assert plan[1].startswith("wait for the peer up to 1s")
    assert "become-primary-on (node1)" in plan[2]
    assert resource.plan_stop() == ["drbdadm up srv: a standby replicates (--down: leave it down)"]
    standin.peer(up=True)
    resource.start(ctx()[0])
    assert resource.plan_start() == []
    assert resource.plan_stop()[0] == "drbdadm secondary srv (on failure: fail)"


# -- through the engine ------------------------------------------------------------------------


def test_through_the_engine(standin: StandIn, tmp_path: Path) -> None:
    from hanode.engine import Engine, Result, overall

    standin.peer(up=True, role="Primary")
    engine = Engine([make(standin)], state_dir=tmp_path / "run")
    (tmp_path / "run").mkdir()
    with pytest.raises(HanodeError) as caught:
        engine.start(Context())
    assert caught.value.code is Exit.REFUSED
    assert "start refused at drbd: the peer is Primary" in caught.value.message
    assert standin.view() == ("Secondary", "Primary", "Connected", "UpToDate", "UpToDate")
    standin.peer(role="Secondary")
    report = engine.start(Context())
    assert [(s.step, s.result) for s in report.steps] == [("drbd", Result.DONE)]
    assert "Primary/Secondary Connected UpToDate/UpToDate" in report.steps[0].message
    states = [status.state for _, status, _ in engine.probe_all()]
    assert states == [State.UP] and overall(states) == 0
    report = engine.stop(Context())
    assert [(s.step, s.result) for s in report.steps] == [("drbd", Result.DONE)]
    report = engine.stop(Context())
    assert [(s.step, s.result) for s in report.steps] == [("drbd", Result.SKIPPED)]
    assert standin.view() == ("Secondary", "Secondary", "Connected", "UpToDate", "UpToDate")


@pytest.mark.root
def test_become_primary_on_is_compared_with_the_real_hostname(standin: StandIn) -> None:
    # a UTS namespace named node1: the resource finds itself by os.uname() as drbdadm does
    script = (
        "import socket, sys\n"
        "socket.sethostname('node1')\n"
        "from hanode.resources.drbd import DrbdConfig\n"
        "from hanode.resources import Context\n"
        "from hanode.resources.drbd import Drbd\n"
        "config = DrbdConfig('srv', wfc_timeout=1, become_primary_on='node1')\n"
        "Drbd(config, proc_drbd=sys.argv[1]).start(Context())\n"
    )
    repo = Path(__file__).resolve().parents[1]
    subprocess.run(
        ["unshare", "--uts", "--", PYTHON, "-c", script, str(standin.proc_path)],
        check=True,
        cwd=repo,
        env={
            "PATH": os.environ["PATH"],
            "HANODE_PATH": os.environ["HANODE_PATH"],
            "PYTHONPATH": str(repo),
            "HANODE_NO_JOURNAL": "1",
        },
    )
    assert standin.view() == ("Primary", "Unknown", "WFConnection", "UpToDate", "DUnknown")


# -- the engine's hint: a start that will surely act -----------------------------------------


def test_surely_starts_reads_proc_drbd_only(standin: StandIn, tmp_path: Path) -> None:
    standin.peer(up=True)
    resource = make(standin)
    assert resource.surely_starts() is True  # not up: up and promote
    resource.start(ctx()[0])
    assert resource.surely_starts() is False  # Primary
    resource.stop(ctx()[0])
    assert standin.view() == ("Secondary", "Secondary", "Connected", "UpToDate", "UpToDate")
    calls = len(standin.calls())
    assert resource.surely_starts() is True  # up, Secondary: promote
    assert len(standin.calls()) == calls  # a file read, no drbdadm
    unloaded = Drbd(DrbdConfig("srv"), proc_drbd=str(tmp_path / "absent"), nodename="node1")
    assert unloaded.surely_starts() is True  # the module not loaded: modprobe, up, promote
