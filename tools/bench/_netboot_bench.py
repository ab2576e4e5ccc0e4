"""``bench_boot.py --qemu``: one image, three ways to boot it, on a real kernel under qemu.

The room is the netboot test's (``tools/netboot_lab.py``: nfs-ganesha, udhcpd, mountd in an
MN namespace, genimage's minimal Debian 12 image). Each way boots the same image on the same
virtual machine (2 vCPUs, ``--memory`` MiB, TCG unless ``LITEFS_QEMU_ACCEL``):

* **litefs**: genimage's initrd, the kernel command line nodeset wrote; the litefs view.
* **image in RAM** (Warewulf's default): the whole image as the initramfs, unpacked into the
  kernel's rootfs (tmpfs) at boot, ``rdinit=/sbin/init``; no NFS, no daemon.
* **plain NFS root**: the standalone initrd with a ten-line hook of our own instead of
  litefs's: the image read-only over NFS, a tmpfs on each directory the litefile table
  names, ``switch_root``.

Reported per way: power-on -> root shell on the console (host clock), systemd's own
``multi-user.target reached after`` plus the kernel's time (``systemd-analyze``), the RAM in
use after boot (``free``: used and shared, i.e. tmpfs), the initrd size; for litefs also the
tmpfs layer, the daemons' RSS and the boot hook's steps (hook start -> switch_root).
"""

from __future__ import annotations

import gzip
import os
import re
import shlex
import stat
import tempfile
import time
from pathlib import Path

from litefs.tools import mkinitramfs, netboot_lab
from litefs.tools.netboot_lab import QemuNode, Room

#: the plain NFS root's boot hook (replaces litefs's in the standalone initrd)
PLAIN_HOOK = r"""#!/bin/sh
set -f
for a in $(cat /proc/cmdline); do case "$a" in root=nfs:*) r=${a#root=nfs:} ;; esac; done
srv=${r%%:*}; rest=${r#*:}; path=${rest%%:*}
mkdir -p /sysroot
mount -t nfs -o ro,nolock,tcp,nfsvers=3 "$srv:$path" /sysroot || { echo "plain: no root"; sh; }
for d in @DIRS@; do mount -t tmpfs -o mode=755 plain "/sysroot$d"; done
chmod 1777 /sysroot/tmp /sysroot/var/tmp 2>/dev/null
for d in dev proc sys run; do mount --rbind "/$d" "/sysroot/$d"; done
exec switch_root /sysroot /sbin/init
"""


def image_cpio(root: Path) -> bytes:
    """The whole image as one ``newc`` archive (Warewulf's "container" image)."""
    entries: list[mkinitramfs.Entry] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            st = full.lstat()
            mode = st.st_mode
            if stat.S_ISLNK(mode):
                entries.append(mkinitramfs.Entry(rel, mode, os.readlink(full).encode()))
            elif stat.S_ISREG(mode):
                entries.append(mkinitramfs.Entry(rel, mode, full.read_bytes()))
            elif stat.S_ISDIR(mode):
                entries.append(mkinitramfs.Entry(rel, mode))
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                entries.append(mkinitramfs.Entry(rel, mode, rdev=(os.major(st.st_rdev),
                                                                  os.minor(st.st_rdev))))
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
    return mkinitramfs.cpio(entries)


def _gz(data: bytes, out: Path) -> Path:
    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                              compresslevel=1) as gz:
        gz.write(data)
    return out


def measure(node: QemuNode, timeout: float) -> dict[str, object]:
    shell = node.wait_shell(timeout)
    out: dict[str, object] = {"shell_s": round(shell, 1)}
    node.sh("systemctl is-system-running --wait", timeout=180)
    an = node.ok("systemd-analyze 2>&1 || true")
    m = re.search(r"=\s*([\d.]+)(min|s|ms)", an)
    kern = re.search(r"in ([\d.]+)(s|ms) \(kernel\)", an)
    mu = re.search(r"multi-user\.target reached after ([\d.]+)(min|s|ms)", an)

    def secs(v: re.Match[str] | None) -> float | None:
        if v is None:
            return None
        n = float(v.group(1))
        return n * {"min": 60, "s": 1, "ms": 0.001}[v.group(2)]

    k, u = secs(kern), secs(mu)
    out["multi_user_s"] = round(k + u, 1) if k is not None and u is not None else secs(m)
    free = node.ok("free -m | awk '/^Mem:/ {print $3, $5}'").split()
    out["used_mib"], out["shared_mib"] = int(free[0]), int(free[1])
    return out


