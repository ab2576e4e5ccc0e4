"""The ``mountd`` command: serve plans to booting nodes (see ``litefs-mountd.service``).

Reads ``site.xcatdport`` for the port (3001 if unset) unless ``--port`` is given. TLS files
come from ``--ca-dir`` (what ``litefs ca init`` wrote: ``ca.pem``, ``server.pem``,
``server.key``) or from ``--ca``/``--cert``/``--key``; ``--insecure`` serves plain TCP and
says so loudly. SIGTERM (or SIGINT) stops accepting, lets requests in flight finish for a few
seconds, and exits 0. SIGHUP re-reads the tables at once (they are also re-read within
``--check-interval`` seconds of any change).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import trio
from litefs.tools.common import Parser, add_db_option, run_main
from sqlalchemy import select

from litefs.errors import LitefsError, UsageError

from .catalog import Catalog
from .log import LEVELS, Logger
from .pki import server_context
from .server import DEFAULT_PORT, Server, ServerConfig

DEFAULT_CA_DIR = "/etc/litefs/ca"
DEFAULT_SOCKET = "/run/litefs/mountd.sock"


def _parser() -> Parser:
    p = Parser(prog="mountd", description="Serve litefs plans (and classic xcatd litefile/"
               "litetree answers) to booting nodes.")
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
    p.add_argument("--check-interval", type=float, default=1.0,
                   help="seconds between checks for table changes (default 1)")
    p.add_argument("--db-timeout", type=float, default=10.0)
    p.add_argument("--request-timeout", type=float, default=10.0)
    p.add_argument("--log-level", choices=sorted(LEVELS, key=LEVELS.__getitem__), default="info")
    p.add_argument("--log-format", choices=("json", "text"), default="json")
    return p


def _site_port(engine) -> int:  # type: ignore[no-untyped-def]
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
    engine = db.open_engine(args.db)
    db.require_schema(engine)
    port = args.port if args.port is not None else _site_port(engine)
    if args.insecure:
        ctx = None
        log("insecure", level="warning", message="serving plain TCP without TLS (--insecure)")
    else:
        ca_dir = Path(args.ca_dir)
        ca = Path(args.ca) if args.ca else ca_dir / "ca.pem"
        cert = Path(args.cert) if args.cert else ca_dir / "server.pem"
        key = Path(args.key) if args.key else ca_dir / "server.key"
        if not ca.exists():
            raise UsageError(
                f"no CA at {ca}: run 'litefs ca init --dir {ca_dir}', pass --ca-dir, "
                "or --insecure for a lab without TLS"
            )
        ctx = server_context(ca, cert, key)
    config = ServerConfig(
        host=args.host, port=port, ssl_context=ctx, unix_socket=args.socket or None,
        request_timeout=args.request_timeout,
    )
    catalog = Catalog(engine, check_interval=args.check_interval, db_timeout=args.db_timeout,
                      log=log)
    server = Server(catalog, config, log)
    try:
        trio.run(_serve, server)
    except OSError as exc:
        raise LitefsError(f"cannot listen on port {port}: {exc.strerror or exc}") from None
    return 0


async def _serve(server: Server) -> None:
    async with trio.open_nursery() as nursery:

        async def on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                async for signum in signals:
                    server.log("signal", signal=signal.Signals(signum).name)
                    if signum == signal.SIGHUP:
                        server.catalog.invalidate()  # re-read the tables at the next request
                        continue
                    server.shutdown()
                    return

        nursery.start_soon(on_signal)
        await server.serve()
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    return run_main("mountd", _body, argv)


if __name__ == "__main__":
    sys.exit(main())
