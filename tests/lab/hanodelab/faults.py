"""What the fault scenarios share: the client's write load, the node's managed state as
the kernel and systemd tell it (not as hanode says it), link cuts and the killer."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from hanodelab import lab, net
from hanodelab.paths import LAB
from hanodelab.qga import ExecResult
from hanodelab.vm import Node

KILLPOINT = "/root/killpoint.py"
LINKS = ("/etc/apache2", "/var/www", "/var/lib/postgresql")  # tests/lab/provision/hanode.toml
UNITS = ("postgresql@15-main.service", "apache2.service")

# Read in the guest by python3: the managed state from the kernel and systemd themselves.
_STATE = r"""
import fcntl, json, os, subprocess
def out(*argv):
    return subprocess.run(argv, capture_output=True, text=True).stdout.strip()
links = {}
for path in %(links)r:
    kind = "link" if os.path.islink(path) else "original" if os.path.exists(path) else "absent"
    links[path] = [kind, os.path.lexists(path + ".drbdlinks")]
try:
    fd = os.open("/run/hanode.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    lock_free = True
except FileNotFoundError:
    lock_free = True
except OSError:
    lock_free = False
print(json.dumps({
    "role": out("drbdadm", "role", "srv"),
    "cstate": out("drbdadm", "cstate", "srv"),
    "dstate": out("drbdadm", "dstate", "srv"),
    "mounted": out("findmnt", "-n", "-o", "SOURCE", "/srv"),
    "links": links,
    "vip": out("ip", "-4", "-o", "addr", "show", "dev", "eth0").count(" %(vip)s/"),
    "units": out("systemctl", "is-active", *%(units)r).split(),
    "lock_free": lock_free,
}))
"""


def hanode(target: Node, arguments: str, timeout: float = 600) -> ExecResult:
    """Run `hanode ARGUMENTS` on a node as root."""
    return target.agent.sh(f"hanode {arguments}", timeout=timeout)


def expect(result: ExecResult, code: int, what: str) -> ExecResult:
    """Assert an exit code, showing the command's output when it is another."""
    assert result.exitcode == code, (
        f"{what}: exit {result.exitcode}, expected {code}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


def wait_primary_unit(target: Node) -> None:
    """Wait until hanode-primary.service of a booting node has run (started or failed)."""
    lab.wait_for(
        lambda: target.agent.sh("systemctl is-active hanode-primary.service").stdout.strip()
        in ("active", "failed"),
        300,
        f"hanode-primary.service on {target.name}",
    )


def managed_state(target: Node) -> dict[str, Any]:
    """DRBD, the mount, the links, the VIP, the units and the lock, read in the guest."""
    code = _STATE % {"links": LINKS, "units": UNITS, "vip": lab.VIP}
    result = target.agent.exec(["/usr/bin/python3", "-c", code], timeout=60)
    assert result.exitcode == 0, result.stderr
    state: dict[str, Any] = json.loads(result.stdout)
    return state


def active_problems(state: dict[str, Any]) -> list[str]:
    """How a node's managed state differs from an active node's; [] when it is one."""
    problems = []
    if not state["role"].startswith("Primary/"):
        problems.append(f"DRBD role {state['role']}")
    if state["mounted"] != "/dev/drbd1":
        problems.append(f"/srv mounted from {state['mounted']!r}")
    for path, (kind, saved) in state["links"].items():
        if kind != "link" or not saved:
            problems.append(f"{path}: {kind}, original saved: {saved}")
    if state["vip"] != 1:
        problems.append(f"the VIP is on eth0 {state['vip']} times")
    if state["units"] != ["active"] * len(UNITS):
        problems.append(f"units {state['units']}")
    if not state["lock_free"]:
        problems.append("the lock is held")
    return problems


def standby_problems(state: dict[str, Any]) -> list[str]:
    """How a node's managed state differs from a standby's; [] when it is one."""
    problems = []
    if not state["role"].startswith("Secondary/"):
        problems.append(f"DRBD role {state['role']}")
    if state["mounted"]:
        problems.append(f"/srv still mounted from {state['mounted']}")
    for path, (kind, saved) in state["links"].items():
        if kind != "original" or saved:
            problems.append(f"{path}: {kind}, a .drbdlinks left: {saved}")
    if state["vip"] != 0:
        problems.append(f"the VIP is on eth0 {state['vip']} times")
    if any(unit == "active" for unit in state["units"]):
        problems.append(f"units {state['units']}")
    if not state["lock_free"]:
        problems.append("the lock is held")
    return problems


def install_killer(target: Node) -> None:
    """Put the killer (tests/lab/provision/killpoint.py) into a node."""
    target.agent.write_file(KILLPOINT, (LAB / "provision" / "killpoint.py").read_bytes(), 0o755)


def kill_at(target: Node, verb: str, point: str) -> dict[str, Any]:
    """`hanode VERB` on a node, SIGKILLed at POINT (see killpoint.py); what happened."""
    result = target.agent.exec([KILLPOINT, verb, point], timeout=600)
    assert result.exitcode == 0, result.stderr
    outcome: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return outcome


def set_link(target: Node, network: str, up: bool) -> None:
    """Plug or pull a node's cable on a network ("cross" or "public"): the guest sees
    its NIC lose or regain carrier."""
    target.monitor.call("set_link", {"name": network, "up": up})


def set_tap(target: Node, network: str, up: bool) -> None:
    """Cut or mend a node's link on the switch side (its tap in the lab's namespace): works
    while the node is off, and the guest sees its carrier up but nothing gets through."""
    net.set_tap(net.tap(target.name, network), up)


@dataclass
class WriteLoad:
    """The client inserts numbered rows through the VIP, one transaction each, and keeps
    the numbers whose COMMIT was acknowledged; a failure's time is kept too, so the
    outage the client saw can be measured."""

    table: str = "load"
    committed: list[int] = field(default_factory=list)
    failures: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _last_ok: float = 0.0
    _outages: list[float] = field(default_factory=list)

    def _run(self) -> None:
        number = 0
        down_since: float | None = None
        while not self._stop.is_set():
            number += 1
            sql = f"insert into {self.table} (id) values ({number})"  # noqa: S608 (an int)
            try:
                done = psql(sql, timeout=15)
                ok = done.returncode == 0
            except subprocess.TimeoutExpired:
                ok = False  # a query in flight on a node that died: the client gives up
            now = time.monotonic()
            if ok:
                self.committed.append(number)
                if down_since is not None:
                    self._outages.append(now - down_since)
                    down_since = None
            else:
                self.failures.append(now)
                if down_since is None:
                    down_since = now
                time.sleep(0.2)

    def start(self) -> WriteLoad:
        """Create the table if needed and begin the load in the background."""
        done = psql(f"create table if not exists {self.table} (id integer primary key)")
        assert done.returncode == 0, done.stderr
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the load (waits for the insert in flight to end)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    def wait_rows(self, count: int, timeout: float = 120) -> None:
        """Wait until at least ``count`` more rows are committed than now."""
        target = len(self.committed) + count
        lab.wait_for(lambda: len(self.committed) >= target, timeout, f"{count} committed rows")

    @property
    def longest_outage(self) -> float:
        """The longest stretch, in seconds, in which no insert succeeded."""
        return round(max(self._outages, default=0.0), 2)

    def lost(self) -> list[int]:
        """Committed rows that are not in the table now (asked through the VIP)."""
        done = psql(f"select id from {self.table}")  # noqa: S608 (a fixed name)
        assert done.returncode == 0, done.stderr
        present = {int(line) for line in done.stdout.split()}
        return sorted(set(self.committed) - present)


def psql(sql: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """SQL through the floating IP, as the client (psql, one connection per call)."""
    return lab.client(
        [
            "env",
            "PGCONNECT_TIMEOUT=5",
            "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            lab.VIP,
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            sql,
        ],
        timeout=timeout,
    )


# Run as the client: GET the node-naming CGI through the VIP every 0.1 s, one line per
# answer: "<CLOCK_MONOTONIC seconds> <node or ->" (the host reads the same clock).
_WATCH = r"""
import sys, time, urllib.request
while True:
    began = time.monotonic()
    try:
        answer = urllib.request.urlopen(sys.argv[1], timeout=1).read().decode().split()[-1]
    except Exception:
        answer = "-"
    print(f"{time.monotonic():.3f} {answer}", flush=True)
    time.sleep(max(0.0, 0.1 - (time.monotonic() - began)))
"""


class Watch:
    """Which node serves the client, asked through the VIP every 0.1 s in the background:
    the moment a given node first answered is the end of a failover as a user sees it."""

    def __init__(self) -> None:
        self.answers: list[tuple[float, str]] = []
        self._proc = subprocess.Popen(
            net.client_argv(
                ["/usr/bin/python3", "-u", "-c", _WATCH, f"http://{lab.VIP}/cgi-bin/node"]
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            stamp, answer = line.split()
            self.answers.append((float(stamp), answer))

    def first(self, node: str, since: float, timeout: float = 300) -> float:
        """Seconds from ``since`` (time.monotonic()) to the first answer by ``node``."""

        def seen() -> float | None:
            return next((t for t, who in list(self.answers) if t >= since and who == node), None)

        lab.wait_for(lambda: seen() is not None, timeout, f"the client served by {node}")
        stamp = seen()
        assert stamp is not None
        return round(stamp - since, 2)

    def close(self) -> None:
        """Stop asking."""
        self._proc.terminate()
        self._proc.wait(10)
