"""xCAT's table CSV (what ``tabdump`` prints and ``tabrestore`` reads), as pure functions.

Format (xCAT tabutils): a header ``#col1,col2,...``, then one record per row with every column
in schema order; a non-NULL value is wrapped in double quotes with inner quotes doubled, NULL is
an empty unquoted field, and a quoted value may span lines. :func:`format_table` writes exactly
that. :func:`parse` reads it back and is lenient only where hand-written files (the cookbook's
sample litefile lists) need it: blank space around fields, unquoted values, fewer fields than
columns and extra *empty* fields at the end of a record. Anything else that is odd is an error
naming the file, the line and what is wrong, because guessing would store the wrong data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from litefs.errors import TableError

Value = str | None

_BLANK = " \t\r"

# One well-formed field and what ends it; quoted bodies use the unrolled-loop form so a
# failing match cannot backtrack exponentially. Anything it rejects goes to the exact reader.
_FIELD = re.compile(r'[ \t\r]*(?:"([^"]*(?:""[^"]*)*)"[ \t\r]*|([^,\n"]*))(,|\n|\Z)')


@dataclass(frozen=True)
class Record:
    """One data row: its first line in the file and one value per requested column."""

    line: int
    values: tuple[Value, ...]


def quote(value: Value) -> str:
    """One field as tabdump writes it: NULL empty, anything else quoted."""
    if value is None:
        return ""
    return '"' + value.replace('"', '""') + '"'


def format_table(columns: Sequence[str], rows: Iterable[Sequence[Value]]) -> str:
    """The CSV text for ``rows`` (each one value per column, in ``columns`` order)."""
    out = ["#" + ",".join(columns)]
    for row in rows:
        out.append(",".join(quote(v) for v in row))
    return "\n".join(out) + "\n"


class _Reader:
    """Splits CSV text into records of fields; a field is None (empty, unquoted) or a str."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.pos = 0
        self.line = 1

    def fail(self, line: int, what: str) -> TableError:
        return TableError(f"{self.source} line {line}: {what}")

    def skip_blank(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _BLANK:
            self.pos += 1

    def at_end_of_record(self) -> bool:
        return self.pos >= len(self.text) or self.text[self.pos] == "\n"

    def end_record(self) -> None:
        if self.pos < len(self.text):  # the "\n"
            self.pos += 1
            self.line += 1

    def raw_line(self) -> str:
        end = self.text.find("\n", self.pos)
        end = len(self.text) if end < 0 else end
        s = self.text[self.pos : end]
        self.pos = end
        return s

    def quoted(self) -> str:
        start_line = self.line
        self.pos += 1  # opening quote
        parts: list[str] = []
        text = self.text
        while True:
            q = text.find('"', self.pos)
            if q < 0:
                raise self.fail(start_line, "unterminated quoted value (no closing '\"')")
            chunk = text[self.pos : q]
            parts.append(chunk)
            self.line += chunk.count("\n")
            if text.startswith('""', q):
                parts.append('"')
                self.pos = q + 2
                continue
            self.pos = q + 1
            return "".join(parts)

    def unquoted(self) -> Value:
        start = self.pos
        text = self.text
        while self.pos < len(text) and text[self.pos] not in ",\n":
            if text[self.pos] == '"':
                raise self.fail(
                    self.line,
                    f"stray '\"' in unquoted value {text[start : self.pos + 1].strip()!r}; "
                    "quote the whole value and double inner quotes",
                )
            self.pos += 1
        value = text[start : self.pos].strip(_BLANK)
        return value or None

    def record(self) -> list[Value]:
        """The fields of the record at the current position (which must not be blank)."""
        fields = self.fast_record()
        return fields if fields is not None else self.exact_record()

    def fast_record(self) -> list[Value] | None:
        # Regex path for well-formed records (most of them); None sends the record to the
        # character reader, which finds the exact error.
        text, pos, newlines = self.text, self.pos, 0
        fields: list[Value] = []
        while True:
            m = _FIELD.match(text, pos)
            if m is None:
                return None
            quoted, plain, sep = m.groups()
            if quoted is not None:
                newlines += quoted.count("\n")
                fields.append(quoted.replace('""', '"'))
            else:
                fields.append(plain.strip(_BLANK) or None)
            pos = m.end()
            if sep != ",":
                break
        self.pos = pos
        self.line += newlines + (sep == "\n")
        return fields

    def exact_record(self) -> list[Value]:
        fields: list[Value] = []
        while True:
            self.skip_blank()
            if self.pos < len(self.text) and self.text[self.pos] == '"':
                fields.append(self.quoted())
                self.skip_blank()
                if not self.at_end_of_record() and self.text[self.pos] != ",":
                    raise self.fail(
                        self.line,
                        f"unexpected {self.text[self.pos]!r} after a closing quote; "
                        "inner quotes must be doubled",
                    )
            else:
                fields.append(self.unquoted())
            if self.at_end_of_record():
                self.end_record()
                return fields
            self.pos += 1  # the ","


def parse_header(line: str, known: Sequence[str], source: str, lineno: int) -> tuple[str, ...]:
    """Column names from a ``#col,...`` line; unknown or repeated names are errors."""
    if not line.startswith("#"):
        raise TableError(
            f"{source} line {lineno}: missing header line '#{','.join(known)}' "
            "(the first line must name the columns)"
        )
    # xCAT strips quotes from the header ("overzealous CSV apps").
    names = [n.strip(_BLANK) for n in line[1:].replace('"', "").split(",")]
    while names and not names[-1]:
        names.pop()
    seen: set[str] = set()
    for name in names:
        if name not in known:
            raise TableError(
                f"{source} line {lineno}: unknown column {name!r} in header "
                f"(columns: {', '.join(known)})"
            )
        if name in seen:
            raise TableError(f"{source} line {lineno}: column {name!r} named twice in header")
        seen.add(name)
    if not names:
        raise TableError(f"{source} line {lineno}: header names no columns")
    return tuple(names)


def parse(
    text: str,
    columns: Sequence[str],
    *,
    keys: Sequence[str] = (),
    source: str = "<input>",
) -> list[Record]:
    """Records of ``text`` with one value per entry of ``columns`` (schema order).

    Columns missing from the header or the record are NULL; key columns hold ``""`` instead
    of NULL (keys are NOT NULL). Blank lines are skipped.
    """
    reader = _Reader(text, source)
    header: tuple[str, ...] | None = None
    records: list[Record] = []
    key_set = set(keys)
    while reader.pos < len(text):
        reader.skip_blank()
        if reader.at_end_of_record():
            reader.end_record()
            continue
        lineno = reader.line
        if header is None:
            header = parse_header(reader.raw_line(), columns, source, lineno)
            reader.end_record()
            continue
        if text[reader.pos] == "#":
            raise reader.fail(lineno, "unexpected '#' line after the header")
        fields = reader.record()
        if len(fields) > len(header):
            extra = [f for f in fields[len(header) :] if f is not None]
            if extra:
                raise reader.fail(
                    lineno,
                    f"{len(fields)} fields but the header names {len(header)} columns "
                    f"(extra value {extra[0]!r})",
                )
        by_name = dict(zip(header, fields, strict=False))
        values = tuple(
            (by_name.get(c) or "") if c in key_set else by_name.get(c) for c in columns
        )
        records.append(Record(lineno, values))
    if header is None:
        raise TableError(
            f"{source} line 1: missing header line '#{','.join(columns)}' (the file is empty)"
        )
    return records
