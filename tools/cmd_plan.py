"""``litefs plan <node> [--json] [--image IMG]``: print the plan a node would receive.

The text form is for reading (rules with the row that won, sources with their node-side
mount points, statemnt, warnings); ``--json`` prints the exact plan mountd serves. With
``--image`` alone it prints the image's plan (what liteimg uses); with a node and
``--image`` it plans the node as if it booted that image.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from litefs.tools.common import EXIT_OK, add_db_option
from litefs.tools.litecmds import image_known, open_snapshot

from litefs.errors import PlanError, UsageError
from litefs.plan import Plan
from litefs.planner import plan_for_image, plan_for_node


def plan_text(plan: Plan) -> str:
    """A readable rendering of a plan."""
    lines = []
    if plan.node:
        lines.append(f"node:     {plan.node}")
    lines.append(f"image:    {plan.image}")
    if plan.statemnt:
        opts = f"  (mntopts {plan.mntopts})" if plan.mntopts else ""
        lines.append(f"statemnt: {plan.statemnt}{opts}  (the node appends /{plan.node or '<node>'})")
    else:
        lines.append("statemnt: none (no statelite row: persistent paths cannot be kept)")
    lines.append(f"sources:  {len(plan.sources)}")
    for s in plan.sources:
        opts = f"  mntopts={s.mntopts}" if s.mntopts else ""
        lines.append(f"  {s.priority:>6}  {s.directory}  -> {s.mountpoint}{opts}")
    lines.append(f"rules:    {len(plan.rules)}")
    for r in plan.rules:
        lines.append(f"  {r.option:<15} {r.table_path:<40} ({r.image or 'blank'})")
    for w in plan.warnings:
        lines.append(f"warning: {w}")
    return "\n".join(lines) + "\n"


def setup_plan(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.add_argument("node", nargs="?", help="the node to plan")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument(
        "--image", metavar="IMG", help="plan this osimage (alone), or the node as if it booted it"
    )
    add_db_option(parser)
    return run


def run(args: argparse.Namespace) -> int:
    if not args.node and not args.image:
        raise UsageError("give a node, or --image IMG (see 'litefs plan --help')")
    snap = open_snapshot(args.db)
    if args.image and not image_known(snap, args.image):
        # A typo would otherwise print a plan holding only the automatic /etc/mtab row.
        raise PlanError(
            f"no osimage, litefile or litetree row, nor any node uses image {args.image!r}; "
            "check the name ('tabdump osimage' lists the images)"
        )
    if args.node:
        plan = plan_for_node(snap, args.node, image=args.image)
    else:
        plan = plan_for_image(snap, args.image)
    sys.stdout.write(plan.to_json() + "\n" if args.json else plan_text(plan))
    return EXIT_OK
