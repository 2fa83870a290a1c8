"""The services step against real systemd: PID 1 of a systemd-nspawn container.

Each `systemd` test boots a fresh container (tests/systemd/nspawn.py, ~0.6 s; the root
is a volatile overlay, so no test sees another's units) and drives hanode inside it,
through tests/systemd/driver.py (one Services action, JSON out) or `python3 -m hanode`.
What happened is read back with `systemctl show`, independent of hanode's own client.
The test units are in tests/systemd/units.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers import PYTHON

from hanode.resources import Finding, Level
from hanode.resources.services import Services, ServicesConfig, unit_findings
from hanode.system.dbus import ActiveState, BusError, JobOutcome, Systemd, UnitInfo

HERE = Path(__file__).resolve().parent


def _load_nspawn() -> ModuleType:
    # Loaded by path: a package named `systemd` would shadow python3-systemd.
    spec = importlib.util.spec_from_file_location("hanode_nspawn", HERE / "systemd/nspawn.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


nspawn = _load_nspawn()

FIRST = "hanode-test-first.service"
SECOND = "hanode-test-second.service"
THIRD = "hanode-test-third.service"  # Type=notify, ready 0.2 s after it was forked
FAIL = "hanode-test-fail.service"
HANG = "hanode-test-hang.service"
STOPHANG = "hanode-test-stophang.service"
ENABLED = "hanode-test-enabled.service"
AFTER = "hanode-test-after.service"
REQUIRES = "hanode-test-requires.service"
WANTEDBY = "hanode-test-wantedby.service"
MISSING = "hanode-test-missing.service"


# -- the container ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def rootfs() -> Path:
    """The cached test rootfs (built on first use, ~40 s)."""
    return Path(nspawn.rootfs())


@pytest.fixture
def conf_dir(tmp_path: Path) -> Path:
    conf = tmp_path / "conf"
    conf.mkdir()
    return conf


# HANODE_TEST_JEEPNEY=DIR (a jeepney package directory, e.g. 0.9 from pip --target) runs
# hanode in the container with that jeepney instead of Debian 12's 0.8.
OTHER_JEEPNEY = os.environ.get("HANODE_TEST_JEEPNEY")


@pytest.fixture
def box(rootfs: Path, conf_dir: Path) -> Iterator[Any]:
    """A freshly booted container; powered off (or killed) whatever the test did."""
    binds = {conf_dir: "/opt/hanode-conf"}
    if OTHER_JEEPNEY:
        binds[Path(OTHER_JEEPNEY)] = "/opt/hanode/jeepney"  # first on PYTHONPATH
    container = nspawn.Container(rootfs, binds=binds)
    container.boot()
    try:
        yield container
    finally:
        container.close()


def drive(
    box: Any,
    action: str,
    *units: str,
    timeout: int = 20,
    force: bool = False,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One Services action inside the container; its JSON outcome."""
    argv = ["/usr/bin/python3", "/opt/hanode-tests/driver.py", action, *units]
    argv += ["--timeout", str(timeout)] + (["--force"] if force else [])
    result = box.run(argv, check=False, timeout=timeout * len(units) + 60, env=env)
    assert result.returncode == 0, result.stderr
    outcome: dict[str, Any] = json.loads(result.stdout)
    return outcome


def show(box: Any, unit: str) -> dict[str, str]:
    """systemctl's view of a unit (ActiveState, timestamps, MainPID...)."""
    result = box.run(["systemctl", "show", unit], check=True)
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def active_at(box: Any, unit: str) -> int:
    return int(show(box, unit)["ActiveEnterTimestampMonotonic"])


def jobs_done(box: Any, unit: str, job_type: str) -> list[int]:
    """When (µs, monotonic) systemd logged each finished ``job_type`` job of ``unit``.

    From the journal, because systemd unloads an inactive unit and its timestamps."""
    box.run(["journalctl", "--sync"], check=True)
    result = box.run(
        ["journalctl", "-o", "json", f"UNIT={unit}", f"JOB_TYPE={job_type}", "JOB_RESULT=done"],
        check=True,
    )
    entries = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return [int(entry["__MONOTONIC_TIMESTAMP"]) for entry in entries]


def jobs(box: Any) -> str:
    return str(box.run(["systemctl", "list-jobs", "--no-legend"], check=True).stdout)


