"""Announcements that arrive over PostgreSQL (``pg_notify('litefs_notify', …)``) are hostile
input: any role that can connect to the database may send them, with no table privilege.
Their noderange is expanded as a request's is (bounded, in a worker thread, within the time
limit), a flood beyond the queue is dropped and logged, and a good node's plan requests stay
fast the whole time."""

from __future__ import annotations

import io
import json
import time

import psycopg
import pytest
import trio
from litefs.initramfs import client
from litefs.mountd.db_watch import NOTIFY_CHANNEL
from sqlalchemy import Engine

from tests.test_live_pg import NODES, _events, _mountd, _wait

pytestmark = pytest.mark.pg

HOSTILE = ["x[1-999999]", "/(a|a)*(.*.*.*.*)*x$", "(" * 5000 + "n01" + ")" * 5000,
           "^/etc/shadow", "n01,n02," * 900]


def _flood(engine: Engine, count: int) -> None:
    args, kwargs = engine.dialect.create_connect_args(engine.url)
    with psycopg.connect(*args, autocommit=True, **kwargs) as conn:
        for i in range(count):
            target = HOSTILE[i % len(HOSTILE)]
            payload = json.dumps({"o": "evil", "t": target, "p": ["/etc/shadow"]})[:7900]
            conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, payload))


def test_hostile_database_announcements_are_bounded(pg_engine: Engine) -> None:
    out = io.StringIO()
    changes: list[list[str]] = []
    latencies: list[float] = []

    async def main() -> None:
        async with _mountd(pg_engine, out) as srv, trio.open_nursery() as n:
            await n.start(lambda task_status: client.subscribe(
                f"127.0.0.1:{srv.ports[0]}", changes.append, source_address=NODES["n01"],
                task_status=task_status))
            await _wait(lambda: srv.follower.db_watch.listening, "LISTEN")
            flood = trio.to_thread.run_sync(_flood, pg_engine, 400)
            n.start_soon(lambda: flood)
            for _ in range(12):  # a good node keeps asking for its plan meanwhile
                t0 = time.monotonic()
                plan = await client.fetch_plan(f"127.0.0.1:{srv.ports[0]}",
                                               source_address=NODES["n02"])
                latencies.append(time.monotonic() - t0)
                assert plan.node == "n02"
                await trio.sleep(0.1)
            await _wait(lambda: _events(out, "announce_failed"), "refusals")
            n.cancel_scope.cancel()

    trio.run(main)
    assert max(latencies) < 1.0, latencies
    failed = _events(out, "announce_failed")
    assert failed and all(e["source"] == "database" for e in failed)
    assert not any("root:" in json.dumps(e) for e in failed)  # /etc/shadow never read
    # Only the plain list named real nodes; n01 got at most those announcements.
    assert all(c == ["/etc/shadow"] for c in changes)
