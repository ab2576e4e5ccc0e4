"""Node-side subscription: mountd's change announcements become refreshes of the running view.

Runs as ``@litefs-watch`` (so it, like the daemon, survives ``switch_root``): the boot-time
plan fetch forks into it once the plan is written (``fetchplan --watch``), which spares a
Python start-up per boot; ``python -m litefs.initramfs.watch`` runs it on its own. It first changes directory into the view's root: the
hook then moves the view onto ``/`` and the initramfs path disappears, but our working
directory keeps pointing at the view, so refreshes go to ``.`` for the life of the node.
Reconnection after a mountd restart is :func:`litefs.mountd.client.subscribe`'s job.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import time
from pathlib import Path

import trio

from litefs.errors import LitefsError


def _log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


async def watch(xcat: str, ctx: ssl.SSLContext | None) -> None:
    from litefs.mountd.client import subscribe

    from litefs.fs import control

    async def on_change(paths: list[str]) -> None:
        _log(f"refresh {' '.join(paths)}")
        try:
            await trio.to_thread.run_sync(control.refresh, ".", paths)
        except LitefsError as exc:
            _log(f"refresh failed: {exc}")

    await subscribe(xcat, on_change, ssl_context=ctx, on_state=lambda s: _log(s))


def run(view: str, xcat: str, ctx: ssl.SSLContext | None, ready: str | None) -> int:
    """Wait for the view on ``view``, step into it, say ``ready``, then follow mountd."""
    # Everything that touches initramfs paths happens before we say ready: the hook then
    # switches root and those paths are gone. We run alongside the daemon (no Python start-up
    # on the boot path of our own), so first wait for the view to be mounted.
    try:
        deadline = time.monotonic() + 60
        parent = os.path.dirname(os.path.abspath(view))
        while not os.path.isdir(view) or os.stat(view).st_dev == os.stat(parent).st_dev:
            if time.monotonic() > deadline:
                _log(f"litefs-watch: {view} was not mounted within 60 s")
                return 1
            time.sleep(0.05)
        os.chdir(view)
    finally:
        if ready:
            Path(ready).touch()
    try:
        trio.run(watch, xcat, ctx)
    except LitefsError as exc:
        _log(f"litefs-watch: {exc}")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="litefs-watch")
    p.add_argument("--xcat", required=True, help="mountd address IP:PORT")
    p.add_argument("--view", required=True, help="where the view is mounted right now")
    p.add_argument("--ca", default=os.environ.get("LITEFS_CA"))
    p.add_argument("--ready", help="file to create once set up (the hook waits for it)")
    args = p.parse_args(argv)
    ctx = None
    if args.ca:
        from litefs.mountd.pki import client_context

        try:
            ctx = client_context(Path(args.ca))
        except LitefsError as exc:
            _log(f"litefs-watch: {exc}")
            if args.ready:
                Path(args.ready).touch()
            return 1
    return run(args.view, args.xcat, ctx, args.ready)


if __name__ == "__main__":
    sys.exit(main())