# -- start and stop --------------------------------------------------------------------


@pytest.mark.systemd
def test_hanode_runs_on_the_jeepney_under_test(box: Any) -> None:
    probe = "import jeepney; print(jeepney.__file__)"
    where = box.run(["/usr/bin/python3", "-c", probe]).stdout.strip()
    expected = "/opt/hanode/jeepney/" if OTHER_JEEPNEY else "/usr/lib/python3/dist-packages/"
    assert where.startswith(expected), where


@pytest.mark.systemd
def test_start_in_order_each_waited_for_and_stop_in_reverse(box: Any) -> None:
    # THIRD becomes ready 0.2 s after its fork: if hanode did not wait for its job,
    # FIRST would be active before it.
    units = (THIRD, FIRST, SECOND)
    assert drive(box, "probe", *units)["result"]["state"] == "down"

    outcome = drive(box, "start", *units)
    assert outcome["ok"], outcome
    for unit in units:
        assert show(box, unit)["ActiveState"] == "active"
    entered = [active_at(box, unit) for unit in units]
    assert entered[0] < entered[1] < entered[2], entered
    # Each start began (left inactive) only once the unit before was active.
    began = [int(show(box, unit)["InactiveExitTimestampMonotonic"]) for unit in units]
    assert entered[0] <= began[1] and entered[1] <= began[2], (began, entered)
    assert entered[0] - began[0] >= 200_000, "THIRD was not a 0.2 s notify start"
    assert [line for line in outcome["progress"] if " left" not in line] == [
        f"start {unit}" for unit in units
    ]
    status = drive(box, "probe", *units)["result"]
    assert status["state"] == "up"
    assert status["details"][THIRD] == {
        "load": "loaded",
        "active": "active",
        "sub": "running",
    }

    outcome = drive(box, "stop", *units)
    assert outcome["ok"], outcome
    for unit in units:
        assert show(box, unit)["ActiveState"] == "inactive"
    left = [jobs_done(box, unit, "stop") for unit in units]
    assert all(len(times) == 1 for times in left), left
    assert left[2][0] < left[1][0] < left[0][0], left
    assert drive(box, "probe", *units)["result"]["state"] == "down"


@pytest.mark.systemd
def test_the_start_asks_on_the_connection_its_preflight_opened(box: Any) -> None:
    """The preflight runs in a thread of its own while DRBD is waited on; done, it hands
    its connection to the main thread, and the start's jobs go out on it: one connection
    for both, not a second one once the address is up."""
    units = (FIRST, SECOND)
    outcome = drive(box, "preflight-then-start", *units)
    assert outcome["ok"], outcome
    assert outcome["result"] == {"connections": 1}
    for unit in units:
        assert show(box, unit)["ActiveState"] == "active"


_STATES = """
import json, sys
from hanode.system.dbus import Systemd
with Systemd.connect() as bus:
    infos = bus.states(sys.argv[1:])
print(json.dumps([[i.name, i.load_state, i.active_state.value, i.sub_state] for i in infos]))
"""


@pytest.mark.systemd
def test_the_states_read_in_one_call_are_systemctls(box: Any) -> None:
    """Systemd.states (one ListUnitsByNames) against `systemctl show`: a running unit, an
    inactive one, an enabled one, a missing one, and an alias (systemd answers it under
    the name it aliases: the name asked for is kept)."""
    alias = "hanode-test-alias.service"
    box.run(["ln", "-s", f"/etc/systemd/system/{FIRST}", f"/etc/systemd/system/{alias}"])
    box.run(["systemctl", "daemon-reload"])
    box.run(["systemctl", "start", FIRST])
    units = [FIRST, SECOND, ENABLED, MISSING, alias]
    result = box.run(["/usr/bin/python3", "-c", _STATES, *units], check=False)
    assert result.returncode == 0, result.stderr
    read = json.loads(result.stdout)
    expected = []
    for unit in units:
        shown = show(box, unit)
        expected.append([unit, shown["LoadState"], shown["ActiveState"], shown["SubState"]])
    assert read == expected
    assert [row[1:] for row in read[:2]] == [
        ["loaded", "active", "running"],
        ["loaded", "inactive", "dead"],
    ]
    assert read[3][1] == "not-found"
    assert read[4][1:] == ["loaded", "active", "running"]  # FIRST's, under the alias


