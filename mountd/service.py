"""What mountd answers: request + peer identity + table view -> reply bytes, without sockets.

This is mountd's one seam between logic and I/O. A session (:mod:`.session`) reads a request
off whatever stream it was given and hands it here with the :class:`~.identity.Peer` it came
from; :class:`Service` identifies the node (hosts table, then reverse DNS through
``resolver``), applies the policy table, the admin and service-node checks, and returns the
reply line (JSON) or document (classic xcatd) to send. A request the peer may not have is a
:class:`Refused` (message for the peer, code for machines). Announcements are delivered here
too: to this process's subscribers (:class:`~.hub.Hub`), to sibling workers and, through the
follower, to every other mountd on the database.

Nothing here opens, reads or writes a socket, so tests drive it with a :class:`Catalog` and a
:class:`Peer` alone. The waits it does have carry their own limits (noderange expansion in a
worker thread, reverse DNS).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from litefs.errors import LitefsError, MountdError
from litefs.policytable import decide

from . import codec, xcatd_codec
from .catalog import Catalog, TableView
from .config import ServerConfig
from .hub import Hub
from .identity import Identity, Peer, identify_by_name, identify_known
from .log import Logger
from .workers import SiblingNews

if TYPE_CHECKING:
    from .follow import Follower
    from .workers import Siblings

#: Classic commands mountd answers; everything else gets xcatd's "not supported" error.
CLASSIC_COMMANDS = ("litefile", "litetree")

Resolver = Callable[[str], Awaitable[str | None]]

#: Worker threads expanding request noderanges at once (the rest wait their turn).
_EXPAND_THREADS = 2


class Refused(Exception):
    """A request we answer with an error (message for the peer, code for machines)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


async def reverse_dns(address: str) -> str | None:
    try:
        host, _port = await trio.socket.getnameinfo((address, 0), socket.NI_NAMEREQD)
    except (OSError, UnicodeError):
        return None
    return host


