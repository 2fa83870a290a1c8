"""The peer channel's pieces without a network: [peer] parsing, the ssh command line,
peer-serve's allowlist, peer-key, `check`'s [peer] findings, the fact readers (on this
machine's real files and tools) and drift() on hand-built facts."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import run_hanode

from hanode import facts
from hanode.config import PeerConfig, parse
from hanode.errors import ConfigError, Exit, UsageError
from hanode.facts import Severity, drift
from hanode.nodelink import Reply
from hanode.peer import ALLOWED, Peer, authorized_line, check_peer, served_argv
from hanode.resources import Level
from hanode.resources.links import LinkSpec

PEER = '[peer]\nnodes = ["node01", "node02"]\n'


def peer_of(text: str) -> PeerConfig:
    parsed = parse(text, Path("h.toml")).peer
    assert parsed is not None
    return parsed


# -- [peer] ------------------------------------------------------------------------------


def test_peer_section_defaults() -> None:
    config = parse(PEER, Path("h.toml"))
    assert config.sections() == []  # not a step
    assert config.peer == PeerConfig(nodes=("node01", "node02"))
    assert config.peer.user == "root" and config.peer.connect_timeout == 5
    assert config.peer.identity == "/etc/hanode/peer_ed25519"
    assert config.peer.known_hosts == "/etc/hanode/peer_known_hosts"
    assert config.peer.other("node01") == "node02" and config.peer.other("node02") == "node01"
    assert config.peer.other("node03") is None
    assert config.peer.address("node02") == "node02"


def test_peer_section_all_keys() -> None:
    peer = peer_of(
        PEER + 'addresses = { node02 = "198.51.100.2" }\nuser = "hanode"\n'
        'identity = "/etc/k"\nconnect-timeout = 9\nknown-hosts = "/etc/kh"\n'
    )
    assert peer.address("node02") == "198.51.100.2" and peer.address("node01") == "node01"
    assert (peer.user, peer.identity, peer.connect_timeout, peer.known_hosts) == (
        "hanode",
        "/etc/k",
        9,
        "/etc/kh",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[peer]\nnodes = ["a"]\n', "h.toml:2: [peer] nodes: must name exactly two nodes, got 1"),
        ('[peer]\nnodes = ["a", "a"]\n', "h.toml:2: [peer] nodes[1]: a is named twice"),
        ('[peer]\nnodes = ["a", "-oProxyCommand=x"]\n', "h.toml:2: [peer] nodes[1]: expected"),
        ("[peer]\n", "h.toml:1: [peer]: missing required key nodes"),
        (PEER + "port = 22\n", "h.toml:3: [peer] port: unknown key"),
        (PEER + 'addresses = { node03 = "x" }\n', "h.toml:3: [peer] addresses: node03 is not"),
        (PEER + 'addresses = { node01 = "-oX" }\n', "h.toml:3: [peer] addresses: node01: expected"),
        (PEER + 'user = "root -o"\n', "h.toml:3: [peer] user: expected a user name"),
        (PEER + "connect-timeout = 0\n", "h.toml:3: [peer] connect-timeout: must be between"),
        (PEER + 'identity = "k"\n', "h.toml:3: [peer] identity: must be an absolute path"),
        ("[peers]\n", "h.toml:1: unknown section [peers]"),
    ],
)
def test_peer_section_errors_name_file_line_and_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text, Path("h.toml"))
    assert str(caught.value).startswith(message), str(caught.value)


# -- the ssh command line ------------------------------------------------------------------


def test_ssh_argv_is_fixed_and_ends_with_the_quoted_request() -> None:
    peer = Peer(peer_of(PEER + 'addresses = { node02 = "198.51.100.2" }\n'), this="node01")
    assert peer.name == "node02"
    argv = peer.ssh_argv(["status", "--json"])
    assert argv[:3] == ["ssh", "-F", "/dev/null"]
    assert argv[-5:] == ["-l", "root", "--", "198.51.100.2", "hanode status --json"]
    options = dict(argv[i + 1].split("=", 1) for i, word in enumerate(argv) if word == "-o")
    assert options["BatchMode"] == "yes" and options["StrictHostKeyChecking"] == "yes"
    assert options["IdentityFile"] == "/etc/hanode/peer_ed25519"
    assert options["UserKnownHostsFile"] == "/etc/hanode/peer_known_hosts"
    assert options["GlobalKnownHostsFile"] == "/dev/null"
    assert options["ConnectTimeout"] == "5" and options["IdentitiesOnly"] == "yes"


def test_ssh_argv_refuses_a_request_outside_the_allowlist() -> None:
    peer = Peer(peer_of(PEER), this="node02")
    for request in (["status", "--peer"], ["check", "-c", "/etc/shadow"], ["start", "--force"]):
        with pytest.raises(UsageError):
            peer.ssh_argv(request)


def test_a_node_not_in_nodes_cannot_have_a_peer() -> None:
    with pytest.raises(ConfigError, match=r"this node, node03, is not one of node01, node02"):
        Peer(peer_of(PEER), this="node03")


# -- peer-serve -------------------------------------------------------------------------


def test_served_argv_accepts_exactly_the_allowlist() -> None:
    for request in ALLOWED:
        assert served_argv(" ".join(request)) == list(request)
        assert served_argv("hanode " + " ".join(request)) == list(request)
    assert served_argv("  status   '--json' ") == ["status", "--json"]


@pytest.mark.parametrize(
    "command",
    [
        "id",
        "status; id",
        "status --json; id",
        "status --json --debug",
        "check -c /etc/shadow",
        "-c /etc/shadow check",
        "start --force",
        "stop --down",
        "import-drbdlinks /etc/shadow",
        "peer-serve",
        "status --peer",
        "hanode hanode status",
        "'status",
        "",
        "sftp",
        "scp -f /etc/shadow",
    ],
)
def test_served_argv_refuses_everything_else(command: str) -> None:
    with pytest.raises(UsageError, match="peer-serve: refused"):
        served_argv(command)


def test_peer_serve_without_ssh_refuses_and_ignores_the_config_options(tmp_path: Path) -> None:
    done = run_hanode("peer-serve", run_dir=tmp_path)
    assert done.returncode == Exit.USAGE
    assert "no SSH_ORIGINAL_COMMAND" in done.stderr and len(done.stderr.splitlines()) == 1
    done = run_hanode(
        "peer-serve", run_dir=tmp_path, env={"SSH_ORIGINAL_COMMAND": "check -c /etc/shadow"}
    )
    assert done.returncode == Exit.USAGE and "refused" in done.stderr, done.stderr
    done = run_hanode(
        "-c", "/etc/shadow", "peer-serve", run_dir=tmp_path, env={"SSH_ORIGINAL_COMMAND": "facts"}
    )
    assert done.returncode == Exit.USAGE and "takes no -c" in done.stderr, done.stderr
    done = run_hanode("peer-serve", run_dir=tmp_path, env={"SSH_ORIGINAL_COMMAND": "version"})
    assert (done.returncode, done.stdout) == (Exit.OK, "hanode 0.1.0\n"), done.stderr


def test_peer_serve_reads_the_default_config_never_hanode_config(tmp_path: Path) -> None:
    config = tmp_path / "h.toml"
    config.write_text('[services]\nunits = ["x.service"]\n')
    done = run_hanode(
        "peer-serve",
        run_dir=tmp_path,
        env={"SSH_ORIGINAL_COMMAND": "check --json", "HANODE_CONFIG": str(config)},
    )
    # whatever /etc/hanode/hanode.toml holds here, it is the file read, not $HANODE_CONFIG
    assert str(config) not in done.stdout + done.stderr
    assert "/etc/hanode/hanode.toml" in done.stdout + done.stderr, done.stderr


# -- peer-key ---------------------------------------------------------------------------


def test_peer_key_prints_the_restricted_line(tmp_path: Path) -> None:
    key = tmp_path / "peer_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "x", "-f", str(key)], check=True
    )
    config = tmp_path / "h.toml"
    config.write_text(PEER + f'identity = "{key}"\n')
    done = run_hanode("-c", str(config), "--insecure-config", "peer-key", run_dir=tmp_path)
    assert done.returncode == Exit.OK, done.stderr
    kind, blob = (tmp_path / "peer_ed25519.pub").read_text().split()[:2]
    node = os.uname().nodename
    expected = f'restrict,command="/usr/bin/hanode peer-serve" {kind} {blob} hanode@{node}\n'
    assert done.stdout == expected


def test_peer_key_without_a_key_names_the_ssh_keygen_command(tmp_path: Path) -> None:
    identity = str(tmp_path / "none")
    with pytest.raises(ConfigError) as caught:
        authorized_line(peer_of(PEER + f'identity = "{identity}"\n'), this="node01")
    assert str(caught.value) == (
        f"[peer] identity: no public key {identity}.pub (create the key pair: "
        f"ssh-keygen -t ed25519 -N '' -C hanode@node01 -f {identity})"
    )
    (tmp_path / "none.pub").write_text("not a key\n")
    with pytest.raises(ConfigError, match="is not an OpenSSH public key"):
        authorized_line(peer_of(PEER + f'identity = "{identity}"\n'), this="node01")


def test_check_finds_this_node_missing_from_nodes_and_the_missing_keys(tmp_path: Path) -> None:
    peer = peer_of(PEER + f'identity = "{tmp_path / "k"}"\nknown-hosts = "{tmp_path / "kh"}"\n')
    [finding] = check_peer(peer, this="node03")
    assert finding.level is Level.ERROR and "node03, is not one of" in finding.message
    found = check_peer(peer, this="node01")
    assert [f.level for f in found] == [Level.OK, Level.ERROR, Level.ERROR]
    assert "the peer is node02" in found[0].message
    assert found[1].hint and "ssh-keygen -t ed25519" in found[1].hint
    (tmp_path / "k").write_text("key")
    (tmp_path / "kh").write_text("hosts")
    assert [f.level for f in check_peer(peer, this="node01")] == [Level.OK]


def test_check_json_gives_the_findings_and_the_exit_code(tmp_path: Path) -> None:
    config = tmp_path / "h.toml"
    config.write_text(
        f'[links]\nmountpoint = "{tmp_path}/srv"\n'
        f'links = [{{ path = "{tmp_path}/a", target = "{tmp_path}/srv/a" }}]\n'
        '[peer]\nnodes = ["not-this-node", "nor-this"]\n'
    )
    done = run_hanode("-c", str(config), "--insecure-config", "check", "--json", run_dir=tmp_path)
    assert done.returncode == Exit.FAILED, done.stderr
    document = json.loads(done.stdout)
    assert document["exit"] == Exit.FAILED and document["config"] == str(config)
    assert document["node"] == os.uname().nodename
    assert set(document["findings"][0]) == {"step", "level", "message", "hint"}
    peer = [f for f in document["findings"] if f["step"] == "peer"]
    assert peer[0]["level"] == "error" and "is not one of [peer] nodes" in peer[0]["message"]
    text = run_hanode("-c", str(config), "--insecure-config", "check", run_dir=tmp_path)
    assert text.returncode == Exit.FAILED
    assert "is not one of [peer] nodes" in text.stdout


# -- fact readers, on this machine ----------------------------------------------------------


def test_normalise_drbd_dump_drops_comments_blank_lines_and_spacing() -> None:
    dump = (
        "# /etc/drbd.conf\nglobal {\n\tusage-count no;\n}\n\n"
        "# resource srv on node01: not ignored, not stacked\n"
        "# defined at /etc/drbd.d/srv.res:1\nresource srv {\n    on node01 {\n"
        "        device  /dev/drbd1 minor 1;   # the device\n    }\n}\n"
    )
    assert facts.normalise_drbd_dump(dump) == (
        "global {\nusage-count no;\n}\nresource srv {\non node01 {\n"
        "device /dev/drbd1 minor 1;\n}\n}"
    )


def test_drbd_definition_is_null_without_drbdadm_or_resource() -> None:
    # this host has no drbdadm (or no such resource): null, never an exception
    assert facts.drbd_definition("hanode-no-such-resource") is None


def test_unit_facts_read_a_real_unit(tmp_path: Path) -> None:
    found = facts.unit_facts(["apt-daily.service", "hanode-no-such.service"])
    unit = found["apt-daily.service"]
    assert unit["file"] and unit["file"].endswith("/systemd/system/apt-daily.service")
    assert unit["hash"] == facts.file_hash(unit["file"])
    assert unit["package"] == "apt"
    apt = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "apt"], capture_output=True, text=True, check=True
    )
    assert unit["package-version"] == apt.stdout
    if shutil.which("systemctl", path="/usr/sbin:/usr/bin:/sbin:/bin"):
        assert unit["unit-file-state"] in ("static", "enabled", "disabled")
    else:  # a package build's chroot: no systemd to ask
        assert unit["unit-file-state"] is None
    missing = found["hanode-no-such.service"]
    assert missing["file"] is None and missing["package"] is None


def test_package_versions_and_owners_from_dpkg() -> None:
    versions = facts.package_versions(["python3-tomlkit", "hanode-no-such-package"])
    assert versions["python3-tomlkit"] and versions["hanode-no-such-package"] is None
    owners = facts.owning_packages(["/usr/bin/dpkg", "/bin/dpkg", "/hanode-nowhere"])
    assert owners == {"/usr/bin/dpkg": "dpkg", "/bin/dpkg": "dpkg", "/hanode-nowhere": None}


def test_link_facts_see_the_original_in_place_or_set_aside(tmp_path: Path) -> None:
    standby, active, lost = (tmp_path / name for name in ("standby", "active", "lost"))
    standby.mkdir()
    (tmp_path / "target").mkdir()
    active.symlink_to(tmp_path / "target")
    (tmp_path / "active.drbdlinks").mkdir()
    specs = [LinkSpec(str(path), str(tmp_path / "target")) for path in (standby, active, lost)]
    assert facts.link_facts(specs) == {
        str(standby): {"linked": False, "original": True},
        str(active): {"linked": True, "original": True},
        str(lost): {"linked": False, "original": False},
    }


def test_drbd_module_version_reads_proc_or_modinfo() -> None:
    version = facts.drbd_module_version()
    if os.path.exists("/proc/drbd"):
        assert version == Path("/proc/drbd").read_text().splitlines()[0].strip()
    else:
        assert version is None or version[0].isdigit()


def test_facts_verb_prints_one_document(tmp_path: Path) -> None:
    config = tmp_path / "h.toml"
    config.write_text(
        '[services]\nunits = ["apt-daily.service"]\ntimeout = 30\n' '[peer]\nnodes = ["n1", "n2"]\n'
    )
    done = run_hanode("-c", str(config), "--insecure-config", "facts", run_dir=tmp_path)
    assert done.returncode == Exit.OK, done.stderr
    document = json.loads(done.stdout)
    assert document["config"] == {
        "services": {"units": ["apt-daily.service"], "timeout": 30},
        "peer": {
            "nodes": ["n1", "n2"],
            "addresses": {},
            "user": "root",
            "identity": "/etc/hanode/peer_ed25519",
            "connect-timeout": 5,
            "known-hosts": "/etc/hanode/peer_known_hosts",
        },
    }
    assert document["units"]["apt-daily.service"]["package"] == "apt"
    assert document["kernel"] == os.uname().release
    assert document["python-packages"]["python3-tomlkit"]
    assert document["drbd"] is None and document["links"] == {}


def test_gather_asks_dpkg_once_each_and_answers_as_the_separate_queries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The facts ask dpkg-query -S and -W once each (every -S run reads all the file
    lists), and find what the per-part queries find, on this host's real dpkg."""
    (tmp_path / "srv").mkdir()
    config = parse(
        '[services]\nunits = ["apt-daily.service", "hanode-no-such.service"]\n'
        f'[links]\nmountpoint = "{tmp_path}/srv"\n'
        f'links = [{{ path = "/usr/bin/dpkg", target = "{tmp_path}/srv/dpkg" }},\n'
        f'  {{ path = "/hanode-nowhere", target = "{tmp_path}/srv/x" }}]\n',
        tmp_path / "h.toml",
    )
    asked: list[tuple[str, ...]] = []
    real_run = facts.run

    def spy(argv: list[str], **options: Any) -> Any:
        asked.append(tuple(argv[:2]))
        return real_run(argv, **options)

    monkeypatch.setattr(facts, "run", spy)
    found = facts.gather(config)
    assert asked.count(("dpkg-query", "-S")) == 1, asked
    assert asked.count(("dpkg-query", "-W")) == 1, asked
    monkeypatch.setattr(facts, "run", real_run)
    assert found["units"] == facts.unit_facts(["apt-daily.service", "hanode-no-such.service"])
    assert found["units"]["apt-daily.service"]["package"] == "apt"
    assert found["link-packages"] == facts.owning_packages(["/usr/bin/dpkg", "/hanode-nowhere"])
    assert found["link-packages"]["/usr/bin/dpkg"] == "dpkg"
    assert found["python-packages"] == facts.package_versions(facts.PYTHON_PACKAGES)


