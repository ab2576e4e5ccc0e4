"""Opening the litefs database and managing its schema version.

The database is an SQLite file by default (embedded, zero set-up) or a PostgreSQL server given by
URL. :func:`open_engine` returns a SQLAlchemy engine tuned for the backend and proves it can
connect, so a wrong URL fails at once with one readable line. The schema is explicit: nothing
creates tables behind the admin's back; ``litefs db init`` (:func:`init_db`) creates them and
``litefs db upgrade`` (:func:`upgrade`) walks the migration list from the recorded version to
:data:`litefs.schema.SCHEMA_VERSION`. Commands that read tables call :func:`require_schema` first.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from litefs.errors import DatabaseUnreachable, LitefsError, TableError
from litefs.schema import SCHEMA_VERSION, TABLES, litefs_meta, metadata

#: Key of the schema version row in ``litefs_meta``.
VERSION_KEY = "schema_version"

#: Seconds a writer waits for another writer's lock on SQLite before giving up.
SQLITE_BUSY_TIMEOUT = 30

#: xCAT's default policy rows (xcatconfig): root may do anything, booting nodes may ask for
#: their litefile and litetree lists anonymously.
DEFAULT_POLICY: tuple[dict[str, str], ...] = (
    {"priority": "1", "name": "root", "rule": "allow"},
    {"priority": "4.7", "commands": "litefile", "rule": "allow"},
    {"priority": "4.8", "commands": "litetree", "rule": "allow"},
)


def default_url() -> str:
    """``$LITEFS_DB``, else the standard SQLite file (root: /var/lib/litefs, others: ~/.local)."""
    env = os.environ.get("LITEFS_DB", "").strip()
    if env:
        return env
    if os.geteuid() == 0:
        path = Path("/var/lib/litefs/litefs.db")
    else:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        path = Path(base) / "litefs" / "litefs.db"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LitefsError(
            f"cannot create {path.parent} for the default database: {exc.strerror}; "
            "pass --db URL or set LITEFS_DB"
        ) from None
    return f"sqlite:///{path}"


def shown(url: str | URL) -> str:
    """The URL as it may be printed: password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable URL>"


def _parse(url: str) -> URL:
    try:
        u = make_url(url)
    except ArgumentError:
        raise LitefsError(
            f"bad database URL {url.split('@')[-1]!r}: expected e.g. sqlite:////var/lib/litefs/"
            "litefs.db or postgresql://user@host/db; fix --db or LITEFS_DB"
        ) from None
    # A bare postgresql:// would pick psycopg2, which we do not ship; psycopg (3) is the driver.
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    if u.get_backend_name() not in ("sqlite", "postgresql"):
        raise LitefsError(
            f"unsupported database {shown(u)}: litefs works with sqlite:///PATH or "
            "postgresql://user@host/db; fix --db or LITEFS_DB"
        )
    return u


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: object) -> None:
        # Let SQLAlchemy, not pysqlite, decide where transactions begin (see _on_begin).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT * 1000}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer takes the write lock up front, so a read-modify-write (chtab +=) cannot
        # fail half way with "database is locked"; readers stay deferred and never block.
        mode = "IMMEDIATE" if conn.get_execution_options().get("litefs_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")


def open_engine(url: str | None = None, *, must_exist: bool = False,
                connect: bool = True) -> Engine:
    """An engine for ``url`` (default :func:`default_url`) that has been shown to connect.

    ``must_exist``: a missing SQLite file is an error instead of being created (read-only
    commands should not leave an empty database behind). ``connect=False`` skips the
    connection test (mountd on a service node starts while the database is still away and
    says so to every node; see :func:`check_connect`).
    """
    raw = url if url else default_url()
    u = _parse(raw)
    try:
        if u.get_backend_name() == "sqlite":
            if u.database and u.database != ":memory:":
                if must_exist and not Path(u.database).exists():
                    raise TableError(
                        f"database {shown(u)} does not exist; run 'litefs db init' "
                        "(or pass --db URL)"
                    )
                parent = Path(u.database).parent
                if not parent.is_dir():
                    raise LitefsError(
                        f"cannot open database {shown(u)}: folder {parent} does not exist; "
                        "create it or pass another --db URL"
                    )
            engine = create_engine(u, connect_args={"timeout": SQLITE_BUSY_TIMEOUT})
            _sqlite_setup(engine)
        else:
            # A blackholed server must fail in seconds, not after the TCP timeout.
            connect_args = {} if "connect_timeout" in u.query else {"connect_timeout": 10}
            engine = create_engine(u, pool_pre_ping=True, connect_args=connect_args)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise LitefsError(
            f"cannot use database URL {shown(u)}: {exc}; use sqlite:///PATH or "
            "postgresql://user@host/db"
        ) from None
    if connect:
        try:
            check_connect(engine)
        except LitefsError:
            engine.dispose()
            raise
    return engine


def check_connect(engine: Engine) -> None:
    """Raise DatabaseUnreachable (one line) unless ``engine`` can open a connection now."""
    try:
        with engine.connect():
            pass
    except (DBAPIError, SQLAlchemyError) as exc:
        raise DatabaseUnreachable(
            f"cannot connect to database {shown(engine.url)}: {_first_line(exc)}; check the "
            "server is running and the URL (--db or LITEFS_DB) is right"
        ) from None


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """One write transaction: committed if the block ends normally, rolled back otherwise."""
    with engine.connect() as conn:
        conn.execution_options(litefs_write=True)
        with conn.begin():
            yield conn


