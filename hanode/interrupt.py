"""SIGTERM and SIGINT while hanode changes the node: raised where it is safe, never lost.

systemd stops a unit (or ends a start that overran its timeout) with SIGTERM; an admin
presses Ctrl-C. While the steps of a start or stop run (``Guard.interruptible``), the
signal becomes ``hanode.errors.Interrupted`` at once, so a start rolls back what it did.
Everywhere else under the guard it is only remembered:

- in a ``deferred()`` section (spawning a child: the exception must not land before the
  Popen object holds the child's pid, or the child escapes the kill), raised as soon as
  the section ends;
- during a rollback and while the node's state is being reported (a rollback must never
  be cut half-way), and after the last step (the work is done: the exit code says so);
  the engine logs it there (``Guard.take``, ``Guard.finished``).

Once one Interrupted is raised, later signals are remembered too: the unwinding (killing
a child, the rollback) is never cut by a second one.

Why not block the signals with pthread_sigmask around the spawn: a child inherits the
blocked mask across fork and exec, and only preexec_fn could unblock it there, which is
unsafe while the progress thread runs.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from hanode.errors import Interrupted

log = logging.getLogger("hanode")

SIGNALS = (signal.SIGTERM, signal.SIGINT)

_Handler = Callable[[int, FrameType | None], Any] | int | None


class Guard:
    """The state the signal handler reads: whether to raise now, and what it remembered."""

    def __init__(self) -> None:
        self.raising = False  # inside interruptible(), and no Interrupted raised yet
        self.depth = 0  # nested deferred() sections
        self.pending: list[int] = []  # signals remembered, not yet raised nor logged
        self.done = ""  # what finished, for a signal that comes after (see finished())

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """The handler of SIGTERM and SIGINT: raise at a safe point, else remember."""
        if self.raising and self.depth == 0:
            self.raising = False  # unwinding from here: a second signal must not cut it
            raise Interrupted(signum)
        self.pending.append(signum)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """A signal raises Interrupted at once in here; one that came before, on entry."""
        self.raising = True
        try:
            if self.pending:
                self.raising = False
                raise Interrupted(self.pending.pop(0))
            yield
        finally:
            self.raising = False

    def take(self) -> list[int]:
        """The signals remembered and not raised; forgotten here: the caller logs them."""
        taken, self.pending = self.pending, []
        return taken

    def finished(self, done: str) -> None:
        """The work is done (``done`` says so): log any signal that came after the last step.

        The run is not failed for it: everything it had to do is done, and the exit code
        says the end state (systemd, stopping a oneshot unit mid-start, runs ExecStop next
        anyway, which is the right answer to its SIGTERM).
        """
        self.done = done
        for signum in self.take():
            log.warning("%s arrived after %s", signal.Signals(signum).name, done)


_active: list[Guard] = []  # the installed guard (at most one)


@contextmanager
def guarded() -> Iterator[Guard]:
    """Catch SIGTERM and SIGINT for the duration; nested, the outer guard is the one.

    Leaving the outermost restores the previous handlers and logs any signal nobody raised
    or logged (one that came after the engine's work, while the CLI finished).
    """
    if _active:
        yield _active[0]
        return
    guard = Guard()
    previous: dict[signal.Signals, _Handler] = {}
    try:
        for sig in SIGNALS:
            previous[sig] = signal.signal(sig, guard.handle)
        _active.append(guard)
        yield guard
    finally:
        _active.clear()
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        for signum in guard.take():
            log.warning(
                "%s arrived after %s", signal.Signals(signum).name, guard.done or "the work ended"
            )


@contextmanager
def deferred() -> Iterator[None]:
    """A section no signal may cut: one that arrives inside is raised when it ends.

    Raised only where a signal would have been raised at once (inside interruptible(),
    no other deferred section around); outside a guard this does nothing, and so it does
    in any thread but the main one (a probe or preflight thread): Python runs signal
    handlers in the main thread only, so no signal can cut another thread's spawn, and
    counting its sections here would defer, or raise in that thread, the main thread's.
    """
    if not _active or threading.current_thread() is not threading.main_thread():
        yield
        return
    guard = _active[0]
    guard.depth += 1
    try:
        yield
    finally:
        guard.depth -= 1
        if guard.depth == 0 and guard.raising and guard.pending:
            guard.raising = False
            raise Interrupted(guard.pending.pop(0))
