"""Logging: the journal with structured HANODE_* fields, and a readable console.

Every step outcome is one journal entry carrying HANODE_STEP, HANODE_ACTION,
HANODE_RESULT and HANODE_SECONDS, so `journalctl HANODE_STEP=drbd` finds them, and one
console line. Something that waits for seconds shows a live progress line on a terminal
(elapsed seconds and what it waits for), and a line every few seconds otherwise.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from hanode.resources import ProgressLine

log = logging.getLogger("hanode")

_JOURNAL_SOCKET = "/run/systemd/journal/socket"
_QUIET_REPEAT = 5.0  # seconds between progress lines when not on a terminal
_SPINNER_DELAY = 1.0  # a wait shorter than this shows nothing


class _ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"hanode: error: {message}"
        if record.levelno >= logging.WARNING:
            return f"hanode: warning: {message}"
        if record.levelno <= logging.DEBUG:
            return f"  {message}"
        return message


def setup(*, debug: bool = False, quiet: bool = False, stream: TextIO | None = None) -> None:
    """Send hanode's log to the console (stderr) and, when there is one, the journal."""
    root = logging.getLogger("hanode")
    root.handlers.clear()
    root.setLevel(logging.DEBUG)
    root.propagate = False
    stream = stream or sys.stderr
    console = logging.StreamHandler(stream)
    console.setFormatter(_ConsoleFormatter())
    console.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)
    journal = _journal_handler()
    if journal is not None:
        root.addHandler(journal)
        if _is_journal_stream(stream):
            # Under systemd, stderr already goes to the journal: one entry per line, the
            # structured one (a console line would repeat every line in `journalctl`).
            if isinstance(journal, _JournalHandler):
                journal.fallback = console  # python3-systemd missing: stderr is the journal
            return
    root.addHandler(console)