class Service:
    """mountd's answers over a :class:`Catalog`.

    ``resolver`` does reverse DNS for peers the hosts table does not know (a seam for tests;
    the default asks the system resolver). ``siblings`` links the worker processes of
    ``mountd --workers``; ``follower`` (set by the server when it follows changes) publishes
    announcements to the other mountds on the database.
    """

    def __init__(
        self,
        catalog: Catalog,
        config: ServerConfig,
        log: Logger,
        *,
        resolver: Resolver = reverse_dns,
        siblings: Siblings | None = None,
    ) -> None:
        self.catalog = catalog
        self.config = config
        self.log = log
        self.hub = Hub()
        self.resolver = resolver
        self.siblings = siblings
        self.follower: Follower | None = None
        #: Open connections and requests answered (for health, stats and the shutdown log).
        self.connections = 0
        self.served = 0
        self._dns_cache: dict[str, tuple[str | None, float]] = {}
        self._expand_limiter = trio.CapacityLimiter(_EXPAND_THREADS)
        if siblings is not None:
            self.hub.on_change = lambda node, d: siblings.send(
                {"t": SiblingNews.SUBSCRIPTION, "node": node, "d": d})

    # --- JSON requests --------------------------------------------------------------------

    async def answer(self, peer: Peer, req: codec.Request) -> bytes:
        """The reply to one JSON request other than a subscription (:meth:`subscriber`)."""
        if isinstance(req, codec.HealthRequest):
            return self.health()
        view = await self.view()
        ident = await self.identify(peer, view)
        if isinstance(req, codec.PlanRequest):
            reply = self.plan_reply(view, peer, ident, req.node)
            self.served += 1
            return reply
        if isinstance(req, codec.AnnounceRequest):
            self.require_admin(peer, "announce")
            return await self.announce(view, req)
        if isinstance(req, codec.ReloadRequest):
            self.require_admin(peer, "reload")
            self.catalog.invalidate()
            view = await self.view()
            return codec.ok_reply(generation=view.generation)
        raise AssertionError(f"unhandled request {req!r}")  # pragma: no cover

    async def subscriber(self, peer: Peer) -> str:
        """The node a subscription from ``peer`` is for (its own: nobody follows another)."""
        view = await self.view()
        ident = await self.identify(peer, view)
        return self.require_node(peer, ident, None, command="litefile", view=view)

    async def view(self) -> TableView:
        try:
            return await self.catalog.view()
        except MountdError as exc:
            # A node's console shows this line: on an SN it must say which server is cut off.
            sn = self.config.service_node
            raise Refused(f"service node {sn}: {exc}" if sn else str(exc), "db") from None

    def health(self) -> bytes:
        return codec.ok_reply(
            status="degraded" if self.catalog.db_error else "ok",
            db_error=self.catalog.db_error,
            connections=self.connections,
            subscribers=self.hub.count,
            served=self.served,
        )

    def plan_reply(self, view: TableView, peer: Peer, ident: Identity, asked: str | None) -> bytes:
        node = self.require_node(peer, ident, asked, command="litefile", view=view)
        if not peer.is_admin:
            self.policy(view, peer, ident, "litetree", [node])
        entry = view.plan(node)
        if entry.plan_json is None:
            self.log("plan_error", level="warning", node=node, error=entry.error)
            raise Refused(entry.error or "no plan", "plan")
        if self.log.enabled("debug"):
            self.log("plan_served", level="debug", peer=peer.address, node=node, via=ident.via)
        # The plan is already JSON; splice it in rather than re-encoding per request.
        return (
            b'{"generation":%d,"node":%s,"ok":true,"plan":%s}\n'
            % (view.generation, json.dumps(node).encode(), entry.plan_json)
        )

    # --- classic xcatd --------------------------------------------------------------------

    async def classic_answer(self, peer: Peer, req: xcatd_codec.ClassicRequest) -> bytes:
        """The ``<xcatresponse>`` body for a classic request (without ``serverdone``)."""
        if req.command not in CLASSIC_COMMANDS:
            raise Refused(f"Unsupported command: {req.command} (mountd serves litefile, litetree)", "unsupported")
        view = await self.view()
        ident = await self.identify(peer, view)
        if req.noderange:
            asked = sorted(await self.expand(view, req.noderange))
        else:
            asked = [None]  # type: ignore[list-item]
        lines: list[str] = []
        for want in asked:
            node = self.require_node(peer, ident, want, command=req.command, view=view)
            if req.command == "litefile":
                try:
                    lines += view.classic_litefile(node)
                except LitefsError as exc:
                    raise Refused(str(exc), "plan") from None
            else:
                entry = view.plan(node)
                if entry.plan_json is None:
                    raise Refused(entry.error or "no plan", "plan")
                lines += entry.litetree
            if self.log.enabled("debug"):
                self.log("classic_served", level="debug", peer=peer.address, node=node,
                         via=ident.via, command=req.command)
        return xcatd_codec.encode_classic_info(lines)

    async def expand(self, view: TableView, text: str) -> set[str]:
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
            raise Refused(str(exc), "bad-target") from None
        except trio.TooSlowError:
            self.log("refused", level="warning", reason="noderange expansion too slow")
            raise Refused(
                f"noderange took longer than {self.config.expand_timeout:g} s to expand; "
                "use node names, groups or smaller ranges", "bad-target",
            ) from None

    # --- who may ask what -----------------------------------------------------------------

    async def identify(self, peer: Peer, view: TableView) -> Identity:
        if view.require_client_cert and peer.cert_role is None and peer.address != "unix":
            # site.litefs_require_client_cert=yes: an address proves nothing (anyone on the
            # network can take one), so a request without a certificate gets nothing.
            self.log("refused", level="warning", peer=peer.address,
                     reason="client certificate required")
            raise Refused(
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

    def require_admin(self, peer: Peer, what: str) -> None:
        if not peer.is_admin:
            self.log("refused", level="warning", peer=peer.address, cn=peer.cert_cn, request=what,
                     reason="admin certificate required")
            raise Refused(
                f"{what} needs an admin certificate from the site CA (or root on the local socket)",
                "forbidden",
            )

    def policy(self, view: TableView, peer: Peer, ident: Identity, command: str,
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
            raise Refused(
                f"Permission denied for request ({command}: {decision.reason}); "
                "check the policy table (tabdump policy)",
                "forbidden",
            )

    def require_node(self, peer: Peer, ident: Identity, asked: str | None, *, command: str,
                     view: TableView) -> str:
        """The node this request may be about: its own, or any for an admin."""
        if asked is not None and asked != ident.node:
            if peer.is_admin:
                if asked not in view.nodes:
                    raise Refused(f"unknown node {asked!r} (not in nodelist)", "unknown-node")
                return asked
            self.log("refused", level="warning", peer=peer.address, node=ident.node,
                     asked=asked, command=command, reason="another node's plan")
            raise Refused(
                f"a node may only ask for its own plan ({peer.address} is "
                f"{ident.node or 'not a known node'}, asked for {asked}); "
                "other nodes' plans need an admin certificate",
                "forbidden",
            )
        if ident.node is None:
            self.log("unknown_node", level="warning", peer=peer.address, via=ident.via,
                     hostname=ident.hostname)
            raise Refused(
                f"cannot tell which node {peer.address} is: not in the hosts table"
                + (f", reverse DNS {ident.hostname!r} is not a node" if ident.hostname else
                   ", no reverse DNS name")
                + f"; add it with 'chtab node=<node> hosts.ip={peer.address}'",
                "unknown-node",
            )
        if not peer.is_admin:
            self.policy(view, peer, ident, command, [ident.node])
            if self.config.service_node is not None:
                self.require_pool(view, peer, ident.node)
        return ident.node

    def require_pool(self, view: TableView, peer: Peer, node: str) -> None:
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
        raise Refused(
            f"{node} is served by {','.join(pool) or 'the management node'} "
            f"(noderes.servicenode), not by service node {self.config.service_node}; run "
            f"nodeset for {node} so its boot files name its own servers",
            "forbidden",
        )

    # --- announcements --------------------------------------------------------------------

    async def announce(self, view: TableView, req: codec.AnnounceRequest) -> bytes:
        try:
            nodes = view.nodes_for_target(req.target)
        except LitefsError as exc:
            raise Refused(str(exc), "bad-target") from None
        reached = self.deliver_announcement(nodes, req.target, list(req.paths))
        # Every other mountd on this database (service nodes) delivers to its own nodes.
        fanned = (self.follower is not None
                  and await self.follower.db_watch.publish(req.target, list(req.paths)))
        self.log("announced", target=req.target, paths=list(req.paths), nodes=len(nodes),
                 reached=len(reached), fanout=fanned)
        return codec.ok_reply(targeted=len(nodes), notified=reached, fanout=fanned)

    def deliver_announcement(self, nodes: set[str], target: str, paths: list[str]) -> list[str]:
        reached = self.hub.announce(nodes, paths)
        if self.siblings is not None:
            self.siblings.send({"t": SiblingNews.ANNOUNCE, "target": target, "paths": paths})
        return reached

    def announce_local(self, target: str, paths: list[str]) -> None:
        """An announcement from the tree watcher or another mountd: to our own nodes."""
        view = self.catalog.current
        if view is None:
            return
        try:
            nodes = view.nodes_for_target(target)
        except LitefsError as exc:
            self.log("announce_failed", level="warning", target=target[:200], error=str(exc))
            return
        reached = self.deliver_announcement(nodes, target, paths)
        self.log("announced", target=target[:200], paths=paths[:20], nodes=len(nodes),
                 reached=len(reached), source="follow")

    async def announce_remote(self, target: str, paths: list[str]) -> None:
        """Another mountd's announcement (over the database): its noderange is expanded as a
        request's is, in a worker thread within the expansion time limit."""
        view = self.catalog.current
        if view is None:
            return
        try:
            if target in view.snapshot.osimage and target not in view.nodes:
                nodes = view.nodes_for_target(target)  # an image name: a dict lookup
            else:
                nodes = await self.expand(view, target)
        except (LitefsError, Refused) as exc:
            self.log("announce_failed", level="warning", target=target[:200],
                     error=str(exc)[:300], source="database")
            return
        reached = self.deliver_announcement(nodes, target, paths)
        self.log("announced", target=target[:200], paths=paths[:20], nodes=len(nodes),
                 reached=len(reached), source="database")

    async def sibling_message(self, message: dict) -> None:
        """Another worker's news: a subscription count changed, or an announcement to deliver."""
        kind = message.get("t")
        if kind == SiblingNews.SUBSCRIPTION:
            self.hub.remote_delta(str(message.get("node")), int(message.get("d", 0)))
        elif kind == SiblingNews.ANNOUNCE:
            try:
                view = await self.catalog.view()
                nodes = view.nodes_for_target(str(message.get("target")))
            except LitefsError as exc:
                self.log("announce_failed", level="warning", error=str(exc))
                return
            self.hub.deliver(nodes, [str(p) for p in message.get("paths", [])])
        elif kind == SiblingNews.TABLES:
            self.catalog.invalidate()
            if self.follower is not None:
                self.follower.wake()
