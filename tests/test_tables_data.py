"""dump / restore / chtab on real SQLite and PostgreSQL: exact CSV, filters, all-or-nothing."""

from __future__ import annotations

import threading
from importlib import resources

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from litefs import db, tabledata
from litefs.errors import TableError
from litefs.options import VALID_OPTIONS
from tests.dbutil import dump_all, load_tables
from tests.planutil import COOKBOOK_REDHAT_FILES

HEADER = "#image,file,options,comments,disable\n"


def _dump(e: Engine, name: str, *filters: str) -> str:
    with e.connect() as conn:
        return tabledata.dump(conn, name, filters)


def _cookbook(name: str) -> str:
    return resources.files("litefs").joinpath("data", name).read_text()


def test_cookbook_list_restores_and_dumps_in_canonical_form(engine: Engine) -> None:
    n = tabledata.restore(engine, "litefile", _cookbook("litefile-redhat.csv"), "redhat.csv")
    assert n == 42
    out = _dump(engine, "litefile")
    lines = out.splitlines()
    assert lines[0] == HEADER.strip()
    assert '"ALL","/etc/adjtime",,,' in lines
    assert '"ALL","/var/log/",,,' in lines
    assert len(lines) == 43
    # The canonical dump restores to itself: the tabdump -> tabrestore round trip.
    tabledata.restore(engine, "litefile", out, "litefile.csv")
    assert _dump(engine, "litefile") == out


def test_dump_keeps_stored_order_as_xcat(engine: Engine) -> None:
    # xCAT's tabdump does not sort: the cookbook list dumps back in its own order
    # (mod_ssl before mod_proxy), and a row chtab adds comes last.
    tabledata.restore(engine, "litefile", _cookbook("litefile-redhat.csv"), "redhat.csv")
    paths = [line.split(",")[1].strip('"') for line in _dump(engine, "litefile").splitlines()[1:]]
    assert paths == [p.strip() for p in COOKBOOK_REDHAT_FILES]
    tabledata.chtab(engine, {"image": "ALL", "file": "/aaa/first-by-name"},
                    ["litefile.options=tmpfs"])
    assert _dump(engine, "litefile").splitlines()[-1] == '"ALL","/aaa/first-by-name","tmpfs",,'


def test_round_trip_awkward_values(engine: Engine) -> None:
    text = (
        "#key,value,comments,disable\n"
        '"a","say ""hi"", then, leave",,\n'
        '"b","two\nlines","",\n'
        '"c",,"  spaced  ","1"\n'
        '"","blank key",,\n'
    )
    tabledata.restore(engine, "site", text, "site.csv")
    out = _dump(engine, "site")
    lines = text.splitlines(True)
    # Stored order (xCAT's tabdump does not sort), a blank key printed empty (NULL).
    assert out == "".join([*lines[:-1], ',"blank key",,\n'])
    tabledata.restore(engine, "site", out, "site.csv")
    assert _dump(engine, "site") == out
    assert '"b","two\nlines","",\n' in out
    assert '"c",,"  spaced  ","1"\n' in out


def test_blank_key_dumps_as_xcat_null_and_restores_blank(engine: Engine) -> None:
    # xCAT keeps a blank image as NULL: tabdump prints an empty field, not "".
    text = HEADER + ',"/etc/motd","ro",,\n"","/etc/issue",,,\n"ALL","/tmp/",,,\n'
    tabledata.restore(engine, "litefile", text, "litefile.csv")
    out = _dump(engine, "litefile")
    assert out == HEADER + ',"/etc/motd","ro",,\n,"/etc/issue",,,\n"ALL","/tmp/",,,\n'
    assert _dump(engine, "litefile", "image==") == (
        HEADER + ',"/etc/motd","ro",,\n,"/etc/issue",,,\n'
    )
    tabledata.restore(engine, "litefile", out, "litefile.csv")
    assert _dump(engine, "litefile") == out
    with engine.connect() as conn:
        images = sorted(r[0] for r in tabledata.rows(conn, "litefile"))
    assert images == ["", "", "ALL"]  # stored blank, so lookups by image '' find them


def test_rows_keep_stored_order(engine: Engine) -> None:
    load_tables(
        engine,
        {"litetree": "#priority,image,directory\n10,,b:/x\n2,,a:/y\n1.5,,c:/z\n"},
    )
    prios = [line.split(",")[0] for line in _dump(engine, "litetree").splitlines()[1:]]
    assert prios == ['"10"', '"2"', '"1.5"']  # as loaded; xCAT's tabdump does not sort


