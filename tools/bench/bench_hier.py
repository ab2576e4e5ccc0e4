"""Service nodes: boot storms through 1 and 2 SN mountds on one PostgreSQL, and prsync.

**Boot storm** (reuses bench_mountd's database, load generator and baselines): one PostgreSQL
database of ``--db-nodes`` nodes, half with the pool ``sn1,sn2`` and half ``sn2,sn1``
(``servicenode`` rows for both). Rows, each measured in this run:

* ``baseline``: trio's stock SSLStream server answering a fixed line (bench_mountd's);
* ``mn``: one mountd without ``--service-node`` (no pool check) — the single-MN cost;
* ``1 sn``: ``mountd --service-node sn1`` takes the whole storm (sn1 is in every pool);
* ``2 sn``: sn1 and sn2, each ``--workers`` processes, each taking its half of the storm.

plans/s, p50/p99 (release → plan), and mountd CPU ms per plan summed over every SN: it
should stay flat from 1 to 2 SNs (no coordination per plan; each SN reads the one database
on its own). Here the SNs share the machine's cores with each other and with the load
generator, so plans/s cannot double; on real SNs each has its own.

**prsync**: a ``--files`` tree (default 100,000 small files in 1,000-file "package"
folders) pushed from the "MN" to two SNs, each a real ``sshd -D -f <own config>`` on its own
loopback address (127.0.0.2, 127.0.0.3) in its own mount namespace (so one DEST lands on
each SN's own folder). Timed: prsync first sync and re-sync after one package changed,
against a serial ``rsync -az`` to each SN in the same run (to a separate folder on the same
SNs).

**Follow** (the hierarchy notes' "within 2 s"): the same kind of database, two SN mountds
(``--service-node sn1``/``sn2``, defaults: follow on, LISTEN on PostgreSQL) and
``--subscribers`` nodes subscribed to each, as a booted node's watcher is (TLS, from its own
address). Timed from the moment the write starts until the last node of *both* SNs has it:

* ``table change``: ``chtab`` of a litefile row for every image (on the MN's database) until
  every subscribed node was pushed its new plan (each SN reloads the whole tables first), and
  until every SN has it (its first node got the push);
* ``notify``: ``pg_notify`` of an announcement (what ``litefs notify --db`` sends) until every
  subscribed node got the invalidation; and once the ``litefs notify --db`` command itself,
  start-up and target check included.

A real node applies either locally after that (a plan swap or a cache invalidation, ms; see
bench_live.py).

    .venv/bin/python tools/bench/bench_hier.py [--nodes 1000] [--db-nodes 4000] [--pg URL]
        [--files 100000] [--subscribers 50] [--rounds 5] [--skip-storm] [--skip-prsync]
        [--skip-follow]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import bench_mountd as bm  # tools/bench/ is on sys.path when this file runs

BIN = Path(sys.executable).parent
SN_ADDR = {"sn1": "127.0.0.2", "sn2": "127.0.0.3"}


# --- boot storm ---------------------------------------------------------------------------


def add_pools(url: str, nodes: int) -> None:
    """servicenode rows for sn1, sn2 and a pool per node (first half sn1 first)."""
    from litefs import db
    from litefs.schema import TABLES

    blank = lambda t: {c.name: None for c in TABLES[t].columns}  # noqa: E731
    engine = db.open_engine(url)
    with db.write(engine) as conn:
        conn.execute(TABLES["servicenode"].insert(), [
            {**blank("servicenode"), "node": sn, "tftpserver": "1"} for sn in SN_ADDR])
        conn.execute(TABLES["noderes"].insert(), [
            {**blank("noderes"), "node": bm.node_name(i),
             "servicenode": "sn1,sn2" if i < nodes // 2 else "sn2,sn1"} for i in range(nodes)])
    engine.dispose()


def start_mountd(url: str, ca: Path, sn: str | None, workers: int, log: Path
                 ) -> tuple[subprocess.Popen[bytes], int]:
    port = bm.free_port()
    cmd = [str(BIN / "mountd"), "--db", url, "--port", str(port), "--host", "127.0.0.1",
           "--ca-dir", str(ca), "--socket", "", "--log-level", "info", "--workers", str(workers)]
    if sn:
        cmd += ["--service-node", sn]
    with log.open("ab") as logf:
        proc = subprocess.Popen(cmd, stderr=logf, stdout=subprocess.DEVNULL)
    bm.wait_port(port, proc, f"mountd {sn or 'mn'}")
    return proc, port


def multi_storm(targets: list[tuple[int, list[int]]], ca: str, procs: int,
                pids: list[int]) -> dict[str, float]:
    """bench_mountd's storm, but each load process asks its own server (port, node indices)."""
    out: mp.Queue = mp.Queue()
    cpu0 = sum(bm.cpu_seconds(p) for p in pids)
    total = sum(len(ix) for _, ix in targets)
    release_at = time.time() + 1.0 + total / 2000
    workers = []
    per_target = max(1, procs // len(targets))
    for port, indices in targets:
        for k in range(per_target):
            chunk = indices[k::per_target]
            workers.append(mp.Process(target=bm._client, args=(
                port, ca, chunk, release_at, True, len(chunk), out)))
    for w in workers:
        w.start()
    wait_lat: list[float] = []
    errors: list[str] = []
    last = 0.0
    for _ in workers:
        _conn, got_wait, got_err, done, _cpu = out.get(timeout=600)
        wait_lat += got_wait
        errors += got_err
        last = max(last, done)
    for w in workers:
        w.join()
    cpu = sum(bm.cpu_seconds(p) for p in pids) - cpu0
    if errors:
        print(f"  {len(errors)} errors, e.g. {errors[:3]}")
    wait_lat.sort()
    wall = last - release_at
    ok = len(wait_lat)

    def pct(q: float) -> float:
        return 1000 * wait_lat[min(ok - 1, int(ok * q))] if ok else float("nan")

    return {"ok": ok, "errors": len(errors), "plans_per_s": ok / wall if wall > 0 else 0.0,
            "p50_ms": pct(0.5), "p99_ms": pct(0.99), "cpu_ms_per_plan": 1000 * cpu / max(1, ok)}


def run_storms(args: argparse.Namespace, work: Path) -> dict[str, dict]:
    from litefs.mountd import pki

    ca = work / "ca"
    pki.init_site(ca, server_name="bench", san=["127.0.0.1"])
    results: dict[str, dict] = {}
    floor = bm.handshake_floor(ca)
    results["baseline"] = bm.run_baseline(argparse.Namespace(
        nodes=args.nodes, procs=args.procs, in_flight=0), ca)
    url, drop = bm.pg_database(args.pg)
    try:
        t = time.perf_counter()
        bm.build_db(url, args.db_nodes)
        add_pools(url, args.db_nodes)
        print(f"[storm] PostgreSQL database with {args.db_nodes} nodes in "
              f"{time.perf_counter() - t:.1f}s")
        half = args.nodes // 2
        # Nodes 0..half-1 prefer sn1, the rest of the storm come from the second half of the
        # database, which prefers sn2.
        first = list(range(half))
        second = list(range(args.db_nodes // 2, args.db_nodes // 2 + args.nodes - half))
        layouts = {
            "mn": [(None, first + second)],
            "1 sn": [("sn1", first + second)],
            "2 sn": [("sn1", first), ("sn2", second)],
        }
        for label, layout in layouts.items():
            servers = [start_mountd(url, ca, sn, args.workers, work / f"mountd-{sn}.log")
                       for sn, _ in layout]
            try:
                for (_proc, port), (_, ix) in zip(servers, layout, strict=True):
                    for k in range(4 * args.workers):
                        bm.warm(port, str(ca / "ca.pem"), ix[-1 - k])
                pids = [p for proc, _ in servers for p in bm.family(proc.pid)]
                results[label] = multi_storm(
                    [(port, ix) for (_, port), (_, ix) in zip(servers, layout, strict=True)],
                    str(ca / "ca.pem"), args.procs, pids)
            finally:
                for proc, _ in servers:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=30)
    finally:
        drop()
    base = results["baseline"]
    print(f"\nboot storm: {args.nodes} nodes, fresh TLS connection each, {args.db_nodes} nodes "
          f"in one PostgreSQL, --workers {args.workers} per mountd, {os.cpu_count()} CPUs")
    print(f"{'servers':<9} {'plans/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
          f"{'vs base':>7} {'srv ms/plan':>11}")
    for label, r in results.items():
        ratio = "" if label == "baseline" else f"{r['plans_per_s'] / base['plans_per_s']:.2f}x"
        print(f"{label:<9} {r['plans_per_s']:8.0f} {r['p50_ms']:7.0f} {r['p99_ms']:7.0f} "
              f"{r['errors']:6d} {ratio:>7} {r['cpu_ms_per_plan']:11.2f}")
    one, two = results["1 sn"]["cpu_ms_per_plan"], results["2 sn"]["cpu_ms_per_plan"]
    print(f"CPU per plan, 2 SNs / 1 SN: {two / one:.2f} (flat = no per-plan coordination); "
          f"pool check cost: 1 sn / mn = "
          f"{one / results['mn']['cpu_ms_per_plan']:.2f}; TLS floor {floor:.2f} ms CPU/plan")
    return results


# --- follow: MN changes reaching the nodes of both SNs -------------------------------------

FOLLOW_PATH = "/etc/bench-follow"


async def follow_rounds(url: str, ca: Path, ports: dict[str, int],
                        nodes: dict[str, list[int]], rounds: int) -> dict[str, list[float]]:
    """Subscribe ``nodes`` (per SN) to their SN's mountd; time table changes and notifies."""
    import trio
    from litefs.initramfs import client, tls
    from litefs.mountd.db_watch import publish_announcement

    from litefs import db, tabledata

    ctx = tls.client_context(ca / "ca.pem", check_hostname=False)
    engine = db.open_engine(url)
    # node index -> option of FOLLOW_PATH in its latest plan; paths announced to it
    option: dict[int, str | None] = {}
    seen: dict[int, set[str]] = {}
    got_at: dict[int, float] = {}  # when the node got the latest option
    out: dict[str, list[float]] = {"table on every SN": [], "table change": [], "notify": [],
                                   "notify --db command": []}

    def on_plan(i: int, plan: dict) -> None:
        option[i] = next((r["option"] for r in plan.get("rules", [])
                          if r.get("path") == FOLLOW_PATH), None)
        got_at[i] = time.monotonic()

    def on_change(i: int, paths: list[str]) -> None:
        seen.setdefault(i, set()).update(paths)

    everyone = [i for ix in nodes.values() for i in ix]

    async def until(cond: Callable[[], bool], what: str) -> float:
        start = time.monotonic()
        with trio.move_on_after(60):
            while not cond():
                await trio.sleep(0.002)
            return time.monotonic() - start
        raise SystemExit(f"[follow] no {what} on every node within 60 s")

    try:
        async with trio.open_nursery() as nursery:
            for sn, indices in nodes.items():
                for i in indices:
                    await nursery.start(lambda task_status, i=i, sn=sn: client.subscribe(
                        f"127.0.0.1:{ports[sn]}", lambda p, i=i: on_change(i, p),
                        on_plan=lambda plan, i=i: on_plan(i, plan), ssl_context=ctx,
                        source_address=bm.node_addr(i), task_status=task_status))
            await until(lambda: all(i in option for i in everyone), "first plan")
            for r in range(rounds):
                opt = "tmpfs" if r % 2 == 0 else "persistent"
                start = time.monotonic()
                await trio.to_thread.run_sync(lambda opt=opt: tabledata.chtab(
                    engine, {"image": "ALL", "file": FOLLOW_PATH}, [f"litefile.options={opt}"]))
                await until(lambda opt=opt: all(option.get(i) == opt for i in everyone),
                            "plan push")
                out["table change"].append(time.monotonic() - start)
                # An SN has the change once it pushed it to its first node: the slower SN.
                out["table on every SN"].append(max(
                    min(got_at[i] for i in ix) for ix in nodes.values()) - start)
                path = f"/etc/bench-notify-{r}"
                start = time.monotonic()
                await trio.to_thread.run_sync(publish_announcement, engine, "compute", [path])
                await until(lambda path=path: all(path in seen.get(i, ()) for i in everyone),
                            "notify")
                out["notify"].append(time.monotonic() - start)
            path = "/etc/bench-notify-cli"
            start = time.monotonic()
            await trio.run_process([str(BIN / "litefs"), "notify", "--db", url, "compute", path],
                                   stdout=subprocess.DEVNULL)
            await until(lambda: all(path in seen.get(i, ()) for i in everyone), "notify --db")
            out["notify --db command"].append(time.monotonic() - start)
            nursery.cancel_scope.cancel()
    finally:
        engine.dispose()
    return out


def run_follow(args: argparse.Namespace, work: Path) -> dict[str, list[float]]:
    import trio
    from litefs.mountd import pki

    ca = work / "ca"
    pki.init_site(ca, server_name="bench", san=["127.0.0.1"])
    url, drop = bm.pg_database(args.pg)
    servers: list[subprocess.Popen[bytes]] = []
    try:
        bm.build_db(url, args.db_nodes)
        add_pools(url, args.db_nodes)
        ports = {}
        for sn in SN_ADDR:
            proc, ports[sn] = start_mountd(url, ca, sn, 1, work / f"mountd-{sn}.log")
            servers.append(proc)
        k = min(args.subscribers, args.db_nodes // 2)
        nodes = {"sn1": list(range(k)),
                 "sn2": list(range(args.db_nodes // 2, args.db_nodes // 2 + k))}
        got = trio.run(follow_rounds, url, ca, ports, nodes, args.rounds)
    finally:
        for proc in servers:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        drop()
    print(f"\nfollow: 2 SN mountds on one PostgreSQL ({args.db_nodes} nodes), {k} nodes "
          f"subscribed to each; until the last node of both SNs has it")
    print(f"{'change on the MN':<38} {'rounds':>6} {'p50 ms':>7} {'max ms':>7}")
    for what, times in got.items():
        times = sorted(times)
        label = {"table on every SN": "chtab -> reloaded on every SN",
                 "table change": "chtab -> new plan on every node",
                 "notify": "pg_notify -> invalidation on every node",
                 "notify --db command": "litefs notify --db (whole command)"}[what]
        print(f"{label:<38} {len(times):6d} {1000 * times[len(times) // 2]:7.0f} "
              f"{1000 * times[-1]:7.0f}")
    return got


# --- prsync -------------------------------------------------------------------------------

SN_SCRIPT = r"""
set -eu
mount --make-rprivate /
mount -t tmpfs -o mode=755 snrun /run
mkdir -m 755 /run/sshd
mount --bind "$1" "$2"
exec /usr/sbin/sshd -D -e -f "$3"
"""


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process started with ``start_new_session`` and everything in its group (sshd
    and its per-connection children): SIGTERM, then SIGKILL after 10 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=10)
            break
        except subprocess.TimeoutExpired:
            continue


def make_tree(root: Path, files: int) -> None:
    """``files`` small files in folders of 1000 (a "package" each), sizes 100 B – 4 KiB."""
    for i in range(files):
        d = root / f"pkg{i // 1000:04d}"
        if i % 1000 == 0:
            d.mkdir(parents=True)
        (d / f"f{i % 1000:04d}").write_bytes(b"x" * (100 + (i * 37) % 4000))


def start_sshds(work: Path, procs: list[subprocess.Popen[bytes]]) -> tuple[Path, Path]:
    """Two SN sshds (appended to ``procs`` at once, so the caller stops them whatever
    happens); returns the client's ssh_config and the DEST folder."""
    ssh = work / "ssh"
    ssh.mkdir(mode=0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / "id")],
                   check=True)
    (ssh / "authorized_keys").write_text((ssh / "id.pub").read_text())
    snroot = work / "snroot"
    snroot.mkdir()
    known, hosts = [], []
    for sn, addr in SN_ADDR.items():
        port = bm.free_port()
        key = ssh / f"{sn}_host"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True)
        pub = (ssh / f"{sn}_host.pub").read_text().split()
        known.append(f"[{addr}]:{port} {pub[0]} {pub[1]}\n")
        hosts.append(f"Host {addr}\n  Port {port}\n")
        cfg = ssh / f"{sn}_sshd_config"
        cfg.write_text(f"ListenAddress {addr}:{port}\nHostKey {key}\nAuthorizedKeysFile "
                       f"{ssh / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
                       "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
                       "StrictModes no\nPidFile none\nLogLevel ERROR\n")
        disk = work / f"{sn}-disk"
        disk.mkdir()
        procs.append(subprocess.Popen(["unshare", "--mount", "--fork", "sh",
                                       "-c", SN_SCRIPT, "sn", str(disk), str(snroot), str(cfg)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))
    (ssh / "known_hosts").write_text("".join(known))
    client = ssh / "ssh_config"
    client.write_text("".join(hosts) + f"Host *\n  User root\n  IdentityFile {ssh / 'id'}\n"
                      f"  IdentitiesOnly yes\n  UserKnownHostsFile {ssh / 'known_hosts'}\n"
                      "  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n"
                      "  BatchMode yes\n  LogLevel ERROR\n")
    deadline = time.monotonic() + 20
    for addr in SN_ADDR.values():
        while (got := subprocess.run(["ssh", "-F", str(client), addr, "true"],
                                     capture_output=True, text=True)).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit(f"sshd on {addr} did not come up: {got.stderr.strip()}")
            time.sleep(0.2)
    return client, snroot


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    t = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed: {out.stdout[-500:]}{out.stderr[-500:]}")
    return time.perf_counter() - t


def run_prsync(args: argparse.Namespace, work: Path) -> dict[str, float]:
    mn = work / "mn"
    t = time.perf_counter()
    make_tree(mn / "install", args.files)
    print(f"[prsync] {args.files} files made in {time.perf_counter() - t:.1f}s")
    url = f"sqlite:///{work}/litefs.db"
    from litefs import db, tabledata

    engine = db.open_engine(url)
    db.init_db(engine)
    tabledata.restore(engine, "nodelist", "#node,groups\n" + "".join(
        f'"{sn}","service"\n' for sn in SN_ADDR), "nodelist.csv")
    tabledata.restore(engine, "hosts", "#node,ip\n" + "".join(
        f'"{sn}","{ip}"\n' for sn, ip in SN_ADDR.items()), "hosts.csv")
    engine.dispose()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        client, snroot = start_sshds(work, procs)
        env = {**os.environ, "RSYNC_RSH": f"ssh -F {client}", "LITEFS_DB": url}
        prsync = [str(BIN / "prsync"), "install", f"sn1,sn2:{snroot}/p/"]

        def serial() -> float:
            return sum(timed(["rsync", "-az", "-e", f"ssh -F {client}", "install",
                              f"{ip}:{snroot}/s/"], env, mn) for ip in SN_ADDR.values())

        for sn in SN_ADDR:
            for sub in ("p", "s"):
                (work / f"{sn}-disk" / sub).mkdir()
        r = {"prsync first": timed(prsync, env, mn), "serial first": serial()}
        pkg = mn / "install" / f"pkg{(args.files // 1000) // 2:04d}"
        for f in sorted(pkg.iterdir())[:50]:
            f.write_bytes(f.read_bytes() + b"v2")  # one package updated: 50 files changed
        (pkg / "new-file").write_bytes(b"new\n")
        r["prsync resync"] = timed(prsync, env, mn)
        r["serial resync"] = serial()
        r["prsync nothing"] = timed(prsync, env, mn)
        r["serial nothing"] = serial()
        for sn in SN_ADDR:
            got = sum(1 for _ in (work / f"{sn}-disk" / "p" / "install").rglob("f*"))
            if got != args.files:
                raise SystemExit(f"{sn} holds {got} files, not {args.files}")
    finally:
        for p in procs:
            stop_group(p)
    print(f"\nprsync of {args.files} files to 2 SNs (sshd on 127.0.0.2/.3, same machine)")
    print(f"{'run':<16} {'prsync s':>9} {'serial s':>9} {'serial/prsync':>13}")
    for what in ("first", "resync", "nothing"):
        p, s = r[f"prsync {what}"], r[f"serial {what}"]
        label = {"first": "first sync", "resync": "one pkg changed", "nothing": "no change"}[what]
        print(f"{label:<16} {p:9.2f} {s:9.2f} {s / p:12.2f}x")
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=1000, help="nodes in each storm (default 1000)")
    p.add_argument("--db-nodes", type=int, default=4000, help="nodes in the database")
    p.add_argument("--procs", type=int, default=4, help="load generator processes")
    p.add_argument("--workers", type=int, default=1, help="worker processes per mountd")
    p.add_argument("--pg", default=os.environ.get("LITEFS_TEST_PG"),
                   help="PostgreSQL server URL (default $LITEFS_TEST_PG)")
    p.add_argument("--files", type=int, default=100_000, help="files in the prsync tree")
    p.add_argument("--skip-storm", action="store_true")
    p.add_argument("--skip-prsync", action="store_true")
    p.add_argument("--skip-follow", action="store_true")
    p.add_argument("--subscribers", type=int, default=50,
                   help="nodes subscribed to each SN in the follow run (default 50)")
    p.add_argument("--rounds", type=int, default=5,
                   help="table changes and notifies timed in the follow run (default 5)")
    p.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    args = p.parse_args()
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="bench-hier-") as tmp:
        work = Path(tmp)
        if not args.skip_storm:
            if args.pg:
                (work / "storm").mkdir()
                out["storm"] = run_storms(args, work / "storm")
            else:
                print("[storm] skipped: pass --pg URL or set LITEFS_TEST_PG")
        if not args.skip_follow:
            if args.pg:
                (work / "follow").mkdir()
                out["follow"] = run_follow(args, work / "follow")
            else:
                print("[follow] skipped: pass --pg URL or set LITEFS_TEST_PG")
        if not args.skip_prsync:
            if os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists() or not shutil.which(
                    "rsync"):
                print("[prsync] skipped: needs root, openssh-server and rsync")
            else:
                (work / "prsync").mkdir()
                out["prsync"] = run_prsync(args, work / "prsync")
    if args.json:
        print(json.dumps(out, indent=1))
    print(f"machine load average now: {os.getloadavg()[0]:.1f} (other work shares these cores)")


if __name__ == "__main__":
    main()
