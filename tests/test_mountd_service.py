"""mountd's answers without sockets: the service on its own (request + peer + table view ->
reply bytes), and a session driven over an in-memory stream pair (trio.testing)."""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from litefs.mountd import codec
from litefs.mountd.catalog import Catalog
from litefs.mountd.config import ServerConfig
from litefs.mountd.identity import Peer
from litefs.mountd.log import Logger
from litefs.mountd.service import Refused, Service
from litefs.mountd.session import Conn, Session
from litefs.mountd.xcatd_codec import CLASSIC_SERVERDONE, ClassicRequest
from sqlalchemy import Engine

from litefs.plan import Plan
from tests import xcatdwire
from tests.mountdutil import sqlite_cluster_engine

NODES = {"n01": "127.0.0.11", "n02": "127.0.0.12", "n03": None}


@pytest.fixture
def tables(tmp_path: Path) -> Engine:
    with sqlite_cluster_engine(tmp_path, NODES) as eng:
        yield eng


async def _no_dns(address: str) -> str | None:
    return {"127.0.0.13": "n03-eth0.example.com"}.get(address)


def with_service(engine: Engine, body: Callable[[Service], Awaitable[Any]], *,
                 log: Logger | None = None, **config: Any) -> Any:
    async def main() -> Any:
        catalog = Catalog(engine, check_interval=0.0, db_timeout=5.0)
        return await body(Service(catalog, ServerConfig(**config), log or Logger(level="error"),
                                  resolver=_no_dns))

    return trio.run(main)


def test_a_node_gets_its_own_plan_by_its_address(tables: Engine) -> None:
    async def body(service: Service) -> dict[str, Any]:
        return codec.decode_message(
            await service.answer(Peer(address="127.0.0.12"), codec.PlanRequest()))

    reply = with_service(tables, body)
    assert reply["ok"] is True and reply["node"] == "n02"
    plan = Plan.from_dict(reply["plan"])
    assert plan.node == "n02" and [s.directory for s in plan.sources] == ["mn:/statelite/n02"]


def test_reverse_dns_names_a_node_without_a_hosts_row(tables: Engine) -> None:
    async def body(service: Service) -> str:
        return codec.decode_message(
            await service.answer(Peer(address="127.0.0.13"), codec.PlanRequest()))["node"]

    assert with_service(tables, body) == "n03"


def test_another_nodes_plan_is_refused_and_logged(tables: Engine) -> None:
    out = io.StringIO()

    async def body(service: Service) -> Refused:
        with pytest.raises(Refused) as info:
            await service.answer(Peer(address="127.0.0.11"), codec.PlanRequest(node="n02"))
        return info.value

    refused = with_service(tables, body, log=Logger(out))
    assert refused.code == "forbidden"
    assert "a node may only ask for its own plan" in str(refused)
    record = json.loads(out.getvalue().splitlines()[-1])
    assert record["asked"] == "n02" and record["node"] == "n01"


def test_unknown_peer_and_admin_only_requests(tables: Engine) -> None:
    async def body(service: Service) -> tuple[str, str, dict[str, Any]]:
        with pytest.raises(Refused) as unknown:
            await service.answer(Peer(address="10.9.9.9"), codec.PlanRequest())
        with pytest.raises(Refused) as announce:
            await service.answer(Peer(address="127.0.0.11"),
                                 codec.AnnounceRequest(target="compute", paths=("/etc",)))
        admin = Peer(address="unix", unix_uid=0)
        ok = codec.decode_message(
            await service.answer(admin, codec.AnnounceRequest(target="compute", paths=("/etc",))))
        return unknown.value.code, announce.value.code, ok

    unknown, announce, ok = with_service(tables, body)
    assert unknown == "unknown-node"
    assert announce == "forbidden"
    assert ok["ok"] is True and ok["targeted"] == 3 and ok["notified"] == []


def test_classic_litefile_answer_is_what_rc_statelite_reads(tables: Engine) -> None:
    async def body(service: Service) -> bytes:
        return await service.classic_answer(Peer(address="127.0.0.11"),
                                            ClassicRequest(command="litefile"))

    data = with_service(tables, body) + CLASSIC_SERVERDONE
    lines = [line.split() for line in xcatdwire.rc_statelite_litefile(data)]
    assert ["tmpfs", "/etc/adjtime"] in lines and ["ro", "/etc/motd"] in lines


