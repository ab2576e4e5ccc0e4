"""The merged view on real FUSE mounts: every litefile option, unions, whiteouts, provenance.

Each test mounts litefs over real layer directories (tests/fsutil.py) and checks what the
view shows and where writes land in the backing layers.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from pathlib import Path

import pytest

from litefs.fs import control
from litefs.options import VALID_OPTIONS, family_of, is_link
from litefs.validate import validate_rules
from tests.fsutil import (
    Layers,
    Mounter,
    is_mounted,
    kernel_served,
    litefs_cmd,
    make_plan,
    put,
    wait_for,
)

pytestmark = pytest.mark.fuse


def _erofs(fn, *a) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError) as info:
        fn(*a)
    assert info.value.errno == errno.EROFS, info.value


def test_image_only_paths_read_only(layers: Layers, litefs_mount: Mounter) -> None:
    put(layers.image, "etc/hosts", "127.0.0.1 localhost\n")
    put(layers.image, "usr/share/doc/x", "doc")
    m = litefs_mount(make_plan({"/var/tmp/": "tmpfs"}))
    v = m.path
    assert (v / "etc/hosts").read_text() == "127.0.0.1 localhost\n"
    assert sorted(os.listdir(v / "usr/share/doc")) == ["x"]
    _erofs((v / "etc/hosts").write_text, "x")
    _erofs(os.open, v / "etc/new", os.O_CREAT | os.O_WRONLY)
    _erofs(os.unlink, v / "etc/hosts")
    _erofs(os.mkdir, v / "etc/d")
    _erofs(os.chmod, v / "etc/hosts", 0o600)
    _erofs(os.rename, v / "etc/hosts", v / "etc/hosts2")
    _erofs(os.symlink, "x", v / "etc/l")
    _erofs(os.truncate, v / "etc/hosts", 0)
    _erofs(os.setxattr, v / "etc/hosts", "user.x", b"1")
    assert list(layers.tmpfs.rglob("hosts")) == []


@pytest.mark.parametrize("option", ["tmpfs", "rw", "link", "tmpfs,rw", "tempfs"])
def test_tmpfs_family(layers: Layers, litefs_mount: Mounter, option: str) -> None:
    src = layers.add_source()
    put(layers.image, "etc/motd", "image motd\n")
    put(src, "etc/motd", "source motd\n")
    put(layers.image, "etc/issue", "image issue\n")
    plan = make_plan({"/etc/motd": option, "/etc/issue": option, "/var/log/": option}, [str(src)])
    m = litefs_mount(plan)
    v = m.path
    assert (v / "etc/motd").read_text() == "source motd\n"  # first source wins
    assert (v / "etc/issue").read_text() == "image issue\n"  # else the image
    with open(v / "etc/motd", "a") as f:
        f.write("node line\n")
    assert (v / "etc/motd").read_text() == "source motd\nnode line\n"
    assert (layers.tmpfs / "etc/motd").read_text() == "source motd\nnode line\n"
    assert (src / "etc/motd").read_text() == "source motd\n"  # lowers never change
    (v / "var/log/boot.log").write_text("booted\n")
    assert (layers.tmpfs / "var/log/boot.log").exists()
    assert list(layers.persistent.iterdir()) == []
    m.stop()
    layers.fresh_tmpfs()  # reboot
    m = litefs_mount(plan, name="mnt2")
    assert (m.path / "etc/motd").read_text() == "source motd\n"
    assert not (m.path / "var/log/boot.log").exists()


@pytest.mark.parametrize("option", ["persistent", "link,persistent"])
def test_persistent_lazy_seed_then_node_wins(layers: Layers, litefs_mount: Mounter, option: str) -> None:
    src = layers.add_source()
    put(layers.image, "etc/ssh/sshd_config", "image cfg\n")
    put(src, "etc/ntp.conf", "source ntp v1\n")
    plan = make_plan({"/etc/ssh/": option, "/etc/ntp.conf": option}, [str(src)])
    m = litefs_mount(plan)
    v = m.path
    assert (v / "etc/ntp.conf").read_text() == "source ntp v1\n"
    # Until the node changes it, the path follows its seed (after a refresh).
    put(src, "etc/ntp.conf", "source ntp v2\n")
    control.refresh(str(v), ["/etc/ntp.conf"])
    assert (v / "etc/ntp.conf").read_text() == "source ntp v2\n"
    assert not (layers.persistent / "etc/ntp.conf").exists()  # lazy: nothing copied yet
    (v / "etc/ntp.conf").write_text("node ntp\n")
    assert (layers.persistent / "etc/ntp.conf").read_text() == "node ntp\n"
    put(src, "etc/ntp.conf", "source ntp v3\n")
    control.refresh(str(v), ["/etc/ntp.conf"])
    assert (v / "etc/ntp.conf").read_text() == "node ntp\n"  # the node's copy wins for good
    (v / "etc/ssh/ssh_host_key").write_text("secret\n")
    os.chmod(v / "etc/ssh/ssh_host_key", 0o600)
    m.stop()
    layers.fresh_tmpfs()
    m = litefs_mount(plan, name="mnt2")
    assert (m.path / "etc/ntp.conf").read_text() == "node ntp\n"
    assert (m.path / "etc/ssh/ssh_host_key").read_text() == "secret\n"
    assert (m.path / "etc/ssh/ssh_host_key").stat().st_mode & 0o777 == 0o600
    assert (m.path / "etc/ssh/sshd_config").read_text() == "image cfg\n"


@pytest.mark.parametrize("option", ["ro", "link,ro"])
def test_ro_follows_sources_live(layers: Layers, litefs_mount: Mounter, option: str) -> None:
    src = layers.add_source()
    put(layers.image, "opt/app/conf", "image\n")
    put(src, "opt/app/conf", "v1\n")
    m = litefs_mount(make_plan({"/opt/app/": option}, [str(src)]))
    v = m.path
    assert (v / "opt/app/conf").read_text() == "v1\n"
    _erofs((v / "opt/app/conf").write_text, "x")
    _erofs(os.unlink, v / "opt/app/conf")
    _erofs((v / "opt/app/new").write_text, "x")
    # Live: without any refresh, a change shows within a second or so.
    put(src, "opt/app/conf", "v1 edited\n")
    wait_for(lambda: (v / "opt/app/conf").read_text() == "v1 edited\n", timeout=5)
    put(src, "opt/app/conf", "v2 longer\n")
    put(src, "opt/app/added", "new file\n")
    control.refresh(str(v), ["/opt/app"])
    assert (v / "opt/app/conf").read_text() == "v2 longer\n"
    assert (v / "opt/app/added").read_text() == "new file\n"


@pytest.mark.parametrize("option", ["con", "link,con"])
def test_con_concatenates_sources(layers: Layers, litefs_mount: Mounter, option: str) -> None:
    s0, s1, s2 = layers.add_source(), layers.add_source(), layers.add_source()
    put(s0, "etc/hosts.allow", "first\n")
    put(s2, "etc/hosts.allow", "third\n")
    put(layers.image, "etc/hosts.allow", "image\n")
    put(layers.image, "etc/only-image", "image only\n")
    plan = make_plan({"/etc/hosts.allow": option, "/etc/only-image": option}, [str(s0), str(s1), str(s2)])
    m = litefs_mount(plan)
    v = m.path
    assert (v / "etc/hosts.allow").read_text() == "first\nthird\n"
    assert (v / "etc/hosts.allow").stat().st_size == len("first\nthird\n")
    assert (v / "etc/only-image").read_text() == "image only\n"
    with open(v / "etc/hosts.allow", "a") as f:
        f.write("node\n")
    assert (v / "etc/hosts.allow").read_text() == "first\nthird\nnode\n"
    assert (layers.tmpfs / "etc/hosts.allow").read_text() == "first\nthird\nnode\n"


def test_localdisk(layers: Layers, litefs_mount: Mounter) -> None:
    put(layers.image, "scratch/readme", "image\n")
    m = litefs_mount(make_plan({"/scratch/": "localdisk"}))
    (m.path / "scratch/data").write_text("big data\n")
    assert (layers.localdisk / "scratch/data").read_text() == "big data\n"
    assert (m.path / "scratch/readme").read_text() == "image\n"


def test_union_per_name_first_hit(layers: Layers, litefs_mount: Mounter) -> None:
    s0, s1 = layers.add_source(), layers.add_source()
    put(layers.image, "etc/conf.d/a", "image a")
    put(layers.image, "etc/conf.d/b", "image b")
    put(s1, "etc/conf.d/b", "s1 b")
    put(s1, "etc/conf.d/c", "s1 c")
    put(s0, "etc/conf.d/c", "s0 c")
    put(layers.tmpfs, "etc/conf.d/d", "upper d")
    m = litefs_mount(make_plan({"/etc/conf.d/": "tmpfs"}, [str(s0), str(s1)]))
    d = m.path / "etc/conf.d"
    assert sorted(os.listdir(d)) == ["a", "b", "c", "d"]
    assert {n: (d / n).read_text() for n in "abcd"} == {"a": "image a", "b": "s1 b", "c": "s0 c", "d": "upper d"}


def test_nearest_listed_ancestor_governs(layers: Layers, litefs_mount: Mounter) -> None:
    put(layers.image, "var/lib/db/data", "image data")
    put(layers.image, "var/cache/x", "x")
    m = litefs_mount(make_plan({"/var/": "tmpfs", "/var/lib/db/": "persistent"}))
    v = m.path
    (v / "var/cache/y").write_text("y")
    (v / "var/lib/db/data").write_text("node data")
    (v / "var/lib/other").write_text("o")
    assert (layers.tmpfs / "var/cache/y").exists()
    assert (layers.tmpfs / "var/lib/other").exists()
    assert (layers.persistent / "var/lib/db/data").read_text() == "node data"
    assert not (layers.tmpfs / "var/lib/db/data").exists()


def test_parent_child_combinations_the_validation_allows(layers: Layers, litefs_mount: Mounter) -> None:
    """Every (directory option, child option) pair liteimg accepts, in one mount: the child's
    writes go to the child's layer, the parent's to the parent's."""
    rules: dict[str, str] = {}
    cases = []
    n = 0
    for popt in VALID_OPTIONS:
        for copt in VALID_OPTIONS:
            if validate_rules([(f"/c{n}/", popt), (f"/c{n}/child", copt)]):
                continue
            rules[f"/c{n}/"] = popt
            rules[f"/c{n}/child"] = copt
            put(layers.image, f"c{n}/child", "image child\n")
            put(layers.image, f"c{n}/sibling", "image sibling\n")
            cases.append((n, popt, copt))
            n += 1
    assert len(cases) >= 10
    m = litefs_mount(make_plan(rules))
    upper = {"tmpfs": layers.tmpfs, "persistent": layers.persistent, "localdisk": layers.localdisk}
    layer_of = {"volatile": "tmpfs", "con": "tmpfs", "persistent": "persistent", "localdisk": "localdisk", "ro": None}
    for i, popt, copt in cases:
        for name, opt in (("child", copt), ("sibling", popt)):
            p = m.path / f"c{i}/{name}"
            assert p.read_text() == f"image {name}\n", (popt, copt)
            kind = layer_of[family_of(opt).value]
            if kind is None:
                _erofs(p.write_text, "node\n")
                continue
            p.write_text("node\n")
            assert (upper[kind] / f"c{i}/{name}").read_text() == "node\n", (popt, copt, name)
            for other in set(upper) - {kind}:
                assert not (upper[other] / f"c{i}/{name}").exists(), (popt, copt, name)
    assert any(is_link(c) for _, _, c in cases) and any(not is_link(c) for _, _, c in cases)


