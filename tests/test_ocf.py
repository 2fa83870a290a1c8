"""The OCF resource agent ocf:hanode:hanode (hanode.ocf), run as Pacemaker runs it: the
agent file of the package (ocf/hanode) as a child process, its parameters in OCF_RESKEY_*.
Real configs on real files (a [links] config into /dev/shm, a real mount point), real
exit codes, the meta-data validated by xmllint against resource-agents' own DTD as user
nobody, and resource-agents' ocf-tester run on it (start, stop, monitor for real)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from drbd_standin import StandIn
from helpers import PYTHON, ROOT, SHM, links_config, missing, run_hanode
from mountns import in_mount_namespace

from hanode import config as hconfig
from hanode import ocf
from hanode.errors import StatusExit
from hanode.ocf import OcfExit
from hanode.resources import kinds
from hanode.resources.drbd import CLONE_FIX
from hanode.run import SYSTEM_PATH

AGENT = ROOT / "ocf" / "hanode"
DTD_DIR = Path("/usr/share/resource-agents")  # resource-agents: ra-api-1.dtd, ocf-tester
REASON = "ocf-exit-reason:"


def needs(program: str) -> str:
    found = shutil.which(program, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        missing(f"{program} is not installed (tests/setup-host installs it)")
    return found


def agent(
    action: str,
    config: Path,
    run_dir: Path,
    *,
    interval: int = 10000,
    level: int | None = None,
    env: Mapping[str, str] | None = None,
    command: Sequence[str] = (str(AGENT),),
) -> subprocess.CompletedProcess[str]:
    """The agent's ``action`` as pacemaker-execd runs it (a recurring op unless
    ``interval`` is 0: the probe); the lock and reports in ``run_dir``; ``command`` runs
    the agent (its action appended)."""
    variables = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(ROOT),
        "HANODE_NO_JOURNAL": "1",
        "HANODE_RUN_DIR": str(run_dir),
        "OCF_ROOT": "/usr/lib/ocf",
        "OCF_RESOURCE_INSTANCE": "hanode",
        "OCF_RESKEY_config": str(config),
        "OCF_RESKEY_CRM_meta_interval": str(interval),
        "OCF_RESKEY_CRM_meta_timeout": "20000",
        **(env or {}),
    }
    if level is not None:
        variables["OCF_CHECK_LEVEL"] = str(level)
    return subprocess.run(
        [*command, action],
        capture_output=True,
        text=True,
        env=variables,
        timeout=120,
        check=False,
    )


def reasons(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line[len(REASON) :] for line in done.stderr.splitlines() if line.startswith(REASON)]


# -- meta-data -----------------------------------------------------------------------------


@pytest.mark.root
def test_meta_data_as_nobody_validates_against_debian12s_dtd(tmp_path: Path) -> None:
    xmllint = needs("xmllint")
    if not (DTD_DIR / "ra-api-1.dtd").is_file():
        missing("resource-agents is not installed (tests/setup-host installs it)")
    # a config only root may read: meta-data must not need it (Pacemaker runs it as anyone)
    secret = tmp_path / "hanode.toml"
    secret.write_text("[links]\n")
    secret.chmod(0o600)
    done = subprocess.run(
        [
            *("runuser", "-u", "nobody", "--", "env", f"PYTHONPATH={ROOT}"),
            *(f"OCF_RESKEY_config={secret}", str(AGENT), "meta-data"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout == ocf.METADATA
    # as ocf-tester validates it: from the DTD's directory, the DOCTYPE naming the file
    lint = subprocess.run(
        [xmllint, "--noout", "--valid", "-"],
        input=done.stdout,
        capture_output=True,
        text=True,
        cwd=DTD_DIR,
        timeout=60,
        check=False,
    )
    assert lint.returncode == 0, lint.stderr
    broken = done.stdout.replace('<action name="start"', '<action name="reload-agent"')
    lint = subprocess.run(
        [xmllint, "--noout", "--valid", "-"], input=broken, capture_output=True, text=True,
        cwd=DTD_DIR, timeout=60, check=False,
    )  # fmt: skip
    assert lint.returncode != 0, "the old DTD must reject a newer action: the check can fail"


def test_meta_data_timeouts_cover_the_shipped_examples_budgets() -> None:
    shipped = ROOT / "etc" / "hanode" / "hanode.toml"
    parsed = hconfig.parse(re.sub(r"^# ", "", shipped.read_text(), flags=re.M), shipped)
    settings = [(kind, parsed.settings[kind.section]) for kind in kinds()]
    start = sum(kind.start_budget(value) for kind, value in settings)
    stop = sum(kind.stop_budget(value) for kind, value in settings)
    assert stop <= ocf.STOP_TIMEOUT
    assert start + stop <= ocf.START_TIMEOUT  # a failed start rolls back within it
    assert f'<action name="start" timeout="{ocf.START_TIMEOUT}s"/>' in ocf.METADATA


def test_unknown_action_and_no_action(capsys: pytest.CaptureFixture[str]) -> None:
    assert ocf.main(["migrate_to"]) == OcfExit.ERR_UNIMPLEMENTED
    assert capsys.readouterr().err == "ocf-exit-reason:action 'migrate_to' is not implemented\n"
    assert ocf.main([]) == OcfExit.ERR_ARGS
    assert capsys.readouterr().err.startswith("ocf-exit-reason:expected one action, got 0")


# -- every action on a real node -----------------------------------------------------------


@pytest.mark.root
def test_every_action_on_a_links_node(tmp_path: Path, shared_memory: Path) -> None:
    config = links_config(tmp_path, SHM, shared_memory)
    run_dir = tmp_path / "run"
    run_dir.mkdir()

    def code(action: str, *, interval: int = 10000, level: int | None = None) -> int:
        return agent(action, config, run_dir, interval=interval, level=level).returncode

    assert code("validate-all") == OcfExit.SUCCESS
    assert code("monitor", interval=0) == OcfExit.NOT_RUNNING  # the probe
    assert code("monitor") == OcfExit.NOT_RUNNING
    assert code("stop") == OcfExit.SUCCESS  # a stopped resource stops
    assert code("start") == OcfExit.SUCCESS
    assert (tmp_path / "path0").resolve() == shared_memory / "data0"
    assert code("monitor") == OcfExit.SUCCESS
    assert code("monitor", interval=0) == OcfExit.SUCCESS
    assert code("monitor", level=10) == OcfExit.SUCCESS
    # the deep check's file is gone again
    assert not [name for name in os.listdir(SHM) if name.startswith(".hanode-ocf-monitor")]
    assert code("start") == OcfExit.SUCCESS  # a started resource starts
    # the same engine as the CLI: its reports, its status
    status = run_hanode("-c", str(config), "status", run_dir=run_dir)
    assert status.returncode == StatusExit.ALL_UP, status.stdout + status.stderr
    assert "last start" in status.stdout
    assert code("stop") == OcfExit.SUCCESS
    assert (tmp_path / "path0").is_dir() and not (tmp_path / "path0").is_symlink()
    assert code("monitor") == OcfExit.NOT_RUNNING
    assert code("stop") == OcfExit.SUCCESS


@pytest.mark.root
def test_a_half_started_node_monitors_failed(tmp_path: Path, shared_memory: Path) -> None:
    config = links_config(tmp_path, SHM, shared_memory, count=2)
    assert agent("start", config, tmp_path).returncode == OcfExit.SUCCESS
    (tmp_path / "path1").unlink()  # one link put back by hand: the step is half up
    (tmp_path / "path1.drbdlinks").rename(tmp_path / "path1")
    done = agent("monitor", config, tmp_path)
    assert done.returncode == OcfExit.ERR_GENERIC
    assert reasons(done)[0].startswith("partly up: links partial"), done.stderr


@pytest.mark.root
def test_the_lock_is_the_clis(tmp_path: Path, shared_memory: Path) -> None:
    config = links_config(tmp_path, SHM, shared_memory)
    lock = os.open(tmp_path / "hanode.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(lock, b"4242\n")
        fcntl.flock(lock, fcntl.LOCK_EX)  # as a running `hanode start` holds it
        done = agent("start", config, tmp_path)
    finally:
        os.close(lock)
    assert done.returncode == OcfExit.ERR_GENERIC
    assert reasons(done) == [
        f"refused: another hanode is running (pid 4242, lock {tmp_path / 'hanode.lock'}) "
        "(wait for it to finish, then try again)"
    ]
    assert not (tmp_path / "path0").is_symlink()


@pytest.mark.root
def test_deep_monitor_finds_a_read_only_filesystem(tmp_path: Path) -> None:
    srv = tmp_path / "srv"
    srv.mkdir()

    def scenario() -> None:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "hanode-test", str(srv)], check=True
        )
        config = links_config(tmp_path, srv, srv)
        assert agent("start", config, tmp_path).returncode == OcfExit.SUCCESS
        assert agent("monitor", config, tmp_path, level=10).returncode == OcfExit.SUCCESS
        subprocess.run(["mount", "-o", "remount,ro", str(srv)], check=True)
        assert agent("monitor", config, tmp_path).returncode == OcfExit.SUCCESS  # level 0
        done = agent("monitor", config, tmp_path, level=10)
        assert done.returncode == OcfExit.ERR_GENERIC, done.stderr
        assert reasons(done) == [f"{srv} is not writable: Read-only file system"]

    in_mount_namespace(scenario)


# -- configuration and installation problems ------------------------------------------------


@pytest.mark.root
def test_missing_config_is_not_running_for_a_probe_else_not_configured(tmp_path: Path) -> None:
    config = tmp_path / "absent.toml"
    assert agent("monitor", config, tmp_path, interval=0).returncode == OcfExit.NOT_RUNNING
    for action in ("monitor", "start", "stop", "validate-all"):
        done = agent(action, config, tmp_path)
        assert done.returncode == OcfExit.ERR_CONFIGURED, action
        assert reasons(done) == [
            f"{config}: no such file (set the resource's config parameter to hanode.toml)"
        ]


@pytest.mark.root
def test_validate_all_on_a_broken_config_is_not_configured(tmp_path: Path) -> None:
    config = tmp_path / "hanode.toml"
    config.write_text('[links]\nmountpoint = "/srv"\nlinks = 3\n')
    done = agent("validate-all", config, tmp_path)
    assert done.returncode == OcfExit.ERR_CONFIGURED
    (reason,) = reasons(done)
    assert reason.startswith(f"{config}:3: "), reason
    config.chmod(0o666)  # unsafe: anyone could make root run anything
    done = agent("validate-all", config, tmp_path)
    assert done.returncode == OcfExit.ERR_CONFIGURED
    assert "writable by group or others" in reasons(done)[0]


@pytest.mark.root
def test_a_node_without_drbd_utils_is_not_installed(tmp_path: Path) -> None:
    # hanode's commands from an empty directory of root's: drbdadm is not there
    empty = tmp_path / "bin"
    empty.mkdir()
    config = tmp_path / "hanode.toml"
    config.write_text('[drbd]\nresource = "r0"\n')
    env = {"HANODE_PATH": str(empty)}
    done = agent("validate-all", config, tmp_path, env=env)
    assert done.returncode == OcfExit.ERR_INSTALLED, done.stderr
    assert reasons(done) == ["drbd: drbdadm not found (apt install drbd-utils)"]
    probe = agent("monitor", config, tmp_path, interval=0, env=env)
    assert probe.returncode == OcfExit.ERR_INSTALLED, probe.stderr
    # a recurring monitor cannot tell either: failed, not "not installed"
    assert agent("monitor", config, tmp_path, env=env).returncode == OcfExit.ERR_GENERIC


# -- resource-agents' own tester -------------------------------------------------------------


@pytest.mark.root
def test_ocf_tester_passes(tmp_path: Path, shared_memory: Path) -> None:
    tester = needs("ocf-tester")
    needs("xmllint")
    config = links_config(tmp_path, SHM, shared_memory)
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(ROOT),
        "HANODE_NO_JOURNAL": "1",
        "HANODE_RUN_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [tester, "-n", "hanode", "-o", f"config={config}", str(AGENT)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{AGENT} passed all tests" in done.stdout
    # it started and stopped for real: the engine's reports say so
    assert (tmp_path / "hanode" / "last-start.json").is_file()
    assert (tmp_path / "hanode" / "last-stop.json").is_file()
    assert (tmp_path / "path0").is_dir() and not (tmp_path / "path0").is_symlink()


# -- the drbd parameter: hanode promotes, or an ocf:linbit:drbd clone does ----------------------

# The agent as pacemaker-execd runs it, on the DRBD stand-in (tests/drbd_standin: captures of
# real DRBD 8.4.11): in a UTS namespace named node1 (drbdadm's host section is found by
# `uname -n`), /proc/drbd read from the stand-in's, drbdadm and drbdsetup first on HANODE_PATH.
ON_STANDIN = (
    "import socket, sys\n"
    "socket.sethostname('node1')\n"
    "from hanode.resources import drbd\n"
    "drbd.PROC_DRBD = sys.argv[1]\n"
    "from hanode.ocf import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


@pytest.fixture
def standin(tmp_path: Path) -> StandIn:
    node = StandIn(tmp_path / "node1", "node1")
    node.peer(up=True)  # the other node is up: `drbdadm up` connects
    return node


def standin_agent(
    standin: StandIn,
    action: str,
    config: Path,
    run_dir: Path,
    *,
    drbd: str = "clone",
    interval: int = 10000,
) -> subprocess.CompletedProcess[str]:
    """The agent's ``action`` with ``drbd``, on ``standin``'s DRBD."""
    env = {"HANODE_PATH": f"{standin.bin_dir}:{SYSTEM_PATH}", "OCF_RESKEY_drbd": drbd}
    command = ("unshare", "--uts", "--", PYTHON, "-c", ON_STANDIN, str(standin.proc_path))
    return agent(action, config, run_dir, interval=interval, env=env, command=command)


def drbdadm(standin: StandIn, verb: str) -> None:
    """What the clone's ocf:linbit:drbd does: `drbdadm VERB srv`, on the stand-in."""
    subprocess.run([str(standin.bin_dir / "drbdadm"), verb, "srv"], check=True, timeout=60)


