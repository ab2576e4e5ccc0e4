"""Boot storm: N nodes ask mountd for their plans at once, each on a fresh TLS connection.

Builds a real database of ``--db-nodes`` nodes (hosts rows 127.10.x.y, the cookbook's RHEL
litefile list, a per-node litetree source and statelite row), starts ``mountd --workers
<CPUs>`` as a process, warms it (a running mountd has its tables loaded), then releases
``--nodes`` simulated nodes from distinct 127.x source addresses at the same instant. The
load generator is ``--procs`` processes with one thread per node (blocking ``ssl``: the
handshake runs in C outside the GIL; ``--in-flight`` caps open connections instead). Each
node verifies mountd's certificate against the site CA and checks the plan is its own.

Reported per backend (SQLite, and PostgreSQL with ``--pg URL`` or ``$LITEFS_TEST_PG``):
plans/s (nodes / time from release to the last plan); p50/p99/max of what a node waits
(release → plan); the same per connection (connect → plan); mountd's RSS summed over its
workers (now and peak); the table load time; CPU milliseconds per plan spent by mountd and
by the load generator. Baselines measured in the same run: trio's stock ``SSLStream`` server
answering a fixed line (no tables, no plan: the cost of TLS + trio alone), as a ratio, and
the TLS floor: one handshake + exchange with both ends in C, which bounds what any server can
do when the load generator shares the machine.

    .venv/bin/python tools/bench/bench_mountd.py [--nodes 2000] [--db-nodes 10000] [--pg URL]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

BIN = Path(sys.executable).parent


def node_name(i: int) -> str:
    return f"cn{i:05d}"


def node_addr(i: int) -> str:
    return f"127.10.{i // 250}.{i % 250 + 1}"


# --- database -----------------------------------------------------------------------------


def build_db(url: str, nodes: int) -> None:
    from importlib.resources import files

    from litefs import db, tabledata
    from litefs.schema import TABLES

    engine = db.open_engine(url)
    db.init_db(engine)
    litefile = (files("litefs") / "data" / "litefile-redhat.csv").read_text()
    tabledata.restore(engine, "litefile", litefile, "litefile-redhat.csv")
    blank = lambda t: {c.name: None for c in TABLES[t].columns}  # noqa: E731
    with db.write(engine) as conn:
        for t in ("nodelist", "hosts", "nodetype", "osimage", "litetree", "statelite"):
            conn.execute(TABLES[t].delete())
        conn.execute(TABLES["nodelist"].insert(), [
            {**blank("nodelist"), "node": node_name(i), "groups": "compute,all"} for i in range(nodes)
        ])
        conn.execute(TABLES["hosts"].insert(), [
            {**blank("hosts"), "node": node_name(i), "ip": node_addr(i)} for i in range(nodes)
        ])
        conn.execute(TABLES["nodetype"].insert(), [{
            **blank("nodetype"), "node": "compute", "os": "rhels8", "arch": "x86_64",
            "profile": "compute", "provmethod": "rhels8-x86_64-statelite-compute"}])
        conn.execute(TABLES["osimage"].insert(), [{
            **blank("osimage"), "imagename": "rhels8-x86_64-statelite-compute",
            "provmethod": "statelite", "profile": "compute"}])
        conn.execute(TABLES["litetree"].insert(), [
            {**blank("litetree"), "priority": "1.0", "image": "ALL", "directory": "mn:/statelite/$node"},
            {**blank("litetree"), "priority": "2.0", "image": "", "directory": "mn:/statelite/common"},
        ])
        conn.execute(TABLES["statelite"].insert(), [{
            **blank("statelite"), "node": "compute", "statemnt": "mn:/nodedata"}])
    engine.dispose()


def pg_database(admin_url: str) -> tuple[str, callable]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(admin_url).set(drivername="postgresql+psycopg")
    name = "litefs_bench_" + uuid.uuid4().hex[:8]
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return base.set(database=name).render_as_string(hide_password=False), drop


# --- servers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{what} did not start") from None
            time.sleep(0.05)


def family(pid: int) -> list[int]:
    """``pid`` and its child processes (mountd's workers)."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    return [pid, *map(int, kids)]


def rss_kib(pid: int) -> tuple[int, int]:
    """Current and peak resident memory of ``pid`` and its workers, summed (KiB)."""
    rss = peak = 0
    for p in family(pid):
        fields = {}
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        rss += int(fields["VmRSS"].split()[0])
        peak += int(fields["VmHWM"].split()[0])
    return rss, peak


BASELINE_SERVER = r"""
import sys, trio, ssl
from litefs.mountd import pki
ca = sys.argv[2]
ctx = pki.server_context(ca + "/ca.pem", ca + "/server.pem", ca + "/server.key")
REPLY = b'{"ok":true,"plan":{}}\n'
async def handle(raw):
    s = trio.SSLStream(raw, ctx, server_side=True)
    try:
        await s.do_handshake()
        await s.receive_some(65536)
        await s.send_all(REPLY)
    except Exception:
        pass
    finally:
        await trio.aclose_forcefully(s)
trio.run(lambda: trio.serve_tcp(handle, int(sys.argv[1]), host="127.0.0.1", backlog=4096))
"""


# --- load generator -----------------------------------------------------------------------


def _client(port: int, ca: str, indices: list[int], release_at: float, check: bool,
            threads_n: int, out: mp.Queue) -> None:
    """One load process: ``threads_n`` threads take nodes off a shared list from the release
    instant on, one fresh connection per node."""
    ctx = ssl.create_default_context(cafile=ca)
    conn_lat: list[float] = []
    wait_lat: list[float] = []
    errors: list[str] = []
    done_at = [0.0]
    lock = threading.Lock()
    todo = list(reversed(indices))

    def worker() -> None:
        delay = release_at - time.time()
        if delay > 0:
            time.sleep(delay)
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop()
            t0 = time.perf_counter()
            try:
                buf = ask_plan(port, ctx, i)
                dt = time.perf_counter() - t0
                if check:
                    reply = json.loads(buf)
                    if not reply.get("ok") or reply.get("node") != node_name(i):
                        raise RuntimeError(f"wrong reply for {node_name(i)}: {buf[:200]!r}")
                elif not buf:
                    raise RuntimeError("empty reply")
                now = time.time()
                with lock:
                    conn_lat.append(dt)
                    wait_lat.append(now - release_at)
                    done_at[0] = max(done_at[0], now)
            except Exception as exc:
                with lock:
                    errors.append(f"{node_name(i)}: {exc}")

    cpu0 = time.process_time()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((conn_lat, wait_lat, errors, done_at[0], time.process_time() - cpu0))


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid`` and its workers."""
    total = 0
    for p in family(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def storm(port: int, ca: str, nodes: int, procs: int, check: bool, pid: int,
          in_flight: int = 0) -> dict[str, float]:
    """Release ``nodes`` nodes at one instant; ``in_flight`` caps open connections (0: none)."""
    out: mp.Queue = mp.Queue()
    cpu0 = cpu_seconds(pid)
    release_at = time.time() + 1.0 + nodes / 2000  # every thread is waiting by then
    chunks = [list(range(k, nodes, procs)) for k in range(procs)]
    per_proc = [len(c) if in_flight <= 0 else max(1, in_flight // procs) for c in chunks]
    workers = [mp.Process(target=_client, args=(port, ca, c, release_at, check, n, out))
               for c, n in zip(chunks, per_proc, strict=True)]
    for w in workers:
        w.start()
    conn_lat: list[float] = []
    wait_lat: list[float] = []
    errors: list[str] = []
    last = 0.0
    gen_cpu = 0.0
    for _ in workers:
        got_conn, got_wait, got_err, done, cpu = out.get(timeout=600)
        conn_lat += got_conn
        wait_lat += got_wait
        errors += got_err
        last = max(last, done)
        gen_cpu += cpu
    for w in workers:
        w.join()
    cpu = cpu_seconds(pid) - cpu0
    if errors:
        print(f"  {len(errors)} errors, e.g. {errors[:3]}")
    conn_lat.sort()
    wait_lat.sort()
    wall = last - release_at
    ok = len(wait_lat)

    def pct(xs: list[float], q: float) -> float:
        return 1000 * xs[min(len(xs) - 1, int(len(xs) * q))] if xs else float("nan")

    return {
        "ok": ok,
        "errors": len(errors),
        "wall_s": wall,
        "plans_per_s": ok / wall if wall > 0 else 0.0,
        "p50_ms": pct(wait_lat, 0.5),
        "p99_ms": pct(wait_lat, 0.99),
        "max_ms": pct(wait_lat, 1.0),
        "conn_p50_ms": pct(conn_lat, 0.5),
        "conn_p99_ms": pct(conn_lat, 0.99),
        "cpu_ms_per_plan": 1000 * cpu / max(1, ok),
        "gen_cpu_ms_per_plan": 1000 * gen_cpu / max(1, ok),
    }


def ask_plan(port: int, ctx: ssl.SSLContext, i: int) -> bytes:
    """One node's request on a fresh connection from its own address; the raw reply line."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=60,
                                   source_address=(node_addr(i), 0))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(b'{"op":"plan","v":1}\n')
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return buf


