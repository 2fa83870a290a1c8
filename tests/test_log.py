"""Console and progress output: one line per step, a live line on a terminal."""

from __future__ import annotations

import io
import logging
import os
import pty
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hanode import log as hlog

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def console() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    hlog.setup(stream=stream)
    yield stream
    logging.getLogger("hanode").handlers.clear()


def test_step_event_is_one_readable_line(console: io.StringIO) -> None:
    hlog.step_event("drbd", "start", "done", 1.234, "Primary, peer Secondary")
    assert console.getvalue() == (
        "drbd        start     done           1.23s  Primary, peer Secondary\n"
    )


def test_failed_steps_are_marked_as_errors(console: io.StringIO) -> None:
    hlog.step_event("filesystem", "stop", "failed", 30.0, "busy")
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
        [sys.executable, "-c", SPIN], stdin=terminal, stdout=terminal, stderr=terminal, env=env
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
            hlog.step_event("address", "start", "done", 2.35, "192.0.2.10/24 on eth0")
        finally:
            logging.getLogger("hanode").handlers.clear()
        stderr.seek(0)
        written = stderr.read()
    assert journal.lines == ["address     start     done           2.35s  192.0.2.10/24 on eth0"]
    assert written == ("" if under_systemd else journal.lines[0] + "\n")
