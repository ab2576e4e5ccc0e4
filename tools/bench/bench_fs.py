"""Benchmark: the same tree presented natively, by overlayfs, fuse-overlayfs and litefs.

One run builds one tree (10,000 small files in 100 directories plus one big file) and shows it
through six presenters: a native directory, kernel overlayfs and fuse-overlayfs (lower = the
tree, upper in a tmpfs), litefs on a rule-covered path, litefs ``--bypass`` on a rule-free
path, and litefs ``--bypass --native-writes`` (writable rule folders the kernel serves: bound
from their layer where the image has nothing below them, a kernel overlay on the tmpfs layer
where it has, as over the tree at ``/var/cache/man``) on the rule-covered path (the cookbook's
RedHat litefile list plus a persistent rule); its create+write and untar go into that
overlay-served tmpfs folder too, so all four of its workloads measure the overlay path against
kernel overlayfs on the same tree. It times ``find``,
``find | xargs stat``, ``cat`` of every small file, a sequential read of the big file (cold:
caches dropped and FUSE remounted; warm), creating 10,000 small files in a tmpfs rule and
untarring the Python stdlib into a persistent rule; then the time from ``litefs mount`` to a
ready mount for images of 10,000 and 100,000 files (``--ready-scale`` adds a bigger one) and
the daemon's peak RSS after walking the 100,000-file image. Every number is the median of
``--repeat`` runs; the table gives ratios against native and fuse-overlayfs, and the issue's
targets are printed as PASS/MISS (never asserted). A second table gives the CPU seconds of
each workload (its processes plus the FUSE daemon), which load from other jobs barely moves.
Write targets: native writes into the tmpfs (create) or the disk (untar); overlayfs and
fuse-overlayfs into their tmpfs upper; litefs into its tmpfs layer (a tmpfs) and its
persistent layer (the disk). Everything is unmounted on exit, also on errors and signals.

    sudo .venv/bin/python tools/bench/bench_fs.py [--quick] [--repeat 5] [--big-size 1G]
        [--ready-scale 1000000] [--only native,litefs,...] [--json out.json] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fsbench_mounts import (
    Cleanup,
    FuseOverlay,
    KernelOverlay,
    Litefs,
    Native,
    Presenter,
    drop_caches,
    guarded_run,
    litefs_umount,
    timed_litefs_mount,
    vm_hwm,
)
from _fsbench_report import (
    BIG_COLD,
    BIG_WARM,
    BYPASS,
    CAT,
    CAT_COLD,
    CLI_START,
    CREATE,
    FIND,
    FUSE_OVERLAY,
    LITEFS,
    NATIVE_WRITES,
    OVERLAY,
    PRESENTERS,
    READY,
    READY_BYPASS,
    RSS_MAIN,
    RSS_WALK,
    STAT,
    UNTAR,
    Results,
    evaluate_targets,
    render_checks,
    render_table,
)
from _fsbench_tree import (
    bench_plan,
    build_fixture,
    build_scale_image,
)

RUN_TIMEOUT = 1800.0
CREATE_WORKER = Path(__file__).resolve().parent / "_fsbench_create.py"
LITEFS_BIN = Path(sys.executable).parent / "litefs"


@dataclass
class Config:
    n_dirs: int
    per_dir: int
    big_size: int
    ready_sizes: list[int]
    rss_size: int
    repeat: int
    presenters: list[str]


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Config]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small tree, 16 MiB big file, small images (smoke run)")
    p.add_argument("--repeat", type=int, default=None, help="runs per measurement, median reported (default 5; quick 1)")
    p.add_argument("--big-size", default=None, help="size of the big file (default 1G; quick 16M)")
    p.add_argument("--ready-scale", type=int, default=None, metavar="N", help="also time mount->ready on an N-file image")
    p.add_argument("--only", default=",".join(PRESENTERS), help=f"comma list of presenters ({','.join(PRESENTERS)})")
    p.add_argument("--workdir", help="scratch directory on a real disk (default: a new one in /var/tmp)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (everything is unmounted anyway)")
    p.add_argument("--json", metavar="FILE", help="also write every sample and check as JSON")
    args = p.parse_args(argv)
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    bad = [x for x in only if x not in PRESENTERS]
    if bad:
        p.error(f"unknown presenter(s) {', '.join(bad)}; choose from {', '.join(PRESENTERS)}")
    if args.quick:
        cfg = Config(10, 100, parse_size(args.big_size or "16M"), [500, 2_000], 2_000, args.repeat or 1, only)
    else:
        cfg = Config(100, 100, parse_size(args.big_size or "1G"), [10_000, 100_000], 100_000, args.repeat or 5, only)
    if args.ready_scale and args.ready_scale not in cfg.ready_sizes:
        cfg.ready_sizes = sorted([*cfg.ready_sizes, args.ready_scale])
    if cfg.repeat < 1:
        p.error("--repeat must be at least 1")
    return args, cfg


_T0 = time.monotonic()


def progress(msg: str) -> None:
    """A phase line on stderr, so a long run shows where it is."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def run(argv: list[str], cwd: str | None = None) -> float:
    """Wall-clock seconds of one command (output discarded, failure raised)."""
    t0 = time.perf_counter()
    r = subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=RUN_TIMEOUT)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])}... exited {r.returncode}: {r.stderr.decode(errors='replace')[-500:]}")
    return elapsed


