"""Runs inside the test container: one Services action, the outcome as one JSON line.

    python3 driver.py ACTION UNIT... [--timeout S] [--force]
    ACTION: start, stop, probe, check, plan-start, plan-stop

Output: {"ok": bool, "error": class name, "code": exit code, "message": ...,
"result": what the action returned, "progress": the progress lines shown}.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from hanode.config import ServicesConfig
from hanode.errors import HanodeError
from hanode.resources import Context, ProgressLine
from hanode.resources.services import Services

shown: list[str] = []


class _Line:
    def __init__(self, label: str) -> None:
        self.label = label
        shown.append(label)

    def update(self, text: str) -> None:
        shown.append(f"{self.label}: {text}")


@contextmanager
def _progress(label: str) -> Iterator[ProgressLine]:
    yield _Line(label)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("action")
    parser.add_argument("units", nargs="+")
    parser.add_argument("--timeout", type=int, default=20)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    resource = Services(ServicesConfig(units=tuple(args.units), timeout=args.timeout))
    ctx = Context(force=args.force, progress=_progress)
    out: dict[str, object] = {"ok": True, "error": None, "code": 0, "message": ""}
    try:
        if args.action == "start":
            resource.start(ctx)
        elif args.action == "stop":
            resource.stop(ctx)
        elif args.action == "probe":
            status = resource.probe()
            out["result"] = {
                "state": status.state.value,
                "summary": status.summary,
                "details": status.details,
            }
        elif args.action == "check":
            out["result"] = [
                {"level": f.level.value, "message": f.message, "hint": f.hint}
                for f in resource.check()
            ]
        elif args.action == "plan-start":
            out["result"] = resource.plan_start()
        elif args.action == "plan-stop":
            out["result"] = resource.plan_stop()
        else:
            parser.error(f"unknown action {args.action}")
    except HanodeError as err:
        out.update(ok=False, error=type(err).__name__, code=int(err.code), message=err.message)
        out["hint"] = err.hint
    out["progress"] = shown
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
