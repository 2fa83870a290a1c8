"""Unit tests of hanode.system.drbdstate (d) and drbddecide (dd): every parser on every
captured output of real DRBD 8.4.11, and every decision (timeout choice, wait outcome,
promotion verdict) from hand-built states. No DRBD, no root."""

from __future__ import annotations

import json

import pytest
from drbd_standin.fixtures import Capture, Catalog, load

from hanode.errors import ConfigError
from hanode.system import drbddecide as dd
from hanode.system import drbdstate as d
from hanode.system.drbddecide import MetaFlags, Promotion, TimeoutKind, Timeouts, WaitOutcome
from hanode.system.drbdstate import ConnState, DiskState, ResourceState, Role


@pytest.fixture(scope="module")
def captures() -> list[Capture]:
    return load()


def _all(captures: list[Capture], command: str, rc: int | None = 0) -> list[Capture]:
    found = [c for c in captures if c.command == command and (rc is None or c.rc == rc)]
    assert found, f"no capture of {command!r}"
    return found


# -- parsing every captured output ---------------------------------------------------------


def test_every_captured_role_cstate_dstate_parses(captures: list[Capture]) -> None:
    for capture in _all(captures, "drbdadm role srv"):
        local, peer = capture.stdout.strip().split("/")
        assert d.parse_role(capture.stdout) == (Role(local), Role(peer)), capture
    for capture in _all(captures, "drbdadm cstate srv"):
        assert d.parse_cstate(capture.stdout).value == capture.stdout.strip(), capture
    for capture in _all(captures, "drbdadm dstate srv"):
        local, peer = capture.stdout.strip().split("/")
        assert d.parse_dstate(capture.stdout) == (DiskState(local), DiskState(peer)), capture


def test_every_captured_proc_drbd_agrees_with_drbdadm(captures: list[Capture]) -> None:
    snapshots = Catalog(captures).snapshots
    assert len(snapshots) >= 20
    for snapshot in snapshots:
        proc = d.parse_proc_drbd(snapshot.answers["cat /proc/drbd"].stdout)
        assert proc.version == "8.4.11"
        assert proc.major == 8
        state = proc.devices[1]
        assert (
            state.role.value,
            state.peer_role.value,
            state.cstate.value,
            state.disk.value,
            state.peer_disk.value,
        ) == snapshot.key, snapshot.answers["cat /proc/drbd"]


def test_proc_drbd_of_a_resource_not_up_has_no_device(captures: list[Capture]) -> None:
    before_up = [c for c in _all(captures, "cat /proc/drbd") if c.stage == "02-before-up"]
    combined = _all(
        captures, "drbdadm role srv; drbdadm cstate srv; drbdadm dstate srv; cat /proc/drbd"
    )
    texts = [c.stdout for c in before_up]
    # in the combined captures dstate's "Consistent" line comes before /proc/drbd's
    texts += [c.stdout.split("\n", 1)[1] for c in combined]
    assert len(texts) >= 6
    for text in texts:
        proc = d.parse_proc_drbd(text)
        assert proc.version == "8.4.11"
        assert proc.devices == {}


def test_sync_progress_from_proc_drbd(captures: list[Capture]) -> None:
    syncing = [c for c in _all(captures, "cat /proc/drbd") if "sync'ed" in c.stdout]
    assert {c.node for c in syncing} == {"node1", "node2"}
    by_node = {c.node: d.parse_proc_drbd(c.stdout).devices[1] for c in syncing}
    source, target = by_node["node1"], by_node["node2"]
    assert source.cstate is ConnState.SYNC_SOURCE and target.cstate is ConnState.SYNC_TARGET
    assert source.sync == d.SyncProgress(1.6, "0:03:37", 260980, 262100, "1,120 K/sec")
    assert target.sync is not None
    assert (target.sync.percent, target.sync.finish) == (3.2, "0:02:08")
    assert target.details()["sync-percent"] == 3.2
    assert target.details()["sync-finish"] == "0:02:08"
    assert "3.2% in sync, finish in 0:02:08" in target.describe()


