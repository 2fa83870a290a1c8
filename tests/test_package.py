"""The Debian package, proven.

Unit tier: the man pages, the bash completion and the unit file agree with the code
(every verb, option, exit code and config key with its default; timeouts that cover
hanode's own bounds).

Root tier: scripts/build-deb builds the .deb offline, lintian passes it, its maintainer
scripts never start or stop the unit, and apt installs it (Depends resolved from
Debian, without Recommends) into a clean minbase Debian 12 root made by mmdebstrap,
where `hanode --help`, `hanode check` and `hanode status` run. The base root is cached
under /var/cache/hanode-pkgtest, keyed by a hash of its recipe. Figures (build time,
install time, sizes, lintian tags) go to build/deb/package-test.json.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import tomlkit
from helpers import missing

from hanode import config
from hanode.cmdline import build_parser
from hanode.errors import Exit, StatusExit
from hanode.resources import kinds
from hanode.resources.links import LinksConfig

ROOT = Path(__file__).resolve().parent.parent
MAN8 = ROOT / "man" / "hanode.8.md"
MAN5 = ROOT / "man" / "hanode.toml.5.md"
COMPLETION = ROOT / "completions" / "hanode"
UNIT = ROOT / "units" / "hanode-primary.service"
STANDBY_UNIT = ROOT / "units" / "hanode-standby.service"
TEXTFILE_UNIT = ROOT / "units" / "hanode-textfile.service"
TEXTFILE_TIMER = ROOT / "units" / "hanode-textfile.timer"
SHIPPED = ROOT / "etc" / "hanode" / "hanode.toml"
BUILD_DEB = ROOT / "scripts" / "build-deb"
FIGURES = ROOT / "build" / "deb" / "package-test.json"
BASH_COMPLETION = Path("/usr/share/bash-completion/bash_completion")

CACHE = Path("/var/cache/hanode-pkgtest")
# The clean Debian roots the package must install into, built on Debian 12 (what the
# lab runs) and installed on 12 and 13. Everything here is part of a root's recipe, so
# a change of any of it makes a new cache key.
SUITES = ("bookworm", "trixie")
MMDEBSTRAP = ("mmdebstrap", "--variant=minbase", "--format=tar", "--quiet")


def sources(suite: str) -> tuple[str, ...]:
    """Debian's mirror lines for a suite, with its updates and security suites."""
    return (
        f"deb http://deb.debian.org/debian {suite} main",
        f"deb http://deb.debian.org/debian {suite}-updates main",
        f"deb http://deb.debian.org/debian-security {suite}-security main",
    )


SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# lintian tags tolerated at error and warning level; everything else fails the test
ALLOWED_TAGS = {"initial-upload-closes-no-bugs"}
# "E: hanode: tag-name [context]", "W: hanode source: tag", "I: hanode: tag"
LINTIAN_LINE = re.compile(r"^(?P<level>[EWIPXO]): (?P<what>[^:]+): (?P<tag>[a-z0-9][a-z0-9.+-]*)")

# section -> its settings record, from the resource registry: a new kind is checked too
SECTIONS = {kind.section: kind.settings for kind in kinds()}
# every section the man page documents: the steps, and [peer] (not a step)
DOCUMENTED: dict[str, type] = {**SECTIONS, config.PEER_SECTION: config.PeerConfig}


# -- helpers ---------------------------------------------------------------------------


def needs(program: str) -> str:
    """The path of a tool the package tests need: skip without it, fail in CI."""
    found = shutil.which(program, path=SYSTEM_PATH)
    if found is None:
        missing(f"{program} is not installed")
    return found


def system_env(**extra: str) -> dict[str, str]:
    """A clean environment with Debian's python3 first (pyenv's shims are not)."""
    return {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "HOME": "/root", **extra}


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def verb_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("hanode's parser has no verbs")


def man_section(text: str, title: str) -> str:
    """The body of a '# TITLE' section of a Markdown man page."""
    match = re.search(rf"^# {re.escape(title)}\n(.*?)(?=^# |\Z)", text, re.M | re.S)
    assert match, f"no section '# {title}'"
    return match.group(1)


