"""mountd's settings (``mountd`` options, tests' overrides): one frozen-by-habit dataclass that
the socket side (:mod:`.server`), the sessions (:mod:`.session`) and the request logic
(:mod:`.service`) all read."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

from litefs.wellknown import DEFAULT_PORT

from . import codec


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
