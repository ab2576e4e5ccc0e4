"""Shared test configuration and the fixtures every area uses, so no test module re-imports them.

* databases (``tests/dbutil.py``): ``db_url`` (parametrised: a SQLite file, and a fresh
  PostgreSQL database on ``$LITEFS_TEST_PG``), ``blank_engine`` (no tables), ``engine`` (the
  litefs schema and default policy rows), ``pg_engine`` (PostgreSQL only, the two-node mountd
  cluster loaded, admin connections that survive a server restart);
* real mounts (``tests/fsutil.py``): ``layers`` (empty layer directories) and ``litefs_mount``
  (``m = litefs_mount(plan)`` mounts; everything is unmounted at teardown, and a daemon log
  with a traceback, an error or an unexpected warning fails the test); ``public_layers``
  (layers a plain uid can traverse, with bait outside them: ``tests/hostile/conftest.py``
  makes them the ``layers`` of the hostile tests).

Area helpers (plans, tables, PKI, mountd in-process) stay in ``tests/*util.py``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, make_url, text

from litefs import db
from tests.dbutil import BACKENDS, load_tables, pg_admin_url, pg_database
from tests.fsutil import Layers, Mounter, put


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Real mounts and namespaces need root; say so plainly instead of failing obscurely.
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (real FUSE mounts / namespaces)")
    for item in items:
        if any(item.get_closest_marker(m) for m in ("fuse", "netns", "qemu")):
            item.add_marker(skip)


# --- databases ----------------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty database of the parametrised backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/litefs.db"
    else:
        yield from pg_database()


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


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    """A private PostgreSQL database with ``tests.mountdutil.PG_NODES`` loaded, as ``db_url`` makes them but
    with pre-pinged admin connections: the live tests restart the server, which kills every
    pooled connection."""
    from tests.mountdutil import PG_NODES, cluster_tables

    admin_url = make_url(pg_admin_url()).set(drivername="postgresql+psycopg")
    name = "litefs_live_" + uuid.uuid4().hex[:12]
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        eng = db.open_engine(admin_url.set(database=name).render_as_string(hide_password=False))
        try:
            load_tables(eng, cluster_tables(PG_NODES))
            yield eng
        finally:
            eng.dispose()
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


# --- real mounts --------------------------------------------------------------------------------


@pytest.fixture
def layers(tmp_path: Path) -> Layers:
    """Empty image, tmpfs, persistent and localdisk layer directories under ``tmp_path``."""
    lay = Layers(
        root=tmp_path,
        image=tmp_path / "image",
        tmpfs=tmp_path / "tmpfs",
        persistent=tmp_path / "persistent",
        localdisk=tmp_path / "localdisk",
    )
    for d in (lay.image, lay.tmpfs, lay.persistent, lay.localdisk):
        d.mkdir()
    return lay


@pytest.fixture
def litefs_mount(layers: Layers) -> Iterator[Mounter]:
    """``m = litefs_mount(plan)`` mounts; everything is unmounted at teardown, whatever happens."""
    mounter = Mounter(layers)
    try:
        yield mounter
    finally:
        mounter.close()


@pytest.fixture
def public_layers() -> Iterator[Layers]:
    """Layers under a 0755 folder in /tmp, for tests that act as a plain uid (the hostile view
    tests use it as their ``layers``): pytest's own tmp folder is 0700, which a plain uid
    cannot traverse (every refusal would then be the kernel's, and the tests could not fail).
    ``LITEFS_KEEP=1`` keeps the folder (with the daemon's log) for a post-mortem."""
    root = Path(tempfile.mkdtemp(prefix="litefs-hostile-", dir="/tmp"))
    os.chmod(root, 0o755)
    lay = Layers(root=root, image=root / "image", tmpfs=root / "tmpfs",
                 persistent=root / "persistent", localdisk=root / "localdisk")  # fmt: skip
    for d in (lay.image, lay.tmpfs, lay.persistent, lay.localdisk):
        d.mkdir()
    # /data: a world-writable (not sticky) image directory with a public file in it.
    put(lay.image, "data/pub", "public\n", 0o644)
    put(lay.image, "data/pub2", "public too\n", 0o644)
    os.chmod(lay.image / "data", 0o777)
    # What the attacker would like to reach: a root-only file outside every layer.
    put(root, "outside/victim", "root secret\n", 0o600)
    try:
        yield lay
    finally:
        if not os.environ.get("LITEFS_KEEP"):
            shutil.rmtree(root, ignore_errors=True)
