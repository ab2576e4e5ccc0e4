"""The merged view: which backing entry answers a view path, and what a directory lists.

This is where the DESIGN table becomes lookups: ``resolve`` names the rule and the layers, and
:class:`View` walks them in order (upper, sources by priority, image), honouring whiteout
markers and opaque directories in the upper layer, and presenting the ``con`` family as the
concatenation of its sources. ``/.statelite`` is synthesised here: ``tmpfs`` and
``persistent`` show the raw layers, ``mnt`` the sources at their node mount points, and
``litefile``, ``litetree``, ``statelite.log`` live in the tmpfs layer's ``.statelite/``.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from litefs.fs import kwhiteouts
from litefs.fs.imagelayout import moved_paths
from litefs.fs.layers import (
    UPPER_KINDS,
    Layer,
    LayerSet,
    join,
    rel_of,
)
from litefs.fs.markers import Hidden
from litefs.options import Family, LayerKind
from litefs.plan import Plan, Rule
from litefs.resolve import Resolution, for_liteimg_layout, resolve

STATELITE = "/.statelite"
MTAB = "/etc/mtab"
META_DIR = ".statelite"  # in the tmpfs layer: litefile, litetree, statelite.log
META_FILES = ("litefile", "litetree", "statelite.log")

class EntryKind(Enum):
    """What kind of thing answers a view path."""

    BACKED = "backed"  # a real file/dir/link in one layer (``layer``/``rel``)
    CON = "con"  # concatenation of ``parts`` (read-only until copied up)
    SYNTH_DIR = "synth-dir"  # a directory litefs makes up (/.statelite, /.statelite/mnt/...)
    SYNTH_LINK = "synth-link"  # a symlink litefs makes up (/etc/mtab -> /proc/mounts)
    IMPLIED = "implied"  # a directory the plan implies (a listed dir, or above a listed path)


#: The kinds as module globals: handlers compare them several times per request, and a
#: global is ~5x cheaper than ``EntryKind.X`` (a class attribute lookup through the enum's
#: metaclass on Python 3.11). litefs.fs code uses these names.
BACKED, CON, SYNTH_DIR, SYNTH_LINK, IMPLIED = EntryKind
_IMAGE = LayerKind.IMAGE


@dataclass(eq=False, slots=True)
class Entry:
    """What answers one view path right now.

    ``st`` is the backing stat at the time of the lookup; litefs drops it once the kernel
    has the attributes (memory: one entry per cached inode), keeping only ``mode``.
    """

    path: str
    kind: EntryKind
    res: Resolution | None
    layer: Layer | None = None
    rel: str = "."
    st: os.stat_result | None = None
    parts: Sequence[tuple[Layer, str, os.stat_result]] = ()
    target: str = ""
    #: for directories: lower layers are hidden below (opaque upper dir on the way)
    cut: bool = False
    #: raw access to one layer (/.statelite/tmpfs/...): no rules, no whiteouts
    raw: bool = False
    mode: int = 0

    def __post_init__(self) -> None:
        if self.st is not None:
            self.mode = self.st.st_mode

    @property
    def is_dir(self) -> bool:
        if self.kind is SYNTH_DIR or self.kind is IMPLIED:
            return True
        return stat.S_ISDIR(self.mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.mode)

    @property
    def in_upper(self) -> bool:
        return self.kind is BACKED and self.layer is not None and self.layer.name in UPPER_KINDS


def child_path(parent: str, name: str) -> str:
    return "/" + name if parent == "/" else parent + "/" + name


class View:
    """Locates view paths in a layer set for a plan."""

    def __init__(self, plan: Plan, layers: LayerSet) -> None:
        self.layers = layers
        self.synth_st = _synth_stat()
        self.set_plan(plan)

    def set_plan(self, plan: Plan) -> None:
        # On a liteimg'd image, link-family paths read their originals from /.default.
        layout = self.layers.layout
        if layout.liteimgd and self.layers.originals is not None:
            moved = moved_paths(plan, self.layers.image, layout)
            plan = for_liteimg_layout(plan, moved, layout.made_up)
        self.plan = plan
        kids: dict[str, set[str]] = {}
        implied: set[str] = set()
        for r in plan.rules:
            if r.is_dir:
                implied.add(r.path)
            p = r.path
            while p != "/":
                parent, name = p.rsplit("/", 1)
                parent = parent or "/"
                kids.setdefault(parent, set()).add(name)
                implied.add(parent)
                p = parent
        self.rule_children = kids
        # Listed directories and the ancestors of listed paths exist in the view even when no
        # layer has them yet (xCAT's liteimg creates them too).
        self.implied = implied
        mnt: dict[str, set[str]] = {}
        self.mnt_points: dict[str, Layer] = {}
        for src, backing in zip(plan.sources, self.layers.sources, strict=False):
            if src.server is None:
                continue
            point = src.mountpoint  # /.statelite/mnt/<server><path>
            self.mnt_points[point] = backing
            parts = point.split("/")
            for i in range(3, len(parts)):
                mnt.setdefault("/".join(parts[:i]), set()).add(parts[i])
        self.mnt_dirs = mnt

    # --- locating -------------------------------------------------------------------------

    def root(self) -> Entry:
        return self.locate("/", None)

    def locate(self, path: str, parent: Entry | None) -> Entry | None:
        """The entry for ``path`` in the view, given its parent's entry; None if absent."""
        if path == STATELITE or path.startswith(STATELITE + "/"):
            return self._locate_statelite(path, parent)
        if parent is not None and parent.raw:
            return self._raw(parent.layer, join(parent.rel, path.rsplit("/", 1)[1]), path, parent.res)
        res = resolve(self.plan, path)
        rel = rel_of(path)
        cut = parent is not None and parent.cut and parent.res is res
        up = self.layers.upper(res.upper)
        if up is not None:
            st = up.lstat(rel)
            if st is not None and up.is_whiteout_st(st):
                if path != "/":
                    return None  # the kernel's deletion record (litefs.fs.kwhiteouts)
                st = None
            if st is not None:
                e = Entry(path, BACKED, res, up, rel, st)
                if stat.S_ISDIR(st.st_mode):
                    e.cut = cut or up.is_opaque(rel)
                return e
            if path != "/" and up.has_whiteout(rel):
                return None
            if cut:
                return None
        if res.rule is not None and res.rule.path == MTAB == path:
            return Entry(path, SYNTH_LINK, res, target="/proc/mounts", st=None)
        if res.family is Family.CON:
            parts = []
            for s in self.layers.sources:
                st = s.lstat(rel)
                if st is not None and stat.S_ISREG(st.st_mode):
                    parts.append((s, rel, st))
            if parts:
                if len(parts) == 1:
                    s, rel, st = parts[0]
                    return Entry(path, BACKED, res, s, rel, st)
                return Entry(path, CON, res, parts[0][0], rel, parts[0][2], parts=parts)
            return self._first(res, rel, path, image_only=True) or self._implied(path, res)
        return self._first(res, rel, path) or self._implied(path, res)

    def _implied(self, path: str, res: Resolution) -> Entry | None:
        if path in self.implied:
            return Entry(path, IMPLIED, res, st=self.synth_st)
        return None

    def _first(self, res: Resolution, rel: str, path: str, image_only: bool = False) -> Entry | None:
        for layer in res.lowers:
            if image_only and layer.kind is not _IMAGE:
                continue
            b = self.layers.lower(layer.kind, layer.index)
            if b is None:
                continue
            st = b.lstat(rel)
            if st is not None:
                return Entry(path, BACKED, res, b, rel, st)
        return None

    def _raw(self, layer: Layer | None, rel: str, path: str, res: Resolution | None) -> Entry | None:
        if layer is None:
            return None
        st = layer.lstat(rel)
        if st is None:
            return None
        return Entry(path, BACKED, res, layer, rel, st, raw=True)

    def _locate_statelite(self, path: str, parent: Entry | None) -> Entry | None:
        if path == STATELITE:
            return Entry(path, SYNTH_DIR, None)
        rest = path[len(STATELITE) + 1 :]
        head, _, tail = rest.partition("/")
        if head in ("tmpfs", "persistent", "localdisk"):
            layer = self.layers.uppers.get(head)
            if layer is None:
                return None
            if not tail:
                return self._raw(layer, ".", path, None)
            if head == "tmpfs" and kwhiteouts.root_bookkeeping(tail.split("/", 1)[0]):
                return None
            if parent is not None and parent.raw:
                return self._raw(layer, join(parent.rel, tail.rsplit("/", 1)[-1]), path, None)
            return self._raw(layer, tail, path, None)
        if head in META_FILES and not tail:
            tmp = self.layers.uppers.get("tmpfs")
            return self._raw(tmp, join(META_DIR, head), path, None)
        if head == "mnt":
            if path in self.mnt_points:
                return self._raw(self.mnt_points[path], ".", path, None)
            if path in self.mnt_dirs or not tail:
                return Entry(path, SYNTH_DIR, None)
            if parent is not None and parent.raw:
                return self._raw(parent.layer, join(parent.rel, path.rsplit("/", 1)[1]), path, None)
        return None

    # --- listing --------------------------------------------------------------------------

    def names(self, entry: Entry) -> list[str]:
        """Candidate names in a directory (each must still be located to be shown)."""
        if entry.kind is SYNTH_DIR:
            if entry.path == STATELITE:
                out = ["mnt", *(k for k in self.layers.uppers)]
                tmp = self.layers.uppers.get("tmpfs")
                if tmp is not None:
                    out += [m for m in META_FILES if tmp.exists(join(META_DIR, m))]
                return out
            return sorted(self.mnt_dirs.get(entry.path, ()))
        if entry.raw:
            if entry.layer is None:
                return []
            names = entry.layer.listdir(entry.rel) or []
            if entry.rel == "." and entry.layer.name == "tmpfs":
                names = [n for n in names if not kwhiteouts.root_bookkeeping(n)]
            return sorted(names)
        path = entry.path
        res = entry.res
        rel = rel_of(path)
        seen: dict[str, None] = {}
        hidden = Hidden()
        up = self.layers.upper(res.upper) if res else None
        cut = entry.cut
        if up is not None:
            listing = up.listing(rel)
            if listing is not None:
                for n in listing[0]:
                    seen[n] = None
                hidden = listing[1]
        if not cut and res is not None:
            for layer in res.lowers:
                b = self.layers.lower(layer.kind, layer.index)
                if b is None:
                    continue
                names = b.listdir(rel)
                if names:
                    for n in names:
                        if n not in hidden:
                            seen[n] = None
        for n in self.rule_children.get(path, ()):
            seen[n] = None
        if path == "/":
            seen.pop(STATELITE[1:], None)
            seen[STATELITE[1:]] = None
        return list(seen)

    def entries(self, entry: Entry) -> list[tuple[str, Entry]]:
        """A directory's children with their entries: one listing per layer and one stat per
        shown name (names a different rule governs are located one by one)."""
        res = entry.res
        if entry.raw or (entry.kind is not BACKED and entry.kind is not IMPLIED) or res is None or res.family is Family.CON:
            out = []
            for n in self.names(entry):
                e = self.locate(child_path(entry.path, n), entry)
                if e is not None:
                    out.append((n, e))
            return out
        path = entry.path
        rel = rel_of(path)
        special = set(self.rule_children.get(path, ()))
        if path == "/":
            special.add(STATELITE[1:])
        listings: list[tuple[Layer, list[str]]] = []
        hidden = Hidden()
        up = self.layers.upper(res.upper)
        if up is not None:
            listing = up.listing(rel)
            if listing is not None:
                shown, hidden = listing
                listings.append((up, shown))
        if not entry.cut:
            for layer in res.lowers:
                b = self.layers.lower(layer.kind, layer.index)
                if b is not None:
                    names = b.listdir(rel)
                    if names:
                        listings.append((b, names))
        out: list[tuple[str, Entry]] = []
        seen: set[str] = set(special)
        # Per shown name one stat and one Entry; what the loop needs per name (the path
        # prefixes of child_path/join, whether this layer's names can be hidden at all) is
        # worked out before it.
        vprefix = "/" if path == "/" else path + "/"
        rprefix = "" if rel == "." else rel + "/"
        lstat = os.stat
        for b, names in listings:
            is_up = b is up
            may_hide = not is_up and bool(hidden)
            fd = b.dirfd(rel)
            upper_dirs = []
            for n in names:
                if n in seen or (may_hide and n in hidden):
                    continue
                seen.add(n)
                try:
                    st = lstat(n, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue  # went away meanwhile
                e = Entry(vprefix + n, BACKED, res, b, rprefix + n, st)
                if is_up and stat.S_ISDIR(st.st_mode):
                    upper_dirs.append(e)
                out.append((n, e))
            # After the loop: each opacity check caches a directory fd, and past the cache's
            # size that would close ``fd`` while the loop still used it.
            for e in upper_dirs:
                e.cut = entry.cut or b.is_opaque(e.rel)
        for n in sorted(special):
            e = self.locate(child_path(path, n), entry)
            if e is not None:
                out.append((n, e))
        return out

    # --- provenance -----------------------------------------------------------------------

    def origin(self, entry: Entry) -> str:
        if entry.kind is SYNTH_DIR:
            return "litefs (made up by the view)"
        if entry.kind is IMPLIED:
            return "litefs (directory implied by the plan; no layer has it yet)"
        if entry.kind is SYNTH_LINK:
            return f"litefs symlink -> {entry.target}"
        if entry.kind is CON:
            return "con " + " + ".join(f"{b.name}:{b.abspath(r)}" for b, r, _ in entry.parts)
        assert entry.layer is not None
        return f"{entry.layer.name}:{entry.layer.abspath(entry.rel)}"

    def rule_text(self, entry: Entry) -> str:
        if entry.raw or entry.kind is SYNTH_DIR:
            return "none (litefs bookkeeping: /.statelite)"
        rule = entry.res.rule if entry.res else None
        return rule_text(rule)


def rule_text(rule: Rule | None) -> str:
    """One line naming the litefile row behind a path and its option."""
    if rule is None:
        return "none (image content, read-only)"
    return f"litefile image={rule.image or '(blank)'} file={rule.table_path} options={rule.option}"


def _synth_stat() -> os.stat_result:
    now = int(time.time())
    ns = now * 1_000_000_000
    extra = {"st_rdev": 0, "st_blksize": 4096, "st_blocks": 0, "st_atime_ns": ns, "st_mtime_ns": ns, "st_ctime_ns": ns}
    return os.stat_result((stat.S_IFDIR | 0o755, 0, 0, 2, 0, 0, 4096, now, now, now), extra)
