"""The inode table and inode numbers: what the kernel holds, and which number each file has.

**Numbers.** An inode number is a stable function of the backing file's identity, not of
the view path (:func:`backing_ino`): the layer's fixed slot (image 1, tmpfs 2, persistent 3,
localdisk 4, source *i* 8+*i*; raw ``/.statelite`` access to a layer has the slot with bit 6
set) in bits 56–62 and the backing ``st_ino`` in bits 0–55, when the file lives on the
layer's own device and its number fits in 56 bits — kernel overlayfs's ``xino`` idea. The
layer's device number is deliberately left out of that form, so an NFS store that gets
another anonymous device number at the next boot keeps its numbers. A file on another
device below a layer (a mount inside the image) or with a wider number gets a 63-bit hash of
(slot, device, inode) with bit 63 set (mergerfs's ``devino-hash``): two such files could in
theory share a number, with odds of about one in 2^63 per pair. Entries no layer backs (the
synthesised ``/.statelite`` tree, implied directories, ``/etc/mtab``, ``con`` files) get a
hash of their view path in slot 0. The view's root is always 1 (FUSE's root node id).

So every name of a hard link has one number, and the same number comes back after the
kernel evicts the inode and looks the path up again, and after a remount.

**Node id = st_ino.** pyfuse3 sends ``EntryAttributes.st_ino`` as the kernel's node id *and*
as the attribute's inode number, so they cannot differ; and they should not: the kernel
keeps one inode (one attribute cache, one nlink) per node id, so hard links must share the
node id to see each other's chmod, chown, link count and ctime at once. A node therefore
stands for a backing file and may have several view paths (its names); ``path`` is the one
most recently looked up, which is also the one its cached ``entry`` was located from.

**Copy-up.** A merged directory (an upper directory, not opaque, over a lower one) has the
lower directory's number, decided from the layers at lookup time: copying a directory up
never changes its number, across eviction and remount. A copied-up *file* keeps its number
for the life of the mount: the node the kernel holds stays, and the upper file's identity
becomes an *alias* of that number (one small dict entry per copy-up; it survives eviction).
Across remounts a copied-up regular file keeps the number through an *origin* xattr
(:data:`ORIGIN_XATTR`, kernel overlayfs's ``trusted.overlay.origin`` idea): copy-up writes the
lower file's number on the temp file before the rename publishes it, and a lookup of an
upper file reads it back (one ``getxattr``). From the layers alone a copy-up cannot be told
from a new file made after the lower one was deleted; the xattr tells them apart (a new file
never has it). The value is validated (:func:`decode_origin`): only a plain lower-layer number
(image or source slot, not hashed) is accepted, so a forged value can never take a tmpfs,
persistent, raw or path number; and :meth:`InodeTable.number` refuses an origin whose number
a node the kernel holds for another file already has. A store without xattrs (NFSv3) keeps
the older rule: after a remount a copied-up file has its upper-layer number.

**Image hard links** share one number where nothing can be written (no rule, ``ro``). Under a
writable rule each name has a number of its own (a hash of the file's number and the path,
stable across remounts): FUSE's open and setattr name only the node, not the name the caller
used, so a node shared by several names could not tell which one to copy up, and a copy-up
makes the names separate files anyway (as in overlayfs without ``index=on``). Hard links made
through the view live in one upper layer and always share one node.

**Reuse.** A backing store reuses an inode number only once the old file is gone for good
(no name, no open descriptor: litefs holds one while the kernel has the file open), so a
number the kernel may still hold for an unlinked file never names another live file. A
directory reached at two view paths (a bind mount inside a layer) gets a salted hash at the
second path, because the kernel gives a directory inode one name only. Every lookup, create and readdirplus entry adds one to a node's count; ``forget``
takes them away, and a node whose count reaches zero leaves the table, so the table is bounded
by what the kernel caches.
"""

from __future__ import annotations

import hashlib
from typing import Any

ROOT_INODE = 1
#: bits of the backing inode number kept as is; the layer slot sits above them
INO_BITS = 56
SLOT_SOURCE0 = 8
RAW_BIT = 0x40
HASHED_BIT = 1 << 63
_SLOTS = {"image": 1, "tmpfs": 2, "persistent": 3, "localdisk": 4}


