"""The command line: verbs → engine, output for people or --json, errors as one line.

Exit codes (start/stop/check/import-drbdlinks): 0 done; 1 failed, node left safe;
2 usage or config error, nothing touched; 4 refused for safety, nothing touched.
status: 0 all up, 1 partly up, 3 all down, 4 unknown.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hanode import __version__, interrupt
from hanode import log as hlog
from hanode.config import Config, config_path, load
from hanode.engine import Action, Engine, overall
from hanode.errors import ConfigError, Exit, HanodeError, Interrupted, StatusExit
from hanode.resources import Context, Level, Resource, Status, build
from hanode.run import search_path

if TYPE_CHECKING:
    from hanode.nodelink import NodeLink

logger = logging.getLogger("hanode")


def _columns() -> int:
    """The terminal's width as shutil.get_terminal_size() finds it: $COLUMNS, else the
    terminal on stdout, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's own, sized as argparse sizes it, without its import of shutil (and of
    the compression modules shutil pulls in) on every run: the parser checks each option
    it is given with a formatter, so even `hanode status` would pay for it."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        width = _columns() - 2 if width is None else width
        super().__init__(prog, indent_increment, max_help_position, width)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser, its subparsers too, formatting with _HelpFormatter."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


# Options accepted before or after the verb: `hanode -c F start` and `hanode start -c F`.
_COMMON = _Parser(add_help=False)
_COMMON.add_argument(
    "-c",
    "--config",
    metavar="FILE",
    default=argparse.SUPPRESS,
    help="configuration file (default: $HANODE_CONFIG, else /etc/hanode/hanode.toml)",
)
_COMMON.add_argument(
    "--insecure-config",
    action="store_true",
    default=argparse.SUPPRESS,
    help="accept a config file not owned by root or writable by others (tests only)",
)
_COMMON.add_argument(
    "--debug",
    action="store_true",
    default=argparse.SUPPRESS,
    help="log every command run and show tracebacks",
)
_COMMON.add_argument(
    "-q",
    "--quiet",
    action="store_true",
    default=argparse.SUPPRESS,
    help="print only warnings and errors",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to write the man page and completion)."""
    parser = _Parser(
        prog="hanode",
        description="Make this node of a two-node DRBD cluster the active one, or the standby.",
        parents=[_COMMON],
    )
    parser.add_argument("--version", action="version", version=f"hanode {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    start = verbs.add_parser("start", parents=[_COMMON], help="become the active node")
    start.add_argument(
        "--force",
        action="store_true",
        help="promote DRBD although it is not known to be safe (each override is logged)",
    )
    start.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")

    stop = verbs.add_parser(
        "stop", parents=[_COMMON], help="become the standby (mirror image of start)"
    )
    stop.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")
    stop.add_argument(
        "--down", action="store_true", help="also take the DRBD resource down (stops replication)"
    )

    status = verbs.add_parser("status", parents=[_COMMON], help="what is up, step by step")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--arp",
        action="store_true",
        help="also ask the segment which MAC answers for a floating IPv4 address "
        "not on this node (up to a second)",
    )

    check = verbs.add_parser(
        "check", parents=[_COMMON], help="validate the config and this node, change nothing"
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")

    switchover = verbs.add_parser(
        "switchover",
        parents=[_COMMON],
        help="make the standby node the active one and the active node the standby",
    )
    switchover.add_argument(
        "--dry-run", action="store_true", help="check both nodes and show the plan, change nothing"
    )
    switchover.add_argument("--json", action="store_true", help="machine-readable report")

    importer = verbs.add_parser(
        "import-drbdlinks",
        parents=[_COMMON],
        help="copy the links of a drbdlinks config into hanode.toml's [links]",
    )
    importer.add_argument(
        "drbdlinks_conf",
        nargs="?",
        default="/etc/drbdlinks.conf",
        metavar="DRBDLINKS_CONF",
        help="default: /etc/drbdlinks.conf",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run hanode; returns the exit code."""
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    hlog.setup(debug=debug, quiet=getattr(args, "quiet", False))
    try:
        return _run(args, debug)
    finally:
        # The process ends next: spare the interpreter's last collection over everything
        # loaded (a tenth of a status run); objects still go as their references drop.
        gc.freeze()


