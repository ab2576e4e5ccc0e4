"""Database fixtures shared by every area: a real SQLite file and a real PostgreSQL database.

The fixtures themselves (``db_url``, ``blank_engine``, ``engine``) are in ``tests/conftest.py``,
so every test module has them without importing; this module holds what they and the tests
call: the backends, a private PostgreSQL database, loading and dumping tables.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from litefs import db, tabledata
from litefs.schema import TABLES

PG_ENV = "LITEFS_TEST_PG"
BACKENDS = ["sqlite", pytest.param("pg", marks=pytest.mark.pg)]


def pg_admin_url() -> str:
    """The server URL, or skip (fail under CI) when there is none."""
    url = os.environ.get(PG_ENV)
    if not url:
        reason = f"{PG_ENV} is not set (tools/test.sh starts a PostgreSQL server and sets it)"
        if os.environ.get("CI"):
            pytest.fail(reason + " but CI is set: the PostgreSQL tests must run in CI")
        pytest.skip(reason)
    return url


def pg_database() -> Iterator[str]:
    """A fresh database on the server named by ``$LITEFS_TEST_PG``: its URL, dropped afterwards."""
    admin_url = make_url(pg_admin_url()).set(drivername="postgresql+psycopg")
    name = "litefs_t_" + uuid.uuid4().hex[:12]
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield admin_url.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def load_tables(engine: Engine, tables: Mapping[str, str]) -> None:
    """Replace each named table with the rows of its CSV text (schema created if missing)."""
    db.init_db(engine)
    for name, csv_text in tables.items():
        tabledata.restore(engine, name, csv_text, f"{name}.csv")


def dump_all(engine: Engine) -> dict[str, str]:
    """Every table as tabdump CSV: compare before/after to prove nothing changed."""
    with engine.connect() as conn:
        return {name: tabledata.dump(conn, name) for name in TABLES}
