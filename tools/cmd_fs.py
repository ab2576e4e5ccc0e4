"""``litefs explain | inspect``: a node's FUSE view looked at from the MN.

``explain`` answers "what does this node see at this path, and why" without mounting.
``inspect`` mounts a node's effective tree read-only on the MN. The node's own commands
(``mount``, ``umount``, ``refresh``) are :mod:`litefs.initramfs.mountcmd`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable

from litefs.initramfs.mountcmd import add_plan_options, load_plan, source_dirs
from litefs.tools.common import EXIT_OK

from litefs.errors import MountError, UsageError
from litefs.fs import native
from litefs.fs.layers import LayerSet
from litefs.fs.mount import MountConfig, serve
from litefs.fs.view import Entry, View, rule_text
from litefs.names import check_node_name
from litefs.plan import Plan
from litefs.resolve import normalise_path, resolve

Run = Callable[[argparse.Namespace], int]


# --- explain / inspect -------------------------------------------------------------------


def setup_explain(parser: argparse.ArgumentParser) -> Run:
    parser.add_argument("node", help="node name (as in nodelist)")
    parser.add_argument("path", help="absolute path on the node, e.g. /etc/motd")
    add_plan_options(parser, node_positional=True)
    parser.add_argument("--image", metavar="DIR", help="also say which layer has the path in this image")
    parser.add_argument("--source", metavar="DIR", action="append", help="source directories, in plan order")
    parser.add_argument("--source-root", metavar="DIR", help="map sources server:/path to DIR/<server>/<path>")
    parser.add_argument("--persistent", metavar="DIR", help="the node's persistent store, if reachable")
    parser.add_argument("--json", action="store_true", help="one JSON object (for scripts)")
    return run_explain


def run_explain(args: argparse.Namespace) -> int:
    plan = load_plan(args.plan, args.node, args.db)
    try:
        path = normalise_path(args.path)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    res = resolve(plan, path)
    # One set of facts, printed as text for people or as JSON for scripts (--json).
    doc: dict[str, object] = {
        "node": plan.node or args.node, "path": path, "rule": rule_text(res.rule),
        "listed_ancestor": res.rule.table_path if res.rule is not None and res.rule.path != path else None,
        "writable": bool(res.upper), "upper": res.upper or None,
    }
    out = [f"node:   {doc['node']}", f"path:   {path}", f"rule:   {doc['rule']}"]
    if doc["listed_ancestor"]:
        out.append(f"        (nearest listed ancestor: {doc['listed_ancestor']})")
    access = "read-write, writes go to the " + res.upper + " layer" if res.upper else "read-only (EROFS)"
    out.append(f"access: {access}")
    names, layer_docs = [], []
    for layer in res.layers:
        if layer.kind == "source":
            s = plan.sources[layer.index]
            names.append(f"{layer} ({s.directory} at {s.mountpoint})")
            layer_docs.append({"layer": str(layer), "directory": s.directory,
                               "mountpoint": s.mountpoint})
        else:
            names.append(str(layer))
            layer_docs.append({"layer": str(layer)})
    doc["layers"] = layer_docs
    out.append("layers: " + " > ".join(names))
    folder = native.kernel_folder(plan, path)
    doc["kernel_folder"] = folder.path if folder is not None else None
    if folder is not None:
        how = ("a bind of its folder in the tmpfs layer where no lower layer has content there, "
               "else a kernel overlay of it over the lower layers") if res.upper == "tmpfs" else (
               f"a bind of its folder in the {res.upper} layer where no lower layer has content there, "
               "else FUSE (no overlay on that store)")
        out.append(f"kernel: with --native-writes {folder.path} is served by the kernel ({how}); "
                   "below it there are no provenance xattrs (user.litefs.origin, user.litefs.rule)")
    if args.image:
        sources = source_dirs(plan, args.source, args.source_root) if (args.source or args.source_root) else []
        layers = LayerSet(args.image, sources, persistent=args.persistent, read_only=True)
        if not sources and plan.sources:
            out.append("        (sources not given: only the image and persistent store were searched)")
            doc["sources_searched"] = False
            view = View(_without_sources(plan), layers)
        else:
            view = View(plan, layers)
        entry = _locate(view, path)
        doc["origin"] = view.origin(entry) if entry is not None else None
        out.append("origin: " + (view.origin(entry) if entry is not None else "absent (no layer has it)"))
        layers.close()
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(doc, indent=1) + "\n")
    else:
        sys.stdout.write("\n".join(out) + "\n")
    return EXIT_OK


def _without_sources(plan: Plan) -> Plan:
    return Plan(image=plan.image, rules=plan.rules, node=plan.node, statemnt=plan.statemnt)


def _locate(view: View, path: str) -> Entry | None:
    entry = view.root()
    if path == "/":
        return entry
    cur = ""
    for part in path.strip("/").split("/"):
        cur += "/" + part
        entry = view.locate(cur, entry)
        if entry is None:
            return None
    return entry


def setup_inspect(parser: argparse.ArgumentParser) -> Run:
    parser.add_argument("node", help="node name (as in nodelist)")
    parser.add_argument("mountpoint", metavar="MNT", help="where to mount the node's tree read-only")
    add_plan_options(parser, node_positional=True)
    parser.add_argument("--image", metavar="DIR", required=True, help="the node's image root")
    parser.add_argument("--source", metavar="DIR", action="append", help="source directories, in plan order")
    parser.add_argument(
        "--source-root",
        metavar="DIR",
        help="map sources server:/path to DIR/<server>/<path> (default: the path itself on this host)",
    )
    parser.add_argument(
        "--persistent", metavar="DIR", help="the node's persistent store (default: <statemnt path>/<node> if here)"
    )
    parser.add_argument("--foreground", "-f", action="store_true")
    parser.add_argument("--log", metavar="FILE")
    return run_inspect


def run_inspect(args: argparse.Namespace) -> int:
    # The name is joined into <statemnt>/<node>: '../state/n02' would mount n02's store.
    check_node_name(args.node)
    plan = load_plan(args.plan, args.node, args.db)
    if args.source or args.source_root:
        sources = source_dirs(plan, args.source, args.source_root)
    else:
        sources = [s.path for s in plan.sources]  # on the MN the litetree paths are local
    persistent = args.persistent
    if persistent is None and plan.statemnt:
        spath = plan.statemnt.split(":", 1)[-1]
        cand = os.path.join(spath, plan.node or args.node)
        if os.path.isdir(cand):
            persistent = cand
        else:
            print(f"litefs inspect: persistent store {cand} not reachable here; showing seeds only", file=sys.stderr)
    missing = [d for d in sources if not os.path.isdir(d)]
    if missing:
        raise MountError(f"source directory {missing[0]} is not here; give --source or --source-root")
    # An empty tmpfs layer: what a freshly booted node has.
    tmpfs = tempfile.mkdtemp(prefix="litefs-inspect-")
    layers = LayerSet(args.image, sources, tmpfs=tmpfs, persistent=persistent, read_only=True)
    cfg = MountConfig(
        mountpoint=args.mountpoint,
        fsname=f"litefs-inspect:{plan.node or args.node}",
        foreground=args.foreground,
        log_file=args.log,
        remove_after=(tmpfs,),
    )
    return serve(plan, layers, cfg)
