"""xCAT's table commands: ``tabdump``, ``tabrestore``, ``chtab`` and ``tabedit``.

Same syntax and CSV as xCAT, against the litefs database (``--db URL`` / ``$LITEFS_DB`` /
the default SQLite file). The work is done by :mod:`litefs.tabledata`; this module only turns
arguments into calls, so every change is one transaction and a bad file changes nothing.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from litefs.tools.common import Parser, add_db_option, run_main
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from litefs import db, tabledata, tabledesc
from litefs.errors import LitefsError, TableError, UsageError
from litefs.schema import TABLES, table


def _parser(prog: str, usage: str, description: str, epilog: str) -> Parser:
    return Parser(
        prog=prog,
        usage=usage,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _engine(url: str | None) -> Engine:
    engine = db.open_engine(url, must_exist=True)
    db.require_schema(engine)
    return engine


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise LitefsError(f"cannot write {path}: {exc.strerror}") from None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # tolerate a BOM from spreadsheet apps
    except UnicodeDecodeError as exc:
        raise TableError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise LitefsError(f"cannot read {path}: {exc.strerror}") from None


# --- tabdump -------------------------------------------------------------------------------


def _tabdump(argv: list[str]) -> int:
    p = _parser(
        "tabdump",
        "tabdump [-d] [-f FILE] [-w FILTER]... [TABLE] [--db URL]",
        "Print a table as CSV (xCAT format); with no TABLE, list the table names.",
        "filters (-w, several are ANDed; NULL compares as empty):\n"
        "  col==val  col!=val     exact match / no match\n"
        "  col=~re   col!~re      regular expression found / not found; a pattern with %\n"
        "                         is xCAT's SQL LIKE form (% any text, _ one character)\n"
        "  col<val   col>val  col<=val  col>=val   numbers numerically, else as text\n\n"
        "examples:\n"
        "  tabdump litefile\n"
        "  tabdump -w 'options==persistent' -w 'file=~^/etc' litefile\n"
        "  tabdump -f /tmp/litetree.csv litetree\n"
        "  tabdump -d statelite",
    )
    p.add_argument("-d", dest="describe", action="store_true", help="describe tables or columns")
    p.add_argument("-f", dest="file", metavar="FILE", help="write the CSV to FILE, not stdout")
    p.add_argument(
        "-w", dest="filters", metavar="FILTER", action="append", default=[],
        help="select rows, e.g. 'groups==compute' (repeatable)",
    )
    p.add_argument("table", nargs="?", help="table to dump")
    add_db_option(p)
    args = p.parse_args(argv)
    if args.describe:
        if args.table:
            lines = tabledesc.describe_table(args.table)
        else:
            lines = [f"{n}:{' ' * (12 - len(n))}{d}" for n, d in tabledesc.TABLES.items()]
        print("\n".join(lines))
        return 0
    if not args.table:
        if args.filters or args.file:
            raise UsageError("-w and -f need a TABLE (see 'tabdump --help')")
        print("\n".join(TABLES))
        return 0
    table(args.table)
    engine = _engine(args.db)
    try:
        with engine.connect() as conn:
            text = tabledata.dump(conn, args.table, args.filters)
    except DBAPIError as exc:  # e.g. the server went away between connect and read
        lines = str(exc.orig).strip().splitlines()
        raise LitefsError(
            f"cannot read table {args.table}: {lines[0] if lines else exc}"
        ) from None
    if args.file:
        _write_atomically(Path(args.file), text)
    else:
        sys.stdout.write(text)
    return 0


def tabdump_main(argv: list[str] | None = None) -> int:
    return run_main("tabdump", _tabdump, argv)


# --- tabrestore ----------------------------------------------------------------------------


def table_from_filename(path: str) -> str:
    """xCAT names the table after the file: ``/tmp/litefile.csv`` -> ``litefile``."""
    name = Path(path).name.split(".", 1)[0]
    try:
        table(name)
    except TableError as exc:
        raise TableError(f"{path}: the file name must be TABLE.csv; {exc}") from None
    return name


def _tabrestore(argv: list[str]) -> int:
    p = _parser(
        "tabrestore",
        "tabrestore [-a] FILE.csv [--db URL]",
        "Replace a table with the rows of a CSV file (as written by tabdump). The table is "
        "named by the file: litefile.csv restores table litefile. All or nothing: any error "
        "leaves the table unchanged.",
        "examples:\n"
        "  tabrestore litefile.csv\n"
        "  tabrestore -a /tmp/more/litetree.csv     # add rows, replacing same keys",
    )
    p.add_argument(
        "-a", dest="append", action="store_true",
        help="add the rows to the table (a row with the same key is replaced) instead of "
        "replacing the whole table",
    )
    p.add_argument("file", metavar="FILE.csv", help="CSV file; its name gives the table")
    add_db_option(p)
    args = p.parse_args(argv)
    name = table_from_filename(args.file)
    text = _read(Path(args.file))
    engine = _engine(args.db)
    tabledata.restore(engine, name, text, args.file, append=args.append)
    return 0


def tabrestore_main(argv: list[str] | None = None) -> int:
    return run_main("tabrestore", _tabrestore, argv)


# --- chtab ---------------------------------------------------------------------------------


def _chtab(argv: list[str]) -> int:
    p = _parser(
        "chtab",
        "chtab KEY=VAL[,KEY=VAL] TABLE.COL=VALUE|TABLE.COL+=VALUE ... [--db URL]\n"
        "       chtab -d KEY=VAL[,KEY=VAL] TABLE ... [--db URL]",
        "Set columns of the rows selected by the keys (a row is added if none matches), or "
        "with -d delete them. '+=' appends to a comma list, skipping items already there.",
        "examples:\n"
        '  chtab node=compute statelite.statemnt="mn:/nodedata"\n'
        "  chtab priority=4.7 policy.commands=litefile policy.rule=allow\n"
        "  chtab image=ALL,file=/etc/ssh/ litefile.options=persistent\n"
        "  chtab node=n1 nodelist.groups+=rack1\n"
        "  chtab -d node=n1 nodelist nodetype",
    )
    p.add_argument("-d", dest="delete", action="store_true", help="delete the selected rows")
    p.add_argument("keys", metavar="KEY=VAL[,KEY=VAL]", help="which rows")
    p.add_argument("changes", nargs="+", metavar="TABLE.COL=VALUE | TABLE",
                   help="table.column=value changes (or, with -d, the tables to delete from)")
    add_db_option(p)
    args = p.parse_args(argv)
    keys = tabledata.parse_keys(args.keys)
    if args.delete:
        names = args.changes
        for n in names:
            table(n)
        engine = _engine(args.db)
        tabledata.delete(engine, keys, names)
        return 0
    assignments = [tabledata.parse_assignment(a) for a in args.changes]
    engine = _engine(args.db)
    tabledata.chtab(engine, keys, assignments)
    return 0


def chtab_main(argv: list[str] | None = None) -> int:
    return run_main("chtab", _chtab, argv)


# --- tabedit -------------------------------------------------------------------------------


def editor_command() -> list[str]:
    """$TABEDITOR, else $EDITOR, else vi (as xCAT's tabedit)."""
    cmd = os.environ.get("TABEDITOR") or os.environ.get("EDITOR") or "vi"
    try:
        argv = shlex.split(cmd)
    except ValueError as exc:
        raise UsageError(f"cannot parse editor command {cmd!r}: {exc}") from None
    if not argv:
        raise UsageError("the editor command ($TABEDITOR/$EDITOR) is empty")
    return argv


def _tabedit(argv: list[str]) -> int:
    p = _parser(
        "tabedit",
        "tabedit TABLE [--db URL]",
        "Edit a table as CSV in $TABEDITOR, $EDITOR or vi. When the editor exits, the file is "
        "checked and written back in one transaction; on any error the table is left as it "
        "was and your edited copy is kept.",
        "example:\n  EDITOR=nano tabedit litefile",
    )
    p.add_argument("table", help="table to edit")
    add_db_option(p)
    args = p.parse_args(argv)
    table(args.table)
    editor = editor_command()
    engine = _engine(args.db)
    with engine.connect() as conn:
        original = tabledata.dump(conn, args.table)
    workdir = Path(tempfile.mkdtemp(prefix="tabedit-"))
    path = workdir / f"{args.table}.csv"
    path.write_text(original)
    try:
        status = subprocess.run([*editor, str(path)], check=False).returncode
    except OSError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        raise LitefsError(f"cannot run editor {editor[0]!r}: {exc.strerror}; set $EDITOR") from None
    if status != 0:
        raise LitefsError(
            f"editor {editor[0]!r} exited with status {status}; table {args.table} unchanged "
            f"(your copy: {path})"
        )
    edited = _read(path)
    if edited == original:
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"tabedit: no changes to {args.table}", file=sys.stderr)
        return 0
    try:
        tabledata.restore(engine, args.table, edited, str(path), expected=original)
    except LitefsError as exc:
        raise type(exc)(f"{exc}; table {args.table} unchanged, your edits are in {path}") from None
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def tabedit_main(argv: list[str] | None = None) -> int:
    return run_main("tabedit", _tabedit, argv)