@pytest.mark.parametrize(
    ("filters", "files"),
    [
        ((), ["/var/log/", "/etc/ssh/", "/tmp/", "/etc/fstab"]),  # stored order
        (("options==persistent",), ["/etc/ssh/"]),
        (("options!=persistent",), ["/var/log/", "/tmp/", "/etc/fstab"]),
        (("file=~^/etc",), ["/etc/ssh/", "/etc/fstab"]),
        (("file!~/$",), ["/etc/fstab"]),
        (("image==ALL", "file=~^/(tmp|var)"), ["/var/log/", "/tmp/"]),
        (("options==",), ["/tmp/", "/etc/fstab"]),
        (("file=~/etc%",), ["/etc/ssh/", "/etc/fstab"]),  # xCAT's LIKE form
        (("file!~%/",), ["/etc/fstab"]),
        (("file=~/e_c/fstab%",), ["/etc/fstab"]),
        (("file>/s",), ["/var/log/", "/tmp/"]),
        (("file<=/etc/ssh/",), ["/etc/ssh/", "/etc/fstab"]),
    ],
)
def test_dump_filters(engine: Engine, filters: tuple[str, ...], files: list[str]) -> None:
    load_tables(
        engine,
        {
            "litefile": HEADER
            + '"ALL","/var/log/","tmpfs",,\n"ALL","/etc/ssh/","persistent",,\n'
            + '"ALL","/tmp/",,,\n"ALL","/etc/fstab",,,\n'
        },
    )
    out = _dump(engine, "litefile", *filters)
    assert [line.split(",")[1].strip('"') for line in out.splitlines()[1:]] == files


def test_numeric_filter(engine: Engine) -> None:
    out = _dump(engine, "policy", "priority<4.75")
    assert [line.split(",")[0] for line in out.splitlines()[1:]] == ['"1"', '"4.7"']


@pytest.mark.parametrize(
    ("filt", "message"),
    [
        ("colour==red", "table litefile has no column 'colour' (columns: image, file,"),
        ("file", "bad filter 'file'"),
        ("file=~(", "bad regular expression in filter 'file=~('"),
    ],
)
def test_bad_filter(engine: Engine, filt: str, message: str) -> None:
    with pytest.raises(TableError) as err:
        _dump(engine, "litefile", filt)
    assert message in str(err.value)


