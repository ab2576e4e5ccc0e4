"""FUSE requests per workload, litefs against fuse-overlayfs, counted from libfuse's own trace.

Both daemons are libfuse 3 programs, so both run with libfuse's ``debug`` option (one
``opcode: NAME`` line per request on stderr); the counts are the kernel's requests, whatever
either daemon does with them. The tree is small (``--dirs`` x ``--files`` files plus an 8 MiB
file, as in tools/bench/bench_fs.py: litefs shows it under a tmpfs rule, untars into a
persistent rule); fuse-overlayfs has the tree as its lower layer. Workloads run warm, after
one ``find | xargs stat`` and ``cat`` of everything. Prints one line per workload and daemon:
total requests and the count per opcode. This says where a daemon's time can go at all: a
request the kernel never sends costs nothing, one it sends costs the daemon's per-request
floor (for pyfuse3 3.5 on trio, tens of µs of Python).

    sudo .venv/bin/python tools/bench/bench_fuse_ops.py [--dirs 10] [--files 100] [--keep]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fsbench_tree import (
    RULE_TREE,
    UNTAR_DIR,
    bench_plan,
    build_image,
    build_tree,
    make_tarball,
    tree_files,
)

#: ``litefs mount`` with libfuse's request trace: fuse_options() gets "debug" added
LITEFS_TRACED = (
    "import sys\n"
    "import litefs.fs.mount as m\n"
    "orig = m.fuse_options\n"
    "m.fuse_options = lambda cfg, read_only=False: orig(cfg, read_only) | {'debug'}\n"
    "from litefs.tools.litefs_cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
OPCODE = re.compile(rb"opcode: (\w+)")


def wait_mounted(path: Path, log: Path | None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.ismount(path) and (log is None or (log.exists() and "ready:" in log.read_text())):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{path} was not mounted within {timeout}s")


class Traced:
    """One daemon in the foreground with its trace on stderr, read incrementally."""

    def __init__(self, name: str, argv: list[str], mnt: Path, trace: Path, log: Path | None) -> None:
        self.name = name
        self.mnt = mnt
        self.trace = trace
        self._pos = 0
        with open(trace, "wb") as err:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        wait_mounted(mnt, log)

    def counts(self) -> collections.Counter[str]:
        """Requests since the last call (after a pause: async RELEASEs and FORGETs land)."""
        time.sleep(0.3)
        data = self.trace.read_bytes()
        new, self._pos = data[self._pos :], len(data)
        return collections.Counter(m.group(1).decode() for m in OPCODE.finditer(new))

    def stop(self) -> None:
        subprocess.run(["umount", str(self.mnt)], check=False)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dirs", type=int, default=10)
    p.add_argument("--files", type=int, default=100, help="files per directory")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory and the traces")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_fuse_ops: needs root (FUSE mounts, allow_other)", file=sys.stderr)
        return 2
    if shutil.which("fuse-overlayfs") is None:
        print("bench_fuse_ops: fuse-overlayfs is not installed", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="litefs-fuse-ops-", dir="/var/tmp"))
    daemons: list[Traced] = []
    try:
        tree, image = work / "tree", work / "image"
        build_tree(tree, args.dirs, args.files, 8 << 20)
        plan = bench_plan()
        (work / "plan.json").write_text(plan.to_json())
        build_image(image, tree, plan)
        make_tarball(work / "stdlib.tar")
        catlist = work / "catlist"
        catlist.write_bytes(b"\0".join(f.encode() for f in tree_files(args.dirs, args.files)))
        for d in ("mnt-lf", "mnt-fo", "tmpfs", "persistent", "fo-upper", "fo-work"):
            (work / d).mkdir()
        lf_argv = [
            sys.executable, "-c", LITEFS_TRACED, "mount", str(work / "mnt-lf"), "--plan", str(work / "plan.json"),
            "--image", str(image), "--tmpfs", str(work / "tmpfs"), "--persistent", str(work / "persistent"),
            "--foreground", "--no-bypass", "--log", str(work / "litefs.log"),
        ]  # fmt: skip
        fo_opts = f"lowerdir={tree},upperdir={work / 'fo-upper'},workdir={work / 'fo-work'}"
        daemons.append(Traced("litefs", lf_argv, work / "mnt-lf", work / "litefs.trace", work / "litefs.log"))
        daemons.append(Traced("fuse-overlayfs", ["fuse-overlayfs", "-f", "-d", "-o", fo_opts, str(work / "mnt-fo")],
                              work / "mnt-fo", work / "fuse-overlayfs.trace", None))
        roots = {"litefs": str(work / "mnt-lf") + RULE_TREE, "fuse-overlayfs": str(work / "mnt-fo")}
        untar = {"litefs": str(work / "mnt-lf") + UNTAR_DIR, "fuse-overlayfs": str(work / "mnt-fo")}

        def sh(cmd: str, cwd: str) -> None:
            subprocess.run(["bash", "-c", cmd], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        commands = {
            "warm-up": f"find . -print0 | xargs -0 stat; xargs -0 -a {catlist} cat; cat big.bin",
            "find": "find .",
            "find|xargs stat": "find . -print0 | xargs -0 stat",
            "cat small files": f"xargs -0 -a {catlist} cat",
            "dd big file": "dd if=big.bin of=/dev/null bs=1M",
        }
        rows: list[tuple[str, str, collections.Counter[str]]] = []
        for dm in daemons:
            dm.counts()  # mount-time requests (INIT, the bypass and readiness probes)
        for what, cmd in commands.items():
            for dm in daemons:
                sh(cmd, roots[dm.name])
                rows.append((what, dm.name, dm.counts()))
        for dm in daemons:
            sh(f"tar -xf {work / 'stdlib.tar'}", untar[dm.name])
            rows.append(("untar stdlib", dm.name, dm.counts()))
        print(f"FUSE requests per workload ({args.dirs * args.files:,} small files in {args.dirs} dirs, "
              "8 MiB file, stdlib tarball; warm; libfuse debug trace)")
        for what, name, c in rows:
            if what == "warm-up":
                continue
            ops = " ".join(f"{k}={v}" for k, v in c.most_common())
            print(f"{what:18s} {name:15s} {sum(c.values()):7d}  {ops}")
    finally:
        for dm in daemons:
            dm.stop()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
