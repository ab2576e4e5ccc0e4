"""Running nodes follow every change: table edits become plan pushes, tree edits announcements.

:class:`Follower` runs beside mountd's listeners (``mountd --follow``, the default):

* every ``interval`` seconds (0.2) it asks the catalog for the current view, which compares
  the database fingerprint and reloads when it moved; on PostgreSQL a LISTEN on the change
  triggers (:mod:`.db_watch`) wakes it at once. A new generation wakes every subscription,
  which then sends its node the new plan if (and only if) that node's plan changed; the node
  swaps it live (``litefs.fs.control.change_plan``, as ``litefs refresh --plan`` does);
* it keeps an inotify watch (:mod:`.watch_tree`) on the rootimg of every image and every
  litetree folder on this host that a subscribed node uses, and announces what changed to
  the nodes concerned, exactly as ``litefs notify`` would.

Which folders are "on this host": an image's rootimg always (``linuximage.rootimgdir``);
a litetree folder ``server:/path`` when ``server`` is one of this host's addresses or names
(``site.master``, the hostname). ``watch_root`` prefixes every such path (a test cluster
keeps the MN's exports under one folder; in production it is ``/``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from .catalog import Catalog, TableView
from .db_watch import DbWatch
from .hub import Hub
from .watch_tree import TreeWatch

#: Seconds between looks for watch folders that did not exist (yet).
ROOTS_RETRY = 10.0
#: Announcements from other mountds waiting to be expanded; more are dropped (and logged).
REMOTE_QUEUE = 64


@dataclass
class WatchTargets:
    """Local folder → who to tell: an image's nodes (by image name) or a set of nodes."""

    images: dict[str, str] = field(default_factory=dict)  # folder → osimage name
    sources: dict[str, set[str]] = field(default_factory=dict)  # folder → nodes

    def roots(self) -> set[str]:
        return set(self.images) | set(self.sources)


def local_path(root: str, path: str) -> str:
    """``path`` (absolute, on this host) under the ``watch_root`` prefix, normalised."""
    path = os.path.normpath("/" + path.lstrip("/"))
    return os.path.normpath(os.path.join(root, path.lstrip("/"))) if root != "/" else path


class LocalHost:
    """Is a litetree server this host? Cached; addresses are tested by binding to them."""

    def __init__(self, extra_names: tuple[str, ...] = ()) -> None:
        host = socket.gethostname()
        self.names = {"localhost", host, host.split(".")[0], *extra_names}
        self._cache: dict[str, bool] = {}

    def __call__(self, server: str) -> bool:
        got = self._cache.get(server)
        if got is None:
            got = self._check(server)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[server] = got
        return got

    def _check(self, server: str) -> bool:
        if server in self.names or server.split(".")[0] in self.names:
            return True
        try:
            infos = socket.getaddrinfo(server, None, proto=socket.IPPROTO_UDP)
        except (OSError, UnicodeError):
            return False
        for family, _t, _p, _c, addr in infos[:8]:
            try:
                with socket.socket(family, socket.SOCK_DGRAM) as s:
                    s.bind((addr[0], 0))  # only a local address can be bound
                return True
            except OSError:
                continue
        return False


def watch_targets(view: TableView, nodes: set[str], *, watch_root: str,
                  is_local: Callable[[str], bool]) -> WatchTargets:
    """Folders to watch for the running ``nodes`` (runs in a worker thread)."""
    out = WatchTargets()
    for node in sorted(nodes):
        entry = view.plan(node)
        if entry.plan is None:
            continue
        image_dir = view.image_dirs.get(entry.plan.image)
        if image_dir:
            out.images[local_path(watch_root, image_dir)] = entry.plan.image
        for src in entry.plan.sources:
            if src.server and is_local(src.server):
                out.sources.setdefault(local_path(watch_root, src.path), set()).add(node)
    return out


