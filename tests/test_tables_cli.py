"""The installed table commands (tabdump, tabrestore, chtab, tabedit, litefs db) as subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from litefs import db
from tests.dbutil import db_url, dump_all  # noqa: F401

BIN = Path(sys.executable).parent
HEADER = "#image,file,options,comments,disable\n"


def run(*argv: str, url: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("LITEFS_DB", "EDITOR")}
    full_env["LITEFS_DB"] = url
    full_env.update(env or {})
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True, env=full_env, timeout=60
    )


def ok(*argv: str, url: str, env: dict[str, str] | None = None) -> str:
    res = run(*argv, url=url, env=env)
    assert res.returncode == 0, res.stderr
    return res.stdout


def fails(*argv: str, url: str, status: int = 1, env: dict[str, str] | None = None) -> str:
    res = run(*argv, url=url, env=env)
    assert res.returncode == status, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr  # one-line errors
    return lines[0]


def everything(url: str) -> dict[str, str]:
    """Every table's dump, read in-process (a CLI call per table would be slow)."""
    engine = db.open_engine(url)
    try:
        return dump_all(engine)
    finally:
        engine.dispose()


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A real SQLite file with the schema, made by the installed 'litefs db init'."""
    sqlite_url = f"sqlite:///{tmp_path}/litefs.db"
    assert "ready (schema version 1)" in ok("litefs", "db", "init", url=sqlite_url)
    return sqlite_url


def test_tabdump_tabrestore_round_trip(db_url: str, tmp_path: Path) -> None:  # noqa: F811
    # The one CLI test run on both backends: PostgreSQL through the same commands.
    url = db_url
    ok("litefs", "db", "init", url=url)
    data = resources.files("litefs").joinpath("data", "litefile-redhat.csv").read_text()
    src = tmp_path / "litefile.csv"
    src.write_text(data)
    ok("tabrestore", str(src), url=url)
    first = ok("tabdump", "litefile", url=url)
    assert first.count("\n") == 43 and '"ALL","/var/log/",,,\n' in first
    ok("tabdump", "-f", str(tmp_path / "litefile.2.csv"), "litefile", url=url)
    assert (tmp_path / "litefile.2.csv").read_text() == first
    ok("chtab", "image=ALL,file=/tmp/", "litefile.options=persistent", url=url)
    ok("tabrestore", str(tmp_path / "litefile.2.csv"), "--db", url, url="sqlite:////nonexistent/x")
    assert ok("tabdump", "litefile", url=url) == first


def test_tabdump_lists_filters_and_describes(url: str) -> None:
    names = ok("tabdump", url=url).split()
    assert {"litefile", "litetree", "statelite", "policy", "site"} <= set(names)
    policy = ok("tabdump", "-w", "commands=~^lite", "-w", "priority>4.7", "policy", url=url)
    assert policy.splitlines()[1:] == ['"4.8",,,"litetree",,,,"allow",,']
    desc = ok("tabdump", "-d", "litefile", url=url)
    assert "file: Absolute path" in desc
    assert "litefile:" in ok("tabdump", "-d", url=url)


def test_chtab_append_and_delete(url: str) -> None:
    ok("chtab", "node=n1", "nodelist.groups=compute", url=url)
    ok("chtab", "node=n1", "nodelist.groups+=rack1,compute", "nodepos.room=r1", url=url)
    assert '"n1","compute,rack1",' in ok("tabdump", "nodelist", url=url)
    assert '"n1",,,,,"r1",' in ok("tabdump", "nodepos", url=url)
    ok("chtab", "-d", "node=n1", "nodelist", "nodepos", url=url)
    assert ok("tabdump", "nodelist", url=url).count("\n") == 1


def test_tabrestore_append(url: str, tmp_path: Path) -> None:
    # A byte-order mark (spreadsheet export) is tolerated.
    (tmp_path / "litefile.csv").write_text("\ufeff" + HEADER + '"ALL","/a",,,\n')
    ok("tabrestore", str(tmp_path / "litefile.csv"), url=url)
    (tmp_path / "litefile.csv").write_text(HEADER + '"img","/b","ro",,\n')
    ok("tabrestore", "-a", str(tmp_path / "litefile.csv"), url=url)
    assert ok("tabdump", "litefile", url=url) == HEADER + '"ALL","/a",,,\n"img","/b","ro",,\n'


BAD_FILES = [
    ("litefile.csv", HEADER + '"ALL","/a",,,,"x"\n', "litefile.csv line 2: 6 fields"),
    ("litefile.csv", HEADER + '"ALL","/a\n', "line 2: unterminated quoted value"),
    ("litefile.csv", '"ALL","/a",,,\n', "line 1: missing header line"),
    ("litefile.csv", "#image,file,colour\n", "unknown column 'colour'"),
    ("litefile.csv", HEADER + '"ALL","var/log/",,,\n', "'var/log/' is relative"),
    ("litefile.csv", HEADER + '"ALL","/var/../etc/",,,\n', "has a '.' or '..' component"),
    ("litefile.csv", HEADER + '"A","/a",,,\n"A","/a",,,\n', "lines 2 and 3 have the same key"),
    ("litefiles.csv", HEADER, "unknown table 'litefiles'"),
]


@pytest.mark.parametrize(("fname", "text", "message"), BAD_FILES)
def test_bad_tabrestore_is_one_line_exit_1_and_changes_nothing(
    url: str, tmp_path: Path, fname: str, text: str, message: str
) -> None:
    ok("chtab", "image=ALL,file=/etc/ssh/", "litefile.options=persistent", url=url)
    before = everything(url)
    (tmp_path / fname).write_text(text)
    assert message in fails("tabrestore", str(tmp_path / fname), url=url)
    assert everything(url) == before


@pytest.mark.parametrize(
    ("argv", "message", "status"),
    [
        (("chtab", "node=n1", "nodelist.colour=x"), "no column 'colour'", 1),
        (("chtab", "node=n1", "nodez.groups=x"), "unknown table 'nodez'", 1),
        (("chtab", "image=ALL,file=etc", "litefile.options=x"), "'etc' is relative", 1),
        (("chtab", "image=ALL,file=/a/../b", "litefile.options=x"), "'..' component", 1),
        (("chtab", "-d", "node=n1", "nodez"), "unknown table 'nodez'", 1),
        (("chtab", "node=n1"), "the following arguments are required", 2),
        (("tabdump", "-w", "colour==x", "litefile"), "no column 'colour'", 1),
        (("tabdump", "nodez"), "unknown table 'nodez'", 1),
        (("tabdump", "--bogus"), "unrecognized arguments", 2),
    ],
)
def test_bad_commands(url: str, argv: tuple[str, ...], message: str, status: int) -> None:
    before = everything(url)
    assert message in fails(*argv, url=url, status=status)
    assert everything(url) == before


def test_uninitialised_and_unreachable_databases(tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path}/missing.db"
    assert "does not exist; run 'litefs db init'" in fails("tabdump", "site", url=missing)
    assert not (tmp_path / "missing.db").exists()  # a read does not create the file
    (tmp_path / "empty.db").write_bytes(b"")
    empty = f"sqlite:///{tmp_path}/empty.db"
    assert "has no litefs tables; run 'litefs db init'" in fails("tabdump", "site", url=empty)
    msg = fails("tabdump", "site", url="postgresql://admin:s3cret@127.0.0.1:1/xcat")
    assert "cannot connect to database postgresql+psycopg://admin:***@127.0.0.1:1/xcat" in msg
    assert "s3cret" not in msg


def test_help_and_usage_exit_statuses(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    for cmd in ("tabdump", "tabrestore", "chtab", "tabedit"):
        res = run(cmd, "--help", url=url)
        assert res.returncode == 0 and "--db URL" in res.stdout and "usage:" in res.stdout
    assert "the following arguments are required" in fails("tabrestore", url=url, status=2)
    assert "required: ACTION" in fails("litefs", "db", url=url, status=2)


def _editor(tmp_path: Path, script: str) -> dict[str, str]:
    path = tmp_path / "editor.sh"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return {"EDITOR": str(path)}


def test_tabedit_writes_back_valid_edits(url: str, tmp_path: Path) -> None:
    ok("chtab", "image=ALL,file=/etc/ssh/", "litefile.options=persistent", url=url)
    env = _editor(tmp_path, 'printf \'"ALL","/var/log/","tmpfs",,\\n\' >> "$1"\n')
    ok("tabedit", "litefile", url=url, env=env)
    assert ok("tabdump", "litefile", url=url) == (
        HEADER + '"ALL","/etc/ssh/","persistent",,\n"ALL","/var/log/","tmpfs",,\n'
    )
    # TABEDITOR wins over EDITOR.
    env2 = env | {"TABEDITOR": "false"}
    assert "exited with status 1" in fails("tabedit", "litefile", url=url, env=env2)


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ('printf \'"ALL","../x",,,\\n\' >> "$1"\n', "'../x' is relative"),
        ('printf \'"ALL","/etc/ssh/",,,\\n\' >> "$1"\n', "lines 2 and 3 have the same key"),
        ('printf \'"ALL","/x\\n\' >> "$1"\n', "unterminated quoted value"),
        ("exit 3\n", "exited with status 3"),
    ],
)
def test_tabedit_error_leaves_table_and_keeps_edits(
    url: str, tmp_path: Path, script: str, message: str
) -> None:
    ok("chtab", "image=ALL,file=/etc/ssh/", "litefile.options=persistent", url=url)
    before = everything(url)
    err = fails("tabedit", "litefile", url=url, env=_editor(tmp_path, script))
    assert message in err and "unchanged" in err
    kept = Path(err.rsplit(" ", 1)[1].rstrip(")"))
    assert kept.is_file() and kept.name == "litefile.csv"
    assert everything(url) == before
