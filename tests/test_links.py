"""The links resource: drbdlinks' on-disk convention, cuts that converge, nothing lost,
and root's renames never redirected by a user (no symlink followed, no overwrite)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mountns import in_mount_namespace

from hanode.errors import Exit, HanodeError, Refused, StepFailed
from hanode.resources import Context, Level, State
from hanode.resources import links as links_module
from hanode.resources.links import Links, LinksConfig, LinkSpec, LinkState, link_status
from hanode.system import paths
from hanode.system.paths import UnsafePath, open_parent

NOBODY = 65534  # a user that is not root (Debian's nobody)


class Tree:
    """A node in a temp dir: /etc-like originals and a /srv-like mountpoint with targets."""

    def __init__(self, root: Path) -> None:
        self.etc = root / "etc"
        self.srv = root / "srv"
        self.etc.mkdir()
        self.srv.mkdir()
        self.dir = LinkSpec(str(self.etc / "apache2"), str(self.srv / "etc-apache2"))
        self.file = LinkSpec(str(self.etc / "app.conf"), str(self.srv / "app.conf"))
        self.absent = LinkSpec(str(self.etc / "newdir"), str(self.srv / "newdir"))  # no original
        self.links = (self.dir, self.file, self.absent)
        self.config = LinksConfig(str(self.srv), self.links)

    def originals(self) -> None:
        """The standby node's local copies."""
        (self.etc / "apache2").mkdir()
        (self.etc / "apache2" / "apache2.conf").write_text("local apache\n")
        (self.etc / "app.conf").write_text("local app\n")

    def targets(self) -> None:
        """The replicated copies, on the (mounted) filesystem."""
        (self.srv / "etc-apache2").mkdir()
        (self.srv / "etc-apache2" / "apache2.conf").write_text("shared apache\n")
        (self.srv / "app.conf").write_text("shared app\n")
        (self.srv / "newdir").mkdir()

    def linked_by_hand(self) -> None:
        """What `drbdlinks start` leaves on disk (from the originals), made without hanode."""
        for link in self.links:
            if os.path.lexists(link.path):
                os.rename(link.path, link.path + ".drbdlinks")
            os.symlink(link.target, link.path)

    def assert_originals(self) -> None:
        assert (self.etc / "apache2" / "apache2.conf").read_text() == "local apache\n"
        assert (self.etc / "app.conf").read_text() == "local app\n"
        assert not os.path.lexists(self.absent.path)
        assert not list(self.etc.glob("*.drbdlinks"))
        assert not (self.etc / "apache2").is_symlink() and not (self.etc / "app.conf").is_symlink()

    def assert_linked(self) -> None:
        for link in self.links:
            assert os.readlink(link.path) == link.target
        assert (self.etc / "apache2.drbdlinks" / "apache2.conf").read_text() == "local apache\n"
        assert (self.etc / "app.conf.drbdlinks").read_text() == "local app\n"
        assert not os.path.lexists(self.absent.path + ".drbdlinks")
        assert (self.etc / "apache2" / "apache2.conf").read_text() == "shared apache\n"


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path)


class Cut(Exception):
    """Stands for a kill at that point (power loss, SIGKILL, ^C)."""


# -- unit: no mount needed --------------------------------------------------------------


def test_states_of_a_link(tree: Tree) -> None:
    tree.originals()
    assert link_status(tree.dir).state is LinkState.ORIGINAL
    assert link_status(tree.absent).state is LinkState.ORIGINAL
    tree.linked_by_hand()  # targets missing: linked but dangling
    status = link_status(tree.dir)
    assert status.state is LinkState.DAMAGED and status.why == f"{tree.dir.target} is missing"
    tree.targets()
    assert [link_status(link).state for link in tree.links] == [LinkState.LINKED] * 3
    os.unlink(tree.file.path)
    status = link_status(tree.file)
    assert status.state is LinkState.DAMAGED
    assert status.why == f"nothing at {tree.file.path}, original is {tree.file.path}.drbdlinks"
    Path(tree.file.path).write_text("edited\n")
    assert "replaced the link (a file)" in link_status(tree.file).why