def changes(standin: StandIn) -> list[str]:
    """The stand-in's commands that change DRBD (queries left out)."""
    changing = ("up", "down", "primary", "secondary")
    return [call for call in standin.calls() if call.split()[1] in changing]


def drbd_and_links(tmp_path: Path, shared_memory: Path, drbd: str = "") -> Path:
    """A node with [drbd] resource srv (plus ``drbd``'s lines) and one link."""
    config = links_config(tmp_path, SHM, shared_memory)
    config.write_text(f'[drbd]\nresource = "srv"\n{drbd}' + config.read_text())
    return config


def test_drbd_mode_is_hanode_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCF_RESKEY_drbd", raising=False)
    assert ocf.drbd_mode() is ocf.DrbdMode.HANODE
    for value, mode in (("", ocf.DrbdMode.HANODE), ("hanode", ocf.DrbdMode.HANODE),
                        ("clone", ocf.DrbdMode.CLONE)):  # fmt: skip
        monkeypatch.setenv("OCF_RESKEY_drbd", value)
        assert ocf.drbd_mode() is mode
    assert '<parameter name="drbd" unique="0" required="0">' in ocf.METADATA
    assert '<content type="string" default="hanode"/>' in ocf.METADATA


@pytest.mark.root
def test_another_drbd_value_is_not_configured(tmp_path: Path, shared_memory: Path) -> None:
    config = links_config(tmp_path, SHM, shared_memory)
    env = {"OCF_RESKEY_drbd": "Clone"}
    for action, interval in (("validate-all", 0), ("monitor", 0), ("start", 0), ("stop", 0)):
        done = agent(action, config, tmp_path, interval=interval, env=env)
        assert done.returncode == OcfExit.ERR_CONFIGURED, (action, done.stderr)
        assert reasons(done) == [
            "drbd='Clone' is not a DRBD mode: set the resource's drbd parameter to hanode "
            "(hanode promotes DRBD) or clone (an ocf:linbit:drbd clone does)"
        ]
    assert not (tmp_path / "path0").is_symlink()  # the start touched nothing
    assert agent("start", config, tmp_path, env={"OCF_RESKEY_drbd": "hanode"}).returncode == 0


