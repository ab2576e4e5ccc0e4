"""Inode numbers follow the backing file (issue 11.1), on real mounts in a tmpfs-rule and a
persistent-rule directory: every name of a hard link has one number and one attribute cache,
and the numbers survive kernel eviction, remount and copy-up."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from litefs.fs.inodes import INO_BITS, layer_slot
from tests.fsutil import Layers, Mounter, put, skip_if_kernel_served
from tests.posixutil import RULE_DIRS, drop_caches, mount_view

pytestmark = pytest.mark.fuse


@pytest.mark.parametrize("d", RULE_DIRS)
def test_hard_links_share_number_and_attributes(layers: Layers, litefs_mount: Mounter, d: str) -> None:
    m = mount_view(layers, litefs_mount)
    w = m.path / d
    (w / "f").write_text("data")
    os.link(w / "f", w / "g")
    f, g = os.stat(w / "f"), os.stat(w / "g")
    assert f.st_ino == g.st_ino and f.st_nlink == g.st_nlink == 2
    before = f.st_ctime_ns
    time.sleep(0.01)
    os.chmod(w / "g", 0o600)  # through one name ...
    os.chown(w / "f", 1234, 5678)
    f = os.stat(w / "f")  # ... seen at once through the other
    g = os.stat(w / "g")
    assert oct(f.st_mode & 0o777) == "0o600" and (g.st_uid, g.st_gid) == (1234, 5678)
    assert f.st_ctime_ns > before and f.st_ctime_ns == g.st_ctime_ns
    os.link(w / "g", w / "h")
    assert os.stat(w / "f").st_nlink == 3
    # A rename over one name: the survivors show one link less at once, with a new ctime.
    (w / "other").write_text("x")
    before = os.stat(w / "f").st_ctime_ns
    time.sleep(0.01)
    os.rename(w / "other", w / "g")
    f = os.stat(w / "f")
    assert f.st_nlink == 2 and os.stat(w / "h").st_nlink == 2 and f.st_ctime_ns > before
    assert os.stat(w / "g").st_ino != f.st_ino
    os.unlink(w / "h")
    assert os.stat(w / "f").st_nlink == 1
    # A link to an image file copies it up first; both names then share the upper file.
    os.link(w / "lower.txt", w / "lower2")
    assert os.stat(w / "lower.txt").st_ino == os.stat(w / "lower2").st_ino
    assert os.stat(w / "lower.txt").st_nlink == 2


@pytest.mark.parametrize("d", RULE_DIRS)
def test_numbers_stable_across_eviction_remount_and_copy_up(layers: Layers, litefs_mount: Mounter, d: str) -> None:
    m = mount_view(layers, litefs_mount)
    w = m.path / d
    skip_if_kernel_served(w, m.path, "inode numbers below a kernel-served folder are the kernel's (README: Node-side limits)")
    (w / "mine").write_text("upper")
    os.link(w / "mine", w / "mine2")
    (w / "newdir").mkdir()
    names = ["lower.txt", "sub", "sub/deep.txt", "mine", "mine2", "newdir", "."]
    first = {n: os.stat(w / n).st_ino for n in names}
    assert first["mine"] == first["mine2"]
    # the number is the layer slot over the backing inode number
    upper = layers.tmpfs if d == "w" else layers.persistent
    slot = layer_slot("tmpfs" if d == "w" else "persistent")
    assert first["mine"] == (slot << INO_BITS) | os.stat(upper / d / "mine").st_ino
    assert first["lower.txt"] == (layer_slot("image") << INO_BITS) | os.stat(layers.image / d / "lower.txt").st_ino
    for _ in range(2):
        drop_caches()
        assert {n: os.stat(w / n).st_ino for n in names} == first
    m.stop()
    m.start()
    assert {n: os.stat(w / n).st_ino for n in names} == first
    # Copy-up keeps the number while mounted, through eviction too.
    with open(w / "lower.txt", "a") as f:
        f.write("changed")
    assert (upper / d / "lower.txt").exists()
    assert os.stat(w / "lower.txt").st_ino == first["lower.txt"]
    drop_caches()
    assert os.stat(w / "lower.txt").st_ino == first["lower.txt"]
    # After a remount too (the origin xattr, tests/test_posix_origin.py): every number stays,
    # copied-up files and directories included.
    m.stop()
    m.start()
    assert {n: os.stat(w / n).st_ino for n in names} == first
    drop_caches()
    assert os.stat(w / "lower.txt").st_ino == first["lower.txt"]


def test_numbers_never_collide_across_layers(layers: Layers, litefs_mount: Mounter) -> None:
    """Files with the same backing inode number in different layers (hard links of one file
    across the image and the stores, as a test can make them) show different numbers."""
    put(layers.image, "w/a", "image a")
    put(layers.image, "p/a", "image p a")
    src = put(layers.image, "w/z", "z")
    m = mount_view(layers, litefs_mount)
    skip_if_kernel_served(m.path / "w", m.path, "inode numbers below a kernel-served folder are the kernel's (README: Node-side limits)")
    # The same backing inode seen through two layers: a hard link from the image into the
    # tmpfs layer (same file system in the test).
    (layers.tmpfs / "w").mkdir(exist_ok=True)
    (layers.persistent / "p").mkdir(exist_ok=True)
    os.link(src, layers.tmpfs / "w/y")
    os.link(src, layers.persistent / "p/y")
    Path(m.path / "w").stat()
    os.setxattr(m.path, "user.litefs.refresh", b"/w\n/p")
    time.sleep(0.3)
    seen: dict[int, str] = {}
    for rel in ("w/z", "w/y", "p/y", "w/a", "p/a", "w/lower.txt", "p/lower.txt", "w", "p", "etc"):
        ino = os.stat(m.path / rel).st_ino
        assert ino not in seen, f"{rel} and {seen.get(ino)} share {ino}"
        seen[ino] = rel


@pytest.mark.parametrize("d", RULE_DIRS)
def test_copy_up_of_one_name_of_an_image_hard_link(layers: Layers, litefs_mount: Mounter, d: str) -> None:
    """Under a writable rule each name of an image hard link is a file of its own (so that
    writing through one name copies up that name, as overlayfs without index=on does); where
    nothing can be written (no rule) the names share one number."""
    a = put(layers.image, f"{d}/ha", "shared")
    os.link(a, layers.image / d / "hb")
    e = put(layers.image, "etc/ea", "ro")
    os.link(e, layers.image / "etc/eb")
    m = mount_view(layers, litefs_mount)
    w = m.path / d
    skip_if_kernel_served(w, m.path, "inode numbers below a kernel-served folder are the kernel's (README: Node-side limits); overlayfs keeps a lower hard link's number at copy-up")
    assert os.stat(m.path / "etc/ea").st_ino == os.stat(m.path / "etc/eb").st_ino
    ino_a, ino_b = os.stat(w / "ha").st_ino, os.stat(w / "hb").st_ino
    assert ino_a != ino_b
    with open(w / "ha", "a") as f:
        f.write(" changed")
    assert (w / "ha").read_text() == "shared changed" and (w / "hb").read_text() == "shared"
    drop_caches()
    assert (os.stat(w / "ha").st_ino, os.stat(w / "hb").st_ino) == (ino_a, ino_b)
    assert (w / "hb").read_text() == "shared"
    m.stop()
    m.start()
    assert os.stat(w / "hb").st_ino == ino_b
