"""genimage's pure parts: profile search order, pkglist/otherpkgs/exlist parsing, phase plan."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from litefs import genimage as G

NAME = st.from_regex(r"[a-z][a-z0-9+.-]{0,12}", fullmatch=True)


def test_search_order_names() -> None:
    assert G.profile_names("compute", "rhels7.2", "x86_64", "pkglist") == [
        "compute.rhels7.2.x86_64.pkglist", "compute.rhels7.1.x86_64.pkglist",
        "compute.rhels7.0.x86_64.pkglist", "compute.rhels7.x86_64.pkglist",
        "compute.x86_64.pkglist", "compute.rhels7.2.pkglist", "compute.rhels7.1.pkglist",
        "compute.rhels7.0.pkglist", "compute.rhels7.pkglist", "compute.pkglist",
    ]
    assert G.os_candidates("debian12") == []


def test_custom_dir_before_shipped(tmp_path: Path) -> None:
    custom, shipped = tmp_path / "custom", tmp_path / "shipped"
    custom.mkdir()
    shipped.mkdir()
    (shipped / "compute.debian12.x86_64.pkglist").write_text("a\n")
    (custom / "compute.pkglist").write_text("b\n")
    # The least specific custom name wins over the most specific shipped one.
    assert G.find_profile_file([custom, shipped], "compute", "debian12", "x86_64",
                               "pkglist") == custom / "compute.pkglist"
    assert G.find_profile_file([custom, shipped], "nope", "debian12", "x86_64", "pkglist") is None


def test_postinstall_must_be_executable(tmp_path: Path) -> None:
    p = tmp_path / "compute.postinstall"
    p.write_text("#!/bin/sh\n")
    assert G.find_profile_file([tmp_path], "compute", "debian12", "x86_64", "postinstall",
                               executable=True) is None
    p.chmod(0o755)
    assert G.find_profile_file([tmp_path], "compute", "debian12", "x86_64", "postinstall",
                               executable=True) == p


@given(st.lists(NAME, max_size=20), st.lists(NAME, max_size=5))
def test_pkglist_roundtrip(tmp_path_factory: pytest.TempPathFactory, pkgs: list[str],
                           removed: list[str]) -> None:
    d = tmp_path_factory.mktemp("pl")
    (d / "base.pkglist").write_text("# base\n" + "".join(f"{p}  # why\n\n" for p in pkgs))
    (d / "top.pkglist").write_text("#INCLUDE:base.pkglist#\n" + "".join(f"-{r}\n" for r in removed))
    got = G.parse_pkglist(d / "top.pkglist")
    want = [p for p in dict.fromkeys(pkgs) if p not in removed]
    assert got.install == want
    assert got.remove == list(dict.fromkeys(removed))


def test_include_cycle_and_depth(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("#INCLUDE:b#\n")
    (tmp_path / "b").write_text("#INCLUDE:a#\n")
    with pytest.raises(G.GenimageError, match="cycle"):
        G.parse_pkglist(tmp_path / "a")
    for i in range(G.MAX_INCLUDE_DEPTH + 2):
        (tmp_path / f"d{i}").write_text(f"#INCLUDE:d{i + 1}#\npkg{i}\n")
    (tmp_path / f"d{G.MAX_INCLUDE_DEPTH + 2}").write_text("x\n")
    with pytest.raises(G.GenimageError, match="deeper"):
        G.parse_pkglist(tmp_path / "d0")
    with pytest.raises(G.GenimageError, match="cannot read"):
        G.parse_pkglist(tmp_path / "missing")


def test_otherpkgs_transactions(tmp_path: Path) -> None:
    (tmp_path / "o").write_text(
        "#ENV:DEBIAN_FRONTEND=noninteractive#\nfoo\n-old\n--tmp\n#NEW_INSTALL_LIST#\n"
        "sub/bar\n#NEW_INSTALL_LIST#\n#NEW_INSTALL_LIST#\n"
    )
    txs = G.parse_otherpkgs(tmp_path / "o")
    assert [(t.install, t.remove_before, t.remove_after) for t in txs] == [
        (["foo"], ["old"], ["tmp"]), (["sub/bar"], [], []),
    ]
    assert txs[0].env == {"DEBIAN_FRONTEND": "noninteractive"}


def test_exlist_and_postinstall(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("./usr/share/doc*\n+./usr/share/doc/keep\n")
    assert G.parse_exlist(tmp_path / "x") == (["usr/share/doc*"], ["usr/share/doc/keep"])
    assert G.parse_postinstall("/a/b x y, /c") == [["/a/b", "x", "y"], ["/c"]]


def test_phases() -> None:
    assert G.plan_phases(fresh=True, noupdate=False, otherpkgs=True, postinstall=True,
                         exlist=False)[:5] == ["debootstrap", "packages", "otherpkgs", "runtime",
                                             "postinstall"]
    assert G.plan_phases(fresh=False, noupdate=True, otherpkgs=True, postinstall=False,
                         exlist=False)[:3] == ["copy", "runtime", "statelite"]
