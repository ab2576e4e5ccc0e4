"""Lazy, atomic copy-up from a lower layer (a source or the image) into an upper layer.

A file is copied up the first time the node changes it (write, truncate, chmod, rename...).
The copy is built under a hidden temp name in the *same* upper directory, its data and
metadata (mode, owner, times, xattrs where the target supports them) are set and fsynced, and
only then is it renamed over the final name and the directory fsynced. A crash (``kill -9``,
power loss) at any moment therefore leaves either no upper file (the lower one still shows) or
the complete copy, never a torn or empty one. A stale temp file is hidden from the view by
its ``.wh..wh..tmp.`` prefix and swept the next time that directory gets a copy-up.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Callable

from litefs.fs.inodes import ORIGIN_XATTR
from litefs.fs.layers import TMP_PREFIX, Layer, join, open_beneath_deep, split

_COPY_CHUNK = 1 << 24


def _tmp_name() -> str:
    return TMP_PREFIX + secrets.token_hex(8)


def ensure_dir(up: Layer, rel_dir: str, meta_of: Callable[[str], os.stat_result | None]) -> None:
    """Make sure directory ``rel_dir`` exists in ``up``, creating missing parents with the
    owner, mode and times the view shows for them (``meta_of(rel)``)."""
    if rel_dir == "." or up.is_dir(rel_dir):
        return
    parts = rel_dir.split("/")
    for i in range(1, len(parts) + 1):
        rel = "/".join(parts[:i])
        st = up.lstat(rel)
        if st is not None:
            if not stat.S_ISDIR(st.st_mode):
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), rel)
            continue
        _make_dir(up, rel, meta_of(rel))


def _make_dir(up: Layer, rel: str, st: os.stat_result | None) -> None:
    parent, name = split(rel)
    pfd = up.dirfd(parent)
    tmp = _tmp_name()
    up.created_dir()
    os.mkdir(tmp, 0o700, dir_fd=pfd)
    try:
        if st is not None:
            _set_meta_path(pfd, tmp, st, None)
        else:
            os.chmod(tmp, 0o755, dir_fd=pfd)
        try:
            os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            # Someone made it meanwhile: theirs wins.
            os.rmdir(tmp, dir_fd=pfd)
    except BaseException:
        try:
            os.rmdir(tmp, dir_fd=pfd)
        except OSError:
            pass
        raise
    _fsync_dir(up, parent)


def copy_up(
    up: Layer,
    rel: str,
    st: os.stat_result,
    sources: list[tuple[Layer, str]],
    truncate_to: int | None = None,
    xattr_from: tuple[Layer, str] | None = None,
    origin: bytes | None = None,
) -> None:
    """Copy the entry described by ``st`` into ``up`` at ``rel``, atomically.

    ``sources`` lists the lower files whose data, concatenated, is the content (one for a
    plain copy-up, several for the ``con`` family). ``truncate_to`` = 0 skips the data copy
    (an ``O_TRUNC`` open or ``truncate(0)`` needs none). The parent directory must exist in
    ``up`` already (see :func:`ensure_dir`). ``origin`` (a regular file's lower number,
    :func:`litefs.fs.inodes.encode_origin`) is set as the origin xattr before the rename
    publishes the copy, so a published copy always has it where the store allows xattrs.
    """
    parent, name = split(rel)
    pfd = _open_dir(up, parent)
    tmp = _tmp_name()
    try:
        _sweep(up, pfd)
        mode = st.st_mode
        if stat.S_ISREG(mode):
            _copy_file(pfd, tmp, st, sources, truncate_to, xattr_from)
            if origin is not None and up.origin_xattrs:
                _set_origin(up, pfd, tmp, origin)
        elif stat.S_ISLNK(mode):
            src, srel = sources[0]
            sp, sn = split(srel)
            sfd = _open_dir(src, sp)
            try:
                target = os.readlink(sn, dir_fd=sfd)
            finally:
                _close_dir(src, sfd)
            os.symlink(target, tmp, dir_fd=pfd)
            _set_meta_path(pfd, tmp, st, None)
        elif stat.S_ISDIR(mode):
            up.created_dir()
            os.mkdir(tmp, 0o700, dir_fd=pfd)
            _set_meta_path(pfd, tmp, st, xattr_from)
        else:
            os.mknod(tmp, mode, st.st_rdev, dir_fd=pfd)
            _set_meta_path(pfd, tmp, st, xattr_from)
        try:
            os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
        except BaseException:
            _remove(pfd, tmp)
            raise
        _fsync_dir(up, parent)
    finally:
        _close_dir(up, pfd)


def _copy_file(
    pfd: int,
    tmp: str,
    st: os.stat_result,
    sources: list[tuple[Layer, str]],
    truncate_to: int | None,
    xattr_from: tuple[Layer, str] | None,
) -> None:
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=pfd)
    try:
        if truncate_to != 0:
            for src, srel in sources:
                sp, sn = split(srel)
                sfd = _open_dir(src, sp)
                try:
                    infd = os.open(sn, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sfd)
                finally:
                    _close_dir(src, sfd)
                try:
                    _copy_data(infd, out)
                finally:
                    os.close(infd)
        if truncate_to is not None:
            os.ftruncate(out, truncate_to)
        _set_meta_fd(out, st, xattr_from)
        os.fsync(out)
        os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
    except BaseException:
        os.close(out)
        _remove(pfd, tmp)
        raise
    os.close(out)


def _set_origin(up: Layer, pfd: int, name: str, origin: bytes) -> None:
    """Record the lower number on the unpublished copy; a store without (trusted) xattrs
    is remembered so later copy-ups and lookups do not ask it again."""
    try:
        os.setxattr(f"/proc/self/fd/{pfd}/{name}", ORIGIN_XATTR, origin, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            _remove(pfd, name)
            raise
        up.origin_xattrs = False


def _copy_data(infd: int, outfd: int) -> None:
    try:
        while os.copy_file_range(infd, outfd, _COPY_CHUNK):
            pass
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
    while True:
        buf = os.read(infd, 1 << 20)
        if not buf:
            return
        view = memoryview(buf)
        while view:
            view = view[os.write(outfd, view) :]


def _set_meta_fd(fd: int, st: os.stat_result, xattr_from: tuple[Layer, str] | None) -> None:
    try:
        os.fchown(fd, st.st_uid, st.st_gid)
    except PermissionError:
        pass
    os.fchmod(fd, stat.S_IMODE(st.st_mode))  # after chown, which clears set-id bits
    if xattr_from is not None:
        _copy_xattrs(xattr_from, fd)


def _set_meta_path(pfd: int, name: str, st: os.stat_result, xattr_from: tuple[Layer, str] | None) -> None:
    try:
        os.chown(name, st.st_uid, st.st_gid, dir_fd=pfd, follow_symlinks=False)
    except PermissionError:
        pass
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=pfd)
        if xattr_from is not None:
            _copy_xattrs(xattr_from, f"/proc/self/fd/{pfd}/{name}")
    os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=pfd, follow_symlinks=False)


def _copy_xattrs(src: tuple[Layer, str], dst: str | int) -> None:
    layer, rel = src
    sp, sn = split(rel)
    sfd = _open_dir(layer, sp)
    try:
        spath = f"/proc/self/fd/{sfd}/{sn}" if sn != "." else f"/proc/self/fd/{sfd}/."
        try:
            names = os.listxattr(spath, follow_symlinks=False)
        except OSError:
            return
        for n in names:
            if n == ORIGIN_XATTR:
                continue  # litefs's own: a lower file's value is never carried up
            try:
                value = os.getxattr(spath, n, follow_symlinks=False)
                if isinstance(dst, int):
                    os.setxattr(dst, n, value)
                else:
                    os.setxattr(dst, n, value, follow_symlinks=False)
            except OSError:
                pass  # the target may not support this namespace (NFSv3): best effort
    finally:
        _close_dir(layer, sfd)


def _open_dir(b: Layer, rel: str) -> int:
    """A private directory fd: copy_up may run in a worker thread, away from the layer's
    fd cache, which only the filesystem's own thread touches."""
    if rel == ".":
        return b.fd
    return open_beneath_deep(b.fd, rel, os.O_PATH | os.O_DIRECTORY)


def _close_dir(b: Layer, fd: int) -> None:
    if fd != b.fd:
        os.close(fd)


def _fsync_dir(up: Layer, rel_dir: str) -> None:
    fd = up.fd if rel_dir == "." else open_beneath_deep(up.fd, rel_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EROFS):
            raise
    finally:
        if fd != up.fd:
            os.close(fd)


def _remove(pfd: int, name: str) -> None:
    try:
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            os.rmdir(name, dir_fd=pfd)
        else:
            os.unlink(name, dir_fd=pfd)
    except OSError:
        pass


_swept: set[tuple[int, int, int]] = set()


def _sweep(up: Layer, pfd: int) -> None:
    """Remove temp files a crashed copy-up left in this directory (once per directory)."""
    st = os.fstat(pfd)
    key = (up.fd, st.st_dev, st.st_ino)
    if key in _swept:
        return
    _swept.add(key)
    try:
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=pfd)
    except OSError:
        return
    try:
        stale = [n for n in os.listdir(fd) if n.startswith(TMP_PREFIX)]
    finally:
        os.close(fd)
    for n in stale:
        _remove(pfd, n)


__all__ = ["copy_up", "ensure_dir", "join"]
