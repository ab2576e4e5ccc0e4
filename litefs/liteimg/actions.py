"""The actions a liteimg run is made of, and the image as it will be once they are done
(:class:`SimTree`: planning simulates its own actions, so later decisions see earlier ones)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum

from litefs.errors import LiteimgError
from litefs.liteimg.layout import SCAFFOLD_ROOTS
from litefs.liteimg.tree import ImageItem, TreeView

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
        if self.op in (Op.DROP, Op.WRITE, Op.PRUNE, Op.PRUNE_TREE) and not in_scaffold(self.path):
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


def in_scaffold(path: str) -> bool:
    return any(path == r or path.startswith(r + "/") for r in SCAFFOLD_ROOTS)


def under(path: str, top: str) -> str | None:
    """The rest of ``path`` below ``top`` ("" for ``top`` itself), or None if not under it."""
    if path == top:
        return ""
    if path.startswith(top + "/"):
        return path[len(top) :]
    return None


def related(a: str, b: str) -> bool:
    return under(a, b) is not None or under(b, a) is not None


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
            rest = under(path, a.path)
            if a.op == Op.MKDIR:
                if rest is not None:
                    return None if rest else ImageItem("dir", empty=True)
                if under(a.path, path) is not None:
                    return ImageItem("dir")
                continue
            if rest is None:
                if a.op == Op.MOVE and under(path, a.arg) is not None:
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
                if p is not None and (related(p, a) or related(p, b)):
                    return False
        return self.base.same(a, b)

    def only_scaffold_dirs(self, path: str) -> bool:
        """True if everything below ``path`` that is not a directory has been removed by the
        actions so far (a .default folder left holding only emptied parents)."""
        removed = [a.path for a in self.actions if a.op in (Op.DROP, Op.UNLINK, Op.UNPLACE)]
        removed += [a.arg for a in self.actions if a.op == Op.MOVE]
        created = [a.path for a in self.actions if a.op not in (Op.NOTE, Op.DROP, Op.UNLINK, Op.UNPLACE)]
        if any(under(c, path) is not None and c != path for c in created):
            return False
        return all(any(under(leaf, r) is not None for r in removed) for leaf in self.base.leaves(path))

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