BAD_RESTORES = [
    ('"ALL","/a",,,\n', "missing header line"),
    (HEADER + '"ALL","/a",,,,"oops"\n', "t.csv line 2: 6 fields"),
    (HEADER + '"ALL","/a\n', "t.csv line 2: unterminated quoted value"),
    ("#image,file,colour\n", "unknown column 'colour'"),
    (HEADER + '"ALL","etc/fstab",,,\n', "t.csv line 2: litefile path 'etc/fstab' is relative"),
    (HEADER + '"ALL","/etc/../x",,,\n', "t.csv line 2: litefile path '/etc/../x' has a '.'"),
    (HEADER + '"ALL","/etc/./x/",,,\n', "litefile path '/etc/./x/' has a '.' or '..'"),
    (HEADER + '"ALL",,,,\n', "litefile path '' is relative"),
    (
        HEADER + '"ALL","/a",,,\n"img","/a",,,\n"ALL", "/a" ,"tmpfs",,\n',
        "t.csv: lines 2 and 4 have the same key (image='ALL',file='/a')",
    ),
    (
        HEADER + '"ALL","/var/log",,,\n"ALL","/var/log/",,,\n',
        "t.csv: litefile rows '/var/log' and '/var/log/' of image 'ALL' name the same path",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_RESTORES)
@pytest.mark.parametrize("append", [False, True])
def test_bad_restore_changes_nothing(
    engine: Engine,
    text: str,
    message: str,
    append: bool,
) -> None:
    load_tables(engine, {"litefile": _cookbook("litefile-sles.csv")})
    before = dump_all(engine)
    with pytest.raises(TableError) as err:
        tabledata.restore(engine, "litefile", text, "t.csv", append=append)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert dump_all(engine) == before


def test_litetree_priority_must_be_a_number(engine: Engine) -> None:
    load_tables(engine, {"litetree": "#priority,directory\n1,a:/x\n"})
    before = dump_all(engine)
    with pytest.raises(TableError) as err:
        tabledata.restore(engine, "litetree", "#priority,directory\n1,a:/x\nlast,b:/y\n", "t.csv")
    assert str(err.value) == (
        "t.csv line 3: litetree priority 'last' is not a number (e.g. 1, 2.5 or 4.7); "
        "rows are taken in numeric priority order"
    )
    assert dump_all(engine) == before


def test_required_column_and_database_refusal(engine: Engine) -> None:
    before = dump_all(engine)
    with pytest.raises(TableError, match=r"t.csv line 3: column 'directory' of table litetree"):
        tabledata.restore(engine, "litetree", "#priority,directory\n1,a:/x\n2,\n", "t.csv")
    if engine.dialect.name == "postgresql":
        # PostgreSQL refuses NUL in text: the error surfaces as one line, nothing changes.
        with pytest.raises(TableError, match="the database refused it"):
            tabledata.restore(engine, "site", '#key,value\n"a","x"\n"b","\x00"\n', "t.csv")
    assert dump_all(engine) == before


def test_unknown_table(engine: Engine) -> None:
    with pytest.raises(TableError, match=r"unknown table 'litefiles' \(known tables: .*litefile"):
        tabledata.restore(engine, "litefiles", HEADER, "litefiles.csv")


def test_append_adds_and_replaces_by_key(engine: Engine) -> None:
    load_tables(engine, {"litefile": HEADER + '"ALL","/a",,,\n"ALL","/b",,,\n'})
    tabledata.restore(
        engine, "litefile", HEADER + '"ALL","/b","persistent",,\n"x","/c",,,\n', "t", append=True
    )
    assert _dump(engine, "litefile") == (
        HEADER + '"ALL","/a",,,\n"ALL","/b","persistent",,\n"x","/c",,,\n'
    )


def test_restore_refuses_when_table_changed_during_edit(engine: Engine) -> None:
    start = _dump(engine, "site")
    tabledata.chtab(engine, {"key": "master"}, ["site.value=mn1"])
    changed = dump_all(engine)
    with pytest.raises(TableError, match="changed by someone else"):
        tabledata.restore(engine, "site", start + '"domain","x",,\n', "site.csv", expected=start)
    assert dump_all(engine) == changed


def test_chtab_insert_update_append_delete(engine: Engine) -> None:
    tabledata.chtab(engine, {"node": "compute"}, ["statelite.statemnt=mn:/nodedata"])
    tabledata.chtab(engine, {"node": "n1"}, ["nodelist.groups=compute,all"])
    tabledata.chtab(engine, {"node": "n1"}, ["nodelist.groups+=rack1,compute", "nodetype.os=x"])
    tabledata.chtab(engine, {"priority": "4.7"}, ["policy.rule=deny"])
    tabledata.chtab(engine, {"image": "ALL", "file": "/etc/ssh/"}, ["litefile.options=rw"])
    assert '"compute",,"mn:/nodedata",,,\n' in _dump(engine, "statelite")
    assert '"n1","compute,all,rack1",' in _dump(engine, "nodelist")
    assert '"n1","x",' in _dump(engine, "nodetype")
    assert '"4.7",,,"litefile",,,,"deny",,\n' in _dump(engine, "policy")
    assert '"ALL","/etc/ssh/","rw",,\n' in _dump(engine, "litefile")
    # Keys may select on any column; all matching rows change.
    tabledata.chtab(engine, {"node": "n2"}, ["nodelist.groups=compute"])
    assert tabledata.chtab(engine, {"groups": "compute"}, ["nodelist.status=booted"]) == 1
    assert '"n2","compute","booted",' in _dump(engine, "nodelist")
    tabledata.delete(engine, {"node": "n2"}, ["nodelist"])
    assert tabledata.delete(engine, {"node": "n1"}, ["nodelist", "nodetype"]) == 2
    assert _dump(engine, "nodelist").count("\n") == 1  # only the header is left
    assert tabledata.delete(engine, {"node": "nobody"}, ["nodelist"]) == 0
    with pytest.raises(TableError, match=r"at least one TABLE\.COLUMN=VALUE"):
        tabledata.chtab(engine, {"node": "n1"}, [])
    with pytest.raises(TableError, match="refusing to empty a table"):
        tabledata.delete(engine, {}, ["nodelist"])


@pytest.mark.parametrize(
    ("keys", "assignments", "message"),
    [
        ({"image": "ALL", "file": "etc/x"}, ["litefile.options=tmpfs"], "'etc/x' is relative"),
        ({"image": "ALL", "file": "/a/../b"}, ["litefile.options=tmpfs"], "has a '.' or '..'"),
        ({"image": "ALL", "file": "/etc/ssh/"}, ["litefile.file=../x"], "'../x' is relative"),
        ({"node": "n1"}, ["nodelist.colour=red"], "table nodelist has no column 'colour'"),
        ({"node": "n1"}, ["nodes.groups=x"], "unknown table 'nodes'"),
        ({"nod": "n1"}, ["nodelist.groups=x"], "table nodelist has no column 'nod'"),
        ({"node": "n1"}, ["nodelist.groups"], "bad assignment 'nodelist.groups'"),
        ({"priority": "9"}, ["litetree.image=x"], "column 'directory' of table litetree"),
        ({}, ["nodelist.groups=x"], "chtab needs KEY=VALUE"),
        ({"priority": "first"}, ["litetree.directory=/x"],
         "priority 'first' is not a number (e.g. 1, 2.5 or 4.7)"),
        ({"priority": "nan"}, ["policy.rule=allow"], "policy priority 'nan' is not a number"),
        (
            {"image": "ALL", "file": "/etc/ssh"},
            ["litefile.options=ro"],
            "litefile rows '/etc/ssh/' and '/etc/ssh' of image 'ALL' name the same path",
        ),
        (
            {"image": "ALL", "file": "/etc/ssh/"},
            ["litefile.file=/tmp/"],
            "table litefile: a row with the same key already exists (",
        ),
        (
            {"image": "img1"},
            ["litefile.options=x"],
            "table litefile: no row matches image='img1'; to add one, give every key column "
            "(image, file)",
        ),
    ],
)
def test_bad_chtab_changes_nothing(
    engine: Engine,
    keys: dict[str, str],
    assignments: list[str],
    message: str,
) -> None:
    load_tables(engine, {"litefile": HEADER + '"ALL","/etc/ssh/",,,\n"ALL","/tmp/",,,\n'})
    tabledata.chtab(engine, {"node": "n0"}, ["nodelist.groups=all"])
    before = dump_all(engine)
    # A good assignment in the same call (another table where the keys allow) must not land.
    good = {"node": ["nodepos.room=x"], "priority": ["policy.comments=x"]}
    extra = next((good[k] for k in keys if k in good), [])
    with pytest.raises(TableError) as err:
        tabledata.chtab(engine, keys, [*extra, *assignments])
    assert message in str(err.value)
    assert dump_all(engine) == before


def test_append_items() -> None:
    assert tabledata.append_items(None, "a,b") == "a,b"
    assert tabledata.append_items("a,b", "b,c,,a") == "a,b,c"
    assert tabledata.bad_litefile_path("/") is None
    assert tabledata.bad_litefile_path("/etc/lvm/.cache") is None
    assert tabledata.bad_litefile_path("/a//b") is not None


def test_concurrent_appends_lose_nothing(engine: Engine) -> None:
    # Separate engines (separate connections, as separate chtab processes would have) append
    # to the same row at once; the write transaction must serialise read-modify-write.
    tabledata.chtab(engine, {"node": "n1"}, ["nodelist.groups=all"])
    url = engine.url.render_as_string(hide_password=False)
    items = [f"g{i}" for i in range(8)]
    errors: list[BaseException] = []

    def append(item: str) -> None:
        e = db.open_engine(url)
        try:
            tabledata.chtab(e, {"node": "n1"}, [f"nodelist.groups+={item}"])
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            e.dispose()

    threads = [threading.Thread(target=append, args=(i,)) for i in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with engine.connect() as conn:
        groups = tabledata.rows(conn, "nodelist")[0][1]
    assert groups is not None
    assert sorted(groups.split(",")) == sorted(["all", *items])


_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
)
_path = st.lists(st.text(alphabet="abc.-_x", min_size=1, max_size=4), min_size=1, max_size=3).map(
    lambda parts: "/" + "/".join(p for p in parts)
).filter(lambda p: tabledata.bad_litefile_path(p) is None)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.dictionaries(
        st.tuples(st.sampled_from(["", "ALL", "img", '"q"']), _path),
        # options are checked when written (only usable ones are stored); comments are free text
        st.tuples(st.one_of(st.none(), st.sampled_from([*VALID_OPTIONS, "", " link, ro "])),
                  st.one_of(st.none(), _text),
                  st.sampled_from([None, "", "yes", "0"])),
        max_size=6,
    )
)
def test_tabdump_tabrestore_round_trip_property(
    engine: Engine,
    rows: dict[tuple[str, str], tuple[str | None, str | None, str | None]],
) -> None:
    # Any values (quotes, commas, newlines, blank keys, NULL vs ""): restore what tabdump wrote
    # and the table holds exactly the same rows, and dumps to the same bytes.
    want = sorted((i, f, *rest) for (i, f), rest in rows.items())
    from litefs.csvtab import format_table

    text = format_table(("image", "file", "options", "comments", "disable"), want)
    tabledata.restore(engine, "litefile", text, "litefile.csv")
    first = _dump(engine, "litefile")
    tabledata.restore(engine, "litefile", first, "litefile.csv")
    assert _dump(engine, "litefile") == first
    with engine.connect() as conn:
        got = sorted(tabledata.rows(conn, "litefile"))
    assert got == want