def test_proc_drbd_unconfigured_minor_and_garbage() -> None:
    text = "version: 8.4.11 (api:1/proto:86-101)\nsrcversion: X \n\n 0: cs:Unconfigured\n"
    assert d.parse_proc_drbd(text).devices == {}
    with pytest.raises(d.ParseError):
        d.parse_proc_drbd("")
    with pytest.raises(d.ParseError):
        d.parse_proc_drbd("version: 8.4.11\n 1: cs:Connected ro:Primary/Bogus ds:A/B\n")
    assert d.parse_proc_drbd("version: 9.2.12 (api:2/proto:86-122)\n").major == 9


def test_every_captured_dump_parses(captures: list[Capture]) -> None:
    for capture in _all(captures, "drbdadm dump srv"):
        info = d.parse_dump(capture.stdout, "srv")
        assert dict(info.hosts) == {
            "node1": d.HostSection("/dev/drbd1", 1),
            "node2": d.HostSection("/dev/drbd1", 1),
        }
        assert info.startup == {}
        assert info.host(capture.node).minor == 1
        assert info.host(f"{capture.node}.example.org").device == "/dev/drbd1"
        with pytest.raises(ConfigError, match="no `on node3` section"):
            info.host("node3")
        with pytest.raises(d.ParseError, match="no `resource other`"):
            d.parse_dump(capture.stdout, "other")


# drbdadm dump's layout (the captured one) with a startup section and a volume, as a
# drbd.conf like the how-to's would print; hand-built: the lab's config had none.
DUMP_WITH_STARTUP = """\
# resource r0 on node01: not ignored, not stacked
# defined at /etc/drbd.d/r0.res:1
resource r0 {
    on node01 {
        volume 0 {
            device       /dev/drbd7 minor 7;
            disk         /dev/vdb;
            meta-disk    internal;
        }
        address          ipv4 10.0.0.1:7789;
    }
    on node02 {
        device           minor 3;
        disk             "/dev/disk/by-id/a b";
        meta-disk        internal;
        address          ipv4 10.0.0.2:7789;
    }
    net {
        protocol           C;
        shared-secret      "s3cr;t";
    }
    startup {
        wfc-timeout      15;
        degr-wfc-timeout 60;
        become-primary-on node01;
    }
}
"""


def test_dump_startup_section_volumes_and_quotes() -> None:
    info = d.parse_dump(DUMP_WITH_STARTUP, "r0")
    assert info.hosts["node01"] == d.HostSection("/dev/drbd7", 7)
    assert info.hosts["node02"] == d.HostSection("/dev/drbd3", 3)
    assert {key: value for key, (value, _) in info.startup.items()} == {
        "wfc-timeout": "15",
        "degr-wfc-timeout": "60",
        "become-primary-on": "node01",
    }
    with pytest.raises(d.ParseError):
        d.parse_dump("resource r0 { on a { device /dev/drbd1; }", "r0")


def test_captured_failures_parse(captures: list[Capture]) -> None:
    for capture in _all(captures, "drbdadm role srv", rc=10):
        failure = d.parse_failure(capture.stderr)
        assert failure == d.DrbdFailure(1, d.ERR_MINOR_INVALID, "Device minor not allocated")
    (refused,) = _all(captures, "drbdadm primary srv", rc=11)[:1]
    failure = d.parse_failure(refused.stderr)
    assert failure == d.DrbdFailure(
        1, d.SS_TWO_PRIMARIES, "Multiple primaries not allowed by config"
    )
    assert d.parse_failure("srv: No such resource\n") is None


