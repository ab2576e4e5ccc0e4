"""Subscriptions: which running nodes listen for invalidations, and delivering them.

Each subscribed connection owns a small bounded queue. Announcing never blocks on a slow
node: when a node's queue is full its pending events collapse into one "invalidate
everything" (``/``), which is always correct, only less precise. With several worker
processes each holds its own subscribers; ``remote`` counts the siblings' (kept current by
:mod:`.workers`) so an announcement can say which nodes it reached across all of them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import trio

QUEUE_SIZE = 32


class NoticeKind(enum.Enum):
    """What a subscriber's queue can carry."""

    #: Paths changed in the node's image or sources: the session sends an invalidate event.
    INVALIDATE = enum.auto()
    #: The tables changed: the session compares the node's plan and pushes it if it moved.
    CHECK_PLAN = enum.auto()


@dataclass(frozen=True)
class Notice:
    """One item of a subscriber's queue (``paths`` and ``seq`` for :attr:`NoticeKind.INVALIDATE`)."""

    kind: NoticeKind
    paths: tuple[str, ...] = ()
    seq: int = 0


@dataclass(eq=False)
class Subscriber:
    node: str
    send: trio.MemorySendChannel[Notice]
    receive: trio.MemoryReceiveChannel[Notice]
    overflowed: bool = False
    #: The plan JSON this node was last sent and the view generation it was checked
    #: against (see Session._send_plan): a plan change is state, not an event, so a queue
    #: overflow cannot lose it.
    plan_json: bytes | None = None
    plan_generation: int = -1


_CHECK_PLAN = Notice(NoticeKind.CHECK_PLAN)


@dataclass
class Hub:
    _subs: dict[str, set[Subscriber]] = field(default_factory=dict)
    seq: int = 0
    remote: dict[str, int] = field(default_factory=dict)
    #: Called with (node, +1/-1) on every local subscribe/unsubscribe (sibling bookkeeping).
    on_change: Callable[[str, int], None] | None = None
    #: Moves on every change of who is subscribed (the tree watcher follows it).
    version: int = 0

    def subscribe(self, node: str) -> Subscriber:
        send, receive = trio.open_memory_channel[Notice](QUEUE_SIZE)
        sub = Subscriber(node, send, receive)
        self._subs.setdefault(node, set()).add(sub)
        self.version += 1
        if self.on_change is not None:
            self.on_change(node, 1)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        subs = self._subs.get(sub.node)
        if subs is not None and sub in subs:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.node]
            self.version += 1
            if self.on_change is not None:
                self.on_change(sub.node, -1)

    def remote_delta(self, node: str, delta: int) -> None:
        self.version += 1
        count = self.remote.get(node, 0) + delta
        if count > 0:
            self.remote[node] = count
        else:
            self.remote.pop(node, None)

    @property
    def count(self) -> int:
        return sum(len(s) for s in self._subs.values()) + sum(self.remote.values())

    def subscribed_nodes(self) -> set[str]:
        return set(self._subs) | set(self.remote)

    def local_subscribers(self) -> list[Subscriber]:
        return [sub for subs in self._subs.values() for sub in subs]

    def wake_plans(self) -> int:
        """Tell every local subscription to check its node's plan (after a table change)."""
        woken = 0
        for sub in self.local_subscribers():
            if sub.overflowed:
                continue  # the overflow path checks the plan too
            try:
                sub.send.send_nowait(_CHECK_PLAN)
                woken += 1
            except trio.WouldBlock:
                sub.overflowed = True
        return woken

    def announce(self, nodes: Iterable[str], paths: Iterable[str]) -> list[str]:
        """Deliver locally; return every node reached here or at a sibling worker."""
        targets = set(nodes)
        reached = set(self.deliver(targets, paths))
        reached |= {n for n in targets if n in self.remote}
        return sorted(reached)

    def deliver(self, nodes: Iterable[str], paths: Iterable[str]) -> list[str]:
        """Queue an invalidation for every local subscriber of ``nodes``; the nodes reached."""
        self.seq += 1
        event = Notice(NoticeKind.INVALIDATE, tuple(paths) or ("/",), self.seq)
        reached = []
        for node in sorted(set(nodes)):
            subs = self._subs.get(node)
            if not subs:
                continue
            reached.append(node)
            for sub in subs:
                if sub.overflowed:
                    continue
                try:
                    sub.send.send_nowait(event)
                except trio.WouldBlock:
                    sub.overflowed = True
        return reached
