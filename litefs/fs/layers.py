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

import errno
import logging
import os
import stat
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from litefs import syscalls
from litefs.errors import MountError
from litefs.fs import kwhiteouts
from litefs.fs.inodes import layer_slot
from litefs.fs.markers import LONG_PREFIX, OPAQUE, TMP_PREFIX, WH_PREFIX, Hidden, whiteout_name
from litefs.syscalls import RENAME_EXCHANGE, RENAME_NOREPLACE, renameat2

__all__ = ["OPAQUE", "RENAME_EXCHANGE", "RENAME_NOREPLACE", "TMP_PREFIX", "WH_PREFIX", "renameat2"]

UPPER_KINDS = ("tmpfs", "persistent", "localdisk")
_T = TypeVar("_T")

log = logging.getLogger("litefs.fs")


def openat2_beneath(dirfd: int, rel: str, flags: int) -> int:
    """Open ``rel`` below ``dirfd`` without following any symlink or leaving the tree."""
    return syscalls.openat2(dirfd, rel, flags, syscalls.RESOLVE_BENEATH | syscalls.RESOLVE_NO_SYMLINKS)


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


def _odd(ent: os.DirEntry[str]) -> bool:
    """Neither a directory, file nor symlink (by d_type, no stat): a device, fifo or socket."""
    return not (ent.is_dir(follow_symlinks=False) or ent.is_file(follow_symlinks=False) or ent.is_symlink())


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
class Layer:
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
    #: deletions recorded as overlayfs does (char device 0/0, trusted.overlay.opaque), not by
    #: ``.wh.`` marker files: a tmpfs layer kernel overlays are laid on (litefs.fs.kwhiteouts)
    kernel_whiteouts: bool = False
    _dirs: OrderedDict[str, int] = field(default_factory=OrderedDict, repr=False)
    #: directories known to be absent (most upper layers lack most directories), with when
    #: that was seen; trusted for ABSENT_TTL seconds (like the kernel's negative entries),
    #: dropped at once when litefs creates a directory in this layer, and on refresh
    _absent: dict[str, float] = field(default_factory=dict, repr=False)
    _warned: set[str] = field(default_factory=set, repr=False)

    def dirfd(self, rel_dir: str) -> int:
        """An fd for directory ``rel_dir``, owned by the layer's cache (never close it)."""
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

    def has_whiteout(self, rel: str) -> bool:
        """True if ``rel`` is recorded as deleted in this layer."""
        if self.kernel_whiteouts:
            st = self.lstat(rel)
            return st is not None and kwhiteouts.is_whiteout(st)
        parent, name = split(rel)
        return self.marker(_join(parent, whiteout_name(name)))

    def is_opaque(self, rel_dir: str) -> bool:
        if self.kernel_whiteouts:
            return self.find_dir(rel_dir) is not None and kwhiteouts.is_opaque(self.xattr_path(rel_dir))
        return self.marker(_join(rel_dir, OPAQUE))

    def listing(self, rel_dir: str) -> tuple[list[str], Hidden] | None:
        """The names of ``rel_dir`` the view may show (bookkeeping left out), and the names
        this layer's deletions hide below it; None when it is not a directory here."""
        hidden = Hidden()
        if self.kernel_whiteouts:
            try:
                fd = open_beneath_deep(self.fd, rel_dir, os.O_RDONLY | os.O_DIRECTORY)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EXDEV):
                    return None
                raise
            try:
                shown = []
                with os.scandir(fd) as it:
                    for ent in it:
                        n = ent.name
                        if n.startswith(WH_PREFIX):
                            continue  # never shown; in this format it hides nothing
                        if _odd(ent) and kwhiteouts.is_whiteout(ent.stat(follow_symlinks=False)):
                            hidden.short.add(n)
                        else:
                            shown.append(n)
                return shown, hidden
            finally:
                os.close(fd)
        names = self.listdir(rel_dir)
        if names is None:
            return None
        shown = []
        for n in names:
            if n.startswith(WH_PREFIX):
                if n != OPAQUE and not n.startswith(TMP_PREFIX) and self.marker(_join(rel_dir, n)):
                    hidden.add(n[len(WH_PREFIX) :])
            else:
                shown.append(n)
        return shown, hidden

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

    def is_whiteout_st(self, st: os.stat_result) -> bool:
        """True if ``st`` (of an entry in this layer) is itself a deletion record."""
        return self.kernel_whiteouts and kwhiteouts.is_whiteout(st)

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

    # --- changes (writable layers): each acts on the last component with an *at() call
    # that does not follow it, below a parent reached by dirfd() -----------------------

    def at(self, rel: str) -> tuple[int, str]:
        """(parent directory fd, last component) of ``rel``."""
        parent, name = split(rel)
        return self.dirfd(parent), name

    def xattr_path(self, rel: str) -> str:
        """A path naming ``rel`` for calls that take no dir_fd (xattrs): through the /proc
        link of its parent's fd, so nothing above the last component is looked up again."""
        if rel == ".":
            return f"/proc/self/fd/{self.fd}/."
        pfd, name = self.at(rel)
        return f"/proc/self/fd/{pfd}/{name}"

    def open(self, rel: str, flags: int, mode: int = 0o600) -> int:
        pfd, name = self.at(rel)
        flags |= os.O_NOFOLLOW | os.O_CLOEXEC
        if flags & os.O_CREAT:
            return self._over_whiteout(pfd, name, lambda n: os.open(n, flags, mode, dir_fd=pfd))
        return os.open(name, flags, mode, dir_fd=pfd)

    def _over_whiteout(self, pfd: int, name: str, make: Callable[[str], _T]) -> _T:
        """``make(name)``; where the kernel's record of a deletion holds the name, the new
        entry is made at a temporary name and renamed over it in one step, so the deleted
        lower entry never shows, also when making it fails."""
        if not self.kernel_whiteouts:
            return make(name)
        st = self._lstat_at(pfd, name)
        if st is None or not kwhiteouts.is_whiteout(st):
            return make(name)
        tmp = f"{TMP_PREFIX}new.{os.getpid()}.{os.urandom(4).hex()}"
        out = make(tmp)
        try:
            os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
        except BaseException:
            if isinstance(out, int):
                os.close(out)
            os.unlink(tmp, dir_fd=pfd)
            raise
        return out

    def pin(self, rel: str) -> int:
        """An O_PATH fd on the inode now at ``rel`` (not following it): act on that inode
        even if the name is swapped for another file or a symlink meanwhile."""
        return self.open(rel, os.O_PATH)

    def read_all(self, rel: str) -> bytes:
        fd = self.open(rel, os.O_RDONLY)
        try:
            chunks = []
            while buf := os.read(fd, 1 << 20):
                chunks.append(buf)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def readlink(self, rel: str) -> str:
        pfd, name = self.at(rel)
        return os.readlink(name, dir_fd=pfd)

    def mkdir(self, rel: str, mode: int, opaque: bool = False) -> None:
        """A new directory; ``opaque`` makes it opaque before it appears (it replaces a
        deleted name whose lower content must not merge into it)."""
        pfd, name = self.at(rel)
        self.created_dir()
        if not opaque:
            os.mkdir(name, mode, dir_fd=pfd)
            return
        tmp = TMP_PREFIX + "mkdir." + str(os.getpid())
        os.mkdir(tmp, mode, dir_fd=pfd)
        if self.kernel_whiteouts:
            os.setxattr(f"/proc/self/fd/{pfd}/{tmp}", kwhiteouts.OPAQUE_XATTR, b"y", follow_symlinks=False)
            st = self._lstat_at(pfd, name)
            if st is not None and kwhiteouts.is_whiteout(st):
                # Over the deletion of the name: swap, so the lower name never shows.
                renameat2(pfd, tmp, pfd, name, RENAME_EXCHANGE)
                os.unlink(tmp, dir_fd=pfd)
                return
        else:
            fd = os.open(_join(tmp, OPAQUE), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=pfd)
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)

    @staticmethod
    def _lstat_at(pfd: int, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def mknod(self, rel: str, mode: int, rdev: int) -> None:
        pfd, name = self.at(rel)
        self._over_whiteout(pfd, name, lambda n: os.mknod(n, mode, rdev, dir_fd=pfd))

    def symlink(self, rel: str, target: str) -> None:
        pfd, name = self.at(rel)
        self._over_whiteout(pfd, name, lambda n: os.symlink(target, n, dir_fd=pfd))

    def link(self, src: str, dst: str) -> None:
        sfd, sname = self.at(src)
        dfd, dname = self.at(dst)
        self._over_whiteout(dfd, dname, lambda n: os.link(sname, n, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False))

    def unlink(self, rel: str) -> None:
        pfd, name = self.at(rel)
        os.unlink(name, dir_fd=pfd)

    def rmdir(self, rel: str, clear_markers: bool = True) -> None:
        """Remove directory ``rel`` with the markers it holds (bookkeeping; through a raw
        layer path they are the user's own files, and stay)."""
        if clear_markers:
            self.clear_markers(rel)
        pfd, name = self.at(rel)
        os.rmdir(name, dir_fd=pfd)
        self.forget_dirs(rel)

    def clear_markers(self, rel_dir: str) -> None:
        """Remove the whiteout and opaque markers of directory ``rel_dir``."""
        dfd = self.dirfd(rel_dir)
        if self.kernel_whiteouts:
            with os.scandir(f"/proc/self/fd/{dfd}") as it:
                for ent in it:
                    if ent.name.startswith(WH_PREFIX) or (
                        _odd(ent) and kwhiteouts.is_whiteout(ent.stat(follow_symlinks=False))
                    ):
                        os.unlink(ent.name, dir_fd=dfd)
            try:
                os.removexattr(f"/proc/self/fd/{dfd}", kwhiteouts.OPAQUE_XATTR)
            except OSError as exc:
                if exc.errno not in (errno.ENODATA, errno.ENOTSUP):
                    raise
            return
        for n in os.listdir(f"/proc/self/fd/{dfd}"):
            if n.startswith(WH_PREFIX):
                os.unlink(n, dir_fd=dfd)

    def rename(self, src: str, dst: str, exchange: bool = False) -> None:
        sfd, sname = self.at(src)
        dfd, dname = self.at(dst)
        if exchange:
            renameat2(sfd, sname, dfd, dname, RENAME_EXCHANGE)
        else:
            os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)

    def give(self, rel: str, uid: int, gid: int) -> None:
        """Hand a new entry to its creator; a set-gid parent keeps its group, as the kernel
        would have done."""
        pfd, name = self.at(rel)
        pst = os.stat(".", dir_fd=pfd)
        gid = pst.st_gid if pst.st_mode & stat.S_ISGID else gid
        os.chown(name, uid, gid, dir_fd=pfd, follow_symlinks=False)

    def make_whiteout(self, rel: str) -> None:
        """Record ``rel`` as deleted (its parent directory must exist in this layer)."""
        pfd, name = self.at(rel)
        if self.kernel_whiteouts:
            self._kernel_whiteout(pfd, name, rel)
            return
        wh = whiteout_name(name)  # fits for every valid name (litefs.fs.markers)
        make_marker(pfd, wh)
        if wh.startswith(LONG_PREFIX):
            # The hashed marker holds the full name, for whoever reads the layer.
            fd = os.open(wh, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            try:
                os.write(fd, os.fsencode(name))
            finally:
                os.close(fd)

    def _kernel_whiteout(self, pfd: int, name: str, rel: str) -> None:
        """The char device 0/0 at ``name``. Whatever is still there (the entry being
        removed) is swapped out by the kernel's RENAME_WHITEOUT in one step, as overlayfs
        does, so the lower name never shows in between; then it is removed."""
        st = self._lstat_at(pfd, name)
        if st is None:
            kwhiteouts.mknod_whiteout(pfd, name)
            return
        if kwhiteouts.is_whiteout(st):
            return
        tmp = TMP_PREFIX + "wh." + str(os.getpid())
        renameat2(pfd, name, pfd, tmp, syscalls.RENAME_WHITEOUT)
        if stat.S_ISDIR(st.st_mode):
            self.forget_dirs(rel)
            dfd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            try:
                with os.scandir(dfd) as it:
                    for ent in it:  # only bookkeeping can be left in a directory being removed
                        if ent.is_dir(follow_symlinks=False):
                            os.rmdir(ent.name, dir_fd=dfd)  # a stale copy-up temp; fails unless empty
                        else:
                            os.unlink(ent.name, dir_fd=dfd)
            finally:
                os.close(dfd)
            os.rmdir(tmp, dir_fd=pfd)
        else:
            os.unlink(tmp, dir_fd=pfd)

    def drop_whiteout(self, rel: str) -> bool:
        """Forget that ``rel`` was deleted; False if it was not recorded."""
        parent, name = split(rel)
        try:
            pfd = self.find_dir(parent)
            if pfd is None:
                return False
            if self.kernel_whiteouts:
                st = self._lstat_at(pfd, name)
                if st is None or not kwhiteouts.is_whiteout(st):
                    return False
                os.unlink(name, dir_fd=pfd)
                return True
            os.unlink(whiteout_name(name), dir_fd=pfd)
            return True
        except OSError:
            return False  # nothing recorded there that litefs could reach

    def make_opaque(self, rel_dir: str) -> None:
        if self.kernel_whiteouts:
            os.setxattr(self.xattr_path(rel_dir), kwhiteouts.OPAQUE_XATTR, b"y", follow_symlinks=False)
            return
        make_marker(self.dirfd(rel_dir), OPAQUE)

    def fsync_dir(self, rel_dir: str) -> bool:
        """Make directory ``rel_dir``'s entries durable. False if no fsync was made: it is
        not in this layer, or the store cannot fsync a directory (EINVAL, EROFS)."""
        fd = self.find_dir(rel_dir)
        if fd is None:
            return False
        dfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
        try:
            os.fsync(dfd)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EROFS):
                raise
            return False
        finally:
            os.close(dfd)

    def syncfs(self) -> None:
        """Flush the whole filesystem the layer lives on."""
        syscalls.syncfs(self.fd)

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
        self.uppers: dict[str, Layer] = {}
        for kind, where in (("tmpfs", tmpfs), ("persistent", persistent), ("localdisk", localdisk)):
            if where is not None:
                self.uppers[kind] = _open(kind, where, writable=not read_only)
        tmp = self.uppers.get("tmpfs")
        if tmp is not None:  # its format is fixed for its life (litefs.fs.kwhiteouts)
            tmp.kernel_whiteouts = kwhiteouts.has_stamp(tmp.fd)
        self.read_only = read_only

    def upper(self, kind: str | None) -> Layer | None:
        if kind is None:
            return None
        return self.uppers.get(kind)

    def lower(self, kind: str, index: int = 0) -> Layer | None:
        if kind == "image":
            return self.image if index == 0 else self.originals
        if index < len(self.sources):
            return self.sources[index]
        return None

    def all(self) -> list[Layer]:
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


def _open(name: str, where: str, writable: bool) -> Layer:
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
    return Layer(
        name=name, path=os.path.abspath(where), fd=fd, writable=writable, slot=layer_slot(name), dev=os.fstat(fd).st_dev
    )


def _opt(name: str) -> str:
    return "source" if name.startswith("source") else name
