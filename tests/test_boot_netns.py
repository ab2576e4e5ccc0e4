"""End-to-end diskless boots in namespaces: mountd in a management namespace, nodes that run
the real initramfs hook as PID 1 and switch_root into their litefs view (litefs.tools.cluster_sim)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from litefs.initramfs.fetchplan import FETCH_FAILED
from litefs.tools.cluster_sim import (
    DEMO_IMAGE_DIR,
    Cluster,
    ClusterNode,
    demo_tables,
    load_demo_tables,
    stage_demo,
)

pytestmark = [pytest.mark.netns, pytest.mark.fuse, pytest.mark.slow]

# Two nodes of the shipped demo sample in different rooms: n01 (Tokyo) and n03 (London).


def _tools_missing() -> str | None:
    for tool in ("ip", "unshare", "busybox"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not Path("/dev/fuse").exists():
        return "/dev/fuse is missing"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    missing = _tools_missing()
    if missing:
        pytest.skip(missing)
    work = tmp_path_factory.mktemp("cluster")
    with Cluster(work) as c:
        stage_demo(c)
        url = f"sqlite:///{work}/litefs.db"
        load_demo_tables(url, demo_tables(c))
        c.start_mountd(url)
        yield c
    # Whatever the tests did (or failed to do), nothing of the cluster outlives it.
    assert c.leftovers() == []


def _boot(c: Cluster, name: str, **kw: str) -> ClusterNode:
    node = c.boot(name, c.cmdline(name, DEMO_IMAGE_DIR, **kw))
    node.wait_shell(60)
    return node


def test_node_boots_into_litefs_root(cluster: Cluster) -> None:
    node = _boot(cluster, "n01")
    # The harness gave eth0 the MAC of the node's mac table row (nodeset needs one).
    assert node.check("cat /sys/class/net/eth0/address").strip() == cluster.mac("n01")
    assert cluster.leftovers()  # a running node is found (so an empty list means clean)
    mounts = node.check("cat /proc/mounts")
    root = [line for line in mounts.splitlines() if line.split()[1:2] == ["/"]]
    assert root and root[-1].split()[2] == "fuse.litefs", mounts
    # The daemon and the watcher survived switch_root under their '@' names.
    argv0 = node.check("for p in /proc/[0-9]*; do head -c 20 $p/cmdline | tr '\\0' ' '; "
                       "echo; done")
    assert "@litefs -m litefs" in argv0 and "@litefs-watch -m" in argv0
    log = node.check("cat /.statelite/statelite.log")
    assert "mount --bind /nfs/10.77.0.1/nodedata/n01 /.litefs/statelite/persistent" in log
    assert "# switching root into the litefs view" in log
    # The hook waited for the watcher's ready line (its fifo), not for its 30 s bound.
    assert "litefs-watch is not ready" not in log + node.console
    # litefs writes /.statelite/litefile from the plan, possibly a moment after the mount.
    litefile = node.check("for i in $(seq 100); do [ -s /.statelite/litefile ] && break; "
                          "sleep 0.1; done; cat /.statelite/litefile")
    assert "n01: tmpfs" in litefile
    # No rule: read-only image content.
    status, out = node.sh("echo x > /etc/hostname")
    assert status != 0 and "Read-only" in out


def test_tmpfs_vanishes_and_persistent_survives_reboot(cluster: Cluster) -> None:
    node = _boot(cluster, "n01")
    node.check("echo volatile > /tmp/scratch && echo kept > /var/log/app.log && "
               "echo 1.5 0 0 > /etc/adjtime")
    assert node.check("cat /tmp/scratch /var/log/app.log") == "volatile\nkept\n"
    on_server = cluster.exports / cluster.mn_ip / "nodedata" / "n01" / "var" / "log" / "app.log"
    assert on_server.read_text() == "kept\n"
    node = _boot(cluster, "n01")  # power cycle: new namespaces, new tmpfs
    assert node.sh("cat /tmp/scratch")[0] != 0
    assert node.check("cat /var/log/app.log") == "kept\n"
    assert node.check("cat /etc/adjtime") == "0.0 0 0.0\n0\nUTC\n"  # back to the image's


def test_rooms_see_their_own_motd(cluster: Cluster) -> None:
    n01 = _boot(cluster, "n01")
    n03 = _boot(cluster, "n03")
    assert n01.check("cat /etc/motd") == "Welcome to the tokyo room\n"
    assert n03.check("cat /etc/motd") == "Welcome to the london room\n"
    # Both see the common litetree folder (priority 2) in their tmpfs /etc/ssh/.
    for node in (n01, n03):
        assert node.check("cat /etc/ssh/ssh_known_hosts").startswith("mn ssh-ed25519")


def test_image_change_reaches_running_node_after_notify(cluster: Cluster) -> None:
    node = _boot(cluster, "n01")
    issue = cluster.exports / cluster.mn_ip / DEMO_IMAGE_DIR.lstrip("/") / "rootimg/etc/issue"
    motd = cluster.exports / cluster.mn_ip / "syncdirs/tokyo/etc/motd"
    assert node.check("cat /etc/issue") == "demo image v1\n"
    try:
        issue.write_text("demo image v2\n")
        motd.write_text("Tokyo room, updated\n")
        cluster.notify("n01", "/etc/issue", "/etc/motd")
        deadline = time.monotonic() + 10
        while node.check("cat /etc/issue /etc/motd") != "demo image v2\nTokyo room, updated\n":
            assert time.monotonic() < deadline, (
                node.check("cat /etc/issue /etc/motd")
                + node.initramfs_file("/.litefs/statelite/watch.log")
                + node.initramfs_file("/.litefs/statelite/litefs.log")[-3000:]
            )
            time.sleep(0.2)
    finally:
        issue.write_text("demo image v1\n")
        motd.write_text("Welcome to the tokyo room\n")
        cluster.notify("n01")


def test_node_cannot_read_other_nodes_persistent_data(cluster: Cluster) -> None:
    n03 = _boot(cluster, "n03")
    n03.check("echo n03-secret > /var/log/secret")
    n01 = _boot(cluster, "n01")
    assert n01.sh("cat /var/log/secret")[0] != 0
    listing = n01.check("ls -a /.statelite/persistent /.statelite/persistent/..")
    assert "n03" not in listing
    found = n01.check("grep -rl n03-secret /.statelite /var 2>/dev/null; true")
    assert "secret" not in found
    # The NFS stand-in is gone after switch_root, and the daemons that stay in the
    # initramfs root no longer see it either: only the node's own mounts remain.
    assert n01.sh("ls /nfs/10.77.0.1/nodedata/n03")[0] != 0
    with pytest.raises(FileNotFoundError):
        n01.initramfs_file("/nfs/10.77.0.1/nodedata/n03/var/log/secret")
    with pytest.raises(FileNotFoundError):
        n01.initramfs_file("/.litefs/statelite/persistent/var/log/secret")
    # And mountd serves a node only its own plan: ask for n03's from n01's address.
    code = (
        "import sys; from pathlib import Path; "
        "from litefs.initramfs.client import fetch_plan_sync, Backoff; "
        "from litefs.initramfs.tls import client_context; "
        "fetch_plan_sync('10.77.0.1:3001', node='n03', backoff=Backoff(attempts=1), "
        "ssl_context=client_context(Path(sys.argv[1])))"
    )
    proc = subprocess.run(["ip", "netns", "exec", n01.netns, sys.executable, "-c", code,
                           str(cluster.ca)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0, proc.stdout
    assert "a node may only ask for its own plan" in proc.stderr


def test_statemnt_without_server_stops_boot_with_message(cluster: Cluster) -> None:
    node = cluster.boot("n01", cluster.cmdline("n01", DEMO_IMAGE_DIR, statemnt="/nodedata"))
    out = node.expect("has no server", 60)
    assert "STATEMNT=/nodedata has no server: persistent files would silently live in RAM" in out
    node.proc.wait(timeout=30)  # PID 1 powered the node off


def test_missing_statemnt_server_gives_documented_message(cluster: Cluster) -> None:
    # 10.77.0.99 exports nothing: every attempt fails, then the cookbook's words.
    node = cluster.boot("n01", cluster.cmdline("n01", DEMO_IMAGE_DIR,
                                               statemnt="10.77.0.99:/nodedata"))
    out = node.expect("You are dead", 60)
    assert ("litefs: cannot mount the persistent store 10.77.0.99:/nodedata. You are dead, "
            "rpower n01 boot to play again.") in out
    assert out.count("litefs: mounting the persistent store 10.77.0.99:/nodedata failed") == 4
    node.proc.wait(timeout=30)


def test_unreachable_mountd_gives_documented_message(cluster: Cluster) -> None:
    node = cluster.boot("n01", cluster.cmdline("n01", DEMO_IMAGE_DIR, port=3999))
    out = node.expect("FATAL error", 90)
    expected = FETCH_FAILED.split("{reason}")[0].format(
        node="n01", server="10.77.0.1:3999", attempts=5)
    assert expected in out
    retries = [line for line in node.console.splitlines() if "retrying in" in line]
    assert len(retries) == 4  # five attempts, a console line before each wait
    node.proc.wait(timeout=30)


def test_shell_argument_pauses_three_times(cluster: Cluster) -> None:
    node = cluster.boot("n01", cluster.cmdline("n01", DEMO_IMAGE_DIR, extra="shell"))
    node.expect("pause 1 of 3", 60)
    # The debug shell runs in the initramfs: the layers are mounted, the plan not yet fetched.
    assert "motd" in node.check("ls /.litefs/image/etc")
    assert node.sh("test -e /.litefs/statelite/plan.json")[0] != 0
    node.proc.stdin.write(b"exit\n")  # type: ignore[union-attr]
    node.proc.stdin.flush()  # type: ignore[union-attr]
    node.expect("pause 2 of 3", 60)
    assert "Welcome to the tokyo room" in node.check(
        "cat /.litefs/statelite/mnt/10.77.0.1/syncdirs/tokyo/etc/motd")
    node.proc.stdin.write(b"exit\n")  # type: ignore[union-attr]
    node.proc.stdin.flush()  # type: ignore[union-attr]
    node.expect("pause 3 of 3", 60)
    assert "fuse.litefs" in node.check("grep /sysroot /proc/mounts")
    node.proc.stdin.write(b"exit\n")  # type: ignore[union-attr]
    node.proc.stdin.flush()  # type: ignore[union-attr]
    node.wait_shell(60)
    assert node.check("cat /etc/motd") == "Welcome to the tokyo room\n"


def test_dracut_module_boots_node_into_litefs_root(cluster: Cluster) -> None:
    # dracut's nfs module mounts the image on /sysroot; our pre-pivot hook (the packaged
    # dracut/95litefs/litefs-prepivot.sh) takes over; dracut then switches root.
    node = cluster.boot("n03", cluster.cmdline("n03", DEMO_IMAGE_DIR), dracut=True)
    node.wait_shell(60)
    assert "dracut: nfs root 10.77.0.1:" in node.console
    assert "dracut: switching root" in node.console
    mounts = node.check("cat /proc/mounts")
    root = [line for line in mounts.splitlines() if line.split()[1:2] == ["/"]]
    assert root[-1].split()[2] == "fuse.litefs", mounts
    assert node.check("cat /etc/motd") == "Welcome to the london room\n"
    node.check("echo dracut > /var/log/dracut.log")
    on_server = cluster.exports / cluster.mn_ip / "nodedata" / "n03" / "var/log/dracut.log"
    assert on_server.read_text() == "dracut\n"
    assert "mount --move /sysroot /.litefs/image" in node.check("cat /.statelite/statelite.log")


def test_dracut_module_stops_with_dracut_die_when_mountd_is_unreachable(cluster: Cluster
                                                                        ) -> None:
    node = cluster.boot("n03", cluster.cmdline("n03", DEMO_IMAGE_DIR, port=3999), dracut=True)
    out = node.expect("dracut: FATAL", 90)
    assert "FATAL error: could not get the plan for n03 from mountd at 10.77.0.1:3999" in out
    assert "dracut: FATAL: litefs: the node could not build its root" in out
    node.proc.wait(timeout=30)


def test_native_writes_on_the_kernel_command_line_bind_tmp_from_the_tmpfs_layer(cluster: Cluster) -> None:
    node = _boot(cluster, "n03", extra="litefs.nativewrites=1")
    mounts = [line.split() for line in node.check("cat /proc/mounts").splitlines()]
    tmp = [m for m in mounts if m[1] == "/tmp"]
    assert tmp and tmp[-1][2] == "tmpfs", mounts  # the kernel serves /tmp, not FUSE
    node.check("echo fast > /tmp/native")
    assert node.check("cat /.statelite/tmpfs/tmp/native") == "fast\n"  # in the tmpfs layer
    status, out = node.sh("echo x > /etc/hostname")
    assert status != 0 and "Read-only" in out  # everything else as before
    node.kill()
