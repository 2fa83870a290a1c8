"""`hanode status --nagios` and `--textfile` (hanode.monitor): the plugin line and its exit
code by the Nagios plugin guidelines, the Prometheus text format read back by
prometheus_client's own parser, on real runs of hanode (a [links] config on real files),
on the DRBD stand-in's states (captures of real DRBD 8.4.11), and on hand-built states for
each branch of the mapping; the textfile written atomically, never through a symlink."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest
from drbd_standin import StandIn
from helpers import PYTHON, ROOT, SHM, imported, links_config, missing, run_hanode

from hanode import monitor
from hanode.errors import Exit, StatusExit
from hanode.monitor import NagiosCode, Snapshot, Step
from hanode.resources import Context, State, Status
from hanode.resources.drbd import Drbd, DrbdConfig
from hanode.run import SYSTEM_PATH

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # tests/setup-host installs python3-prometheus-client
    text_string_to_metric_families = None

# The plugin guidelines' perfdata, space-separated: 'label'=value[UOM];[warn];[crit];[min];[max],
# the label quoted when it holds a space, = or ' (a ' doubled inside), values [-0-9.].
LABEL = r"(?:'(?:[^']|'')+'|[^ '=]+)"
PERFDATA = re.compile(
    rf"({LABEL})=(-?[0-9.]+(?:s|ms|us|%|B|KB|MB|TB|c)?(?:;[-0-9.:~@]*){{0,4}})(?: |$)"
)
PLUGIN_LINE = re.compile(r"^HANODE (OK|WARNING|CRITICAL|UNKNOWN) - ([^|\n]+) \| ([^|\n]*)$")


def parse_line(line: str) -> tuple[str, str, dict[str, str]]:
    """(status word, text, {label: perfdata}) of a plugin line; asserts its grammar."""
    match = PLUGIN_LINE.match(line)
    assert match, line
    perf, data, at = {}, match.group(3), 0
    while at < len(data):
        item = PERFDATA.match(data, at)
        assert item, f"not perfdata at {data[at:]!r}"
        assert item.group(1) not in perf, item.group(1)
        perf[item.group(1)] = item.group(2)
        at = item.end()
    return match.group(1), match.group(2), perf


def metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of a textfile, parsed by prometheus_client: {(name, labels): value}."""
    if text_string_to_metric_families is None:
        missing("python3-prometheus-client is not installed")
    samples = {}
    for family in text_string_to_metric_families(text):
        assert family.documentation, family.name  # every family has its HELP
        assert family.type == "gauge", family.name
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, key
            samples[key] = sample.value
    return samples


