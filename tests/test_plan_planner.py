"""The planner on real databases (a SQLite file and PostgreSQL): precedence, mtab, litetree,
statelite, errors, and the one-read snapshot."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, event

from litefs.errors import NoderangeError, PlanError, SubstitutionError, TableError
from litefs.noderange import expand
from litefs.plan import Plan
from litefs.planner import (
    AUTO_IMAGE,
    SNAPSHOT_TABLES,
    Snapshot,
    image_for_node,
    image_plan,
    load_snapshot,
    lslite_lines,
    node_plan,
    plan_for_image,
    plan_for_node,
    xcat_litefile_lines,
    xcat_litetree_lines,
)
from litefs.schema import TABLES as SCHEMA_TABLES
from tests.dbutil import dump_all
from tests.planutil import COOKBOOK_REDHAT_FILES, cookbook_redhat_litefile, load

IMG = "rhels8-x86_64-statelite-compute"

TABLES = {
    "site": [{"key": "master", "value": "mn1"}],
    "nodelist": [
        {"node": "n01", "groups": "rackA,compute,all"},
        {"node": "n02", "groups": "compute,rackB,all"},
        {"node": "n03", "groups": "gpu,all"},
        {"node": "n04", "groups": "broken"},
        {"node": "n05", "groups": "compute", "disable": "yes"},
    ],
    "nodegroup": [
        {"groupname": "el8", "grouptype": "dynamic", "wherevals": "nodetype.os==rhels8"},
    ],
    "nodetype": [
        {"node": "compute", "os": "rhels8", "arch": "x86_64", "profile": "compute",
         "provmethod": "statelite"},
        {"node": "n03", "os": "rhels8", "arch": "x86_64", "profile": "gpu",
         "provmethod": "gpuimg"},
        {"node": "n04", "os": "rhels8", "arch": "x86_64"},
    ],
    "noderes": [
        {"node": "compute", "nfsserver": "|n(\\d+)|10.1.0.($1+0)|"},
        {"node": "rackA", "nfsserver": "10.0.0.1"},
        {"node": "n01", "nfsserver": "9.9.9.9", "disable": "yes"},
        {"node": "gpu", "nfsserver": "10.0.0.9"},
    ],
    "nodepos": [
        {"node": "n01", "room": "ny"},
        {"node": "n02", "room": "sh"},
        {"node": "gpu", "room": "tx"},
        {"node": "compute", "room": "dc"},
    ],
    "osimage": [
        {"imagename": IMG, "groups": "rhgroup,other", "provmethod": "statelite"},
        {"imagename": "gpuimg", "groups": "gpugrp", "provmethod": "statelite"},
    ],
    "litefile": [
        {"image": "rhgroup", "file": "/p/group-only", "options": "persistent"},
        {"image": "rhgroup", "file": "/p/group-blank", "options": "persistent"},
        {"image": "", "file": "/p/group-blank", "options": "ro"},
        {"image": "", "file": "/p/blank-all", "options": "ro"},
        {"image": "ALL", "file": "/p/blank-all", "options": "persistent"},
        {"image": "ALL", "file": "/p/all-exact", "options": "ro"},
        {"image": IMG, "file": "/p/all-exact", "options": "persistent"},
        {"image": "rhgroup", "file": "/p/group-all", "options": "ro"},
        {"image": "ALL", "file": "/p/group-all", "options": "persistent"},
        {"image": "other", "file": "/p/two-groups", "options": "ro"},
        {"image": "rhgroup", "file": "/p/two-groups", "options": "persistent"},
        {"image": "gpuimg", "file": "/p/gpu-only", "options": "ro"},
        {"image": "ALL", "file": "/p/disabled", "options": "tmpfs"},
        {"image": IMG, "file": "/p/disabled", "options": "ro", "disable": "1"},
        {"image": IMG, "file": "/p/enabled", "options": "ro", "disable": "No"},
        {"image": "ALL", "file": "/etc/ssh/", "options": None},
        {"image": "ALL", "file": "/var/log/", "options": "link,persistent"},
    ],
    "litetree": [
        {"priority": "10", "image": "rhgroup", "directory": "/local/tree"},
        {"priority": "1", "image": "", "directory": "$noderes.nfsserver:/statelite/$node"},
        {"priority": "2", "image": "gpuimg", "directory": "x:/gpu"},
        {"priority": "3", "image": "ALL", "directory": "cnfs:/gpfs/$nodepos.room/",
         "mntopts": "hard,intr"},
        {"priority": "2.5", "image": "", "directory": "cnfs:/gpfs/dallas/"},
        {"priority": "4", "image": "ALL", "directory": "cnfs:/never", "disable": "yes"},
    ],
    "statelite": [
        {"node": "compute", "statemnt": "cnfs:/gpfs/state", "mntopts": "nolock"},
        {"node": "n02", "statemnt": "$noderes.nfsserver:/state/$nodepos.room"},
    ],
}


@pytest.fixture
def snap(engine: Engine) -> Snapshot:
    load(engine, TABLES)
    return load_snapshot(engine)


def options(plan: Plan) -> dict[str, str]:
    return {r.path: r.option for r in plan.rules}


def test_row_precedence(snap: Snapshot) -> None:
    opts = options(plan_for_node(snap, "n01"))
    assert opts["/p/group-only"] == "persistent"  # image is *in* osimage.groups (DESIGN fix)
    assert opts["/p/group-blank"] == "ro"  # blank beats group
    assert opts["/p/blank-all"] == "persistent"  # ALL beats blank
    assert opts["/p/all-exact"] == "persistent"  # exact beats ALL
    assert opts["/p/group-all"] == "persistent"  # ALL beats group (xCAT's surprise, kept)
    assert opts["/p/two-groups"] == "persistent"  # first listed group wins
    assert opts["/p/disabled"] == "tmpfs"  # the disabled exact row does not exist
    assert opts["/p/enabled"] == "ro"  # disable=No leaves a row active
    assert "/p/gpu-only" not in opts
    assert opts["/etc/ssh"] == "tmpfs,rw"  # blank option
    gpu = options(plan_for_node(snap, "n03"))
    assert gpu["/p/gpu-only"] == "ro" and "/p/group-only" not in gpu
    assert gpu["/p/blank-all"] == "persistent"


def test_rules_sorted_with_winning_row_and_dir_marker(snap: Snapshot) -> None:
    plan = plan_for_node(snap, "n01")
    paths = [r.path for r in plan.rules]
    assert paths == sorted(paths)
    by = plan.rule_index
    assert by["/p/all-exact"].image == IMG and by["/p/blank-all"].image == "ALL"
    assert by["/p/group-only"].image == "rhgroup" and by["/p/group-blank"].image == ""
    assert by["/etc/ssh"].is_dir and by["/etc/ssh"].table_path == "/etc/ssh/"
    assert not by["/p/group-only"].is_dir


def test_mtab_row_added_or_forced(engine: Engine) -> None:
    load(engine, TABLES)
    auto = plan_for_node(load_snapshot(engine), "n01").rule_index["/etc/mtab"]
    assert (auto.option, auto.is_dir, auto.image) == ("link", False, AUTO_IMAGE)
    rows = [*TABLES["litefile"], {"image": "ALL", "file": "/etc/mtab", "options": "persistent"}]
    load(engine, {"litefile": rows})
    named = plan_for_node(load_snapshot(engine), "n01").rule_index["/etc/mtab"]
    assert (named.option, named.image) == ("tmpfs,rw", "ALL")


def test_litetree_sources_in_numeric_order_with_variables(snap: Snapshot) -> None:
    plan = plan_for_node(snap, "n01")
    got = [(s.priority, s.server, s.path, s.mntopts, s.directory) for s in plan.sources]
    assert got == [
        ("1", "10.0.0.1", "/statelite/n01", None, "10.0.0.1:/statelite/n01"),
        ("2.5", "cnfs", "/gpfs/dallas", None, "cnfs:/gpfs/dallas/"),
        ("3", "cnfs", "/gpfs/ny", "hard,intr", "cnfs:/gpfs/ny/"),
        ("10", None, "/local/tree", None, "/local/tree"),
    ]
    assert plan.sources[0].mountpoint == "/.statelite/mnt/10.0.0.1/statelite/n01"
    assert plan.sources[3].mountpoint == "/local/tree"
    assert any("priority=10" in w and "node-local" in w for w in plan.warnings)
    n02 = plan_for_node(snap, "n02")
    assert n02.sources[0].directory == "10.1.0.2:/statelite/n02"  # regex cell, group order
    assert xcat_litetree_lines(plan) == [
        "n01: 10.0.0.1:/statelite/n01",
        "n01: cnfs:/gpfs/dallas/",
        "n01: cnfs:/gpfs/ny/ :hard,intr",
        "n01: /local/tree",
    ]


def test_statelite_inheritance_and_substitution(snap: Snapshot) -> None:
    n01 = plan_for_node(snap, "n01")
    assert (n01.statemnt, n01.mntopts) == ("cnfs:/gpfs/state", "nolock")  # from group compute
    n02 = plan_for_node(snap, "n02")
    assert n02.statemnt == "10.1.0.2:/state/sh"  # own row; no node name appended
    assert n02.mntopts == "nolock"  # per-attribute merge from the group row
    assert plan_for_node(snap, "n03").statemnt is None


def test_image_for_node(snap: Snapshot) -> None:
    assert image_for_node(snap, "n01") == IMG
    assert image_for_node(snap, "n03") == "gpuimg"
    with pytest.raises(PlanError, match=r"^n04 does not have os, arch, or profile defined in nodetype table$"):
        image_for_node(snap, "n04")
    with pytest.raises(NoderangeError, match="unknown node 'n05'"):  # disabled in nodelist
        plan_for_node(snap, "n05")
    assert plan_for_node(snap, "n01", image="gpuimg").image == "gpuimg"


def test_empty_variable_is_an_error_naming_row_variable_and_node(snap: Snapshot) -> None:
    snap.node_tables["nodepos"].pop("n01")
    snap.node_tables["nodepos"].pop("compute")
    with pytest.raises(SubstitutionError) as err:
        plan_for_node(snap, "n01")
    msg = str(err.value)
    assert "litetree priority=3" in msg and "$nodepos.room" in msg and "n01" in msg


def test_cmd_needs_the_site_switch(engine: Engine, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    tree = [{"priority": "1", "directory": f"cnfs:/k/#CMD=touch {marker}; echo 6.1#/$node"}]
    load(engine, {**TABLES, "litetree": tree})
    with pytest.raises(SubstitutionError, match=r"chtab key=litefs_allow_cmd site\.value=yes"):
        plan_for_node(load_snapshot(engine), "n01")
    assert not marker.exists()  # refused, not run
    load(engine, {"site": [*TABLES["site"], {"key": "litefs_allow_cmd", "value": "yes"}]})
    plan = plan_for_node(load_snapshot(engine), "n01")
    assert plan.sources[0].directory == "cnfs:/k/6.1/n01" and marker.exists()
    load(engine, {"site": [*TABLES["site"], {"key": "litefs_allow_cmd", "value": "yes",
                                              "disable": "1"}]})
    with pytest.raises(SubstitutionError, match="litefs_allow_cmd"):  # a disabled row is no row
        plan_for_node(load_snapshot(engine), "n01")


def test_invalid_rows_raise_plan_error_listing_all_messages(engine: Engine) -> None:
    rows = [
        *TABLES["litefile"],
        {"image": "ALL", "file": "/etc/x/", "options": "con"},
        {"image": "ALL", "file": "/var/log/old/", "options": "link"},
    ]
    load(engine, {**TABLES, "litefile": rows})
    with pytest.raises(PlanError) as err:
        plan_for_node(load_snapshot(engine), "n01")
    msg = str(err.value)
    assert msg.startswith(f"litefile rows for image {IMG} are not valid: ")
    assert '/etc/x/ is directory, don\'t use "con" as its option' in msg
    assert "/var/log/old/ should have persistent option like /var/log/" in msg


def test_many_invalid_rows_stay_one_readable_line(engine: Engine) -> None:
    rows = [{"image": "ALL", "file": f"/etc/f{i}", "options": "bogus"} for i in range(12)]
    load(engine, {**TABLES, "litefile": []})
    # chtab/tabrestore refuse such rows now; a database written by xCAT may still hold them.
    with engine.begin() as conn:
        conn.execute(SCHEMA_TABLES["litefile"].insert(), rows)
    with pytest.raises(PlanError) as err:
        plan_for_image(load_snapshot(engine), IMG)
    msg = str(err.value)
    assert "\n" not in msg and msg.count("has invalid option") == 5
    assert "; and 7 more (fix the rows with 'tabedit litefile' or chtab)" in msg


def test_tempfs_plans_for_nodes_but_not_for_liteimg(engine: Engine) -> None:
    load(engine, {**TABLES, "litefile": [{"image": "ALL", "file": "/etc/x", "options": "tempfs"}]})
    snap = load_snapshot(engine)
    plan = plan_for_node(snap, "n01")
    assert plan.rule_index["/etc/x"].option == "tempfs"
    assert any("tempfs" in w for w in plan.warnings)
    with pytest.raises(PlanError, match="/etc/x has invalid option"):
        plan_for_image(snap, IMG)


def test_duplicate_path_in_one_level_is_an_error(engine: Engine) -> None:
    rows = [{"image": "ALL", "file": "/etc/ssh", "options": "tmpfs"},
            {"image": "ALL", "file": "/etc/ssh/", "options": "tmpfs"}]
    load(engine, TABLES)
    before = dump_all(engine)
    with pytest.raises(TableError, match="name the same path"):  # refused when written...
        load(engine, {"litefile": rows})
    assert dump_all(engine) == before
    snap = load_snapshot(engine)
    snap.litefile.extend(rows)  # ...and caught by the planner should such rows exist anyway
    with pytest.raises(PlanError, match="name the same path"):
        plan_for_node(snap, "n01")


def test_image_plan(snap: Snapshot, engine: Engine) -> None:
    plan = plan_for_image(snap, IMG)
    assert plan.node is None and plan.statemnt is None
    assert [s.priority for s in plan.sources] == ["2.5", "10"]  # variable rows left out
    assert any("priority=1:" in w and "variables" in w for w in plan.warnings)
    assert options(plan) == options(plan_for_node(snap, "n01"))
    assert image_plan(engine, IMG) == plan
    assert xcat_litefile_lines(plan)[:2] == [f"{IMG}: link          /etc/mtab",
                                        f"{IMG}: tmpfs,rw      /etc/ssh/"]


def test_json_round_trip(engine: Engine) -> None:
    load(engine, TABLES)
    plan = node_plan(engine, "n02")
    again = Plan.from_json(plan.to_json())
    assert again == plan
    assert again.to_json() == plan.to_json()


def test_snapshot_reads_each_table_once(engine: Engine) -> None:
    nodes = [{"node": f"n{1000 + i}", "groups": f"g{i % 7},compute"} for i in range(300)]
    load(engine, {**TABLES, "nodelist": [*TABLES["nodelist"], *nodes]})
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        snap = load_snapshot(engine)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(statements) == len(SNAPSHOT_TABLES)
    plans = [plan_for_node(snap, f"n{1000 + i}") for i in range(300)]
    assert {p.image for p in plans} == {IMG}
    assert plans[5].sources[0].directory == "10.1.0.1005:/statelite/n1005"


def test_noderange_universe_from_tables(snap: Snapshot) -> None:
    u = snap.universe()
    assert expand("compute", u) == ["n01", "n02"]
    assert expand("el8", u) == ["n01", "n02", "n03", "n04"]  # dynamic group over inherited attributes
    assert expand("noderes.nfsserver==10.0.0.1", u) == ["n01"]
    assert expand("all,-rackB", u) == ["n01", "n03"]
    with pytest.raises(NoderangeError, match="n05"):
        expand("n01-n05", u)  # n05 is disabled: it does not exist


def test_cookbook_redhat_list_for_a_node(engine: Engine) -> None:
    load(engine, {**TABLES, "litefile": cookbook_redhat_litefile(), "litetree": []})
    plan = node_plan(engine, "n01")
    assert sorted(r.table_path for r in plan.rules) == sorted(COOKBOOK_REDHAT_FILES)
    assert {r.option for r in plan.rules} == {"tmpfs,rw"}
    assert {r.image for r in plan.rules} == {"ALL"}  # /etc/mtab is in the list: forced, not added
    lines = xcat_litefile_lines(plan)
    assert lines[:3] == [
        "n01: tmpfs,rw      /etc/adjtime",
        "n01: tmpfs,rw      /etc/fstab",
        "n01: tmpfs,rw      /etc/inittab",
    ]
    assert lines == sorted(lines)
    assert lslite_lines(plan)[:8] == [
        ">>>Node: n01", "", f"Osimage: {IMG}", "",
        "Persistent directory (statelite table):", "        cnfs:/gpfs/state", "",
        "Litefiles (litefile table):",
    ]


def test_cookbook_sles_list_plans_too(engine: Engine) -> None:
    from importlib.resources import files

    sles = files("litefs.data").joinpath("litefile-sles.csv").read_text()
    load(engine, {**TABLES, "litefile": sles, "litetree": []})
    plan = node_plan(engine, "n01")
    assert len(plan.rules) == 24 and plan.warnings == ()
    assert plan.rule_index["/var/lib"].is_dir and plan.rule_index["/etc/mtab"].option == "tmpfs,rw"
