"""One progress line on a terminal (rewritten in place), plain lines elsewhere."""

from __future__ import annotations

import sys
import time


class Progress:
    """Shows `label: elapsed  detail` while something lasts seconds; ends with a summary."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.monotonic()
        self._tty = sys.stderr.isatty()
        self._last_plain = 0.0

    @property
    def elapsed(self) -> float:
        """Seconds since this step began."""
        return time.monotonic() - self.started

    def update(self, detail: str) -> None:
        """Rewrite the line on a terminal; elsewhere print at most one line every 10 s."""
        line = f"{self.label}: {self.elapsed:5.1f}s  {detail}"
        if self._tty:
            sys.stderr.write("\r\033[K" + line[:150])
            sys.stderr.flush()
        elif self.elapsed - self._last_plain >= 10:
            self._last_plain = self.elapsed
            print(line, file=sys.stderr, flush=True)

    def done(self, detail: str = "done") -> float:
        """Finish the line with the total time; returns it."""
        elapsed = self.elapsed
        prefix = "\r\033[K" if self._tty else ""
        sys.stderr.write(f"{prefix}{self.label}: {detail} in {elapsed:.1f}s\n")
        sys.stderr.flush()
        return elapsed


def say(message: str) -> None:
    """A line of narrative for people watching labctl."""
    print(message, file=sys.stderr, flush=True)
