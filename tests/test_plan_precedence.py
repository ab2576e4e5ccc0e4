"""Row precedence (exact image > ALL > blank > image group) on random row sets, without a database.

The model: for every path, the row at the highest level wins, groups rank below blank and
the first group listed in ``osimage.groups`` ranks above later ones; rows for other images
never apply; ``/etc/mtab`` is added as ``link`` or forced to ``tmpfs,rw``.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from litefs.planner import AUTO_IMAGE, Snapshot, plan_for_image, plan_for_node
from litefs.subst import substitute

IMG = "img"
GROUPS = ["g1", "g2", "g3"]
# Increasing precedence for IMG whose osimage.groups is "g1,g2" (g3 does not apply).
RANK = {"g2": 0, "g1": 1, "": 2, "ALL": 3, IMG: 4}
IMAGES = [*GROUPS, "", "ALL", IMG, "other"]
FILES = ["/etc/a", "/etc/b", "/var/c", "/opt/d", "/etc/mtab"]
OPTIONS = ["tmpfs", "persistent", "ro", "rw", "localdisk", "con", None]


def snapshot(litefile: list[dict[str, Any]]) -> Snapshot:
    return Snapshot(
        site={},
        node_tables={
            "nodelist": {"n1": {"node": "n1", "groups": "compute"}},
            "nodetype": {"compute": {"os": "x", "arch": "y", "profile": "z", "provmethod": IMG}},
        },
        nodegroup={},
        osimage={IMG: {"imagename": IMG, "groups": "g1, g2"}},
        litefile=litefile,
        litetree=[],
    )


rows_st = st.dictionaries(
    st.tuples(st.sampled_from(IMAGES), st.sampled_from(FILES)),
    st.sampled_from(OPTIONS),
    max_size=20,
)


@settings(max_examples=300)
@given(rows_st)
def test_precedence_matches_model(rows: dict[tuple[str, str], str | None]) -> None:
    litefile = [{"image": i, "file": f, "options": o} for (i, f), o in rows.items()]
    want: dict[str, tuple[int, str, str]] = {}
    for (image, file), option in rows.items():
        if image not in RANK:
            continue
        rank = RANK[image]
        if file not in want or rank > want[file][0]:
            want[file] = (rank, option or "tmpfs,rw", image)
    model = {f: (o, i) for f, (_r, o, i) in want.items()}
    if "/etc/mtab" in model:
        model["/etc/mtab"] = ("tmpfs,rw", model["/etc/mtab"][1])
    else:
        model["/etc/mtab"] = ("link", AUTO_IMAGE)
    snap = snapshot(litefile)
    for plan in (plan_for_node(snap, "n1"), plan_for_image(snap, IMG)):
        assert {r.path: (r.option, r.image) for r in plan.rules} == model
        assert [r.path for r in plan.rules] == sorted(model)


@given(
    st.lists(
        st.text(alphabet=st.sampled_from("abc.-_0123456789"), min_size=0, max_size=6), max_size=6
    ),
    st.sampled_from(["", "srv:"]),
)
def test_values_without_variables_pass_through(parts: list[str], server: str) -> None:
    value = server + "/" + "/".join(parts)
    snap = snapshot([])
    got = substitute(value, "n1", snap.attrs, snap.site, row="litetree priority=1")
    assert got == value
