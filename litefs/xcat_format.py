"""A plan printed in xCAT's formats (reference §7.1): ``litefile``, ``litetree`` and ``lslite``
output, and the ``/.statelite/litefile``/``litetree`` files a node keeps. Pure.

The ``rc.statelite`` input files the classic boot reads are another format; they are
:func:`litefs.classic.rc_statelite_litefile_lines` and its twin.
"""

from __future__ import annotations

from litefs.plan import Plan


def _who(plan: Plan, who: str | None) -> str:
    return who if who is not None else (plan.node or plan.image)


def xcat_litefile_lines(plan: Plan, who: str | None = None) -> list[str]:
    """``litefile``/``ilitefile`` output: ``n01: tmpfs,rw      /etc/adjtime``, sorted by path."""
    name = _who(plan, who)
    paths = sorted((r.table_path, r.option) for r in plan.rules)
    return ["%s: %-13s %s" % (name, option, path) for path, option in paths]  # noqa: UP031


def xcat_litetree_lines(plan: Plan, who: str | None = None) -> list[str]:
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
