"""The program's start: ``/usr/bin/hanode`` and ``python3 -m hanode`` call main() here.

Loading hanode builds a few thousand objects that live until the process ends (classes,
their generated methods, the parser, the config): the cyclic garbage collector's passes
while they load find nothing to free and cost a tenth of a ``hanode status``. It is off
from here until hanode.cli has read the config, then on again with what startup built
frozen out of its sight (hanode.cli.collect_from_here)."""

from __future__ import annotations

import gc


def main() -> int:
    """Run hanode's command line, the collector paused while it loads."""
    gc.disable()
    from hanode.cli import main as cli_main

    return cli_main()
