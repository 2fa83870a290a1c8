"""Config loading: every error is one line naming the file, the line, the key and the fix."""

from __future__ import annotations

import ipaddress
import os
import time
from pathlib import Path

import pytest
from helpers import run_hanode

from hanode import config, configfile
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
            "hanode.toml:3: section [drbd] defined twice (first at line 1)",
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


# -- hardening: every finding below was an internal error, a hang, a message without a
# line, or a config accepted that could not work; each test fails on the code before it.

LINKS = '[links]\nmountpoint = "/srv"\nlinks = [\n'
ADDRESS = '[address]\nip = "192.0.2.10/24"\n'
HEX = "0x" + "f" * 4000  # 4,816 decimal digits: more than Python prints (4,300)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            '[filesystem]\ndevice = "/dev/drbd1"\nmountpoint = "/srv//data"\n',
            "hanode.toml:3: [filesystem] mountpoint: '/srv//data' is not in normal form: "
            "write it as '/srv/data'",
            id="path-with-double-slash",
        ),
        pytest.param(
            '[filesystem]\ndevice = "//dev/drbd1"\nmountpoint = "/srv"\n',
            "hanode.toml:2: [filesystem] device: '//dev/drbd1' is not in normal form",
            id="path-with-leading-double-slash",
        ),
        pytest.param(
            '[filesystem]\ndevice = "/dev/./drbd1"\nmountpoint = "/srv"\n',
            "write it as '/dev/drbd1'",
            id="path-with-dot",
        ),
        pytest.param(
            LINKS + '  { path = "/etc/a", target = "/srv/a" },\n'
            '  { path = "/etc//a", target = "/srv/b" },\n]\n',
            "hanode.toml:5: [links] links[1]: '/etc//a' is not in normal form: "
            "write it as '/etc/a'",
            id="same-link-path-spelled-two-ways",
        ),
        pytest.param(
            LINKS + '  { path = "/etc/apache2", target = "/srv/a" },\n'
            '  { path = "/etc/apache2/conf.d", target = "/srv/b" },\n]\n',
            "hanode.toml:5: [links] links[1]: path /etc/apache2/conf.d and links[0]'s "
            "/etc/apache2 are nested (link only the outer one)",
            id="link-path-inside-another",
        ),
        pytest.param(
            LINKS + '  { path = "/etc/apache2/conf.d", target = "/srv/b" },\n'
            '  { path = "/etc/apache2", target = "/srv/a" },\n]\n',
            "hanode.toml:5: [links] links[1]: path /etc/apache2 and links[0]'s "
            "/etc/apache2/conf.d are nested",
            id="link-path-around-another",
        ),
        pytest.param(
            LINKS + '  { path = "/", target = "/srv/root" },\n]\n',
            "hanode.toml:4: [links] links[0]: path / holds the mountpoint /srv",
            id="root-as-link-path",
        ),
        pytest.param(
            '[links]\nmountpoint = "/srv/data"\n'
            'links = [{ path = "/srv", target = "/srv/data/x" }]\n',
            "hanode.toml:3: [links] links[0]: path /srv holds the mountpoint /srv/data",
            id="link-path-above-the-mountpoint",
        ),
        pytest.param(
            '[filesystem]\ndevice = "/dev/drbd1"\nmountpoint = "/srv\\u0000"\n',
            "hanode.toml:3: [filesystem] mountpoint: must not contain control characters, "
            "got '/srv\\x00'",
            id="nul-in-a-path",
        ),
        pytest.param(
            LINKS + '  { path = "/etc/a\\nb", target = "/srv/a" },\n]\n',
            "hanode.toml:3: [links] links[0]: must not contain control characters, "
            "got '/etc/a\\nb'",
            id="newline-in-a-link-path",
        ),
        pytest.param(
            '[filesystem]\ndevice = "/dev/drbd1"\nmountpoint = "/srv"\n'
            'options = "noatime\\u0000"\n',
            "hanode.toml:4: [filesystem] options: must not contain control characters",
            id="nul-in-mount-options",
        ),
        pytest.param(
            ADDRESS + 'interface = "eth0"\nlabel = "eth0:1\\n"\n',
            "hanode.toml:4: [address] label: must not contain control characters, got 'eth0:1\\n'",
            id="newline-in-a-label",
        ),
        pytest.param(
            ADDRESS + 'interface = "eth0"\nlabel = "eth0:a/b"\n',
            "hanode.toml:4: [address] label: not an address label: 'eth0:a/b'",
            id="slash-in-a-label",
        ),
        pytest.param(
            ADDRESS + 'interface = ".."\n',
            "hanode.toml:3: [address] interface: not an interface name: '..'",
            id="interface-dotdot",
        ),
        pytest.param(
            ADDRESS + 'interface = "."\n',
            "hanode.toml:3: [address] interface: not an interface name: '.'",
            id="interface-dot",
        ),
        pytest.param(
            '[address]\nip = "192.0.2.10/0"\ninterface = "eth0"\n',
            "hanode.toml:2: [address] ip: prefix /0 would make every address on-link",
            id="ipv4-prefix-0",
        ),
        pytest.param(
            '[address]\nip = "2001:db8::10/0"\ninterface = "eth0"\n',
            "hanode.toml:2: [address] ip: prefix /0",
            id="ipv6-prefix-0",
        ),
        pytest.param(
            '[address]\nip = "2001:db8::10%eth0/64"\ninterface = "eth0"\n',
            "hanode.toml:2: [address] ip: '2001:db8::10%eth0/64' has a scope ID (%eth0)",
            id="scoped-ipv6",
        ),
        pytest.param(
            '[address]\nip = "fe80::10/64"\ninterface = "eth0"\n',
            "hanode.toml:2: [address] ip: fe80::10 is link-local",
            id="link-local-ipv6",
        ),
        pytest.param(
            '[drbd]\nresource = "srv"\nbecome-primary-on = "node1\\u0000"\n',
            "hanode.toml:3: [drbd] become-primary-on: must not contain control characters",
            id="nul-in-become-primary-on",
        ),
        pytest.param(
            '[drbd]\nresource = "srv"\nbecome-primary-on = ""\n',
            "hanode.toml:3: [drbd] become-primary-on: not a node name: ''",
            id="empty-become-primary-on",
        ),
        pytest.param(
            '[services]\nunits = ["a\\n.service"]\n',
            "hanode.toml:2: [services] units[0]: must not contain control characters",
            id="newline-in-a-unit",
        ),
        pytest.param(
            '[services]\nunits = ["a b.service"]\n',
            "hanode.toml:2: [services] units: not a unit name: 'a b.service'",
            id="space-in-a-unit",
        ),
        pytest.param(
            f'[drbd]\nresource = "srv"\nwfc-timeout = {HEX}\n',
            "hanode.toml:3: [drbd] wfc-timeout: must be between 1 and 86400 seconds, got 0xfff",
            id="huge-integer-in-a-range-error",
        ),
        pytest.param(
            f"[drbd]\nresource = {HEX}\n",
            "hanode.toml:2: [drbd] resource: expected a string, got number 0xfff",
            id="huge-integer-in-a-type-error",
        ),
    ],
)
def test_refused_values_name_file_line_key_and_fix(text: str, expected: str) -> None:
    assert expected in error_of(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "# c\ndrbd = 1\n", "hanode.toml:2: drbd must be a [drbd] table", id="not-a-table"
        ),
        pytest.param(
            "# c\n[[drbd]]\n",
            "hanode.toml:2: drbd must be a [drbd] table, got an array",
            id="array-of-tables",
        ),
        pytest.param(
            '# c\nname = "x"\n', "hanode.toml:2: unknown section [name]", id="top-level-key"
        ),
        pytest.param(
            "# c\ndrbd = { resource = 5 }\n",
            "hanode.toml:2: [drbd] resource: expected a string, got number 5",
            id="inline-table-section",
        ),
        pytest.param(
            "# c\ndrbd.resource = 5\n",
            "hanode.toml:2: [drbd] resource: expected a string, got number 5",
            id="dotted-key-section",
        ),
        pytest.param(
            "# c\n[drbd.x]\n",
            "hanode.toml:2: [drbd]: missing required key resource",
            id="section-made-of-a-sub-table",
        ),
        pytest.param(
            "[drbd.x]\na = 1\n[drbd]\nx = 1\n",
            "hanode.toml:4: drbd.x is already defined at line 1",
            id="table-redefined-by-a-key",
        ),
        pytest.param(
            "[drbd]\nx.a = 1\n[drbd.x]\nb = 1\n",
            "hanode.toml:3: drbd.x is already defined at line 2",
            id="dotted-key-redefined-by-a-table",
        ),
        pytest.param(
            '[drbd]\nresource = "srv"\n[filesystem]\n[drbd.x]\n[drbd]\n',
            "hanode.toml:5: section [drbd] defined twice (first at line 1)",
            id="section-redefined-after-a-sub-table",
        ),
        pytest.param(
            'drbd = { resource = "srv" }\n[drbd.x]\n',
            "hanode.toml:2: drbd.x: drbd is a value (line 1), it cannot be extended",
            id="inline-table-extended",
        ),
        pytest.param(
            "# c\na = " + "[" * 900 + "]" * 900 + "\n",
            "hanode.toml:2: invalid TOML: values nested too deeply",
            id="arrays-nested-900-deep",
        ),
        pytest.param(
            "# c\na = " + "{b=" * 900 + "1" + "}" * 900 + "\n",
            "hanode.toml:2: invalid TOML: values nested too deeply",
            id="inline-tables-nested-900-deep",
        ),
        pytest.param(
            "# c\na = [\n" + "[\n" * 2000 + "]\n" * 2000 + "]\n",
            "invalid TOML: values nested too deeply",
            id="arrays-nested-over-lines",
        ),
        pytest.param(
            '"a\\nb" = 1\n',
            "hanode.toml:1: unknown section ['a\\nb']",
            id="newline-in-a-section-name",
        ),
        pytest.param(
            '[drbd]\nresource = "srv"\n"x\\u2028y" = 1\n',
            "hanode.toml:3: [drbd] 'x\\u2028y': must not contain control characters",
            id="line-separator-in-a-key",
        ),
        pytest.param(
            "# a \u2028 b \x85 c\n[drbd]\nresource = 5\n",
            "hanode.toml:3: [drbd] resource: expected a string",
            id="unicode-line-breaks-in-a-comment-do-not-shift-lines",
        ),
        pytest.param(
            "# c\n#" + "x" * 5000 + "\n",
            "hanode.toml:2: line of 5001 characters, over the 4096",
            id="overlong-line",
        ),
        pytest.param(
            '\ufeff[drbd]\nresource = "srv"\n',
            "hanode.toml:1: starts with a byte order mark (U+FEFF) (save it without BOM)",
            id="byte-order-mark",
        ),
        pytest.param(
            '[drbd]\nresource = "srv"\nresource = "srv"',
            "hanode.toml:3: [drbd] resource defined twice (first at line 2)",
            id="duplicate-key-without-final-newline",
        ),
        pytest.param(
            '[drbd]\nresource = [\n"srv",\n',
            "hanode.toml:3: invalid TOML",
            id="unclosed-array-at-the-end",
        ),
    ],
)
def test_every_error_names_its_line(text: str, expected: str) -> None:
    assert expected in error_of(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("".join(f"[drbd.x{n}]\nk = 1\n" for n in range(700)), id="sub-tables"),
        pytest.param("[drbd]\n" + "".join(f"a.b{n} = 1\n" for n in range(700)), id="dotted-keys"),
        pytest.param("a" + ".a" * 2000 + " = 1\n", id="deep-dotted-key"),
    ],
)
def test_parsing_time_is_bounded(text: str) -> None:
    # tomlkit took 8 s for 8 KB of sub-tables and 3 s for 8 KB of dotted keys
    started = time.monotonic()
    with pytest.raises(ConfigError):
        parse(text)
    assert time.monotonic() - started < 1.0


