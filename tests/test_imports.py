"""What a run imports: `hanode status`, and a start or stop with nothing to do, load no
library they do not use (the netlink library, the TOML writer, psutil, the journal's
bindings, the dataclasses machinery), so that a status answers in the time of the
interpreter and hanode's own code.

No timings: each test reads the list of modules a run imported (python's -X importtime)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from helpers import PYTHON, ROOT, imported, run_hanode

from hanode.errors import Exit, StatusExit

IMPORTTIME = {"PYTHONPROFILEIMPORTTIME": "1"}
# Never on these paths: pyroute2 (only start and stop change the address through it),
# tomlkit (only import-drbdlinks writes TOML), psutil (not used at all any more).
NEVER = {"pyroute2", "tomlkit", "psutil"}
# Nor the standard library's dataclasses: its import pulls in inspect (ast, dis...), and
# each dataclass compiles its methods with exec() when its module loads. hanode's records
# on these paths are NamedTuples (a mutable one, the run report, a plain class).
NO_DATACLASSES = {"dataclasses", "inspect"}
# hanode's own modules that status never needs, each imported by the functions that do:
# a start's DRBD decisions, the ARP/NA frames of the address, the /proc walks for holders
# and for copies of mounts in other namespaces.
NOT_FOR_STATUS = {
    "hanode.system.drbddecide",
    "hanode.system.announce",
    "hanode.system.holders",
    "hanode.system.namespaces",
}


def _links_config(tmp_path: Path, *, linked: bool) -> Path:
    """A [links] and [filesystem] config on files of tmp_path: nothing is mounted."""
    target = tmp_path / "srv" / "data"
    target.mkdir(parents=True)
    path = tmp_path / "data"
    if linked:
        (tmp_path / "data.drbdlinks").mkdir()
        path.symlink_to(target)
    else:
        path.mkdir()
    config = tmp_path / "hanode.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            [links]
            mountpoint = "{tmp_path / "srv"}"
            links = [{{ path = "{path}", target = "{target}" }}]
            """
        )
    )
    return config


def _full_config(tmp_path: Path, *, address: bool) -> Path:
    """Every section (the address only if asked) and [peer], as the lab's config has them;
    on a host without DRBD or systemd they answer unknown, which is what status reports,
    having imported what it needs to ask."""
    config = tmp_path / "full.toml"
    text = textwrap.dedent(
        f"""\
        [drbd]
        resource = "srv"

        [filesystem]
        device = "{tmp_path / "no-such-device"}"
        mountpoint = "{tmp_path / "srv"}"

        [links]
        mountpoint = "{tmp_path / "srv"}"
        links = [{{ path = "{tmp_path / "etc-x"}", target = "{tmp_path / "srv" / "etc-x"}" }}]

        [services]
        units = ["hanode-test-nothing.service"]

        [peer]
        nodes = ["node1", "node2"]
        addresses = {{ node1 = "192.0.2.11", node2 = "192.0.2.12" }}
        """
    )
    if address:
        text += '\n[address]\nip = "192.0.2.10/24"\ninterface = "hanode-none0"\n'
    config.write_text(text)
    return config


def test_status_without_an_address_imports_no_netlink_nor_toml_writer(tmp_path: Path) -> None:
    config = _full_config(tmp_path, address=False)
    done = run_hanode(
        "-c", str(config), "--insecure-config", "status", run_dir=tmp_path, env=IMPORTTIME
    )
    assert done.returncode in tuple(StatusExit), done.stderr[-2000:]
    modules = imported(done.stderr)
    # its probes ran (importtime lists no module importlib.import_module loads: the kinds)
    assert {"hanode.system.drbdstate", "hanode.system.dbus"} <= modules, done.stderr[-3000:]
    assert not {name for name in modules if name.split(".")[0] in NEVER}, done.stderr[-3000:]
    assert not modules & NOT_FOR_STATUS, done.stderr[-3000:]
    assert not modules & NO_DATACLASSES, done.stderr[-3000:]


