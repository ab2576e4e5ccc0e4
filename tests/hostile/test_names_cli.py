"""Hostile node names and table values, tried for real: installed CLIs against a real SQLite file.

Each attack must fail with one line on stderr and leave the database byte-for-byte unchanged.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from litefs.names import NameError_, check_node_name

BIN = Path(sys.executable).parent
BAD_NAMES = ["../n02", "x/../n02", "", " ", "n 1", "n1\n", "n\x001", "^/etc/shadow", "-n1", ".n1", "a..b", "a" * 254]


def run(*argv: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LITEFS_DB", "EDITOR")}
    env["LITEFS_DB"] = url
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True, env=env, timeout=60)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def refused(url: str, path: Path, *argv: str) -> str:
    before, dump = digest(path), run("tabdump", "nodelist", url=url).stdout
    r = run(*argv, url=url)
    assert r.returncode == 1, r
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert digest(path) == before and run("tabdump", "nodelist", url=url).stdout == dump
    return r.stderr


@pytest.mark.parametrize("name", [n for n in BAD_NAMES if "\x00" not in n])  # argv cannot carry NUL
def test_chtab_refuses_bad_node_name(db: tuple[str, Path], name: str) -> None:
    url, path = db
    err = refused(url, path, "chtab", f"node={name}", "nodelist.groups=compute")
    assert "node name" in err or "blanks" in err  # blank-padded keys are caught by the key check first


@pytest.mark.parametrize("name", ["../n02", "x/../n02", "n\\x001"])
def test_tabrestore_refuses_bad_node_name(db: tuple[str, Path], tmp_path: Path, name: str) -> None:
    url, path = db
    csv = tmp_path / "nodelist.csv"
    csv.write_text(f'#node,groups,status,appstatus,primarysn,comments,disable\n"{name}","compute",,,,,\n')
    assert "node name" in refused(url, path, "tabrestore", str(csv))


def test_chtab_same_key_twice_is_an_error(db: tuple[str, Path]) -> None:
    url, path = db
    assert "twice" in refused(url, path, "chtab", "node=n01,node=n02", "nodelist.groups=x")


def test_tabrestore_litefile_hostile_rows(db: tuple[str, Path], tmp_path: Path) -> None:
    url, path = db
    header = "#image,file,options,comments,disable\n"
    for body in ['"ALL","/etc/a",,,\n" ALL","/etc/a",,,\n', '"ALL","/etc/a\nb",,,\n',
                 '"ALL","/.statelite/x",,,\n', '"ALL","/etc/.wh.x",,,\n', f'"ALL","/{"a" * 256}",,,\n']:
        csv = tmp_path / "litefile.csv"
        csv.write_text(header + body)
        before = digest(path)
        r = run("tabrestore", str(csv), url=url)
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, (body, r)
        assert digest(path) == before


def test_tabrestore_litetree_priority_duplicates(db: tuple[str, Path], tmp_path: Path) -> None:
    url, path = db
    csv = tmp_path / "litetree.csv"
    csv.write_text('#priority,image,directory,mntopts,comments,disable\n'
                   '"1","ALL","/a",,,\n"1.0","ALL","/b",,,\n')
    before = digest(path)
    r = run("tabrestore", str(csv), url=url)
    assert r.returncode == 1 and "same key" in r.stderr
    assert digest(path) == before


def test_inspect_refuses_traversal(db: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = db
    r = run("litefs", "inspect", "../state/n02", str(tmp_path / "mnt"), "--image", str(tmp_path), url=url)
    assert r.returncode == 1 and "node name" in r.stderr, r


@given(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,20}(\.[A-Za-z0-9_-]{1,10}){0,3}", fullmatch=True))
def test_good_names_accepted(name: str) -> None:
    assert check_node_name(name) == name


@given(st.text(max_size=30))
def test_no_accepted_name_escapes_a_directory(name: str) -> None:
    try:
        check_node_name(name)
    except NameError_:
        return
    assert "/" not in name and ".." not in name and name.strip() == name and name
    assert os.path.normpath(os.path.join("/state", name)).startswith("/state/")


def test_two_nodes_with_one_ip_are_refused(db: tuple[str, Path], tmp_path: Path) -> None:
    url, path = db
    assert run("chtab", "node=n01", "hosts.ip=10.0.0.1", url=url).returncode == 0
    before = digest(path)
    r = run("chtab", "node=n02", "hosts.ip=10.0.0.1", url=url)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r
    assert "n01" in r.stderr and "n02" in r.stderr and "10.0.0.1" in r.stderr
    assert digest(path) == before
    csv = tmp_path / "hosts.csv"
    csv.write_text('#node,ip,hostnames,otherinterfaces,comments,disable\n'
                   '"n01","10.0.0.1",,,,\n"n02","10.0.0.2",,,,\n"n03","10.0.0.2",,,,\n')
    r = run("tabrestore", str(csv), url=url)
    assert r.returncode == 1 and "n02 and n03 both have ip 10.0.0.2" in r.stderr, r
    assert digest(path) == before
    # Group rows with a regular-expression ip are patterns, not addresses: the control.
    csv.write_text('#node,ip,hostnames,otherinterfaces,comments,disable\n'
                   '"n01","10.0.0.1",,,,\n"compute","|n(\\\\d+)|10.0.1.($1+0)|",,,,\n'
                   '"gpu","|n(\\\\d+)|10.0.1.($1+0)|",,,,\n')
    assert run("tabrestore", str(csv), url=url).returncode == 0


def test_chtab_compares_priorities_as_numbers(db: tuple[str, Path]) -> None:
    url, _ = db
    for prio, col in (("1", "directory=/a"), ("1.0", "directory=/b"), ("01", "comments=x")):
        assert run("chtab", f"priority={prio}", f"litetree.{col}", url=url).returncode == 0
    out = run("tabdump", "litetree", url=url).stdout.splitlines()
    assert out[1:] == ['"1",,"/b",,"x",'], out


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "im\x01g"])
def test_osimage_names_are_plain_names(db: tuple[str, Path], name: str) -> None:
    url, path = db
    assert "osimage name" in refused(url, path, "chtab", f"imagename={name}", "osimage.profile=compute")


BAD_CELLS = [
    "|n(\\d+)|10.0.0.($1*" + "9" * 400 + ")|",  # overflows for every node
    "|n((\\d+)|x|",  # the regex does not compile
    "|n(\\d+)|x$2|",  # no group 2
    "|n(\\d+)|($1+)|",  # not arithmetic
    "/(a)\\1/x/",  # a backreference: RE2 (linear time) refuses it, as the planner would
]


@pytest.mark.parametrize("cell", BAD_CELLS)
def test_regex_cells_are_checked_when_written(db: tuple[str, Path], tmp_path: Path, cell: str) -> None:
    url, path = db
    err = refused(url, path, "chtab", "node=compute", f"noderes.nfsserver={cell}")
    assert "noderes.nfsserver" in err and len(err) < 400, err
    csv = tmp_path / "hosts.csv"
    csv.write_text('#node,ip,hostnames,otherinterfaces,comments,disable\n'
                   f'"compute","{cell}",,,,\n')
    assert "hosts.ip" in refused(url, path, "tabrestore", str(csv))


def test_good_regex_cells_are_accepted(db: tuple[str, Path]) -> None:
    url, _ = db
    for cell in ("|n(\\d+)|10.0.0.($1+0)|", "/n(\\d+)/host$1/", "|\\D+(\\d+)|(100/($1-1))|", "/install/"):
        r = run("chtab", "node=compute", f"noderes.nfsserver={cell}", url=url)
        assert r.returncode == 0, (cell, r.stderr)