def key_paragraph(section_text: str, key: str) -> str:
    """The definition of one config key: from its '**key** =' line to the next key."""
    match = re.search(
        rf"^\*\*{re.escape(key)}\*\* =.*?(?=^\*\*[a-z-]+\*\* =|\Z)", section_text, re.M | re.S
    )
    assert match, f"{key} is not documented"
    return match.group(0)


def toml_literal(value: object) -> str:
    """How a default is written in the man page: a TOML literal in bold."""
    if isinstance(value, Enum):
        value = value.value
    return f"**{tomlkit.item(value).as_string()}**"


def unit_file(path: Path = UNIT) -> configparser.ConfigParser:
    # systemd's unit syntax is ini-like; the keys used here are single-valued
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


# -- unit tier: the documentation and the unit agree with the code ---------------------


def test_man_page_names_every_verb_and_option() -> None:
    text = MAN8.read_text()
    parser = build_parser()
    synopsis = man_section(text, "SYNOPSIS")
    options = man_section(text, "OPTIONS")
    for option in option_strings(parser):
        assert f"**{option}**" in options, f"hanode(8) does not document {option}"
    for verb, sub in verb_parsers(parser).items():
        assert f"**{verb}**" in synopsis, f"hanode(8) SYNOPSIS lacks {verb}"
        assert f"**{verb}**" in man_section(text, "COMMANDS"), f"no COMMANDS entry for {verb}"
        for option in option_strings(sub):
            assert f"**{option}**" in options, f"hanode(8) does not document {verb} {option}"
            if option not in option_strings(parser) and option not in ("-h", "--help"):
                # a verb's own option is shown with that verb in the synopsis
                line = next(line for line in synopsis.splitlines() if f"**{verb}**" in line)
                assert f"**{option}**" in line, f"SYNOPSIS of {verb} lacks {option}"


def test_man_page_lists_every_exit_code() -> None:
    exit_status = man_section(MAN8.read_text(), "EXIT STATUS")
    for code in [*Exit, *StatusExit]:
        assert re.search(rf"^\*\*{int(code)}\*\*$", exit_status, re.M), f"exit {int(code)}"


def test_config_man_page_documents_every_key_with_its_default() -> None:
    text = MAN5.read_text()
    for name, cls in DOCUMENTED.items():
        body = man_section(text, f"[{name}]")
        defaults: dict[str, object] = cls._field_defaults  # the NamedTuple's
        for field in cls._fields:
            if cls is LinksConfig and field == "links":
                key_paragraph(body, "links")
                continue
            key = field.replace("_", "-")
            paragraph = key_paragraph(body, key)
            if field not in defaults or isinstance(defaults[field], Mapping):
                # required, or a default computed from another key or another file (an
                # empty table's: each absent entry's)
                assert "*Required" in paragraph or "Default:" in paragraph, key
            elif defaults[field] is not None:
                assert "Default:" in paragraph, f"[{name}] {key}: no default given"
                assert (
                    toml_literal(defaults[field]) in paragraph
                ), f"[{name}] {key}: default {toml_literal(defaults[field])} not shown"
            else:
                assert "Default:" in paragraph, f"[{name}] {key}: no default given"


def test_config_man_page_matches_the_shipped_config() -> None:
    # every key the shipped config names is documented in its section, and parses
    text = MAN5.read_text()
    uncommented = re.sub(r"^# ", "", SHIPPED.read_text(), flags=re.M)
    document = tomlkit.parse(uncommented).unwrap()
    assert set(document) == set(DOCUMENTED)
    for name, keys in document.items():
        body = man_section(text, f"[{name}]")
        for key in keys:
            key_paragraph(body, key)
    config.parse(uncommented, SHIPPED)


def test_man_page_example_is_a_valid_config() -> None:
    example = man_section(MAN5.read_text(), "EXAMPLE")
    toml = "\n".join(line[4:] for line in example.splitlines() if line.startswith("    "))
    parsed = config.parse(toml, MAN5)
    assert parsed.sections() == list(SECTIONS)


