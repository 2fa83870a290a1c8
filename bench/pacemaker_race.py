#!/usr/bin/python3
"""The race: a planned switchover and a crash failover, three ways, in one lab run.

On the lab's "pacemaker" profile (tests/lab/labctl up --pacemaker; this script brings it
up if it is not), each round runs, for each method in turn, from the lab's snapshot
(node1 active, node2 a replicating standby):

  planned  node1 -> node2, timed from the command to the first client request answered
           by node2 through the floating IP (asked every 0.1 s), and to the cluster
           settled (crm_resource --wait);
  crash    node2 (now active) powered off, timed from the power-off to the first client
           request answered by node1, and to the cluster settled.

The methods, all on the same DRBD resource with resource-level fencing:
  standard  Pacemaker with the standard agents: ocf:linbit:drbd promotable clone,
            Filesystem, symlink x3, IPaddr2, systemd:postgresql@15-main, systemd:apache2
            in a group (tests/lab/provision/pacemaker/standard.crm), moved with
            `crm_resource --move --resource standard --node node2`;
  hanode    Pacemaker with the same clone and ocf:hanode:hanode (drbd=clone) for the
            rest (cluster.crm), moved with `crm_resource --move --resource hanode
            --node node2`;
  manual    the cluster in maintenance-mode: `hanode stop` on node1 then `hanode start`
            on node2; for the crash, `hanode start --force` on node1 issued as soon as
            DRBD there no longer sees its peer Connected (before that, hanode refuses:
            the peer is Primary); a lower bound, a person notices later, while
            Pacemaker's figures include its detection.

Both Pacemaker methods are moved with crm_resource (C), not `crm resource move`: crmsh's
own start-up takes 10-15 s in these guests and would weigh on both alike.

It prints each round's figures, a table of medians, and where Pacemaker spent the time
of the last planned move of each Pacemaker method: each operation's exec-time (from the
CIB's lrm_rsc_op records) against the move's wall. JSON in build/bench/pacemaker_race.json.

    bench/pacemaker_race.py [--rounds 3]

The figures are the guests', under TCG emulation: several times a real machine's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "bench" / "pacemaker_race.json"
METHODS = ("standard", "hanode", "manual")
FIGURES = ("planned served", "planned settled", "crash served", "crash settled")


def main() -> None:
    """Parse the arguments, bring the lab up, run the rounds, print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="at least 3 (default 3)")
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds: at least 3")
    sys.path.insert(0, str(ROOT / "tests" / "lab"))
    from hanodelab import lab

    lab.up("pacemaker")
    results: dict[str, list[dict[str, float]]] = {method: [] for method in METHODS}
    breakdowns: dict[str, list[tuple[str, str, str, float]]] = {}
    for number in range(1, args.rounds + 1):
        order = METHODS[number - 1 :] + METHODS[: number - 1]  # each method first once
        for method in order:
            figures, breakdown = one_round(method)
            results[method].append(figures)
            if breakdown:
                breakdowns[method] = breakdown
            shown = ", ".join(f"{name} {value:.2f} s" for name, value in figures.items())
            print(f"round {number} {method:<9} {shown}", flush=True)
    report(results, breakdowns)


