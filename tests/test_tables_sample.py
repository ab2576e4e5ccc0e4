"""The shipped sample tables: cookbook lists and the demo cluster load on both backends."""

from __future__ import annotations

import csv
import io
from importlib import resources

import pytest
from litefs.tools import sampledata
from sqlalchemy import Engine

from litefs import planner, tabledata
from litefs.schema import column_names, table


def load_demo(target: Engine) -> None:
    """Create the schema if needed and replace the demo tables with the sample rows."""
    from litefs import db

    db.init_db(target)
    for name, text in sampledata.demo_tables().items():
        tabledata.restore(target, name, text, f"{name}.csv")


def cookbook_litefile(distro: str) -> str:
    """The cookbook's sample litefile list (``redhat`` or ``sles``) exactly as printed."""
    return (resources.files("litefs") / "data" / f"litefile-{distro}.csv").read_text()


def test_demo_files_are_canonical_tabdump_with_every_column() -> None:
    tables = sampledata.demo_tables()
    assert set(tables) == {
        "site", "nodelist", "nodetype", "noderes", "nodepos", "hosts", "osimage",
        "linuximage", "litefile", "litetree", "statelite",
    }
    for name, text in tables.items():
        rows = list(csv.reader(io.StringIO(text)))
        assert rows[0] == ["#" + column_names(table(name))[0], *column_names(table(name))[1:]]
        assert all(len(r) == len(rows[0]) for r in rows[1:]), name


def test_demo_loads_and_dumps_back_identically(engine: Engine) -> None:
    load_demo(engine)
    with engine.connect() as conn:
        for name, text in sampledata.demo_tables().items():
            assert tabledata.dump(conn, name) == text, name


def test_demo_plans_per_room(engine: Engine) -> None:
    load_demo(engine)
    for node, room in sampledata.DEMO_ROOMS.items():
        plan = planner.node_plan(engine, node)
        assert plan.image == sampledata.DEMO_IMAGE
        assert plan.statemnt == "127.0.0.1:/nodedata"
        assert [s.directory for s in plan.sources] == [
            f"127.0.0.1:/syncdirs/{room}",
            "127.0.0.1:/syncdirs/common",
        ]
        options = {r.path: r.option for r in plan.rules}
        assert options["/var/log"] == "persistent"
        assert options["/var/lib/demo"] == "persistent"  # image row
        assert options["/etc/issue"] == "ro"  # image group row
        assert "/var/cache/man" not in options  # disabled row


@pytest.mark.parametrize("distro", ["redhat", "sles"])
def test_cookbook_list_loads_into_database(engine: Engine, distro: str) -> None:
    text = cookbook_litefile(distro)
    n = tabledata.restore(engine, "litefile", text, f"litefile-{distro}.csv")
    assert n == {"redhat": 42, "sles": 24}[distro]
    with engine.connect() as conn:
        dumped = tabledata.dump(conn, "litefile")
    assert dumped.count('"ALL","/') == n
