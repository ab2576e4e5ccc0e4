"""The control protocol of a running litefs mount, both ends: names, encodings, client calls.

The channel is a set of extended attributes on the mount's root directory, so it needs no
socket, works from any root process that can see the mount, and goes through the same FUSE
connection as everything else (root only; others get EPERM):

* ``user.litefs.refresh`` (set) = newline-separated view paths (empty: everything). litefs
  drops what it and the kernel cache about those paths and everything below them, so image or
  source changes show at once. This is what the node side calls when mountd announces a
  change. The kernel's caches are dropped from a thread once the request has returned (doing
  it inside the request could deadlock on the lock the kernel holds for it), so the caller
  then polls ``user.litefs.settled`` until that is done (at most ``SETTLE_S``). A poll, not an
  event: the daemon answers one request at a time, and a getxattr that blocked until the
  invalidations land would hold up the very lookups those invalidations wait for.
* ``user.litefs.plan`` (set) = a plan in its JSON form. The view switches to it (and
  ``--bypass`` binds are laid or lifted to match).
* ``user.litefs.inodes``, ``user.litefs.dirsyncs``, ``user.litefs.settled`` (get, root only):
  inodes the kernel holds, directory fsyncs issued, and "1" once the last refresh landed.

Every path of the view also answers ``user.litefs.origin`` and ``user.litefs.rule`` (its
provenance, see :mod:`litefs.fs.view`). No other ``user.litefs.*`` name can be set or removed,
nor litefs's own ``trusted.litefs.ino`` (:data:`litefs.fs.inodes.ORIGIN_XATTR`) read.

The client calls set the xattr on the view's root through a path that is never a bypass bind.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from litefs.errors import MountError
from litefs.fs.inodes import ORIGIN_XATTR
from litefs.plan import Plan

PREFIX = "user.litefs."
XATTR_ORIGIN = PREFIX + "origin"
XATTR_RULE = PREFIX + "rule"
XATTR_REFRESH = PREFIX + "refresh"
XATTR_PLAN = PREFIX + "plan"
XATTR_INODES = PREFIX + "inodes"
XATTR_DIRSYNCS = PREFIX + "dirsyncs"
XATTR_SETTLED = PREFIX + "settled"
#: set on the root: commands
COMMANDS = (XATTR_REFRESH, XATTR_PLAN)
#: read on the root: counters
COUNTERS = (XATTR_INODES, XATTR_DIRSYNCS, XATTR_SETTLED)
#: how long a refresh waits for the kernel's caches to be dropped before it returns anyway
SETTLE_S = 1.0
#: keep each request well under the 64 KiB xattr value limit
_BATCH_BYTES = 60000


# --- the daemon's end -------------------------------------------------------------------


def is_reserved(name: str) -> bool:
    """Names nobody may set or remove through the view (litefs's own)."""
    return name.startswith(PREFIX) or name == ORIGIN_XATTR


def refresh_paths(value: bytes) -> list[str]:
    """The paths a refresh command names (none: everything)."""
    return [p for p in os.fsdecode(value).split("\n") if p] or ["/"]


def counter(name: str, *, inodes: int, dir_syncs: int, settled: bool) -> bytes:
    """The value of one of :data:`COUNTERS`."""
    if name == XATTR_INODES:
        return str(inodes).encode()  # inode references the kernel holds (the table's bound)
    if name == XATTR_DIRSYNCS:
        return str(dir_syncs).encode()  # backing-directory fsyncs fsyncdir has issued
    return b"1" if settled else b"0"


# --- the client's end -------------------------------------------------------------------


def _set(mountpoint: str, name: str, value: bytes) -> None:
    try:
        # Only the root of a litefs view answers this; anything else must not get our xattr.
        os.getxattr(mountpoint, XATTR_INODES)
    except OSError:
        raise MountError(f"{mountpoint} is not the root of a litefs view (mount it, or name its mount point)") from None
    try:
        os.setxattr(mountpoint, name, value)
    except OSError as exc:
        raise MountError(f"{mountpoint}: cannot reach the litefs mount ({exc.strerror}); is it a litefs view?") from None


def refresh(mountpoint: str, paths: Iterable[str] = ()) -> None:
    """Make image/source changes under ``paths`` (all when empty) visible on a running mount."""
    batch: list[str] = []
    size = 0
    sent = False
    for p in paths:
        if not p.startswith("/"):
            raise MountError(f"refresh path {p!r} must be an absolute path in the view")
        if size + len(p) + 1 > _BATCH_BYTES and batch:
            _set(mountpoint, XATTR_REFRESH, "\n".join(batch).encode())
            batch, size, sent = [], 0, True
        batch.append(p)
        size += len(p) + 1
    if batch or not sent:
        _set(mountpoint, XATTR_REFRESH, "\n".join(batch).encode())
    _settle(mountpoint)


def _settle(mountpoint: str, timeout: float = SETTLE_S) -> bool:
    """Wait until the mount has sent the kernel every invalidation of the last refresh, so
    the next read sees the new content. False if it took longer than ``timeout``."""
    deadline = time.monotonic() + timeout
    pause = 0.0005
    while True:
        try:
            if os.getxattr(mountpoint, XATTR_SETTLED) != b"0":
                return True
        except OSError:
            return True  # a daemon that predates the barrier: nothing to wait for
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


def change_plan(mountpoint: str, plan: Plan) -> None:
    """Switch a running mount to a new plan."""
    _set(mountpoint, XATTR_PLAN, plan.to_json().encode())
    _settle(mountpoint)
