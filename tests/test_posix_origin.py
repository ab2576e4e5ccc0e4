"""A copied-up file keeps its lower file's number across remounts (issue 11.1): copy-up
records the number in an origin xattr on the upper file, and lookup honours it, on real
mounts in a tmpfs-rule and a persistent-rule directory. The xattr is litefs's own: nobody
sees or sets it through the view, and a forged value on the store is ignored."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from litefs.fs.inodes import INO_BITS, ORIGIN_XATTR, decode_origin, encode_origin, layer_slot
from tests.fsutil import Layers, Mounter, skip_if_kernel_served
from tests.hostile.test_view_perms import as_user
from tests.posixutil import RULE_DIRS, drop_caches, mount_view


@pytest.fixture
def layers(public_layers: Layers) -> Layers:
    """A plain uid (``as_user``) must reach the view: layers it can traverse."""
    return public_layers


def _upper(lay: Layers, d: str) -> Path:
    return (lay.tmpfs if d == "w" else lay.persistent) / d


def _upper_no(lay: Layers, d: str, name: str) -> int:
    slot = layer_slot("tmpfs" if d == "w" else "persistent")
    return (slot << INO_BITS) | os.stat(_upper(lay, d) / name).st_ino


@pytest.mark.fuse
@pytest.mark.parametrize("d", RULE_DIRS)
def test_copied_up_file_keeps_lower_number(layers: Layers, litefs_mount: Mounter, d: str) -> None:
    m = mount_view(layers, litefs_mount)
    w = m.path / d
    skip_if_kernel_served(w, m.path, "litefs's inode numbers and origin xattrs are not there (README: Node-side limits)")
    lower = os.stat(w / "lower.txt").st_ino
    assert lower >> INO_BITS == layer_slot("image")
    with open(w / "lower.txt", "a") as f:  # copy-up by write
        f.write("changed\n")
    assert os.getxattr(_upper(layers, d) / "lower.txt", ORIGIN_XATTR) == encode_origin(lower)
    assert os.stat(w / "lower.txt").st_ino == lower
    m.stop()
    m.start()
    assert os.stat(w / "lower.txt").st_ino == lower != _upper_no(layers, d, "lower.txt")
    drop_caches()
    assert os.stat(w / "lower.txt").st_ino == lower
    # A hard link made in the upper layer shares the upper inode, so the xattr: one number.
    os.link(w / "lower.txt", w / "twin")
    os.rename(w / "lower.txt", w / "moved")  # the lower at the old name is whited out
    assert os.stat(w / "moved").st_ino == os.stat(w / "twin").st_ino == lower
    m.stop()
    m.start()
    assert os.stat(w / "twin").st_ino == os.stat(w / "moved").st_ino == lower
    assert not (w / "lower.txt").exists()
    drop_caches()
    assert os.stat(w / "moved").st_ino == lower
    # A new file at a name the copy had is a new file: it never gets the lower's number.
    os.unlink(w / "moved")
    os.unlink(w / "twin")
    (w / "moved").write_text("new\n")
    (w / "lower.txt").write_text("new too\n")
    m.stop()
    m.start()
    got = {os.stat(w / n).st_ino for n in ("moved", "lower.txt")}
    assert lower not in got and len(got) == 2
    assert os.stat(w / "lower.txt").st_ino == _upper_no(layers, d, "lower.txt")


@pytest.mark.fuse
@pytest.mark.parametrize("d", RULE_DIRS)
def test_origin_xattr_is_not_in_the_view(layers: Layers, litefs_mount: Mounter, d: str) -> None:
    m = mount_view(layers, litefs_mount)
    w = m.path / d
    skip_if_kernel_served(w, m.path, "litefs's inode numbers and origin xattrs are not there (README: Node-side limits)")
    with open(w / "lower.txt", "a") as f:
        f.write("changed\n")
    os.chmod(w / "lower.txt", 0o666)
    os.setxattr(w / "lower.txt", "user.note", b"mine")  # other xattrs do pass through
    assert ORIGIN_XATTR in os.listxattr(_upper(layers, d) / "lower.txt")  # it is there ...
    for who in ("root", "user"):

        def probe(p: Path = w / "lower.txt") -> int:
            names = os.listxattr(p)
            if "user.note" not in names or ORIGIN_XATTR in names:
                return 1
            for call in (
                lambda: os.getxattr(p, ORIGIN_XATTR),
                lambda: os.setxattr(p, ORIGIN_XATTR, encode_origin(1 << INO_BITS | 5) or b""),
                lambda: os.removexattr(p, ORIGIN_XATTR),
            ):
                try:
                    call()
                    return 2
                except OSError as exc:
                    if exc.errno not in (errno.ENODATA, errno.EPERM):
                        return 3
            return 0

        assert (probe() if who == "root" else as_user(probe)) == 0, who
    # ... and unchanged by all that.
    lower_no = (layer_slot("image") << INO_BITS) | os.stat(layers.image / d / "lower.txt").st_ino
    assert os.getxattr(_upper(layers, d) / "lower.txt", ORIGIN_XATTR) == encode_origin(lower_no)


@pytest.mark.fuse
@pytest.mark.parametrize("d", RULE_DIRS)
def test_forged_origin_is_ignored(layers: Layers, litefs_mount: Mounter, d: str) -> None:
    m = mount_view(layers, litefs_mount)
    w = m.path / d
    skip_if_kernel_served(w, m.path, "litefs's inode numbers and origin xattrs are not there (README: Node-side limits)")
    lower = os.stat(w / "lower.txt").st_ino
    for n in ("garbage", "tmpfs", "steal", "hashed"):
        (w / n).write_text(n)
    m.stop()
    up = _upper(layers, d)
    os.setxattr(up / "garbage", ORIGIN_XATTR, b"not a number at all")
    os.setxattr(up / "tmpfs", ORIGIN_XATTR, b"%016x" % (layer_slot("tmpfs") << INO_BITS | 7))
    os.setxattr(up / "hashed", ORIGIN_XATTR, b"%016x" % (1 << 63 | 7))
    # A valid lower number of a file that is still visible: the two must not share it.
    os.setxattr(up / "steal", ORIGIN_XATTR, encode_origin(lower) or b"")
    m.start()
    for n in ("garbage", "tmpfs", "hashed"):
        assert os.stat(w / n).st_ino == _upper_no(layers, d, n), n
    assert os.stat(w / "steal").st_ino != os.stat(w / "lower.txt").st_ino


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_origin_codec(ino: int) -> None:
    raw = encode_origin(ino)
    slot = ino >> INO_BITS
    if raw is None:
        assert ino >> 63 or slot not in (1, *range(8, 64))
    else:
        assert len(raw) == 16 and decode_origin(raw) == ino
        assert decode_origin(raw.upper()) in (None, ino) and decode_origin(raw + b"0") is None


@given(st.binary(max_size=20))
def test_decode_origin_accepts_only_lower_numbers(raw: bytes) -> None:
    ino = decode_origin(raw)
    assert ino is None or (encode_origin(ino) == raw and ino >> INO_BITS in (1, *range(8, 64)))
