"""Path and name limits are the kernel's, counted from the view (issue 11.2), and renames and
deletes happen completely or not at all, whatever the name's length (11.3, 12.5), on real
mounts in a tmpfs-rule and a persistent-rule directory. A failing call must leave every
backing layer exactly as it was (digests before and after)."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess

import pytest

from litefs.fs.kwhiteouts import STAMP
from litefs.fs.markers import LONG_PREFIX
from tests.fsutil import Layers, Mounter, put
from tests.posixutil import RULE_DIRS, backing_digest, drop_caches, mount_view, wait_meta

pytestmark = pytest.mark.fuse


def _fails(code: int, fn, *args, **kw) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError) as info:
        fn(*args, **kw)
    assert info.value.errno == code, info.value


def _path_of(total: int, comp: int = 240) -> str:
    """A relative path of exactly ``total`` bytes, components of at most ``comp`` bytes."""
    parts = []
    left = total
    while left > 0:
        n = min(comp, left)
        if left - n == 1:  # a lone slash cannot end a path
            n -= 1
        parts.append(chr(ord("a") + len(parts) % 26) * n)
        left -= n + 1
    p = "/".join(parts)
    assert len(p) == total, len(p)
    return p


@pytest.mark.parametrize("d", RULE_DIRS)
def test_path_max_counts_from_the_callers_directory(layers: Layers, litefs_mount: Mounter, d: str) -> None:
    """A 4,095-byte path relative to the rule directory works (the kernel's limit for one
    call; the view path from the root is longer), 4,096 bytes fails with ENAMETOOLONG and
    changes nothing; the tree can be listed and removed through the view."""
    m = mount_view(layers, litefs_mount)
    wait_meta(layers)
    rule = os.open(m.path / d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ok, bad = _path_of(4095), _path_of(4096)
        for p in (ok, bad):
            parent = os.path.dirname(p)
            walked = ""
            for comp in parent.split("/"):
                walked = comp if not walked else walked + "/" + comp
                try:
                    os.mkdir(walked, dir_fd=rule)
                except FileExistsError:
                    pass
        before = backing_digest(layers)
        _fails(errno.ENAMETOOLONG, os.mkdir, bad, dir_fd=rule)
        _fails(errno.ENAMETOOLONG, os.open, bad, os.O_CREAT | os.O_WRONLY, dir_fd=rule)
        _fails(errno.ENAMETOOLONG, os.symlink, "x", bad, dir_fd=rule)
        assert backing_digest(layers) == before
        os.mkdir(ok, dir_fd=rule)
        assert os.path.isdir(os.path.join(f"/proc/self/fd/{rule}", os.path.dirname(ok)))
        os.rmdir(ok, dir_fd=rule)
        fd = os.open(ok, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=rule)
        os.write(fd, b"deep")
        os.close(fd)
        assert os.stat(ok, dir_fd=rule).st_size == 4
        os.unlink(ok, dir_fd=rule)
        os.symlink("target", ok, dir_fd=rule)
        assert os.readlink(ok, dir_fd=rule) == "target"
        drop_caches()  # located again from the root: a view path past PATH_MAX
        assert os.readlink(ok, dir_fd=rule) == "target"
        assert sorted(os.listdir(os.open(os.path.dirname(ok), os.O_RDONLY, dir_fd=rule))) == [os.path.basename(ok)]
    finally:
        os.close(rule)
    top = _path_of(4095).split("/")[0]
    subprocess.run(["rm", "-rf", top], cwd=m.path / d, check=True)
    assert not (m.path / d / top).exists()
    upper = layers.tmpfs if d == "w" else layers.persistent
    assert not (upper / d / top).exists()


@pytest.mark.parametrize("d", RULE_DIRS)
def test_name_max_is_255_and_a_failed_call_changes_nothing(layers: Layers, litefs_mount: Mounter, d: str) -> None:
    m = mount_view(layers, litefs_mount)
    wait_meta(layers)
    w = m.path / d
    n255, n256 = "n" * 255, "n" * 256
    before = backing_digest(layers)
    _fails(errno.ENAMETOOLONG, os.mkdir, w / n256)
    _fails(errno.ENAMETOOLONG, open, w / n256, "w")
    _fails(errno.ENAMETOOLONG, os.symlink, "x", w / n256)
    _fails(errno.ENAMETOOLONG, os.rename, w / "lower.txt", w / n256)
    _fails(errno.ENAMETOOLONG, os.link, w / "lower.txt", w / n256)
    assert backing_digest(layers) == before
    assert sorted(os.listdir(w)) == ["lower.txt", "sub"]
    os.mkdir(w / n255)
    os.rmdir(w / n255)
    (w / n255).write_text("x")
    os.unlink(w / n255)
    os.symlink("x", w / n255)
    assert sorted(os.listdir(w)) == sorted(["lower.txt", "sub", n255])


@pytest.mark.parametrize("d", RULE_DIRS)
@pytest.mark.parametrize("length", [251, 252, 253, 254, 255])
def test_rename_to_long_names_is_whole(layers: Layers, litefs_mount: Mounter, d: str, length: int) -> None:
    """Renaming an image file to a 252–255-byte name used to rename in the upper layer and
    then fail on the whiteout marker (both names showed); now the marker always fits."""
    m = mount_view(layers, litefs_mount)
    w = m.path / d
    new = "r" * length
    os.rename(w / "lower.txt", w / new)
    assert sorted(os.listdir(w)) == sorted([new, "sub"])
    assert (w / new).read_text() == f"lower {d}\n"
    (w / "mine").write_text("mine")
    os.rename(w / "mine", w / ("m" * length))  # an upper file: no marker needed
    os.rename(w / new, w / "back")  # and from a long name back to a short one
    m.stop()
    m.start()
    assert sorted(os.listdir(w)) == sorted(["back", "m" * length, "sub"])
    assert (w / "back").read_text() == f"lower {d}\n"


@pytest.mark.parametrize("d", RULE_DIRS)
def test_delete_and_rename_image_files_with_255_byte_names(layers: Layers, litefs_mount: Mounter, d: str) -> None:
    """Issue 12.5: deleting an image file with a 255-byte name, and renaming one to a 254-byte
    name, work; the deletion is recorded in a hashed marker holding the full name."""
    long1, long2 = "a" * 255, "b" * 255
    put(layers.image, f"{d}/{long1}", "one")
    put(layers.image, f"{d}/{long2}", "two")
    m = mount_view(layers, litefs_mount)
    w = m.path / d
    os.unlink(w / long1)
    os.rename(w / long2, w / ("c" * 254))
    assert sorted(os.listdir(w)) == sorted(["c" * 254, "lower.txt", "sub"])
    assert not os.path.lexists(w / long1) and not os.path.lexists(w / long2)
    upper = (layers.tmpfs if d == "w" else layers.persistent) / d
    for gone in (long1, long2):
        if d == "w" and (layers.tmpfs / STAMP).exists():
            wh = os.lstat(upper / gone)  # the kernel's format: the name itself, a char device 0/0
            assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
            continue
        marker = upper / (LONG_PREFIX + hashlib.sha256(gone.encode()).hexdigest())
        assert marker.read_text() == gone and len(marker.name) <= 255
    (w / long1).write_text("again")  # a new file over the marker replaces it
    assert (w / long1).read_text() == "again"
    m.stop()
    m.start()
    assert sorted(os.listdir(w)) == sorted(["c" * 254, long1, "lower.txt", "sub"])
    os.unlink(w / long1)
    assert sorted(os.listdir(w)) == sorted(["c" * 254, "lower.txt", "sub"])


def test_old_short_markers_still_hide(layers: Layers, litefs_mount: Mounter) -> None:
    put(layers.image, "w/old", "x")
    put(layers.tmpfs, "w/.wh.old", "")
    m = mount_view(layers, litefs_mount)
    assert "old" not in os.listdir(m.path / "w") and not os.path.lexists(m.path / "w/old")
