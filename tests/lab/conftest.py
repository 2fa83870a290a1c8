"""The lab's session fixture (labctl up ... down), per-scenario reset and the summary."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import pytest
from hanodelab import lab
from hanodelab.image import PLAIN
from hanodelab.paths import BUILD, LOGS
from hanodelab.qga import AgentError

SUMMARY_JSON = BUILD / "summary.json"
FAILED = pytest.StashKey[bool]()
SUMMARY_TXT = BUILD / "summary.txt"


class Summary:
    """What each scenario did and how long its steps took; written under build/lab/."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.lab: dict[str, Any] = {}
        self.scenarios: dict[str, dict[str, Any]] = {}

    def scenario(self, name: str) -> dict[str, Any]:
        """The record of a scenario, created on first use."""
        return self.scenarios.setdefault(
            name, {"result": "not run", "seconds": 0.0, "steps": {}, "hanode": {}}
        )

    def write(self) -> None:
        """Write summary.json and a table for people in summary.txt."""
        BUILD.mkdir(parents=True, exist_ok=True)
        document = {
            "lab": self.lab,
            "scenarios": self.scenarios,
            "suite_seconds": round(time.monotonic() - self.started, 1),
        }
        SUMMARY_JSON.write_text(json.dumps(document, indent=2) + "\n")
        lines = [f"{'scenario':<28} {'result':<8} {'seconds':>8} {'switchover s':>13}"]
        for name, record in self.scenarios.items():
            switchover = record["steps"].get("switchover")
            lines.append(
                f"{name:<28} {record['result']:<8} {record['seconds']:>8.1f} "
                f"{'' if switchover is None else f'{switchover:.1f}':>13}"
            )
        lines.append(f"lab: {json.dumps(self.lab.get('timings', {}))}")
        lines.append(f"suite: {document['suite_seconds']} s")
        SUMMARY_TXT.write_text("\n".join(lines) + "\n")


_SUMMARY = Summary()


@pytest.hookimpl(hookwrapper=True)  # type: ignore[misc]  # pytest's decorator is untyped
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """Record each lab scenario's outcome in the summary."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if item.get_closest_marker("lab") is not None:
        if report.failed:
            item.stash[FAILED] = True
        record = _SUMMARY.scenario(item.name)
        if report.when == "call" or report.failed or report.skipped:
            if report.when == "call" or record["result"] == "not run":
                record["result"] = report.outcome
            if report.when == "call":
                record["seconds"] = round(report.duration, 1)


@pytest.fixture(scope="session")
def the_lab() -> Iterator[dict[str, Any]]:
    """The lab up for the whole session (brought down after, unless it was up before)."""
    with _session_lab(PLAIN) as (state, was_up):
        _SUMMARY.lab = {
            "timings": state.get("timings", {}),
            "deb": state.get("deb"),
            "already up": was_up,
        }
        yield state


@contextmanager
def _session_lab(profile: str) -> Iterator[tuple[dict[str, Any], bool]]:
    """The lab of ``profile`` up, and whether it was before; on leaving, the summary
    written and the lab brought down unless it was up before (or HANODE_LAB_KEEP is set).
    A CI timeout's SIGTERM tears the lab down like Ctrl-C does."""
    before = lab.load_state()
    was_up = bool(before.get("ready")) and before.get("profile", PLAIN) == profile
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield lab.up(profile), was_up
    finally:
        _SUMMARY.write()
        if not was_up and not os.environ.get("HANODE_LAB_KEEP"):
            lab.down(quiet=True)
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@pytest.fixture(scope="session")
def pacemaker_lab() -> Iterator[dict[str, Any]]:
    """The lab's "pacemaker" profile up for the rest of the session (a plain lab that is up
    is brought down first: the pacemaker scenarios run last, see
    pytest_collection_modifyitems); brought down after, unless it was up before."""
    with _session_lab("pacemaker") as (state, _):
        _SUMMARY.lab["pacemaker timings"] = state.get("timings", {})
        yield state


@pytest.fixture
def pacemaker_scenario(
    pacemaker_lab: dict[str, Any], request: pytest.FixtureRequest
) -> Iterator[dict[str, Any]]:
    """Both nodes back at the state after `up --pacemaker`, and this scenario's record."""
    yield from _reset_and_record(request)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The pacemaker profile's scenarios last: one lab is up at a time, and each profile
    is brought up once."""
    items.sort(key=lambda item: item.get_closest_marker("pacemaker") is not None)


@pytest.fixture
def scenario(the_lab: dict[str, Any], request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Both nodes back at the state after up (node1 active), and this scenario's record."""
    yield from _reset_and_record(request)


def _reset_and_record(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The lab that is up reset to its snapshot; the scenario's record, written after it,
    with both nodes' journals kept if it failed."""
    record = _SUMMARY.scenario(request.node.name)
    record["steps"]["reset"] = round(lab.reset(), 1)
    yield record
    _SUMMARY.write()
    if request.node.stash.get(FAILED, False):
        _keep_journals(request.node.name)


def _keep_journals(test: str) -> None:
    """Save the journal of each running node next to the serial logs, for a post-mortem."""
    LOGS.mkdir(parents=True, exist_ok=True)
    for name, target in lab.NODES.items():
        if target.running():
            try:
                journal = target.agent.sh("journalctl -b --no-pager -o short-monotonic", 120)
            except (OSError, AgentError) as err:
                journal_text = f"no journal: {err}\n"
            else:
                journal_text = journal.stdout
            (LOGS / f"{test}-{name}.journal").write_text(journal_text)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write the summary once more with every outcome in it."""
    if _SUMMARY.scenarios:
        _SUMMARY.write()
