"""Node attribute lookup with xCAT's node→group inheritance and regex-valued cells (pure).

xCAT looks a node-keyed attribute (``noderes.nfsserver``, ``nodetype.os``…) up in the row
whose key is the node; if that row does not define it, in the rows of the node's groups in
the order ``nodelist.groups`` lists them, first hit wins, attribute by attribute (reference
§1). A value written ``/regex/replacement/`` or ``|regex|expression|`` is computed from the
node name, so one group row can give every node its own value: ``|node(\\d+)|10.0.0.($1+0)|``
gives node007 the address 10.0.0.7. Parenthesised parts of an expression are evaluated by a
tiny arithmetic evaluator (numbers, ``$N``, ``+ - * / %``, parentheses), never by ``eval``.
Rows arrive already filtered (disabled rows dropped by the loader).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from litefs import saferegex
from litefs.errors import TableError
from litefs.tablespec import COLUMNS

Row = Mapping[str, "str | None"]

_DOLLAR = re.compile(r"\$(\d+)|\$\{(\d+)\}")


class NodeAttrs:
    """Attribute lookup over node-keyed tables.

    ``tables``: table name -> key (node or group name) -> row (column -> value).
    ``groups``: node -> its groups in ``nodelist.groups`` order.
    """

    def __init__(
        self,
        tables: Mapping[str, Mapping[str, Row]],
        groups: Mapping[str, Sequence[str]],
    ) -> None:
        self.tables = tables
        self.groups = groups

    def get(self, node: str, table: str, column: str) -> str | None:
        """The value of ``table.column`` for ``node``, or None when nothing defines it."""
        found = self.find(node, table, column)
        return None if found is None else found[0]

    def find(self, node: str, table: str, column: str) -> tuple[str, str] | None:
        """``(value, key of the row that supplied it)``, or None when nothing defines it."""
        rows = self.tables.get(table)
        if rows is None:
            check_column(table, column)
            return None
        row = rows.get(node)
        if row is not None:
            raw = row.get(column)
            if raw:
                return transform(raw, node, table, column), node
        for group in self.groups.get(node, ()):
            row = rows.get(group)
            if row is not None:
                raw = row.get(column)
                if raw:
                    return transform(raw, node, table, column), group
        check_column(table, column)
        return None


_COLUMNS: frozenset[tuple[str, str]] = frozenset(
    (name, c) for name, cols in COLUMNS.items() for c in cols
)


def check_column(table: str, column: str) -> None:
    """Raise TableError unless ``table.column`` exists in the schema."""
    if (table, column) in _COLUMNS:
        return
    if table not in COLUMNS:
        raise TableError(f"table {table!r} does not exist")
    raise TableError(f"table {table!r} has no column {column!r}")


def transform(value: str, node: str, table: str = "?", column: str = "?") -> str | None:
    """Apply a regex-valued cell to ``node``; plain values come back unchanged.

    ``/re/repl/`` replaces the first match of ``re`` in the node name (``$1`` refers to
    groups). ``|re|expr|`` gives ``expr`` with each parenthesised part evaluated as
    arithmetic over the groups (without parentheses it is a substitution, like ``/re/repl/``). A regex that does not match the node leaves the attribute
    undefined (None): xCAT would hand back the bare node name, which is never what was meant.
    """
    if len(value) >= 3 and value[0] == value[-1] and value[0] in "/|":
        delim = value[0]
        body = value[1:-1]
        if delim in body:
            pattern, _, repl = body.partition(delim)
            where = f"{table}.{column} value {value!r} for node {node}"
            try:  # linear time: a table cell must not be able to stall mountd
                m = saferegex.compile(pattern).search(node)
            except saferegex.RegexError as exc:
                raise TableError(f"{where}: {exc}") from None
            if m is None:
                return None
            # xCAT treats a |re|repl| without parentheses like /re/repl/: a substitution in
            # the node name (|node|host| makes node007 host007), not a whole new value.
            if delim == "/" or "(" not in repl:
                return node[: m.start()] + _groups(repl, m, where) + node[m.end() :]
            return _expression(repl, m, where)
    return value


def _groups(text: str, m: re.Match[str], where: str) -> str:
    def one(g: re.Match[str]) -> str:
        n = int(g.group(1) or g.group(2))
        if n > (m.re.groups or 0):
            raise TableError(f"{where}: ${n} refers to a group the regex does not have")
        return m.group(n) or ""

    return _DOLLAR.sub(one, text)


def _expression(expr: str, m: re.Match[str], where: str) -> str:
    """Literal text with every top-level ``( ... )`` replaced by its arithmetic value."""
    out: list[str] = []
    i = 0
    while i < len(expr):
        ch = expr[i]
        if ch == "(":
            depth, j = 0, i
            while j < len(expr):
                if expr[j] == "(":
                    depth += 1
                elif expr[j] == ")":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            if depth != 0:
                raise TableError(f"{where}: unbalanced '('")
            out.append(_format(evaluate(_groups(expr[i : j + 1], m, where), where), where))
            i = j + 1
        else:
            j = expr.find("(", i)
            j = len(expr) if j < 0 else j
            out.append(_groups(expr[i:j], m, where))
            i = j
    return "".join(out)


#: the arithmetic part of a ``|re|expr|`` cell, also used by the write-time check (tabledata)
expression = _expression


def _clip(text: str, limit: int = 160) -> str:
    """Head and tail of a long message part: the cell is cut, the node name at the end kept."""
    return text if len(text) <= limit else text[: limit - 60] + "..." + text[-57:]


def _format(value: float, where: str = "expression") -> str:
    if not math.isfinite(value):  # int(inf) would raise OverflowError out of the planner
        raise TableError(f"{_clip(where)}: arithmetic overflows (the result is not a finite number)")
    if value == int(value):
        return str(int(value))
    return repr(value)


_TOKEN = re.compile(r"\s*(?:(\d+\.\d*|\.\d+|\d+)|(.))")


def evaluate(text: str, where: str = "expression") -> float:
    """Evaluate ``+ - * / %`` arithmetic with parentheses and unary minus (no names)."""
    tokens: list[str | float] = []
    for num, op in _TOKEN.findall(text):
        if num:
            tokens.append(float(num))
        elif op.strip():
            if op not in "+-*/%()":
                raise TableError(f"{where}: {text!r} is not arithmetic (unexpected {op!r})")
            tokens.append(op)
    pos = 0

    def peek() -> str | float | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str | float | None:
        nonlocal pos
        tok = peek()
        pos += 1
        return tok

    def atom() -> float:
        tok = take()
        if isinstance(tok, float):
            return tok
        if tok == "-":
            return -atom()
        if tok == "+":
            return atom()
        if tok == "(":
            value = expr()
            if take() != ")":
                raise TableError(f"{where}: missing ')' in {text!r}")
            return value
        raise TableError(f"{where}: {text!r} is not arithmetic")

    def term() -> float:
        value = atom()
        while peek() in ("*", "/", "%"):
            op = take()
            rhs = atom()
            if op != "*" and rhs == 0:
                raise TableError(f"{where}: division by zero in {text!r}")
            if op == "*":
                value *= rhs
            elif op == "/":
                value /= rhs
            else:
                value = float(int(value) % int(rhs))
        return value

    def expr() -> float:
        value = term()
        while peek() in ("+", "-"):
            op = take()
            rhs = term()
            value = value + rhs if op == "+" else value - rhs
        return value

    result = expr()
    if pos != len(tokens):
        raise TableError(f"{where}: {text!r} is not arithmetic")
    return result
