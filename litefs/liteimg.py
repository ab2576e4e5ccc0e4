"""liteimg: write xCAT's classic statelite layout into an image, reconcile it, take it out again.

Stock xCAT nodes boot from an image that ``liteimg`` prepared (reference §6): every litefile
path has a copy under ``/.default`` (moved there for the link family, which leaves a two-level
relative symlink chain through ``/.statelite/tmpfs``; cloned for the bind family) and
``/.statelite/litefile.save`` records the list. This module *plans* that work as a list of
:class:`Action` values from three inputs -- the entries, a read-only view of the image tree and
what the previous run left (:class:`ImageState`) -- without touching anything; :func:`apply`
then carries the list out. Planning simulates its own actions (:class:`SimTree`) so later
decisions see earlier ones, which is what lets ``-V`` print every action before it happens and
tests check the plan. Unlike xCAT, nothing the image had is ever emptied or deleted: when an
entry goes away or changes family its original comes back from ``/.default``, conflicting
copies stop the run with an error, and :func:`plan_undo` takes the whole layout out again.
The layout is xCAT's byte for byte plus one file, ``/.statelite/liteimg.json``, recording what
liteimg created; undo cannot tell that from the image's own empty files otherwise (:data:`STATE`).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import NamedTuple, Protocol

from litefs.errors import LiteimgError
from litefs.options import is_link
from litefs.plan import Plan
from litefs.wellknown import MTAB

DEFAULT = "/.default"
STATEDIR = "/.statelite"
TMPFS = "/.statelite/tmpfs"
SAVE = "/.statelite/litefile.save"
#: litefs' own record of what liteimg *created* (xCAT keeps none; a stock node never reads it:
#: the boot mounts a tmpfs over /.statelite). It is the one file beyond xCAT's layout, and undo
#: needs it: litefile.save and .default cannot tell an empty placeholder liteimg made for a
#: missing path from an empty file or directory the image really had (``/etc/adjtime`` and
#: many ``/var`` folders are empty on fresh images), nor the missing parent directories it
#: made, nor whether ``/.statelite`` came from genimage; without the record ``--undo`` would
#: leave stand-ins the image never had, or delete empty ones it did have. An image prepared
#: by xCAT (no record) is handled as xCAT left it: nothing counts as created.
STATE = "/.statelite/liteimg.json"
INIT_STATELITE = "/etc/init.d/statelite"
WARNING = "warning: "
#: The only trees liteimg ever deletes from (besides symlinks and empty placeholders it made).
SCAFFOLD_ROOTS = (DEFAULT, STATEDIR)
#: Scaffolding assumed to be liteimg's when an image was prepared by xCAT (no state file):
#: genimage makes /.statelite itself.
XCAT_SCAFFOLD = frozenset({DEFAULT, TMPFS})


# --- entries and litefile.save ---------------------------------------------------------------


@dataclass(frozen=True)
class SavedLine:
    """One litefile line as liteimg sees it. ``path`` has no trailing slash; ``option`` is the
    server's spelling (blank is ``tmpfs,rw``), :attr:`saved_option` is liteimg's (``link``)."""

    path: str
    option: str
    is_dir: bool

    @property
    def table_path(self) -> str:
        return self.path + "/" if self.is_dir else self.path

    @property
    def saved_option(self) -> str:
        return "link" if self.option == "tmpfs,rw" else self.option

    @property
    def is_link(self) -> bool:
        return is_link(self.option)


def entries_from_plan(plan: Plan) -> tuple[SavedLine, ...]:
    """The plan's rules as liteimg entries, in ``ilitefile`` order (sorted by table path)."""
    entries = [SavedLine(r.path, r.option, r.is_dir) for r in plan.rules]
    return tuple(sorted(entries, key=lambda e: e.table_path))


def save_text(image: str, entries: Sequence[SavedLine]) -> str:
    """``litefile.save`` byte for byte: ``ilitefile`` lines (``"%s: %-13s %s"``) with xCAT's
    ``s/tmpfs,rw/link/`` applied, which shortens the padding by four."""
    lines = []
    for e in entries:
        padded = f"{e.option:<13}"
        if e.option == "tmpfs,rw":
            padded = "link" + padded[len("tmpfs,rw") :]
        lines.append(f"{image}: {padded} {e.table_path}\n")
    return "".join(lines)


