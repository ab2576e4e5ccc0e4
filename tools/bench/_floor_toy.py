"""The floor toy: the least a pyfuse3 passthrough filesystem can do per FUSE request.

A passthrough of one directory (``SRC``) at ``MNT``, with nothing but what ``find``, ``cat``
and ``tar -x`` need: an inode table keyed by the backing inode number, one ``lstat`` per
lookup, one ``os.open`` per open, ``pread``/``pwrite`` per read/write; no ``flush`` (ENOSYS once, as litefs has it, so the
kernel sends none). It runs as litefs does
(the options of ``litefs.fs.mount.fuse_options``, one worker, ``litefs.fs.fastloop``, the
same hour-long entry/attribute timeouts, ``keep_cache`` on open), so what it costs is what
any filesystem on pyfuse3 3.5 and trio pays on this kernel before doing any work of its own.
``--writeback`` sets ``enable_writeback_cache`` (the kernel then batches writes in its page
cache, as fuse-overlayfs has it): write-only opens become read-write (the kernel may read
to fill a page) and ``O_APPEND`` is dropped (the kernel positions appends itself).
``--cached`` keeps each directory's listing and each inode's attributes once built (dropped
only when the toy itself changes them): a ``readdir`` is then one ``readdir_reply`` per entry
and nothing else, the least any pyfuse3 filesystem can do for it. ``--debug`` adds libfuse's request trace on stderr (tools/bench/bench_fuse_ops.py counts it).
Used by tools/bench/bench_floor.py; not a filesystem to use.

    python tools/bench/_floor_toy.py SRC MNT [--writeback] [--debug]
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import stat
import sys
from pathlib import Path

import pyfuse3
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from litefs.fs import fastloop
from litefs.fs.mount import MountConfig, fuse_options

TIMEOUT = 3600.0  # litefs's cache_timeout


class Toy(pyfuse3.Operations):
    supports_dot_lookup = True

    def __init__(self, src: str, writeback: bool, cached: bool = False) -> None:
        super().__init__()
        self.enable_writeback_cache = writeback
        #: --cached: listings (per directory) and attributes (per inode) built once and kept
        #: until the toy itself changes them
        self.cached = cached
        self.listings: dict[str, list[tuple[bytes, int, str]]] = {}
        self.attrs: dict[int, pyfuse3.EntryAttributes] = {}
        self.fh_ino: dict[int, int] = {}
        self.root_ino = os.lstat(src).st_ino
        #: FUSE inode -> backing path, and its lookup count
        self.paths: dict[int, str] = {pyfuse3.ROOT_INODE: src}
        self.nlookup: dict[int, int] = {}
        self.files: dict[int, int] = {}  # fh -> fd (fh is the fd itself)
        self.dirs: dict[int, tuple[str, list[bytes]]] = {}  # dh -> (path, names)
        self._dh = 0

    def _ino(self, st_ino: int) -> int:
        return pyfuse3.ROOT_INODE if st_ino == self.root_ino else st_ino

    def _attr(self, st: os.stat_result) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = self._ino(st.st_ino)
        a.generation = 0
        a.entry_timeout = TIMEOUT
        a.attr_timeout = TIMEOUT
        a.st_mode = st.st_mode
        a.st_nlink = st.st_nlink
        a.st_uid = st.st_uid
        a.st_gid = st.st_gid
        a.st_rdev = st.st_rdev
        a.st_size = st.st_size
        a.st_blksize = st.st_blksize
        a.st_blocks = st.st_blocks
        a.st_atime_ns = st.st_atime_ns
        a.st_mtime_ns = st.st_mtime_ns
        a.st_ctime_ns = st.st_ctime_ns
        return a

    def _path(self, ino: int) -> str:
        try:
            return self.paths[ino]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ESTALE) from None

    def _bind(self, path: str, st: os.stat_result) -> pyfuse3.EntryAttributes:
        a = self._attr(st)
        self.paths[a.st_ino] = path
        self.nlookup[a.st_ino] = self.nlookup.get(a.st_ino, 0) + 1
        return a

    def _stat(self, path: str) -> os.stat_result:
        try:
            return os.lstat(path)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None

    # --- lookups and attributes -----------------------------------------------------------

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = os.path.join(self._path(parent_inode), os.fsdecode(name))
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            a = pyfuse3.EntryAttributes()
            a.st_ino = 0
            a.entry_timeout = 1.0
            return a
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        return self._bind(os.path.normpath(path), st)

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for ino, n in inode_list:
            left = self.nlookup.get(ino, 0) - n
            if left > 0:
                self.nlookup[ino] = left
            else:
                self.nlookup.pop(ino, None)
                if ino != pyfuse3.ROOT_INODE:
                    self.paths.pop(ino, None)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        a = self.attrs.get(inode) if self.cached else None
        return a if a is not None else self._attr(self._stat(self._path(inode)))

    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        path = self._path(inode)
        self._changed(ino=inode)
        try:
            if fields.update_size:
                if fh is not None:
                    os.ftruncate(fh, attr.st_size)
                else:
                    os.truncate(path, attr.st_size)
            if fields.update_mode:
                os.chmod(path, stat.S_IMODE(attr.st_mode), follow_symlinks=False)
            if fields.update_uid or fields.update_gid:
                os.chown(
                    path,
                    attr.st_uid if fields.update_uid else -1,
                    attr.st_gid if fields.update_gid else -1,
                    follow_symlinks=False,
                )
            if fields.update_atime or fields.update_mtime:
                st = os.lstat(path)
                at = attr.st_atime_ns if fields.update_atime else st.st_atime_ns
                mt = attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns
                os.utime(path, ns=(at, mt), follow_symlinks=False)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        return self._attr(self._stat(path))

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return os.fsencode(os.readlink(self._path(inode)))

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        sv = os.statvfs(self.paths[pyfuse3.ROOT_INODE])
        out = pyfuse3.StatvfsData()
        for k in (
            "f_bsize",
            "f_frsize",
            "f_blocks",
            "f_bfree",
            "f_bavail",
            "f_files",
            "f_ffree",
            "f_favail",
            "f_namemax",
        ):
            setattr(out, k, getattr(sv, k))
        return out

    # --- directories ----------------------------------------------------------------------

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        self._dh += 1
        self.dirs[self._dh] = (self._path(inode), [])
        return self._dh

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        # pyfuse3 answers READDIRPLUS: every entry carries attributes (and a lookup count).
        # The listing is read once per open handle, as litefs reads its merged listing.
        if self.cached:
            return self._readdir_cached(fh, start_id, token)
        base, names = self.dirs[fh]
        if start_id == 0:
            names = [os.fsencode(d.name) for d in os.scandir(base)]
            self.dirs[fh] = (base, names)
        for i in range(start_id, len(names)):
            path = os.path.join(base, os.fsdecode(names[i]))
            a = self._attr(os.lstat(path))
            if not pyfuse3.readdir_reply(token, names[i], a, i + 1):
                return
            self.paths[a.st_ino] = path
            self.nlookup[a.st_ino] = self.nlookup.get(a.st_ino, 0) + 1

    def _readdir_cached(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        base = self.dirs[fh][0]
        listing = self.listings.get(base)
        attrs = self.attrs
        if listing is None:
            listing = []
            for d in os.scandir(base):
                a = self._attr(d.stat(follow_symlinks=False))
                attrs[a.st_ino] = a
                listing.append((os.fsencode(d.name), a.st_ino, d.path))
            self.listings[base] = listing
        paths, nlookup = self.paths, self.nlookup
        for i in range(start_id, len(listing)):
            name, ino, path = listing[i]
            a = attrs.get(ino)
            if a is None:
                a = attrs[ino] = self._attr(os.lstat(path))
            if not pyfuse3.readdir_reply(token, name, a, i + 1):
                return
            paths[ino] = path
            nlookup[ino] = nlookup.get(ino, 0) + 1

    def _changed(self, *dirs: str, ino: int | None = None) -> None:
        """--cached: the toy changed these directories (or this inode's attributes)."""
        for d in dirs:
            self.listings.pop(d, None)
        if ino is not None:
            self.attrs.pop(ino, None)

    async def releasedir(self, fh: int) -> None:
        self.dirs.pop(fh, None)

    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = os.path.join(self._path(parent_inode), os.fsdecode(name))
        try:
            self._changed(self._path(parent_inode))
            os.mkdir(path, stat.S_IMODE(mode))
            os.chown(path, ctx.uid, ctx.gid)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        return self._bind(path, os.lstat(path))

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        try:
            self._changed(self._path(parent_inode))
            os.rmdir(os.path.join(self._path(parent_inode), os.fsdecode(name)))
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        try:
            self._changed(self._path(parent_inode))
            os.unlink(os.path.join(self._path(parent_inode), os.fsdecode(name)))
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None

    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = os.path.join(self._path(parent_inode), os.fsdecode(name))
        try:
            self._changed(self._path(parent_inode))
            os.symlink(target, path)
            os.chown(path, ctx.uid, ctx.gid, follow_symlinks=False)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        return self._bind(path, os.lstat(path))

    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = os.path.join(self._path(new_parent_inode), os.fsdecode(new_name))
        try:
            self._changed(self._path(new_parent_inode), ino=inode)
            os.link(self._path(inode), path, follow_symlinks=False)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        return self._bind(path, os.lstat(path))

    async def rename(
        self,
        parent_old: int,
        name_old: bytes,
        parent_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        if flags:
            raise pyfuse3.FUSEError(errno.EINVAL)
        old = os.path.join(self._path(parent_old), os.fsdecode(name_old))
        new = os.path.join(self._path(parent_new), os.fsdecode(name_new))
        try:
            self._changed(self._path(parent_old), self._path(parent_new))
            os.rename(old, new)
            ino = os.lstat(new).st_ino
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        if ino in self.paths:
            self.paths[ino] = new

    # --- files ----------------------------------------------------------------------------

    def _flags(self, flags: int) -> int:
        flags &= ~(os.O_CREAT | os.O_EXCL | os.O_NOCTTY)
        if self.enable_writeback_cache:
            if flags & os.O_ACCMODE == os.O_WRONLY:
                flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
            flags &= ~os.O_APPEND
        return flags

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        try:
            fd = os.open(self._path(inode), self._flags(flags))
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        self.fh_ino[fd] = inode
        return pyfuse3.FileInfo(fh=fd, keep_cache=True)

    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        path = os.path.join(self._path(parent_inode), os.fsdecode(name))
        try:
            self._changed(self._path(parent_inode))
            fd = os.open(path, self._flags(flags) | os.O_CREAT | os.O_TRUNC, stat.S_IMODE(mode))
            os.fchown(fd, ctx.uid, ctx.gid)
            st = os.fstat(fd)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        a = self._bind(path, st)
        self.fh_ino[fd] = a.st_ino
        return pyfuse3.FileInfo(fh=fd, keep_cache=True), a

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return os.pread(fh, size, off)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        if self.cached:
            self._changed(ino=self.fh_ino.get(fh))
        return os.pwrite(fh, buf, off)

    async def fsync(self, fh: int, datasync: bool) -> None:
        (os.fdatasync if datasync else os.fsync)(fh)

    async def release(self, fh: int) -> None:
        self.fh_ino.pop(fh, None)
        os.close(fh)


def _mounted(mnt: str) -> bool:
    """Is the toy still mounted at ``mnt``? (From mountinfo: a stat of ``mnt`` would be a
    request to ourselves.)"""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if parts[4] == mnt and parts[parts.index("-") + 1] == "fuse.floortoy":
                return True
    return False


async def _serve(mnt: str) -> None:
    async with trio.open_nursery() as nursery:

        async def on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
                async for _ in sigs:
                    pyfuse3.terminate()
                    return

        async def watch_mount() -> None:
            # pyfuse3 does not notice every external unmount (litefs.fs.mount watches too)
            while True:
                await trio.sleep(0.5)
                if not _mounted(mnt):
                    pyfuse3.terminate()
                    return

        nursery.start_soon(on_signal)
        nursery.start_soon(watch_mount)
        fastloop.install()
        await pyfuse3.main(min_tasks=1, max_tasks=1)
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src")
    p.add_argument("mnt")
    p.add_argument("--writeback", action="store_true", help="enable_writeback_cache")
    p.add_argument(
        "--cached", action="store_true", help="keep listings and attributes (built once)"
    )
    p.add_argument("--debug", action="store_true", help="libfuse request trace on stderr")
    args = p.parse_args(argv)
    ops = Toy(os.path.abspath(args.src), args.writeback, args.cached)
    opts = {
        o
        for o in fuse_options(MountConfig(args.mnt, fsname="floortoy"))
        if not o.startswith("subtype=")
    }
    opts.add("subtype=floortoy")
    if args.debug:
        opts.add("debug")
    os.umask(0)
    pyfuse3.init(ops, args.mnt, opts)
    try:
        trio.run(_serve, os.path.abspath(args.mnt))
    finally:
        pyfuse3.close(unmount=_mounted(os.path.abspath(args.mnt)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
