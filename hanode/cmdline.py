"""hanode's command line: the parser, and nothing the verbs need.

/usr/bin/hanode parses its arguments with this module alone loaded (argparse and hanode's
version), so that a start can begin its duplicate-address probe (hanode.early) before the
rest of hanode loads; hanode.cli runs the verbs.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from hanode import __version__


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
    output = status.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="machine-readable output")
    output.add_argument(
        "--nagios",
        action="store_true",
        help="one Nagios plugin line with perfdata; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN",
    )
    status.add_argument(
        "--textfile",
        metavar="PATH",
        help="write the state as Prometheus metrics to PATH, atomically (node-exporter's "
        "textfile collector); prints nothing else unless --json or --nagios is given",
    )
    status.add_argument(
        "--peer", action="store_true", help="both nodes: also the peer's status, over SSH"
    )
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
    check.add_argument(
        "--peer",
        action="store_true",
        help="compare this node's facts with the peer's (over SSH), print the differences",
    )

    switchover = verbs.add_parser(
        "switchover",
        parents=[_COMMON],
        help="make the standby node the active one and the active node the standby",
    )
    switchover.add_argument(
        "--dry-run", action="store_true", help="check both nodes and show the plan, change nothing"
    )
    switchover.add_argument("--json", action="store_true", help="machine-readable report")

    verbs.add_parser(
        "survey",
        parents=[_COMMON],
        help="status, check and facts of this node as one JSON document (what "
        "switchover's preflight asks of each node, in one call)",
    )
    verbs.add_parser(
        "facts",
        parents=[_COMMON],
        help="what the drift check compares, as one JSON document",
    )
    verbs.add_parser(
        "peer-key",
        parents=[_COMMON],
        help="print the authorized_keys line the peer needs for this node's key",
    )
    verbs.add_parser(
        "peer-serve",
        help="the forced command of the peer's key: run one allowed verb from "
        "$SSH_ORIGINAL_COMMAND",
    )

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
