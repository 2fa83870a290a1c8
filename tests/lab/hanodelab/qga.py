"""A small client for qemu-guest-agent and QMP over their unix sockets.

qemu's socket chardevs serve one client at a time, so every call takes a file lock next
to the socket; a reply left over by an interrupted client is skipped by syncing first
(`guest-sync-delimited`: its reply is preceded by a 0xFF byte that resets the stream).
"""

from __future__ import annotations

import base64
import fcntl
import json
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class AgentError(RuntimeError):
    """The agent or monitor answered with an error, or not at all."""


@dataclass(frozen=True)
class ExecResult:
    """What a command run in the guest did."""

    exitcode: int
    stdout: str
    stderr: str
    seconds: float


class _JsonSocket:
    """Newline-framed JSON over a unix stream socket, with a deadline per reply."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buffer = b""
        self.decoder = json.JSONDecoder()

    def close(self) -> None:
        self.sock.close()

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AgentError("no reply in time")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError as exc:
            raise AgentError("no reply in time") from exc
        if not chunk:
            raise AgentError("the socket was closed")
        self.buffer += chunk

    def skip_to_delimiter(self, deadline: float) -> None:
        """Drop everything up to and including the 0xFF guest-sync-delimited sends."""
        while b"\xff" not in self.buffer:
            self.buffer = b""
            self._fill(deadline)
        self.buffer = self.buffer.split(b"\xff", 1)[1]

    def receive(self, deadline: float) -> dict[str, Any]:
        """The next JSON object (events and replies alike)."""
        while True:
            text = self.buffer.decode(errors="replace").lstrip()
            if text:
                try:
                    message, end = self.decoder.raw_decode(text)
                except json.JSONDecodeError:
                    pass
                else:
                    self.buffer = text[end:].encode()
                    if not isinstance(message, dict):
                        raise AgentError(f"unexpected reply {message!r}")
                    return message
            self._fill(deadline)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise clients of one socket (qemu accepts one at a time)."""
    with open(str(path) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _reply(conn: _JsonSocket, deadline: float) -> Any:
    while True:
        message = conn.receive(deadline)
        if "error" in message:
            error = message["error"]
            raise AgentError(f"{error.get('class')}: {error.get('desc')}")
        if "return" in message:
            return message["return"]


class Agent:
    """qemu-guest-agent of one guest: exec with exit code and output, file copy, shutdown."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _session(self, timeout: float) -> Iterator[_JsonSocket]:
        with _locked(self.path):
            conn = _JsonSocket(self.path, timeout)
            try:
                token = secrets.randbelow(2**31) + 1
                deadline = time.monotonic() + timeout
                conn.send({"execute": "guest-sync-delimited", "arguments": {"id": token}})
                while True:
                    conn.skip_to_delimiter(deadline)
                    if _reply(conn, deadline) == token:
                        break
                yield conn
            finally:
                conn.close()

    def ping(self, timeout: float = 5) -> bool:
        """True when the agent answers within the timeout."""
        try:
            with self._session(timeout):
                return True
        except (OSError, AgentError):
            return False

    def call(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: float = 30
    ) -> Any:
        """One agent command and its return value."""
        with self._session(timeout) as conn:
            return self._call(conn, command, arguments, timeout)

    @staticmethod
    def _call(
        conn: _JsonSocket, command: str, arguments: dict[str, Any] | None, timeout: float
    ) -> Any:
        message: dict[str, Any] = {"execute": command}
        if arguments is not None:
            message["arguments"] = arguments
        conn.send(message)
        return _reply(conn, time.monotonic() + timeout)

    def exec(self, argv: list[str], timeout: float = 300, wait: bool = True) -> ExecResult:
        """Run argv in the guest; with wait=False start it and return at once (exit -1)."""
        started = time.monotonic()
        # A session per call, not per command: other clients get their turn meanwhile.
        pid = self.call("guest-exec", {"path": argv[0], "arg": argv[1:], "capture-output": wait})[
            "pid"
        ]
        if not wait:
            return ExecResult(-1, "", "", 0.0)
        deadline = started + timeout
        delay = 0.05
        while True:
            status = self.call("guest-exec-status", {"pid": pid})
            if status["exited"]:
                break
            if time.monotonic() > deadline:
                raise AgentError(f"{argv!r} did not finish within {timeout} s")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.3)
        out = base64.b64decode(status.get("out-data", "")).decode(errors="replace")
        err = base64.b64decode(status.get("err-data", "")).decode(errors="replace")
        code = status.get("exitcode", 128 + status.get("signal", 0))
        return ExecResult(code, out, err, time.monotonic() - started)

    def sh(self, script: str, timeout: float = 300) -> ExecResult:
        """Run a shell command line in the guest as root."""
        return self.exec(["/bin/sh", "-c", script], timeout=timeout)

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Copy bytes into a file in the guest (replaced), then set its mode."""
        with self._session(30) as conn:
            handle = self._call(conn, "guest-file-open", {"path": path, "mode": "w"}, 30)
            try:
                for offset in range(0, max(len(data), 1), 48 * 1024):
                    chunk = base64.b64encode(data[offset : offset + 48 * 1024]).decode()
                    self._call(conn, "guest-file-write", {"handle": handle, "buf-b64": chunk}, 30)
            finally:
                self._call(conn, "guest-file-close", {"handle": handle}, 30)
        result = self.exec(["/bin/chmod", oct(mode)[2:], path], timeout=30)
        if result.exitcode != 0:
            raise AgentError(f"chmod {path}: {result.stderr.strip()}")

    def read_file(self, path: str) -> bytes:
        """The content of a file in the guest."""
        data = b""
        with self._session(30) as conn:
            handle = self._call(conn, "guest-file-open", {"path": path, "mode": "r"}, 30)
            try:
                while True:
                    chunk = self._call(
                        conn, "guest-file-read", {"handle": handle, "count": 48 * 1024}, 30
                    )
                    data += base64.b64decode(chunk.get("buf-b64", ""))
                    if chunk.get("eof") or not chunk.get("count"):
                        break
            finally:
                self._call(conn, "guest-file-close", {"handle": handle}, 30)
        return data

    def set_time(self) -> None:
        """Set the guest clock to the host's (it lags after a snapshot is loaded)."""
        self.call("guest-set-time", {"time": time.time_ns()})

    def shutdown(self) -> None:
        """Ask the guest to power off (the agent never replies to this)."""
        with self._session(10) as conn:
            conn.send({"execute": "guest-shutdown", "arguments": {"mode": "powerdown"}})


class Monitor:
    """QMP of one qemu process (HMP commands through human-monitor-command)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def call(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: float = 60
    ) -> Any:
        """One QMP command and its return value."""
        with _locked(self.path):
            conn = _JsonSocket(self.path, timeout)
            try:
                deadline = time.monotonic() + timeout
                greeting = conn.receive(deadline)
                if "QMP" not in greeting:
                    raise AgentError(f"not a QMP greeting: {greeting!r}")
                conn.send({"execute": "qmp_capabilities"})
                _reply(conn, deadline)
                message: dict[str, Any] = {"execute": command}
                if arguments is not None:
                    message["arguments"] = arguments
                conn.send(message)
                return _reply(conn, deadline)
            finally:
                conn.close()

    def hmp(self, command_line: str, timeout: float = 120) -> str:
        """An HMP command (savevm, loadvm...); its text output, which names any error."""
        output = self.call("human-monitor-command", {"command-line": command_line}, timeout)
        return str(output)
