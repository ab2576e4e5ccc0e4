"""mountd in-process over real TLS sockets: identity, policy, admin, changes, bad clients.

Nodes are told apart by loopback source addresses (127.0.0.11 = n01, ...) mapped in the
hosts table; the tables live in a real SQLite file (and PostgreSQL where marked).
"""

from __future__ import annotations

import io
import json
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litefs.initramfs import client, tls
from litefs.mountd import codec
from litefs.mountd.catalog import Catalog
from litefs.mountd.log import Logger
from sqlalchemy import Engine, create_engine

from litefs import tabledata
from litefs.errors import MountdError
from tests.dbutil import load_tables
from tests.mountdutil import (
    DEFAULT_POLICY,
    POLICY_HEADER,
    client_ssl,
    cluster_tables,
    make_pki,
    server_ssl,
    serving,
    sqlite_cluster_engine,
)

NODES = {"n01": "127.0.0.11", "n02": "127.0.0.12", "n03": "127.0.0.13", "n04": None, "n05": None}
ONCE = client.Backoff(attempts=1)


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    return trio.run(fn)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("ca") / "ca", ("n04",))


@pytest.fixture
def cluster(engine: Engine) -> Engine:
    load_tables(engine, cluster_tables(NODES))
    return engine


@pytest.fixture
def sqlite_cluster(tmp_path: Path) -> Engine:
    with sqlite_cluster_engine(tmp_path, NODES) as eng:
        yield eng


def addr(srv: Any) -> str:
    return f"127.0.0.1:{srv.ports[0]}"


def test_each_address_gets_its_own_plan(cluster: Engine, ca: Path) -> None:
    async def main() -> None:
        async with serving(cluster, ssl_context=server_ssl(ca)) as srv:
            for node in ("n01", "n02", "n03"):
                plan = await client.fetch_plan(
                    addr(srv), ssl_context=client_ssl(ca), source_address=NODES[node], backoff=ONCE
                )
                assert plan.node == node
                assert plan.image == "img1"
                assert [s.directory for s in plan.sources] == [f"mn:/statelite/{node}"]
                assert {r.path for r in plan.rules} >= {"/etc/adjtime", "/var/log", "/etc/motd"}
                assert plan.statemnt == "mn:/nodedata"

    run(main)


def test_node_cannot_read_another_nodes_plan(sqlite_cluster: Engine, ca: Path) -> None:
    out = io.StringIO()

    async def main() -> None:
        async with serving(sqlite_cluster, ssl_context=server_ssl(ca), log=Logger(out)) as srv:
            with pytest.raises(MountdError, match="a node may only ask for its own plan"):
                await client.fetch_plan(addr(srv), node="n02", ssl_context=client_ssl(ca),
                                        source_address="127.0.0.11", backoff=ONCE)
            # Asking for itself by name is fine.
            plan = await client.fetch_plan(addr(srv), node="n01", ssl_context=client_ssl(ca),
                                           source_address="127.0.0.11", backoff=ONCE)
            assert plan.node == "n01"

    run(main)
    refusals = [json.loads(x) for x in out.getvalue().splitlines() if '"refused"' in x]
    assert refusals and refusals[0]["peer"] == "127.0.0.11"
    assert refusals[0]["node"] == "n01" and refusals[0]["asked"] == "n02"


def test_admin_certificate_reads_any_plan(sqlite_cluster: Engine, ca: Path) -> None:
    async def main() -> None:
        async with serving(sqlite_cluster, ssl_context=server_ssl(ca)) as srv:
            admin = client_ssl(ca, "admin")
            plan = await client.fetch_plan(addr(srv), node="n05", ssl_context=admin, backoff=ONCE)
            assert plan.node == "n05"
            with pytest.raises(MountdError, match="unknown node 'n99'"):
                await client.fetch_plan(addr(srv), node="n99", ssl_context=admin, backoff=ONCE)

    run(main)