@pytest.mark.systemd
def test_start_and_stop_twice_change_nothing_the_second_time(box: Any) -> None:
    units = (FIRST, SECOND)
    assert drive(box, "start", *units)["ok"]
    before = {unit: show(box, unit) for unit in units}
    again = drive(box, "start", *units)
    assert again["ok"], again
    assert again["progress"] == [], "an active unit was started again"
    for unit in units:
        after = show(box, unit)
        assert after["MainPID"] == before[unit]["MainPID"] != "0"
        since = "ActiveEnterTimestampMonotonic"
        assert after[since] == before[unit][since]
    assert drive(box, "plan-start", *units)["result"] == []

    assert drive(box, "stop", *units)["ok"]
    again = drive(box, "stop", *units)
    assert again["ok"], again
    assert again["progress"] == [], "an inactive unit was stopped again"
    for unit in units:
        assert len(jobs_done(box, unit, "start")) == len(jobs_done(box, unit, "stop")) == 1
        assert show(box, unit)["ActiveState"] == "inactive"
    assert drive(box, "plan-stop", *units)["result"] == []


@pytest.mark.systemd
def test_plans_name_what_would_be_done_and_change_nothing(box: Any) -> None:
    assert drive(box, "start", SECOND)["ok"]
    plan = drive(box, "plan-start", FIRST, SECOND, THIRD)["result"]
    assert plan == [
        f"start {FIRST} (now inactive/dead), wait up to 20s",
        f"start {THIRD} (now inactive/dead), wait up to 20s",
    ]
    assert drive(box, "plan-stop", FIRST, SECOND, THIRD)["result"] == [
        f"stop {SECOND} (now active/running), wait up to 20s"
    ]
    assert show(box, FIRST)["ActiveState"] == "inactive"
    assert drive(box, "probe", FIRST, SECOND)["result"]["state"] == "partial"


@pytest.mark.systemd
def test_a_failing_unit_fails_the_step_naming_unit_result_and_journal(box: Any) -> None:
    outcome = drive(box, "start", FIRST, FAIL, SECOND)
    assert not outcome["ok"]
    assert (outcome["error"], outcome["code"]) == ("StepFailed", 1)
    message = outcome["message"]
    assert message.startswith(f"{FAIL}: start failed (job result: failed, unit failed/failed)")
    assert "hanode-test-fail: cannot bind to port 8080" in message  # its own journal line
    assert outcome["hint"] == f"see `journalctl -u {FAIL}`"
    assert jobs_done(box, SECOND, "start") == [], "went on after a failure"
    # The engine rolls back by calling this step's stop(): exactly the configured units.
    assert show(box, FIRST)["ActiveState"] == "active"
    assert drive(box, "stop", FIRST, FAIL, SECOND)["ok"]
    assert show(box, FIRST)["ActiveState"] == "inactive"
    assert drive(box, "probe", FIRST, FAIL, SECOND)["result"]["state"] == "down"


@pytest.mark.systemd
def test_a_failing_unit_rolls_back_through_hanode_start(box: Any, conf_dir: Path) -> None:
    config = conf_dir / "hanode.toml"
    config.write_text(f'[services]\nunits = ["{FIRST}", "{FAIL}", "{SECOND}"]\ntimeout = 20\n')
    result = box.hanode("-c", "/opt/hanode-conf/hanode.toml", "--insecure-config", "start")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert FAIL in result.stderr and "cannot bind to port 8080" in result.stderr
    assert show(box, FIRST)["ActiveState"] == "inactive", "the earlier unit was left up"
    started, stopped = jobs_done(box, FIRST, "start"), jobs_done(box, FIRST, "stop")
    assert len(started) == len(stopped) == 1 and started[0] < stopped[0]
    assert jobs_done(box, SECOND, "start") == [], "went on after a failure"

    config.write_text(f'[services]\nunits = ["{FIRST}", "{SECOND}"]\ntimeout = 20\n')
    conf = ("-c", "/opt/hanode-conf/hanode.toml", "--insecure-config")
    assert box.hanode(*conf, "start").returncode == 0
    assert box.hanode(*conf, "status").returncode == 0  # all up
    assert box.hanode(*conf, "stop").returncode == 0
    assert box.hanode(*conf, "status").returncode == 3  # all down
    assert show(box, FIRST)["ActiveState"] == show(box, SECOND)["ActiveState"] == "inactive"