def warm(port: int, ca: str, i: int) -> None:
    buf = ask_plan(port, ssl.create_default_context(cafile=ca), i)
    assert json.loads(buf)["ok"], buf


def run_backend(label: str, url: str, args: argparse.Namespace, ca: Path, workdir: Path) -> dict:
    t = time.perf_counter()
    build_db(url, args.db_nodes)
    print(f"[{label}] database with {args.db_nodes} nodes built in {time.perf_counter() - t:.1f}s")
    port = free_port()
    log = workdir / f"mountd-{label}.log"
    cmd = [str(BIN / "mountd"), "--db", url, "--port", str(port), "--host", "127.0.0.1",
           "--ca-dir", str(ca), "--socket", "", "--log-level", "info",
           "--workers", str(args.workers)]
    with log.open("wb") as logf:
        proc = subprocess.Popen(cmd, stderr=logf, stdout=subprocess.DEVNULL)
        try:
            wait_port(port, proc, "mountd")
            idle_rss, _ = rss_kib(proc.pid)
            for k in range(4 * args.workers):  # every worker loads its tables
                warm(port, str(ca / "ca.pem"), args.db_nodes - 1 - k)
            loaded = [json.loads(x) for x in log.read_text().splitlines()
                      if '"tables_loaded"' in x]
            result = storm(port, str(ca / "ca.pem"), args.nodes, args.procs, check=True,
                           pid=proc.pid, in_flight=args.in_flight)
            rss, peak = rss_kib(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    result.update(idle_rss_mib=idle_rss / 1024, rss_mib=rss / 1024, peak_rss_mib=peak / 1024,
                  load_s=max(r["seconds"] for r in loaded) if loaded else float("nan"))
    return result


def handshake_floor(ca: Path, n: int = 300) -> float:
    """CPU ms for one TLS handshake + request/reply, both ends in C (blocking ssl, one
    process): what any TLS server and its clients must spend per plan on this machine."""
    from litefs.mountd import pki

    sctx = pki.server_context(ca / "ca.pem", ca / "server.pem", ca / "server.key")
    cctx = ssl.create_default_context(cafile=str(ca / "ca.pem"))

    def serve(sock: socket.socket) -> None:
        with sctx.wrap_socket(sock, server_side=True) as t:
            t.recv(100)
            t.sendall(b"x" * 3000)

    start = time.process_time()
    for _ in range(n):
        a, b = socket.socketpair()
        th = threading.Thread(target=serve, args=(a,))
        th.start()
        with cctx.wrap_socket(b, server_hostname="127.0.0.1") as c:
            c.sendall(b"plan\n")
            c.recv(5000)
        th.join()
    return 1000 * (time.process_time() - start) / n


def run_baseline(args: argparse.Namespace, ca: Path) -> dict:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", BASELINE_SERVER, str(port), str(ca)])
    try:
        wait_port(port, proc, "baseline server")
        return storm(port, str(ca / "ca.pem"), args.nodes, args.procs, check=False,
                     pid=proc.pid, in_flight=args.in_flight)
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=2000, help="nodes in the storm (default 2000)")
    p.add_argument("--db-nodes", type=int, default=10000, help="nodes in the database")
    p.add_argument("--procs", type=int, default=4, help="load generator processes")
    p.add_argument("--pg", default=os.environ.get("LITEFS_TEST_PG"),
                   help="PostgreSQL server URL (default $LITEFS_TEST_PG); a database is created")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="mountd worker processes (default: one per CPU)")
    p.add_argument("--in-flight", type=int, default=0,
                   help="cap on connections open at once across the generator (default 0: every "
                   "node connects at the release instant, one thread per node)")
    p.add_argument("--no-baseline", action="store_true")
    args = p.parse_args()
    if args.nodes > args.db_nodes:
        raise SystemExit("--nodes must not exceed --db-nodes")

    from litefs.mountd import pki

    print(f"boot storm: {args.nodes} nodes at once, fresh TLS connection each, "
          f"{args.db_nodes} nodes in the database, {os.cpu_count()} CPUs, "
          f"{args.procs} load processes")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-mountd-") as tmp:
        work = Path(tmp)
        ca = work / "ca"
        pki.init_site(ca, server_name="bench", san=["127.0.0.1"])
        floor = handshake_floor(ca)
        if not args.no_baseline:
            results["baseline"] = run_baseline(args, ca)
        results["sqlite"] = run_backend("sqlite", f"sqlite:///{work}/litefs.db", args, ca, work)
        if args.pg:
            url, drop = pg_database(args.pg)
            try:
                results["postgresql"] = run_backend("postgresql", url, args, ca, work)
            finally:
                drop()
        else:
            print("[postgresql] skipped: pass --pg URL or set LITEFS_TEST_PG")

    base = results.get("baseline")
    print()
    print(f"{'backend':<11} {'plans/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'conn p50':>8} {'conn p99':>8} {'errors':>6} {'RSS MiB':>8} {'peak':>6} "
          f"{'load s':>6} {'vs base':>7} {'srv ms/plan':>11} {'gen ms/plan':>11}")
    for label, r in results.items():
        ratio = f"{r['plans_per_s'] / base['plans_per_s']:.2f}x" if base and label != "baseline" else ""
        if "rss_mib" in r:
            rss = f"{r['rss_mib']:8.1f} {r['peak_rss_mib']:6.1f} {r['load_s']:6.2f}"
        else:
            rss = f"{'':8} {'':6} {'':6}"
        print(f"{label:<11} {r['plans_per_s']:8.0f} {r['p50_ms']:7.0f} {r['p99_ms']:7.0f} "
              f"{r['max_ms']:7.0f} {r['conn_p50_ms']:8.1f} {r['conn_p99_ms']:8.1f} "
              f"{r['errors']:6d} {rss} {ratio:>7} {r['cpu_ms_per_plan']:11.2f} "
              f"{r['gen_cpu_ms_per_plan']:11.2f}")
    print("p50/p99/max: from the release instant to the node holding its plan (what a booting")
    print("node waits); conn p50/p99: from its connect to its plan; srv/gen ms/plan: CPU spent")
    print("by mountd (all workers) / by the load generator per plan")
    cpus = os.cpu_count() or 1
    print(f"\nTLS floor: one handshake + exchange costs {floor:.2f} ms CPU for both ends in C; "
          f"with the load generator on the same {cpus} cores no server can exceed "
          f"~{1000 * cpus / floor:.0f} plans/s here")
    print("baseline = trio's stock SSLStream server answering a fixed line (no tables, no plan)")
    print("target: >= 3000 plans/s, p99 < 150 ms (2 cores; load generator on the same cores)")
    print(f"machine load average now: {os.getloadavg()[0]:.1f} (other work shares these cores)")


if __name__ == "__main__":
    main()