def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "hanode.toml"
    path.write_bytes(b'# ok\n[drbd]\nresource = "sr\xffv"\n')
    with pytest.raises(ConfigError) as caught:
        config.load(path, insecure=True)
    assert str(caught.value) == (
        f"{path}:3: not UTF-8 (byte 0xff at column 15) (save the file as UTF-8)"
    )


def test_nul_in_the_config_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a file name"):
        config.load(Path("/etc/hanode/hanode\0.toml"), insecure=True)


def test_symlinked_config_names_the_real_file(tmp_path: Path) -> None:
    real = write(tmp_path, FULL)
    link = tmp_path / "link.toml"
    link.symlink_to(real)
    with pytest.raises(ConfigError) as caught:
        config.load(link, insecure=True)
    assert str(caught.value).startswith(f"{link}: is a symlink (to {real})")
    assert f"-c {real}" in str(caught.value)


def test_config_through_a_symlinked_directory_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    write(tmp_path / "real", FULL)
    (tmp_path / "alias").symlink_to("real")
    with pytest.raises(ConfigError, match=r"/alias is a symlink \(to .*/real\)"):
        config.load(tmp_path / "alias" / "hanode.toml", insecure=True)


def test_relative_config_path_is_walked_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    write(tmp_path / "etc", FULL)
    monkeypatch.chdir(tmp_path / "etc")
    cfg = config.load(Path("../etc/./hanode.toml"), insecure=True)
    assert cfg.of(DrbdConfig) is not None


