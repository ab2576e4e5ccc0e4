"""resolve() against a brute-force nearest-listed-ancestor search over random rule sets."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from litefs.options import UPPER_LAYER, VALID_OPTIONS, LayerKind, family_of
from litefs.plan import Plan, Rule, Source
from litefs.resolve import resolve

NAMES = ["etc", "var", "log", "ssh", "a", "b", "x.conf", "lib"]

path_st = st.lists(st.sampled_from(NAMES), min_size=0, max_size=6).map(
    lambda parts: "/" + "/".join(parts)
)
rules_st = st.dictionaries(
    path_st, st.tuples(st.sampled_from(VALID_OPTIONS), st.booleans()), max_size=25
)


def brute_force(rules: list[Rule], path: str) -> Rule | None:
    best: Rule | None = None
    for r in rules:
        under = r.path == "/" or path == r.path or path.startswith(r.path + "/")
        if under and (best is None or len(r.path) > len(best.path)):
            best = r
    return best


@settings(max_examples=300)
@given(rules=rules_st, queries=st.lists(path_st, min_size=1, max_size=20), n_src=st.integers(0, 3))
def test_resolve_is_nearest_listed_ancestor(
    rules: dict[str, tuple[str, bool]], queries: list[str], n_src: int
) -> None:
    rule_list = sorted(
        (Rule(path=p, option=o, is_dir=d) for p, (o, d) in rules.items()), key=lambda r: r.path
    )
    sources = tuple(Source(str(i), f"s:/d{i}", "s", f"/d{i}") for i in range(n_src))
    plan = Plan(image="img", rules=tuple(rule_list), sources=sources)
    for q in queries:
        res = resolve(plan, q)
        want = brute_force(rule_list, q)
        assert res.rule == want
        if want is None:
            assert res.upper is None and [lay.kind for lay in res.lowers] == [LayerKind.IMAGE]
        else:
            assert res.upper == UPPER_LAYER[family_of(want.option)]
            kinds = [(lay.kind, lay.index) for lay in res.lowers]
            assert kinds == [(LayerKind.SOURCE, i) for i in range(n_src)] + [(LayerKind.IMAGE, 0)]
