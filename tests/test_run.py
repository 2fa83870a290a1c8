"""hanode.run: commands come from the fixed system PATH only (or a HANODE_PATH only root
can change), and a child spawned as a SIGTERM lands never outlives the run that spawned it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import PYTHON, ROOT, missing, wait_for

from hanode.engine import Engine
from hanode.errors import Exit, HanodeError
from hanode.resources import Context, Resource, State, Status
from hanode.run import CommandError, clean_env, run

# Where hanode must look every command up, whatever the caller's PATH (not /usr/local:
# Debian's group staff may write there).
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
NOBODY = 65534  # a user that is not root (Debian's nobody)


def tool(directory: Path, name: str, record: Path) -> None:
    """An executable ``name`` in ``directory`` that notes in ``record`` that it ran."""
    directory.mkdir(exist_ok=True)
    script = directory / name
    script.write_text(f"#!/bin/sh\necho {name} >> {record}\necho planted\n")
    script.chmod(0o755)


@pytest.fixture(autouse=True)
def no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HANODE_PATH", raising=False)


# -- the fixed PATH ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["findmnt", "drbdadm", "hanode-no-such-tool"])
def test_a_command_planted_in_the_callers_path_never_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    planted, record = tmp_path / "planted", tmp_path / "ran"
    tool(planted, name, record)
    planted.chmod(0o777)  # anyone's: what an admin's ~/bin or a writable PATH entry gives
    monkeypatch.setenv("PATH", f"{planted}:{os.environ['PATH']}")
    try:
        result = run([name, "--version"], check=False, timeout=10)
    except CommandError as err:  # not on the system PATH here (drbd-utils is not installed)
        assert f"could not be run: not found in {SYSTEM_PATH}" in str(err)
    else:
        assert "planted" not in result.stdout  # the system's own ran
    assert not record.exists()


def test_children_get_the_fixed_path_not_the_callers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"/tmp:{os.environ['PATH']}")
    assert run(["sh", "-c", 'printf %s "$PATH"']).stdout == SYSTEM_PATH
    assert clean_env({"PATH": "/tmp"})["PATH"] == SYSTEM_PATH  # no caller can widen it


def test_a_child_reads_the_given_text_else_nothing() -> None:
    """stdin: the text given (`ip -batch -` reads its commands so), else /dev/null."""
    assert run(["cat"], stdin="address show\n").stdout == "address show\n"
    assert run(["cat"]).stdout == ""  # /dev/null: at its end at once, never a terminal


def test_hanode_path_of_root_owned_directories_is_honoured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    safe, record = tmp_path / "safe", tmp_path / "ran"
    tool(safe, "hanode-test-tool", record)
    monkeypatch.setenv("HANODE_PATH", f"{safe}:{SYSTEM_PATH}")
    assert run(["hanode-test-tool"]).stdout == "planted\n"
    assert run(["sh", "-c", 'printf %s "$PATH"']).stdout == f"{safe}:{SYSTEM_PATH}"
    assert record.read_text() == "hanode-test-tool\n"


def _writable_by_others(directory: Path) -> None:
    directory.chmod(0o777)


def _writable_by_a_group(directory: Path) -> None:
    directory.chmod(0o775)
    os.chown(directory, 0, 50)  # staff: not only root's group


def _owned_by_nobody(directory: Path) -> None:
    os.chown(directory, NOBODY, NOBODY)


def _behind_a_symlink(directory: Path) -> None:
    real = directory.with_name("real")
    directory.rename(real)
    directory.symlink_to(real)


def _inside_a_directory_others_can_write(directory: Path) -> None:
    directory.parent.chmod(0o777)  # anyone could swap `safe` for a directory of theirs


@pytest.mark.parametrize(
    ("make_unsafe", "why", "needs_root"),
    [
        (_writable_by_others, "is writable by every user", False),
        (_writable_by_a_group, "is writable by group staff (50)", True),
        (_owned_by_nobody, "is owned by nobody (65534)", True),
        (_behind_a_symlink, "is a symlink", False),
        (_inside_a_directory_others_can_write, "is writable by every user", False),
    ],
)
def test_an_unsafe_hanode_path_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_unsafe: Any, why: str, needs_root: bool
) -> None:
    if needs_root and os.geteuid() != 0:
        missing("needs root to give the directory away")
    work = tmp_path / "work"
    work.mkdir()
    safe, record = work / "safe", tmp_path / "ran"
    tool(safe, "hanode-test-tool", record)
    make_unsafe(safe)
    monkeypatch.setenv("HANODE_PATH", f"{safe}:{SYSTEM_PATH}")
    with pytest.raises(HanodeError) as caught:
        run(["hanode-test-tool"])
    message = str(caught.value)
    assert message.startswith("HANODE_PATH: unsafe directory "), message
    assert why in message and "\n" not in message
    assert caught.value.code == Exit.REFUSED
    assert not record.exists()


def test_the_cli_refuses_an_unsafe_hanode_path_before_anything_else(tmp_path: Path) -> None:
    planted = tmp_path / "planted"
    planted.mkdir()
    planted.chmod(0o777)
    env = {
        "PATH": os.environ["PATH"],
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(ROOT),
        "HANODE_NO_JOURNAL": "1",
        "HANODE_PATH": str(planted),
    }
    done = subprocess.run(
        [PYTHON, "-m", "hanode", "-c", str(tmp_path / "none.toml"), "status"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == Exit.REFUSED, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"hanode: error: HANODE_PATH: unsafe directory {planted}: "
    ), done.stderr


# -- a child spawned as the signal lands ---------------------------------------------------


class Mount(Resource[None]):
    """Like the filesystem step: start runs a command that acts late (a slow `mount`)."""

    section = "mount-like"

    def __init__(self, journal: Path) -> None:
        super().__init__(None)
        self.journal = journal

    def probe(self) -> Status:
        return Status(State.DOWN, "")

    def start(self, ctx: Context) -> None:
        run(["sh", "-c", f"sleep 1; echo mounted late >> {self.journal}"], timeout=30)

    def stop(self, ctx: Context) -> None:
        with self.journal.open("a") as handle:
            handle.write("rolled back\n")

    def plan_start(self) -> list[str]:
        return []

    def plan_stop(self) -> list[str]:
        return []


def test_a_sigterm_as_a_child_is_spawned_kills_it_before_the_rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "run").mkdir()
    journal = tmp_path / "journal"
    real_popen = subprocess.Popen
    spawned: list[int] = []

    def racing(*args: Any, **kwargs: Any) -> subprocess.Popen[str]:
        proc: subprocess.Popen[str] = real_popen(*args, **kwargs)
        spawned.append(proc.pid)
        # the signal lands as Popen returns: the child exists, the caller has no handle yet
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)  # hanode's handler runs here
        return proc

    monkeypatch.setattr(subprocess, "Popen", racing)
    engine = Engine([Mount(journal)], state_dir=tmp_path / "run")
    try:
        with pytest.raises(HanodeError, match="interrupted by SIGTERM; rolled back: mount-like"):
            engine.start(Context())
        assert len(spawned) == 1
        with pytest.raises(ProcessLookupError):  # killed and reaped before the rollback
            os.kill(spawned[0], 0)
        time.sleep(1.5)  # when it would have acted, had it lived
        assert journal.read_text() == "rolled back\n"
    finally:
        for pid in spawned:  # today's escaped child: do not leave it behind
            try:
                os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


def test_a_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    began = time.monotonic()
    with pytest.raises(CommandError, match=r"timed out after 0\.5s"):
        run(["sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait"], timeout=0.5)
    assert time.monotonic() - began < 5
    grandchild = int(pidfile.read_text())
    assert wait_for(lambda: not _alive(grandchild), timeout=5)  # init reaps it: it is gone


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False
