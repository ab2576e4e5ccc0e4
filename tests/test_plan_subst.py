"""Node attribute inheritance, regex-valued cells and variable substitution (reference §1, §3.3)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from litefs.errors import SubstitutionError, TableError
from litefs.nodeattrs import NodeAttrs, evaluate, transform
from litefs.subst import substitute

TABLES = {
    "noderes": {
        "n01": {"nfsserver": None, "xcatmaster": "mn-own"},
        "rackA": {"nfsserver": "10.0.0.1", "xcatmaster": "mnA"},
        "compute": {"nfsserver": "10.9.9.9", "xcatmaster": "mnC", "tftpserver": "tftpC"},
    },
    "nodetype": {
        "compute": {"os": "rhels8", "arch": "x86_64", "profile": "compute"},
        "n02": {"os": "sles15"},
    },
    "nodepos": {"rackA": {"room": "newyork-590Madison", "rack": "|n(\\d+)|r($1*2+1)|"}},
    "hosts": {"compute": {"ip": "|n(\\d+)|10.0.0.($1+0)|"}, "n03": {"ip": "/n/node-/"}},
}
GROUPS = {"n01": ["rackA", "compute"], "n02": ["compute", "rackA"], "n03": []}
ATTRS = NodeAttrs(TABLES, GROUPS)
SITE = {"master": "mn1", "installdir": "/install", "empty": ""}


def test_inheritance_is_per_attribute_in_group_order() -> None:
    assert ATTRS.find("n01", "noderes", "nfsserver") == ("10.0.0.1", "rackA")  # own row blank
    assert ATTRS.find("n01", "noderes", "xcatmaster") == ("mn-own", "n01")  # own row wins
    assert ATTRS.find("n02", "noderes", "nfsserver") == ("10.9.9.9", "compute")  # order matters
    assert ATTRS.get("n01", "noderes", "tftpserver") == "tftpC"  # merged from a later group
    assert ATTRS.get("n02", "nodetype", "os") == "sles15"
    assert ATTRS.get("n02", "nodetype", "arch") == "x86_64"
    assert ATTRS.get("n03", "noderes", "nfsserver") is None


def test_regex_cells() -> None:
    assert ATTRS.get("n01", "hosts", "ip") == "10.0.0.1"
    assert ATTRS.get("n02", "hosts", "ip") == "10.0.0.2"
    assert ATTRS.get("n01", "nodepos", "rack") == "r3"
    assert ATTRS.get("n03", "hosts", "ip") == "node-03"
    assert transform("|node(\\d+)|10.0.0.($1+0)|", "node007") == "10.0.0.7"
    assert transform("|node(\\d+)|10.($1/100).0.($1%100)|", "node1234") == "10.12.34.0.34"
    assert transform("|c(\\d+)n(\\d+)|($1*100+$2)|", "c2n07") == "207"
    assert transform("/x(\\d)/y${1}z/", "ax3b") == "ay3zb"
    assert transform("|node|host|", "node007") == "host007"  # no (): a substitution, as xCAT
    assert transform("|n(\\d+)|ib-$1|", "n07") == "ib-07"
    assert transform("|nomatch(\\d+)|($1)|", "n01") is None  # regex misses: undefined
    assert transform("plain value", "n01") == "plain value"
    assert transform("/just/a/path", "n01") == "/just/a/path"  # not /re/repl/ form


@pytest.mark.parametrize(
    "bad", ["|n(\\d+)|($1+)|", "|n(\\d+)|(__import__)|", "|n(\\d+)|($1/0)|", "|n(\\d+)|($2)|",
            "|n(|x|"]
)
def test_bad_regex_cells(bad: str) -> None:
    with pytest.raises(TableError):
        transform(bad, "n01", "hosts", "ip")


@given(a=st.integers(-1000, 1000), b=st.integers(1, 1000), c=st.integers(-50, 50))
def test_evaluator_matches_python_integer_arithmetic(a: int, b: int, c: int) -> None:
    assert evaluate(f"({a})*{b}+{c}") == a * b + c
    assert evaluate(f"{a} - ({b} - {c})") == a - (b - c)
    assert evaluate(f"-{b}*-{b}") == b * b
    assert evaluate(f"{abs(a)}%{b}") == abs(a) % b


def test_unknown_table_and_column() -> None:
    with pytest.raises(TableError, match="table 'nosuch' does not exist"):
        ATTRS.get("n01", "nosuch", "x")
    with pytest.raises(TableError, match="table 'noderes' has no column 'colour'"):
        ATTRS.get("n01", "noderes", "colour")


def sub(value: str, node: str = "n01", **kw: object) -> str:
    return substitute(value, node, ATTRS, SITE, row="litetree priority=1", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("$noderes.nfsserver:/statelite/$node", "10.0.0.1:/statelite/n01"),
        (" $noderes.nfsserver:/statelite/$node ", "10.0.0.1:/statelite/n01"),
        ("10.0.0.1:/syncdirs/$nodepos.room/$nodetype.os/$nodetype.arch/$nodetype.profile",
         "10.0.0.1:/syncdirs/newyork-590Madison/rhels8/x86_64/compute"),
        ("cnfs:/img/$nodetype.os$nodetype.arch", "cnfs:/img/rhels8.x86_64"),
        ("cnfs:/img-$node/x", "cnfs:/img-n01/x"),
        ("cnfs:/a//b/$node//", "cnfs:/a/b/n01/"),
        ("cnfs:/gpfs/dallas/", "cnfs:/gpfs/dallas/"),
        ("$site.master:$site.installdir/state", "mn1:/install/state"),
        ("/local/$node", "/local/n01"),
        ("$noderes.xcatmaster:/x", "mn-own:/x"),
        ("h:/ip/$hosts.ip", "h:/ip/10.0.0.1"),
    ],
)
def test_substitute(value: str, want: str) -> None:
    assert sub(value) == want


def test_empty_variable_names_row_variable_and_node() -> None:
    with pytest.raises(SubstitutionError) as err:
        sub("cnfs:/x/$nodepos.room", node="n03")
    msg = str(err.value)
    assert "litetree priority=1" in msg and "$nodepos.room" in msg and "n03" in msg
    assert "UNDEFINED" not in msg
    with pytest.raises(SubstitutionError, match=r"\$site.empty is empty"):
        sub("cnfs:/x/$site.empty")
    with pytest.raises(SubstitutionError, match=r"\$site.nokey is empty"):
        sub("$site.nokey:/x")


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("cnfs:/x/$node-x", "node-x is not \\$node"),
        ("cnfs:/x/$node.bak", "table 'node' does not exist"),
        ("cnfs:/x/$bogus.col", "table 'bogus' does not exist"),
        ("cnfs:/x/$osimage.profile", "not keyed by node"),
        ("cnfs:/x/$noderes.colour", "has no column 'colour'"),
        ("cnfs:/x/$nodename", "is not \\$node or \\$table.column"),
    ],
)
def test_bad_variables(value: str, match: str) -> None:
    with pytest.raises(SubstitutionError, match=match):
        sub(value)


def test_cmd_is_refused_unless_allowed(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    value = f"cnfs:/install/$node/#CMD=touch {marker}; echo 6.1#/x"
    with pytest.raises(SubstitutionError, match="litefs_allow_cmd"):
        sub(value)
    assert not marker.exists()  # refused means not run at all
    assert sub(value, allow_cmd=True) == "cnfs:/install/n01/6.1/x"
    assert marker.exists()


@pytest.mark.skipif(shutil.which("sleep") is None, reason="needs sleep(1)")
def test_cmd_timeout_and_failures() -> None:
    start = time.monotonic()
    with pytest.raises(SubstitutionError, match=r"did not finish within 0\.3 s"):
        sub("c:/x/#CMD=sleep 5; echo late#", allow_cmd=True, cmd_timeout=0.3)
    assert time.monotonic() - start < 4
    with pytest.raises(SubstitutionError, match="failed with status 3"):
        sub("c:/x/#CMD=exit 3#", allow_cmd=True)
    with pytest.raises(SubstitutionError, match="printed nothing"):
        sub("c:/x/#CMD=true#", allow_cmd=True)


def test_cmd_cache_runs_each_command_once(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    cache: dict[str, str] = {}
    cmd = f"c:/x/#CMD=echo x >> {counter}; echo v#"
    for node in ("n01", "n02", "n03"):
        assert sub(cmd, node=node, allow_cmd=True, cmd_cache=cache) == "c:/x/v"
    assert counter.read_text().count("x") == 1
    assert os.path.exists(counter)


# --- property: substitution against a direct model of the grammar ------------------------

_word = st.text(alphabet="abcxyz019-_.", min_size=1, max_size=6)
_var = st.sampled_from(["node", "noderes.nfsserver", "nodetype.os", "nodepos.room", "site.master"])
_component = st.one_of(
    _word.map(lambda w: ("lit", w)),
    st.tuples(st.text(alphabet="abc-_", max_size=3), st.lists(_var, min_size=1, max_size=3)).map(
        lambda t: ("var", t)
    ),
)


@given(
    node=st.sampled_from(["n01", "node007", "c1n2"]),
    values=st.fixed_dictionaries(
        {"noderes.nfsserver": _word, "nodetype.os": _word, "nodepos.room": _word,
         "site.master": _word}
    ),
    server=st.one_of(st.none(), _word, _var.map(lambda v: "$" + v)),
    comps=st.lists(_component, min_size=1, max_size=5),
    trailing=st.booleans(),
)
def test_substitution_matches_grammar_model(
    node: str, values: dict[str, str], server: str | None,
    comps: list[tuple[str, object]], trailing: bool,
) -> None:
    tables = {
        "noderes": {node: {"nfsserver": values["noderes.nfsserver"]}},
        "nodetype": {node: {"os": values["nodetype.os"]}},
        "nodepos": {node: {"room": values["nodepos.room"]}},
    }
    attrs = NodeAttrs(tables, {node: []})
    site = {"master": values["site.master"]}

    def val(name: str) -> str:
        return node if name == "node" else values[name]

    text_parts, want_parts = [], []
    for kind, c in comps:
        if kind == "lit":
            text_parts.append(c)
            want_parts.append(c)
        else:
            prefix, names = c  # type: ignore[misc]
            text_parts.append(prefix + "".join("$" + n for n in names))
            want_parts.append(prefix + ".".join(val(n) for n in names))  # joined with '.'
    path = "/" + "/".join(text_parts) + ("/" if trailing else "")
    want_path = "/" + "/".join(want_parts) + ("/" if trailing else "")
    if server is None:
        value, want = path, want_path
    else:
        want_server = val(server[1:]) if server.startswith("$") else server
        value, want = f"{server}:{path}", f"{want_server}:{want_path}"
    assert substitute(value, node, attrs, site, row="litetree priority=1") == want
