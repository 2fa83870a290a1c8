"""import-drbdlinks: a drbdlinks config read (never executed) into hanode.toml's [links]."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import run_hanode

from hanode.config import parse
from hanode.errors import ConfigError
from hanode.importers.drbdlinks import import_drbdlinks, read_drbdlinks
from hanode.resources.filesystem import FilesystemConfig
from hanode.resources.links import LinksConfig, LinkSpec
from hanode.resources.services import ServicesConfig

DRBDLINKS_CONF = """\
#
#  drbdlinks configuration for the web cluster
#  (maintained by hand; see drbdlinks(8))

#  Where the DRBD drive is mounted.
mountpoint('/srv/')

#  apache and its content
link('/etc/apache2', '/srv/etc-apache2')   # config
link('/var/www/')                          # one argument: /srv/var/www
link("/etc/php/8.2/apache2/php.ini", '/srv/php.ini')

#  restart syslog so it logs into the moved directories
restartSyslog(1)
cleanthisconfig(1)
debug(1)
#restartcron(1)

import os
webroot = '/var/lib/site'
link(webroot)
link('/etc/x', dest='/srv/x')
open(PWNED, 'w').write('executed')
"""

HANODE_TOML = """\
# hanode on web1: the admin's notes stay
[filesystem]  # the replicated disk
device = "/dev/drbd1"
mountpoint = "/srv"   # keep in sync with drbdlinks

# the old links, to be replaced
[links]   # set by hand in 2023
# first
links = [
  { path = "/etc/old", target = "/srv/old" },  # old one
]

