"""Config loading: every error is one line naming the file, the line, the key and the fix."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest
from helpers import run_hanode

from hanode import config
from hanode.errors import ConfigError, Exit
from hanode.resources import kinds
from hanode.resources.address import AddressConfig
from hanode.resources.drbd import DrbdConfig
from hanode.resources.filesystem import FilesystemConfig, Fsck
from hanode.resources.links import LinksConfig
from hanode.resources.services import ServicesConfig

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "etc" / "hanode" / "hanode.toml"

FULL = """\
# a comment
[drbd]
resource = "srv"
wfc-timeout = 15
become-primary-on = "node1"

[filesystem]
device = "/dev/drbd1"
mountpoint = "/srv"
options = "noatime"

[links]
links = [
  { path = "/etc/apache2", target = "/srv/etc-apache2" },
  { path = "/var/www", target = "/srv/var-www" },
]

[address]
ip = "192.0.2.10/24"
interface = "eth0"

[services]
units = ["postgresql@15-main.service", "apache2.service"]
"""


def parse(text: str) -> config.Config:
    return config.parse(text, Path("/etc/hanode/hanode.toml"))


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_full_config_with_defaults() -> None:
    cfg = parse(FULL)
    assert cfg.sections() == ["drbd", "filesystem", "links", "address", "services"]
    assert cfg.of(DrbdConfig) == DrbdConfig(
        resource="srv", wfc_timeout=15, become_primary_on="node1"
    )
    filesystem = cfg.of(FilesystemConfig)
    assert filesystem is not None
    assert filesystem.type == "ext4"
    assert filesystem.kill_holders is True
    assert filesystem.stop_timeout == 30
    assert filesystem.fsck is Fsck.NEVER
    links = cfg.of(LinksConfig)
    assert links is not None
    assert links.mountpoint == "/srv"  # taken from [filesystem]
    assert [link.path for link in links.links] == ["/etc/apache2", "/var/www"]
    address = cfg.of(AddressConfig)
    assert address is not None
    assert address.ip == ipaddress.ip_interface("192.0.2.10/24")
    assert address.label == "eth0:1"
    assert address.arp_count == 5
    assert cfg.of(ServicesConfig) == ServicesConfig(
        units=("postgresql@15-main.service", "apache2.service"), timeout=90
    )


def test_empty_file_configures_nothing() -> None:
    assert parse("# nothing\n").sections() == []


def test_sections_are_optional() -> None:
    cfg = parse('[address]\nip = "2001:db8::10/64"\ninterface = "eth0"\n')
    assert cfg.sections() == ["address"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[drbd\n", "hanode.toml:1: invalid TOML"),
        (
            '[drbd]\nresource = "srv"\nresource = "other"\n',
            "hanode.toml:3: [drbd] resource defined twice (first at line 2)",
        ),
        (
            '[drbd]\nresource = "srv"\n[drbd]\n',
            'hanode.toml:3: invalid TOML: Key "drbd" already exists.',
        ),
        (
            "[drbd]\nresource = 3\n",
            "hanode.toml:2: [drbd] resource: expected a string, got number 3",
        ),
        ("[drbd]\nwfc-timeout = 3\n", "hanode.toml:1: [drbd]: missing required key resource"),
        (
            '[drbd]\nresource = "srv"\nwfc-timeout = 0\n',
            "hanode.toml:3: [drbd] wfc-timeout: 0 would wait for the peer forever",
        ),
        (
            '[drbd]\nresource = "srv"\ndegr-wfc-timeout = -4\n',
            "hanode.toml:3: [drbd] degr-wfc-timeout: must be between 1 and 86400 seconds, got -4",
        ),
        (
            '[drbd]\nresource = "srv"\non-demote-failure = "panic"\n',
            '[drbd] on-demote-failure: expected one of "fail", "force", "reboot", got \'panic\'',
        ),
        (
            '[drbd]\nresource = "srv"\nwfc_timeout = 10\n',
            "hanode.toml:3: [drbd] wfc_timeout: unknown key (known keys here:",
        ),
        ("[cluster]\nname = 1\n", "hanode.toml:1: unknown section [cluster]"),
        (
            '[filesystem]\ndevice = "/dev/drbd1"\nmountpoint = "srv"\n',
            "hanode.toml:3: [filesystem] mountpoint: must be an absolute path, got 'srv'",
        ),
        (
            '[filesystem]\ndevice = "/dev/drbd1"\nmountpoint = "/srv"\nkill-holders = "yes"\n',
            "hanode.toml:4: [filesystem] kill-holders: expected true or false, got string 'yes'",
        ),
        (
            '[filesystem]\ndevice = "/dev/drbd1"\nmountpoint = "/srv"\nstop-timeout = true\n',
            "hanode.toml:4: [filesystem] stop-timeout: expected an integer, got boolean true",
        ),
        (
            '[filesystem]\ndevice = "/dev/drbd1"\nmountpoint = "/srv"\nfsck = "sometimes"\n',
            "[filesystem] fsck: expected one of",
        ),
        (
            '[links]\nmountpoint = "/srv"\nlinks = [\n'
            '  { path = "/etc/apache2", target = "/srv/a" },\n'
            '  { path = "/var/www", target = "/var/www-real" },\n]\n',
            "hanode.toml:5: [links] links[1]: target /var/www-real is outside the mountpoint /srv",
        ),
        (
            '[links]\nmountpoint = "/srv"\nlinks = [{ path = "etc/apache2", target = "/srv/a" }]\n',
            "[links] links[0]: must be an absolute path, got 'etc/apache2'",
        ),
        (
            '[links]\nlinks = [{ path = "/etc/apache2", target = "/srv/a" }]\n',
            "[links]: missing mountpoint (no [filesystem] section to take it from)",
        ),
        (
            '[links]\nmountpoint = "/srv"\nlinks = []\n',
            "[links] links: must list at least one link",
        ),
        (
            '[address]\nip = "192.0.2.10/24"\ninterface = "eth0"\nlabel = "eth0:floating-ip"\n',
            "hanode.toml:4: [address] label: 'eth0:floating-ip' is 16 characters; the kernel "
            "allows at most 15",
        ),
        (
            '[address]\nip = "192.0.2.10/24"\ninterface = "eth0"\nlabel = "eth1:1"\n',
            "hanode.toml:4: [address] label: 'eth1:1' must start with the interface name 'eth0'",
        ),
        (
            '[address]\nip = "192.0.2.10"\ninterface = "eth0"\n',
            "hanode.toml:2: [address] ip: needs a prefix length, got '192.0.2.10'",
        ),
        (
            '[address]\nip = "192.0.2.300/24"\ninterface = "eth0"\n',
            "[address] ip: not an IP address",
        ),
        (
            '[address]\nip = "192.0.2.10/24"\ninterface = "eth0"\narp-count = 1000\n',
            "hanode.toml:4: [address] arp-count: must be between 0 and 100, got 1000",
        ),
        (
            "[services]\nunits = []\n",
            "hanode.toml:2: [services] units: must list at least one unit",
        ),
        (
            '[services]\nunits = ["apache2"]\n',
            "hanode.toml:2: [services] units: not a unit name: 'apache2'",
        ),
        (
            '[services]\nunits = ["a.service", "a.service"]\n',
            "[services] units: a.service is listed twice",
        ),
    ],
)
def test_errors_name_file_line_key(text: str, expected: str) -> None:
    assert expected in error_of(text)


def write(tmp_path: Path, text: str, mode: int = 0o644) -> Path:
    path = tmp_path / "hanode.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.root
def test_group_writable_config_refused(tmp_path: Path) -> None:
    path = write(tmp_path, FULL, 0o664)
    with pytest.raises(ConfigError, match=r"writable by group or others \(mode 0664\).*chmod go-w"):
        config.load(path)
    assert config.load(path, insecure=True).of(DrbdConfig) is not None


@pytest.mark.root
def test_config_not_owned_by_root_refused(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    os.chown(path, 65534, 65534)
    with pytest.raises(ConfigError, match="owned by uid 65534, not root"):
        config.load(path)


def test_missing_config_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file.*-c FILE"):
        config.load(tmp_path / "absent.toml")


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HANODE_CONFIG", raising=False)
    assert config.config_path(None) == Path("/etc/hanode/hanode.toml")
    monkeypatch.setenv("HANODE_CONFIG", "/tmp/env.toml")
    assert config.config_path(None) == Path("/tmp/env.toml")
    assert config.config_path("/tmp/cli.toml") == Path("/tmp/cli.toml")


def uncomment(text: str) -> str:
    """What an admin does to the shipped file: drop the "# " before settings."""
    return "".join(
        line[2:] if line.startswith("# ") else line for line in text.splitlines(keepends=True)
    )


def test_shipped_config_is_inert() -> None:
    assert parse(SHIPPED.read_text()).sections() == []


def test_shipped_config_uncommented_is_valid_and_matches_the_howto() -> None:
    cfg = parse(uncomment(SHIPPED.read_text()))
    assert cfg.sections() == [kind.section for kind in kinds()]
    drbd = cfg.of(DrbdConfig)
    assert drbd is not None and drbd.resource == "srv"
    filesystem = cfg.of(FilesystemConfig)
    assert filesystem is not None and filesystem.device == "/dev/drbd1"
    address = cfg.of(AddressConfig)
    assert address is not None and address.label == "eth0:1"


def test_cli_check_on_broken_config_exits_2_with_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[filesystem]\ndevice = "/dev/drbd1"\nmountpoint = 5\n')
    result = run_hanode("-c", str(path), "--insecure-config", "check")
    assert result.returncode == Exit.USAGE
    assert result.stderr.strip() == (
        f"hanode: error: {path}:3: [filesystem] mountpoint: expected a string, got number 5"
    )


def test_cli_inert_config_manages_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, SHIPPED.read_text())
    result = run_hanode("-c", str(path), "--insecure-config", "start")
    assert result.returncode == Exit.USAGE
    assert "no section is configured" in result.stderr
    assert "uncomment the sections that apply" in result.stderr
