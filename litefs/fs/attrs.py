"""Changing and checking attributes as root on a caller's behalf (setattr, access checks).

The daemon runs as root, so each change here is made on one pinned inode (an ``O_PATH`` fd
taken without following the name) and checked against the caller first: the name may be
swapped for a symlink or another file (through the raw /.statelite path) at any moment, and a
re-resolving ``chmod(name)`` would follow it as root. FUSE passes only uid, gid and pid, so
supplementary groups are read from ``/proc/<pid>/status``.
"""

from __future__ import annotations

import errno
import os
import stat

import pyfuse3

from litefs.syscalls import fchown_empty, utimens_empty


def _err(code: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(code)


def caller_groups(pid: int, gid: int) -> set[int]:
    """The caller's primary and supplementary groups (FUSE passes only uid/gid/pid). If the
    process is gone or unreadable, only ``gid`` counts: that can refuse, never allow more."""
    groups = {gid}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Groups:"):
                    groups.update(int(g) for g in line.split()[1:])
                    break
    except (OSError, ValueError):
        pass
    return groups


def may_access(st: os.stat_result, ctx: pyfuse3.RequestContext, want: int) -> bool:
    """POSIX permission check of ``want`` (R_OK|W_OK|X_OK bits) on ``st`` for the caller, as
    the kernel's default_permissions does (root passes, except X_OK with no x bit at all)."""
    mode = st.st_mode
    if ctx.uid == 0:
        return not (want & os.X_OK) or bool(mode & 0o111) or stat.S_ISDIR(mode)
    if ctx.uid == st.st_uid:
        bits = (mode >> 6) & 7
    elif st.st_gid in caller_groups(ctx.pid, ctx.gid):
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    return bits & want == want


def set_pinned(
    pin: int,
    attr: pyfuse3.EntryAttributes,
    fields: pyfuse3.SetattrFields,
    open_fd: int | None,
    ctx: pyfuse3.RequestContext,
) -> None:
    """setattr on the inode held by the O_PATH fd ``pin``. The kernel checked permissions
    on the inode it knows; if the backing inode under that name is now another one the
    caller does not own, refuse (fail closed) instead of changing it as root."""
    st = os.fstat(pin)
    owner = ctx.uid == 0 or ctx.uid == st.st_uid
    if fields.update_size:
        _truncate_pinned(pin, st, attr.st_size, open_fd, ctx)
    if fields.update_uid or fields.update_gid:
        if not owner:
            raise _err(errno.EPERM)
        fchown_empty(pin, attr.st_uid if fields.update_uid else -1, attr.st_gid if fields.update_gid else -1)
    if fields.update_mode and not stat.S_ISLNK(st.st_mode):
        if not owner:
            raise _err(errno.EPERM)
        # chmod of the /proc magic link changes the pinned inode (what glibc's
        # fchmodat(AT_SYMLINK_NOFOLLOW) does); it is not a symlink, checked above.
        os.chmod(f"/proc/self/fd/{pin}", stat.S_IMODE(attr.st_mode))
    if fields.update_atime or fields.update_mtime:
        if not owner and not may_access(st, ctx, os.W_OK):
            raise _err(errno.EPERM)
        at = attr.st_atime_ns if fields.update_atime else st.st_atime_ns
        mt = attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns
        if stat.S_ISLNK(st.st_mode):
            utimens_empty(pin, at, mt)
        else:
            os.utime(f"/proc/self/fd/{pin}", ns=(at, mt))


def _truncate_pinned(pin: int, st: os.stat_result, size: int, open_fd: int | None, ctx: pyfuse3.RequestContext) -> None:
    if open_fd is not None:
        os.ftruncate(open_fd, size)
        return
    if stat.S_ISDIR(st.st_mode):
        raise _err(errno.EISDIR)
    if not stat.S_ISREG(st.st_mode):
        raise _err(errno.EINVAL)  # never open a fifo or device: it may block
    if not may_access(st, ctx, os.W_OK):
        raise _err(errno.EACCES)
    # Reopening through /proc reaches the pinned inode itself, not a name.
    fd = os.open(f"/proc/self/fd/{pin}", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def set_on_fd(fd: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields) -> None:
    """setattr on a file that was unlinked while open: act on the open descriptor."""
    if fields.update_size:
        os.ftruncate(fd, attr.st_size)
    if fields.update_uid or fields.update_gid:
        os.fchown(fd, attr.st_uid if fields.update_uid else -1, attr.st_gid if fields.update_gid else -1)
    if fields.update_mode:
        os.fchmod(fd, stat.S_IMODE(attr.st_mode))
    if fields.update_atime or fields.update_mtime:
        cur = os.fstat(fd)
        at = attr.st_atime_ns if fields.update_atime else cur.st_atime_ns
        mt = attr.st_mtime_ns if fields.update_mtime else cur.st_mtime_ns
        os.utime(fd, ns=(at, mt))
