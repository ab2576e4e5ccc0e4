"""The plan: everything a node needs to build its merged view, as one frozen value.

A plan is computed on the management node from the tables (see :mod:`litefs.planner`) for one
node, or for an image when ``liteimg`` prepares the classic layout. It is the only thing that
crosses from the MN to a node; after it, everything is local to the node. Its JSON form is
stable and versioned (``plan_version``) so a newer mountd can still feed an older node.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from litefs.errors import PlanError
from litefs.options import Family, family_of, is_link

if TYPE_CHECKING:
    from litefs.resolve import Resolution

PLAN_VERSION = 1


@dataclass(frozen=True)
class Rule:
    """One litefile row after precedence: a path that is not plain image content.

    ``path`` is absolute and normalised without a trailing slash (``/etc/ssh``); ``is_dir``
    carries the trailing-slash marker of the table. ``option`` is normalised (blank is
    ``tmpfs,rw``). ``image`` is the litefile.image value of the row that won (``ALL``, blank,
    a group or the image name), kept for provenance.
    """

    path: str
    option: str
    is_dir: bool
    image: str = ""

    @property
    def family(self) -> Family:
        return family_of(self.option)

    @property
    def is_link(self) -> bool:
        return is_link(self.option)

    @property
    def table_path(self) -> str:
        """The path as written in the litefile table (directories end with ``/``)."""
        if self.is_dir and self.path != "/":
            return self.path + "/"
        return self.path


@dataclass(frozen=True)
class Source:
    """One litetree directory after variable substitution, in priority order.

    ``server`` is None for a server-less directory, which litefs treats as a node-local path
    (xCAT never mounted those). ``mountpoint`` is where the node mounts it:
    ``/.statelite/mnt/<server><path>``, or ``path`` itself when there is no server.
    """

    priority: str
    directory: str
    server: str | None
    path: str
    mntopts: str | None = None

    @property
    def mountpoint(self) -> str:
        if self.server is None:
            return self.path
        return "/.statelite/mnt/" + self.server + self.path


@dataclass(frozen=True)
class Plan:
    """Per-node (or per-image) plan. ``rules`` is sorted by path, so parents precede children."""

    image: str
    rules: tuple[Rule, ...]
    sources: tuple[Source, ...] = ()
    node: str | None = None
    statemnt: str | None = None
    mntopts: str | None = None
    warnings: tuple[str, ...] = ()
    #: site.litefs_tmpfs_size (None: the node's default); see litefs.tmpfs_size
    tmpfs_size: str | None = None
    plan_version: int = PLAN_VERSION
    #: Set only by :func:`litefs.resolve.for_liteimg_layout` (never in JSON, never compared):
    #: the link-family paths liteimg moved to ``/.default`` and the placeholders it made up.
    liteimg_moved: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    liteimg_made_up: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    @cached_property
    def resolution_index(self) -> dict[str, Resolution]:
        """The plan's one index: each rule's resolution by path, built on first use.

        Plans are frozen, so computing it once per plan is enough; ``cached_property`` keeps
        it in the instance, where :func:`litefs.resolve.resolve` reads it on every lookup.
        """
        from litefs.resolve import index_plan  # resolve imports this module

        return index_plan(self)

    @property
    def rule_index(self) -> dict[str, Rule]:
        """Rules by path (a fresh dict over :attr:`resolution_index`)."""
        return {p: r.rule for p, r in self.resolution_index.items() if r.rule is not None}

    def rule_for(self, path: str) -> Rule | None:
        hit = self.resolution_index.get(path)
        return None if hit is None else hit.rule

    # --- JSON ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = self._base_dict()
        if self.tmpfs_size is not None:  # only when set: plans without it stay byte-identical
            out["tmpfs_size"] = self.tmpfs_size
        return out

    def _base_dict(self) -> dict[str, Any]:
        return {
            "plan_version": self.plan_version,
            "node": self.node,
            "image": self.image,
            "rules": [
                {"path": r.path, "option": r.option, "is_dir": r.is_dir, "image": r.image}
                for r in self.rules
            ],
            "sources": [
                {
                    "priority": s.priority,
                    "directory": s.directory,
                    "server": s.server,
                    "path": s.path,
                    "mntopts": s.mntopts,
                    "mountpoint": s.mountpoint,
                }
                for s in self.sources
            ],
            "statemnt": self.statemnt,
            "mntopts": self.mntopts,
            "warnings": list(self.warnings),
        }

    def to_json(self) -> str:
        """Stable JSON: keys sorted, rules in path order; the same plan gives the same bytes."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=1)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        try:
            version = int(data["plan_version"])
            if version > PLAN_VERSION:
                raise PlanError(
                    f"plan version {version} is newer than this litefs understands "
                    f"({PLAN_VERSION}); upgrade litefs on the node"
                )
            rules = tuple(
                Rule(
                    path=str(r["path"]),
                    option=str(r["option"]),
                    is_dir=bool(r["is_dir"]),
                    image=str(r.get("image") or ""),
                )
                for r in data["rules"]
            )
            sources = tuple(
                Source(
                    priority=str(s["priority"]),
                    directory=str(s["directory"]),
                    server=s.get("server"),
                    path=str(s["path"]),
                    mntopts=s.get("mntopts"),
                )
                for s in data.get("sources", [])
            )
            plan = cls(
                image=str(data["image"]),
                rules=rules,
                sources=sources,
                node=data.get("node"),
                statemnt=data.get("statemnt"),
                mntopts=data.get("mntopts"),
                warnings=tuple(data.get("warnings", [])),
                tmpfs_size=None if data.get("tmpfs_size") is None else str(data["tmpfs_size"]),
                plan_version=version,
            )
        except PlanError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PlanError(f"malformed plan: {exc.__class__.__name__}: {exc}") from None
        check_plan_shape(plan)
        return plan

    @classmethod
    def from_json(cls, text: str | bytes) -> Plan:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise PlanError(f"malformed plan: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise PlanError("malformed plan: expected a JSON object")
        return cls.from_dict(data)


def check_plan_shape(plan: Plan) -> None:
    """Structural checks every consumer relies on (a plan from the wire is untrusted)."""
    seen: set[str] = set()
    for rule in plan.rules:
        p = rule.path
        if not p.startswith("/") or (p != "/" and p.endswith("/")) or "//" in p:
            raise PlanError(f"malformed plan: rule path {p!r} is not a normalised absolute path")
        if any(part in (".", "..") for part in p.split("/")):
            raise PlanError(f"malformed plan: rule path {p!r} contains '.' or '..'")
        if "\0" in p:
            raise PlanError(f"malformed plan: rule path {p!r} contains a NUL byte")
        if p in seen:
            raise PlanError(f"malformed plan: rule path {p!r} appears twice")
        seen.add(p)
        try:
            family_of(rule.option)
        except KeyError:
            raise PlanError(f"malformed plan: rule {p!r} has unknown option {rule.option!r}") from None
    for src in plan.sources:
        if not src.path.startswith("/") or ".." in src.path.split("/"):
            raise PlanError(f"malformed plan: source {src.directory!r} is not an absolute path")