def test_probe_summaries(tree: Tree) -> None:
    links = Links(tree.config)
    tree.originals()
    assert links.probe().state is State.DOWN
    tree.targets()
    tree.linked_by_hand()
    status = links.probe()
    assert status.state is State.UP and status.summary == "3 links in place"
    os.unlink(tree.dir.path)
    status = links.probe()
    assert status.state is State.PARTIAL
    assert status.summary.startswith(f"2 of 3 linked; {tree.dir.path}: damaged (nothing at")


def test_start_refuses_when_the_mountpoint_is_not_mounted(tree: Tree) -> None:
    tree.originals()
    tree.targets()  # present, but in the plain directory under the mountpoint
    with pytest.raises(StepFailed, match="is not mounted: the links would point into an empty"):
        Links(tree.config).start(Context())
    tree.assert_originals()


def test_stop_restores_what_drbdlinks_linked_twice(tree: Tree) -> None:
    tree.targets()
    tree.originals()
    tree.linked_by_hand()
    links = Links(tree.config)
    assert links.plan_stop() == [
        f"rm {tree.absent.path} (symlink to {tree.absent.target})",
        f"rm {tree.file.path} (symlink to {tree.file.target})",
        f"mv {tree.file.path}.drbdlinks {tree.file.path}",
        f"rm {tree.dir.path} (symlink to {tree.dir.target})",
        f"mv {tree.dir.path}.drbdlinks {tree.dir.path}",
    ]
    links.stop(Context())
    tree.assert_originals()
    assert links.probe().state is State.DOWN
    links.stop(Context())
    tree.assert_originals()
    assert links.plan_stop() == []


def test_stop_never_loses_a_file_that_replaced_the_link(
    tree: Tree, caplog: pytest.LogCaptureFixture
) -> None:
    tree.targets()
    tree.originals()
    tree.linked_by_hand()
    # `sed -i` on the link writes a new regular file in its place
    os.unlink(tree.file.path)
    Path(tree.file.path).write_text("edited while active\n")
    # and a tool that recreated a directory in place of the directory link
    os.unlink(tree.dir.path)
    os.mkdir(tree.dir.path)
    Path(tree.dir.path, "new.conf").write_text("new\n")
    links = Links(tree.config)
    assert any("it replaced the link" in line for line in links.plan_stop())
    with caplog.at_level(logging.WARNING, logger="hanode.links"):
        links.stop(Context())
    tree.assert_originals()
    (file_aside,) = tree.etc.glob("app.conf.hanode-*")
    assert file_aside.read_text() == "edited while active\n"
    (dir_aside,) = tree.etc.glob("apache2.hanode-*")
    assert (dir_aside / "new.conf").read_text() == "new\n"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert f"moved it to {file_aside}, NOT deleted" in warnings[0].getMessage()
    findings = Links(tree.config).check()
    assert any(
        f.level is Level.WARNING and f.message.startswith(f"{file_aside} was set aside")
        for f in findings
    )
    links.stop(Context())  # again: the set-aside copies stay where they are
    assert file_aside.read_text() == "edited while active\n"


@pytest.mark.parametrize("cut_after", [0, 1, 2])
def test_a_stop_cut_after_each_link_converges(
    tree: Tree, cut_after: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree.targets()
    tree.originals()
    tree.linked_by_hand()
    links = Links(tree.config)
    real_unlink = Links._unlink
    done: list[str] = []

    def cut_unlink(self: Links, link: LinkSpec) -> None:
        if len(done) == cut_after:
            raise Cut
        real_unlink(self, link)
        done.append(link.path)

    monkeypatch.setattr(Links, "_unlink", cut_unlink)
    with pytest.raises(Cut):
        links.stop(Context())
    assert links.probe().state is (State.PARTIAL if cut_after else State.UP)
    monkeypatch.undo()
    Links(tree.config).stop(Context())
    tree.assert_originals()


def test_a_stop_cut_inside_a_link_converges(tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    tree.targets()
    tree.originals()
    tree.linked_by_hand()
    # the symlink is removed, then the process dies before renaming the original back
    monkeypatch.setattr(links_module, "_rename", lambda *rename: _raise(Cut()))
    with pytest.raises(Cut):
        Links(tree.config).stop(Context())
    monkeypatch.undo()
    assert not os.path.lexists(tree.absent.path)
    assert not os.path.lexists(tree.file.path)  # cut between rm and mv
    assert Links(tree.config).probe().state is State.PARTIAL
    Links(tree.config).stop(Context())
    tree.assert_originals()


def _raise(error: Exception) -> None:
    raise error


# -- root: a real mount (tmpfs) in a private mount namespace ----------------------------


def _mount_tmpfs(path: Path) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "hanode-test", str(path)], check=True)


