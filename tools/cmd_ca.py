"""``litefs ca init`` / ``litefs ca issue``: the site certificate authority for mountd.

``init`` creates, in ``--dir`` (default /etc/litefs/ca): the CA, mountd's server certificate
(for this host's names plus ``--san``) and an admin certificate for ``litefs notify`` and
other admin requests. ``issue`` signs one more certificate: ``node NAME`` (a node proving its
identity by certificate), ``admin NAME`` or ``server NAME`` (a service node's mountd).
Nothing is overwritten: an existing file is an error naming it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from litefs.mountd import pki
from litefs.mountd.cli import DEFAULT_CA_DIR
from litefs.tools.common import EXIT_OK


def setup_ca(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True,
                                parser_class=type(parser))
    init = sub.add_parser("init", help="create the CA, mountd's server and an admin certificate")
    init.add_argument("--dir", default=DEFAULT_CA_DIR, help=f"where to write (default {DEFAULT_CA_DIR})")
    init.add_argument("--server-name", help="server certificate CN (default: this host's FQDN)")
    init.add_argument("--san", action="append", default=[], metavar="NAME|IP",
                      help="another name or address nodes use for mountd (repeatable)")
    init.add_argument("--admin-name", default="root", help="admin certificate CN (default root)")
    issue = sub.add_parser("issue", help="sign one more certificate with the site CA")
    issue.add_argument("role", choices=pki.ROLES, help="what the certificate is for")
    issue.add_argument("name", help="certificate CN: the node, admin or server name")
    issue.add_argument("--dir", default=DEFAULT_CA_DIR, help=f"the CA folder (default {DEFAULT_CA_DIR})")
    issue.add_argument("--out", help="path prefix for PREFIX.pem/PREFIX.key (default DIR/NAME)")
    issue.add_argument("--san", action="append", default=[], metavar="NAME|IP",
                       help="server certificates: another name or address (repeatable)")
    return _run


def _run(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    if args.action == "init":
        made = pki.init_site(directory, server_name=args.server_name, san=args.san,
                             admin_name=args.admin_name)
        for what, files in made.items():
            print(f"{what}: {files.cert} {files.key}")
        return EXIT_OK
    files = pki.issue(directory, args.role, args.name,
                      out=Path(args.out) if args.out else None, san=args.san)
    print(f"{args.role} {args.name}: {files.cert} {files.key}")
    return EXIT_OK