def test_node_certificate_names_the_node(sqlite_cluster: Engine, ca: Path) -> None:
    async def main() -> None:
        async with serving(sqlite_cluster, ssl_context=server_ssl(ca)) as srv:
            # n04 has no hosts row; its certificate says who it is, from any address.
            plan = await client.fetch_plan(addr(srv), ssl_context=client_ssl(ca, "n04"),
                                           source_address="127.0.0.99", backoff=ONCE)
            assert plan.node == "n04"

    run(main)


def test_unknown_address_is_refused_and_reverse_dns_is_used(sqlite_cluster: Engine, ca: Path) -> None:
    names = {"127.0.0.15": "n05-eth0.cluster.example.com"}

    async def resolver(address: str) -> str | None:
        return names.get(address)

    async def main() -> None:
        async with serving(sqlite_cluster, ssl_context=server_ssl(ca), resolver=resolver) as srv:
            plan = await client.fetch_plan(addr(srv), ssl_context=client_ssl(ca),
                                           source_address="127.0.0.15", backoff=ONCE)
            assert plan.node == "n05"
            with pytest.raises(MountdError, match=r"cannot tell which node 127\.0\.0\.16 is"):
                await client.fetch_plan(addr(srv), ssl_context=client_ssl(ca),
                                        source_address="127.0.0.16", backoff=ONCE)

    run(main)


def test_real_reverse_dns_of_a_non_node(sqlite_cluster: Engine, ca: Path) -> None:
    async def main() -> None:
        async with serving(sqlite_cluster, ssl_context=server_ssl(ca)) as srv:
            with pytest.raises(MountdError, match=r"cannot tell which node 127\.0\.0\.1 is"):
                await client.fetch_plan(addr(srv), ssl_context=client_ssl(ca),
                                        source_address="127.0.0.1", backoff=ONCE)

    run(main)


def test_policy_rows_allow_and_deny_without_restart(cluster: Engine, ca: Path) -> None:
    async def fetch(srv: Any, node: str) -> Any:
        return await client.fetch_plan(addr(srv), ssl_context=client_ssl(ca),
                                       source_address=NODES[node], backoff=ONCE)

    async def main() -> None:
        async with serving(cluster, ssl_context=server_ssl(ca)) as srv:
            assert (await fetch(srv, "n02")).node == "n02"
            deny_n02 = DEFAULT_POLICY + '"2",,,"litefile","n02",,,"deny",,\n'
            tabledata.restore(cluster, "policy", deny_n02, "policy.csv")
            with pytest.raises(MountdError, match=r"Permission denied.*priority=2 rule=deny"):
                await fetch(srv, "n02")
            assert (await fetch(srv, "n01")).node == "n01"
            # Without the default allow rows nobody gets anything.
            tabledata.restore(cluster, "policy", POLICY_HEADER + '"1","root",,,,,,"allow",,\n', "p.csv")
            with pytest.raises(MountdError, match="matched no policy row"):
                await fetch(srv, "n01")
            # host column: only the peer whose name matches.
            tabledata.restore(cluster, "policy", POLICY_HEADER + '"3",,"n03",,,,,"allow",,\n', "p.csv")
            assert (await fetch(srv, "n03")).node == "n03"
            with pytest.raises(MountdError, match="Permission denied"):
                await fetch(srv, "n01")

    run(main)


def test_table_changes_show_without_restart(sqlite_cluster: Engine, ca: Path) -> None:
    async def main() -> None:
        async with serving(sqlite_cluster, ssl_context=server_ssl(ca)) as srv:
            before = await client.fetch_plan(addr(srv), ssl_context=client_ssl(ca),
                                             source_address="127.0.0.11", backoff=ONCE)
            assert "/opt/new" not in {r.path for r in before.rules}
            tabledata.chtab(sqlite_cluster, {"image": "ALL", "file": "/opt/new"},
                            ["litefile.options=persistent"])
            tabledata.chtab(sqlite_cluster, {"node": "n01"}, ["hosts.ip=127.0.0.21"])
            after = await client.fetch_plan(addr(srv), ssl_context=client_ssl(ca),
                                            source_address="127.0.0.21", backoff=ONCE)
            assert after.node == "n01"
            assert after.rule_for("/opt/new") is not None

    run(main)


