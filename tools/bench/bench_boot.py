"""Boot benchmark: litefs namespace boots vs the classic rc.statelite emulation, RAM after boot,
and many nodes booting at once against one mountd. Prints medians and ratios; run as root.

    .venv/bin/python tools/bench/bench_boot.py [--runs 5] [--nodes 50] [--debootstrap] [--source-only]
    .venv/bin/python tools/bench/bench_boot.py --qemu [--memory 2048]

``--qemu`` is the real-kernel comparison instead (``tools/bench/_netboot_bench.py``): one
genimage image booted by qemu over a real NFS server three ways (litefs; the whole image in
RAM as Warewulf does; a plain read-only NFS root with tmpfs on the litefile folders), with
power-on -> multi-user.target, RAM in use after boot, initrd sizes and the hook's steps.

Tables: the shipped demo sample (``litefs/data/demo``, via ``litefs.tools.cluster_sim.demo_tables``)
with ``--nodes`` extra nodes in the Tokyo room and the cookbook's RedHat litefile list
(``litefs/data/litefile-redhat.csv``) in place of the sample's litefile.

Image, two modes:

* default: a busybox tree whose litefile-listed paths are filled from this host's own files
  (``/etc/ssh``, ``/var/log``, ``/var/cache/man``…; the host's big scratch folders ``/tmp`` and
  ``/var/tmp`` are left empty, as on a fresh image). Needs nothing but busybox.
* ``--debootstrap``: a real Debian root, ``debootstrap --variant=minbase bookworm`` from the
  mirror this machine's apt uses, built once and cached under ``/var/tmp/litefs-bench/``
  (``--debootstrap-cache``). Its ``/sbin/init`` is left alone; the nodes boot with
  ``init=/sbin/litefs-bench-init`` (a two-line script added to the image that starts a shell).

* **boot-to-shell, litefs**: a namespace node (``litefs.tools.cluster_sim``) from "hook started"
  (console line) to the image's shell answering, plan fetched over TLS from mountd.
* **boot, classic**: ``litefs.classic.classic_boot`` (rc.statelite emulation: tmpfs, persistent
  bind, copies/links for every litefile entry) on a liteimg'd copy of the same image, in a
  private mount namespace, without the final tree walk; plan read from the same tables.
* **RAM after boot**: bytes of regular files the node's writable layers hold right after
  boot: litefs = its tmpfs layer; classic = files under the litefile paths of its effective
  tree (rc.statelite copies every listed path into tmpfs).
* **N nodes at once**: all nodes powered on together; time until every shell answers, and
  the per-node boot-to-shell median, against the single-node median.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from litefs.tools.cluster_sim import Cluster, ClusterNode

SKIP_HOST = ("/tmp", "/var/tmp", "/var/run", "/var/lock", "/etc/mtab")
DEBOOTSTRAP_CACHE = Path("/var/tmp/litefs-bench/bookworm-minbase")
BENCH_INIT = "/sbin/litefs-bench-init"


def apt_mirror() -> str:
    """The Debian mirror URL this machine's apt uses (deb822 or one-line sources)."""
    files = [*sorted(Path("/etc/apt").glob("sources.list.d/*")), Path("/etc/apt/sources.list")]
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            m = re.match(r"\s*(?:URIs:|deb)\s+(?:\[[^]]*\]\s+)?(\S+)", line)
            if m and "security" not in m.group(1):
                return m.group(1)
    return "http://deb.debian.org/debian"


def debootstrap_image(cache: Path) -> Path:
    """The cached minbase bookworm root, built with debootstrap on first use."""
    if cache.is_dir() and (cache / "etc" / "debian_version").exists():
        return cache
    tool = shutil.which("debootstrap")
    if tool is None:
        raise SystemExit("bench_boot --debootstrap: apt-get install debootstrap first")
    partial = cache.with_name(cache.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    mirror = apt_mirror()
    print(f"building {cache} with debootstrap --variant=minbase bookworm {mirror} ...",
          flush=True)
    subprocess.run([tool, "--variant=minbase", "bookworm", str(partial), mirror], check=True,
                   stdout=subprocess.DEVNULL)
    partial.rename(cache)
    return cache


def stage_debootstrap(image: Path, cache: Path) -> None:
    """Replace the busybox demo image with a copy of the Debian root (plus the bench init)."""
    keep_issue = (image / "etc" / "issue").read_text()
    shutil.rmtree(image)
    subprocess.run(["cp", "-a", "--reflink=auto", str(cache), str(image)], check=True)
    from litefs.tools.cluster_sim import IMAGE_INIT

    init = image / BENCH_INIT.lstrip("/")
    init.write_text(IMAGE_INIT)
    init.chmod(0o755)
    (image / "etc" / "issue").write_text(keep_issue)


def redhat_litefile() -> str:
    return (resources.files("litefs") / "data" / "litefile-redhat.csv").read_text()


def listed_paths(csv_text: str) -> list[str]:
    out = []
    for line in csv_text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        out.append(line.split(",")[1].strip().strip('"'))
    return out


def populate(image: Path, paths: list[str]) -> None:
    """Fill the listed paths from this host (what a real image would have there)."""
    for p in paths:
        src = p.rstrip("/")
        if src in SKIP_HOST or not os.path.exists(src):
            continue
        dst = image / src.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if os.path.isdir(src) and not os.path.islink(src):
            shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True,
                            ignore_dangling_symlinks=True)
        else:
            shutil.copy2(src, dst, follow_symlinks=False)


