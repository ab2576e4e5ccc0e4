"""The table commands (tabdump, tabrestore, chtab, tabedit, litefs db): the installed scripts
as subprocesses against real SQLite (and PostgreSQL) databases, and most error cases in-process
through the same main(argv) so each case does not pay for an interpreter start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from litefs.tools import litefs_cli, tablecmds
from sqlalchemy import text

from litefs import db
from tests.dbutil import dump_all

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


MAINS = {
    "tabdump": tablecmds.tabdump_main,
    "tabrestore": tablecmds.tabrestore_main,
    "chtab": tablecmds.chtab_main,
    "tabedit": tablecmds.tabedit_main,
}


def call_fails(
    capsys: pytest.CaptureFixture[str], *argv: str, url: str, status: int = 1
) -> str:
    """Run a command in-process through its main(argv) (the code the installed script runs,
    without a start-up per case); it must fail with ``status`` and one stderr line."""
    capsys.readouterr()
    try:
        got = MAINS[argv[0]]([*argv[1:], "--db", url])
    except SystemExit as exc:  # argparse usage errors
        got = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert got == status, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one-line errors
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
    assert "ready (schema version 3)" in ok("litefs", "db", "init", url=sqlite_url)
    return sqlite_url


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite file made by the installed 'litefs db init' holding one litefile row; the
    tests using it must leave it unchanged (they prove bad input changes nothing)."""
    sqlite_url = f"sqlite:///{tmp_path_factory.mktemp('filled')}/litefs.db"
    assert "ready (schema version 3)" in ok("litefs", "db", "init", url=sqlite_url)
    ok("chtab", "image=ALL,file=/etc/ssh/", "litefile.options=persistent", url=sqlite_url)
    return sqlite_url


def test_tabdump_tabrestore_round_trip(db_url: str, tmp_path: Path) -> None:
    # The one CLI test run on both backends: PostgreSQL through the same commands.
    url = db_url
    assert litefs_cli.main(["db", "init", "--db", url]) == 0  # the scripts' own code, in-process
    data = resources.files("litefs").joinpath("data", "litefile-redhat.csv").read_text()
    src = tmp_path / "litefile.csv"
    src.write_text(data)
    ok("tabrestore", str(src), url=url)
    first = ok("tabdump", "litefile", url=url)
    assert first.count("\n") == 43 and '"ALL","/var/log/",,,\n' in first
    # In-process (same main(argv) as the scripts) where a start-up would only cost time.
    assert tablecmds.tabdump_main(["-f", str(tmp_path / "litefile.2.csv"), "litefile", "--db", url]) == 0
    assert (tmp_path / "litefile.2.csv").read_text() == first
    assert tablecmds.chtab_main(["image=ALL,file=/tmp/", "litefile.options=persistent", "--db", url]) == 0
    assert everything(url)["litefile"] != first
    # --db wins over $LITEFS_DB (which points nowhere here).
    ok("tabrestore", str(tmp_path / "litefile.2.csv"), "--db", url, url="sqlite:////nonexistent/x")
    assert everything(url)["litefile"] == first


def test_tabdump_lists_filters_and_describes(url: str) -> None:
    names = ok("tabdump", url=url).split()
    assert {"litefile", "litetree", "statelite", "policy", "site"} <= set(names)
    policy = ok("tabdump", "-w", "commands=~^lite", "-w", "priority>4.7", "policy", url=url)
    assert policy.splitlines()[1:] == ['"4.8",,,"litetree",,,,"allow",,']
    desc = ok("tabdump", "-d", "litefile", url=url)
    assert "file: Absolute path" in desc
    assert "litefile:" in ok("tabdump", "-d", url=url)
    # nodeset reads nodehm's console columns: -d must say so, not "not used by litefs".
    hm = ok("tabdump", "-d", "nodehm", url=url)
    assert "serialport: Serial port number" in hm and "console=tty0 console=ttyS" in hm
    assert "serialflow: Flow control" in hm


def test_chtab_append_and_delete(url: str) -> None:
    ok("chtab", "node=n1", "nodelist.groups=compute", url=url)
    ok("chtab", "node=n1", "nodelist.groups+=rack1,compute", "nodepos.room=r1", url=url)
    tables = everything(url)
    assert '"n1","compute,rack1",' in tables["nodelist"]
    assert '"n1",,,,,"r1",' in tables["nodepos"]
    ok("chtab", "-d", "node=n1", "nodelist", "nodepos", url=url)
    tables = everything(url)
    assert tables["nodelist"].count("\n") == tables["nodepos"].count("\n") == 1


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
    filled: str, tmp_path: Path, fname: str, text: str, message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = everything(filled)
    (tmp_path / fname).write_text(text)
    assert message in call_fails(capsys, "tabrestore", str(tmp_path / fname), url=filled)
    assert everything(filled) == before


def test_bad_tabrestore_through_the_installed_command(filled: str, tmp_path: Path) -> None:
    before = everything(filled)
    (tmp_path / "litefile.csv").write_text(HEADER + '"A","/a",,,\n"A","/a",,,\n')
    assert "lines 2 and 3 have the same key" in fails(
        "tabrestore", str(tmp_path / "litefile.csv"), url=filled
    )
    assert everything(filled) == before