def test_catalog_checks_for_changes_on_its_clock(sqlite_cluster: Engine) -> None:
    """With a 5 s check interval a change is seen after 5 s of (mock) time, not before."""
    loads: list[int] = []

    def loader(eng: Engine, gen: int) -> Any:
        from litefs.mountd.catalog import load_view

        loads.append(gen)
        return load_view(eng, gen)

    async def main() -> None:
        catalog = Catalog(sqlite_cluster, check_interval=5.0, loader=loader)
        clock = trio.lowlevel.current_clock()
        assert isinstance(clock, trio.testing.MockClock)
        v1 = await catalog.view()
        for _ in range(100):
            assert await catalog.view() is v1  # a boot storm reads the database once
        tabledata.chtab(sqlite_cluster, {"image": "ALL", "file": "/opt/x"}, ["litefile.options=ro"])
        clock.jump(4.9)
        assert await catalog.view() is v1
        clock.jump(0.2)
        v2 = await catalog.view()
        assert v2.generation == 2 and v2.plan("n01").plan_json is not None
        assert b"/opt/x" in (v2.plan("n01").plan_json or b"")
        clock.jump(5.1)
        assert await catalog.view() is v2  # unchanged tables: checked, not reloaded
        catalog.invalidate()
        assert (await catalog.view()).generation == 3

    trio.run(main, clock=trio.testing.MockClock())
    assert loads == [1, 2, 3]