def parse_save(text: str) -> tuple[SavedLine, ...]:
    """Entries from a ``litefile.save`` (``<image>: <option> <path>`` per line)."""
    entries = []
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise LiteimgError(f"litefile.save line {lineno} is not '<image>: <option> <path>': {line!r}")
        option, path = fields[-2], fields[-1]
        if not path.startswith("/"):
            raise LiteimgError(f"litefile.save line {lineno}: {path!r} is not an absolute path")
        is_dir = path.endswith("/") and path != "/"
        entries.append(SavedLine(path.rstrip("/") or "/", option, is_dir))
    return tuple(entries)


def _ancestors(path: str) -> Iterable[str]:
    """Proper ancestors of ``path``, nearest first, ``/`` excluded."""
    p = path
    while True:
        p = os.path.dirname(p)
        if p == "/":
            return
        yield p


def top_level(entries: Sequence[SavedLine]) -> set[str]:
    """Paths with no listed directory above them (xCAT's "parents"; the rest are children)."""
    dirs = {e.path for e in entries if e.is_dir}
    return {e.path for e in entries if not any(a in dirs for a in _ancestors(e.path))}


def rel_up(path: str) -> str:
    """xCAT's ``getRelDir``: one ``..`` per component of ``dirname(path)``, ``.`` at the root."""
    depth = len([c for c in os.path.dirname(path).split("/") if c])
    return "/".join([".."] * depth) if depth else "."


def link_targets(path: str) -> tuple[str, str]:
    """(image link target, tmpfs link target) for a link-family top-level entry (§6.3)."""
    up = rel_up(path)
    return f"{up}{TMPFS}{path}", f"../../{up}{DEFAULT}{path}"


# --- what the previous run left ----------------------------------------------------------------


@dataclass(frozen=True)
class ImageState:
    """What liteimg knows from earlier runs: the saved entries (``litefile.save``) and, from
    its own state file, which paths it created because the image did not have them."""

    saved: tuple[SavedLine, ...] = ()
    save_text: str | None = None
    created: frozenset[str] = frozenset()  # entry placeholders (image side or .default side)
    created_dirs: frozenset[str] = frozenset()  # image directories made for missing parents
    scaffold: frozenset[str] = frozenset()  # which of /.statelite, its tmpfs, /.default we made
    state_text: str | None = None

    def state_json(self) -> str:
        data = {
            "version": 1,
            "created": sorted(self.created),
            "created_dirs": sorted(self.created_dirs),
            "scaffold": sorted(self.scaffold),
        }
        return json.dumps(data, indent=1, sort_keys=True) + "\n"


def read_state(rootimg: str) -> ImageState:
    """Read ``litefile.save`` and the litefs state file from an image (both optional)."""
    save = _read_text(rootimg + SAVE)
    state = _read_text(rootimg + STATE)
    saved = parse_save(save) if save is not None else ()
    if state is None:
        scaffold = XCAT_SCAFFOLD if save is not None else frozenset()
        return ImageState(saved, save, scaffold=scaffold)
    try:
        data = json.loads(state)
        return ImageState(
            saved,
            save,
            created=frozenset(data.get("created", ())),
            created_dirs=frozenset(data.get("created_dirs", ())),
            scaffold=frozenset(data.get("scaffold", ())),
            state_text=state,
        )
    except (ValueError, AttributeError, TypeError) as exc:
        raise LiteimgError(
            f"{rootimg}{STATE} is not valid liteimg state ({exc}); remove it and re-run liteimg"
        ) from None


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LiteimgError(f"cannot read {path}: {exc.strerror}") from None


# --- a read-only view of the image --------------------------------------------------------------


class ImageItem(NamedTuple):
    """What is at a path: ``kind`` is file/dir/link/other; ``empty`` means a zero-length file
    or a directory without entries (placeholders liteimg made look like that)."""

    kind: str
    target: str = ""
    empty: bool = False


class TreeView(Protocol):
    def node(self, path: str) -> ImageItem | None: ...

    def same(self, a: str, b: str) -> bool: ...

    def leaves(self, path: str) -> list[str]: ...


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


