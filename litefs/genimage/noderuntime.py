"""The node side of litefs inside an image: ``/opt/litefs``, a venv of the image's own python3.

A node runs its daemon from software its image carries: ``/opt/litefs/bin/python -m
litefs.tools.litefs_cli mount ...`` (or ``/opt/litefs/bin/litefs``). The venv is made by the
IMAGE's interpreter, so it links against the image's libc and libpython; litefs and its
dependencies come as wheels built on the management node (``pip wheel`` of this project), which
fit because the MN and the image are the same Debian release with the same CPython. The MN
check below refuses a mismatch instead of leaving a venv whose binary wheels cannot load.

Wheels are kept in a cache directory, so a re-run only rebuilds the litefs wheel itself.
pyfuse3 is compiled against libfuse3 on the MN (``libfuse3-dev``) and needs ``libfuse3-3`` and
``fuse3`` in the image; the shipped profiles list them.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from litefs.genimage import GenimageError, chroot

#: Where the venv lives inside the image.
RUNTIME_DIR = "opt/litefs"
#: Wheel cache on the MN (shared by all images of the same Python version).
DEFAULT_WHEEL_CACHE = Path("/var/cache/litefs-genimage/wheels")
#: The distribution name of this project (see pyproject.toml).
DIST_NAME = "litefs-statelite"
#: Image packages the runtime needs; genimage adds them to every profile's list.
REQUIRED_PACKAGES = ("python3", "python3-venv", "libfuse3-3", "fuse3")


def project_source() -> Path | None:
    """The source tree litefs runs from (an editable install or a checkout), else None."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "litefs").is_dir() else None


#: In the image's venv: the source hash of the litefs it holds (a re-run with the same skips).
STAMP = "litefs-source.sha256"
_SOURCE_DIRS = ("litefs", "tools", "mountd", "initramfs")


