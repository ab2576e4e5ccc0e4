"""End to end on one machine: an image change announced through mountd reaches a mounted view.

The node side is one line: ``subscribe(server, refresh_hook(mountpoint))``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from litefs.initramfs import client
from sqlalchemy import Engine

from litefs import db
from tests.dbutil import load_tables
from tests.fsutil import Layers, Mounter, make_plan, put
from tests.mountdutil import client_ssl, cluster_tables, make_pki, server_ssl, serving

pytestmark = pytest.mark.fuse


@pytest.fixture
def cluster(tmp_path: Path) -> Engine:
    eng = db.open_engine(f"sqlite:///{tmp_path}/litefs.db")
    load_tables(eng, cluster_tables({"n01": "127.0.0.11"}))
    yield eng
    eng.dispose()


def test_announced_change_shows_in_the_view(
    cluster: Engine, layers: Layers, litefs_mount: Mounter, tmp_path: Path
) -> None:
    ca = make_pki(tmp_path / "ca")
    put(layers.image, "etc/version", "1.0\n")
    view = litefs_mount(make_plan({"/tmp/": "tmpfs"})).path
    assert (view / "etc/version").read_text() == "1.0\n"
    refreshed: list[list[str]] = []

    async def main() -> None:
        hook = client.refresh_hook(str(view))

        async def on_change(paths: list[str]) -> None:
            await hook(paths)
            refreshed.append(paths)

        async with serving(cluster, ssl_context=server_ssl(ca)) as srv, trio.open_nursery() as n:
            server = f"127.0.0.1:{srv.ports[0]}"
            await n.start(lambda task_status: client.subscribe(
                server, on_change, ssl_context=client_ssl(ca), source_address="127.0.0.11",
                task_status=task_status))
            # The admin updates the image (a new file, as an image sync does) and announces it.
            os.unlink(layers.image / "etc/version")
            put(layers.image, "etc/version", "2.0 with more\n")
            put(layers.image, "etc/added", "added\n")
            reply = await client.announce(server, "img1", ["/etc/version", "/etc/added"],
                                          ssl_context=client_ssl(ca, "admin"))
            assert reply["notified"] == ["n01"]
            with trio.fail_after(10):
                while not refreshed:
                    await trio.sleep(0.02)
            n.cancel_scope.cancel()

    trio.run(main)
    assert refreshed == [["/etc/version", "/etc/added"]]
    assert (view / "etc/version").read_text() == "2.0 with more\n"
    assert (view / "etc/added").read_text() == "added\n"
