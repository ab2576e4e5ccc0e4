"""Computing plans from the tables: the MN side of litefs (reference §1–§3, DESIGN "The plan").

This module keeps the names callers have always imported; the work lives in three modules:

* :mod:`litefs.snapshot_db` reads every table the planner needs once (active rows only) into
  a :class:`~litefs.snapshot.Snapshot` of plain dicts: the only SQLAlchemy use on this side.
* :mod:`litefs.planning` applies xCAT's rules to a snapshot (pure, fast: planning 10,000 nodes
  is one database read plus dictionary work).
* :mod:`litefs.xcat_format` prints a plan in xCAT's formats (reference §7.1).

The database names (``load_snapshot``, ``node_plan``, ``image_plan``) are loaded on first use,
so ``from litefs.planner import xcat_litefile_lines`` does not import SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litefs.planning import (
    AUTO_IMAGE,
    LEGACY_PROVMETHODS,
    MAX_SHOWN_PROBLEMS,
    image_for_node,
    litefile_plan_for_node,
    plan_for_image,
    plan_for_node,
    plan_parts_for_node,
)
from litefs.snapshot import NODE_TABLES, SNAPSHOT_TABLES, Row, Snapshot, natural_key
from litefs.wellknown import MTAB
from litefs.xcat_format import (
    image_lslite_lines,
    lslite_lines,
    xcat_litefile_lines,
    xcat_litetree_lines,
)

if TYPE_CHECKING:
    from litefs.snapshot_db import image_plan, load_snapshot, node_plan

_FROM_DB = ("load_snapshot", "node_plan", "image_plan")

__all__ = [
    "AUTO_IMAGE",
    "LEGACY_PROVMETHODS",
    "MAX_SHOWN_PROBLEMS",
    "MTAB",
    "NODE_TABLES",
    "SNAPSHOT_TABLES",
    "Row",
    "Snapshot",
    "image_for_node",
    "image_lslite_lines",
    "image_plan",
    "litefile_plan_for_node",
    "load_snapshot",
    "lslite_lines",
    "natural_key",
    "node_plan",
    "plan_for_image",
    "plan_for_node",
    "plan_parts_for_node",
    "xcat_litefile_lines",
    "xcat_litetree_lines",
]


def __getattr__(name: str) -> Any:
    # PEP 562: the database half is imported only by callers that read the tables.
    if name in _FROM_DB:
        from litefs import snapshot_db

        return getattr(snapshot_db, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
