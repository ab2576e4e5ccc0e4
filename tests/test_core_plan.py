"""The Plan value: JSON round trip, version gate, and the shape checks a node applies to a plan
received over the wire."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from litefs.errors import PlanError
from litefs.options import VALID_OPTIONS
from litefs.plan import PLAN_VERSION, Plan, Rule, Source

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..")
)
paths = st.lists(names, min_size=1, max_size=5).map(lambda parts: "/" + "/".join(parts))


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    rule_paths = draw(st.lists(paths, max_size=12, unique=True))
    rules = tuple(
        Rule(p, draw(st.sampled_from(VALID_OPTIONS)), draw(st.booleans()), draw(st.sampled_from(["ALL", "", "img"])))
        for p in sorted(rule_paths)
    )
    sources = tuple(
        Source(str(i), f"srv{i}:{p}", f"srv{i}", p, draw(st.none() | st.just("hard")))
        for i, p in enumerate(draw(st.lists(paths, max_size=3)))
    )
    return Plan(
        image="img",
        rules=rules,
        sources=sources,
        node=draw(st.none() | names),
        statemnt=draw(st.none() | st.just("cnfs:/gpfs/state")),
        warnings=tuple(draw(st.lists(st.text(max_size=20), max_size=2))),
    )


@given(plans())
def test_json_round_trip_is_identity_and_stable(plan: Plan) -> None:
    text = plan.to_json()
    again = Plan.from_json(text)
    assert again == plan
    assert again.to_json() == text


def test_source_mountpoint_follows_classic_layout() -> None:
    assert Source("1", "10.0.0.1:/syncdirs/a", "10.0.0.1", "/syncdirs/a").mountpoint == (
        "/.statelite/mnt/10.0.0.1/syncdirs/a"
    )
    # A server-less directory is a node-local path (DESIGN: fixed quirk).
    assert Source("2", "/local/tree", None, "/local/tree").mountpoint == "/local/tree"


def test_table_path_marks_directories() -> None:
    assert Rule("/etc/ssh", "tmpfs", True).table_path == "/etc/ssh/"
    assert Rule("/etc/adjtime", "tmpfs", False).table_path == "/etc/adjtime"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["rules"].append({"path": "etc/x", "option": "tmpfs", "is_dir": False}), "normalised absolute"),
        (lambda d: d["rules"].append({"path": "/etc/../x", "option": "tmpfs", "is_dir": False}), "'..'"),
        (lambda d: d["rules"].append({"path": "/etc/x", "option": "bogus", "is_dir": False}), "unknown option"),
        (lambda d: d["rules"].append(dict(d["rules"][0])), "appears twice"),
        (lambda d: d.pop("rules"), "malformed plan"),
        (lambda d: d.update(plan_version=PLAN_VERSION + 1), "newer than this litefs"),
        (lambda d: d["sources"].append({"priority": "1", "directory": "s:x", "server": "s", "path": "x"}), "absolute"),
    ],
)
def test_untrusted_plans_are_refused_with_a_reason(mutate, message: str) -> None:
    plan = Plan(image="img", rules=(Rule("/etc/ssh", "tmpfs", True, "ALL"),))
    data = json.loads(plan.to_json())
    mutate(data)
    with pytest.raises(PlanError, match=message):
        Plan.from_dict(data)


def test_not_json_is_a_plan_error() -> None:
    with pytest.raises(PlanError, match="not JSON"):
        Plan.from_json("{nope")


def test_public_surface_is_pinned() -> None:
    # The names litefs promises to callers (mountd, the boot side, admins' scripts); changing
    # this list is an API change and should be deliberate.
    import litefs

    assert set(litefs.__all__) == {
        "PLAN_VERSION", "Family", "LayerRef", "LitefsError", "Plan", "PlanError", "Resolution",
        "Rule", "Source", "UsageError", "resolve",
    }
    for name in litefs.__all__:
        assert getattr(litefs, name) is not None