# -- drift ------------------------------------------------------------------------------


UNIT = {
    "file": "/lib/systemd/system/apache2.service",
    "hash": "aa",
    "package": "apache2",
    "package-version": "2.4.62-1",
    "drop-ins": {"/etc/systemd/system/apache2.service.d/x.conf": "bb"},
    "unit-file-state": "disabled",
}
FACTS: dict[str, Any] = {
    "format": 1,
    "node": "node01",
    "version": "0.1.0",
    "config": {"drbd": {"resource": "srv"}, "services": {"units": ["apache2.service"]}},
    "drbd": "resource srv {\n}",
    "units": {"apache2.service": UNIT},
    "links": {"/etc/apache2": {"linked": False, "original": True}},
    "kernel": "6.1.0-28-amd64",
    "drbd-module": "version: 8.4.11 (api:1/proto:86-101)",
    "python-packages": {"python3-pyroute2": "0.7.2-2"},
    "link-packages": {"/etc/apache2": "apache2"},
}


_UNIT = ("units", "apache2.service")
_FACT = "unit apache2.service"


def changed(path: tuple[str, ...], value: object) -> dict[str, Any]:
    """FACTS with the value at ``path`` replaced."""
    result = copy.deepcopy(FACTS)
    node = result
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return result


def test_equal_facts_do_not_drift() -> None:
    assert drift(FACTS, copy.deepcopy(FACTS)) == []
    assert drift(FACTS, changed(("node",), "node02")) == []  # names differ, of course


