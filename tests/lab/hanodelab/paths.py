"""Where the lab keeps things: the recipe in the repo, the image cache, the run state."""

from __future__ import annotations

from pathlib import Path

LAB = Path(__file__).resolve().parents[1]  # tests/lab
TOP = LAB.parents[1]  # the project root
RECIPE = LAB / "recipe"
BUILD = TOP / "build" / "lab"  # gitignored: serial logs, the suite's summary
LOGS = BUILD / "logs"
CACHE = Path("/var/cache/hanode-lab")  # images, keyed by a hash of the recipe
RUN = Path("/run/hanode-lab")  # sockets, pid files, the lab's state
DISKS = Path("/var/tmp/hanode-lab")  # per-node copy-on-write disks (with savevm snapshots)
DEB_DIR = TOP / "build" / "deb"
NETNS = "hanode-lab"
