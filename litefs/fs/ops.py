"""The pyfuse3 adapter: FUSE requests in, merged-view answers out.

Handlers only translate: they find the node's entry (:mod:`litefs.fs.tree`), ask
:mod:`litefs.fs.policy` whether a change is allowed, and let :mod:`litefs.fs.writes` carry it
out through the layer objects (:mod:`litefs.fs.layers`, which do every backing call). Read-only
paths answer EROFS to every change. ``OSError`` from a backing store becomes the same errno for
the caller; faults that mean a store is gone (EIO, ENOTCONN, ESTALE...) are also logged. Kernel
caches stay long-lived: :mod:`litefs.fs.coherence` invalidates what changes underneath, and the
root's control xattrs (:mod:`litefs.fs.control`) are answered here.

One module (~550 lines): pyfuse3 wants one Operations class, and its ~30 handlers (none over
~30 lines) read best side by side; everything they decide or do lives elsewhere.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pyfuse3

from litefs.fs import attrs, control, policy
from litefs.fs.coherence import Coherence
from litefs.fs.inodes import ORIGIN_XATTR, ROOT_INODE, Inode
from litefs.fs.kwhiteouts import OVERLAY_XATTR_PREFIX
from litefs.fs.layers import RENAME_EXCHANGE, RENAME_NOREPLACE, WH_PREFIX, Layer, join, split
from litefs.fs.markers import NAME_MAX
from litefs.fs.tree import Tree, is_live, parent_of
from litefs.fs.view import BACKED, CON, IMPLIED, SYNTH_DIR, SYNTH_LINK, Entry, View, child_path
from litefs.fs.writes import Writer, check_name, maybe_side, refuse, side
from litefs.plan import Plan

log = logging.getLogger("litefs.fs")

#: errnos that mean a backing store is failing, not that the caller asked something wrong
FAULTS = {errno.EIO, errno.ENOTCONN, errno.ESTALE, errno.EHOSTDOWN, errno.ETIMEDOUT, errno.ENXIO}

T = TypeVar("T")


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


class OpenFile:
    __slots__ = ("data", "fd", "node")

    def __init__(self, node: Inode, fd: int, data: bytes | None = None) -> None:
        self.node = node
        self.fd = fd
        #: the content of a ``con`` file (read-only until copied up); fd is -1 then
        self.data = data


class LitefsOps(pyfuse3.Operations):
    """The litefs filesystem for one mount."""

    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, view: View, cache_timeout: float = 3600.0, negative_timeout: float = 1.0) -> None:
        super().__init__()
        self.view = view
        self.layers = view.layers
        self.tree = Tree(view, cache_timeout)
        self.inodes = self.tree.inodes
        self.writer = Writer(self.tree)
        self.coherence = Coherence(self.inodes, self.layers, self.tree.children)
        self.negative_timeout = negative_timeout
        self.files: dict[int, OpenFile] = {}
        self.dirs: dict[int, tuple[Inode, list[tuple[str, Entry]] | None]] = {}
        self._next_fh = 1
        #: called when what the view shows may have moved (a plan change, a refresh): lays
        #: and lifts the binds over the view (litefs.fs.mount) before the refresh runs
        self.on_layout_change: Callable[..., None] | None = None

    def _fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    def _child(self, parent_ino: int, name: bytes) -> tuple[Inode, Entry, str, Entry | None]:
        """(parent node, parent entry, view path, what is at the name now) for a request."""
        pnode = self.tree.node(parent_ino)
        pe = self.tree.entry(pnode)
        path = child_path(pnode.path or "/", os.fsdecode(name))
        return pnode, pe, path, self.view.locate(path, pe)

    # --- lookups and attributes -----------------------------------------------------------

    @guarded
    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        pnode = self.tree.node(parent_inode)
        sname = os.fsdecode(name)
        if sname in (".", ".."):
            path = (pnode.path or "") if sname == "." else parent_of(pnode.path or "/")
            e = self.tree.locate(path) if path else None
        else:
            pe = self.tree.entry(pnode)
            if not pe.is_dir:
                raise _err(errno.ENOTDIR)
            if len(name) > NAME_MAX:
                raise _err(errno.ENAMETOOLONG)
            path = child_path(pnode.path or "/", sname)
            e = None if sname.startswith(WH_PREFIX) and not pe.raw else self.view.locate(path, pe)
        if e is None:
            if sname in (".", ".."):
                raise _err(errno.ENOENT)
            a = pyfuse3.EntryAttributes()
            a.st_ino = 0
            a.entry_timeout = self.negative_timeout
            return a
        return self.tree.reply(self.tree.bind(path, e), e)

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for ino, n in inode_list:
            self.inodes.forget(ino, n)

    @guarded
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self.tree.node(inode)
        if node.path is None:
            return self.tree.detached_attr(node, self._open_fd_of(node, None))
        e = self.tree.restat(node)
        a = self.tree.attr(node, e)
        e.st = None
        return a

    @guarded
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self.tree.node(inode)
        of = self.files.get(fh) if fh is not None else None
        if node.path is None:  # unlinked while open: act on the open descriptor
            fd = self._open_fd_of(node, of)
            attrs.set_on_fd(fd, attr, fields)
            return self.tree.detached_attr(node, fd)
        e = self.tree.entry(node)
        if e.kind is SYNTH_DIR or e.kind is SYNTH_LINK:
            raise _err(errno.EPERM)
        trunc = attr.st_size if fields.update_size and attr.st_size == 0 else None
        e = await self.writer.writable(node, e, truncate_to=trunc)
        assert e.layer is not None
        open_fd = of.fd if of is not None and of.fd >= 0 and of.data is None else None
        pin = e.layer.pin(e.rel)
        try:
            attrs.set_pinned(pin, attr, fields, open_fd, ctx)
            e.st = os.fstat(pin)  # the changed inode itself: no second walk to its name
        finally:
            os.close(pin)
        return self.tree.attr(node, e)

    def _open_fd_of(self, node: Inode, of: OpenFile | None) -> int:
        if of is not None and of.fd >= 0:
            return of.fd
        for f in self.files.values():
            if f.node is node and f.fd >= 0:
                return f.fd
        raise _err(errno.ENOENT)

    @guarded
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        e = self.tree.entry(self.tree.node(inode))
        if e.kind is SYNTH_LINK:
            return os.fsencode(e.target)
        if e.kind is not BACKED or e.layer is None or not e.is_link:
            raise _err(errno.EINVAL)
        return os.fsencode(e.layer.readlink(e.rel))

    # --- directories ----------------------------------------------------------------------

    @guarded
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node, _e = self.tree.dir_entry(inode)
        fh = self._fh()
        self.dirs[fh] = (node, None)
        return fh

    @guarded
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        node, listing = self.dirs[fh]
        if listing is None or start_id == 0:
            listing = self.view.entries(self.tree.entry(node))
            self.dirs[fh] = (node, listing)
        # Runs once per entry of every listing the kernel asks for (pyfuse3 cannot let the
        # kernel cache listings, so a warm find re-lists everything): names and methods are
        # looked up once, not per entry (~10% of the daemon's CPU on a warm find).
        base = node.path or "/"
        prefix = "/" if base == "/" else base + "/"
        tree = self.tree
        bind, attr, kept, reply = tree.bind, tree.attr, tree.kept, pyfuse3.readdir_reply
        enc, errs = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
        for i in range(start_id, len(listing)):
            name, ce = listing[i]
            child = bind(prefix + name, ce)
            if not reply(token, name.encode(enc, errs), attr(child, ce), i + 1):
                self.inodes.forget(child.ino, 1)
                return
            # Listings touch many files: keep only directories' entries (files are located
            # again when opened), so a walk does not churn the file-entry LRU.
            ce.st = None
            if not ce.is_dir and not kept(child.ino):
                child.entry = None

    async def releasedir(self, fh: int) -> None:
        self.dirs.pop(fh, None)

    @guarded
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        node, _listing = self.dirs[fh]
        await self.writer.fsyncdir(node, self.tree.entry(node))

    @guarded
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        c = self.writer.prepare(parent_inode, os.fsdecode(name))
        # A name that hides deleted lower content: the new directory must not merge with it.
        c.up.mkdir(c.rel, stat.S_IMODE(mode), opaque=c.had_whiteout)
        self.writer.made(c, ctx)
        return self.tree.new_entry(c.parent, os.fsdecode(name))

    @guarded
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        _pnode, pe, path, e = self._child(parent_inode, name)
        busy = e is not None and (e.kind is SYNTH_DIR or (e.raw and e.rel == "."))
        refuse(policy.rmdir_refusal(maybe_side(e), write_refusal=self.writer.write_refusal(path, pe), busy=busy,
                                    is_empty=lambda: self.tree.is_empty(path, e)))
        assert e is not None
        self._remove(path, e, pe, lower=self.writer.lower_has(path, e, pe) or e.kind is IMPLIED)

    def _remove(self, path: str, e: Entry, pe: Entry, lower: bool) -> None:
        """Remove the name ``path`` (unlink or rmdir, already allowed) from the view."""
        _res, up = self.writer.upper_for(path, pe)
        steps = policy.remove_steps(side(e), lower=lower)
        if steps.whiteout:
            # In the kernel's format the record replaces the entry itself, in one step.
            self.writer.whiteout(up, e.rel)
        if steps.remove_backing and not (steps.whiteout and up.kernel_whiteouts):
            if e.is_dir:
                up.rmdir(e.rel, clear_markers=not e.raw)
            else:
                up.unlink(e.rel)
            self.writer.touched(up, split(e.rel)[0])
        # Other names of a hard link share its node: the kernel drops their nlink itself.
        self.inodes.detach(path)

    # --- files ----------------------------------------------------------------------------

    @guarded
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self.tree.node(inode)
        return await self._open_node(node, self.tree.entry(node), flags)

    async def _open_node(self, node: Inode, e: Entry, flags: int) -> pyfuse3.FileInfo:
        if e.is_dir:
            raise _err(errno.EISDIR)
        if e.kind is SYNTH_LINK:
            raise _err(errno.ELOOP)
        if policy.wants_write(flags):
            e = await self.writer.writable(node, e, truncate_to=0 if flags & os.O_TRUNC else None)
        fh = self._fh()
        if e.kind is CON:
            self.files[fh] = OpenFile(node, -1, b"".join(b.read_all(r) for b, r, _st in e.parts))
        else:
            assert e.layer is not None
            # O_TRUNC stays: libfuse negotiates atomic_o_trunc, so the open itself truncates.
            self.files[fh] = OpenFile(node, e.layer.open(e.rel, flags & ~(os.O_CREAT | os.O_EXCL | os.O_NOCTTY)))
        return pyfuse3.FileInfo(fh=fh, keep_cache=not is_live(e))

    @guarded
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        _pnode, _pe, path, existing = self._child(parent_inode, name)
        if existing is not None:
            return await self._create_existing(path, existing, flags, ctx)
        c = self.writer.prepare(parent_inode, os.fsdecode(name), absent=True)  # located just now
        self.writer.fill.tick()
        fd = c.up.open(c.rel, (flags & ~os.O_NOCTTY) | os.O_CREAT | os.O_EXCL, stat.S_IMODE(mode))
        try:
            self.writer.made(c, ctx)
            e = Entry(path, BACKED, c.res, c.up, c.rel, os.fstat(fd), raw=c.parent_entry.raw)
            node = self.tree.bind(path, e)
            attr = self.tree.attr(node, e)
        except BaseException:
            os.close(fd)
            raise
        fh = self._fh()
        self.files[fh] = OpenFile(node, fd)
        return pyfuse3.FileInfo(fh=fh, keep_cache=True), attr

    async def _create_existing(self, path: str, e: Entry, flags: int,
                               ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        """create() of a name that exists after all: the kernel's negative entry was stale
        (someone created it underneath), so it checked nothing on it."""
        if flags & os.O_EXCL:
            raise _err(errno.EEXIST)
        self._check_open_access(e, flags, ctx)  # as open(2) would have
        node = self.tree.bind(path, e)
        try:
            return await self._open_node(node, e, flags), self.tree.attr(node, e)
        except BaseException:
            self.inodes.forget(node.ino, 1)
            raise

    def _check_open_access(self, e: Entry, flags: int, ctx: pyfuse3.RequestContext) -> None:
        if e.is_dir:
            raise _err(errno.EISDIR)
        st = e.layer.lstat(e.rel) if e.kind is BACKED and e.layer is not None else e.st
        if st is None:
            raise _err(errno.ELOOP if e.kind is SYNTH_LINK else errno.EACCES)  # fail closed
        if not attrs.may_access(st, ctx, policy.open_access(flags)):
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
        self.writer.fill.tick()
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
        c = self.writer.prepare(parent_inode, os.fsdecode(name))
        c.up.mknod(c.rel, mode, rdev)
        self.writer.made(c, ctx)
        return self.tree.new_entry(c.parent, os.fsdecode(name))

    @guarded
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        c = self.writer.prepare(parent_inode, os.fsdecode(name))
        c.up.symlink(c.rel, os.fsdecode(target))
        self.writer.made(c, ctx)
        return self.tree.new_entry(c.parent, os.fsdecode(name))

    @guarded
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self.tree.node(inode)
        e = self.tree.entry(node)
        if e.is_dir:
            raise _err(errno.EPERM)
        c = self.writer.prepare(new_parent_inode, os.fsdecode(new_name))
        refuse(policy.link_refusal(side(e), same_upper=self.writer.same_upper(node.path or "/", e, c.up)))
        e = await self.writer.copy_up(node, e)
        c.up.link(e.rel, c.rel)
        if c.had_whiteout:
            c.up.drop_whiteout(c.rel)
        self.writer.touched(c.up, split(c.rel)[0])
        self.coherence.drop_inode(node.ino, attrs_only=True)  # its nlink changed
        return self.tree.new_entry(c.parent, os.fsdecode(new_name))

    @guarded
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        pnode = self.tree.node(parent_inode)
        path = child_path(pnode.path or "/", os.fsdecode(name))
        await self.writer.path_lock(path)
        _pnode, pe, path, e = self._child(parent_inode, name)
        refuse(policy.unlink_refusal(maybe_side(e), write_refusal=self.writer.write_refusal(path, pe)))
        assert e is not None
        self._remove(path, e, pe, lower=self.writer.lower_has(path, e, pe))

    @guarded
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
                     flags: int, ctx: pyfuse3.RequestContext) -> None:
        pold, pnew = self.tree.node(parent_inode_old), self.tree.node(parent_inode_new)
        peo, pen = self.tree.entry(pold), self.tree.entry(pnew)
        check_name(os.fsdecode(name_new), pen)
        old = child_path(pold.path or "/", os.fsdecode(name_old))
        new = child_path(pnew.path or "/", os.fsdecode(name_new))
        await self.writer.path_lock(old)
        await self.writer.path_lock(new)
        src = self.view.locate(old, peo)
        if src is None:
            raise _err(errno.ENOENT)
        dst = self.view.locate(new, pen)
        _r, up = self.writer.upper_for(old, peo)
        _r, up2 = self.writer.upper_for(new, pen)
        exchange = bool(flags & RENAME_EXCHANGE)
        refuse(policy.rename_refusal(
            side(src), maybe_side(dst), same_upper=up is up2, dst_parent_raw=pen.raw,
            noreplace=bool(flags & RENAME_NOREPLACE), exchange=exchange,
            dst_is_empty=lambda: dst is not None and self.tree.is_empty(new, dst),
            src_lower_dir=self.writer.lower_dir(old, src, peo), dst_lower_dir=self.writer.lower_dir(new, dst, pen)))
        src = await self.writer.copy_up_path(old, src)
        if exchange and dst is not None:
            dst = await self.writer.copy_up_path(new, dst)
        drel = join(pen.rel, os.fsdecode(name_new)) if pen.raw else new[1:]
        self._rename(old, new, src, dst, drel, peo, pen, up, exchange)

    def _rename(self, old: str, new: str, src: Entry, dst: Entry | None, drel: str, peo: Entry, pen: Entry,
                up: Layer, exchange: bool) -> None:
        """The backing rename and its bookkeeping (allowed, sources copied up)."""
        steps = policy.rename_steps(side(src), maybe_side(dst), exchange=exchange, dst_parent_raw=pen.raw,
                                    src_lower=self.writer.lower_has(old, src, peo),
                                    dst_lower=self.writer.lower_has(new, dst, pen))
        if not pen.raw:
            self.writer.ensure_dir(up, split(drel)[0])
        if steps.clear_dst_markers:
            up.clear_markers(drel)
        if steps.make_src_opaque:
            up.make_opaque(src.rel)
        if src.is_dir:
            up.forget_dirs(src.rel)  # also forgets which directories are absent
        if dst is not None and dst.is_dir:
            up.forget_dirs(drel)
        if up.kernel_whiteouts and src.is_dir and not exchange and up.has_whiteout(drel):
            # A directory cannot replace the kernel's record (a char device): swap them,
            # then the record at the old name stays only if that name must hide something.
            up.rename(src.rel, drel, exchange=True)
            if not steps.whiteout_src:
                up.drop_whiteout(src.rel)
        else:
            up.rename(src.rel, drel, exchange=exchange)
        self.writer.touched(up, split(src.rel)[0])
        self.writer.touched(up, split(drel)[0])
        if exchange:
            self.inodes.exchange(old, new)
            return
        if steps.drop_dst_whiteout:
            up.drop_whiteout(drel)
        if steps.whiteout_src:
            self.writer.whiteout(up, src.rel)
        self.inodes.move(old, new)

    # --- filesystem-wide ------------------------------------------------------------------

    @guarded
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        uppers = self.layers.uppers
        layer = uppers.get("persistent") or uppers.get("tmpfs") or self.layers.image
        sv = os.fstatvfs(layer.fd)
        out = pyfuse3.StatvfsData()
        for f in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail"):
            setattr(out, f, getattr(sv, f))
        out.f_namemax = NAME_MAX
        return out

    # --- xattrs (litefs's own names: litefs.fs.control) -----------------------------------

    @guarded
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        sname = os.fsdecode(name)
        e = self.tree.entry(self.tree.node(inode))
        if sname == control.XATTR_ORIGIN:
            return self.view.origin(e).encode()
        if sname == control.XATTR_RULE:
            return self.view.rule_text(e).encode()
        if sname in control.COUNTERS and inode == ROOT_INODE:
            return control.counter(sname, inodes=len(self.inodes), dir_syncs=self.writer.dir_syncs,
                                   settled=self.coherence.settled)
        if sname == ORIGIN_XATTR or e.kind is not BACKED or e.layer is None:
            raise _err(pyfuse3.ENOATTR)  # the origin is litefs's own bookkeeping, for no one
        return os.getxattr(e.layer.xattr_path(e.rel), sname, follow_symlinks=False)

    @guarded
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        e = self.tree.entry(self.tree.node(inode))
        out = [control.XATTR_ORIGIN.encode(), control.XATTR_RULE.encode()]
        if e.kind is not BACKED or e.layer is None:
            return out
        try:
            names = os.listxattr(e.layer.xattr_path(e.rel), follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EPERM):
                raise
            return out
        # trusted.* is for root only (the kernel hides its values from others; the names
        # must not leak either).
        return out + [os.fsencode(n) for n in names
                      if n != ORIGIN_XATTR and (ctx.uid == 0 or not n.startswith("trusted."))
                      and not n.startswith(OVERLAY_XATTR_PREFIX)]

    @guarded
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext) -> None:
        sname = os.fsdecode(name)
        if inode == ROOT_INODE and sname in control.COMMANDS:
            if ctx.uid != 0:
                raise _err(errno.EPERM)
            if sname == control.XATTR_REFRESH:
                paths = control.refresh_paths(value)
                if self.on_layout_change is not None:
                    self.on_layout_change(paths)  # lower content may have come or gone
                self.refresh(paths)
            else:
                self.change_plan(value)
            return
        if control.is_reserved(sname):
            raise _err(errno.EPERM)
        e = await self._xattr_target(self.tree.node(inode))
        os.setxattr(e.layer.xattr_path(e.rel), sname, value, follow_symlinks=False)  # type: ignore[union-attr]

    @guarded
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        sname = os.fsdecode(name)
        if control.is_reserved(sname):
            raise _err(errno.EPERM)
        e = await self._xattr_target(self.tree.node(inode))
        os.removexattr(e.layer.xattr_path(e.rel), sname, follow_symlinks=False)  # type: ignore[union-attr]

    async def _xattr_target(self, node: Inode) -> Entry:
        e = self.tree.entry(node)
        if not e.raw and e.kind is not BACKED and e.kind is not CON:
            raise _err(errno.EPERM)
        e = await self.writer.writable(node, e)
        if e.kind is not BACKED or e.layer is None:
            raise _err(errno.ENODATA)
        return e

    # --- the control channel's commands ---------------------------------------------------

    def refresh(self, paths: list[str]) -> int:
        """Forget what litefs and the kernel cache about ``paths`` and everything below them
        (image or source content changed underneath). Returns the number of inodes touched."""
        return self.coherence.refresh(paths)

    def change_plan(self, data: bytes) -> None:
        try:
            plan = Plan.from_json(data)
        except Exception as exc:
            log.error("refused new plan: %s", exc)
            raise _err(errno.EINVAL) from None
        self.view.set_plan(plan)
        log.info("plan changed (%d rules)", len(plan.rules))
        if self.on_layout_change is not None:
            self.on_layout_change()  # pins the old and new binds before the refresh
        self.refresh(["/"])

