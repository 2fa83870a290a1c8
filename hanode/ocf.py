"""The OCF resource agent ocf:hanode:hanode (OCF resource agent API 1.1), for Pacemaker.

Another front end of the same engine as the CLI: the same steps, the same lock
(/run/hanode.lock), the same run reports and journal entries. /usr/lib/ocf/resource.d/
hanode/hanode calls main() with the action; parameters arrive as OCF_RESKEY_<name>.

- start: Engine.start. 0 done; 1 failed (rolled back) or refused (nothing touched: the
  cluster active elsewhere, data not safe, a managed unit enabled at boot, another hanode
  running): a refusal is this node's or the cluster's state, not a wrong configuration,
  so it is Pacemaker's soft error and the resource may run on the other node.
- stop: Engine.stop. 0 done; 1 failed (Pacemaker then fences the node).
- monitor: every step probed. 0 all up, 7 all down, 1 partly up or unreadable; a probe
  (interval 0) on a node where a tool is missing and nothing is up: 5. OCF_CHECK_LEVEL
  10 adds: each managed unit exactly "active", the floating address's link up with
  carrier, each mountpoint writable (a file written, fsync'ed, unlinked).
- validate-all: the config loads (else 6) and `hanode check` finds no error (6; 5 when
  one of the errors is a missing program or unit: this node's, not the config's).
- meta-data: static XML, reading no file (Pacemaker runs it as any user).

The `drbd` parameter: "hanode" (the default), hanode's [drbd] step promotes and demotes;
"clone", an ocf:linbit:drbd promotable clone does, and the [drbd] step is replaced by a
read-only check (hanode.resources.drbd.PromotedByClone) that refuses the start unless the
resource is Primary here; stop never demotes, monitor's verdict leaves DRBD out, and
validate-all checks [drbd] only for what the clone needs (the resource defined for this
node). drbd=clone needs a [drbd] section (the resource to check) and at least one other.

A config file that does not exist is "not running here" (7) for a probe, so a node
without hanode configured answers the cluster's probes; any other action gets 6.
The reason for every failure goes to stderr as `ocf-exit-reason:TEXT`.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable, Sequence
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hanode import __version__
from hanode.errors import ConfigError, Exit, HanodeError, Refused

if TYPE_CHECKING:
    from hanode.config import Config
    from hanode.engine import Engine
    from hanode.resources import Resource, Status

DEFAULT_CONFIG = "/etc/hanode/hanode.toml"  # hanode.config.DEFAULT_PATH, without its import
# The action timeouts the meta-data advertises (seconds). start and stop cover the shipped
# example's budgets (as hanode-primary.service's TimeoutStartSec/TimeoutStopSec do); a
# config with more units or longer waits needs its own, see the longdesc.
START_TIMEOUT = 900
STOP_TIMEOUT = 360
MONITOR_TIMEOUT = 60
DEEP_MONITOR_TIMEOUT = 120
DEEP_LEVEL = 10  # OCF_CHECK_LEVEL from which monitor also runs the deeper checks


class OcfExit(IntEnum):
    """The OCF resource agent API's exit codes that this agent returns."""

    SUCCESS = 0
    ERR_GENERIC = 1
    ERR_ARGS = 2
    ERR_UNIMPLEMENTED = 3
    ERR_INSTALLED = 5
    ERR_CONFIGURED = 6
    NOT_RUNNING = 7


class DrbdMode(StrEnum):
    """The agent's `drbd` parameter: who promotes and demotes the DRBD resource."""

    HANODE = "hanode"  # hanode's [drbd] step
    CLONE = "clone"  # Pacemaker's ocf:linbit:drbd promotable clone


