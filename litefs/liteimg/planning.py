"""Planning a liteimg run (pure: reads the image through a :class:`~litefs.liteimg.tree.TreeView`,
writes nothing): what to move, clone, link and record, and how to take it out again."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

from litefs.errors import LiteimgError
from litefs.liteimg.actions import Action, Op, SimTree, in_scaffold, under
from litefs.liteimg.layout import (
    DEFAULT,
    INIT_STATELITE,
    SAVE,
    STATE,
    STATEDIR,
    TMPFS,
    WARNING,
    ImageState,
    SavedLine,
    link_targets,
    save_text,
    top_level,
)
from litefs.liteimg.tree import TreeView
from litefs.wellknown import MTAB

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
                kids = [c for c in old if c.path != e.path and under(c.path, e.path) is not None]
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
        if e.path == "/" or not e.path.startswith("/") or in_scaffold(e.path):
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