@pytest.mark.root
def test_start_and_stop_twice_each(tree: Tree) -> None:
    def scenario() -> None:
        _mount_tmpfs(tree.srv)
        tree.targets()
        tree.originals()
        links = Links(tree.config)
        assert links.plan_start() == [
            f"mv {tree.dir.path} {tree.dir.path}.drbdlinks",
            f"ln -s {tree.dir.target} {tree.dir.path}",
            f"mv {tree.file.path} {tree.file.path}.drbdlinks",
            f"ln -s {tree.file.target} {tree.file.path}",
            f"ln -s {tree.absent.target} {tree.absent.path}",
        ]
        links.start(Context())
        tree.assert_linked()
        assert links.probe().state is State.UP
        links.start(Context())
        tree.assert_linked()
        assert links.plan_start() == []
        links.stop(Context())
        tree.assert_originals()
        links.stop(Context())
        tree.assert_originals()
        links.start(Context())
        tree.assert_linked()
        links.stop(Context())
        tree.assert_originals()
        assert links.probe().state is State.DOWN

    in_mount_namespace(scenario)


@pytest.mark.root
def test_a_missing_target_fails_start_touching_nothing_and_check_says_so(tree: Tree) -> None:
    def scenario() -> None:
        _mount_tmpfs(tree.srv)
        tree.targets()
        tree.originals()
        os.rename(tree.file.target, tree.file.target + ".elsewhere")
        links = Links(tree.config)
        with pytest.raises(StepFailed, match=f"link target missing: {tree.file.target}"):
            links.start(Context())
        tree.assert_originals()
        errors = [f for f in links.check() if f.level is Level.ERROR]
        assert [f.message for f in errors] == [
            f"{tree.file.path}: target {tree.file.target} does not exist"
        ]

    in_mount_namespace(scenario)


@pytest.mark.root
@pytest.mark.parametrize("cut_after", [0, 1, 2])
def test_a_start_cut_after_each_link_converges_both_ways(tree: Tree, cut_after: int) -> None:
    def scenario() -> None:
        _mount_tmpfs(tree.srv)
        tree.targets()
        tree.originals()
        real_link = Links._link
        done: list[str] = []

        def cut_link(self: Links, link: LinkSpec) -> None:
            if len(done) == cut_after:
                raise Cut
            real_link(self, link)
            done.append(link.path)

        Links._link = cut_link  # type: ignore[method-assign]
        try:
            with pytest.raises(Cut):
                Links(tree.config).start(Context())
        finally:
            Links._link = real_link  # type: ignore[method-assign]
        Links(tree.config).start(Context())
        tree.assert_linked()
        Links(tree.config).stop(Context())
        tree.assert_originals()

    in_mount_namespace(scenario)


@pytest.mark.root
def test_a_start_cut_between_rename_and_symlink_converges(tree: Tree) -> None:
    def scenario() -> None:
        _mount_tmpfs(tree.srv)
        tree.targets()
        tree.originals()
        # what a kill between the rename and the symlink leaves: original set aside only
        os.rename(tree.dir.path, tree.dir.path + ".drbdlinks")
        assert "nothing at" in Links(tree.config).probe().summary
        Links(tree.config).start(Context())
        tree.assert_linked()

    in_mount_namespace(scenario)


