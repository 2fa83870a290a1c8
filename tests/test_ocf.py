"""The OCF resource agent ocf:hanode:hanode (hanode.ocf), run as Pacemaker runs it: the
agent file of the package (ocf/hanode) as a child process, its parameters in OCF_RESKEY_*.
Real configs on real files (a [links] config into /dev/shm, a real mount point), real
exit codes, the meta-data validated by xmllint against resource-agents' own DTD as user
nobody, and resource-agents' ocf-tester run on it (start, stop, monitor for real)."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest
from helpers import ROOT, SHM, links_config, missing, run_hanode
from mountns import in_mount_namespace

from hanode import config as hconfig
from hanode import ocf
from hanode.errors import StatusExit
from hanode.ocf import OcfExit
from hanode.resources import kinds

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
) -> subprocess.CompletedProcess[str]:
    """The agent's ``action`` as pacemaker-execd runs it (a recurring op unless
    ``interval`` is 0: the probe); the lock and reports in ``run_dir``."""
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
        [str(AGENT), action],
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