def layer_slot(name: str) -> int:
    """The fixed slot of a layer named as provenance shows it (``image``, ``source[2]``...)."""
    slot = _SLOTS.get(name)
    if slot is not None:
        return slot
    if name.startswith("source[") and name.endswith("]"):
        i = int(name[7:-1])
        if i < RAW_BIT - SLOT_SOURCE0:
            return SLOT_SOURCE0 + i
        return RAW_BIT - 1  # more sources than slots: they share one (numbers then hashed)
    raise ValueError(f"unknown layer {name}")


def _hash63(*parts: object) -> int:
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") | HASHED_BIT


def backing_ino(slot: int, root_dev: int, st_dev: int, st_ino: int) -> int:
    """The view's inode number of backing file (``st_dev``, ``st_ino``) in layer ``slot``
    whose root is on ``root_dev``."""
    if st_dev == root_dev and 0 <= st_ino < (1 << INO_BITS) and slot < (1 << 7):
        return (slot << INO_BITS) | st_ino
    return _hash63(slot, st_dev, st_ino)


def path_ino(path: str) -> int:
    """The number of an entry no layer backs: slot 0, a hash of its view path (never 0 or 1)."""
    h = hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    n = int.from_bytes(h, "little") & ((1 << INO_BITS) - 1)
    return n if n > ROOT_INODE else n + 2


#: the xattr of an upper file holding the view number its lower original had (copy-up);
#: trusted.* so that only root (the daemon) can set it on the store; never shown in the view
ORIGIN_XATTR = "trusted.litefs.ino"
_ORIGIN_LEN = 16
_LOWER_SLOTS = frozenset({_SLOTS["image"], *range(SLOT_SOURCE0, RAW_BIT)})


def encode_origin(ino: int) -> bytes | None:
    """The origin xattr value for lower number ``ino`` (16 lowercase hex digits), or None when
    ``ino`` is not a number an origin may carry (hashed, or not a lower layer's)."""
    if ino < 0 or ino & HASHED_BIT or (ino >> INO_BITS) not in _LOWER_SLOTS:
        return None
    return b"%016x" % ino


def decode_origin(raw: bytes) -> int | None:
    """The lower number an origin xattr value names, or None if it is not exactly what
    :func:`encode_origin` writes (garbage and forged values are ignored, never trusted)."""
    if len(raw) != _ORIGIN_LEN or raw.strip(b"0123456789abcdef"):
        return None
    ino = int(raw, 16)
    return ino if encode_origin(ino) == raw else None


def salted_ino(ino: int, salt: object) -> int:
    """Another number for a file whose natural one is taken by a node still held."""
    return _hash63("salt", ino, salt)


class Inode:
    """One inode: its names (view paths, most recent first), lookup count and cached entry."""

    __slots__ = ("borrowed", "bound", "entry", "ident", "ino", "lookups", "multi", "paths")

    def __init__(self, ino: int, path: str | None, entry: Any) -> None:
        self.ino = ino
        self.paths: dict[str, None] = {} if path is None else {path: None}
        self.lookups = 0
        self.entry = entry
        #: a non-directory with more than one link when first seen (never aliased on copy-up)
        self.multi = False
        #: the backing identity (slot, st_dev, st_ino) it was numbered from, if backed
        self.ident: tuple[int, int, int] | None = None
        #: its number came from an origin xattr (it is a lower file's number)
        self.borrowed = False
        #: what its number was last worked out from (litefs.fs.tree.Tree.bind): the same
        #: again while the kernel holds it gives the same number, so it is not worked out again
        self.bound: int | None = None

    @property
    def path(self) -> str | None:
        """The name most recently looked up (None once every name is gone)."""
        for p in self.paths:
            return p
        return None

    def _front(self, path: str) -> None:
        for first in self.paths:
            if first == path:
                return  # the common case (one name, looked up again): nothing to rebuild
            break
        self.paths.pop(path, None)
        self.paths = {path: None, **self.paths}


