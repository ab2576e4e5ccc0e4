"""mountd's network side: listeners, per-connection sessions, and what each request gets.

A session is: TLS handshake (bounded by ``handshake_timeout``), sniff the protocol from the
first bytes, read one complete request within ``request_timeout`` into a buffer of at most
``max_message`` bytes, answer it. JSON connections may send further requests (each again
bounded) or turn into a subscription; classic connections get their answer and are closed,
as xcatd does. Every wait has a deadline, so a slow, silent or half-open peer only ever
holds its own connection. The database is never touched here: :class:`~.catalog.Catalog`
hands out an in-memory view and plans are computed from it once per node.
"""

from __future__ import annotations

import json
import math
import os
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cached_property, partial

import trio

from litefs.errors import LitefsError, MountdError, ProtocolError
from litefs.wellknown import DEFAULT_PORT

from . import codec, xcatd_codec
from .catalog import Catalog, TableView
from .follow import Follower
from .hub import Hub, Subscriber
from .identity import Identity, Peer, identify_by_name, identify_known, normalise_ip
from .log import Logger
from .pki import peer_subject
from .policy import decide
from .tlsstream import TLSSocketStream
from .workers import Siblings

#: Classic commands mountd answers; everything else gets xcatd's "not supported" error.
CLASSIC_COMMANDS = ("litefile", "litetree")


@dataclass
class ServerConfig:
    host: str = ""  # "" = every address
    port: int = DEFAULT_PORT
    ssl_context: ssl.SSLContext | None = None  # None = plain TCP (--insecure)
    unix_socket: str | None = None
    #: Group (name or gid) whose members may use the admin socket and are admins there;
    #: None = root only (the socket is mode 0600, so nobody else can even connect).
    admin_group: str | int | None = None
    #: Seconds one request's noderange may take to expand (in a worker thread) before the
    #: request is refused; the bounds in litefs.noderange keep it far below this.
    expand_timeout: float = 2.0
    handshake_timeout: float = 10.0
    request_timeout: float = 10.0
    idle_timeout: float = 60.0
    write_timeout: float = 30.0
    ping_interval: float = 30.0
    dns_timeout: float = 2.0
    dns_cache_seconds: float = 300.0
    shutdown_grace: float = 5.0
    max_connections: int = 20000
    #: Connections one address may hold at once (a node needs two: a request and its
    #: subscription); more is a broken or hostile client, refused so it cannot crowd out others.
    max_per_peer: int = 64
    #: The service node this mountd runs on (``--service-node``): it serves only the nodes
    #: whose noderes.servicenode pool names it (litefs.hierarchy.serves). None = the MN.
    service_node: str | None = None
    #: Seconds between "stats" log records (served, connections, subscribers); 0 = never.
    stats_interval: float = 60.0
    max_message: int = codec.MAX_MESSAGE
    backlog: int = 4096
    #: Already listening sockets (workers share the parent's); None = open host:port here.
    listen_sockets: list[socket.socket] | None = None
    #: Follow changes by itself (mountd.follow): poll the tables every ``follow_interval``
    #: seconds (0 = off, as in unit tests that drive the catalog themselves), push plan
    #: changes to subscribed nodes, LISTEN on PostgreSQL.
    follow_interval: float = 0.0
    #: Also watch image and litetree folders with inotify (only with follow_interval > 0).
    watch_trees: bool = True
    #: Prefix of this host's paths for the tree watcher ("/" in production).
    watch_root: str = "/"
    #: Seconds between scans of a tree that ran out of inotify watches.
    scan_interval: float = 30.0


class _Conn:
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

    def close(self) -> None:
        """Close at once (no await: also runs while the session is being cancelled)."""
        stream = self.stream
        if isinstance(stream, TLSSocketStream):
            stream.close_now()
        elif isinstance(stream, trio.SocketStream):
            stream.socket.close()


