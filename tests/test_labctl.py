"""labctl on a host without the lab's tools: one line that names the fix, never a traceback.

Nothing here starts a VM, touches the network or installs a package: the tools are hidden
from labctl's PATH, HANODE_LAB_NO_INSTALL=1 forbids the install, and tests/setup-host and
apt-get are stand-ins where an install is what is tested.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import PYTHON, missing

LAB = Path(__file__).resolve().parent / "lab"
LABCTL = LAB / "labctl"
sys.path.insert(0, str(LAB))

from hanodelab import cli, image, lab, net, tools  # noqa: E402

# A tool check, then one of these verbs would change the lab: none of them may get there.
VERBS = [
    (["up"], "mmdebstrap"),
    (["images"], "mmdebstrap"),
    (["demo"], "mmdebstrap"),
    (["boot", "node1"], "qemu-system-x86_64"),
    (["reset"], "qemu-system-x86_64"),
    (["client", "true"], "ip"),
    (["down"], "ip"),
]


@pytest.fixture
def bare_path(tmp_path: Path) -> Path:
    """A PATH directory holding python3 only: every tool the lab runs is hidden."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "python3").symlink_to(PYTHON)
    return folder


def labctl(arguments: list[str], path: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(path), "HANODE_LAB_NO_INSTALL": "1", "LC_ALL": "C.UTF-8"}
    return subprocess.run(
        [str(LABCTL), *arguments], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("labctl: error: ")
    assert done.returncode == 2
    return lines[0]


@pytest.mark.root
@pytest.mark.parametrize(("arguments", "first_tool"), VERBS)
def test_hidden_tools_are_one_line_naming_the_fix(
    arguments: list[str], first_tool: str, bare_path: Path
) -> None:
    done = labctl(arguments, bare_path)
    line = one_error_line(done)
    assert done.stdout == ""
    assert first_tool in line
    # Installed but off PATH: fix PATH; not installed at all: install it.
    assert "to PATH" in line or ("tests/setup-host lab" in line and "apt-get install" in line)


@pytest.mark.root
def test_status_needs_no_tool(bare_path: Path) -> None:
    done = labctl(["status"], bare_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert set(json.loads(done.stdout)) >= {"namespace", "node1", "node2"}


@pytest.mark.root
def test_not_root_is_one_line() -> None:
    if shutil.which("setpriv") is None:
        missing("setpriv (util-linux) is not installed")
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(LABCTL), "up"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "needs root" in one_error_line(done)


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty PATH and an empty system folder: no tool anywhere; as root, install allowed.
    Returns the system folder (where a stand-in tests/setup-host puts what it installs)."""
    system = tmp_path / "system"
    system.mkdir()
    (tmp_path / "path").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    monkeypatch.delenv(tools.NO_INSTALL, raising=False)
    monkeypatch.setattr(tools, "SYSTEM_PATH", str(system))
    monkeypatch.setattr(tools, "SETUP_HOST", tmp_path / "no-setup-host-here")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    return system


def stand_in_setup_host(folder: Path, body: str) -> Path:
    """A tests/setup-host stand-in: records its arguments, then runs body (Python)."""
    script = folder / "setup-host"
    script.write_text(
        "#!/usr/bin/python3\nimport pathlib, sys\n"
        f"pathlib.Path({str(folder / 'ran')!r}).write_text(' '.join(sys.argv[1:]))\n{body}\n"
    )
    script.chmod(0o755)
    return script


def test_present_tools_cost_no_subprocess(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in tools.LAB:
        (tmp_path / name).touch(mode=0o755)
    monkeypatch.setenv("PATH", str(tmp_path))

    def no_subprocess(*args: object, **kwargs: object) -> None:
        raise AssertionError("require ran a subprocess though every tool is there")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    tools.require(tools.LAB)


@pytest.mark.parametrize(
    ("euid", "no_install", "reason"),
    [(1000, "", "(not root)"), (0, "1", "(HANODE_LAB_NO_INSTALL is set)")],
)
def test_missing_and_not_installable(
    host: Path, monkeypatch: pytest.MonkeyPatch, euid: int, no_install: str, reason: str
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    if no_install:
        monkeypatch.setenv(tools.NO_INSTALL, no_install)
    setup = stand_in_setup_host(host.parent, "")
    monkeypatch.setattr(tools, "SETUP_HOST", setup)
    with pytest.raises(tools.ToolError) as caught:
        tools.require(tools.LAB)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("mmdebstrap, mke2fs, qemu-img, qemu-system-x86_64, ip, ")
    assert f"are missing and could not be installed {reason}: run tests/setup-host lab" in message
    assert message.endswith(
        "apt-get install mmdebstrap e2fsprogs qemu-utils qemu-system-x86 iproute2 procps "
        "dpkg-dev debhelper postgresql-client"
    )
    assert not (host.parent / "ran").exists()  # no install tried


def test_install_that_fails_is_one_line(host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # e.g. no mirror: apt-get fails, so does tests/setup-host
    monkeypatch.setattr(tools, "SETUP_HOST", stand_in_setup_host(host.parent, "sys.exit(100)"))
    with pytest.raises(tools.ToolError) as caught:
        tools.require(tools.NET)
    assert str(caught.value) == (
        "ip is missing and could not be installed (tests/setup-host lab failed with exit status"
        " 100): run tests/setup-host lab as root, or apt-get install iproute2"
    )
    assert (host.parent / "ran").read_text() == "lab"


def test_install_then_go_on(host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = host / "ip"
    make = f"pathlib.Path({str(tool)!r}).touch(mode=0o755)"
    monkeypatch.setattr(tools, "SETUP_HOST", stand_in_setup_host(host.parent, make))
    monkeypatch.setenv("PATH", f"{os.environ['PATH']}:{host}")
    tools.require(tools.NET)
    assert (host.parent / "ran").read_text() == "lab"


def test_installed_but_off_path(host: Path) -> None:
    (host / "ip").touch(mode=0o755)
    with pytest.raises(tools.ToolError) as caught:
        tools.require(tools.NET)
    assert str(caught.value) == f"ip is not on PATH but installed in {host}: add {host} to PATH"


def test_up_and_demo_stop_before_touching_the_lab(
    host: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(tools.NO_INSTALL, "1")
    touched: list[str] = []
    for module, name in [(lab, "down"), (lab, "load_state"), (image, "ensure"), (net, "up")]:
        monkeypatch.setattr(module, name, lambda *a, _n=name, **k: touched.append(_n))
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    assert cli.main(["up"]) == 2
    assert cli.main(["demo"]) == 2
    with pytest.raises(tools.ToolError):
        lab.up()  # the lab's pytest fixture calls it directly
    assert touched == []
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert all(line.startswith("labctl: error: mmdebstrap, ") for line in lines)


@pytest.mark.parametrize(
    ("program", "line"),
    [
        (
            "qemu-img",
            "labctl: error: qemu-img is missing: run tests/setup-host lab as root,"
            " or apt-get install qemu-utils",
        ),
        (
            "hanode-lab-no-such-program",
            "labctl: error: hanode-lab-no-such-program is missing (it could not be run):"
            " install it, then run labctl again",
        ),
    ],
)
def test_a_program_that_cannot_start_is_one_line(
    program: str,
    line: str,
    host: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Past the tool check (say PATH changed): subprocess's FileNotFoundError, anywhere.
    monkeypatch.setattr(tools, "require", lambda commands: None)
    monkeypatch.setattr(net, "exists", lambda: True)
    monkeypatch.setattr(net, "client_argv", lambda argv: [program, *argv])
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    assert cli.main(["client", "true"]) == 2
    assert capsys.readouterr().err == line + "\n"


def test_a_missing_file_is_not_a_missing_program(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        (tmp_path / "absent").read_text()
    assert not tools.could_not_run(caught.value)


def test_setup_host_lab_installs_every_package_labctl_names(tmp_path: Path) -> None:
    # Stand-ins: dpkg-query finds nothing installed, apt-get records what it is asked for.
    record = tmp_path / "asked"
    (tmp_path / "dpkg-query").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "apt-get").write_text(f'#!/bin/sh\n[ "$1" = update ] || echo "$@" >{record}\n')
    for stand_in in ("dpkg-query", "apt-get"):
        (tmp_path / stand_in).chmod(0o755)
    done = subprocess.run(
        [str(tools.SETUP_HOST), "lab"],
        env={"PATH": f"{tmp_path}:{tools.SYSTEM_PATH}"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    # As root it "installs" them; otherwise it names them all as missing.
    named = record.read_text() if record.exists() else done.stderr
    assert set(tools.PACKAGES.values()) <= set(named.split())


def test_an_image_build_under_way_is_waited_for_then_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`labctl images` (tests/run starts it beside the host tiers) holds the profile's lock
    while it builds: the lab's own ensure() waits on it and takes the image it built,
    instead of building it a second time."""
    monkeypatch.setattr(image, "CACHE", tmp_path)
    monkeypatch.setattr(image, "recipe_hash", lambda profile=image.PLAIN: "0123")
    builds: list[str] = []
    monkeypatch.setattr(image, "_build", lambda profile, keep: builds.append(profile))
    folder = image.image_dir(image.PLAIN)
    with (tmp_path / ".image-lock").open("w") as other:  # the build under way
        fcntl.flock(other, fcntl.LOCK_EX)
        result: list[object] = []
        waiter = threading.Thread(target=lambda: result.append(image.ensure(image.PLAIN)))
        waiter.start()
        waiter.join(1.0)
        assert waiter.is_alive(), "ensure() did not wait for the build under way"
        folder.mkdir()
        (folder / "complete").write_text("packages\n")
    waiter.join(10)
    assert not waiter.is_alive()
    assert builds == []
    [(built_image, seconds)] = result  # type: ignore[misc]
    assert seconds is None
    assert built_image == image.cached(image.PLAIN)


def test_a_missing_image_is_built_under_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(image, "CACHE", tmp_path)
    monkeypatch.setattr(image, "recipe_hash", lambda profile=image.PLAIN: "0123")

    def build(profile: str, keep: frozenset[Path]) -> tuple[None, float]:
        with (
            (tmp_path / ".image-pacemaker-lock").open("w") as probe,
            pytest.raises(BlockingIOError),
        ):
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return None, 1.5

    monkeypatch.setattr(image, "_build", build)
    assert image.ensure("pacemaker") == (None, 1.5)


def test_the_guests_cpus_are_one_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from hanodelab import vm

    monkeypatch.delenv(vm.CPUS_VARIABLE, raising=False)
    assert vm.guest_cpus() == 1
    monkeypatch.setenv(vm.CPUS_VARIABLE, "2")
    assert vm.guest_cpus() == 2
    for wrong in ("0", "5", "two", ""):
        monkeypatch.setenv(vm.CPUS_VARIABLE, wrong)
        with pytest.raises(ValueError, match="HANODE_LAB_CPUS"):
            vm.guest_cpus()
