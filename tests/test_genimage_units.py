"""genimage's parts that need no debootstrap: tree diff, batches, progress bar, postinstall,
exlist, kernel choice, the swap, the chroot guards, and resolving/writing the tables."""

from __future__ import annotations

import json
import os
import sqlite3
from argparse import Namespace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from litefs.tools import genimage_cmd

from litefs import db
from litefs.genimage import GenimageError, build, chroot, treediff
from litefs.genimage.progress import bar

# --- treediff ------------------------------------------------------------------------------

_paths = st.lists(st.text("abc", min_size=1, max_size=2), min_size=1, max_size=3).map(
    lambda parts: "/" + "/".join(parts))
_snap = st.dictionaries(_paths, st.tuples(*[st.integers(0, 3)] * 5), max_size=12)


@given(_snap, _snap)
def test_changed_covers_every_difference(before, after) -> None:
    out = treediff.changed(before, after)
    assert out == sorted(set(out))
    for p, v in after.items():
        if before.get(p) != v:
            assert p in out
    for p in before:
        if p not in after:
            # removed: reported itself or through a removed ancestor
            parts = p.split("/")
            assert any("/".join(parts[:i]) in out for i in range(2, len(parts) + 1))
    assert treediff.changed(after, after) == []


@given(st.lists(st.text(min_size=1, max_size=30).map(lambda s: "/" + s), max_size=60),
       st.integers(40, 400))
def test_batches_keep_order_and_bound(paths, limit) -> None:
    out = treediff.batches(paths, limit)
    assert [p for b in out for p in b] == paths
    for b in out:
        assert len(b) == 1 or sum(len(json.dumps(p)) + 2 for p in b) <= limit


def test_snapshot_diff_on_a_real_tree(tmp_path: Path) -> None:
    root = tmp_path / "img"
    (root / "usr/bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "gone/deep").mkdir(parents=True)
    (root / "gone/deep/f").write_text("x")
    (root / "etc/conf").write_text("a")
    (root / "etc/same").write_text("s")
    (root / "usr/bin/old").write_text("1")
    (root / "proc").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)  # never followed
    before = treediff.snapshot(root)
    assert "/link" in before and not any(p.startswith("/link/") for p in before)
    (root / "usr/bin/new").write_text("n")          # new file: it and its directory
    tmp = root / "usr/bin/.old.tmp"
    tmp.write_text("2")
    os.replace(tmp, root / "usr/bin/old")            # dpkg-style replacement (new inode)
    os.chmod(root / "etc/conf", 0o600)               # metadata only
    import shutil

    shutil.rmtree(root / "gone")
    (outside / "x").write_text("not in the image")
    out = treediff.changed(before, treediff.snapshot(root))
    assert out == ["/etc/conf", "/gone", "/usr/bin", "/usr/bin/new", "/usr/bin/old"]


def test_snapshot_limit(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / str(i)).touch()
    with pytest.raises(treediff.TooLarge):
        treediff.snapshot(tmp_path, limit=3)


def test_bar() -> None:
    assert bar(0, 10, 10) == "[..........]   0%"
    assert bar(5, 10, 10) == "[#####.....]  50%"
    assert bar(50, 10, 10) == "[##########] 100%" and bar(1, 0, 4) == "[....]   0%"


# --- build steps ---------------------------------------------------------------------------


def _spec(tmp_path: Path, **kw: object) -> build.Spec:
    from litefs.genimage import PkgList

    return build.Spec(image="i", osver="debian12", arch="x86_64", profile="p",
                      rootimgdir=tmp_path, pkglist=PkgList(), **kw)  # type: ignore[arg-type]


def test_postinstall_arguments_environment_and_failure(tmp_path: Path) -> None:
    script = tmp_path / "post"
    log = tmp_path / "log"
    script.write_text(f'#!/bin/sh\necho "$@" > {log}\nenv | grep ^IMG_ | sort >> {log}\n'
                      'exit ${FAIL:-0}\n')
    script.chmod(0o755)
    root = tmp_path / "root"
    root.mkdir()
    spec = _spec(tmp_path, postinstall=[[str(script), "x1", "x2"]],
                 env={"IMG_NAME": "i", "IMG_ARCH": "x86_64"})
    build.postinstall(spec, root)
    lines = log.read_text().splitlines()
    assert lines[0] == f"{root} debian12 x86_64 p x1 x2"
    assert "IMG_NAME=i" in lines and f"IMG_ROOTIMGDIR={root}" in lines
    spec.env["FAIL"] = "4"
    with pytest.raises(GenimageError, match=r"exited 4"):
        build.postinstall(spec, root)
    script.chmod(0o644)
    with pytest.raises(GenimageError, match="not executable"):
        build.postinstall(spec, root)


