"""Booted nodes follow every change with no manual step (issue 12.4, 16.3), end to end.

Real nodes (``litefs.tools.cluster_sim``: the real boot hook as PID 1, switch_root into the litefs
view, ``@litefs-watch`` subscribed to mountd) and real mountd processes in the management
namespace. No ``litefs notify`` unless the test says so:

* SQLite: ``chtab`` a litefile row → the read-only path becomes writable on the node; an
  in-place edit of a file in the image on the MN → the node reads the new content.
* PostgreSQL (``LITEFS_TEST_PG``): two mountds on one database (as on two service nodes),
  a node on each; one ``chtab`` → both nodes follow; ``litefs notify`` at one mountd → the
  nodes of both; ``pg_ctl restart`` → both mountds keep serving and follow the next change.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from litefs.tools.cluster_sim import (
    DEMO_IMAGE_DIR,
    Cluster,
    ClusterNode,
    demo_tables,
    load_demo_tables,
    stage_demo,
)
from sqlalchemy import create_engine, make_url, text

from litefs import db, tabledata
from tests.dbutil import pg_admin_url

pytestmark = [pytest.mark.netns, pytest.mark.fuse, pytest.mark.slow]


def _skip_without_tools() -> None:
    for tool in ("ip", "unshare", "busybox"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if not Path("/dev/fuse").exists():
        pytest.skip("/dev/fuse is missing")


class Mountds:
    """mountd processes of our own in the cluster's management namespace (follow on)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, db_url: str, port: int, *args: str) -> Path:
        c = self.cluster
        name = f"mountd-{port}"
        sock = c.workdir / f"{name}.sock"
        from litefs.mountd import pki

        ca_dir = c.workdir / "ca"
        if not (ca_dir / "ca.pem").exists():
            pki.init_site(ca_dir, server_name="mn", san=[c.mn_ip])
        c.ca = ca_dir / "ca.pem"
        cmd = [str(Path(c.python).parent / "mountd"), "--db", db_url, "--host", c.mn_ip,
               "--port", str(port), "--socket", str(sock), "--log-format", "text",
               "--ca-dir", str(ca_dir),
               # The MN's exports live under one folder in this harness.
               "--watch-root", str(c.exports / c.mn_ip), *args]
        with open(c.workdir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(["ip", "netns", "exec", c.mn_ns, *cmd], stdout=log,
                                    stderr=subprocess.STDOUT,
                                    env={**os.environ, "LITEFS_CLUSTER": c.tag})
        self.procs.append(proc)
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, self.log(port)
            time.sleep(0.05)
        c.admin_socket = sock  # type: ignore[attr-defined]
        return sock

    def log(self, port: int) -> str:
        return (self.cluster.workdir / f"mountd-{port}.log").read_text()[-3000:]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()


def _until(node: ClusterNode, cond: Callable[[], bool], what: str, debug: Callable[[], str],
           timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{node.name}: no {what} within {timeout:g} s\n" \
            + node.initramfs_file("/.litefs/statelite/watch.log")[-2000:] + debug()
        time.sleep(0.1)


def _writable(node: ClusterNode, path: str) -> bool:
    return node.sh(f"echo live > {path}")[0] == 0


@pytest.fixture
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _skip_without_tools()
    return tmp_path_factory.mktemp("live")


def test_sqlite_node_follows_table_and_image_edits_by_itself(work: Path) -> None:
    with Cluster(work) as c:
        mountds = Mountds(c)
        try:
            stage_demo(c)
            # Plain image content (the demo's /etc/issue is an "ro" row: it follows its
            # source within a second anyway), cached by the node for the cache timeout.
            (c.exports / c.mn_ip / DEMO_IMAGE_DIR.lstrip("/") / "rootimg/etc/site.conf"
             ).write_text("v1\n")
            url = f"sqlite:///{work}/litefs.db"
            load_demo_tables(url, demo_tables(c))
            mountds.start(url, 3001)
            node = c.boot("n01", c.cmdline("n01", DEMO_IMAGE_DIR))
            node.wait_shell(60)
            debug = lambda: mountds.log(3001)  # noqa: E731
            assert not _writable(node, "/etc/hostname")  # image content: read-only

            engine = db.open_engine(url)
            try:
                tabledata.chtab(engine, {"image": "ALL", "file": "/etc/hostname"},
                                ["litefile.options=tmpfs"])
            finally:
                engine.dispose()
            _until(node, lambda: _writable(node, "/etc/hostname"), "writable /etc/hostname",
                   debug)
            assert node.check("cat /etc/hostname") == "live\n"

            conf = c.exports / c.mn_ip / DEMO_IMAGE_DIR.lstrip("/") / "rootimg/etc/site.conf"
            assert node.check("cat /etc/site.conf") == "v1\n"
            assert "site.conf" in node.check("ls -l /etc")  # attributes now cached by the kernel
            conf.write_text("demo image v2, edited on the MN\n")  # in place: same inode
            _until(node, lambda: node.check("cat /etc/site.conf")
                   == "demo image v2, edited on the MN\n", "new /etc/site.conf", debug)
            # One swap, for the chtab: the plan sent on subscribing equalled the boot's own.
            assert node.initramfs_file("/.litefs/statelite/watch.log").count("plan changed") == 1
        finally:
            c.close()
            mountds.stop()
        assert c.leftovers() == []


@pytest.fixture
def pg_url() -> Iterator[str]:
    admin_url = make_url(pg_admin_url()).set(drivername="postgresql+psycopg")
    name = "litefs_livens_" + uuid.uuid4().hex[:12]
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield admin_url.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.mark.pg
def test_postgres_two_mountds_nodes_of_both_follow(work: Path, pg_url: str) -> None:
    from tests.test_live_pg import _restart_postgres

    with Cluster(work) as c:
        mountds = Mountds(c)
        try:
            stage_demo(c)
            # Plain image content (the demo's /etc/issue is an "ro" row: it follows its
            # source within a second anyway), cached by the node for the cache timeout.
            (c.exports / c.mn_ip / DEMO_IMAGE_DIR.lstrip("/") / "rootimg/etc/site.conf"
             ).write_text("v1\n")
            load_demo_tables(pg_url, demo_tables(c))
            # Tree watching off: here the image edit must travel by `litefs notify`.
            sock_a = mountds.start(pg_url, 3001, "--no-watch-trees")
            mountds.start(pg_url, 3002, "--no-watch-trees")
            nodes = {"n01": c.boot("n01", c.cmdline("n01", DEMO_IMAGE_DIR, port=3001)),
                     "n03": c.boot("n03", c.cmdline("n03", DEMO_IMAGE_DIR, port=3002))}
            for node in nodes.values():
                node.wait_shell(60)
            debug = lambda: mountds.log(3001) + mountds.log(3002)  # noqa: E731
            engine = db.open_engine(pg_url)
            try:
                tabledata.chtab(engine, {"image": "ALL", "file": "/etc/hostname"},
                                ["litefile.options=tmpfs"])
                for node in nodes.values():
                    _until(node, lambda n=node: _writable(n, "/etc/hostname"),
                           "writable /etc/hostname", debug)

                conf = c.exports / c.mn_ip / DEMO_IMAGE_DIR.lstrip("/") / "rootimg/etc/site.conf"
                for node in nodes.values():
                    assert node.check("cat /etc/site.conf; ls -l /etc >/dev/null") == \
                        "v1\n"
                conf.write_text("demo image v2 via notify\n")
                c.admin_socket = sock_a  # type: ignore[attr-defined]
                out = c.notify("compute", "/etc/site.conf")  # at mountd A only
                assert "n01" in out and "n03" not in out  # A's own node; B's via the DB
                for node in nodes.values():
                    _until(node, lambda n=node: n.check("cat /etc/site.conf")
                           == "demo image v2 via notify\n", "notified /etc/site.conf", debug)

                _restart_postgres(engine)
                for port in (3001, 3002):
                    _until(nodes["n01"], lambda p=port: "db_listen_restored" in mountds.log(p),
                           "reconnect", debug, 30)
                engine.dispose()  # its pooled connections died with the server
                tabledata.chtab(engine, {"image": "ALL", "file": "/etc/hostname"},
                                ["litefile.disable=1"])
                for node in nodes.values():
                    _until(node, lambda n=node: not _writable(n, "/etc/hostname"),
                           "read-only /etc/hostname again", debug)
                # A node booting now is served by both (they kept the tables).
                n02 = c.boot("n02", c.cmdline("n02", DEMO_IMAGE_DIR, port=3002))
                n02.wait_shell(60)
            finally:
                engine.dispose()
        finally:
            c.close()
            mountds.stop()
        assert c.leftovers() == []
