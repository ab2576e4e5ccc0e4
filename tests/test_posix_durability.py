"""fsyncdir reaches the backing directories, and fallocate behaves as the README says
(issue 11.4), on real mounts in a tmpfs-rule and a persistent-rule directory.

What the fsyncdir test proves: that the daemon issued ``fsync`` on the backing directory of
the synced view directory and on each directory above it that litefs created or changed on
the way (counted by the daemon as it calls fsync, read through the root xattr
``user.litefs.dirsyncs``), and that those entries are in the backing layer. It cannot prove
that the store honoured the fsync through a power cut; that needs a crash-consistent device.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat

import pytest

from litefs.fs.kwhiteouts import STAMP
from tests.fsutil import Layers, Mounter, kernel_served
from tests.posixutil import RULE_DIRS, mount_view

pytestmark = pytest.mark.fuse

_libc = ctypes.CDLL(None, use_errno=True)


def _syncs(mnt: os.PathLike[str]) -> int:
    return int(os.getxattr(mnt, "user.litefs.dirsyncs"))


def _fsync_dir(path: os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@pytest.mark.parametrize("d", RULE_DIRS)
def test_fsyncdir_syncs_the_backing_directories_touched(layers: Layers, litefs_mount: Mounter, d: str) -> None:
    m = mount_view(layers, litefs_mount)
    w = m.path / d
    if kernel_served(w, m.path):
        pytest.skip("the kernel serves it (LITEFS_TEST_NATIVE_WRITES=1): fsyncdir never reaches litefs")
    upper = (layers.tmpfs if d == "w" else layers.persistent) / d
    (w / "sub/new").mkdir()  # copies w/ and w/sub up, then makes new
    (w / "sub/new/f").write_text("x")
    os.rename(w / "lower.txt", w / "sub/new/moved")
    start = _syncs(m.path)
    _fsync_dir(w / "sub/new")
    # new itself, and sub, w and the layer root above it, whose entries changed on the way
    # (w and sub were made in the layer by the copy-up): four backing fsyncs
    assert _syncs(m.path) - start == 4
    assert sorted(os.listdir(upper / "sub/new")) == ["f", "moved"]
    if d == "w" and (layers.tmpfs / STAMP).exists():  # the kernel's format: a char device 0/0
        assert stat.S_ISCHR(os.lstat(upper / "lower.txt").st_mode)  # the whiteout is in w, synced above
    else:
        assert (upper / ".wh.lower.txt").is_file()  # the whiteout is in w, synced above
    start = _syncs(m.path)
    _fsync_dir(w / "sub/new")  # nothing changed since: only the directory itself
    assert _syncs(m.path) - start == 1
    start = _syncs(m.path)
    _fsync_dir(m.path / "etc")  # no rule: nothing of it is in a writable layer
    assert _syncs(m.path) - start == 0


@pytest.mark.parametrize("d", RULE_DIRS)
def test_fallocate_is_unsupported_and_posix_fallocate_writes(layers: Layers, litefs_mount: Mounter, d: str) -> None:
    """As the README's differences say: fallocate(2) fails with EOPNOTSUPP in every mode
    (pyfuse3 has no handler; the kernel turns ENOSYS into EOPNOTSUPP), and glibc's
    posix_fallocate falls back to writing, so it works and the space is really there."""
    m = mount_view(layers, litefs_mount)
    p = m.path / d / "alloc"
    kernel = kernel_served(p.parent, m.path)  # LITEFS_TEST_NATIVE_WRITES=1: the kernel has fallocate
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        for mode in (0, 1, 3):  # plain, KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE
            r = _libc.fallocate(fd, mode, ctypes.c_long(0), ctypes.c_long(4096))
            if kernel:
                assert r == 0, ctypes.get_errno()
            else:
                assert r == -1 and ctypes.get_errno() == errno.EOPNOTSUPP
        os.posix_fallocate(fd, 0, 1 << 20)
        assert os.fstat(fd).st_size == 1 << 20
    finally:
        os.close(fd)
    upper = (layers.tmpfs if d == "w" else layers.persistent) / d
    assert (upper / "alloc").stat().st_size == 1 << 20