@pytest.mark.root
def test_clone_needs_drbd_and_another_section(tmp_path: Path, shared_memory: Path) -> None:
    env = {"OCF_RESKEY_drbd": "clone"}
    links_only = links_config(tmp_path, SHM, shared_memory)
    done = agent("validate-all", links_only, tmp_path, env=env)
    assert done.returncode == OcfExit.ERR_CONFIGURED
    assert reasons(done) == [
        f"drbd=clone, but {links_only} has no [drbd] section: the agent cannot check that the "
        "clone's resource is Primary before it mounts (add [drbd] resource = NAME)"
    ]
    drbd_only = tmp_path / "drbd-only.toml"
    drbd_only.write_text('[drbd]\nresource = "srv"\n')
    done = agent("start", drbd_only, tmp_path, env=env)
    assert done.returncode == OcfExit.ERR_CONFIGURED
    assert reasons(done)[0].startswith(f"drbd=clone, but {drbd_only} configures nothing besides")


@pytest.mark.root
def test_clone_start_refuses_unless_drbd_is_primary_here(
    tmp_path: Path, shared_memory: Path, standin: StandIn
) -> None:
    config = drbd_and_links(tmp_path, shared_memory)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    fix = f"({CLONE_FIX})"
    done = standin_agent(standin, "start", config, run_dir)  # DRBD not up at all
    assert done.returncode == OcfExit.ERR_GENERIC, done.stderr
    assert reasons(done) == [f"refused: start refused at drbd: DRBD srv is not up here {fix}"]
    drbdadm(standin, "up")  # the clone started: Secondary, connected
    assert standin.view() == ("Secondary", "Secondary", "Connected", "UpToDate", "UpToDate")
    done = standin_agent(standin, "start", config, run_dir)
    assert done.returncode == OcfExit.ERR_GENERIC, done.stderr
    assert reasons(done) == [f"refused: start refused at drbd: DRBD srv is Secondary here {fix}"]
    assert reasons(done)[0] == (
        "refused: start refused at drbd: DRBD srv is Secondary here (order this resource "
        "after the promotion of its ocf:linbit:drbd clone and colocate it with the Promoted role)"
    )
    # nothing touched: no link, DRBD as the clone left it, only the clone's own command ran
    assert not (tmp_path / "path0").is_symlink()
    assert changes(standin) == ["drbdadm up srv"]
    assert standin.view() == ("Secondary", "Secondary", "Connected", "UpToDate", "UpToDate")
    # the hanode mode on the same node does promote: the parameter is what keeps it out
    assert standin_agent(standin, "monitor", config, run_dir, drbd="hanode").returncode == 7
    assert standin.synthesized() == []  # every DRBD answer was a capture of real DRBD