@pytest.mark.systemd
def test_each_step_outcome_is_in_the_journal_with_its_hanode_fields(
    box: Any, conf_dir: Path
) -> None:
    """`journalctl HANODE_STEP=services` finds what hanode start and stop did, as the
    container's journald stored it, with the seconds of the run reports."""
    config = conf_dir / "hanode.toml"
    config.write_text(f'[services]\nunits = ["{FIRST}", "{SECOND}"]\ntimeout = 20\n')
    conf = ("-c", "/opt/hanode-conf/hanode.toml", "--insecure-config")
    assert box.hanode(*conf, "start").returncode == 0
    assert box.hanode(*conf, "stop").returncode == 0
    box.run(["journalctl", "--sync"], check=True)
    result = box.run(
        ["journalctl", "-o", "json", "SYSLOG_IDENTIFIER=hanode", "HANODE_STEP=services"],
        check=True,
    )
    entries = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert [(e["HANODE_ACTION"], e["HANODE_RESULT"], e["PRIORITY"]) for e in entries] == [
        ("start", "done", "6"),
        ("stop", "done", "6"),
    ], entries
    for entry in entries:
        action = entry["HANODE_ACTION"]
        report = json.loads(box.run(["cat", f"/run/hanode/last-{action}.json"]).stdout)
        (step,) = report["steps"]
        assert step["step"] == "services"
        assert abs(float(entry["HANODE_SECONDS"]) - step["seconds"]) < 0.002, (entry, step)
        assert entry["MESSAGE"].startswith(f"services    {action:<9} done"), entry["MESSAGE"]


@pytest.mark.systemd
def test_a_hanging_start_times_out_and_its_job_is_cancelled(box: Any) -> None:
    began = time.monotonic()
    outcome = drive(box, "start", FIRST, HANG, timeout=2)
    took = time.monotonic() - began
    assert not outcome["ok"]
    assert (outcome["error"], outcome["code"]) == ("StepFailed", 1)
    assert outcome["message"].startswith(
        f"{HANG}: start did not finish within 2s; the job was cancelled"
    )
    assert 2 <= took < 10, took
    assert HANG not in jobs(box), "the start job is still queued"
    assert any(line.startswith(f"start {HANG}: ") for line in outcome["progress"])
    # Cancelling a job does not kill what it started: the rollback's stop() does.
    assert show(box, HANG)["ActiveState"] == "activating"
    assert drive(box, "stop", FIRST, HANG)["ok"]
    assert show(box, HANG)["ActiveState"] in ("inactive", "failed")
    assert show(box, FIRST)["ActiveState"] == "inactive"


@pytest.mark.systemd
def test_a_hanging_stop_times_out_and_its_job_is_cancelled(box: Any) -> None:
    assert drive(box, "start", FIRST, STOPHANG)["ok"]
    outcome = drive(box, "stop", FIRST, STOPHANG, timeout=2)
    assert not outcome["ok"]
    assert (outcome["error"], outcome["code"]) == ("StepFailed", 1)
    assert outcome["message"].startswith(
        f"{STOPHANG}: stop did not finish within 2s; the job was cancelled"
    )
    assert STOPHANG not in jobs(box)
    # Stop halts at the first failure, like the engine: FIRST is not pulled from under it.
    assert show(box, FIRST)["ActiveState"] == "active"
    assert show(box, STOPHANG)["ActiveState"] == "deactivating"
    assert drive(box, "probe", FIRST, STOPHANG)["result"]["state"] == "partial"
    # What the admin would do next; it also lets the container power off at once.
    box.run(["systemctl", "kill", "--signal=SIGKILL", STOPHANG])


@pytest.mark.systemd
def test_a_container_whose_poweroff_hangs_is_still_torn_down(rootfs: Path) -> None:
    container = nspawn.Container(rootfs).boot()
    try:
        pids = {pid: nspawn._start_time(pid) for pid in (container.leader, container.proc.pid)}
        container.run(["systemctl", "start", STOPHANG])  # its stop, so the poweroff, hangs
        began = time.monotonic()
    finally:
        container.close()
    assert time.monotonic() - began < 3 * nspawn.POWEROFF_TIMEOUT
    for pid, started in pids.items():
        assert started is not None and nspawn._start_time(pid) != started, f"{pid} lives on"


