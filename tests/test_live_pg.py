"""Several mountds on one PostgreSQL (one per service node): every one follows every change.

Two real mountds (follow on) on one real database, a subscribed node on each. One ``chtab``
reaches both as a plan push (the change triggers and LISTEN, not a poll: the catalogs'
own check interval is set to an hour); ``litefs notify`` at one mountd reaches the node of
the other; ``pg_ctl restart`` under them: they keep serving the last good tables, say so
in one line each way, and follow the next change.
"""

from __future__ import annotations

import glob
import io
import json
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from litefs.initramfs import client
from litefs.mountd.catalog import Catalog
from litefs.mountd.config import ServerConfig
from litefs.mountd.log import Logger
from litefs.mountd.server import Server
from sqlalchemy import Engine, text

from litefs import tabledata
from tests.mountdutil import PG_NODES

pytestmark = pytest.mark.pg

NODES = PG_NODES


@asynccontextmanager
async def _mountd(engine: Engine, out: io.StringIO, sock: str | None = None
                  ) -> AsyncIterator[Server]:
    # check_interval of an hour: only the database's notifications can make it reload.
    catalog = Catalog(engine, check_interval=3600, db_timeout=5.0)
    server = Server(catalog, ServerConfig(host="127.0.0.1", port=0, follow_interval=0.1,
                                          watch_trees=False, unix_socket=sock),
                    Logger(out, level="info"))
    catalog._log = server.log
    async with trio.open_nursery() as n:
        await n.start(server.serve)
        try:
            yield server
        finally:
            server.shutdown()


def _events(out: io.StringIO, name: str) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, out.getvalue().splitlines()) if e.get("event") == name]


async def _wait(cond: Any, what: str, timeout: float = 10.0) -> None:
    with trio.move_on_after(timeout):
        while not cond():
            await trio.sleep(0.02)
        return
    raise AssertionError(f"no {what} within {timeout:g} s")


def _restart_postgres(engine: Engine) -> None:
    with engine.connect() as conn:
        datadir = conn.execute(text("SHOW data_directory")).scalar()
    pg_ctl = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if os.geteuid() != 0 or not pg_ctl:
        pytest.skip("restarting PostgreSQL needs root and a local pg_ctl")
    # The restarted server keeps pg_ctl's output open: a log file, not a pipe to wait on.
    subprocess.run(["runuser", "-u", "postgres", "--", pg_ctl[-1], "-D", str(datadir), "-m",
                    "fast", "-w", "-l", f"{datadir}/litefs-restart.log", "restart"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)


def test_two_mountds_follow_one_database_through_a_restart(pg_engine: Engine, tmp_path: Any
                                                          ) -> None:
    sock = str(tmp_path / "a.sock")  # the admin's `litefs notify` goes to mountd A
    out_a, out_b = io.StringIO(), io.StringIO()
    plans: dict[str, list[dict]] = {"n01": [], "n02": []}
    changes: dict[str, list[list[str]]] = {"n01": [], "n02": []}

    def rules(node: str) -> dict[str, str]:
        return {r["path"]: r["option"] for r in plans[node][-1]["rules"]}

    async def main() -> None:
        async with _mountd(pg_engine, out_a, sock) as a, _mountd(pg_engine, out_b) as b, \
                trio.open_nursery() as n:
            for node, srv in (("n01", a), ("n02", b)):
                await n.start(lambda task_status, node=node, srv=srv: client.subscribe(
                    f"127.0.0.1:{srv.ports[0]}", changes[node].append,
                    on_plan=plans[node].append, source_address=NODES[node],
                    task_status=task_status))
            # Each node is sent its plan once on subscribing.
            await _wait(lambda: plans["n01"] and plans["n02"], "first plans")
            assert "/etc/hostname" not in rules("n01")
            await _wait(lambda: a.follower.db_watch.listening and b.follower.db_watch.listening,
                        "LISTEN")

            # One table change on "the MN": both mountds push the new plan to their node.
            await trio.to_thread.run_sync(lambda: tabledata.chtab(
                pg_engine, {"image": "img1", "file": "/etc/hostname"},
                ["litefile.options=tmpfs"]))
            await _wait(lambda: all(rules(x).get("/etc/hostname") == "tmpfs" for x in plans),
                        "plan push to both")

            # `litefs notify` at mountd A reaches the node served by mountd B.
            reply = await client.announce(f"unix:{sock}", "compute", ["/etc/issue"])
            assert reply["notified"] == ["n01"] and reply["fanout"] is True
            await _wait(lambda: ["/etc/issue"] in changes["n02"], "notify fan-out")
            assert ["/etc/issue"] in changes["n01"]

            # The database restarts under them.
            await trio.to_thread.run_sync(_restart_postgres, pg_engine)
            await _wait(lambda: _events(out_a, "db_listen_restored")
                        and _events(out_b, "db_listen_restored"), "reconnect", 30)
            # Plans were served meanwhile and are served now (the last good tables).
            plan = await client.fetch_plan(f"127.0.0.1:{b.ports[0]}",
                                           source_address=NODES["n02"])
            assert plan.node == "n02"
            # And the next change is followed as before.
            await trio.to_thread.run_sync(lambda: tabledata.chtab(
                pg_engine, {"image": "img1", "file": "/etc/hostname"},
                ["litefile.options=persistent"]))
            await _wait(lambda: all(rules(x).get("/etc/hostname") == "persistent"
                                    for x in plans), "plan push after restart")
            n.cancel_scope.cancel()

    try:
        trio.run(main)
    except BaseException:
        print("mountd A:", out_a.getvalue(), "mountd B:", out_b.getvalue(), plans, sep="\n")
        raise
    for out in (out_a, out_b):
        # One line each way, not one per retry.
        assert len(_events(out, "db_listen_lost")) == 1
        assert len(_events(out, "db_listen_restored")) == 1
        assert _events(out, "plan_pushed")
