"""A read-only view of the image tree, as liteimg's planner reads it."""

from __future__ import annotations

import os
import stat
from typing import NamedTuple, Protocol

from litefs.errors import LiteimgError
from litefs.liteimg.layout import ancestors

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
        for anc in reversed(list(ancestors(path))):
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
