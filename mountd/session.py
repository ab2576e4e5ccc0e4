"""One mountd connection over any :class:`trio.abc.Stream`: framing, deadlines, subscriptions.

A session is: sniff the protocol from the first bytes, read one complete request within
``request_timeout`` into a buffer of at most ``max_message`` bytes, hand it to the
:class:`~.service.Service` and send what it answers. JSON connections may send further
requests (each again bounded) or turn into a subscription; classic connections get their
answer and are closed, as xcatd does. Every wait has a deadline, so a slow, silent or
half-open peer only ever holds its own connection.

The stream is whatever the caller gives: the server's TLS or plain socket stream, or, in
tests, one end of :func:`trio.testing.memory_stream_pair`. The deadline lives in one cancel
scope per connection (:class:`Conn`), which the caller opens around :func:`converse`.
"""

from __future__ import annotations

import math
import socket
import ssl

import trio

from litefs.errors import ProtocolError

from . import codec, xcatd_codec
from .hub import NoticeKind, Subscriber
from .identity import Peer
from .service import Refused, Service


class Conn:
    """One connection: its stream and the single cancel scope that carries the deadline of
    the current phase (handshake, request, answer). One scope per connection rather than one
    per phase keeps the per-connection cost down in a boot storm."""

    __slots__ = ("scope", "stream")

    def __init__(self, stream: trio.abc.Stream, scope: trio.CancelScope) -> None:
        self.stream = stream
        self.scope = scope

    def expire_in(self, seconds: float) -> None:
        self.scope.deadline = trio.current_time() + seconds

    def no_deadline(self) -> None:
        self.scope.deadline = math.inf


