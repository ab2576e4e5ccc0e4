"""What a command changed in an image: a before/after walk of the tree, compared entry by entry.

Each entry is keyed by its path in the image and holds (type+mode, size, mtime, ctime, inode):
dpkg replaces files by renaming a new one into place (new inode), chmod/chown change ctime,
writes change mtime and size, and a directory gaining or losing an entry changes its mtime,
so the parent of every new file is reported too (a node must re-read that listing). The walk
never follows symlinks and never leaves the image's filesystem; it stops at ``limit`` entries
(the caller then announces everything instead of a list).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

Snapshot = dict[str, tuple[int, int, int, int, int]]

#: Walk at most this many entries (a Debian image has 15-60 thousand).
DEFAULT_LIMIT = 2_000_000
#: Paths skipped: kernel filesystems (empty in the tree; mounted only inside the chroot).
SKIP = frozenset({"/proc", "/sys", "/dev"})


class TooLarge(Exception):
    """The tree has more than ``limit`` entries."""


def snapshot(root: Path, limit: int = DEFAULT_LIMIT) -> Snapshot:
    """Every entry under ``root`` (path in the image -> stat summary), without following links."""
    out: Snapshot = {}
    dev = os.lstat(root).st_dev
    stack = [(str(root), "")]
    while stack:
        path, rel = stack.pop()
        try:
            it = os.scandir(path)
        except OSError:
            continue  # deleted meanwhile, or not a directory any more
        with it:
            for e in it:
                name = f"{rel}/{e.name}"
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                out[name] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
                if len(out) > limit:
                    raise TooLarge(f"more than {limit} entries under {root}")
                if e.is_dir(follow_symlinks=False) and st.st_dev == dev and name not in SKIP:
                    stack.append((e.path, name))
    return out


def changed(before: Snapshot, after: Snapshot) -> list[str]:
    """Paths added, removed or changed, sorted; a removed tree is reported by its top only."""
    gone = {p for p in before if p not in after}
    out = {p for p, v in after.items() if before.get(p) != v}
    out |= {p for p in gone if not _has_ancestor_in(p, gone)}
    return sorted(out)


def _has_ancestor_in(path: str, paths: set[str]) -> bool:
    parts = path.split("/")
    return any("/".join(parts[:i]) in paths for i in range(2, len(parts)))


def batches(paths: Iterable[str], max_bytes: int) -> list[list[str]]:
    """Split ``paths`` into lists whose JSON encoding stays under ``max_bytes`` each."""
    out: list[list[str]] = []
    cur: list[str] = []
    size = 0
    for p in paths:
        n = len(json.dumps(p)) + 2
        if cur and size + n > max_bytes:
            out.append(cur)
            cur, size = [], 0
        cur.append(p)
        size += n
    if cur:
        out.append(cur)
    return out