def test_exlist_never_leaves_the_image(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/share/doc/a").mkdir(parents=True)
    (root / "usr/share/doc/keep").mkdir()
    (root / "usr/share/man").mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("mine")
    (root / "usr/share/man/evil").symlink_to(victim)
    build.apply_exlist(root, ["usr/share/doc/*", "usr/share/man/evil/*"], ["usr/share/doc/keep"])
    assert not (root / "usr/share/doc/a").exists() and (root / "usr/share/doc/keep").is_dir()
    assert (victim / "precious").read_text() == "mine"


def test_kernel_choice(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "boot").mkdir(parents=True)
    with pytest.raises(GenimageError, match="no kernel in /boot"):
        build.kernel_version(_spec(tmp_path), root)
    for v in ("6.1.0-9-amd64", "6.1.0-10-amd64"):
        (root / f"boot/vmlinuz-{v}").touch()
    assert build.kernel_version(_spec(tmp_path), root) == "6.1.0-10-amd64"  # newest, not last
    assert build.kernel_version(_spec(tmp_path, kernelver="6.1.0-9-amd64"), root) == "6.1.0-9-amd64"
    with pytest.raises(GenimageError, match=r"kernel 6\.9 is not in the image"):
        build.kernel_version(_spec(tmp_path, kernelver="6.9"), root)
    assert "linux-image-6.9" in _spec(tmp_path, kernelver="6.9").install_list


def test_exchange_swaps_atomically(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "new").touch()
    (b / "old").touch()
    build.exchange(a, b)
    assert (b / "new").exists() and (a / "old").exists()
    with pytest.raises(GenimageError, match="cannot swap"):
        build.exchange(tmp_path / "none", b)


def test_chroot_guards(tmp_path: Path) -> None:
    with pytest.raises(GenimageError, match="refusing"):
        chroot.check_root(Path("/"))
    with pytest.raises(GenimageError, match="not an image root"):
        chroot.check_root(tmp_path)
    with chroot.no_daemons(tmp_path):
        p = tmp_path / "usr/sbin/policy-rc.d"
        assert os.access(p, os.X_OK) and "exit 101" in p.read_text()
    assert not p.exists()
    p.write_text("#!/bin/sh\nexit 0\n")  # the image's own one is kept as it is
    with chroot.no_daemons(tmp_path):
        pass
    assert p.read_text() == "#!/bin/sh\nexit 0\n"


# --- resolving the command line and the tables ---------------------------------------------


@pytest.fixture
def engine(tmp_path: Path):
    eng = db.open_engine(f"sqlite:///{tmp_path}/t.db")
    db.init_db(eng)
    from litefs import tabledata

    tabledata.chtab(eng, {"key": "installdir"}, [f"site.value={tmp_path}/install"])
    yield eng
    eng.dispose()


def _args(**kw: object) -> Namespace:
    base = dict(imagename=None, osver="debian12", arch="x86_64", profile="compute",
                nodebootif=None, netdrivers=None, kernelver=None, permission=None,
                noupdate=False, mirror=None)
    base.update(kw)
    return Namespace(**base)


def test_resolve_search_order_and_write_back(tmp_path: Path, engine) -> None:
    spec, back = genimage_cmd.resolve(_args(), engine)
    assert spec.image == "debian12-x86_64-statelite-compute"
    assert spec.rootimgdir == tmp_path / "install/netboot/debian12/x86_64/compute"
    assert str(spec.env["IMG_PKGLIST"]).endswith("litefs/data/genimage/compute.debian12.x86_64.pkglist")
    assert "linuximage.pkglist" not in back  # found by the search order, not pinned
    assert "openssh-server" in spec.pkglist.install and "python3-venv" in spec.install_list
    custom = tmp_path / "install/custom/netboot/debian"
    custom.mkdir(parents=True)
    (custom / "compute.pkglist").write_text("htop\n")  # the least specific name, custom dir
    post = custom / "compute.postinstall"
    post.write_text("#!/bin/sh\n")
    post.chmod(0o755)
    spec, back = genimage_cmd.resolve(_args(netdrivers="e1000e,ixgbe", permission="700"), engine)
    assert spec.pkglist.install == ["htop"] and spec.postinstall == [[str(post)]]
    assert spec.netdrivers == ["e1000e", "ixgbe"] and spec.permission == "700"
    genimage_cmd.write_back(engine, spec.image, back)
    con = sqlite3.connect(f"{tmp_path}/t.db")
    assert con.execute("select osvers, osarch, profile, provmethod, rootfstype from osimage "
                       "where imagename=?", (spec.image,)).fetchone() == (
        "debian12", "x86_64", "compute", "statelite", "nfs")
    assert con.execute("select pkglist, netdrivers, permission, rootimgdir from linuximage "
                       "where imagename=?", (spec.image,)).fetchone() == (
        None, "e1000e,ixgbe", "700", str(spec.rootimgdir))
    con.close()
    # By name alone, from the rows just written.
    spec2, _ = genimage_cmd.resolve(_args(imagename=spec.image, osver=None, arch=None,
                                          profile=None), engine)
    assert (spec2.osver, spec2.profile, spec2.netdrivers) == ("debian12", "compute",
                                                              ["e1000e", "ixgbe"])


@pytest.mark.parametrize("kw,message", [
    ({"osver": "sles15"}, "unknown OS version 'sles15'"),
    ({"arch": "aarch64"}, "unknown architecture 'aarch64'"),
    ({"profile": "nosuch"}, "unknown profile 'nosuch'"),
])
def test_resolve_rejects(engine, kw, message) -> None:
    with pytest.raises(GenimageError, match=message):
        genimage_cmd.resolve(_args(**kw), engine)


def test_cli_usage_and_dryrun(tmp_path: Path, engine, capsys) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    assert genimage_cmd.main(["--db", url]) == 2
    assert "give -o OSVER" in capsys.readouterr().err
    assert genimage_cmd.main(["--db", url, "-o", "debian12", "-a", "x86_64", "-p", "compute",
                              "--permission", "9x"]) == 2
    assert genimage_cmd.main(["--db", url, "--dryrun", "-o", "debian12", "-a", "x86_64",
                              "-p", "minimal"]) == 0
    out = capsys.readouterr().out
    assert "1. debootstrap" in out and "linux-image-cloud-amd64" in out
    assert not (tmp_path / "install").exists()  # nothing made