def sample(
    found: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return found[(name, tuple(sorted(labels.items())))]


# -- real runs: a [links] config on real files ------------------------------------------------


# A real mount point for the links' targets (the links step starts only on a mounted
# filesystem): the host's /dev/shm, in a directory of the test's own, removed after it.


def hanode(config: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_hanode("-c", str(config), "--insecure-config", *args, run_dir=tmp_path)


def test_nagios_on_a_real_node_standby_then_active(tmp_path: Path, shared_memory: Path) -> None:
    config = links_config(tmp_path, SHM, shared_memory)
    node = os.uname().nodename
    done = hanode(config, tmp_path, "status", "--nagios")
    assert done.returncode == NagiosCode.OK, done.stdout + done.stderr
    assert done.stdout.count("\n") == 1
    word, text, perf = parse_line(done.stdout.rstrip("\n"))
    assert (word, text) == ("OK", f"{node} standby: links down")
    assert set(perf) == {"links_probe"} and perf["links_probe"].endswith("s;;;0")

    assert hanode(config, tmp_path, "start").returncode == Exit.OK
    done = hanode(config, tmp_path, "status", "--nagios")
    assert done.returncode == NagiosCode.OK, done.stdout + done.stderr
    word, text, perf = parse_line(done.stdout.rstrip("\n"))
    assert (word, text) == ("OK", f"{node} active: links up")
    report = json.loads((tmp_path / "hanode" / "last-start.json").read_text())
    assert perf["last_start"] == f"{report['seconds']:.4f}s;;;0"
    assert perf["start_links"] == f"{report['steps'][0]['seconds']:.4f}s;;;0"


def test_nagios_half_up_node_is_critical(tmp_path: Path, shared_memory: Path) -> None:
    config = links_config(tmp_path, SHM, shared_memory, count=2)
    assert hanode(config, tmp_path, "start").returncode == Exit.OK
    (tmp_path / "path1").unlink()  # one link put back by hand: the step is half up
    (tmp_path / "path1.drbdlinks").rename(tmp_path / "path1")
    done = hanode(config, tmp_path, "status", "--nagios")
    assert done.returncode == NagiosCode.CRITICAL, done.stdout + done.stderr
    word, text, _ = parse_line(done.stdout.rstrip("\n"))
    assert word == "CRITICAL"
    assert "links partial; half up: some steps up, others down" in text


def test_nagios_config_error_is_one_unknown_line(tmp_path: Path) -> None:
    config = tmp_path / "hanode.toml"
    config.write_text("[links]\nmountpoint = 3\n")
    done = hanode(config, tmp_path, "status", "--nagios")
    assert done.returncode == NagiosCode.UNKNOWN, done.stdout + done.stderr
    assert done.stdout.startswith("HANODE UNKNOWN - ") and done.stdout.count("\n") == 1
    assert "mountpoint" in done.stdout and "mountpoint" in done.stderr


def test_textfile_on_a_real_node_parses_and_says_what_status_says(
    tmp_path: Path, shared_memory: Path
) -> None:
    config = links_config(tmp_path, SHM, shared_memory)
    target = tmp_path / "prom" / "hanode.prom"
    target.parent.mkdir()
    done = hanode(config, tmp_path, "status", "--textfile", str(target))
    assert done.returncode == StatusExit.ALL_DOWN, done.stderr
    assert done.stdout == ""  # a timer's job: nothing else printed
    found = metrics(target.read_text())
    assert sample(found, "hanode_state", state="standby") == 1
    assert sample(found, "hanode_state", state="active") == 0
    assert sample(found, "hanode_up", step="links") == 0
    assert sample(found, "hanode_step_state", step="links", state="down") == 1
    assert sample(found, "hanode_status_exit_code") == StatusExit.ALL_DOWN
    assert not [key for key in found if key[0].startswith("hanode_last_")]  # no run yet
    assert os.listdir(target.parent) == ["hanode.prom"]  # no temporary file left

    assert hanode(config, tmp_path, "stop").returncode == Exit.OK
    assert hanode(config, tmp_path, "start").returncode == Exit.OK
    done = hanode(config, tmp_path, "status", "--textfile", str(target), "--json")
    assert done.returncode == StatusExit.ALL_UP, done.stderr
    assert json.loads(done.stdout)["state"] == "up"  # --json prints its document too
    found = metrics(target.read_text())
    start = json.loads((tmp_path / "hanode" / "last-start.json").read_text())
    stop = json.loads((tmp_path / "hanode" / "last-stop.json").read_text())
    assert sample(found, "hanode_state", state="active") == 1
    assert sample(found, "hanode_up", step="links") == 1
    assert sample(found, "hanode_last_run_success", verb="start") == 1
    assert sample(found, "hanode_last_run_seconds", verb="start") == pytest.approx(start["seconds"])
    ended = start["started_at"] + start["seconds"]
    assert sample(found, "hanode_last_run_timestamp_seconds", verb="start") == pytest.approx(ended)
    step = sample(found, "hanode_last_run_step_seconds", verb="start", step="links", action="start")
    assert step == pytest.approx(start["steps"][0]["seconds"])
    # no switchover report: this node's last stop plus its last start
    total = sample(found, "hanode_last_switchover_seconds", source="stop+start")
    assert total == pytest.approx(start["seconds"] + stop["seconds"])


def test_switchover_report_is_read_when_present(tmp_path: Path, shared_memory: Path) -> None:
    config = links_config(tmp_path, SHM, shared_memory)
    (tmp_path / "hanode").mkdir()
    report = {"seconds": 12.5, "finished_at": 1_800_000_000.25, "ok": False}
    (tmp_path / "hanode" / "last-switchover.json").write_text(json.dumps(report))
    target = tmp_path / "hanode.prom"
    done = hanode(config, tmp_path, "status", "--nagios", "--textfile", str(target))
    assert done.returncode == NagiosCode.OK, done.stdout + done.stderr
    assert parse_line(done.stdout.rstrip("\n"))[2]["last_switchover"] == "12.5000s;;;0"
    found = metrics(target.read_text())
    assert sample(found, "hanode_last_switchover_seconds", source="report") == 12.5
    assert sample(found, "hanode_last_switchover_success", source="report") == 0
    timestamp = sample(found, "hanode_last_switchover_timestamp_seconds", source="report")
    assert timestamp == 1_800_000_000.25


def test_monitor_module_is_imported_only_by_the_monitoring_options(
    tmp_path: Path, shared_memory: Path
) -> None:
    config = links_config(tmp_path, SHM, shared_memory)
    env = {"PYTHONPROFILEIMPORTTIME": "1"}
    plain = run_hanode("-c", str(config), "--insecure-config", "status", run_dir=tmp_path, env=env)
    assert "hanode.monitor" not in imported(plain.stderr)
    nagios = run_hanode(
        "-c", str(config), "--insecure-config", "status", "--nagios", run_dir=tmp_path, env=env
    )
    assert "hanode.monitor" in imported(nagios.stderr)


# -- the textfile: atomic, never through a symlink, only where root alone writes ---------------


def test_a_failed_write_leaves_the_old_file_whole(tmp_path: Path, shared_memory: Path) -> None:
    config = links_config(tmp_path, SHM, shared_memory)
    target = tmp_path / "hanode.prom"
    target.write_text("# the old content\n" * 10)  # 180 bytes: more than the limit below

    def small_files() -> None:  # in the child: a file may not grow past 100 bytes (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))

    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "HANODE_NO_JOURNAL": "1",
        "HANODE_RUN_DIR": str(tmp_path),
    }
    argv = [PYTHON, "-m", "hanode", "-c", str(config), "--insecure-config", "status"]
    done = subprocess.run(
        [*argv, "--textfile", str(target)],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=small_files,
        check=False,
        timeout=60,
    )
    assert done.returncode == Exit.USAGE, done.stderr
    assert f"cannot write --textfile {target}: File too large" in done.stderr
    assert "the old file is left as it was" in done.stderr
    assert target.read_text() == "# the old content\n" * 10
    assert sorted(os.listdir(tmp_path)) == sorted(["hanode.prom", "hanode.toml", "path0"])


def test_a_symlink_as_the_textfile_is_refused_and_its_target_untouched(
    tmp_path: Path, shared_memory: Path
) -> None:
    config = links_config(tmp_path, SHM, shared_memory)
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    target = tmp_path / "hanode.prom"
    target.symlink_to(victim)
    done = hanode(config, tmp_path, "status", "--textfile", str(target))
    assert done.returncode == Exit.USAGE, done.stderr
    assert f"--textfile {target} is not a plain file" in done.stderr
    assert victim.read_text() == "root's file\n" and target.is_symlink()


def test_a_symlink_on_the_way_to_the_textfile_is_refused(
    tmp_path: Path, shared_memory: Path
) -> None:
    config = links_config(tmp_path, SHM, shared_memory)
    (tmp_path / "real").mkdir()
    (tmp_path / "via").symlink_to(tmp_path / "real")
    done = hanode(config, tmp_path, "status", "--textfile", str(tmp_path / "via" / "hanode.prom"))
    assert done.returncode == Exit.USAGE, done.stderr
    assert f"{tmp_path / 'via'} is a symlink" in done.stderr
    assert os.listdir(tmp_path / "real") == []


def test_a_directory_other_users_can_write_is_refused(tmp_path: Path, shared_memory: Path) -> None:
    config = links_config(tmp_path, SHM, shared_memory)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # sticky, like /tmp: a user can still plant the names root creates
    done = hanode(config, tmp_path, "status", "--textfile", str(shared / "hanode.prom"))
    assert done.returncode == Exit.USAGE, done.stderr
    assert f"{shared} is writable by every user" in done.stderr
    assert os.listdir(shared) == []


def test_an_ancestor_a_system_user_owns_is_no_refusal(tmp_path: Path, shared_memory: Path) -> None:
    """Debian's layout: /var/lib/prometheus is user prometheus's, node-exporter/ root's."""
    config = links_config(tmp_path, SHM, shared_memory)
    prometheus = tmp_path / "prometheus"
    collector = prometheus / "node-exporter"
    collector.mkdir(parents=True)
    os.chown(prometheus, 65534, 65534)
    done = hanode(config, tmp_path, "status", "--textfile", str(collector / "hanode.prom"))
    assert done.returncode == 3, done.stderr  # a standby: the exit of status
    assert "hanode_state" in (collector / "hanode.prom").read_text()
    os.chown(collector, 65534, 65534)  # the directory itself another user's: refused
    done = hanode(config, tmp_path, "status", "--textfile", str(collector / "other.prom"))
    assert done.returncode == Exit.USAGE, done.stderr
    assert f"{collector} is " in done.stderr
    assert not (collector / "other.prom").exists()


def test_a_missing_directory_names_the_fix(tmp_path: Path, shared_memory: Path) -> None:
    config = links_config(tmp_path, SHM, shared_memory)
    done = hanode(config, tmp_path, "status", "--textfile", str(tmp_path / "none" / "x.prom"))
    assert done.returncode == Exit.USAGE, done.stderr
    assert f"the directory {tmp_path / 'none'} is missing (create it" in done.stderr


# -- DRBD: the stand-in's states (captured from real DRBD 8.4.11) -------------------------------


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StandIn:
    node = StandIn(tmp_path / "node1", "node1")
    monkeypatch.setenv("HANODE_PATH", f"{node.bin_dir}:{SYSTEM_PATH}")  # hanode ignores PATH
    monkeypatch.delenv("DRBD_STANDIN_DIR", raising=False)
    return node


def drbd_snapshot(standin: StandIn) -> Snapshot:
    """The snapshot status would make of the stand-in's DRBD, probed as status probes it."""
    drbd = Drbd(
        DrbdConfig("srv", wfc_timeout=1, degr_wfc_timeout=1, outdated_wfc_timeout=1),
        proc_drbd=str(standin.proc_path),
        nodename="node1",
    )
    status = drbd.probe()
    code = {State.UP: StatusExit.ALL_UP, State.DOWN: StatusExit.ALL_DOWN}[status.state]
    return monitor.snapshot_of("node1", code, [("drbd", status, 0.01)], None, None, None)


def start_drbd(standin: StandIn) -> None:
    Drbd(
        DrbdConfig("srv", wfc_timeout=1, degr_wfc_timeout=1, outdated_wfc_timeout=1),
        proc_drbd=str(standin.proc_path),
        nodename="node1",
    ).start(Context())


def test_drbd_connected_primary_is_ok_with_its_states(standin: StandIn) -> None:
    standin.peer(up=True)
    start_drbd(standin)
    snapshot = drbd_snapshot(standin)
    code, line = monitor.nagios(snapshot)
    assert code is NagiosCode.OK
    assert parse_line(line)[1] == "node1 active: drbd up"
    found = metrics(monitor.prometheus(snapshot))
    assert sample(found, "hanode_drbd_resource_up", resource="srv") == 1
    assert sample(found, "hanode_drbd_role", resource="srv", node="local", role="Primary") == 1
    assert sample(found, "hanode_drbd_role", resource="srv", node="peer", role="Secondary") == 1
    connected = sample(found, "hanode_drbd_connection_state", resource="srv", state="Connected")
    assert connected == 1
    local = sample(found, "hanode_drbd_disk_state", resource="srv", disk="local", state="UpToDate")
    peer = sample(found, "hanode_drbd_disk_state", resource="srv", disk="peer", state="UpToDate")
    assert (local, peer) == (1, 1)
    assert sample(found, "hanode_drbd_split_brain", resource="srv") == 0
    states = [key for key in found if key[0] == "hanode_drbd_connection_state"]
    assert sum(found[key] for key in states) == 1  # one state set, the others 0


def test_drbd_link_down_under_a_primary_is_a_warning(standin: StandIn) -> None:
    standin.peer(up=True)
    start_drbd(standin)
    standin.peer(up=False)
    code, line = monitor.nagios(drbd_snapshot(standin))
    assert code is NagiosCode.WARNING
    assert (
        parse_line(line)[1]
        == "node1 active: drbd up; drbd srv: replication link down (WFConnection)"
    )


def test_drbd_standalone_is_critical(standin: StandIn) -> None:
    standin.peer(up=True, link="standalone")
    standin.update(up=True, cstate="StandAlone")
    snapshot = drbd_snapshot(standin)
    code, line = monitor.nagios(snapshot)
    assert code is NagiosCode.CRITICAL
    assert "drbd srv: StandAlone, not trying to connect (`drbdadm connect srv`)" in line
    found = metrics(monitor.prometheus(snapshot))
    assert sample(found, "hanode_drbd_connection_state", resource="srv", state="StandAlone") == 1


def test_drbd_resync_on_the_standby_is_a_warning_with_its_progress(standin: StandIn) -> None:
    standin.peer(up=True, role="Primary")
    standin.update(up=True, disk="Inconsistent", cstate="SyncTarget")
    snapshot = drbd_snapshot(standin)
    code, line = monitor.nagios(snapshot)
    assert code is NagiosCode.WARNING
    assert (
        parse_line(line)[1]
        == "node1 standby: drbd down; drbd srv: local disk Inconsistent, 3.2% in sync"
    )
    found = metrics(monitor.prometheus(snapshot))
    assert sample(found, "hanode_drbd_sync_percent", resource="srv") == 3.2


def test_drbd_not_up_on_a_standby_is_a_warning(standin: StandIn) -> None:
    code, line = monitor.nagios(drbd_snapshot(standin))
    assert code is NagiosCode.WARNING
    assert line.startswith("HANODE WARNING - node1 standby: drbd down; drbd srv is not up")


# -- each branch of the mapping, on hand-built states --------------------------------------------


def step(name: str, state: State, **details: object) -> Step:
    return Step(name, Status(state, f"{name} is {state.value}", details), 0.0123)


DRBD_OK = {
    "resource": "srv",
    "up": True,
    "role": "Primary",
    "peer-role": "Secondary",
    "connection": "Connected",
    "disk": "UpToDate",
    "peer-disk": "UpToDate",
}


def run_report(verb: str, ok: bool, result: str = "done") -> dict[str, object]:
    return {
        "verb": verb,
        "started_at": 1_800_000_000.0 if verb == "stop" else 1_800_000_100.0,
        "seconds": 2.5,
        "ok": ok,
        "steps": [
            {"step": "drbd", "action": verb, "result": result, "seconds": 2.0, "message": ""}
        ],
    }


@pytest.mark.parametrize(
    ("code", "steps", "last_start", "expected", "says"),
    [
        (StatusExit.ALL_UP, [step("drbd", State.UP, **DRBD_OK)], None, NagiosCode.OK, "active"),
        (StatusExit.ALL_DOWN, [step("links", State.DOWN)], None, NagiosCode.OK, "standby"),
        (
            StatusExit.PARTLY_UP,
            [step("links", State.UP), step("services", State.DOWN)],
            None,
            NagiosCode.CRITICAL,
            "half up",
        ),
        (
            StatusExit.UNKNOWN,
            [step("links", State.UP), step("services", State.UNKNOWN)],
            None,
            NagiosCode.UNKNOWN,
            "services: services is unknown",
        ),
        (
            StatusExit.ALL_UP,
            [
                step(
                    "drbd", State.UP, **{**DRBD_OK, "connection": "StandAlone", "split-brain": True}
                )
            ],
            None,
            NagiosCode.CRITICAL,
            "drbd srv: split brain",
        ),
        (
            StatusExit.UNKNOWN,  # a known critical problem outranks a step that cannot be read
            [
                step(
                    "drbd", State.UP, **{**DRBD_OK, "connection": "StandAlone", "split-brain": True}
                ),
                step("services", State.UNKNOWN),
            ],
            None,
            NagiosCode.CRITICAL,
            "split brain",
        ),
        (
            StatusExit.ALL_UP,
            [step("drbd", State.UP, **{**DRBD_OK, "disk": "Diskless"})],
            None,
            NagiosCode.CRITICAL,
            "local disk Diskless",
        ),
        (
            StatusExit.ALL_UP,
            [step("drbd", State.UP, **{**DRBD_OK, "peer-disk": "Outdated"})],
            None,
            NagiosCode.WARNING,
            "peer disk Outdated",
        ),
        (
            StatusExit.ALL_DOWN,
            [step("links", State.DOWN)],
            run_report("start", ok=False, result="refused"),
            NagiosCode.WARNING,
            "last start refused at drbd",
        ),
    ],
)
def test_mapping(
    code: StatusExit,
    steps: list[Step],
    last_start: dict[str, object] | None,
    expected: NagiosCode,
    says: str,
) -> None:
    snapshot = Snapshot("node1", code, tuple(steps), last_start=last_start)
    got, line = monitor.nagios(snapshot)
    assert got is expected, line
    word, text, _ = parse_line(line)
    assert word == expected.name and says in text, line


def test_a_failed_run_followed_by_a_good_one_is_forgotten() -> None:
    failed_stop = run_report("stop", ok=False, result="failed")  # started first
    good_start = run_report("start", ok=True)
    snapshot = Snapshot(
        "node1", StatusExit.ALL_UP, (step("links", State.UP),), good_start, failed_stop
    )
    assert monitor.nagios(snapshot)[0] is NagiosCode.OK
    snapshot = Snapshot(
        "node1", StatusExit.ALL_DOWN, (step("links", State.DOWN),), None, failed_stop
    )
    code, line = monitor.nagios(snapshot)
    assert code is NagiosCode.WARNING and "last stop failed at drbd" in line


def test_text_never_breaks_the_plugin_line_and_odd_labels_are_quoted() -> None:
    weird = Step("a b'c", Status(State.UNKNOWN, "probe failed: x | y\nsecond line"), 0.5)
    code, line = monitor.nagios(Snapshot("node1", StatusExit.UNKNOWN, (weird,)))
    assert code is NagiosCode.UNKNOWN
    assert "\n" not in line
    _, text, perf = parse_line(line)
    assert "x / y second line" in text
    assert perf == {"'a b''c_probe'": "0.5000s;;;0"}


def test_label_values_are_escaped_and_read_back() -> None:
    odd = 'a"b\\c\nd'
    snapshot = Snapshot("node1", StatusExit.ALL_UP, (step(odd, State.UP),))
    found = metrics(monitor.prometheus(snapshot))
    assert sample(found, "hanode_up", step=odd) == 1
    assert sample(found, "hanode_step_probe_seconds", step=odd) == 0.0123


def test_switchover_from_stop_and_start_needs_both() -> None:
    start, stop = run_report("start", ok=True), run_report("stop", ok=False)
    assert monitor.last_switchover(None, start, None) is None
    switchover = monitor.last_switchover(None, start, stop)
    assert switchover == monitor.Switchover(5.0, 1_800_000_102.5, False, "stop+start")
    broken = {"seconds": "soon", "finished_at": 1.0, "ok": True}  # not a number: ignored
    assert monitor.last_switchover(broken, start, stop) == switchover
