"""Benchmark: plans for 10,000 nodes in 100 groups, on SQLite, including the database read.

The tables: the cookbook's RedHat litefile list (42 rows), three litetree rows with
variables (``$noderes.nfsserver``, ``$node``, ``$nodepos.room``, ``$nodetype.os``…), a
statelite row with a variable, nodetype/noderes on the groups and nodepos per node (so every
plan needs inheritance and substitution). Target: all 10,000 plans in under 2 s, counting
``load_snapshot``. The baseline, measured in the same run on a sample of nodes and scaled to
10,000, is planning each node on its own (``node_plan(engine, node)``: one table read per
node, what a naive server does per request). Prints times and ratios.

    .venv/bin/python tools/bench/bench_plan.py [--nodes 10000] [--groups 100] [--sample 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from importlib.resources import files
from pathlib import Path

from sqlalchemy import Engine, insert

from litefs import db, tabledata
from litefs.planner import load_snapshot, node_plan, plan_for_node
from litefs.schema import TABLES

TARGET_SECONDS = 2.0


def populate(engine: Engine, n_nodes: int, n_groups: int) -> list[str]:
    db.init_db(engine)
    litefile_csv = files("litefs.data").joinpath("litefile-redhat.csv").read_text()
    tabledata.restore(engine, "litefile", litefile_csv, "litefile.csv")
    nodes = [f"cn{i:05d}" for i in range(1, n_nodes + 1)]
    groups = [f"rack{g:03d}" for g in range(n_groups)]
    rows: dict[str, list[dict[str, str | None]]] = {
        "nodelist": [
            {"node": n, "groups": f"{groups[i % n_groups]},compute,all"} for i, n in enumerate(nodes)
        ],
        "nodepos": [{"node": n, "room": f"room{i % 7}", "rack": str(i % n_groups)}
                    for i, n in enumerate(nodes)],
        "noderes": [{"node": g, "nfsserver": f"10.0.{i}.1"} for i, g in enumerate(groups)],
        "nodetype": [{"node": "compute", "os": "rhels8", "arch": "x86_64", "profile": "compute"}],
        "osimage": [{"imagename": "rhels8-x86_64-statelite-compute", "provmethod": "statelite"}],
        "litetree": [
            {"priority": "1", "image": "ALL", "directory": "$noderes.nfsserver:/statelite/$node"},
            {"priority": "2", "image": "", "directory": "cnfs:/syncdirs/$nodepos.room/$nodetype.os/"
             "$nodetype.arch/$nodetype.profile", "mntopts": "hard"},
            {"priority": "3", "image": "ALL", "directory": "cnfs:/gpfs/dallas/"},
        ],
        "statelite": [{"node": "compute", "statemnt": "$noderes.nfsserver:/state"}],
    }
    with db.write(engine) as conn:
        for name, data in rows.items():
            t = TABLES[name]
            cols = [c.name for c in t.columns]
            conn.execute(insert(t), [{c: r.get(c) for c in cols} for r in data])
    return nodes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--groups", type=int, default=100)
    ap.add_argument("--sample", type=int, default=20, help="nodes the baseline plans one by one")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = db.open_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        try:
            nodes = populate(engine, args.nodes, args.groups)

            start = time.perf_counter()
            snap = load_snapshot(engine)
            read = time.perf_counter() - start
            plans = [plan_for_node(snap, n) for n in nodes]
            total = time.perf_counter() - start

            sample = nodes[:: max(1, len(nodes) // args.sample)][: args.sample]
            b_start = time.perf_counter()
            for n in sample:
                assert node_plan(engine, n) == plans[nodes.index(n)]
            per_node = (time.perf_counter() - b_start) / len(sample)
        finally:
            engine.dispose()
    baseline = per_node * len(nodes)
    p = plans[-1]
    print(f"plan: {len(nodes)} nodes in {args.groups} groups, {len(p.rules)} rules, "
          f"{len(p.sources)} litetree sources with variables, SQLite")
    print(f"  example: {p.node}: {p.sources[0].directory} | {p.sources[1].directory} | "
          f"statemnt {p.statemnt}")
    print(f"  database read (load_snapshot)  {read:8.3f} s")
    print(f"  planning                       {total - read:8.3f} s")
    print(f"  total                          {total:8.3f} s  ({len(nodes) / total:,.0f} plans/s)")
    print(f"  baseline: one read per node    {baseline:8.1f} s  "
          f"(measured on {len(sample)} nodes: {per_node * 1000:.1f} ms/node)")
    print(f"  target                         {TARGET_SECONDS:8.3f} s")
    print(f"  ratio to target                {TARGET_SECONDS / total:8.2f}x  "
          f"({'MET' if total < TARGET_SECONDS else 'NOT MET'})")
    print(f"  ratio to baseline              {baseline / total:8.1f}x faster")


if __name__ == "__main__":
    main()
