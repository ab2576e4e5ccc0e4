"""Boot-time plan fetch: ask mountd for this node's plan and lay it out for the boot hook.

``python -m litefs.initramfs.fetchplan --xcat IP:PORT --node n01 --out /.litefs/statelite``
fetches the plan (retries with exponential backoff, a console line per retry) and writes, in
the node's statelite tmpfs: ``plan.json`` (what ``litefs mount`` reads; it also writes
``/.statelite/litefile`` and ``litetree`` from it) and ``sources``
(``server<TAB>path<TAB>mntopts`` lines the shell hook mounts read-only; server ``-`` marks a
node-local directory) and ``tmpfs.size`` (the checked ``size=`` the hook remounts the tmpfs
layer with; an unusable site value gives the default and a console warning). ``--plan-file`` reads the
plan from a file instead (qemu boots deliver it on a 9p share). On failure it prints the one
console message :data:`FETCH_FAILED` and exits 1; the hook then drops to a shell.

Service-node pools: ``--pool a:3001,b:3001`` (the ``litefs.pool=`` kernel argument nodeset
writes for a pool) lists the servers tried, in order, when ``--xcat`` does not answer; the
watcher then follows the server that answered.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from litefs.errors import LitefsError
from litefs.names import check_node_name
from litefs.plan import Plan
from litefs.tmpfs_size import node_tmpfs_size

from .ready import make_ready_fifo, say_ready
from .tls import node_context

#: The console message when no plan can be had (documented in the README's boot section).
FETCH_FAILED = (
    "FATAL error: could not get the plan for {node} from mountd at {server} after {attempts} "
    "attempts: {reason}. Check that mountd runs on the MN and that the policy table allows "
    "litefile/litetree, then rpower {node} boot"
)


def layout(plan: Plan) -> dict[str, str]:
    """The files the hook needs from ``plan`` (name -> content)."""
    sources = "".join(
        f"{s.server or '-'}\t{s.path}\t{s.mntopts or '-'}\n" for s in plan.sources
    )
    size, _ = node_tmpfs_size(plan.tmpfs_size)
    return {"plan.json": plan.to_json() + "\n", "sources": sources, "tmpfs.size": size + "\n"}


def write_layout(plan: Plan, out: Path) -> None:
    """``plan.json`` and ``sources`` in ``out`` (``litefs mount`` writes litefile/litetree)."""
    for name, text in layout(plan).items():
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)


#: Seconds one server of a pool gets (connect, TLS, answer) before the next one is tried.
POOL_TIMEOUT = 5.0
#: Console line when a server of the pool does not answer and the next one is tried.
POOL_NEXT = "litefs: mountd at {server} does not answer ({reason}); trying {next} (next in the pool)"
POOL_REFUSED = "litefs: no plan from {server} ({reason}); trying {next} (next in the pool)"


def servers(xcat: str, pool: str | None) -> list[str]:
    """``XCAT=`` then each ``litefs.pool=`` address, in order, each once (bounded)."""
    from litefs.hierarchy import MAX_POOL

    names = [xcat.strip(), *[p.strip() for p in (pool or "").split(",")]]
    return list(dict.fromkeys(n for n in names if n))[: MAX_POOL + 1]


def fetch_pool(order: list[str], node: str, retries: int, backoff: float, ca: str | None,
               say: Callable[[str], None]) -> tuple[Plan, str]:
    """The plan from the first server of ``order`` that answers, and that server.

    Each round asks every server once, ``POOL_TIMEOUT`` seconds each, in pool order; rounds
    repeat with backoff up to ``retries`` times, so a node whose first service node is down
    boots from the next one in seconds, and one whose pool is all down still gets the usual
    retries before the FATAL line. A single server keeps the old behaviour (its own retries).
    """
    if len(order) == 1:
        return fetch(order[0], node, retries, backoff, ca, say), order[0]
    from .wire import Backoff, fetch_plan_blocking

    ctx = node_context(ca)
    wait = Backoff(base=max(backoff, 0.0), cap=16.0, attempts=retries)
    reason = ""
    for attempt in range(max(retries, 1)):
        for i, server in enumerate(order):
            try:
                plan = fetch_plan_blocking(server, ssl_context=ctx, backoff=Backoff(attempts=1),
                                           timeout=POOL_TIMEOUT)
            except LitefsError as exc:
                reason = str(exc)
                nxt = order[i + 1] if i + 1 < len(order) else order[0] + " again"
                # A reply with an error code came from a running mountd (a refusal, a plan
                # error); anything else means it is down or unreachable.
                line = POOL_REFUSED if hasattr(exc, "code") else POOL_NEXT
                say(line.format(server=server, reason=exc, next=nxt))
                continue
            if server != order[0]:
                say(f"litefs: plan for {node} from {server}, not from {order[0]} (failover)")
            return plan, server
        if attempt + 1 < retries:
            time.sleep(wait.delay(attempt))
    raise LitefsError(FETCH_FAILED.format(node=node, server=",".join(order), attempts=retries,
                                          reason=reason))


def fetch(xcat: str, node: str, retries: int, backoff: float, ca: str | None,
          say: Callable[[str], None]) -> Plan:
    """The node's plan from mountd at ``xcat`` (``IP:PORT``), TLS-verified when ``ca`` is given."""
    # Not .client: that imports trio, ~50 ms of every boot's critical path (see .wire).
    from .wire import Backoff, fetch_plan_blocking

    ctx = node_context(ca)

    def on_retry(attempt: int, delay: float, exc: BaseException) -> None:
        say(f"litefs: no plan from mountd at {xcat} yet ({exc}); attempt {attempt} of "
            f"{retries}, retrying in {delay:.1f}s")

    try:
        # The node asks for *its own* plan: mountd identifies it by its address.
        return fetch_plan_blocking(
            xcat, ssl_context=ctx, backoff=Backoff(base=max(backoff, 0.0), cap=16.0,
                                                   attempts=retries),
            on_retry=on_retry, timeout=10.0,
        )
    except LitefsError as exc:
        raise LitefsError(FETCH_FAILED.format(node=node, server=xcat, attempts=retries,
                                              reason=exc)) from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="litefs-fetchplan")
    p.add_argument("--node", required=True)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--xcat", help="mountd address IP:PORT (the XCAT= kernel argument)")
    p.add_argument("--pool", default=None,
                   help="more mountd addresses, comma list in order (the litefs.pool= kernel "
                   "argument): tried when XCAT= does not answer")
    p.add_argument("--plan-file", help="read the plan from this file instead of mountd")
    p.add_argument("--ca", default=os.environ.get("LITEFS_CA"),
                   help="site CA certificate; TLS to mountd (default $LITEFS_CA; none: plain)")
    p.add_argument("--watch", metavar="VIEW",
                   help="afterwards, fork into the @litefs-watch subscription for the view on VIEW")
    p.add_argument("--ready", help="(with --watch) fifo made here, in which the watcher says "
                   "'ready' once set up (the hook waits on it)")
    p.add_argument("--watch-log", help="(with --watch) the watcher's log file")
    p.add_argument("--retries", type=int, default=5)
    p.add_argument("--backoff", type=float, default=1.0)
    args = p.parse_args(argv)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    watcher = None
    answered = None
    try:
        check_node_name(args.node)  # NODE= comes from the kernel command line
        if args.watch and args.xcat and not args.plan_file:
            watcher = _start_watcher(args)
        if args.plan_file:
            plan = Plan.from_json(Path(args.plan_file).read_text())
        elif args.xcat:
            plan, args.xcat = fetch_pool(servers(args.xcat, args.pool), args.node, args.retries,
                                         args.backoff, args.ca, say)
        else:
            raise LitefsError("no XCAT=<ip>:<port> and no plan file: nowhere to get the plan")
        if plan.node not in (None, args.node):
            raise LitefsError(f"mountd answered with the plan of {plan.node}, not {args.node}; "
                              "check the hosts table entry for this node's address")
        write_layout(plan, args.out)
        _, size_warning = node_tmpfs_size(plan.tmpfs_size)
        if size_warning:
            say(f"litefs: warning: {size_warning}")
        answered = args.xcat
    except (LitefsError, OSError) as exc:
        say(f"litefs: {exc}")
        return 1
    finally:
        _release_watcher(watcher, answered)
    say(f"litefs: plan for {args.node}: image {plan.image}, {len(plan.rules)} rules, "
        f"{len(plan.sources)} litetree sources")
    return 0


