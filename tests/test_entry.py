"""hanode.entry: the process ends as soon as the command is done, its output whole."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

from helpers import PYTHON

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HANODE_NO_JOURNAL": "1"}
    env.pop("PYTHONUNBUFFERED", None)  # stdout buffered, as it is when hanode runs
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [PYTHON, "-c", textwrap.dedent(code)], env=env, timeout=60, check=False, **kwargs
    )


def test_leave_flushes_buffered_output_and_keeps_the_code() -> None:
    done = _python(
        """
        import logging, sys
        from hanode.entry import leave
        handler = logging.StreamHandler(sys.stderr)
        logging.getLogger("hanode").addHandler(handler)
        logging.getLogger("hanode").warning("a log line")
        sys.stdout.write("x" * 100000)  # more than a pipe's buffer: written as it goes
        sys.stdout.write("the end\\n")  # still in the buffer when leave() is called
        leave(3)
        """,
        capture_output=True,
    )
    assert done.returncode == 3
    assert done.stdout.endswith(b"x" * 10 + b"the end\n")
    assert len(done.stdout) == 100000 + len("the end\n")
    assert done.stderr == b"a log line\n"


def test_output_that_cannot_be_written_is_never_a_success() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: the flush meets a broken pipe
    try:
        done = _python(
            """
            import sys
            from hanode.entry import leave
            sys.stdout.write("lost")
            leave(0)
            """,
            stdout=write_end,
            stderr=subprocess.PIPE,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 120  # what Python's own exit says for it


def test_run_ends_with_the_commands_code_and_argparses_exits() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HANODE_NO_JOURNAL": "1"}
    version = subprocess.run(
        [PYTHON, "-m", "hanode", "--version"], env=env, capture_output=True, timeout=60, check=False
    )
    assert (version.returncode, version.stdout.startswith(b"hanode ")) == (0, True)
    usage = subprocess.run(
        [PYTHON, "-m", "hanode", "bogus"], env=env, capture_output=True, check=False
    )
    assert usage.returncode == 2 and b"invalid choice" in usage.stderr
    missing = subprocess.run(
        [PYTHON, "-m", "hanode", "-c", "/nonexistent/hanode.toml", "status"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 2 and b"/nonexistent/hanode.toml" in missing.stderr


def test_the_process_keeps_the_fixed_path_not_the_callers() -> None:
    """A library that runs a command of its own (platform does) finds it on the system
    PATH, not on the caller's: hanode runs as root."""
    done = _python(
        """
        import os, sys
        from hanode import entry
        os.environ["PATH"] = "/tmp/not-root-s:/usr/bin"
        sys.argv = ["hanode", "--version"]
        try:
            entry.main()
        except SystemExit:
            pass
        print(os.environ["PATH"])
        """,
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines()[-1] == "/usr/sbin:/usr/bin:/sbin:/bin"