def test_lab_captured_refusals_parse(captures: list[Capture]) -> None:
    """The refusals tests/lab/capture-drbd caught on the lab's real DRBD 8.4."""
    lab = [capture for capture in captures if capture.scenario == "lab-edges"]

    def failure_of(command: str, rc: int) -> d.DrbdFailure | None:
        (capture,) = [c for c in lab if c.command == command and c.rc == rc]
        return d.parse_failure(capture.stderr)

    held = "Device is held open by someone"
    assert failure_of("drbdadm secondary srv", 11) == d.DrbdFailure(1, d.SS_DEVICE_IN_USE, held)
    # `down` names the resource, not the minor
    assert failure_of("drbdadm down srv", 11) == d.DrbdFailure(None, d.SS_DEVICE_IN_USE, held)
    assert failure_of("drbdadm primary srv", 17) == d.DrbdFailure(
        1, d.SS_NO_UP_TO_DATE_DISK, "Need access to UpToDate data"
    )
    not_up = d.DrbdFailure(1, d.ERR_MINOR_INVALID, "Device minor not allocated")
    assert failure_of("drbdadm primary srv", 10) == not_up
    assert failure_of("drbdadm secondary srv", 10) == not_up
    standalone = [c for c in lab if c.command == "cat /proc/drbd" and "StandAlone" in c.stdout]
    assert standalone, "the lab captures hold a StandAlone /proc/drbd"
    for capture in standalone:  # no protocol letter when StandAlone
        (state,) = d.parse_proc_drbd(capture.stdout).devices.values()
        assert state.cstate is d.ConnState.STANDALONE


def test_captured_json_refusal_is_recognised(captures: list[Capture]) -> None:
    # hanode.resources.drbd detects 8.4's drbdsetup by exactly this
    for capture in _all(captures, "drbdsetup status --json srv", rc=20):
        assert "unrecognized option" in capture.stderr
        with pytest.raises(d.ParseError):
            d.parse_status_json(capture.stdout, "srv")


def test_get_gi_flags() -> None:
    # drbdmeta's get-gi layout for 8.4 (never captured: the lab must capture it)
    line = "8C1D4B5E9A3F2710:0000000000000000:6E2A0C4D8B1F3A50:6E290C4D8B1F3A51:1:1:1:0:0:0:1\n"
    flags = dd.parse_gi(line)
    assert flags == MetaFlags(True, True, True, False, False, False, True)
    assert flags.degraded
    assert not dd.parse_gi(line.replace(":1:1:1:0:", ":1:1:1:1:")).degraded
    with pytest.raises(d.ParseError):
        dd.parse_gi("0:0:0\n")


def test_data_generation_is_the_current_uuid() -> None:
    line = "8C1D4B5E9A3F2710:0000000000000000:6E2A0C4D8B1F3A50:6E290C4D8B1F3A51:1:1:1:0:0:0:1\n"
    assert d.data_generation(line) == "8C1D4B5E9A3F2710"
    with pytest.raises(d.ParseError):
        d.data_generation("1: Failure: (127) Device minor not allocated\n")


SPLIT = "drbd srv: Split-Brain detected but unresolved, dropping connection!"
CONNECTED = "drbd srv: conn( WFReportParams -> Connected ) "


@pytest.mark.parametrize(
    ("messages", "pending"),
    [
        ([], False),
        ([CONNECTED], False),
        ([CONNECTED, SPLIT], True),
        ([SPLIT, "drbd srv: conn( StandAlone -> Unconnected ) ", CONNECTED], False),
        ([SPLIT.replace("srv", "other")], False),  # another resource's split brain
        (["block drbd1: " + SPLIT.split(": ", 1)[1]], True),  # the device's prefix
    ],
)
def test_split_brain_is_the_kernels_last_word(messages: list[str], pending: bool) -> None:
    assert d.split_brain_pending(messages, "srv", 1) is pending


def test_split_brain_advice_names_the_generation_and_both_commands() -> None:
    message, fix = d.split_brain_advice("srv", "8C1D4B5E9A3F2710")
    assert message == (
        "split brain: both nodes wrote to srv while apart (this node's data generation "
        "8C1D4B5E9A3F2710); hanode discards nothing by itself"
    )
    assert "`hanode stop`, then `drbdadm connect --discard-my-data srv`" in fix
    assert "`drbdadm connect srv`" in fix


