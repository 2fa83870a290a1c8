#!/usr/bin/python3
"""A planned switchover by hand against hanode's, side by side in one lab run.

Each round runs two switchovers, each moving the cluster from the active node to the
other, in turn (a) then (b) or (b) then (a), so that both run in both directions:

(a) the how-to's shell script brought to systemd: exactly the intrinsic operations and
    nothing else, one bash script per node. Stop, on the active node:
    ``systemctl stop`` of each unit in reverse order, one after the other (the how-to's
    script stops them in turn: its services depend on their order), ``ip addr del`` of
    the floating address, for each
    link (reverse order) ``rm PATH`` and ``mv PATH.drbdlinks PATH``, ``umount``,
    ``drbdadm secondary``. Start, on the other node: ``drbdadm primary``, ``mount``, the
    renames and links, ``ip addr add ... label`` and one gratuitous ARP
    (``arping -U -c 1``), ``systemctl start`` of each unit in order, one after the other
    (one ``systemctl start A B`` would start them side by side, in no order);
(b) ``hanode stop`` on the active node, then ``hanode start`` on the other.

Before each switchover, of either kind, both nodes come to rest the same way: no hanode
process left (a start's detached announcer), then SETTLE_SECONDS for the units' own work
after a start. Everything comes from tests/lab/provision/hanode.toml, the config both
nodes run. Wall times are taken inside the guest (bash's $EPOCHREALTIME around each
command), so the guest agent's polling does not count. It prints every round's walls,
the medians, the ratio b/a, and where hanode's time goes beyond the intrinsic
operations: per step (the bare script's operations against hanode's step timings, from
`hanode status --json` last_stop/last_start), the engine's time between its steps, and
the time outside the engine (interpreter start, imports, config, lock: the command's
wall minus the engine's total), beside a bare ``python3 -c pass`` in the guest.

It also times, once a round in the guest, the floor under that startup: the interpreter
as /usr/bin/hanode starts it (``python3 -IS``), and the same interpreter importing the
libraries a ``hanode stop`` imports (LIBRARIES: the standard library's modules, jeepney,
python3-systemd's journal sender), without any of hanode's own code. Any program in Python
on these libraries pays that floor on each of its two commands; the report sets it beside
the switchover's allowance (TARGET over the bare script).

    bench/lab_baseline.py [--rounds 3]

The lab must be up (tests/lab/labctl up) with one node active. The figures are the
guests', under TCG emulation: several times a real machine's.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "tests" / "lab" / "provision" / "hanode.toml"
STEPS = ("drbd", "filesystem", "links", "address", "services")  # start order

TARGET = 1.15  # the ratio for a planned switchover

# What `hanode stop` imports outside hanode itself (its sys.modules at exit, in a lab
# guest, as of this version), named by the modules that pull in the rest. A start also
# loads pyroute2's netlink modules (0.27 s of a guest's CPU): left out, so the floor is
# the lower one.
LIBRARIES = (
    "argparse",
    "ctypes",
    "datetime",
    "fcntl",
    "fnmatch",
    "gc",
    "grp",
    "importlib.machinery",
    "ipaddress",
    "jeepney.auth",
    "jeepney.bus_messages",
    "jeepney.io.blocking",
    "json",
    "logging",
    "pathlib",
    "pwd",
    "shlex",
    "subprocess",
    "systemd._journal",
    "threading",
    "tomllib",
    "unicodedata",
)
_INTERPRETER = 'python3 -IS -c \'import sys; sys.path.append("/usr/lib/python3/dist-packages")'
FLOOR_COMMANDS = {
    "python3 -IS": _INTERPRETER + "'\n",
    "python3 -IS + the libraries": _INTERPRETER + "; import " + ", ".join(LIBRARIES) + "'\n",
}

# Around each script, run by bash in the guest: the clock at its beginning, after each
# step (MARK STEP) and at its end; bash reads it without spawning anything.
_PROLOGUE = 'set -e\necho "BEGIN $EPOCHREALTIME"\nmark() { echo "MARK $1 $EPOCHREALTIME"; }\n'
_EPILOGUE = 'echo "END $EPOCHREALTIME"\n'


@dataclass(frozen=True)
class Cluster:
    """What the scripts act on, from hanode.toml."""

    resource: str
    device: str
    mountpoint: str
    links: tuple[tuple[str, str], ...]  # (path, target), in start order
    ip: str
    interface: str
    label: str
    units: tuple[str, ...]  # in start order

    @classmethod
    def load(cls, path: Path) -> Cluster:
        """The sections of the lab's hanode.toml that the bare scripts need."""
        config = tomllib.loads(path.read_text())
        address = config["address"]
        return cls(
            resource=config["drbd"]["resource"],
            device=config["filesystem"]["device"],
            mountpoint=config["filesystem"]["mountpoint"],
            links=tuple((link["path"], link["target"]) for link in config["links"]["links"]),
            ip=address["ip"],
            interface=address["interface"],
            label=address.get("label", f"{address['interface']}:1"),
            units=tuple(config["services"]["units"]),
        )

    def stop_script(self) -> str:
        """The intrinsic operations of a stop, in hanode's order (the reverse of start)."""
        q = shlex.quote
        lines = [
            *(f"systemctl stop {q(unit)}" for unit in reversed(self.units)),
            "mark services",
            f"ip addr del {q(self.ip)} dev {q(self.interface)} label {q(self.label)}",
            "mark address",
        ]
        for path, _target in reversed(self.links):
            lines += [f"rm {q(path)}", f"mv {q(path + '.drbdlinks')} {q(path)}"]
        lines += [
            "mark links",
            f"umount {q(self.mountpoint)}",
            "mark filesystem",
            f"drbdadm secondary {q(self.resource)}",
            "mark drbd",
        ]
        return _PROLOGUE + "\n".join(lines) + "\n" + _EPILOGUE

    def start_script(self) -> str:
        """The intrinsic operations of a start, in hanode's order."""
        q = shlex.quote
        ip = self.ip.split("/")[0]
        lines = [
            f"drbdadm primary {q(self.resource)}",
            "mark drbd",
            f"mount {q(self.device)} {q(self.mountpoint)}",
            "mark filesystem",
        ]
        for path, target in self.links:
            lines += [f"mv {q(path)} {q(path + '.drbdlinks')}", f"ln -s {q(target)} {q(path)}"]
        lines += [
            "mark links",
            f"ip addr add {q(self.ip)} dev {q(self.interface)} label {q(self.label)}",
            f"arping -U -c 1 -I {q(self.interface)} {q(ip)} >/dev/null",
            "mark address",
            *(f"systemctl start {q(unit)}" for unit in self.units),
            "mark services",
        ]
        return _PROLOGUE + "\n".join(lines) + "\n" + _EPILOGUE


