"""``litefs demo``: a two-node diskless cluster on this machine, booted for real, then removed.

What it does, printing each step: build a small busybox image and a litefs initramfs, load the
shipped demo tables (``litefs/data/demo``: nodes n01-n04 in the Tokyo and London rooms, the
cookbook's litetree-by-room example, tmpfs/persistent/ro rows) into an SQLite file, moved onto
the namespace bridge's addresses, run ``nodeset`` for two nodes (n01 in Tokyo, n03 in London), start mountd in a
management network namespace, boot each node in its own namespaces with the kernel command
line nodeset wrote, and show from inside each node its root mount, its ``/etc/motd`` and its
writable paths; ``litefs explain`` for the same paths on the MN; an image change reaching a
running node after ``litefs notify``; and a reboot that keeps persistent files and drops tmpfs
ones. Needs root (namespaces, FUSE). Everything lives in one folder, removed at the end
unless ``--keep``.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path

from litefs.errors import LitefsError
from litefs.wellknown import DEFAULT_PORT

NODES = ("n01", "n03")  # one per room of the shipped sample
SHOW_PATHS = ("/etc/motd", "/etc/adjtime", "/var/log/boot.log", "/etc/hostname")


def setup_demo(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.add_argument("--workdir", help="folder for the demo cluster (default: a new temp folder)")
    parser.add_argument("--keep", action="store_true", help="leave the folder (tables, exports, "
                        "tftpboot, logs) in place afterwards")
    return run_demo


def _say(title: str) -> None:
    print(f"\n== {title}", flush=True)


def _indent(text: str) -> str:
    return "".join(f"   {line}\n" for line in text.rstrip("\n").splitlines())


def _kernel_cmdline(pxe_file: Path) -> str:
    """The APPEND line nodeset wrote, without the boot loader's ``initrd=``."""
    for line in pxe_file.read_text().splitlines():
        if line.strip().startswith("APPEND "):
            args = line.strip().split()[1:]
            return " ".join(a for a in args if not a.startswith("initrd="))
    raise LitefsError(f"{pxe_file} has no APPEND line")