@pytest.mark.root
def test_start_over_a_replaced_link_keeps_it(tree: Tree, caplog: pytest.LogCaptureFixture) -> None:
    def scenario() -> None:
        records: list[logging.LogRecord] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                records.append(record)

        logging.getLogger("hanode.links").addHandler(Keep())
        _mount_tmpfs(tree.srv)
        tree.targets()
        tree.originals()
        tree.linked_by_hand()
        os.unlink(tree.file.path)
        Path(tree.file.path).write_text("edited\n")
        Links(tree.config).start(Context())
        tree.assert_linked()
        (aside,) = tree.etc.glob("app.conf.hanode-*")
        assert aside.read_text() == "edited\n"
        assert any(r.levelno == logging.WARNING and str(aside) in r.getMessage() for r in records)

    in_mount_namespace(scenario)


# -- a user must not redirect root: no symlink followed on the way, nothing overwritten --


def _snapshot(directory: Path) -> dict[str, str]:
    """Every entry below ``directory``: a file's text, a symlink's target, "dir/"."""
    found: dict[str, str] = {}
    for path in sorted(directory.rglob("*")):
        name = str(path.relative_to(directory))
        if path.is_symlink():
            found[name] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[name] = "dir/"
        else:
            found[name] = path.read_text()
    return found


def _root_only(tree: Tree) -> Path:
    """A root-only directory holding files named as the links' paths are: a user would
    like root to rename or delete them."""
    secret = tree.etc.parent / "secret"
    (secret / "apache2").mkdir(parents=True)
    (secret / "apache2" / "apache2.conf").write_text("root only apache\n")
    (secret / "app.conf").write_text("root only\n")
    secret.chmod(0o700)
    return secret


def _late(path: str, text: str) -> None:
    """Create ``path`` now, as another process would between a check and a rename."""
    Path(path).write_text(text)


def _just_before_renaming_to(
    monkeypatch: pytest.MonkeyPatch, wanted: Callable[[str], bool], act: Callable[[str], None]
) -> None:
    """Run ``act(destination)`` at the last moment before a rename to a ``wanted`` name:
    right before the renameat2 call (and before os.rename, which hanode no longer calls,
    so the same test shows what a check-then-rename did)."""
    real_renameat2 = paths._renameat2
    real_rename = os.rename

    def renameat2(dir_fd: int, source: str, destination: str, flags: int) -> None:
        if wanted(destination):
            act(os.path.join(f"/proc/self/fd/{dir_fd}", destination))
        real_renameat2(dir_fd, source, destination, flags)

    def rename(source: str, destination: str, **kwargs: int) -> None:
        if wanted(os.path.basename(destination)):
            act(destination)
        real_rename(source, destination, **kwargs)

    monkeypatch.setattr(paths, "_renameat2", renameat2)
    monkeypatch.setattr(os, "rename", rename)


