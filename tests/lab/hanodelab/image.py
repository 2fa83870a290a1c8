"""The lab's Debian 12 guest image: built with mmdebstrap, cached by a hash of its recipe.

The recipe is tests/lab/recipe/ (package list, files copied in, a customize hook) plus
the mmdebstrap arguments below; any change to them gives a new hash and a new image.
A profile adds to it: "pacemaker" (tests/lab/recipe-pacemaker/: its packages and its
customize hook) is the same guest plus the cluster stack, an image of its own hash.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hanodelab.paths import CACHE, LAB, LOGS, RECIPE
from hanodelab.progress import Progress, say

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
IMAGE_SIZE = "3G"
BUILD_TIMEOUT = 1800
PLAIN = "plain"
# profile -> the recipe folders it is built from, in order (their packages, their hooks)
PROFILES = {PLAIN: (RECIPE,), "pacemaker": (RECIPE, LAB / "recipe-pacemaker")}
# The guests' memory (MiB): corosync, Pacemaker's six daemons and the agents' shells
# beside PostgreSQL and Apache leave 512 MiB with no page cache, and every fork waits.
MEMORY = {PLAIN: 512, "pacemaker": 1024}


@dataclass(frozen=True)
class Image:
    """A built image: root disk (qcow2), the kernel and initrd to boot it with, and the
    memory its guests get (MiB)."""

    root: Path
    kernel: Path
    initrd: Path
    memory: int


def packages(profile: str = PLAIN) -> list[str]:
    """The package list of the profile's recipe, comments and blank lines left out."""
    lines = [
        line
        for folder in PROFILES[profile]
        for line in (folder / "packages").read_text().splitlines()
    ]
    return [word for line in lines for word in line.split("#", 1)[0].split()]


def _mmdebstrap_argv(rootfs: Path, profile: str) -> list[str]:
    return [
        "mmdebstrap",
        "--variant=minbase",
        "--mode=root",
        "--include=" + ",".join(packages(profile)),
        # Before the kernel is installed, so its initramfs is built small (MODULES=list).
        f"--essential-hook=sync-in {RECIPE / 'overlay'} /",
        f"--customize-hook=sync-in {RECIPE / 'overlay'} /",
        *(f"--customize-hook={folder / 'customize'}" for folder in PROFILES[profile]),
        SUITE,
        str(rootfs),
        MIRROR,
    ]


def recipe_hash(profile: str = PLAIN) -> str:
    """A hash of everything that decides the profile's image content."""
    digest = hashlib.sha256()
    argv = repr(_mmdebstrap_argv(Path("ROOTFS"), profile)).replace(str(RECIPE), "RECIPE")
    digest.update(argv.replace(str(LAB), "LAB").encode())
    digest.update(IMAGE_SIZE.encode())
    for folder in PROFILES[profile]:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                name = str(path.relative_to(RECIPE if folder == RECIPE else LAB))
                digest.update(name.encode() + b"\0")
                digest.update(oct(path.stat().st_mode & 0o777).encode() + b"\0")
                digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _prefix(profile: str) -> str:
    return "image-" if profile == PLAIN else f"image-{profile}-"


def image_dir(profile: str = PLAIN) -> Path:
    """The cache folder of the image of the profile's current recipe."""
    return CACHE / f"{_prefix(profile)}{recipe_hash(profile)}"


def _stale(profile: str) -> list[Path]:
    """The cached images of the profile's older recipes."""
    current = image_dir(profile)
    others = tuple(_prefix(name) for name in PROFILES if name not in (profile, PLAIN))
    return [
        folder
        for folder in CACHE.glob(f"{_prefix(profile)}*")
        if folder != current and not folder.name.startswith(others)
    ]


def cached(profile: str = PLAIN) -> Image | None:
    """The image of the profile's current recipe if it is built, else None."""
    folder = image_dir(profile)
    image = Image(folder / "root.qcow2", folder / "vmlinuz", folder / "initrd.img", MEMORY[profile])
    if (folder / "complete").exists():
        return image
    return None


def _run_logged(argv: list[str], log: Path, progress: Progress) -> None:
    """Run a build step, its output to the log and its last line to the progress line
    (refreshed every second, so that the elapsed time moves during quiet phases)."""
    last = [argv[0]]
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                if line.strip():
                    last.append(line.strip())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = time.monotonic() + BUILD_TIMEOUT
        while reader.is_alive() and time.monotonic() < deadline:
            progress.update(last[-1])
            reader.join(1)
        try:
            code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        reader.join()
    if code != 0:
        raise RuntimeError(f"{argv[0]} failed with exit code {code}; see {log}")


def ensure(profile: str = PLAIN, keep: frozenset[Path] = frozenset()) -> tuple[Image, float | None]:
    """The image of the profile's recipe, built if missing; also the build time (None:
    cached). One build per profile at a time: a build under way elsewhere (`labctl
    images`, started by tests/run beside the host tiers) is waited for, then used. A new
    build removes the profile's older images but those in ``keep`` (a running lab's)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f".{_prefix(profile)}lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waited = time.monotonic()
            say(f"waiting for the {profile} image's build under way (labctl images)")
            fcntl.flock(lock, fcntl.LOCK_EX)
            say(f"the {profile} image's build ended after {time.monotonic() - waited:.1f}s more")
        image = cached(profile)
        if image is not None:
            return image, None
        return _build(profile, keep)


def _build(profile: str, keep: frozenset[Path] = frozenset()) -> tuple[Image, float]:
    """Build the profile's image into the cache (the caller holds its lock)."""
    started = time.monotonic()
    folder = image_dir(profile)
    work = CACHE / f"build-{folder.name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"image-build-{profile}.log"
    log.write_text("")
    progress = Progress(f"building the guest image {folder.name}")
    try:
        rootfs = work / "rootfs"
        _run_logged(_mmdebstrap_argv(rootfs, profile), log, progress)
        kernel = max((rootfs / "boot").glob("vmlinuz-*"))
        initrd = max((rootfs / "boot").glob("initrd.img-*"))
        shutil.copyfile(kernel, work / "vmlinuz")
        shutil.copyfile(initrd, work / "initrd.img")
        raw = work / "root.raw"
        progress.update("making the ext4 root filesystem")
        _run_logged(
            [
                "mke2fs",
                "-q",
                "-F",
                "-t",
                "ext4",
                "-L",
                "root",
                "-d",
                str(rootfs),
                str(raw),
                IMAGE_SIZE,
            ],
            log,
            progress,
        )
        _run_logged(
            ["qemu-img", "convert", "-O", "qcow2", str(raw), str(work / "root.qcow2")],
            log,
            progress,
        )
        raw.unlink()
        shutil.rmtree(rootfs)
        (work / "complete").write_text(" ".join(packages(profile)) + "\n")
        for old in _stale(profile):  # one image per profile: the older ones are stale
            if old not in keep:
                shutil.rmtree(old, ignore_errors=True)
        work.rename(folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    progress.done("built")
    image = cached(profile)
    assert image is not None
    return image, time.monotonic() - started