def _is_journal_stream(stream: TextIO) -> bool:
    """Whether stream is the journal stream systemd gave this service (JOURNAL_STREAM)."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        info = os.fstat(stream.fileno())
        return (info.st_dev, info.st_ino) == (int(device), int(inode))
    except (OSError, ValueError, AttributeError):
        return False  # no such variable, or a stream without a file descriptor


def _journal_handler() -> logging.Handler | None:
    if os.environ.get("HANODE_NO_JOURNAL") or not os.path.exists(_JOURNAL_SOCKET):
        return None
    return _JournalHandler()


class _JournalHandler(logging.Handler):
    """Each record one journal entry, with the fields python3-systemd's JournalHandler
    gives it (MESSAGE, PRIORITY, LOGGER, THREAD_NAME, PROCESS_NAME, CODE_FILE, CODE_LINE,
    CODE_FUNC, EXCEPTION_TEXT, EXCEPTION_INFO, CODE_ARGS, the record's extra fields
    named in journal style, such as HANODE_STEP) and SYSLOG_IDENTIFIER=hanode, sent by
    python3-systemd's ``sendv`` (its binding of libsystemd's sd_journal_sendv, which its
    own ``send`` calls).

    Not through JournalHandler itself: importing ``systemd.journal`` also imports uuid,
    platform, syslog, the journal reader and id128, for its reading side and message ids
    (11 ms on a server; 0.1 s of a lab guest's CPU in every start and stop), none of
    which sending needs. ``sendv`` is loaded at the first record that reaches the
    handler: a run that logs nothing worth the journal (a status) does not load it.
    Where python3-systemd's binding is not where 235 (Debian 12 and 13) has it, its
    JournalHandler sends instead; where python3-systemd is missing, records go to
    ``fallback`` (the console, when setup left it out because stderr is the journal
    stream), else nowhere.
    """

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.fallback: logging.Handler | None = None
        self._deliver: Callable[[logging.LogRecord], object] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        """Send ``record`` to the journal, loading the sender the first time."""
        if self._deliver is None:
            self._deliver = self._load()
        self._deliver(record)

    def _load(self) -> Callable[[logging.LogRecord], object]:
        """What delivers a record: sendv, else python3-systemd's handler, else fallback."""
        try:
            from systemd._journal import sendv
        except ImportError:
            try:
                from systemd.journal import JournalHandler
            except ImportError:
                return (self.fallback or logging.NullHandler()).handle
            handler: logging.Handler = JournalHandler(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)
            return handler.handle

        def send(record: logging.LogRecord) -> None:
            try:
                sendv(*journal_fields(record, self.format(record)))
            except Exception:
                self.handleError(record)

        return send


SYSLOG_IDENTIFIER = "hanode"
# syslog's priorities for logging's levels, as python3-systemd's JournalHandler maps them:
# a level up to each bound gets its priority (DEBUG 7, INFO 6, WARNING 4, ERROR 3, ...)
_PRIORITIES = (
    (logging.DEBUG, 7),
    (logging.INFO, 6),
    (logging.WARNING, 4),
    (logging.ERROR, 3),
    (logging.CRITICAL, 2),
)
_ALERT = 1
_FIELD_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def journal_fields(record: logging.LogRecord, message: str) -> list[str | bytes]:
    """The journal entry of ``record`` (its message formatted), as FIELD=value items."""
    priority = next((pri for level, pri in _PRIORITIES if record.levelno <= level), _ALERT)
    fields: dict[str, object] = {
        "MESSAGE": message,
        "PRIORITY": priority,
        "LOGGER": record.name,
        "THREAD_NAME": record.threadName,
        "PROCESS_NAME": record.processName,
        "CODE_FILE": record.pathname,
        "CODE_LINE": record.lineno,
        "CODE_FUNC": record.funcName,
        "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER,
    }
    if record.exc_text:
        fields["EXCEPTION_TEXT"] = record.exc_text
    if record.exc_info:
        fields["EXCEPTION_INFO"] = record.exc_info
    if record.args:
        fields["CODE_ARGS"] = record.args
    for name, value in record.__dict__.items():  # the extra fields (HANODE_STEP=...)
        if name[:1] not in ("", "_") and not set(name) - _FIELD_CHARACTERS:
            fields[name] = value
    return [_field(name, value) for name, value in fields.items()]


def _field(name: str, value: object) -> str | bytes:
    if isinstance(value, bytes):
        return name.encode() + b"=" + value
    return f"{name}={value}"


def step_event(
    step: str, action: str, result: str, seconds: float, message: str, level: int
) -> None:
    """Log one step outcome: a console line and a journal entry with HANODE_* fields."""
    line = f"{step:<11} {action:<9} {result:<12} {seconds:6.2f}s"
    if message:
        line += f"  {message}"
    log.log(
        level,
        "%s",
        line,
        extra={
            "HANODE_STEP": step,
            "HANODE_ACTION": action,
            "HANODE_RESULT": result,
            "HANODE_SECONDS": f"{seconds:.3f}",
        },
    )


class _Progress:
    """A live line: `label: text  12s`, redrawn on a terminal, repeated otherwise."""

    def __init__(self, label: str, stream: TextIO) -> None:
        self.label = label
        self.stream = stream
        self.text = ""
        self.started = time.monotonic()
        self.tty = stream.isatty()
        self.last_printed = 0.0
        self.drawn = False
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def update(self, text: str) -> None:
        with self.lock:
            self.text = text
        if not self.tty:
            now = time.monotonic()
            if now - self.started >= _SPINNER_DELAY and now - self.last_printed >= _QUIET_REPEAT:
                self.last_printed = now
                elapsed = now - self.started
                log.info("  %s: %s (%.0fs)", self.label, text, elapsed)

    def _spin(self) -> None:
        for frame in itertools.cycle("|/-\\"):
            if self.stop.wait(0.2):
                return
            elapsed = time.monotonic() - self.started
            if elapsed < _SPINNER_DELAY:
                continue
            with self.lock:
                line = f"\r\033[K{frame} {self.label}: {self.text}  {elapsed:.0f}s"
            self.stream.write(line)
            self.stream.flush()
            self.drawn = True

    def __enter__(self) -> ProgressLine:
        if self.tty:
            self.thread = threading.Thread(target=self._spin, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
        if self.drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()


@contextmanager
def progress(label: str) -> Iterator[ProgressLine]:
    """A progress line for something that lasts seconds (to stderr)."""
    with _Progress(label, sys.stderr) as line:
        yield line
