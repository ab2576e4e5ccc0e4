"""The lean request loop (litefs.fs.fastloop) and the warm re-bind (litefs.fs.tree.Tree.bind):
what they skip must not change what the view answers.

* the read lock still excludes (several workers share it);
* a flood of requests does not starve the daemon's other tasks: a refresh (coherence
  notifier) takes effect and SIGTERM (signal task) unmounts while readers hammer the mount
  (fails with YIELD_EVERY unbounded and a long SPIN_S: checked when written);
* listings numbered by the warm path agree with lookups, through copy-up and eviction, and
  image hard links under a writable rule keep one number per name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import trio

from litefs.fs import fastloop
from tests.fsutil import Layers, Mounter, is_mounted, make_plan, put, wait_for
from tests.posixutil import RULE_DIRS, drop_caches, mount_view


def test_fast_lock_excludes_and_takes_a_free_lock_without_a_checkpoint() -> None:
    order: list[str] = []

    async def main() -> None:
        lock = fastloop.FastLock()

        async def holder() -> None:
            async with lock:
                order.append("a in")
                await trio.sleep(0.05)
                order.append("a out")

        async def waiter() -> None:
            await trio.sleep(0.01)
            async with lock:
                order.append("b in")

        async with trio.open_nursery() as n:
            n.start_soon(holder)
            n.start_soon(waiter)
        # Free: taken without yielding, so a cancelled scope does not stop it either.
        with trio.CancelScope() as cs:
            cs.cancel()
            async with lock:
                order.append("free")

    trio.run(main)
    assert order == ["a in", "a out", "b in", "free"]


def test_a_request_flood_starves_neither_refresh_nor_sigterm(layers: Layers, litefs_mount: Mounter) -> None:
    put(layers.image, "etc/motd", "old\n")
    src = layers.add_source()
    put(src, "etc/motd", "from source v1\n")
    m = litefs_mount(make_plan({"/etc/motd": "ro", "/w/": "tmpfs"}, sources=[str(src)]))
    # Processes, not threads: a thread waits for the GIL between requests (up to 5 ms),
    # leaving gaps in which the loop would yield anyway.
    code = "import os, sys\nwhile True:\n    os.listdir(sys.argv[1])\n    os.stat(sys.argv[1] + '/.')\n"
    hammers = [subprocess.Popen([sys.executable, "-c", code, str(m.path / "w")], stderr=subprocess.DEVNULL)
               for _ in range(4)]
    try:
        assert (m.path / "etc/motd").read_text() == "from source v1\n"
        (src / "etc/motd").write_text("from source v2, longer\n")
        os.setxattr(m.path, "user.litefs.refresh", b"/etc/motd")
        wait_for(lambda: (m.path / "etc/motd").read_text() == "from source v2, longer\n", timeout=10)
        os.kill(m.pid, signal.SIGTERM)
        wait_for(lambda: not is_mounted(str(m.path)), timeout=10)
    finally:
        for h in hammers:
            h.kill()
            h.wait()


def _listed(d: os.PathLike[str]) -> dict[str, int]:
    with os.scandir(d) as it:
        return {e.name: e.inode() for e in it}


@pytest.mark.fuse
@pytest.mark.parametrize("d", RULE_DIRS)
def test_warm_listings_number_as_lookups_do(layers: Layers, litefs_mount: Mounter, d: str) -> None:
    a = put(layers.image, f"{d}/ha", "shared")
    os.link(a, layers.image / d / "hb")
    m = mount_view(layers, litefs_mount)
    w = m.path / d
    (w / "mine").write_text("upper")
    first = _listed(w)
    for _ in range(3):  # warm: the kernel holds every node now
        assert _listed(w) == first
    assert {n: os.stat(w / n).st_ino for n in first} == first
    assert first["ha"] != first["hb"]  # one file of its own per name under a writable rule
    with open(w / "ha", "a") as f:  # copy-up of one name: its number stays, the other's too
        f.write(" changed")
    assert _listed(w) == first and os.stat(w / "ha").st_ino == first["ha"]
    drop_caches()
    assert _listed(w) == first
    assert (w / "ha").read_text() == "shared changed" and (w / "hb").read_text() == "shared"
    os.unlink(w / "mine")
    (w / "mine").write_text("a new file")  # a new backing file at a held path
    now = _listed(w)
    assert now["mine"] == os.stat(w / "mine").st_ino
    assert {k: v for k, v in now.items() if k != "mine"} == {k: v for k, v in first.items() if k != "mine"}