class DirTree:
    """The image on disk, read with ``lstat`` only. A symlink in the *middle* of a path is
    refused: following it could leave the image (``/var/lock -> /run/lock`` is the host's)."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/") or "/"

    def _full(self, path: str) -> str | None:
        for anc in reversed(list(_ancestors(path))):
            try:
                st = os.lstat(self.root + anc)
            except FileNotFoundError:
                return None
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(self.root + anc)
                raise LiteimgError(
                    f"{path}: {anc} is a symbolic link in the image (-> {target}); liteimg does "
                    f"not follow links inside {self.root}: list the real path in litefile instead"
                )
            if not stat.S_ISDIR(st.st_mode):
                return None
        return self.root + path

    def node(self, path: str) -> ImageItem | None:
        full = self._full(path)
        if full is None:
            return None
        try:
            st = os.lstat(full)
        except (FileNotFoundError, NotADirectoryError):
            return None
        kind = _kind(st.st_mode)
        if kind == "link":
            return ImageItem("link", os.readlink(full))
        if kind == "dir":
            with os.scandir(full) as it:
                return ImageItem("dir", empty=next(it, None) is None)
        return ImageItem(kind, empty=kind == "file" and st.st_size == 0)

    def same(self, a: str, b: str) -> bool:
        fa, fb = self._full(a), self._full(b)
        return fa is not None and fb is not None and _same_tree(fa, fb)

    def leaves(self, path: str) -> list[str]:
        """Every non-directory below ``path`` (``path`` itself if it is not a directory)."""
        full = self._full(path)
        if full is None or not os.path.lexists(full):
            return []
        if os.path.islink(full) or not os.path.isdir(full):
            return [path]
        out = []
        for dirpath, dirnames, filenames in os.walk(full):
            rel = path + dirpath[len(full) :]
            out.extend(f"{rel}/{n}" for n in filenames)
            out.extend(f"{rel}/{n}" for n in dirnames if os.path.islink(os.path.join(dirpath, n)))
        return out


def _same_tree(a: str, b: str) -> bool:
    """rsync-style quick check: type, mode, owner, size, mtime, link target, names; recursive."""
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except FileNotFoundError:
        return False
    if (sa.st_mode, sa.st_uid, sa.st_gid) != (sb.st_mode, sb.st_uid, sb.st_gid):
        return False
    if stat.S_ISLNK(sa.st_mode):
        return os.readlink(a) == os.readlink(b)
    if stat.S_ISREG(sa.st_mode):
        return (sa.st_size, sa.st_mtime_ns) == (sb.st_size, sb.st_mtime_ns)
    if stat.S_ISDIR(sa.st_mode):
        na, nb = sorted(os.listdir(a)), sorted(os.listdir(b))
        return na == nb and all(_same_tree(os.path.join(a, n), os.path.join(b, n)) for n in na)
    return sa.st_rdev == sb.st_rdev


# --- actions -------------------------------------------------------------------------------------


class Op(StrEnum):
    NOTE = "note"  # nothing to do; ``arg`` says why (-V); "warning: ..." notes always reach the admin
    MKDIR = "mkdir"  # mkdir -p (every missing component, mode 0755)
    MOVE = "move"  # rename ``arg`` to ``path`` (never over an existing path)
    CLONE = "clone"  # cp -a ``arg`` to ``path`` (``path`` must not exist)
    SYMLINK = "symlink"  # ln -sfn ``arg`` ``path`` (only ever replaces a symlink)
    TOUCH = "touch"  # empty file, mode 0644
    UNLINK = "unlink"  # remove a symlink (refuses anything else)
    DROP = "drop"  # rm -rf, only inside /.default or /.statelite
    UNPLACE = "unplace"  # remove a placeholder liteimg made, only while it is still empty
    WRITE = "write"  # write ``arg`` to a file under /.statelite
    PRUNE = "prune"  # rmdir ``path`` and its parents while empty, stopping below ``arg``
    PRUNE_TREE = "prune-tree"  # rmdir every empty dir under ``path`` (and ``path`` if arg == "self")


@dataclass(frozen=True)
class Action:
    op: Op
    path: str
    arg: str = ""

    def __post_init__(self) -> None:
        if self.op in (Op.DROP, Op.WRITE, Op.PRUNE, Op.PRUNE_TREE) and not _in_scaffold(self.path):
            raise LiteimgError(f"internal error: {self.op} outside the scaffolding: {self.path}")

    def describe(self, root: str) -> str:
        """One shell-like line, as ``liteimg -V`` prints it."""
        p = root + self.path
        match self.op:
            case Op.NOTE:
                return self.arg
            case Op.MKDIR:
                return f"mkdir -p {p}"
            case Op.MOVE:
                return f"mv {root}{self.arg} {p}"
            case Op.CLONE:
                return f"cp -r -a {root}{self.arg} {p}"
            case Op.SYMLINK:
                return f"ln -sfn {self.arg} {p}"
            case Op.TOUCH:
                return f"touch {p}"
            case Op.UNLINK:
                return f"rm -f {p}"
            case Op.DROP:
                return f"rm -rf {p}"
            case Op.UNPLACE:
                return f"rm {p} (placeholder made by liteimg, only if still empty)"
            case Op.WRITE:
                return f"write {p}"
            case Op.PRUNE:
                return f"rmdir -p {p} (while empty, not above {root}{self.arg})"
            case Op.PRUNE_TREE:
                return f"find {p} -depth -type d -empty -delete"
        raise AssertionError(self.op)


def _in_scaffold(path: str) -> bool:
    return any(path == r or path.startswith(r + "/") for r in SCAFFOLD_ROOTS)


def _under(path: str, top: str) -> str | None:
    """The rest of ``path`` below ``top`` ("" for ``top`` itself), or None if not under it."""
    if path == top:
        return ""
    if path.startswith(top + "/"):
        return path[len(top) :]
    return None


def _related(a: str, b: str) -> bool:
    return _under(a, b) is not None or _under(b, a) is not None


class SimTree:
    """The image as it will be after the actions recorded so far (planning never writes)."""

    def __init__(self, base: TreeView) -> None:
        self.base = base
        self.actions: list[Action] = []

    def add(self, op: Op, path: str, arg: str = "") -> None:
        self.actions.append(Action(op, path, arg))

    def node(self, path: str, upto: int | None = None) -> ImageItem | None:
        i = len(self.actions) if upto is None else upto
        while i > 0:
            i -= 1
            a = self.actions[i]
            if a.op in (Op.NOTE, Op.PRUNE, Op.PRUNE_TREE):
                continue
            rest = _under(path, a.path)
            if a.op == Op.MKDIR:
                if rest is not None:
                    return None if rest else ImageItem("dir", empty=True)
                if _under(a.path, path) is not None:
                    return ImageItem("dir")
                continue
            if rest is None:
                if a.op == Op.MOVE and _under(path, a.arg) is not None:
                    return None
                continue
            if a.op in (Op.MOVE, Op.CLONE):
                return self.node(a.arg + rest, i)
            if rest:  # below a file, link or removed path
                return None
            if a.op == Op.SYMLINK:
                return ImageItem("link", a.arg)
            if a.op in (Op.TOUCH, Op.WRITE):
                return ImageItem("file", empty=a.op == Op.TOUCH)
            return None  # UNLINK, DROP, UNPLACE
        return self.base.node(path)

    def same(self, a: str, b: str) -> bool:
        for act in self.actions:
            if act.op == Op.NOTE:
                continue
            for p in (act.path, act.arg if act.op in (Op.MOVE, Op.CLONE) else None):
                if p is not None and (_related(p, a) or _related(p, b)):
                    return False
        return self.base.same(a, b)

    def only_scaffold_dirs(self, path: str) -> bool:
        """True if everything below ``path`` that is not a directory has been removed by the
        actions so far (a .default folder left holding only emptied parents)."""
        removed = [a.path for a in self.actions if a.op in (Op.DROP, Op.UNLINK, Op.UNPLACE)]
        removed += [a.arg for a in self.actions if a.op == Op.MOVE]
        created = [a.path for a in self.actions if a.op not in (Op.NOTE, Op.DROP, Op.UNLINK, Op.UNPLACE)]
        if any(_under(c, path) is not None and c != path for c in created):
            return False
        return all(any(_under(leaf, r) is not None for r in removed) for leaf in self.base.leaves(path))

    def mkdir_p(self, path: str, created: set[str] | None = None) -> None:
        """Plan ``mkdir -p path``; record the image directories it makes in ``created``."""
        missing = []
        p = path
        while p != "/":
            n = self.node(p)
            if n is not None:
                if n.kind != "dir":
                    raise LiteimgError(f"{p} is a {n.kind} in the image, not a directory")
                break
            missing.append(p)
            p = os.path.dirname(p)
        if missing:
            self.add(Op.MKDIR, path)
            if created is not None:
                created.update(missing)


# --- planning ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiteimgPlan:
    """The actions of one liteimg run, and the state it leaves."""

    actions: tuple[Action, ...]
    state: ImageState

    @property
    def changes(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.op != Op.NOTE)


class _Planner:
    def __init__(self, tree: TreeView, prev: ImageState) -> None:
        self.sim = SimTree(tree)
        self.prev = prev
        self.created = set(prev.created)
        self.created_dirs = set(prev.created_dirs)
        self.scaffold = set(prev.scaffold)
        self.prunes: list[Action] = []

    def note(self, path: str, text: str) -> None:
        self.sim.add(Op.NOTE, path, text)

    # -- taking an old entry out (reconcile, undo) --

    def restore_link(self, e: SavedLine, children: Sequence[SavedLine]) -> None:
        """Undo the link chain of a top-level link entry: the original comes back."""
        sim, p, tp = self.sim, e.path, TMPFS + e.path
        n = sim.node(p)
        if n is not None and n.kind == "link" and ".statelite/tmpfs" in n.target:
            sim.add(Op.UNLINK, p)
            self.bring_back(e, children)
        elif n is None:
            sim.mkdir_p(os.path.dirname(p), self.created_dirs)
            self.bring_back(e, children)
        else:
            self.keep_or_drop_default(p)
        t = sim.node(tp)
        if t is not None:
            sim.add(Op.UNLINK if t.kind == "link" else Op.DROP, tp)
            self.prunes.append(Action(Op.PRUNE, os.path.dirname(tp), TMPFS))

    def bring_back(self, e: SavedLine, children: Sequence[SavedLine]) -> None:
        sim, p, dp = self.sim, e.path, DEFAULT + e.path
        d = sim.node(dp)
        if d is not None and p in self.created and d.empty:
            sim.add(Op.DROP, dp)  # the image never had it: nothing to bring back
        elif d is not None:
            sim.add(Op.MOVE, p, dp)
            for c in children:  # placeholders liteimg made for children come out again
                if c.path in self.created:
                    sim.add(Op.UNPLACE, c.path)
                    self.created.discard(c.path)
        elif p not in self.created:
            # xCAT: "maybe someone deletes the copy in .default": an empty stand-in.
            self.note(p, f"{WARNING}{dp} is missing: {p} comes back empty")
            sim.add(Op.MKDIR if e.is_dir else Op.TOUCH, p)
        self.created.discard(p)
        self.prunes.append(Action(Op.PRUNE, os.path.dirname(dp), DEFAULT))

    def keep_or_drop_default(self, p: str) -> None:
        """The image has a real ``p`` again: drop the .default copy only if it is identical."""
        dp = DEFAULT + p
        if self.sim.node(dp) is None:
            return
        if self.sim.same(p, dp):
            self.sim.add(Op.DROP, dp)
            self.prunes.append(Action(Op.PRUNE, os.path.dirname(dp), DEFAULT))
        else:
            self.note(p, f"{WARNING}kept {dp}: it differs from the image's {p}")

    def restore_bind(self, e: SavedLine, gone: bool) -> None:
        """A bind-family entry leaves: the image still has the original; drop the clone."""
        dp = DEFAULT + e.path
        if self.sim.node(dp) is not None:
            self.sim.add(Op.DROP, dp)
            self.prunes.append(Action(Op.PRUNE, os.path.dirname(dp), DEFAULT))
        if gone and e.path in self.created:
            self.sim.add(Op.UNPLACE, e.path)
            self.created.discard(e.path)

    def take_out(self, old: Sequence[SavedLine], keep: dict[str, tuple[str, bool, bool]]) -> None:
        """Reconcile: every old entry whose (option, dir, top-level) is not in ``keep``."""
        old_top = top_level(old)
        for e in old:
            key = (e.saved_option, e.is_dir, e.path in old_top)
            new = keep.get(e.path)
            if new == key:
                continue
            if e.path not in old_top:
                # A child's content lives inside its parent's copy; only a placeholder made
                # for a link child that is gone for good needs taking out.
                if new is None and e.is_link and e.path in self.created:
                    dp = DEFAULT + e.path
                    if self.sim.node(dp) is not None:
                        self.sim.add(Op.UNPLACE, dp)
                    self.created.discard(e.path)
                continue
            if e.is_link:
                kids = [c for c in old if c.path != e.path and _under(c.path, e.path) is not None]
                self.restore_link(e, kids)
            else:
                self.restore_bind(e, gone=new is None)

    # -- putting a new entry in --

    def scaffolding(self) -> None:
        for d in (STATEDIR, TMPFS):
            if self.sim.node(d) is None:
                self.sim.add(Op.MKDIR, d)
                self.scaffold.add(d)

    def default_dir(self, path: str) -> None:
        if self.sim.node(DEFAULT) is None:
            self.scaffold.add(DEFAULT)
        self.sim.mkdir_p(os.path.dirname(DEFAULT + path))

    def link_item(self, e: SavedLine) -> None:
        sim, p, dp, tp = self.sim, e.path, DEFAULT + e.path, TMPFS + e.path
        img_target, tmp_target = link_targets(p)
        n = sim.node(p)
        if p == MTAB and n is not None and n.kind == "link" and n.target == "/proc/self/mounts":
            self.note(p, f"{p} is a link to /proc/self/mounts: left as it is")
            return
        linked = n is not None and n.kind == "link" and n.target == img_target
        t = sim.node(tp)
        if linked and t is not None and t.kind == "link" and t.target == tmp_target:
            self.note(p, f"do nothing for file {e.table_path}")
            return
        if not linked and n is not None and n.kind == "link" and ".statelite/tmpfs" in n.target:
            sim.add(Op.UNLINK, p)  # a chain from an older layout: relinked below
            n = None
        if not linked and n is not None:
            d = sim.node(dp)
            if d is not None:
                if not (sim.same(p, dp) or (d.kind == "dir" and sim.only_scaffold_dirs(dp))):
                    raise LiteimgError(
                        f"both {p} and {DEFAULT}{p} exist in the image and differ; keep the one "
                        f"you want (remove the other) and run liteimg again"
                    )
                sim.add(Op.DROP, dp)
            self.default_dir(p)
            if n.kind == "link":
                self.note(p, f"{WARNING}{p} is a symbolic link ({n.target}); it is kept in "
                          f"{DEFAULT}{p}, but a stock node resolves it there: list the real path")
            sim.add(Op.MOVE, dp, p)
        elif sim.node(dp) is None:
            sim.mkdir_p(os.path.dirname(p), self.created_dirs)
            self.default_dir(p)
            sim.add(Op.MKDIR if e.is_dir else Op.TOUCH, dp)
            self.created.add(p)
        t = sim.node(tp)
        if t is not None and t.kind != "link":
            sim.add(Op.DROP, tp)
        sim.mkdir_p(os.path.dirname(tp))
        sim.add(Op.SYMLINK, tp, tmp_target)
        if not linked:
            sim.mkdir_p(os.path.dirname(p), self.created_dirs)
            sim.add(Op.SYMLINK, p, img_target)

    def link_child(self, e: SavedLine) -> None:
        dp = DEFAULT + e.path
        d = self.sim.node(dp)
        if d is None:
            self.sim.mkdir_p(os.path.dirname(dp))
            self.sim.add(Op.MKDIR if e.is_dir else Op.TOUCH, dp)
            self.created.add(e.path)
        elif e.is_dir and d.kind != "dir":
            self.note(e.path, f"{dp} is a {d.kind}, not a directory: left as it is")

    def bind_item(self, e: SavedLine) -> None:
        sim, p, dp = self.sim, e.path, DEFAULT + e.path
        n = sim.node(p)
        if n is None:
            sim.mkdir_p(os.path.dirname(p), self.created_dirs)
            sim.add(Op.MKDIR if e.is_dir else Op.TOUCH, p)
            self.created.add(p)
        self.default_dir(p)
        if n is not None and n.kind == "link":
            self.note(p, f"{WARNING}{p} is a symbolic link ({n.target}); {DEFAULT}{p} is a copy "
                      "of the link, not of what it points to: list the real path")
        if sim.node(dp) is not None:
            if sim.same(p, dp):
                self.note(p, f"{dp} is up to date")
                return
            sim.add(Op.DROP, dp)
        sim.add(Op.CLONE, dp, p)

    def state(self, saved: tuple[SavedLine, ...], text: str) -> ImageState:
        """What this run leaves behind, its state file text included."""
        st = ImageState(
            saved=saved,
            save_text=text,
            created=frozenset(self.created),
            created_dirs=frozenset(self.created_dirs),
            scaffold=frozenset(self.scaffold),
        )
        return replace(st, state_text=st.state_json())

    def finish(self, writes: Sequence[tuple[str, str | None, str | None]]) -> tuple[Action, ...]:
        for path, new, old in writes:
            if new is None:
                if old is not None:
                    self.sim.add(Op.DROP, path)
            elif new != old:
                self.sim.add(Op.WRITE, path, new)
        prunes = list(dict.fromkeys(self.prunes))  # once each, in order
        return (*self.sim.actions, *prunes)


def _check_entries(entries: Sequence[SavedLine]) -> None:
    for e in entries:
        if e.path == "/" or not e.path.startswith("/") or _in_scaffold(e.path):
            raise LiteimgError(f"{e.table_path}: liteimg cannot make this path statelite")


def _missing(tree: TreeView, path: str) -> bool:
    try:
        return tree.node(path) is None
    except LiteimgError:  # a link on the way (RHEL's /etc/init.d -> rc.d/init.d): cannot tell
        return False


def plan_liteimg(
    image: str, entries: Sequence[SavedLine], tree: TreeView, prev: ImageState
) -> LiteimgPlan:
    """Plan one ``liteimg`` run: reconcile with ``prev``, then lay out every entry (§6.2)."""
    _check_entries(entries)
    pl = _Planner(tree, prev)
    tops = top_level(entries)
    keep = {e.path: (e.saved_option, e.is_dir, e.path in tops) for e in entries}
    pl.take_out(prev.saved, keep)
    if _missing(tree, INIT_STATELITE):
        pl.note(INIT_STATELITE, f"{WARNING}the image has no {INIT_STATELITE}: stock xCAT nodes "
                "need rc.statelite there (genimage installs it)")
    pl.scaffolding()
    for e in [e for e in entries if e.path in tops] + [e for e in entries if e.path not in tops]:
        if e.is_link:
            pl.link_item(e) if e.path in tops else pl.link_child(e)
        else:
            pl.bind_item(e)
    text = save_text(image, entries)
    st = pl.state(tuple(entries), text)
    actions = pl.finish([(SAVE, text, prev.save_text), (STATE, st.state_text, prev.state_text)])
    return LiteimgPlan(actions, st)


def plan_undo(tree: TreeView, prev: ImageState) -> LiteimgPlan:
    """Plan ``liteimg --undo``: every entry taken out, then the scaffolding removed."""
    if prev.save_text is None:
        raise LiteimgError(f"nothing to undo: there is no {SAVE} in the image")
    pl = _Planner(tree, prev)
    pl.take_out(prev.saved, {})
    for d in sorted(pl.created_dirs, key=lambda p: p.count("/"), reverse=True):
        if pl.sim.node(d) is not None:
            pl.sim.add(Op.UNPLACE, d)
    actions = pl.finish([(SAVE, None, prev.save_text), (STATE, None, prev.state_text)])
    tail = [
        Action(Op.PRUNE_TREE, TMPFS, "self" if TMPFS in prev.scaffold else ""),
        Action(Op.PRUNE_TREE, DEFAULT, "self" if DEFAULT in prev.scaffold else ""),
    ]
    if STATEDIR in prev.scaffold:
        tail.append(Action(Op.PRUNE_TREE, STATEDIR, "self"))
    return LiteimgPlan((*actions, *tail), ImageState())


# --- the executor ----------------------------------------------------------------------------------


def apply(
    rootimg: str, actions: Iterable[Action], echo: Callable[[str], None] | None = None
) -> list[str]:
    """Carry out planned actions on the image; returns warnings (things deliberately kept).

    Every destructive step re-checks its guard on disk, so even a stale plan cannot delete
    image content: DROP only inside the scaffolding, UNLINK only symlinks, UNPLACE only what
    is still empty, MOVE/CLONE never over an existing path.
    """
    root = rootimg.rstrip("/")
    warnings: list[str] = []
    for a in actions:
        if echo is not None:
            echo(a.describe(root))
        full = root + a.path
        try:
            _apply_one(root, a, full, warnings)
        except OSError as exc:
            raise LiteimgError(f"{a.describe(root)}: {exc.strerror or exc}") from None
    return warnings


def _mkdir_p(full: str) -> None:
    missing = []
    p = full
    while not os.path.lexists(p):
        missing.append(p)
        p = os.path.dirname(p)
    for d in reversed(missing):
        os.mkdir(d)
        os.chmod(d, 0o755)


def _apply_one(root: str, a: Action, full: str, warnings: list[str]) -> None:
    match a.op:
        case Op.NOTE:
            if a.arg.startswith(WARNING):
                warnings.append(a.arg[len(WARNING) :])
        case Op.MKDIR:
            _mkdir_p(full)
        case Op.MOVE | Op.CLONE:
            src = root + a.arg
            if os.path.lexists(full):
                raise LiteimgError(f"{a.describe(root)}: {full} already exists")
            if a.op == Op.MOVE:
                os.rename(src, full)
            else:
                r = subprocess.run(
                    ["cp", "-a", "--no-target-directory", src, full],
                    capture_output=True,
                    text=True,
                )
                if r.returncode:
                    raise LiteimgError(f"{a.describe(root)}: {r.stderr.strip()}")
        case Op.SYMLINK:
            if os.path.lexists(full):
                if not os.path.islink(full):
                    raise LiteimgError(f"{a.describe(root)}: {full} exists and is not a link")
                os.unlink(full)
            os.symlink(a.arg, full)
        case Op.TOUCH:
            fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.fchmod(fd, 0o644)
            os.close(fd)
        case Op.UNLINK:
            if not os.path.islink(full):
                raise LiteimgError(f"{a.describe(root)}: {full} is not a symbolic link")
            os.unlink(full)
        case Op.DROP:
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            elif os.path.lexists(full):
                os.unlink(full)
        case Op.UNPLACE:
            _unplace(full, warnings)
        case Op.WRITE:
            tmp = full + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(a.arg)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, full)
        case Op.PRUNE:
            stop = root + a.arg
            p = full
            while p != stop and _under(p, stop) is not None and _rmdir_if_empty(p):
                p = os.path.dirname(p)
        case Op.PRUNE_TREE:
            _prune_tree(full, a.arg == "self", warnings)


def _unplace(full: str, warnings: list[str]) -> None:
    try:
        st = os.lstat(full)
    except FileNotFoundError:
        return
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:
        os.unlink(full)
    elif not (stat.S_ISDIR(st.st_mode) and _rmdir_if_empty(full)):
        warnings.append(f"kept {full}: liteimg created it empty but it has content now")


def _rmdir_if_empty(path: str) -> bool:
    try:
        os.rmdir(path)
        return True
    except OSError:
        return False


def _prune_tree(top: str, include_self: bool, warnings: list[str]) -> None:
    if not os.path.isdir(top) or os.path.islink(top):
        return
    for dirpath, _dirs, _files in os.walk(top, topdown=False):
        if dirpath != top or include_self:
            _rmdir_if_empty(dirpath)
    if include_self and os.path.lexists(top):
        warnings.append(f"kept {top}: it is not empty (nothing liteimg made is left in it)")


# --- one call for the command ---------------------------------------------------------------------


@contextmanager
def _locked(rootimg: str) -> Iterator[None]:
    """One liteimg at a time per image: an exclusive flock on the rootimg directory itself
    (nothing is created in the image)."""
    _require_rootimg(rootimg)
    fd = os.open(rootimg, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LiteimgError(
                f"another liteimg is working on {rootimg}; wait for it to finish and run again"
            ) from None
        yield
    finally:
        os.close(fd)


def run_liteimg(
    image: str,
    plan: Plan,
    rootimg: str,
    echo: Callable[[str], None] | None = None,
) -> list[str]:
    """Lay out ``plan`` in ``rootimg`` (validated beforehand); returns warnings."""
    with _locked(rootimg):
        lp = plan_liteimg(image, entries_from_plan(plan), DirTree(rootimg), read_state(rootimg))
        return apply(rootimg, lp.actions, echo)


def run_undo(rootimg: str, echo: Callable[[str], None] | None = None) -> list[str]:
    """Take the layout out of ``rootimg`` again; returns warnings."""
    with _locked(rootimg):
        return apply(rootimg, plan_undo(DirTree(rootimg), read_state(rootimg)).actions, echo)


def _require_rootimg(rootimg: str) -> None:
    if not os.path.isdir(rootimg):
        raise LiteimgError(
            f"{rootimg} does not exist or is not a directory; run genimage first or set "
            "linuximage.rootimgdir for the image"
        )