def _run(args: argparse.Namespace, debug: bool) -> int:
    try:
        return _dispatch(args)
    except HanodeError as err:
        if debug:
            traceback.print_exc()
        logger.error("%s", err)
        return int(err.code)
    except KeyboardInterrupt:
        logger.error("interrupted")
        return int(Exit.FAILED)
    except Interrupted as err:  # the engine turns its own into a StepFailed: a safety net
        logger.error("%s", err)
        return int(Exit.FAILED)
    except Exception as err:
        if debug:
            traceback.print_exc()
        logger.error(
            "internal error: %s: %s (run with --debug for the traceback)", type(err).__name__, err
        )
        return int(Exit.FAILED)


def _dispatch(args: argparse.Namespace) -> int:
    search_path()  # an unsafe HANODE_PATH is refused before anything is read or run
    path = config_path(getattr(args, "config", None))
    if args.verb == "import-drbdlinks":
        return _import_drbdlinks(Path(args.drbdlinks_conf), path)
    config = load(path, insecure=getattr(args, "insecure_config", False))
    if not config.sections():
        raise ConfigError(
            f"{path}: no section is configured, hanode manages nothing",
            "uncomment the sections that apply to this node",
        )
    if args.verb == "switchover":
        return _switchover(config, args)
    engine = Engine(build(config))
    if args.verb == "status":
        return _status(engine, config, as_json=args.json, arp=args.arp)
    if args.verb == "check":
        return _check(engine, config, as_json=args.json)
    action = Action(args.verb)
    ctx = Context(
        force=getattr(args, "force", False),
        down=getattr(args, "down", False),
        progress=hlog.progress,
    )
    if args.dry_run:
        return _plan(engine, action, ctx)
    # Never hold the mount we may unmount (an admin often runs this from inside /srv).
    os.chdir("/")
    # Guarded up to the last line: a signal after the work is logged, not an exit 1 with
    # the work done (the engine raises it only while steps run).
    with interrupt.guarded():
        report = engine.start(ctx) if action is Action.START else engine.stop(ctx)
        done = "active" if action is Action.START else "standby"
        logger.info("node is %s (%s took %.2fs)", done, action.value, report.seconds)
    return int(Exit.OK)


def _plan(engine: Engine, action: Action, ctx: Context) -> int:
    out = sys.stdout
    out.write(f"plan for {action.value} (dry run: nothing is changed)\n")
    for number, line in enumerate(engine.plan(action, ctx), start=1):
        out.write(f"{number}. {line.step:<11} now {line.state.value:<8} {line.summary}\n")
        if not line.actions:
            out.write("     - skip: already in the wanted state\n")
        for item in line.actions:
            out.write(f"     - {item}\n")
    return int(Exit.OK)