@pytest.mark.root
def test_clone_runs_the_rest_and_leaves_drbd_to_the_clone(
    tmp_path: Path, shared_memory: Path, standin: StandIn
) -> None:
    # become-primary-on names no host of srv: an error for hanode's promotion, none for
    # the clone's (validate-all checks of [drbd] only what the clone mode uses)
    config = drbd_and_links(tmp_path, shared_memory, 'become-primary-on = "node3"\n')
    run_dir = tmp_path / "run"
    run_dir.mkdir()

    def code(action: str, *, drbd: str = "clone", interval: int = 10000) -> int:
        done = standin_agent(standin, action, config, run_dir, drbd=drbd, interval=interval)
        return done.returncode

    done = standin_agent(standin, "validate-all", config, run_dir, drbd="hanode")
    assert done.returncode == OcfExit.ERR_CONFIGURED
    assert reasons(done) == [
        "drbd: become-primary-on node3 is not a host of srv (hosts: node1, node2)"
    ]
    assert code("validate-all") == OcfExit.SUCCESS
    drbdadm(standin, "up")
    drbdadm(standin, "primary")  # the clone promoted this node
    # DRBD Primary and the rest down: not running (for the hanode mode: partly up)
    assert code("monitor", interval=0) == OcfExit.NOT_RUNNING
    assert code("monitor") == OcfExit.NOT_RUNNING
    assert code("monitor", drbd="hanode") == OcfExit.ERR_GENERIC
    assert code("start") == OcfExit.SUCCESS
    assert (tmp_path / "path0").resolve() == shared_memory / "data0"
    report = (run_dir / "hanode" / "last-start.json").read_text()
    assert [(step["step"], step["result"]) for step in json.loads(report)["steps"]] == [
        ("drbd", "skipped"),  # checked: Primary here
        ("links", "done"),
    ]
    assert code("monitor") == OcfExit.SUCCESS
    assert code("start") == OcfExit.SUCCESS
    assert code("stop") == OcfExit.SUCCESS
    assert (tmp_path / "path0").is_dir() and not (tmp_path / "path0").is_symlink()
    # the stop did not demote: that is the clone's demote, after this resource stopped
    assert standin.view() == ("Primary", "Secondary", "Connected", "UpToDate", "UpToDate")
    assert changes(standin) == ["drbdadm up srv", "drbdadm primary srv"]
    assert code("monitor") == OcfExit.NOT_RUNNING
    assert code("stop") == OcfExit.SUCCESS
    drbdadm(standin, "secondary")  # the clone demotes, then stops DRBD...
    drbdadm(standin, "down")
    assert code("stop") == OcfExit.SUCCESS  # ...and a stopped resource still stops
    assert code("monitor") == OcfExit.NOT_RUNNING
    assert changes(standin) == [
        f"drbdadm {verb} srv" for verb in ("up", "primary", "secondary", "down")
    ]
    assert standin.synthesized() == []