def test_status_with_an_address_reads_it_without_pyroute2(tmp_path: Path) -> None:
    config = _full_config(tmp_path, address=True)
    done = run_hanode(
        "-c", str(config), "--insecure-config", "status", run_dir=tmp_path, env=IMPORTTIME
    )
    assert "hanode-none0 does not exist" in done.stdout, done.stdout + done.stderr[-2000:]
    modules = imported(done.stderr)
    # the list was read (else the next assertion would hold for nothing)
    assert "hanode.system.mountinfo" in modules, done.stderr[-3000:]
    assert not {name for name in modules if name.split(".")[0] in NEVER}, done.stderr[-3000:]
    assert not modules & NOT_FOR_STATUS, done.stderr[-3000:]
    assert not modules & NO_DATACLASSES, done.stderr[-3000:]


def test_a_dry_run_of_start_or_stop_imports_no_dataclasses(tmp_path: Path) -> None:
    """Every section planned, the address's included (its plan imports announce)."""
    config = _full_config(tmp_path, address=True)
    for verb in ("start", "stop"):
        done = run_hanode(
            "-c",
            str(config),
            "--insecure-config",
            verb,
            "--dry-run",
            run_dir=tmp_path,
            env=IMPORTTIME,
        )
        assert done.returncode == Exit.OK, done.stderr[-2000:]
        assert "hanode-none0" in done.stdout, done.stdout  # the address was planned
        modules = imported(done.stderr)
        assert {"hanode.config", "hanode.engine"} <= modules, done.stderr[-3000:]
        assert not modules & NO_DATACLASSES, f"{verb}: " + done.stderr[-3000:]


def test_what_status_leaves_out_is_what_check_and_start_use(tmp_path: Path) -> None:
    """The names in NOT_FOR_STATUS are hanode's modules, and the verbs that decide or send
    import them: a check of [address] (the raw sockets). (A check of [drbd] imports
    drbddecide for the timeouts only once drbdadm is there to define the resource: not on
    this host.)"""
    for name in NOT_FOR_STATUS:
        assert importlib.util.find_spec(name) is not None, name
    config = _full_config(tmp_path, address=True)
    done = run_hanode(
        "-c", str(config), "--insecure-config", "check", run_dir=tmp_path, env=IMPORTTIME
    )
    assert done.returncode in (Exit.OK, Exit.FAILED), done.stderr[-2000:]
    modules = imported(done.stderr)
    assert "hanode.system.announce" in modules, done.stderr[-3000:]


def test_a_start_and_a_stop_with_nothing_to_do_import_nothing_they_do_not_use(
    tmp_path: Path,
) -> None:
    for verb, linked in (("start", True), ("stop", False)):
        where = tmp_path / verb
        where.mkdir()
        config = _links_config(where, linked=linked)
        done = run_hanode(
            "-c", str(config), "--insecure-config", verb, run_dir=where, env=IMPORTTIME
        )
        assert done.returncode == Exit.OK, done.stderr[-2000:]
        assert "skipped" in done.stderr
        modules = imported(done.stderr)
        unused = NEVER | NO_DATACLASSES | {"jeepney", "systemd"}
        assert not {name for name in modules if name.split(".")[0] in unused}, done.stderr[-3000:]