def current_version(conn: Connection) -> int | None:
    """The recorded schema version; 0 for xCAT tables without bookkeeping; None if empty."""
    names = set(inspect(conn).get_table_names())
    if litefs_meta.name not in names:
        return 0 if names & set(TABLES) else None
    value = conn.execute(
        select(litefs_meta.c.value).where(litefs_meta.c.key == VERSION_KEY)
    ).scalar()
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        raise TableError(f"litefs_meta holds a bad schema version {value!r}") from None


def _set_version(conn: Connection, version: int) -> None:
    conn.execute(litefs_meta.delete().where(litefs_meta.c.key == VERSION_KEY))
    conn.execute(litefs_meta.insert().values(key=VERSION_KEY, value=str(version)))


def _insert_default_policy(conn: Connection) -> None:
    policy = TABLES["policy"]
    have = set(conn.execute(select(policy.c.priority)).scalars())
    cols = [c.name for c in policy.columns]
    rows = [{c: row.get(c) for c in cols} for row in DEFAULT_POLICY if row["priority"] not in have]
    if rows:
        conn.execute(policy.insert(), rows)


def init_db(engine: Engine) -> int:
    """Create the tables and default policy rows if missing; return the schema version.

    Idempotent. A database at an older version must be upgraded (:func:`upgrade`) instead,
    so a schema change is always an explicit step.
    """
    with write(engine) as conn:
        version = current_version(conn)
        if version is not None and version > SCHEMA_VERSION:
            raise TableError(_newer(engine, version))
        if version is not None and version < SCHEMA_VERSION:
            raise TableError(
                f"database {shown(engine.url)} has schema version {version}; "
                "run 'litefs db upgrade' first"
            )
        metadata.create_all(conn, checkfirst=True)
        if version is None:
            _set_version(conn, SCHEMA_VERSION)
        _insert_default_policy(conn)
    return SCHEMA_VERSION


def _v0_to_v1(conn: Connection) -> None:
    # Version 0: xCAT tables (e.g. loaded by an older tool) without litefs bookkeeping.
    # Version 1 adds litefs_meta, any missing table and xCAT's default policy rows.
    metadata.create_all(conn, checkfirst=True)
    _insert_default_policy(conn)


def _v1_to_v2(conn: Connection) -> None:
    # Version 2 adds xCAT's nodehm table (serial console settings nodeset puts on the kernel
    # command line). Rows elsewhere are untouched; checkfirst because a v0 database upgraded
    # by this code already got every table in _v0_to_v1.
    TABLES["nodehm"].create(conn, checkfirst=True)


def _v2_to_v3(conn: Connection) -> None:
    # Version 3 adds xCAT's servicenode table (the service nodes of a hierarchy, which
    # noderes.servicenode pools must name).
    TABLES["servicenode"].create(conn, checkfirst=True)


Migration = Callable[[Connection], None]

#: ``MIGRATIONS[n]`` turns a version-n database into version n+1, inside one transaction.
MIGRATIONS: Mapping[int, Migration] = {0: _v0_to_v1, 1: _v1_to_v2, 2: _v2_to_v3}


def upgrade(
    engine: Engine,
    *,
    migrations: Mapping[int, Migration] = MIGRATIONS,
    target: int = SCHEMA_VERSION,
) -> tuple[int, int]:
    """Run migrations up to ``target`` in one transaction; return (from, to) versions."""
    with write(engine) as conn:
        start = current_version(conn)
        if start is None:
            raise TableError(_missing(engine))
        if start > target:
            raise TableError(_newer(engine, start, target))
        version = start
        while version < target:
            step = migrations.get(version)
            if step is None:
                raise TableError(f"no migration from schema version {version} to {version + 1}")
            step(conn)
            version += 1
            _set_version(conn, version)
    return start, version


def require_schema(engine: Engine) -> int:
    """Raise TableError unless the database holds the schema this code expects."""
    with engine.connect() as conn:
        version = current_version(conn)
        names = set(inspect(conn).get_table_names()) if version == SCHEMA_VERSION else set()
    if version is None:
        raise TableError(_missing(engine))
    if version > SCHEMA_VERSION:
        raise TableError(_newer(engine, version))
    if version < SCHEMA_VERSION:
        raise TableError(
            f"database {shown(engine.url)} has schema version {version}, this litefs needs "
            f"{SCHEMA_VERSION}; run 'litefs db upgrade'"
        )
    # A table dropped by hand would otherwise surface as a traceback in the middle of a read.
    gone = [name for name in TABLES if name not in names]
    if gone:
        raise TableError(
            f"database {shown(engine.url)} lacks table(s) {', '.join(gone)}; run 'litefs db init' "
            "to create them again (existing rows are kept)"
        )
    return version


def _missing(engine: Engine) -> str:
    return f"database {shown(engine.url)} has no litefs tables; run 'litefs db init'"


def _newer(engine: Engine, version: int, mine: int = SCHEMA_VERSION) -> str:
    return (
        f"database {shown(engine.url)}: schema version {version} is newer than this litefs "
        f"({mine}); upgrade litefs"
    )
