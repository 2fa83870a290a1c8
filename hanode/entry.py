"""The program's start: ``/usr/bin/hanode`` and ``python3 -m hanode`` call run() here.

Loading hanode builds a few thousand objects that live until the process ends (classes,
their generated methods, the parser, the config): the cyclic garbage collector's passes
while they load find nothing to free and cost a tenth of a ``hanode status``. It is off
from here until hanode.cli has read the config, then on again with what startup built
frozen out of its sight (hanode.cli.collect_from_here).

The same objects make the interpreter's own ending slow: it tears down every module
and frees every object one by one, 0.14 s of a lab guest's CPU after each command (the
median of 15 alternating runs), for memory the kernel takes back at once anyway. So
run() ends the process itself once the command is done: it flushes and closes what
holds output (the log's handlers, stdout, stderr), then leaves with os._exit. Nothing
else is left to finish by then: hanode's threads are daemons that only look (preflight
checks, progress lines), the announcer is a process of its own, and hanode registers no
atexit handler.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from typing import NoReturn

from hanode import SYSTEM_PATH

# Python's own exit status when flushing stdout fails at exit (a full disk, a closed pipe)
FLUSH_FAILED = 120


def main() -> int:
    """Run hanode's command line, the collector paused while it loads. The arguments are
    parsed first: a start begins its duplicate-address probe then (hanode.early), and the
    probe's second runs while the rest of hanode loads.

    The process's own PATH is the fixed system one from the start: hanode looks its
    commands up there (hanode.run), and a library that runs one of its own (platform
    does) must not find it on the caller's PATH either, as root."""
    os.environ["PATH"] = SYSTEM_PATH
    gc.disable()
    from hanode import early
    from hanode.cmdline import build_parser

    args = build_parser().parse_args()
    early.begin(args)  # a start that will promote: else nothing
    from hanode.cli import main_parsed

    return main_parsed(args)


def run() -> NoReturn:
    """main(), then the end of the process, without the interpreter's teardown."""
    try:
        code = main()
    except SystemExit as done:  # argparse's --help, --version and usage errors
        code = _exit_status(done.code)
    leave(code)


def _exit_status(code: object) -> int:
    """What the interpreter makes of SystemExit(code): None is 0, an int itself,
    anything else is printed to stderr and is 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write(f"{code}\n")
    return 1


def leave(code: int) -> NoReturn:
    """Flush and close the output, then end the process with ``code``: what the
    interpreter's exit does first, without the teardown it does after."""
    import logging

    logging.shutdown()  # the console and journal handlers, flushed and closed
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        code = code or FLUSH_FAILED  # output lost: never a silent success
    with contextlib.suppress(OSError, ValueError):  # nowhere left to say it
        sys.stderr.flush()
    os._exit(code)
