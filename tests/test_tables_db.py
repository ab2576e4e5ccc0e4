"""The database layer on real SQLite files and a real PostgreSQL server: open, init, upgrade."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.engine import make_url

from litefs import db
from litefs.errors import LitefsError, TableError
from litefs.schema import SCHEMA_VERSION, TABLES, litefs_meta
from tests.dbutil import dump_all, pg_admin_url


def _policy(e: Engine) -> list[tuple[str | None, ...]]:
    p = TABLES["policy"]
    with e.connect() as conn:
        rows = conn.execute(select(p.c.priority, p.c.name, p.c.commands, p.c.rule)).all()
    return sorted(tuple(r) for r in rows)


DEFAULTS = [
    ("1", "root", None, "allow"),
    ("4.7", None, "litefile", "allow"),
    ("4.8", None, "litetree", "allow"),
]


def test_init_is_explicit_idempotent_and_adds_policy(blank_engine: Engine) -> None:
    with pytest.raises(TableError, match=r"has no litefs tables; run 'litefs db init'"):
        db.require_schema(blank_engine)
    assert db.init_db(blank_engine) == SCHEMA_VERSION
    assert db.require_schema(blank_engine) == SCHEMA_VERSION
    assert _policy(blank_engine) == DEFAULTS
    before = dump_all(blank_engine)
    db.init_db(blank_engine)
    assert dump_all(blank_engine) == before


def test_init_keeps_changed_policy_rows(engine: Engine) -> None:
    p = TABLES["policy"]
    with engine.begin() as conn:
        conn.execute(p.update().where(p.c.priority == "4.7").values(rule="deny"))
        conn.execute(p.delete().where(p.c.priority == "4.8"))
    db.init_db(engine)
    assert _policy(engine) == [DEFAULTS[0], ("4.7", None, "litefile", "deny"), DEFAULTS[2]]


def _set_version(e: Engine, version: int) -> None:
    with e.begin() as conn:
        conn.execute(litefs_meta.update().values(value=str(version)))


def test_newer_schema_is_refused(engine: Engine) -> None:
    _set_version(engine, SCHEMA_VERSION + 1)
    msg = f"schema version {SCHEMA_VERSION + 1} is newer than this litefs ({SCHEMA_VERSION})"
    for call in (db.require_schema, db.init_db, db.upgrade):
        with pytest.raises(TableError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            call(engine)


def test_upgrade_from_synthetic_v0_keeps_data(blank_engine: Engine) -> None:
    # Version 0: xCAT tables from before litefs kept its own bookkeeping; no policy table.
    with blank_engine.begin() as conn:
        TABLES["litefile"].create(conn)
        conn.execute(TABLES["litefile"].insert().values(image="ALL", file="/etc/fstab"))
    with pytest.raises(TableError, match=r"schema version 0.*run 'litefs db upgrade'"):
        db.require_schema(blank_engine)
    with pytest.raises(TableError, match="run 'litefs db upgrade' first"):
        db.init_db(blank_engine)
    assert db.upgrade(blank_engine) == (0, SCHEMA_VERSION)
    assert db.require_schema(blank_engine) == SCHEMA_VERSION
    assert _policy(blank_engine) == DEFAULTS
    with blank_engine.connect() as conn:
        assert conn.execute(select(TABLES["litefile"].c.file)).scalars().all() == ["/etc/fstab"]
    assert db.upgrade(blank_engine) == (SCHEMA_VERSION, SCHEMA_VERSION)


def test_upgrade_walks_each_step_in_one_transaction(engine: Engine) -> None:
    done: list[int] = []

    def step(n: int) -> Callable[[Connection], None]:
        def run(conn: Connection) -> None:
            done.append(n)
            conn.execute(TABLES["site"].insert().values(key=f"step{n}", value="x"))

        return run

    def broken(conn: Connection) -> None:
        raise TableError("step 3 failed")

    migrations = {1: step(1), 2: step(2), 3: broken}
    _set_version(engine, 1)
    before = dump_all(engine)
    with pytest.raises(TableError, match="step 3 failed"):
        db.upgrade(engine, migrations=migrations, target=4)
    assert dump_all(engine) == before  # steps 1 and 2 rolled back with step 3
    assert db.upgrade(engine, migrations=migrations, target=3) == (1, 3)
    assert done == [1, 2, 1, 2]
    with engine.connect() as conn:
        assert db.current_version(conn) == 3
    with pytest.raises(TableError, match="no migration from schema version 4 to 5"):
        db.upgrade(engine, migrations=migrations | {3: step(3)}, target=5)
    with engine.connect() as conn:
        assert db.current_version(conn) == 3  # the failed run left nothing behind


def test_upgrade_from_real_v1_adds_nodehm_and_keeps_rows(blank_engine: Engine) -> None:
    # A version-1 database as litefs 1 wrote it: every table but nodehm, version row "1".
    v1 = [t for name, t in TABLES.items() if name not in ("nodehm", "servicenode")]
    with blank_engine.begin() as conn:
        for t in [*v1, litefs_meta]:
            t.create(conn)
        conn.execute(litefs_meta.insert().values(key=db.VERSION_KEY, value="1"))
        conn.execute(TABLES["nodelist"].insert().values(node="n01", groups="compute,all"))
        conn.execute(TABLES["litefile"].insert().values(image="ALL", file="/etc/fstab",
                                                        options="persistent"))
    before = _dump_present(blank_engine)
    with pytest.raises(TableError, match=r"schema version 1, this litefs needs 3; run 'litefs db "
                       r"upgrade'"):
        db.require_schema(blank_engine)
    with pytest.raises(TableError, match="schema version 1; run 'litefs db upgrade' first"):
        db.init_db(blank_engine)
    assert db.upgrade(blank_engine) == (1, 3)
    assert db.require_schema(blank_engine) == 3
    from sqlalchemy import inspect

    cols = [c["name"] for c in inspect(blank_engine).get_columns("nodehm")]
    assert cols == ["node", *XCAT_TABLES["nodehm"][1].split()[1:], "comments", "disable"]
    after = dump_all(blank_engine)
    assert {k: after[k] for k in before} == before  # every v1 row kept, byte for byte
    assert after["nodehm"].count("\n") == 1  # the new table is empty: header only
    assert db.upgrade(blank_engine) == (3, 3)


def _dump_present(e: Engine) -> dict[str, str]:
    from litefs import tabledata

    with e.connect() as conn:
        return {name: tabledata.dump(conn, name) for name in TABLES
                if name not in ("nodehm", "servicenode")}


def test_sqlite_engine_uses_wal_and_busy_timeout(tmp_path: Path) -> None:
    e = db.open_engine(f"sqlite:///{tmp_path}/x.db")
    with e.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    e.dispose()


def test_write_transaction_rolls_back_on_error(engine: Engine) -> None:
    before = dump_all(engine)
    with pytest.raises(RuntimeError), db.write(engine) as conn:
        conn.execute(TABLES["site"].insert().values(key="master", value="mn"))
        raise RuntimeError("boom")
    assert dump_all(engine) == before


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("nonsense", "bad database URL 'nonsense'"),
        ("mysql://u:pw@h/d", "unsupported database mysql://u:***@h/d"),
        ("sqlite:////nonexistent-dir/x.db", "folder /nonexistent-dir does not exist"),
        (
            "postgresql://admin:s3cret@127.0.0.1:1/xcat",
            "cannot connect to database postgresql+psycopg://admin:***@127.0.0.1:1/xcat",
        ),
    ],
)
def test_bad_url_is_one_line_without_password(url: str, needle: str) -> None:
    with pytest.raises(LitefsError) as err:
        db.open_engine(url)
    msg = str(err.value)
    assert needle in msg
    assert "s3cret" not in msg and "pw@" not in msg
    assert "\n" not in msg
    assert "--db" in msg or "URL" in msg


def test_default_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LITEFS_DB", "sqlite:////somewhere/else.db")
    assert db.default_url() == "sqlite:////somewhere/else.db"
    monkeypatch.delenv("LITEFS_DB")
    if os.geteuid() == 0:
        assert db.default_url() == "sqlite:////var/lib/litefs/litefs.db"
        assert Path("/var/lib/litefs").is_dir()
    else:
        monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
        assert db.default_url() == f"sqlite:///{tmp_path}/litefs/litefs.db"
        assert (tmp_path / "litefs").is_dir()


@pytest.mark.pg
def test_pg_url_without_driver_uses_psycopg() -> None:
    plain = make_url(pg_admin_url()).set(drivername="postgresql")
    e = db.open_engine(plain.render_as_string(hide_password=False))
    with e.connect() as conn:
        assert conn.execute(text("select 1")).scalar() == 1
    assert e.url.drivername == "postgresql+psycopg"
    e.dispose()


# Reference §1, written out independently of litefs.schema: (keys, every column in order).
XCAT_TABLES: dict[str, tuple[tuple[str, ...], str]] = {
    "site": (("key",), "key value"),
    "nodelist": (
        ("node",),
        "node groups status statustime appstatus appstatustime primarysn hidden updatestatus "
        "updatestatustime zonename",
    ),
    "nodegroup": (("groupname",), "groupname grouptype members membergroups wherevals"),
    "noderes": (
        ("node",),
        "node servicenode netboot tftpserver tftpdir nfsserver monserver nfsdir installnic "
        "primarynic discoverynics cmdinterface xcatmaster current_osimage next_osimage "
        "nimserver routenames nameservers proxydhcp syslog",
    ),
    "nodetype": (("node",), "node os arch profile provmethod supportedarchs nodetype"),
    "nodepos": (("node",), "node rack u chassis slot room height"),
    "nodehm": (
        ("node",),
        "node power mgt cons termserver termport conserver serialport serialspeed serialflow "
        "getmac cmdmapping consoleondemand",
    ),
    "servicenode": (
        ("node",),
        "node nameserver dhcpserver tftpserver nfsserver conserver monserver ldapserver "
        "ntpserver ftpserver nimserver ipforward dhcpinterfaces proxydhcp",
    ),
    "hosts": (("node",), "node ip hostnames otherinterfaces"),
    "osimage": (
        ("imagename",),
        "imagename groups profile imagetype description provmethod rootfstype nfsrootopts "
        "osdistroname osupdatename cfmdir osname osvers osarch synclists postscripts "
        "postbootscripts serverrole isdeletable kitcomponents environvar",
    ),
    "linuximage": (
        ("imagename",),
        "imagename template boottarget addkcmdline pkglist pkgdir otherpkglist otherpkgdir "
        "exlist postinstall rootimgdir kerneldir nodebootif otherifce netdrivers kernelver "
        "krpmver permission dump crashkernelsize partitionfile driverupdatesrc",
    ),
    "litefile": (("image", "file"), "image file options"),
    "litetree": (("priority",), "priority image directory mntopts"),
    "statelite": (("node",), "node image statemnt mntopts"),
    "policy": (
        ("priority",), "priority name host commands noderange parameters time rule"
    ),
}


def test_database_has_xcats_tables_keys_and_columns(engine: Engine) -> None:
    from sqlalchemy import inspect

    insp = inspect(engine)
    names = set(insp.get_table_names())
    for name, (keys, columns) in XCAT_TABLES.items():
        assert name in names, name
        got = [c["name"] for c in insp.get_columns(name)]
        assert got == [*columns.split(), "comments", "disable"], name
        assert tuple(insp.get_pk_constraint(name)["constrained_columns"]) == keys, name


def test_a_dropped_table_is_reported_and_init_brings_it_back(engine: Engine) -> None:
    from litefs import tabledata

    tabledata.restore(engine, "policy", '#priority,name,rule\n"9","admin","allow"\n', "policy.csv")
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE litetree"))
    with pytest.raises(TableError) as err:
        db.require_schema(engine)
    assert "lacks table(s) litetree; run 'litefs db init'" in str(err.value)
    db.init_db(engine)
    assert db.require_schema(engine) == SCHEMA_VERSION
    assert ("9", "admin", None, "allow") in _policy(engine)  # rows elsewhere kept
