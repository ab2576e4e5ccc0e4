"""Node identity (xCAT's reverse-DNS stripping, hosts table) and the policy table, pure."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from litefs.mountd.identity import (
    Identity,
    Peer,
    hosts_index,
    identify_by_name,
    identify_known,
    normalise_ip,
    strip_hostname,
)
from sqlalchemy import select

from litefs import db
from litefs.errors import NoderangeError
from litefs.policytable import PolicyRule, decide, sort_rules
from litefs.schema import TABLES


@pytest.mark.parametrize(
    ("name", "domains", "short"),
    [
        ("n01.cluster.example.com", (), "n01"),
        ("n01.cluster.example.com.", ("cluster.example.com",), "n01"),
        ("n01-eth0.cluster", (), "n01"),
        ("n01-ib1.cluster", (), "n01"),
        ("n01-myri0", (), "n01"),
        ("n01-eth", (), "n01-eth"),  # no number: not an interface suffix
        ("rack1-n01", (), "rack1-n01"),
        ("n01.a.b", ("A.B",), "n01"),
        ("n01.sub.a.b", ("a.b",), "n01"),  # xCAT keeps the first label either way
    ],
)
def test_strip_hostname_like_xcatd(name: str, domains: tuple[str, ...], short: str) -> None:
    assert strip_hostname(name, domains) == short


@given(st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True), st.sampled_from(["eth", "ib", "myri"]),
       st.integers(0, 99))
def test_interface_suffixes_always_strip(base: str, iface: str, n: int) -> None:
    assert strip_hostname(f"{base}-{iface}{n}.dom.ain") == base


def test_hosts_index_maps_primary_and_other_interfaces() -> None:
    index = hosts_index([
        ("n01", "10.0.0.1", "n01-ib0:10.1.0.1,n01-eth1:10.2.0.1"),
        ("n02", " 10.0.0.2 ", None),
        ("grp", "|node(\\d+)|10.0.0.($1+0)|", None),  # an unexpanded regex cell is no address
    ])
    assert index == {"10.0.0.1": "n01", "10.1.0.1": "n01", "10.2.0.1": "n01", "10.0.0.2": "n02"}


def test_ipv4_mapped_addresses_match_ipv4_rows() -> None:
    assert normalise_ip("::ffff:10.0.0.1") == "10.0.0.1"
    assert normalise_ip("fe80::1%eth0") == "fe80::1"
    assert normalise_ip("nonsense") is None
    ident = identify_known(Peer("::ffff:10.0.0.1"), {"10.0.0.1": "n01"}, {"n01"})
    assert ident == Identity("n01", "hosts")


def test_certificate_identity_wins_over_address() -> None:
    nodes = {"n01", "n02"}
    hosts = {"10.0.0.1": "n01"}
    assert identify_known(Peer("10.0.0.1", "n02", "node"), hosts, nodes) == Identity("n02", "cert")
    # An admin certificate is not a node identity; a node cert for an unknown name is nobody.
    assert identify_known(Peer("10.0.0.1", "root", "admin"), hosts, nodes) == Identity("n01", "hosts")
    assert identify_known(Peer("10.0.0.1", "ghost", "node"), hosts, nodes) == Identity(None, "cert")
    assert identify_known(Peer("10.9.9.9"), hosts, nodes) is None


def test_reverse_dns_names_map_to_nodes() -> None:
    nodes = {"n01", "login.example"}
    assert identify_by_name("n01-eth0.example.com", nodes).node == "n01"
    assert identify_by_name("login.example.", nodes).node == "login.example"
    assert identify_by_name("stranger.example.com", nodes) == Identity(None, "dns", "stranger.example.com")
    assert identify_by_name(None, nodes) == Identity(None, "none")


# --- policy -------------------------------------------------------------------------------

DEFAULT = sort_rules([
    PolicyRule("4.8", commands="litetree", rule="allow"),
    PolicyRule("1", name="root", rule="allow"),
    PolicyRule("4.7", commands="litefile", rule="allow"),
])


def _expand(text: str) -> set[str]:
    groups = {"compute": {"n01", "n02", "n03"}, "gpu": {"n03"}}
    out: set[str] = set()
    for atom in text.split(","):
        if atom in groups:
            out |= groups[atom]
        elif atom.startswith("n"):
            out.add(atom)
        else:
            raise NoderangeError(f"invalid nodes and/or groups in noderange: {atom}")
    return out


def test_rules_sort_numerically_like_perls_spaceship() -> None:
    rules = sort_rules([PolicyRule("10"), PolicyRule("9.5"), PolicyRule("abc"), PolicyRule("1.10")])
    assert [r.priority for r in rules] == ["abc", "1.10", "9.5", "10"]


def test_db_init_writes_these_default_rows(tmp_path: Path) -> None:
    """What ``litefs db init`` puts in the policy table, as mountd reads it, is DEFAULT."""
    engine = db.open_engine(f"sqlite:///{tmp_path}/litefs.db")
    db.init_db(engine)
    with engine.connect() as conn:
        got = sort_rules(
            PolicyRule(priority=r.priority, name=r.name, host=r.host, commands=r.commands,
                       noderange=r.noderange, parameters=r.parameters, rule=r.rule)
            for r in conn.execute(select(TABLES["policy"]))
        )
    engine.dispose()
    assert got == DEFAULT


def test_default_rows_allow_anonymous_litefile_and_litetree_only() -> None:
    assert decide(DEFAULT, command="litefile", nodes=["n01"]).allowed
    assert decide(DEFAULT, command="litetree", nodes=["n01"]).allowed
    denied = decide(DEFAULT, command="nodeset", nodes=["n01"])
    assert not denied.allowed and denied.reason == "matched no policy row"
    # name=root needs an authenticated peer of that name.
    assert decide(DEFAULT, command="nodeset", peername="root").allowed
    assert not decide(DEFAULT, command="nodeset", peername="alice").allowed


def test_first_matching_row_decides() -> None:
    rules = sort_rules([*DEFAULT, PolicyRule("2", noderange="gpu", commands="litefile", rule="deny")])
    assert not decide(rules, command="litefile", nodes=["n03"], expand=_expand).allowed
    assert decide(rules, command="litefile", nodes=["n01"], expand=_expand).allowed
    assert decide(rules, command="litetree", nodes=["n03"], expand=_expand).allowed


def test_allow_rows_cover_requested_nodes_in_turn() -> None:
    """xcatd's leftnodes: an allow row covering some nodes settles those; later rows decide
    the rest, and a node already allowed is not denied by a later row."""
    rules = (PolicyRule("1", noderange="gpu", rule="allow"),)
    assert decide(rules, command="litefile", nodes=["n03"], expand=_expand).allowed
    partly = decide(rules, command="litefile", nodes=["n03", "n01"], expand=_expand)
    assert not partly.allowed and partly.reason == "matched no policy row for n01"
    assert not decide(rules, command="litefile", nodes=[], expand=_expand).allowed
    then_n01 = (*rules, PolicyRule("2", noderange="n01", rule="allow"))
    assert decide(then_n01, command="litefile", nodes=["n03", "n01"], expand=_expand).rule.priority == "2"
    then_deny = (*rules, PolicyRule("2", noderange="compute", rule="deny"))
    assert not decide(then_deny, command="litefile", nodes=["n03", "n01"], expand=_expand).allowed
    gpu_settled = (*rules, PolicyRule("2", noderange="n03", rule="deny"), PolicyRule("3", rule="allow"))
    got = decide(gpu_settled, command="litefile", nodes=["n03", "n01"], expand=_expand)
    assert got.allowed and got.rule.priority == "3"


def test_host_name_parameters_and_broken_rows() -> None:
    rules = sort_rules([
        PolicyRule("1", host="mgmt", rule="allow"),
        PolicyRule("2", name="*", commands="litefile", rule="trusted"),
        PolicyRule("3", parameters="^-v", rule="allow"),
        PolicyRule("4", noderange="nosuchgroup", rule="deny"),
        PolicyRule("5", parameters="([", rule="allow"),
        PolicyRule("6", commands="x", rule="deny"),
    ])
    assert decide(rules, command="any", peerhosts={"mgmt", "10.0.0.9"}).allowed
    assert decide(rules, command="litefile", peername="bob").allowed
    assert not decide(rules, command="litefile").reason.startswith("allowed")
    assert decide(rules, command="any", args=["-v", "x"]).allowed
    # A row whose noderange or regex is broken fails closed: it denies, naming itself,
    # instead of being skipped (which would let a later allow row decide).
    d = decide(rules, command="x", nodes=["n01"], expand=_expand)
    assert not d.allowed and d.rule is not None and d.rule.priority == "5"
    assert "cannot be evaluated (bad regular expression" in d.reason


_rule = st.builds(
    PolicyRule,
    priority=st.integers(0, 20).map(str),
    name=st.sampled_from([None, "", "*", "root", "alice"]),
    host=st.sampled_from([None, "*", "mgmt", "n01"]),
    commands=st.sampled_from([None, "*", "litefile", "litetree", "litefile,litetree", "nodeset"]),
    noderange=st.sampled_from([None, "*", "compute", "gpu", "n01", "bogus"]),
    rule=st.sampled_from(["allow", "accept", "trusted", "deny", "no", None]),
)


@given(
    st.lists(_rule, max_size=8),
    st.sampled_from(["litefile", "litetree", "nodeset"]),
    st.sampled_from([None, "root", "alice"]),
    st.lists(st.sampled_from(["n01", "n02", "n03"]), max_size=1),
)
def test_the_first_row_that_matches_alone_decides(
    rows: list[PolicyRule], command: str, peername: str | None, nodes: list[str]
) -> None:
    """For a request about at most one node (every mountd request), rows are independent."""
    rules = sort_rules(rows)
    kw = {"command": command, "peername": peername, "peerhosts": {"n01", "10.0.0.1"},
          "nodes": nodes, "expand": _expand}
    first = next((r for r in rules if decide((r,), **kw).rule is r), None)
    got = decide(rules, **kw)
    assert got.rule is first
    # A row that cannot be evaluated (noderange "bogus" raises) decides too: it denies.
    assert got.allowed == (first is not None and first.allows and first.noderange != "bogus")


@given(
    st.lists(_rule, max_size=8),
    st.sampled_from(["litefile", "nodeset"]),
    st.sampled_from([None, "root"]),
    st.lists(st.sampled_from(["n01", "n02", "n03"]), min_size=1, max_size=3, unique=True),
)
def test_a_request_about_several_nodes_is_allowed_iff_each_node_is(
    rows: list[PolicyRule], command: str, peername: str | None, nodes: list[str]
) -> None:
    """The leftnodes rule is per-node first match: no row can widen or narrow a group request."""
    rules = sort_rules(rows)
    kw = {"command": command, "peername": peername, "peerhosts": {"n01"}, "expand": _expand}
    each = [decide(rules, nodes=[n], **kw).allowed for n in nodes]
    assert decide(rules, nodes=nodes, **kw).allowed == all(each)
