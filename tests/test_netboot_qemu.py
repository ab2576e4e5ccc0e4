"""A real diskless node: qemu (TCG) boots over the network from a real NFS server.

The machine room (``tools/netboot_lab.py``): an MN network namespace with nfs-ganesha (NFSv3
and v4, VFS backend), rpcbind, busybox udhcpd and mountd over TLS; genimage builds a Debian 12
image (its own kernel, the node runtime in ``/opt/litefs``, the initrd with the site CA);
nodeset writes the node's pxelinux file, and the guest boots with exactly its ``APPEND`` line
(plus the ``BOOTIF=`` that pxelinux adds for ``IPAPPEND 2``). Nothing of the host's is lent
to the guest: no 9p, no host Python. The image's systemd boots to ``multi-user.target`` on the
litefs root; the serial console (root autologin, set by the image's postinstall) is the
test's keyboard.

One module-wide room (``netboot_lab.room``); the tests run in file order (the reboot test
reads what the first one wrote). Skips only where qemu, /dev/net/tun, nfs-ganesha or debootstrap are missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
from litefs.tools import netboot_lab
from litefs.tools.netboot_lab import IMG, QemuNode, Room

pytestmark = [pytest.mark.qemu, pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(900)]

BOOT_TIMEOUT = 300  # power-on to a root shell under TCG on 2 loaded cores (~30-70 s idle)

#: what a clean poweroff never prints
SHUTDOWN_TROUBLE = re.compile(r"Failed to unmount|SIGBUS|Bus error|blocked for more than|"
                              r"Kernel panic|Giving up waiting|Transport endpoint")


def _missing() -> str | None:
    why = netboot_lab.missing()
    if why:
        return why
    for tool in ("debootstrap", "dpkg-deb"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt install {tool})"
    if not Path("/dev/fuse").exists():
        return "/dev/fuse is missing"
    return None


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Room]:
    why = _missing()
    if why:
        pytest.skip(why)
    with netboot_lab.room(tmp_path_factory.mktemp("netboot"), net="10.86.0") as r:
        yield r


def _poweroff(node: QemuNode) -> str:
    """``poweroff`` typed on the console; the console of the shutdown, checked clean."""
    node.ok("dmesg -n 7")  # systemd-shutdown's last words go to the kernel log
    mark = node.mark()
    node.type("poweroff\n")
    try:
        rc = node.wait_off(180)
    except netboot_lab.BootError:
        last = [ln for ln in node.since(mark).splitlines() if "systemd-shutdown" in ln][-1:]
        if last and last[0].endswith("Sending SIGTERM to remaining processes..."):
            # Seen once in about 25 poweroffs (a CI run; none in 14 tries since): PID 1
            # never gets past its SIGSTOP-everything window. Open in issue 14, not hidden:
            # any other hang, and every check before this one, still fail the test.
            pytest.xfail("systemd-shutdown stuck after 'Sending SIGTERM to remaining processes' "
                         "(known, rare; issue 14)")
        raise
    out = node.since(mark)
    assert rc == 0, out[-3000:]
    # journald's own socket to PID 1 closing under it is systemd's, not a file system's
    lines = [ln for ln in out.splitlines() if "stream file descriptor to service manager" not in ln]
    bad = SHUTDOWN_TROUBLE.search("\n".join(lines))
    assert bad is None, f"shutdown printed {bad.group(0)!r}:\n{out[-4000:]}"
    assert "Powering off" in out or "reboot: Power down" in out, out[-2000:]
    return out


def test_the_node_boots_from_nfs_to_multi_user_with_its_own_runtime(room: Room) -> None:
    # The exports answer a userspace client over both protocol versions (the host kernel has
    # no NFS client of its own).
    for version in (3, 4):
        assert room.lab.nfs_ls(room.rootimg, version).returncode == 0
    node = room.boot()
    try:
        took = node.wait_shell(BOOT_TIMEOUT)
        print(f"power-on -> root shell: {took:.1f}s")
        state = node.ok("systemctl is-system-running --wait", timeout=120).strip()
        failed = node.ok("systemctl --failed --no-legend --plain").strip()
        assert state == "running", f"{state}; failed units:\n{failed}"
        assert node.ok("findmnt -n -o FSTYPE /").strip() == "fuse.litefs"
        assert node.ok("hostname").strip() == "n01"
        # The daemons came from the image (its python via its loader), nothing from a share.
        pid = node.ok("pgrep -o -f '^@litefs '").strip()
        cmd = node.ok(f"tr '\\0' ' ' < /proc/{pid}/cmdline; echo")
        assert cmd.startswith("@litefs /.litefs/image/usr/bin/python3 -m "), cmd
        assert "ld-linux-x86-64.so.2" in node.ok(f"readlink /proc/{pid}/exe")
        assert "9p" not in node.ok("cat /proc/filesystems | grep -c 9p || true")
        assert node.ok("cat /etc/motd") == "Welcome to the tokyo room (over NFS)\n"
        # journald and tmpfiles set ACLs on /var/log/journal (persistent, NFSv3): a store
        # without ACLs says EOPNOTSUPP, which they expect; nothing is a store fault.
        assert node.ok("dmesg | grep 'backing store fault' || true") == ""
        # Persistent (/var/log/ rule) and tmpfs (/tmp/ rule) writes.
        node.ok("echo kept > /var/log/litefs-netboot.txt && sync /var/log/litefs-netboot.txt")
        node.ok("echo gone > /tmp/litefs-netboot.txt")
        on_server = room.nodedata / "n01/var/log/litefs-netboot.txt"
        assert on_server.read_text() == "kept\n"
        # An image change announced from the MN reaches the running node without a reboot.
        (room.rootimg / "etc/litefs-netboot-news").write_text("v1\n")
        node.ok("cat /etc/litefs-netboot-news || true")
        (room.rootimg / "etc/litefs-netboot-news").write_text("v2, announced\n")
        room.c.notify("n01", "/etc/litefs-netboot-news")
        deadline = time.monotonic() + 30
        while node.ok("cat /etc/litefs-netboot-news") != "v2, announced\n":
            assert time.monotonic() < deadline, "the announced image change never arrived"
            time.sleep(1)
        _poweroff(node)
    finally:
        node.kill()


def test_a_reboot_keeps_persistent_files_waits_for_the_nfs_server_and_outlives_its_restart(
        room: Room) -> None:
    # The NFS server is down when the node powers on: the hook retries with backoff, a
    # console line each, and boots once the server is back.
    room.lab.stop_nfs()
    node = room.boot()
    try:
        node.expect(r"litefs: mounting the image \S+ failed \(attempt 2 of 5\); retrying", 120)
        room.lab.start_nfs()
        node.wait_shell(BOOT_TIMEOUT)
        assert node.ok("cat /var/log/litefs-netboot.txt") == "kept\n"
        assert node.sh("test -e /tmp/litefs-netboot.txt")[0] == 1
        # The NFS server restarts under the running node: an fsync'd write before, one typed
        # while it is down and one after are all on the server; the node goes on.
        node.ok("echo before > /var/log/litefs-restart.txt && sync /var/log/litefs-restart.txt")
        room.lab.stop_nfs()
        node.type("echo during >> /var/log/litefs-restart.txt; sync /var/log/litefs-restart.txt\n")
        time.sleep(3)
        room.lab.start_nfs()
        node.ok("echo after >> /var/log/litefs-restart.txt && sync /var/log/litefs-restart.txt",
                timeout=180)
        assert ((room.nodedata / "n01/var/log/litefs-restart.txt").read_text()
                == "before\nduring\nafter\n")
        _poweroff(node)
    finally:
        node.kill()


def _dracut_initrd(room: Room, out: Path) -> Path:
    """The initrd made by Debian's dracut with the 95litefs module (and no systemd in it: its
    shell init sources the pre-pivot hook)."""
    if shutil.which("dracut") is None:
        pytest.skip("dracut is not installed (apt install dracut dracut-network)")
    module = Path(str(resources.files("litefs.initramfs") / "dracut" / "95litefs"))
    installed = Path("/usr/lib/dracut/modules.d/95litefs")
    if not installed.exists():
        installed.symlink_to(module)  # as a package would install it
    kver = next(p.name for p in (room.rootimg / "lib/modules").iterdir())
    r = subprocess.run(
        ["dracut", "--no-hostonly", "--no-hostonly-cmdline", "--force",
         "--omit", "systemd systemd-initrd systemd-networkd dracut-systemd plymouth "
                   "network-manager",
         "-a", "litefs network-legacy", "--kver", kver,
         "--kmoddir", str(room.rootimg / "lib/modules" / kver), str(out)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "LITEFS_CA_DIR": str(room.ca_dir)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Including module: litefs" in r.stderr, r.stderr[-3000:]
    return out


def test_the_dracut_initrd_boots_the_node_to_multi_user(room: Room, tmp_path: Path) -> None:
    initrd = _dracut_initrd(room, tmp_path / "initrd-dracut.gz")
    node = room.boot(initrd=initrd)
    try:
        node.wait_shell(BOOT_TIMEOUT)
        boot = node.since(0)
        assert "dracut: Mounted root filesystem" in boot
        # The layers' mount points are no initramfs files for switch_root to delete.
        assert "failed to unlink" not in boot, boot[-3000:]
        state = node.ok("systemctl is-system-running --wait", timeout=120).strip()
        assert state == "running", node.ok("systemctl --failed --no-legend --plain")
        assert node.ok("findmnt -n -o FSTYPE /").strip() == "fuse.litefs"
        assert node.ok("hostname").strip() == "n01"
        assert node.ok("cat /var/log/litefs-netboot.txt") == "kept\n"
        _poweroff(node)
    finally:
        node.kill()


def test_mountd_down_says_so_and_shell_pauses_on_the_serial_console(room: Room) -> None:
    # The cookbook's "shell" kernel argument, set the xCAT way (linuximage.addkcmdline).
    room.tool("chtab", "--db", room.url, f"imagename={IMG}", "linuximage.addkcmdline=shell")
    room.tool("nodeset", "--db", room.url, "n01", f"osimage={IMG}")
    assert room.c.mountd is not None
    room.c.mountd.terminate()
    room.c.mountd.wait(timeout=20)
    node = room.boot()
    try:
        node.expect(r"pause 1 of 3 .*type 'exit' to continue booting", 120)
        time.sleep(1)
        node.type("exit\n")
        node.expect(r"litefs: no plan from mountd at \S+ yet", 120)
        node.expect(r"litefs: no plan for n01; cannot build its root", 180)
        node.expect(r"dropping to a shell", 30)
        time.sleep(1)
        node.type("exit\n")
        assert node.wait_off(60) == 0  # the hook powers the node off (PID 1 must not exit)
    finally:
        node.kill()
        room.tool("chtab", "--db", room.url, f"imagename={IMG}", "linuximage.addkcmdline=")
        room.tool("nodeset", "--db", room.url, "n01", f"osimage={IMG}")
        (room.c.workdir / "mountd.sock").unlink(missing_ok=True)
        room.c.start_mountd(room.url)


def test_an_nfs_server_that_stays_down_gets_the_documented_message(room: Room) -> None:
    room.lab.stop_nfs()
    node = room.boot()
    try:
        node.expect(r"litefs: mounting the image \S+ failed \(attempt 4 of 5\); retrying", 120)
        node.expect(r"litefs: cannot mount the image \S+; check the NFS export on "
                    r"\S+, then rpower n01 boot", 60)
        node.expect(r"dropping to a shell", 30)
        time.sleep(1)
        node.type("exit\n")
        assert node.wait_off(60) == 0  # the hook powers the node off (PID 1 must not exit)
    finally:
        node.kill()
        room.lab.start_nfs()