def completions(*words: str) -> list[str]:
    """What bash completion offers after `words` (the last one is being typed)."""
    script = (
        'source "$1" && source "$2" && shift 2 && '
        'COMP_WORDS=("$@") COMP_CWORD=$(($# - 1)) COMP_LINE="$*" COMP_POINT=${#COMP_LINE} '
        '&& _comp_hanode hanode "${COMP_WORDS[-1]}" "${COMP_WORDS[-2]}" '
        '&& printf "%s\\n" "${COMPREPLY[@]}"'
    )
    result = subprocess.run(
        ["bash", "-c", script, "bash", str(BASH_COMPLETION), str(COMPLETION), "hanode", *words],
        capture_output=True,
        text=True,
        check=True,
        env=system_env(),
    )
    return [line for line in result.stdout.splitlines() if line]


def test_completion_offers_every_verb_and_option() -> None:
    if not BASH_COMPLETION.exists():
        missing("bash-completion is not installed")
    parser = build_parser()
    verbs = verb_parsers(parser)
    assert sorted(completions("")) == sorted(verbs)
    assert sorted(completions("st")) == ["start", "status", "stop"]
    assert completions("-c", "/etc/hanode/hanode.toml", "ch") == ["check"]
    assert set(completions("-")) == option_strings(parser)
    for verb, sub in verbs.items():
        offered = set(completions("-c", "/etc/hanode/hanode.toml", verb, "-"))
        assert offered == option_strings(sub), verb


