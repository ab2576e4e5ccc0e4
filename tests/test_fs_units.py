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
from litefs.fs.inodes import (
    HASHED_BIT,
    INO_BITS,
    RAW_BIT,
    ROOT_INODE,
    InodeTable,
    backing_ino,
    layer_slot,
    path_ino,
)
from litefs.fs.layers import TMP_PREFIX, LayerSet, openat2_beneath
from litefs.fs.mount import bypass_dirs
from litefs.fs.view import EntryKind, View
from tests.fsutil import make_plan, put

# --- inode table -----------------------------------------------------------------------------

ops = st.lists(
    st.tuples(
        st.sampled_from(["ref", "forget", "move", "detach"]),
        st.sampled_from(["/a", "/b", "/a/x", "/b/y", "/c"]),
        st.integers(min_value=2, max_value=5),
    ),
    max_size=60,
)


@given(ops)
@settings(max_examples=200, deadline=None)
def test_inode_table_counts_and_paths_stay_consistent(script: list[tuple[str, str, int]]) -> None:
    """Nodes are numbered by the caller (the backing identity); several paths may share one
    (hard links). Invariants: live nodes are exactly those with a positive count (plus the
    root); a path maps to a node that lists it among its names."""
    table = InodeTable(root_entry=None)
    counts: dict[int, int] = {}
    for op, path, ino in script:
        if op == "ref":
            n = table.ref(path, None, ino)
            counts[n.ino] = counts.get(n.ino, 0) + 1
            assert n.path == path
        elif op == "forget" and (node := table.at(path)) is not None:
            table.forget(node.ino, 1)
            counts[node.ino] -= 1
        elif op == "move" and table.at(path) is not None:
            table.move(path, path + "m")
        elif op == "detach":
            table.detach(path)
        live = {i for i, c in counts.items() if c > 0} | {ROOT_INODE}
        assert set(table.by_ino) == live
        for p, node in table.by_path.items():
            assert p in node.paths and table.by_ino.get(node.ino) is node


def test_hard_link_names_share_one_node_and_survive_one_unlink() -> None:
    table = InodeTable(root_entry=None)
    a = table.ref("/a", None, 7)
    b = table.ref("/b", None, 7)
    assert a is b and a.path == "/b" and set(a.paths) == {"/a", "/b"}
    table.detach("/b")
    assert a.path == "/a" and table.at("/a") is a


def test_numbers_follow_the_backing_file_and_layers_never_collide() -> None:
    slots = [layer_slot(n) for n in ("image", "tmpfs", "persistent", "localdisk", "source[0]", "source[9]")]
    raw = [s | RAW_BIT for s in slots]
    assert len(set(slots + raw)) == len(slots) * 2
    nums = {backing_ino(s, 5, 5, 1234) for s in slots + raw}
    assert len(nums) == len(slots) * 2 and ROOT_INODE not in nums
    # the layer's device is not part of the direct form: a store remounted under another
    # anonymous device number keeps its numbers
    assert backing_ino(2, 5, 5, 99) == backing_ino(2, 6, 6, 99) == (2 << INO_BITS) | 99
    # another device below the layer, or a number too wide: hashed, bit 63 set
    assert backing_ino(2, 5, 6, 99) & HASHED_BIT and backing_ino(2, 5, 5, 1 << 60) & HASHED_BIT
    assert backing_ino(2, 5, 6, 99) != backing_ino(3, 5, 6, 99)
    assert path_ino("/.statelite") == path_ino("/.statelite") > ROOT_INODE


@given(st.integers(min_value=0, max_value=(1 << INO_BITS) - 1), st.integers(min_value=0, max_value=(1 << INO_BITS) - 1))
def test_direct_numbers_are_injective(a: int, b: int) -> None:
    assert (backing_ino(1, 0, 0, a) == backing_ino(1, 0, 0, b)) == (a == b)
    assert backing_ino(1, 0, 0, a) != backing_ino(2, 0, 0, b)


def test_copy_up_keeps_the_number_the_kernel_holds() -> None:
    table = InodeTable(root_entry=None)
    lower = (1, 5, 10)
    n = table.ref("/w/f", None, table.number("/w/f", lower, backing_ino(*lower[:1], 5, 5, 10), False))
    upper = (2, 7, 44)
    kept = table.number("/w/f", upper, backing_ino(2, 7, 7, 44), False)
    assert kept == n.ino
    table.forget(n.ino, 1)  # evicted: the alias still answers
    assert table.number("/w/f", upper, backing_ino(2, 7, 7, 44), False) == n.ino


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
    assert con.kind is EntryKind.CON and [b.name for b, _, _ in con.parts] == ["source[0]", "source[1]"]
    assert v.origin(con).startswith("con source[0]:")
    mtab = _walk(v, "/etc/mtab")
    assert mtab.kind is EntryKind.SYNTH_LINK and mtab.target == "/proc/mounts"
    implied = _walk(v, "/var/lib/new")
    assert implied.kind is EntryKind.IMPLIED and implied.res.upper == "persistent"
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
    # /usr by its children but /usr/lib, which systemd-shutdown runs from to the end
    assert bypass_dirs(v.plan, v.layers) == ["/usr/bin", "/var/lib"]
    v = _view(tree, {"/": "tmpfs"})
    assert bypass_dirs(v.plan, v.layers) == []


def test_bypass_never_binds_where_the_api_file_systems_go(tree: dict[str, Path]) -> None:
    # The image ships /dev (static nodes), /proc, /sys, /run: binding them would make
    # dracut's switch_root detach the real ones instead of moving them into the view.
    for d in ("dev", "proc", "sys", "run", "srv"):
        (tree["image"] / d).mkdir(parents=True)
    v = _view(tree, {"/var/log/": "tmpfs"})
    assert bypass_dirs(v.plan, v.layers) == ["/srv"]