def test_whiteouts_hide_and_survive_remount(layers: Layers, litefs_mount: Mounter) -> None:
    put(layers.image, "srv/keep", "k")
    put(layers.image, "srv/gone", "g")
    put(layers.image, "srv/dir/inner", "i")
    plan = make_plan({"/srv/": "persistent"})
    m = litefs_mount(plan)
    v = m.path / "srv"
    os.unlink(v / "gone")
    subprocess.run(["rm", "-rf", str(v / "dir")], check=True)
    assert sorted(os.listdir(v)) == ["keep"]
    assert not (v / "gone").exists()
    # Markers are plain files (NFSv3-safe) and never shown.
    assert (layers.persistent / "srv/.wh.gone").is_file()
    assert (layers.persistent / "srv/.wh.dir").is_file()
    m.stop()
    m = litefs_mount(plan, name="mnt2")
    v = m.path / "srv"
    assert sorted(os.listdir(v)) == ["keep"]
    # Re-creating a deleted directory gives an empty (opaque) one, not the image's content.
    os.mkdir(v / "dir")
    assert os.listdir(v / "dir") == []
    (v / "gone").write_text("new")
    assert sorted(os.listdir(v)) == ["dir", "gone", "keep"]
    assert (v / "gone").read_text() == "new"


def test_tmpfs_whiteouts_last_for_the_boot_only(layers: Layers, litefs_mount: Mounter) -> None:
    put(layers.image, "tmp/old", "o")
    plan = make_plan({"/tmp/": "tmpfs"})
    m = litefs_mount(plan)
    os.unlink(m.path / "tmp/old")
    assert os.listdir(m.path / "tmp") == []
    m.stop()
    layers.fresh_tmpfs()
    m = litefs_mount(plan, name="mnt2")
    assert os.listdir(m.path / "tmp") == ["old"]