class Bench:
    def __init__(self, cfg: Config, work: Path, cleanup: Cleanup, res: Results) -> None:
        self.cfg = cfg
        self.work = work
        self.cleanup = cleanup
        self.res = res
        self.tmpfs = work / "tmpfs"
        self.tree = work / "tree"
        self.image = work / "image"
        self.plan_file = work / "plan.json"
        self.tarball = work / "stdlib.tar"
        self.catlist = work / "catlist"
        self.cpu = Results()
        self.broken: set[str] = set()
        self.presenters: list[Presenter] = []

    # --- setup ---------------------------------------------------------------------------

    def setup(self) -> None:
        progress("building the tree, the image and the tarball")
        t0 = time.perf_counter()
        members = build_fixture(self.work, self.cfg.n_dirs, self.cfg.per_dir, self.cfg.big_size, "bench-tmpfs")
        self.res.notes.append(
            f"tree: {self.cfg.n_dirs * self.cfg.per_dir:,} small files in {self.cfg.n_dirs} dirs + "
            f"{self.cfg.big_size / (1 << 20):.0f} MiB big file; tarball: {members:,} members, "
            f"{self.tarball.stat().st_size / (1 << 20):.0f} MiB; built in {time.perf_counter() - t0:.1f}s"
        )
        want = self.cfg.presenters
        cands: list[Presenter] = [
            Native(self.work, self.cleanup, self.tree, self.tmpfs),
            KernelOverlay(self.work, self.cleanup, self.tree, self.tmpfs),
            FuseOverlay(self.work, self.cleanup, self.tree, self.tmpfs),
        ]
        if {LITEFS, BYPASS, NATIVE_WRITES} & set(want):
            if litefs_available():
                cands += [
                    Litefs(self.work, self.cleanup, self.image, self.plan_file, self.tmpfs, bypass=False),
                    Litefs(self.work, self.cleanup, self.image, self.plan_file, self.tmpfs, bypass=True),
                    Litefs(self.work, self.cleanup, self.image, self.plan_file, self.tmpfs, bypass=True,
                           native_writes=True),
                ]
            else:
                self.res.notes.append("litefs mount is not available in this tree: litefs columns skipped")
        self.presenters = [p for p in cands if p.name in want]
        for p in self.presenters:
            p.start()

    # --- measurements --------------------------------------------------------------------

    def each(self, what: str, fn: Callable[[Presenter], None], rotate: int = 0) -> None:
        """Run ``fn`` for every working presenter, starting at index ``rotate`` (so no
        presenter always runs first); a failure marks that presenter broken (noted in the
        report) and the run goes on with the others."""
        k = rotate % max(1, len(self.presenters))
        for p in self.presenters[k:] + self.presenters[:k]:
            if p.name in self.broken:
                continue
            try:
                fn(p)
            except Exception as exc:
                self.broken.add(p.name)
                self.res.notes.append(f"{p.name}: {what} failed, presenter dropped: {exc}")
                traceback.print_exc(file=sys.stderr)

    def timed(self, key: str, p: Presenter, argv: list[str], cwd: str | None = None) -> None:
        """Run one workload: wall time into ``res``; CPU seconds of the workload plus the
        presenter's daemon into ``cpu`` (a cost that load from other jobs barely moves)."""
        pid = p.daemon_pid()
        d0 = proc_cpu(pid)
        c0 = children_cpu()
        wall = run(argv, cwd=cwd)
        self.res.add(key, p.name, wall)
        self.cpu.add(key, p.name, children_cpu() - c0 + proc_cpu(pid) - d0)

    def reads(self, p: Presenter, warm: bool) -> None:
        root = p.read_root
        if warm:
            self.timed(FIND, p, ["find", root])
            self.timed(STAT, p, ["bash", "-c", 'find "$1" -print0 | xargs -0 stat >/dev/null', "-", root])
            self.timed(CAT, p, ["xargs", "-0", "-a", str(self.catlist), "cat"], cwd=root)
            self.timed(BIG_WARM, p, ["dd", f"if={root}/big.bin", "of=/dev/null", "bs=1M"])
        else:
            if p.fuse:
                p.remount()
            drop_caches()
            self.timed(CAT_COLD, p, ["xargs", "-0", "-a", str(self.catlist), "cat"], cwd=root)
            self.timed(BIG_COLD, p, ["dd", f"if={root}/big.bin", "of=/dev/null", "bs=1M"])

    def warm_up(self, p: Presenter) -> None:
        root = p.read_root
        run(["bash", "-c", 'find "$1" -print0 | xargs -0 stat >/dev/null', "-", root])
        run(["xargs", "-0", "-a", str(self.catlist), "cat"], cwd=root)
        run(["dd", f"if={root}/big.bin", "of=/dev/null", "bs=1M"])

    def writes(self, p: Presenter, i: int) -> None:
        d = p.write_dir("create", i)
        pid = p.daemon_pid()
        d0, c0 = proc_cpu(pid), children_cpu()
        r = subprocess.run(
            [sys.executable, str(CREATE_WORKER), d, str(self.cfg.n_dirs), str(self.cfg.per_dir)],
            capture_output=True, text=True, timeout=RUN_TIMEOUT,
        )  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"create+write in {d} failed: {r.stderr.strip()[-500:]}")
        self.res.add(CREATE, p.name, float(r.stdout.strip()))
        self.cpu.add(CREATE, p.name, children_cpu() - c0 + proc_cpu(pid) - d0)
        d = p.write_dir("untar", i)
        self.timed(UNTAR, p, ["tar", "-xf", str(self.tarball), "-C", d])

    def main_runs(self) -> None:
        for i in range(self.cfg.repeat):
            progress(f"cold reads, run {i + 1}/{self.cfg.repeat}")
            self.each("cold read", lambda p: self.reads(p, warm=False), rotate=i)
        self.each("warm-up", self.warm_up)
        for i in range(self.cfg.repeat):
            progress(f"warm reads, run {i + 1}/{self.cfg.repeat}")
            self.each("warm read", lambda p: self.reads(p, warm=True), rotate=i)
        for i in range(self.cfg.repeat):
            progress(f"create+write and untar, run {i + 1}/{self.cfg.repeat}")
            self.each("create/untar", lambda p, i=i: self.writes(p, i), rotate=i)
        for p in self.presenters:
            if p.pid is not None and p.name not in self.broken:
                self.res.add(RSS_MAIN, p.name, float(vm_hwm(p.pid)))

    def stop_all(self) -> None:
        for p in reversed(self.presenters):
            try:
                p.stop()
            except Exception as exc:
                self.res.notes.append(f"{p.name}: unmount failed ({exc}); left to the lazy cleanup")
        self.presenters = []

    # --- mount -> ready and RSS ------------------------------------------------------------

    def ready_runs(self) -> None:
        want = self.cfg.presenters
        have_litefs = litefs_available() and bool({LITEFS, BYPASS} & set(want))
        plan = bench_plan()
        if have_litefs:
            # What every mount pays before it mounts anything: the interpreter and imports.
            progress("litefs start-up cost (mount --help)")
            for i in range(self.cfg.repeat + 1):
                t = run([*self.litefs_cmd(), "mount", "--help"])
                if i:
                    self.res.add(CLI_START, LITEFS, t)
        for n in self.cfg.ready_sizes:
            image = self.work / f"scale-{n}"
            progress(f"mount->ready on a {n:,}-file image")
            secs = build_scale_image(image, n, plan)
            self.res.notes.append(f"scale image {n:,} files built in {secs:.1f}s")
            drop_caches()
            # one untimed mount each first, so every timed one sees the same warm caches
            for i in range(self.cfg.repeat + 1):
                if FUSE_OVERLAY in want:
                    t = self.time_fuse_overlay(image, n)
                    if i:
                        self.res.add(READY.format(n=f"{n:,}"), FUSE_OVERLAY, t)
                if OVERLAY in want:
                    t = self.time_overlay(image, n)
                    if i:
                        self.res.add(READY.format(n=f"{n:,}"), OVERLAY, t)
                if have_litefs:
                    for bypass, key, col in ((False, READY, LITEFS), (True, READY_BYPASS, BYPASS)):
                        if col not in want:
                            continue
                        t = self.time_litefs(image, bypass)
                        if i:
                            self.res.add(key.format(n=f"{n:,}"), col, t)
            if n == self.cfg.rss_size:
                if have_litefs:
                    self.rss_walk(image, n)
                if FUSE_OVERLAY in want:
                    self.rss_walk_fuse_overlay(image, n)
            shutil.rmtree(image)

    @staticmethod
    def litefs_cmd() -> list[str]:
        """The installed ``litefs`` command, as an admin or the boot would run it."""
        if LITEFS_BIN.exists():
            return [str(LITEFS_BIN)]
        return [sys.executable, "-m", "litefs.tools.litefs_cli"]

    def time_litefs(self, image: Path, bypass: bool) -> float:
        mnt = self.work / "mnt-ready"
        tmp = self.tmpfs / "ready-tmpfs"
        persist = self.work / "ready-persistent"
        for d in (mnt, tmp, persist):
            d.mkdir(exist_ok=True)
        argv = [
            *self.litefs_cmd(), "mount", str(mnt), "--plan", str(self.plan_file), "--image", str(image),
            "--tmpfs", str(tmp), "--persistent", str(persist), "--log", str(self.work / "ready.log"),
            "--bypass" if bypass else "--no-bypass",
        ]  # fmt: skip
        elapsed, pid = timed_litefs_mount(argv, str(mnt), self.cleanup)
        litefs_umount(str(mnt), pid)
        return elapsed

    def time_fuse_overlay(self, image: Path, n: int) -> float:
        fo = FuseOverlay(self.work, self.cleanup, image, self.tmpfs, tag=f"ready-fovl-{n}")
        t0 = time.perf_counter()
        fo.start()
        elapsed = time.perf_counter() - t0
        fo.stop()
        return elapsed

    def time_overlay(self, image: Path, n: int) -> float:
        ko = KernelOverlay(self.work, self.cleanup, image, self.tmpfs)
        ko.upper, ko.workdir = self.tmpfs / f"ready-ovl-{n}-upper", self.tmpfs / f"ready-ovl-{n}-work"
        t0 = time.perf_counter()
        ko.start()
        elapsed = time.perf_counter() - t0
        ko.stop()
        return elapsed

    def rss_walk(self, image: Path, n: int) -> None:
        """Peak RSS of a fresh litefs daemon (no bypass: every entry through FUSE) after
        ``find | xargs stat`` over the whole image."""
        lf = Litefs(self.work, self.cleanup, image, self.plan_file, self.tmpfs, bypass=False, tag="rss")
        lf.start()
        try:
            assert lf.pid is not None
            run(["bash", "-c", 'find "$1" -print0 | xargs -0 stat >/dev/null', "-", str(lf.mnt)])
            self.res.add(RSS_WALK.format(n=f"{n:,}"), LITEFS, float(vm_hwm(lf.pid)))
        finally:
            lf.stop()

    def rss_walk_fuse_overlay(self, image: Path, n: int) -> None:
        fo = FuseOverlay(self.work, self.cleanup, image, self.tmpfs, tag="rss-fovl")
        fo.start()
        try:
            run(["bash", "-c", 'find "$1" -print0 | xargs -0 stat >/dev/null', "-", str(fo.mnt)])
            pid = fo.daemon_pid()
            if pid is not None:
                self.res.add(RSS_WALK.format(n=f"{n:,}"), FUSE_OVERLAY, float(vm_hwm(pid)))
        finally:
            fo.stop()


