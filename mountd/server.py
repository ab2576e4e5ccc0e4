"""mountd's socket side: TCP/TLS and admin-socket listeners, connection limits, lifecycle.

This module owns the sockets and nothing else: it accepts connections (at most
``max_connections``, ``max_per_peer`` from one address), does the TLS handshake within
``handshake_timeout``, works out the :class:`~.identity.Peer` (address, certificate subject,
or root/admin group on the Unix socket) and runs a :class:`~.session.Session` on the stream.
What a request gets is :class:`~.service.Service`'s answer; the database is never touched
here: :class:`~.catalog.Catalog` hands out an in-memory view and plans are computed from it
once per node.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
from functools import cached_property, partial

import trio

from litefs.errors import MountdError

from .catalog import Catalog
from .config import ServerConfig
from .follow import Follower
from .hub import Hub
from .identity import Peer, normalise_ip
from .log import Logger
from .pki import peer_subject
from .service import Resolver, Service, reverse_dns
from .session import Conn, Session
from .tlsstream import TLSSocketStream
from .workers import SiblingNews, Siblings


class Server:
    """mountd's listeners over a :class:`Catalog`: ``await serve()``, ``shutdown()`` to stop.

    ``resolver`` does reverse DNS for peers the hosts table does not know (a seam for tests;
    the default asks the system resolver). ``siblings`` links the worker processes of
    ``mountd --workers``. What each request gets is :attr:`service`'s to say.
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
        self.config = config
        self.log = log or Logger(level="warning")
        self.service = Service(catalog, config, self.log, resolver=resolver, siblings=siblings)
        self._per_peer: dict[str, int] = {}
        self._listen_scope: trio.CancelScope | None = None
        self._stopping = trio.Event()
        self.ports: list[int] = []
        self.siblings = siblings
        if config.follow_interval > 0:
            # With workers, the first one watches the database and the trees for all and
            # passes on what it hears; the others still poll their own catalog.
            lead = siblings is None or siblings.index == 0
            service = self.service
            service.follower = Follower(
                catalog, service.hub, announce=service.announce_local, log=self.log,
                announce_remote=service.announce_remote,
                interval=config.follow_interval, watch_trees=config.watch_trees and lead,
                listen_db=lead, watch_root=config.watch_root, scan_interval=config.scan_interval,
                on_tables=(lambda: siblings.send({"t": SiblingNews.TABLES})) if siblings else None,
                # One origin for all workers of this mountd (the parent's pid), so a worker
                # does not hear its sibling's announcement back from the database.
                origin=f"{socket.gethostname()}:{os.getppid()}" if siblings else None,
            )

    # The service's state, as callers (the CLI's signal handler, tests) read it.
    @property
    def catalog(self) -> Catalog:
        return self.service.catalog

    @property
    def hub(self) -> Hub:
        return self.service.hub

    @property
    def follower(self) -> Follower | None:
        return self.service.follower

    @property
    def connections(self) -> int:
        return self.service.connections

    @property
    def served(self) -> int:
        return self.service.served

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
                    listeners.start_soon(self.siblings.run, self.service.sibling_message)
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
        service = self.service
        held = self._per_peer.get(address, 0)
        if service.connections >= cfg.max_connections or (
            held >= cfg.max_per_peer and address != "unix"
        ):
            too_many = service.connections >= cfg.max_connections
            reason = "too many" if too_many else "too many from peer"
            self.log("connection_refused", level="warning", peer=address, reason=reason)
            raw.socket.close()
            return
        service.connections += 1
        self._per_peer[address] = held + 1
        conn = Conn(raw, trio.CancelScope(deadline=trio.current_time() + cfg.handshake_timeout))
        try:
            with conn.scope:
                peer = Peer(address=address, unix_uid=unix_uid)
                if tls and cfg.ssl_context is not None:
                    tls_stream = TLSSocketStream.wrap_server(raw, cfg.ssl_context)
                    conn.stream = tls_stream
                    await tls_stream.do_handshake()
                    cn, role = peer_subject(tls_stream.getpeercert())
                    peer = Peer(address=address, cert_cn=cn, cert_role=role)
                await Session(service, conn, peer, self._stopping).converse()
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
            service.connections -= 1
            left = self._per_peer[address] - 1
            if left:
                self._per_peer[address] = left
            else:
                del self._per_peer[address]
            _close_now(conn.stream)


def _close_now(stream: trio.abc.Stream) -> None:
    """Close at once (no await: also runs while the session is being cancelled)."""
    if isinstance(stream, TLSSocketStream):
        stream.close_now()
    elif isinstance(stream, trio.SocketStream):
        stream.socket.close()