def test_rename_exdev_cases(layers: Layers, litefs_mount: Mounter) -> None:
    put(layers.image, "a/file", "f")
    put(layers.image, "a/lowerdir/x", "x")
    m = litefs_mount(make_plan({"/a/": "tmpfs", "/p/": "persistent"}))
    v = m.path
    os.mkdir(v / "p") if not (v / "p").exists() else None
    with pytest.raises(OSError) as info:
        os.rename(v / "a/file", v / "p/file")
    assert info.value.errno == errno.EXDEV
    with pytest.raises(OSError) as info:
        os.rename(v / "a/lowerdir", v / "a/moved")
    assert info.value.errno == errno.EXDEV
    # mv falls back to copy + delete and succeeds.
    subprocess.run(["mv", str(v / "a/lowerdir"), str(v / "a/moved")], check=True)
    assert (v / "a/moved/x").read_text() == "x"
    assert not (v / "a/lowerdir").exists()
    # A plain file from the image renames within its layer (copy-up, whiteout).
    os.rename(v / "a/file", v / "a/renamed")
    assert sorted(os.listdir(v / "a")) == ["moved", "renamed"]


def test_symlinks_presented_and_never_escape(layers: Layers, litefs_mount: Mounter, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    put(outside, "app/secret", "host secret")
    put(layers.image, "usr/bin/tool", "t")
    os.symlink("usr/bin", layers.image / "bin")
    os.symlink("/", layers.image / "rootlink")
    put(layers.image, "opt/app/real", "image app")
    src = layers.add_source()
    put(src, "etc/ok", "ok")
    # A source whose parent of a rule directory is a symlink out of the source tree, and a
    # relative link climbing out of it.
    os.symlink(str(outside), src / "opt")
    os.symlink("../../outside/app/secret", src / "etc/esc")
    m = litefs_mount(make_plan({"/opt/app/": "ro", "/etc/": "tmpfs"}, [str(src)]))
    v = m.path
    assert os.readlink(v / "bin") == "usr/bin"
    assert (v / "bin/tool").read_text() == "t"  # resolved inside the view
    assert os.readlink(v / "rootlink") == "/"
    # The source's opt -> outside symlink is never walked through: /opt/app is the image's.
    assert os.listdir(v / "opt/app") == ["real"]
    assert not os.path.islink(v / "opt")
    assert "source[0]: opt leads through a symlink; not followed" in m.log_text()
    # A symlink in a source is presented as the link itself (the caller resolves it in its
    # own namespace: the node's root); litefs never serves the outside tree's content.
    assert os.readlink(v / "etc/esc") == "../../outside/app/secret"
    if kernel_served(v / "etc", v):  # LITEFS_TEST_NATIVE_WRITES=1: an overlay, no provenance
        with pytest.raises(OSError) as exc:
            os.getxattr(v / "etc/ok", "user.litefs.origin")
        assert exc.value.errno == errno.ENODATA
    else:
        assert os.getxattr(v / "etc/ok", "user.litefs.origin") == f"source[0]:{src}/etc/ok".encode()
    for root, _dirs, files in os.walk(v, followlinks=False):
        for f in files:
            p = Path(root) / f
            if not p.is_symlink():
                assert p.read_bytes() != b"host secret", p


def test_mtab_is_a_link_to_proc_mounts(layers: Layers, litefs_mount: Mounter) -> None:
    put(layers.image, "etc/mtab", "stale image mtab")
    m = litefs_mount(make_plan({"/etc/mtab": "link"}))
    assert os.readlink(m.path / "etc/mtab") == "/proc/mounts"


def _explained(layers: Layers, plan_file: Path, src: Path, path: str) -> tuple[str, str]:
    """(origin, rule) as ``litefs explain`` prints them on the MN, without a mount."""
    r = litefs_cmd(
        "explain", "n01", path, "--plan", str(plan_file), "--image", str(layers.image),
        "--source", str(src), "--persistent", str(layers.persistent),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = dict(x.strip().split(": ", 1) for x in r.stdout.splitlines() if x.strip().startswith(("origin:", "rule:")))
    return lines["origin"].strip(), lines["rule"].strip()


def test_provenance_xattrs(layers: Layers, litefs_mount: Mounter) -> None:
    src = layers.add_source()
    put(layers.image, "etc/hosts", "h")
    put(src, "etc/motd", "m")
    plan = make_plan({"/etc/motd": "persistent"}, [str(src)])
    plan_file = layers.root / "provenance.json"
    plan_file.write_text(plan.to_json())
    m = litefs_mount(plan)
    v = m.path
    assert os.getxattr(v / "etc/hosts", "user.litefs.origin") == f"image:{layers.image}/etc/hosts".encode()
    assert os.getxattr(v / "etc/hosts", "user.litefs.rule") == b"none (image content, read-only)"
    assert os.getxattr(v / "etc/motd", "user.litefs.origin") == f"source[0]:{src}/etc/motd".encode()
    assert os.getxattr(v / "etc/motd", "user.litefs.rule") == b"litefile image=ALL file=/etc/motd options=persistent"
    (v / "etc/motd").write_text("changed")
    assert os.getxattr(v / "etc/motd", "user.litefs.origin") == f"persistent:{layers.persistent}/etc/motd".encode()
    # explain on the MN prints what the running view says, path by path.
    for path in ("/etc/hosts", "/etc/motd"):
        xattrs = (os.getxattr(v / path[1:], "user.litefs.origin"), os.getxattr(v / path[1:], "user.litefs.rule"))
        assert tuple(x.encode() for x in _explained(layers, plan_file, src, path)) == xattrs
    assert "user.litefs.origin" in os.listxattr(v / "etc")
    with pytest.raises(OSError) as info:
        os.setxattr(v / "etc/motd", "user.litefs.origin", b"forged")
    assert info.value.errno == errno.EPERM


def test_refresh_after_image_change(layers: Layers, litefs_mount: Mounter) -> None:
    put(layers.image, "etc/version", "1.0\n")
    m = litefs_mount(make_plan({"/tmp/": "tmpfs"}))
    v = m.path
    assert (v / "etc/version").read_text() == "1.0\n"
    assert not (v / "etc/added").exists()
    put(layers.image, "etc/version", "2.0 with more\n")
    put(layers.image, "etc/added", "added\n")
    os.unlink(layers.image / "etc/version")
    put(layers.image, "etc/version", "2.0 with more\n")
    r = litefs_cmd("refresh", str(v), "/etc/version", "/etc/added")
    assert r.returncode == 0, r.stderr
    assert (v / "etc/version").read_text() == "2.0 with more\n"
    assert (v / "etc/added").read_text() == "added\n"
    put(layers.image, "etc/version", "3\n")
    assert litefs_cmd("refresh", str(v)).returncode == 0  # everything
    assert (v / "etc/version").read_text() == "3\n"


def test_refresh_returns_once_the_kernel_dropped_its_caches(layers: Layers, litefs_mount: Mounter) -> None:
    """The next read after refresh() sees the new content: the call waits until the kernel's
    cached pages and dentries are invalidated (they are sent from a thread after the request
    returns; without the wait a few percent of these reads returned the old bytes)."""
    put(layers.image, "etc/ver", "v0000\n")
    m = litefs_mount(make_plan({"/tmp/": "tmpfs"}))
    view_file, image_file = m.path / "etc/ver", layers.image / "etc/ver"
    stale = []
    for i in range(100):
        assert view_file.read_text()  # cached pages and dentry for the kernel to drop
        if i % 2:
            with open(image_file, "r+") as f:  # rewritten in place, same size
                f.write(f"w{i:04d}\n")
        else:
            put(layers.image, "etc/ver.new", f"v{i:04d}\n")
            os.rename(layers.image / "etc/ver.new", image_file)  # replaced
        control.refresh(str(m.path), ["/etc/ver"])
        want = image_file.read_text()
        if view_file.read_text() != want:
            stale.append(want)
    assert stale == []


def test_long_names_and_reserved_names(layers: Layers, litefs_mount: Mounter) -> None:
    m = litefs_mount(make_plan({"/data/": "tmpfs"}))
    d = m.path / "data"
    d.mkdir(exist_ok=True) if not d.exists() else None
    with pytest.raises(OSError) as info:
        (d / ("x" * 256)).write_text("x")
    assert info.value.errno == errno.ENAMETOOLONG
    (d / ("y" * 255)).write_text("ok")
    if kernel_served(d, m.path):
        # The kernel does not reserve .wh. names (FUSE removes them when it serves the
        # folder again: test_fs_native_ovl); they are no marker in the tmpfs layer.
        (d / ".wh.sneaky").write_text("x")
        os.unlink(d / ".wh.sneaky")
    else:
        with pytest.raises(OSError):
            (d / ".wh.sneaky").write_text("x")
    assert os.listdir(d) == ["y" * 255]


def test_statelite_dir_in_view(layers: Layers, litefs_mount: Mounter) -> None:
    src = layers.add_source()
    put(src, "etc/x", "x")
    m = litefs_mount(make_plan({"/etc/x": "persistent"}, [str(src)]))
    sl = m.path / ".statelite"
    wait_for(lambda: {"litefile", "litetree", "statelite.log"} <= set(os.listdir(sl)))
    assert {"tmpfs", "persistent", "mnt", "litefile", "litetree", "statelite.log"} <= set(os.listdir(sl))
    assert "/etc/x" in (sl / "litefile").read_text()
    (m.path / "etc/x").write_text("node")
    assert (sl / "persistent/etc/x").read_text() == "node"


def test_refresh_keeps_mounts_laid_over_the_view(layers: Layers, litefs_mount: Mounter) -> None:
    """At boot /proc, /dev, /run... are mounted on top of the view; a refresh must not make
    the kernel detach them (it does for every dentry it is told to drop)."""
    put(layers.image, "run/.keep", "")
    put(layers.image, "etc/version", "1\n")
    m = litefs_mount(make_plan({"/tmp/": "tmpfs"}))
    run = str(m.path / "run")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", run], check=True)
    try:
        put(layers.image, "etc/version", "2\n")
        assert litefs_cmd("refresh", str(m.path)).returncode == 0
        assert litefs_cmd("refresh", str(m.path), "/run", "/etc").returncode == 0
        wait_for(lambda: (m.path / "etc/version").read_text() == "2\n")
        time.sleep(0.3)  # invalidations run asynchronously
        assert is_mounted(run) == "tmpfs"
    finally:
        subprocess.run(["umount", "-l", run], capture_output=True)


def test_an_upper_directory_with_more_subdirectories_than_the_fd_cache_lists_whole(
        layers: Layers, litefs_mount: Mounter) -> None:
    # Listing checks each upper subdirectory for an opaque marker, which caches a directory
    # fd; past the cache's size that once closed the listing's own fd (EBADF).
    from litefs.fs.layers import DIRFD_CACHE

    n = DIRFD_CACHE + 100
    for i in range(n):
        (layers.tmpfs / "var/log" / f"s{i:05d}").mkdir(parents=True)
    put(layers.image, "var/log/from-image", "x")
    m = litefs_mount(make_plan({"/var/log/": "tmpfs"}))
    names = os.listdir(m.path / "var/log")
    assert len(names) == n + 1 and "from-image" in names
