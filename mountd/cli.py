"""The ``mountd`` command: serve plans to booting nodes (see ``litefs-mountd.service``).

Reads ``site.xcatdport`` for the port (3001 if unset) unless ``--port`` is given. TLS files
come from ``--ca-dir`` (what ``litefs ca init`` wrote: ``ca.pem``, ``server.pem``,
``server.key``) or from ``--ca``/``--cert``/``--key``; ``--insecure`` serves plain TCP and
says so loudly. Running nodes follow changes without a manual step (``--follow-interval``,
see :mod:`.follow`): table edits reach them as plan changes, image and litetree edits as
announcements. SIGTERM (or SIGINT) stops accepting, lets requests in flight finish for a few
seconds, and exits 0. SIGHUP re-reads the tables at once (they are also re-read within
``--check-interval`` seconds of any change).

A PostgreSQL database that cannot be reached at start does not stop mountd: it listens
(``--port``, else 3001), answers every node with one line naming the database (and the
service node), and makes its start-up checks once the database answers; one that fails then
(no schema, an unknown ``--service-node``, ``site.xcatdport`` not the port it listens on)
stops it with its line, as at start.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from pathlib import Path

import trio
from litefs.tools.common import Parser, add_db_option, run_main
from sqlalchemy import Engine, select

from litefs.errors import DatabaseUnreachable, LitefsError, UsageError
from litefs.wellknown import DEFAULT_PORT

from . import sdnotify, workers
from .catalog import Catalog
from .config import ServerConfig
from .log import LEVELS, Logger
from .pki import server_context
from .server import Server

DEFAULT_CA_DIR = "/etc/litefs/ca"
DEFAULT_SOCKET = "/run/litefs/mountd.sock"


def _parser() -> Parser:
    p = Parser(prog="mountd", description="Serve litefs plans (and classic xcatd litefile/"
               "litetree answers) to booting nodes.",
               epilog="Signals: SIGTERM/SIGINT stop accepting, let requests in flight finish "
               "and exit 0; SIGHUP re-reads the tables at once (they are also re-read within "
               "--check-interval seconds of a change). Logs: one JSON object per line on "
               "stderr. First run 'litefs db init' and 'litefs ca init'.")
    add_db_option(p)
    p.add_argument("--host", default="", help="address to listen on (default: all)")
    p.add_argument("--port", type=int, default=None,
                   help=f"TCP port (default: site.xcatdport, else {DEFAULT_PORT})")
    p.add_argument("--ca-dir", default=DEFAULT_CA_DIR,
                   help=f"folder made by 'litefs ca init' (default {DEFAULT_CA_DIR})")
    p.add_argument("--ca", help="CA certificate (default CA_DIR/ca.pem)")
    p.add_argument("--cert", help="server certificate (default CA_DIR/server.pem)")
    p.add_argument("--key", help="server key (default CA_DIR/server.key)")
    p.add_argument("--insecure", action="store_true",
                   help="plain TCP without TLS (tests and labs only)")
    p.add_argument("--socket", default=DEFAULT_SOCKET,
                   help=f"local admin socket (root is admin); '' to disable (default {DEFAULT_SOCKET})")
    p.add_argument("--admin-group", default=None, metavar="GROUP",
                   help="group whose members may also use the admin socket (default: root only; "
                   "the socket is mode 0600, or 0660 owned by GROUP)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes sharing the port (TLS handshakes are CPU-bound; "
                   "one per core for boot storms; default 1)")
    p.add_argument("--check-interval", type=float, default=None,
                   help="seconds between checks for table changes (default 0.2 on SQLite; "
                   "1 on PostgreSQL, where change triggers and LISTEN wake mountd at once)")
    p.add_argument("--follow-interval", type=float, default=0.2, metavar="SECONDS",
                   help="running nodes follow changes by themselves: every SECONDS mountd "
                   "looks for table changes and sends each subscribed node whose plan changed "
                   "its new plan, and it watches image and litetree folders with inotify and "
                   "announces what changed (as 'litefs notify' does); 0 turns all of that off "
                   "(default 0.2)")
    p.add_argument("--no-watch-trees", dest="watch_trees", action="store_false",
                   help="do not watch image and litetree folders (changes then need "
                   "'litefs notify')")
    p.add_argument("--watch-root", default="/", metavar="DIR",
                   help="where this host's image and litetree paths are found (default /; "
                   "a test layout that keeps the exports under one folder names it here)")
    p.add_argument("--scan-interval", type=float, default=30.0, metavar="SECONDS",
                   help="a folder tree that runs out of inotify watches "
                   "(fs.inotify.max_user_watches) is scanned this often instead (default 30)")
    p.add_argument("--max-per-peer", type=int, default=64,
                   help="connections one address may hold at once (default 64)")
    p.add_argument("--db-timeout", type=float, default=10.0,
                   help="seconds a table load may take before the last good tables are "
                   "served (default 10)")
    p.add_argument("--request-timeout", type=float, default=10.0,
                   help="seconds a client has to send a whole request (default 10)")
    p.add_argument("--service-node", metavar="SN", default=None,
                   help="run as service node SN (a row of the servicenode table): serve only "
                   "the nodes whose noderes.servicenode pool names SN; default: the MN, which "
                   "serves every node")
    p.add_argument("--log-level", choices=sorted(LEVELS, key=LEVELS.__getitem__), default="info")
    p.add_argument("--log-format", choices=("json", "text"), default="json")
    return p


def _site_port(engine: Engine) -> int:
    from litefs.schema import TABLES, active

    site = TABLES["site"]
    with engine.connect() as conn:
        value = conn.execute(
            select(site.c.value).where(site.c.key == "xcatdport", active(site))
        ).scalar()
    if not value:
        return DEFAULT_PORT
    try:
        return int(value)
    except ValueError:
        raise LitefsError(f"site.xcatdport is {value!r}, not a port number; fix it with chtab") from None


def _body(argv: list[str]) -> int:
    from litefs import db

    args = _parser().parse_args(argv)
    log = Logger(level=args.log_level, fmt=args.log_format)
    engine = db.open_engine(args.db, connect=False)
    try:
        db.check_connect(engine)
    except DatabaseUnreachable as exc:
        if engine.url.get_backend_name() == "sqlite":
            raise
        # A database server that is away (an SN that boots before the MN's PostgreSQL, a
        # network cut) must not leave the SN's nodes with a silent port: mountd starts,
        # answers every node with this one line, and loads the tables once it can.
        log("db_unavailable", level="warning", error=str(exc), at="start",
            serving="an error naming the database to every node until it answers")
        deferred_checks = True
        port = args.port if args.port is not None else DEFAULT_PORT
    else:
        deferred_checks = False
        db.require_schema(engine)
        port = args.port if args.port is not None else _site_port(engine)
        if args.service_node is not None:
            _check_service_node(engine, args.service_node)
    if args.insecure:
        log("insecure", level="warning", message="serving plain TCP without TLS (--insecure)")
    else:
        _tls_context(args)  # fail now, once, with a clear message
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    deferred = _deferred_checks(args, engine, port) if deferred_checks else None
    if args.workers == 1:
        _run_server(_server(args, engine, port, log), port, deferred)
        return 0
    engine.dispose()  # each worker opens its own connections after the fork
    try:
        sock = workers.listen_socket(args.host, port, 4096)
    except OSError as exc:
        raise LitefsError(f"cannot listen on port {port}: {exc.strerror or exc}") from None
    inboxes, outboxes = workers.make_channels(args.workers)
    # The shared socket listens already (the kernel queues connections for the workers), so
    # the service is ready as far as a client can tell.
    sdnotify.notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=listening ({args.workers} workers)")

    def worker(index: int) -> int:
        wlog = Logger(level=args.log_level, fmt=args.log_format, worker=index)
        siblings = workers.Siblings(index, inboxes[index], outboxes)
        wengine = db.open_engine(args.db, connect=not deferred_checks)
        server = _server(args, wengine, port, wlog, index=index, listen=[sock],
                         siblings=siblings)
        try:
            _run_server(server, port, _deferred_checks(args, wengine, port) if deferred_checks
                        else None)
        except LitefsError as exc:
            print(f"mountd worker {index}: {exc}", file=sys.stderr)
            return 1
        return 0

    log("workers", count=args.workers, port=port)
    return workers.run_workers(args.workers, worker)


def _deferred_checks(args: argparse.Namespace, engine: Engine, port: int
                     ) -> Callable[[], None]:
    """The start-up checks a mountd that started without its database makes once it answers
    (raises DatabaseUnreachable while it does not)."""
    from litefs import db

    def check() -> None:
        db.check_connect(engine)
        db.require_schema(engine)
        if args.port is None and (site := _site_port(engine)) != port:
            # Nodes ask at site.xcatdport (nodeset writes it into XCAT=): a restart listens there.
            raise LitefsError(f"site.xcatdport is {site} but mountd listens on {port} (the "
                              "database was away at start); restart mountd, or pass --port")
        if args.service_node is not None:
            _check_service_node(engine, args.service_node)

    return check


def _check_service_node(engine: Engine, name: str) -> None:
    from litefs.schema import TABLES, active

    sn = TABLES["servicenode"]
    with engine.connect() as conn:
        found = conn.execute(select(sn.c.node).where(sn.c.node == name, active(sn))).first()
    if found is None:
        raise UsageError(f"--service-node {name!r} is not in the servicenode table; add it "
                         f"(chtab node={name} servicenode.tftpserver=1) or fix the name")


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext:
    ca_dir = Path(args.ca_dir)
    ca = Path(args.ca) if args.ca else ca_dir / "ca.pem"
    cert = Path(args.cert) if args.cert else ca_dir / "server.pem"
    key = Path(args.key) if args.key else ca_dir / "server.key"
    if not ca.exists():
        raise UsageError(
            f"no CA at {ca}: run 'litefs ca init --dir {ca_dir}', pass --ca-dir, "
            "or --insecure for a lab without TLS"
        )
    return server_context(ca, cert, key)


def _server(args: argparse.Namespace, engine: Engine, port: int, log: Logger, *, index: int = 0,
            listen: list[socket.socket] | None = None,
            siblings: workers.Siblings | None = None) -> Server:
    config = ServerConfig(
        host=args.host, port=port, ssl_context=None if args.insecure else _tls_context(args),
        unix_socket=(args.socket or None) if index == 0 else None,
        admin_group=args.admin_group, service_node=args.service_node,
        request_timeout=args.request_timeout, listen_sockets=listen,
        max_per_peer=args.max_per_peer, follow_interval=max(0.0, args.follow_interval),
        watch_trees=args.watch_trees, watch_root=args.watch_root,
        scan_interval=max(1.0, args.scan_interval),
    )
    check = args.check_interval
    if check is None:
        check = 0.2 if engine.url.get_backend_name() == "sqlite" else 1.0
    catalog = Catalog(engine, check_interval=check, db_timeout=args.db_timeout, log=log)
    return Server(catalog, config, log, siblings=siblings)


def _run_server(server: Server, port: int, deferred: Callable[[], None] | None = None) -> None:
    """Run until stopped; start-up failures become one LitefsError line. ``deferred``: the
    start-up checks still owed (the database was away); one that fails stops mountd with
    its line, as it would have at start."""
    failed: list[LitefsError] = []
    try:
        trio.run(_serve, server, deferred, failed)
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if len(leaves) == 1 and isinstance(leaves[0], LitefsError | OSError):
            _raise_clean(leaves[0], port)
        raise
    except (LitefsError, OSError) as exc:
        _raise_clean(exc, port)
    if failed:
        raise failed[0]


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return out


def _raise_clean(exc: BaseException, port: int) -> None:
    if isinstance(exc, LitefsError):
        raise exc from None
    assert isinstance(exc, OSError)
    raise LitefsError(f"cannot listen on port {port}: {exc.strerror or exc}") from None


async def _check_later(server: Server, check: Callable[[], None],
                       failed: list[LitefsError]) -> None:
    while True:
        try:
            await trio.to_thread.run_sync(check, abandon_on_cancel=True)
        except DatabaseUnreachable:
            await trio.sleep(1.0)
            continue
        except LitefsError as exc:
            server.log("start_check_failed", level="error", error=str(exc))
            failed.append(exc)
            server.shutdown()
            return
        server.log("start_checks_passed", service_node=server.config.service_node)
        return


async def _serve(server: Server, deferred: Callable[[], None] | None,
                 failed: list[LitefsError]) -> None:
    async with trio.open_nursery() as nursery:
        if deferred is not None:
            nursery.start_soon(_check_later, server, deferred, failed)

        async def on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                async for signum in signals:
                    server.log("signal", signal=signal.Signals(signum).name)
                    if signum == signal.SIGHUP:
                        server.catalog.invalidate()  # re-read the tables at the next request
                        continue
                    sdnotify.notify("STOPPING=1")
                    server.shutdown()
                    return

        async def run(task_status: trio.TaskStatus[list[int]] = trio.TASK_STATUS_IGNORED) -> None:
            await server.serve(task_status=task_status)
            nursery.cancel_scope.cancel()  # served out: stop waiting for signals

        nursery.start_soon(on_signal)
        # start() returns once the listeners are open: only then is the service ready.
        await nursery.start(run)
        sdnotify.notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=listening")


def main(argv: list[str] | None = None) -> int:
    return run_main("mountd", _body, argv)


if __name__ == "__main__":
    sys.exit(main())
