"""Pure parts of the service-node hierarchy: who serves a node, prsync's argv and summary,
and the boot-time server list."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from litefs.initramfs.fetchplan import servers
from litefs.tools.prsync_cmd import (
    Result,
    Target,
    join_option_values,
    rsync_argv,
    rsync_options,
    split_dest,
    summary,
)

from litefs import hierarchy
from litefs.errors import BootError, UsageError

HOSTS = {"sn1": "10.1.0.1", "sn2": "10.2.0.1", "sn3": "10.3.0.1", "mn": "10.0.0.1"}
SNS = frozenset({"sn1", "sn2", "sn3"})


def choose(noderes: dict[str, str], here: str | None = None) -> hierarchy.Servers:
    return hierarchy.choose("n01", noderes, servicenodes=SNS, resolve=HOSTS.get, here=here)


def test_no_pool_means_the_mn_with_myipfn_as_xcat_does() -> None:
    s = choose({})
    assert (s.pool, s.xcatmaster, s.image_server, s.failover) == ((), "!myipfn!", "!myipfn!", ())
    assert s.pool_arg("3001") == ""


def test_pool_names_its_first_sn_and_the_rest_fail_over_in_order() -> None:
    s = choose({"servicenode": "sn2, sn1,sn3"})
    assert s.pool == ("sn2", "sn1", "sn3")
    assert s.xcatmaster == s.image_server == "10.2.0.1"
    assert s.failover == ("10.1.0.1", "10.3.0.1")
    assert s.pool_arg("3001") == "litefs.pool=10.1.0.1:3001,10.3.0.1:3001"


def test_explicit_xcatmaster_and_nfsserver_win_as_in_anaconda_pm() -> None:
    s = choose({"servicenode": "sn1,sn2", "xcatmaster": "sn1", "nfsserver": "10.9.9.9"})
    assert (s.xcatmaster, s.image_server, s.failover) == ("10.1.0.1", "10.9.9.9", ("10.2.0.1",))
    # <xcatmaster> means "the same as xcatmaster"; tftpserver is next in line.
    s = choose({"servicenode": "sn1", "nfsserver": "<xcatmaster>", "tftpserver": "sn3"})
    assert (s.xcatmaster, s.image_server) == ("10.1.0.1", "10.3.0.1")


def test_on_an_sn_of_the_pool_xcat_is_itself_and_the_others_follow() -> None:
    s = choose({"servicenode": "sn1,sn2,sn3"}, here="sn2")
    assert s.xcatmaster == "!myipfn!" and s.failover == ("10.1.0.1", "10.3.0.1")


def test_unknown_and_unresolvable_pool_members_are_skipped_with_one_line_each() -> None:
    s = hierarchy.choose("n01", {"servicenode": "snX,sn1,sn4"}, servicenodes=SNS | {"sn4"},
                         resolve=HOSTS.get)
    assert s.pool == ("sn1",) and s.failover == ()
    assert len(s.warnings) == 2
    assert "'snX', which is not in the servicenode table" in s.warnings[0]
    assert "chtab node=snX servicenode.tftpserver=1" in s.warnings[0]
    assert "service node 'sn4' has no address" in s.warnings[1]


def test_a_pool_with_no_usable_member_is_an_error_naming_why() -> None:
    with pytest.raises(BootError, match=r"n01: none of its service nodes \(snX,snY\) can serve"):
        choose({"servicenode": "snX,snY"})
    with pytest.raises(BootError, match=r"noderes\.xcatmaster 'nowhere' cannot be resolved"):
        choose({"servicenode": "sn1", "xcatmaster": "nowhere"})


def test_handled_here_and_serves() -> None:
    assert hierarchy.handled_here("n01", ("sn1",), here=None, sharedtftp=True) is None
    assert "run nodeset on sn1" in (hierarchy.handled_here("n01", ("sn1",), here=None,
                                                          sharedtftp=False) or "")
    assert hierarchy.handled_here("n01", (), here=None, sharedtftp=False) is None
    assert hierarchy.handled_here("n01", ("sn1", "sn2"), here="sn2", sharedtftp=True) is None
    assert "served by sn1, not by sn2" in (hierarchy.handled_here("n01", ("sn1",), here="sn2",
                                                                  sharedtftp=True) or "")
    assert hierarchy.serves(None, ()) and hierarchy.serves("sn2", ("sn1", "sn2"))
    assert not hierarchy.serves("sn3", ("sn1", "sn2")) and not hierarchy.serves("sn1", ())


def test_site_values_and_statemnt_on_the_chosen_server() -> None:
    assert hierarchy.truthy(None, True) and not hierarchy.truthy("NO", True)
    assert hierarchy.truthy("1", False) and hierarchy.truthy("junk", False) is False
    assert hierarchy.installloc_warning({}) is None
    assert "remove it" in (hierarchy.installloc_warning({"installloc": "mn:/install"}) or "")
    raw = "$noderes.xcatmaster:/nodedata"
    assert hierarchy.statemnt_on_server(raw, "", "10.1.0.1") == "10.1.0.1:/nodedata"
    assert hierarchy.statemnt_on_server(raw, "sn1", "10.1.0.1") == raw  # the cell says it
    assert hierarchy.statemnt_on_server("mn:/x", "", "10.1.0.1") == "mn:/x"


names = st.lists(st.sampled_from(["sn1", "sn2", "sn3", "snX", "", " "]), max_size=8)


@given(names, st.sampled_from([None, "sn1", "sn2"]))
def test_failover_is_the_pool_in_order_without_repeats_or_xcat(pool: list[str],
                                                               here: str | None) -> None:
    cell = ",".join(pool)
    try:
        s = choose({"servicenode": cell}, here=here)
    except BootError:
        assert not [n for n in hierarchy.parse_pool(cell) if n in SNS]
        return
    usable = [n for n in hierarchy.parse_pool(cell) if n in SNS]
    assert list(s.pool) == usable
    assert len(set(s.failover)) == len(s.failover)
    assert s.xcatmaster not in s.failover
    assert [HOSTS[n] for n in usable if HOSTS[n] in s.failover] == list(s.failover)
    assert len(s.warnings) == len([n for n in hierarchy.parse_pool(cell) if n not in SNS])


def test_boot_server_list_is_xcat_then_pool_bounded() -> None:
    assert servers("a:3001", None) == ["a:3001"]
    assert servers("a:3001", "b:3001,a:3001,,c:3001") == ["a:3001", "b:3001", "c:3001"]
    many = ",".join(f"h{i}:1" for i in range(100))
    assert len(servers("a:1", many)) == hierarchy.MAX_POOL + 1


def test_prsync_arguments() -> None:
    assert split_dest("sn1,sn2:/") == ("sn1,sn2", "/")
    assert split_dest("sn1:") == ("sn1", "")
    for bad in ("sn1", ":/x"):
        with pytest.raises(UsageError, match="must be NODERANGE:DESTDIR"):
            split_dest(bad)
    assert rsync_options(None) == ["-az"]
    assert rsync_options("v") == ["-azv"]  # xCAT: letters appended to -az
    assert rsync_options("--delete --stats") == ["-az", "--delete", "--stats"]
    with pytest.raises(UsageError, match="short option letters"):
        rsync_options("v;rm")
    assert join_option_values(["-o", "--delete", "-f", "2", "a", "sn1:/"]) == [
        "--options=--delete", "-f", "2", "a", "sn1:/"]
    assert join_option_values(["--", "-o", "x"]) == ["--", "-o", "x"]
    argv = rsync_argv(Target("sn1", "fd00::1"), ["install"], "/", ["-az"], "ssh")
    assert argv == ["rsync", "-az", "-e", "ssh", "--", "install", "[fd00::1]:/"]


def test_prsync_summary_names_every_failed_target() -> None:
    ok = Result("sn1", 0, 1.0)
    assert summary([ok]) == "prsync: 1 target(s), all done"
    line = summary([ok, Result("sn2", 255, 1.0), Result("sn3", 12, 1.0)])
    assert line == "prsync: 3 target(s), 2 failed: sn2,sn3"


def test_planner_statemnt_names_the_pools_first_sn() -> None:
    cells = {("n01", "noderes", "servicenode"): "sn2,sn1", ("sn2", "hosts", "ip"): "10.2.0.1"}

    def get(name: str, table: str, column: str) -> str | None:
        return cells.get((name, table, column))

    raw = "$noderes.xcatmaster:/nodedata"
    assert hierarchy.statemnt_for_plan("n01", raw, get) == "10.2.0.1:/nodedata"
    assert hierarchy.statemnt_for_plan("n02", raw, get) == raw  # no pool: the variable rules
    cells[("n01", "noderes", "xcatmaster")] = "sn1"
    assert hierarchy.statemnt_for_plan("n01", raw, get) == raw
