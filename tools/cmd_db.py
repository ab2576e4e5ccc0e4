"""``litefs db init | upgrade | status``: create, upgrade and inspect the litefs tables.

Schema changes are explicit: ``init`` creates the tables (and xCAT's default policy rows) in
an empty database, ``upgrade`` runs the migrations from the recorded version, ``status`` says
where the database is, its version and how many rows each table holds.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from litefs.tools.common import EXIT_OK, add_db_option
from sqlalchemy import Engine, func, select

from litefs import db
from litefs.errors import LitefsError, TableError
from litefs.schema import SCHEMA_VERSION, TABLES


def _init(args: argparse.Namespace) -> int:
    engine = db.open_engine(args.db)
    version = db.init_db(engine)
    print(f"database {db.shown(engine.url)} ready (schema version {version})")
    return EXIT_OK


def _upgrade(args: argparse.Namespace) -> int:
    engine = db.open_engine(args.db, must_exist=True)
    start, end = db.upgrade(engine)
    if start == end:
        print(f"database {db.shown(engine.url)} is up to date (schema version {end})")
    else:
        print(f"database {db.shown(engine.url)} upgraded from schema version {start} to {end}")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    engine = db.open_engine(args.db, must_exist=True)
    with engine.connect() as conn:
        version = db.current_version(conn)
    if getattr(args, "json", False):
        return _status_json(engine, version)
    print(f"database: {db.shown(engine.url)}")
    if version is None:
        print("schema:   none")
        sys.stdout.flush()
        raise TableError(f"database {db.shown(engine.url)} has no litefs tables; run 'litefs db init'")
    note = "" if version == SCHEMA_VERSION else f" (this litefs uses {SCHEMA_VERSION})"
    print(f"schema:   version {version}{note}")
    sys.stdout.flush()
    db.require_schema(engine)  # older, newer or damaged: one line on stderr saying what to do
    with engine.connect() as conn:
        for name, t in TABLES.items():
            count = conn.execute(select(func.count()).select_from(t)).scalar()
            print(f"  {name:<12} {count} rows")
    return EXIT_OK


def _status_json(engine: Engine, version: int | None) -> int:
    """``db status --json``: the same facts as one JSON object; a database that is not ready
    still prints its document (ok=false) and then fails with the usual one line."""
    doc: dict[str, object] = {"database": db.shown(engine.url), "schema_version": version,
                              "expected_version": SCHEMA_VERSION, "tables": {}}
    problem: LitefsError | None = None
    try:
        if version is None:
            raise TableError(f"database {db.shown(engine.url)} has no litefs tables; run 'litefs db init'")
        db.require_schema(engine)
        with engine.connect() as conn:
            doc["tables"] = {name: conn.execute(select(func.count()).select_from(t)).scalar()
                             for name, t in TABLES.items()}
    except LitefsError as exc:
        problem = exc
    doc["ok"] = problem is None
    print(json.dumps(doc, indent=1), flush=True)
    if problem is not None:
        raise problem
    return EXIT_OK


def setup_db(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions = {
        "init": (_init, "create the tables and default policy rows (safe to repeat)"),
        "upgrade": (_upgrade, "upgrade an older database to this litefs's schema"),
        "status": (_status, "show the database URL, schema version and row counts"),
    }
    for name, (run, summary) in actions.items():
        p = sub.add_parser(name, help=summary, description=summary)
        add_db_option(p)
        if name == "status":
            p.add_argument("--json", action="store_true", help="one JSON object (for scripts)")
        p.set_defaults(run=run)

    def run(args: argparse.Namespace) -> int:
        return int(args.run(args))

    return run
