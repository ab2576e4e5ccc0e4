"""Benchmark: liteimg on a 100,000-file image, and "boot without copying" (classic vs litefs).

The image is synthetic but shaped like a real one: most files under /usr, /lib and /etc, and
a share (``--listed``, default 20%) under directories the cookbook's RedHat litefile list names
(/var/log, /var/cache/man, /opt/xcat, /xcatpost, /tmp, /etc/ssh, /var/lib/dhclient...). The
plan is the cookbook's RedHat table (all link options) read through the real planner.

Prints:
* liteimg: time of the first run, of an idempotent re-run and of --undo; actions and the
  number of files they move or copy; baseline: one ``lstat`` walk over the whole image (the
  least any tool that looks at every file would pay).
* boot: the classic emulation's time to boot (rc.statelite copies every listed tree into a
  tmpfs) versus ``litefs mount`` until the view is ready on the original image -- the
  headline "boot without copying" ratio.

    .venv/bin/python tools/bench/bench_liteimg.py [--files 100000] [--listed 0.2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import TypeVar

from litefs import classic, db, liteimg, tabledata
from litefs.plan import Plan
from litefs.planner import image_plan

T = TypeVar("T")

LISTED = ["/var/log", "/var/cache/man", "/opt/xcat", "/xcatpost", "/tmp", "/etc/ssh",
          "/var/lib/dhclient", "/var/lib/ntp", "/var/tmp", "/var/empty"]
UNLISTED = ["/usr/share/doc", "/usr/lib64", "/usr/share/locale", "/lib/modules", "/etc/pki",
            "/usr/bin", "/usr/share/man"]


def build_image(root: Path, n_files: int, listed_share: float) -> None:
    """``n_files`` small files (0.5-4 KiB) spread over listed and unlisted trees."""
    n_listed = int(n_files * listed_share)
    payload = os.urandom(4096)
    for i in range(n_files):
        tops = LISTED if i < n_listed else UNLISTED
        top = tops[i % len(tops)]
        d = root / top.lstrip("/") / f"d{(i // len(tops)) % 100:02d}"
        if i < len(tops) * 100 or not d.is_dir():
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(payload[: 512 + (i * 37) % 3584])
    for rel in ("etc/fstab", "etc/ntp.conf", "etc/resolv.conf", "etc/inittab", "etc/adjtime",
                "var/lib/random-seed", "var/lib/logrotate.status"):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(rel + "\n")
    (root / "etc/mtab").symlink_to("/proc/self/mounts")
    for rel in (".statelite", ".sllocal/localmnt", "var/lock", "var/run"):
        (root / rel).mkdir(parents=True, exist_ok=True)


def count_files(root: Path) -> int:
    return sum(len(f) for _d, _s, f in os.walk(root))


def redhat_plan(work: Path) -> Plan:
    engine = db.open_engine(f"sqlite:///{work}/tables.db")
    try:
        db.init_db(engine)
        csv = files("litefs.data").joinpath("litefile-redhat.csv").read_text()
        tabledata.restore(engine, "litefile", csv, "litefile-redhat.csv")
        return image_plan(engine, "bench-image")
    finally:
        engine.dispose()


def timed(fn: Callable[..., T], *args: object) -> tuple[float, T]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def files_moved(root: Path, actions: list[liteimg.Action]) -> int:
    """Files relocated or copied by MOVE/CLONE actions (counted after the run, in .default)."""
    n = 0
    for a in actions:
        if a.op in (liteimg.Op.MOVE, liteimg.Op.CLONE):
            p = root / a.path.lstrip("/")
            n += 1 if not p.is_dir() or p.is_symlink() else count_files(p) + 1
    return n


def mount_litefs(work: Path, image: Path, plan_file: Path) -> tuple[float, float]:
    """(seconds until the view is mounted and ready, seconds to unmount)."""
    mnt, tmpfs, pers = work / "mnt", work / "lf-tmpfs", work / "lf-pers"
    for d in (mnt, tmpfs, pers):
        d.mkdir(exist_ok=True)
    log = work / "litefs.log"
    argv = [sys.executable, "-m", "litefs.tools.litefs_cli", "mount", str(mnt), "--plan",
            str(plan_file), "--image", str(image), "--tmpfs", str(tmpfs), "--persistent",
            str(pers), "--foreground", "--log", str(log)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"litefs mount exited {proc.returncode}: {log.read_text()}")
            if log.exists() and "ready:" in log.read_text() and os.path.ismount(mnt):
                break
            time.sleep(0.005)
        ready = time.perf_counter() - t0
        assert (mnt / "etc/fstab").read_text()  # the view answers
        t1 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "litefs.tools.litefs_cli", "umount", str(mnt)],
                       check=True, capture_output=True)
        proc.wait(timeout=30)
        return ready, time.perf_counter() - t1
    finally:
        if proc.poll() is None:
            proc.kill()
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--listed", type=float, default=0.2, help="share of files under listed dirs")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it")
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-liteimg-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        orig = work / "orig"
        t_build, _ = timed(build_image, orig, args.files, args.listed)
        total = count_files(orig)
        print(f"image: {total} files ({args.listed:.0%} under listed dirs), built in {t_build:.1f} s")
        plan = redhat_plan(work)
        print(f"plan: cookbook RedHat litefile table, {len(plan.rules)} rules")

        img = work / "rootimg"
        subprocess.run(["cp", "-a", str(orig), str(img)], check=True)
        subprocess.run(["sync"], check=True)
        t_walk, _ = timed(lambda: sum(1 for _ in _lstat_walk(img)))
        state = liteimg.read_state(str(img))
        t_plan, lp = timed(liteimg.plan_liteimg, "bench-image", liteimg.entries_from_plan(plan),
                           liteimg.DirTree(str(img)), state)
        t_apply, _ = timed(liteimg.apply, str(img), lp.actions)
        changes = lp.changes
        moved = files_moved(img, list(changes))
        t_rerun, lp2 = timed(lambda: liteimg.plan_liteimg(
            "bench-image", liteimg.entries_from_plan(plan), liteimg.DirTree(str(img)),
            liteimg.read_state(str(img))))
        print(f"liteimg: {t_plan + t_apply:.3f} s (plan {t_plan:.3f} s, apply {t_apply:.3f} s); "
              f"{len(changes)} actions, {moved} files moved/copied of {total}")
        print(f"liteimg re-run: {t_rerun:.3f} s, {len(lp2.changes)} actions (idempotent)")
        print(f"baseline: lstat walk of the whole image {t_walk:.3f} s; "
              f"liteimg / walk = {(t_plan + t_apply) / t_walk:.2f}")

        pers = work / "c-pers"
        pers.mkdir()
        cfg = classic.ClassicConfig.for_plan(plan, str(img), {}, persistent=str(pers), manifest=False)
        t_classic, res = timed(classic.classic_boot, cfg)
        copies = sum(1 for line in res.log if line.startswith("cp "))
        plan_file = work / "plan.json"
        plan_file.write_text(plan.to_json())
        t_mount, t_umount = mount_litefs(work, orig, plan_file)
        print(f"classic boot (rc.statelite emulation): {t_classic:.3f} s, {copies} cp commands")
        print(f"litefs mount until ready: {t_mount:.3f} s (unmount {t_umount:.3f} s)")
        print(f"boot without copying: classic / litefs = {t_classic / t_mount:.1f}x")
        t_undo, _ = timed(liteimg.run_undo, str(img))
        print(f"liteimg --undo: {t_undo:.3f} s")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _lstat_walk(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            yield os.lstat(os.path.join(dirpath, n))


if __name__ == "__main__":
    sys.exit(main())
