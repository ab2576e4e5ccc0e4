"""``mountd --workers 2`` follows changes for the nodes of every worker (a real process).

The first worker watches the trees (and, on PostgreSQL, the database) for all; each worker
pushes plan changes to its own subscribers. Nodes are spread over the workers by the
kernel, so with four subscribers both workers serve some (and the test holds either way).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from litefs.initramfs import client
from sqlalchemy import Engine

from litefs import db, tabledata
from tests.dbutil import load_tables
from tests.mountdutil import cluster_tables, free_port
from tests.test_live_follow import LINUXIMAGE
from tests.test_mountd_process import start_mountd

BIN = Path(sys.executable).parent
NODES = {f"n0{i}": f"127.0.0.1{i}" for i in range(1, 5)}


@pytest.mark.skipif(shutil.which("mountd", path=str(BIN)) is None, reason="mountd not installed")
def test_workers_push_plans_and_tree_changes_to_all_nodes(tmp_path: Path) -> None:
    image = tmp_path / "imgdir" / "rootimg"
    (image / "etc").mkdir(parents=True)
    (image / "etc" / "site.conf").write_text("v1\n")
    url = f"sqlite:///{tmp_path}/litefs.db"
    eng: Engine = db.open_engine(url)
    tables = cluster_tables(NODES)
    tables["linuximage"] = LINUXIMAGE + f'"img1",,,,,,,,,,"{tmp_path}/imgdir",,,,,,,,,,,,,\n'
    load_tables(eng, tables)
    ca = tmp_path / "ca"
    subprocess.run([BIN / "litefs", "ca", "init", "--dir", ca, "--san", "127.0.0.1"],
                   check=True, capture_output=True)
    port = free_port()
    log = tmp_path / "mountd.log"
    plans: dict[str, list[dict]] = {n: [] for n in NODES}
    changes: dict[str, list[list[str]]] = {n: [] for n in NODES}

    def has_tmpfs_hostname(node: str) -> bool:
        return any(r["path"] == "/etc/hostname" and r["option"] == "tmpfs"
                   for p in plans[node] for r in p["rules"])

    async def main() -> int:
        from tests.mountdutil import client_ssl

        proc = await start_mountd(url, ca, port, tmp_path / "s.sock", log, "--workers", "2",
                                  "--check-interval", "0.2")
        async with trio.open_nursery() as nursery:
            for node, address in NODES.items():
                await nursery.start(lambda task_status, n=node, a=address: client.subscribe(
                    f"127.0.0.1:{port}", changes[n].append, on_plan=plans[n].append,
                    ssl_context=client_ssl(ca), source_address=a, task_status=task_status))
            with trio.fail_after(15):
                while not all(plans.values()):
                    await trio.sleep(0.02)
                await trio.to_thread.run_sync(lambda: tabledata.chtab(
                    eng, {"image": "img1", "file": "/etc/hostname"}, ["litefile.options=tmpfs"]))
                while not all(has_tmpfs_hostname(n) for n in NODES):
                    await trio.sleep(0.02)
                # The watcher (first worker) follows the subscriptions of both workers.
                while '"watching"' not in log.read_text():
                    await trio.sleep(0.05)
                await trio.sleep(0.5)
                (image / "etc" / "site.conf").write_text("v2\n")
                while not all(["/etc/site.conf"] in changes[n] for n in NODES):
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            return await proc.wait()

    try:
        assert trio.run(main) == 0
    finally:
        eng.dispose()
    assert "Traceback" not in log.read_text()
