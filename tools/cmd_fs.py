"""``litefs mount | umount | explain | inspect | refresh``: the FUSE view from the command line.

``mount`` takes the plan from a file (``--plan``) or from the database (``--node``) and the
layer directories, checks all of them before touching anything (one line and exit 1 when a
directory is missing or unwritable), and mounts the merged view. ``explain`` answers "what
does this node see at this path, and why" without mounting. ``inspect`` mounts a node's
effective tree read-only on the MN. ``refresh`` tells a running mount that image or source
content changed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable

from litefs.tools.common import EXIT_OK, add_db_option

from litefs.errors import MountError, PlanError, UsageError
from litefs.fs import control
from litefs.fs.layers import LayerSet
from litefs.fs.mount import MountConfig, serve, umount
from litefs.fs.view import Entry, View, rule_text
from litefs.names import check_node_name
from litefs.plan import Plan, Source
from litefs.resolve import normalise_path, resolve

Run = Callable[[argparse.Namespace], int]


# --- plan and layers ---------------------------------------------------------------------


def _add_plan_options(p: argparse.ArgumentParser, node_positional: bool = False) -> None:
    p.add_argument("--plan", metavar="FILE", help="plan JSON (as 'litefs plan NODE --json' prints)")
    if not node_positional:
        p.add_argument("--node", metavar="N", help="read node N's plan from the database")
    add_db_option(p)


def load_plan(plan_file: str | None, node: str | None, db: str | None) -> Plan:
    if plan_file:
        try:
            with open(plan_file, "rb") as f:
                text = f.read()
        except OSError as exc:
            raise PlanError(f"cannot read plan {plan_file}: {exc.strerror}") from None
        plan = Plan.from_json(text)
        if node and plan.node and plan.node != node:
            raise PlanError(f"plan {plan_file} is for node {plan.node}, not {node}")
        return plan
    if not node:
        raise UsageError("give --plan FILE or a node (--node N) to read from the database")
    from litefs import db as litedb  # the database layer only when asked for
    from litefs.planner import node_plan

    engine = litedb.open_engine(db)
    try:
        litedb.require_schema(engine)
        return node_plan(engine, node)
    finally:
        engine.dispose()


def source_dirs(plan: Plan, sources: list[str] | None, source_root: str | None) -> list[str]:
    """Local directories for the plan's litetree sources, in plan order."""
    if sources:
        if len(sources) != len(plan.sources):
            raise UsageError(
                f"the plan has {len(plan.sources)} litetree source(s) but {len(sources)} --source "
                "given; give one --source per source in plan order, or --source-root"
            )
        return sources
    if source_root is None:
        if plan.sources:
            raise UsageError(
                f"the plan has {len(plan.sources)} litetree source(s); give --source DIR for each "
                "or --source-root DIR"
            )
        return []
    return [source_under(source_root, s) for s in plan.sources]


def source_under(root: str, s: Source) -> str:
    """``server:/path`` -> ``ROOT/<server>/<path>``, as the initramfs mounts it under
    ``/.statelite/mnt``; a server-less directory is ``ROOT/<path>``."""
    rel = s.path.lstrip("/")
    if s.server is None:
        return os.path.join(root, rel)
    return os.path.join(root, s.server, rel)


def _check_uppers(plan: Plan, args: argparse.Namespace) -> None:
    needed = {resolve(plan, r.path).upper for r in plan.rules} - {None}
    for kind in sorted(needed):
        if getattr(args, kind, None) is None:
            users = [r.table_path for r in plan.rules if resolve(plan, r.path).upper == kind][:3]
            raise MountError(
                f"the plan has {kind} rules ({', '.join(users)}...) but no --{kind} DIR was given"
            )


def write_meta(plan: Plan, layers: LayerSet) -> None:
    """``/.statelite/litefile``, ``litetree`` and ``statelite.log`` in the tmpfs layer.

    Rendered by the planner (xCAT's formats) in a detached grandchild process, so the daemon
    never carries the database layer the planner imports and the mount does not wait for it
    (the files appear a moment after the view is ready). The grandchild execs
    ``litefs.fs.meta_writer`` and this returns only once it has, so no process but the
    daemon ever has the daemon's command line after the mount is ready."""
    tmp = layers.uppers.get("tmpfs")
    if tmp is None or layers.read_only:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    plan_fd = os.memfd_create("litefs-plan", 0)  # not CLOEXEC: the writer reads it
    os.write(plan_fd, plan.to_json().encode())
    os.lseek(plan_fd, 0, os.SEEK_SET)
    rfd, wfd = os.pipe()  # close-on-exec: EOF once the writer has exec'd (or died)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(rfd)
            if os.fork() == 0:  # the writer; its parent exits at once, so nobody reaps it late
                os.set_inheritable(tmp.fd, True)
                os.set_inheritable(plan_fd, True)
                # argv[0] "@..." as the daemon's own: systemd leaves it alone at switch_root;
                # PYTHONEXECUTABLE lets python find its venv although argv[0] does not name it.
                argv = ["@litefs-meta", "-m", "litefs.fs.meta_writer", str(plan_fd), str(tmp.fd)]
                os.execve(sys.executable, argv, {**os.environ, "PYTHONEXECUTABLE": sys.executable})
            code = 0
        except BaseException as exc:
            print(f"litefs: cannot write /.statelite/litefile in {tmp.path}: {exc}", file=sys.stderr)
        finally:
            os._exit(code)
    os.close(wfd)
    os.close(plan_fd)
    os.waitpid(pid, 0)
    with os.fdopen(rfd, "rb") as r:
        r.read()  # the grandchild holds wfd until its exec


