"""Variable substitution in litetree directories and statelite ``statemnt`` (reference §3.3).

The grammar is xCAT's: the value ``server:/path`` is split at the first ``:``; the path is
split on ``/`` and in each component holding a ``$`` the text before the first ``$`` is kept,
the variables run up to the first ``#`` or space, and several variables in one component are
joined with ``.`` (``$nodetype.os$nodetype.arch`` → ``rhels8.x86_64``). A variable is
``$node`` or ``$table.column`` (``$site.key`` reads the site table; other tables go through
node→group inheritance and regex cells). ``//`` collapses to ``/``.

Two deliberate departures (DESIGN "Fixed"): an empty or undefined value is a
``SubstitutionError`` naming the row, the variable and the node (xCAT inserts ``UNDEFINED``
and the node fails at boot); ``#CMD=...#`` runs a shell command on this server, so it is
refused unless ``site.litefs_allow_cmd`` is ``yes``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Mapping
from functools import lru_cache

from litefs.errors import SubstitutionError, TableError
from litefs.nodeattrs import NodeAttrs
from litefs.tablespec import KEYS

#: Seconds a ``#CMD=...#`` may run before it is killed.
CMD_TIMEOUT = 10.0

_VARPART = re.compile(r"[^# ]*")

# Tables whose rows are keyed by node (or group) name: only those can answer $table.column.
NODE_TABLES = frozenset(
    name for name, keys in KEYS.items() if keys == ("node",)
)


def has_variables(value: str) -> bool:
    """True if ``value`` needs per-node substitution (``$`` anywhere or ``#CMD``)."""
    return "$" in value or "#CMD" in value


def substitute(
    value: str,
    node: str,
    attrs: NodeAttrs,
    site: Mapping[str, str | None],
    *,
    row: str,
    allow_cmd: bool = False,
    cmd_timeout: float = CMD_TIMEOUT,
    cmd_cache: dict[str, str] | None = None,
) -> str:
    """Expand the variables of ``value`` (``server:/path`` or ``/path``) for ``node``.

    ``row`` names the table row in error messages (``litetree priority=2``).
    """
    server_t, path_t, substituted, has_cmd = _parse(value)
    server = _render(server_t, node, attrs, site, row)
    path = _render(path_t, node, attrs, site, row)
    if substituted:
        while "//" in path:
            path = path.replace("//", "/")
        if has_cmd:
            path = _run_cmds(path, node, row, allow_cmd, cmd_timeout, cmd_cache)
    return f"{server}:{path}" if server else path


# A parsed value: components, each literal text or (prefix, variable names, suffix). Parsing
# once per distinct value keeps planning 10,000 nodes down to dictionary lookups.
Component = str | tuple[str, tuple[str, ...], str]


@lru_cache(maxsize=4096)
def _parse(value: str) -> tuple[tuple[Component, ...], tuple[Component, ...], bool, bool]:
    """(server components, path components, path has variables, path has #CMD)."""
    value = value.strip()
    server, sep, path = value.partition(":")
    if not sep:
        server, path = "", value
    server_t: tuple[Component, ...] = (_component(server),) if "$" in server else (server,)
    if not has_variables(path):
        return server_t, (path,), False, False
    path_t = tuple(_component(c) if "$" in c else c for c in path.split("/"))
    return server_t, path_t, True, "#CMD" in path


def _component(comp: str) -> Component:
    cut = comp.index("$")
    prefix, rest = comp[:cut], comp[cut:]
    varpart = _VARPART.match(rest).group(0)  # type: ignore[union-attr]
    return prefix, tuple(varpart.split("$")[1:]), rest[len(varpart) :]


def _render(
    parts: tuple[Component, ...],
    node: str,
    attrs: NodeAttrs,
    site: Mapping[str, str | None],
    row: str,
) -> str:
    out = []
    for c in parts:
        if isinstance(c, str):
            out.append(c)
        else:
            prefix, names, suffix = c
            out.append(prefix + ".".join([_value(n, node, attrs, site, row) for n in names]) + suffix)
    return "/".join(out)


def _value(name: str, node: str, attrs: NodeAttrs, site: Mapping[str, str | None], row: str) -> str:
    if name == "node":
        return node
    table, dot, column = name.partition(".")
    if not dot or not table or not column:
        raise SubstitutionError(
            f"{row}: variable ${name} is not $node or $table.column (node {node})"
        )
    if table == "site":
        value = site.get(column)
        hint = f"chtab key={column} site.value=..."
    else:
        if table not in KEYS:
            raise SubstitutionError(
                f"{row}: variable ${name} for node {node}: table {table!r} does not exist"
            )
        if table not in NODE_TABLES:
            raise SubstitutionError(
                f"{row}: variable ${name} for node {node}: table {table!r} is not keyed "
                "by node, so it cannot give a per-node value"
            )
        try:
            value = attrs.get(node, table, column)
        except TableError as exc:
            raise SubstitutionError(f"{row}: variable ${name} for node {node}: {exc}") from None
        hint = f"chtab node={node} {table}.{column}=... (or set it on one of its groups)"
    if not value:
        raise SubstitutionError(f"{row}: variable ${name} is empty for node {node}; set it: {hint}")
    return value


def _run_cmds(
    path: str,
    node: str,
    row: str,
    allow: bool,
    timeout: float,
    cache: dict[str, str] | None,
) -> str:
    if not allow:
        raise SubstitutionError(
            f"{row}: #CMD=...# would run a shell command on this server for node {node}; "
            "refused unless the site table allows it (chtab key=litefs_allow_cmd site.value=yes)"
        )
    pieces = path.split("#")
    for i, piece in enumerate(pieces):
        if not piece.startswith("CMD="):
            continue
        command = piece[4:]
        if cache is not None and command in cache:
            pieces[i] = cache[command]
            continue
        # A session of its own, so a timeout kills the whole pipeline, not just the shell.
        proc = subprocess.Popen(
            command, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise SubstitutionError(
                f"{row}: #CMD={command}# for node {node} did not finish within {timeout:g} s"
            ) from None
        if proc.returncode != 0:
            err = (stderr.strip().splitlines() or [""])[-1]
            raise SubstitutionError(
                f"{row}: #CMD={command}# for node {node} failed with status "
                f"{proc.returncode}" + (f": {err}" if err else "")
            )
        out = stdout.rstrip("\n")
        if not out:
            raise SubstitutionError(f"{row}: #CMD={command}# for node {node} printed nothing")
        if cache is not None:
            cache[command] = out
        pieces[i] = out
    return "".join(pieces)
