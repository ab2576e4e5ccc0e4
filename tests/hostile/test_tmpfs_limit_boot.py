"""Security item 8 end to end: a node booted by the real hook (PID 1 in namespaces, mountd in
its own) gets the site's tmpfs size from its plan and remounts its tmpfs layer with it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litefs.tools.cluster_sim import (
    DEMO_IMAGE_DIR,
    Cluster,
    demo_tables,
    load_demo_tables,
    stage_demo,
)

from tests.test_boot_netns import _tools_missing

pytestmark = [pytest.mark.netns, pytest.mark.fuse, pytest.mark.slow]


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    missing = _tools_missing()
    if missing:
        pytest.skip(missing)
    work = tmp_path_factory.mktemp("cluster")
    with Cluster(work) as c:
        stage_demo(c)
        url = f"sqlite:///{work}/litefs.db"
        load_demo_tables(url, demo_tables(c), [({"key": "litefs_tmpfs_size"}, ["site.value=48m"])])
        c.start_mountd(url)
        yield c
    assert c.leftovers() == []


def test_node_applies_the_site_tmpfs_size(cluster: Cluster) -> None:
    node = cluster.boot("n01", cluster.cmdline("n01", DEMO_IMAGE_DIR))
    node.wait_shell(60)
    log = node.check("cat /.statelite/statelite.log")
    assert "mount -t tmpfs -o mode=755,size=25% rw /.litefs/statelite" in log, log
    assert "mount -o remount,size=48m /.litefs/statelite" in log, log
    assert "warning" not in log.lower(), log
