"""Computing plans from the tables: the MN side of litefs (reference §1–§3, DESIGN "The plan").

:func:`load_snapshot` reads every table the planner needs once (active rows only) into plain
dicts; everything after it is pure and fast, so planning 10,000 nodes is one database read
plus dictionary work. :func:`plan_for_node` and :func:`plan_for_image` apply xCAT's rules:
litefile/litetree rows for the image by precedence exact image > ``ALL`` > blank > image
group (a group row applies when the image is *in* ``osimage.groups``, DESIGN fix), the
automatic ``/etc/mtab`` row, liteimg validation (errors raise ``PlanError`` listing every
message), litetree rows by numeric priority with variables substituted for the node, and the
node's statelite row through node→group inheritance. ``litefile_lines``/``litetree_lines``
print a plan in xCAT's formats (reference §7.1).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, select

from litefs import hierarchy
from litefs.errors import LitefsError, NoderangeError, PlanError
from litefs.nodeattrs import NodeAttrs
from litefs.noderange import Universe
from litefs.options import normalise_option
from litefs.plan import Plan, Rule, Source
from litefs.resolve import normalise_path
from litefs.schema import TABLES, active
from litefs.subst import has_variables, substitute
from litefs.tmpfs_size import DEFAULT as DEFAULT_TMPFS_SIZE
from litefs.tmpfs_size import SITE_KEY as SITE_TMPFS_SIZE
from litefs.tmpfs_size import tmpfs_size_problem
from litefs.validate import validate_rules

Row = dict[str, Any]

#: Node-keyed tables the planner (and noderange attribute selectors) read.
NODE_TABLES = ("nodelist", "noderes", "nodetype", "nodepos", "hosts", "mac", "chain", "statelite")
#: Every table :func:`load_snapshot` reads.
SNAPSHOT_TABLES = ("site", "nodegroup", "osimage", "litefile", "litetree", *NODE_TABLES)

#: provmethod values that mean "derive the image name from os/arch/profile" (reference §1).
LEGACY_PROVMETHODS = ("", "install", "netboot", "statelite")
MTAB = "/etc/mtab"
AUTO_IMAGE = "(automatic)"  # Rule.image of the /etc/mtab row nobody wrote


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key putting node2 before node10."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


@dataclass
class _ImageRules:
    rules: tuple[Rule, ...]
    litetree: tuple[Row, ...]  # active rows for the image, numeric priority order
    warnings: tuple[str, ...]


@dataclass
class Snapshot:
    """The tables as plain data. Build with :func:`load_snapshot` (or directly in tests)."""

    site: dict[str, str | None]
    node_tables: dict[str, dict[str, Row]]
    nodegroup: dict[str, Row]
    osimage: dict[str, Row]
    litefile: list[Row]
    litetree: list[Row]
    nodes: list[str] = field(init=False)
    node_groups: dict[str, list[str]] = field(init=False)
    attrs: NodeAttrs = field(init=False)
    _images: dict[tuple[str, bool], _ImageRules | PlanError] = field(
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


# --- image selection --------------------------------------------------------------------


def image_for_node(snap: Snapshot, node: str) -> str:
    """The osimage a node boots (reference §1 nodetype): provmethod, or os-arch-statelite-profile."""
    _require_node(snap, node)
    get = snap.attrs.get
    os_, arch, profile = (get(node, "nodetype", c) for c in ("os", "arch", "profile"))
    if not (os_ and arch and profile):
        raise PlanError(f"{node} does not have os, arch, or profile defined in nodetype table")
    provmethod = (get(node, "nodetype", "provmethod") or "").strip()
    if provmethod in LEGACY_PROVMETHODS:
        return f"{os_}-{arch}-statelite-{profile}"
    return provmethod


def _require_node(snap: Snapshot, node: str) -> None:
    if node not in snap.node_tables["nodelist"]:
        shown = node if len(node) <= 60 else node[:57] + "..."  # hostile input stays one short line
        raise NoderangeError(f"unknown node {shown!r}: it is not in the nodelist table")


def _levels(snap: Snapshot, image: str) -> list[str]:
    """Image column values in increasing precedence: groups (first listed wins), blank, ALL, image."""
    groups = [g for g in reversed(snap.image_groups(image)) if g not in ("", "ALL", image)]
    return [*groups, "", "ALL", image]


def _image_rules(snap: Snapshot, image: str, boot: bool) -> _ImageRules:
    cached = snap._images.get((image, boot))
    if cached is None:
        try:
            cached = _compute_image_rules(snap, image, boot)
        except PlanError as exc:
            cached = exc  # every node of a broken image fails the same way; compute it once
        snap._images[(image, boot)] = cached
    if isinstance(cached, PlanError):
        raise PlanError(str(cached))
    return cached


def _compute_image_rules(snap: Snapshot, image: str, boot: bool) -> _ImageRules:
    levels = _levels(snap, image)
    rank = {v: i for i, v in enumerate(levels)}
    warnings: list[str] = []
    problems: list[str] = []

    # litefile: later levels overwrite earlier ones, keyed by the normalised path.
    chosen: dict[str, tuple[int, str, str, str]] = {}  # path -> (level, file, option, image)
    for row in snap.litefile:
        img = (row.get("image") or "").strip()
        level = rank.get(img)
        if level is None:
            continue
        file = (row.get("file") or "").strip()
        if not file:
            continue
        option = normalise_option(row.get("options"))
        key = file.rstrip("/") or "/"
        if file.startswith("/"):
            try:
                key = normalise_path(file)
            except ValueError:
                problems.append(f"{file} contains '..'; litefile paths must not climb")
                continue
        old = chosen.get(key)
        if old is not None and old[0] == level:
            raise PlanError(
                f"litefile rows {old[1]!r} and {file!r} (image {img or 'blank'!r}) name the "
                "same path; delete one of them"
            )
        if old is None or level > old[0]:
            chosen[key] = (level, file, option, img)
    if MTAB in chosen:
        level, file, _option, img = chosen[MTAB]
        chosen[MTAB] = (level, file, "tmpfs,rw", img)
    else:
        chosen[MTAB] = (-1, MTAB, "link", AUTO_IMAGE)
    entries = [(file, option) for _lvl, file, option, _img in chosen.values()]
    problems.extend(validate_rules(entries, image=image, boot=boot))
    if problems:
        raise PlanError(_invalid_rows(image, problems))
    for _lvl, file, option, _img in chosen.values():
        if option == "tempfs":
            warnings.append(
                f"litefile {file}: option 'tempfs' is the old spelling of 'tmpfs' "
                "(liteimg rejects it; change it to tmpfs)"
            )
    rules = tuple(
        sorted(
            (
                Rule(path=path, option=option, is_dir=file.endswith("/") and path != "/",
                     image=img)
                for path, (_lvl, file, option, img) in chosen.items()
            ),
            key=lambda r: r.path,
        )
    )

    # litetree: rows for the image (priority is the key, so no two rows collide).
    trees: list[tuple[float, Row]] = []
    for row in snap.litetree:
        if (row.get("image") or "").strip() not in rank:
            continue
        if not (row.get("directory") or "").strip():
            continue
        prio = (row.get("priority") or "").strip()
        try:
            trees.append((float(prio), row))
        except ValueError:
            raise PlanError(
                f"litetree priority {prio!r} is not a number; fix it with chtab"
            ) from None
    trees.sort(key=lambda t: t[0])
    return _ImageRules(rules, tuple(r for _p, r in trees), tuple(warnings))


#: How many validation messages one error line shows before summarising the rest.
MAX_SHOWN_PROBLEMS = 5


def _invalid_rows(image: str, problems: list[str]) -> str:
    shown = problems[:MAX_SHOWN_PROBLEMS]
    more = len(problems) - len(shown)
    text = "; ".join(shown) + (f"; and {more} more" if more else "")
    return (
        f"litefile rows for image {image} are not valid: {text} "
        "(fix the rows with 'tabedit litefile' or chtab)"
    )


# --- plans ------------------------------------------------------------------------------


def _source(row: Row, directory: str) -> Source:
    prio = (row.get("priority") or "").strip()
    server, sep, path = directory.partition(":")
    if not sep:
        server, path = "", directory
    server = server.strip()
    path = path.strip()
    if not path.startswith("/"):
        raise PlanError(
            f"litetree priority={prio}: directory {directory!r} is not server:/path or /path"
        )
    try:
        norm = normalise_path(path)
    except ValueError:
        raise PlanError(f"litetree priority={prio}: directory {directory!r} contains '..'") from None
    mntopts = (row.get("mntopts") or "").strip() or None
    return Source(
        priority=prio,
        directory=directory,
        server=server or None,
        path=norm,
        mntopts=mntopts,
    )


def plan_for_node(snap: Snapshot, node: str, *, image: str | None = None) -> Plan:
    """The plan of one node: its image's rules, its litetree sources, its statelite row.

    ``image`` plans the node as if it booted that image (before ``nodeset osimage=...``).
    """
    return _node_plan(snap, node, image, None)


def plan_parts_for_node(snap: Snapshot, node: str) -> tuple[Plan, list[str]]:
    """As much of the node's plan as can be computed, and one message per part that cannot.

    For ``lslite``: xCAT prints the node's block with ``UNDEFINED`` where a variable fails;
    we leave that litetree row (or the statemnt) out and name it with the node instead.
    """
    errors: list[str] = []
    return _node_plan(snap, node, None, errors), errors


def litefile_plan_for_node(snap: Snapshot, node: str) -> Plan:
    """The node's litefile rules only (``litefile NODE``): litetree and statelite are not read.

    xCAT's litefile never reads them, so a typo there (the cookbook's ``$noderes.nfssserver``)
    must not hide the node's litefile list.
    """
    image = image_for_node(snap, node)
    rules = _image_rules(snap, image, boot=True)
    return Plan(image=image, rules=rules.rules, node=node, warnings=tuple(rules.warnings))


def _expand_cell(snap: Snapshot, node: str, raw: str, row: str,
                 errors: list[str] | None) -> str | None:
    """A litetree/statemnt cell with its variables filled in for ``node``. With an ``errors``
    list a failing variable is recorded there (the row named) and None returned, so one bad
    row leaves the rest of the node's listing intact; without one it raises."""
    if not has_variables(raw):
        return raw
    try:
        return substitute(raw, node, snap.attrs, snap.site, row=row,
                          allow_cmd=snap.allow_cmd, cmd_cache=snap._cmd_cache)
    except LitefsError as exc:
        if errors is None:
            raise
        errors.append(str(exc))
        return None


