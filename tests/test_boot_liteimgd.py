"""The issue's trap, on a real namespace boot: after ``liteimg`` (which the cookbook tells every
admin to run) a litefs node on that image must not see the dangling ``/tmp ->
./.statelite/tmpfs/tmp`` chain: ``echo x > /tmp/x`` works and the moved files read as before."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from litefs.tools.cluster_sim import (
    DEMO_IMAGE,
    DEMO_IMAGE_DIR,
    Cluster,
    demo_tables,
    load_demo_tables,
    stage_demo,
)

from litefs import liteimg as L
from litefs.db import open_engine
from litefs.planner import image_plan

pytestmark = [pytest.mark.netns, pytest.mark.fuse, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    for tool in ("ip", "unshare", "busybox"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    work = tmp_path_factory.mktemp("cluster")
    with Cluster(work) as c:
        root = stage_demo(c)
        tables = demo_tables(c)
        # Link-family rows, as in the cookbook's lists: /tmp/ and /etc/hostname.
        tables["litefile"] = tables["litefile"].replace('"ALL","/tmp/","tmpfs",,',
                                                        '"ALL","/tmp/","link",,')
        tables["litefile"] += '"ALL","/etc/hostname",,,\n'
        url = f"sqlite:///{work}/litefs.db"
        load_demo_tables(url, tables)
        engine = open_engine(url)
        try:
            plan = image_plan(engine, DEMO_IMAGE)
        finally:
            engine.dispose()
        state = L.read_state(str(root))
        lp = L.plan_liteimg(DEMO_IMAGE, L.entries_from_plan(plan), L.DirTree(str(root)), state)
        L.apply(str(root), lp.actions)
        c.start_mountd(url)
        yield c
    assert c.leftovers() == []


def test_litefs_node_boots_from_the_liteimgd_image(cluster: Cluster) -> None:
    root = cluster.exports / cluster.mn_ip / DEMO_IMAGE_DIR.lstrip("/") / "rootimg"
    # The image really is liteimg'd: the symlink chain a stock node follows.
    assert (root / "tmp").is_symlink() and os.readlink(root / "tmp") == "./.statelite/tmpfs/tmp"
    assert (root / "etc/hostname").is_symlink()
    node = cluster.boot("n01", cluster.cmdline("n01", DEMO_IMAGE_DIR))
    node.wait_shell(60)
    assert node.check("echo x > /tmp/x && cat /tmp/x") == "x\n"
    assert node.check("cat /etc/hostname") == (root / ".default/etc/hostname").read_text()
    assert node.check("test -L /tmp || echo real-dir") == "real-dir\n"
    node.kill()