def hanode_script(verb: str) -> str:
    """``hanode VERB``, timed the same way as the bare scripts."""
    return _PROLOGUE + f"hanode {verb}\n" + _EPILOGUE


@dataclass
class Timed:
    """One script's outcome in the guest: its wall and its marked steps, in seconds."""

    wall: float
    steps: dict[str, float] = field(default_factory=dict)


def run_timed(node: Any, script: str, what: str) -> Timed:
    """Run ``script`` with bash in ``node``; exits the bench if it fails."""
    result = node.agent.exec(["/bin/bash", "-c", script], timeout=900)
    if result.exitcode != 0:
        sys.exit(f"{node.name}: {what} exited {result.exitcode}: {result.stderr.strip()}")
    return parse_timed(result.stdout)


def parse_timed(output: str) -> Timed:
    """The wall and the steps from a script's BEGIN, MARK and END lines."""
    began = last = end = None
    steps: dict[str, float] = {}
    for line in output.splitlines():
        words = line.replace(",", ".").split()  # a locale may write the decimal comma
        if len(words) == 2 and words[0] == "BEGIN":
            began = last = float(words[1])
        elif len(words) == 3 and words[0] == "MARK" and last is not None:
            steps[words[1]] = float(words[2]) - last
            last = float(words[2])
        elif len(words) == 2 and words[0] == "END":
            end = float(words[1])
    if began is None or end is None:
        sys.exit(f"no timings in the script's output: {output[-500:]!r}")
    return Timed(end - began, steps)


