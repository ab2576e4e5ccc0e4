"""The blocking mountd client the boot's plan fetch uses (litefs.initramfs.wire), against a
real mountd over TCP and TLS: the same plan and the same errors as the trio client, one
request per connection, and no trio loaded to do it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from litefs.initramfs import wire
from litefs.mountd import codec
from sqlalchemy import Engine

from litefs.errors import MountdError
from tests.mountdutil import client_ssl, make_pki, server_ssl, serving, sqlite_cluster_engine

NODES = {"n01": "127.0.0.11", "n02": "127.0.0.12"}
ONCE = wire.Backoff(attempts=1)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("ca") / "ca")


@pytest.fixture
def sqlite_cluster(tmp_path: Path) -> Engine:
    with sqlite_cluster_engine(tmp_path, NODES) as eng:
        yield eng


def with_mountd(engine: Engine, ca: Path | None, body: Callable[[str], Any]) -> Any:
    """Run the blocking ``body(address)`` in a thread while mountd serves on this trio loop."""

    async def main() -> Any:
        async with serving(engine, ssl_context=server_ssl(ca) if ca else None) as srv:
            return await trio.to_thread.run_sync(body, f"127.0.0.1:{srv.ports[0]}")

    return trio.run(main)


def test_blocking_fetch_gets_the_nodes_own_plan_over_tls(sqlite_cluster: Engine, ca: Path) -> None:
    def body(server: str) -> None:
        for node, ip in NODES.items():
            plan = wire.fetch_plan_blocking(server, ssl_context=client_ssl(ca), source_address=ip, backoff=ONCE)
            assert plan.node == node
        with pytest.raises(MountdError, match="a node may only ask for its own plan"):
            wire.fetch_plan_blocking(server, node="n02", ssl_context=client_ssl(ca),
                                     source_address="127.0.0.11", backoff=ONCE)
        reply = wire.request_blocking(server, codec.HealthRequest(), ssl_context=client_ssl(ca),
                                      source_address="127.0.0.11")
        assert reply["ok"]

    with_mountd(sqlite_cluster, ca, body)


def test_blocking_fetch_fails_as_the_trio_client_does(sqlite_cluster: Engine, ca: Path, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other")

    def body(server: str) -> None:
        with pytest.raises(wire.CertificateError, match="does not verify"):
            wire.fetch_plan_blocking(server, ssl_context=client_ssl(other), source_address="127.0.0.11", backoff=ONCE)
        with pytest.raises(wire.CertificateError, match="mismatch"):
            wire.fetch_plan_blocking(server, ssl_context=client_ssl(ca), server_hostname="elsewhere.example",
                                     backoff=wire.Backoff(attempts=5))  # fatal: no retries
        with pytest.raises(MountdError, match="serves TLS unless started with --insecure"):
            wire.fetch_plan_blocking(server, ssl_context=None, source_address="127.0.0.11", backoff=ONCE)

    with_mountd(sqlite_cluster, ca, body)
    # Nobody listening: a clear reason, after the retries the backoff allows (with on_retry).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    retries: list[int] = []
    with pytest.raises(MountdError, match=r"cannot reach mountd at 127\.0\.0\.1"):
        wire.fetch_plan_blocking(f"127.0.0.1:{port}", backoff=wire.Backoff(base=0.01, attempts=3),
                                 on_retry=lambda n, _d, _e: retries.append(n))
    assert retries == [1, 2]


def test_a_silent_server_times_out() -> None:
    with socket.socket() as s:  # accepts (the kernel's backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        t0 = time.monotonic()
        with pytest.raises(MountdError, match=r"no answer from mountd at 127\.0\.0\.1:\d+ within 0\.3s"):
            wire.request_blocking(f"127.0.0.1:{s.getsockname()[1]}", codec.HealthRequest(), timeout=0.3)
        assert time.monotonic() - t0 < 2


def test_the_boot_fetch_loads_no_trio() -> None:
    code = ("import sys, litefs.initramfs.fetchplan, litefs.initramfs.wire, litefs.initramfs.ready\n"
            "print(sorted(m for m in sys.modules if m == 'trio' or m.startswith('trio.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
