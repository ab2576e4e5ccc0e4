"""Reading and changing whole tables: dump, restore and chtab, each in one transaction.

These are the data operations behind ``tabdump``, ``tabrestore``, ``tabedit`` and ``chtab``.
Every change runs in one write transaction and checks the rows it would leave behind (required
columns, litefile paths) before committing, so bad input changes nothing. Filters (``-w``) are
evaluated in Python, identically on SQLite and PostgreSQL; rows come out in stored order, as
xCAT's tabdump prints them (a restored CSV dumps back in its own order).

One module (~550 lines): the four operations share the row checks, the ``-w`` filter and the
transaction helpers, and each reads best beside the others it must agree with.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Engine, Table, and_, select, text, true
from sqlalchemy.exc import DBAPIError, IntegrityError

from litefs import csvtab, db, nodeattrs, saferegex
from litefs.errors import LitefsError, TableError
from litefs.names import check_node_name
from litefs.options import option_problem
from litefs.schema import REQUIRED, TABLES, active, column_names, key_columns, table
from litefs.tmpfs_size import SITE_KEY as TMPFS_SIZE_KEY
from litefs.tmpfs_size import normalise as normalise_tmpfs_size
from litefs.tmpfs_size import tmpfs_size_problem

Row = tuple[str | None, ...]

# Longest operators first so "<=" is not read as "<".
_FILTER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(==|!=|=~|!~|<=|>=|<|>)(.*)$", re.S)


@dataclass(frozen=True)
class Filter:
    """One ``-w`` selection: ``column op value``; NULL compares as the empty string."""

    column: str
    op: str
    value: str

    def matches(self, cell: str | None) -> bool:
        have = cell or ""
        if self.op == "==":
            return have == self.value
        if self.op == "!=":
            return have != self.value
        if self.op in ("=~", "!~"):
            found = _pattern(self.value).search(have) is not None
            return found if self.op == "=~" else not found
        a, b = _ordered(have), _ordered(self.value)
        if type(a[1]) is not type(b[1]):  # number vs text: compare as text
            a, b = (1, have), (1, self.value)
        return {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[self.op]


@lru_cache(maxsize=64)
def _pattern(value: str) -> Any:
    """``=~`` takes a regular expression; one with ``%`` is xCAT's SQL LIKE pattern instead
    (``%`` any text, ``_`` one character, whole value), so xCAT habits such as
    ``groups=~comput%`` keep working. Compiled by RE2 (linear time, bounded size): a
    ``-w`` filter must not hang ``tabdump`` or overflow the parser's recursion."""
    if "%" not in value:
        return saferegex.compile(value)
    parts = (".*" if c == "%" else "." if c == "_" else re.escape(c) for c in value)
    return saferegex.compile("(?s)^" + "".join(parts) + "$")


def _ordered(value: str) -> tuple[int, Any]:
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)


def parse_filter(spec: str, t: Table) -> Filter:
    """A ``-w`` argument such as ``groups==compute`` or ``file=~^/etc``, checked against ``t``."""
    m = _FILTER.match(spec)
    if not m:
        raise TableError(
            f"bad filter {spec!r}: expected COLUMN==VALUE (or !=, =~, !~, <, >, <=, >=)"
        )
    col, op, value = m.groups()
    _column(t, col)
    if op in ("=~", "!~"):
        try:
            _pattern(value)
        except saferegex.RegexError as exc:
            raise TableError(f"bad regular expression in filter {spec[:60]!r}: {exc}") from None
    return Filter(col, op, value)


def _column(t: Table, name: str) -> str:
    if name not in t.c:
        raise TableError(
            f"table {t.name} has no column {name!r} (columns: {', '.join(column_names(t))})"
        )
    return name


def sort_key(row: Mapping[str, Any], keys: Sequence[str]) -> tuple[tuple[int, Any], ...]:
    return tuple(_ordered(row[k] or "") for k in keys)


def _stored_order(conn: Connection) -> Any:
    """The physical row order xCAT's unordered ``SELECT *`` returns (rowid / ctid).

    Sorting by key would swap the cookbook's ``mod_ssl`` and ``mod_proxy`` rows, and row
    order is what an admin reads a table dump in.
    """
    return text("ctid") if conn.dialect.name == "postgresql" else text("rowid")


