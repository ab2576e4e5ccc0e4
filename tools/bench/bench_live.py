"""Running nodes follow changes: change → visible on a booted node, and the tree watcher's cost.

Part 1 boots a real node (``litefs.tools.cluster_sim``: namespaces, the real boot hook, the litefs
view as ``/``) against a real ``mountd`` (SQLite) and times, over ``--runs`` runs each, from
the change on the MN to the node seeing it (polled from the node's shell every 20 ms):

* table edit: ``chtab`` flips ``litefile`` ``/etc/hostname`` between tmpfs and image
  content → the path becomes writable / read-only again (plan push, live swap);
* image edit: an in-place write to ``rootimg/etc/site.conf`` (plain image content) → the node reads the new text
  (inotify → announcement → refresh; no ``litefs notify``);
* notify (the manual path, baseline of the same run): mountd restarted with
  ``--no-watch-trees``, the same edit followed by ``litefs notify``;
* with ``--pg URL`` (or ``$LITEFS_TEST_PG``): two mountds on one PostgreSQL, a node on
  each: ``chtab`` → both nodes follow, and ``litefs notify`` at one mountd → both nodes
  (the time until the last of the two sees it).

Part 2 builds a ``--files``-file tree (100,000 by default, 20 per folder) and measures what
watching it costs: watches (one per folder), setup seconds, this process's RSS growth, and
the kernel memory the watches pin (about 1 KiB each on 64-bit); against it, in the same run,
one full scan of the tree (what the fallback does every ``--scan-interval`` when
``fs.inotify.max_user_watches`` is too small).

    sudo .venv/bin/python tools/bench/bench_live.py [--runs 5] [--files 100000] [--skip-boot]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from litefs.wellknown import DEFAULT_PORT


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _stats(xs: list[float]) -> str:
    if not xs:
        return "no runs"
    return (f"p50 {statistics.median(xs) * 1000:7.0f} ms  max {max(xs) * 1000:7.0f} ms"
            f"  (n={len(xs)})")


# --- part 1: booted node ------------------------------------------------------------------


def _time_until(node: Any, cond_sh: str, change: Callable[[], None], timeout: float = 20.0
                ) -> float:
    loop = (f"i=0; until {cond_sh}; do i=$((i+1)); [ $i -gt {int(timeout / 0.02)} ] && "
            "exit 9; usleep 20000; done")
    start = time.monotonic()
    change()
    status, out = node.sh(loop, timeout=timeout + 10)
    took = time.monotonic() - start
    if status != 0:
        raise RuntimeError(f"not visible on the node within {timeout:g} s: {out}")
    return took


def bench_boot(runs: int) -> dict[str, list[float]]:
    from litefs.tools.cluster_sim import (
        DEMO_IMAGE_DIR,
        Cluster,
        demo_tables,
        load_demo_tables,
        stage_demo,
    )

    from litefs import db, tabledata
    from tests.test_live_netns import Mountds

    work = Path(tempfile.mkdtemp(prefix="bench-live-"))
    results: dict[str, list[float]] = {"table edit": [], "image edit": [], "notify": []}
    try:
        with Cluster(work) as c:
            mountds = Mountds(c)
            try:
                stage_demo(c)
                # Plain image content (the demo's /etc/issue is an "ro" row, live anyway).
                (c.exports / c.mn_ip / DEMO_IMAGE_DIR.lstrip("/") / "rootimg/etc/site.conf"
                 ).write_text("v1\n")
                url = f"sqlite:///{work}/litefs.db"
                load_demo_tables(url, demo_tables(c))
                mountds.start(url, DEFAULT_PORT)
                node = c.boot("n01", c.cmdline("n01", DEMO_IMAGE_DIR))
                node.wait_shell(60)
                engine = db.open_engine(url)
                conf = c.exports / c.mn_ip / DEMO_IMAGE_DIR.lstrip("/") / "rootimg/etc/site.conf"
                for i in range(runs):
                    opt = "tmpfs" if i % 2 == 0 else "ro"
                    cond = ("echo x 2>/dev/null > /etc/hostname" if opt == "tmpfs"
                            else "! (echo x 2>/dev/null > /etc/hostname)")
                    results["table edit"].append(_time_until(node, cond, lambda o=opt: (
                        tabledata.chtab(engine, {"image": "ALL", "file": "/etc/hostname"},
                                        [f"litefile.options={o}"]))))
                    node.check("cat /etc/site.conf >/dev/null; ls -l /etc >/dev/null")
                    text = f"image edit {i}"
                    results["image edit"].append(_time_until(
                        node, f"grep -qx '{text}' /etc/site.conf",
                        lambda t=text: conf.write_text(t + "\n")))
                mountds.stop()
                mountds.start(url, DEFAULT_PORT, "--no-watch-trees")
                time.sleep(3)  # the node's watcher resubscribes (backoff 0.5 s and up)
                for i in range(runs):
                    node.check("cat /etc/site.conf >/dev/null; ls -l /etc >/dev/null")
                    text = f"notify edit {i}"

                    def change(t: str = text) -> None:
                        conf.write_text(t + "\n")
                        c.notify("n01", "/etc/site.conf")

                    results["notify"].append(_time_until(
                        node, f"grep -qx '{text}' /etc/site.conf", change))
                engine.dispose()
            finally:
                c.close()
                mountds.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def bench_pg(runs: int, admin: str) -> dict[str, list[float]]:
    """Two mountds on one PostgreSQL (as on two service nodes), a node on each."""
    import uuid

    from litefs.tools.cluster_sim import (
        DEMO_IMAGE_DIR,
        Cluster,
        demo_tables,
        load_demo_tables,
        stage_demo,
    )
    from sqlalchemy import create_engine, make_url, text

    from litefs import db, tabledata
    from tests.test_live_netns import Mountds

    admin_url = make_url(admin).set(drivername="postgresql+psycopg")
    name = "litefs_bench_" + uuid.uuid4().hex[:10]
    adm = create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with adm.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    work = Path(tempfile.mkdtemp(prefix="bench-live-pg-"))
    results: dict[str, list[float]] = {"table edit": [], "notify": []}
    try:
        with Cluster(work) as c:
            mountds = Mountds(c)
            try:
                stage_demo(c)
                conf = c.exports / c.mn_ip / DEMO_IMAGE_DIR.lstrip("/") / "rootimg/etc/site.conf"
                conf.write_text("v1\n")
                load_demo_tables(url, demo_tables(c))
                sock = mountds.start(url, DEFAULT_PORT, "--no-watch-trees")
                mountds.start(url, 3002, "--no-watch-trees")
                nodes = [c.boot("n01", c.cmdline("n01", DEMO_IMAGE_DIR, port=DEFAULT_PORT)),
                         c.boot("n03", c.cmdline("n03", DEMO_IMAGE_DIR, port=3002))]
                for node in nodes:
                    node.wait_shell(60)
                c.admin_socket = sock  # type: ignore[attr-defined]
                engine = db.open_engine(url)
                for i in range(runs):
                    opt = "tmpfs" if i % 2 == 0 else "ro"
                    cond = ("echo x 2>/dev/null > /etc/hostname" if opt == "tmpfs"
                            else "! (echo x 2>/dev/null > /etc/hostname)")
                    start = time.monotonic()
                    tabledata.chtab(engine, {"image": "ALL", "file": "/etc/hostname"},
                                    [f"litefile.options={opt}"])
                    for node in nodes:
                        _time_until(node, cond, lambda: None)
                    results["table edit"].append(time.monotonic() - start)
                    for node in nodes:
                        node.check("cat /etc/site.conf >/dev/null; ls -l /etc >/dev/null")
                    text_ = f"pg notify {i}"
                    start = time.monotonic()
                    conf.write_text(text_ + "\n")
                    c.notify("compute", "/etc/site.conf")  # at the first mountd only
                    for node in nodes:
                        _time_until(node, f"grep -qx '{text_}' /etc/site.conf", lambda: None)
                    results["notify"].append(time.monotonic() - start)
                engine.dispose()
            finally:
                c.close()
                mountds.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        with adm.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        adm.dispose()
    return results


# --- part 2: the watcher's cost -----------------------------------------------------------


def build_tree(top: Path, files: int, per_dir: int = 20) -> int:
    dirs = 0
    for i in range(0, files, per_dir):
        d = top / f"d{i // 2000:03d}" / f"s{i // per_dir:05d}"
        d.mkdir(parents=True, exist_ok=True)
        dirs += 1
        for j in range(min(per_dir, files - i)):
            (d / f"f{j}").touch()
    return dirs


def bench_watch(files: int) -> None:
    from litefs.mountd.watch_tree import TreeWatch, max_user_watches, scan

    work = Path(tempfile.mkdtemp(prefix="bench-live-tree-"))
    try:
        t0 = time.monotonic()
        build_tree(work / "rootimg", files)
        print(f"tree: {files} files built in {time.monotonic() - t0:.1f} s")
        rss0 = _rss_kib()
        tw = TreeWatch()
        t0 = time.monotonic()
        tw.set_roots([str(work / "rootimg")])
        setup_s = time.monotonic() - t0
        rss1 = _rss_kib()
        print(f"inotify: {tw.watch_count} watches (one per folder), setup {setup_s:.2f} s, "
              f"mountd RSS +{rss1 - rss0} KiB, kernel ~{tw.watch_count * 1080 / 2**20:.1f} MiB "
              f"(up to 1080 bytes per watch, inotify(7)); fs.inotify.max_user_watches = {max_user_watches()}")
        tw.close()
        # After the watch: the scan's big dict would otherwise leave freed heap for it.
        t0 = time.monotonic()
        entries = len(scan(str(work / "rootimg")))
        scan_s = time.monotonic() - t0
        print(f"baseline, same run: one full scan of the tree ({entries} entries) "
              f"{scan_s:.2f} s; setup/scan = {setup_s / scan_s:.2f}x (the fallback pays the "
              f"scan every --scan-interval; inotify pays setup once)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--files", type=int, default=100_000)
    p.add_argument("--skip-boot", action="store_true", help="only part 2 (no root needed)")
    p.add_argument("--pg", default=os.environ.get("LITEFS_TEST_PG"),
                   help="PostgreSQL server URL (default $LITEFS_TEST_PG): also time two "
                   "mountds on one database, a node on each (the service-node case)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests.test_live_netns
    if not args.skip_boot:
        if os.geteuid() != 0:
            print("part 1 boots nodes in namespaces: run as root (or --skip-boot)")
            return 2
        res = bench_boot(args.runs)
        print("change → visible on a booted node (SQLite, one mountd):")
        for name, xs in res.items():
            print(f"  {name:12s} {_stats(xs)}")
        if res["notify"] and res["image edit"]:
            ratio = statistics.median(res["image edit"]) / statistics.median(res["notify"])
            print(f"  image edit without notify / with notify (baseline): {ratio:.2f}x")
        if args.pg:
            res = bench_pg(args.runs, args.pg)
            print("change → visible on the nodes of both mountds (PostgreSQL, LISTEN/NOTIFY):")
            for name, xs in res.items():
                print(f"  {name:12s} {_stats(xs)}")
    bench_watch(args.files)
    print(f"bench peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
