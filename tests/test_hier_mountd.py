"""mountd as a service node (``--service-node``): a real server over TLS on real tables serves
the nodes of its pools, refuses the others with one line, keeps serving when its database goes
away, and refuses to start as an SN the servicenode table does not know."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio
from litefs.initramfs import client
from sqlalchemy import Engine

from litefs import db
from litefs.errors import MountdError
from tests.dbutil import load_tables
from tests.mountdutil import cluster_tables, make_pki, server_ssl, serving

ONCE = client.Backoff(attempts=1)
SERVICENODE = ("#node,nameserver,dhcpserver,tftpserver,nfsserver,conserver,monserver,"
               "ldapserver,ntpserver,ftpserver,nimserver,ipforward,dhcpinterfaces,proxydhcp,"
               'comments,disable\n"sn1",,,"1",,,,,,,,,,,,\n"sn2",,,"1",,,,,,,,,,,,\n')
NODERES = ("#node,servicenode,netboot,tftpserver,tftpdir,nfsserver,monserver,nfsdir,"
           "installnic,primarynic,discoverynics,cmdinterface,xcatmaster,current_osimage,"
           "next_osimage,nimserver,routenames,nameservers,proxydhcp,syslog,comments,disable\n"
           '"n01","sn1,sn2",,,,,,,,,,,,,,,,,,,,\n')


def _tables(engine: Engine) -> None:
    tables = cluster_tables({"n01": "127.0.0.11", "n02": "127.0.0.12"})
    load_tables(engine, {**tables, "servicenode": SERVICENODE, "noderes": NODERES})


def _ask(srv, ca: Path, source: str):  # type: ignore[no-untyped-def]
    from tests.mountdutil import client_ssl

    return client.fetch_plan(f"127.0.0.1:{srv.ports[0]}", ssl_context=client_ssl(ca),
                             backoff=ONCE, source_address=source, timeout=10)


def test_an_sn_serves_its_pools_nodes_and_refuses_the_rest(engine: Engine,
                                                           tmp_path: Path) -> None:
    _tables(engine)
    ca = make_pki(tmp_path / "ca")

    async def main() -> None:
        for sn in ("sn1", "sn2"):  # n01's pool names both: either may serve it
            async with serving(engine, ssl_context=server_ssl(ca), service_node=sn) as srv:
                plan = await _ask(srv, ca, "127.0.0.11")
                assert plan.node == "n01"
                # n02 has no pool: the MN serves it, an SN does not.
                with pytest.raises(MountdError, match=(
                        f"n02 is served by the management node \\(noderes.servicenode\\), not "
                        f"by service node {sn}; run nodeset for n02")):
                    await _ask(srv, ca, "127.0.0.12")
        async with serving(engine, ssl_context=server_ssl(ca), service_node="sn3") as srv:
            with pytest.raises(MountdError, match="n01 is served by sn1,sn2"):
                await _ask(srv, ca, "127.0.0.11")
        async with serving(engine, ssl_context=server_ssl(ca)) as srv:  # the MN: everyone
            assert (await _ask(srv, ca, "127.0.0.12")).node == "n02"

    trio.run(main)


def test_an_sn_whose_database_goes_away_serves_the_last_good_tables(
        tmp_path: Path) -> None:
    path = tmp_path / "litefs.db"
    e = db.open_engine(f"sqlite:///{path}")
    db.init_db(e)
    _tables(e)
    ca = make_pki(tmp_path / "ca")

    async def main() -> None:
        async with serving(e, ssl_context=server_ssl(ca), service_node="sn1",
                           check_interval=0.05) as srv:
            assert (await _ask(srv, ca, "127.0.0.11")).node == "n01"
            path.rename(tmp_path / "moved.db")  # the SN loses its database
            await trio.sleep(0.2)
            assert (await _ask(srv, ca, "127.0.0.11")).node == "n01"
            assert srv.catalog.db_error and "is gone" in srv.catalog.db_error

    try:
        trio.run(main)
    finally:
        e.dispose()


def test_mountd_refuses_an_sn_the_servicenode_table_does_not_know(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/litefs.db"
    e = db.open_engine(url)
    db.init_db(e)
    _tables(e)
    e.dispose()
    out = subprocess.run([str(Path(sys.executable).parent / "mountd"), "--db", url, "--insecure",
                          "--socket", "", "--port", "0", "--service-node", "snX"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.splitlines()[-1] == (
        "mountd: --service-node 'snX' is not in the servicenode table; add it (chtab "
        "node=snX servicenode.tftpserver=1) or fix the name")


@pytest.mark.pg
def test_an_sn_started_before_its_database_answers_tells_nodes_then_checks_its_name(
        tmp_path: Path) -> None:
    from sqlalchemy import make_url

    from tests.dbutil import pg_database
    from tests.mountdutil import free_port, mountd_process

    dbs = pg_database()
    url = next(dbs)
    try:
        u = make_url(url)
        socket_dir = str(u.query.get("host") or "")
        if not socket_dir.startswith("/"):
            pytest.skip("needs $LITEFS_TEST_PG on a Unix socket (the test links its folder)")
        e = db.open_engine(url)
        db.init_db(e)
        _tables(e)
        e.dispose()
        # The URL names a socket folder that is not there yet: the database cannot be
        # reached until the link appears (a PostgreSQL that comes up after the SN).
        link = tmp_path / "pg"
        cut = u.set(query={**u.query, "host": str(link)}).render_as_string(hide_password=False)

        async def ask(port: int):  # type: ignore[no-untyped-def]
            return await client.fetch_plan(f"127.0.0.1:{port}", backoff=ONCE,
                                           source_address="127.0.0.11", timeout=10)

        port = free_port()
        log = tmp_path / "mountd.log"
        with mountd_process(cut, port, "--insecure", "--socket", "", "--service-node", "sn1", log_path=log):
            with pytest.raises(MountdError, match=(
                    r"service node sn1: database unavailable; mountd retries every second")) as refused:
                trio.run(ask, port)
            # The node hears that, and nothing about the database; the admin's log has it.
            assert "postgres" not in str(refused.value) and str(link) not in str(refused.value)
            assert "db_unavailable" in log.read_text() and str(link) in log.read_text()
            link.symlink_to(socket_dir)
            plan = None
            for _ in range(100):  # bounded: the catalog retries every second
                try:
                    plan = trio.run(ask, port)
                    break
                except MountdError:
                    trio.run(trio.sleep, 0.1)
            assert plan is not None and plan.node == "n01"
        # The name it serves as is checked once the database answers: a typo stops it (2).
        link.unlink()
        port = free_port()
        proc = subprocess.Popen([str(Path(sys.executable).parent / "mountd"), "--db", cut,
                                 "--insecure", "--socket", "", "--port", str(port),
                                 "--host", "127.0.0.1", "--service-node", "snX"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            with pytest.raises(MountdError, match="service node snX: database unavailable"):
                for _ in range(200):  # until it listens (bounded)
                    try:
                        trio.run(ask, port)
                    except MountdError as exc:
                        if "database unavailable" in str(exc):
                            raise
                    trio.run(trio.sleep, 0.05)
            link.symlink_to(socket_dir)
            _out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 2, err
        assert "db_unavailable" in err.splitlines()[0]
        assert err.splitlines()[-1] == (
            "mountd: --service-node 'snX' is not in the servicenode table; add it (chtab "
            "node=snX servicenode.tftpserver=1) or fix the name")
    finally:
        dbs.close()