def engine_report(node: Any, verb: str) -> dict[str, Any]:
    """The last start or stop report hanode kept on ``node``."""
    result = node.agent.exec(["hanode", "status", "--json"], timeout=120)
    report: dict[str, Any] = json.loads(result.stdout).get(f"last_{verb}") or {}
    return report


def active_index(nodes: list[Any], resource: str) -> int:
    """Which node is Primary; exits the bench when none is."""
    roles = [
        node.agent.exec(["drbdadm", "role", resource], timeout=60).stdout.split("/")[0]
        for node in nodes
    ]
    if roles.count("Primary") != 1:
        sys.exit(f"no single active node (roles {roles}): `hanode start` on one first")
    return roles.index("Primary")


class Figures:
    """Every sample, by label."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}

    def add(self, label: str, seconds: float) -> None:
        """One more sample of ``label``."""
        self.samples.setdefault(label, []).append(seconds)

    def median(self, label: str) -> float:
        """The median of ``label``'s samples (nan when there is none)."""
        return statistics.median(self.samples.get(label) or [float("nan")])


# Before each switchover, of either kind: until no hanode process is left in a node (a
# start's detached announcer sends its second burst a few seconds later), then this long
# for what the units do just after they started (PostgreSQL's first checkpoint, Apache's
# workers): without it, the switchover that follows the other kind's within a round
# stops a node that is still busy starting, and pays for it.
SETTLE_SECONDS = 3.0
_QUIET = (
    "for _ in $(seq 100); do pgrep -f '[/]usr/bin/hanode' >/dev/null || exit 0; sleep 0.1; done"
)


def settle(nodes: list[Any]) -> None:
    """Let both nodes come to rest, the same way before every switchover."""
    for node in nodes:
        node.agent.exec(["/bin/bash", "-c", _QUIET], timeout=60)
    time.sleep(SETTLE_SECONDS)


def bare_switchover(cluster: Cluster, old: Any, new: Any, figures: Figures) -> float:
    """(a): the bare stop on ``old``, the bare start on ``new``; the seconds of both."""
    stop = run_timed(old, cluster.stop_script(), "the bare stop")
    start = run_timed(new, cluster.start_script(), "the bare start")
    for verb, timed in (("stop", stop), ("start", start)):
        figures.add(f"bare {verb}", timed.wall)
        for step, seconds in timed.steps.items():
            figures.add(f"bare {verb} {step}", seconds)
    total = stop.wall + start.wall
    figures.add("bare switchover", total)
    print(
        f"    bare   {old.name} -> {new.name}: stop {stop.wall:6.2f} s, start {start.wall:6.2f} s"
    )
    return total


def hanode_switchover(old: Any, new: Any, figures: Figures) -> float:
    """(b): `hanode stop` on ``old``, `hanode start` on ``new``; the seconds of both."""
    stop = run_timed(old, hanode_script("stop"), "hanode stop")
    start = run_timed(new, hanode_script("start"), "hanode start")
    for verb, timed, node in (("stop", stop, old), ("start", start, new)):
        figures.add(f"hanode {verb}", timed.wall)
        report = engine_report(node, verb)
        steps = {str(s["step"]): float(s["seconds"]) for s in report.get("steps", [])}
        engine = float(report.get("seconds", 0.0))
        for step, seconds in steps.items():
            figures.add(f"hanode {verb} {step}", seconds)
        figures.add(f"hanode {verb} outside the engine", timed.wall - engine)
        figures.add(f"hanode {verb} engine between steps", engine - sum(steps.values()))
    total = stop.wall + start.wall
    figures.add("hanode switchover", total)
    print(
        f"    hanode {old.name} -> {new.name}: stop {stop.wall:6.2f} s, start {start.wall:6.2f} s"
    )
    return total


