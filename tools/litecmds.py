"""``litefile``, ``litetree`` and ``lslite``: xCAT's statelite listing commands (reference §7.1).

Each reads the tables once, expands the noderange and prints every node's plan in xCAT's
exact format. ``litefile`` reads only the litefile rows (as xCAT's does): a bad litetree or
statemnt variable does not hide a node's litefile list. ``litetree``/``lslite`` print every
part of a node they can and name each row that fails (xCAT prints ``UNDEFINED`` there). Each
failure is one stderr line naming the node; the others are still printed and the exit status
is 1. ``litefile`` also takes an image name (what xCAT calls ``ilitefile``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

from litefs.tools.common import EXIT_FAILED, EXIT_OK, Parser, add_db_option, run_main
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from litefs import db
from litefs.errors import LitefsError, NoderangeError, UsageError
from litefs.noderange import Universe, expand, read_noderange_file
from litefs.plan import Plan
from litefs.planner import (
    Snapshot,
    image_for_node,
    image_lslite_lines,
    litefile_plan_for_node,
    load_snapshot,
    lslite_lines,
    plan_for_image,
    plan_parts_for_node,
    xcat_litefile_lines,
    xcat_litetree_lines,
)


def open_snapshot(url: str | None) -> Snapshot:
    """Open the database named by ``--db`` (or the default), check its schema, read it."""
    # must_exist: a read on a mistyped SQLite path must not leave an empty database behind.
    engine: Engine = db.open_engine(url, must_exist=True)
    try:
        db.require_schema(engine)
        return load_snapshot(engine)
    except DBAPIError as exc:  # e.g. the server went away between connect and read
        raise LitefsError(
            f"cannot read the tables from {db.shown(engine.url)}: "
            f"{str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else exc}"
        ) from None
    finally:
        engine.dispose()


def image_known(snap: Snapshot, name: str) -> bool:
    """True if ``name`` is an osimage, a litefile/litetree row names it, or a node boots it.

    xCAT's ``ilitefile`` takes any name; litefs wants some sign the image exists so a typo
    is an error, but an image that nodes use without an osimage row (the legacy
    ``<os>-<arch>-statelite-<profile>`` name) must still be listable.
    """
    if name in snap.osimage:
        return True
    if any((r.get("image") or "").strip() == name for r in (*snap.litefile, *snap.litetree)):
        return True
    for node in snap.nodes:
        try:
            if image_for_node(snap, node) == name:
                return True
        except LitefsError:
            continue
    return False


def _clip(text: str, limit: int = 60) -> str:
    """A user's argument shortened for an error line (a 10,000-character one stays one line)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def universe(snap: Snapshot) -> Universe:
    """The noderange universe; an all-digits atom gets ``$XCAT_NODE_PREFIX``/``SUFFIX`` as in
    xCAT (default prefix ``node``: ``10-12`` means node10-node12)."""
    return snap.universe(
        digit_prefix=os.environ.get("XCAT_NODE_PREFIX", "node"),
        digit_suffix=os.environ.get("XCAT_NODE_SUFFIX", ""),
        read_file=read_noderange_file,  # ^file is for the local command line only
    )


def relevant(prog: str, warnings: tuple[str, ...]) -> list[str]:
    """The warnings about what ``prog`` prints: litefile rows for ``litefile``, litetree rows
    for ``litetree``, all of them for ``lslite`` (which shows every table)."""
    if prog in ("litefile", "litetree"):
        return [w for w in warnings if w.startswith(prog + " ")]
    return list(warnings)


def _parts(prog: str, snap: Snapshot, node: str) -> tuple[Plan, list[str]]:
    """What ``prog`` can show of ``node`` and the messages of the parts it cannot."""
    if prog == "litefile":
        return litefile_plan_for_node(snap, node), []
    plan, errors = plan_parts_for_node(snap, node)
    if prog == "litetree":  # xCAT's litetree does not read the statelite table either
        errors = [e for e in errors if not e.startswith("statelite ")]
    return plan, errors


def _each_node(
    prog: str, snap: Snapshot, nodes: list[str], show: Callable[[Plan], list[str]]
) -> int:
    status = EXIT_OK
    for node in nodes:
        try:
            plan, errors = _parts(prog, snap, node)
        except LitefsError as exc:
            print(f"{prog}: {node}: {exc}", file=sys.stderr, flush=True)
            status = EXIT_FAILED
            continue
        for error in errors:
            print(f"{prog}: {node}: {error}", file=sys.stderr, flush=True)
            status = EXIT_FAILED
        for warning in relevant(prog, plan.warnings):
            print(f"{prog}: {node}: warning: {warning}", file=sys.stderr)
        out = show(plan)
        if out:
            sys.stdout.write("\n".join(out) + "\n")
    sys.stdout.flush()
    return status


