"""Console and progress output: one line per step, a live line on a terminal; and the
journal entry of each step, with its HANODE_* fields, as python3-systemd sends it."""

from __future__ import annotations

import io
import logging
import os
import pty
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import PYTHON
from mountns import in_mount_namespace

from hanode import log as hlog
from hanode.engine import Engine
from hanode.errors import HanodeError, StepFailed
from hanode.resources import Context, Resource, State, Status

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def console() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    hlog.setup(stream=stream)
    yield stream
    logging.getLogger("hanode").handlers.clear()


def test_step_event_is_one_readable_line(console: io.StringIO) -> None:
    hlog.step_event("drbd", "start", "done", 1.234, "Primary, peer Secondary", logging.INFO)
    assert console.getvalue() == (
        "drbd        start     done           1.23s  Primary, peer Secondary\n"
    )


def test_failed_steps_are_marked_as_errors(console: io.StringIO) -> None:
    hlog.step_event("filesystem", "stop", "failed", 30.0, "busy", logging.ERROR)
    assert console.getvalue().startswith("hanode: error: filesystem  stop      failed")


def test_progress_off_a_terminal_repeats_a_plain_line(
    console: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100.0]
    monkeypatch.setattr(hlog.time, "monotonic", lambda: clock[0])
    with hlog._Progress("waiting for peer", console) as line:
        line.update("WFConnection, 10s left")  # under a second: nothing yet
        clock[0] += 1.5
        line.update("WFConnection, 8s left")
        clock[0] += 1.0
        line.update("WFConnection, 7s left")  # too soon after the last line
        clock[0] += 5.0
        line.update("Connected")
    assert console.getvalue().splitlines() == [
        "  waiting for peer: WFConnection, 8s left (2s)",
        "  waiting for peer: Connected (8s)",
    ]


SPIN = textwrap.dedent(
    """
    import time
    from hanode import log
    with log.progress("waiting for peer") as line:
        line.update("WFConnection, 9s left")
        time.sleep(1.6)
    print("done", flush=True)
    """
)


def test_progress_on_a_terminal_redraws_one_line() -> None:
    controller, terminal = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [PYTHON, "-c", SPIN], stdin=terminal, stdout=terminal, stderr=terminal, env=env
    )
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + 20
    while b"done" not in output and time.monotonic() < deadline:
        try:
            output += os.read(controller, 4096)
        except OSError:
            break
    child.wait(timeout=20)
    os.close(controller)
    text = output.decode()
    assert "\r\x1b[K" in text
    assert "waiting for peer: WFConnection, 9s left  1s" in text
    assert text.rstrip().endswith("done")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.mark.parametrize("under_systemd", [True, False], ids=["journal-stream", "terminal"])
def test_under_systemd_each_line_reaches_the_journal_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, under_systemd: bool
) -> None:
    """systemd points stderr at the journal and says so in JOURNAL_STREAM (dev:ino): then
    the console handler would write every line a second time."""
    journal = _Collect()
    monkeypatch.setattr(hlog, "_journal_handler", lambda: journal)
    with (tmp_path / "stderr").open("w+") as stderr:
        info = os.fstat(stderr.fileno())
        other = os.stat(tmp_path)  # some other file: stderr is not the journal stream
        stream_id = (info.st_dev, info.st_ino) if under_systemd else (other.st_dev, other.st_ino)
        monkeypatch.setenv("JOURNAL_STREAM", f"{stream_id[0]}:{stream_id[1]}")
        try:
            hlog.setup(stream=stderr)
            hlog.step_event("address", "start", "done", 2.35, "192.0.2.10/24 on eth0", logging.INFO)
        finally:
            logging.getLogger("hanode").handlers.clear()
        stderr.seek(0)
        written = stderr.read()
    assert journal.lines == ["address     start     done           2.35s  192.0.2.10/24 on eth0"]
    assert written == ("" if under_systemd else journal.lines[0] + "\n")


# -- root: the journal entries, as journald receives them -----------------------------------


class Flag(Resource):
    """A trivial resource: UP while its flag file exists; its start can take time or fail."""

    def __init__(
        self, name: str, directory: Path, *, delay: float = 0.0, fail: bool = False
    ) -> None:
        self.name = name
        self.flag = directory / f"{name}.up"
        self.delay = delay
        self.fail = fail

    def probe(self) -> Status:
        return Status(State.UP if self.flag.exists() else State.DOWN, self.flag.name)

    def start(self, ctx: Context) -> None:
        time.sleep(self.delay)
        if self.fail:
            raise StepFailed(f"{self.name} broke")
        self.flag.touch()

    def stop(self, ctx: Context) -> None:
        self.flag.unlink(missing_ok=True)

    def plan_start(self) -> list[str]:
        return [f"create {self.flag}"]

    def plan_stop(self) -> list[str]:
        return [f"remove {self.flag}"]


def _records() -> list[logging.LogRecord]:
    """A step's record with its HANODE_* fields, a warning with arguments, an error with
    an exception, a debug line: what hanode logs."""
    logger = logging.getLogger("hanode.test")
    step = logger.makeRecord(
        "hanode.test",
        logging.INFO,
        __file__,
        10,
        "%s",
        ("drbd start done",),
        None,
        "f",
        {"HANODE_STEP": "drbd", "HANODE_SECONDS": "1.250", "lower": "dropped"},
    )
    warning = logger.makeRecord(
        "hanode.test", logging.WARNING, __file__, 20, "%s is %d", ("x", 3), None, "g"
    )
    try:
        raise ValueError("broke\nacross lines")
    except ValueError:
        error = logger.makeRecord(
            "hanode.test", logging.ERROR, __file__, 30, "failed", (), sys.exc_info(), "h"
        )
    debug = logger.makeRecord("hanode.test", logging.DEBUG, __file__, 40, "+ ip", (), None, "i")
    return [step, warning, error, debug]


