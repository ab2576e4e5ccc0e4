"""Running views follow changes with no manual step: a real mountd (follow on), a real FUSE
mount, the node-side subscription of ``litefs.initramfs.watch``; no ``litefs notify``.

The namespace boots (``test_live_netns.py``) prove the same through the real boot hook; these
run in seconds and pin the two mechanisms: table edit → plan push → live swap, and image
edit → inotify → announcement → refresh.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest
import trio
from litefs.initramfs import client
from litefs.initramfs.watch import PlanFollower
from sqlalchemy import Engine

from litefs import db, planner, tabledata
from tests.dbutil import load_tables
from tests.fsutil import Layers, Mounter, put
from tests.mountdutil import cluster_tables, serving

pytestmark = pytest.mark.fuse

LINUXIMAGE = "#imagename,template,boottarget,addkcmdline,pkglist,pkgdir,otherpkglist,otherpkgdir,exlist,postinstall,rootimgdir,kerneldir,nodebootif,otherifce,netdrivers,kernelver,krpmver,permission,dump,crashkernelsize,partitionfile,driverupdatesrc,comments,disable\n"


@pytest.fixture
def engine(tmp_path: Path, layers: Layers) -> Engine:
    # The image's rootimgdir holds rootimg/, which is the test's image layer (via a link, as
    # /install often is on a real MN).
    (tmp_path / "imgdir").mkdir()
    (tmp_path / "imgdir" / "rootimg").symlink_to(layers.image)
    tables = cluster_tables({"n01": "127.0.0.11"})
    tables["litetree"] = "#priority,image,directory,mntopts,comments,disable\n"
    # No ro row: paths that follow a litetree source get a short cache timeout of their
    # own, which would hide what is under test (image content is cached for an hour).
    tables["litefile"] = ('#image,file,options,comments,disable\n"ALL","/etc/adjtime","tmpfs",,\n'
                          '"ALL","/var/log/","persistent",,\n')
    tables["linuximage"] = LINUXIMAGE + f'"img1",,,,,,,,,,"{tmp_path}/imgdir",,,,,,,,,,,,,\n'
    eng = db.open_engine(f"sqlite:///{tmp_path}/litefs.db")
    load_tables(eng, tables)
    yield eng
    eng.dispose()


def _writable(path: Path) -> bool:
    try:
        with open(path, "a") as f:
            f.write("")
        return True
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return False
        raise


async def _follow(engine: Engine, view: Path, plan, change, done) -> float:  # type: ignore[no-untyped-def]
    """Subscribe as a node does, apply ``change()``, wait for ``done()``; seconds it took."""
    async with serving(engine, check_interval=0.1, follow_interval=0.1) as srv, \
            trio.open_nursery() as n:
        server = f"127.0.0.1:{srv.ports[0]}"
        hook = client.refresh_hook(str(view))
        await n.start(lambda task_status: client.subscribe(
            server, hook, on_plan=PlanFollower(str(view), plan), source_address="127.0.0.11",
            task_status=task_status))
        if srv.follower is not None and srv.follower.trees is not None:
            with trio.fail_after(10):  # the watcher follows the new subscription
                while not srv.follower.trees.roots():
                    await trio.sleep(0.02)
        start = time.monotonic()
        await trio.to_thread.run_sync(change)
        with trio.fail_after(10):
            while not await trio.to_thread.run_sync(done):
                await trio.sleep(0.02)
        took = time.monotonic() - start
        n.cancel_scope.cancel()
    return took


def test_litefile_edit_makes_the_running_path_writable(
    engine: Engine, layers: Layers, litefs_mount: Mounter
) -> None:
    put(layers.image, "etc/hostname", "image\n")
    plan = planner.plan_for_node(planner.load_snapshot(engine), "n01")
    view = litefs_mount(plan).path
    assert not _writable(view / "etc/hostname")  # image content: read-only

    def change() -> None:
        tabledata.chtab(engine, {"image": "img1", "file": "/etc/hostname"},
                        ["litefile.options=tmpfs"])

    trio.run(_follow, engine, view, plan, change, lambda: _writable(view / "etc/hostname"))
    (view / "etc/hostname").write_text("node-local\n")
    assert (layers.tmpfs / "etc/hostname").read_text() == "node-local\n"
    assert (layers.image / "etc/hostname").read_text() == "image\n"


def test_image_edit_shows_in_the_running_view_without_notify(
    engine: Engine, layers: Layers, litefs_mount: Mounter
) -> None:
    put(layers.image, "srv/issue", "v1\n")
    plan = planner.plan_for_node(planner.load_snapshot(engine), "n01")
    view = litefs_mount(plan).path
    assert (view / "srv/issue").read_text() == "v1\n"
    assert os.listdir(view / "srv") == ["issue"]  # as `ls` does: the kernel caches attributes

    def change() -> None:
        # An edit in place (the admin's editor or `echo >`: same inode, so the kernel's
        # cached size would hide it for the cache timeout), plus a new folder with a file.
        (layers.image / "srv/issue").write_text("v2, longer\n")
        put(layers.image, "opt/app/new.conf", "added\n")

    def done() -> bool:
        try:
            return ((view / "srv/issue").read_text() == "v2, longer\n"
                    and (view / "opt/app/new.conf").read_text() == "added\n")
        except FileNotFoundError:
            return False

    trio.run(_follow, engine, view, plan, change, done)


def test_litetree_folder_edit_is_announced_to_the_nodes_using_it(
    engine: Engine, tmp_path: Path
) -> None:
    # n01's litetree folder is on this host (127.0.0.1): mountd watches it for n01 only.
    src = tmp_path / "statelite" / "n01"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "motd").write_text("v1\n")
    tabledata.restore(engine, "litetree", "#priority,image,directory,mntopts,comments,disable\n"
                      f'"1.0","img1","127.0.0.1:{tmp_path}/statelite/$node",,,\n', "lt.csv")
    got: list[list[str]] = []

    async def main() -> None:
        async with serving(engine, check_interval=0.1, follow_interval=0.1) as srv, \
                trio.open_nursery() as n:
            await n.start(lambda task_status: client.subscribe(
                f"127.0.0.1:{srv.ports[0]}", got.append, source_address="127.0.0.11",
                task_status=task_status))
            with trio.fail_after(10):
                while str(src) not in srv.follower.targets.sources:
                    await trio.sleep(0.02)
            assert srv.follower.targets.sources[str(src)] == {"n01"}
            (src / "etc" / "motd").write_text("v2\n")
            with trio.fail_after(10):
                while ["/etc/motd"] not in got:
                    await trio.sleep(0.02)
            n.cancel_scope.cancel()

    trio.run(main)


def test_an_image_folder_that_appears_later_is_watched_then(
    engine: Engine, layers: Layers, tmp_path: Path
) -> None:
    # The image is not on this (service) node yet when its node subscribes: prsync comes later.
    link = tmp_path / "imgdir" / "rootimg"
    link.unlink()
    got: list[list[str]] = []

    async def main() -> None:
        async with serving(engine, check_interval=0.1, follow_interval=0.1) as srv, \
                trio.open_nursery() as n:
            srv.follower.roots_retry = 0.2
            await n.start(lambda task_status: client.subscribe(
                f"127.0.0.1:{srv.ports[0]}", got.append, source_address="127.0.0.11",
                task_status=task_status))
            await trio.sleep(0.5)
            assert srv.follower.trees.roots() == set()
            link.symlink_to(layers.image)  # the image arrives
            with trio.fail_after(10):
                while str(link) not in srv.follower.trees.roots():
                    await trio.sleep(0.02)
            put(layers.image, "etc/arrived", "x")
            with trio.fail_after(10):
                while not any("/etc" in p or "/etc/arrived" in p for p in got):
                    await trio.sleep(0.02)
            n.cancel_scope.cancel()

    trio.run(main)
