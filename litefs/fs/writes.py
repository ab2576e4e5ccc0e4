"""The write side of the view: which upper layer a change goes to, copy-up, and the
bookkeeping around changes (whiteouts, new entries' owners, directories to fsync).

:mod:`litefs.fs.policy` decides whether a change is allowed and which markers it needs; this
module gathers the facts it decides on and carries the result out through the layer objects
(:class:`litefs.fs.layers.Layer`), which do every backing mutation.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyfuse3
import trio

from litefs.fs import inodes as inonum
from litefs.fs import policy
from litefs.fs.copyup import copy_up, ensure_dir
from litefs.fs.fillwatch import FillWatch, NoWatch
from litefs.fs.inodes import ROOT_INODE, Inode
from litefs.fs.layers import WH_PREFIX, Layer, join, split
from litefs.fs.markers import NAME_MAX
from litefs.fs.tree import Tree, parent_of
from litefs.fs.view import BACKED, CON, SYNTH_DIR, SYNTH_LINK, Entry, child_path
from litefs.resolve import Resolution, resolve

log = logging.getLogger("litefs.fs")

#: files at least this big are copied up in a worker thread
THREAD_COPY_BYTES = 1 << 20
#: upper directories tracked for fsyncdir per layer before it falls back to syncfs
DIRTY_DIRS = 4096

_EUID, _EGID = os.geteuid(), os.getegid()


def refuse(code: int | None) -> None:
    """Answer the request with ``code`` (a policy's refusal), if there is one."""
    if code is not None:
        raise pyfuse3.FUSEError(code)


def side(e: Entry) -> policy.Side:
    """The facts :mod:`litefs.fs.policy` decides on, of what is at a name."""
    return policy.Side(is_dir=e.is_dir, raw=e.raw, in_upper=e.in_upper)


def maybe_side(e: Entry | None) -> policy.Side | None:
    """side() of what is at a name, None when the name is free."""
    return None if e is None else side(e)


@dataclass(slots=True)
class Creation:
    """A name about to be made in an upper layer (create, mkdir, mknod, symlink, link)."""

    parent: Inode
    parent_entry: Entry
    up: Layer
    rel: str
    #: the name hides deleted lower content (its whiteout goes once the name is made)
    had_whiteout: bool
    res: Resolution | None


class Writer:
    """Changes to one mount's upper layers."""

    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self.view = tree.view
        self.layers = tree.layers
        self.read_only = tree.layers.read_only
        #: copy-ups in progress, by view path
        self._copy_locks: dict[str, trio.Lock] = {}
        #: upper directories whose entries changed since the last fsyncdir that covered them
        #: (None: too many to track; fsyncdir then syncs the layer's whole filesystem)
        self._dirty: dict[Layer, set[str] | None] = {}
        #: backing directory fsyncs fsyncdir issued (root xattr user.litefs.dirsyncs)
        self.dir_syncs = 0
        self._squash_warned: set[str] = set()
        tmp = None if self.read_only else self.layers.upper("tmpfs")
        self.fill = FillWatch.for_fd("tmpfs", tmp.fd) if tmp is not None else NoWatch()

    # --- where a change goes ------------------------------------------------------------

    def upper_for(self, path: str, parent: Entry) -> tuple[Any, Layer]:
        """For a change at ``path`` below ``parent``: (resolution, upper layer), or EROFS.
        Through a raw /.statelite/<layer> parent: (None, that layer)."""
        if parent.raw:
            refuse(policy.raw_refusal(read_only=self.read_only, layer_writable=bool(parent.layer and parent.layer.writable)))
            assert parent.layer is not None
            return None, parent.layer
        if self.read_only or parent.kind is SYNTH_DIR:
            raise pyfuse3.FUSEError(errno.EROFS)
        res = resolve(self.view.plan, path)
        up = self.layers.upper(res.upper)
        if res is not None and res.upper is not None and up is None:
            log.error("%s: rule %s needs the %s layer, which this mount has none of", path, res.rule.path, res.upper)
        refuse(policy.upper_refusal(read_only=self.read_only, synthetic_parent=parent.kind is SYNTH_DIR,
                                    wanted=res.upper, have=up is not None))
        assert up is not None
        return res, up

    def write_refusal(self, path: str, parent: Entry) -> Callable[[], int | None]:
        """upper_for()'s refusal, to be asked when a policy needs it (None: allowed)."""

        def ask() -> int | None:
            try:
                self.upper_for(path, parent)
            except pyfuse3.FUSEError as exc:
                return exc.errno
            return None

        return ask

    async def writable(self, node: Inode, e: Entry, truncate_to: int | None = None) -> Entry:
        """``e`` ready to be changed: checked, and copied up unless it is in its upper layer."""
        if e.raw:
            refuse(policy.raw_refusal(read_only=self.read_only, layer_writable=bool(e.layer and e.layer.writable)))
            return e
        self.upper_for(node.path or "/", self.tree.parent_entry(node) or e)
        return await self.copy_up(node, e, truncate_to)

    def same_upper(self, path: str, e: Entry, up: Layer) -> bool:
        """Is ``up`` the layer ``e`` (at ``path``) writes to?"""
        return (e.layer if e.raw else self.layers.upper(resolve(self.view.plan, path).upper)) is up

    # --- copy-up ------------------------------------------------------------------------

    async def copy_up(self, node: Inode, e: Entry, truncate_to: int | None = None) -> Entry:
        """Bring ``e`` into its upper layer (no-op if it is there); return the new entry.

        One copy-up per path at a time. A large file is copied in a worker thread, so the
        trio loop (invalidations, signals) keeps running; with more than one pyfuse3 worker
        (``MountConfig.workers``) other requests are answered meanwhile too."""
        if e.raw or e.in_upper:
            return e
        if node.path is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        path = node.path
        lock = self._copy_locks.get(path)
        if lock is None:
            lock = self._copy_locks[path] = trio.Lock()
        try:
            async with lock:
                node.entry = None
                e = self.tree.entry(node)  # someone may have copied it up while we waited
                if e.raw or e.in_upper:
                    return e
                await self._copy_up_locked(path, e, truncate_to)
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._copy_locks.pop(path, None)
        node.entry = None
        e = self.tree.entry(node)
        self.tree.keep_number(node, e)
        return e

    async def copy_up_path(self, path: str, e: Entry) -> Entry:
        """copy_up() of a path the kernel holds no node for."""
        node = self.tree.inodes.at(path)
        if node is not None:
            return await self.copy_up(node, e)
        node = self.tree.bind(path, e)
        try:
            return await self.copy_up(node, e)
        finally:
            self.tree.inodes.forget(node.ino, 1)

    async def _copy_up_locked(self, path: str, e: Entry, truncate_to: int | None) -> None:
        _res, up = self.upper_for(path, self.tree.locate(parent_of(path)) or e)
        rel = e.rel
        if e.kind is SYNTH_LINK:
            raise pyfuse3.FUSEError(errno.EPERM)
        if e.is_dir:
            self.ensure_dir(up, rel)
            return
        self.ensure_dir(up, split(rel)[0])
        assert e.layer is not None
        st = e.layer.lstat(e.rel)  # fresh: metadata may have changed since the lookup
        if st is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        sources = [(b, r) for b, r, _st in e.parts] if e.kind is CON else [(e.layer, e.rel)]
        origin = None
        if e.kind is BACKED and stat.S_ISREG(st.st_mode) and up.origin_xattrs:
            # The number the lower file shows (not a salted or hashed one: those are refused)
            # is recorded on the copy, so it keeps that number after a remount.
            origin = inonum.encode_origin(self.tree.ident(e)[1])
        args = (up, rel, st, sources, truncate_to, (e.layer, e.rel), origin)
        self.touched(up, split(rel)[0])
        if stat.S_ISREG(st.st_mode) and truncate_to != 0 and st.st_size >= THREAD_COPY_BYTES:
            log.info("copy-up of %s (%d bytes) to the %s layer", path, st.st_size, up.name)
            await trio.to_thread.run_sync(copy_up, *args)
        else:
            copy_up(*args)

    async def path_lock(self, path: str) -> None:
        """Wait for a copy-up of ``path`` in progress (a change must not race it)."""
        lock = self._copy_locks.get(path)
        if lock is not None:
            async with lock:
                pass

    def ensure_dir(self, up: Layer, rel_dir: str) -> None:
        """ensure_dir(), and the directories it copies up keep the numbers they had."""
        made: list[tuple[str, int]] = []

        def meta_of(rel: str) -> os.stat_result | None:
            e = self.tree.locate("/" + rel)
            ino = self.tree.dir_number("/" + rel, e)
            if ino is not None:
                made.append((rel, ino))
            if e is None or e.kind is not BACKED or e.layer is None:
                return None
            return e.st or e.layer.lstat(e.rel)

        ensure_dir(up, rel_dir, meta_of)
        for rel, ino in made:
            self.touched(up, split(rel)[0])
            st = up.lstat(rel)
            if st is not None and ino != ROOT_INODE:
                self.tree.inodes.aliases[(up.slot, st.st_dev, st.st_ino)] = ino

    # --- what lower layers hold ---------------------------------------------------------

    def lower_has(self, path: str, e: Entry | None, parent: Entry) -> bool:
        """True if some lower layer would show ``path`` once the upper entry is gone."""
        if parent.raw or (e is not None and e.raw):
            return False
        res = resolve(self.view.plan, path)
        if parent.cut and parent.res is res:
            return False
        rel = path[1:]
        for ref in res.lowers:
            b = self.layers.lower(ref.kind, ref.index)
            if b is not None and b.exists(rel):
                return True
        return res.rule is not None and res.rule.path == path == "/etc/mtab"

    def lower_dir(self, path: str, e: Entry | None, parent: Entry) -> Callable[[], bool]:
        """dir_has_lower() of ``e``, to be asked when a policy needs it."""
        return lambda: e is not None and self.dir_has_lower(path, e, parent)

    def dir_has_lower(self, path: str, e: Entry, parent: Entry) -> bool:
        """A directory with content in a lower layer cannot be renamed (EXDEV, like overlayfs)."""
        if not e.is_dir or e.raw or e.cut:
            return False
        return self.lower_has(path, None, parent) if e.in_upper else True

    # --- bookkeeping --------------------------------------------------------------------

    def whiteout(self, up: Layer, rel: str) -> None:
        parent = split(rel)[0]
        self.ensure_dir(up, parent)
        up.make_whiteout(rel)
        self.touched(up, parent)

    def own(self, up: Layer, rel: str, ctx: pyfuse3.RequestContext) -> None:
        """Give a new entry to the caller (the daemon runs as root)."""
        if ctx.uid == _EUID and ctx.gid == _EGID:
            return  # created by us as the caller would have been
        up.dirfd(split(rel)[0])  # a parent that cannot be reached fails the request
        try:
            up.give(rel, ctx.uid, ctx.gid)
        except PermissionError as exc:
            # A store exported with root_squash: the entry exists, owned by the squashed
            # user. Failing now would leave it behind half-made; say so once instead.
            if up.name not in self._squash_warned:
                self._squash_warned.add(up.name)
                log.warning("%s layer refuses chown (root_squash?): new entries keep its owner: %s", up.name, exc)

    def prepare(self, parent_ino: int, name: str, absent: bool = False) -> Creation:
        """Checks before a name is made, and its upper parent directory. ``absent``: the
        caller located the name a moment ago (same request, no await since) and found nothing."""
        pnode, pe = self.tree.dir_entry(parent_ino)
        check_name(name, pe)
        path = child_path(pnode.path or "/", name)
        res, up = self.upper_for(path, pe)
        if not absent and self.view.locate(path, pe) is not None:
            raise pyfuse3.FUSEError(errno.EEXIST)
        rel = join(pe.rel, name) if pe.raw else path[1:]
        had_whiteout = False
        if not pe.raw:
            self.ensure_dir(up, split(rel)[0])
            had_whiteout = up.has_whiteout(rel)
        return Creation(pnode, pe, up, rel, had_whiteout, res)

    def made(self, c: Creation, ctx: pyfuse3.RequestContext) -> None:
        """After a name was made in the upper layer: give it to the caller and drop the
        whiteout it replaces."""
        self.own(c.up, c.rel, ctx)
        if c.had_whiteout:
            c.up.drop_whiteout(c.rel)
        self.touched(c.up, split(c.rel)[0])

    def touched(self, up: Layer, rel_dir: str) -> None:
        """Entries of upper directory ``rel_dir`` changed (for fsyncdir)."""
        dirty = self._dirty.get(up, set())
        if dirty is None:
            return
        dirty.add(rel_dir)
        # Bounded: past this many, fsyncdir falls back to syncfs of the layer.
        self._dirty[up] = None if len(dirty) > DIRTY_DIRS else dirty

    async def fsyncdir(self, node: Inode, e: Entry) -> None:
        """Make the directory's entries durable where the store can: fsync its backing
        directory in the layer its writes go to, and every directory above it whose entries
        litefs changed since (directories a copy-up or create made on the way)."""
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
            await trio.to_thread.run_sync(up.syncfs)
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
            if up.fsync_dir(d):  # nothing of it in this layer (yet): nothing to make durable
                self.dir_syncs += 1


def check_name(name: str, parent: Entry) -> None:
    if len(os.fsencode(name)) > NAME_MAX:
        raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
    if name.startswith(WH_PREFIX) and not parent.raw:
        # Reserved for whiteout bookkeeping in upper layers.
        raise pyfuse3.FUSEError(errno.EINVAL)
