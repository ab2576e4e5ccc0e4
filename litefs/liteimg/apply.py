"""Carrying a liteimg plan out on the image, under a lock, and the one call the command makes."""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from litefs.errors import LiteimgError
from litefs.liteimg.actions import Action, Op, under
from litefs.liteimg.layout import WARNING, entries_from_plan, read_state
from litefs.liteimg.planning import plan_liteimg, plan_undo
from litefs.liteimg.tree import DirTree
from litefs.plan import Plan

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
            while p != stop and under(p, stop) is not None and _rmdir_if_empty(p):
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
    require_rootimg(rootimg)
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


def require_rootimg(rootimg: str) -> None:
    if not os.path.isdir(rootimg):
        raise LiteimgError(
            f"{rootimg} does not exist or is not a directory; run genimage first or set "
            "linuximage.rootimgdir for the image"
        )