class AgentExit(Exception):
    """End the action with ``code``, telling Pacemaker ``reason``."""

    def __init__(self, code: OcfExit, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


METADATA = f"""\
<?xml version="1.0"?>
<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">
<resource-agent name="hanode" version="{__version__}">
<version>1.1</version>
<longdesc lang="en">
Makes this node of a two-node DRBD cluster the active one (start) or the standby (stop)
with hanode: DRBD promoted, the filesystem mounted, the links, the floating address and
the systemd units, as hanode.toml configures them; the same engine, steps, lock and logs
as the hanode command. monitor probes every step (OCF_CHECK_LEVEL=10 also checks that
each unit is active, the floating address's link is up and each mountpoint writable).

The start and stop timeouts below cover the example configuration's worst case. For
another hanode.toml, compute them from its sections' bounds, as hanode.toml(5) lists
them: the start timeout at least the sum of every step's start budget plus every step's
stop budget (a failed start rolls back within it), the stop timeout at least the sum of
the stop budgets. See hanode-ocf(7).
</longdesc>
<shortdesc lang="en">Active/standby node of a two-node DRBD cluster (hanode)</shortdesc>
<parameters>
<parameter name="config" unique="0" required="0">
<longdesc lang="en">
The hanode configuration file: owned by root, not writable by others. Where it does
not exist, a probe answers "not running" and every other action "not configured".
</longdesc>
<shortdesc lang="en">hanode.toml path</shortdesc>
<content type="string" default="{DEFAULT_CONFIG}"/>
</parameter>
<parameter name="drbd" unique="0" required="0">
<longdesc lang="en">
Who promotes and demotes the DRBD resource of hanode.toml's [drbd] section.
"hanode": hanode's [drbd] step does (brings it up, waits for the peer, promotes when
safe; stop demotes). "clone": an ocf:linbit:drbd promotable clone does (it carries
DRBD's resource-level fencing); then start only checks that the resource is Primary on
this node and fails otherwise, stop never demotes, and monitor leaves DRBD out of its
verdict. Order this resource after the clone's promotion and colocate it with the
Promoted role. "clone" needs a [drbd] section (the resource checked) and another section.
</longdesc>
<shortdesc lang="en">who promotes DRBD: hanode or clone</shortdesc>
<content type="string" default="{DrbdMode.HANODE}"/>
</parameter>
</parameters>
<actions>
<action name="start" timeout="{START_TIMEOUT}s"/>
<action name="stop" timeout="{STOP_TIMEOUT}s"/>
<action name="monitor" timeout="{MONITOR_TIMEOUT}s" interval="10s" depth="0"/>
<action name="monitor" timeout="{DEEP_MONITOR_TIMEOUT}s" interval="60s" depth="{DEEP_LEVEL}"/>
<action name="validate-all" timeout="60s"/>
<action name="meta-data" timeout="5s"/>
</actions>
</resource-agent>
"""

USAGE = "usage: hanode (OCF agent) {start|stop|monitor|validate-all|meta-data}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one OCF action (argv: the action alone); returns the OCF exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        return _reason(OcfExit.ERR_ARGS, f"expected one action, got {len(args)}: {USAGE.strip()}")
    action = args[0]
    if action == "meta-data":
        sys.stdout.write(METADATA)
        return int(OcfExit.SUCCESS)
    if action in ("usage", "help"):
        sys.stdout.write(USAGE)
        return int(OcfExit.SUCCESS)
    handler = _ACTIONS.get(action)
    if handler is None:
        return _reason(OcfExit.ERR_UNIMPLEMENTED, f"action {action!r} is not implemented")
    from hanode import log as hlog

    hlog.setup()
    try:
        return int(handler())
    except AgentExit as err:
        return _reason(err.code, err.reason)
    except HanodeError as err:
        code = OcfExit.ERR_CONFIGURED if err.code is Exit.USAGE else OcfExit.ERR_GENERIC
        return _reason(code, str(err))
    except Exception as err:  # a traceback is no use to Pacemaker: one line, as the CLI
        return _reason(OcfExit.ERR_GENERIC, f"internal error: {type(err).__name__}: {err}")


def _reason(code: OcfExit, reason: str) -> int:
    """Tell Pacemaker why (its `ocf-exit-reason:` line) and return ``code``."""
    text = " ".join(reason.split())
    sys.stderr.write(f"ocf-exit-reason:{text}\n")
    sys.stderr.flush()
    return int(code)


def config_file() -> Path:
    """The `config` parameter, else /etc/hanode/hanode.toml."""
    value = os.environ.get("OCF_RESKEY_config")  # noqa: SIM112 (OCF's spelling)
    return Path(value or DEFAULT_CONFIG)


def drbd_mode() -> DrbdMode:
    """The `drbd` parameter (hanode when unset); AgentExit 6 for any other value."""
    value = os.environ.get("OCF_RESKEY_drbd") or DrbdMode.HANODE  # noqa: SIM112
    try:
        return DrbdMode(value)
    except ValueError:
        raise AgentExit(
            OcfExit.ERR_CONFIGURED,
            f"drbd={value!r} is not a DRBD mode: set the resource's drbd parameter to "
            "hanode (hanode promotes DRBD) or clone (an ocf:linbit:drbd clone does)",
        ) from None


def is_probe() -> bool:
    """Whether this monitor is Pacemaker's probe (interval 0: is it running here?)."""
    interval = os.environ.get("OCF_RESKEY_CRM_meta_interval", "0")  # noqa: SIM112
    return interval in ("", "0")


def check_level() -> int:
    """OCF_CHECK_LEVEL (0 when unset or not a number)."""
    try:
        return int(os.environ.get("OCF_CHECK_LEVEL", "0"))
    except ValueError:
        return 0


def _load(*, probe: bool = False) -> Config:
    """The configuration; AgentExit 7 for a probe where the file does not exist, else 6
    (so too a drbd parameter that is no mode, or that the configuration cannot serve)."""
    from hanode.config import load

    mode = drbd_mode()
    path = config_file()
    if not os.path.lexists(path):
        if probe:
            raise AgentExit(OcfExit.NOT_RUNNING, f"{path}: no such file: hanode is not configured")
        raise AgentExit(
            OcfExit.ERR_CONFIGURED,
            f"{path}: no such file (set the resource's config parameter to hanode.toml)",
        )
    try:
        config = load(path)
    except ConfigError as err:
        raise AgentExit(OcfExit.ERR_CONFIGURED, str(err)) from None
    if not config.sections():
        raise AgentExit(
            OcfExit.ERR_CONFIGURED,
            f"{path}: no section is configured, hanode manages nothing "
            "(uncomment the sections that apply to this node)",
        )
    if mode is DrbdMode.CLONE and "drbd" not in config.settings:
        raise AgentExit(
            OcfExit.ERR_CONFIGURED,
            f"drbd=clone, but {path} has no [drbd] section: the agent cannot check that the "
            "clone's resource is Primary before it mounts (add [drbd] resource = NAME)",
        )
    if mode is DrbdMode.CLONE and config.sections() == ["drbd"]:
        raise AgentExit(
            OcfExit.ERR_CONFIGURED,
            f"drbd=clone, but {path} configures nothing besides [drbd], which the clone runs: "
            "this resource would manage nothing (configure the other sections, or drop it)",
        )
    return config


def _engine(config: Config, *, verdict: bool = False) -> Engine:
    """The engine of the configured steps. With drbd=clone, the [drbd] step is the
    Primary check (PromotedByClone), or, for ``verdict`` (monitor), left out."""
    from hanode.engine import Engine
    from hanode.resources import build

    resources = build(config)
    if drbd_mode() is DrbdMode.CLONE:
        from hanode.resources.drbd import DrbdConfig, PromotedByClone

        resources = [resource for resource in resources if resource.section != "drbd"]
        drbd = config.of(DrbdConfig)
        if drbd is not None and not verdict:
            resources.insert(0, PromotedByClone(drbd))
    return Engine(resources)


def start() -> OcfExit:
    """Engine.start: 0, or 1 with the failure or the refusal as the reason."""
    return _act(start=True)


def stop() -> OcfExit:
    """Engine.stop: 0, or 1 with the step that did not stop as the reason."""
    return _act(start=False)


def _act(*, start: bool) -> OcfExit:
    from hanode import interrupt
    from hanode import log as hlog
    from hanode.resources import Context

    engine = _engine(_load())
    os.chdir("/")  # never hold the mount the stop unmounts
    ctx = Context(progress=hlog.progress)
    try:
        with interrupt.guarded():
            report = engine.start(ctx) if start else engine.stop(ctx)
    except Refused as err:
        # nothing touched; the other node may run the resource (hanode.ocf's docstring)
        raise AgentExit(OcfExit.ERR_GENERIC, f"refused: {err}") from None
    done, verb = ("active", "start") if start else ("standby", "stop")
    hlog.log.info("node is %s (%s took %.2fs)", done, verb, report.seconds)
    return OcfExit.SUCCESS


def monitor() -> OcfExit:
    """Every step's probe, as OCF states; with OCF_CHECK_LEVEL >= 10 the deeper checks."""
    from hanode.engine import overall
    from hanode.errors import StatusExit
    from hanode.resources import State

    probe = is_probe()
    engine = _engine(_load(probe=probe), verdict=True)
    probes = engine.probe_all()
    verdict = overall([status.state for _, status, _ in probes])
    described = "; ".join(f"{r.name} {s.state.value}: {s.summary}" for r, s, _ in probes)
    if verdict is StatusExit.ALL_DOWN:
        return OcfExit.NOT_RUNNING
    if verdict is StatusExit.PARTLY_UP:
        raise AgentExit(OcfExit.ERR_GENERIC, f"partly up: {described}")
    if verdict is StatusExit.UNKNOWN:
        acting = any(status.state in (State.UP, State.PARTIAL) for _, status, _ in probes)
        if probe and not acting and any(finding.missing for _, finding in engine.check()):
            raise AgentExit(OcfExit.ERR_INSTALLED, f"not installed here: {described}")
        raise AgentExit(OcfExit.ERR_GENERIC, f"cannot tell: {described}")
    if check_level() >= DEEP_LEVEL:
        problems = deep_problems([(resource, status) for resource, status, _ in probes])
        if problems:
            raise AgentExit(OcfExit.ERR_GENERIC, "; ".join(problems))
    return OcfExit.SUCCESS


def deep_problems(probes: Sequence[tuple[Resource[Any], Status]]) -> list[str]:
    """OCF_CHECK_LEVEL 10 on a node whose steps all probe up: each managed unit exactly
    active (not reloading), the floating address's link up with carrier, and each
    mountpoint (the filesystem's, the links') writable."""
    problems: list[str] = []
    mountpoints: list[str] = []
    for resource, status in probes:
        if resource.section == "services":
            for unit, state in status.details.items():
                active = state.get("active") if isinstance(state, dict) else None
                if active != "active":
                    problems.append(f"unit {unit} is {active}, not active")
        elif resource.section == "address":
            link = status.details.get("link")
            if link != "up":
                where = status.details.get("interface")
                problems.append(f"{status.details.get('ip')} is on {where}, but its link is {link}")
        elif resource.section in ("filesystem", "links"):
            mountpoint = os.path.realpath(resource.config.mountpoint)
            if mountpoint not in mountpoints:
                mountpoints.append(mountpoint)
    problems += [problem for path in mountpoints if (problem := write_problem(path))]
    return problems


def write_problem(mountpoint: str) -> str | None:
    """Why a small file cannot be written, fsync'ed and unlinked under ``mountpoint``
    (None: it can). Its name holds the node, the pid and 64 random bits: it collides with
    no file of the data's, nor with another monitor's."""
    name = f".hanode-ocf-monitor.{os.uname().nodename}.{os.getpid()}.{secrets.token_hex(8)}"
    try:
        directory = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        return f"cannot open the mountpoint {mountpoint}: {err.strerror}"
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=directory)
        try:
            os.write(fd, b"hanode monitor\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name, dir_fd=directory)
    except OSError as err:
        return f"{mountpoint} is not writable: {err.strerror}"
    finally:
        os.close(directory)
    return None


def validate_all() -> OcfExit:
    """The config loads (else 6) and `hanode check` finds no error (5 for a missing
    program or unit, else 6)."""
    from hanode.resources import Level

    config = _load()
    findings = _engine(config).check()
    if config.peer is not None:
        from hanode.peer import check_peer

        findings += [("peer", finding) for finding in check_peer(config.peer)]
    errors = [(step, finding) for step, finding in findings if finding.level is Level.ERROR]
    if not errors:
        return OcfExit.SUCCESS
    text = "; ".join(
        f"{step}: {finding.message}" + (f" ({finding.hint})" if finding.hint else "")
        for step, finding in errors
    )
    if any(finding.missing for _, finding in errors):  # node-local: not fatal everywhere
        raise AgentExit(OcfExit.ERR_INSTALLED, text)
    raise AgentExit(OcfExit.ERR_CONFIGURED, text)


_ACTIONS: dict[str, Callable[[], OcfExit]] = {
    "start": start,
    "stop": stop,
    "monitor": monitor,
    "validate-all": validate_all,
}
