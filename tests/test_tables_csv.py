"""xCAT table CSV: exact output, lenient-where-needed parsing, precise errors, round trip."""

from __future__ import annotations

from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from litefs.csvtab import Record, _Reader, format_table, parse, quote
from litefs.errors import TableError

LITEFILE = ("image", "file", "options", "comments", "disable")
KEYS = ("image", "file")


def _parse(text: str) -> list[Record]:
    return parse(text, LITEFILE, keys=KEYS, source="litefile.csv")


def test_format_matches_tabdump() -> None:
    text = format_table(LITEFILE, [("ALL", "/etc/adjtime", "tmpfs", None, None)])
    assert text == '#image,file,options,comments,disable\n"ALL","/etc/adjtime","tmpfs",,\n'
    assert quote('say "hi"') == '"say ""hi"""'
    assert quote("") == '""'
    assert quote(None) == ""


@pytest.mark.parametrize(
    ("name", "count", "first", "last"),
    [
        ("litefile-redhat.csv", 42, "/etc/adjtime", "/xcatpost/"),
        ("litefile-sles.csv", 24, "/etc/inittab", "/xcatpost/"),
    ],
)
def test_cookbook_lists_load_as_printed(name: str, count: int, first: str, last: str) -> None:
    text = resources.files("litefs").joinpath("data", name).read_text()
    # The files keep the cookbook's odd spacing: prove it is really there.
    assert '"ALL", "/etc/' in text
    if name == "litefile-redhat.csv":
        assert '"ALL", "/etc/adjtime",,,,\n' in text
    assert '"ALL", "/var/log/", , , ,\n' in text
    records = _parse(text)
    assert len(records) == count
    assert records[0].values == ("ALL", first, None, None, None)
    assert records[-1].values == ("ALL", last, None, None, None)
    assert all(r.values[0] == "ALL" and r.values[2:] == (None, None, None) for r in records)
    assert len({r.values[1] for r in records}) == count


def test_null_empty_string_and_blank_key() -> None:
    recs = _parse('#image,file,options,comments,disable\n,"/a","",,\n')
    assert recs == [Record(2, ("", "/a", "", None, None))]


def test_unquoted_values_header_subset_and_order() -> None:
    text = "#priority,directory,image\n1, 10.0.0.1:/syncdirs/$nodepos.room ,\n"
    cols = ("priority", "image", "directory", "mntopts", "comments", "disable")
    recs = parse(text, cols, keys=("priority",), source="litetree.csv")
    assert recs[0].values == ("1", None, "10.0.0.1:/syncdirs/$nodepos.room", None, None, None)


def test_quoted_value_spans_lines_and_line_numbers_follow() -> None:
    text = '#image,file,options,comments,disable\n"ALL","/a",,"two\nlines",\n\n"ALL","/b",,,\n'
    recs = _parse(text)
    assert recs == [
        Record(2, ("ALL", "/a", None, "two\nlines", None)),
        Record(5, ("ALL", "/b", None, None, None)),
    ]


def test_crlf_line_ends() -> None:
    recs = _parse('#image,file,options,comments,disable\r\n"ALL","/a","tmpfs",,\r\n')
    assert recs == [Record(2, ("ALL", "/a", "tmpfs", None, None))]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "litefile.csv line 1: missing header line"),
        ('"ALL","/a",,,\n', "litefile.csv line 1: missing header line"),
        ("#image,file,colour\n", "litefile.csv line 1: unknown column 'colour'"),
        ("#image,file,file\n", "column 'file' named twice"),
        ('#image,file,options,comments,disable\n"ALL","/a",,,,"x"\n', "line 2: 6 fields"),
        ('#image,file,options,comments,disable\n"ALL","/a\n', "line 2: unterminated quoted"),
        ('#image,file,options,comments,disable\n"ALL","/a"x,,,\n', "line 2: unexpected 'x'"),
        ('#image,file,options,comments,disable\n\nALL,/a"b,,,\n', "line 3: stray '\"'"),
        ('#image,file,options,comments,disable\n#again\n', "line 2: unexpected '#'"),
    ],
)
def test_errors_name_file_line_and_problem(text: str, message: str) -> None:
    with pytest.raises(TableError) as err:
        _parse(text)
    assert message in str(err.value)
    assert str(err.value).startswith("litefile.csv line ")
    assert "\n" not in str(err.value)


_values = st.one_of(st.none(), st.text(max_size=20))
_keys = st.text(max_size=20)
_rows = st.lists(st.tuples(_keys, _keys, _values, _values, _values), max_size=8)


@given(_rows)
def test_round_trip(rows: list[tuple[str, str, str | None, str | None, str | None]]) -> None:
    text = format_table(LITEFILE, rows)
    assert [r.values for r in _parse(text)] == rows


@given(st.lists(st.text(alphabet=' ,"\n\t#x', max_size=6), min_size=1, max_size=4))
def test_round_trip_awkward_characters(values: list[str]) -> None:
    cols = tuple(f"c{i}" for i in range(len(values)))
    text = format_table(cols, [values])
    assert [r.values for r in parse(text, cols)] == [tuple(values)]


@given(st.text(alphabet='a ",\n\t\r', max_size=30))
def test_fast_reader_agrees_with_exact_reader(text: str) -> None:
    # The regex fast path must accept only what the character reader accepts, identically.
    fast = _Reader(text, "x")
    fields = fast.fast_record()
    if fields is None:
        return
    exact = _Reader(text, "x")
    assert exact.exact_record() == fields
    assert (exact.pos, exact.line) == (fast.pos, fast.line)
