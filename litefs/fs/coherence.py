"""Keeping the kernel's caches true: invalidations, refresh, and the mounts laid over the view.

litefs lets the kernel cache entries and attributes for long (an hour by default) and tells it
what changed instead: what a handler changes that the kernel cannot know about, and what an
admin names in a refresh (image or source content changed underneath). Invalidations are sent
from a worker thread, never inside a request handler: the kernel holds the directory lock of
the request in flight, and invalidating an entry of that directory would wait on it forever.

Dentries that have a mount on top (``/proc``, ``/dev``, the ``--bypass`` binds) are never
invalidated: the kernel detaches mounts from an invalidated dentry.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import pyfuse3
import trio

from litefs import syscalls
from litefs.fs.inodes import InodeTable
from litefs.fs.layers import LayerSet
from litefs.fs.view import child_path
from litefs.mountinfo import Mount, mounts

log = logging.getLogger("litefs.fs")

#: invalidations sent to the kernel per worker-thread hand-off
NOTIFY_BATCH = 512


class Drop(Enum):
    """What one invalidation drops."""

    INODE = "inode"  # attributes (and, unless attributes-only, cached pages) of an inode
    ENTRY = "entry"  # one name in a directory (a dentry, positive or negative)


@dataclass(frozen=True, slots=True)
class Invalidation:
    what: Drop
    ino: int
    #: INODE: attributes only (keep pages); ENTRY: the name
    arg: bool | bytes


def deliver(batch: list[Invalidation]) -> None:
    """Send invalidations to the kernel (in a worker thread)."""
    for inv in batch:
        try:
            if inv.what is Drop.INODE:
                pyfuse3.invalidate_inode(inv.ino, inv.arg)
            else:
                pyfuse3.invalidate_entry(inv.ino, inv.arg)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ENOTCONN):
                log.warning("invalidate %s: %s", inv, exc)
        except Exception as exc:  # never let a stale inode stop the worker
            log.warning("invalidate %s: %s", inv, exc)


def covered_paths(fuse_dev: str, rows: list[Mount] | None = None) -> set[str]:
    """View paths with a mount on top of our FUSE connection ``fuse_dev`` (``major:minor``)
    and the directories above them: invalidating their dentries would detach the mounts."""
    rows = mounts() if rows is None else rows
    ours = {m.mount_id: (m.root, m.point) for m in rows if m.dev == fuse_dev}
    covered: set[str] = set()
    for m in rows:
        parent = ours.get(m.parent_id)
        if parent is None:
            continue
        root, point = parent
        point = point.rstrip("/")
        if not m.point.startswith(point + "/"):
            continue
        p = root.rstrip("/") + m.point[len(point) :]
        while p not in ("/", ""):
            covered.add(p)
            p = p.rsplit("/", 1)[0]
    return covered


def with_parents(paths: list[str]) -> set[str]:
    out = set()
    for p in paths:
        while p not in ("/", ""):
            out.add(p)
            p = p.rsplit("/", 1)[0]
    return out


class Coherence:
    """The invalidation queue of one mount, and the refresh that fills it."""

    def __init__(self, inodes: InodeTable, layers: LayerSet, children: Callable[[str], list[str]]) -> None:
        self.inodes = inodes
        self.layers = layers
        #: names below a view directory path (for new names behind negative dentries)
        self.children = children
        # Unbounded: a refresh of "/" queues one invalidation per cached inode, and dropping
        # any would leave the kernel serving stale attributes or pages.
        self._send, self._recv = trio.open_memory_channel[Invalidation](math.inf)
        #: invalidations queued / delivered so far, and the count a refresh waits for
        self._queued = 0
        self._delivered = 0
        self._ticket = 0
        #: signalled whenever deliveries catch up with the ticket (threads wait on it)
        self._caught_up = threading.Condition()
        #: view paths that are (or are above) bind mounts laid over the view
        self.pinned: set[str] = set()
        #: "major:minor" of this FUSE connection (set once mounted), to find mounts over it
        self.fuse_dev: str | None = None

    def drop_inode(self, ino: int, attrs_only: bool = False) -> None:
        self._queue(Invalidation(Drop.INODE, ino, attrs_only))

    def drop_entry(self, parent_ino: int, name: str) -> None:
        self._queue(Invalidation(Drop.ENTRY, parent_ino, os.fsencode(name)))

    def _queue(self, inv: Invalidation) -> None:
        self._send.send_nowait(inv)
        self._queued += 1

    @property
    def settled(self) -> bool:
        """Whether every invalidation of the last refresh has reached the kernel."""
        return self._delivered >= self._ticket

    def wait_settled(self, timeout: float) -> bool:
        """From a thread: wait until :attr:`settled` (False after ``timeout`` seconds)."""
        with self._caught_up:
            return self._caught_up.wait_for(lambda: self.settled, timeout)

    async def notifier(self) -> None:
        """Deliver what is queued, in batches (a refresh of "/" queues one per cached inode)."""
        async for first in self._recv:
            batch = [first]
            while len(batch) < NOTIFY_BATCH:
                try:
                    batch.append(self._recv.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                await trio.to_thread.run_sync(deliver, batch)
            finally:
                with self._caught_up:
                    self._delivered += len(batch)
                    self._caught_up.notify_all()

    def pin(self, paths: list[str]) -> None:
        """Protect these bind targets (and the directories above them) from invalidation."""
        self.pinned = with_parents(paths)

    def refresh(self, paths: list[str]) -> int:
        """Forget what litefs and the kernel cache about ``paths`` and everything below them.
        Returns the number of inodes touched."""
        self.layers.forget_dirs()
        saved = self.pinned
        if self.fuse_dev is not None:
            try:
                self.pinned = saved | covered_paths(self.fuse_dev)
            except OSError as exc:
                log.warning("cannot read mountinfo to protect mounts over the view: %s", exc)
        try:
            touched = sum(self._refresh_one(p) for p in paths)
        finally:
            self.pinned = saved
        self._ticket = self._queued
        log.info("refresh %s: %d cached inodes invalidated", " ".join(paths), touched)
        return touched

    def _refresh_one(self, raw: str) -> int:
        path = "/" + "/".join(p for p in raw.split("/") if p and p != ".")
        if ".." in path.split("/"):
            return 0
        touched = 0
        self._drop_backing_cache(path)
        prefix = "/" if path == "/" else path + "/"
        for p, n in list(self.inodes.by_path.items()):
            if p == path or p.startswith(prefix):
                n.entry = None
                touched += 1
                self.drop_inode(n.ino)
                self._drop_name(p)
        # A named path that the kernel only knows as absent (negative dentry).
        if self.inodes.at(path) is None:
            self._drop_name(path)
        # New names in a named directory may sit behind negative dentries.
        node = self.inodes.at(path)
        if node is not None:
            try:
                names = self.children(path)
            except OSError as exc:  # a failing store must not make the refresh fail
                log.error("refresh %s: backing store fault: %s", path, exc)
                names = []
            for n in names:
                if child_path(path, n) not in self.pinned:
                    self.drop_entry(node.ino, n)
        return touched

    def _drop_backing_cache(self, path: str) -> None:
        """A changed file in a read-only layer: fetch its attributes from the server again
        and drop its cached pages, so the next read through the view
        gets the server's new bytes and not the node's NFS page cache (an image rewritten in
        place keeps its inode, and the client may trust its cache for up to acregmax)."""
        rel = path[1:]
        if not rel:
            return
        for layer in (self.layers.image, *self.layers.sources):
            try:
                st = layer.lstat(rel)
                if st is None or not stat.S_ISREG(st.st_mode):
                    continue  # only file bytes are cached that way; never open a device node
                fd = layer.open(rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue  # gone, a folder we may not read, a source that vanished...
            try:
                # Attributes too: the daemon's next lstat must not be the NFS client's cached
                # size, which the kernel would then keep for the whole attribute timeout.
                syscalls.statx_force_sync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass
            finally:
                os.close(fd)

    def _drop_name(self, path: str) -> None:
        if path == "/" or path in self.pinned:
            return
        parent, leaf = path.rsplit("/", 1)
        pn = self.inodes.at(parent or "/")
        if pn is not None:
            self.drop_entry(pn.ino, leaf)