def run(args: object, work: Path) -> int:
    why = netboot_lab.missing()
    if why:
        print(f"bench_boot --qemu: skipped: {why}")
        return 0
    mem = int(getattr(args, "memory", 2048))
    results: dict[str, dict[str, object]] = {}
    with netboot_lab.room(work, net="10.87.0") as room:
        results["litefs"] = _litefs(room, mem)
        results["image in RAM"] = _in_ram(room, mem, work)
        results["plain NFS root"] = _plain(room, mem, work)
    base = results["image in RAM"]
    print(f"\nqemu ({os.environ.get('LITEFS_QEMU_ACCEL', 'tcg')}, 2 vCPUs, {mem} MiB), one image,"
          " power-on -> multi-user.target:")
    print(f"{'boot':16} {'initrd MiB':>10} {'shell s':>8} {'multi-user s':>12} {'vs RAM':>7} "
          f"{'used MiB':>9} {'tmpfs MiB':>9}")
    for name, r in results.items():
        mu = r.get("multi_user_s")
        ratio = (f"{mu / base['multi_user_s']:.2f}x" if isinstance(mu, float)
                 and isinstance(base.get("multi_user_s"), float) else "-")
        print(f"{name:16} {r['initrd_mib']:>10} {r['shell_s']:>8} {mu!s:>12} {ratio:>7} "
              f"{r['used_mib']:>9} {r['shared_mib']:>9}")
    lit = results["litefs"]
    print(f"litefs: tmpfs layer {lit.get('tmpfs_layer')}, daemons RSS {lit.get('daemon_rss_mib')} "
          f"MiB; hook steps (s since kernel start): {lit.get('steps')}")
    return 0


def _poweroff(node: QemuNode) -> None:
    node.type("poweroff\n")
    try:
        node.wait_off(180)
    finally:
        node.kill()


def _litefs(room: Room, mem: int) -> dict[str, object]:
    node = room.boot(memory_mb=mem)
    try:
        r = measure(node, 400)
        pid = node.ok("pgrep -o -f '^@litefs '").strip()
        kib = node.ok(f"du -sk /proc/{pid}/root/.litefs/statelite | cut -f1").strip()
        r["tmpfs_layer"] = f"{int(kib or 0) / 1024:.1f} MiB"
        rss = node.ok("ps -eo rss,args | awk '$2 ~ /^@litefs/ {s += $1} END {print s}'").strip()
        r["daemon_rss_mib"] = round(int(rss or 0) / 1024, 1)
        log = node.ok("grep '^# \\[' /.statelite/statelite.log || true")
        r["steps"] = " ".join(f"{m.group(2)}@{m.group(1)}"
                              for m in re.finditer(r"^# \[([\d.]+)\] (\S+)", log, re.M))
        r["initrd_mib"] = round((room.imgdir / "initrd-statelite.gz").stat().st_size / 2**20, 1)
        _poweroff(node)
        return r
    finally:
        node.kill()


def _in_ram(room: Room, mem: int, work: Path) -> dict[str, object]:
    t = time.monotonic()
    initrd = _gz(image_cpio(room.rootimg), work / "image-in-ram.cpio.gz")
    print(f"image-in-RAM initrd: {initrd.stat().st_size / 2**20:.0f} MiB in "
          f"{time.monotonic() - t:.0f}s")
    return _measured_boot(room, initrd, mem, "rdinit=/sbin/init console=ttyS0,115200")


def _plain(room: Room, mem: int, work: Path) -> dict[str, object]:
    dirs = ["/tmp", "/var/tmp", "/var/log", "/var/lib", "/etc/ssh"]  # the cookbook's + systemd's
    hook = Path(tempfile.mkdtemp(dir=work)) / "plain.sh"
    hook.write_text(PLAIN_HOOK.replace("@DIRS@", " ".join(shlex.quote(d) for d in dirs)))
    kver = next(p.name for p in (room.rootimg / "lib/modules").iterdir())
    data = mkinitramfs.build(kver, list(mkinitramfs.DEFAULT_MODULES), Path("/bin/busybox"),
                             [(hook, "litefs/boot.sh")], moddir_root=room.rootimg / "lib/modules")
    return _measured_boot(room, _gz(data, work / "plain-nfs.cpio.gz"), mem, None)


def _measured_boot(room: Room, initrd: Path, mem: int, append: str | None) -> dict[str, object]:
    node = room.boot(initrd=initrd, append=append, memory_mb=mem)
    try:
        r = measure(node, 600)
        r["initrd_mib"] = round(initrd.stat().st_size / 2**20, 1)
        _poweroff(node)
        return r
    finally:
        node.kill()
