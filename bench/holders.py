#!/usr/bin/python3
"""How long find_holders takes with many processes running (a script, not a test).

Starts N `sleep` processes (default 2,000), each with a few extra open fds; one in
twenty holds the target directory's filesystem (cwd in it plus an open file on it).
Then times find_holders over several rounds and checks it found exactly those.

    bench/holders.py [--processes 2000] [--fds 8] [--rounds 10] [--dir /dev/shm]

The target directory defaults to /dev/shm (a tmpfs with its own device number).
Every process started here is killed before the script ends.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hanode.system.holders import find_holders


def main() -> int:
    """Spawn the processes, time the scans, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2000)
    parser.add_argument("--fds", type=int, default=8, help="extra open fds per process")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--dir", default="/dev/shm", help="a directory on the target filesystem")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="hanode-bench-") as target:
        device = os.stat(target).st_dev
        held = Path(target, "held")
        held.write_bytes(b"x" * 4096)
        # fds every process inherits: on the root filesystem, so they are not holders
        extra = [os.open("/usr/bin/sleep", os.O_RDONLY) for _ in range(args.fds)]
        held_fd = os.open(held, os.O_RDONLY)
        procs: list[subprocess.Popen[bytes]] = []
        expected: set[int] = set()
        try:
            began = time.monotonic()
            for number in range(args.processes):
                holds = number % 20 == 0
                proc = subprocess.Popen(
                    ["sleep", "3600"],
                    cwd=target if holds else "/",
                    pass_fds=[*extra, held_fd] if holds else extra,
                    stdin=subprocess.DEVNULL,
                )
                procs.append(proc)
                if holds:
                    expected.add(proc.pid)
            spawned = time.monotonic() - began
            running = sum(1 for entry in os.listdir("/proc") if entry.isdigit())
            print(f"started {len(procs)} processes in {spawned:.1f}s; {running} in /proc")

            timings = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                holders = find_holders({device})
                timings.append(time.perf_counter() - start)
            ours = {holder.pid for holder in holders} & {proc.pid for proc in procs}
            assert ours == expected, f"found {len(ours)} of our holders, expected {len(expected)}"
            print(
                f"find_holders: {len(holders)} holders among {running} processes "
                f"({args.fds} extra fds each): min {min(timings) * 1000:.0f} ms, "
                f"median {statistics.median(timings) * 1000:.0f} ms, "
                f"max {max(timings) * 1000:.0f} ms over {args.rounds} rounds"
            )
        finally:
            for proc in procs:
                proc.kill()
            for proc in procs:
                proc.wait()
            for fd in [*extra, held_fd]:
                os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
