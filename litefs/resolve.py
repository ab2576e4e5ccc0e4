"""Path resolution: which litefile rule governs a path and which layers may answer (pure).

``resolve(plan, path)`` walks from the path up to ``/`` and stops at the first listed path
(the nearest listed ancestor, the path itself included), so it costs O(depth of path) dict
lookups whatever the number of rules. Resolutions are shared per rule: resolving never
allocates beyond the walk itself.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

from litefs.options import UPPER_LAYER, Family, LayerKind
from litefs.plan import Plan, Rule

#: ``LayerRef(LayerKind.IMAGE, ORIGINALS)``: the image's ``/.default`` folder, where liteimg moved the
#: original content of link-family paths (the layer set opens it as its own backing).
ORIGINALS = 1


@dataclass(frozen=True, slots=True)
class LayerRef:
    """A layer reference: ``kind`` is tmpfs/persistent/localdisk/source/image; ``index``
    is the position in ``plan.sources`` for kind ``source``."""

    kind: LayerKind
    index: int = 0

    def __str__(self) -> str:
        return f"source[{self.index}]" if self.kind == LayerKind.SOURCE else self.kind


@dataclass(frozen=True, slots=True)
class Resolution:
    """What governs a path.

    ``rule`` is None for plain image content (read-only). ``upper`` names the layer that takes
    writes (None when read-only). ``lowers`` are the read-only layers in lookup order: the
    litetree sources by priority, then the image. For the ``con`` family every source that
    has the file contributes, in this order.
    """

    rule: Rule | None
    upper: LayerKind | None
    lowers: tuple[LayerRef, ...]

    @property
    def writable(self) -> bool:
        return self.upper is not None

    @property
    def family(self) -> Family | None:
        return None if self.rule is None else self.rule.family

    @property
    def layers(self) -> tuple[LayerRef, ...]:
        """All layers in lookup order, the writable one first."""
        if self.upper is None:
            return self.lowers
        return (LayerRef(self.upper), *self.lowers)


IMAGE_ONLY = Resolution(rule=None, upper=None, lowers=(LayerRef(LayerKind.IMAGE),))


@cache
def _lowers(n_sources: int) -> tuple[LayerRef, ...]:
    return (*(LayerRef(LayerKind.SOURCE, i) for i in range(n_sources)), LayerRef(LayerKind.IMAGE))


def index_plan(plan: Plan) -> dict[str, Resolution]:
    """Each rule's resolution by path; :attr:`Plan.resolution_index` caches it per plan."""
    moved, made_up = plan.liteimg_moved, plan.liteimg_made_up
    if not moved and not made_up:
        lowers = _lowers(len(plan.sources))
        return {
            r.path: Resolution(rule=r, upper=UPPER_LAYER[r.family], lowers=lowers)
            for r in plan.rules
        }
    sources = tuple(LayerRef(LayerKind.SOURCE, i) for i in range(len(plan.sources)))
    index = {}
    for r in plan.rules:
        if r.path in made_up:
            lowers = sources
        elif any(a in moved for a in _self_and_ancestors(r.path)):
            lowers = (*sources, LayerRef(LayerKind.IMAGE, ORIGINALS))
        else:
            lowers = (*sources, LayerRef(LayerKind.IMAGE))
        index[r.path] = Resolution(rule=r, upper=UPPER_LAYER[r.family], lowers=lowers)
    return index


def for_liteimg_layout(plan: Plan, moved: frozenset[str], made_up: frozenset[str]) -> Plan:
    """The plan as it reads an image that ``liteimg`` prepared (reference §6.3).

    liteimg moved each top-level link-family path ``P`` to ``/.default/P`` and left a symlink
    chain through ``/.statelite/tmpfs`` (dangling on a litefs node, which has its own
    ``/.statelite``). ``moved`` are those paths: for them and below, the image layer is read
    at ``/.default`` instead, so the node sees what it sees on the image before liteimg, and
    one image serves stock and litefs nodes. ``made_up`` are the placeholders liteimg created
    for listed paths the image did not have: the image layer is left out for them. Nothing in
    the image is changed; the copy is a new plan object with its own resolution index.
    """
    if not moved and not made_up:
        return plan
    return replace(plan, liteimg_moved=frozenset(moved), liteimg_made_up=frozenset(made_up))


def _self_and_ancestors(path: str) -> list[str]:
    out = [path]
    while path not in ("/", ""):
        path = path.rsplit("/", 1)[0] or "/"
        out.append(path)
    return out


def resolve(plan: Plan, path: str) -> Resolution:
    """The resolution of a normalised absolute path (``/etc/ssh/sshd_config``)."""
    # After the first call this is a plain instance-dict read (cached_property).
    index = plan.resolution_index
    p = path
    while True:
        hit = index.get(p)
        if hit is not None:
            return hit
        if p == "/":
            return IMAGE_ONLY
        cut = p.rfind("/")
        p = p[:cut] if cut > 0 else "/"


def has_rule_below(plan: Plan, directory: str) -> bool:
    """True if some rule lies at or below ``directory``: the subtree is not pure image."""
    if directory == "/":
        return bool(plan.rules)
    prefix = directory + "/"
    return any(r.path == directory or r.path.startswith(prefix) for r in plan.rules)


def normalise_path(path: str) -> str:
    """Collapse ``//`` and ``.``; refuse ``..`` (a path that tries to climb is not a node path)."""
    if not path.startswith("/"):
        raise ValueError(f"{path!r} is not an absolute path")
    parts = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise ValueError(f"{path!r} contains '..'")
        parts.append(part)
    return "/" + "/".join(parts)