def file_bytes(root: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue
            if not os.path.islink(os.path.join(dirpath, f)):
                total += st.st_size
    return total


def _size(path: Path) -> int:
    try:
        return 0 if path.is_symlink() else path.stat().st_size
    except OSError:
        return 0


def compile_project() -> str:
    """Write the project's ``.pyc`` files, as installing the package does: the nodes bind the
    source tree read-only and cannot write them, so without this every Python a node starts
    (plan fetch, daemon, watcher, meta writer) compiles litefs from source (~35 ms of the
    daemon's ~120 ms start-up, measured with a builtins.compile hook)."""
    import compileall

    import litefs

    root = Path(litefs.__file__).resolve().parent.parent
    dirs = [root / d for d in ("litefs", "initramfs", "mountd", "tools") if (root / d).is_dir()]
    ok = all(compileall.compile_dir(str(d), quiet=1) for d in dirs)
    return f"compiled for {', '.join(d.name for d in dirs)} in {root}" + ("" if ok else " (some failed)")


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def daemon_root(node: ClusterNode) -> str:
    pid = node.pid1()
    for kid in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        if Path(f"/proc/{kid}/cmdline").read_bytes().split(b"\0")[0] == b"@litefs":
            return f"/proc/{kid}/root"
    raise RuntimeError("no @litefs daemon")


def steps(log: str) -> dict[str, float]:
    """Seconds per boot step from the hook's ``# [uptime] step`` stamps."""
    marks = []
    for line in log.splitlines():
        m = re.match(r"# \[([0-9.]+)\] (\S+)$", line)
        if m:
            marks.append((m.group(2), float(m.group(1))))
    return {a[0]: b[1] - a[1] for a, b in itertools.pairwise(marks)}


def litefs_boot_once(c: Cluster, name: str, extra: str) -> tuple[float, float, dict[str, float]]:
    from litefs.tools.cluster_sim import DEMO_IMAGE_DIR

    node = c.boot(name, c.cmdline(name, DEMO_IMAGE_DIR, extra=extra))
    node.expect("litefs: booting", 60)
    t_hook = time.monotonic()
    total = node.wait_shell(90)
    hook = time.monotonic() - t_hook
    return hook, total, steps(node.check("cat /.statelite/statelite.log"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--nodes", type=int, default=50)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--debootstrap", action="store_true",
                   help="boot a debootstrap minbase bookworm image instead of busybox")
    p.add_argument("--debootstrap-cache", type=Path, default=DEBOOTSTRAP_CACHE)
    p.add_argument("--source-only", action="store_true",
                   help="do not compile the project's bytecode first (every node process then "
                   "compiles litefs from source, which an installed package never does)")
    p.add_argument("--qemu", action="store_true",
                   help="real kernels under qemu over real NFS: litefs vs image-in-RAM vs plain "
                   "NFS root (see the module help)")
    p.add_argument("--memory", type=int, default=2048, help="--qemu: guest RAM in MiB")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_boot: needs root (namespaces, FUSE)", file=sys.stderr)
        return 2
    if args.qemu:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import _netboot_bench

        with tempfile.TemporaryDirectory(prefix="litefs-netboot-bench.") as work:
            return _netboot_bench.run(args, Path(work))
    # A plain kill must still tear the cluster down (namespaces, nodes, mountd).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from litefs.tools import liteimg_cmd
    from litefs.tools.cluster_sim import (
        DEMO_IMAGE,
        Cluster,
        demo_tables,
        load_demo_tables,
        stage_demo,
    )

    from litefs import db, planner
    from litefs.classic import ClassicConfig, classic_boot

    cache = debootstrap_image(args.debootstrap_cache) if args.debootstrap else None
    work = Path(tempfile.mkdtemp(prefix="litefs-bench-boot-", dir="/var/tmp"))
    litefile = redhat_litefile()
    paths = listed_paths(litefile)
    names = [f"n{i:03d}" for i in range(1, args.nodes + 1)]
    rooms = dict.fromkeys(names, "tokyo")
    extra = f"init={BENCH_INIT}" if cache else ""
    try:
        with Cluster(work) as c:
            image = stage_demo(c)
            if cache:
                stage_debootstrap(image, cache)
            else:
                populate(image, paths)
            url = f"sqlite:///{work}/litefs.db"
            tables = demo_tables(c, extra_nodes=rooms, litefile=litefile)
            load_demo_tables(url, tables)
            c.start_mountd(url)
            kind = f"debootstrap minbase bookworm ({cache})" if cache else "busybox + host files"
            print(f"image: {kind}, {file_bytes(str(image)) / 1e6:.1f} MB of files; litefile: "
                  f"{len(paths)} RedHat cookbook rows; {args.runs} runs each")
            print("python bytecode: " + ("none for the project (--source-only)" if args.source_only
                                         else compile_project()))

            # --- litefs, one node at a time ------------------------------------------------
            hook, total = [], []
            per_step: dict[str, list[float]] = {}
            ram_litefs = 0
            for i in range(args.runs):
                h, t, st = litefs_boot_once(c, names[0], extra)
                hook.append(h)
                total.append(t)
                for k, v in st.items():
                    per_step.setdefault(k, []).append(v)
                if i == 0:
                    ram_litefs = file_bytes(daemon_root(c.nodes[names[0]]) +
                                            "/.litefs/statelite/tmpfs")
                c.nodes.pop(names[0]).kill()

            # --- classic, same image liteimg'd, same plan ----------------------------------
            cdir = work / "classic"
            # cp -a: a real root has device nodes (/dev/zero...), which copytree would read.
            cdir.mkdir()
            subprocess.run(["cp", "-a", "--reflink=auto", str(image), str(cdir / "rootimg")],
                           check=True)
            url2 = f"sqlite:///{work}/classic.db"
            load_demo_tables(url2, tables, [({"imagename": DEMO_IMAGE},
                                              [f"linuximage.rootimgdir={cdir}"])])
            if liteimg_cmd.main(["--db", url2, DEMO_IMAGE]) != 0:
                raise SystemExit("liteimg failed")
            engine = db.open_engine(url)
            plan = planner.node_plan(engine, names[0])
            engine.dispose()
            sources = {f"{s.server}:{s.path}": str(c.exports / (s.server or "") /
                                                   s.path.lstrip("/")) for s in plan.sources}
            pers = work / "classic-persistent"
            pers.mkdir()
            classic = []
            for _ in range(args.runs):
                cfg = ClassicConfig.for_plan(plan, str(cdir / "rootimg"), sources,
                                             persistent=str(pers), manifest=False)
                t0 = time.monotonic()
                res = classic_boot(cfg)
                classic.append(time.monotonic() - t0)
            # rc.statelite copies every listed path (from .default, or a litetree hit) into
            # its tmpfs at every boot: that is what the classic node holds in RAM.
            ram_classic = sum(file_bytes(str(cdir / "rootimg" / ".default" / q.strip("/")))
                              if (cdir / "rootimg" / ".default" / q.strip("/")).is_dir()
                              else _size(cdir / "rootimg" / ".default" / q.strip("/"))
                              for q in paths)
            copies = sum(1 for line in res.log if line.startswith("cp "))
            classic_t = classic

            print("\nboot-to-shell, one node (median of runs):")
            print(f"  litefs  hook start -> shell      {median(hook):7.3f} s")
            print(f"  litefs  power on  -> shell       {median(total):7.3f} s")
            print(f"  classic rc.statelite emulation   {median(classic_t):7.3f} s")
            print(f"  ratio litefs(hook->shell)/classic {median(hook) / median(classic_t):6.2f}x")
            print("  litefs hook steps (median):")
            for k, v in per_step.items():
                print(f"    {k:<24} {median(v):7.3f} s")
            print("\nRAM held by writable layers right after boot:")
            print(f"  litefs  tmpfs layer               {ram_litefs / 1024:10.1f} KiB")
            print(f"  classic copies into tmpfs         {ram_classic / 1024:10.1f} KiB"
                  f"  ({copies} cp commands in its statelite.log)")
            if ram_litefs:
                print(f"  ratio classic/litefs              {ram_classic / ram_litefs:10.1f}x")

            # --- N nodes at once ------------------------------------------------------------
            from litefs.tools.cluster_sim import DEMO_IMAGE_DIR

            t0 = time.monotonic()
            nodes = [c.boot(n, c.cmdline(n, DEMO_IMAGE_DIR, extra=extra)) for n in names]
            times: dict[str, float] = {}
            errors: list[str] = []

            def wait(node: ClusterNode) -> None:
                try:
                    times[node.name] = node.wait_shell(600)
                except Exception as exc:  # report, do not hide
                    errors.append(f"{node.name}: {str(exc)[:300]}")

            threads = [threading.Thread(target=wait, args=(n,)) for n in nodes]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            all_up = time.monotonic() - t0
            print(f"\n{args.nodes} nodes powered on at once, one mountd:")
            print(f"  nodes up                          {len(times)}/{args.nodes}")
            print(f"  all shells answering after        {all_up:7.2f} s")
            print(f"  per-node power on -> shell median {median(list(times.values())):7.2f} s")
            print(f"  ratio all-up / single-node boot   {all_up / median(total):7.1f}x")
            for e in errors[:5]:
                print(f"  failed: {e}")
    finally:
        if args.keep:
            print(f"(kept {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