@pytest.mark.parametrize(
    ("path", "value", "fact"),
    [
        (("version",), "0.2.0", "hanode version"),
        (("config", "drbd", "resource"), "r0", "config [drbd]"),
        (("config", "address"), {"ip": "192.0.2.10/24"}, "config [address]"),
        (("drbd",), "resource srv {\nprotocol A;\n}", "DRBD resource definition"),
        (("drbd",), None, "DRBD resource definition"),
        ((*_UNIT, "file"), "/etc/systemd/system/a", f"{_FACT} file"),
        ((*_UNIT, "hash"), "cc", f"{_FACT} file content (sha256)"),
        ((*_UNIT, "drop-ins"), {}, f"{_FACT} drop-ins (path: sha256)"),
        ((*_UNIT, "package"), None, f"{_FACT} package"),
        ((*_UNIT, "package-version"), "2.4.63-1", f"{_FACT} package version"),
        ((*_UNIT, "unit-file-state"), "enabled", f"{_FACT} at boot"),
        (("links", "/etc/apache2", "original"), False, "link /etc/apache2 original"),
    ],
)
def test_each_must_match_fact_is_an_error_both_ways(
    path: tuple[str, ...], value: object, fact: str
) -> None:
    local, peer = FACTS, changed(path, value)
    for here, there in ((local, peer), (peer, local)):
        found = drift(here, there)
        assert [d.fact for d in found] == [fact], found
        assert found[0].severity is Severity.ERROR
    only = drift(local, peer)[0]
    # both values are shown: the peer's holds the changed value, the local one does not
    assert only.local != only.peer
    if path[-1] not in ("unit-file-state", "original") and value is not None:
        assert json.dumps(value) in json.dumps(only.peer), only


