"""Subscriptions and worker fan-out, without a server: the hub's queues and the siblings' channel."""

from __future__ import annotations

from typing import Any

import trio
from litefs.mountd.hub import QUEUE_SIZE, Hub
from litefs.mountd.workers import Siblings, make_channels


def test_announce_reaches_only_subscribed_targets_and_never_blocks() -> None:
    async def main() -> None:
        changes: list[tuple[str, int]] = []
        hub = Hub(on_change=lambda node, d: changes.append((node, d)))
        a1, a2, b = hub.subscribe("n01"), hub.subscribe("n01"), hub.subscribe("n02")
        assert hub.count == 3 and hub.subscribed_nodes() == {"n01", "n02"}
        assert hub.announce({"n01", "n03"}, ["/etc/motd"]) == ["n01"]
        for sub in (a1, a2):
            assert sub.receive.receive_nowait().paths == ("/etc/motd",)
        # A node that does not read: its queue fills, then collapses into "everything".
        for _ in range(QUEUE_SIZE + 5):
            hub.announce({"n02"}, [])
        assert b.overflowed
        # Siblings' subscribers count too.
        hub.remote_delta("n03", 1)
        assert hub.announce({"n03"}, []) == ["n03"]
        hub.remote_delta("n03", -1)
        assert hub.announce({"n03"}, []) == []
        for sub in (a1, a2, b, a1):  # unsubscribing twice is harmless
            hub.unsubscribe(sub)
        assert hub.count == 0
        assert changes == [("n01", 1), ("n01", 1), ("n02", 1), ("n01", -1), ("n01", -1), ("n02", -1)]

    trio.run(main)


def test_siblings_pass_messages_to_every_other_worker() -> None:
    inboxes, outboxes = make_channels(3)
    workers = [Siblings(i, inboxes[i], outboxes) for i in range(3)]
    got: dict[int, list[dict[str, Any]]] = {0: [], 1: [], 2: []}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for w in workers:
                async def handle(msg: dict[str, Any], i: int = w.index) -> None:
                    got[i].append(msg)

                nursery.start_soon(w.run, handle)
            workers[0].send({"t": "announce", "target": "compute", "paths": ["/x"]})
            workers[2].send({"t": "sub", "node": "n01", "d": 1})
            with trio.fail_after(5):
                while len(got[1]) < 2 or not got[0] or not got[2]:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert got[0] == [{"t": "sub", "node": "n01", "d": 1}]
    assert got[2] == [{"t": "announce", "target": "compute", "paths": ["/x"]}]
    assert sorted(m["t"] for m in got[1]) == ["announce", "sub"]
    for s in inboxes + outboxes:
        s.close()
