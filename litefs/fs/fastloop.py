"""A leaner request loop for pyfuse3: fewer trio scheduler passes per FUSE request.

pyfuse3's worker loop (``_session_loop``) takes ``trio.Lock`` and then waits on
``trio.lowlevel.wait_readable`` for every request. ``Lock.acquire`` always checkpoints (a full
scheduler pass with an ``epoll_wait``) even when nobody holds the lock, which with our single
worker is always; measured, that pass is ~1/4 of the daemon's CPU on a warm ``cat`` of small
files (two requests per file, each only a few µs of litefs work).

pyfuse3 looks ``trio`` up as a global of its own module (that is how ``pyfuse3.asyncio``
swaps in asyncio), so :func:`install` gives it a stand-in whose ``Lock`` takes a free lock
without a checkpoint and whose ``lowlevel.wait_readable`` first polls the FUSE fd for up to
:data:`SPIN_S` before sleeping in trio's ``epoll_wait``. The poll is the bigger win: most FUSE
callers are synchronous (``cat`` waits for OPEN's reply, then sends the next request a few
µs later), and a daemon that went to sleep in between is woken through an inter-processor
interrupt and an idle-state exit of its CPU, which on this machine cost more than the
request itself (warm ``cat`` of 1,000 small files: 87 ms sleeping, 48 ms polling; untar of
the stdlib: 857 -> 542 ms, with no more CPU seconds in all). It still yields to the
scheduler at least every :data:`YIELD_EVERY` requests, so the daemon's other tasks
(coherence notifier, signals, unmount watch) run under any flood of requests
(tests/test_fs_fastloop.py). Everything else is trio's own object.
"""

from __future__ import annotations

import select
import time
import types
from typing import Any

import pyfuse3
import trio

#: requests answered back to back before the loop yields to trio's scheduler anyway
YIELD_EVERY = 16
#: how long to poll for the next request before sleeping in epoll (s): gaps between the
#: requests of a synchronous caller are 5-30 µs; 20, 50, 100 and 200 µs measured alike
SPIN_S = 50e-6


class FastLock:
    """``trio.Lock`` without the checkpoint when the lock is free (pyfuse3's read lock)."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = trio.Lock()

    async def __aenter__(self) -> None:
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()


class _Ready:
    """``wait_readable`` that skips the scheduler while the kernel has requests queued."""

    def __init__(self) -> None:
        self._poll: Any = None
        self._fd = -1
        self._streak = 0

    async def wait_readable(self, fd: Any) -> None:
        if self._streak < YIELD_EVERY:
            if fd != self._fd:
                self._poll = select.poll()
                self._poll.register(fd, select.POLLIN)
                self._fd = fd
            deadline = time.perf_counter() + SPIN_S
            while True:
                if self._poll.poll(0):
                    self._streak += 1
                    return
                if time.perf_counter() >= deadline:
                    break
        self._streak = 0
        await trio.lowlevel.wait_readable(fd)


class _Shim(types.SimpleNamespace):
    """A module stand-in: the given names, everything else from ``base``."""

    def __init__(self, base: Any, **names: Any) -> None:
        super().__init__(**names)
        self._base = base

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


def install() -> None:
    """Give pyfuse3 the lean loop (call before ``pyfuse3.main``; idempotent)."""
    if isinstance(getattr(pyfuse3, "trio", None), _Shim):
        return
    ready = _Ready()
    pyfuse3.trio = _Shim(trio, Lock=FastLock, lowlevel=_Shim(trio.lowlevel, wait_readable=ready.wait_readable))  # type: ignore[attr-defined]
