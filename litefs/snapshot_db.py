"""Reading a :class:`~litefs.snapshot.Snapshot` from the database: the planning side's only
SQLAlchemy use, kept apart so the pure planner and the xCAT formatters import without it.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, select

from litefs.plan import Plan
from litefs.planning import plan_for_image, plan_for_node
from litefs.schema import TABLES, active
from litefs.snapshot import NODE_TABLES, SNAPSHOT_TABLES, Row, Snapshot


def load_snapshot(conn: Connection | Engine) -> Snapshot:
    """Read every table the planner needs, active rows only, in one pass."""
    if isinstance(conn, Engine):
        with conn.connect() as c:
            return load_snapshot(c)
    data: dict[str, list[Row]] = {}
    for name in SNAPSHOT_TABLES:
        t = TABLES[name]
        cols = [c.name for c in t.columns]
        result = conn.execute(select(t).where(active(t)))
        data[name] = [dict(zip(cols, r, strict=True)) for r in result]
    node_tables = {
        name: {(r["node"] or "").strip(): r for r in data[name]} for name in NODE_TABLES
    }
    return Snapshot(
        site={(r["key"] or "").strip(): r["value"] for r in data["site"]},
        node_tables=node_tables,
        nodegroup={(r["groupname"] or "").strip(): r for r in data["nodegroup"]},
        osimage={(r["imagename"] or "").strip(): r for r in data["osimage"]},
        litefile=data["litefile"],
        litetree=data["litetree"],
    )


def node_plan(engine: Engine, node: str) -> Plan:
    """Read the tables and plan one node."""
    return plan_for_node(load_snapshot(engine), node)


def image_plan(engine: Engine, image: str) -> Plan:
    """Read the tables and plan one image."""
    return plan_for_image(load_snapshot(engine), image)