def rows(conn: Connection, name: str, filters: Iterable[str] = ()) -> list[Row]:
    """All rows of table ``name`` (disabled ones too) passing every filter, in stored order."""
    t = table(name)
    checks = [parse_filter(f, t) for f in filters]
    found = [r._mapping for r in conn.execute(select(t).order_by(_stored_order(conn)))]
    found = [r for r in found if all(f.matches(r[f.column]) for f in checks)]
    cols = column_names(t)
    return [tuple(r[c] for c in cols) for r in found]


def dump(conn: Connection, name: str, filters: Iterable[str] = ()) -> str:
    """Table ``name`` as tabdump CSV.

    A blank key is stored as ``""`` (key columns are NOT NULL) but xCAT keeps it as NULL, so
    it is printed as an empty field, as xCAT's tabdump prints it (``,"/etc/x",,,``);
    tabrestore reads an empty key field back as blank, so nothing is lost.
    """
    t = table(name)
    cols = column_names(t)
    blank_keys = [i for i, c in enumerate(cols) if c in key_columns(t)]
    out = []
    for row in rows(conn, name, filters):
        if any(row[i] == "" for i in blank_keys):
            row = tuple(None if i in blank_keys and v == "" else v for i, v in enumerate(row))
        out.append(row)
    return csvtab.format_table(cols, out)


# --- checks on rows about to be stored -------------------------------------------------


def bad_litefile_path(path: str) -> str | None:
    """Why ``path`` cannot be a litefile entry, or None if it is fine."""
    if not path.startswith("/"):
        return "is relative (litefile paths start with '/')"
    parts = path.split("/")[1:]
    if path.endswith("/"):
        parts = parts[:-1]  # a trailing "/" marks a directory
    if any(p in (".", "..") for p in parts):
        return "has a '.' or '..' component"
    if any(p == "" for p in parts):
        return "has an empty component ('//')"
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        # A newline forges a line in litefile output; a NUL path cannot be served to a node.
        return "contains a control character (newline, tab, NUL...); remove it"
    if len(path.encode()) > 4096:
        return "is longer than PATH_MAX (4096 bytes)"
    if any(len(p.encode()) > 255 for p in parts):
        return "has a component longer than 255 bytes"
    if parts and parts[0] == ".statelite":
        return "is under /.statelite, which litefs itself uses"
    if any(p.startswith(".wh.") for p in parts):
        return "has a '.wh.' (whiteout) name, which litefs itself uses"
    return None


def check_row(t: Table, row: Mapping[str, str | None], where: str) -> None:
    """Raise TableError if ``row`` may not be stored in ``t``; ``where`` names it for the admin."""
    for col in REQUIRED.get(t.name, ()):
        if not row.get(col):
            raise TableError(f"{where}: column {col!r} of table {t.name} must have a value")
    if t.name in ("litetree", "policy"):
        prio = (row.get("priority") or "").strip()
        try:
            number = float(prio)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise TableError(
                f"{where}: {t.name} priority {prio!r} is not a number (e.g. 1, 2.5 or 4.7); "
                "rows are taken in numeric priority order"
            )
    if t.name == "policy":  # a row that cannot be evaluated would deny at run time
        from litefs.policytable import row_problem

        why = row_problem(row)
        if why:
            raise TableError(f"{where}: policy row {why}")
    for col in key_columns(t):
        cell = row.get(col)
        if cell is not None and cell != cell.strip():
            # " ALL" and "ALL" would be two keys for one meaning and break every plan.
            raise TableError(f"{where}: key {col}={cell!r} has leading/trailing blanks; remove them")
    if "node" in column_names(t) and row.get("node") is not None:
        try:
            check_node_name(row["node"] or "")
        except LitefsError as exc:
            raise TableError(f"{where}: {exc}") from None
    if t.name == "site" and (row.get("key") or "").strip() == TMPFS_SIZE_KEY and row.get("value"):
        why = tmpfs_size_problem(normalise_tmpfs_size(row["value"] or ""))
        if why:
            raise TableError(f"{where}: site.{TMPFS_SIZE_KEY} {why}")
    if "node" in key_columns(t):  # node-attribute tables: cells may be /re/repl/ or |re|expr|
        for col, cell in row.items():
            if cell and col not in key_columns(t):
                why = regex_cell_problem(cell)
                if why:
                    raise TableError(f"{where}: {t.name}.{col} {why}")
    if "imagename" in key_columns(t):
        name = row.get("imagename") or ""
        if "/" in name or name in (".", "..") or not name.isprintable():
            # nodeset makes it a folder name under the tftpdir: <tftpdir>/xcat/osimage/<name>/
            raise TableError(f"{where}: osimage name {name!r} must be a plain name (no '/', no control characters)")
    if t.name == "litefile":
        path = row.get("file") or ""
        why = bad_litefile_path(path)
        if why:
            raise TableError(f"{where}: litefile path {path!r} {why}")
    check_litefile_option(t, row, where)