# -- check and the refusals ------------------------------------------------------------


def _findings(outcome: dict[str, Any]) -> dict[str, list[tuple[str, str | None]]]:
    by_unit: dict[str, list[tuple[str, str | None]]] = {}
    for finding in outcome["result"]:
        unit = finding["message"].split(" ", 1)[0].rstrip(":")
        by_unit.setdefault(unit, []).append((finding["level"], finding["hint"]))
    return by_unit


@pytest.mark.systemd
def test_check_refuses_missing_enabled_and_hanode_ordered_units(box: Any) -> None:
    units = (FIRST, MISSING, ENABLED, AFTER, REQUIRES, WANTEDBY, "postgresql.service")
    outcome = drive(box, "check", *units)
    assert outcome["ok"], outcome
    found = _findings(outcome)
    assert found[FIRST] == [("ok", None)]
    assert found[MISSING] == [
        ("error", "install its package, or correct the name in [services] units")
    ]
    assert found[ENABLED] == [("error", f"systemctl disable {ENABLED}")]
    assert found[AFTER] == [
        ("error", f"remove After=hanode-primary.service from {AFTER} (systemctl edit {AFTER})")
    ]
    assert [level for level, _hint in found[REQUIRES]] == ["error"]
    assert found[WANTEDBY] == [
        ("error", f"systemctl disable {WANTEDBY}"),  # enabled (into hanode-primary's wants)
        ("error", f"systemctl disable {WANTEDBY}"),  # pulled in by hanode-primary.service
    ]
    assert found["postgresql.service"] == [
        ("warning", "manage the cluster unit instead: postgresql@15-main.service")
    ]
    messages = " ".join(finding["message"] for finding in outcome["result"])
    assert f"{MISSING} does not exist (LoadState not-found)" in messages
    assert "a oneshot running /bin/true" in messages


@pytest.mark.systemd
def test_check_warns_when_a_unit_file_changed_under_systemd(box: Any) -> None:
    assert drive(box, "start", FIRST)["ok"]  # an active unit stays loaded
    path = f"/etc/systemd/system/{FIRST}"
    box.run(["sh", "-c", f'echo "# edited" >> {path} && touch -d "+2 seconds" {path}'])
    (finding,) = drive(box, "check", FIRST)["result"]
    assert (finding["level"], finding["hint"]) == ("warning", "systemctl daemon-reload")
    box.run(["systemctl", "daemon-reload"])
    assert [f["level"] for f in drive(box, "check", FIRST)["result"]] == ["ok"]


@pytest.mark.systemd
def test_start_refuses_before_touching_anything(box: Any) -> None:
    for bad in (ENABLED, AFTER, MISSING):
        outcome = drive(box, "start", FIRST, bad)
        assert (outcome["error"], outcome["code"]) == ("Refused", 4), outcome
        assert bad in outcome["message"]
        assert jobs_done(box, FIRST, "start") == [], "touched before refusing"
    # --force overrides what is only a risk, never a unit that does not exist.
    outcome = drive(box, "start", FIRST, MISSING, force=True)
    assert (outcome["error"], outcome["code"]) == ("Refused", 4)
    outcome = drive(box, "start", FIRST, AFTER, force=True)
    assert outcome["ok"], outcome
    assert show(box, AFTER)["ActiveState"] == "active"


@pytest.mark.systemd
def test_the_preflight_refuses_what_start_refuses_and_starts_nothing(box: Any) -> None:
    """A start's preflight runs before DRBD is promoted: a unit start would refuse
    refuses the whole start there, before any step acts."""
    for bad in (ENABLED, AFTER, MISSING):
        outcome = drive(box, "preflight", FIRST, bad)
        assert (outcome["error"], outcome["code"]) == ("Refused", 4), outcome
        assert bad in outcome["message"]
    assert drive(box, "preflight", FIRST, SECOND)["ok"]
    assert drive(box, "preflight", FIRST, AFTER, force=True)["ok"]  # a risk --force passes
    assert jobs_done(box, FIRST, "start") == [] and show(box, AFTER)["ActiveState"] != "active"


