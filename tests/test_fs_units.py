"""Fast tests of the filesystem's parts without FUSE: the inode table, layer access through
dir fds, the merged-view lookup over real directories, copy-up, and --bypass selection."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from litefs.errors import MountError
from litefs.fs.copyup import copy_up, ensure_dir
from litefs.fs.inodes import ROOT_INODE, InodeTable
from litefs.fs.layers import TMP_PREFIX, LayerSet, openat2_beneath
from litefs.fs.mount import bypass_dirs
from litefs.fs.view import CON, IMPLIED, SYNTH_LINK, View
from tests.fsutil import make_plan, put

# --- inode table -----------------------------------------------------------------------------

ops = st.lists(
    st.tuples(st.sampled_from(["ref", "forget", "move", "detach"]), st.sampled_from(["/a", "/b", "/a/x", "/b/y", "/c"])),
    max_size=60,
)


@given(ops)
@settings(max_examples=200, deadline=None)
def test_inode_table_counts_and_paths_stay_consistent(script: list[tuple[str, str]]) -> None:
    table = InodeTable(root_entry=None)
    counts: dict[int, int] = {}
    for op, path in script:
        if op == "ref":
            n = table.ref(path, None)
            counts[n.ino] = counts.get(n.ino, 0) + 1
        elif op == "forget" and (node := table.at(path)) is not None:
            table.forget(node.ino, 1)
            counts[node.ino] -= 1
        elif op == "move" and table.at(path) is not None:
            table.move(path, path + "m")
        elif op == "detach":
            table.detach(path)
        # invariants: live inodes are exactly those with a positive count (plus the root);
        # a path maps to a node whose path is that path; numbers are never reused
        live = {i for i, c in counts.items() if c > 0} | {ROOT_INODE}
        assert set(table.by_ino) == live
        for p, node in table.by_path.items():
            assert node.path == p and table.by_ino.get(node.ino) is node


def test_inode_numbers_are_never_reused() -> None:
    table = InodeTable(root_entry=None)
    a = table.ref("/a", None)
    table.forget(a.ino, 1)
    b = table.ref("/a", None)
    assert b.ino != a.ino and len(table) == 2


# --- layers --------------------------------------------------------------------------------


def test_openat2_refuses_symlinks_and_dotdot(tmp_path: Path) -> None:
    (tmp_path / "root/real").mkdir(parents=True)
    os.symlink("/", tmp_path / "root/up")
    fd = os.open(tmp_path / "root", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.close(openat2_beneath(fd, "real", os.O_PATH))
        with pytest.raises(OSError) as info:
            openat2_beneath(fd, "up/etc", os.O_PATH)
        assert info.value.errno == errno.ELOOP
        with pytest.raises(OSError) as info:
            openat2_beneath(fd, "real/../../etc", os.O_PATH)
        assert info.value.errno == errno.EXDEV
    finally:
        os.close(fd)


def test_layerset_errors_name_the_layer(tmp_path: Path) -> None:
    with pytest.raises(MountError, match=r"image layer directory .*nope does not exist"):
        LayerSet(str(tmp_path / "nope"), [])
    (tmp_path / "f").write_text("")
    with pytest.raises(MountError, match=r"tmpfs layer .* is not a directory"):
        LayerSet(str(tmp_path), [], tmpfs=str(tmp_path / "f"))


# --- the merged view over real directories ---------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    d = {k: tmp_path / k for k in ("image", "s0", "s1", "tmpfs", "persistent")}
    for p in d.values():
        p.mkdir()
    return d


def _view(tree: dict[str, Path], rules: dict[str, str]) -> View:
    layers = LayerSet(str(tree["image"]), [str(tree["s0"]), str(tree["s1"])], tmpfs=str(tree["tmpfs"]), persistent=str(tree["persistent"]))
    return View(make_plan(rules, [str(tree["s0"]), str(tree["s1"])]), layers)


def _walk(view: View, path: str):  # type: ignore[no-untyped-def]
    e = view.root()
    cur = ""
    for part in path.strip("/").split("/"):
        cur += "/" + part
        e = view.locate(cur, e)
        if e is None:
            return None
    return e


def test_view_layer_order_whiteouts_and_opaque(tree: dict[str, Path]) -> None:
    put(tree["image"], "etc/a", "img")
    put(tree["s1"], "etc/a", "s1")
    put(tree["s0"], "etc/b", "s0")
    put(tree["image"], "etc/c", "img c")
    put(tree["tmpfs"], "etc/.wh.c")
    put(tree["image"], "etc/d/inner", "x")
    put(tree["tmpfs"], "etc/d/.wh..wh..opq")
    put(tree["tmpfs"], "etc/" + TMP_PREFIX + "stale", "half a copy")
    v = _view(tree, {"/etc/": "tmpfs"})
    assert _walk(v, "/etc/a").layer.name == "source[1]"
    assert _walk(v, "/etc/b").layer.name == "source[0]"
    assert _walk(v, "/etc/c") is None
    d = _walk(v, "/etc/d")
    assert d.cut and _walk(v, "/etc/d/inner") is None
    names = sorted(n for n, _ in v.entries(_walk(v, "/etc")))
    assert names == ["a", "b", "d"]
    assert sorted(v.names(_walk(v, "/etc"))) == ["a", "b", "d"]


def test_view_con_mtab_implied_and_provenance(tree: dict[str, Path]) -> None:
    put(tree["s0"], "etc/hosts.allow", "one\n")
    put(tree["s1"], "etc/hosts.allow", "two\n")
    v = _view(tree, {"/etc/hosts.allow": "con", "/etc/mtab": "link", "/var/lib/new/": "persistent"})
    con = _walk(v, "/etc/hosts.allow")
    assert con.kind == CON and [b.name for b, _, _ in con.parts] == ["source[0]", "source[1]"]
    assert v.origin(con).startswith("con source[0]:")
    mtab = _walk(v, "/etc/mtab")
    assert mtab.kind == SYNTH_LINK and mtab.target == "/proc/mounts"
    implied = _walk(v, "/var/lib/new")
    assert implied.kind == IMPLIED and implied.res.upper == "persistent"
    assert v.rule_text(implied) == "litefile image=ALL file=/var/lib/new/ options=persistent"
    assert _walk(v, "/var/lib/other") is None


# --- copy-up -------------------------------------------------------------------------------


def test_copy_up_is_complete_and_leaves_no_temp(tree: dict[str, Path]) -> None:
    src = put(tree["image"], "etc/ssh/key", b"k" * 100_000, mode=0o600)
    os.utime(src, ns=(10**9, 2 * 10**9))
    v = _view(tree, {"/etc/ssh/": "persistent"})
    up = v.layers.uppers["persistent"]
    ensure_dir(up, "etc/ssh", lambda rel: os.stat(tree["image"] / rel))
    copy_up(up, "etc/ssh/key", os.lstat(src), [(v.layers.image, "etc/ssh/key")])
    out = tree["persistent"] / "etc/ssh/key"
    assert out.read_bytes() == b"k" * 100_000
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and out.stat().st_mtime_ns == 2 * 10**9
    assert os.listdir(tree["persistent"] / "etc/ssh") == ["key"]


def test_copy_up_failure_leaves_the_old_state(tree: dict[str, Path]) -> None:
    """A source that cannot be read (here: vanished) must not leave a partial file behind."""
    src = put(tree["image"], "etc/motd", "m")
    st_ = os.lstat(src)
    os.unlink(src)
    v = _view(tree, {"/etc/": "tmpfs"})
    up = v.layers.uppers["tmpfs"]
    ensure_dir(up, "etc", lambda rel: None)
    with pytest.raises(FileNotFoundError):
        copy_up(up, "etc/motd", st_, [(v.layers.image, "etc/motd")])
    assert os.listdir(tree["tmpfs"] / "etc") == []


# --- bypass --------------------------------------------------------------------------------


def test_bypass_picks_the_highest_rule_free_directories(tree: dict[str, Path]) -> None:
    for d in ("usr/bin", "usr/lib", "var/lib/rpm", "var/log", "etc", "opt"):
        (tree["image"] / d).mkdir(parents=True)
    os.symlink("usr/lib", tree["image"] / "lib")
    v = _view(tree, {"/var/log/": "tmpfs", "/etc/motd": "tmpfs", "/opt/": "ro"})
    assert bypass_dirs(v.plan, v.layers) == ["/usr", "/var/lib"]
    v = _view(tree, {"/": "tmpfs"})
    assert bypass_dirs(v.plan, v.layers) == []
