"""Benchmark genimage and image-exec: first build, re-runs, image size, live install on a node.

    sudo .venv/bin/python tools/bench/bench_genimage.py [--profile compute] [--no-node]

Measured in one run, in a scratch installdir (packages come from /var/cache/litefs-genimage
when it has them, so "first build" is debootstrap+apt with a warm package cache unless the
cache is empty):

* first build (debootstrap + profile + node runtime + initrd), seconds;
* re-run with nothing changed, and re-run with one package added (``tree``): seconds and the
  ratio to the first build (issue target: under 20%);
* image size (du) and file count;
* ``litefs image-exec IMAGE -- dpkg -i small.deb`` wall time (snapshot, chroot, diff);
* with a node (default): a namespace node booted on the image, the same live install, and the
  time from the end of image-exec until the node runs the new binary and ``dpkg -s`` succeeds
  (issue target: at most 2 s).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from litefs.tools.cluster_sim import Cluster, demo_tables, load_demo_tables

BIN = Path(sys.executable).parent
SHIPPED = Path(__file__).resolve().parents[2] / "litefs/data/genimage"


def _timed(cmd: list[str], show: bool = False) -> float:
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit(f"bench_genimage: {' '.join(cmd)} failed:\n{r.stderr}")
    if show:  # genimage's phase lines: where the time went
        print("".join(f"    {line}\n" for line in r.stderr.splitlines()), end="")
    return dt


def _deb(work: Path, name: str, version: str) -> Path:
    pkg = work / f"{name}-{version}"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "usr/bin").mkdir(parents=True)
    (pkg / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: b <b@b>\n"
        "Description: bench\n")
    (pkg / f"usr/bin/{name}").write_text(f"#!/bin/sh\necho {name} {version}\n")
    (pkg / f"usr/bin/{name}").chmod(0o755)
    out = work / f"{name}_{version}.deb"
    subprocess.run(["dpkg-deb", "-b", str(pkg), str(out)], check=True, capture_output=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="compute", choices=("compute", "minimal"))
    ap.add_argument("--no-node", action="store_true", help="skip the namespace node part")
    args = ap.parse_args()
    prof = args.profile
    img = f"debian12-x86_64-statelite-{prof}"
    with tempfile.TemporaryDirectory(prefix="bench-genimage-") as tmp:
        work = Path(tmp)
        # The cluster (network namespaces) exists only for the node part; the builds come
        # first, in the folder that will be its exports.
        c = Cluster(work, net="10.81.0")
        installdir = c.export("/install")
        for share in ("/nodedata", "/syncdirs/tokyo/etc", "/syncdirs/london/etc",
                      "/syncdirs/common/etc"):
            c.export(share)
        url = f"sqlite:///{work}/litefs.db"
        load_demo_tables(url, demo_tables(c), [
            ({"key": "installdir"}, [f"site.value={installdir}"]),
            ({"node": "n01"}, ["nodetype.os=debian12", "nodetype.arch=x86_64",
                               f"nodetype.profile={prof}", f"nodetype.provmethod={img}"]),
        ])
        gen = [str(BIN / "genimage"), "--db", url, "-o", "debian12", "-a", "x86_64",
               "-p", prof]
        first = _timed(gen, show=True)
        same = _timed(gen)
        custom = installdir / "custom/netboot/debian"
        custom.mkdir(parents=True)
        (custom / f"{prof}.debian12.x86_64.pkglist").write_text(
            f"#INCLUDE:{SHIPPED / f'{prof}.debian12.x86_64.pkglist'}#\ntree\n")
        plus1 = _timed(gen, show=True)
        rootimg = installdir / f"netboot/debian12/x86_64/{prof}/rootimg"
        size = subprocess.run(["du", "-sxm", str(rootimg)], capture_output=True,
                              text=True).stdout.split()[0]
        files = int(subprocess.run(
            ["find", str(rootimg), "-xdev"], capture_output=True, text=True
        ).stdout.count("\n"))
        print(f"profile {prof}")
        print(f"first build            {first:7.1f} s")
        print(f"re-run, no change      {same:7.1f} s  ({same / first:5.1%} of first)")
        print(f"re-run, +1 package     {plus1:7.1f} s  ({plus1 / first:5.1%} of first; "
              f"target < 20%)")
        print(f"image size             {size:>7} MB, {files} files")
        deb = _deb(work, "bench-lfs", "1.0")
        (rootimg / "tmp" / deb.name).write_bytes(deb.read_bytes())
        ex = [str(BIN / "litefs"), "image-exec", "--db", url]
        t_exec = _timed([*ex, "--no-notify", img, "--", "dpkg", "-i", f"/tmp/{deb.name}"])
        print(f"image-exec dpkg -i     {t_exec:7.2f} s  (no node)")
        if args.no_node:
            return
        with c:
            c.start_mountd(url)
            image_dir = str(rootimg.parent).removeprefix(str(c.exports / c.mn_ip))
            init = rootimg / "sbin/bench-init"
            init.write_text("#!/bin/sh\necho \"litefs-node: init started\"\nexec /bin/sh\n")
            init.chmod(0o755)
            node = c.boot("n01", c.cmdline("n01", image_dir, extra="init=/sbin/bench-init"))
            boot = node.wait_shell(120)
            deb2 = _deb(work, "bench-lfs2", "1.0")
            (rootimg / "tmp" / deb2.name).write_bytes(deb2.read_bytes())
            t_exec2 = _timed([*ex, "--server", f"unix:{c.admin_socket}", img, "--", "dpkg",
                              "-i", f"/tmp/{deb2.name}"])
            t0 = time.monotonic()
            node.check("for i in $(seq 200); do bench-lfs2 >/dev/null 2>&1 && "
                       "dpkg -s bench-lfs2 >/dev/null 2>&1 && break; sleep 0.01; done; "
                       "bench-lfs2", timeout=30)
            visible = time.monotonic() - t0
            print(f"node boot on the image {boot:7.1f} s")
            print(f"image-exec + announce  {t_exec2:7.2f} s")
            print(f"visible on the node    {visible:7.2f} s after image-exec ended (target <= 2 s;"
                  f" includes one console round trip)")


if __name__ == "__main__":
    main()
