"""The tables the planner reads, as plain data (reference §1): one consistent read, no I/O.

:class:`Snapshot` holds the active rows of every table :mod:`litefs.planning` needs, keyed
for lookups (node tables by node, ``osimage`` by image name, ...). It is built by
:func:`litefs.snapshot_db.load_snapshot` (the only SQLAlchemy use on the planning side) or
directly in tests, so planning itself imports no database layer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from litefs.nodeattrs import NodeAttrs
from litefs.noderange import Universe

Row = dict[str, Any]

#: Node-keyed tables the planner (and noderange attribute selectors) read.
NODE_TABLES = ("nodelist", "noderes", "nodetype", "nodepos", "hosts", "mac", "chain", "statelite")
#: Every table :func:`litefs.snapshot_db.load_snapshot` reads.
SNAPSHOT_TABLES = ("site", "nodegroup", "osimage", "litefile", "litetree", *NODE_TABLES)


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key putting node2 before node10."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


@dataclass
class Snapshot:
    """The tables as plain data. Build with :func:`litefs.snapshot_db.load_snapshot` (or
    directly in tests). ``_images`` and ``_cmd_cache`` are the planner's per-snapshot caches
    (rules per image, ``$cmd`` outputs): one snapshot is one consistent read of the tables."""

    site: dict[str, str | None]
    node_tables: dict[str, dict[str, Row]]
    nodegroup: dict[str, Row]
    osimage: dict[str, Row]
    litefile: list[Row]
    litetree: list[Row]
    nodes: list[str] = field(init=False)
    node_groups: dict[str, list[str]] = field(init=False)
    attrs: NodeAttrs = field(init=False)
    _images: dict[tuple[str, bool], Any] = field(
        default_factory=dict, init=False
    )
    _cmd_cache: dict[str, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        nodelist = self.node_tables.setdefault("nodelist", {})
        for t in NODE_TABLES:
            self.node_tables.setdefault(t, {})
        self.nodes = sorted(nodelist, key=natural_key)
        self.node_groups = {
            node: [g.strip() for g in (row.get("groups") or "").split(",") if g.strip()]
            for node, row in nodelist.items()
        }
        self.attrs = NodeAttrs(self.node_tables, self.node_groups)

    @property
    def allow_cmd(self) -> bool:
        return (self.site.get("litefs_allow_cmd") or "").strip().lower() == "yes"

    def universe(
        self, *, digit_prefix: str = "node", digit_suffix: str = "",
        read_file: Callable[[str], str] | None = None, max_names: int | None = None,
    ) -> Universe:
        """The noderange universe of these tables (nodes, static and dynamic groups).

        ``read_file`` enables ``^file`` atoms (the local CLI only); ``max_names`` bounds one
        expansion (mountd passes a small one)."""
        extra: dict[str, Any] = {}
        if read_file is not None:
            extra["read_file"] = read_file
        if max_names is not None:
            extra["max_names"] = max_names
        dynamic = {
            name: row.get("wherevals") or ""
            for name, row in self.nodegroup.items()
            if (row.get("grouptype") or "").strip() == "dynamic"
        }
        declared = frozenset(n for n in self.nodegroup if n not in dynamic)
        return Universe(
            nodes=self.nodes,
            groups=self.node_groups,
            dynamic=dynamic,
            declared_groups=declared,
            attr=self.attrs.get,
            digit_prefix=digit_prefix,
            digit_suffix=digit_suffix,
            **extra,
        )

    def image_groups(self, image: str) -> list[str]:
        row = self.osimage.get(image)
        groups = (row or {}).get("groups") or ""
        return [g.strip() for g in groups.split(",") if g.strip()]
