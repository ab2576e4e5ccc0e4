"""Subscriptions: which running nodes listen for invalidations, and delivering them.

Each subscribed connection owns a small bounded queue. Announcing never blocks on a slow
node: when a node's queue is full its pending events collapse into one "invalidate
everything" (``/``), which is always correct, only less precise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import trio

QUEUE_SIZE = 32


@dataclass(eq=False)
class Subscriber:
    node: str
    send: trio.MemorySendChannel[dict]
    receive: trio.MemoryReceiveChannel[dict]
    overflowed: bool = False


@dataclass
class Hub:
    _subs: dict[str, set[Subscriber]] = field(default_factory=dict)
    seq: int = 0

    def subscribe(self, node: str) -> Subscriber:
        send, receive = trio.open_memory_channel[dict](QUEUE_SIZE)
        sub = Subscriber(node, send, receive)
        self._subs.setdefault(node, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        subs = self._subs.get(sub.node)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.node]

    @property
    def count(self) -> int:
        return sum(len(s) for s in self._subs.values())

    def subscribed_nodes(self) -> set[str]:
        return set(self._subs)

    def announce(self, nodes: Iterable[str], paths: Iterable[str]) -> list[str]:
        """Queue an invalidation for every subscriber of ``nodes``; return the nodes reached."""
        self.seq += 1
        event = {"event": "invalidate", "paths": list(paths) or ["/"], "seq": self.seq}
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