def one_round(method: str) -> tuple[dict[str, float], list[tuple[str, str, str, float]]]:
    """One planned switchover and one crash failover by ``method``, from the snapshot."""
    from hanodelab import lab, pacemaker
    from hanodelab.faults import Watch

    node1, node2 = lab.NODES["node1"], lab.NODES["node2"]
    lab.reset()
    resource = prepare(method)
    figures: dict[str, float] = {}
    watch = Watch()
    try:
        watch.first("node1", time.monotonic() - 0.5, timeout=120)  # served before
        began = time.monotonic()
        if method == "manual":
            lab.must(node1, "hanode stop", timeout=600)
            lab.must(node2, "hanode start", timeout=600)
        else:
            lab.must(node1, f"crm_resource --move --resource {resource} --node node2")
        figures["planned served"] = watch.first("node2", began)
        pacemaker.settle(node1)
        figures["planned settled"] = round(time.monotonic() - began, 2)
        breakdown = [] if method == "manual" else operations(resource, began)
        if method != "manual":
            lab.must(node1, f"crm_resource --clear --resource {resource}")
            pacemaker.settle(node1)
        began = time.monotonic()
        node2.kill()
        if method == "manual":
            # as an admin does: once DRBD has noticed the peer gone (hanode refuses while
            # it still sees a Primary peer), a forced start: node2 was the last active node
            lab.wait_for(
                lambda: lab.must(node1, "drbdadm cstate srv").stdout.strip() != "Connected",
                60,
                "DRBD on node1 noticing node2 gone",
                interval=0.2,
            )
            lab.must(node1, "hanode start --force", timeout=600)
        figures["crash served"] = watch.first("node1", began)
        pacemaker.settle(node1)
        figures["crash settled"] = round(time.monotonic() - began, 2)
    finally:
        watch.close()
    return figures, breakdown


def prepare(method: str) -> str:
    """Bring the snapshot's cluster (hanode's agent active on node1) to ``method``'s
    starting point, node1 serving; the resource a move names."""
    from hanodelab import lab, pacemaker

    node1 = lab.NODES["node1"]
    if method == "standard":
        pacemaker.load(node1, "standard.crm")
        pacemaker.crm(node1, "resource stop hanode")
        pacemaker.settle(node1)
        pacemaker.crm(node1, "resource start standard")
        pacemaker.settle(node1)
        if pacemaker.where(node1, "apache2") != "node1":
            raise lab.LabError("the standard group did not start on node1")
        return "standard"
    if method == "manual":
        pacemaker.crm(node1, "configure property maintenance-mode=true")
        pacemaker.settle(node1)
    return "hanode"


def operations(resource: str, since: float) -> list[tuple[str, str, str, float]]:
    """(node, resource, operation, exec-time s) of the last non-recurring operations that
    each node's CIB records: what the move's chain was made of."""
    from hanodelab import lab, pacemaker

    found = []
    status = pacemaker.cib(lab.NODES["node1"], "status")
    for state in status.iterfind("node_state"):
        for op in state.iter("lrm_rsc_op"):
            if op.get("interval", "0") != "0" or op.get("operation") == "monitor":
                continue
            found.append(
                (
                    state.get("uname", ""),
                    op.get("id", "").rsplit("_last", 1)[0],
                    op.get("operation", ""),
                    int(op.get("exec-time", "0")) / 1000,
                )
            )
    return sorted(found)


def report(
    results: dict[str, list[dict[str, float]]],
    breakdowns: dict[str, list[tuple[str, str, str, float]]],
) -> None:
    """The medians as a table, the breakdowns, and the JSON file."""
    print()
    print(f"{'median of ' + str(len(results[METHODS[0]])) + ' rounds (s)':<28}", end="")
    print("".join(f"{name:>17}" for name in FIGURES))
    medians: dict[str, dict[str, float]] = {}
    for method, rounds in results.items():
        medians[method] = {
            name: round(statistics.median(r[name] for r in rounds), 2) for name in FIGURES
        }
        print(f"{method:<28}" + "".join(f"{medians[method][n]:>17.2f}" for n in FIGURES))
    base = medians["standard"]
    for method in ("hanode", "manual"):
        ratios = ", ".join(f"{n} {medians[method][n] / base[n]:.2f}" for n in FIGURES)
        print(f"{method} / standard: {ratios}")
    for method, breakdown in breakdowns.items():
        print(f"\nlast planned move, {method}: exec-time of each operation")
        for node, resource, operation, seconds in breakdown:
            print(f"  {node:<6} {resource:<18} {operation:<8} {seconds:6.2f} s")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps({"rounds": results, "medians": medians, "operations": breakdowns}, indent=2)
        + "\n"
    )
    print(f"\n{OUT}")


if __name__ == "__main__":
    main()
