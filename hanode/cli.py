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
from hanode.cmdline import build_parser
from hanode.config import Config, config_path, load
from hanode.engine import Action, Engine, overall
from hanode.errors import (
    ConfigError,
    Exit,
    HanodeError,
    Interrupted,
    Refused,
    StatusExit,
    UsageError,
)
from hanode.resources import Context, Finding, Level, Resource, Status, build
from hanode.run import search_path, stderr_tail

if TYPE_CHECKING:
    from concurrent.futures import Future

    from hanode.nodelink import Reply
    from hanode.peer import Peer

logger = logging.getLogger("hanode")
_NAGIOS_UNKNOWN = 3  # a Nagios plugin's exit code when it cannot tell (hanode.monitor)
# The longest a two-node verb waits for one call to the peer (its facts, its status).
_PEER_TIMEOUT = 60.0


def main(argv: Sequence[str] | None = None) -> int:
    """Run hanode; returns the exit code."""
    return main_parsed(build_parser().parse_args(argv))


def main_parsed(args: argparse.Namespace) -> int:
    """Run hanode on arguments build_parser() parsed; returns the exit code."""
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
        return _failed(args, str(err), err.code)
    except KeyboardInterrupt:
        return _failed(args, "interrupted", Exit.FAILED)
    except Interrupted as err:  # the engine turns its own into a StepFailed: a safety net
        return _failed(args, str(err), Exit.FAILED)
    except Exception as err:
        if debug:
            traceback.print_exc()
        what = f"internal error: {type(err).__name__}: {err}"
        return _failed(args, f"{what} (run with --debug for the traceback)", Exit.FAILED)


def _failed(args: argparse.Namespace, message: str, code: Exit) -> int:
    """Log the error; its exit code, or for `status --nagios` UNKNOWN (3) and the error
    as the plugin's one line, as the plugin guidelines want of a plugin that cannot tell."""
    logger.error("%s", message)
    if getattr(args, "nagios", False):
        text = " ".join(message.replace("|", "/").split())
        sys.stdout.write(f"HANODE UNKNOWN - {text}\n")
        return _NAGIOS_UNKNOWN
    return int(code)


def collect_from_here() -> None:
    """The end of startup (hanode.entry paused the cyclic collector for it): what it
    built lives until the process ends, so it is frozen out of the collector's sight,
    and the collector runs again for what the verb allocates."""
    gc.freeze()
    gc.enable()


