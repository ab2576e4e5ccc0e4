"""Writable rule directories the kernel serves itself (``--native-writes``).

Two ways, both laid over the view at the rule's path like the ``--bypass`` binds:

* a **bind** of the upper layer's folder where no lower layer has content there (below);
* a kernel **overlayfs** for a tmpfs-family folder that has lower content: upper the folder
  in the tmpfs layer, work directory a ``.wh.`` name at that layer's root (never shown, not
  even in ``/.statelite/tmpfs``), lowers the rule's lower layers in resolve order (sources
  then image), each reached through its layer's directory fd (:func:`overlay_data`). The
  tmpfs layer then records deletions in overlayfs's own format, which FUSE reads and writes
  as well (litefs.fs.kwhiteouts): one format per layer, the same files and deletions either
  way, nothing translated at a switch. A persistent or localdisk upper (NFS: no trusted
  xattrs, no mknod) cannot be an overlay upper: those folders stay FUSE-served where they
  have lower content. Inside an overlay, renaming a directory with lower content is EXDEV
  (``redirect_dir=off``, as FUSE answers too; ``mv`` copies it).

A directory rule of a writable family (tmpfs, persistent, localdisk; not ``con``, whose content
is made up, nor ``ro``) whose directory holds nothing in any lower layer (the image and the
sources have it absent or empty) and that has no rule below it is exactly its upper layer's
folder: nothing is merged, hidden or copied up there. Such a folder is bind-mounted straight
from the layer over the view, like the ``--bypass`` binds, and the kernel then serves every
request below it at native speed (``/tmp`` and ``/var/tmp`` on a typical image).

What the view promises still holds, with these differences, which are the kernel's at any
mount boundary:

* a rename or hard link between the bound folder and the rest of the view is EXDEV (``mv``
  copies then), where FUSE allowed it inside one upper layer;
* inode numbers below it are the layer's own (they change when the folder changes between
  kernel and FUSE service, as after a remount);
* the provenance xattrs ``user.litefs.origin``/``rule`` are not there below it (``litefs
  explain`` still answers), nor the tmpfs near-full warning (writes do not pass the daemon).

The folder is prepared before it is bound: made in the layer with the view's owner, mode and
times if missing, and its bookkeeping names (``.wh.*`` markers, stale copy-up temps, which hide
nothing where no lower content exists) removed, so the same files show either way. A plan
change or refresh that gives the folder lower content, or a rule below it, lifts the bind
again; files open through it stay valid (the layer's own inodes). Names starting with ``.wh.``
(reserved in the view: EINVAL through FUSE) that a user made through the bound folder are
removed once it is lifted, before FUSE could take them for markers hiding lower content.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from dataclasses import dataclass

from litefs.fs.kwhiteouts import WORK_PREFIX
from litefs.fs.layers import WH_PREFIX, Layer, LayerSet, join
from litefs.fs.view import STATELITE
from litefs.options import Family
from litefs.plan import Plan, Rule
from litefs.resolve import resolve

log = logging.getLogger("litefs.fs")

#: families whose directory rules may be bound from their upper layer
NATIVE_FAMILIES = (Family.VOLATILE, Family.PERSISTENT, Family.LOCALDISK)
#: entries a folder's marker sweep reads before the folder is left to FUSE (bounds the cost
#: at mount and plan change; a folder that big is served by FUSE)
SWEEP_LIMIT = 100_000


def candidates(plan: Plan) -> list[str]:
    """Directory rules of a writable family with no rule below them (pure)."""
    dirs = sorted(r.path for r in plan.rules if r.is_dir and r.family in NATIVE_FAMILIES and r.path != "/")
    out = []
    for p in dirs:
        prefix = p + "/"
        if p.startswith(STATELITE) or any(r.path.startswith(prefix) for r in plan.rules):
            continue
        out.append(p)
    return out


def kernel_folder(plan: Plan, path: str) -> Rule | None:
    """The candidate rule folder at or above ``path`` that --native-writes may let the kernel
    serve (pure: whether it does depends on the layers' content, see :func:`eligible`)."""
    for p in candidates(plan):
        if path == p or path.startswith(p + "/"):
            return resolve(plan, p).rule
    return None


def lower_dirs(lowers: list[Layer | None], rel: str) -> list[Layer] | None:
    """The lower layers with content at ``rel``, in resolve order; None when one of them
    has something other than a directory there (only FUSE merges that)."""
    out = []
    for b in lowers:
        if b is None:
            continue
        st = b.lstat(rel)
        if st is None:
            continue
        if not stat.S_ISDIR(st.st_mode):
            return None
        if b.listdir(rel):
            out.append(b)
    return out


def lower_is_empty(lowers: list[Layer | None], rel: str) -> bool:
    """No lower layer has content at ``rel``: absent, or an empty directory."""
    for b in lowers:
        if b is None:
            continue
        st = b.lstat(rel)
        if st is None:
            continue
        if not stat.S_ISDIR(st.st_mode) or b.listdir(rel):
            return False
    return True


def sweep_markers(up: Layer, rel: str, limit: int = SWEEP_LIMIT, whiteouts: bool = True) -> bool:
    """Remove the bookkeeping names below ``rel`` in ``up``; False (nothing removed) if the
    folder has more than ``limit`` entries or is not a plain directory tree there. With
    ``whiteouts`` False the kernel's deletion records stay (an overlay still needs them);
    ``.wh.`` names go either way (in the kernel's format they are no litefs marker, only a
    name the view never shows)."""
    doomed: list[str] = []
    seen = 0
    stack = [rel]
    while stack:
        d = stack.pop()
        names = up.listdir(d)
        if names is None:
            return False
        for n in names:
            seen += 1
            if seen > limit:
                return False
            child = join(d, n)
            if n.startswith(WH_PREFIX):
                doomed.append(child)
                continue
            st = up.lstat(child)
            if st is None:
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append(child)
            elif whiteouts and up.is_whiteout_st(st):
                doomed.append(child)  # hides nothing where no lower content is
    for child in doomed:
        st = up.lstat(child)
        if st is not None and stat.S_ISDIR(st.st_mode):
            up.rmdir(child)  # a stale copy-up temp directory
        elif st is not None:
            up.unlink(child)
    return True


@dataclass(frozen=True, slots=True)
class Native:
    """How the kernel serves a rule folder: its upper layer, and the lower layers an
    overlay merges under it (none: a plain bind)."""

    up: Layer
    lowers: tuple[Layer, ...] = ()


def eligible(plan: Plan, layers: LayerSet, path: str) -> Native | None:
    """How the kernel may serve ``path``, or None when FUSE must."""
    res = resolve(plan, path)
    if res.rule is None or res.rule.path != path or res.upper is None:
        return None
    up = layers.upper(res.upper)
    if up is None or not up.writable:
        return None
    rel = path[1:]
    st = up.lstat(rel)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        return None
    lowers = lower_dirs([layers.lower(ref.kind, ref.index) for ref in res.lowers], rel)
    if lowers is None:
        return None
    if not lowers:
        return Native(up)
    if not (up.kernel_whiteouts and overlay_safe(path, lowers)):
        return None  # persistent/localdisk (NFS: no trusted xattrs, no mknod): FUSE merges
    return Native(up, tuple(lowers))


def overlay_safe(path: str, lowers: list[Layer]) -> bool:
    """Overlayfs's option string separates layers with ``:`` and options with ``,``."""
    return not any(c in p for p in [path, *(b.path for b in lowers)] for c in ":,\\")


def workdir_of(path: str) -> str:
    """The overlay's work directory for view ``path``: at the tmpfs layer's root, named so
    the view never shows it (a ``.wh.`` name), one per folder so overlays never share one."""
    return WORK_PREFIX + hashlib.sha256(path.encode()).hexdigest()[:16]


def overlay_data(n: Native, path: str) -> str:
    """The overlay's mount options: every layer through its directory fd (right after
    switch_root too). redirect_dir, metacopy and index off: the upper then holds only what
    FUSE also understands (whole files, the kernel's whiteouts and opaque xattr); renaming a
    merged directory is EXDEV, as through FUSE."""
    lower = ":".join(f"/proc/self/fd/{b.fd}{path}" for b in n.lowers)
    return (f"lowerdir={lower},upperdir={source_of(n.up, path)},workdir=/proc/self/fd/{n.up.fd}/{workdir_of(path)},"
            "redirect_dir=off,index=off,metacopy=off,xino=off,nfs_export=off")


def source_of(up: Layer, path: str) -> str:
    """The bind source for view ``path`` in layer ``up``: through the layer's fd, so it is
    right after switch_root moved the folder the layer was opened from."""
    return f"/proc/self/fd/{up.fd}{path}"


def prepared(up: Layer, path: str, overlay: bool = False) -> bool:
    """Sweep the folder's markers; False when it must stay with FUSE. For an overlay the
    kernel's deletion records stay and its work directory is made."""
    try:
        if overlay:
            try:
                os.mkdir(workdir_of(path), 0o700, dir_fd=up.fd)
            except FileExistsError:
                pass
        return sweep_markers(up, path[1:], whiteouts=not overlay)
    except OSError as exc:
        log.warning("%s stays served through FUSE: %s", path, exc)
        return False


def swept(up: Layer, path: str) -> bool:
    """After the kernel served ``path``: the ``.wh.`` names a user made there go (FUSE never
    shows them; in a ``.wh.`` layer they would hide lower content); the kernel's deletion
    records stay. False when it could not be done."""
    try:
        return sweep_markers(up, path[1:], whiteouts=False)
    except OSError as exc:
        log.warning("%s: cannot sweep after the kernel served it: %s", path, exc)
        return False