def test_status_json_of_drbd9() -> None:
    # the layout of DRBD 9's `drbdsetup status --json` (hand-built: no DRBD 9 capture yet)
    data = [
        {
            "name": "srv",
            "role": "Secondary",
            "devices": [{"volume": 0, "minor": 1, "disk-state": "Inconsistent"}],
            "connections": [
                {
                    "peer-node-id": 1,
                    "name": "node2",
                    "connection-state": "Connected",
                    "peer-role": "Primary",
                    "peer_devices": [
                        {
                            "volume": 0,
                            "replication-state": "SyncTarget",
                            "peer-disk-state": "UpToDate",
                            "percent-in-sync": 42.5,
                        }
                    ],
                }
            ],
        }
    ]
    state = d.parse_status_json(json.dumps(data), "srv")
    assert state == ResourceState(
        Role.SECONDARY,
        Role.PRIMARY,
        ConnState.SYNC_TARGET,
        DiskState.INCONSISTENT,
        DiskState.UP_TO_DATE,
        d.SyncProgress(42.5, None),
    )
    data[0]["connections"][0].update({"connection-state": "Connecting", "peer-role": "Unknown"})
    data[0]["connections"][0]["peer_devices"][0].update(
        {"replication-state": "Off", "peer-disk-state": "DUnknown"}
    )
    state = d.parse_status_json(json.dumps(data), "srv")
    assert state is not None
    assert (state.cstate, dd.wait_outcome(state)) == (ConnState.CONNECTING, None)
    assert d.parse_status_json(json.dumps(data), "other") is None


# -- timeouts ----------------------------------------------------------------------------------


def _flags(**changes: bool) -> MetaFlags:
    base = {
        "consistent": True,
        "was_up_to_date": True,
        "primary": False,
        "connected": True,
        "full_sync": False,
        "peer_outdated": False,
        "crashed_primary": False,
    }
    base.update(changes)
    return MetaFlags(**base)


TIMEOUTS = Timeouts(wfc=11, degr_wfc=22, outdated_wfc=33)


@pytest.mark.parametrize(
    ("peer_disk", "flags", "kind", "seconds"),
    [
        (DiskState.DUNKNOWN, None, TimeoutKind.WFC, 11),
        (DiskState.DUNKNOWN, _flags(), TimeoutKind.WFC, 11),
        (None, _flags(primary=True, connected=True), TimeoutKind.WFC, 11),
        # a Primary that was not connected when it went down: a degraded cluster
        (DiskState.DUNKNOWN, _flags(primary=True, connected=False), TimeoutKind.DEGR_WFC, 22),
        # crashed_primary alone is not DRBD's condition for degr-wfc
        (DiskState.DUNKNOWN, _flags(crashed_primary=True), TimeoutKind.WFC, 11),
        (DiskState.OUTDATED, None, TimeoutKind.OUTDATED_WFC, 33),
        (DiskState.DUNKNOWN, _flags(peer_outdated=True), TimeoutKind.OUTDATED_WFC, 33),
        # the kernel checks the peer's Outdated disk first
        (
            DiskState.OUTDATED,
            _flags(primary=True, connected=False),
            TimeoutKind.OUTDATED_WFC,
            33,
        ),
    ],
)
def test_choose_timeout(
    peer_disk: DiskState | None, flags: MetaFlags | None, kind: TimeoutKind, seconds: int
) -> None:
    choice = dd.choose_timeout(TIMEOUTS, peer_disk=peer_disk, flags=flags)
    assert (choice.kind, choice.seconds) == (kind, seconds)
    assert choice.why


def test_resolve_timeouts_precedence() -> None:
    startup = {"wfc-timeout": ("15", 30), "degr-wfc-timeout": ("60", 31)}
    configured = {TimeoutKind.WFC: 5, TimeoutKind.DEGR_WFC: None, TimeoutKind.OUTDATED_WFC: None}
    timeouts = dd.resolve_timeouts(configured, startup)
    assert (timeouts.wfc, timeouts.degr_wfc, timeouts.outdated_wfc) == (5, 60, 10)
    assert dict(timeouts.sources) == {
        TimeoutKind.WFC: "hanode.toml",
        TimeoutKind.DEGR_WFC: "drbd.conf",
        TimeoutKind.OUTDATED_WFC: "default",
    }


def test_a_zero_timeout_from_drbd_conf_is_refused() -> None:
    with pytest.raises(ConfigError, match="forever") as caught:
        dd.resolve_timeouts({}, {"wfc-timeout": ("0", 30)})
    assert caught.value.hint and "hanode.toml" in caught.value.hint
    # hanode.toml's own value wins over drbd.conf's 0
    assert dd.resolve_timeouts({TimeoutKind.WFC: 7}, {"wfc-timeout": ("0", 30)}).wfc == 7
    with pytest.raises(ConfigError, match="not a number"):
        dd.resolve_timeouts({}, {"degr-wfc-timeout": ("1m", 31)})


