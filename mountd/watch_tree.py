"""Noticing changes in the trees mountd serves: inotify on image rootimgs and litetree folders.

mountd watches every directory of each image's ``rootimg`` and of each litetree source
folder its running nodes use, and turns what the kernel reports into the view paths a
``litefs notify`` would name (``rootimg/etc/issue`` → ``/etc/issue``; a litetree folder's
``etc/motd`` → ``/etc/motd``). :class:`TreeWatch` owns one inotify descriptor (through
litefs.syscalls: three libc calls, no dependency) and yields batches of ``(root, view paths)``.

Why inotify and not fanotify: fanotify needs CAP_SYS_ADMIN and marks whole mounts or
filesystems, so mountd would see (and have to filter) every write on ``/install``'s
filesystem, and on older kernels it reports no directory events (creates, renames). inotify
needs no privilege and reports exactly the watched folders, at the price of one watch per
directory (``fs.inotify.max_user_watches``, about 1 KiB of kernel memory each). When the
watches run out (ENOSPC) that tree falls back to a periodic scan (``scan_interval``) and
mountd says so in one log line; an event queue overflow (IN_Q_OVERFLOW) becomes "everything
under that root changed".

The pure part (:func:`coalesce`, :func:`view_path`) is apart from the I/O and unit tested.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import trio

from litefs import syscalls

IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

#: What changes a file's content, metadata or a folder's listing (not reads or opens).
MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE
        | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW
        | IN_EXCL_UNLINK)
_EVENT = struct.Struct("iIII")
#: Distinct paths one announcement may name; more collapses to the root ("/").
MAX_PATHS = 256
#: Folders one root's watch walk visits before falling back to scanning; bounds the work a
#: runaway tree (a litetree row naming "mn:/") can cause.
MAX_DIRS = 200_000
#: Entries a fallback scan reads; a bigger tree is not scanned at all (one log line: its
#: changes then need ``litefs notify``) rather than costing seconds of I/O every interval.
MAX_SCAN = 1_000_000


# --- pure core -----------------------------------------------------------------------------


def view_path(rel: str) -> str:
    """A path relative to a watched root → the absolute view path it appears at."""
    rel = rel.strip("/")
    return "/" + rel if rel else "/"


def coalesce(paths: Iterable[str], limit: int = MAX_PATHS) -> list[str]:
    """Sorted, without duplicates or paths below another listed one; ``["/"]`` past ``limit``.

    A refresh of a path covers everything below it, so ``/etc`` makes ``/etc/motd``
    redundant; too many paths cost more to send and apply than refreshing everything."""
    out: list[str] = []
    # By components, so that a folder's descendants follow it ("/c", "/c/a", "/c.").
    for p in sorted(set(paths), key=lambda p: p.split("/")):
        if p == "/":
            return ["/"]
        if out and (p == out[-1] or p.startswith(out[-1].rstrip("/") + "/")):
            continue
        out.append(p)
        if len(out) > limit:
            return ["/"]
    return out


# --- inotify --------------------------------------------------------------------------------


class WatchLimit(OSError):
    """fs.inotify.max_user_watches is used up."""


class Inotify:
    """One inotify descriptor (non-blocking; close it when done)."""

    def __init__(self) -> None:
        self.fd = syscalls.inotify_init(IN_NONBLOCK | IN_CLOEXEC)

    def add(self, path: str) -> int:
        try:
            return syscalls.inotify_add_watch(self.fd, path, MASK)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise WatchLimit(exc.errno, "fs.inotify.max_user_watches reached") from None
            raise

    def remove(self, wd: int) -> None:
        syscalls.inotify_rm_watch(self.fd, wd)

    def read(self) -> list[tuple[int, int, str]]:
        """Pending events as (wd, mask, name); [] when none."""
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        out = []
        i = 0
        while i + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, i)
            i += _EVENT.size
            name = data[i:i + length].rstrip(b"\0")
            i += length
            out.append((wd, mask, os.fsdecode(name)))
        return out

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def max_user_watches() -> int | None:
    try:
        with open("/proc/sys/fs/inotify/max_user_watches") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


# --- trees ---------------------------------------------------------------------------------


@dataclass
class _Root:
    path: str  # as the caller named it (the key of what we deliver)
    real: str  # symlinks resolved: /install may be a link to another disk
    wds: dict[int, str] = field(default_factory=dict)  # wd → folder relative to the root
    scanning: bool = False  # out of watches: periodic scan instead
    snapshot: dict[str, tuple[int, int, int, int]] | None = None


Log = Callable[..., None]


class TreeWatch:
    """Watches a set of root folders; :meth:`run` delivers ``(root, view paths)`` batches.

    ``set_roots`` may be called at any time (the set follows the images and litetree folders
    the running nodes use); a root that does not exist is skipped and retried at the next
    ``set_roots``. ``settle`` is how long events are gathered into one batch (an rsync of a
    package touches many files: one announcement, not hundreds).
    """

    def __init__(self, *, log: Log | None = None, settle: float = 0.1,
                 scan_interval: float = 30.0, max_paths: int = MAX_PATHS) -> None:
        self.log = log or (lambda *a, **k: None)
        self.settle = settle
        self.scan_interval = scan_interval
        self.max_paths = max_paths
        self._ino = Inotify()
        self._roots: dict[str, _Root] = {}
        self._lock = threading.RLock()
        self._by_wd: dict[int, _Root] = {}
        self._pending: dict[str, set[str]] = {}
        self._wake = trio.Event()

    @property
    def watch_count(self) -> int:
        return len(self._by_wd)

    def roots(self) -> set[str]:
        return set(self._roots)

    def close(self) -> None:
        self._ino.close()

    def set_roots(self, paths: Iterable[str]) -> None:
        # Runs in a worker thread (a big tree takes a while to walk) while the loop's _handle
        # may add or drop watches of the same roots: one lock keeps both sides consistent.
        with self._lock:
            self._set_roots(paths)

    def _set_roots(self, paths: Iterable[str]) -> None:
        want = {os.path.normpath(p) for p in paths}
        for gone in set(self._roots) - want:
            root = self._roots.pop(gone)
            for wd in list(root.wds):
                self._ino.remove(wd)
                self._by_wd.pop(wd, None)
        for path in sorted(want - set(self._roots)):
            if path == "/" or not os.path.isdir(path):
                continue  # "/" is never an image or a litetree folder worth a watch each
            root = _Root(path, os.path.realpath(path))
            self._roots[path] = root
            self._watch_tree(root, "")

    def _watch_tree(self, root: _Root, rel: str) -> None:
        """Watch ``rel`` and every folder below it (never following symlinks)."""
        if root.scanning:
            return
        stack = [rel]
        visited = 0
        while stack:
            sub = stack.pop()
            visited += 1
            if visited > MAX_DIRS:
                self._fall_back(root, f"more than {MAX_DIRS} folders")
                return
            full = os.path.join(root.real, sub) if sub else root.real
            try:
                wd = self._ino.add(full)
            except WatchLimit:
                self._fall_back(root, f"fs.inotify.max_user_watches ({max_user_watches()}) "
                                "reached; raise it with sysctl fs.inotify.max_user_watches=N")
                return
            except OSError:
                continue  # vanished meanwhile, or not a folder (IN_ONLYDIR)
            root.wds[wd] = sub
            self._by_wd[wd] = root
            try:
                with os.scandir(full) as it:
                    for entry in it:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(os.path.join(sub, entry.name) if sub else entry.name)
            except OSError:
                continue

    def _fall_back(self, root: _Root, why: str) -> None:
        for wd in list(root.wds):
            self._ino.remove(wd)
            self._by_wd.pop(wd, None)
        root.wds.clear()
        root.scanning = True
        root.snapshot = scan(root.real)
        if len(root.snapshot) >= MAX_SCAN:
            root.snapshot = None
            self.log("watch_gave_up", level="warning", root=root.path, reason=why,
                     message=f"more than {MAX_SCAN} entries: too big to scan; "
                     "announce its changes with 'litefs notify'")
            return
        self.log("watch_fallback", level="warning", root=root.path, reason=why,
                 scan_seconds=self.scan_interval)

    def _handle(self, events: list[tuple[int, int, str]]) -> None:
        with self._lock:
            self._handle_locked(events)

    def _handle_locked(self, events: list[tuple[int, int, str]]) -> None:
        for wd, mask, name in events:
            if mask & IN_Q_OVERFLOW:
                # The kernel dropped events: every root may have changed anywhere.
                for path in list(self._roots):  # set_roots may run in a thread
                    self._pending[path] = {"/"}
                continue
            root = self._by_wd.get(wd)
            if root is None:
                continue
            sub = root.wds.get(wd)
            if sub is None:
                continue
            if mask & IN_IGNORED:
                root.wds.pop(wd, None)
                self._by_wd.pop(wd, None)
                continue
            rel = os.path.join(sub, name) if name else sub
            pending = self._pending.setdefault(root.path, set())
            if pending != {"/"}:
                pending.add(view_path(rel))
                if len(pending) > 4 * self.max_paths:  # bounded: past this it is "all"
                    self._pending[root.path] = {"/"}
            if mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
                self._watch_tree(root, rel)  # a new folder: watch it and what it holds

    def _take(self) -> list[tuple[str, list[str]]]:
        out = [(root, coalesce(paths, self.max_paths)) for root, paths in
               sorted(self._pending.items()) if paths]
        self._pending.clear()
        return out

    async def run(self, deliver: Callable[[str, list[str]], None]) -> None:
        """Forever: gather events for ``settle`` seconds, then ``deliver(root, paths)``."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._scan_loop, deliver)
            while True:
                await trio.lowlevel.wait_readable(self._ino.fd)
                self._handle(self._ino.read())
                await trio.sleep(self.settle)
                # Up to a bounded number of further reads: a storm of events still yields
                # batches, never an endless gathering.
                for _ in range(64):
                    more = self._ino.read()
                    if not more:
                        break
                    self._handle(more)
                for root, paths in self._take():
                    deliver(root, paths)

    async def _scan_loop(self, deliver: Callable[[str, list[str]], None]) -> None:
        while True:
            await trio.sleep(self.scan_interval)
            for root in list(self._roots.values()):
                if not root.scanning or root.snapshot is None:
                    continue
                new = await trio.to_thread.run_sync(scan, root.real)
                old = root.snapshot or {}
                changed = [view_path(p) for p in set(old) ^ set(new)]
                changed += [view_path(p) for p in new if p in old and new[p] != old[p]]
                root.snapshot = new
                if changed:
                    deliver(root.path, coalesce(changed, self.max_paths))


def scan(top: str) -> dict[str, tuple[int, int, int, int]]:
    """relative path → (inode, size, mtime_ns, ctime_ns) of everything under ``top``."""
    out: dict[str, tuple[int, int, int, int]] = {}
    stack = [""]
    while stack and len(out) < MAX_SCAN:
        sub = stack.pop()
        full = os.path.join(top, sub) if sub else top
        try:
            with os.scandir(full) as it:
                for entry in it:
                    rel = os.path.join(sub, entry.name) if sub else entry.name
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    out[rel] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(rel)
        except OSError:
            continue
    return out
