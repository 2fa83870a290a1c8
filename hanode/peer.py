"""The other node of the pair, reached over SSH: the transport of the two-node verbs.

``Peer(config).call(argv, timeout)`` runs one of hanode's allowlisted verbs on the other
node as ``ssh ... -l USER DEST -- hanode ARGV`` through hanode.run.run (no local shell),
with host keys checked against [peer] known-hosts only and the [peer] identity only. On
the other side the key is restricted to the forced command ``hanode peer-serve``
(hanode.peerserve), which runs nothing but the same allowlist: the remote command line
is a request, never a shell.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from hanode.config import Config, PeerConfig
from hanode.errors import ConfigError, HanodeError, Refused, UsageError
from hanode.nodelink import Reply
from hanode.run import CommandError, Completed, run, stderr_tail

if TYPE_CHECKING:
    from hanode.resources import Finding

# What may be asked of the peer: each request, word for word (a leading "hanode" is
# accepted by peer-serve too). Nothing here names a file, a config or an override.
ALLOWED: frozenset[tuple[str, ...]] = frozenset(
    {
        ("status",),
        ("status", "--json"),
        ("status", "--json", "--arp"),  # switchover's verify: who answers for the VIP
        ("check",),
        ("check", "--json"),
        ("facts",),
        ("survey",),  # switchover's preflight: status, check and facts in one call
        ("start",),
        ("stop",),
        ("start", "--dry-run"),
        ("stop", "--dry-run"),
        ("version",),
    }
)
# A dead peer is noticed within INTERVAL x COUNT seconds once connected.
SERVER_ALIVE_INTERVAL = 5
SERVER_ALIVE_COUNT = 3
# A master connection left behind (its hanode killed) ends after this many idle seconds.
MASTER_IDLE = 30
# ssh's own exit status when it failed (connection, authentication, host key).
SSH_FAILED = 255
# Where the package installs the command (the units run it from there too).
HANODE = "/usr/bin/hanode"
KEYGEN_HINT = "ssh-keygen -t ed25519 -N '' -C hanode@{node} -f {identity}"


log = logging.getLogger(__name__)


class PeerUnreachable(Refused):
    """The peer could not be reached over SSH (exit 4: nothing was done there)."""


def this_node() -> str:
    """This node's name, as [peer] nodes names it (``uname -n``)."""
    return os.uname().nodename


def peer_config(config: Config) -> PeerConfig:
    """The [peer] settings; a ConfigError naming the fix when the section is absent."""
    if config.peer is None:
        raise ConfigError(
            f"{config.path}: no [peer] section: hanode does not know the other node",
            'add [peer] with nodes = ["THIS-NODE", "OTHER-NODE"] (see hanode.toml(5))',
        )
    return config.peer