class Follower:
    """See the module docstring. ``announce(nodes_or_target, paths)`` delivers locally."""

    def __init__(
        self,
        catalog: Catalog,
        hub: Hub,
        *,
        announce: Callable[[str, list[str]], Any],
        log: Callable[..., None],
        interval: float = 0.2,
        watch_trees: bool = True,
        listen_db: bool = True,
        watch_root: str = "/",
        scan_interval: float = 30.0,
        on_tables: Callable[[], None] | None = None,
        origin: str | None = None,
        announce_remote: Callable[[str, list[str]], Awaitable[None]] | None = None,
    ) -> None:
        self.catalog = catalog
        self.hub = hub
        self.announce = announce
        # Another mountd's announcement carries a noderange that came over the database, where
        # any role that can connect may NOTIFY: it is queued (bounded, excess dropped and
        # logged) and expanded off the event loop by ``announce_remote``, never inline.
        self.announce_remote = announce_remote
        self._remote_send, self._remote_recv = trio.open_memory_channel[tuple[str, list[str]]](
            REMOTE_QUEUE)
        self.log = log
        self.interval = interval
        self.watch_trees = watch_trees
        self.watch_root = watch_root
        self.scan_interval = scan_interval
        self.on_tables = on_tables
        self._wake = trio.Event()
        self.db_watch = DbWatch(catalog.engine, on_tables=self._tables_changed,
                                on_announce=self._remote_announce, log=log)
        if origin is not None:
            self.db_watch.origin = origin
        self.trees: TreeWatch | None = None
        self.listen_db = listen_db
        self.targets = WatchTargets()
        self._is_local = LocalHost()
        self._roots_retry = 0.0
        self.roots_retry = ROOTS_RETRY

    def _tables_changed(self) -> None:
        self.catalog.invalidate()
        if self.on_tables is not None:
            self.on_tables()
        self._wake.set()

    def _remote_announce(self, target: str, paths: list[str]) -> None:
        if self.announce_remote is None:
            self.announce(target, paths)
            return
        try:
            self._remote_send.send_nowait((target, paths))
        except trio.WouldBlock:
            self.log("announce_dropped", level="warning", target=target[:200],
                     reason=f"more than {REMOTE_QUEUE} announcements from the database queued")

    async def _remote_loop(self) -> None:
        assert self.announce_remote is not None
        async for target, paths in self._remote_recv:
            await self.announce_remote(target, paths)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            if self.listen_db:
                nursery.start_soon(self.db_watch.run)
                if self.announce_remote is not None:
                    nursery.start_soon(self._remote_loop)
            if self.watch_trees:
                try:
                    self.trees = TreeWatch(log=self.log, scan_interval=self.scan_interval)
                except OSError as exc:
                    self.log("watch_unavailable", level="warning", error=str(exc),
                             fallback="litefs notify")
                if self.trees is not None:
                    nursery.start_soon(self.trees.run, self._tree_changed)
            try:
                await self._loop()
            finally:
                if self.trees is not None:
                    self.trees.close()

    async def _loop(self) -> None:
        generation = None
        hub_version = None
        while True:
            with trio.move_on_after(self.interval):
                await self._wake.wait()
            self._wake = trio.Event()
            try:
                view = await self.catalog.view()
            except Exception:  # the catalog logs database trouble; keep following
                continue
            if view.generation != generation:
                # Also on the first look: a change that lands before this loop first runs
                # (a chtab just after start) must not become the baseline unannounced. A
                # subscriber whose plan did not change is sent nothing.
                woken = self.hub.wake_plans()
                if generation is not None or woken:
                    self.log("tables_followed", generation=view.generation, subscribers=woken)
                generation = view.generation
                hub_version = None  # plans changed: folders may have too
            if self.trees is None:
                continue
            # A folder that does not exist yet (an image still being synced to this service
            # node) is looked for again every ``roots_retry`` seconds.
            missing = self.targets.roots() - self.trees.roots()
            if self.hub.version != hub_version or (
                    missing and trio.current_time() >= self._roots_retry):
                hub_version = self.hub.version
                self._roots_retry = trio.current_time() + self.roots_retry
                await self._update_roots(view)

    async def _update_roots(self, view: TableView) -> None:
        nodes = self.hub.subscribed_nodes()
        targets = await trio.to_thread.run_sync(
            lambda: watch_targets(view, nodes, watch_root=self.watch_root,
                                  is_local=self._is_local))
        assert self.trees is not None
        if targets.roots() != self.trees.roots():
            before = self.trees.roots()
            start = trio.current_time()
            # set_roots skips folders that do not exist; they are retried later.
            await trio.to_thread.run_sync(self.trees.set_roots, targets.roots())
            if self.trees.roots() != before:
                self.log("watching", roots=sorted(self.trees.roots()),
                         watches=self.trees.watch_count,
                         seconds=round(trio.current_time() - start, 3))
        self.targets = targets

    def _tree_changed(self, root: str, paths: list[str]) -> None:
        image = self.targets.images.get(root)
        if image is not None:
            self.announce(image, paths)
        nodes = self.targets.sources.get(root)
        if nodes:
            self.announce(",".join(sorted(nodes)), paths)
