"""Planning: xCAT's rules applied to a :class:`~litefs.snapshot.Snapshot` (reference §1–§3,
DESIGN "The plan"). Pure: no I/O and no database layer, so it is cheap to import.

:func:`plan_for_node` and :func:`plan_for_image` apply xCAT's rules: litefile/litetree rows for
the image by precedence exact image > ``ALL`` > blank > image group (a group row applies when
the image is *in* ``osimage.groups``, DESIGN fix), the automatic ``/etc/mtab`` row, liteimg
validation (errors raise ``PlanError`` listing every message), litetree rows by numeric
priority with variables substituted for the node, and the node's statelite row through
node→group inheritance. Rules per image are computed once per snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass

from litefs import hierarchy
from litefs.errors import LitefsError, NoderangeError, PlanError
from litefs.options import normalise_option
from litefs.plan import Plan, Rule, Source
from litefs.resolve import normalise_path
from litefs.snapshot import Row, Snapshot
from litefs.subst import has_variables, substitute
from litefs.tmpfs_size import DEFAULT as DEFAULT_TMPFS_SIZE
from litefs.tmpfs_size import SITE_KEY as SITE_TMPFS_SIZE
from litefs.tmpfs_size import tmpfs_size_problem
from litefs.validate import validate_rules
from litefs.wellknown import MTAB

#: provmethod values that mean "derive the image name from os/arch/profile" (reference §1).
LEGACY_PROVMETHODS = ("", "install", "netboot", "statelite")
AUTO_IMAGE = "(automatic)"  # Rule.image of the /etc/mtab row nobody wrote


@dataclass
class _ImageRules:
    rules: tuple[Rule, ...]
    litetree: tuple[Row, ...]  # active rows for the image, numeric priority order
    warnings: tuple[str, ...]


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