def test_stop_never_overwrites_a_file_created_at_path_just_before_the_put_back(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree.targets()
    tree.originals()
    tree.linked_by_hand()
    _just_before_renaming_to(
        monkeypatch, lambda name: name == "app.conf", lambda path: _late(path, "come late\n")
    )
    with pytest.raises(StepFailed) as caught:
        Links(tree.config).stop(Context())
    saved = f"{tree.file.path}.drbdlinks"
    assert str(caught.value) == (
        f"cannot rename {saved} to {tree.file.path}: it exists "
        f"(move {tree.file.path} out of the way by hand (hanode never overwrites it))"
    )
    assert Path(tree.file.path).read_text() == "come late\n"
    assert Path(saved).read_text() == "local app\n"
    monkeypatch.undo()
    os.unlink(tree.file.path)  # the admin's fix: then stop converges
    Links(tree.config).stop(Context())
    tree.assert_originals()


def test_a_move_aside_never_overwrites_a_name_taken_just_before(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree.targets()
    tree.originals()
    tree.linked_by_hand()
    os.unlink(tree.file.path)
    Path(tree.file.path).write_text("edited while active\n")
    planted: list[str] = []

    def plant_once(path: str) -> None:
        if not planted:
            planted.append(os.path.basename(path))
            _late(path, "come late\n")

    _just_before_renaming_to(monkeypatch, lambda name: "app.conf.hanode-" in name, plant_once)
    Links(tree.config).stop(Context())
    tree.assert_originals()
    asides = {path.name: path.read_text() for path in tree.etc.glob("app.conf.hanode-*")}
    assert asides == {planted[0]: "come late\n", f"{planted[0]}-1": "edited while active\n"}


def test_start_refuses_a_path_in_a_directory_every_user_can_write(tree: Tree) -> None:
    tree.targets()
    tree.originals()
    tree.etc.chmod(0o777)
    links = Links(tree.config)
    with pytest.raises(Refused, match=f"^{tree.dir.path}: {tree.etc} is writable by every user"):
        links.start(Context())
    tree.assert_originals()
    with pytest.raises(Refused):  # --dry-run: the engine shows "(cannot plan: <why>)"
        links.plan_start()


def _mounted_tree(tree: Tree) -> None:
    _mount_tmpfs(tree.srv)
    tree.targets()
    tree.originals()


@pytest.mark.root
def test_start_refuses_a_path_in_a_directory_a_user_owns_and_check_says_so(tree: Tree) -> None:
    def scenario() -> None:
        _mounted_tree(tree)
        os.chown(tree.etc, NOBODY, NOBODY)  # like /var/lib/postgresql, the postgres user's
        links = Links(tree.config)
        errors = [f for f in links.check() if f.level is Level.ERROR]
        assert [f.message.split(": ")[0] for f in errors] == [link.path for link in tree.links]
        for finding in errors:
            assert f": {tree.etc} is owned by " in finding.message
            assert finding.message.endswith("start refuses it")
            assert finding.hint == (
                f"chown root:root {tree.etc} and chmod go-w {tree.etc}, "
                "or link a directory root controls"
            )
        with pytest.raises(Refused, match=f"^{tree.dir.path}: {tree.etc} is owned by ") as caught:
            links.start(Context())
        assert caught.value.code is Exit.REFUSED
        tree.assert_originals()

    in_mount_namespace(scenario)


@pytest.mark.root
def test_stop_steps_down_through_a_directory_a_user_owns_and_says_so(
    tree: Tree, caplog: pytest.LogCaptureFixture
) -> None:
    tree.targets()
    tree.originals()
    tree.linked_by_hand()
    os.chown(tree.etc, NOBODY, NOBODY)
    # refusing would keep the node from stepping down; the walk follows no symlink anyway
    with caplog.at_level(logging.WARNING, logger="hanode.links"):
        Links(tree.config).stop(Context())
    tree.assert_originals()
    assert all(f"{tree.etc} is owned by " in record.getMessage() for record in caplog.records)
    assert len(caplog.records) == 3


@pytest.mark.root
def test_a_symlink_on_the_way_to_a_path_is_refused_and_where_it_points_untouched(
    tree: Tree,
) -> None:
    def scenario() -> None:
        _mounted_tree(tree)
        secret = _root_only(tree)
        shutil.rmtree(tree.etc)
        tree.etc.symlink_to(secret)  # PATH's directory -> a root-only directory
        before = _snapshot(secret)
        links = Links(tree.config)
        message = f"^{tree.dir.path}: {tree.etc} is a symlink \\(to {secret}\\)"
        for action in (links.start, links.stop):
            with pytest.raises(UnsafePath, match=message):
                action(Context())
        assert links.probe().state is State.UNKNOWN
        errors = [f for f in links.check() if f.level is Level.ERROR]
        assert [f.message.split(": ")[0] for f in errors] == [link.path for link in tree.links]
        assert all(f"{tree.etc} is a symlink (to {secret})" in f.message for f in errors)
        assert errors[0].hint == f"name the path without symlinks instead: {secret}/apache2"
        assert _snapshot(secret) == before

    in_mount_namespace(scenario)


@pytest.mark.root
def test_a_directory_swapped_for_a_symlink_after_the_walk_is_never_followed(tree: Tree) -> None:
    def scenario() -> None:
        _mounted_tree(tree)
        secret = _root_only(tree)
        before = _snapshot(secret)
        moved = tree.etc.parent / "etc.moved"
        real_exists = os.path.exists

        def swap_then_exists(path: str) -> bool:
            # once the directories are pinned (start checks its targets after the walk)
            if not moved.exists():
                tree.etc.rename(moved)
                tree.etc.symlink_to(secret)
            return real_exists(path)

        os.path.exists = swap_then_exists  # this forked child only
        Links(tree.config).start(Context())
        os.path.exists = real_exists
        assert _snapshot(secret) == before
        # the pinned descriptors kept working in the directory that was walked
        assert os.readlink(moved / "app.conf") == tree.file.target
        assert (moved / "app.conf.drbdlinks").read_text() == "local app\n"
        assert os.readlink(moved / "apache2") == tree.dir.target

    in_mount_namespace(scenario)


@pytest.mark.root
def test_start_never_overwrites_a_saved_original_created_just_before_the_rename(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    def scenario() -> None:
        _mounted_tree(tree)
        _just_before_renaming_to(
            monkeypatch,
            lambda name: name == "app.conf.drbdlinks",
            lambda path: _late(path, "come late\n"),
        )
        saved = f"{tree.file.path}.drbdlinks"
        with pytest.raises(StepFailed, match=f"^cannot rename {tree.file.path} to {saved}: it"):
            Links(tree.config).start(Context())
        assert Path(tree.file.path).read_text() == "local app\n"
        assert Path(saved).read_text() == "come late\n"

    in_mount_namespace(scenario)


def _fork_as_nobody(directory: Path, action: Callable[[], None]) -> int:
    """``action`` in a forked child as uid/gid 65534, its cwd ``directory`` (entered as
    root: nobody need not reach it); the child's pid."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            os.chdir(directory)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            action()
        finally:
            os._exit(0)
    return pid


@pytest.mark.root
def test_a_user_swapping_a_directory_during_start_and_stop_cycles_never_moves_roots_files(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"  # /var/lib/postgresql: the postgres user's
    main = home / "15" / "main"  # the link's PATH
    secret = tmp_path / "secret"  # root-only: what the user wants root to rename
    srv = tmp_path / "srv"
    link = LinkSpec(str(main), str(srv / "pg"))

    def swap() -> None:
        deadline = time.monotonic() + 5  # outlives no test, even if the kill were missed
        while time.monotonic() < deadline:
            for step in (
                lambda: os.rename("15", "15.real"),
                lambda: os.symlink(secret, "15"),
                lambda: os.unlink("15"),
                lambda: os.rename("15.real", "15"),
            ):
                with contextlib.suppress(OSError):
                    step()

    def link_by_hand() -> None:
        # what an earlier start left, so that each stop has work (made by a safe walk)
        with contextlib.suppress(OSError, UnsafePath), open_parent(link.path, refuse=False) as p:
            if not p.exists("main.drbdlinks"):
                p.rename_noreplace("main", "main.drbdlinks")
            if not p.exists("main"):
                p.symlink(link.target, "main")

    def scenario() -> None:
        srv.mkdir()
        _mount_tmpfs(srv)
        (srv / "pg").mkdir()
        main.mkdir(parents=True)
        (main / "PG_VERSION").write_text("15\n")
        os.chown(home, NOBODY, NOBODY)
        os.chown(home / "15", NOBODY, NOBODY)
        secret.mkdir(mode=0o700)
        (secret / "main").write_text("root only\n")
        links = Links(LinksConfig(str(srv), (link,)))
        cycles = refused = 0
        racer = _fork_as_nobody(home, swap)
        try:
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                cycles += 1
                link_by_hand()
                with contextlib.suppress(HanodeError, OSError):  # what the swaps may cause
                    links.stop(Context())
                try:
                    links.start(Context())
                except Refused:
                    refused += 1
                except (HanodeError, OSError):
                    pass
        finally:
            os.kill(racer, signal.SIGKILL)
            os.waitpid(racer, 0)
        assert _snapshot(secret) == {"main": "root only\n"}, f"after {cycles} cycles"
        assert refused == cycles > 100

    in_mount_namespace(scenario)