def test_tls_verification_failures(sqlite_cluster: Engine, ca: Path, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other")

    async def main() -> None:
        async with serving(sqlite_cluster, ssl_context=server_ssl(ca)) as srv:
            # A node trusting another CA refuses mountd at once (no retries: cannot heal).
            with pytest.raises(client.CertificateError, match="does not verify"):
                await client.fetch_plan(addr(srv), ssl_context=client_ssl(other),
                                        source_address="127.0.0.11")
            # Wrong name: the certificate is for 127.0.0.1/localhost/mountd-test only.
            with pytest.raises(client.CertificateError, match="mismatch"):
                await client.fetch_plan(addr(srv), ssl_context=client_ssl(ca),
                                        server_hostname="elsewhere.example")
            # An admin certificate from another CA is not accepted by mountd.
            with pytest.raises(MountdError):
                await client.request(addr(srv), codec.AnnounceRequest("n01"),
                                     ssl_context=_trusting(ca, other / "admin.pem", other / "admin.key"))
            # No client certificate, or a node's: admin requests are refused.
            for ctx in (client_ssl(ca), client_ssl(ca, "n04")):
                with pytest.raises(MountdError, match="needs an admin certificate"):
                    await client.request(addr(srv), codec.AnnounceRequest("n01"), ssl_context=ctx)
                with pytest.raises(MountdError, match="needs an admin certificate"):
                    await client.request(addr(srv), codec.ReloadRequest(), ssl_context=ctx)
            reply = await client.request(addr(srv), codec.ReloadRequest(),
                                         ssl_context=client_ssl(ca, "admin"))
            assert reply["ok"]

    run(main)


def _trusting(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    return tls.client_context(ca / "ca.pem", cert, key)


def test_notifications_reach_subscribed_nodes(sqlite_cluster: Engine, ca: Path, tmp_path: Path) -> None:
    sock = str(tmp_path / "mountd.sock")
    got: dict[str, list[list[str]]] = {"n01": [], "n02": []}

    async def main() -> None:
        async with (
            serving(sqlite_cluster, ssl_context=server_ssl(ca), unix_socket=sock) as srv,
            trio.open_nursery() as nursery,
        ):
                for node in got:
                    await nursery.start(partial_subscribe(addr(srv), ca, node, got[node]))
                assert srv.hub.subscribed_nodes() == {"n01", "n02"}
                # Admin over TLS, by noderange.
                reply = await client.announce(addr(srv), "n01", ["/etc/motd"],
                                              ssl_context=client_ssl(ca, "admin"))
                assert reply["notified"] == ["n01"] and reply["targeted"] == 1
                # Root on the local socket is admin too; an osimage reaches everyone on it.
                reply = await client.announce(f"unix:{sock}", "img1", [])
                assert reply["notified"] == ["n01", "n02"] and reply["targeted"] == 5
                with pytest.raises(MountdError, match="invalid nodes and/or groups"):
                    await client.announce(f"unix:{sock}", "nosuch", [])
                with trio.fail_after(5):
                    while len(got["n01"]) < 2 or len(got["n02"]) < 1:
                        await trio.sleep(0.01)
                nursery.cancel_scope.cancel()

    run(main)
    assert got["n01"] == [["/etc/motd"], ["/"]]
    assert got["n02"] == [["/"]]


def partial_subscribe(server: str, ca: Path, node: str, sink: list[list[str]]) -> Any:
    async def task(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await client.subscribe(server, sink.append, ssl_context=client_ssl(ca),
                               source_address=NODES[node], task_status=task_status)

    return task


def test_bad_clients_never_stall_a_good_one(sqlite_cluster: Engine, ca: Path) -> None:
    results: dict[str, Any] = {}

    async def main() -> None:
        async with serving(sqlite_cluster, ssl_context=server_ssl(ca), request_timeout=2.0,
                           handshake_timeout=2.0, max_message=4096) as srv:
            port = srv.ports[0]

            async def tls_stream() -> trio.SSLStream[trio.SocketStream]:
                raw = await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.12")
                s = trio.SSLStream(raw, client_ssl(ca), server_hostname="127.0.0.1")
                await s.do_handshake()
                return s

            async def slowloris() -> None:
                s = await tls_stream()
                start = trio.current_time()
                try:
                    for ch in b'{"op":"plan"' + b" " * 30:  # 8.4 s if never cut
                        await s.send_all(bytes([ch]))
                        await trio.sleep(0.2)
                    results["slowloris"] = "finished?!"
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    results["slowloris"] = trio.current_time() - start

            async def half_open() -> None:
                raw = await trio.open_tcp_stream("127.0.0.1", port)
                results["half_open"] = await raw.receive_some(100)  # closed after the timeout

            async def garbage() -> None:
                raw = await trio.open_tcp_stream("127.0.0.1", port)
                await raw.send_all(b"GET / HTTP/1.0\r\n\r\n" * 10)
                try:
                    results["garbage"] = await raw.receive_some(100)
                except trio.BrokenResourceError:
                    results["garbage"] = b""

            async def oversized() -> None:
                s = await tls_stream()
                try:
                    await s.send_all(b"{" + b"x" * 10000)
                except trio.BrokenResourceError:
                    pass
                results["oversized"] = codec.decode_message((await s.receive_some(1000)).strip())

            async def bad_json() -> None:
                s = await tls_stream()
                await s.send_all(b'{"op": "plan", oops}\n')
                results["bad_json"] = codec.decode_message((await s.receive_some(1000)).strip())

            async def good() -> None:
                await trio.sleep(0.1)  # let the bad ones get in first
                served = 0
                with trio.fail_after(10):
                    # Served again and again while the slowloris and the half-open peer hold
                    # their connections (they are cut only after 2 s).
                    while "slowloris" not in results or served < 3:
                        plan = await client.fetch_plan(addr(srv), ssl_context=client_ssl(ca),
                                                       source_address="127.0.0.11", backoff=ONCE)
                        assert plan.node == "n01"
                        served += 1
                results["good"] = served

            async with trio.open_nursery() as nursery:
                for fn in (slowloris, half_open, garbage, oversized, bad_json, good):
                    nursery.start_soon(fn)
            health = await client.request(addr(srv), codec.HealthRequest(), ssl_context=client_ssl(ca))
            results["connections"] = health["connections"]

    run(main)
    assert results["good"] >= 3
    assert 1.9 < results["slowloris"] < 6.0  # cut at request_timeout, not left hanging
    assert results["half_open"] == b""
    assert results["garbage"] == b""
    assert results["oversized"]["code"] == "protocol" and "too large" in results["oversized"]["error"]
    assert results["bad_json"]["code"] == "protocol"
    assert results["connections"] == 1  # only the health request itself is still open


def test_database_outage_is_a_clear_error(ca: Path, sqlite_cluster: Engine) -> None:
    dead = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")

    async def main() -> None:
        async with serving(dead, ssl_context=server_ssl(ca)) as srv:
            with pytest.raises(MountdError, match="database unavailable"):
                await client.fetch_plan(addr(srv), ssl_context=client_ssl(ca), backoff=ONCE,
                                        source_address="127.0.0.11")
            health = await client.request(addr(srv), codec.HealthRequest(), ssl_context=client_ssl(ca))
            assert health["status"] == "degraded" and health["db_error"]
        # A database that goes away after the first load: the last good tables keep serving.
        async with serving(sqlite_cluster, ssl_context=server_ssl(ca)) as srv:
            await client.fetch_plan(addr(srv), ssl_context=client_ssl(ca), backoff=ONCE,
                                    source_address="127.0.0.11")
            path = Path(sqlite_cluster.url.database or "")
            path.rename(path.with_suffix(".moved"))
            plan = await client.fetch_plan(addr(srv), ssl_context=client_ssl(ca), backoff=ONCE,
                                           source_address="127.0.0.12")
            assert plan.node == "n02"
            health = await client.request(addr(srv), codec.HealthRequest(), ssl_context=client_ssl(ca))
            assert health["status"] == "degraded" and "is gone" in health["db_error"]

    run(main)
    dead.dispose()


def test_fetch_plan_retries_with_backoff_on_its_own_clock(ca: Path) -> None:
    """Nothing listens: the client backs off 1, 2, 4 ... (jitter fixed) without real sleeping."""
    waits: list[float] = []
    retries: list[int] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    async def main() -> None:
        with pytest.raises(MountdError, match="cannot reach mountd"):
            await client.fetch_plan(
                "127.0.0.1:1", ssl_context=client_ssl(ca), sleep=fake_sleep, rng=lambda: 0.5,
                backoff=client.Backoff(base=1, cap=5, attempts=5),
                on_retry=lambda n, d, e: retries.append(n),
            )

    run(main)
    assert waits == [1, 2, 4, 5]
    assert retries == [1, 2, 3, 4]


def test_a_silent_server_is_a_clear_timeout(ca: Path) -> None:
    """A peer that accepts but never speaks TLS: the client gives up with one readable line."""

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        with pytest.raises(MountdError, match=r"no answer from mountd at 127\.0\.0\.1:\d+ within 0\.3s"):
            await client.request(f"127.0.0.1:{port}", codec.HealthRequest(),
                                 ssl_context=client_ssl(ca), timeout=0.3)
        for lst in listeners:
            await lst.aclose()

    run(main)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=4))
def test_random_bytes_get_an_answer_or_a_close_never_a_hang(
    sqlite_cluster: Engine, chunks: list[bytes]
) -> None:
    """Whatever a peer sends (plain TCP here, so the bytes reach the protocol code), mountd
    answers or closes within its request timeout, and stays healthy for the next client."""

    async def main() -> None:
        async with serving(sqlite_cluster, request_timeout=0.5, idle_timeout=0.5) as srv:
            port = srv.ports[0]
            stream = await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.11")
            with trio.fail_after(5):
                try:
                    for chunk in chunks:
                        await stream.send_all(chunk)
                    while await stream.receive_some(65536):
                        pass  # replies, if any, then the close
                except trio.BrokenResourceError:
                    pass
            await stream.aclose()
            with trio.fail_after(5):
                plan = await client.fetch_plan(f"127.0.0.1:{port}", source_address="127.0.0.11",
                                               backoff=ONCE)
            assert plan.node == "n01"
            with trio.fail_after(5):  # every session ends: nothing is left holding a slot
                while srv.connections:
                    await trio.sleep(0.01)

    run(main)


def test_one_address_cannot_hold_every_connection(sqlite_cluster: Engine, ca: Path) -> None:
    async def main() -> None:
        async with serving(sqlite_cluster, ssl_context=server_ssl(ca), max_per_peer=3) as srv:
            port = srv.ports[0]
            hogs = [await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.12")
                    for _ in range(5)]
            with trio.fail_after(5):
                assert await hogs[-1].receive_some(10) == b""  # refused at once
                while srv.connections != 3:
                    await trio.sleep(0.01)
            plan = await client.fetch_plan(addr(srv), ssl_context=client_ssl(ca),
                                           source_address="127.0.0.11", backoff=ONCE)
            assert plan.node == "n01"
            for h in hogs:
                await h.aclose()

    run(main)


def test_a_hung_database_delays_one_request_not_all(sqlite_cluster: Engine) -> None:
    """While one request waits on a database that stopped answering, the others get the
    last good tables after ``stale_grace``; the stuck one gets a clear error after db_timeout."""
    import threading

    from litefs.mountd.catalog import db_fingerprint

    release = threading.Event()
    hang = threading.Event()

    def fingerprint(eng: Engine) -> Any:
        if hang.is_set():
            release.wait(10)
        return db_fingerprint(eng)

    async def main() -> None:
        catalog = Catalog(sqlite_cluster, check_interval=0, stale_grace=0.1, db_timeout=1.5,
                          fingerprint=fingerprint)
        first = await catalog.view()
        hang.set()
        results: list[Any] = []

        async def stuck() -> None:
            results.append(await catalog.view())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stuck)
            await trio.sleep(0.05)
            start = trio.current_time()
            others = [await catalog.view() for _ in range(5)]
            assert trio.current_time() - start < 1.0  # about 5 x stale_grace, not db_timeout
            assert all(v is first for v in others)
        assert results == [first]  # the stuck request also fell back to the last view
        assert catalog.db_error == "no answer from the database in time"
        release.set()

    run(main)


