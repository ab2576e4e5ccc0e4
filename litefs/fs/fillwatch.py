"""Say in the log when the tmpfs layer is nearly full, and when it is not any more.

The tmpfs layer is bounded (``site.litefs_tmpfs_size``), so a user filling it gets ENOSPC
instead of starving the node's RAM; the admin should hear of it before that happens. The
daemon calls :meth:`FillWatch.tick` on every write and create; it looks (one ``fstatvfs``) at
most once per ``interval`` seconds and logs one warning when the layer passes ``threshold``
and one line when it is back under, never one per write.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

log = logging.getLogger("litefs.fs")

#: fraction of the tmpfs layer's blocks in use above which the daemon warns
THRESHOLD = 0.9
#: seconds between two looks at the layer's usage
INTERVAL = 1.0


def used_fraction(st: os.statvfs_result) -> float:
    """Share of the blocks in use; an empty or size-less filesystem counts as unused."""
    if st.f_blocks <= 0:
        return 0.0
    return 1.0 - st.f_bfree / st.f_blocks


class FillWatch:
    """Edge-triggered "nearly full" warnings for one layer directory (by its open fd)."""

    def __init__(
        self,
        name: str,
        statvfs: Callable[[], os.statvfs_result],
        *,
        threshold: float = THRESHOLD,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._statvfs = statvfs
        self.threshold = threshold
        self.interval = interval
        self._clock = clock
        self._next = 0.0
        self.full = False

    @classmethod
    def for_fd(cls, name: str, fd: int) -> FillWatch:
        return cls(name, lambda: os.fstatvfs(fd))

    def tick(self) -> None:
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self.interval
        try:
            st = self._statvfs()
        except OSError as exc:  # never fail a write because the check could not look
            log.debug("%s layer: statvfs: %s", self.name, exc)
            return
        frac = used_fraction(st)
        if frac >= self.threshold and not self.full:
            self.full = True
            free_mib = st.f_bavail * st.f_frsize // (1 << 20)
            log.warning(
                "%s layer is %d%% full (%d MiB left); writes will fail with ENOSPC when it is "
                "full: remove files or raise site.litefs_tmpfs_size", self.name, frac * 100, free_mib,
            )
        elif frac < self.threshold and self.full:
            self.full = False
            log.info("%s layer is below %d%% full again (%d%%)", self.name, self.threshold * 100, frac * 100)


class NoWatch:
    """Stands in when there is no tmpfs layer (or a read-only view)."""

    def tick(self) -> None:
        return None
