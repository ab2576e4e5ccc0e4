"""Shared set-up for the POSIX conformance tests (tests/test_posix_*.py).

One plan for all of them: ``/w/`` is a tmpfs rule and ``/p/`` a persistent rule over image
content, so every test runs in both (``rule_dir`` parametrizes it) on a real mount.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from tests.fsutil import Layers, LitefsMount, Mounter, make_plan, put

RULES = {"/w/": "tmpfs", "/p/": "persistent"}
RULE_DIRS = ["w", "p"]


def mount_view(layers: Layers, litefs_mount: Mounter) -> LitefsMount:
    for d in RULE_DIRS:
        put(layers.image, f"{d}/lower.txt", f"lower {d}\n")
        put(layers.image, f"{d}/sub/deep.txt", "deep\n")
    put(layers.image, "etc/hostname", "img\n")
    return litefs_mount(make_plan(RULES))


def drop_caches() -> None:
    """Make the kernel evict every unused dentry and inode (and litefs get FORGETs)."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("2\n")


def tree_digest(root: Path) -> str:
    """A digest of everything below ``root`` (names, types, modes, sizes, contents, link
    targets), walked with directory fds so that trees deeper than PATH_MAX work too."""
    h = hashlib.sha256()
    for top, dirs, files, dfd in os.fwalk(root):
        dirs.sort()
        rel = os.path.relpath(top, root)
        for name in sorted(dirs + files):
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            h.update(f"{rel}/{name}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode)}\0{st.st_size}\0".encode())
            if stat.S_ISREG(st.st_mode):
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dfd)
                try:
                    h.update(os.read(fd, 1 << 20))
                finally:
                    os.close(fd)
            elif stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(name, dir_fd=dfd).encode())
    return h.hexdigest()


def backing_digest(layers: Layers) -> str:
    return "".join(tree_digest(p) for p in (layers.image, layers.tmpfs, layers.persistent))


def wait_meta(layers: Layers) -> None:
    """The mount writes /.statelite/litefile a moment after it is ready: let it settle, so
    before/after digests of the tmpfs layer compare only what a test did."""
    from tests.fsutil import wait_for

    wait_for(lambda: (layers.tmpfs / ".statelite/litetree").exists())
