#!/usr/bin/python3
"""Run `hanode VERB` and SIGKILL it at one point, observed from outside (the lab's killer).

    killpoint.py VERB POINT

POINT says when, watching only what any admin could see: hanode's step events on its
stderr, its child processes in /proc, and the clock.
  after:STEP             right after the event line of STEP (`STEP  VERB  done ...`)
  child:WORD[,WORD...]   when hanode has a child whose command line starts with WORDs
                         (`child:drbdadm,primary`, `child:mount`): between its actions
  delay:STEP:SECONDS     SECONDS after the event line of STEP, or after the start for
                         STEP "begin": inside the step that follows it
  none                   never: a whole run, for comparison
Prints one JSON line: killed (bool), where, the events seen, the exit status.
hanode has no test-only branch: this script only watches and kills.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time

POLL = 0.002  # s between looks at /proc while watching for a child


def children(pid: int) -> list[list[str]]:
    """The command lines of a process's children (and theirs)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                parent = int(handle.read().rsplit(b")", 1)[1].split()[1])
            if parent != pid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                parts = handle.read().split(b"\0")
            argv = [part.decode(errors="replace") for part in parts if part]
        except (OSError, ValueError, IndexError):
            continue
        found.append(argv)
        found.extend(children(int(entry)))
    return found


def main(verb: str, point: str) -> int:
    began = time.monotonic()
    process = subprocess.Popen(
        ["hanode", verb],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "HANODE_NO_JOURNAL": "", "LANG": "C.UTF-8"},
    )
    assert process.stderr is not None
    os.set_blocking(process.stderr.fileno(), False)
    selector = selectors.DefaultSelector()
    selector.register(process.stderr, selectors.EVENT_READ)
    kind, _, rest = point.partition(":")
    events: list[str] = []
    buffered = b""
    armed_at: float | None = began if kind == "delay" and rest.startswith("begin:") else None
    killed = ""
    while process.poll() is None and not killed:
        for _ in selector.select(timeout=POLL):
            chunk = process.stderr.read() or b""
            buffered += chunk
            *lines, buffered = buffered.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                words = line.split()
                if len(words) >= 3 and words[1] == verb:
                    events.append(f"{words[0]} {words[2]}")
                    if kind == "after" and words[0] == rest:
                        killed = f"after {words[0]} {words[2]}"
                    if kind == "delay" and words[0] == rest.split(":")[0]:
                        armed_at = time.monotonic()
        if killed:
            break
        if kind == "delay" and armed_at is not None:
            if time.monotonic() - armed_at >= float(rest.split(":")[1]):
                killed = f"{rest.split(':')[1]} s after {rest.split(':')[0]}"
        elif kind == "child":
            wanted = rest.split(",")
            for argv in children(process.pid):
                names = [os.path.basename(argv[0]), *argv[1:]] if argv else []
                if names[: len(wanted)] == wanted:
                    killed = f"child {' '.join(argv)}"
                    break
    if killed and process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    else:
        killed = ""
    code = process.wait()
    rest_of = process.stderr.read() or b""
    for raw in (buffered + rest_of).split(b"\n"):
        words = raw.decode(errors="replace").split()
        if len(words) >= 3 and words[1] == verb:
            events.append(f"{words[0]} {words[2]}")
    print(
        json.dumps(
            {
                "killed": bool(killed),
                "where": killed,
                "events": events,
                "exit": code,
                "seconds": round(time.monotonic() - began, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