@pytest.mark.root
def test_directory_writable_by_others_refused(tmp_path: Path) -> None:
    directory = tmp_path / "conf"
    directory.mkdir()
    path = write(directory, FULL)
    directory.chmod(0o777)
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert str(caught.value) == (
        f"{path}: directory {directory} is writable by group or others (mode 0777) "
        f"(chmod go-w {directory}, or keep the config where only root can write)"
    )
    assert config.load(path, insecure=True).of(DrbdConfig) is not None


@pytest.mark.root
def test_directory_not_owned_by_root_refused(tmp_path: Path) -> None:
    directory = tmp_path / "conf"
    directory.mkdir()
    path = write(directory, FULL)
    os.chown(directory, 65534, 65534)
    with pytest.raises(ConfigError, match=f"directory {directory} is owned by uid 65534"):
        config.load(path)


@pytest.mark.root
def test_sticky_directory_accepted_only_around_roots_file(tmp_path: Path) -> None:
    # /tmp's case: others cannot rename or unlink root's entries of a sticky directory
    directory = tmp_path / "sticky"
    directory.mkdir()
    directory.chmod(0o1777)
    path = write(directory, FULL)
    assert config.load(path).of(DrbdConfig) is not None
    os.chown(path, 65534, 65534)
    with pytest.raises(ConfigError, match="owned by uid 65534, not root"):
        config.load(path)


