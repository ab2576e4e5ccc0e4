"""mountd test helpers: a small cluster in real tables, a site CA, a running server.

``cluster_tables(nodes)`` gives CSV text for ``load_tables``: every node in group ``compute``
booting osimage ``img1`` with two litefile rows, one litetree source and a statelite row;
``nodes`` maps node name → address for the ``hosts`` table. ``serving(...)`` runs a real
mountd (in this trio run) on an ephemeral port and yields it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import trio
from litefs.initramfs import tls
from litefs.mountd import pki
from litefs.mountd.catalog import Catalog
from litefs.mountd.config import ServerConfig
from litefs.mountd.log import Logger
from litefs.mountd.server import Server
from sqlalchemy import Engine

from tests.dbutil import load_tables

LITEFILE = (
    "#image,file,options,comments,disable\n"
    '"ALL","/etc/adjtime","tmpfs",,\n'
    '"ALL","/var/log/","persistent",,\n'
    '"img1","/etc/motd","ro",,\n'
)
LITETREE = "#priority,image,directory,mntopts,comments,disable\n" '"1.0","img1","mn:/statelite/$node",,,\n'


def cluster_tables(nodes: Mapping[str, str | None], *, extra_policy: str = "") -> dict[str, str]:
    """CSV text per table for a cluster of ``nodes`` (name → IP or None for no hosts row)."""
    nodelist = "#node,groups,status,statustime,appstatus,appstatustime,primarysn,hidden,updatestatus,updatestatustime,zonename,comments,disable\n"
    nodelist += "".join(f'"{n}","compute",,,,,,,,,,,\n' for n in nodes)
    hosts = "#node,ip,hostnames,otherinterfaces,comments,disable\n"
    hosts += "".join(f'"{n}","{ip}",,,,\n' for n, ip in nodes.items() if ip)
    tables = {
        "nodelist": nodelist,
        "hosts": hosts,
        "nodetype": "#node,os,arch,profile,provmethod,supportedarchs,nodetype,comments,disable\n"
        '"compute","rhels8","x86_64","compute","img1",,,,\n',
        "osimage": "#imagename,groups,profile,imagetype,description,provmethod,rootfstype,nfsrootopts,osdistroname,osupdatename,cfmdir,osname,osvers,osarch,synclists,postscripts,postbootscripts,serverrole,isdeletable,kitcomponents,environvar,comments,disable\n"
        '"img1",,"compute","linux",,"statelite",,,,,,"Linux","rhels8","x86_64",,,,,,,,,\n',
        "litefile": LITEFILE,
        "litetree": LITETREE,
        "statelite": "#node,image,statemnt,mntopts,comments,disable\n"
        '"compute",,"mn:/nodedata",,,\n',
    }
    if extra_policy:
        tables["policy"] = extra_policy
    return tables


#: The two-node cluster of the ``pg_engine`` fixture (node -> address).
PG_NODES = {"n01": "127.0.0.11", "n02": "127.0.0.12"}

POLICY_HEADER = "#priority,name,host,commands,noderange,parameters,time,rule,comments,disable\n"
DEFAULT_POLICY = POLICY_HEADER + '"1","root",,,,,,"allow",,\n"4.7",,,"litefile",,,,"allow",,\n"4.8",,,"litetree",,,,"allow",,\n'


def make_pki(directory: Path, nodes: tuple[str, ...] = ()) -> Path:
    """A site CA (``litefs ca init`` layout) plus node certificates ``<node>.pem``."""
    pki.init_site(directory, server_name="mountd-test", san=["127.0.0.1", "localhost"])
    for node in nodes:
        pki.issue(directory, "node", node)
    return directory


def server_ssl(ca_dir: Path):  # type: ignore[no-untyped-def]
    return pki.server_context(ca_dir / "ca.pem", ca_dir / "server.pem", ca_dir / "server.key")


def client_ssl(ca_dir: Path, who: str | None = None):  # type: ignore[no-untyped-def]
    cert = key = None
    if who is not None:
        cert, key = ca_dir / f"{who}.pem", ca_dir / f"{who}.key"
    return tls.client_context(ca_dir / "ca.pem", cert, key)


@asynccontextmanager
async def serving(
    engine: Engine,
    *,
    ssl_context=None,  # type: ignore[no-untyped-def]
    check_interval: float = 0.0,
    log: Logger | None = None,
    resolver: Any = None,
    **config: object,
) -> AsyncIterator[Server]:
    """A real mountd on 127.0.0.1-wide (all addresses) ephemeral port, in this trio run."""
    catalog = Catalog(engine, check_interval=check_interval, db_timeout=5.0, log=log)
    cfg = ServerConfig(host="0.0.0.0", port=0, ssl_context=ssl_context, **config)  # type: ignore[arg-type]
    kw = {"resolver": resolver} if resolver is not None else {}
    server = Server(catalog, cfg, log or Logger(level="error"), **kw)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        try:
            yield server
        finally:
            server.shutdown()


@contextmanager
def sqlite_cluster_engine(directory: Path, nodes: Mapping[str, str | None]) -> Iterator[Engine]:
    """A SQLite file in ``directory`` holding :func:`cluster_tables` of ``nodes``."""
    from litefs import db

    eng = db.open_engine(f"sqlite:///{directory}/litefs.db")
    try:
        load_tables(eng, cluster_tables(nodes))
        yield eng
    finally:
        eng.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mountd_process(db_url: str, port: int, *args: str, log_path: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """``mountd`` as a real subprocess; waits until it accepts connections; SIGTERM at the end."""
    exe = shutil.which("mountd", path=os.path.dirname(sys.executable))
    cmd = [exe or sys.executable, *([] if exe else ["-m", "litefs.mountd.cli"])]
    cmd += ["--db", db_url, "--port", str(port), "--host", "127.0.0.1", *args]
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mountd exited with {proc.returncode}: " + (log_path.read_text() if log_path else ""))
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("mountd did not start listening") from None
                time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if log_path:
            out.close()  # type: ignore[union-attr]
