"""The lab's Debian 12 guest image: built with mmdebstrap, cached by a hash of its recipe.

The recipe is tests/lab/recipe/ (package list, files copied in, a customize hook) plus
the mmdebstrap arguments below; any change to them gives a new hash and a new image.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hanodelab.paths import CACHE, LOGS, RECIPE
from hanodelab.progress import Progress

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
IMAGE_SIZE = "3G"
BUILD_TIMEOUT = 1800


@dataclass(frozen=True)
class Image:
    """A built image: root disk (qcow2) and the kernel and initrd to boot it with."""

    root: Path
    kernel: Path
    initrd: Path


def packages() -> list[str]:
    """The package list of the recipe, comments and blank lines left out."""
    lines = (RECIPE / "packages").read_text().splitlines()
    return [word for line in lines for word in line.split("#", 1)[0].split()]


def _mmdebstrap_argv(rootfs: Path) -> list[str]:
    return [
        "mmdebstrap",
        "--variant=minbase",
        "--mode=root",
        "--include=" + ",".join(packages()),
        # Before the kernel is installed, so its initramfs is built small (MODULES=list).
        f"--essential-hook=sync-in {RECIPE / 'overlay'} /",
        f"--customize-hook=sync-in {RECIPE / 'overlay'} /",
        f"--customize-hook={RECIPE / 'customize'}",
        SUITE,
        str(rootfs),
        MIRROR,
    ]


def recipe_hash() -> str:
    """A hash of everything that decides the image's content."""
    digest = hashlib.sha256()
    digest.update(repr(_mmdebstrap_argv(Path("ROOTFS"))).replace(str(RECIPE), "RECIPE").encode())
    digest.update(IMAGE_SIZE.encode())
    for path in sorted(RECIPE.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(RECIPE)).encode() + b"\0")
            digest.update(oct(path.stat().st_mode & 0o777).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def image_dir() -> Path:
    """The cache folder of the image of the current recipe."""
    return CACHE / f"image-{recipe_hash()}"


def cached() -> Image | None:
    """The image of the current recipe if it is built, else None."""
    folder = image_dir()
    image = Image(folder / "root.qcow2", folder / "vmlinuz", folder / "initrd.img")
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


def ensure() -> tuple[Image, float | None]:
    """The image of the current recipe, built if missing; also the build time (None: cached)."""
    image = cached()
    if image is not None:
        return image, None
    started = time.monotonic()
    folder = image_dir()
    work = CACHE / f"build-{folder.name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / "image-build.log"
    log.write_text("")
    progress = Progress(f"building the guest image {folder.name}")
    try:
        rootfs = work / "rootfs"
        _run_logged(_mmdebstrap_argv(rootfs), log, progress)
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
        (work / "complete").write_text(" ".join(packages()) + "\n")
        for old in CACHE.glob("image-*"):  # one image at a time: the old ones are stale
            shutil.rmtree(old, ignore_errors=True)
        work.rename(folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    progress.done("built")
    image = cached()
    assert image is not None
    return image, time.monotonic() - started
