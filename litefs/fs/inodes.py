"""The inode table: view paths the kernel knows, with their lookup counts.

An inode stands for a *view path*, not for a backing file, so a copy-up (which moves a file
from a lower layer to an upper one) never changes the inode the kernel holds. Every successful
lookup, create and readdirplus entry adds one to the count; ``forget`` takes them away and an
inode whose count reaches zero leaves the table, so the table is bounded by what the kernel
caches. Inode numbers are never reused during a mount, so no generation numbers are needed.
"""

from __future__ import annotations

from typing import Any

ROOT_INODE = 1


class Node:
    """One inode: its current view path (None once unlinked), lookup count and cached entry."""

    __slots__ = ("entry", "ino", "lookups", "path")

    def __init__(self, ino: int, path: str | None, entry: Any) -> None:
        self.ino = ino
        self.path = path
        self.lookups = 0
        self.entry = entry


class InodeTable:
    """Maps inode numbers and view paths to nodes."""

    def __init__(self, root_entry: Any) -> None:
        self.by_ino: dict[int, Node] = {}
        self.by_path: dict[str, Node] = {}
        self._next = ROOT_INODE + 1
        root = Node(ROOT_INODE, "/", root_entry)
        root.lookups = 1  # the kernel never forgets the root
        self.by_ino[ROOT_INODE] = root
        self.by_path["/"] = root

    def __len__(self) -> int:
        return len(self.by_ino)

    def get(self, ino: int) -> Node | None:
        return self.by_ino.get(ino)

    def at(self, path: str) -> Node | None:
        return self.by_path.get(path)

    def ref(self, path: str, entry: Any) -> Node:
        """The node for ``path`` (created if new) with one more lookup counted."""
        node = self.by_path.get(path)
        if node is None:
            node = Node(self._next, path, entry)
            self._next += 1
            self.by_ino[node.ino] = node
            self.by_path[path] = node
        else:
            node.entry = entry
        node.lookups += 1
        return node

    def forget(self, ino: int, count: int) -> None:
        node = self.by_ino.get(ino)
        if node is None or ino == ROOT_INODE:
            return
        node.lookups -= count
        if node.lookups <= 0:
            del self.by_ino[ino]
            if node.path is not None and self.by_path.get(node.path) is node:
                del self.by_path[node.path]

    def detach(self, path: str) -> Node | None:
        """``path`` left the view (unlink, rmdir, replaced by rename); its node lives on while
        the kernel still holds it, but no longer answers for the path."""
        node = self.by_path.pop(path, None)
        if node is not None:
            node.path = None
            node.entry = None
        return node

    def move(self, old: str, new: str) -> None:
        """Renamed ``old`` to ``new``: the node and everything below it follow."""
        self.detach(new)
        prefix = old + "/"
        moved = [(p, n) for p, n in self.by_path.items() if p == old or p.startswith(prefix)]
        for p, _n in moved:
            del self.by_path[p]
        for p, n in moved:
            n.path = new + p[len(old) :]
            n.entry = None
            self.by_path[n.path] = n

    def exchange(self, a: str, b: str) -> None:
        """RENAME_EXCHANGE of ``a`` and ``b``: swap the two subtrees."""
        tmp = "\0exchange"
        self.move(a, tmp)
        self.move(b, a)
        self.move(tmp, b)

    def invalidate_below(self, path: str) -> None:
        """Forget cached entries at and below ``path`` (they will be located again)."""
        prefix = "/" if path == "/" else path + "/"
        for p, n in self.by_path.items():
            if p == path or p.startswith(prefix):
                n.entry = None
