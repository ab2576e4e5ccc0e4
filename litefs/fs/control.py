"""Talking to a running litefs mount: refresh paths, swap the plan.

The control channel is an extended attribute set on the mount's root directory, so it needs
no socket, works from any root process that can see the mount, and goes through the same
FUSE connection as everything else (root only; others get EPERM):

* ``user.litefs.refresh`` = newline-separated view paths (empty: everything). litefs drops what
  it and the kernel cache about those paths and everything below them, so image or source
  changes show at once. This is what the node side calls when mountd announces a change.
  The kernel's caches are dropped from a thread once the request has returned (doing it
  inside the request could deadlock on the lock the kernel holds for it), so the caller
  then polls ``user.litefs.settled`` until that is done (at most ``SETTLE_S``).
* ``user.litefs.plan`` = a plan in its JSON form. The view switches to it (and ``--bypass``
  binds are laid or lifted to match).

The xattr is set on the view's root through a path that is never a bypass bind.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from litefs.errors import MountError
from litefs.plan import Plan

XATTR_REFRESH = "user.litefs.refresh"
XATTR_PLAN = "user.litefs.plan"
XATTR_INODES = "user.litefs.inodes"
XATTR_SETTLED = "user.litefs.settled"
#: how long a refresh waits for the kernel's caches to be dropped before it returns anyway
SETTLE_S = 1.0
#: keep each request well under the 64 KiB xattr value limit
_BATCH_BYTES = 60000


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