def make_fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo.toml"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    ("make", "cause"),
    [
        pytest.param(lambda tmp: tmp, "is a directory", id="directory"),
        pytest.param(lambda tmp: Path("/dev/null"), "is a character device", id="char-device"),
        pytest.param(make_fifo, "is a FIFO", id="fifo"),
    ],
)
def test_cli_refuses_a_config_that_is_not_a_regular_file(
    tmp_path: Path, make: object, cause: str
) -> None:
    assert callable(make)
    path = make(tmp_path)
    result = run_hanode("-c", str(path), "--insecure-config", "check", timeout=10)  # a FIFO hung
    assert result.returncode == Exit.USAGE
    assert result.stderr.strip() == (
        f"hanode: error: {path}: {cause}, not a regular file "
        "(give the config file itself with -c FILE)"
    )


def test_cli_refuses_an_oversized_config_unread(tmp_path: Path) -> None:
    path = write(tmp_path, "#" * (configfile.MAX_CONFIG_BYTES + 1))
    result = run_hanode("-c", str(path), "--insecure-config", "check", timeout=10)
    assert result.returncode == Exit.USAGE
    assert result.stderr.strip() == (
        f"hanode: error: {path}: is {configfile.MAX_CONFIG_BYTES + 1} bytes, over the "
        f"{configfile.MAX_CONFIG_BYTES} a config may have "
        "(hanode.toml is a few KiB: is this the right file?)"
    )
