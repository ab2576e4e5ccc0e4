"""Noderange expansion (reference §10.1) on small universes, with hypothesis where inputs vary."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from litefs.errors import NoderangeError
from litefs.noderange import Universe, bracket_names, expand, range_names, read_noderange_file

ATTRS = {
    ("n001", "nodetype", "os"): "rhels8",
    ("n002", "nodetype", "os"): "rhels9",
    ("n003", "nodetype", "os"): "rhels8",
    ("n001", "nodepos", "rack"): "r1",
    ("n002", "nodepos", "rack"): "r1",
}


def attr(node: str, table: str, column: str) -> str | None:
    if table not in ("nodetype", "nodepos"):
        raise NoderangeError(f"table {table!r} does not exist")
    return ATTRS.get((node, table, column))


def make_universe(**kw: object) -> Universe:
    nodes = [f"n{i:03d}" for i in range(1, 21)] + [f"node{i}" for i in range(1, 16)]
    nodes += ["f1n1", "f1n2", "f1n3", "f2n1", "f2n2", "f2n3", "rack1-n1", "rack1-n2", "rack1-n3"]
    groups = {n: ["all"] for n in nodes}
    for n in nodes[:10]:
        groups[n] = ["compute", "all"]
    for n in nodes[5:15]:
        groups[n] = [*groups[n], "gpu"]
    defaults: dict[str, object] = {
        "nodes": nodes,
        "groups": groups,
        "dynamic": {"el8": "nodetype.os==rhels8", "rackone": "rack==r1::os=~9$"},
        "declared_groups": frozenset({"emptygroup"}),
        "attr": attr,
    }
    defaults.update(kw)
    return Universe(**defaults)  # type: ignore[arg-type]


U = make_universe()


def n(*nums: int) -> list[str]:
    return [f"n{i:03d}" for i in nums]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("n001", n(1)),
        ("n001,n003", n(1, 3)),
        ("n003,n001,n003", n(1, 3)),  # universe order, no duplicates
        ("n001-n005", n(1, 2, 3, 4, 5)),
        ("n001:n003", n(1, 2, 3)),
        ("node1-node10", [f"node{i}" for i in range(1, 11)]),
        ("node8-node11", ["node8", "node9", "node10", "node11"]),
        ("n[001-003]", n(1, 2, 3)),
        ("n[001-002,005,010-011]", n(1, 2, 5, 10, 11)),
        ("f[1-2]n[1-3]", ["f1n1", "f1n2", "f1n3", "f2n1", "f2n2", "f2n3"]),
        ("node10+3", ["node10", "node11", "node12", "node13"]),
        ("n009+2", n(9, 10, 11)),
        ("compute", n(*range(1, 11))),
        ("compute@gpu", n(6, 7, 8, 9, 10)),
        ("(compute,n020)@all", n(*range(1, 11), 20)),
        ("compute,-gpu", n(1, 2, 3, 4, 5)),
        ("-gpu,compute", n(1, 2, 3, 4, 5)),  # exclusion wins regardless of position
        ("n001-n010,-n003-n005,n004", n(1, 2, 6, 7, 8, 9, 10)),
        ("-(n001,n002),n001-n003", n(3)),
        ("/n00[1-3]", n(1, 2, 3)),
        ("/n00", []),  # anchored: matches whole names only
        ("nodetype.os==rhels8", n(1, 3)),
        ("nodetype.os!=rhels8", [x for x in U.nodes if x not in ("n001", "n003")]),
        ("nodetype.os=~^rhels9", n(2)),
        ("nodetype.os!~8", [x for x in U.nodes if x not in ("n001", "n003")]),
        ("el8", n(1, 3)),
        ("rackone", n(2)),
        ("emptygroup", []),
        ("1-3", ["node1", "node2", "node3"]),
        ("7", ["node7"]),
        ("rack1-n1-rack1-n3", ["rack1-n1", "rack1-n2", "rack1-n3"]),
        ("rack1-n2", ["rack1-n2"]),  # exact name beats range parsing
        ("compute@gpu,-n007", n(6, 8, 9, 10)),
    ],
)
def test_expand(text: str, want: list[str]) -> None:
    assert expand(text, U) == want


def test_unknown_names_are_all_reported() -> None:
    with pytest.raises(NoderangeError) as err:
        expand("n001,bogus,n019-n022,-ghost", U)
    msg = str(err.value)
    assert msg == (
        "invalid nodes and/or groups in noderange: bogus,n021,n022,ghost "
        "(no such node or group in the nodelist/nodegroup tables)"
    )


@pytest.mark.parametrize("bad", ["", "  ", "n[1-3", "(n001", "n001)", "-", "/(", "a@", "n[]"])
def test_syntax_errors(bad: str) -> None:
    with pytest.raises(NoderangeError):
        expand(bad, U)


def test_file_atoms(tmp_path: Path) -> None:
    f = tmp_path / "nodes"
    f.write_text("# my nodes\nn001-n004   # first four\n\n-n002\nnode1,node2\n")
    # Only the local CLI reads ^files (it passes read_noderange_file); by default they are refused.
    with pytest.raises(NoderangeError, match="only accepted by the local command line"):
        expand(f"^{f}", U)
    cli = dataclasses.replace(U, read_file=read_noderange_file)
    assert expand(f"^{f}", cli) == [*n(1, 3, 4), "node1", "node2"]
    assert expand(f"^{f},-node1", cli) == [*n(1, 3, 4), "node2"]
    with pytest.raises(NoderangeError, match="cannot read noderange file"):
        expand(f"^{tmp_path}/missing", cli)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(NoderangeError, match="not a regular file"):
        expand(f"^{fifo}", cli)  # would block forever if opened for a plain read
    with pytest.raises(NoderangeError, match="not a regular file"):
        expand("^/dev/zero", cli)


def test_digit_prefix_is_configurable() -> None:
    u = make_universe(digit_prefix="n0", digit_suffix="")
    assert expand("01-03", u) == n(1, 2, 3)


def test_bad_dynamic_group_attribute() -> None:
    u = make_universe(dynamic={"odd": "colour==blue"})
    with pytest.raises(NoderangeError, match="unknown attribute 'colour'"):
        expand("odd", u)


def test_huge_range_is_refused() -> None:
    with pytest.raises(NoderangeError, match="too large"):
        range_names("n1", "n99999999")
    with pytest.raises(NoderangeError, match="too large"):
        bracket_names("n[1-9999]x[1-9999]")


def test_range_and_bracket_helpers() -> None:
    assert range_names("a1b01", "a1b03") == ["a1b01", "a1b02", "a1b03"]
    assert range_names("a1b1", "a2b2") is None  # two numeric runs differ
    assert range_names("x1", "y2") is None
    assert range_names("n5", "n3") is None
    assert range_names("n5", "n5") == ["n5"]
    assert bracket_names("plain") is None
    assert bracket_names("r[1-2]u[08-09]") == ["r1u08", "r1u09", "r2u08", "r2u09"]
    assert bracket_names("n[1[0-2],3]") == ["n10", "n11", "n12", "n3"]  # nested
    assert bracket_names("n[01:02]x[a,b]") == ["n01xa", "n01xb", "n02xa", "n02xb"]


# --- properties -------------------------------------------------------------------------


@given(
    prefix=st.sampled_from(["n", "node", "c1n", "rack-"]),
    a=st.integers(0, 500),
    span=st.integers(0, 60),
    width=st.integers(1, 4),
    suffix=st.sampled_from(["", "x", "-ib"]),
)
def test_range_length_and_padding(prefix: str, a: int, span: int, width: int, suffix: str) -> None:
    left = f"{prefix}{str(a).zfill(width)}{suffix}"
    right = f"{prefix}{a + span}{suffix}"
    names = range_names(left, right)
    assert names is not None
    assert len(names) == span + 1
    assert names[0] == left
    pad = len(str(a).zfill(width))
    for i, name in enumerate(names):
        assert name == f"{prefix}{str(a + i).zfill(pad)}{suffix}"


atoms = st.sampled_from(
    ["n001", "n002-n006", "compute", "gpu", "node1-node4", "/n01.", "el8", "f[1-2]n2", "node3+2"]
)


@settings(max_examples=200)
@given(
    inc=st.lists(atoms, min_size=1, max_size=5),
    exc=st.lists(atoms, max_size=4),
    data=st.data(),
)
def test_exclusion_is_order_independent(inc: list[str], exc: list[str], data: st.DataObject) -> None:
    parts = inc + ["-" + e for e in exc]
    shuffled = data.draw(st.permutations(parts))
    if shuffled[0].startswith("-") and all(p.startswith("-") for p in shuffled):
        return
    got = expand(",".join(shuffled), U)
    include: set[str] = set()
    for a in inc:
        include |= set(expand(a, U))
    exclude: set[str] = set()
    for e in exc:
        exclude |= set(expand(e, U))
    assert got == [x for x in U.nodes if x in include - exclude]


@settings(max_examples=100)
@given(a=atoms, b=atoms)
def test_intersection_is_set_intersection(a: str, b: str) -> None:
    want = set(expand(a, U)) & set(expand(b, U))
    got = expand(f"({a})@({b})", U)
    assert set(got) == want
    assert got == [x for x in U.nodes if x in want]