def test_a_unit_enabled_at_boot_on_both_is_an_error_per_node() -> None:
    enabled = changed((*_UNIT, "unit-file-state"), "enabled")
    found = drift(enabled, enabled)
    assert [(d.fact, d.severity) for d in found] == [(f"{_FACT} at boot", "error")] * 2
    assert "on the local node" in found[0].why and "on the peer node" in found[1].why
    assert "systemctl disable apache2.service" in found[0].why


def test_a_linked_node_needs_no_original_in_place() -> None:
    active = changed(("links", "/etc/apache2"), {"linked": True, "original": False})
    assert drift(FACTS, active) == []  # a link made where there was nothing before


@pytest.mark.parametrize(
    ("path", "value", "fact"),
    [
        (("kernel",), "6.1.0-30-amd64", "kernel release"),
        (("drbd-module",), None, "DRBD module"),
        (("python-packages", "python3-pyroute2"), "0.7.9-1", "package python3-pyroute2"),
        (("link-packages", "/etc/apache2"), None, "owner of /etc/apache2"),
    ],
)
def test_each_warning_fact_is_a_warning_both_ways(
    path: tuple[str, ...], value: object, fact: str
) -> None:
    for here, there in ((FACTS, changed(path, value)), (changed(path, value), FACTS)):
        found = drift(here, there)
        assert [(d.fact, d.severity) for d in found] == [(fact, Severity.WARNING)], found
        assert found[0].to_json()["severity"] == "warning"