class _Refused(Exception):
    """A request we answer with an error (message for the peer, code for machines)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


Resolver = Callable[[str], Awaitable[str | None]]

#: Worker threads expanding request noderanges at once (the rest wait their turn).
_EXPAND_THREADS = 2


async def reverse_dns(address: str) -> str | None:
    try:
        host, _port = await trio.socket.getnameinfo((address, 0), socket.NI_NAMEREQD)
    except (OSError, UnicodeError):
        return None
    return host


class Server:
    """mountd's sessions over a :class:`Catalog`: ``await serve()``, ``shutdown()`` to stop.

    ``resolver`` does reverse DNS for peers the hosts table does not know (a seam for tests;
    the default asks the system resolver). ``siblings`` links the worker processes of
    ``mountd --workers``.
    """

    def __init__(
        self,
        catalog: Catalog,
        config: ServerConfig,
        log: Logger | None = None,
        *,
        resolver: Resolver = reverse_dns,
        siblings: Siblings | None = None,
    ) -> None:
        self.catalog = catalog
        self.config = config
        self.log = log or Logger(level="warning")
        self.hub = Hub()
        self.resolver = resolver
        self.connections = 0
        self._per_peer: dict[str, int] = {}
        self.served = 0
        self._dns_cache: dict[str, tuple[str | None, float]] = {}
        self._listen_scope: trio.CancelScope | None = None
        self._stopping = trio.Event()
        self.ports: list[int] = []
        self.siblings = siblings
        self._expand_limiter = trio.CapacityLimiter(_EXPAND_THREADS)
        if siblings is not None:
            self.hub.on_change = lambda node, d: siblings.send({"t": "sub", "node": node, "d": d})
        self.follower: Follower | None = None
        if config.follow_interval > 0:
            # With workers, the first one watches the database and the trees for all and
            # passes on what it hears; the others still poll their own catalog.
            lead = siblings is None or siblings.index == 0
            self.follower = Follower(
                catalog, self.hub, announce=self._announce_local, log=self.log,
                announce_remote=self._announce_remote,
                interval=config.follow_interval, watch_trees=config.watch_trees and lead,
                listen_db=lead, watch_root=config.watch_root, scan_interval=config.scan_interval,
                on_tables=(lambda: siblings.send({"t": "tables"})) if siblings else None,
                # One origin for all workers of this mountd (the parent's pid), so a worker
                # does not hear its sibling's announcement back from the database.
                origin=f"{socket.gethostname()}:{os.getppid()}" if siblings else None,
            )

    # --- lifecycle --------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[list[int]] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until :meth:`shutdown`; then let sessions finish within the grace."""
        cfg = self.config
        if cfg.listen_sockets is not None:
            tcp = [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in cfg.listen_sockets]
        else:
            tcp = await trio.open_tcp_listeners(cfg.port, host=cfg.host or None, backlog=cfg.backlog)
        self.ports = sorted({lst.socket.getsockname()[1] for lst in tcp})
        unix = await self._unix_listener() if cfg.unix_socket else None
        async with trio.open_nursery() as handlers:
            async with trio.open_nursery() as listeners:
                self._listen_scope = listeners.cancel_scope
                if self._stopping.is_set():  # shutdown() came before we were listening
                    listeners.cancel_scope.cancel()
                listeners.start_soon(
                    partial(trio.serve_listeners, self._handle_tcp, tcp, handler_nursery=handlers)
                )
                if unix is not None:
                    listeners.start_soon(
                        partial(
                            trio.serve_listeners, self._handle_unix, [unix],
                            handler_nursery=handlers,
                        )
                    )
                if self.siblings is not None:
                    listeners.start_soon(self.siblings.run, self._sibling_message)
                if cfg.stats_interval > 0:
                    listeners.start_soon(self._stats_loop, cfg.stats_interval)
                if self.follower is not None:
                    listeners.start_soon(self.follower.run)
                self.log(
                    "listening", port=self.ports, tls=cfg.ssl_context is not None,
                    unix=cfg.unix_socket,
                )
                task_status.started(self.ports)
            # Listeners are gone: no new connections. Sessions get the grace to finish.
            self.log("stopping", connections=self.connections, subscribers=self.hub.count)
            handlers.cancel_scope.deadline = trio.current_time() + cfg.shutdown_grace
        if cfg.unix_socket:
            try:
                os.unlink(cfg.unix_socket)
            except OSError:
                pass
        self.log("stopped", served=self.served)

    async def _stats_loop(self, interval: float) -> None:
        last = -1
        while True:
            await trio.sleep(interval)
            if self.served != last or self.connections:
                last = self.served
                self.log("stats", served=self.served, connections=self.connections,
                         subscribers=self.hub.count, db_error=self.catalog.db_error)

    def shutdown(self) -> None:
        self._stopping.set()
        if self._listen_scope is not None:
            self._listen_scope.cancel()

    @cached_property  # resolved once: not an NSS lookup per admin connection
    def _admin_gid(self) -> int | None:
        group = self.config.admin_group
        if group is None or group == "":
            return None
        if isinstance(group, int) or str(group).isdigit():
            return int(group)
        import grp

        try:
            return grp.getgrnam(str(group)).gr_gid
        except KeyError:
            raise MountdError(f"admin group {group!r} does not exist (--admin-group)") from None

    async def _unix_listener(self) -> trio.SocketListener:
        path = self.config.unix_socket
        assert path
        try:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old = os.umask(0o177)  # never, even for an instant, a socket others may connect to
            try:
                await sock.bind(path)
            finally:
                os.umask(old)
            gid = self._admin_gid
            if gid is None:
                os.chmod(path, 0o600)  # root only
            else:
                os.chown(path, -1, gid)
                os.chmod(path, 0o660)  # root and the configured admin group
            sock.listen(128)
        except OSError as exc:
            raise MountdError(
                f"cannot create the admin socket {path}: {exc.strerror or exc}; "
                "pass --socket PATH (or --socket '' for none)"
            ) from None
        return trio.SocketListener(sock)

    # --- sessions ---------------------------------------------------------------------------

    async def _handle_tcp(self, stream: trio.SocketStream) -> None:
        try:
            address = stream.socket.getpeername()[0]
            if ":" in address:  # ::ffff:10.0.0.1 on a dual-stack port; IPv4 text is canonical
                address = normalise_ip(address) or address
        except OSError:
            await stream.aclose()
            return
        await self._session(stream, address)

    async def _handle_unix(self, stream: trio.SocketStream) -> None:
        try:
            creds = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            _pid, uid, gid = struct.unpack("3i", creds)
        except OSError:
            uid = gid = -1
        admin_gid = self._admin_gid
        if uid != 0 and (admin_gid is None or gid != admin_gid):
            # The socket's mode already keeps others out; this holds if it was loosened.
            self.log("refused", level="warning", peer="unix", uid=uid,
                     reason="admin socket is for root and the admin group")
            stream.socket.close()
            return
        await self._session(stream, "unix", unix_uid=0, tls=False)

    async def _session(
        self, raw: trio.SocketStream, address: str, *, unix_uid: int | None = None,
        tls: bool = True,
    ) -> None:
        cfg = self.config
        held = self._per_peer.get(address, 0)
        if self.connections >= cfg.max_connections or (
            held >= cfg.max_per_peer and address != "unix"
        ):
            reason = "too many" if self.connections >= cfg.max_connections else "too many from peer"
            self.log("connection_refused", level="warning", peer=address, reason=reason)
            raw.socket.close()
            return
        self.connections += 1
        self._per_peer[address] = held + 1
        conn = _Conn(raw, trio.CancelScope(deadline=trio.current_time() + cfg.handshake_timeout))
        try:
            with conn.scope:
                peer = Peer(address=address, unix_uid=unix_uid)
                if tls and cfg.ssl_context is not None:
                    tls_stream = TLSSocketStream.wrap_server(raw, cfg.ssl_context)
                    conn.stream = tls_stream
                    await tls_stream.do_handshake()
                    cn, role = peer_subject(tls_stream.getpeercert())
                    peer = Peer(address=address, cert_cn=cn, cert_role=role)
                await self._converse(conn, peer)
            if conn.scope.cancelled_caught:
                self.log("timeout", level="warning", peer=address)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError) as exc:
            self.log("connection_error", level="debug", peer=address, error=str(exc) or type(exc).__name__)
        except Exception as exc:
            # Whatever one request provokes ends that request's connection, never the server
            # (an exception escaping a handler would cancel every other session).
            self.log("internal_error", level="error", peer=address, error=type(exc).__name__,
                     detail=str(exc)[:200])
        finally:
            self.connections -= 1
            left = self._per_peer[address] - 1
            if left:
                self._per_peer[address] = left
            else:
                del self._per_peer[address]
            conn.close()

    async def _send(self, conn: _Conn, data: bytes) -> None:
        conn.expire_in(self.config.write_timeout)
        await conn.stream.send_all(data)
        conn.no_deadline()

    async def _converse(self, conn: _Conn, peer: Peer) -> None:
        cfg = self.config
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
                    await self._classic(conn, peer, data)
                    return
                first = False
                got = lines.feed(data)
                while not got:
                    data = await conn.stream.receive_some(cfg.max_message)
                    if not data:
                        return
                    got = lines.feed(data)
            except ProtocolError as exc:
                self.log("bad_request", level="warning", peer=peer.address, error=str(exc))
                await self._send(conn, codec.error_reply(str(exc), "protocol"))
                return
            conn.no_deadline()  # answering: the database and DNS waits carry their own limits
            for line in got:
                if not await self._json_request(conn, peer, line):
                    return
            wait = cfg.idle_timeout

    # --- JSON -----------------------------------------------------------------------------

    async def _json_request(self, conn: _Conn, peer: Peer, line: bytes) -> bool:
        """Answer one JSON request; False when the connection should end."""
        try:
            req = codec.decode_json_request(line)
        except ProtocolError as exc:
            self.log("bad_request", level="warning", peer=peer.address, error=str(exc))
            await self._send(conn, codec.error_reply(str(exc), "protocol"))
            return False
        try:
            if isinstance(req, codec.HealthRequest):
                await self._send(conn, self._health())
                return True
            view = await self._view()
            ident = await self._identify(peer, view)
            if isinstance(req, codec.PlanRequest):
                await self._send(conn, self._plan_reply(view, peer, ident, req.node))
                self.served += 1
                return True
            if isinstance(req, codec.SubscribeRequest):
                node = self._require_node(peer, ident, None, command="litefile", view=view)
                await self._subscription(conn, peer, node)
                return False
            if isinstance(req, codec.AnnounceRequest):
                self._require_admin(peer, "announce")
                await self._send(conn, await self._announce(view, req))
                return True
            if isinstance(req, codec.ReloadRequest):
                self._require_admin(peer, "reload")
                self.catalog.invalidate()
                view = await self._view()
                await self._send(conn, codec.ok_reply(generation=view.generation))
                return True
        except _Refused as exc:
            await self._send(conn, codec.error_reply(str(exc), exc.code))
            return exc.code not in ("unknown-node",)
        raise AssertionError(f"unhandled request {req!r}")  # pragma: no cover

    async def _view(self) -> TableView:
        try:
            return await self.catalog.view()
        except MountdError as exc:
            raise _Refused(str(exc), "db") from None

    def _health(self) -> bytes:
        return codec.ok_reply(
            status="degraded" if self.catalog.db_error else "ok",
            db_error=self.catalog.db_error,
            connections=self.connections,
            subscribers=self.hub.count,
            served=self.served,
        )

    def _require_admin(self, peer: Peer, what: str) -> None:
        if not peer.is_admin:
            self.log("refused", level="warning", peer=peer.address, cn=peer.cert_cn, request=what,
                     reason="admin certificate required")
            raise _Refused(
                f"{what} needs an admin certificate from the site CA (or root on the local socket)",
                "forbidden",
            )

    def _policy(self, view: TableView, peer: Peer, ident: Identity, command: str,
                nodes: list[str], args: tuple[str, ...] = ()) -> None:
        hosts = {peer.address}
        if ident.node:
            hosts.add(ident.node)
        if ident.hostname:
            hosts.add(ident.hostname)
        decision = decide(
            view.policy, command=command, peername=peer.cert_cn, peerhosts=hosts,
            nodes=nodes, args=args, expand=view.expand_policy,
        )
        if not decision.allowed:
            self.log("refused", level="warning", peer=peer.address, node=ident.node,
                     command=command, reason=decision.reason)
            raise _Refused(
                f"Permission denied for request ({command}: {decision.reason}); "
                "check the policy table (tabdump policy)",
                "forbidden",
            )

    def _require_node(self, peer: Peer, ident: Identity, asked: str | None, *, command: str,
                      view: TableView) -> str:
        """The node this request may be about: its own, or any for an admin."""
        if asked is not None and asked != ident.node:
            if peer.is_admin:
                if asked not in view.nodes:
                    raise _Refused(f"unknown node {asked!r} (not in nodelist)", "unknown-node")
                return asked
            self.log("refused", level="warning", peer=peer.address, node=ident.node,
                     asked=asked, command=command, reason="another node's plan")
            raise _Refused(
                f"a node may only ask for its own plan ({peer.address} is "
                f"{ident.node or 'not a known node'}, asked for {asked}); "
                "other nodes' plans need an admin certificate",
                "forbidden",
            )
        if ident.node is None:
            self.log("unknown_node", level="warning", peer=peer.address, via=ident.via,
                     hostname=ident.hostname)
            raise _Refused(
                f"cannot tell which node {peer.address} is: not in the hosts table"
                + (f", reverse DNS {ident.hostname!r} is not a node" if ident.hostname else
                   ", no reverse DNS name")
                + f"; add it with 'chtab node=<node> hosts.ip={peer.address}'",
                "unknown-node",
            )
        if not peer.is_admin:
            self._policy(view, peer, ident, command, [ident.node])
            if self.config.service_node is not None:
                self._require_pool(view, peer, ident.node)
        return ident.node

    def _require_pool(self, view: TableView, peer: Peer, node: str) -> None:
        from litefs import hierarchy

        try:
            cell = view.snapshot.attrs.get(node, "noderes", "servicenode")
        except Exception:  # a broken cell must fail closed, not take the session down
            cell = None
        pool = hierarchy.parse_pool(cell)
        if hierarchy.serves(self.config.service_node, pool):
            return
        self.log("refused", level="warning", peer=peer.address, node=node,
                 service_node=self.config.service_node, pool=",".join(pool),
                 reason="not in the node's service-node pool")
        raise _Refused(
            f"{node} is served by {','.join(pool) or 'the management node'} "
            f"(noderes.servicenode), not by service node {self.config.service_node}; run "
            f"nodeset for {node} so its boot files name its own servers",
            "forbidden",
        )

    def _plan_reply(self, view: TableView, peer: Peer, ident: Identity, asked: str | None) -> bytes:
        node = self._require_node(peer, ident, asked, command="litefile", view=view)
        if not peer.is_admin:
            self._policy(view, peer, ident, "litetree", [node])
        entry = view.plan(node)
        if entry.plan_json is None:
            self.log("plan_error", level="warning", node=node, error=entry.error)
            raise _Refused(entry.error or "no plan", "plan")
        if self.log.enabled("debug"):
            self.log("plan_served", level="debug", peer=peer.address, node=node, via=ident.via)
        # The plan is already JSON; splice it in rather than re-encoding per request.
        return (
            b'{"generation":%d,"node":%s,"ok":true,"plan":%s}\n'
            % (view.generation, json.dumps(node).encode(), entry.plan_json)
        )

    async def _announce(self, view: TableView, req: codec.AnnounceRequest) -> bytes:
        try:
            nodes = view.nodes_for_target(req.target)
        except LitefsError as exc:
            raise _Refused(str(exc), "bad-target") from None
        reached = self._deliver_announcement(nodes, req.target, list(req.paths))
        # Every other mountd on this database (service nodes) delivers to its own nodes.
        fanned = (self.follower is not None
                  and await self.follower.db_watch.publish(req.target, list(req.paths)))
        self.log("announced", target=req.target, paths=list(req.paths), nodes=len(nodes),
                 reached=len(reached), fanout=fanned)
        return codec.ok_reply(targeted=len(nodes), notified=reached, fanout=fanned)

    def _deliver_announcement(self, nodes: set[str], target: str, paths: list[str]) -> list[str]:
        reached = self.hub.announce(nodes, paths)
        if self.siblings is not None:
            self.siblings.send({"t": "announce", "target": target, "paths": paths})
        return reached

    def _announce_local(self, target: str, paths: list[str]) -> None:
        """An announcement from the tree watcher or another mountd: to our own nodes."""
        view = self.catalog.current
        if view is None:
            return
        try:
            nodes = view.nodes_for_target(target)
        except LitefsError as exc:
            self.log("announce_failed", level="warning", target=target[:200], error=str(exc))
            return
        reached = self._deliver_announcement(nodes, target, paths)
        self.log("announced", target=target[:200], paths=paths[:20], nodes=len(nodes),
                 reached=len(reached), source="follow")

    async def _announce_remote(self, target: str, paths: list[str]) -> None:
        """Another mountd's announcement (over the database): its noderange is expanded as a
        request's is, in a worker thread within the expansion time limit."""
        view = self.catalog.current
        if view is None:
            return
        try:
            if target in view.snapshot.osimage and target not in view.nodes:
                nodes = view.nodes_for_target(target)  # an image name: a dict lookup
            else:
                nodes = await self._expand(view, target)
        except (LitefsError, _Refused) as exc:
            self.log("announce_failed", level="warning", target=target[:200],
                     error=str(exc)[:300], source="database")
            return
        reached = self._deliver_announcement(nodes, target, paths)
        self.log("announced", target=target[:200], paths=paths[:20], nodes=len(nodes),
                 reached=len(reached), source="database")

    async def _sibling_message(self, message: dict) -> None:
        """Another worker's news: a subscription count changed, or an announcement to deliver."""
        kind = message.get("t")
        if kind == "sub":
            self.hub.remote_delta(str(message.get("node")), int(message.get("d", 0)))
        elif kind == "announce":
            try:
                view = await self.catalog.view()
                nodes = view.nodes_for_target(str(message.get("target")))
            except LitefsError as exc:
                self.log("announce_failed", level="warning", error=str(exc))
                return
            self.hub.deliver(nodes, [str(p) for p in message.get("paths", [])])
        elif kind == "tables":
            self.catalog.invalidate()
            if self.follower is not None:
                self.follower.wake()

    async def _subscription(self, conn: _Conn, peer: Peer, node: str) -> None:
        _keepalive(conn.stream)
        sub = self.hub.subscribe(node)
        self.log("subscribed", peer=peer.address, node=node, subscribers=self.hub.count)
        try:
            await self._send(conn, codec.ok_reply(node=node, subscribed=True))
            if self.follower is not None:
                # The node's plan in force may predate a change: it compares and keeps its
                # own when equal (cheap), so no boot-time plan is ever left behind.
                await self._send_plan(conn, sub)
            async with trio.open_nursery() as nursery:

                async def watch_peer() -> None:
                    # The node sends nothing more; EOF or anything else ends the subscription.
                    try:
                        await conn.stream.receive_some(1024)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
                        pass
                    nursery.cancel_scope.cancel()

                async def watch_stop() -> None:
                    await self._stopping.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch_peer)
                nursery.start_soon(watch_stop)
                while True:
                    event = None
                    with trio.move_on_after(self.config.ping_interval):
                        event = await sub.receive.receive()
                    if sub.overflowed:
                        while True:
                            try:
                                sub.receive.receive_nowait()
                            except trio.WouldBlock:
                                break
                        sub.overflowed = False
                        await self._send_plan(conn, sub)
                        event = {"event": "invalidate", "paths": ["/"], "seq": self.hub.seq}
                    elif event is not None and event.get("event") == "_plan":
                        await self._send_plan(conn, sub)
                        continue
                    await self._send(conn, codec.encode_message(event or {"event": "ping"}))
        finally:
            self.hub.unsubscribe(sub)
            self.log("unsubscribed", peer=peer.address, node=node)

    async def _send_plan(self, conn: _Conn, sub: Subscriber) -> None:
        """Send the node its plan if the tables changed it since we last sent (or checked)."""
        view = self.catalog.current
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
        await self._send(conn, b'{"event":"plan","generation":%d,"plan":%s}\n'
                         % (view.generation, entry.plan_json))

    # --- classic --------------------------------------------------------------------------

    async def _classic(self, conn: _Conn, peer: Peer, data: bytes) -> None:
        limit = self.config.max_message
        buf = bytearray(data)
        try:
            # Never more than one read past the limit: the buffer is the per-connection bound.
            while not xcatd_codec.classic_request_complete(buf) and len(buf) <= limit:
                more = await conn.stream.receive_some(limit)
                if not more:
                    return
                buf += more
            if len(buf) > limit:
                raise ProtocolError(f"message too large (limit {limit} bytes)")
            conn.no_deadline()
            req = xcatd_codec.decode_classic_request(bytes(buf))
        except ProtocolError as exc:
            # A classic peer gets its error in the classic framing, not as a JSON line.
            self.log("bad_request", level="warning", peer=peer.address, error=str(exc))
            await self._send(conn, xcatd_codec.encode_classic_error(str(exc)) + xcatd_codec.CLASSIC_SERVERDONE)
            return
        try:
            body = await self._classic_answer(peer, req)
        except _Refused as exc:
            body = xcatd_codec.encode_classic_error(str(exc))
        await self._send(conn, body + xcatd_codec.CLASSIC_SERVERDONE)
        self.served += 1

    async def _classic_answer(self, peer: Peer, req: xcatd_codec.ClassicRequest) -> bytes:
        if req.command not in CLASSIC_COMMANDS:
            raise _Refused(f"Unsupported command: {req.command} (mountd serves litefile, litetree)", "unsupported")
        view = await self._view()
        ident = await self._identify(peer, view)
        if req.noderange:
            asked = sorted(await self._expand(view, req.noderange))
        else:
            asked = [None]  # type: ignore[list-item]
        lines: list[str] = []
        for want in asked:
            node = self._require_node(peer, ident, want, command=req.command, view=view)
            if req.command == "litefile":
                try:
                    lines += view.classic_litefile(node)
                except LitefsError as exc:
                    raise _Refused(str(exc), "plan") from None
            else:
                entry = view.plan(node)
                if entry.plan_json is None:
                    raise _Refused(entry.error or "no plan", "plan")
                lines += entry.litetree
            if self.log.enabled("debug"):
                self.log("classic_served", level="debug", peer=peer.address, node=node,
                         via=ident.via, command=req.command)
        return xcatd_codec.encode_classic_info(lines)

    async def _expand(self, view: TableView, text: str) -> set[str]:
        """A request's noderange, expanded in a worker thread within ``expand_timeout``.

        The noderange bounds (length, nesting, names generated, linear-time regex) keep the
        work small; the thread keeps even that off the event loop, so other clients are
        answered meanwhile, and the limiter keeps a flood of such requests from queueing
        more than a few threads."""
        try:
            with trio.fail_after(self.config.expand_timeout):
                return await trio.to_thread.run_sync(
                    view.expand, text, abandon_on_cancel=True, limiter=self._expand_limiter,
                )
        except LitefsError as exc:
            raise _Refused(str(exc), "bad-target") from None
        except trio.TooSlowError:
            self.log("refused", level="warning", reason="noderange expansion too slow")
            raise _Refused(
                f"noderange took longer than {self.config.expand_timeout:g} s to expand; "
                "use node names, groups or smaller ranges", "bad-target",
            ) from None

    # --- identity -------------------------------------------------------------------------

    async def _identify(self, peer: Peer, view: TableView) -> Identity:
        if view.require_client_cert and peer.cert_role is None and peer.address != "unix":
            # site.litefs_require_client_cert=yes: an address proves nothing (anyone on the
            # network can take one), so a request without a certificate gets nothing.
            self.log("refused", level="warning", peer=peer.address,
                     reason="client certificate required")
            raise _Refused(
                "this site requires a client certificate from the site CA "
                "(site.litefs_require_client_cert=yes); a node gets one in its initrd, "
                "see 'litefs ca issue node NAME'",
                "forbidden",
            )
        known = identify_known(peer, view.hosts, view.nodes)
        if known is not None:
            return known
        if peer.address == "unix":
            return Identity(None, "none")
        now = trio.current_time()
        cached = self._dns_cache.get(peer.address)
        if cached is not None and cached[1] > now:
            hostname = cached[0]
        else:
            hostname = None
            with trio.move_on_after(self.config.dns_timeout):
                hostname = await self.resolver(peer.address)
            if len(self._dns_cache) > 100_000:
                self._dns_cache.clear()
            self._dns_cache[peer.address] = (hostname, now + self.config.dns_cache_seconds)
        return identify_by_name(hostname, view.nodes, view.domains)


def _keepalive(stream: trio.abc.Stream) -> None:
    """TCP keepalive on a long-lived subscription: a node that vanished (power cut, no FIN)
    is noticed in about two minutes instead of holding its connection for hours."""
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
