"""``litefs image-exec IMAGE -- CMD...``: change an image in place and tell running nodes.

Cookbook §5 (software for running nodes) in one command::

    litefs image-exec debian12-x86_64-statelite-compute -- apt-get install -y htop

runs CMD chrooted in the image's rootimg (``/proc``, ``/sys``, ``/dev`` bound in a private
mount namespace; a ``policy-rc.d`` keeps package scripts from starting daemons in it), then
compares the tree before and after and announces every changed path to the running nodes of
the image, as ``litefs notify IMAGE PATH...`` does (the same mountd request). Because litefs
resolves a path at lookup time, a node then sees the new program and dpkg's database (``dpkg -s
PKG`` works, no reboot) wherever it has not written that path itself: a path the node wrote
(a ``persistent`` or ``rw`` copy) keeps the node's copy, as statelite semantics say.

Unlike genimage this changes the live image: nodes may read a file while it is replaced. dpkg
renames each new file into place, so a reader sees the old file or the new one, never half.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from litefs.initramfs import client
from litefs.mountd import codec
from litefs.mountd.cli import DEFAULT_CA_DIR
from litefs.tools.cmd_notify import admin_connection
from litefs.tools.common import EXIT_FAILED, add_db_option
from litefs.tools.liteimg_cmd import locate

from litefs import db
from litefs.errors import LitefsError, UsageError
from litefs.genimage import build, chroot, treediff

#: Stay well under mountd's 64 KiB request limit (codec.MAX_MESSAGE) per announce.
BATCH_BYTES = codec.MAX_MESSAGE - 4096


def setup_image_exec(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.description = (parser.description or "") + (
        ". Example: litefs image-exec debian12-x86_64-statelite-compute -- apt-get install -y "
        "htop. Nodes see what changed at once; paths a node wrote itself keep its copy.")
    parser.add_argument("image", help="osimage name (its rootimg is changed in place)")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD",
                        help="command to run inside the image, after '--'")
    parser.add_argument("--no-notify", action="store_true",
                        help="change the image only; tell no node (run 'litefs notify' later)")
    parser.add_argument("--server", help="mountd address for the announcement (default: "
                        "its admin socket as root, else localhost:3001)")
    parser.add_argument("--ca-dir", default=DEFAULT_CA_DIR,
                        help="CA folder with ca.pem, admin.pem, admin.key")
    parser.add_argument("--cert", help="admin certificate (default CA_DIR/admin.pem)")
    parser.add_argument("--key", help="admin key (default CA_DIR/admin.key)")
    parser.add_argument("--insecure", action="store_true", help="plain TCP (mountd --insecure)")
    add_db_option(parser)
    return _run


def rootimg_of(image: str, db_url: str | None) -> Path:
    """The image's rootimg as liteimg finds it (osimage/linuximage, site.installdir)."""
    engine = db.open_engine(db_url)
    try:
        db.require_schema(engine)
        with engine.connect() as conn:
            _name, rootimg, _fstype = locate(conn, SimpleNamespace(
                imagename=image, osver=None, arch=None, profile=None, rootfstype=None))
    finally:
        engine.dispose()
    return Path(rootimg)


def announce(args: argparse.Namespace, image: str, paths: list[str]) -> tuple[int, set[str]]:
    """Announce ``paths`` (in batches under mountd's message limit): (targeted, notified)."""
    server, kw = admin_connection(args)
    targeted, notified = 0, set()
    for batch in treediff.batches(paths, BATCH_BYTES) or [[]]:
        reply = client.request_sync(server, codec.AnnounceRequest(target=image,
                                                                  paths=tuple(batch)), **kw)
        targeted = max(targeted, int(reply.get("targeted", 0)))
        notified |= set(reply.get("notified", []))
    return targeted, notified


def _run(args: argparse.Namespace) -> int:
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        raise UsageError("give the command to run after '--', e.g. -- apt-get install -y PKG")
    root = rootimg_of(args.image, args.db)
    chroot.check_root(root)
    try:
        before: treediff.Snapshot | None = treediff.snapshot(root)
    except treediff.TooLarge:
        before = None  # announce everything instead of a list
    # The MN's package cache on the image's apt archive (downloads kept, as genimage does).
    with chroot.no_daemons(root), build.cache_lock(build.DEB_CACHE):
        res = chroot.run(root, cmd, stdin=None, binds=[(build.DEB_CACHE, build.APT_ARCHIVES)])
    build.drop_apt_cache(root)
    try:
        paths = treediff.changed(before, treediff.snapshot(root)) if before is not None else []
    except treediff.TooLarge:
        paths, before = [], None
    if before is not None and not paths:
        print(f"image-exec: {args.image}: nothing changed in {root}")
        return res.returncode
    what = f"{len(paths)} changed path(s)" if before is not None else "everything"
    if args.no_notify:
        print(f"image-exec: {args.image}: {what}; not announced (--no-notify)")
        return res.returncode
    try:
        targeted, notified = announce(args, args.image, paths)
    except (LitefsError, OSError) as exc:
        print(f"image-exec: {args.image}: {what} in the image, but mountd was not told: {exc}; "
              f"run 'litefs notify {args.image}' when mountd is up", file=sys.stderr)
        return res.returncode or EXIT_FAILED
    print(f"image-exec: {args.image}: {what}; {targeted} node(s) targeted, "
          f"{len(notified)} running node(s) notified"
          + (f": {','.join(sorted(notified))}" if notified else ""))
    if res.returncode != 0:
        print(f"image-exec: {' '.join(cmd)} exited {res.returncode}", file=sys.stderr)
    return res.returncode
