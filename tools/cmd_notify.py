"""``litefs notify <noderange|osimage> [PATH...]``: running nodes drop cached paths.

mountd notices most changes by itself (it watches image and litetree folders with inotify
and follows table edits, see ``litefs.mountd.follow``); this is for what it cannot see: a
litetree folder on another server, a tree too big to watch, or a change you want applied
now. Every subscribed node in the noderange (or booting the osimage) invalidates
``PATH...`` (everything when none is given).

Which way the announcement goes, first match wins:

1. ``--server ADDR``: to that mountd, which tells its own nodes and, on PostgreSQL, passes the
   announcement on through the database (NOTIFY) to every other mountd (service nodes); the
   count printed is of that mountd's own nodes;
2. ``--db URL``: straight into the database (PostgreSQL ``pg_notify``): every mountd on it,
   the MN's and each service node's, tells its own running nodes. No mountd needs to run
   where the command runs; the target is checked against the tables first;
3. run as root where mountd's admin socket exists: to that mountd (as 1);
4. ``$LITEFS_DB`` names a PostgreSQL database: into it (as 2);
5. otherwise mountd at ``localhost:3001`` over TLS with the admin certificate (as 1).

SQLite has one mountd and nothing to fan out to: ``--db`` on it is refused (use 1).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path

from litefs.initramfs import client, tls
from litefs.mountd import codec
from litefs.mountd.cli import DEFAULT_CA_DIR, DEFAULT_SOCKET
from litefs.tools.common import EXIT_OK

from litefs.errors import LitefsError, UsageError
from litefs.wellknown import DEFAULT_PORT


def setup_notify(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.epilog = (
        "Which way, first match: --server (that mountd; on PostgreSQL it passes the "
        "announcement on to every other mountd); --db (pg_notify into that PostgreSQL "
        "database: every mountd on it, the MN's and each service node's, tells its nodes); "
        f"root where {DEFAULT_SOCKET} exists (that mountd); $LITEFS_DB naming PostgreSQL "
        f"(as --db); else localhost:{DEFAULT_PORT} over TLS.")
    parser.add_argument("target", help="noderange (n01-n10, compute) or osimage name")
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="absolute paths to invalidate (default: everything)")
    parser.add_argument("--server", help=f"mountd address host[:port] or unix:/path "
                        f"(default: unix:{DEFAULT_SOCKET} as root, else $LITEFS_DB if it is "
                        f"PostgreSQL, else localhost:{DEFAULT_PORT})")
    parser.add_argument("--db", metavar="URL", default=None,
                        help="publish through this PostgreSQL database instead (pg_notify): "
                        "every mountd on it, the MN's and each service node's, tells its own "
                        "running nodes; no local mountd needed")
    parser.add_argument("--ca-dir", default=DEFAULT_CA_DIR,
                        help="CA folder with ca.pem, admin.pem, admin.key")
    parser.add_argument("--cert", help="admin certificate (default CA_DIR/admin.pem)")
    parser.add_argument("--key", help="admin key (default CA_DIR/admin.key)")
    parser.add_argument("--insecure", action="store_true", help="plain TCP (mountd --insecure)")
    parser.add_argument("--json", action="store_true",
                        help="print mountd's reply as one JSON object (for scripts)")
    return _run


def admin_connection(args: argparse.Namespace) -> tuple[str, dict[str, object]]:
    """Server address and request keywords (TLS context) for an admin command."""
    server = args.server
    if server is None:
        if os.geteuid() == 0 and os.path.exists(DEFAULT_SOCKET):
            server = f"unix:{DEFAULT_SOCKET}"
        else:
            server = f"localhost:{DEFAULT_PORT}"
    if server.startswith("unix:") or args.insecure:
        return server, {}
    ca_dir = Path(args.ca_dir)
    cert = Path(args.cert) if args.cert else ca_dir / "admin.pem"
    key = Path(args.key) if args.key else ca_dir / "admin.key"
    return server, {"ssl_context": tls.client_context(ca_dir / "ca.pem", cert, key)}


def database_route(args: argparse.Namespace) -> str | None:
    """The database URL to publish through, or None to ask a mountd (see the module doc)."""
    if args.db is not None:
        if args.server is not None:
            raise UsageError("--db and --server name two ways to announce; give one")
        return args.db
    if args.server is not None:
        return None
    if os.geteuid() == 0 and os.path.exists(DEFAULT_SOCKET):
        return None
    env = os.environ.get("LITEFS_DB") or ""
    return env if env.startswith(("postgresql", "postgres:")) else None


def _publish(args: argparse.Namespace, url: str) -> int:
    from litefs.mountd.catalog import load_view
    from litefs.mountd.db_watch import is_postgres, publish_announcement

    from litefs import db

    engine = db.open_engine(url, must_exist=True)
    try:
        if not is_postgres(engine):
            raise UsageError(f"{db.shown(engine.url)} is SQLite: one mountd serves every node; "
                             "announce through it (--server, or its admin socket as root)")
        db.require_schema(engine)
        # The target is checked here, as mountd checks it: each mountd on the database
        # expands it again and only logs a typo.
        try:
            targeted = load_view(engine, 0).nodes_for_target(args.target)
        except LitefsError as exc:
            raise LitefsError(f"{args.target}: {exc}") from None
        publish_announcement(engine, args.target, list(args.paths))
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps({"target": args.target, "paths": list(args.paths),
                          "targeted": len(targeted), "published": db.shown(engine.url)}))
        return EXIT_OK
    print(f"{args.target}: {len(targeted)} node(s) targeted; published on {db.shown(engine.url)} "
          "to every mountd on it (each tells its running nodes)")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    bad = [p for p in args.paths if not p.startswith("/")]
    if bad:
        raise UsageError(f"paths must be absolute: {', '.join(bad)}")
    url = database_route(args)
    if url is not None:
        return _publish(args, url)
    server, kw = admin_connection(args)
    reply = client.request_sync(
        server, codec.AnnounceRequest(target=args.target, paths=tuple(args.paths)), **kw
    )
    notified = reply.get("notified", [])
    if args.json:
        print(json.dumps({"target": args.target, "paths": list(args.paths),
                          "targeted": reply.get("targeted", 0), "notified": list(notified)}))
        return EXIT_OK
    print(
        f"{args.target}: {reply.get('targeted', 0)} node(s) targeted, "
        f"{len(notified)} running node(s) notified" + (f": {','.join(notified)}" if notified else "")
        + ("; passed on to the other mountds on the database" if reply.get("fanout") else "")
    )
    return EXIT_OK