def _node_plan(snap: Snapshot, node: str, image: str | None, errors: list[str] | None) -> Plan:
    """``plan_for_node``; with an ``errors`` list, a failing litetree row or statemnt is
    recorded there and left out instead of failing the whole plan."""
    if image is None:
        image = image_for_node(snap, node)
    else:
        _require_node(snap, node)
    rules = _image_rules(snap, image, boot=True)
    warnings = list(rules.warnings)
    sources: list[Source] = []
    for row in rules.litetree:
        raw = (row.get("directory") or "").strip()
        prio = (row.get("priority") or "").strip()
        directory = _expand_cell(snap, node, raw, f"litetree priority={prio}", errors)
        if directory is None:
            continue
        src = _source(row, directory)
        if src.server is None:
            warnings.append(
                f"litetree priority={prio}: {directory} has no server; litefs reads it as a "
                "node-local path"
            )
        sources.append(src)
    statemnt: str | None = None
    mntopts: str | None = None
    found = snap.attrs.find(node, "statelite", "statemnt")
    if found is not None:
        value, key = found
        # A service-node pool holds the node's persistent store (litefs.hierarchy).
        statemnt = hierarchy.statemnt_for_plan(node, value.strip(), snap.attrs.get)
        statemnt = _expand_cell(snap, node, statemnt, f"statelite node={key}", errors)
        if statemnt is not None and ":" not in statemnt:
            warnings.append(
                f"statelite node={key}: statemnt {statemnt!r} has no server "
                "(server:/path); nodeset will refuse it"
            )
        mntopts = (snap.attrs.get(node, "statelite", "mntopts") or "").strip() or None
    tmpfs_size = (snap.site.get(SITE_TMPFS_SIZE) or "").strip() or None
    if tmpfs_size is not None and tmpfs_size_problem(tmpfs_size):
        # Written before write-time checks existed: the node would fall back anyway; say so.
        why = tmpfs_size_problem(tmpfs_size)
        warnings.append(f"site.{SITE_TMPFS_SIZE}: {why}; nodes use {DEFAULT_TMPFS_SIZE}")
        tmpfs_size = None
    return Plan(
        image=image,
        rules=rules.rules,
        sources=tuple(sources),
        node=node,
        statemnt=statemnt,
        mntopts=mntopts,
        warnings=tuple(warnings),
        tmpfs_size=tmpfs_size,
    )