def test_health_answers_anyone_without_the_tables(tables: Engine) -> None:
    async def body(service: Service) -> dict[str, Any]:
        return codec.decode_message(await service.answer(Peer(address="10.0.0.1"),
                                                         codec.HealthRequest()))

    health = with_service(tables, body)
    assert health["ok"] is True and health["status"] == "ok" and health["served"] == 0


# --- a session over an in-memory stream -------------------------------------------------------


async def _session_pair(service: Service, peer: Peer, stopping: trio.Event,
                        nursery: trio.Nursery) -> trio.abc.Stream:
    """Start a session on one end of a memory stream pair; return the other (the 'node')."""
    node_end, server_end = trio.testing.memory_stream_pair()

    async def run() -> None:
        conn = Conn(server_end, trio.CancelScope())
        with conn.scope:
            await Session(service, conn, peer, stopping).converse()
        await server_end.aclose()

    nursery.start_soon(run)
    return node_end


async def _line(stream: trio.abc.Stream, lines: codec.LineBuffer) -> dict[str, Any]:
    got: list[bytes] = []
    while not got:
        data = await stream.receive_some(65536)
        assert data, "the session closed the stream"
        got = lines.feed(data)
    assert len(got) == 1, got
    return codec.decode_message(got[0])


def test_session_answers_requests_and_streams_announcements(tables: Engine) -> None:
    async def body(service: Service) -> list[dict[str, Any]]:
        stopping = trio.Event()
        replies: list[dict[str, Any]] = []
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                node = await _session_pair(service, Peer(address="127.0.0.11"), stopping, nursery)
                lines = codec.LineBuffer(codec.MAX_REPLY)
                # Two requests on one connection, the second split across two writes.
                await node.send_all(codec.encode_json_request(codec.PlanRequest()))
                replies.append(await _line(node, lines))
                health = codec.encode_json_request(codec.HealthRequest())
                await node.send_all(health[:5])
                await node.send_all(health[5:])
                replies.append(await _line(node, lines))
                await node.send_all(codec.encode_json_request(codec.SubscribeRequest()))
                replies.append(await _line(node, lines))
                assert service.hub.count == 1
                reached = service.deliver_announcement({"n01", "n02"}, "compute", ["/etc/motd"])
                assert reached == ["n01"]
                replies.append(await _line(node, lines))
                stopping.set()  # shutdown ends the subscription and so the session
        return replies

    plan, health, subscribed, event = with_service(tables, body)
    assert plan["ok"] is True and plan["node"] == "n01"
    assert health["ok"] is True and health["served"] == 1
    assert subscribed == {"ok": True, "node": "n01", "subscribed": True}
    assert event["event"] == "invalidate" and event["paths"] == ["/etc/motd"]


def test_session_speaks_classic_then_closes(tables: Engine) -> None:
    async def body(service: Service) -> bytes:
        async with trio.open_nursery() as nursery:
            node = await _session_pair(service, Peer(address="127.0.0.12"), trio.Event(), nursery)
            await node.send_all(xcatdwire.encode_classic_request("litetree"))
            data = b""
            with trio.fail_after(30):
                while chunk := await node.receive_some(65536):
                    data += chunk
        return data

    infos, errors, done = xcatdwire.parse_classic_response(with_service(tables, body))
    assert done and not errors
    assert infos == ["n02: mn:/statelite/n02"]


def test_session_refuses_a_malformed_request_and_ends(tables: Engine) -> None:
    async def body(service: Service) -> dict[str, Any]:
        async with trio.open_nursery() as nursery:
            node = await _session_pair(service, Peer(address="127.0.0.12"), trio.Event(), nursery)
            await node.send_all(b'{"op": "frobnicate"}\n')
            with trio.fail_after(30):
                reply = await _line(node, codec.LineBuffer())
                assert await node.receive_some(1) == b""  # closed after the error
        return reply

    reply = with_service(tables, body)
    assert reply["ok"] is False and reply["code"] == "protocol" and "unknown op" in reply["error"]
