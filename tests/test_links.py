"""The links resource: drbdlinks' on-disk convention, cuts that converge, nothing lost."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest
from mountns import in_mount_namespace

from hanode.errors import StepFailed
from hanode.resources import Context, Level, State
from hanode.resources import links as links_module
from hanode.resources.links import Links, LinksConfig, LinkSpec, LinkState, link_status


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
    monkeypatch.setattr(links_module, "_rename", lambda source, destination: _raise(Cut()))
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