def _dispatch(args: argparse.Namespace) -> int:
    search_path()  # an unsafe HANODE_PATH is refused before anything is read or run
    if args.verb == "peer-serve":
        return _peer_serve(args)
    path = config_path(getattr(args, "config", None))
    if args.verb == "import-drbdlinks":
        collect_from_here()
        return _import_drbdlinks(Path(args.drbdlinks_conf), path)
    config = load(path, insecure=getattr(args, "insecure_config", False))
    collect_from_here()  # loaded: every resource kind is imported, the config parsed
    if args.verb == "peer-key":
        from hanode.peer import authorized_line, peer_config

        sys.stdout.write(authorized_line(peer_config(config)) + "\n")
        return int(Exit.OK)
    if not config.sections():
        raise ConfigError(
            f"{path}: no section is configured, hanode manages nothing",
            "uncomment the sections that apply to this node",
        )
    if args.verb == "switchover":
        return _switchover(config, args)
    engine = Engine(build(config))
    if args.verb == "status":
        if args.peer:
            if args.nagios or args.textfile is not None:
                raise UsageError("status --peer takes --json, not --nagios or --textfile")
            return _status_pair(engine, config, as_json=args.json)
        return _status(engine, config, args)
    if args.verb == "check":
        if args.peer:
            return _check_peer(config, as_json=args.json)
        return _check(engine, config, as_json=args.json)
    if args.verb == "survey":
        return _survey(engine, config)
    if args.verb == "facts":
        from hanode.facts import gather

        json.dump(gather(config), sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
        return int(Exit.OK)
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


def _status_document(
    config: Config,
    code: StatusExit,
    probes: list[tuple[Resource[Any], Status, float]],
    last_start: dict[str, object] | None,
    last_stop: dict[str, object] | None,
) -> dict[str, Any]:
    """This node's status as `status --json` prints it."""
    return {
        "node": os.uname().nodename,
        "config": str(config.path),
        "state": code.verdict,
        "exit": int(code),
        "resources": [
            {
                "name": resource.name,
                "state": status.state.value,
                "summary": status.summary,
                "details": dict(status.details),  # its own copy: --arp adds to it
                "probe_seconds": round(seconds, 4),
            }
            for resource, status, seconds in probes
        ],
        "last_start": last_start,
        "last_stop": last_stop,
    }


def _probed_document(engine: Engine, config: Config) -> dict[str, Any]:
    """Probe every step now: this node's `status --json` document."""
    probes = engine.probe_all()
    code = overall([status.state for _, status, _ in probes])
    return _status_document(
        config, code, probes, engine.last_report(Action.START), engine.last_report(Action.STOP)
    )


def _status(engine: Engine, config: Config, args: argparse.Namespace) -> int:
    probes = engine.probe_all()
    observed = _arp_observations(probes) if args.arp else {}
    code = overall([status.state for _, status, _ in probes])
    last_start = engine.last_report(Action.START)
    last_stop = engine.last_report(Action.STOP)
    if args.nagios or args.textfile is not None:
        plugin_code = _monitor(engine, args, code, probes, last_start, last_stop)
        if plugin_code is not None:
            return plugin_code
        if not args.json:
            return int(code)  # --textfile alone prints nothing: a timer's job
    document = _status_document(config, code, probes, last_start, last_stop)
    for resource in document["resources"]:
        resource["details"].update(observed.get(resource["name"], {}))
    if args.json:
        json.dump(document, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(_describe_status(document))
    return int(code)


def _monitor(
    engine: Engine,
    args: argparse.Namespace,
    code: StatusExit,
    probes: list[tuple[Resource[Any], Status, float]],
    last_start: dict[str, object] | None,
    last_stop: dict[str, object] | None,
) -> int | None:
    """Write --textfile; print the --nagios line and return its exit code (else None)."""
    from hanode import monitor

    snapshot = monitor.snapshot_of(
        os.uname().nodename,
        code,
        [(resource.name, status, seconds) for resource, status, seconds in probes],
        last_start,
        last_stop,
        engine.read_document(monitor.SWITCHOVER_REPORT),
    )
    if args.textfile is not None:
        monitor.write_textfile(args.textfile, monitor.prometheus(snapshot))
    if not args.nagios:
        return None
    plugin_code, line = monitor.nagios(snapshot)
    sys.stdout.write(line + "\n")
    return int(plugin_code)


def _describe_status(document: dict[str, Any]) -> str:
    """A node's `status --json` document for people: its verdict, its steps, its last run."""
    lines = [f"{document['node']}: {document['state']}\n"]
    for resource in document["resources"]:
        lines.append(f"  {resource['name']:<11} {resource['state']:<8} {resource['summary']}\n")
        if "arp-holder" in resource["details"]:
            seen = resource["details"]
            holder = seen["arp-holder"] or f"nobody ({seen.get('arp-error', 'no answer')})"
            lines.append(f"  {'':<11} {'':<8} ARP: answered by {holder}\n")
    last_start, last_stop = document.get("last_start"), document.get("last_stop")
    if document["exit"] != StatusExit.ALL_DOWN and last_start:
        lines.append(_describe_run("last start", last_start))
    elif last_stop:
        lines.append(_describe_run("last stop", last_stop))
    return "".join(lines)


def _status_pair(engine: Engine, config: Config, *, as_json: bool) -> int:
    """`status --peer`: this node's status and the peer's (one SSH call), side by side;
    the exit code is this node's, or 4 when the peer cannot be read."""
    from hanode.peer import Peer, PeerUnreachable, peer_config

    peer = Peer(peer_config(config))
    asked = _ask_peer(peer, ["status", "--json"])
    local = _probed_document(engine, config)
    remote: dict[str, Any] | None = None
    problem = ""
    try:
        reply = asked.result()
        remote = _peer_json(reply.stdout)
        if remote is None:
            problem = f"peer {peer.name}: status --json gave no JSON (exit {reply.exitcode})"
            tail = stderr_tail(reply.stderr, 1)
            if tail:
                problem += f": {tail}"
    except PeerUnreachable as err:
        problem = str(err)
    if as_json:
        nodes = [local] + ([remote] if remote is not None else [])
        document: dict[str, Any] = {"nodes": nodes}
        if problem:
            document["peer_error"] = problem
        json.dump(document, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
    elif remote is None:
        sys.stdout.write(_describe_status(local))
    else:
        sys.stdout.write(_describe_pair(local, remote))
    if problem:
        logger.error("%s", problem)
        return int(StatusExit.UNKNOWN)
    return int(local["exit"])


def _ask_peer(peer: Peer, argv: list[str]) -> Future[Reply]:
    """Start the peer's call of ``argv`` in a thread of its own, beside this node's own
    reads: both mostly wait (on the peer; on this node's processes and systemd), so side
    by side they take the longer of the two instead of the sum. The future's result() is
    the reply, or raises what the call raised (PeerUnreachable)."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hanode-peer-call")
    try:
        return pool.submit(peer.call, argv, timeout=_PEER_TIMEOUT)
    finally:
        pool.shutdown(wait=False)  # the call runs on; nothing else is submitted


def _describe_pair(local: dict[str, Any], remote: dict[str, Any]) -> str:
    """Two nodes' `status --json` documents as one table: a column per node, a row per
    step, then each node's last run."""
    columns = [local, remote]
    width = max(11, *(len(str(node["node"])) + 2 for node in columns))
    steps: list[str] = []
    for node in columns:
        steps += [r["name"] for r in node["resources"] if r["name"] not in steps]
    lines = [" " * 13 + "".join(f"{node['node']:<{width}}" for node in columns).rstrip() + "\n"]
    lines.append(f"  {'node':<11}" + "".join(f"{n['state']:<{width}}" for n in columns).rstrip())
    lines[-1] += "\n"
    for step in steps:
        states = [
            next((r["state"] for r in node["resources"] if r["name"] == step), "-")
            for node in columns
        ]
        lines.append(f"  {step:<11}" + "".join(f"{s:<{width}}" for s in states).rstrip() + "\n")
    for node in columns:
        last_start, last_stop = node.get("last_start"), node.get("last_stop")
        if node["exit"] != StatusExit.ALL_DOWN and last_start:
            lines.append(_describe_run(f"{node['node']} last start", last_start))
        elif last_stop:
            lines.append(_describe_run(f"{node['node']} last stop", last_stop))
    return "".join(lines)


def _peer_json(text: str) -> dict[str, Any] | None:
    """The JSON object a peer's verb printed; None when it printed something else."""
    try:
        document = json.loads(text)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


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


def _findings(engine: Engine, config: Config) -> list[tuple[str, Finding]]:
    """What `hanode check` finds: every step's findings, and [peer]'s."""
    findings = engine.check()
    if config.peer is not None:
        from hanode.peer import check_peer

        findings += [("peer", finding) for finding in check_peer(config.peer)]
    return findings


def _check_document(config: Config, findings: list[tuple[str, Finding]]) -> dict[str, Any]:
    """`check --json`'s document."""
    return {
        "node": os.uname().nodename,
        "config": str(config.path),
        "exit": int(_check_code(findings)),
        "findings": [
            {
                "step": step,
                "level": finding.level.value,
                "message": finding.message,
                "hint": finding.hint,
            }
            for step, finding in findings
        ],
    }


def _check_code(findings: list[tuple[str, Finding]]) -> Exit:
    failed = any(finding.level is Level.ERROR for _, finding in findings)
    return Exit.FAILED if failed else Exit.OK


def _survey(engine: Engine, config: Config) -> int:
    """`survey`: this node's status, check and facts in one document (exit 0: each part
    carries its own exit, or its error)."""
    from hanode.facts import gather

    findings = _findings(engine, config)
    document: dict[str, Any] = {
        "status": _probed_document(engine, config),
        "check": _check_document(config, findings),
    }
    try:
        document["facts"] = gather(config)
    except HanodeError as err:
        document["facts"], document["facts_error"] = None, str(err)
    json.dump(document, sys.stdout, indent=1, default=str)
    sys.stdout.write("\n")
    return int(Exit.OK)


def _check(engine: Engine, config: Config, *, as_json: bool) -> int:
    findings = _findings(engine, config)
    errors = sum(1 for _, finding in findings if finding.level is Level.ERROR)
    code = _check_code(findings)
    if as_json:
        json.dump(_check_document(config, findings), sys.stdout, indent=1)
        sys.stdout.write("\n")
        return int(code)
    out = sys.stdout
    out.write(f"config {config.path}: ok (sections: {', '.join(config.sections())})\n")
    for step, finding in findings:
        line = f"{finding.level.value:<8} {step:<11} {finding.message}"
        if finding.hint:
            line += f" ({finding.hint})"
        out.write(line + "\n")
    if errors:
        out.write(f"{errors} problem(s) found: this node cannot start as configured\n")
        return int(code)
    out.write("this node can start as configured\n")
    return int(code)


def _check_peer(config: Config, *, as_json: bool) -> int:
    """`check --peer`: this node's facts against the peer's (one SSH call, beside this
    node's own reads); prints the differences only. Exit 1 when a must-match fact
    differs, 4 when the peer is not read."""
    from hanode.facts import Severity, drift, gather, shown
    from hanode.peer import Peer, peer_config

    peer = Peer(peer_config(config))
    asked = _ask_peer(peer, ["facts"])
    local = gather(config)
    reply = asked.result()
    remote = _peer_json(reply.stdout)
    if reply.exitcode != 0 or remote is None:
        tail = stderr_tail(reply.stderr, 1) or f"exit {reply.exitcode}, no JSON"
        raise Refused(
            f"peer {peer.name}: `hanode facts` failed there: {tail}",
            f"run `hanode check` on {peer.name}",
        )
    differences = drift(local, remote)
    errors = sum(1 for item in differences if item.severity is Severity.ERROR)
    code = Exit.FAILED if errors else Exit.OK
    if as_json:
        document = {
            "node": local["node"],
            "peer": peer.name,
            "exit": int(code),
            "differences": [item.to_json() for item in differences],
        }
        json.dump(document, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
        return int(code)
    out = sys.stdout
    for item in differences:
        line = f"{item.severity.value:<8} {item.fact}: {local['node']} {shown(item.local)}, "
        line += f"{peer.name} {shown(item.peer)}"
        if item.why:
            line += f" ({item.why})"
        out.write(line + "\n")
    warnings = len(differences) - errors
    if errors:
        out.write(f"{errors} difference(s) that must not be, {warnings} warning(s)\n")
    else:
        out.write(f"{local['node']} and {peer.name} agree ({warnings} warning(s))\n")
    return int(code)


def _peer_serve(args: argparse.Namespace) -> int:
    """peer-serve: run the one allowed request in $SSH_ORIGINAL_COMMAND, always on the
    default config file (hanode.peer.served_argv says what is allowed)."""
    from hanode import config as hconfig
    from hanode.peer import served_argv

    if getattr(args, "config", None) is not None:
        raise UsageError(
            f"peer-serve always reads {hconfig.DEFAULT_PATH}: it takes no -c",
            "remove -c from the forced command",
        )
    request = served_argv(os.environ.get("SSH_ORIGINAL_COMMAND"))
    if request == ["version"]:
        sys.stdout.write(f"hanode {__version__}\n")
        return int(Exit.OK)
    # the default config, never $HANODE_CONFIG: the key's holder chooses nothing
    served = build_parser().parse_args([*request, "-c", str(hconfig.DEFAULT_PATH)])
    return _dispatch(served)


def _switchover(config: Config, args: argparse.Namespace) -> int:
    from hanode.facts import drift
    from hanode.nodelink import LocalNode
    from hanode.peer import Peer, peer_config
    from hanode.switchover import Switchover, verb_timeouts

    options = ["--insecure-config"] if getattr(args, "insecure_config", False) else []
    local = LocalNode(os.uname().nodename, config.path, options)
    peer = Peer(peer_config(config))
    switch = Switchover(
        local,
        peer,
        drift=drift,
        timeouts=verb_timeouts(config),
        progress=hlog.progress,
        out=sys.stdout,
    )
    began, started_at = time.monotonic(), time.time()
    with peer.connection():  # the survey, the verb and the look: one SSH login
        code = switch.run(dry_run=args.dry_run, as_json=args.json)
    if not args.dry_run and code is not Exit.REFUSED:  # it acted: monitoring may ask
        seconds = time.monotonic() - began
        from hanode.monitor import SWITCHOVER_REPORT

        Engine([]).save_document(
            SWITCHOVER_REPORT,
            {
                "seconds": round(seconds, 3),
                "started_at": started_at,
                "finished_at": started_at + seconds,
                "ok": code is Exit.OK,
            },
        )
    return int(code)


def _import_drbdlinks(conf: Path, toml_path: Path) -> int:
    from hanode.importers.drbdlinks import import_drbdlinks

    report = import_drbdlinks(conf, toml_path)
    for line in report.lines():
        sys.stdout.write(line + "\n")
    return int(Exit.OK)
