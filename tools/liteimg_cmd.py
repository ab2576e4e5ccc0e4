"""``liteimg``: prepare an image for stock xCAT statelite nodes, or take the preparation out.

xCAT's command line and messages (reference §6.1): ``liteimg <imagename>`` or the legacy
``liteimg -o OS -a ARCH -p PROFILE`` (image ``<os>-<arch>-statelite-<profile>``, added to the
osimage table when missing) works on ``<rootimgdir>/rootimg``; ``-V`` prints every action;
``--undo`` (litefs) restores the image as it was before liteimg. The work itself is planned and
done by :mod:`litefs.liteimg`; this module only finds the image and its plan in the tables.
Of xCAT's other liteimg steps (reference §6.2: fresh ``/xcatpost``, ``fstab`` rw->ro, root's
``shadow`` line, synclists, ``tmp/dracut.*``, installing ``rc.statelite``, packing a ramdisk
image) none is done: they belong to building the image (genimage, packimage), not to the
statelite layout, and an ``etc/init.d/statelite`` the image has is left in place.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from litefs.tools.common import Parser, add_db_option, run_main
from sqlalchemy import Connection, insert, select

from litefs import db, liteimg
from litefs.errors import LiteimgError, UsageError
from litefs.planner import image_plan
from litefs.schema import TABLES, active
from litefs.wellknown import version

HELP = (
    "liteimg -h # this help message\n"
    "liteimg -v # version\n"
    "liteimg -V # verbose\n"
    "liteimg [-p profile] [-a architecture] [-o OS]\n"
    "liteimg imagename\n"
    "liteimg --undo imagename # restore the image as it was before liteimg\n"
    "liteimg --dryrun [-V] [--json] imagename # list the actions, change nothing"
)
#: statelite.pm prints a slightly different usage when called with no argument at all.
NOARGS_HELP = HELP.replace("liteimg [-p profile] [-a architecture] [-o OS]",
                           "liteimg -p <profile> -a <architecture> -o <OS>")


def _parser() -> Parser:
    p = Parser(
        prog="liteimg",
        description="Write xCAT's statelite link layout into an image (or --undo it).",
        add_help=False,
    )
    p.add_argument("-h", "--help", action="store_true", help="this help message")
    p.add_argument("-v", "--version", action="store_true", help="print the version")
    p.add_argument("-V", "--verbose", action="store_true", help="print every action")
    p.add_argument("--undo", action="store_true", help="restore the image from .default")
    p.add_argument("--dryrun", action="store_true",
                   help="list the actions that would be taken and change nothing (xCAT's spelling)")
    p.add_argument("--json", action="store_true",
                   help="with -V or --dryrun: print the actions as one JSON object (for scripts)")
    p.add_argument("-o", "--osver", default=None, help="OS version (legacy form)")
    p.add_argument("-a", "--arch", default=None, help="architecture (legacy form)")
    p.add_argument("-p", "--profile", default=None, help="profile (legacy form)")
    p.add_argument("-t", "--rootfstype", choices=("nfs", "ramdisk"), default=None)
    add_db_option(p)
    p.add_argument("imagename", nargs="?", default=None, help="osimage name")
    return p


def _row(conn: Connection, table: str, key: str, value: str) -> dict[str, str | None] | None:
    t = TABLES[table]
    r = conn.execute(select(t).where(t.c[key] == value, active(t))).mappings().first()
    return dict(r) if r is not None else None


def locate(conn: Connection, args: object) -> tuple[str, str, str | None]:
    """(image name, rootimg directory, rootfstype) as xCAT's liteimg finds them."""
    site = _row(conn, "site", "key", "installdir")
    installdir = ((site or {}).get("value") or "").strip() or "/install"
    image = getattr(args, "imagename", None)
    osver, arch, profile = (getattr(args, n) for n in ("osver", "arch", "profile"))
    rootimgdir = None
    rootfstype = getattr(args, "rootfstype", None)
    if image:
        if osver or arch or profile:
            # xCAT reports this as an error (errorcode 1), not a usage error.
            raise LiteimgError("-o, -p and -a options are not allowed when a image name is specified.")
        row = _row(conn, "osimage", "imagename", image)
        if row is None:
            raise LiteimgError(f"Cannot find image '{image}' from the osimage table.")
        if "statelite" not in (row.get("provmethod") or ""):
            raise LiteimgError(
                "Please make sure that osimage.provmethod is set to statelite before calling "
                "this command."
            )
        osver, arch, profile = row.get("osvers"), row.get("osarch"), row.get("profile")
        rootfstype = row.get("rootfstype")
        lrow = _row(conn, "linuximage", "imagename", image)
        rootimgdir = ((lrow or {}).get("rootimgdir") or "").strip() or None
    if not (osver and arch and profile):
        raise LiteimgError(
            "osimage.osvers, osimage.osarch, and osimage.profile and must be specified for the "
            f"image {image or ''} in the database, or you must specify -o os -p profile -a arch."
        )
    if not image:
        image = f"{osver}-{arch}-statelite-{profile}"
        if _row(conn, "osimage", "imagename", image) is None:
            conn.execute(
                insert(TABLES["osimage"]).values(
                    imagename=image, profile=profile, imagetype="linux", provmethod="statelite",
                    rootfstype=rootfstype or "nfs", osvers=osver, osarch=arch,
                )
            )
    if rootimgdir is None:
        rootimgdir = f"{installdir}/netboot/{osver}/{arch}/{profile}"
    return image, rootimgdir.rstrip("/") + "/rootimg", rootfstype