class Peer:
    """The other node of [peer] nodes, reached with ssh; a ``NodeLink``."""

    def __init__(self, config: PeerConfig, this: str | None = None) -> None:
        self.config = config
        here = this if this is not None else this_node()
        other = config.other(here)
        if other is None:
            raise ConfigError(
                f"[peer] nodes: this node, {here}, is not one of {', '.join(config.nodes)}",
                f"name this node as `uname -n` does: {here}",
            )
        self._name = other
        self.destination = config.address(other)
        # inside connection(): the master's socket folder, and whether the master is up
        self._control: Path | None = None
        self._master_up = False
        self._master_lock = threading.Lock()

    @property
    def name(self) -> str:
        """The peer's name."""
        return self._name

    def ssh_argv(self, argv: Sequence[str]) -> list[str]:
        """The ssh command line that runs ``hanode ARGV`` on the peer."""
        request = tuple(argv)
        if request not in ALLOWED:
            raise UsageError(
                f"not a request the peer serves: {shlex.join(request)!r}",
                "peer-serve runs only: " + ", ".join(sorted(" ".join(r) for r in ALLOWED)),
            )
        control = {}
        if self._master_up and self._control is not None:
            # a session on the master's connection; without it (gone), a connection of its own
            control = {"ControlMaster": "no", "ControlPath": str(self._control / "master")}
        return [*self._ssh(control), shlex.join(["hanode", *request])]

    def _ssh(self, extra: dict[str, str], *flags: str) -> list[str]:
        """ssh, its options (and ``extra``), ``flags``, the peer: all but a command."""
        options = {
            "BatchMode": "yes",  # never a password prompt: a key or nothing
            "ConnectTimeout": str(self.config.connect_timeout),
            "ServerAliveInterval": str(SERVER_ALIVE_INTERVAL),
            "ServerAliveCountMax": str(SERVER_ALIVE_COUNT),
            "IdentitiesOnly": "yes",  # not an agent's keys nor ~/.ssh's
            "IdentityFile": self.config.identity,
            "StrictHostKeyChecking": "yes",  # an unknown or changed host key is refused
            "UserKnownHostsFile": self.config.known_hosts,
            # only hanode's file: a key root's ssh_known_hosts trusts is not the peer's
            "GlobalKnownHostsFile": "/dev/null",
            "CheckHostIP": "no",  # addresses may move; the key names the peer
            "RequestTTY": "no",
            "ForwardAgent": "no",
            "ForwardX11": "no",
            "ClearAllForwardings": "yes",
            "PermitLocalCommand": "no",
            "UpdateHostKeys": "no",
            "LogLevel": "ERROR",  # no banners on stderr: its last line is the reason
            **extra,
        }
        command = ["ssh", "-F", "/dev/null"]  # no ~/.ssh/config nor /etc/ssh/ssh_config
        for key, value in options.items():
            command += ["-o", f"{key}={value}"]
        return [*command, *flags, "-l", self.config.user, "--", self.destination]

    @contextmanager
    def connection(self) -> Iterator[None]:
        """One SSH connection for the calls made inside (a switchover's several): the
        first call opens it (a master in the background: the key exchange and the
        authentication, seconds on a busy node, are paid once), each call is a session
        on it, leaving closes it. The master's socket lives in a folder of its own that
        only root can enter; a master left behind by a killed hanode ends by itself once
        idle (MASTER_IDLE). Where that folder cannot be made, or the master has gone (the
        peer lost), each call connects on its own, as outside: ssh falls back by itself.
        A peer the master cannot reach is PeerUnreachable, as a call would be."""
        from hanode.engine import run_dir

        try:
            self._control = Path(tempfile.mkdtemp(prefix="hanode-ssh-", dir=run_dir()))
        except OSError as err:
            log.debug("no SSH master: %s", err)
            yield
            return
        try:
            yield
        finally:
            control, self._control = self._control, None
            with self._master_lock:
                if self._master_up:
                    self._master_up = False
                    with contextlib.suppress(HanodeError):
                        run(
                            self._ssh({"ControlPath": str(control / "master")}, "-O", "exit"),
                            timeout=10,
                            check=False,
                        )
            shutil.rmtree(control, ignore_errors=True)

    def _open_master(self, timeout: float) -> None:
        """Inside connection(): the master connection, once (PeerUnreachable if ssh
        cannot connect: the call would fail the same way)."""
        with self._master_lock:
            if self._control is None or self._master_up:
                return
            command = self._ssh(
                {
                    "ControlMaster": "yes",
                    "ControlPath": str(self._control / "master"),
                    "ControlPersist": str(MASTER_IDLE),
                },
                "-N",  # no command: the forced one runs for each session, not for this
                "-f",  # into the background once authenticated
            )
            done = self._run_ssh(command, timeout)
            if done.returncode != 0:
                raise self._unreachable(stderr_tail(done.stderr, 1) or "ssh failed (exit 255)")
            self._master_up = True

    def call(self, argv: Sequence[str], timeout: float) -> Reply:
        """Run ``hanode ARGV`` on the peer; its exit status is in the reply.

        PeerUnreachable when ssh itself failed (exit 255) or the call timed out.
        """
        began = time.monotonic()
        if self._control is not None:
            self._open_master(timeout)
        done = self._run_ssh(self.ssh_argv(argv), max(timeout - (time.monotonic() - began), 1))
        if done.returncode == SSH_FAILED:
            raise self._unreachable(stderr_tail(done.stderr, 1) or "ssh failed (exit 255)")
        return Reply.of(self._name, argv, done, began)

    def _run_ssh(self, command: list[str], timeout: float) -> Completed:
        """Run an ssh command line to its end; PeerUnreachable when ssh could not be run
        or did not end in time."""
        try:
            return run(command, timeout=timeout, check=False)
        except CommandError as err:
            reason = "timed out" if err.returncode is None else "could not run ssh"
            raise self._unreachable(f"{reason}: {stderr_tail(err.stderr, 1) or err}") from err

    def _unreachable(self, why: str) -> PeerUnreachable:
        return PeerUnreachable(
            f"peer {self._name} ({self.config.user}@{self.destination}) unreachable: {why}",
            f"check that it is up and that `hanode peer-key` of this node is in its "
            f"/root/.ssh/authorized_keys and its host key in {self.config.known_hosts}",
        )


