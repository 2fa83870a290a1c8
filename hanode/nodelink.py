"""Running hanode's own verbs on a node of the pair: this one, or the peer.

The two-node verbs (switchover, status and check of both nodes) drive each node through
the same small interface, a ``NodeLink``: ``call(argv, timeout)`` runs one hanode verb
there and returns its ``Reply``. ``LocalNode`` runs it here as a child process (the same
interpreter, the same config file), so the local node goes through exactly the code path
the peer's forced command runs; ``hanode.peer.Peer`` runs it on the other node over SSH.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import hanode
from hanode.run import Completed, run


@dataclass(frozen=True)
class Reply:
    """What one hanode verb did on one node."""

    node: str
    argv: tuple[str, ...]
    exitcode: int
    stdout: str
    stderr: str
    seconds: float

    @classmethod
    def of(cls, node: str, argv: Sequence[str], done: Completed, began: float) -> Reply:
        """The reply of a command that ran to its end, begun at monotonic ``began``."""
        return cls(
            node, tuple(argv), done.returncode, done.stdout, done.stderr, time.monotonic() - began
        )


class NodeLink(Protocol):
    """One node of the pair, reached to run hanode verbs."""

    @property
    def name(self) -> str:
        """The node's name (its ``uname -n``)."""
        ...

    def call(self, argv: Sequence[str], timeout: float) -> Reply:
        """Run ``hanode ARGV`` there; raises HanodeError when it cannot be run at all."""
        ...


class LocalNode:
    """This node: hanode's verbs run as a child of this process, on the same config."""

    def __init__(self, name: str, config: Path, options: Sequence[str] = ()) -> None:
        self._name = name
        self.config = config
        self.options = tuple(options)  # common options passed on (--insecure-config, --debug)

    @property
    def name(self) -> str:
        """This node's name."""
        return self._name

    def call(self, argv: Sequence[str], timeout: float) -> Reply:
        """Run ``hanode -c CONFIG ARGV`` here; its exit status is in the reply."""
        command = [sys.executable, "-m", "hanode", "-c", str(self.config), *self.options, *argv]
        # the child imports the very package this process runs, wherever it was loaded from
        package_root = str(Path(hanode.__file__).resolve().parent.parent)
        began = time.monotonic()
        done = run(command, timeout=timeout, check=False, env={"PYTHONPATH": package_root})
        return Reply.of(self._name, argv, done, began)