def plan_for_image(snap: Snapshot, image: str) -> Plan:
    """The plan of an image (for liteimg): rules, and the litetree rows without variables."""
    if not image or not image.strip():
        raise PlanError("no image name given")
    rules = _image_rules(snap, image, boot=False)
    warnings = list(rules.warnings)
    sources: list[Source] = []
    for row in rules.litetree:
        raw = (row.get("directory") or "").strip()
        if has_variables(raw):
            warnings.append(
                f"litetree priority={(row.get('priority') or '').strip()}: {raw} has per-node "
                "variables; left out of the image plan"
            )
            continue
        sources.append(_source(row, raw))
    return Plan(image=image, rules=rules.rules, sources=tuple(sources), warnings=tuple(warnings))


def plans_for_nodes(snap: Snapshot, nodes: Iterable[str]) -> list[Plan]:
    return [plan_for_node(snap, n) for n in nodes]


def node_plan(engine: Engine, node: str) -> Plan:
    """Read the tables and plan one node."""
    return plan_for_node(load_snapshot(engine), node)


def image_plan(engine: Engine, image: str) -> Plan:
    """Read the tables and plan one image."""
    return plan_for_image(load_snapshot(engine), image)


# --- xCAT output formats ----------------------------------------------------------------


def _who(plan: Plan, who: str | None) -> str:
    return who if who is not None else (plan.node or plan.image)