def test_the_entry_is_the_one_python3_systemds_handler_sends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hanode sends through python3-systemd's sendv what its JournalHandler would send
    through the same sendv (the fields journald keeps: upper case, no leading _)."""
    from systemd import journal

    def kept(items: tuple[str | bytes, ...]) -> dict[str, str]:
        fields = {}
        for item in items:
            name, _, value = (item.decode() if isinstance(item, bytes) else item).partition("=")
            if name and name[0] != "_" and name == name.upper() and name.isidentifier():
                fields[name] = value
        return fields

    sent: list[tuple[str | bytes, ...]] = []
    monkeypatch.setattr(journal, "sendv", lambda *items: sent.append(items))
    theirs = journal.JournalHandler(SYSLOG_IDENTIFIER="hanode")
    ours = hlog._JournalHandler()
    for record in _records():
        theirs.handle(record)
        expected = kept(sent.pop())
        assert kept(tuple(hlog.journal_fields(record, ours.format(record)))) == expected
        assert {"MESSAGE", "PRIORITY", "CODE_LINE", "SYSLOG_IDENTIFIER"} <= expected.keys()
    assert expected["PRIORITY"] == "7" and expected["MESSAGE"] == "+ ip"


def test_sending_to_the_journal_does_not_load_its_reader() -> None:
    """The handler loads python3-systemd's sender alone, not systemd.journal (uuid,
    platform, the reader, id128)."""
    code = textwrap.dedent(
        """
        import sys
        from hanode import log
        log._JournalHandler()._load()
        print(*(m in sys.modules for m in ("systemd._journal", "systemd.journal", "uuid")))
        """
    )
    done = subprocess.run(
        [PYTHON, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["True", "False", "False"], done.stderr


def parse_native(datagram: bytes) -> dict[str, str]:
    """One entry in journald's native protocol: ``KEY=value`` lines; a value with a newline
    is ``KEY``, its length (64-bit little-endian), the value and a newline."""
    fields: dict[str, str] = {}
    rest = datagram
    while rest:
        line, _, rest = rest.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
        else:
            key, size, rest = line, int.from_bytes(rest[:8], "little"), rest[8:]
            value, rest = rest[:size], rest[size + 1 :]
        fields[key.decode()] = value.decode()
    return fields


@contextmanager
def journald_socket(path: str) -> Iterator[list[dict[str, str]]]:
    """A datagram socket bound at ``path``, drained by a thread into the list yielded: the
    sender blocks on a full queue, and net.unix.max_dgram_qlen can be as low as 10."""
    entries: list[dict[str, str]] = []
    finished = threading.Event()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(0.05)

        def drain() -> None:
            while True:
                try:
                    entries.append(parse_native(sock.recv(1 << 20)))
                except TimeoutError:
                    if finished.is_set():
                        return

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        try:
            yield entries
        finally:
            finished.set()
            reader.join()


@pytest.mark.root
def test_each_step_is_a_journal_entry_with_its_hanode_fields(tmp_path: Path) -> None:
    """hanode's journal handler (python3-systemd, libsystemd) sends to a socket bound where
    journald's is, in a private mount namespace: what journald would receive, unmocked."""

    def scenario() -> None:
        # a /run of this namespace's own: a real journald on the host sees none of it
        subprocess.run(["mount", "-t", "tmpfs", "hanode-test-run", "/run"], check=True)
        Path(hlog._JOURNAL_SOCKET).parent.mkdir(parents=True)
        os.environ.pop("HANODE_NO_JOURNAL", None)
        os.environ.pop("JOURNAL_STREAM", None)
        engine = Engine(
            [Flag("a", tmp_path, delay=0.2), Flag("b", tmp_path, fail=True)], state_dir=tmp_path
        )
        with journald_socket(hlog._JOURNAL_SOCKET) as entries:
            hlog.setup(stream=io.StringIO())
            try:
                with pytest.raises(HanodeError, match="start failed at b: b broke"):
                    engine.start(Context())
            finally:
                logging.getLogger("hanode").handlers.clear()
        steps = [entry for entry in entries if "HANODE_STEP" in entry]
        assert [
            (e["HANODE_STEP"], e["HANODE_ACTION"], e["HANODE_RESULT"], e["PRIORITY"]) for e in steps
        ] == [
            ("a", "start", "done", "6"),
            ("b", "start", "failed", "3"),  # an error in the journal, not just a line
            ("b", "rollback", "rolled-back", "6"),
            ("a", "rollback", "rolled-back", "6"),
        ], steps
        seconds = [float(entry["HANODE_SECONDS"]) for entry in steps]
        assert seconds[0] >= 0.2 and all(s < 0.2 for s in seconds[1:]), seconds
        assert all(entry["SYSLOG_IDENTIFIER"] == "hanode" for entry in steps)
        assert steps[0]["MESSAGE"].startswith("a           start     done")
        assert steps[0]["MESSAGE"].endswith("s  a.up")
        assert steps[1]["MESSAGE"].endswith("s  b broke")

    in_mount_namespace(scenario)