class InodeTable:
    """Maps inode numbers and view paths to nodes."""

    def __init__(self, root_entry: Any) -> None:
        self.by_ino: dict[int, Inode] = {}
        self.by_path: dict[str, Inode] = {}
        #: backing identity -> number, for files copied up while their node was held
        self.aliases: dict[tuple[int, int, int], int] = {}
        self._salt = 0
        root = Inode(ROOT_INODE, "/", root_entry)
        root.lookups = 1  # the kernel never forgets the root
        self.by_ino[ROOT_INODE] = root
        self.by_path["/"] = root

    def __len__(self) -> int:
        return len(self.by_ino)

    def get(self, ino: int) -> Inode | None:
        return self.by_ino.get(ino)

    def at(self, path: str) -> Inode | None:
        return self.by_path.get(path)

    def number(
        self,
        path: str,
        ident: tuple[int, int, int] | None,
        natural: int,
        is_dir: bool,
        origin: int | None = None,
    ) -> int:
        """The number ``path`` gets for a file of identity ``ident`` (None: not backed) whose
        natural number is ``natural``: an alias made at copy-up, the number the kernel already
        holds for this path when the backing file changed under it (copy-up), or a salted
        number when ``natural`` belongs to a node held for another file.

        ``origin`` is the lower number an upper file's origin xattr names (copied up in an
        earlier mount): used unless a node the kernel holds for another file at another path
        has it (the lower file is visible again, or two upper files claim one origin)."""
        if path == "/":
            return ROOT_INODE
        if ident is not None:
            alias = self.aliases.get(ident)
            if alias is not None:
                natural = alias
            elif origin is not None:
                owner = self.by_ino.get(origin)
                if owner is None or owner.ident == ident or owner is self.by_path.get(path):
                    natural = origin
        held = self.by_path.get(path)
        if (
            held is not None
            and held.ino not in (natural, ROOT_INODE)
            and ident is not None
            and not held.multi
            and held.lookups > 0
        ):
            # The backing file under a path the kernel holds changed (a copy-up): keep it.
            self.aliases[ident] = held.ino
            return held.ino
        other = self.by_ino.get(natural)
        if other is not None and other is not held:
            live = other.path
            if (
                (live is None and other.ident != ident)
                or (
                    is_dir and live is not None and live != path and self.by_path.get(live) is other
                )
                or (other.borrowed and other.ident != ident and not is_dir)
            ):
                # The number is held for an unlinked file still open (a new file at its
                # path has its origin's number), or one directory shows at two view paths
                # (a bind mount inside a layer; the kernel allows a directory one name): a
                # number of its own, so the kernel never takes one inode for the other.
                # Likewise a lower file whose number an upper file with that origin holds
                # (its whiteout was removed by hand): the two are different files.
                self._salt += 1
                n = salted_ino(natural, self._salt)
                if ident is not None:
                    self.aliases[ident] = n
                return n
        return natural

    def ref(
        self,
        path: str,
        entry: Any,
        ino: int,
        multi: bool = False,
        ident: tuple[int, int, int] | None = None,
        borrowed: bool = False,
    ) -> Inode:
        """The node ``ino`` (created if new) as ``path``, with one more lookup counted."""
        node = self.by_ino.get(ino)
        if node is None:
            node = Inode(ino, path, entry)
            node.multi = multi
            node.ident = ident
            node.borrowed = borrowed
            self.by_ino[ino] = node
        else:
            node._front(path)
            node.entry = entry
        old = self.by_path.get(path)
        if old is not None and old is not node:
            old.paths.pop(path, None)
            if old.entry is not None and old.path != getattr(old.entry, "path", None):
                old.entry = None
        self.by_path[path] = node
        node.lookups += 1
        return node

    def forget(self, ino: int, count: int) -> None:
        node = self.by_ino.get(ino)
        if node is None or ino == ROOT_INODE:
            return
        node.lookups -= count
        if node.lookups <= 0:
            del self.by_ino[ino]
            for p in node.paths:
                if self.by_path.get(p) is node:
                    del self.by_path[p]

    def detach(self, path: str) -> Inode | None:
        """``path`` left the view (unlink, rmdir, replaced by rename); its node lives on while
        the kernel still holds it, answering for its other names if it has any."""
        node = self.by_path.pop(path, None)
        if node is not None:
            was = node.path
            node.paths.pop(path, None)
            if was == path:
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
            np = new + p[len(old) :]
            n.paths = {(np if q == p else q): None for q in n.paths}
            n.entry = None
            self.by_path[np] = n

    def exchange(self, a: str, b: str) -> None:
        """RENAME_EXCHANGE of ``a`` and ``b``: swap the two subtrees."""
        tmp = "\0exchange"
        self.move(a, tmp)
        self.move(b, a)
        self.move(tmp, b)