def test_unit_runs_hanode_as_a_oneshot_that_stays_active() -> None:
    unit = unit_file()
    assert unit["Service"]["Type"] == "oneshot"
    assert unit["Service"]["RemainAfterExit"] == "yes"
    assert unit["Service"]["ExecStart"] == "/usr/bin/hanode start"
    assert unit["Service"]["ExecStop"] == "/usr/bin/hanode stop"
    assert set(unit["Unit"]["After"].split()) == {
        "network-online.target",
        "dbus.service",
        "hanode-standby.service",
    }
    assert set(unit["Unit"]["Wants"].split()) == {"network-online.target", "hanode-standby.service"}
    assert unit["Unit"]["Documentation"].split() == ["man:hanode(8)", "man:hanode.toml(5)"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_unit_timeouts_cover_hanodes_own_bounds() -> None:
    # the how-to's cluster (the shipped config, uncommented), each step at its own bounds
    uncommented = re.sub(r"^# ", "", SHIPPED.read_text(), flags=re.M)
    parsed = config.parse(uncommented, SHIPPED)
    assert parsed.sections() == list(SECTIONS)
    settings = [(kind, parsed.settings[kind.section]) for kind in kinds()]
    start = sum(kind.start_budget(value) for kind, value in settings)
    stop = sum(kind.stop_budget(value) for kind, value in settings)
    unit = unit_file()
    assert int(unit["Service"]["TimeoutStopSec"]) >= stop
    # a failed start rolls back within the same job
    assert int(unit["Service"]["TimeoutStartSec"]) >= start + stop
    # the standby unit's start is a whole stop
    assert int(unit_file(STANDBY_UNIT)["Service"]["TimeoutStartSec"]) >= stop


def test_standby_unit_runs_hanode_stop_at_boot_before_the_primary_unit() -> None:
    unit = unit_file(STANDBY_UNIT)
    assert unit["Service"]["Type"] == "oneshot"
    assert unit["Service"]["ExecStart"] == "/usr/bin/hanode stop"
    assert "ExecStop" not in unit["Service"]  # a shutdown leaves a standby as it is
    assert "RemainAfterExit" not in unit["Service"]
    assert unit["Unit"]["Before"] == "hanode-primary.service"
    assert set(unit["Unit"]["After"].split()) == {"network-online.target", "dbus.service"}
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_textfile_timer_writes_node_exporters_file_every_minute() -> None:
    service = unit_file(TEXTFILE_UNIT)
    assert service["Service"]["Type"] == "oneshot"
    command = service["Service"]["ExecStart"].split()
    assert command[:3] == ["/usr/bin/hanode", "status", "--textfile"]
    assert Path(command[3]).parent == Path(service["Unit"]["ConditionPathIsDirectory"])
    assert command[3].endswith(".prom")  # the only files the textfile collector reads
    assert build_parser().parse_args(command[1:]).textfile == command[3]
    # every status exit but a usage error (nothing written) is a state, not a failure
    success = {int(code) for code in service["Service"]["SuccessExitStatus"].split()}
    assert success | {0} == {int(code) for code in StatusExit}
    assert "Install" not in service  # started by its timer only
    timer = unit_file(TEXTFILE_TIMER)
    assert timer["Timer"]["OnCalendar"] == "minutely"
    assert timer["Install"]["WantedBy"] == "timers.target"
    assert "Unit" not in timer["Timer"]  # the timer's own service: hanode-textfile.service


# -- root tier: build, lint, install into a clean Debian 12 ----------------------------


@pytest.fixture(scope="module")
def figures() -> Iterator[dict[str, Any]]:
    """Measurements of this run, written to build/deb/package-test.json at the end."""
    found: dict[str, Any] = {}
    yield found
    if found:
        FIGURES.parent.mkdir(parents=True, exist_ok=True)
        # a run of some of the tests updates the figures of the others' last run
        known = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
        found = {**known, **found}
        FIGURES.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
        print(f"\npackage figures ({FIGURES}):\n{json.dumps(found, indent=1, sort_keys=True)}")


@pytest.fixture(scope="module")
def deb(figures: dict[str, Any]) -> Path:
    """The .deb, built by scripts/build-deb exactly as a person or CI would run it."""
    needs("dpkg-buildpackage")
    began = time.monotonic()
    result = subprocess.run(
        [str(BUILD_DEB)], capture_output=True, text=True, timeout=1800, check=False
    )
    assert result.returncode == 0, result.stderr[-4000:]
    figures["build_seconds"] = round(time.monotonic() - began, 1)
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.is_file() and path.parent == ROOT / "build" / "deb", result.stdout
    figures["deb_bytes"] = path.stat().st_size
    return path


def deb_field(deb: Path, field: str) -> str:
    result = subprocess.run(
        ["dpkg-deb", "--field", str(deb), field], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def relations(value: str) -> set[str]:
    """Package names of a Depends-like field, without versions or alternatives."""
    return {alt.split()[0].split(":")[0] for part in value.split(",") for alt in part.split("|")}


@pytest.mark.root
def test_package_metadata_and_contents(deb: Path, figures: dict[str, Any]) -> None:
    depends = relations(deb_field(deb, "Depends"))
    assert {
        "python3",
        "iproute2",
        "python3-pyroute2",
        "python3-systemd",
        "python3-psutil",
        "python3-tomlkit",
        "python3-jeepney",
        "mount",
    } <= depends
    assert "drbd-utils" in relations(deb_field(deb, "Recommends"))
    assert {"pacemaker", "resource-agents"} <= relations(deb_field(deb, "Suggests"))
    assert deb_field(deb, "Architecture") == "all"
    figures["installed_size_kib"] = int(deb_field(deb, "Installed-Size"))
    paths = deb_paths(deb)
    for expected in (
        "/usr/bin/hanode",
        "/usr/lib/python3/dist-packages/hanode/cli.py",
        "/lib/systemd/system/hanode-primary.service",
        "/lib/systemd/system/hanode-standby.service",
        "/lib/systemd/system/hanode-textfile.service",
        "/lib/systemd/system/hanode-textfile.timer",
        "/etc/hanode/hanode.toml",
        "/usr/share/man/man8/hanode.8.gz",
        "/usr/share/man/man5/hanode.toml.5.gz",
        "/usr/share/bash-completion/completions/hanode",
        "/usr/share/doc/hanode/examples/hanode.toml",
        "/usr/share/doc/hanode/README.Debian",
        "/usr/lib/ocf/resource.d/hanode/hanode",
        "/usr/share/man/man7/hanode-ocf.7.gz",
    ):
        assert expected in paths, expected
    # the OCF agent: executable by everyone (Pacemaker runs meta-data as any user)
    assert deb_modes(deb)["/usr/lib/ocf/resource.d/hanode/hanode"] == "-rwxr-xr-x"
    # nothing of the build-time test run leaks into the package
    assert not [p for p in paths if "/dist-packages/" in p and ("test" in p or "cache" in p)]


@pytest.mark.root
def test_maintainer_scripts_never_start_or_stop_the_unit(deb: Path, tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "--control", str(deb), str(tmp_path)], check=True)
    assert (tmp_path / "conffiles").read_text().split() == ["/etc/hanode/hanode.toml"]
    for script in ("preinst", "postinst", "prerm", "postrm"):
        path = tmp_path / script
        if not path.exists():
            continue
        text = path.read_text()
        # an upgrade must never stop (tear down) the active node, nor start one
        assert "deb-systemd-invoke" not in text, script
        assert not re.search(r"systemctl .*\b(start|stop|restart)\b", text), script
        # enabled only where the admin had enabled it before
        for line in text.splitlines():
            if "deb-systemd-helper enable" in line:
                assert "was-enabled" in text, script


@pytest.mark.root
def test_lintian_passes(deb: Path, figures: dict[str, Any]) -> None:
    lintian = needs("lintian")
    changes = next(deb.parent.glob("hanode_*.changes"))
    result = subprocess.run(
        [
            *(lintian, "--info", "--display-info", "--pedantic", "--display-experimental"),
            *("--show-overrides", str(changes)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=system_env(),
    )
    lines = result.stdout.splitlines()
    tags = [match.groupdict() for match in map(LINTIAN_LINE.match, lines) if match]
    figures["lintian"] = sorted({f"{tag['level']}: {tag['tag']}" for tag in tags})
    figures["lintian_exit"] = result.returncode
    bad = {tag["tag"] for tag in tags if tag["level"] in "EW"} - ALLOWED_TAGS
    assert not bad, result.stdout
    assert result.returncode in (0, 1), result.stderr  # 2: lintian itself failed


def base_tarball(suite: str, figures: dict[str, Any]) -> Path:
    """A minbase root of `suite` as a tarball, built once and cached by its recipe."""
    needs("mmdebstrap")
    recipe = [*MMDEBSTRAP, suite, *sources(suite)]
    key = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:16]
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{suite}-minbase-{key}.tar"
    mine = figures.setdefault(suite, {})
    mine["base_cached"] = path.exists()
    if not path.exists():
        began = time.monotonic()
        partial = path.with_suffix(".tar.partial")
        partial.unlink(missing_ok=True)  # left by a run that was cut short
        subprocess.run(
            [*MMDEBSTRAP, suite, str(partial), *sources(suite)],
            check=True,
            timeout=1200,
            env=system_env(),
        )
        partial.rename(path)
        mine["base_build_seconds"] = round(time.monotonic() - began, 1)
        for stale in CACHE.glob(f"{suite}-minbase-*.tar"):
            if stale != path:
                stale.unlink()
    return path


@pytest.fixture(scope="module", params=SUITES)
def base_tar(request: pytest.FixtureRequest, figures: dict[str, Any]) -> tuple[str, Path]:
    """Each clean root the package must install into: (suite, tarball)."""
    suite: str = request.param
    return suite, base_tarball(suite, figures)


# A terminal of its own for what runs inside (the build's tests open a pty), mounted
# in the private mount namespace, so nothing of it outlives the command.
WITH_PTS = (
    "/bin/sh",
    "-c",
    "mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts"
    ' && mount --bind /dev/pts/ptmx /dev/ptmx && exec "$@"',
    "with-pts",
)


def in_chroot(
    root: Path,
    *argv: str,
    network: bool = False,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv inside root, in private mount and pid namespaces with their own /proc
    and /dev/pts; without `network`, in an empty network namespace too (only lo, down).
    ``env``: variables added to the clean environment."""
    isolate = ["--mount", "--pid", "--fork", "--kill-child", f"--mount-proc={root}/proc"]
    if not network:
        isolate.append("--net")
    return subprocess.run(
        ["unshare", *isolate, "chroot", str(root), *WITH_PTS, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=system_env(DEBIAN_FRONTEND="noninteractive", **(env or {})),
    )


@contextlib.contextmanager
def fresh_root(base_tar: Path) -> Iterator[Path]:
    """A new copy of the base root, with the host's resolver and the .debs fetched by
    earlier runs (kept in the cache, so a second run downloads only the lists)."""
    needs("unshare")
    archives = CACHE / "archives"
    archives.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hanode-pkgtest-") as scratch:
        root = Path(scratch) / "root"
        root.mkdir()
        with tarfile.open(base_tar) as archive:
            archive.extractall(root, numeric_owner=True)  # noqa: S202 - our own tarball
        shutil.copyfile("/etc/resolv.conf", root / "etc" / "resolv.conf")
        inside = root / "var" / "cache" / "apt" / "archives"
        for cached in archives.glob("*.deb"):
            shutil.copy2(cached, inside)
        try:
            yield root
        finally:
            for fetched in inside.glob("*.deb"):
                if not (archives / fetched.name).exists():
                    shutil.copy2(fetched, archives)


@pytest.fixture(scope="module")
def installed(deb: Path, base_tar: tuple[str, Path], figures: dict[str, Any]) -> Iterator[Path]:
    """A fresh copy of a base root with the .deb installed by apt from Debian."""
    suite, tarball = base_tar
    mine = figures.setdefault(suite, {})
    with fresh_root(tarball) as root:
        shutil.copy2(deb, root / "tmp" / deb.name)
        began = time.monotonic()
        update = in_chroot(root, "apt-get", "update", "-q", network=True, timeout=600)
        assert update.returncode == 0, update.stdout + update.stderr
        install = in_chroot(
            root,
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            f"/tmp/{deb.name}",
            network=True,
            timeout=1200,
        )
        assert install.returncode == 0, install.stdout + install.stderr
        mine["chroot_install_seconds"] = round(time.monotonic() - began, 1)
        added = re.search(r"After this operation, (.+) of additional disk space", install.stdout)
        mine["chroot_added_by_install"] = added.group(1) if added else None
        fetched = re.search(r"Need to get (.+?) of archives", install.stdout)
        mine["chroot_downloaded"] = fetched.group(1) if fetched else None
        new = re.search(r"(\d+) newly installed", install.stdout)
        mine["chroot_packages_installed"] = int(new.group(1)) if new else None
        yield root


def deb_modes(deb: Path) -> dict[str, str]:
    """Each path of the package with its mode as `dpkg-deb --contents` shows it."""
    listing = subprocess.run(
        ["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[-1].removeprefix("."): line.split()[0] for line in listing.splitlines()}


def deb_paths(deb: Path) -> set[str]:
    listing = subprocess.run(
        ["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[-1].removeprefix(".") for line in listing.splitlines()}


@pytest.mark.root
def test_builds_on_a_fresh_debian12(deb: Path, figures: dict[str, Any]) -> None:
    """scripts/build-deb on a machine with nothing but minbase: it installs what the build
    needs from Debian, builds with the unit tests run, and makes the same package; run
    again without any network, it builds offline."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    with fresh_root(base_tarball("bookworm", figures)) as root:
        source = root / "src" / "hanode"
        for name in filter(None, tracked):
            if (ROOT / name).is_file():
                (source / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, source / name)
        began = time.monotonic()
        result = in_chroot(root, "/src/hanode/scripts/build-deb", network=True, timeout=1800)
        figures["fresh_machine_build_seconds"] = round(time.monotonic() - began, 1)
        assert result.returncode == 0, result.stderr[-4000:]
        built = root / result.stdout.strip().splitlines()[-1].lstrip("/")
        assert built.is_file(), result.stdout
        # the unit tier ran inside the package build, and passed
        assert re.search(r"=+ \d+ passed", result.stderr), result.stderr[-4000:]
        assert deb_paths(built) == deb_paths(deb)
        built.unlink()
        began = time.monotonic()
        offline = in_chroot(root, "/src/hanode/scripts/build-deb", network=False, timeout=900)
        figures["offline_rebuild_seconds"] = round(time.monotonic() - began, 1)
        assert offline.returncode == 0, offline.stderr[-4000:]
        assert built.is_file() and deb_paths(built) == deb_paths(deb)


@pytest.mark.root
def test_installed_hanode_shows_its_help(installed: Path) -> None:
    result = in_chroot(installed, "hanode", "--help")
    assert result.returncode == 0, result.stderr
    for verb in verb_parsers(build_parser()):
        assert verb in result.stdout


@pytest.mark.root
def test_installed_hanode_loads_only_the_packaged_modules(installed: Path) -> None:
    """/usr/bin/hanode is the package's isolated script (debian/bin/hanode): a hanode
    module on $PYTHONPATH or in /usr/local's site-packages is never the one that runs as
    root."""
    script = (installed / "usr/bin/hanode").read_text()
    assert script.startswith("#!/usr/bin/python3 -IS\n"), script[:60]
    version = in_chroot(
        installed, "python3", "-c", "import sys; print(*sys.version_info[:2], sep='.')"
    )
    assert version.returncode == 0, version.stderr
    planted = (
        installed / "tmp/planted",
        installed / f"usr/local/lib/python{version.stdout.strip()}/dist-packages",
    )
    try:
        for place in planted:
            fake = place / "hanode"
            fake.mkdir(parents=True, exist_ok=True)
            # the package's __init__ runs before any of its modules: it is enough
            (fake / "__init__.py").write_text("print('PLANTED')\nraise SystemExit(99)\n")
        result = in_chroot(installed, "hanode", "--version", env={"PYTHONPATH": "/tmp/planted"})
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith("hanode "), result.stdout
        assert "PLANTED" not in result.stdout + result.stderr
        # the same fakes do shadow a plain interpreter's import: the test plants what it means to
        shadowed = in_chroot(
            installed, "python3", "-c", "import hanode", env={"PYTHONPATH": "/tmp/planted"}
        )
        assert shadowed.returncode == 99 and "PLANTED" in shadowed.stdout, shadowed
    finally:  # the root is shared with the other installed tests
        for place in planted:
            shutil.rmtree(place / "hanode", ignore_errors=True)


@pytest.mark.root
def test_installed_units_are_not_enabled(installed: Path) -> None:
    for name, target in (
        ("hanode-primary.service", "multi-user.target"),
        ("hanode-standby.service", "multi-user.target"),
        ("hanode-textfile.timer", "timers.target"),
    ):
        assert (installed / "lib/systemd/system" / name).is_file()
        wants = installed / f"etc/systemd/system/{target}.wants" / name
        assert not wants.exists() and not wants.is_symlink(), name


@pytest.mark.root
def test_installed_shipped_config_is_inert(installed: Path) -> None:
    result = in_chroot(installed, "hanode", "check")
    assert result.returncode == Exit.USAGE, result.stdout + result.stderr
    assert "/etc/hanode/hanode.toml: no section is configured" in result.stderr


@pytest.mark.root
def test_installed_check_of_the_example_reports_missing_devices(
    installed: Path, base_tar: tuple[str, Path], figures: dict[str, Any]
) -> None:
    example = "/usr/share/doc/hanode/examples/hanode.toml"
    result = in_chroot(installed, "hanode", "-c", example, "check")
    output = result.stdout + result.stderr
    figures[base_tar[0]]["chroot_check_output"] = output.splitlines()
    # the config is valid: no config error (2), no crash; this node lacks the devices (1)
    assert result.returncode == Exit.FAILED, output
    assert f"config {example}: ok" in result.stdout
    assert "internal error" not in output and "Traceback" not in output
    findings: dict[str, list[str]] = {}
    for line in result.stdout.splitlines()[1:]:
        level, _, rest = line.partition(" ")
        step, _, message = rest.strip().partition(" ")
        if level in ("error", "warning"):
            findings.setdefault(step, []).append(message)
    # drbd-utils is only recommended (not installed here), there is no /dev/drbd1, no
    # eth0 in this root's empty network namespace and no system bus: each is named
    # under its own step
    expected = {
        "drbd": "drbdadm",
        "filesystem": "/dev/drbd1",
        "address": "eth0",
        "services": "system bus",
    }
    for step, named in expected.items():
        assert any(named in message for message in findings.get(step, [])), (step, output)
    assert re.search(r"^\d+ problem\(s\) found", result.stdout, re.M), output


@pytest.mark.root
def test_installed_status_runs(installed: Path) -> None:
    example = "/usr/share/doc/hanode/examples/hanode.toml"
    result = in_chroot(installed, "hanode", "-c", example, "status", "--json")
    output = result.stdout + result.stderr
    assert result.returncode in {int(code) for code in StatusExit}, output
    assert "internal error" not in output and "Traceback" not in output
    document = json.loads(result.stdout)
    assert [resource["name"] for resource in document["resources"]] == list(SECTIONS)


# -- systemd tier: the packaged unit under real systemd ----------------------------------


def load_nspawn() -> Any:
    """tests/systemd/nspawn.py, loaded by path (a package named systemd would shadow
    python3-systemd), shared with test_services when both run."""
    name = "hanode_nspawn"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests/systemd/nspawn.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


FIRST = "hanode-test-first.service"  # test units of the nspawn rootfs: sleep infinity
SECOND = "hanode-test-second.service"
PRIMARY = "hanode-primary.service"
SERVICES_ONLY = f'[services]\nunits = ["{FIRST}", "{SECOND}"]\n'


@pytest.mark.systemd
def test_packaged_unit_under_systemd(deb: Path, tmp_path: Path) -> None:
    """dpkg -i in a booted systemd container: the unit is installed disabled and
    stopped; started, it starts the services and stays active; a reinstall (an upgrade)
    neither stops it nor the services nor touches the local config; enabled stays
    enabled; stopped, it stops the services in reverse."""
    nspawn = load_nspawn()
    conf = tmp_path / "hanode.toml"
    conf.write_text(SERVICES_ONLY)
    binds = {deb.parent: "/opt/hanode-deb", tmp_path: "/opt/hanode-conf"}
    with nspawn.Container(Path(nspawn.rootfs()), binds=binds) as box:

        def sh(*argv: str, check: bool = True) -> str:
            result = box.run(list(argv), check=False, timeout=120)
            if check:
                assert result.returncode == 0, f"{argv}: {result.stdout}{result.stderr}"
            return result.stdout.strip()

        def active(unit: str) -> str:
            return sh("systemctl", "is-active", unit, check=False)

        # the rootfs carries a stand-in of this unit for the services tests: not here
        sh("rm", "-rf", f"/etc/systemd/system/{PRIMARY}", f"/etc/systemd/system/{PRIMARY}.wants")
        sh("systemctl", "daemon-reload")
        package = f"/opt/hanode-deb/{deb.name}"
        sh("dpkg", "-i", package)
        assert sh("systemctl", "is-enabled", PRIMARY, check=False) == "disabled"
        assert active(PRIMARY) == "inactive"
        # --man=no: the rootfs has no man-db (Documentation= is checked by lintian)
        verify = box.run(
            ["systemd-analyze", "verify", "--man=no", PRIMARY], check=False, timeout=60
        )
        assert PRIMARY not in verify.stdout + verify.stderr, verify.stdout + verify.stderr

        sh("install", "-m", "0644", "/opt/hanode-conf/hanode.toml", "/etc/hanode/hanode.toml")
        sh("systemctl", "start", PRIMARY)
        assert [active(unit) for unit in (PRIMARY, FIRST, SECOND)] == ["active"] * 3
        started = sh("systemctl", "show", "--property=ActiveEnterTimestampMonotonic", FIRST)

        sh("dpkg", "-i", package)  # what an upgrade runs: prerm, unpack, postinst
        assert [active(unit) for unit in (PRIMARY, FIRST, SECOND)] == ["active"] * 3
        assert sh("systemctl", "show", "--property=ActiveEnterTimestampMonotonic", FIRST) == (
            started
        ), "the upgrade restarted a managed service"
        assert sh("cat", "/etc/hanode/hanode.toml") == SERVICES_ONLY.strip()

        sh("systemctl", "enable", PRIMARY)
        sh("dpkg", "-i", package)
        assert sh("systemctl", "is-enabled", PRIMARY, check=False) == "enabled"

        sh("systemctl", "stop", PRIMARY)
        assert [active(unit) for unit in (PRIMARY, FIRST, SECOND)] == ["inactive"] * 3
        log = sh("journalctl", "--no-pager", "-o", "cat", "-u", PRIMARY)
        assert log.index(SECOND) < log.rindex(FIRST), log  # stop order: reverse of start
