"""The kernel's whiteout format, which the tmpfs layer uses when kernel overlays serve it.

overlayfs records a deleted name ``N`` as a character device 0/0 named ``N`` in the upper
directory, and an opaque directory by the xattr ``trusted.overlay.opaque=y``. A tmpfs layer
that kernel overlays may be laid on (``--native-writes``) keeps its deletions in exactly that
form, and FUSE reads and writes it there too, so one format per layer is understood by both
and nothing needs translating when a folder changes between kernel and FUSE service. The
persistent and localdisk layers keep the ``.wh.`` marker files (litefs.fs.markers): an NFS
store has neither trusted xattrs nor mknod.

A layer's format is fixed for its life: the stamp file :data:`STAMP` at its root says it is
in the kernel's format (a layer first used without it has its ``.wh.`` markers converted once,
when the stamp is laid, before anything is served). In such a layer names starting with
``.wh.`` are still never shown in the view, but they hide nothing (a user cannot plant a
deletion); a plain user cannot make a character device at all.
"""

from __future__ import annotations

import errno
import logging
import os
import stat

from litefs.fs.markers import LONG_PREFIX, OPAQUE, TMP_PREFIX, WH_PREFIX

log = logging.getLogger("litefs.fs")

#: at the layer's root: this layer records deletions as overlayfs does
STAMP = ".wh..wh..kernel-whiteouts"
OPAQUE_XATTR = "trusted.overlay.opaque"
#: prefix of the kernel overlays' work directories at the tmpfs layer's root
WORK_PREFIX = ".wh..wh..ovlwork."
#: xattrs overlayfs keeps on upper entries: bookkeeping, never copied or shown through FUSE
OVERLAY_XATTR_PREFIX = "trusted.overlay."


def root_bookkeeping(name: str) -> bool:
    """A name at the tmpfs layer's root that even the raw ``/.statelite/tmpfs`` never shows:
    the stamp and the overlays' work directories (the kernel's, not the user's)."""
    return name == STAMP or name.startswith(WORK_PREFIX)


def is_whiteout(st: os.stat_result) -> bool:
    """True for the kernel's whiteout: a character device 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def mknod_whiteout(dfd: int, name: str) -> None:
    os.mknod(name, stat.S_IFCHR | 0o000, 0, dir_fd=dfd)


def has_stamp(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.stat(STAMP, dir_fd=fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def supported(fd: int) -> str | None:
    """None if the layer at ``fd`` can hold the kernel's format (root, mknod and trusted
    xattrs on its store), else why not."""
    probe = f"{TMP_PREFIX}kprobe.{os.getpid()}"
    try:
        mknod_whiteout(fd, probe)
        os.unlink(probe, dir_fd=fd)
        os.mkdir(probe, 0o700, dir_fd=fd)
        try:
            os.setxattr(f"/proc/self/fd/{fd}/{probe}", OPAQUE_XATTR, b"y")
        finally:
            os.rmdir(probe, dir_fd=fd)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def convert(fd: int) -> int:
    """Turn every ``.wh.`` marker of the layer at ``fd`` into the kernel's form, then lay the
    stamp. Returns the number converted. Runs before the layer is served."""
    done = 0
    stack = [os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)]
    while stack:
        dfd = stack.pop()
        try:
            with os.scandir(dfd) as it:
                ents = list(it)
            for ent in ents:
                n = ent.name
                if not n.startswith(WH_PREFIX):
                    if ent.is_dir(follow_symlinks=False):
                        stack.append(os.open(n, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd))
                    continue
                if not ent.is_file(follow_symlinks=False) or n.startswith(TMP_PREFIX) or n == STAMP:
                    continue
                if n == OPAQUE:
                    os.setxattr(f"/proc/self/fd/{dfd}", OPAQUE_XATTR, b"y")
                else:
                    target = _marked_name(dfd, n)
                    if target is not None:
                        try:
                            mknod_whiteout(dfd, target)
                        except FileExistsError:
                            pass  # the name was made again: the marker was stale
                os.unlink(n, dir_fd=dfd)
                done += 1
        finally:
            os.close(dfd)
    os.close(os.open(STAMP, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd))
    return done


def _marked_name(dfd: int, marker: str) -> str | None:
    if not marker.startswith(LONG_PREFIX):
        return marker[len(WH_PREFIX) :]
    try:  # the hashed marker of a long name holds the full name
        mfd = os.open(marker, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        try:
            name = os.fsdecode(os.read(mfd, 4096))
        finally:
            os.close(mfd)
    except OSError:
        return None
    return name if name and "/" not in name and "\0" not in name else None


def is_opaque(xattr_path: str) -> bool:
    try:
        return os.getxattr(xattr_path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.ENOENT):
            return False
        raise