def _status(engine: Engine, config: Config, *, as_json: bool, arp: bool = False) -> int:
    probes = engine.probe_all()
    observed = _arp_observations(probes) if arp else {}
    code = overall([status.state for _, status, _ in probes])
    last_start = engine.last_report(Action.START)
    last_stop = engine.last_report(Action.STOP)
    verdict = code.verdict
    node = os.uname().nodename
    if as_json:
        document = {
            "node": node,
            "config": str(config.path),
            "state": verdict,
            "exit": int(code),
            "resources": [
                {
                    "name": resource.name,
                    "state": status.state.value,
                    "summary": status.summary,
                    "details": {**status.details, **observed.get(resource.name, {})},
                    "probe_seconds": round(seconds, 4),
                }
                for resource, status, seconds in probes
            ],
            "last_start": last_start,
            "last_stop": last_stop,
        }
        json.dump(document, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
        return int(code)
    out = sys.stdout
    out.write(f"{node}: {verdict}\n")
    for resource, status, _ in probes:
        out.write(f"  {resource.name:<11} {status.state.value:<8} {status.summary}\n")
        seen = observed.get(resource.name)
        if seen is not None:
            holder = seen["arp-holder"] or f"nobody ({seen.get('arp-error', 'no answer')})"
            out.write(f"  {'':<11} {'':<8} ARP: answered by {holder}\n")
    if code is not StatusExit.ALL_DOWN and last_start:
        out.write(_describe_run("last start", last_start))
    elif last_stop:
        out.write(_describe_run("last stop", last_stop))
    return int(code)


def _arp_observations(
    probes: Sequence[tuple[Resource[Any], Status, float]],
) -> dict[str, dict[str, object]]:
    """status --arp: for each floating address not on this node, the MAC that answers ARP
    for it on its segment ("arp-holder", None when none does; "arp-error" when it cannot
    be asked). A switchover reads it on the old node to see the new one answer."""
    from hanode.resources.address import FloatingAddress

    observed: dict[str, dict[str, object]] = {}
    for resource, status, _ in probes:
        if not isinstance(resource, FloatingAddress) or status.details.get("present"):
            continue
        try:
            observed[resource.name] = {"arp-holder": resource.arp_holder()}
        except HanodeError as err:
            observed[resource.name] = {"arp-holder": None, "arp-error": str(err)}
    return observed


def _describe_run(title: str, report: dict[str, object]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(str(report["started_at"]))))
    result = "ok" if report.get("ok") else "FAILED"
    steps = report.get("steps")
    parts = []
    if isinstance(steps, list):
        for step in steps:
            if isinstance(step, dict):
                parts.append(f"{step['step']} {step['result']} {float(step['seconds']):.2f}s")
    return (
        f"  {title}: {when}, {result} in {float(str(report['seconds'])):.2f}s: {', '.join(parts)}\n"
    )


def _check(engine: Engine, config: Config, *, as_json: bool = False) -> int:
    if as_json:
        findings = engine.check()
        failed = any(finding.level is Level.ERROR for _, finding in findings)
        document = {
            "node": os.uname().nodename,
            "config": str(config.path),
            "exit": int(Exit.FAILED if failed else Exit.OK),
            "findings": [
                {"step": step, "level": f.level.value, "message": f.message, "hint": f.hint}
                for step, f in findings
            ],
        }
        json.dump(document, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return int(Exit.FAILED if failed else Exit.OK)
    out = sys.stdout
    out.write(f"config {config.path}: ok (sections: {', '.join(config.sections())})\n")
    errors = 0
    for step, finding in engine.check():
        if finding.level is Level.ERROR:
            errors += 1
        line = f"{finding.level.value:<8} {step:<11} {finding.message}"
        if finding.hint:
            line += f" ({finding.hint})"
        out.write(line + "\n")
    if errors:
        out.write(f"{errors} problem(s) found: this node cannot start as configured\n")
        return int(Exit.FAILED)
    out.write("this node can start as configured\n")
    return int(Exit.OK)


def _switchover(config: Config, args: argparse.Namespace) -> int:
    from hanode.nodelink import LocalNode
    from hanode.switchover import Switchover, verb_timeouts

    options = ["--insecure-config"] if getattr(args, "insecure_config", False) else []
    local = LocalNode(os.uname().nodename, config.path, options)
    peer = _peer_link(config)
    switch = Switchover(
        local,
        peer,
        timeouts=verb_timeouts(config),
        progress=hlog.progress,
        out=sys.stdout,
    )
    return int(switch.run(dry_run=args.dry_run, as_json=args.json))


def _peer_link(config: Config) -> NodeLink:
    """The other node of the pair. Until the SSH transport (hanode.peer, [peer]) is in
    this build, there is none to reach: a config error naming what is missing."""
    raise ConfigError(
        f"{config.path}: no [peer] section: switchover cannot reach the other node",
        "this build of hanode has no peer transport yet ([peer], hanode.peer)",
    )


def _import_drbdlinks(conf: Path, toml_path: Path) -> int:
    from hanode.importers.drbdlinks import import_drbdlinks

    report = import_drbdlinks(conf, toml_path)
    for line in report.lines():
        sys.stdout.write(line + "\n")
    return int(Exit.OK)
