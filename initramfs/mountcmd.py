"""``litefs mount | umount | refresh``: the node's side of the FUSE view from the command line.

``mount`` takes the plan from a file (``--plan``, what the boot hook passes) or from the
database (``--node``, on the MN), and the layer directories, checks all of them before touching
anything (one line and exit 1 when a directory is missing or unwritable), and mounts the merged
view. ``refresh`` tells a running mount that image or source content changed (what a mountd
announcement triggers). The boot hook pre-starts ``mount`` (:mod:`.premount`), so this module
imports what the mount needs and the database layer only when ``--node`` asks for it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from litefs.tools.common import EXIT_OK, add_db_option

from litefs.errors import MountError, PlanError, UsageError
from litefs.fs import control
from litefs.fs.layers import LayerSet
from litefs.fs.mount import MountConfig, serve, umount
from litefs.plan import Plan, Source
from litefs.resolve import resolve

Run = Callable[[argparse.Namespace], int]


# --- plan and layers ---------------------------------------------------------------------


def add_plan_options(p: argparse.ArgumentParser, node_positional: bool = False) -> None:
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


def _meta_exec(plan_fd: int, tmp_fd: int) -> tuple[str, list[str], dict[str, str]]:
    """(program, argv, environment) of the meta writer."""
    # argv[0] "@..." as the daemon's own: systemd leaves it alone at switch_root;
    # PYTHONEXECUTABLE lets python find its venv although argv[0] does not name it.
    args = ["-m", "litefs.fs.meta_writer", str(plan_fd), str(tmp_fd)]
    env = {**os.environ, "PYTHONEXECUTABLE": sys.executable}
    loader = os.environ.get("LITEFS_LOADER")
    if loader:
        # The image's python run through the image's loader (the boot hook's
        # node_runtime): the initramfs has no loader at the path the ELF names.
        return loader, ["@litefs-meta", sys.executable, *args], env
    return sys.executable, ["@litefs-meta", *args], env


def write_meta(plan: Plan, layers: LayerSet, spawn: bool = False) -> None:
    """``/.statelite/litefile``, ``litetree`` and ``statelite.log`` in the tmpfs layer.

    Rendered by the planner (xCAT's formats) in a process of its own, so the daemon never
    carries the database layer the planner imports and the mount does not wait for it (the
    files appear a moment after the view is ready). That process execs
    ``litefs.fs.meta_writer`` and this returns only once it has, so no process but the
    daemon ever has the daemon's command line after the mount is ready (``serve`` runs this
    in the calling process while the daemon it forked mounts, and returns after it).

    ``spawn``: the caller exits once the mount is ready (``litefs mount`` without
    ``--foreground``), so the writer may be its child: ``posix_spawn`` (no copy of this
    process, back once the writer runs). Otherwise a detached grandchild, which nobody has to
    reap late."""
    tmp = layers.uppers.get("tmpfs")
    if tmp is None or layers.read_only:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    plan_fd = os.memfd_create("litefs-plan", 0)  # not CLOEXEC: the writer reads it
    os.write(plan_fd, plan.to_json().encode())
    os.lseek(plan_fd, 0, os.SEEK_SET)
    if spawn:
        try:
            os.set_inheritable(tmp.fd, True)
            try:
                os.posix_spawn(*_meta_exec(plan_fd, tmp.fd))
            finally:
                os.set_inheritable(tmp.fd, False)
        except OSError as exc:
            print(f"litefs: cannot write /.statelite/litefile in {tmp.path}: {exc}", file=sys.stderr)
        finally:
            os.close(plan_fd)
        return
    rfd, wfd = os.pipe()  # close-on-exec: EOF once the writer has exec'd (or died)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(rfd)
            if os.fork() == 0:  # the writer; its parent exits at once, so nobody reaps it late
                os.set_inheritable(tmp.fd, True)
                os.set_inheritable(plan_fd, True)
                os.execve(*_meta_exec(plan_fd, tmp.fd))
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
    add_plan_options(parser)
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
    # The meta files are written alongside the daemon's mount, not before it.
    return serve(plan, layers, cfg, meta=lambda: write_meta(plan, layers, spawn=not args.foreground))


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
