"""The pyfuse3 adapter: FUSE requests in, merged-view answers out.

Handlers stay thin: they find the inode's view path, ask :class:`~litefs.fs.view.View` which
backing entry answers it (``resolve`` decides the rule and layers), and act on that entry
through the layer's directory fds, copying up first when a lower file is about to change.
Read-only paths answer EROFS to every change. ``OSError`` from a backing store becomes the
same errno for the caller; faults that mean a store is gone (EIO, ENOTCONN, ESTALE...) are
also logged. Kernel caches stay long-lived: the handlers invalidate what they change that the
kernel cannot know about, and :meth:`LitefsOps.refresh` invalidates what an admin names.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import logging
import math
import os
import stat
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pyfuse3
import trio

from litefs.fs import inodes as inonum
from litefs.fs.copyup import copy_up, ensure_dir
from litefs.fs.fillwatch import FillWatch, NoWatch
from litefs.fs.inodes import ROOT_INODE, InodeTable, Node
from litefs.fs.layers import (
    OPAQUE,
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    WH_PREFIX,
    Backing,
    join,
    make_marker,
    renameat2,
    split,
)
from litefs.fs.markers import LONG_PREFIX, whiteout_name
from litefs.fs.view import BACKED, CON, IMPLIED, SYNTH_DIR, SYNTH_LINK, Entry, View, child_path
from litefs.options import VALID_OPTIONS, Family, family_of
from litefs.plan import Plan
from litefs.resolve import resolve

log = logging.getLogger("litefs.fs")

NAME_MAX = 255
XATTR_ORIGIN = "user.litefs.origin"
XATTR_RULE = "user.litefs.rule"
XATTR_REFRESH = "user.litefs.refresh"
XATTR_PLAN = "user.litefs.plan"
XATTR_INODES = "user.litefs.inodes"
XATTR_DIRSYNCS = "user.litefs.dirsyncs"
#: cache timeout (s) for paths that follow their sources live (the ro family)
LIVE_TIMEOUT = 1.0
#: files at least this big are copied up in a worker thread
THREAD_COPY_BYTES = 1 << 20
#: how many file entries stay cached (directories stay while the kernel holds them)
FILE_ENTRIES = 4096
#: invalidations sent to the kernel per worker-thread hand-off
NOTIFY_BATCH = 512
#: root xattr: "1" once the last refresh's invalidations reached the kernel, else "0"
XATTR_SETTLED = "user.litefs.settled"
#: upper directories tracked for fsyncdir per layer before it falls back to syncfs
DIRTY_DIRS = 4096
#: errnos that mean a backing store is failing, not that the caller asked something wrong
FAULTS = {errno.EIO, errno.ENOTCONN, errno.ESTALE, errno.EHOSTDOWN, errno.ETIMEDOUT, errno.ENXIO}

T = TypeVar("T")
_EUID, _EGID = os.geteuid(), os.getegid()


def guarded(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Turn backing-store ``OSError`` into ``FUSEError`` (logging store faults), and any bug
    into EIO with a traceback in the log; pyfuse3 accepts nothing else from a handler."""

    @functools.wraps(fn)
    async def wrapper(self: LitefsOps, *args: Any) -> T:
        try:
            return await fn(self, *args)
        except pyfuse3.FUSEError:
            raise
        except OSError as exc:
            code = exc.errno or errno.EIO
            if code in FAULTS:
                log.error("%s: backing store fault: %s", fn.__name__, exc)
            else:
                log.debug("%s: %s", fn.__name__, exc)
            raise pyfuse3.FUSEError(code) from None
        except Exception:
            log.exception("%s failed", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


def _err(code: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(code)


def _deliver(batch: list[tuple[str, Any]]) -> None:
    """Send queued invalidations to the kernel (in a worker thread)."""
    for kind, args in batch:
        try:
            if kind == "inode":
                pyfuse3.invalidate_inode(*args)
            else:
                pyfuse3.invalidate_entry(*args)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ENOTCONN):
                log.warning("invalidate %s%s: %s", kind, args, exc)
        except Exception as exc:  # never let a stale inode stop the worker
            log.warning("invalidate %s%s: %s", kind, args, exc)


class OpenFile:
    __slots__ = ("data", "fd", "node")

    def __init__(self, node: Node, fd: int, data: bytes | None = None) -> None:
        self.node = node
        self.fd = fd
        self.data = data


class LitefsOps(pyfuse3.Operations):
    """The litefs filesystem for one mount."""

    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, view: View, cache_timeout: float = 3600.0, negative_timeout: float = 1.0) -> None:
        super().__init__()
        self.view = view
        self.layers = view.layers
        self.read_only = view.layers.read_only
        self.inodes = InodeTable(view.root())
        self.timeout = cache_timeout
        self.negative_timeout = negative_timeout
        self.files: dict[int, OpenFile] = {}
        self.dirs: dict[int, tuple[Node, list[tuple[str, Entry]] | None]] = {}
        self._next_fh = 1
        # Unbounded: a refresh of "/" queues one invalidation per cached inode, and dropping
        # any would leave the kernel serving stale attributes or pages.
        self._notify_send, self._notify_recv = trio.open_memory_channel[tuple[str, Any]](math.inf)
        #: invalidations queued / delivered so far, and the count a refresh waits for
        self._queued = 0
        self._delivered = 0
        self._refresh_ticket = 0
        self.on_plan_change: Callable[[], None] | None = None
        #: view paths that are (or are above) bind mounts laid over the view: their dentries
        #: are never invalidated, because the kernel detaches mounts on invalidated dentries
        self.pinned: set[str] = set()
        #: "major:minor" of this FUSE connection (set once mounted), to find mounts over it
        self.fuse_dev: str | None = None
        #: file entries kept (LRU); directories keep theirs while the kernel holds them
        self._file_entries: OrderedDict[int, None] = OrderedDict()
        #: upper directories whose entries changed since the last fsyncdir that covered them
        #: (None: too many to track; fsyncdir then syncs the layer's whole filesystem)
        self._dirty: dict[Backing, set[str] | None] = {}
        #: backing directory fsyncs fsyncdir issued (root xattr user.litefs.dirsyncs)
        self.dir_syncs = 0
        self._squash_warned: set[str] = set()
        #: copy-ups in progress, by view path
        self._copy_locks: dict[str, trio.Lock] = {}
        tmp = None if self.read_only else view.layers.upper("tmpfs")
        self.fill = FillWatch.for_fd("tmpfs", tmp.fd) if tmp is not None else NoWatch()

    # --- helpers --------------------------------------------------------------------------

    def _fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    def _node(self, ino: int) -> Node:
        node = self.inodes.get(ino)
        if node is None:
            raise _err(errno.ESTALE)
        return node

    def _entry(self, node: Node) -> Entry:
        e = node.entry
        if e is None:
            if node.path is None:
                raise _err(errno.ENOENT)
            e = self._locate_path(node.path)
            if e is None:
                raise _err(errno.ENOENT)
            node.entry = e
        if not e.is_dir:
            self._keep(node)
        return e

    def _keep(self, node: Node) -> None:
        """Remember a file's entry for a while; directories keep theirs (children need them)."""
        fe = self._file_entries
        fe[node.ino] = None
        fe.move_to_end(node.ino)
        if len(fe) > FILE_ENTRIES:
            old, _ = fe.popitem(last=False)
            n = self.inodes.get(old)
            if n is not None and n.entry is not None and not n.entry.is_dir:
                n.entry = None

    def _replied(self, node: Node, e: Entry) -> None:
        """The kernel has the attributes: keep only what later requests need."""
        e.st = None
        if not e.is_dir:
            self._keep(node)

    def _locate_path(self, path: str) -> Entry | None:
        """Locate a path from the root, reusing entries the table already holds."""
        node = self.inodes.at(path)
        if node is not None and node.entry is not None:
            return node.entry
        if path == "/":
            e = self.view.root()
        else:
            parent = path.rsplit("/", 1)[0] or "/"
            pe = self._locate_path(parent)
            if pe is None or not pe.is_dir:
                return None
            e = self.view.locate(path, pe)
        if node is not None:
            node.entry = e
        return e

    def _attr(self, node: Node, e: Entry) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        st = e.st
        if st is None and e.kind in (BACKED, CON) and e.layer is not None:
            st = e.st = e.layer.lstat(e.rel)
            if st is None:
                raise _err(errno.ENOENT)
        if e.kind in (SYNTH_DIR, IMPLIED):
            st = self.view.synth_st
        if e.kind == SYNTH_LINK:
            a.st_mode = stat.S_IFLNK | 0o777
            a.st_nlink = 1
            a.st_size = len(e.target)
        else:
            assert st is not None
            a.st_mode = st.st_mode
            a.st_nlink = st.st_nlink
            a.st_uid = st.st_uid
            a.st_gid = st.st_gid
            if e.raw and e.rel == "." and e.layer is not None and e.layer.writable:
                # /.statelite/tmpfs and /.statelite/persistent are the raw writable layers:
                # there no rule, whiteout or copy-up applies, so a plain user could plant
                # symlinks and markers or reach files the view hides. Only root may traverse
                # them (xCAT shows them to admins): root-owned 0700, whatever the store has.
                a.st_mode = stat.S_IFDIR | 0o700
                a.st_uid = a.st_gid = 0
            a.st_rdev = st.st_rdev
            a.st_size = sum(p[2].st_size for p in e.parts) if e.kind == CON else st.st_size
            a.st_blksize = st.st_blksize
            a.st_blocks = st.st_blocks
            a.st_atime_ns = st.st_atime_ns
            a.st_mtime_ns = st.st_mtime_ns
            a.st_ctime_ns = st.st_ctime_ns
        a.st_ino = node.ino
        a.generation = 0
        # ro paths follow their sources live: the kernel asks again after a second.
        t = LIVE_TIMEOUT if _is_live(e) else self.timeout
        a.entry_timeout = t
        a.attr_timeout = t
        return a

    def _restat(self, node: Node) -> Entry:
        """The node's entry with fresh attributes from its backing layer."""
        e = self._entry(node)
        if e.kind == BACKED and e.layer is not None:
            st = e.layer.lstat(e.rel)
            if st is None:
                node.entry = None
                e = self._entry(node)
            else:
                e.st = st
        return e

    def _check_name(self, name: str, parent: Entry) -> None:
        if len(os.fsencode(name)) > NAME_MAX:
            raise _err(errno.ENAMETOOLONG)
        if name.startswith(WH_PREFIX) and not parent.raw:
            # Reserved for whiteout bookkeeping in upper layers.
            raise _err(errno.EINVAL)

    def _writable_res(self, path: str, parent: Entry) -> tuple[Any, Backing]:
        """For a change at ``path``: (resolution, upper layer), or EROFS."""
        if self.read_only:
            raise _err(errno.EROFS)
        if parent.raw:
            if parent.layer is None or not parent.layer.writable:
                raise _err(errno.EROFS)
            return None, parent.layer
        if parent.kind == SYNTH_DIR:
            raise _err(errno.EROFS)
        res = resolve(self.view.plan, path)
        up = self.layers.upper(res.upper)
        if up is None:
            if res.upper is not None:
                log.error("%s: rule %s needs the %s layer, which this mount has none of", path, res.rule.path, res.upper)
            raise _err(errno.EROFS)
        return res, up

    # --- inode numbers (the scheme is in litefs.fs.inodes) --------------------------------

    def _ident(self, e: Entry) -> tuple[tuple[int, int, int] | None, int, bool]:
        """(backing identity, natural number, several links in a lower layer?) of ``e``."""
        if e.kind != BACKED or e.layer is None:
            return None, inonum.path_ino(e.path), False
        st = e.st
        if st is None:
            st = e.st = e.layer.lstat(e.rel)
            if st is None:
                raise _err(errno.ENOENT)
        slot = e.layer.slot | (inonum.RAW_BIT if e.raw else 0)
        is_dir = stat.S_ISDIR(st.st_mode)
        multi = st.st_nlink > 1 and not e.in_upper and not e.raw and not is_dir
        natural = inonum.backing_ino(slot, e.layer.dev, st.st_dev, st.st_ino)
        if multi and e.res is not None and e.res.upper is not None:
            # An image hard link where writes may copy it up: FUSE's open names only the node,
            # not the name the caller used, so one node for all names could not tell which
            # name to copy up. Each name is a node of its own (a number from the file and the
            # path, stable across remounts), as the names become after a copy-up anyway.
            natural, multi = inonum.salted_ino(natural, e.path), False
        if is_dir and e.in_upper and not e.raw and not e.cut and e.res is not None:
            origin = self._merged_dir_ino(e)
            if origin is not None:
                natural = origin
        return (slot, st.st_dev, st.st_ino), natural, multi

    def _merged_dir_ino(self, e: Entry) -> int | None:
        """A merged directory (an upper directory, not opaque, over a lower one) has the
        lower one's number, so copying a directory up never changes its number, across
        remounts too. Files cannot use that rule: from the layers alone a copied-up file
        looks just like a new file made after the lower one was deleted (overlayfs records
        the origin in an xattr; litefs's stores may have none)."""
        assert e.res is not None
        for layer in e.res.lowers:
            b = self.layers.lower(layer.kind, layer.index)
            if b is None:
                continue
            lst = b.lstat(e.rel)
            if lst is None:
                continue
            if not stat.S_ISDIR(lst.st_mode):
                return None
            return inonum.backing_ino(b.slot, b.dev, lst.st_dev, lst.st_ino)
        if e.path in self.view.implied:
            return inonum.path_ino(e.path)
        return None

    def _bind(self, path: str, e: Entry) -> Node:
        """The node for ``path`` answered by ``e``, one lookup more: the number follows the
        backing file, so every name of a hard link gets the same node."""
        ident, natural, multi = self._ident(e)
        origin = self._origin(path, e, ident)
        ino = self.inodes.number(path, ident, natural, e.is_dir, origin)
        return self.inodes.ref(path, e, ino, multi, ident, borrowed=origin is not None and ino == origin)

    def _origin(self, path: str, e: Entry, ident: tuple[int, int, int] | None) -> int | None:
        """The lower number an upper regular file's origin xattr names (it was copied up in
        an earlier mount), or None. At most one getxattr, and none when this mount numbered
        the file already (an alias, or the node the kernel holds at ``path``)."""
        b = e.layer
        if ident is None or b is None or e.raw or not e.in_upper or not b.origin_xattrs:
            return None
        if e.st is None or not stat.S_ISREG(e.st.st_mode) or ident in self.inodes.aliases:
            return None
        held = self.inodes.at(path)
        if held is not None and held.ident == ident:
            return None
        layer, pfd, p = self._xattr_path(e)
        try:
            raw = os.getxattr(p, inonum.ORIGIN_XATTR, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                b.origin_xattrs = False  # this store has none: never ask it again
            return None
        finally:
            layer.release(pfd)
        return inonum.decode_origin(raw)

    def _keep_number(self, node: Node, e: Entry) -> None:
        """``node`` is now answered by ``e`` (a copy-up): its number stays for this mount."""
        if node.multi or node.ino == ROOT_INODE:
            return
        ident, _natural, _multi = self._ident(e)
        if ident is not None:
            self.inodes.aliases[ident] = node.ino

    def _ensure_dir(self, up: Backing, rel_dir: str) -> None:
        """ensure_dir(), and the directories it copies up keep the numbers they had."""
        made: list[tuple[str, int]] = []

        def meta_of(rel: str) -> os.stat_result | None:
            path = "/" + rel
            node = self.inodes.at(path)
            e = self._locate_path(path)
            if node is not None:
                made.append((rel, node.ino))
            elif e is not None:
                made.append((rel, self.inodes.number(path, *self._ident(e)[:2], True)))
            return self._meta_of(rel)

        ensure_dir(up, rel_dir, meta_of)
        for rel, ino in made:
            self._touched(up, split(rel)[0])
            st = up.lstat(rel)
            if st is not None and ino != ROOT_INODE:
                self.inodes.aliases[(up.slot, st.st_dev, st.st_ino)] = ino

    def _meta_of(self, rel: str) -> os.stat_result | None:
        e = self._locate_path("/" + rel)
        if e is None or e.kind != BACKED or e.layer is None:
            return None
        return e.st or e.layer.lstat(e.rel)

    async def _copy_up(self, node: Node, e: Entry, truncate_to: int | None = None) -> Entry:
        """Bring ``e`` into its upper layer (no-op if it is there); return the new entry.

        One copy-up per path at a time. A large file is copied in a worker thread, so the
        trio loop (invalidations, signals) keeps running; with more than one pyfuse3 worker
        (``MountConfig.workers``) other requests are answered meanwhile too."""
        if e.raw or e.in_upper:
            return e
        if node.path is None:
            raise _err(errno.ENOENT)
        path = node.path
        lock = self._copy_locks.get(path)
        if lock is None:
            lock = self._copy_locks[path] = trio.Lock()
        try:
            async with lock:
                node.entry = None
                e = self._entry(node)  # someone may have copied it up while we waited
                if e.raw or e.in_upper:
                    return e
                await self._copy_up_locked(node, path, e, truncate_to)
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._copy_locks.pop(path, None)
        node.entry = None
        e = self._entry(node)
        self._keep_number(node, e)
        return e

    async def _copy_up_locked(self, node: Node, path: str, e: Entry, truncate_to: int | None) -> None:
        parent_path = path.rsplit("/", 1)[0] or "/"
        _res, up = self._writable_res(path, self._locate_path(parent_path) or e)
        rel = e.rel
        if e.kind == SYNTH_LINK:
            raise _err(errno.EPERM)
        if e.is_dir:
            self._ensure_dir(up, rel)
            return
        self._ensure_dir(up, split(rel)[0])
        assert e.layer is not None
        st = e.layer.lstat(e.rel)  # fresh: metadata may have changed since the lookup
        if st is None:
            raise _err(errno.ENOENT)
        sources = [(b, r) for b, r, _st in e.parts] if e.kind == CON else [(e.layer, e.rel)]
        origin = None
        if e.kind == BACKED and stat.S_ISREG(st.st_mode) and up.origin_xattrs:
            # The number the lower file shows (not a salted or hashed one: those are refused)
            # is recorded on the copy, so it keeps that number after a remount.
            origin = inonum.encode_origin(self._ident(e)[1])
        args = (up, rel, st, sources, truncate_to, (e.layer, e.rel), origin)
        self._touched(up, split(rel)[0])
        if stat.S_ISREG(st.st_mode) and truncate_to != 0 and st.st_size >= THREAD_COPY_BYTES:
            log.info("copy-up of %s (%d bytes) to the %s layer", path, st.st_size, up.name)
            await trio.to_thread.run_sync(copy_up, *args)
        else:
            copy_up(*args)

    async def _path_lock(self, path: str) -> None:
        """Wait for a copy-up of ``path`` in progress (a change must not race it)."""
        lock = self._copy_locks.get(path)
        if lock is not None:
            async with lock:
                pass

    def _lower_has(self, path: str, e: Entry | None, parent: Entry) -> bool:
        """True if some lower layer would show ``path`` once the upper entry is gone."""
        if parent.raw or (e is not None and e.raw):
            return False
        res = resolve(self.view.plan, path)
        if parent.cut and parent.res is res:
            return False
        rel = path[1:]
        for layer in res.lowers:
            b = self.layers.lower(layer.kind, layer.index)
            if b is not None and b.exists(rel):
                return True
        return res.rule is not None and res.rule.path == path == "/etc/mtab"

    def _whiteout(self, up: Backing, rel: str) -> None:
        parent, name = split(rel)
        wh = whiteout_name(name)  # fits for every valid name (litefs.fs.markers)
        self._ensure_dir(up, parent)
        pfd = up.dirfd(parent)
        try:
            make_marker(pfd, wh)
            if wh.startswith(LONG_PREFIX):
                # The hashed marker holds the full name, for whoever reads the layer.
                fd = os.open(wh, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
                try:
                    os.write(fd, os.fsencode(name))
                finally:
                    os.close(fd)
        finally:
            up.release(pfd)
        self._touched(up, parent)

    def _drop_whiteout(self, up: Backing, rel: str) -> bool:
        parent, name = split(rel)
        try:
            pfd = up.dirfd(parent)
        except OSError:
            return False
        try:
            os.unlink(whiteout_name(name), dir_fd=pfd)
            return True
        except FileNotFoundError:
            return False
        finally:
            up.release(pfd)

    def _own(self, up: Backing, rel: str, ctx: pyfuse3.RequestContext) -> None:
        """Give a new entry to the caller (the daemon runs as root); a set-gid parent keeps
        its group, as the kernel would have done."""
        if ctx.uid == _EUID and ctx.gid == _EGID:
            return  # created by us as the caller would have been
        parent, name = split(rel)
        pfd = up.dirfd(parent)
        try:
            pst = os.stat(".", dir_fd=pfd)
            gid = pst.st_gid if pst.st_mode & stat.S_ISGID else ctx.gid
            os.chown(name, ctx.uid, gid, dir_fd=pfd, follow_symlinks=False)
        except PermissionError as exc:
            # A store exported with root_squash: the entry exists, owned by the squashed
            # user. Failing now would leave it behind half-made; say so once instead.
            if up.name not in self._squash_warned:
                self._squash_warned.add(up.name)
                log.warning("%s layer refuses chown (root_squash?): new entries keep its owner: %s", up.name, exc)
        finally:
            up.release(pfd)

    def _new_entry(self, parent: Node, name: str) -> tuple[Node, pyfuse3.EntryAttributes]:
        path = child_path(parent.path or "/", name)
        e = self.view.locate(path, self._entry(parent))
        if e is None:
            raise _err(errno.EIO)
        node = self._bind(path, e)
        a = self._attr(node, e)
        self._replied(node, e)
        return node, a

    def _prepare_create(self, parent_ino: int, name: str) -> tuple[Node, Entry, str, Backing, str, bool]:
        pnode, pe, path, up, rel, had_wh, _res = self._prepare_create_res(parent_ino, name)
        return pnode, pe, path, up, rel, had_wh

    def _prepare_create_res(self, parent_ino: int, name: str) -> tuple[Node, Entry, str, Backing, str, bool, Any]:
        """Common part of create/mkdir/mknod/symlink/link: checks, upper parent directory.
        Returns (parent node, parent entry, view path, upper layer, upper rel, whiteout?)."""
        pnode = self._node(parent_ino)
        pe = self._entry(pnode)
        if not pe.is_dir:
            raise _err(errno.ENOTDIR)
        self._check_name(name, pe)
        path = child_path(pnode.path or "/", name)
        res, up = self._writable_res(path, pe)
        if self.view.locate(path, pe) is not None:
            raise _err(errno.EEXIST)
        rel = join(pe.rel, name) if pe.raw else path[1:]
        had_whiteout = False
        if not pe.raw:
            self._ensure_dir(up, split(rel)[0])
            had_whiteout = up.whiteout(rel)
        return pnode, pe, path, up, rel, had_whiteout, res

    def _queue(self, kind: str, *args: Any) -> None:
        self._notify_send.send_nowait((kind, args))
        self._queued += 1

    @property
    def settled(self) -> bool:
        """Whether every invalidation of the last refresh has reached the kernel."""
        return self._delivered >= self._refresh_ticket

    async def notifier(self) -> None:
        """Send kernel cache invalidations from a worker thread: doing it inside a request
        handler could deadlock on the directory lock the kernel holds for that request.
        Whatever is queued at once goes in one thread hand-off (a refresh of "/" queues
        one per cached inode)."""
        async for first in self._notify_recv:
            batch = [first]
            while len(batch) < NOTIFY_BATCH:
                try:
                    batch.append(self._notify_recv.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                await trio.to_thread.run_sync(_deliver, batch)
            finally:
                self._delivered += len(batch)

    # --- lookups and attributes -----------------------------------------------------------

    @guarded
    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        pnode = self._node(parent_inode)
        sname = os.fsdecode(name)
        if sname == ".":
            path = pnode.path or ""
        elif sname == "..":
            path = (pnode.path or "/").rsplit("/", 1)[0] or "/"
        else:
            path = None
        if path is not None:
            e = self._locate_path(path) if path else None
            if e is None:
                raise _err(errno.ENOENT)
            node = self._bind(path, e)
            a = self._attr(node, e)
            self._replied(node, e)
            return a
        pe = self._entry(pnode)
        if not pe.is_dir:
            raise _err(errno.ENOTDIR)
        if len(name) > NAME_MAX:
            raise _err(errno.ENAMETOOLONG)
        path = child_path(pnode.path or "/", sname)
        e = None if sname.startswith(WH_PREFIX) and not pe.raw else self.view.locate(path, pe)
        if e is None:
            a = pyfuse3.EntryAttributes()
            a.st_ino = 0
            a.entry_timeout = self.negative_timeout
            return a
        node = self._bind(path, e)
        a = self._attr(node, e)
        self._replied(node, e)
        return a

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for ino, n in inode_list:
            self.inodes.forget(ino, n)

    @guarded
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        if node.path is None:
            return self._detached_attr(node, self._open_fd_of(node, None))
        e = self._restat(node)
        a = self._attr(node, e)
        e.st = None
        return a

    @guarded
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        of = self.files.get(fh) if fh is not None else None
        if node.path is None:
            return self._setattr_detached(node, attr, fields, of)
        e = self._entry(node)
        if e.kind in (SYNTH_DIR, SYNTH_LINK):
            raise _err(errno.EPERM)
        if not e.raw:
            parent = self._locate_path((node.path or "/").rsplit("/", 1)[0] or "/")
            self._writable_res(node.path or "/", parent or e)
            trunc = attr.st_size if fields.update_size and attr.st_size == 0 else None
            e = await self._copy_up(node, e, truncate_to=trunc)
        elif self.read_only or not (e.layer and e.layer.writable):
            raise _err(errno.EROFS)
        assert e.layer is not None
        fd_ok = of is not None and of.fd >= 0 and of.data is None
        parent_rel, name = split(e.rel)
        pfd = e.layer.dirfd(parent_rel)
        try:
            # Pin the inode once (O_PATH|O_NOFOLLOW) and act only on that fd: the name may be
            # swapped for a symlink or another file (through the raw /.statelite path) at any
            # moment, and a re-resolving chmod(name) would follow it as root.
            pin = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        finally:
            e.layer.release(pfd)
        try:
            self._setattr_pinned(pin, attr, fields, of.fd if fd_ok and of is not None else None, ctx)
        finally:
            os.close(pin)
        return self._attr(node, self._restat(node))

    def _setattr_pinned(
        self,
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
        proc = f"/proc/self/fd/{pin}"
        if fields.update_size:
            if open_fd is not None:
                os.ftruncate(open_fd, attr.st_size)
            else:
                if stat.S_ISDIR(st.st_mode):
                    raise _err(errno.EISDIR)
                if not stat.S_ISREG(st.st_mode):
                    raise _err(errno.EINVAL)  # never open a fifo or device: it may block
                if not may_access(st, ctx, os.W_OK):
                    raise _err(errno.EACCES)
                # Reopening through /proc reaches the pinned inode itself, not a name.
                fd = os.open(proc, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.ftruncate(fd, attr.st_size)
                finally:
                    os.close(fd)
        if (fields.update_uid or fields.update_gid) and not owner:
            raise _err(errno.EPERM)
        if fields.update_uid or fields.update_gid:
            uid = attr.st_uid if fields.update_uid else -1
            gid = attr.st_gid if fields.update_gid else -1
            fchown_empty(pin, uid, gid)
        if fields.update_mode and not stat.S_ISLNK(st.st_mode):
            if not owner:
                raise _err(errno.EPERM)
            # chmod of the /proc magic link changes the pinned inode (what glibc's
            # fchmodat(AT_SYMLINK_NOFOLLOW) does); it is not a symlink, checked above.
            os.chmod(proc, stat.S_IMODE(attr.st_mode))
        if fields.update_atime or fields.update_mtime:
            if not owner and not may_access(st, ctx, os.W_OK):
                raise _err(errno.EPERM)
            at = attr.st_atime_ns if fields.update_atime else st.st_atime_ns
            mt = attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns
            if stat.S_ISLNK(st.st_mode):
                utimens_empty(pin, at, mt)
            else:
                os.utime(proc, ns=(at, mt))

    def _open_fd_of(self, node: Node, of: OpenFile | None) -> int:
        if of is not None and of.fd >= 0:
            return of.fd
        for f in self.files.values():
            if f.node is node and f.fd >= 0:
                return f.fd
        raise _err(errno.ENOENT)

    def _setattr_detached(
        self, node: Node, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields, of: OpenFile | None
    ) -> pyfuse3.EntryAttributes:
        """setattr on a file that was unlinked while open: act on the open descriptor."""
        fd = self._open_fd_of(node, of)
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
        return self._detached_attr(node, fd)

    def _detached_attr(self, node: Node, fd: int) -> pyfuse3.EntryAttributes:
        e = Entry("", BACKED, None, st=os.fstat(fd))
        return self._attr(node, e)

    @guarded
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        e = self._entry(self._node(inode))
        if e.kind == SYNTH_LINK:
            return os.fsencode(e.target)
        if e.kind != BACKED or e.layer is None or not e.is_link:
            raise _err(errno.EINVAL)
        parent, name = split(e.rel)
        pfd = e.layer.dirfd(parent)
        try:
            return os.fsencode(os.readlink(name, dir_fd=pfd))
        finally:
            e.layer.release(pfd)

    # --- directories ----------------------------------------------------------------------

    @guarded
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self._node(inode)
        e = self._entry(node)
        if not e.is_dir:
            raise _err(errno.ENOTDIR)
        fh = self._fh()
        self.dirs[fh] = (node, None)
        return fh

    @guarded
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        node, listing = self.dirs[fh]
        if listing is None or start_id == 0:
            e = self._entry(node)
            listing = self.view.entries(e)
            self.dirs[fh] = (node, listing)
        base = node.path or "/"
        for i in range(start_id, len(listing)):
            name, ce = listing[i]
            path = child_path(base, name)
            child = self._bind(path, ce)
            attr = self._attr(child, ce)
            if not pyfuse3.readdir_reply(token, os.fsencode(name), attr, i + 1):
                self.inodes.forget(child.ino, 1)
                return
            # Listings touch many files: keep only directories' entries (files are located
            # again when opened), so a walk does not churn the file-entry LRU.
            ce.st = None
            if not ce.is_dir and child.ino not in self._file_entries:
                child.entry = None

    async def releasedir(self, fh: int) -> None:
        self.dirs.pop(fh, None)

    @guarded
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        """Make the directory's entries durable where the store can: fsync its backing
        directory in the layer its writes go to, and every directory above it whose entries
        litefs changed since (directories a copy-up or create made on the way)."""
        node, _listing = self.dirs[fh]
        e = self._entry(node)
        if e.raw:
            up = e.layer if e.layer is not None and e.layer.writable else None
            rel = e.rel
        else:
            up = self.layers.upper(resolve(self.view.plan, node.path or "/").upper) if e.res else None
            rel = (node.path or "/")[1:] or "."
        if up is None or self.read_only:
            return
        dirty = self._dirty.get(up, set())
        if dirty is None:
            await trio.to_thread.run_sync(_syncfs, up.fd)
            self._dirty[up] = set()
            self.dir_syncs += 1
            return
        chain = [rel]
        p = rel
        while p != ".":
            p = split(p)[0]
            if p in dirty:
                chain.append(p)
        for d in chain:  # the directory itself first, then upwards
            dirty.discard(d)
            fd = up.find_dir(d)
            if fd is None:
                continue  # nothing of it in this layer (yet): nothing to make durable
            dfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
            try:
                os.fsync(dfd)
                self.dir_syncs += 1
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.EROFS):
                    raise
            finally:
                os.close(dfd)

    def _touched(self, up: Backing, rel_dir: str) -> None:
        """Entries of upper directory ``rel_dir`` changed (for fsyncdir)."""
        dirty = self._dirty.get(up, set())
        if dirty is None:
            return
        dirty.add(rel_dir)
        # Bounded: past this many, fsyncdir falls back to syncfs of the layer.
        self._dirty[up] = None if len(dirty) > DIRTY_DIRS else dirty

    @guarded
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        sname = os.fsdecode(name)
        pnode, _pe, _path, up, rel, had_wh = self._prepare_create(parent_inode, sname)
        parent, leaf = split(rel)
        pfd = up.dirfd(parent)
        up.created_dir()
        try:
            if had_wh:
                # The name hides deleted lower content: the new directory must not merge with it.
                tmp = WH_PREFIX + ".wh..tmp.mkdir." + str(os.getpid())
                os.mkdir(tmp, stat.S_IMODE(mode), dir_fd=pfd)
                fd = os.open(join(tmp, OPAQUE), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=pfd)
                os.close(fd)
                os.rename(tmp, leaf, src_dir_fd=pfd, dst_dir_fd=pfd)
            else:
                os.mkdir(leaf, stat.S_IMODE(mode), dir_fd=pfd)
        finally:
            up.release(pfd)
        return self._finish_create(pnode, sname, up, rel, ctx, had_wh)

    def _finish_create(
        self, pnode: Node, sname: str, up: Backing, rel: str, ctx: pyfuse3.RequestContext, had_wh: bool
    ) -> pyfuse3.EntryAttributes:
        """After a name was made in the upper layer: give it to the caller, drop the whiteout
        it replaces, and hand the kernel its entry."""
        self._own(up, rel, ctx)
        if had_wh:
            self._drop_whiteout(up, rel)
        self._touched(up, split(rel)[0])
        return self._new_entry(pnode, sname)[1]

    @guarded
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        sname = os.fsdecode(name)
        pnode = self._node(parent_inode)
        pe = self._entry(pnode)
        path = child_path(pnode.path or "/", sname)
        e = self.view.locate(path, pe)
        if e is None:
            raise _err(errno.ENOENT)
        if not e.is_dir:
            raise _err(errno.ENOTDIR)
        _res, up = self._writable_res(path, pe)
        if e.kind == SYNTH_DIR or (e.raw and e.rel == "."):
            raise _err(errno.EBUSY)
        for child in self.view.names(e):
            if self.view.locate(child_path(path, child), e) is not None:
                raise _err(errno.ENOTEMPTY)
        lower = self._lower_has(path, e, pe) or e.kind == IMPLIED
        rel = e.rel
        if lower:
            self._whiteout(up, rel)
        if e.in_upper or e.raw:
            parent, leaf = split(rel)
            pfd = up.dirfd(parent)
            try:
                if not e.raw:
                    dfd = up.dirfd(rel)
                    try:
                        for n in os.listdir(f"/proc/self/fd/{dfd}"):
                            if n.startswith(WH_PREFIX):
                                os.unlink(n, dir_fd=dfd)
                    finally:
                        up.release(dfd)
                os.rmdir(leaf, dir_fd=pfd)
            finally:
                up.release(pfd)
            up.forget_dirs(rel)
            self._touched(up, parent)
        self.inodes.detach(path)

    # --- files ----------------------------------------------------------------------------

    def _open_backing(self, e: Entry, flags: int) -> int:
        assert e.layer is not None
        parent, name = split(e.rel)
        pfd = e.layer.dirfd(parent)
        try:
            # O_TRUNC stays: libfuse negotiates atomic_o_trunc, so the open itself truncates.
            flags &= ~(os.O_CREAT | os.O_EXCL | os.O_NOCTTY)
            return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        finally:
            e.layer.release(pfd)

    @guarded
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self._node(inode)
        return await self._open_node(node, self._entry(node), flags)

    async def _open_node(self, node: Node, e: Entry, flags: int) -> pyfuse3.FileInfo:
        if e.is_dir:
            raise _err(errno.EISDIR)
        if e.kind == SYNTH_LINK:
            raise _err(errno.ELOOP)
        wants_write = (flags & os.O_ACCMODE) != os.O_RDONLY or flags & os.O_TRUNC
        if wants_write:
            if e.raw:
                if self.read_only or not (e.layer and e.layer.writable):
                    raise _err(errno.EROFS)
            else:
                parent = self._locate_path((node.path or "/").rsplit("/", 1)[0] or "/")
                self._writable_res(node.path or "/", parent or e)
                e = await self._copy_up(node, e, truncate_to=0 if flags & os.O_TRUNC else None)
        fh = self._fh()
        if e.kind == CON:
            data = b"".join(_read_all(b, r) for b, r, _st in e.parts)
            self.files[fh] = OpenFile(node, -1, data)
        else:
            self.files[fh] = OpenFile(node, self._open_backing(e, flags))
        return pyfuse3.FileInfo(fh=fh, keep_cache=not _is_live(e))

    @guarded
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        sname = os.fsdecode(name)
        pnode = self._node(parent_inode)
        path = child_path(pnode.path or "/", sname)
        existing = self.view.locate(path, self._entry(pnode))
        if existing is not None:
            # The kernel's negative entry was stale (someone created it underneath).
            if flags & os.O_EXCL:
                raise _err(errno.EEXIST)
            # The kernel checked nothing on this name (it thought it absent): check the
            # caller's access to what is there now, as open(2) would have.
            self._check_open_access(existing, flags, ctx)
            node = self._bind(path, existing)
            try:
                return await self._open_node(node, existing, flags), self._attr(node, existing)
            except BaseException:
                self.inodes.forget(node.ino, 1)
                raise
        pnode, pe, path, up, rel, had_wh, res = self._prepare_create_res(parent_inode, sname)
        self.fill.tick()
        parent, leaf = split(rel)
        pfd = up.dirfd(parent)
        try:
            fl = (flags & ~os.O_NOCTTY) | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(leaf, fl, stat.S_IMODE(mode), dir_fd=pfd)
        finally:
            up.release(pfd)
        try:
            self._own(up, rel, ctx)
            if had_wh:
                self._drop_whiteout(up, rel)
            self._touched(up, parent)
            e = Entry(path, BACKED, res, up, rel, os.fstat(fd), raw=pe.raw)
            node = self._bind(path, e)
            attr = self._attr(node, e)
        except BaseException:
            os.close(fd)
            raise
        fh = self._fh()
        self.files[fh] = OpenFile(node, fd)
        return pyfuse3.FileInfo(fh=fh, keep_cache=True), attr

    def _check_open_access(self, e: Entry, flags: int, ctx: pyfuse3.RequestContext) -> None:
        if e.is_dir:
            raise _err(errno.EISDIR)
        st = e.st
        if e.kind == BACKED and e.layer is not None:
            st = e.layer.lstat(e.rel)
        if st is None:
            if e.kind == SYNTH_LINK:
                raise _err(errno.ELOOP)
            raise _err(errno.EACCES)  # fail closed: nothing to check against
        acc = flags & os.O_ACCMODE
        want = 0
        if acc in (os.O_RDONLY, os.O_RDWR):
            want |= os.R_OK
        if acc in (os.O_WRONLY, os.O_RDWR) or flags & os.O_TRUNC:
            want |= os.W_OK
        if not may_access(st, ctx, want):
            raise _err(errno.EACCES)

    @guarded
    async def read(self, fh: int, off: int, size: int) -> bytes:
        of = self.files[fh]
        if of.data is not None:
            return of.data[off : off + size]
        return os.pread(of.fd, size, off)

    @guarded
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        of = self.files[fh]
        if of.data is not None:
            raise _err(errno.EBADF)
        self.fill.tick()
        return os.pwrite(of.fd, buf, off)

    async def release(self, fh: int) -> None:
        of = self.files.pop(fh, None)
        if of is not None and of.fd >= 0:
            try:
                os.close(of.fd)
            except OSError as exc:
                log.error("close: %s", exc)

    @guarded
    async def fsync(self, fh: int, datasync: bool) -> None:
        of = self.files[fh]
        if of.fd >= 0:
            (os.fdatasync if datasync else os.fsync)(of.fd)

    @guarded
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._make_leaf(
            parent_inode, name, ctx, lambda leaf, pfd: os.mknod(leaf, mode, rdev, dir_fd=pfd)
        )

    @guarded
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        text = os.fsdecode(target)
        return self._make_leaf(
            parent_inode, name, ctx, lambda leaf, pfd: os.symlink(text, leaf, dir_fd=pfd)
        )

    def _make_leaf(
        self,
        parent_inode: int,
        name: bytes,
        ctx: pyfuse3.RequestContext,
        make: Callable[[str, int], None],
    ) -> pyfuse3.EntryAttributes:
        """Create a non-directory name in the upper layer with ``make(leaf, parent_fd)``,
        owned by the caller, replacing a whiteout of that name (mknod, symlink)."""
        sname = os.fsdecode(name)
        pnode, _pe, _path, up, rel, had_wh = self._prepare_create(parent_inode, sname)
        parent, leaf = split(rel)
        pfd = up.dirfd(parent)
        try:
            make(leaf, pfd)
        finally:
            up.release(pfd)
        return self._finish_create(pnode, sname, up, rel, ctx, had_wh)

    @guarded
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        sname = os.fsdecode(new_name)
        node = self._node(inode)
        e = self._entry(node)
        if e.is_dir:
            raise _err(errno.EPERM)
        pnode, _pe, _path, up, rel, had_wh = self._prepare_create(new_parent_inode, sname)
        src_up = e.layer if e.raw else self.layers.upper(resolve(self.view.plan, node.path or "/").upper)
        if src_up is not up:
            raise _err(errno.EXDEV)
        e = await self._copy_up(node, e)
        sp, sn = split(e.rel)
        dp, dn = split(rel)
        sfd = up.dirfd(sp)
        dfd = up.dirfd(dp)
        try:
            os.link(sn, dn, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
        finally:
            up.release(sfd)
            up.release(dfd)
        if had_wh:
            self._drop_whiteout(up, rel)
        self._touched(up, dp)
        self._queue("inode", node.ino, True)
        return self._new_entry(pnode, sname)[1]

    @guarded
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        sname = os.fsdecode(name)
        pnode = self._node(parent_inode)
        pe = self._entry(pnode)
        path = child_path(pnode.path or "/", sname)
        await self._path_lock(path)
        e = self.view.locate(path, pe)
        if e is None:
            raise _err(errno.ENOENT)
        if e.is_dir:
            raise _err(errno.EISDIR)
        _res, up = self._writable_res(path, pe)
        if self._lower_has(path, e, pe):
            self._whiteout(up, e.rel)
        if e.in_upper or e.raw:
            parent, leaf = split(e.rel)
            pfd = up.dirfd(parent)
            try:
                os.unlink(leaf, dir_fd=pfd)
            finally:
                up.release(pfd)
            self._touched(up, parent)
            # Other names of a hard link share this node: the kernel drops its nlink itself.
        self.inodes.detach(path)

    @guarded
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        old_name, new_name = os.fsdecode(name_old), os.fsdecode(name_new)
        pold = self._node(parent_inode_old)
        pnew = self._node(parent_inode_new)
        peo, pen = self._entry(pold), self._entry(pnew)
        self._check_name(new_name, pen)
        old = child_path(pold.path or "/", old_name)
        new = child_path(pnew.path or "/", new_name)
        await self._path_lock(old)
        await self._path_lock(new)
        src = self.view.locate(old, peo)
        if src is None:
            raise _err(errno.ENOENT)
        dst = self.view.locate(new, pen)
        _r1, up = self._writable_res(old, peo)
        _r2, up2 = self._writable_res(new, pen)
        if up is not up2 or src.raw != pen.raw:
            raise _err(errno.EXDEV)
        if flags & RENAME_NOREPLACE and dst is not None:
            raise _err(errno.EEXIST)
        exchange = bool(flags & RENAME_EXCHANGE)
        if exchange and dst is None:
            raise _err(errno.ENOENT)
        if src.is_dir and not src.raw and self._dir_has_lower(old, src, peo):
            raise _err(errno.EXDEV)
        if dst is not None and not exchange:
            if dst.is_dir and not src.is_dir:
                raise _err(errno.EISDIR)
            if src.is_dir and not dst.is_dir:
                raise _err(errno.ENOTDIR)
            if dst.is_dir:
                for child in self.view.names(dst):
                    if self.view.locate(child_path(new, child), dst) is not None:
                        raise _err(errno.ENOTEMPTY)
        if exchange and dst is not None and dst.is_dir and not dst.raw and self._dir_has_lower(new, dst, pen):
            raise _err(errno.EXDEV)
        src_node = self.inodes.at(old)
        src = await self._copy_up(src_node, src) if src_node is not None else await self._copy_up_path(old, src)
        if exchange and dst is not None:
            dst_node = self.inodes.at(new)
            dst = await self._copy_up(dst_node, dst) if dst_node is not None else await self._copy_up_path(new, dst)
        src_lower = self._lower_has(old, src, peo)
        dst_lower = self._lower_has(new, dst, pen)
        drel = join(pen.rel, new_name) if pen.raw else new[1:]
        if not pen.raw:
            self._ensure_dir(up, split(drel)[0])
        sp, sn = split(src.rel)
        dp, dn = split(drel)
        if dst is not None and dst.in_upper and dst.is_dir and not exchange:
            dfd = up.dirfd(drel)
            try:
                for n in os.listdir(f"/proc/self/fd/{dfd}"):
                    if n.startswith(WH_PREFIX):
                        os.unlink(n, dir_fd=dfd)
            finally:
                up.release(dfd)
        if src.is_dir and dst_lower and not exchange and not src.raw:
            # A directory moved over a name with lower content must not merge with it.
            dfd = up.dirfd(src.rel)
            try:
                make_marker(dfd, OPAQUE)
            finally:
                up.release(dfd)
        if src.is_dir:
            up.forget_dirs(src.rel)  # also forgets which directories are absent
        if dst is not None and dst.is_dir:
            up.forget_dirs(drel)
        sfd = up.dirfd(sp)
        dfd = up.dirfd(dp)
        try:
            if exchange:
                renameat2(sfd, sn, dfd, dn, RENAME_EXCHANGE)
            else:
                os.rename(sn, dn, src_dir_fd=sfd, dst_dir_fd=dfd)
        finally:
            up.release(sfd)
            up.release(dfd)
        self._touched(up, sp)
        self._touched(up, dp)
        if not exchange:
            if not pen.raw:
                self._drop_whiteout(up, drel)
            if src_lower:
                self._whiteout(up, src.rel)
            self.inodes.move(old, new)
        else:
            self.inodes.exchange(old, new)

    async def _copy_up_path(self, path: str, e: Entry) -> Entry:
        node = self._bind(path, e)
        try:
            return await self._copy_up(node, e)
        finally:
            self.inodes.forget(node.ino, 1)

    def _dir_has_lower(self, path: str, e: Entry, parent: Entry) -> bool:
        """A directory with content in a lower layer cannot be renamed (EXDEV, like overlayfs)."""
        if e.cut:
            return False
        return self._lower_has(path, None, parent) if e.in_upper else True

    # --- filesystem-wide ------------------------------------------------------------------

    @guarded
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        layer = self.layers.uppers.get("tmpfs") or self.layers.image
        if self.layers.uppers.get("persistent") is not None:
            layer = self.layers.uppers["persistent"]
        sv = os.fstatvfs(layer.fd)
        out = pyfuse3.StatvfsData()
        for f in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail"):
            setattr(out, f, getattr(sv, f))
        out.f_namemax = NAME_MAX
        return out

    # --- xattrs ---------------------------------------------------------------------------

    def _xattr_path(self, e: Entry) -> tuple[Backing, int, str]:
        if e.kind != BACKED or e.layer is None:
            raise _err(errno.ENODATA)
        parent, name = split(e.rel)
        if e.rel == ".":
            return e.layer, e.layer.fd, f"/proc/self/fd/{e.layer.fd}/."
        pfd = e.layer.dirfd(parent)
        return e.layer, pfd, f"/proc/self/fd/{pfd}/{name}"

    @guarded
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        sname = os.fsdecode(name)
        e = self._entry(self._node(inode))
        if sname == XATTR_ORIGIN:
            return self.view.origin(e).encode()
        if sname == inonum.ORIGIN_XATTR:
            raise _err(pyfuse3.ENOATTR)  # litefs's own bookkeeping, for no one to read
        if sname == XATTR_RULE:
            return self.view.rule_text(e).encode()
        if sname == XATTR_INODES and inode == ROOT_INODE:
            # How many inodes the kernel holds references to (the table is bounded by them).
            return str(len(self.inodes)).encode()
        if sname == XATTR_DIRSYNCS and inode == ROOT_INODE:
            # How many backing-directory fsyncs fsyncdir has issued (tests, admins).
            return str(self.dir_syncs).encode()
        if sname == XATTR_SETTLED and inode == ROOT_INODE:
            return b"1" if self.settled else b"0"
        if e.kind != BACKED:
            raise _err(pyfuse3.ENOATTR)
        layer, pfd, p = self._xattr_path(e)
        try:
            return os.getxattr(p, sname, follow_symlinks=False)
        finally:
            layer.release(pfd)

    @guarded
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        e = self._entry(self._node(inode))
        out = [XATTR_ORIGIN.encode(), XATTR_RULE.encode()]
        if e.kind == BACKED:
            layer, pfd, p = self._xattr_path(e)
            try:
                names = os.listxattr(p, follow_symlinks=False)
                if ctx.uid != 0:
                    # trusted.* is for root only (the kernel hides its values from others;
                    # the names must not leak either).
                    names = [n for n in names if not n.startswith("trusted.")]
                names = [n for n in names if n != inonum.ORIGIN_XATTR]
                out += [os.fsencode(n) for n in names]
            except OSError as exc:
                if exc.errno not in (errno.ENOTSUP, errno.EPERM):
                    raise
            finally:
                layer.release(pfd)
        return out

    @guarded
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext) -> None:
        sname = os.fsdecode(name)
        if inode == ROOT_INODE and sname in (XATTR_REFRESH, XATTR_PLAN):
            if ctx.uid != 0:
                raise _err(errno.EPERM)
            if sname == XATTR_REFRESH:
                paths = [p for p in os.fsdecode(value).split("\n") if p]
                self.refresh(paths or ["/"])
            else:
                self.change_plan(value)
            return
        if sname.startswith("user.litefs.") or sname == inonum.ORIGIN_XATTR:
            raise _err(errno.EPERM)
        node = self._node(inode)
        e = await self._writable_entry(node)
        layer, pfd, p = self._xattr_path(e)
        try:
            os.setxattr(p, sname, value, follow_symlinks=False)
        finally:
            layer.release(pfd)

    @guarded
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        sname = os.fsdecode(name)
        if sname.startswith("user.litefs.") or sname == inonum.ORIGIN_XATTR:
            raise _err(errno.EPERM)
        node = self._node(inode)
        e = await self._writable_entry(node)
        layer, pfd, p = self._xattr_path(e)
        try:
            os.removexattr(p, sname, follow_symlinks=False)
        finally:
            layer.release(pfd)

    async def _writable_entry(self, node: Node) -> Entry:
        e = self._entry(node)
        if e.raw:
            if self.read_only or not (e.layer and e.layer.writable):
                raise _err(errno.EROFS)
            return e
        if e.kind != BACKED and e.kind != CON:
            raise _err(errno.EPERM)
        parent = self._locate_path((node.path or "/").rsplit("/", 1)[0] or "/")
        self._writable_res(node.path or "/", parent or e)
        return await self._copy_up(node, e)

    # --- coherence ------------------------------------------------------------------------

    def refresh(self, paths: list[str]) -> int:
        """Forget what litefs and the kernel cache about ``paths`` and everything below them
        (image or source content changed underneath). Returns the number of inodes touched."""
        touched = 0
        self.layers.forget_dirs()
        saved = self.pinned
        self.pinned = saved | self._covered_paths()
        try:
            touched = self._refresh(paths)
        finally:
            self.pinned = saved
        self._refresh_ticket = self._queued
        log.info("refresh %s: %d cached inodes invalidated", " ".join(paths), touched)
        return touched

    def _covered_paths(self) -> set[str]:
        """View paths with a mount on top (/proc, /dev, bypass binds...) and the directories
        above them, read from mountinfo: invalidating their dentries would detach the mounts."""
        if self.fuse_dev is None:
            return set()
        ours: dict[str, tuple[str, str]] = {}
        rows = []
        try:
            with open("/proc/self/mountinfo") as f:
                for line in f:
                    parts = line.split()
                    rows.append(parts)
                    if parts[2] == self.fuse_dev:
                        ours[parts[0]] = (_unescape(parts[3]), _unescape(parts[4]))
        except OSError as exc:
            log.warning("cannot read mountinfo to protect mounts over the view: %s", exc)
            return set()
        covered: set[str] = set()
        for parts in rows:
            parent = ours.get(parts[1])
            if parent is None:
                continue
            root, point = parent
            where = _unescape(parts[4])
            if not where.startswith(point.rstrip("/") + "/"):
                continue
            p = root.rstrip("/") + where[len(point.rstrip("/")) :]
            while p not in ("/", ""):
                covered.add(p)
                p = p.rsplit("/", 1)[0]
        return covered

    def _refresh(self, paths: list[str]) -> int:
        touched = 0
        for raw in paths:
            path = "/" + "/".join(p for p in raw.split("/") if p and p != ".")
            if ".." in path.split("/"):
                continue
            prefix = "/" if path == "/" else path + "/"
            for p, n in list(self.inodes.by_path.items()):
                if p == path or p.startswith(prefix):
                    n.entry = None
                    touched += 1
                    self._queue("inode", n.ino, False)
                    if p != "/" and p not in self.pinned:
                        parent, leaf = p.rsplit("/", 1)
                        pn = self.inodes.at(parent or "/")
                        if pn is not None:
                            self._queue("entry", pn.ino, os.fsencode(leaf))
            # A named path that the kernel only knows as absent (negative dentry).
            if path != "/" and path not in self.pinned and self.inodes.at(path) is None:
                parent, leaf = path.rsplit("/", 1)
                pn = self.inodes.at(parent or "/")
                if pn is not None:
                    self._queue("entry", pn.ino, os.fsencode(leaf))
            # New names in a named directory may sit behind negative dentries.
            node = self.inodes.at(path)
            if node is not None:
                try:
                    e = self._locate_path(path)
                    names = self.view.names(e) if e is not None and e.is_dir else []
                except OSError as exc:  # a failing store must not make the refresh fail
                    log.error("refresh %s: backing store fault: %s", path, exc)
                    names = []
                for n in names:
                    if child_path(path, n) not in self.pinned:
                        self._queue("entry", node.ino, os.fsencode(n))
        return touched

    def change_plan(self, data: bytes) -> None:
        try:
            plan = Plan.from_json(data)
        except Exception as exc:
            log.error("refused new plan: %s", exc)
            raise _err(errno.EINVAL) from None
        self.view.set_plan(plan)
        log.info("plan changed (%d rules)", len(plan.rules))
        if self.on_plan_change is not None:
            self.on_plan_change()  # pins the old and new bypass binds before the refresh
        self.refresh(["/"])

    def pin(self, paths: list[str]) -> None:
        """Protect these bind targets (and the directories above them) from invalidation."""
        pinned = set()
        for p in paths:
            while p not in ("/", ""):
                pinned.add(p)
                p = p.rsplit("/", 1)[0]
        self.pinned = pinned


#: options of the family that follows its sources live
_LIVE_OPTIONS = frozenset(o for o in VALID_OPTIONS if family_of(o) is Family.RO)


def _is_live(e: Entry) -> bool:
    res = e.res
    return res is not None and res.rule is not None and res.rule.option in _LIVE_OPTIONS


_AT_EMPTY_PATH = 0x1000
_AT_SYMLINK_NOFOLLOW = 0x100
_UTIME_OMIT = (1 << 30) - 2
_libc = ctypes.CDLL(None, use_errno=True)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def fchown_empty(fd: int, uid: int, gid: int) -> None:
    """fchownat(fd, "", AT_EMPTY_PATH): chown the inode an O_PATH fd holds (even a symlink)."""
    if _libc.fchownat(fd, b"", uid, gid, _AT_EMPTY_PATH | _AT_SYMLINK_NOFOLLOW) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def utimens_empty(fd: int, atime_ns: int, mtime_ns: int) -> None:
    """Set the times of the symlink an O_PATH fd holds, without naming it again: the fd's
    /proc magic link is resolved to the symlink itself and not followed."""
    ts = (_Timespec * 2)(_Timespec(*divmod(atime_ns, 10**9)), _Timespec(*divmod(mtime_ns, 10**9)))
    r = _libc.utimensat(-100, os.fsencode(f"/proc/self/fd/{fd}"), ts, _AT_SYMLINK_NOFOLLOW)
    if r != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


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


def _syncfs(fd: int) -> None:
    if _libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _unescape(s: str) -> str:
    return s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _read_all(b: Backing, rel: str) -> bytes:
    parent, name = split(rel)
    pfd = b.dirfd(parent)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
    finally:
        b.release(pfd)
    try:
        chunks = []
        while True:
            buf = os.read(fd, 1 << 20)
            if not buf:
                return b"".join(chunks)
            chunks.append(buf)
    finally:
        os.close(fd)
