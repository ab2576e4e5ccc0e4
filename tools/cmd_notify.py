"""``litefs notify <noderange|osimage> [PATH...]``: running nodes drop cached paths.

mountd notices most changes by itself (it watches image and litetree folders with inotify
and follows table edits, see ``litefs.mountd.follow``); this is for what it cannot see: a
litetree folder on another server, a tree too big to watch, or a change you want applied
now. It asks mountd to tell every subscribed node in the noderange (or booting the osimage)
to invalidate ``PATH...`` (everything when none is given). On PostgreSQL mountd passes the
announcement on through the database (NOTIFY), so the nodes of every service node's mountd
get it too; the count printed is of this mountd's own nodes. It talks to mountd
on the local admin socket when run as root on the MN, else over TLS with the admin
certificate from ``--ca-dir``.
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

from litefs.errors import UsageError
from litefs.wellknown import DEFAULT_PORT


def setup_notify(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.add_argument("target", help="noderange (n01-n10, compute) or osimage name")
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="absolute paths to invalidate (default: everything)")
    parser.add_argument("--server", help=f"mountd address host[:port] or unix:/path "
                        f"(default: unix:{DEFAULT_SOCKET} as root, else localhost:{DEFAULT_PORT})")
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


def _run(args: argparse.Namespace) -> int:
    bad = [p for p in args.paths if not p.startswith("/")]
    if bad:
        raise UsageError(f"paths must be absolute: {', '.join(bad)}")
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