def authorized_line(config: PeerConfig, this: str | None = None) -> str:
    """The authorized_keys line the peer needs for this node's key: restricted to
    ``hanode peer-serve``, no pty, no forwarding."""
    here = this if this is not None else this_node()
    public = Path(config.identity + ".pub")
    keygen = KEYGEN_HINT.format(node=here, identity=config.identity)
    try:
        text = public.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"[peer] identity: no public key {public}", f"create the key pair: {keygen}"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"[peer] identity: cannot read {public}: {err}") from None
    words = text.split()
    if len(words) < 2 or not words[0].startswith(("ssh-", "ecdsa-", "sk-")):
        raise ConfigError(
            f"[peer] identity: {public} is not an OpenSSH public key",
            f"create the key pair again: {keygen}",
        )
    return f'restrict,command="{HANODE} peer-serve" {words[0]} {words[1]} hanode@{here}'


def served_argv(command: str | None) -> list[str]:
    """The verb peer-serve runs for ``$SSH_ORIGINAL_COMMAND``: one of ALLOWED, word for
    word (a leading ``hanode`` dropped); anything else is a UsageError (exit 2)."""
    if command is None:
        raise UsageError(
            "peer-serve: no SSH_ORIGINAL_COMMAND: it runs only as the forced command of "
            "the peer's key",
            "put `hanode peer-key`'s line in /root/.ssh/authorized_keys",
        )
    try:
        words = shlex.split(command)
    except ValueError as err:
        raise UsageError(f"peer-serve: refused {command[:200]!r}: {err}") from None
    if words[:1] == ["hanode"]:
        words = words[1:]
    if tuple(words) not in ALLOWED:
        raise UsageError(
            f"peer-serve: refused {command[:200]!r}: not one of the verbs a peer may ask for",
            "allowed: " + ", ".join(sorted(" ".join(request) for request in ALLOWED)),
        )
    return words


def check_peer(config: PeerConfig, this: str | None = None) -> list[Finding]:
    """`hanode check`'s findings for [peer]: this node is one of the two, and its key
    and the known host keys are there."""
    from hanode.resources import Finding, Level

    here = this if this is not None else this_node()
    if config.other(here) is None:
        return [
            Finding(
                Level.ERROR,
                f"this node, {here}, is not one of [peer] nodes ({', '.join(config.nodes)})",
                f"name this node as `uname -n` does: {here}",
            )
        ]
    other = config.other(here) or ""
    found = [Finding(Level.OK, f"the peer is {other}, reached at {config.address(other)}")]
    if not os.path.exists(config.identity):
        keygen = KEYGEN_HINT.format(node=here, identity=config.identity)
        found.append(Finding(Level.ERROR, f"no SSH key {config.identity}", f"create it: {keygen}"))
    if not os.path.exists(config.known_hosts):
        found.append(
            Finding(
                Level.ERROR,
                f"no known host keys {config.known_hosts}: the peer cannot be verified",
                f"on the peer: ssh-keyscan -t ed25519 localhost, the key's line into "
                f"{config.known_hosts} here, with the peer's address in front",
            )
        )
    return found