def _start_watcher(args: argparse.Namespace) -> int | None:
    """Fork the watcher now, before the fetch, so that its imports (trio, ~50 ms) overlap the
    fetch instead of following it; it waits for :func:`_release_watcher`. Returns the pipe
    to release it with (None: no watcher)."""
    try:
        ctx = node_context(args.ca)  # loaded now: the CA file goes away with the initramfs
    except LitefsError:
        return None  # the fetch reports the broken CA
    if args.ready:
        try:
            make_ready_fifo(args.ready)  # before the fork: the hook may open it at once
        except OSError as exc:  # the watcher then creates a plain file the hook does not wait on
            print(f"litefs: cannot make {args.ready}: {exc.strerror or exc}", file=sys.stderr)
    rfd, wfd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() != 0:
        os.close(rfd)
        return wfd
    code = 0
    try:
        os.close(wfd)
        os.setsid()
        # Boots are short of CPU while the daemon's Python loads (the longest step): let it
        # go first; our imports still end long before the view is mounted.
        os.nice(10)
        log = os.open(args.watch_log or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        # Everything the watcher needs is loaded before it says "ready" (the hook may
        # switch root then): run() says it only once the view is mounted.
        from litefs.initramfs import watch

        with os.fdopen(rfd, "rb") as r:
            server = r.read().decode(errors="replace").strip()
        if server:  # else the fetch failed: the boot stops, nothing to watch
            code = watch.run(args.watch, server, ctx, args.ready)
    except BaseException:  # the child must never return into the parent's code path
        import traceback

        traceback.print_exc()
        code = 1
        if args.ready:
            say_ready(args.ready)  # the hook must not wait its 30 s for a watcher that died
    os._exit(code)


def _release_watcher(wfd: int | None, server: str | None) -> None:
    """Tell the pre-forked watcher which mountd answered (None: the fetch failed, it exits)."""
    if wfd is None:
        return
    try:
        if server:
            os.write(wfd, server.encode() + b"\n")
    finally:
        os.close(wfd)


if __name__ == "__main__":
    code = main()
    # The hook waits for this process before it mounts the sources and starts the view;
    # tearing down the interpreter (ssl, the plan, litefs) costs that wait ~10-20 ms for
    # nothing: every file is written and closed, so only the console streams need a flush.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
