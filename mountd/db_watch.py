"""Database change subscription: every mountd on one PostgreSQL hears table changes and notifies.

Interface (small on purpose; other parts such as service-node tests rely on it)::

    watch = DbWatch(engine, on_tables=catalog.invalidate, on_announce=deliver, log=log)
    nursery.start_soon(watch.run)          # forever; reconnects by itself
    await watch.publish(target, paths)     # a ``litefs notify`` for every other mountd
    publish_announcement(engine, target, paths)  # the same from a tool (litefs notify --db)

* ``on_tables()`` is called (in the trio thread) whenever a table may have changed: a
  trigger on every litefs table does ``pg_notify('litefs_tables', <table>)`` per statement,
  so writes from any tool (``chtab``, ``tabrestore``, psql, another site script) count, not
  only our own write path. It is also called once after a lost connection comes back,
  because notifications sent meanwhile are gone.
* ``on_announce(target, paths)`` is called for a ``litefs notify`` made at another mountd
  (channel ``litefs_notify``; each mountd skips its own by an origin id).
* ``publish`` returns False on SQLite (one MN, nothing to fan out) or when the database is
  unreachable (the local nodes were told anyway).

Triggers rather than a NOTIFY from our own write path: they catch every writer, cost one
``pg_notify`` per statement (deduplicated by PostgreSQL within a transaction) and need no
change to the tools. mountd installs them at start (idempotent, under an advisory lock so
several mountds starting at once do not race); without the privilege to do so it logs one
line and relies on polling the WAL position (``Catalog`` does that every check interval).

On SQLite :meth:`DbWatch.run` returns at once: the catalog's file-stat fingerprint, polled
by mountd every ``--check-interval`` (0.2 s), is the change signal.

The LISTEN connection is a plain psycopg connection of its own (a LISTEN must stay on one
session; the SQLAlchemy pool hands out sessions per query). It is waited on in a worker
thread one second at a time; when it breaks, mountd logs ``db_listen_lost`` once, retries
with backoff, and logs ``db_listen_restored`` once it is back.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from collections.abc import Callable
from typing import Any

import trio
from sqlalchemy import Engine, text

from litefs.schema import TABLES

TABLES_CHANNEL = "litefs_tables"
NOTIFY_CHANNEL = "litefs_notify"
TRIGGER = "litefs_changed"
FUNCTION = "litefs_tables_changed"
#: PostgreSQL's NOTIFY payload limit is 8000 bytes; beyond this we announce "/" instead.
MAX_PAYLOAD = 7800
#: Arbitrary constant naming our advisory lock (trigger installation).
_LOCK_KEY = 0x11FE_F5


def is_postgres(engine: Engine) -> bool:
    return engine.url.get_backend_name() == "postgresql"


def trigger_sql() -> list[str]:
    """The statements that make every litefs table announce its changes."""
    out = [
        f"CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN PERFORM pg_notify('{TABLES_CHANNEL}', TG_TABLE_NAME); RETURN NULL; END $$"
    ]
    for name in sorted(TABLES):
        out.append(
            f'CREATE OR REPLACE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE '
            f'ON "{name}" FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()'
        )
    return out


def install_triggers(engine: Engine) -> None:
    """Create (or refresh) the change triggers; raises SQLAlchemyError without privilege."""
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        have = conn.execute(text(
            "SELECT count(*) FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
            "WHERE t.tgname = :t AND p.proname = :f"), {"t": TRIGGER, "f": FUNCTION}).scalar()
        if have == len(TABLES):
            return
        for stmt in trigger_sql():
            conn.execute(text(stmt))


def encode_announcement(origin: str, target: str, paths: list[str]) -> str:
    """The NOTIFY payload; too many paths for one payload become ``["/"]`` (always correct)."""
    payload = json.dumps({"o": origin, "t": target, "p": paths}, separators=(",", ":"))
    if len(payload.encode()) > MAX_PAYLOAD:
        payload = json.dumps({"o": origin, "t": target[:4000], "p": ["/"]},
                             separators=(",", ":"))
    return payload


def decode_announcement(payload: str) -> tuple[str, str, list[str]] | None:
    """(origin, target, paths) or None for a payload that is not ours."""
    try:
        obj = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    origin, target, paths = obj.get("o"), obj.get("t"), obj.get("p")
    if not (isinstance(origin, str) and isinstance(target, str) and isinstance(paths, list)):
        return None
    # Only absolute, normalised paths reach a node ("/../x" becomes "/x", as in the view).
    clean = [posixpath.normpath(p) for p in paths if isinstance(p, str) and p.startswith("/")]
    return origin, target, [("/" + p.lstrip("/")) for p in clean][:MAX_PAYLOAD]


def publish_announcement(engine: Engine, target: str, paths: list[str],
                         origin: str | None = None) -> None:
    """``pg_notify`` one announcement to every mountd LISTENing on ``engine``'s database.

    ``origin`` names the sender (a mountd skips its own); ``litefs notify --db`` sends a
    fresh one, so every mountd, the MN's included, delivers it to its running nodes."""
    payload = encode_announcement(origin or uuid.uuid4().hex, target, paths)
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": NOTIFY_CHANNEL, "p": payload})


