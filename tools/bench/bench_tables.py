"""Benchmark: tabrestore / tabdump of a 10,000-node nodelist on SQLite, against baselines.

Measures, in the same run: parsing the CSV with :func:`litefs.csvtab.parse` against the
standard library's ``csv.reader`` on the same text; ``tabledata.restore`` (parse, checks and
one transaction) against a bare SQLAlchemy ``executemany`` of the same rows; ``tabledata.dump``
against a bare ``SELECT *``. Prints times, rows/s and ratios (no targets are asserted).

    .venv/bin/python tools/bench/bench_tables.py [--rows 10000] [--db URL]
"""

from __future__ import annotations

import argparse
import csv
import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from litefs import csvtab, db, tabledata
from litefs.schema import TABLES, column_names


def timed(fn: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--db", help="database URL (default: a temporary SQLite file)")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    url = args.db or f"sqlite:///{Path(tmp.name)}/bench.db"
    engine = db.open_engine(url)
    db.init_db(engine)

    t = TABLES["nodelist"]
    cols = column_names(t)
    rows = [
        (f"cn{i:05d}", f"rack{i % 100:03d},compute,all", "booted", None, None, None, None, None,
         None, None, None, f'node "{i}", row', None)
        for i in range(args.rows)
    ]
    text = csvtab.format_table(cols, rows)
    n = args.rows

    parse_s = timed(lambda: csvtab.parse(text, cols, keys=("node",), source="nodelist.csv"))
    stdlib_s = timed(lambda: list(csv.reader(io.StringIO(text))))
    restore_s = timed(lambda: tabledata.restore(engine, "nodelist", text, "nodelist.csv"))

    dicts = [dict(zip(cols, r, strict=True)) for r in rows]

    def raw_insert() -> None:
        with db.write(engine) as conn:
            conn.execute(t.delete())
            conn.execute(t.insert(), dicts)

    raw_s = timed(raw_insert)

    def do_dump() -> None:
        with engine.connect() as conn:
            tabledata.dump(conn, "nodelist")

    def raw_select() -> None:
        with engine.connect() as conn:
            conn.execute(select(t)).all()

    dump_s = timed(do_dump)
    select_s = timed(raw_select)
    engine.dispose()

    print(f"database: {db.shown(url)}, {n} nodelist rows, {len(text) / 1e6:.2f} MB of CSV")
    print(f"parse    {parse_s * 1e3:8.1f} ms  {n / parse_s:10.0f} rows/s   "
          f"stdlib csv {stdlib_s * 1e3:6.1f} ms  ratio {parse_s / stdlib_s:5.1f}x")
    print(f"restore  {restore_s * 1e3:8.1f} ms  {n / restore_s:10.0f} rows/s   "
          f"bare insert {raw_s * 1e3:5.1f} ms  ratio {restore_s / raw_s:5.1f}x")
    print(f"dump     {dump_s * 1e3:8.1f} ms  {n / dump_s:10.0f} rows/s   "
          f"bare select {select_s * 1e3:5.1f} ms  ratio {dump_s / select_s:5.1f}x")
    tmp.cleanup()


if __name__ == "__main__":
    main()