def source_hash(src: Path) -> str:
    """SHA-256 over pyproject.toml and every file of the packages (names and contents)."""
    h = hashlib.sha256()
    files = [src / "pyproject.toml"]
    for d in _SOURCE_DIRS:
        files += sorted(p for p in (src / d).rglob("*")
                        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    for f in files:
        h.update(f.relative_to(src).as_posix().encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()


def _pip_wheel(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", *args],
                          text=True, capture_output=True, check=False)


def build_wheels(cache: Path = DEFAULT_WHEEL_CACHE) -> Path:
    """Wheels of litefs and every dependency in ``cache``; returns ``cache``.

    The litefs wheel is rebuilt each time (the source may have changed; it takes seconds);
    dependencies are taken from the cache when there, from the package index only when not.
    """
    src = project_source()
    cache.mkdir(parents=True, exist_ok=True)
    if src is not None and (cache / STAMP).is_file() \
            and (cache / STAMP).read_text().strip() == source_hash(src) \
            and any(cache.glob("litefs_statelite-*.whl")):
        return cache  # built from this very source already
    if src is None:
        # An installed (non-editable) litefs has no source to build from: the admin provides
        # the wheels, e.g. copied from where litefs was installed from.
        if not any(cache.glob("litefs_statelite-*.whl")):
            raise GenimageError(f"no litefs source tree and no litefs wheel in {cache}: "
                                f"copy litefs_statelite-*.whl and its dependencies there")
        return cache
    for old in cache.glob("litefs_statelite-*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="litefs-wheel-") as tmp:
        # Build from a scratch copy: an in-tree build writes build/ and *.egg-info into the
        # source, and two genimage runs at once would race on them.
        copy = Path(tmp) / "src"
        shutil.copytree(src, copy, symlinks=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
            "demo"))
        res = _pip_wheel(["--no-deps", "-w", str(cache), str(copy)])
        if res.returncode != 0:
            raise GenimageError(f"cannot build the litefs wheel: {_last_line(res.stderr)}")
        dep = ["--find-links", str(cache), "-w", str(cache), str(copy)]
        res = _pip_wheel(["--no-index", *dep])  # all in the cache: no network at all
        if res.returncode != 0:
            res = _pip_wheel(dep)
            if res.returncode != 0:
                raise GenimageError(f"cannot build the dependency wheels for the node runtime: "
                                    f"{_last_line(res.stderr)}")
    (cache / STAMP).write_text(source_hash(src) + "\n")
    return cache


def _last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("WARNING: Loc")]
    return lines[-1].strip() if lines else "(no message)"


def image_python(rootimg: Path) -> str:
    """``python3.X`` of the image, checked against the MN's interpreter the wheels are for."""
    exe = rootimg / "usr/bin/python3"
    if not exe.exists() and not exe.is_symlink():
        raise GenimageError(f"{rootimg} has no /usr/bin/python3: add python3 and python3-venv "
                            f"to the profile's pkglist")
    # /usr/bin/python3 -> python3.11 (relative link inside the image; never followed on the MN).
    target = exe.readlink().name if exe.is_symlink() else exe.name
    m = re.fullmatch(r"python(\d+)\.(\d+)", target)
    want = f"{sys.version_info.major}.{sys.version_info.minor}"
    if m and f"{m.group(1)}.{m.group(2)}" != want:
        raise GenimageError(f"image python is {m.group(1)}.{m.group(2)} but the MN builds "
                            f"wheels for {want}: build images of the MN's Debian release")
    return f"python{want}"


def install_node_runtime(rootimg: Path, *, wheel_cache: Path = DEFAULT_WHEEL_CACHE) -> None:
    """Make ``<rootimg>/opt/litefs`` a venv of the image's python3 with litefs installed.

    Idempotent: a re-run keeps the venv and reinstalls only the litefs wheel (plus any new
    dependency). Raises :class:`GenimageError` with the one-line reason on failure.
    """
    rootimg = Path(rootimg)
    image_python(rootimg)
    cache = build_wheels(wheel_cache)
    venv = rootimg / RUNTIME_DIR
    stamp = (cache / STAMP).read_text().strip() if (cache / STAMP).is_file() else None
    if stamp and (venv / STAMP).is_file() and (venv / STAMP).read_text().strip() == stamp:
        return  # the image already runs exactly this litefs
    if not (venv / "bin/python").exists():
        if venv.exists():
            shutil.rmtree(venv)  # a half-made venv from an interrupted run
        res = chroot.run(rootimg, ["/usr/bin/python3", "-m", "venv", "/" + RUNTIME_DIR],
                         capture=True)
        if res.returncode != 0:
            raise GenimageError(f"python3 -m venv in the image failed: {_last_line(res.stderr)}"
                                f" (is python3-venv in the pkglist?)")
    # The wheels are copied in (not bind-mounted): the chroot has no view of the MN's disk.
    inbox = rootimg / "tmp/litefs-wheels"
    shutil.rmtree(inbox, ignore_errors=True)
    inbox.mkdir(parents=True)
    try:
        for whl in cache.glob("*.whl"):
            shutil.copy2(whl, inbox / whl.name)
        pip = ["/" + RUNTIME_DIR + "/bin/python", "-m", "pip", "install", "-q", "--no-index",
               "--no-cache-dir", "--find-links", "/tmp/litefs-wheels"]
        for args in (["--force-reinstall", "--no-deps", DIST_NAME], [DIST_NAME]):
            res = chroot.run(rootimg, [*pip, *args], capture=True)
            if res.returncode != 0:
                raise GenimageError(f"installing litefs into the image failed: "
                                    f"{_last_line(res.stderr)}")
        res = chroot.run(rootimg, ["/" + RUNTIME_DIR + "/bin/python", "-c",
                                   "import pyfuse3, trio, sqlalchemy, litefs.fs"], capture=True)
        if res.returncode != 0:
            raise GenimageError(f"the node runtime in the image does not import: "
                                f"{_last_line(res.stderr)} (are libfuse3-3 and fuse3 installed?)")
        if stamp:
            (venv / STAMP).write_text(stamp + "\n")
    finally:
        shutil.rmtree(inbox, ignore_errors=True)