def _litefile(argv: list[str]) -> int:
    p = Parser(
        prog="litefile",
        description="List the litefile entries (option and path) of each node, or of an image, "
        "after row precedence, as xCAT prints them.",
    )
    p.add_argument("target", metavar="noderange|image", help="nodes (xCAT noderange) or an osimage")
    add_db_option(p)
    args = p.parse_args(argv)
    snap = open_snapshot(args.db)
    try:
        nodes = expand(args.target, universe(snap))
    except NoderangeError as exc:
        if not image_known(snap, args.target):
            if "," in args.target:
                raise
            raise NoderangeError(f"{exc}; no osimage is named {_clip(args.target)!r} either") from None
        plan = plan_for_image(snap, args.target)
        for warning in relevant("litefile", plan.warnings):
            print(f"litefile: {args.target}: warning: {warning}", file=sys.stderr)
        sys.stdout.write("".join(line + "\n" for line in xcat_litefile_lines(plan)))
        return EXIT_OK
    return _each_node("litefile", snap, nodes, xcat_litefile_lines)


def _litetree(argv: list[str]) -> int:
    p = Parser(
        prog="litetree",
        description="List the litetree directories of each node in priority order, "
        "variables substituted, as xCAT prints them.",
    )
    p.add_argument("noderange", help="nodes (xCAT noderange)")
    add_db_option(p)
    args = p.parse_args(argv)
    snap = open_snapshot(args.db)
    nodes = expand(args.noderange, universe(snap))
    return _each_node("litetree", snap, nodes, xcat_litetree_lines)


def _lslite(argv: list[str]) -> int:
    p = Parser(
        prog="lslite",
        usage="lslite [-h] [-V] [-i IMAGE] | [noderange]",
        description="Summarise the statelite set-up (statelite, litefile and litetree rows) "
        "of each node, or list an osimage's litefile entries.",
    )
    p.add_argument("-V", "--verbose", action="store_true", help="verbose mode (accepted)")
    p.add_argument("-i", dest="image", metavar="IMAGE", help="list this osimage's litefile entries")
    p.add_argument("noderange", nargs="?", help="nodes (xCAT noderange)")
    p.add_argument("--json", action="store_true",
                   help="one JSON document on stdout instead of xCAT's text (for scripts)")
    add_db_option(p)
    args = p.parse_args(argv)
    if args.image and args.noderange:
        raise UsageError("give either -i IMAGE or a noderange, not both (see --help)")
    if not args.image and not args.noderange:
        raise UsageError("give -i IMAGE or a noderange (see 'lslite --help')")
    snap = open_snapshot(args.db)
    if args.image:
        if args.image not in snap.osimage:
            raise LitefsError(f"The osimage named '{args.image}' is not defined.")
        plan = plan_for_image(snap, args.image)
        if args.json:
            print(json.dumps({"image": args.image, "litefile": _litefile_json(plan)}, indent=1))
            return EXIT_OK
        sys.stdout.write("".join(line + "\n" for line in image_lslite_lines(plan)))
        return EXIT_OK
    nodes = expand(args.noderange, universe(snap))
    if args.json:
        return _lslite_json(snap, nodes)
    return _each_node("lslite", snap, nodes, lslite_lines)


def _litefile_json(plan: Plan) -> list[dict[str, str]]:
    return [{"path": path, "option": option}
            for path, option in sorted((r.table_path, r.option) for r in plan.rules)]


def _lslite_json(snap: Snapshot, nodes: list[str]) -> int:
    """``lslite --json``: the same three tables per node, as one document; a node whose plan
    fails is listed under "errors" (and on stderr) so a script sees every node."""
    status, out, errors = EXIT_OK, [], {}
    for node in nodes:
        try:
            plan, bad = plan_parts_for_node(snap, node)
        except LitefsError as exc:
            print(f"lslite: {node}: {exc}", file=sys.stderr, flush=True)
            errors[node] = str(exc)
            status = EXIT_FAILED
            continue
        if bad:
            for error in bad:
                print(f"lslite: {node}: {error}", file=sys.stderr, flush=True)
            errors[node] = "; ".join(bad)
            status = EXIT_FAILED
        out.append({
            "node": plan.node, "image": plan.image, "statemnt": plan.statemnt or None,
            "litefile": _litefile_json(plan),
            "litetree": [{"priority": s.priority, "directory": s.directory} for s in plan.sources],
            "warnings": list(plan.warnings),
        })
    print(json.dumps({"nodes": out, "errors": errors}, indent=1))
    return status


def litefile_main(argv: list[str] | None = None) -> int:
    return run_main("litefile", _litefile, argv)


def litetree_main(argv: list[str] | None = None) -> int:
    return run_main("litetree", _litetree, argv)


def lslite_main(argv: list[str] | None = None) -> int:
    return run_main("lslite", _lslite, argv)


if __name__ == "__main__":
    sys.exit(litefile_main())
