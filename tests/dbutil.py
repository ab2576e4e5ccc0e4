"""Database fixtures shared by every area: a real SQLite file and a real PostgreSQL database.

``engine`` is parametrised over ``sqlite`` (a file in tmp_path) and ``pg`` (a fresh database on
the server named by ``$LITEFS_TEST_PG``, dropped afterwards), with the litefs schema created.
``blank_engine`` is the same without the schema. Import them into a test module with
``from tests.dbutil import engine, load_tables  # noqa: F401``.
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


def _pg_database() -> Iterator[str]:
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


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> Iterator[str]:
    """URL of an empty database of the parametrised backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/litefs.db"
    else:
        yield from _pg_database()


@pytest.fixture
def blank_engine(db_url: str) -> Iterator[Engine]:
    """An engine on an empty database (no litefs tables)."""
    engine = db.open_engine(db_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def engine(blank_engine: Engine) -> Engine:
    """An engine on a database with the litefs schema and default policy rows."""
    db.init_db(blank_engine)
    return blank_engine


def load_tables(engine: Engine, tables: Mapping[str, str]) -> None:
    """Replace each named table with the rows of its CSV text (schema created if missing)."""
    db.init_db(engine)
    for name, csv_text in tables.items():
        tabledata.restore(engine, name, csv_text, f"{name}.csv")


def dump_all(engine: Engine) -> dict[str, str]:
    """Every table as tabdump CSV: compare before/after to prove nothing changed."""
    with engine.connect() as conn:
        return {name: tabledata.dump(conn, name) for name in TABLES}
