"""The layer set: image, sources, tmpfs, persistent and localdisk, each held by a directory fd.

Every backing access goes through a layer's root fd: a parent directory is reached with
``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)``, so neither a symlink nor ``..`` inside a
layer can lead outside it, and the daemon keeps working after ``switch_root`` moves the mount
points it was started from. The last component is always acted on with ``*at()`` calls that do
not follow it. Whiteouts are marker files (``.wh.<name>``, a hashed form for long names, and
``.wh..wh..opq`` for an opaque directory; see :mod:`litefs.fs.markers`) so they work on NFSv3-like stores without xattrs or mknod; every name starting with
``.wh.`` in a writable layer is bookkeeping and never shown in the view.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import stat
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from litefs.errors import MountError
from litefs.fs.inodes import layer_slot
from litefs.fs.markers import OPAQUE, TMP_PREFIX, WH_PREFIX, whiteout_name  # noqa: F401 (re-exported)

UPPER_KINDS = ("tmpfs", "persistent", "localdisk")

_SYS_OPENAT2 = 437
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_SYS_RENAMEAT2 = 316
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

_libc = ctypes.CDLL(None, use_errno=True)
log = logging.getLogger("litefs.fs")


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2_beneath(dirfd: int, rel: str, flags: int) -> int:
    """Open ``rel`` below ``dirfd`` without following any symlink or leaving the tree."""
    how = _OpenHow(flags | os.O_CLOEXEC, 0, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS)
    fd = _libc.syscall(_SYS_OPENAT2, dirfd, os.fsencode(rel), ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), rel)
    return fd


#: bytes of path per openat2 call when walking a deep path (PATH_MAX is 4096 with the NUL)
PATH_STEP = 3072


def open_beneath_deep(dirfd: int, rel: str, flags: int) -> int:
    """openat2_beneath() for a path of any length: a path longer than the kernel takes in one
    call is walked in steps below PATH_MAX, each step beneath the last (so it still cannot
    leave the tree or follow a symlink). View paths are limited by the kernel per call, not
    in total, so a tree may be deeper than PATH_MAX from the view's root."""
    raw = os.fsencode(rel)
    if len(raw) < PATH_STEP:
        return openat2_beneath(dirfd, rel, flags)
    fd, own = dirfd, False
    try:
        while len(raw) >= PATH_STEP:
            cut = raw.rfind(b"/", 0, PATH_STEP)
            if cut <= 0:
                raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), rel)
            nfd = openat2_beneath(fd, os.fsdecode(raw[:cut]), os.O_PATH | os.O_DIRECTORY)
            if own:
                os.close(fd)
            fd, own = nfd, True
            raw = raw[cut + 1 :]
        return openat2_beneath(fd, os.fsdecode(raw), flags)
    finally:
        if own:
            os.close(fd)


def renameat2(olddir: int, old: str, newdir: int, new: str, flags: int) -> None:
    """renameat2(2) (NOREPLACE / EXCHANGE), which the os module does not offer."""
    r = _libc.syscall(_SYS_RENAMEAT2, olddir, os.fsencode(old), newdir, os.fsencode(new), flags)
    if r < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), new)