def test_tls_and_plain_tcp_mismatch_says_how_to_fix(sqlite_cluster: Engine, ca: Path) -> None:
    """Plain TCP to a TLS mountd and TLS to an --insecure one: one line naming the cause."""

    async def main() -> None:
        async with serving(sqlite_cluster, ssl_context=server_ssl(ca)) as srv:
            with pytest.raises(MountdError, match=r"mountd serves TLS unless started with --insecure"):
                await client.request(addr(srv), codec.HealthRequest())
        async with serving(sqlite_cluster) as srv:  # --insecure
            with pytest.raises(MountdError, match=r"if that mountd runs with --insecure"):
                await client.request(addr(srv), codec.HealthRequest(), ssl_context=client_ssl(ca))
            assert (await client.request(addr(srv), codec.HealthRequest()))["ok"]

    run(main)


def test_plan_json_is_the_plans_own_encoding(sqlite_cluster: Engine) -> None:
    """mountd encodes an image's rules once and splices them in: the bytes must equal the
    plan's own JSON for every node, even with text that looks like the splice point."""
    from litefs.mountd.catalog import _compact, load_view

    from litefs import planner

    tabledata.chtab(sqlite_cluster, {"priority": "2.0"},
                    ["litetree.image=img1", 'litetree.directory=mn:/odd/"rules":[]/$node'])
    view = load_view(sqlite_cluster, 1)
    for node in sorted(view.nodes):
        entry = view.plan(node)
        plan = planner.plan_for_node(view.snapshot, node)
        assert entry.plan_json == _compact(plan.to_dict())
        assert entry.litefile == tuple(planner.xcat_litefile_lines(plan))
        assert entry.litetree == tuple(planner.xcat_litetree_lines(plan))
    assert len(view._rules_json) == 1  # one image: its rules were encoded once
