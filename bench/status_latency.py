#!/usr/bin/python3
"""How long an admin waits for `hanode status`, and where that time goes.

Run on a node (any config hanode can read), it times, run after run, the cold command

    hanode status --json

(wall time, Python start included) and reads from its output how long each resource's
probe took. Baselines show the rest: a bare interpreter and the import of each
dependency and of hanode's CLI, each in a fresh interpreter.

    bench/status_latency.py [--runs 9] [--hanode /usr/bin/hanode] [-c CONFIG [--insecure-config]]
    bench/status_latency.py --lab node1 [node2 ...]   # in the lab VMs, through labctl

With --lab the script copies itself into each running lab node (tests/lab/labctl up
first) and runs there against the installed package; the figures are the guest's,
under TCG emulation, so several times the host's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

PYTHON = "/usr/bin/python3"
IMPORTS = ["pyroute2", "psutil", "tomlkit", "jeepney", "systemd.journal", "hanode.cli"]


def wall(argv: list[str], ok: tuple[int, ...] = (0,)) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )
    seconds = time.perf_counter() - started
    if done.returncode not in ok:
        sys.exit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return seconds, done.stdout


def line(label: str, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    return (
        f"  {label:<28} min {ms[0]:7.1f} ms   median {statistics.median(ms):7.1f} ms"
        f"   max {ms[-1]:7.1f} ms"
    )


def local(runs: int, hanode: str, options: list[str]) -> None:
    wall([PYTHON, "-c", "pass"])  # warm the page cache once, as an admin's shell has
    totals: list[float] = []
    probes: dict[str, list[float]] = {}
    state = ""
    for _ in range(runs):
        # up, partial, down, unknown: each an answer of status
        seconds, out = wall([hanode, *options, "status", "--json"], ok=(0, 1, 3, 4))
        totals.append(seconds)
        document = json.loads(out)
        state = document["state"]
        for resource in document["resources"]:
            probes.setdefault(resource["name"], []).append(resource.get("probe_seconds", 0.0))
    print(f"hanode status on {document['node']} ({state}), {runs} runs, cold each time:")
    print(line("hanode status --json", totals))
    for name, samples in probes.items():
        print(line(f"  probe {name}", samples))
    print("baselines, each in a fresh interpreter:")
    print(line("python3 -c pass", [wall([PYTHON, "-c", "pass"])[0] for _ in range(runs)]))
    for module in IMPORTS:
        samples = [wall([PYTHON, "-c", f"import {module}"])[0] for _ in range(runs)]
        print(line(f"import {module}", samples))


def lab(nodes: list[str], runs: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "lab"))
    from hanodelab import lab as hanodelab

    source = Path(__file__).read_bytes()
    for name in nodes:
        node = hanodelab.node(name)
        node.agent.write_file("/root/status_latency.py", source, 0o755)
        result = node.agent.sh(f"{PYTHON} /root/status_latency.py --runs {runs}", timeout=900)
        print(f"== {name} (lab guest, TCG)")
        print(result.stdout, end="")
        if result.exitcode:
            sys.exit(f"{name}: exit {result.exitcode}: {result.stderr.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--hanode", default="/usr/bin/hanode")
    parser.add_argument("-c", "--config", help="hanode's -c (default: its own default)")
    parser.add_argument(
        "--insecure-config", action="store_true", help="hanode's --insecure-config (tests only)"
    )
    parser.add_argument("--lab", nargs="+", metavar="NODE", help="run in these lab nodes")
    args = parser.parse_args()
    if args.lab:
        lab(args.lab, args.runs)
    else:
        options = ["-c", args.config] if args.config else []
        options += ["--insecure-config"] if args.insecure_config else []
        local(args.runs, args.hanode, options)


if __name__ == "__main__":
    main()