class Session:
    """The conversation on one :class:`Conn` with ``peer``; ``stopping`` ends subscriptions."""

    def __init__(self, service: Service, conn: Conn, peer: Peer, stopping: trio.Event) -> None:
        self.service = service
        self.config = service.config
        self.log = service.log
        self.conn = conn
        self.peer = peer
        self.stopping = stopping

    async def send(self, data: bytes) -> None:
        self.conn.expire_in(self.config.write_timeout)
        await self.conn.stream.send_all(data)
        self.conn.no_deadline()

    async def converse(self) -> None:
        """Answer requests until the peer is done, a classic exchange ends or a subscription does."""
        cfg, conn = self.config, self.conn
        lines = codec.LineBuffer(cfg.max_message)
        wait = cfg.request_timeout  # for the first byte; idle_timeout between requests
        first = True
        while True:
            conn.expire_in(wait)
            data = await conn.stream.receive_some(cfg.max_message)
            if not data:
                return
            # From its first byte, a request must arrive whole within request_timeout:
            # slowloris peers time out instead of piling up.
            conn.expire_in(cfg.request_timeout)
            try:
                if first and codec.sniff(data) == "classic":
                    await self._classic(data)
                    return
                first = False
                got = lines.feed(data)
                while not got:
                    data = await conn.stream.receive_some(cfg.max_message)
                    if not data:
                        return
                    got = lines.feed(data)
            except ProtocolError as exc:
                self.log("bad_request", level="warning", peer=self.peer.address, error=str(exc))
                await self.send(codec.error_reply(str(exc), "protocol"))
                return
            conn.no_deadline()  # answering: the database and DNS waits carry their own limits
            for line in got:
                if not await self._json_request(line):
                    return
            wait = cfg.idle_timeout

    # --- JSON -----------------------------------------------------------------------------

    async def _json_request(self, line: bytes) -> bool:
        """Answer one JSON request; False when the connection should end."""
        try:
            req = codec.decode_json_request(line)
        except ProtocolError as exc:
            self.log("bad_request", level="warning", peer=self.peer.address, error=str(exc))
            await self.send(codec.error_reply(str(exc), "protocol"))
            return False
        try:
            if isinstance(req, codec.SubscribeRequest):
                node = await self.service.subscriber(self.peer)
                await self._subscription(node)
                return False
            await self.send(await self.service.answer(self.peer, req))
            return True
        except Refused as exc:
            await self.send(codec.error_reply(str(exc), exc.code))
            return exc.code not in ("unknown-node",)

    async def _subscription(self, node: str) -> None:
        _keepalive(self.conn.stream)
        hub = self.service.hub
        sub = hub.subscribe(node)
        self.log("subscribed", peer=self.peer.address, node=node, subscribers=hub.count)
        try:
            await self.send(codec.ok_reply(node=node, subscribed=True))
            if self.service.follower is not None:
                # The node's plan in force may predate a change: it compares and keeps its
                # own when equal (cheap), so no boot-time plan is ever left behind.
                await self._send_plan(sub)
            async with trio.open_nursery() as nursery:

                async def watch_peer() -> None:
                    # The node sends nothing more; EOF or anything else ends the subscription.
                    try:
                        await self.conn.stream.receive_some(1024)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
                        pass
                    nursery.cancel_scope.cancel()

                async def watch_stop() -> None:
                    await self.stopping.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch_peer)
                nursery.start_soon(watch_stop)
                while True:
                    notice = None
                    with trio.move_on_after(self.config.ping_interval):
                        notice = await sub.receive.receive()
                    if sub.overflowed:
                        while True:
                            try:
                                sub.receive.receive_nowait()
                            except trio.WouldBlock:
                                break
                        sub.overflowed = False
                        await self._send_plan(sub)
                        event = {"event": codec.Event.INVALIDATE, "paths": ["/"], "seq": hub.seq}
                    elif notice is None:
                        event = {"event": codec.Event.PING}
                    elif notice.kind is NoticeKind.CHECK_PLAN:
                        await self._send_plan(sub)
                        continue
                    else:
                        event = {"event": codec.Event.INVALIDATE, "paths": list(notice.paths),
                                 "seq": notice.seq}
                    await self.send(codec.encode_message(event))
        finally:
            hub.unsubscribe(sub)
            self.log("unsubscribed", peer=self.peer.address, node=node)

    async def _send_plan(self, sub: Subscriber) -> None:
        """Send the node its plan if the tables changed it since we last sent (or checked)."""
        view = self.service.catalog.current
        if view is None or view.generation == sub.plan_generation:
            return
        sub.plan_generation = view.generation
        entry = view.plan(sub.node)
        if entry.plan_json is None:
            # A broken row: the node keeps the plan it runs (better than none); say so.
            self.log("plan_error", level="warning", node=sub.node, error=entry.error)
            return
        if entry.plan_json == sub.plan_json:
            return
        first = sub.plan_json is None
        sub.plan_json = entry.plan_json
        if not first:
            self.log("plan_pushed", node=sub.node, generation=view.generation)
        await self.send(b'{"event":"%s","generation":%d,"plan":%s}\n'
                        % (codec.Event.PLAN.encode(), view.generation, entry.plan_json))

    # --- classic --------------------------------------------------------------------------

    async def _classic(self, data: bytes) -> None:
        limit = self.config.max_message
        buf = bytearray(data)
        try:
            # Never more than one read past the limit: the buffer is the per-connection bound.
            while not xcatd_codec.classic_request_complete(buf) and len(buf) <= limit:
                more = await self.conn.stream.receive_some(limit)
                if not more:
                    return
                buf += more
            if len(buf) > limit:
                raise ProtocolError(f"message too large (limit {limit} bytes)")
            self.conn.no_deadline()
            req = xcatd_codec.decode_classic_request(bytes(buf))
        except ProtocolError as exc:
            # A classic peer gets its error in the classic framing, not as a JSON line.
            self.log("bad_request", level="warning", peer=self.peer.address, error=str(exc))
            await self.send(xcatd_codec.encode_classic_error(str(exc))
                            + xcatd_codec.CLASSIC_SERVERDONE)
            return
        try:
            body = await self.service.classic_answer(self.peer, req)
        except Refused as exc:
            body = xcatd_codec.encode_classic_error(str(exc))
        await self.send(body + xcatd_codec.CLASSIC_SERVERDONE)
        self.service.served += 1


def _keepalive(stream: trio.abc.Stream) -> None:
    """TCP keepalive on a long-lived subscription: a node that vanished (power cut, no FIN)
    is noticed in about two minutes instead of holding its connection for hours. Streams
    without socket options (Unix sockets, in-memory streams in tests) are left as they are."""
    setsockopt = getattr(stream, "setsockopt", None)
    if setsockopt is None:
        return
    try:
        setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
        setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 15)
        setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 4)
    except OSError:
        pass  # a Unix socket has no TCP options