@pytest.mark.systemd
def test_hanode_check_exits_nonzero_on_a_refused_unit(box: Any, conf_dir: Path) -> None:
    config = conf_dir / "hanode.toml"
    config.write_text(f'[services]\nunits = ["{FIRST}", "{ENABLED}"]\n')
    result = box.hanode("-c", "/opt/hanode-conf/hanode.toml", "--insecure-config", "check")
    assert result.returncode != 0, result.stdout
    assert f"systemctl disable {ENABLED}" in result.stdout + result.stderr


# -- the bus ---------------------------------------------------------------------------


@pytest.mark.systemd
def test_status_is_unknown_and_start_fails_cleanly_without_a_bus(box: Any) -> None:
    nowhere = {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/run/hanode-test-no-bus"}
    status = drive(box, "probe", FIRST, env=nowhere)["result"]
    assert status["state"] == "unknown"
    assert "cannot connect to the system bus" in status["summary"]
    outcome = drive(box, "start", FIRST, env=nowhere)
    assert (outcome["error"], outcome["code"]) == ("BusError", 1)
    found = drive(box, "check", FIRST, env=nowhere)["result"]
    assert [finding["level"] for finding in found] == ["error"]


def test_connect_fails_with_a_clear_error_when_there_is_no_bus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/none")
    with pytest.raises(BusError, match="cannot connect to the system bus") as caught:
        Systemd.connect()
    assert caught.value.hint == "is dbus running? See `systemctl status dbus.service`"


def test_dry_run_plans_from_the_config_when_there_is_no_bus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/none")
    resource = Services(ServicesConfig(units=("db.service", "web.service"), timeout=30))
    assert resource.plan_start() == [
        "start db.service, wait up to 30s",
        "start web.service, wait up to 30s",
        "(units' states unknown: cannot connect to the system bus: "
        "[Errno 2] No such file or directory)",
    ]
    assert resource.plan_stop()[:2] == [
        "stop web.service, wait up to 30s",
        "stop db.service, wait up to 30s",
    ]


def _bounded_connect_against(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, greeting: bytes | None, error: str
) -> None:
    """Systemd.connect(timeout=0.5) against a real unix socket that accepts, answers
    the client's first line with ``greeting`` (None: says nothing at all), then hangs;
    it must fail with ``error`` within the timeout, not wait forever."""
    path = tmp_path / "bus"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)
    held: list[socket.socket] = []

    def serve() -> None:
        conn, _ = server.accept()
        held.append(conn)
        if greeting is None:
            return
        received = b""
        while b"\r\n" not in received:
            received += conn.recv(1024)
        conn.sendall(greeting)

    threading.Thread(target=serve, daemon=True).start()
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={path}")
    began = time.monotonic()
    try:
        with pytest.raises(BusError, match=error):
            Systemd.connect(timeout=0.5)
        assert time.monotonic() - began < 3
    finally:
        for conn in held:
            conn.close()
        server.close()


def test_connect_is_bounded_when_the_bus_never_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # it accepts and then says nothing: the auth step must time out
    _bounded_connect_against(tmp_path, monkeypatch, None, "cannot connect to the system bus")


def test_connect_is_bounded_when_the_bus_authenticates_and_then_hangs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It completes the SASL handshake (the one line a D-Bus server must say, "OK <guid>")
    # and never answers Hello: a hung dbus-daemon, as hanode sees it.
    _bounded_connect_against(
        tmp_path,
        monkeypatch,
        b"OK 0123456789abcdef0123456789abcdef\r\n",
        r"does not answer: no answer to Hello within 0.5s",
    )


def test_state_words_are_systemd_words() -> None:
    assert ActiveState("reloading").is_up and not ActiveState("reloading").is_down
    assert ActiveState("failed").is_down and not ActiveState("failed").is_up
    for word in ("activating", "deactivating"):
        assert not ActiveState(word).is_up and not ActiveState(word).is_down
    with pytest.raises(ValueError):
        ActiveState("running")
    assert JobOutcome("a.service", "/j/1", "done", 0.1).done
    assert not JobOutcome("a.service", "/j/1", "canceled", 0.1).done


