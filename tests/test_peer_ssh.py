"""The peer channel against a real sshd: the restricted key runs the allowed verbs and
nothing else.

Each test module run starts its own /usr/sbin/sshd (a child of the test, never the host's
service) on 127.0.0.1:22 of a network namespace it creates, with a host key, an
authorized_keys holding `hanode peer-key`'s line and an sshd_config of its own that
allows pty, forwarding and sftp: whatever is refused is refused by the key's `restrict`
and by peer-serve, not by the server's config. hanode runs as a client in the same
namespace (`ip netns exec`), as a person would run it on the other node.

The forced command is a small wrapper, not /usr/bin/hanode: the package is not installed
here, and peer-serve always reads /etc/hanode/hanode.toml, which a test must not write.
The wrapper runs this work tree's `hanode peer-serve` with DEFAULT_PATH pointed at the
"peer's" config, and nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import PYTHON, ROOT, missing, run_hanode, wait_for

from hanode.config import parse
from hanode.errors import Exit, StatusExit
from hanode.peer import Peer, authorized_line

pytestmark = pytest.mark.root

SSHD = "/usr/sbin/sshd"
NODE = os.uname().nodename
PEER = "peer-node"
ADDRESS = "127.0.0.1"  # loopback of the test's own namespace

WRAPPER = """\
#!{python}
# The forced command of the test's key: this work tree's `hanode peer-serve`, reading the
# peer's config at {config} instead of /etc/hanode/hanode.toml (see the module's doc).
import os, sys
sys.path.insert(0, {root!r})
os.environ["HANODE_RUN_DIR"] = {run_dir!r}
os.environ["HANODE_NO_JOURNAL"] = "1"
from pathlib import Path
import hanode.config
hanode.config.DEFAULT_PATH = Path({config!r})
from hanode.cli import main
sys.exit(main(["peer-serve"]))
"""

SSHD_CONFIG = """\
ListenAddress {address}:22
HostKey {host_key}
PidFile none
AuthorizedKeysFile {authorized_keys}
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
# all allowed here: the key's `restrict` is what must refuse them
PermitTTY yes
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
X11Forwarding yes
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel VERBOSE
"""


def _config(tmp: Path, name: str, target: str, **peer: str) -> Path:
    """A [links] config on files of ``tmp`` (nothing mounted) and the [peer] section."""
    srv = tmp / "srv"
    srv.mkdir(exist_ok=True)
    (tmp / "etc-x").mkdir(exist_ok=True)
    settings = {
        "identity": str(tmp / "peer_ed25519"),
        "known-hosts": str(tmp / "known_hosts"),
        "connect-timeout": "3",
        **peer,
    }
    keys = "\n".join(
        f"{key} = {value}" if value.isdigit() else f'{key} = "{value}"'
        for key, value in settings.items()
    )
    path = tmp / name
    path.write_text(
        textwrap.dedent(
            f"""\
            [links]
            mountpoint = "{srv}"
            links = [{{ path = "{tmp / "etc-x"}", target = "{srv / target}" }}]

            [peer]
            nodes = ["{NODE}", "{PEER}"]
            addresses = {{ {PEER} = "{ADDRESS}" }}
            """
        )
        + keys
        + "\n"
    )
    return path


@dataclass
class Server:
    """The running sshd and what a client needs to reach it."""

    netns: str
    tmp: Path
    local_config: Path  # this node's hanode.toml
    peer_config: Path  # what the peer's peer-serve reads
    ssh_options: list[str]  # a client holding the key, asking for whatever it likes

    def client(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, "ssh", *self.ssh_options, *args]

    def hanode(self, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
        """This node's hanode, in the namespace: it reaches the peer on its loopback."""
        return run_hanode(
            *("-c", str(config or self.local_config), *args),
            run_dir=self.tmp / "run-local",
            prefix=["ip", "netns", "exec", self.netns],
        )


def _run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout, check=False
    )


# what hanode's ssh refuses on its own side; an attacker holding the key would not
_CLIENT_SIDE = ("RequestTTY", "ClearAllForwardings", "ForwardAgent", "ForwardX11", "LogLevel")