# --- mount -------------------------------------------------------------------------------


def setup_mount(parser: argparse.ArgumentParser) -> Run:
    parser.add_argument("mountpoint", metavar="MNT", help="the empty folder to mount the view on")
    _add_plan_options(parser)
    parser.add_argument("--image", metavar="DIR", required=True, help="the read-only image root")
    parser.add_argument("--tmpfs", metavar="DIR", help="volatile layer (tmpfs family, con)")
    parser.add_argument("--persistent", metavar="DIR", help="the node's persistent store (<statemnt>/<node>)")
    parser.add_argument("--localdisk", metavar="DIR", help="local disk layer (localdisk rules)")
    parser.add_argument(
        "--source", metavar="DIR", action="append", help="a litetree source directory; once per source, in plan order"
    )
    parser.add_argument(
        "--source-root", metavar="DIR", help="map each source server:/path to DIR/<server>/<path>"
    )
    parser.add_argument("--foreground", "-f", action="store_true", help="stay in the foreground")
    parser.add_argument(
        "--bypass",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="bind rule-free image directories over the view (native speed; the boot uses it)",
    )
    parser.add_argument(
        "--native-writes",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="bind writable rule folders that hold nothing in the image or sources (/tmp, ...) "
             "straight from their layer: native speed; renames and links into or out of them "
             "are EXDEV, and they carry no provenance xattrs (litefs explain still answers)",
    )
    parser.add_argument("--fsname", default=None, help="name shown in /proc/mounts (default litefs:<node>)")
    parser.add_argument("--cache-timeout", type=float, default=3600.0, metavar="S", help="kernel entry/attr cache (s)")
    parser.add_argument("--log", metavar="FILE", help="log file (default: stderr in the foreground)")
    parser.add_argument("--kmsg", action="store_true",
                        help="also write warnings and errors to the kernel log (/dev/kmsg), where "
                             "dmesg and, after switch_root, journald show them (the boot does)")
    parser.add_argument("--no-allow-other", action="store_true", help="only the mounting user may access")
    parser.add_argument("--debug", action="store_true", help="verbose log: also every request refused with an errno")
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N", help="pyfuse3 worker tasks (default 1, the fastest)"
    )
    return run_mount


def run_mount(args: argparse.Namespace) -> int:
    plan = load_plan(args.plan, args.node, args.db)
    sources = source_dirs(plan, args.source, args.source_root)
    _check_uppers(plan, args)
    layers = LayerSet(args.image, sources, tmpfs=args.tmpfs, persistent=args.persistent, localdisk=args.localdisk)
    write_meta(plan, layers)
    cfg = MountConfig(
        mountpoint=args.mountpoint,
        fsname=args.fsname or f"litefs:{plan.node or plan.image}",
        allow_other=not args.no_allow_other,
        foreground=args.foreground,
        bypass=args.bypass,
        native_writes=args.native_writes,
        cache_timeout=args.cache_timeout,
        log_file=args.log,
        kmsg=args.kmsg,
        debug=args.debug,
        workers=max(1, args.workers),
    )
    return serve(plan, layers, cfg)


# --- umount / refresh --------------------------------------------------------------------


def setup_umount(parser: argparse.ArgumentParser) -> Run:
    parser.add_argument("mountpoint", metavar="MNT", help="the litefs mount to unmount")

    def run(args: argparse.Namespace) -> int:
        umount(args.mountpoint)
        return EXIT_OK

    return run


def setup_refresh(parser: argparse.ArgumentParser) -> Run:
    parser.add_argument("mountpoint", metavar="MNT", help="the litefs mount to refresh")
    parser.add_argument("paths", metavar="PATH", nargs="*", help="view paths to refresh (default: everything)")
    parser.add_argument(
        "--plan", metavar="FILE", help="switch the running mount to this plan first (lays or lifts --bypass binds)"
    )

    def run(args: argparse.Namespace) -> int:
        if args.plan:
            control.change_plan(args.mountpoint, load_plan(args.plan, None, None))
            if not args.paths:
                return EXIT_OK  # a plan change refreshes everything already
        control.refresh(args.mountpoint, args.paths)
        return EXIT_OK

    return run


# --- explain / inspect -------------------------------------------------------------------


def setup_explain(parser: argparse.ArgumentParser) -> Run:
    parser.add_argument("node", help="node name (as in nodelist)")
    parser.add_argument("path", help="absolute path on the node, e.g. /etc/motd")
    _add_plan_options(parser, node_positional=True)
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
    _add_plan_options(parser, node_positional=True)
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