def test_the_config_facts_of_every_section_are_json(tmp_path: Path) -> None:
    """Every kind's settings (addresses, paths, enums included) as plain JSON data: the
    lab's config, each section used, went through `hanode facts` as text."""
    lab_config = Path(__file__).parent / "lab" / "provision" / "hanode.toml"
    config = parse(lab_config.read_text(), lab_config)
    document = json.loads(json.dumps(facts.config_facts(config)))
    assert set(document) == {"drbd", "filesystem", "links", "address", "services", "peer"}
    assert document["address"]["ip"] == "192.0.2.10/24"
    assert document["links"]["links"][0]["path"] == "/etc/apache2"


# -- status --peer and check --peer: this node's reads beside the peer's call -------------


def _meeting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, threading.Barrier]:
    """A config naming this node and a peer; the peer's call (its SSH transport stood in
    for: tests/test_peer_ssh.py runs it against a real sshd) answers only once this node's
    own read has begun too, at a barrier that times out if they run one after the other."""
    from hanode import cli

    node = os.uname().nodename
    (tmp_path / "srv").mkdir()
    (tmp_path / "data").mkdir()  # the link's original: a standby node
    config = tmp_path / "hanode.toml"
    config.write_text(
        f'[links]\nmountpoint = "{tmp_path / "srv"}"\n'
        f'links = [{{ path = "{tmp_path / "data"}", target = "{tmp_path / "srv/data"}" }}]\n'
        f'[peer]\nnodes = ["{node}", "peer-node"]\n'
    )
    monkeypatch.setenv("HANODE_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("HANODE_NO_JOURNAL", "1")
    barrier = threading.Barrier(2, timeout=10)
    gather = facts.gather  # the peer's own, unpatched: the same node here

    def call(self: Peer, argv: list[str], timeout: float) -> Reply:
        barrier.wait()
        if argv == ["facts"]:
            out = json.dumps(gather(parse(config.read_text(), config)))
        else:
            out = json.dumps({"node": "peer-node", "state": "down", "exit": 3, "resources": []})
        return Reply("peer-node", tuple(argv), 0, out, "", 0.1)

    monkeypatch.setattr(Peer, "call", call)
    probed = cli._probed_document

    def probed_when_met(*args: Any) -> dict[str, Any]:
        barrier.wait()
        return probed(*args)

    def gather_when_met(*args: Any) -> dict[str, Any]:
        barrier.wait()
        return gather(*args)

    monkeypatch.setattr(cli, "_probed_document", probed_when_met)
    monkeypatch.setattr(facts, "gather", gather_when_met)
    return config, barrier


@pytest.mark.parametrize("verb", ["status", "check"])
def test_the_peer_is_asked_while_this_node_reads_its_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str], verb: str
) -> None:
    """`status --peer` and `check --peer` no longer read this node first and then wait
    for the peer's SSH round trip (seconds on a busy node): both at once. On the old code
    the barrier breaks (each side waits for the other, one after the other)."""
    from hanode import cli

    config, barrier = _meeting(monkeypatch, tmp_path)
    code = cli.main(["-c", str(config), "--insecure-config", verb, "--peer", "--json"])
    assert not barrier.broken, "this node's read and the peer's call ran one after the other"
    document = json.loads(capsys.readouterr().out)
    if verb == "status":
        assert code == 3 and [n["node"] for n in document["nodes"]][1] == "peer-node"
    else:
        assert document["peer"] == "peer-node", document
        assert code == Exit.OK and document["differences"] == [], document


def test_a_failed_peer_call_is_raised_where_its_answer_is_awaited() -> None:
    from hanode.cli import _ask_peer
    from hanode.peer import PeerUnreachable

    class Answering:
        def call(self, argv: list[str], timeout: float) -> Reply:
            return Reply("peer-node", tuple(argv), 0, "{}", "", 0.1)

    class Unreachable:
        def call(self, argv: list[str], timeout: float) -> Reply:
            raise PeerUnreachable("no peer here")

    asked = _ask_peer(Unreachable(), ["status", "--json"])  # type: ignore[arg-type]
    with pytest.raises(PeerUnreachable, match="no peer here"):
        asked.result()
    reply = _ask_peer(Answering(), ["facts"]).result()  # type: ignore[arg-type]
    assert reply.argv == ("facts",) and reply.stdout == "{}"
