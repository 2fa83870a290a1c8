"""Runs inside the test container: one Services action, the outcome as one JSON line.

    python3 driver.py ACTION UNIT... [--timeout S] [--force]
    ACTION: start, stop, probe, check, plan-start, plan-stop, preflight (as a start's),
            preflight-then-start (in a thread, then the start: the connections opened),
            bench (start and stop each unit 20 times through hanode.system.dbus; latencies)

Output: {"ok": bool, "error": class name, "code": exit code, "message": ...,
"result": what the action returned, "progress": the progress lines shown}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from hanode.errors import HanodeError
from hanode.resources import Context, ProgressLine
from hanode.resources.services import Services, ServicesConfig
from hanode.system.dbus import Systemd

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


def _bench(units: list[str], timeout: int, rounds: int = 20) -> dict[str, object]:
    """Median and worst seconds of a start and a stop job, and of a whole connect+start."""
    starts: list[float] = []
    stops: list[float] = []
    whole: list[float] = []
    for _ in range(rounds):
        for unit in units:
            began = time.monotonic()
            with Systemd.connect() as bus:
                starts.append(bus.start(unit, timeout=timeout).seconds)
                assert bus.unit(unit).active_state.is_up
            whole.append(time.monotonic() - began)
            with Systemd.connect() as bus:
                stops.append(bus.stop(unit, timeout=timeout).seconds)
    return {
        "rounds": rounds,
        "start_job_median_s": statistics.median(starts),
        "start_job_max_s": max(starts),
        "stop_job_median_s": statistics.median(stops),
        "connect_start_check_median_s": statistics.median(whole),
    }


def _preflight_then_start(resource: Services, ctx: Context) -> dict[str, int]:
    """The preflight in a thread of its own, then the start in the main thread, as the
    engine runs them; how many connections to the bus they opened."""
    import threading

    opened: list[Systemd] = []
    connect = Systemd.connect.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Systemd], *args: object, **kwargs: object) -> Systemd:
        opened.append(connect(cls, *args, **kwargs))
        return opened[-1]

    Systemd.connect = classmethod(counting)  # type: ignore[assignment,method-assign]
    failed: list[BaseException] = []

    def preflight() -> None:
        try:
            resource.preflight(ctx)
        except BaseException as err:
            failed.append(err)

    thread = threading.Thread(target=preflight)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    resource.start(ctx)
    return {"connections": len(opened)}


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
        elif args.action == "preflight":
            resource.preflight(ctx)
        elif args.action == "preflight-then-start":  # as a start runs them; connections counted
            out["result"] = _preflight_then_start(resource, ctx)
        elif args.action == "stop":
            resource.stop(ctx)
        elif args.action == "probe":
            status = resource.probe()
            out["result"] = {
                "state": status.state.value,
                "summary": status.summary,
                "details": dict(status.details),  # an empty one is a read-only mapping
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
        elif args.action == "bench":
            out["result"] = _bench(args.units, args.timeout)
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