def litefile_lines(plan: Plan, who: str | None = None) -> list[str]:
    """``litefile``/``ilitefile`` output: ``n01: tmpfs,rw      /etc/adjtime``, sorted by path."""
    name = _who(plan, who)
    paths = sorted((r.table_path, r.option) for r in plan.rules)
    return ["%s: %-13s %s" % (name, option, path) for path, option in paths]  # noqa: UP031


def litetree_lines(plan: Plan, who: str | None = None) -> list[str]:
    """``litetree`` output: ``n01: server:/dir`` (plus `` :mntopts``), in priority order."""
    name = _who(plan, who)
    out = []
    for s in plan.sources:
        line = f"{name}: {s.directory}"
        if s.mntopts:
            line += f" :{s.mntopts}"
        out.append(line)
    return out


def lslite_lines(plan: Plan) -> list[str]:
    """One node's ``lslite`` block (reference §7.1, litetree.pm's layout)."""
    pad = " " * 8
    lines = [f">>>Node: {plan.node}", "", f"Osimage: {plan.image}", ""]
    lines.append("Persistent directory (statelite table):")
    if plan.statemnt:
        lines.append(pad + plan.statemnt)
    lines += ["", "Litefiles (litefile table):"]
    lines += [
        pad + "%-13s %s" % (option, path)  # noqa: UP031
        for path, option in sorted((r.table_path, r.option) for r in plan.rules)
    ]
    lines += ["", "Litetree path (litetree table):"]
    lines += [f"{pad}{s.priority}, {s.directory}" for s in plan.sources]
    lines.append("")
    return lines


def image_lslite_lines(plan: Plan) -> list[str]:
    """``lslite -i IMAGE``: the litefile list only, indented."""
    return [
        " " * 8 + "%-13s %s" % (option, path)  # noqa: UP031
        for path, option in sorted((r.table_path, r.option) for r in plan.rules)
    ]