@pytest.mark.parametrize(
    ("argv", "message", "status"),
    [
        (("chtab", "node=n1", "nodelist.colour=x"), "no column 'colour'", 1),
        (("chtab", "node=n1", "nodez.groups=x"), "unknown table 'nodez'", 1),
        (("chtab", "image=ALL,file=etc", "litefile.options=x"), "'etc' is relative", 1),
        (("chtab", "image=ALL,file=/a/../b", "litefile.options=x"), "'..' component", 1),
        # An option no plan can use would make every boot of the image fail: refused now.
        (("chtab", "image=ALL,file=/etc/x", "litefile.options=bogus"),
         "litefile '/etc/x': option 'bogus' is not a litefile option; use one of: tmpfs "
         "persistent localdisk rw ro con link tmpfs,rw link,ro link,persistent link,con", 1),
        (("chtab", "-d", "node=n1", "nodez"), "unknown table 'nodez'", 1),
        (("chtab", "node=n1"), "the following arguments are required", 2),
        (("tabdump", "-w", "colour==x", "litefile"), "no column 'colour'", 1),
        (("tabdump", "nodez"), "unknown table 'nodez'", 1),
        (("tabdump", "--bogus"), "unrecognized arguments", 2),
    ],
)
def test_bad_commands(
    filled: str, argv: tuple[str, ...], message: str, status: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = everything(filled)
    assert message in call_fails(capsys, *argv, url=filled, status=status)
    assert everything(filled) == before


def test_tabrestore_refuses_a_bogus_option(filled: str, url: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    before = everything(filled)
    csv = tmp_path / "litefile.csv"
    csv.write_text(HEADER + '"ALL","/etc/motd","ro",,\n"ALL","/etc/x","bogus",,\n'
                   '"ALL","/etc/y"," link, ro ",,\n')
    msg = call_fails(capsys, "tabrestore", str(csv), url=filled)
    assert f"{csv} line 3: litefile '/etc/x': option 'bogus' is not a litefile option" in msg
    assert everything(filled) == before
    csv.write_text(HEADER + '"ALL","/etc/motd","ro",,\n"ALL","/etc/y"," link, ro ",,\n'
                   '"ALL","/var/x/","tempfs",,\n"ALL","/var/y/",,,\n')
    ok("tabrestore", str(csv), url=url)  # blanks inside, old tempfs, blank: all usable


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


def test_help_and_usage_exit_statuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    res = run("tabdump", "--help", url=url)  # one through the installed script
    assert res.returncode == 0 and "--db URL" in res.stdout and "usage:" in res.stdout
    for cmd in ("tabdump", "tabrestore", "chtab", "tabedit"):
        with pytest.raises(SystemExit) as exc:
            MAINS[cmd](["--help"])
        out = capsys.readouterr().out
        assert exc.value.code == 0 and "--db URL" in out and "usage:" in out and "example" in out
    for action in ("init", "upgrade", "status"):
        with pytest.raises(SystemExit) as exc:
            litefs_cli.main(["db", action, "--help"])
        assert exc.value.code == 0 and "--db URL" in capsys.readouterr().out
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
    filled: str, tmp_path: Path, script: str, message: str,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = everything(filled)
    monkeypatch.delenv("TABEDITOR", raising=False)
    for name, value in _editor(tmp_path, script).items():  # a real editor process
        monkeypatch.setenv(name, value)
    err = call_fails(capsys, "tabedit", "litefile", url=filled)
    assert message in err and "unchanged" in err
    kept = Path(err.rsplit(" ", 1)[1].rstrip(")"))
    assert kept.is_file() and kept.name == "litefile.csv"
    assert everything(filled) == before


def test_db_status_and_upgrade(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert litefs_cli.main(["db", "status", "--db", url]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"database: {url}\nschema:   version 3\n")
    assert "  policy       3 rows\n" in out and "  litefile     0 rows\n" in out
    assert litefs_cli.main(["db", "upgrade", "--db", url]) == 0
    assert "is up to date (schema version 3)" in capsys.readouterr().out
    # Back to what litefs 1 wrote (no nodehm, version 1): reads refuse, upgrade adds the table.
    engine = db.open_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE nodehm"))
        conn.execute(text("UPDATE litefs_meta SET value = '1' WHERE key = 'schema_version'"))
    engine.dispose()
    assert "has schema version 1, this litefs needs 3; run 'litefs db upgrade'" in fails(
        "tabdump", "litefile", url=url)
    assert litefs_cli.main(["db", "upgrade", "--db", url]) == 0
    assert f"database {url} upgraded from schema version 1 to 3" in capsys.readouterr().out
    tables = everything(url)
    assert tables["policy"].count("\n") == 4  # header and the three default rows, kept
    assert tables["nodehm"].startswith("#node,power,mgt,cons,")
    # Reads and upgrades never create a database; failures are one line on stderr, exit 1.
    missing = f"sqlite:///{tmp_path}/missing.db"
    for action in ("status", "upgrade"):
        assert litefs_cli.main(["db", action, "--db", missing]) == 1
        err = capsys.readouterr().err
        assert err == f"litefs: database {missing} does not exist; run 'litefs db init' (or pass --db URL)\n"
    assert not (tmp_path / "missing.db").exists()
    (tmp_path / "empty.db").write_bytes(b"")
    empty = f"sqlite:///{tmp_path}/empty.db"
    assert litefs_cli.main(["db", "status", "--db", empty]) == 1
    out, err = capsys.readouterr()
    assert out.endswith("schema:   none\n")
    assert err == f"litefs: database {empty} has no litefs tables; run 'litefs db init'\n"