def _attacker_options(argv: list[str]) -> list[str]:
    """hanode's ssh options (key, known hosts, batch mode) less its own restrictions."""
    options = argv[1 : argv.index("-l")]
    kept: list[str] = []
    for flag, value in zip(options[::2], options[1::2], strict=True):
        if not value.startswith(_CLIENT_SIDE):
            kept += [flag, value]
    return kept


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if os.geteuid() != 0:
        missing("needs root")
    for tool in (SSHD, "/usr/bin/ssh", "/usr/bin/ssh-keygen", "/usr/bin/scp"):
        if not os.path.exists(tool):
            missing(f"{tool} is not installed (tests/setup-host installs openssh-server)")
    tmp = tmp_path_factory.mktemp("peer-ssh")
    os.chmod(tmp, 0o700)
    (tmp / "run-local").mkdir()
    (tmp / "run-peer").mkdir()
    for key in ("host_key", "peer_ed25519"):
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key, "-f", str(tmp / key)])
    host_public = (tmp / "host_key.pub").read_text().split()
    (tmp / "known_hosts").write_text(f"{ADDRESS} {host_public[0]} {host_public[1]}\n")
    local = _config(tmp, "local.toml", "etc-x")
    peer = _config(tmp, "peer.toml", "etc-x")
    wrapper = tmp / "serve"
    wrapper.write_text(
        WRAPPER.format(
            python=PYTHON, root=str(ROOT), run_dir=str(tmp / "run-peer"), config=str(peer)
        )
    )
    wrapper.chmod(0o755)
    # `hanode peer-key`'s line, the wrapper in the place of /usr/bin/hanode
    line = authorized_line(parse(local.read_text(), local).peer)  # type: ignore[arg-type]
    assert line.startswith('restrict,command="/usr/bin/hanode peer-serve" ssh-ed25519 ')
    line = line.replace("/usr/bin/hanode peer-serve", str(wrapper))
    (tmp / "authorized_keys").write_text(line + "\n")
    (tmp / "sshd_config").write_text(
        SSHD_CONFIG.format(
            address=ADDRESS, host_key=tmp / "host_key", authorized_keys=tmp / "authorized_keys"
        )
    )
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    netns = f"hanode-ssh-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    log = (tmp / "sshd.log").open("w")
    sshd: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        sshd = subprocess.Popen(
            ["ip", "netns", "exec", netns, SSHD, "-D", "-e", "-f", str(tmp / "sshd_config")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        assert wait_for(lambda: "Server listening" in (tmp / "sshd.log").read_text(), 10), (
            tmp / "sshd.log"
        ).read_text()
        argv = Peer(parse(local.read_text(), local).peer, NODE).ssh_argv(["status"])  # type: ignore[arg-type]
        yield Server(netns, tmp, local, peer, [*_attacker_options(argv), "-l", "root"])
    finally:
        if sshd is not None:
            sshd.terminate()
            sshd.wait(10)
        log.close()
        subprocess.run(["ip", "netns", "delete", netns], check=False)


def test_an_allowed_verb_runs_on_the_peer(server: Server) -> None:
    done = server.hanode("status", "--peer", "--json")
    assert done.returncode == StatusExit.ALL_DOWN, done.stderr
    document = json.loads(done.stdout)
    local, peer = document["nodes"]
    assert local["config"] == str(server.local_config)
    assert peer["config"] == str(server.peer_config)  # it ran the peer's peer-serve
    assert [r["name"] for r in peer["resources"]] == ["links"]
    assert peer["state"] == "down"
    # the same through a plain ssh, the allowed request word for word
    done = _run(server.client(ADDRESS, "hanode status --json"))
    assert done.returncode == StatusExit.ALL_DOWN, done.stderr
    assert json.loads(done.stdout)["config"] == str(server.peer_config)


def test_stop_runs_on_the_peer_and_status_peer_shows_both_nodes(server: Server) -> None:
    done = _run(server.client(ADDRESS, "hanode stop"))
    assert done.returncode == Exit.OK, done.stderr
    assert "node is standby" in done.stderr  # the peer's log comes back on stderr
    assert (server.tmp / "run-peer" / "hanode" / "last-stop.json").exists()  # it ran there
    done = server.hanode("status", "--peer")
    assert done.returncode == StatusExit.ALL_DOWN, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == [NODE, NODE]  # one column per node (one host here)
    assert lines[1].split() == ["node", "down", "down"]
    assert lines[2].split() == ["links", "down", "down"]
    # the peer's last run (its stop above); this node has run none
    assert len(lines) == 4 and lines[3].startswith(f"  {NODE} last stop: "), done.stdout
    assert "ok in" in lines[3] and "links skipped" in lines[3]


def test_a_shell_command_is_refused(server: Server) -> None:
    for command in ("id", "status; id", "status && id", "$(id)", "check -c /etc/shadow"):
        done = _run(server.client(ADDRESS, command))
        assert done.returncode == Exit.USAGE, (command, done.stdout, done.stderr)
        assert "uid=" not in done.stdout and "root:" not in done.stdout, command
        assert "refused" in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    for command in ("start --force", "status --debug", "facts /etc/shadow", "stop --down"):
        done = _run(server.client(ADDRESS, command))
        assert done.returncode == Exit.USAGE, (command, done.stderr)


def test_no_pty_is_given(server: Server) -> None:
    done = _run(server.client("-tt", ADDRESS, "version"))
    assert "PTY allocation request failed" in done.stderr, done.stderr


def test_port_forwarding_is_refused(server: Server) -> None:
    # -L: a connection through the forward to the peer's sshd would read its banner
    forward = subprocess.Popen(
        server.client("-N", "-L", "127.0.0.1:2200:127.0.0.1:22", ADDRESS),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        received = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = _run(
                ["ip", "netns", "exec", server.netns, PYTHON, "-c", _READ_BANNER], timeout=15
            )
            if probe.returncode == 0:
                received = bytes.fromhex(probe.stdout.strip())
                break
            time.sleep(0.1)  # the forward is not listening yet
        else:
            pytest.fail("ssh -L never listened")
    finally:
        forward.terminate()
        _, stderr = forward.communicate(timeout=10)
    assert not received.startswith(b"SSH-"), received
    assert "administratively prohibited" in stderr, stderr
    # -R: the server refuses to listen for the client
    done = _run(
        server.client("-N", "-o", "ExitOnForwardFailure=yes", "-R", "2201:127.0.0.1:22", ADDRESS)
    )
    assert done.returncode == 255 and "forwarding failed" in done.stderr, done.stderr


_READ_BANNER = textwrap.dedent(
    """\
    import socket
    with socket.create_connection(("127.0.0.1", 2200), timeout=5) as s:
        data = b""
        try:
            data = s.recv(64)
        except OSError:
            pass
    print(data.hex())
    """
)


def test_sftp_and_scp_are_refused(server: Server) -> None:
    # the forced command runs instead of the subsystem (sshd passes no stderr back here):
    # exit 2 is peer-serve's refusal, and no sftp packet came back
    done = _run(server.client("-s", ADDRESS, "sftp"))
    assert (done.returncode, done.stdout) == (Exit.USAGE, ""), done
    target = server.tmp / "shadow-copy"
    for legacy in ([], ["-O"]):
        done = _run(
            [
                *("ip", "netns", "exec", server.netns, "scp", *legacy, *server.ssh_options),
                *(f"{ADDRESS}:/etc/shadow", str(target)),
            ]
        )
        assert done.returncode != 0, done.stderr
        assert not target.exists()


def test_check_peer_finds_no_drift_between_equal_nodes(server: Server) -> None:
    done = server.hanode("check", "--peer")
    assert done.returncode == Exit.OK, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == f"{NODE} and {PEER} agree (0 warning(s))"


def test_check_peer_reports_a_config_that_differs(server: Server) -> None:
    other = _config(server.tmp, "local-other.toml", "etc-y")
    done = server.hanode("check", "--peer", "--json", config=other)
    assert done.returncode == Exit.FAILED, done.stdout + done.stderr
    differences = json.loads(done.stdout)["differences"]
    assert [d["fact"] for d in differences] == ["config [links]"], differences
    assert differences[0]["local"]["links"][0]["target"].endswith("/etc-y")
    assert differences[0]["peer"]["links"][0]["target"].endswith("/etc-x")


def test_an_unreachable_peer_is_refused_with_the_reason(server: Server) -> None:
    # nothing listens on 127.0.0.2:22 in the namespace
    closed = _config(server.tmp, "closed.toml", "etc-x")
    closed.write_text(closed.read_text().replace(f'"{ADDRESS}"', '"127.0.0.2"'))
    done = server.hanode("status", "--peer", config=closed)
    assert done.returncode == StatusExit.UNKNOWN, done.stderr
    assert done.stdout.startswith(f"{NODE}: down"), done.stdout  # the local half
    assert f"peer {PEER} (root@127.0.0.2) unreachable" in done.stderr, done.stderr
    assert "Connection refused" in done.stderr
    done = server.hanode("check", "--peer", config=closed)
    assert done.returncode == Exit.REFUSED, done.stderr
    # a host key that is not the known one: refused before anything runs there
    (server.tmp / "other_known").write_text(
        f"{ADDRESS} " + " ".join((server.tmp / "peer_ed25519.pub").read_text().split()[:2])
    )
    strange = _config(
        server.tmp, "strange.toml", "etc-x", **{"known-hosts": str(server.tmp / "other_known")}
    )
    done = server.hanode("check", "--peer", config=strange)
    assert done.returncode == Exit.REFUSED, done.stderr
    assert "Host key verification failed" in done.stderr, done.stderr


CONNECTION = """\
import json, os, sys
sys.path.insert(0, {root!r})
os.environ["HANODE_RUN_DIR"] = {run_dir!r}
from pathlib import Path
from hanode.config import parse
from hanode.peer import Peer
path = Path({config!r})
peer = Peer(parse(path.read_text(), path).peer, {node!r})
codes, inside = [], []
with peer.connection():
    for argv in (["status", "--json"], ["check", "--json"], ["status", "--json"]):
        codes.append(peer.call(argv, 30).exitcode)
    inside = sorted(os.listdir({run_dir!r}))
    master = peer.ssh_argv(["status"])
print(json.dumps({{"codes": codes, "inside": inside, "after": sorted(os.listdir({run_dir!r})),
                   "master": master, "alone": peer.ssh_argv(["status"])}}))
"""


def test_a_connection_carries_every_call_over_one_ssh_login(server: Server) -> None:
    """Inside Peer.connection() the calls are sessions on one master connection: sshd
    sees one login for three calls, each call still runs the forced command (the peer's
    verbs answer), and leaving closes the master and removes its socket's folder."""
    run_dir = server.tmp / "run-connection"
    run_dir.mkdir(exist_ok=True)
    logins = (server.tmp / "sshd.log").read_text().count("Accepted publickey")
    script = CONNECTION.format(
        root=str(ROOT), run_dir=str(run_dir), config=str(server.local_config), node=NODE
    )
    done = _run(["ip", "netns", "exec", server.netns, PYTHON, "-c", script], timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["codes"] == [StatusExit.ALL_DOWN, Exit.OK, StatusExit.ALL_DOWN], done.stderr
    assert wait_for(
        lambda: (server.tmp / "sshd.log").read_text().count("Accepted publickey") >= logins + 1, 5
    )
    time.sleep(0.5)  # a second login, were there one, is logged by now
    assert (server.tmp / "sshd.log").read_text().count("Accepted publickey") == logins + 1
    [folder] = result["inside"]
    assert folder.startswith("hanode-ssh-")
    assert f"ControlPath={run_dir / folder}/master" in result["master"]
    assert result["after"] == [], "the master's folder is left behind"
    assert not any("ControlPath" in word for word in result["alone"])
    masters = _run(["pgrep", "-f", f"ControlPath={run_dir}"])
    assert masters.stdout == "", "the master connection still runs"