Log = Callable[..., None]


class DbWatch:
    """See the module docstring."""

    def __init__(
        self,
        engine: Engine,
        *,
        on_tables: Callable[[], None],
        on_announce: Callable[[str, list[str]], None],
        log: Log | None = None,
        retry_cap: float = 5.0,
    ) -> None:
        self.engine = engine
        self.on_tables = on_tables
        self.on_announce = on_announce
        self.log = log or (lambda *a, **k: None)
        self.origin = uuid.uuid4().hex
        self.retry_cap = retry_cap
        self.listening = False
        self.triggers = False

    async def run(self) -> None:
        if not is_postgres(self.engine):
            return
        await self._install()
        lost = False
        failures = 0
        while True:
            conn: Any = None
            try:
                conn = await trio.to_thread.run_sync(self._connect, abandon_on_cancel=True)
                self.listening = True
                if lost:
                    self.log("db_listen_restored", channels=[TABLES_CHANNEL, NOTIFY_CHANNEL])
                    if not self.triggers:
                        await self._install()
                    self.on_tables()  # what changed while we were away is unknown
                lost, failures = False, 0
                await self._listen(conn)
            except Exception as exc:  # psycopg.Error, OSError: the database went away
                self.listening = False
                if not lost:
                    self.log("db_listen_lost", level="warning",
                             error=(str(exc).strip().splitlines() or [type(exc).__name__])[0])
                lost = True
                failures += 1
                await trio.sleep(min(self.retry_cap, 0.25 * 2 ** min(failures, 5)))
            finally:
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        pass

    async def _install(self) -> None:
        try:
            await trio.to_thread.run_sync(install_triggers, self.engine, abandon_on_cancel=True)
            self.triggers = True
        except Exception as exc:
            self.triggers = False
            self.log("db_triggers_missing", level="warning",
                     error=(str(getattr(exc, "orig", exc)).strip().splitlines() or ["?"])[0],
                     fallback="WAL position polling")

    def _connect(self) -> Any:
        import psycopg

        args, kwargs = self.engine.dialect.create_connect_args(self.engine.url)
        kwargs = dict(kwargs)
        kwargs.setdefault("connect_timeout", 5)
        conn = psycopg.connect(*args, autocommit=True, **kwargs)
        conn.execute(f"LISTEN {TABLES_CHANNEL}")
        conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return conn

    async def _listen(self, conn: Any) -> None:
        idle = 0
        while True:
            notes = await trio.to_thread.run_sync(
                lambda: [(n.channel, n.payload) for n in conn.notifies(timeout=1.0, stop_after=1)],
                abandon_on_cancel=True,
            )
            if notes:
                # Gather what follows at once (a tabrestore is many statements): one reload.
                notes += await trio.to_thread.run_sync(
                    lambda: [(n.channel, n.payload) for n in conn.notifies(timeout=0.02)],
                    abandon_on_cancel=True,
                )
                self._dispatch(notes)
                idle = 0
                continue
            idle += 1
            if idle >= 10:  # a quiet connection may be a dead one: ask every ~10 s
                await trio.to_thread.run_sync(lambda: conn.execute("SELECT 1"),
                                              abandon_on_cancel=True)
                idle = 0

    def _dispatch(self, notes: list[tuple[str, str]]) -> None:
        if any(channel == TABLES_CHANNEL for channel, _ in notes):
            self.on_tables()
        for channel, payload in notes:
            if channel != NOTIFY_CHANNEL:
                continue
            got = decode_announcement(payload)
            if got is None or got[0] == self.origin:
                continue
            self.on_announce(got[1], got[2])

    async def publish(self, target: str, paths: list[str]) -> bool:
        """Tell the other mountds on this database about an announcement made here."""
        if not is_postgres(self.engine):
            return False
        try:
            with trio.fail_after(5):
                await trio.to_thread.run_sync(publish_announcement, self.engine, target, paths,
                                              self.origin, abandon_on_cancel=True)
            return True
        except Exception as exc:
            self.log("announce_fanout_failed", level="warning",
                     error=(str(getattr(exc, "orig", exc)).strip().splitlines() or ["?"])[0])
            return False
