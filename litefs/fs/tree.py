"""The view as the kernel sees it: inodes, the entries that answer them, their numbers and
attributes.

A node (:class:`litefs.fs.inodes.Inode`) stands for a file the kernel holds; its entry
(:class:`litefs.fs.view.Entry`) says which layer answers it now and is located again from the
root when dropped. Directory entries stay while the kernel holds the directory (their children
need them); file entries are kept in a bounded LRU and located again on the next request. The
numbering scheme (backing identity, merged directories, copy-up origins) is described in
:mod:`litefs.fs.inodes`; this module applies it to entries.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import OrderedDict

import pyfuse3

from litefs.fs import inodes as inonum
from litefs.fs.inodes import ROOT_INODE, Inode, InodeTable
from litefs.fs.view import BACKED, CON, IMPLIED, SYNTH_DIR, SYNTH_LINK, Entry, View, child_path
from litefs.options import VALID_OPTIONS, Family, family_of

#: cache timeout (s) for paths that follow their sources live (the ro family)
LIVE_TIMEOUT = 1.0
#: how many file entries stay cached (directories stay while the kernel holds them)
FILE_ENTRIES = 4096
#: options of the family that follows its sources live
_LIVE_OPTIONS = frozenset(o for o in VALID_OPTIONS if family_of(o) is Family.RO)

Ident = tuple[int, int, int]


def is_live(e: Entry) -> bool:
    """Does ``e`` follow its sources live (the kernel must ask again soon)?"""
    res = e.res
    return res is not None and res.rule is not None and res.rule.option in _LIVE_OPTIONS


def parent_of(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


class Tree:
    """The inode table of one mount and the entries behind it."""

    def __init__(self, view: View, cache_timeout: float) -> None:
        self.view = view
        self.layers = view.layers
        self.inodes = InodeTable(view.root())
        self.timeout = cache_timeout
        #: file entries kept (LRU); directories keep theirs while the kernel holds them
        self._file_entries: OrderedDict[int, None] = OrderedDict()

    # --- nodes and entries --------------------------------------------------------------

    def node(self, ino: int) -> Inode:
        node = self.inodes.get(ino)
        if node is None:
            raise pyfuse3.FUSEError(errno.ESTALE)
        return node

    def entry(self, node: Inode) -> Entry:
        e = node.entry
        if e is None:
            if node.path is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            e = self.locate(node.path)
            if e is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            node.entry = e
        if not e.is_dir:
            self.keep(node)
        return e

    def dir_entry(self, ino: int) -> tuple[Inode, Entry]:
        """The node ``ino`` and its entry, which must be a directory (else ENOTDIR)."""
        node = self.node(ino)
        e = self.entry(node)
        if not e.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return node, e

    def parent_entry(self, node: Inode) -> Entry | None:
        return self.locate(parent_of(node.path or "/"))

    def keep(self, node: Inode) -> None:
        """Remember a file's entry for a while; directories keep theirs (children need them)."""
        fe = self._file_entries
        fe[node.ino] = None
        fe.move_to_end(node.ino)
        if len(fe) > FILE_ENTRIES:
            old, _ = fe.popitem(last=False)
            n = self.inodes.get(old)
            if n is not None and n.entry is not None and not n.entry.is_dir:
                n.entry = None

    def kept(self, ino: int) -> bool:
        return ino in self._file_entries

    def replied(self, node: Inode, e: Entry) -> None:
        """The kernel has the attributes: keep only what later requests need."""
        e.st = None
        if not e.is_dir:
            self.keep(node)

    def locate(self, path: str) -> Entry | None:
        """Locate a path from the root, reusing entries the table already holds."""
        node = self.inodes.at(path)
        if node is not None and node.entry is not None:
            return node.entry
        if path == "/":
            e = self.view.root()
        else:
            pe = self.locate(parent_of(path))
            if pe is None or not pe.is_dir:
                return None
            e = self.view.locate(path, pe)
        if node is not None:
            node.entry = e
        return e

    def restat(self, node: Inode) -> Entry:
        """The node's entry with fresh attributes from its backing layer."""
        e = self.entry(node)
        if e.kind is BACKED and e.layer is not None:
            st = e.layer.lstat(e.rel)
            if st is None:
                node.entry = None
                e = self.entry(node)
            else:
                e.st = st
        return e

    def children(self, path: str) -> list[str]:
        """Names in view directory ``path`` ([] if it is not one)."""
        e = self.locate(path)
        return self.view.names(e) if e is not None and e.is_dir else []

    def is_empty(self, path: str, e: Entry) -> bool:
        """Nothing visible in directory ``e`` (at ``path``)?"""
        return all(self.view.locate(child_path(path, n), e) is None for n in self.view.names(e))

    # --- attributes ---------------------------------------------------------------------

    def attr(self, node: Inode, e: Entry) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        if e.kind is SYNTH_LINK:
            a.st_mode = stat.S_IFLNK | 0o777
            a.st_nlink = 1
            a.st_size = len(e.target)
        else:
            _fill(a, e, self._stat_of(e))
        a.st_ino = node.ino
        a.generation = 0
        # ro paths follow their sources live: the kernel asks again after a second.
        t = LIVE_TIMEOUT if is_live(e) else self.timeout
        a.entry_timeout = t
        a.attr_timeout = t
        return a

    def _stat_of(self, e: Entry) -> os.stat_result:
        if e.kind is SYNTH_DIR or e.kind is IMPLIED:
            return self.view.synth_st
        st = e.st
        if st is None and (e.kind is BACKED or e.kind is CON) and e.layer is not None:
            st = e.st = e.layer.lstat(e.rel)
        if st is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return st

    def detached_attr(self, node: Inode, fd: int) -> pyfuse3.EntryAttributes:
        """Attributes of a file unlinked while open, from its descriptor."""
        return self.attr(node, Entry("", BACKED, None, st=os.fstat(fd)))

    def reply(self, node: Inode, e: Entry) -> pyfuse3.EntryAttributes:
        """The attributes for an entry reply about ``node``."""
        a = self.attr(node, e)
        self.replied(node, e)
        return a

    def new_entry(self, parent: Inode, name: str) -> pyfuse3.EntryAttributes:
        """The entry reply for a name just made below ``parent``."""
        path = child_path(parent.path or "/", name)
        e = self.view.locate(path, self.entry(parent))
        if e is None:
            raise pyfuse3.FUSEError(errno.EIO)
        return self.reply(self.bind(path, e), e)

    # --- inode numbers (the scheme is in litefs.fs.inodes) ------------------------------

    def ident(self, e: Entry) -> tuple[Ident | None, int, bool]:
        """(backing identity, natural number, several links in a lower layer?) of ``e``."""
        if e.kind is not BACKED or e.layer is None:
            return None, inonum.path_ino(e.path), False
        st = e.st
        if st is None:
            st = e.st = e.layer.lstat(e.rel)
            if st is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
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
        for ref in e.res.lowers:
            b = self.layers.lower(ref.kind, ref.index)
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

    def bind(self, path: str, e: Entry) -> Inode:
        """The node for ``path`` answered by ``e``, one lookup more: the number follows the
        backing file, so every name of a hard link gets the same node."""
        key = _bind_key(e)
        held = self.inodes.by_path.get(path)
        if key is not None and held is not None and held.bound == key[1] and held.lookups > 0 and held.ident == key[0]:
            # The kernel holds this path's node and the same backing file still answers it
            # (a warm readdir or lookup): working the number out again (identity, hard-link
            # salt, origin xattr, aliases) gives this node, so take it as is.
            held.lookups += 1
            held.entry = e
            held._front(path)
            return held
        ident, natural, multi = self.ident(e)
        origin = self._origin(path, e, ident)
        ino = self.inodes.number(path, ident, natural, e.is_dir, origin)
        node = self.inodes.ref(path, e, ino, multi, ident, borrowed=origin is not None and ino == origin)
        node.bound = key[1] if key is not None and node.ident == key[0] and not node.multi else None
        return node

    def _origin(self, path: str, e: Entry, ident: Ident | None) -> int | None:
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
        where = b.xattr_path(e.rel)  # a parent that cannot be reached fails the request
        try:
            raw = os.getxattr(where, inonum.ORIGIN_XATTR, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                b.origin_xattrs = False  # this store has none: never ask it again
            return None
        return inonum.decode_origin(raw)

    def keep_number(self, node: Inode, e: Entry) -> None:
        """``node`` is now answered by ``e`` (a copy-up): its number stays for this mount."""
        if node.multi or node.ino == ROOT_INODE:
            return
        ident, _natural, _multi = self.ident(e)
        if ident is not None:
            self.inodes.aliases[ident] = node.ino

    def dir_number(self, path: str, e: Entry | None) -> int | None:
        """The number directory ``path`` has or would get (kept when it is copied up)."""
        node = self.inodes.at(path)
        if node is not None:
            return node.ino
        if e is None:
            return None
        ident, natural, _multi = self.ident(e)
        return self.inodes.number(path, ident, natural, True)


def _bind_key(e: Entry) -> tuple[Ident, int] | None:
    """What :meth:`Tree.bind` numbers ``e`` from, when that is all it depends on: the backing
    identity and a few flags (a small int: no memory per node), for a backed entry whose stat
    is at hand, not a merged directory (whose number follows the lower directory, which can
    change under it) and not the root."""
    st = e.st
    b = e.layer
    if e.kind is not BACKED or b is None or st is None or e.path == "/":
        return None
    is_dir = stat.S_ISDIR(st.st_mode)
    if is_dir and e.in_upper and not e.raw and not e.cut:
        return None
    has_upper = e.res is not None and e.res.upper is not None  # hard links are salted then
    flags = is_dir | e.in_upper << 1 | (st.st_nlink > 1) << 2 | has_upper << 3
    return (b.slot | (inonum.RAW_BIT if e.raw else 0), st.st_dev, st.st_ino), flags


def _fill(a: pyfuse3.EntryAttributes, e: Entry, st: os.stat_result) -> None:
    a.st_mode = st.st_mode
    a.st_nlink = st.st_nlink
    a.st_uid = st.st_uid
    a.st_gid = st.st_gid
    if e.raw and e.rel == "." and e.layer is not None and e.layer.writable:
        # /.statelite/tmpfs and /.statelite/persistent are the raw writable layers: there no
        # rule, whiteout or copy-up applies, so a plain user could plant symlinks and markers
        # or reach files the view hides. Only root may traverse them (xCAT shows them to
        # admins): root-owned 0700, whatever the store has.
        a.st_mode = stat.S_IFDIR | 0o700
        a.st_uid = a.st_gid = 0
    a.st_rdev = st.st_rdev
    a.st_size = sum(p[2].st_size for p in e.parts) if e.kind is CON else st.st_size
    a.st_blksize = st.st_blksize
    a.st_blocks = st.st_blocks
    a.st_atime_ns = st.st_atime_ns
    a.st_mtime_ns = st.st_mtime_ns
    a.st_ctime_ns = st.st_ctime_ns