# -- the wait and the verdict ----------------------------------------------------------------


def state(
    role: Role = Role.SECONDARY,
    peer_role: Role = Role.SECONDARY,
    cstate: ConnState = ConnState.CONNECTED,
    disk: DiskState = DiskState.UP_TO_DATE,
    peer_disk: DiskState = DiskState.UP_TO_DATE,
) -> ResourceState:
    return ResourceState(role, peer_role, cstate, disk, peer_disk)


ABSENT = {
    "peer_role": Role.UNKNOWN,
    "cstate": ConnState.WF_CONNECTION,
    "peer_disk": DiskState.DUNKNOWN,
}


@pytest.mark.parametrize(
    ("cstate", "outcome"),
    [
        (ConnState.STANDALONE, WaitOutcome.STANDALONE),
        (ConnState.CONNECTED, WaitOutcome.CONNECTED),
        (ConnState.SYNC_TARGET, WaitOutcome.CONNECTED),
        (ConnState.PAUSED_SYNC_S, WaitOutcome.CONNECTED),
        (ConnState.WF_CONNECTION, None),
        (ConnState.CONNECTING, None),
        (ConnState.WF_REPORT_PARAMS, None),
        (ConnState.UNCONNECTED, None),
        (ConnState.NETWORK_FAILURE, None),
        (ConnState.DISCONNECTING, None),
    ],
)
def test_wait_outcome(cstate: ConnState, outcome: WaitOutcome | None) -> None:
    assert dd.wait_outcome(state(cstate=cstate)) is outcome


def decide(
    current: ResourceState,
    outcome: WaitOutcome,
    *,
    nodename: str = "node1",
    bpo: str | None = "node1",
    force: bool = False,
) -> dd.Verdict:
    return dd.decide_promotion(
        current, outcome, resource="srv", nodename=nodename, become_primary_on=bpo, force=force
    )


def test_already_primary_is_skipped() -> None:
    verdict = decide(state(role=Role.PRIMARY, **ABSENT), WaitOutcome.TIMED_OUT, nodename="x")
    assert verdict.promotion is Promotion.SKIP


def test_connected_and_up_to_date_promotes() -> None:
    verdict = decide(state(), WaitOutcome.CONNECTED, bpo=None, nodename="node2")
    reason = "promote srv: peer connected, local disk UpToDate"
    assert verdict == dd.Verdict(Promotion.PROMOTE, reason)
    assert not verdict.degraded and not verdict.force_flag and not verdict.overrides
    # promoting a SyncSource is fine: the data is here
    source = state(cstate=ConnState.SYNC_SOURCE, peer_disk=DiskState.INCONSISTENT)
    assert decide(source, WaitOutcome.CONNECTED).promotion is Promotion.PROMOTE


@pytest.mark.parametrize("force", [False, True])
def test_peer_primary_is_refused_even_with_force(force: bool) -> None:
    verdict = decide(state(peer_role=Role.PRIMARY), WaitOutcome.CONNECTED, force=force)
    assert verdict.promotion is Promotion.REFUSE
    assert "peer is Primary" in verdict.reason
    assert verdict.hint and "hanode stop" in verdict.hint


@pytest.mark.parametrize("force", [False, True])
def test_standalone_is_refused_even_with_force(force: bool) -> None:
    standalone = state(
        cstate=ConnState.STANDALONE, peer_role=Role.UNKNOWN, peer_disk=DiskState.DUNKNOWN
    )
    verdict = decide(standalone, WaitOutcome.STANDALONE, force=force)
    assert verdict.promotion is Promotion.REFUSE
    assert "StandAlone" in verdict.reason
    assert verdict.hint and "drbdadm connect srv" in verdict.hint


