"""A real kernel boots the litefs initramfs under qemu (TCG) into its litefs root.

The guest gets: the Debian kernel from /boot, the cpio.gz built by tools/mkinitramfs.py
(busybox, the hook, fuse/9p/virtio modules), the image and litetree sources on read-only 9p
shares, the persistent store on a writable 9p share, and the plan as a file on the image
share (no guest networking: ``-nic none``). The litefs daemon is Python; the guest mounts the
host's root read-only over 9p and binds /usr, the Python install and the project from it
(``litefs.hostbinds``). The image's init prints a marker naming the root filesystem type,
writes a persistent file and powers off.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from litefs.tools.cluster_sim import (
    DEMO_IMAGE_DIR,
    Cluster,
    build_image,
    demo_tables,
    load_demo_tables,
    python_binds,
)
from litefs.tools.mkinitramfs import main as mkinitramfs

from litefs import db, planner

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

GUEST_INIT = """#!/bin/sh
echo "litefs-node: init started"
root=$(awk '$2 == "/" { t = $3 } END { print t }' /proc/mounts)
echo "booted from the image" > /var/log/qemu-boot.log
sync
echo "LITEFS-QEMU-OK root=$root motd=$(cat /etc/motd | tr ' ' _) tmp=$(touch /tmp/x && echo rw)"
poweroff -f
"""


def _kernel() -> tuple[Path, str] | None:
    for vmlinuz in sorted(Path("/boot").glob("vmlinuz-*"), reverse=True):
        kver = vmlinuz.name[len("vmlinuz-"):]
        if (Path("/lib/modules") / kver / "modules.dep").exists() and os.access(vmlinuz, os.R_OK):
            return vmlinuz, kver
    return None


def test_qemu_boots_into_litefs_root(tmp_path: Path) -> None:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        pytest.skip("qemu-system-x86_64 is not installed (apt install qemu-system-x86)")
    found = _kernel()
    if found is None:
        pytest.skip("no /boot/vmlinuz-* with matching /lib/modules (apt install linux-image-amd64)")
    vmlinuz, kver = found
    accel = os.environ.get("LITEFS_QEMU_ACCEL", "tcg")

    # The MN side: tables in SQLite, the plan computed by the planner, exports on disk.
    c = Cluster(tmp_path)  # used for addresses and layout only: no namespaces here
    url = f"sqlite:///{tmp_path}/litefs.db"
    load_demo_tables(url, demo_tables(c))  # the shipped demo sample; n01 is in Tokyo
    engine = db.open_engine(url)
    plan = planner.node_plan(engine, "n01")
    engine.dispose()
    mn = c.mn_ip
    install = c.export("/install")
    image = build_image(c.export(DEMO_IMAGE_DIR + "/rootimg"))
    (image / "sbin" / "init").write_text(GUEST_INIT)
    (install / "plan-n01.json").write_text(plan.to_json())
    state = c.export("/nodedata")
    syncdirs = c.export("/syncdirs")
    (c.export("/syncdirs/tokyo/etc") / "motd").write_text("tokyo over 9p\n")
    c.export("/syncdirs/common")  # the sample's second litetree folder

    initrd = tmp_path / "initrd-statelite.gz"
    assert mkinitramfs(["-o", str(initrd), "--kver", kver]) == 0

    binds = ",".join(["/usr", *python_binds()])
    append = " ".join([
        "console=ttyS0 panic=-1 loglevel=3",
        f"root=nfs:{mn}:{DEMO_IMAGE_DIR}/rootimg:ro STATEMNT={mn}:/nodedata",
        f"XCAT={mn}:3001 NODE=n01 MNTOPTS=",
        "litefs.nfsmap=/nfs",
        f"litefs.plan=/nfs/{mn}/install/plan-n01.json",
        f"litefs.python={sys.executable}",
        f"litefs.9p=host:/host:ro,images:/nfs/{mn}/install:ro,"
        f"sources:/nfs/{mn}/syncdirs:ro,state:/nfs/{mn}/nodedata",
        f"litefs.hostbinds={binds}",
    ])

    def share(path: Path | str, tag: str, readonly: bool) -> list[str]:
        ro = ",readonly=on" if readonly else ""
        return ["-virtfs", f"local,path={path},mount_tag={tag},security_model=none{ro}"]

    cmd = [
        qemu, "-nographic", "-no-reboot", "-m", "1024", "-smp", "1", "-accel", accel,
        "-nic", "none", "-kernel", str(vmlinuz), "-initrd", str(initrd), "-append", append,
        *share("/", "host", True), *share(install, "images", True),
        *share(syncdirs, "sources", True), *share(state, "state", False),
    ]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=240, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"guest did not power off within 240 s; console:\n{(exc.stdout or b'')[-4000:]!r}")
    console = proc.stdout.decode(errors="replace")
    if "Could not access KVM" in console or "failed to initialize" in proc.stderr.decode():
        pytest.skip(f"qemu cannot run here: {proc.stderr.decode()[-300:]}")
    m = re.search(r"LITEFS-QEMU-OK root=(\S+) motd=(\S+) tmp=(\S+)", console)
    assert m, f"no marker; qemu exit {proc.returncode}; console:\n{console[-5000:]}"
    assert m.group(1) == "fuse.litefs"
    assert m.group(2) == "tokyo_over_9p"
    assert m.group(3) == "rw"
    assert (state / "n01" / "var" / "log" / "qemu-boot.log").read_text() == "booted from the image\n"
    print(f"qemu ({accel}) boot to marker and power-off: {time.monotonic() - started:.1f}s")
