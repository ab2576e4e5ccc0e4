"""What ``liteimg`` did to an image, read from the image itself (reference §6.3).

A litefs node can boot the very image stock xCAT nodes boot after ``liteimg``: the view then
reads each link-family path from ``/.default`` (:func:`litefs.resolve.for_liteimg_layout`)
instead of following the symlink chain into ``/.statelite/tmpfs``, which only a stock node's
boot script fills. This module finds those paths; it reads the image and never changes it.

An image counts as liteimg'd when it has ``/.statelite/litefile.save``. A rule path ``P`` is
*moved* when the image has, at ``P``, exactly the symlink liteimg writes
(``<up>/.statelite/tmpfs<P>``) and ``/.default<P>`` exists; anything else (an admin's own
symlink, a path liteimg has not processed yet) is read as it is. Placeholders liteimg made for
listed paths the image lacked come from litefs' state file (``liteimg.json``; an image prepared
by xCAT has none, and then nothing counts as made up).
"""

from __future__ import annotations

import json
import logging
import os
import stat
from dataclasses import dataclass

from litefs.fs.layers import Layer, split
from litefs.liteimg import DEFAULT, SAVE, STATE, link_targets
from litefs.plan import Plan

log = logging.getLogger("litefs")

#: litefile.save and liteimg.json are small; a huge one is not liteimg's
MAX_STATE_BYTES = 16 << 20


@dataclass(frozen=True)
class ImageLayout:
    """``liteimg``'s marks on one image: is it liteimg'd, and which paths it made up."""

    liteimgd: bool = False
    made_up: frozenset[str] = frozenset()


NOT_LITEIMGD = ImageLayout()


def _read(image: Layer, rel: str) -> bytes | None:
    parent, name = split(rel)
    fd = image.find_dir(parent)
    if fd is None:
        return None
    try:
        f = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(f).st_mode):
            return None
        return os.read(f, MAX_STATE_BYTES)
    finally:
        os.close(f)


def read_layout(image: Layer) -> ImageLayout:
    """The layout marks of ``image`` (cheap: two small reads at mount time)."""
    if _read(image, SAVE[1:]) is None:
        return NOT_LITEIMGD
    made_up: frozenset[str] = frozenset()
    raw = _read(image, STATE[1:])
    if raw is not None:
        try:
            made_up = frozenset(str(p) for p in json.loads(raw).get("created", ()))
        except (ValueError, AttributeError, TypeError):
            log.warning("image %s: %s is not valid liteimg state; ignored", image.path, STATE)
    return ImageLayout(liteimgd=True, made_up=made_up)


def moved_paths(plan: Plan, image: Layer, layout: ImageLayout) -> frozenset[str]:
    """The plan's link-family paths whose image content liteimg moved to ``/.default``."""
    if not layout.liteimgd:
        return frozenset()
    out = set()
    for r in plan.rules:
        if not r.is_link or r.path == "/":
            continue
        st = image.lstat(r.path[1:])
        if st is None or not stat.S_ISLNK(st.st_mode):
            continue
        parent, name = split(r.path[1:])
        fd = image.find_dir(parent)
        if fd is None:
            continue
        try:
            target = os.readlink(name, dir_fd=fd)
        except OSError:
            continue
        if target == link_targets(r.path)[0] and image.lstat(DEFAULT[1:] + r.path) is not None:
            out.add(r.path)
    return frozenset(out)


def open_originals(image: Layer) -> Layer | None:
    """The image's ``/.default`` as a read-only layer of its own (None when absent)."""
    try:
        fd = os.open(DEFAULT[1:], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=image.fd)
    except OSError:
        return None
    return Layer(name="image:/.default", path=image.abspath(DEFAULT[1:]), fd=fd, writable=False)