def _body(argv: list[str]) -> int:
    parser = _parser()
    if not argv:
        print(NOARGS_HELP)
        return 0
    args = parser.parse_args(argv)
    if args.help:
        print(HELP)
        return 0
    if args.version:
        print(f"liteimg (litefs {version()})")
        return 0
    if not args.imagename and not (args.osver or args.arch or args.profile):
        raise UsageError("give an image name, or -o OS -a ARCH -p PROFILE")
    engine = db.open_engine(args.db)
    try:
        db.require_schema(engine)
        with db.write(engine) as conn:
            image, rootimg, rootfstype = locate(conn, args)
        actions: list[str] = []
        if args.json:
            echo: Callable[[str], None] | None = actions.append  # collected, printed as JSON
        elif args.verbose or args.dryrun:
            echo = lambda line: print(line, flush=True)  # noqa: E731
        else:
            echo = None
        say = (lambda line: None) if args.json else (lambda line: print(line, flush=True))
        plan = None if args.undo else image_plan(engine, image)
        for w in plan.warnings if plan is not None else ():
            print(f"liteimg: warning: {w}", file=sys.stderr)
        if args.dryrun:
            # Plan against the image as it is, apply nothing: the same actions -V would print.
            liteimg.require_rootimg(rootimg)
            tree, prev = liteimg.DirTree(rootimg), liteimg.read_state(rootimg)
            lp = (liteimg.plan_undo(tree, prev) if plan is None else
                  liteimg.plan_liteimg(image, liteimg.entries_from_plan(plan), tree, prev))
            for a in lp.actions:
                if echo is not None:
                    echo(a.describe(rootimg))
            warnings: list[str] = []
        elif plan is None:
            say(f"Modifying {rootimg} ...")
            warnings = liteimg.run_undo(rootimg, echo)
        else:
            say(f"Modifying {rootimg} ...")
            warnings = liteimg.run_liteimg(image, plan, rootimg, echo)
            if rootfstype == "ramdisk":
                warnings.append(
                    "rootfstype=ramdisk: litefs does not pack rootimg-statelite.gz; use packimage"
                )
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps({"image": image, "rootimg": rootimg, "undo": args.undo,
                          "dryrun": args.dryrun, "actions": actions, "warnings": warnings},
                         indent=1))
        for w in warnings:
            print(f"liteimg: warning: {w}", file=sys.stderr)
        return 0
    for w in warnings:
        print(f"liteimg: warning: {w}", file=sys.stderr)
    if not args.dryrun:
        print(f"Modifying {rootimg} done.")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main("liteimg", _body, argv)


if __name__ == "__main__":
    sys.exit(main())