def run_demo(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise LitefsError("litefs demo needs root (network/mount/PID namespaces and FUSE); "
                          "run: sudo ./tools/demo.sh")
    for tool in ("ip", "unshare", "busybox"):
        if shutil.which(tool) is None:
            raise LitefsError(f"litefs demo needs {tool}; run ./tools/setup.sh")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="litefs-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        _demo(work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"\n(kept {work})")
    return 0


def _demo(work: Path) -> None:
    from litefs.tools import litefs_cli, mkinitramfs, nodeset_cmd
    from litefs.tools.cluster_sim import (
        DEMO_IMAGE,
        DEMO_IMAGE_DIR,
        DEMO_ROOMS,
        Cluster,
        demo_tables,
        load_demo_tables,
        stage_demo,
    )

    from litefs import db, planner

    url = f"sqlite:///{work}/litefs.db"
    tftp = work / "tftpboot"
    with Cluster(work) as c:
        print(f"litefs demo: a management node (network namespace {c.mn_ns}, mountd on "
              f"{c.mn_ip}:{DEFAULT_PORT}) and two diskless nodes, {NODES[0]} ({DEMO_ROOMS[NODES[0]]}) and "
              f"{NODES[1]} ({DEMO_ROOMS[NODES[1]]}), each in its own network, mount and PID "
              "namespace, booting through the real initramfs hook. NFS is stood in for by "
              "bind mounts of folders under the demo folder.", flush=True)
        _say(f"MN: image, exports and tables in {work}")
        image = stage_demo(c)
        (image / "etc" / "hostname").write_text("from-the-image\n")
        imgdir = image.parent  # rootimgdir on this host: kernel, initrd, rootimg/
        kernels = sorted(Path("/boot").glob("vmlinuz-*"))
        if kernels and os.access(kernels[-1], os.R_OK):
            shutil.copyfile(kernels[-1], imgdir / "kernel")
        else:
            (imgdir / "kernel").write_bytes(b"placeholder kernel\n")
        with redirect_stdout(io.StringIO()):
            try:
                mkinitramfs.main(["-o", str(imgdir / "initrd-statelite.gz")])
            except SystemExit:
                pass
        if not (imgdir / "initrd-statelite.gz").exists():
            (imgdir / "initrd.gz").write_bytes(b"placeholder initrd\n")
        tables = demo_tables(c)
        # This host keeps the image under the demo folder; the nodes mount it at the
        # sample's path ('//' = verbatim NFS path, as xCAT's noderes.nfsdir).
        settings = [({"imagename": DEMO_IMAGE}, [f"linuximage.rootimgdir={imgdir}"]),
                    ({"node": "compute"}, [f"noderes.nfsdir=/{DEMO_IMAGE_DIR}"])]
        load_demo_tables(url, tables, settings)
        print(_indent("the shipped demo tables (litefs/data/demo), on the bridge's addresses:\n"
                      "litefile:\n" + tables["litefile"] + "litetree:\n" + tables["litetree"]
                      + "statelite:\n" + tables["statelite"] + "then:\n"
                      + "".join(f"chtab {','.join(f'{k}={v}' for k, v in keys.items())} "
                                f"{' '.join(a)}\n" for keys, a in settings)))

        _say(f"MN: nodeset {','.join(NODES)} osimage={DEMO_IMAGE}")
        rc = nodeset_cmd.main(["--db", url, "--tftpdir", str(tftp), ",".join(NODES),
                               f"osimage={DEMO_IMAGE}"])
        if rc != 0:
            raise LitefsError("nodeset failed (see above)")
        print(_indent((tftp / "pxelinux.cfg" / "n01").read_text()))

        _say(f"MN: mountd on {c.mn_ip}:{DEFAULT_PORT} (TLS, site CA in {work / 'ca'})")
        c.start_mountd(url)

        nodes = {}
        for name in NODES:
            room = DEMO_ROOMS[name]
            cmdline = _kernel_cmdline(tftp / "pxelinux.cfg" / name) + " litefs.nfsmap=/nfs"
            _say(f"{name} ({room} room): power on")
            node = c.boot(name, cmdline)
            secs = node.wait_shell(90)
            print(_indent(f"booted to a shell in {secs:.1f}s"))
            nodes[name] = node
            node.check("echo booted >> /var/log/boot.log; echo scratch > /tmp/scratch")
            out = node.check(
                "grep ' / ' /proc/mounts | tail -1; echo; "
                "for f in " + " ".join(SHOW_PATHS) + "; do printf '%-20s ' $f; "
                "head -1 $f 2>&1; done; echo; "
                "echo '# effective tree of the writable and overlaid paths:'; "
                "find /etc /tmp /var/log | sort | while read -r p; do "
                "if [ -d $p ]; then echo \"  $p/\"; else echo \"  $p\"; fi; done; "
                "echo '# ls /.statelite /.statelite/persistent/var/log:'; "
                "ls /.statelite /.statelite/persistent/var/log; "
                "echo '# echo x > /etc/hostname:'; echo x > /etc/hostname; true"
            )
            print(_indent(out))

        engine = db.open_engine(url)
        try:
            plan = planner.node_plan(engine, "n01")
        finally:
            engine.dispose()
        _say(f"MN: litefs explain n01 PATH (plan: {len(plan.rules)} rules)")
        for path in SHOW_PATHS:
            buf = io.StringIO()
            with redirect_stdout(buf):
                litefs_cli.main(["explain", "n01", path, "--db", url, "--image", str(image),
                                 "--source-root", str(c.exports), "--persistent",
                                 str(c.exports / c.mn_ip / "nodedata" / "n01")])
            print(_indent(buf.getvalue()))

        _say("MN: change /etc/motd for Tokyo, then 'litefs notify n01 /etc/motd'")
        (c.exports / c.mn_ip / "syncdirs" / "tokyo" / "etc" / "motd").write_text(
            "Tokyo: maintenance tonight\n")
        print(_indent(c.notify("n01", "/etc/motd") or "(notified)"))
        print(_indent("n01 /etc/motd: " + nodes["n01"].check("cat /etc/motd")))
        print(_indent("n03 /etc/motd: " + nodes["n03"].check("cat /etc/motd")))

        _say("n01: reboot (tmpfs is lost, the persistent store is kept)")
        node = c.boot("n01", _kernel_cmdline(tftp / "pxelinux.cfg" / "n01") + " litefs.nfsmap=/nfs")
        node.wait_shell(90)
        print(_indent(node.check("echo 'booted again' >> /var/log/boot.log; "
                                 "cat /var/log/boot.log; cat /tmp/scratch 2>&1; true")))

        _say("cleaning up: nodes off, mountd stopped, namespaces removed")
