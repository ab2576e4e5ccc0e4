"""Node-side subscription: mountd's change announcements become refreshes of the running view.

Runs as ``@litefs-watch`` (so it, like the daemon, survives ``switch_root``): the boot-time
plan fetch forks into it once the plan is written (``fetchplan --watch``), which spares a
Python start-up per boot; ``python -m litefs.initramfs.watch`` runs it on its own. It first changes directory into the view's root: the
hook then moves the view onto ``/`` and the initramfs path disappears, but our working
directory keeps pointing at the view, so refreshes go to ``.`` for the life of the node.
Reconnection after a mountd restart is :func:`litefs.initramfs.client.subscribe`'s job.

mountd also sends the node's plan after each subscription and whenever a table edit
changes it; :class:`PlanFollower` swaps it into the running view (as ``litefs refresh
--plan`` does) when it differs from the plan in force, which it first reads from
``plan.json`` beside the ready file (the statelite folder the boot wrote it to).
"""

from __future__ import annotations

import argparse
import os
import select
import ssl
import sys
import time
from pathlib import Path

import trio

from litefs.errors import LitefsError
from litefs.plan import Plan

from .ready import make_ready_fifo as make_ready_fifo
from .ready import say_ready

#: Seconds the watcher waits for the view to be mounted after the plan is written.
MOUNT_TIMEOUT = 60.0


def _log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


class PlanFollower:
    """Swaps mountd's plan into the view at ``mountpoint`` when it differs from the one in force."""

    def __init__(self, mountpoint: str, current: Plan | None) -> None:
        self.mountpoint = mountpoint
        self.current = current

    async def __call__(self, plan_dict: dict) -> None:
        from litefs.fs import control

        try:
            plan = Plan.from_dict(plan_dict)
        except LitefsError as exc:
            _log(f"refused plan from mountd: {exc}")
            return
        if plan == self.current:
            return
        _log(f"plan changed: {len(plan.rules)} rules, {len(plan.sources)} litetree sources")
        try:
            await trio.to_thread.run_sync(control.change_plan, self.mountpoint, plan)
        except LitefsError as exc:
            _log(f"plan change failed: {exc}")
            return
        self.current = plan


def read_plan(path: str | None) -> Plan | None:
    if not path:
        return None
    try:
        return Plan.from_json(Path(path).read_text())
    except (OSError, LitefsError, ValueError):
        return None


async def watch(xcat: str, ctx: ssl.SSLContext | None, plan: Plan | None = None) -> None:
    from litefs.fs import control

    from .client import subscribe

    async def on_change(paths: list[str]) -> None:
        _log(f"refresh {' '.join(paths)}")
        try:
            await trio.to_thread.run_sync(control.refresh, ".", paths)
        except LitefsError as exc:
            _log(f"refresh failed: {exc}")

    await subscribe(xcat, on_change, ssl_context=ctx, on_state=lambda s: _log(s),
                    on_plan=PlanFollower(".", plan))


def wait_mounted(view: str, timeout: float) -> bool:
    """Block until something is mounted on ``view`` (True), or ``timeout`` seconds pass.

    An event wait, not a poll: ``poll(2)`` on ``/proc/self/mountinfo`` reports ``POLLPRI``
    whenever this mount namespace's table changes, so we look again only when a mount happened.
    The file is opened before the first look, so a mount between that look and the wait still
    wakes us."""
    parent = os.path.dirname(os.path.abspath(view))

    def mounted() -> bool:
        return os.path.isdir(view) and os.stat(view).st_dev != os.stat(parent).st_dev

    deadline = time.monotonic() + timeout
    with open("/proc/self/mountinfo", "rb") as table:
        waiter = select.poll()
        waiter.register(table, select.POLLPRI | select.POLLERR)
        while not mounted():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            waiter.poll(left * 1000)
    return True


def run(view: str, xcat: str, ctx: ssl.SSLContext | None, ready: str | None) -> int:
    """Wait for the view on ``view``, step into it, say ``ready``, then follow mountd."""
    # Everything that touches initramfs paths happens before we say ready: the hook then
    # switches root and those paths are gone. We run alongside the daemon (no Python start-up
    # on the boot path of our own), so first wait for the view to be mounted.
    plan = read_plan(os.path.join(os.path.dirname(ready), "plan.json") if ready else None)
    try:
        if not wait_mounted(view, MOUNT_TIMEOUT):
            _log(f"litefs-watch: {view} was not mounted within {MOUNT_TIMEOUT:g} s")
            return 1
        os.chdir(view)
    finally:
        if ready:
            say_ready(ready)
    try:
        trio.run(watch, xcat, ctx, plan)
    except LitefsError as exc:
        _log(f"litefs-watch: {exc}")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="litefs-watch")
    p.add_argument("--xcat", required=True, help="mountd address IP:PORT")
    p.add_argument("--view", required=True, help="where the view is mounted right now")
    p.add_argument("--ca", default=os.environ.get("LITEFS_CA"))
    p.add_argument("--ready", help="once set up, write a line into this fifo (the hook "
                   "waits on it) or create this file")
    args = p.parse_args(argv)
    ctx = None
    if args.ca:
        from .tls import client_context

        try:
            ctx = client_context(Path(args.ca))
        except LitefsError as exc:
            _log(f"litefs-watch: {exc}")
            if args.ready:
                say_ready(args.ready)
            return 1
    return run(args.view, args.xcat, ctx, args.ready)


if __name__ == "__main__":
    sys.exit(main())