def make_marker(dfd: int, name: str) -> None:
    """Create the marker file ``name`` in directory ``dfd``, never through a symlink: a
    non-regular entry in its place (planted through the raw layer path) is removed first, so
    the daemon (root) cannot be made to create or truncate a file outside the layer."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        os.close(os.open(name, flags, 0o600, dir_fd=dfd))
        return
    except FileExistsError:
        pass
    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    if stat.S_ISREG(st.st_mode):
        return
    log.warning("marker %s is not a regular file (mode %o); replaced", name, st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        os.rmdir(name, dir_fd=dfd)  # fails (fail closed) unless empty
    else:
        os.unlink(name, dir_fd=dfd)
    os.close(os.open(name, flags, 0o600, dir_fd=dfd))


def split(rel: str) -> tuple[str, str]:
    """``etc/ssh/x`` -> (``etc/ssh``, ``x``); a top-level name has parent ``.``."""
    cut = rel.rfind("/")
    if cut < 0:
        return ".", rel
    return rel[:cut], rel[cut + 1 :]


def rel_of(path: str) -> str:
    """View path ``/etc/motd`` -> layer-relative ``etc/motd`` (``.`` for the root)."""
    return path[1:] or "."


#: seconds a directory seen absent is trusted without looking again
ABSENT_TTL = 1.0
#: directory fds kept open per layer (LRU); a handler holds at most a few at once
DIRFD_CACHE = 1024


@dataclass(eq=False)
class Backing:
    """One layer directory. ``name`` is the layer as provenance shows it (``source[0]``).

    Directory fds are cached (LRU) so that a lookup costs one ``fstatat``, not a path walk;
    litefs drops them when it removes or renames a directory, and on refresh.
    """

    name: str
    path: str
    fd: int
    writable: bool
    #: the layer's fixed inode-number slot and its root's device (litefs.fs.inodes)
    slot: int = 0
    dev: int = 0
    #: False once the store refused the origin xattr (NFSv3: ENOTSUP), so it is never retried
    origin_xattrs: bool = True
    _dirs: OrderedDict[str, int] = field(default_factory=OrderedDict, repr=False)
    #: directories known to be absent (most upper layers lack most directories), with when
    #: that was seen; trusted for ABSENT_TTL seconds (like the kernel's negative entries),
    #: dropped at once when litefs creates a directory in this layer, and on refresh
    _absent: dict[str, float] = field(default_factory=dict, repr=False)
    _warned: set[str] = field(default_factory=set, repr=False)

    def dirfd(self, rel_dir: str) -> int:
        """An fd for directory ``rel_dir``, owned by the layer (pass it back to release())."""
        fd = self.find_dir(rel_dir)
        if fd is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), rel_dir)
        return fd

    def find_dir(self, rel_dir: str) -> int | None:
        """Like dirfd(), but None when the directory is absent or reachable only through a
        symlink (which a layer must never follow)."""
        if rel_dir == ".":
            return self.fd
        fd = self._dirs.get(rel_dir)
        if fd is not None:
            self._dirs.move_to_end(rel_dir)
            return fd
        seen = self._absent.get(rel_dir)
        if seen is not None:
            if time.monotonic() - seen < ABSENT_TTL:
                return None
            del self._absent[rel_dir]
        try:
            fd = open_beneath_deep(self.fd, rel_dir, os.O_PATH | os.O_DIRECTORY)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EXDEV):
                if len(self._absent) > 65536:
                    self._absent.clear()
                if exc.errno in (errno.ELOOP, errno.EXDEV) and rel_dir not in self._warned:
                    self._warned.add(rel_dir)  # once per directory and mount
                    log.warning("%s: %s leads through a symlink; not followed (the layer stays closed)", self.name, rel_dir)
                self._absent[rel_dir] = time.monotonic()
                return None
            raise
        self._dirs[rel_dir] = fd
        if len(self._dirs) > DIRFD_CACHE:
            _old, old_fd = self._dirs.popitem(last=False)
            os.close(old_fd)
        return fd

    def release(self, fd: int) -> None:
        """Done with a dirfd() result (the cache keeps it open)."""

    def created_dir(self) -> None:
        """litefs made a directory in this layer: forget what was known to be absent."""
        self._absent.clear()

    def forget_dirs(self, rel_dir: str | None = None) -> None:
        """Drop cached fds for ``rel_dir`` and below (everything when None)."""
        self._absent.clear()
        if rel_dir is None:
            doomed = list(self._dirs)
        else:
            prefix = rel_dir + "/"
            doomed = [k for k in self._dirs if k == rel_dir or k.startswith(prefix)]
        for k in doomed:
            os.close(self._dirs.pop(k))

    def lstat(self, rel: str) -> os.stat_result | None:
        """lstat of ``rel`` in this layer; None when absent or unreachable without symlinks."""
        if rel == ".":
            return os.fstat(self.fd)
        parent, name = split(rel)
        fd = self.find_dir(parent)
        if fd is None:
            return None
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError as exc:
            # A whiteout marker for a 252+ byte name cannot exist: too long is absent.
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
                return None
            raise

    def exists(self, rel: str) -> bool:
        return self.lstat(rel) is not None

    def is_dir(self, rel: str) -> bool:
        st = self.lstat(rel)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def whiteout(self, rel: str) -> bool:
        """True if ``rel`` is recorded as deleted in this layer."""
        parent, name = split(rel)
        return self.marker(_join(parent, whiteout_name(name)))

    def opaque(self, rel_dir: str) -> bool:
        return self.marker(_join(rel_dir, OPAQUE))

    def marker(self, rel: str) -> bool:
        """True if the marker file ``rel`` is there. Only a regular file counts: anything
        else (a symlink or fifo planted through the raw ``/.statelite`` path) is ignored and
        logged, and never followed."""
        st = self.lstat(rel)
        if st is None:
            return False
        if stat.S_ISREG(st.st_mode):
            return True
        if rel not in self._warned:
            self._warned.add(rel)
            log.warning("%s: marker %s is not a regular file; ignored", self.name, rel)
        return False

    def listdir(self, rel_dir: str) -> list[str] | None:
        """Names in ``rel_dir``; None when it is not a directory in this layer."""
        try:
            fd = open_beneath_deep(self.fd, rel_dir, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EXDEV):
                return None
            raise
        try:
            return os.listdir(fd)
        finally:
            os.close(fd)

    def proc_path(self, fd: int, name: str) -> str:
        """A path naming ``name`` in directory ``fd`` for calls that take no dir_fd (xattrs)."""
        return f"/proc/self/fd/{fd}/{name}"

    def abspath(self, rel: str) -> str:
        return self.path if rel == "." else os.path.join(self.path, rel)


def _join(parent: str, name: str) -> str:
    return name if parent == "." else parent + "/" + name


join = _join


class LayerSet:
    """All layers of one mount, opened once at mount time."""

    def __init__(
        self,
        image: str,
        sources: list[str],
        tmpfs: str | None = None,
        persistent: str | None = None,
        localdisk: str | None = None,
        read_only: bool = False,
    ) -> None:
        self.image = _open("image", image, writable=False)
        # An image liteimg prepared: its originals of link-family paths are in /.default.
        from litefs.fs.imagelayout import open_originals, read_layout

        self.layout = read_layout(self.image)
        self.originals = open_originals(self.image) if self.layout.liteimgd else None
        self.sources = [_open(f"source[{i}]", d, writable=False) for i, d in enumerate(sources)]
        self.uppers: dict[str, Backing] = {}
        for kind, where in (("tmpfs", tmpfs), ("persistent", persistent), ("localdisk", localdisk)):
            if where is not None:
                self.uppers[kind] = _open(kind, where, writable=not read_only)
        self.read_only = read_only

    def upper(self, kind: str | None) -> Backing | None:
        if kind is None:
            return None
        return self.uppers.get(kind)

    def lower(self, kind: str, index: int = 0) -> Backing | None:
        if kind == "image":
            return self.image if index == 0 else self.originals
        if index < len(self.sources):
            return self.sources[index]
        return None

    def all(self) -> list[Backing]:
        extra = [self.originals] if self.originals is not None else []
        return [self.image, *extra, *self.sources, *self.uppers.values()]

    def forget_dirs(self) -> None:
        for b in self.all():
            b.forget_dirs()

    def close(self) -> None:
        for b in self.all():
            b.forget_dirs()
            try:
                os.close(b.fd)
            except OSError:
                pass


def _open(name: str, where: str, writable: bool) -> Backing:
    try:
        fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise MountError(f"{name} layer directory {where} does not exist; create it or fix --{_opt(name)}") from None
    except NotADirectoryError:
        raise MountError(f"{name} layer {where} is not a directory; fix --{_opt(name)}") from None
    except OSError as exc:
        raise MountError(f"{name} layer directory {where} cannot be opened: {exc.strerror}") from None
    if writable and not os.access(f"/proc/self/fd/{fd}", os.W_OK):
        os.close(fd)
        raise MountError(f"{name} layer directory {where} is not writable; fix its permissions or --{_opt(name)}")
    if writable:
        try:
            probe_name = f".litefs-probe.{os.getpid()}"
            probe = os.open(probe_name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600, dir_fd=fd)
            os.close(probe)
            os.unlink(probe_name, dir_fd=fd)
        except OSError as exc:
            os.close(fd)
            raise MountError(f"{name} layer directory {where} is not writable ({exc.strerror}); fix --{_opt(name)}") from None
    return Backing(
        name=name, path=os.path.abspath(where), fd=fd, writable=writable, slot=layer_slot(name), dev=os.fstat(fd).st_dev
    )


def _opt(name: str) -> str:
    return "source" if name.startswith("source") else name