# services come last
[services]
units = ["apache2.service"]  # only apache
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_import_keeps_comments_and_replaces_links(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    conf = _write(tmp_path / "drbdlinks.conf", DRBDLINKS_CONF.replace("PWNED", repr(str(pwned))))
    toml = _write(tmp_path / "hanode.toml", HANODE_TOML)
    os.chmod(toml, 0o600)

    report = import_drbdlinks(conf, toml)

    assert not pwned.exists()  # the config was parsed, not executed
    expected = [
        LinkSpec("/etc/apache2", "/srv/etc-apache2"),
        LinkSpec("/var/www", "/srv/var/www"),
        LinkSpec("/etc/php/8.2/apache2/php.ini", "/srv/php.ini"),
    ]
    assert report.mountpoint == "/srv"
    assert report.links == expected
    assert report.replaced_links == 1
    text = toml.read_text()
    for comment in (
        "# hanode on web1: the admin's notes stay",
        "[filesystem]  # the replicated disk",
        'mountpoint = "/srv"   # keep in sync with drbdlinks',
        "# the old links, to be replaced",
        "[links]   # set by hand in 2023",
        "# first",
        "# services come last",
        'units = ["apache2.service"]  # only apache',
    ):
        assert comment in text, comment
    assert "/etc/old" not in text
    assert text.index("# services come last") < text.index("[services]")
    assert text.index("[links]") < text.index("# services come last")
    config = parse(text, toml)
    links = config.of(LinksConfig)
    assert links is not None
    assert links.mountpoint == "/srv"
    assert list(links.links) == expected
    assert config.of(ServicesConfig) is not None and config.of(FilesystemConfig) is not None
    assert os.stat(toml).st_mode & 0o777 == 0o600  # the mode is kept

    lines = report.lines()
    assert lines[0] == f"read {conf}: mountpoint /srv, 3 links"
    assert f"replaced the existing [links] section of {toml} (it had 1 links)" in lines
    unsupported = "\n".join(report.unsupported)
    for line, code in (
        (14, "restartSyslog(1)"),
        (15, "cleanthisconfig(1)"),
        (16, "debug(1)"),
        (19, "import os"),
        (20, "webroot = '/var/lib/site'"),
        (21, "link(webroot)"),
        (22, "link('/etc/x', dest='/srv/x')"),
        (23, "open("),
    ):
        assert f"{conf}:{line}: `{code}" in unsupported, code
    assert "restartcron" not in unsupported  # a comment is not a directive
    assert len(report.unsupported) == 8
    assert "NOT imported (8), review these by hand:" in lines


def test_a_new_hanode_toml_is_created(tmp_path: Path) -> None:
    conf = _write(tmp_path / "drbdlinks.conf", "mountpoint('/srv')\nlink('/etc/apache2')\n")
    toml = tmp_path / "hanode.toml"
    report = import_drbdlinks(conf, toml)
    assert report.created and report.unsupported == []
    assert os.stat(toml).st_mode & 0o777 == 0o644
    links = parse(toml.read_text(), toml).of(LinksConfig)
    assert links is not None
    assert links.links == (LinkSpec("/etc/apache2", "/srv/etc/apache2"),)
    assert f"created {toml} with a [links] section" in report.lines()


def test_links_are_added_when_there_were_none(tmp_path: Path) -> None:
    conf = _write(tmp_path / "drbdlinks.conf", "link('/etc/a', '/srv/a')\n")
    toml = _write(
        tmp_path / "hanode.toml", '[filesystem]\ndevice = "/dev/drbd1"\nmountpoint = "/srv"\n'
    )
    report = import_drbdlinks(conf, toml)
    assert report.replaced_links is None
    assert f"added a [links] section to {toml}" in report.lines()
    links = parse(toml.read_text(), toml).of(LinksConfig)
    assert links is not None and links.mountpoint == "/srv"  # from [filesystem]


def test_bind_mount_links_are_not_imported(tmp_path: Path) -> None:
    conf = _write(
        tmp_path / "drbdlinks.conf",
        "mountpoint('/srv')\nusebindmount(1)\nlink('/etc/a')\nusebindmount(0)\nlink('/etc/b')\n",
    )
    parsed = read_drbdlinks(conf)
    assert parsed.links == [("/etc/b", None)]
    assert any(":3: `link('/etc/a')`: a bind mount" in item for item in parsed.unsupported)
    assert any(":2: `usebindmount(1)`: hanode makes symlinks only" in i for i in parsed.unsupported)


def test_shared_mountpoint_is_reported(tmp_path: Path) -> None:
    conf = _write(tmp_path / "drbdlinks.conf", "mountpoint('/srv', shared=1)\nlink('/etc/a')\n")
    parsed = read_drbdlinks(conf)
    assert parsed.mountpoint == "/srv"
    assert parsed.unsupported == [
        f"{conf}:1: `mountpoint('/srv', shared=1)`: shared = 1 (mount --make-shared) "
        "is not supported (the path is imported)"
    ]


def test_drbdlinks_d_is_read_as_drbdlinks_does(tmp_path: Path) -> None:
    conf = _write(tmp_path / "drbdlinks.conf", "mountpoint('/srv')\nlink('/etc/a')\n")
    (tmp_path / "drbdlinks.d").mkdir()
    _write(tmp_path / "drbdlinks.d" / "20-db.conf", "link('/var/lib/postgresql')\nselinux(1)\n")
    report = import_drbdlinks(conf, tmp_path / "hanode.toml")
    assert report.links == [
        LinkSpec("/etc/a", "/srv/etc/a"),
        LinkSpec("/var/lib/postgresql", "/srv/var/lib/postgresql"),
    ]
    assert any("20-db.conf:2: `selinux(1)`" in item for item in report.unsupported)


def test_errors_name_the_cause_and_leave_the_toml_alone(tmp_path: Path) -> None:
    toml = _write(tmp_path / "hanode.toml", HANODE_TOML)
    bad_python = _write(tmp_path / "a.conf", "mountpoint('/srv')\nlink('/etc/a'\n")
    with pytest.raises(ConfigError, match=r"a\.conf:2: not valid Python"):
        import_drbdlinks(bad_python, toml)
    no_mountpoint = _write(tmp_path / "b.conf", "link('/etc/a')\n")
    with pytest.raises(ConfigError, match="needs a mountpoint"):
        import_drbdlinks(no_mountpoint, toml)
    no_links = _write(tmp_path / "c.conf", "mountpoint('/srv')\n")
    with pytest.raises(ConfigError, match="no link"):
        import_drbdlinks(no_links, toml)
    outside = _write(tmp_path / "d.conf", "mountpoint('/srv')\nlink('/etc/a', '/data/a')\n")
    with pytest.raises(ConfigError, match="would make .* invalid: .*outside the mountpoint"):
        import_drbdlinks(outside, toml)
    with pytest.raises(ConfigError, match="no such file"):
        import_drbdlinks(tmp_path / "missing.conf", toml)
    assert toml.read_text() == HANODE_TOML
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_cli_verb(tmp_path: Path) -> None:
    conf = _write(tmp_path / "drbdlinks.conf", "mountpoint('/srv')\nlink('/etc/a')\ndebug(1)\n")
    toml = tmp_path / "hanode.toml"
    # through the CLI as the package runs it (Debian's python3): the verb, its output, its file
    done = run_hanode("-c", str(toml), "--insecure-config", "import-drbdlinks", str(conf))
    assert done.returncode == 0, done.stderr
    assert f"read {conf}: mountpoint /srv, 1 links" in done.stdout
    assert f"created {toml} with a [links] section" in done.stdout
    assert "`debug(1)`" in done.stdout
    links = parse(toml.read_text(), toml).of(LinksConfig)
    assert links is not None
    assert links.links == (LinkSpec("/etc/a", "/srv/etc/a"),)
    assert os.stat(toml).st_mode & 0o777 == 0o644
