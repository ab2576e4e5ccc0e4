"""The xCAT tables litefs reads, as SQLAlchemy Core ``Table`` objects, and the schema version.

Columns and keys follow xCAT's Schema.pm (reference §1). Every column is text, as in xCAT.
Key columns are NOT NULL and hold ``""`` for a blank key (xCAT's ``image=''`` means "blank";
PostgreSQL cannot put NULL in a primary key); the CSV layer maps an empty key field to ``""``.
Every table has ``comments`` and ``disable``; a row whose ``disable`` is set to anything but
``0``/``no`` is invisible to every lookup (:func:`active`).
"""

from __future__ import annotations

from sqlalchemy import Column, ColumnElement, MetaData, Table, Text, or_

from litefs.tablespec import SPECS

metadata = MetaData()

#: Version of the schema this code writes; :mod:`litefs.db` upgrades older databases to it.
SCHEMA_VERSION = 3

#: Columns that must have a value in every row (besides keys), as xCAT requires.
REQUIRED: dict[str, tuple[str, ...]] = {
    "litetree": ("directory",),
    "statelite": ("statemnt",),
}


def _make(name: str, keys: tuple[str, ...], others: tuple[str, ...]) -> Table:
    cols = [Column(k, Text, primary_key=True, nullable=False) for k in keys]
    cols += [Column(c, Text, nullable=True) for c in others]
    cols += [Column("comments", Text), Column("disable", Text)]
    return Table(name, metadata, *cols)


TABLES: dict[str, Table] = {name: _make(name, keys, others) for name, keys, others in SPECS}

#: Schema bookkeeping: one row, key ``schema_version``.
litefs_meta = Table(
    "litefs_meta",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)


def table(name: str) -> Table:
    """The table called ``name``; unknown names raise TableError listing the known ones."""
    from litefs.errors import TableError

    try:
        return TABLES[name]
    except KeyError:
        known = ", ".join(sorted(TABLES))
        raise TableError(f"unknown table {name!r} (known tables: {known})") from None


def key_columns(t: Table) -> tuple[str, ...]:
    return tuple(c.name for c in t.primary_key.columns)


def column_names(t: Table) -> tuple[str, ...]:
    return tuple(c.name for c in t.columns)


#: Values of ``disable`` that leave a row active (xCAT: NULL or 0/no in any case).
_ENABLED = ("", "0", "no", "NO", "No", "nO")


def active(t: Table) -> ColumnElement[bool]:
    """SQL condition selecting rows that are not disabled."""
    return or_(t.c.disable.is_(None), t.c.disable.in_(_ENABLED))
