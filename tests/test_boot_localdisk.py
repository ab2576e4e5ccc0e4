"""localdisk rows at boot (xCAT's rc.localdisk): a node with its local disk keeps those paths
on it across reboots; a node without one still boots, warns on the console and keeps them in
tmpfs. Real namespace boots (litefs.tools.cluster_sim) with a loop device as the node's disk."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from litefs.tools.cluster_sim import (
    DEMO_IMAGE_DIR,
    Cluster,
    ClusterNode,
    demo_tables,
    load_demo_tables,
    stage_demo,
)

pytestmark = [pytest.mark.netns, pytest.mark.fuse, pytest.mark.slow]

ROW = '"ALL","/var/lib/scratch/","localdisk","the node\'s own disk",\n'
WARNING = ("litefs: warning: the plan has localdisk paths but no litefs.localdisk=DEV on the "
           "kernel command line (set it in linuximage.addkcmdline); they are in tmpfs for this "
           "boot and lost at reboot")


def _missing() -> str | None:
    for tool in ("ip", "unshare", "busybox", "losetup", "mkfs.ext2"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not Path("/dev/fuse").exists() or not Path("/dev/loop-control").exists():
        return "/dev/fuse or /dev/loop-control is missing"
    return None


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    missing = _missing()
    if missing:
        pytest.skip(missing)
    img = tmp_path_factory.mktemp("disk") / "sda.img"
    with open(img, "wb") as f:
        f.truncate(16 << 20)
    subprocess.run(["mkfs.ext2", "-q", "-F", str(img)], check=True, capture_output=True)
    dev = subprocess.run(["losetup", "--find", "--show", str(img)], check=True,
                         capture_output=True, text=True).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, disk: str) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("cluster")
    with Cluster(work) as c:
        stage_demo(c)
        tables = demo_tables(c)
        tables["litefile"] += ROW
        url = f"sqlite:///{work}/litefs.db"
        load_demo_tables(url, tables)
        c.start_mountd(url)
        yield c
    assert c.leftovers() == []


def _boot(c: Cluster, extra: str = "") -> ClusterNode:
    node = c.boot("n01", c.cmdline("n01", DEMO_IMAGE_DIR, extra=extra))
    node.wait_shell(60)
    return node


def _on_disk(dev: str, tmp: Path) -> list[str]:
    """The files of the loop disk, read on the host once no node has it mounted."""
    mnt = tmp / "look"
    mnt.mkdir(exist_ok=True)
    # A killed node's mount namespace is torn down after its last process is reaped: until
    # then the disk is still mounted read-write there, and a read-only mount of it is EBUSY.
    deadline = time.monotonic() + 20
    while True:
        r = subprocess.run(["mount", "-o", "ro", dev, str(mnt)], capture_output=True, text=True)
        if r.returncode == 0:
            break
        assert time.monotonic() < deadline, r.stderr
        time.sleep(0.1)
    try:
        return sorted(str(p.relative_to(mnt)) for p in mnt.rglob("*") if p.is_file())
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_localdisk_paths_live_on_the_nodes_disk(cluster: Cluster, disk: str,
                                                tmp_path: Path) -> None:
    node = _boot(cluster, f"litefs.localdisk={disk}")
    assert WARNING not in node.console
    assert f"mount {disk} /.litefs/statelite/localdisk" in node.check(
        "cat /.statelite/statelite.log")
    node.check("echo kept > /var/lib/scratch/data")
    node.kill()
    assert "var/lib/scratch/data" in _on_disk(disk, tmp_path)
    node = _boot(cluster, f"litefs.localdisk={disk}")  # reboot: still on the disk
    assert node.check("cat /var/lib/scratch/data") == "kept\n"
    node.kill()


def test_node_without_disk_boots_with_warning_and_tmpfs(cluster: Cluster) -> None:
    node = _boot(cluster)
    assert WARNING in node.console
    assert node.sh("cat /var/lib/scratch/data")[0] != 0  # not the disk's file
    node.check("echo volatile > /var/lib/scratch/data")
    assert node.check("cat /var/lib/scratch/data") == "volatile\n"
    node = _boot(cluster)
    assert node.sh("cat /var/lib/scratch/data")[0] != 0  # tmpfs: gone after the reboot
    node.kill()


@pytest.mark.parametrize("value", ["/dev/../etc/passwd", "/etc/shadow", "/dev/sd$(reboot)"])
def test_hostile_localdisk_value_is_refused_and_nothing_is_made(cluster: Cluster,
                                                               value: str) -> None:
    # The value picks the sysfs file read and the device node made: one outside /dev or
    # with odd characters is named on the console and the paths stay in tmpfs.
    node = _boot(cluster, f"litefs.localdisk={value}")
    assert f"litefs.localdisk={value} is not a device under /dev" in node.console
    log = node.check("cat /.statelite/statelite.log")
    assert "mknod" not in log and f"mount {value}" not in log
    node.check("echo volatile > /var/lib/scratch/data")  # served from tmpfs
    node.kill()
