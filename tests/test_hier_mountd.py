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
