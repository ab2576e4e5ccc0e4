"""The system calls the ``os`` module lacks, through one ctypes handle on libc.

Every caller in litefs (the view's layer access, the bind mounts, mountd's inotify watcher
and worker processes) uses these wrappers, so a failing call always becomes the same
``OSError(errno, strerror, name)`` and the handle is made once.
"""

from __future__ import annotations

import ctypes
import os

libc = ctypes.CDLL(None, use_errno=True)

_SYS_RENAMEAT2 = 316
_SYS_OPENAT2 = 437
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
#: leave overlayfs's whiteout (char device 0/0) where the source was
RENAME_WHITEOUT = 4
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1


def check(result: int, name: str | None = None) -> int:
    """``result`` of a libc call, or the OSError its errno names."""
    if result < 0:
        err = ctypes.get_errno()
        if name is None:
            raise OSError(err, os.strerror(err))
        raise OSError(err, os.strerror(err), name)
    return result


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, rel: str, flags: int, resolve: int) -> int:
    """openat2(2) with ``resolve`` flags (RESOLVE_BENEATH...); the fd is close-on-exec."""
    how = _OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    return check(libc.syscall(_SYS_OPENAT2, dirfd, os.fsencode(rel), ctypes.byref(how), ctypes.sizeof(how)), rel)


def renameat2(olddir: int, old: str, newdir: int, new: str, flags: int) -> None:
    """renameat2(2) (RENAME_NOREPLACE / RENAME_EXCHANGE)."""
    check(libc.syscall(_SYS_RENAMEAT2, olddir, os.fsencode(old), newdir, os.fsencode(new), flags), new)


def fchown_empty(fd: int, uid: int, gid: int) -> None:
    """fchownat(fd, "", AT_EMPTY_PATH): chown the inode an O_PATH fd holds (even a symlink)."""
    check(libc.fchownat(fd, b"", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW))


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def utimens_empty(fd: int, atime_ns: int, mtime_ns: int) -> None:
    """Set the times of the symlink an O_PATH fd holds, without naming it again: the fd's
    /proc magic link is resolved to the symlink itself and not followed."""
    ts = (_Timespec * 2)(_Timespec(*divmod(atime_ns, 10**9)), _Timespec(*divmod(mtime_ns, 10**9)))
    check(libc.utimensat(AT_FDCWD, os.fsencode(f"/proc/self/fd/{fd}"), ts, AT_SYMLINK_NOFOLLOW))


AT_STATX_FORCE_SYNC = 0x2000
STATX_BASIC_STATS = 0x7FF


def statx_force_sync(fd: int) -> None:
    """Make the file system fetch ``fd``'s attributes from their source now (NFS: a GETATTR
    to the server), so the next stat of it is current; the result itself is not needed."""
    buf = ctypes.create_string_buffer(256)  # struct statx is 256 bytes
    check(libc.statx(fd, b"", AT_EMPTY_PATH | AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, buf),
          "statx")


def syncfs(fd: int) -> None:
    check(libc.syncfs(fd))


def mount(src: str, target: str, flags: int, fstype: str | None = None, data: str | None = None) -> None:
    check(libc.mount(os.fsencode(src), os.fsencode(target), os.fsencode(fstype) if fstype else None, flags,
                     os.fsencode(data) if data is not None else None), target)


def umount(target: str, flags: int = 0) -> None:
    check(libc.umount2(os.fsencode(target), flags), target)


def die_with_parent(signum: int) -> None:
    """prctl(PR_SET_PDEATHSIG): the kernel sends ``signum`` when the parent exits."""
    check(libc.prctl(PR_SET_PDEATHSIG, signum))


# inotify (mountd's tree watcher): argument types declared once, on the one handle.
libc.inotify_init1.argtypes = [ctypes.c_int]
libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]


def inotify_init(flags: int) -> int:
    return check(libc.inotify_init1(flags))


def inotify_add_watch(fd: int, path: str, mask: int) -> int:
    return check(libc.inotify_add_watch(fd, os.fsencode(path), mask), path)


def inotify_rm_watch(fd: int, wd: int) -> None:
    libc.inotify_rm_watch(fd, wd)  # EINVAL for a watch already gone: fine
