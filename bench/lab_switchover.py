#!/usr/bin/python3
"""Planned switchover time on the lab cluster, and where it goes, step by step.

Each round: `hanode stop` on the active node, then `hanode start` on the other one,
as an admin types them (wall time through the guest agent, Python start included);
then the step timings both runs recorded (`hanode status --json`). The lab must be up
(tests/lab/labctl up) with one node active; rounds alternate the active node.

    bench/lab_switchover.py [--rounds 4] [--install build/deb/hanode_*.deb]

--install first upgrades hanode in both nodes with `dpkg -i` (an upgrade stops nothing).
The figures are the guests', under TCG emulation: several times a real machine's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "lab"))
from hanodelab import lab


def hanode(node: Any, verb: str) -> tuple[float, int]:
    began = time.monotonic()
    result = node.agent.sh(f"hanode {verb}", timeout=900)
    return time.monotonic() - began, result.exitcode


def steps(node: Any, verb: str) -> dict[str, float]:
    document = json.loads(node.agent.sh("hanode status --json", timeout=120).stdout)
    report = document.get(f"last_{verb}") or {}
    timings = {step["step"]: step["seconds"] for step in report.get("steps", [])}
    timings["(hanode total)"] = report.get("seconds", 0.0)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--install", type=Path, help="a .deb to dpkg -i on both nodes first")
    args = parser.parse_args()
    nodes = [lab.node("node1"), lab.node("node2")]
    if args.install:
        for node in nodes:
            node.agent.write_file(f"/root/{args.install.name}", args.install.read_bytes())
            result = node.agent.sh(f"dpkg -i /root/{args.install.name}", timeout=300)
            if result.exitcode:
                sys.exit(f"{node.name}: dpkg -i failed: {result.stderr.strip()}")
    roles = [node.agent.sh("drbdadm role srv").stdout.split("/")[0] for node in nodes]
    if "Primary" not in roles:
        sys.exit(f"no node is active (roles {roles}): start one first")
    active = roles.index("Primary")
    walls: dict[str, list[float]] = {"stop": [], "start": [], "switchover": []}
    inside: dict[str, list[float]] = {}
    for round_number in range(1, args.rounds + 1):
        old, new = nodes[active], nodes[1 - active]
        stop_s, stop_rc = hanode(old, "stop")
        start_s, start_rc = hanode(new, "start")
        if stop_rc or start_rc:
            sys.exit(f"round {round_number}: stop exit {stop_rc}, start exit {start_rc}")
        walls["stop"].append(stop_s)
        walls["start"].append(start_s)
        walls["switchover"].append(stop_s + start_s)
        for verb, node in (("stop", old), ("start", new)):
            for step, seconds in steps(node, verb).items():
                inside.setdefault(f"{verb} {step}", []).append(seconds)
        print(
            f"round {round_number}: {old.name} -> {new.name}: stop {stop_s:.2f} s, "
            f"start {start_s:.2f} s",
            flush=True,
        )
        active = 1 - active
    print(f"\n{args.rounds} switchovers (median / min / max, seconds):")
    for label, samples in [*walls.items(), *inside.items()]:
        print(
            f"  {label:<28} {statistics.median(samples):6.2f} {min(samples):6.2f}"
            f" {max(samples):6.2f}"
        )


if __name__ == "__main__":
    main()