def check_litefile_option(t: Table, row: Mapping[str, str | None], where: str) -> None:
    """Refuse a litefile option that no plan or boot could use (``bogus``): one bad row would
    otherwise make every node of the image unbootable."""
    if t.name == "litefile":
        why = option_problem(row.get("options"))
        if why:
            raise TableError(f"{where}: litefile {row.get('file')!r}: {why}")


_DOLLAR = re.compile(r"\$(\d+)|\$\{(\d+)\}")


def regex_cell_problem(value: str) -> str | None:
    """Why a ``/re/repl/`` or ``|re|expr|`` cell could never be applied, or None.

    Checked when written, so a bad cell is refused with one line instead of failing the plans
    of every node it covers: the regex must compile (RE2, as at plan time), ``$N`` must name a
    group it has, and the arithmetic must parse and stay finite with every group ``1``
    (what depends on a node's digits - ``100/($1-1)`` - is still contained per node at plan
    time).
    """
    if not (len(value) >= 3 and value[0] == value[-1] and value[0] in "/|"):
        return None
    delim, body = value[0], value[1:-1]
    if delim not in body:
        return None
    pattern, _, repl = body.partition(delim)
    shown = repr(value) if len(value) <= 80 else repr(value[:50] + "..." + value[-20:])
    try:
        groups = saferegex.compile(pattern).groups
    except saferegex.RegexError as exc:
        return f"value {shown}: {exc}"
    for m in _DOLLAR.finditer(repl):
        n = int(m.group(1) or m.group(2))
        if n > groups:
            return f"value {shown}: ${n} refers to a group the regex does not have ({groups})"
    if delim == "|" and "(" in repl:
        sample = re.fullmatch("(1)" * groups, "1" * groups)
        assert sample is not None
        try:
            nodeattrs.expression(repl, sample, f"value {shown}")
        except TableError as exc:
            if "division by zero" not in str(exc):  # depends on the node: left to plan time
                return str(exc)
    return None


def _canon_key(col: str, cell: str | None) -> str | None:
    """The value two key cells are compared by: priorities 1, 1.0 and 01 are one key."""
    if cell is None:
        return None
    if col == "priority":
        try:
            return repr(float(cell))
        except ValueError:
            return cell.strip()
    return cell.strip()