def test_hanode_dbus_imports_quickly() -> None:
    # hanode status pays this on every call; what the rest of hanode imports anyway
    # (enum, typing, hanode.resources) is loaded first so it is not counted.
    code = "import enum, typing, hanode.resources; import hanode.system.dbus"
    result = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=HERE.parent,
        env={**os.environ, "PYTHONPATH": str(HERE.parent)},
    )
    cumulative = [
        int(line.split("|")[1])
        for line in result.stderr.splitlines()
        if line.rstrip().endswith("| hanode.system.dbus")
    ]
    assert len(cumulative) == 1, result.stderr[-2000:]
    assert cumulative[0] < 100_000, result.stderr[-2000:]  # µs; ~20 ms measured here


# -- the decisions of check, from hand-built unit states (no root) ---------------------


def _unit(name: str, **fields: Any) -> UnitInfo:
    state = {
        "load_state": "loaded",
        "active_state": ActiveState.INACTIVE,
        "sub_state": "dead",
        "unit_file_state": "disabled",
    }
    state.update(fields)
    return UnitInfo(name=name, **state)


PRIMARY = _unit("hanode-primary.service", unit_file_state="enabled")


def test_a_disabled_unit_untied_to_hanode_is_ok() -> None:
    assert unit_findings(_unit("apache2.service"), PRIMARY) == [
        Finding(Level.OK, "apache2.service: disabled, inactive/dead")
    ]


@pytest.mark.parametrize(
    ("fields", "message", "hint"),
    [
        ({"load_state": "masked"}, "apache2.service is masked", "systemctl unmask apache2.service"),
        (
            {"load_state": "bad-setting", "load_error": "Unit has a bad setting"},
            "apache2.service cannot be loaded (LoadState bad-setting): Unit has a bad setting",
            "fix the unit file, see `systemd-analyze verify apache2.service`",
        ),
        (
            {"unit_file_state": "enabled-runtime"},
            "apache2.service is enabled (at runtime): it starts at boot on its own, "
            "whichever node is active",
            "systemctl disable --runtime apache2.service",
        ),
    ],
)
def test_errors_name_the_cause_and_the_fix(fields: dict[str, Any], message: str, hint: str) -> None:
    assert unit_findings(_unit("apache2.service", **fields), PRIMARY) == [
        Finding(Level.ERROR, message, hint)
    ]


def test_an_enabled_postgresql_cluster_is_told_about_start_conf() -> None:
    cluster = _unit("postgresql@15-main.service", unit_file_state="enabled")
    (finding,) = unit_findings(cluster, PRIMARY)
    assert finding.level is Level.ERROR
    assert finding.hint == (
        "systemctl disable postgresql@15-main.service; and set the cluster's start.conf to manual"
    )


def test_a_unit_hanode_pulls_in_is_refused_from_either_side() -> None:
    pulled = Finding(
        Level.ERROR,
        "apache2.service is pulled in by hanode-primary.service (WantedBy=/RequiredBy=): "
        "systemd would start it alongside hanode, before its data is there",
        "systemctl disable apache2.service",
    )
    wanting = _unit("hanode-primary.service", wants=("apache2.service",))
    assert unit_findings(_unit("apache2.service"), wanting) == [pulled]
    by = _unit("apache2.service", wanted_by=("hanode-primary.service",))
    assert unit_findings(by, PRIMARY) == [pulled]


def test_indirect_and_stale_units_are_warnings() -> None:
    levels = [
        (finding.level, finding.hint)
        for finding in unit_findings(
            _unit("cups.service", unit_file_state="indirect", need_daemon_reload=True), PRIMARY
        )
    ]
    assert levels == [
        (Level.WARNING, "disable the units named in Also= of cups.service"),
        (Level.WARNING, "systemctl daemon-reload"),
    ]


def test_the_postgresql_umbrella_warning_names_the_clusters_or_the_pattern() -> None:
    umbrella = _unit("postgresql.service", service_type="oneshot", exec_start=(("/bin/true",),))
    (named,) = unit_findings(umbrella, PRIMARY, ["postgresql@15-main.service"])
    assert named.level is Level.WARNING
    assert "(a oneshot running /bin/true)" in named.message
    assert named.hint == "manage the cluster unit instead: postgresql@15-main.service"
    (pattern,) = unit_findings(umbrella, PRIMARY)
    assert pattern.hint == "manage the cluster unit instead: postgresql@VERSION-CLUSTER.service"
    # A postgresql.service that is a real daemon (not Debian's) is left alone.
    real = _unit("postgresql.service", service_type="notify")
    assert [finding.level for finding in unit_findings(real, PRIMARY)] == [Level.OK]
