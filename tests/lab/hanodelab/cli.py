"""labctl's verbs (see tests/lab/labctl)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from hanodelab import image, lab, net, tools
from hanodelab.image import PLAIN
from hanodelab.progress import say
from hanodelab.qga import AgentError

# The host commands each verb runs: checked (and installed) before it starts. exec, kill
# and status talk to the guests' sockets and read /proc only.
NEEDS = {
    "up": tools.LAB,
    "images": tools.IMAGES,
    "demo": tools.LAB,
    "boot": tools.VMS,
    "reset": tools.VMS,
    "client": tools.NET,
    "down": tools.NET,
}


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def _up(profile: str) -> int:
    try:
        state = lab.up(profile)
    except BaseException:
        if os.environ.get("HANODE_LAB_KEEP"):
            say("HANODE_LAB_KEEP is set: the lab is left as it is; `labctl down` removes it")
        else:
            say(
                "up failed: cleaning up (serial logs are kept in build/lab/logs; set "
                "HANODE_LAB_KEEP=1 to leave the VMs running for a look)"
            )
            lab.down(quiet=True)
        raise
    say(
        "lab up: "
        + ", ".join(f"{k} {v}s" for k, v in state.get("timings", {}).items() if k != "image cached")
    )
    return 0


def _exec(name: str, command: list[str]) -> int:
    target = lab.node(name)
    if not target.running():  # its agent's socket is gone too: say so, not a traceback
        raise lab.LabError(f"{name} is not running: `tests/lab/labctl up` or `boot {name}`")
    result = target.agent.sh(" ".join(command), timeout=3600)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.exitcode


def _images() -> int:
    """Build the image of every profile that is missing, one after the other; the image
    a lab that is up runs on is kept, even when its recipe has changed since."""
    state = lab.load_state()
    keep = frozenset([Path(state["image"]["root"]).parent]) if state.get("ready") else frozenset()
    for profile in image.PROFILES:
        _, built = image.ensure(profile, keep)
        say(f"{profile} image: " + ("cached" if built is None else f"built in {built:.1f}s"))
    return 0


def _client(command: list[str]) -> int:
    if not net.exists():
        raise lab.LabError("the lab's namespace does not exist: run `tests/lab/labctl up`")
    return subprocess.run(net.client_argv(command), check=False).returncode


def _boot(name: str) -> int:
    target = lab.node(name)
    if target.running():
        say(f"{name} is already running")
        return 0
    lab.boot([target], lab.current_image(), f"booting {name}")  # LabError if not up
    return 0


def main(argv: list[str]) -> int:
    """Run one labctl verb; its exit status."""
    parser = argparse.ArgumentParser(prog="labctl", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    up = verbs.add_parser("up", help="build, boot and provision the lab (idempotent)")
    up.add_argument(
        "--pacemaker",
        action="store_const",
        const="pacemaker",
        default=PLAIN,
        dest="profile",
        help="the pacemaker profile: corosync + Pacemaker run hanode (ocf:hanode:hanode)",
    )
    verbs.add_parser("images", help="build the guest image of each profile that is not built yet")
    run = verbs.add_parser("exec", help="run a shell command in a node as root")
    run.add_argument("node")
    run.add_argument("command", nargs=argparse.REMAINDER)
    verbs.add_parser("kill", help="hard power-off of a node").add_argument("node")
    verbs.add_parser("boot", help="power on a node").add_argument("node")
    client = verbs.add_parser("client", help="run a command as the client (192.0.2.100)")
    client.add_argument("command", nargs=argparse.REMAINDER)
    verbs.add_parser("reset", help="both nodes back to the snapshot taken by up")
    verbs.add_parser("status", help="what runs")
    verbs.add_parser("down", help="remove every VM, the namespace, taps and disks")
    verbs.add_parser("demo", help="up, status, a switchover, status, down")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        say("labctl: error: needs root (qemu taps in a network namespace): run it with sudo")
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        # Before anything is touched: up and demo clean up after a failure with down.
        tools.require(NEEDS.get(args.verb, ()))
        if args.verb == "up":
            return _up(args.profile)
        if args.verb == "images":
            return _images()
        if args.verb == "exec":
            if not args.command:
                parser.error("exec needs a command")
            return _exec(args.node, args.command)
        if args.verb == "kill":
            lab.node(args.node).kill()
            return 0
        if args.verb == "boot":
            return _boot(args.node)
        if args.verb == "client":
            if not args.command:
                parser.error("client needs a command")
            return _client(args.command)
        if args.verb == "reset":
            say(f"reset in {lab.reset():.1f}s")
            return 0
        if args.verb == "status":
            print(json.dumps(lab.status(), indent=2))
            return 0
        if args.verb == "down":
            lab.down()
            return 0
        if args.verb == "demo":
            from hanodelab.demo import demo

            return demo()
    except tools.ToolError as exc:
        say(f"labctl: error: {exc}")
        return 2
    except FileNotFoundError as exc:
        if not tools.could_not_run(exc):
            raise
        say(f"labctl: error: {tools.explain(exc)}")
        return 2
    except (lab.LabError, AgentError) as exc:
        say(f"labctl {args.verb}: {exc}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    raise AssertionError(args.verb)