def _describe_key(t: Table, row: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={row[k]!r}" for k in key_columns(t))


def _describe_key_spec(keys: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v!r}" for k, v in keys.items())


def _db_error(exc: DBAPIError, what: str) -> TableError:
    lines = str(exc.orig).strip().splitlines()
    reason = lines[0] if lines else str(exc)
    if isinstance(exc, IntegrityError):
        return TableError(
            f"{what}: a row with the same key already exists ({reason}); nothing changed; "
            "change or delete that row first"
        )
    return TableError(f"{what}: the database refused it: {reason}; nothing changed")


def check_litefile_paths(conn: Connection) -> None:
    """Refuse two litefile rows of one image that name the same path (``/etc/ssh`` and
    ``/etc/ssh/``): they are different keys to the database, but every plan for that image
    would fail, so the write that creates them is rolled back instead."""
    t = TABLES["litefile"]
    seen: dict[tuple[str, str], str] = {}
    for image, file in conn.execute(select(t.c.image, t.c.file).where(active(t))):
        path = (file or "").strip().rstrip("/") or "/"
        key = ((image or "").strip(), path)
        other = seen.setdefault(key, file)
        if other != file:
            raise TableError(
                f"litefile rows {other!r} and {file!r} of image {key[0] or 'blank'!r} name the "
                "same path (a trailing '/' only marks a directory); keep one of them"
            )


def check_host_ips(conn: Connection) -> None:
    """Refuse two hosts rows with one literal address: mountd identifies a node by the
    address it connects from, so the second node would silently get the first one's plan.
    (Regular-expression cells, ``|...|...|``, are per-group patterns and not compared.)"""
    t = TABLES["hosts"]
    seen: dict[str, str] = {}
    for node, ip in conn.execute(select(t.c.node, t.c.ip).where(active(t)).order_by(t.c.node)):
        addr = (ip or "").strip()
        if not addr or addr.startswith("|"):
            continue
        other = seen.setdefault(addr, node)
        if other != node:
            raise TableError(
                f"hosts: nodes {other} and {node} both have ip {addr}; mountd tells nodes "
                "apart by address, so give each node its own"
            )


def _lock(conn: Connection, t: Table) -> None:
    # SQLite's write transaction already excludes other writers; PostgreSQL needs the table lock
    # so two restores cannot interleave their delete and insert.
    if conn.dialect.name == "postgresql":
        conn.execute(text(f'LOCK TABLE "{t.name}" IN EXCLUSIVE MODE'))


# --- restore -------------------------------------------------------------------------------


def restore(
    engine: Engine,
    name: str,
    csv_text: str,
    source_name: str,
    *,
    append: bool = False,
    expected: str | None = None,
) -> int:
    """Replace table ``name`` with the CSV rows (``append``: add/replace by key); return count.

    All or nothing: a malformed file, a duplicate key, a bad row or a database error leaves
    the table as it was. ``expected`` (tabedit) is the dump the edit started from; if the table
    changed meanwhile, nothing is written.
    """
    t = table(name)
    cols = column_names(t)
    keys = key_columns(t)
    records = csvtab.parse(csv_text, cols, keys=keys, source=source_name)
    seen: dict[tuple[str | None, ...], int] = {}
    new_rows: list[dict[str, str | None]] = []
    for rec in records:
        row = dict(zip(cols, rec.values, strict=True))
        key = tuple(_canon_key(k, row[k]) for k in keys)
        if key in seen:
            raise TableError(
                f"{source_name}: lines {seen[key]} and {rec.line} have the same key "
                f"({_describe_key(t, row)}); keep one of them"
            )
        seen[key] = rec.line
        check_row(t, row, f"{source_name} line {rec.line}")
        new_rows.append(row)
    try:
        with db.write(engine) as conn:
            _lock(conn, t)
            if expected is not None and dump(conn, name) != expected:
                raise TableError(
                    f"table {name} was changed by someone else while you edited it; "
                    "nothing written"
                )
            if append:
                for row in new_rows:
                    conn.execute(t.delete().where(_key_match(t, row)))
            else:
                conn.execute(t.delete())
            if new_rows:
                conn.execute(t.insert(), new_rows)
            if name in _TABLE_CHECKS:
                try:
                    _TABLE_CHECKS[name](conn)
                except TableError as exc:
                    raise TableError(f"{source_name}: {exc}") from None
    except DBAPIError as exc:
        raise _db_error(exc, f"{source_name}: restoring table {name}") from None
    return len(new_rows)


#: whole-table checks run inside the writing transaction (a failure rolls the write back)
_TABLE_CHECKS: dict[str, Callable[[Connection], None]] = {
    "litefile": check_litefile_paths,
    "hosts": check_host_ips,
}


def _key_match(t: Table, row: Mapping[str, Any]) -> Any:
    return and_(*(t.c[k] == row[k] for k in key_columns(t)))


# --- chtab ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    """``table.column=value`` (or ``+=``: append to a comma list, without duplicates)."""

    table: str
    column: str
    value: str
    append: bool = False


def parse_assignment(spec: str) -> Assignment:
    target, sep, value = spec.partition("=")
    append = target.endswith("+")
    target = target.removesuffix("+")
    tab, dot, col = target.partition(".")
    if not sep or not dot or not tab or not col:
        raise TableError(f"bad assignment {spec!r}: expected TABLE.COLUMN=VALUE or +=VALUE")
    _column(table(tab), col)
    return Assignment(tab, col, value, append)


def parse_keys(spec: str) -> dict[str, str]:
    """``key=val[,key=val]`` as xCAT's chtab takes it."""
    keys: dict[str, str] = {}
    for part in spec.split(","):
        k, sep, v = part.partition("=")
        if not sep or not k.strip():
            raise TableError(f"bad key {part!r} in {spec!r}: expected COLUMN=VALUE[,COLUMN=VALUE]")
        if k.strip() in keys:
            raise TableError(f"key column {k.strip()!r} given twice in {spec!r}; give it once")
        keys[k.strip()] = v
    return keys


def append_items(old: str | None, more: str) -> str:
    """``old`` comma list plus the items of ``more`` not already in it."""
    items = [i for i in (old or "").split(",") if i]
    for item in more.split(","):
        if item and item not in items:
            items.append(item)
    return ",".join(items)


def _where(t: Table, keys: Mapping[str, str]) -> Any:
    for k in keys:
        _column(t, k)
    return and_(*(t.c[k] == v for k, v in keys.items()))


def chtab(
    engine: Engine, keys: Mapping[str, str], assignments: Sequence[str | Assignment]
) -> int:
    """Set columns of the rows selected by ``keys``, inserting a row where none matches.

    Assignments may name several tables (as with xCAT's chtab); the keys apply to each.
    Returns the number of rows written. One transaction for all of it.
    """
    if not keys:
        raise TableError("chtab needs KEY=VALUE to select rows")
    parsed = [a if isinstance(a, Assignment) else parse_assignment(a) for a in assignments]
    if not parsed:
        raise TableError("chtab needs at least one TABLE.COLUMN=VALUE")
    by_table: dict[str, list[Assignment]] = {}
    for a in parsed:
        by_table.setdefault(a.table, []).append(a)
    written = 0
    try:
        with db.write(engine) as conn:
            for name, changes in by_table.items():
                written += _chtab_one(conn, TABLES[name], keys, changes)
            for name in by_table:
                if name in _TABLE_CHECKS:
                    _TABLE_CHECKS[name](conn)
    except DBAPIError as exc:
        raise _db_error(exc, "table " + ",".join(by_table)) from None
    return written


def _chtab_one(
    conn: Connection, t: Table, keys: Mapping[str, str], changes: Sequence[Assignment]
) -> int:
    # Priorities are numbers (1, 1.0 and 01 are one row, as tabrestore compares them): select
    # on the other keys, then compare the priority by value.
    plain = {k: v for k, v in keys.items() if k != "priority"}
    where = _where(t, plain) if plain else true()
    cols = column_names(t)
    current = [dict(r._mapping) for r in conn.execute(select(t).where(where).with_for_update())]
    if "priority" in keys:
        _column(t, "priority")
        want = _canon_key("priority", keys["priority"])
        current = [r for r in current if _canon_key("priority", r["priority"]) == want]
    if not current:
        missing = [k for k in key_columns(t) if k not in keys]
        if missing:
            # Inserting with a guessed (blank) key would create a row nobody meant.
            raise TableError(
                f"table {t.name}: no row matches {_describe_key_spec(keys)}; to add one, give "
                f"every key column ({', '.join(key_columns(t))})"
            )
        blank: dict[str, str | None] = {c: None for c in cols}
        blank.update(keys)
        current, insert = [blank], True
    else:
        insert = False
    for row in current:
        new = dict(row)
        for a in changes:
            new[a.column] = append_items(new[a.column], a.value) if a.append else a.value
        check_row(t, new, f"table {t.name} row {_describe_key(t, new)}")
        if insert:
            conn.execute(t.insert().values(**new))
        else:
            conn.execute(t.update().where(_key_match(t, row)).values(**new))
    return len(current)


def delete(engine: Engine, keys: Mapping[str, str], names: Sequence[str]) -> int:
    """``chtab -d``: delete the rows matching ``keys`` from each table; return how many."""
    if not keys:
        raise TableError("chtab -d needs KEY=VALUE to select rows (refusing to empty a table)")
    tables = [table(n) for n in names]
    if not tables:
        raise TableError("chtab -d needs at least one table name")
    deleted = 0
    try:
        with db.write(engine) as conn:
            for t in tables:
                deleted += conn.execute(t.delete().where(_where(t, keys))).rowcount
    except DBAPIError as exc:
        raise _db_error(exc, "deleting from " + ",".join(names)) from None
    return deleted