def report(figures: Figures, rounds: int) -> None:
    """The medians, the ratio b/a, and hanode's time beyond the intrinsic operations."""
    bare, ours = figures.median("bare switchover"), figures.median("hanode switchover")
    print(f"\nmedians over {rounds} rounds (seconds):")
    print(f"  (a) bare switchover   {bare:7.2f}")
    print(f"  (b) hanode switchover {ours:7.2f}")
    print(f"  ratio b/a             {ours / bare:7.2f}")
    for verb in ("stop", "start"):
        print(
            f"\n  {verb}: bare {figures.median(f'bare {verb}'):.2f} s, "
            f"hanode {figures.median(f'hanode {verb}'):.2f} s; per step (bare / hanode):"
        )
        order = STEPS if verb == "start" else tuple(reversed(STEPS))
        for step in order:
            a = figures.median(f"bare {verb} {step}")
            b = figures.median(f"hanode {verb} {step}")
            print(f"    {step:<11} {a:6.2f} / {b:6.2f}   hanode beyond: {b - a:+6.2f}")
        between = figures.median(f"hanode {verb} engine between steps")
        outside = figures.median(f"hanode {verb} outside the engine")
        print(f"    {'engine between steps':<30} {between:6.2f}")
        print(f"    {'outside the engine (startup)':<30} {outside:6.2f}")
    print(f"\n  python3 -c pass in the guest: {figures.median('python3 -c pass'):.3f} s")
    interpreter = figures.median("python3 -IS")
    with_libraries = figures.median("python3 -IS + the libraries")
    libraries = with_libraries - interpreter
    floor = 2 * with_libraries  # each of the two commands
    print(f"  the interpreter as /usr/bin/hanode starts it (python3 -IS): {interpreter:.3f} s")
    print(f"  + importing the libraries a stop imports (no hanode code): {libraries:.3f} s")
    print(
        f"  floor of two commands: {floor:.2f} s, against the allowance of {TARGET} x bare: "
        f"{(TARGET - 1) * bare:.2f} s beyond the bare script"
    )


def main() -> None:
    """Parse the arguments, then run the rounds in the lab."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="at least 3 (default 3)")
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds: at least 3")
    sys.path.insert(0, str(ROOT / "tests" / "lab"))
    from hanodelab import lab

    cluster = Cluster.load(CONFIG)
    nodes = [lab.node("node1"), lab.node("node2")]
    active = active_index(nodes, cluster.resource)
    figures = Figures()
    for number in range(1, args.rounds + 1):
        print(f"round {number}:", flush=True)
        walls: dict[str, float] = {}
        for kind in ("bare", "hanode") if number % 2 else ("hanode", "bare"):
            old, new = nodes[active], nodes[1 - active]
            settle(nodes)
            if kind == "bare":
                walls[kind] = bare_switchover(cluster, old, new, figures)
            else:
                walls[kind] = hanode_switchover(old, new, figures)
            active = 1 - active
        python = run_timed(nodes[active], _PROLOGUE + "python3 -c pass\n" + _EPILOGUE, "python3")
        figures.add("python3 -c pass", python.wall)
        for label, command in FLOOR_COMMANDS.items():
            figures.add(
                label, run_timed(nodes[active], _PROLOGUE + command + _EPILOGUE, label).wall
            )
        print(
            f"  round {number}: bare {walls['bare']:.2f} s, hanode {walls['hanode']:.2f} s, "
            f"ratio {walls['hanode'] / walls['bare']:.2f}",
            flush=True,
        )
    report(figures, args.rounds)


if __name__ == "__main__":
    main()