@pytest.mark.parametrize("disk", [DiskState.CONSISTENT, DiskState.OUTDATED, DiskState.INCONSISTENT])
def test_local_disk_not_up_to_date_is_refused_unless_forced(disk: DiskState) -> None:
    current = state(disk=disk, **ABSENT)
    refused = decide(current, WaitOutcome.TIMED_OUT)
    assert refused.promotion is Promotion.REFUSE
    assert f"local disk is {disk}, not UpToDate (the peer is absent)" in refused.reason
    assert refused.hint and "--force" in refused.hint
    forced = decide(current, WaitOutcome.TIMED_OUT, force=True)
    assert forced.promotion is Promotion.PROMOTE
    assert forced.overrides == (f"the local disk is {disk}, not UpToDate (the peer is absent)",)
    assert forced.force_flag  # no UpToDate data anywhere: only `primary --force` works
    assert forced.degraded


def test_sync_target_forced_needs_no_force_flag() -> None:
    # the peer is UpToDate and connected: DRBD reads through it, plain `primary` works
    target = state(cstate=ConnState.SYNC_TARGET, disk=DiskState.INCONSISTENT)
    assert decide(target, WaitOutcome.CONNECTED).promotion is Promotion.REFUSE
    forced = decide(target, WaitOutcome.CONNECTED, force=True)
    assert forced.promotion is Promotion.PROMOTE
    assert not forced.force_flag and not forced.degraded
    assert forced.overrides == (
        "the local disk is Inconsistent, not UpToDate (the peer's disk is UpToDate)",
    )


@pytest.mark.parametrize("force", [False, True])
def test_diskless_without_an_up_to_date_peer_is_refused(force: bool) -> None:
    verdict = decide(state(disk=DiskState.DISKLESS, **ABSENT), WaitOutcome.TIMED_OUT, force=force)
    assert verdict.promotion is Promotion.REFUSE
    assert "Diskless" in verdict.reason


def test_peer_absent_promotes_degraded_on_become_primary_on_node() -> None:
    verdict = decide(state(**ABSENT), WaitOutcome.TIMED_OUT, nodename="node1", bpo="node1")
    assert verdict.promotion is Promotion.PROMOTE
    assert verdict.reason == "promote srv: degraded (peer absent), local disk UpToDate"
    assert verdict.degraded and not verdict.overrides and not verdict.force_flag
    fqdn = decide(state(**ABSENT), WaitOutcome.TIMED_OUT, nodename="node1.lab", bpo="node1")
    assert fqdn.promotion is Promotion.PROMOTE
    both = decide(state(**ABSENT), WaitOutcome.TIMED_OUT, nodename="node2", bpo="both")
    assert both.promotion is Promotion.PROMOTE


@pytest.mark.parametrize("bpo", ["node1", None])
def test_peer_absent_on_another_node_is_refused_unless_forced(bpo: str | None) -> None:
    refused = decide(state(**ABSENT), WaitOutcome.TIMED_OUT, nodename="node2", bpo=bpo)
    assert refused.promotion is Promotion.REFUSE
    assert refused.reason == "peer unreachable: make sure it is down, then `hanode start --force`"
    assert refused.hint and "node2" in refused.hint and (bpo or "unset") in refused.hint
    forced = decide(state(**ABSENT), WaitOutcome.TIMED_OUT, nodename="node2", bpo=bpo, force=True)
    assert forced.promotion is Promotion.PROMOTE and forced.degraded and not forced.force_flag
    named = bpo or "unset"
    assert forced.overrides == (
        f"the peer is unreachable and this node (node2) is not become-primary-on ({named})",
    )


def test_both_overrides_are_named() -> None:
    current = state(disk=DiskState.CONSISTENT, **ABSENT)
    forced = decide(current, WaitOutcome.TIMED_OUT, nodename="node2", force=True)
    assert forced.promotion is Promotion.PROMOTE
    assert len(forced.overrides) == 2
    assert "Consistent" in forced.overrides[0] and "node2" in forced.overrides[1]


def test_is_become_primary_on() -> None:
    assert dd.is_become_primary_on("node1", "node1")
    assert dd.is_become_primary_on("node1.example.org", "node1")
    assert dd.is_become_primary_on("anything", "both")
    assert not dd.is_become_primary_on("node2", "node1")
    assert not dd.is_become_primary_on("node1", None)