def children_cpu() -> float:
    """User+system seconds of every waited-for child process so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def proc_cpu(pid: int | None) -> float:
    """User+system seconds of a running process (all threads); 0 when there is none."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_litefs_ok: bool | None = None


def litefs_available() -> bool:
    global _litefs_ok
    if _litefs_ok is None:
        r = subprocess.run([sys.executable, "-m", "litefs.tools.litefs_cli", "mount", "--help"], capture_output=True)
        _litefs_ok = r.returncode == 0 and b"--bypass" in r.stdout
    return _litefs_ok


def preflight() -> str | None:
    if os.geteuid() != 0:
        return "bench_fs must run as root (mounts, drop_caches)"
    for tool in ("fuse-overlayfs", "fusermount3", "find", "xargs", "stat", "dd", "tar"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install fuse-overlayfs fuse3 coreutils findutils tar)"
    return None


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def header(cfg: Config) -> str:
    return (
        f"bench_fs: kernel {platform.release()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
        f"repeat {cfg.repeat} (median), presenters {', '.join(cfg.presenters)}"
    )


def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_args(argv)
    problem = preflight()
    if problem:
        print(f"bench_fs: {problem}", file=sys.stderr)
        return 2
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="litefs-bench-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    work = work.resolve()
    cleanup = Cleanup(work)
    res = Results()
    # An installed litefs starts from compiled bytecode; give the children a private cache
    # (nothing written into the source tree) even where PYTHONDONTWRITEBYTECODE is set.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    res.notes.append(f"load average at start: {load_average()}")
    bench = Bench(cfg, work, cleanup, res)

    print(header(cfg), flush=True)

    def steps() -> None:
        bench.setup()
        bench.main_runs()
        bench.stop_all()
        bench.ready_runs()

    status = guarded_run(steps, bench.stop_all, cleanup, res.notes, work, args.keep)
    res.notes.append(f"load average at end: {load_average()} (other work on this machine skews times)")
    if bench.broken:
        status = 1
    print()
    print(render_table(res, [p for p in PRESENTERS if p in cfg.presenters]))
    print()
    print("CPU seconds per workload (the workload's processes plus the FUSE daemon; median):")
    print(render_table(bench.cpu, [p for p in PRESENTERS if p in cfg.presenters]))
    print()
    checks = evaluate_targets(res, cfg.ready_sizes, cfg.rss_size)
    print("targets (litefs on rule-covered paths unless stated):")
    print(render_checks(checks))
    if res.notes:
        print()
        for note in res.notes:
            print(f"note: {note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "config": cfg.__dict__,
                    "samples": res.samples,
                    "cpu_samples": bench.cpu.samples,
                    "checks": [{"name": c.name, "value": c.value, "limit": c.limit, "verdict": c.verdict} for c in checks],
                    "notes": res.notes,
                    "status": status,
                },
                f,
                indent=1,
            )
    return status


if __name__ == "__main__":
    sys.exit(main())