def _python_lines(code: str, *args: str) -> list[str]:
    """What ``code`` prints, run with ``args`` in a fresh interpreter that imports this
    tree's hanode (the journal left to the code)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HANODE_NO_JOURNAL", None)
    done = subprocess.run(
        [PYTHON, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


JOURNAL = textwrap.dedent(
    """
    import logging, sys, types
    from hanode import log
    log._JOURNAL_SOCKET = sys.argv[1]  # "there is a journal": an existing path
    loaded = lambda: [m for m in ("systemd._journal", "systemd.journal") if m in sys.modules]
    log.setup()
    print("after setup:", loaded())
    logging.getLogger("hanode").debug("below the journal's level")
    print("after a debug line:", loaded())
    received = []
    if sys.argv[2] == "sendv":
        fake = types.ModuleType("systemd._journal")
        wanted = ("MESSAGE=", "SYSLOG_IDENTIFIER=")
        fake.sendv = lambda *fields: received.append([f for f in fields if f.startswith(wanted)])
        sys.modules["systemd._journal"] = fake
    else:  # a python3-systemd without the binding where 235 has it: its handler sends
        sys.modules["systemd._journal"] = None  # importing it raises ImportError

        class Handler(logging.Handler):
            def __init__(self, **fields):
                super().__init__()
                self.fields = fields

            def emit(self, record):
                received.append((self.fields, record.getMessage()))

        fake = types.ModuleType("systemd.journal")
        fake.JournalHandler = Handler
        sys.modules["systemd.journal"] = fake
    logging.getLogger("hanode").info("a step")
    print("received:", received)
    """
)


@pytest.mark.parametrize(
    ("through", "entry"),
    [
        ("sendv", "[['MESSAGE=a step', 'SYSLOG_IDENTIFIER=hanode']]"),
        ("handler", "[({'SYSLOG_IDENTIFIER': 'hanode'}, 'a step')]"),
    ],
)
def test_the_journal_bindings_load_with_the_first_entry_only(
    tmp_path: Path, through: str, entry: str
) -> None:
    assert _python_lines(JOURNAL, str(tmp_path), through) == [
        "after setup: []",
        "after a debug line: []",
        f"received: {entry}",
    ]


COLLECTOR = textwrap.dedent(
    """
    import gc, sys
    from hanode import cli, entry
    seen = []
    real_load = cli.load

    def load(*args, **kwargs):
        seen.append(("load", gc.isenabled()))
        return real_load(*args, **kwargs)

    real_probe_all = cli.Engine.probe_all

    def probe_all(self):
        seen.append(("probes", gc.isenabled()))
        return real_probe_all(self)

    cli.load = load
    cli.Engine.probe_all = probe_all
    sys.argv = ["hanode", "-c", sys.argv[1], "--insecure-config", "status"]
    code = entry.main()
    print(seen, gc.isenabled(), gc.get_freeze_count() > 0, code in (0, 1, 3, 4))
    """
)


def test_the_collector_is_off_while_hanode_loads_and_on_for_the_verb(tmp_path: Path) -> None:
    config = _links_config(tmp_path, linked=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HANODE_RUN_DIR": str(tmp_path)}
    env["HANODE_NO_JOURNAL"] = "1"
    done = subprocess.run(
        [PYTHON, "-c", COLLECTOR, str(config)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=60,
    )
    # off through the config's load (every kind imported), on again, startup frozen
    assert done.stdout.split("\n")[-2] == "[('load', False), ('probes', True)] True True True", (
        done.stdout + done.stderr
    )


PEEK = textwrap.dedent(
    """
    import json, sys
    from hanode import early
    from hanode.cmdline import build_parser
    args = build_parser().parse_args(["-c", sys.argv[1], "--insecure-config", "start"])
    wanted = early._wanted(args)
    from hanode.system import arp  # what the first request needs, and only that
    heavy = ["pathlib", "logging", "hanode.config", "hanode.system.drbdstate",
             "hanode.system.announce"]
    print(json.dumps({"wanted": str(wanted), "loaded": [m for m in heavy if m in sys.modules]}))
    """
)


def test_a_starts_first_probe_request_needs_none_of_the_heavy_modules(tmp_path: Path) -> None:
    """A start peeks at its config and sends its first ARP request before the rest of
    hanode loads (hanode.early): not pathlib, logging, the config's checks, /proc/drbd's
    parsers nor the announcer, which would each delay the request on a one-CPU node."""
    config = tmp_path / "hanode.toml"
    config.write_text(
        '[drbd]\nresource = "r"\n\n[address]\nip = "192.0.2.10/24"\ninterface = "eth0"\n'
    )
    assert _python_lines(PEEK, str(config))[-1] == (
        '{"wanted": "(\'eth0\', IPv4Address(\'192.0.2.10\'))", "loaded": []}'
    )
