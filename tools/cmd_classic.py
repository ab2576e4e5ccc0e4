"""``litefs classic-boot``: what would a stock xCAT node do with these tables?

Boots a liteimg'd image the way a stock node's rc.statelite would (:mod:`litefs.classic`), in
a private mount namespace, and prints ``statelite.log``, the console messages and, with
``--tree``, the node's effective tree. The node's plan comes from the tables (``NODE``) or a
plan file (``--plan``, e.g. ``litefs plan n01 --json``); litetree exports are stood in for by
local directories (``--source server:/path=DIR``), the persistent store by ``--persistent``.
Nothing on the host changes except what the node writes to its persistent directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from litefs.tools.common import add_db_option

from litefs.classic import ClassicConfig, classic_boot
from litefs.errors import LitefsError, UsageError
from litefs.plan import Plan


def setup_classic_boot(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.add_argument("node", nargs="?", help="plan this node from the tables")
    parser.add_argument("--plan", metavar="FILE", help="read the node's plan from a JSON file")
    parser.add_argument(
        "--rootimg", metavar="DIR",
        help="the liteimg'd rootimg (default: the node's image's <rootimgdir>/rootimg from the tables)",
    )
    parser.add_argument(
        "--source", metavar="SERVER:/PATH=DIR", action="append", default=[],
        help="a local directory standing for a litetree export (repeatable)",
    )
    parser.add_argument("--persistent", metavar="DIR", help="the node's persistent directory")
    parser.add_argument("--localdisk", metavar="DIR", help="stands for /.sllocal/localmnt")
    parser.add_argument("--tree", action="store_true", help="also print the effective tree")
    parser.add_argument("--json", action="store_true", help="print everything as JSON")
    add_db_option(parser)
    return run


def _plan(args: argparse.Namespace) -> tuple[Plan, str]:
    """The node's plan and its rootimg (``--rootimg``, else found as liteimg finds it)."""
    if args.plan:
        plan = Plan.from_json(Path(args.plan).read_text())
        if not args.rootimg:
            raise UsageError("--plan needs --rootimg DIR")
        return plan, args.rootimg
    if not args.node:
        raise UsageError("give a node (planned from the tables) or --plan FILE")
    from litefs.tools.liteimg_cmd import locate

    from litefs import db
    from litefs.planner import node_plan

    engine = db.open_engine(args.db)
    try:
        db.require_schema(engine)
        plan = node_plan(engine, args.node)
        if args.rootimg:
            return plan, args.rootimg
        with engine.connect() as conn:
            where = argparse.Namespace(imagename=plan.image, osver=None, arch=None, profile=None)
            return plan, locate(conn, where)[1]
    finally:
        engine.dispose()


def _sources(specs: list[str]) -> dict[str, str]:
    out = {}
    for spec in specs:
        key, sep, path = spec.rpartition("=")
        if not sep or not key or not path:
            raise UsageError(f"--source {spec!r}: expected SERVER:/PATH=DIR")
        out[key] = path
    return out


def tree_lines(manifest: dict[str, dict[str, object]]) -> list[str]:
    lines = []
    for path, rec in manifest.items():
        mode = rec.get("mode")
        perm = f"{mode:04o}" if isinstance(mode, int) else "----"
        owner = f"{rec.get('uid', '-')}:{rec.get('gid', '-')}"
        size = rec.get("size", "")
        extra = f" -> {rec['target']}" if "target" in rec else ""
        via = f" (via {rec['link']})" if "link" in rec else ""
        lines.append(f"{rec['kind']:<8} {perm} {owner:<9} {size!s:>8} {path}{extra}{via}")
    return lines


def _check_dirs(args: argparse.Namespace, rootimg: str) -> None:
    """Every directory the boot binds must exist: one line naming the first that does not.

    Without this a missing --persistent surfaced as a mount error from deep inside the
    namespace, after the plan had been read.
    """
    dirs = [("--rootimg", rootimg), ("--persistent", args.persistent),
            ("--localdisk", args.localdisk)]
    dirs += [(f"--source {key}=", path) for key, path in _sources(args.source).items()]
    for flag, path in dirs:
        if path and not Path(path).is_dir():
            raise LitefsError(f"{flag} {path}: no such directory; create it (mkdir -p {path}) "
                              "or give the right path")


def run(args: argparse.Namespace) -> int:
    plan, rootimg = _plan(args)
    _check_dirs(args, rootimg)
    follow = [r.path for r in plan.rules if r.is_link]
    cfg = ClassicConfig.for_plan(
        plan, rootimg, _sources(args.source), persistent=args.persistent,
        localdisk=args.localdisk, follow=follow, manifest=args.tree or args.json,
    )
    result = classic_boot(cfg)
    if args.json:
        print(json.dumps({"log": result.log, "console": result.console,
                          "tree": result.manifest}, indent=1))
        return 0
    for line in result.console:
        print(f"console: {line}", file=sys.stderr)
    print("\n".join(result.log))
    if args.tree:
        print("\n".join(tree_lines(result.manifest)))
    return 0
