"""Copy-up crash safety and persistence across remounts, with real ``kill -9``.

A large image file under a persistent rule is opened for writing (which starts the copy-up)
and the daemon is killed at varying moments. Whatever the moment, the persistent layer must
hold either no copy or a complete one, and a fresh mount must show an intact file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from litefs.fs import control
from tests.fsutil import Layers, LitefsMount, Mounter, make_plan, put, wait_for

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

BIG = 192 << 20


def _digest(path: os.PathLike[str] | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def test_kill9_during_copy_up_never_tears(layers: Layers, litefs_mount: Mounter) -> None:
    block = os.urandom(1 << 20)
    big = layers.image / "data/big.bin"
    big.parent.mkdir(parents=True)
    with open(big, "wb") as f:
        for i in range(BIG >> 20):
            f.write(i.to_bytes(4, "little") + block[4:])
    original = _digest(big)
    plan = make_plan({"/data/": "persistent"})
    rng = random.Random(1234)
    outcomes = set()
    for attempt in range(6):
        m = litefs_mount(plan, name=f"mnt{attempt}", expect_errors=True)
        target = m.path / "data/big.bin"
        # The writer changes the first byte: opening it for writing copies the file up first.
        writer = subprocess.Popen(
            [sys.executable, "-c", f"f = open({str(target)!r}, 'r+b'); f.write(b'X'); f.close()"],
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.0, 0.4))
        m.kill9()
        writer.kill()
        writer.wait()
        up = layers.persistent / "data/big.bin"
        if up.exists():
            assert up.stat().st_size == BIG, f"torn copy of {up.stat().st_size} bytes"
            with open(up, "rb") as f:
                first = f.read(1)
            d = _digest(up)
            if first == b"X":
                outcomes.add("new")
                with open(big, "rb") as f:
                    expected = hashlib.sha256(b"X" + f.read()[1:]).hexdigest()
                assert d == expected
            else:
                outcomes.add("copied")
                assert d == original
            os.unlink(up)  # start the next round from the image again
        else:
            outcomes.add("old")
        leftovers = [p.name for p in (layers.persistent / "data").iterdir()] if (layers.persistent / "data").exists() else []
        assert all(n.startswith(".wh..wh..tmp.") for n in leftovers), leftovers
    # The view over whatever a crash left behind is intact, and the stale temp files are
    # hidden (and swept by the next copy-up in that directory).
    m = litefs_mount(plan, name="final")
    assert os.listdir(m.path / "data") == ["big.bin"]
    assert _digest(m.path / "data/big.bin") == original
    with open(m.path / "data/big.bin", "r+b") as f:
        f.write(b"Y")
    names = os.listdir(layers.persistent / "data")
    assert names == ["big.bin"], names
    assert outcomes, outcomes


def test_persistent_kept_tmpfs_gone_across_remount(layers: Layers, litefs_mount: Mounter) -> None:
    put(layers.image, "etc/hostname", "image\n")
    plan = make_plan({"/etc/hostname": "persistent", "/var/tmp/": "tmpfs", "/root/": "persistent"})
    m = litefs_mount(plan)
    (m.path / "etc/hostname").write_text("n01\n")
    (m.path / "var/tmp/scratch").write_text("temp")
    (m.path / "root/.bash_history").write_text("ls\n")
    os.symlink("target", m.path / "root/link")
    m.stop()
    layers.fresh_tmpfs()
    m = litefs_mount(plan, name="mnt2")
    assert (m.path / "etc/hostname").read_text() == "n01\n"
    assert (m.path / "root/.bash_history").read_text() == "ls\n"
    assert os.readlink(m.path / "root/link") == "target"
    assert not (m.path / "var/tmp/scratch").exists()


def test_persistent_store_vanishing_gives_errors_not_corruption(
    layers: Layers, litefs_mount: Mounter, tmp_path: Path
) -> None:
    """The persistent store is itself a FUSE mount whose server dies mid-run (like a dead
    NFS server): litefs answers with the store's errno and logs it, and never falls back to
    the seed or writes anywhere else."""
    inner = Layers(tmp_path / "inner", tmp_path / "inner/i", tmp_path / "inner/t", tmp_path / "inner/p", tmp_path / "inner/l")
    for d in (inner.image, inner.tmpfs, inner.persistent, inner.localdisk):
        d.mkdir(parents=True)
    store = LitefsMount(inner, make_plan({"/": "tmpfs"}), tmp_path / "store", [], expect_errors=True).start()
    try:
        layers.persistent = store.path / ".statelite/tmpfs"  # raw: any name may be created
        put(layers.image, "p/seed", "seed")
        m = litefs_mount(make_plan({"/p/": "persistent"}), expect_errors=True)
        (m.path / "p/seed").write_text("node's own")
        assert (inner.tmpfs / "p/seed").read_text() == "node's own"
        store.kill9()
        with pytest.raises(OSError) as info:
            (m.path / "p/new").write_text("x")
        assert info.value.errno in (errno.ENOTCONN, errno.EIO)
        with pytest.raises(OSError) as info:
            open(m.path / "p/seed").close()
        assert info.value.errno in (errno.ENOTCONN, errno.EIO)
        assert "backing store fault" in m.log_text()
        assert not (layers.image / "p/new").exists()
    finally:
        store.stop()
        if store.proc is None:
            store.lazy_unmount()


def test_source_vanishing_gives_errors_and_a_log_line(layers: Layers, litefs_mount: Mounter, tmp_path: Path) -> None:
    """A litetree source served by a server that dies mid-run: paths it governs answer with
    the store's errno (never silently the image's content), and the log says so."""
    inner = Layers(tmp_path / "inner", tmp_path / "inner/i", tmp_path / "inner/t", tmp_path / "inner/p", tmp_path / "inner/l")
    for d in (inner.image, inner.tmpfs, inner.persistent, inner.localdisk):
        d.mkdir(parents=True)
    put(inner.image, "etc/app.conf", "from the source\n")
    srv = LitefsMount(inner, make_plan({"/tmp/": "tmpfs"}), tmp_path / "srv", [], expect_errors=True).start()
    try:
        layers.sources.append(srv.path)
        put(layers.image, "etc/app.conf", "image default\n")
        m = litefs_mount(make_plan({"/etc/app.conf": "ro"}, [str(srv.path)]), expect_errors=True)
        assert (m.path / "etc/app.conf").read_text() == "from the source\n"
        srv.kill9()
        control.refresh(str(m.path), ["/etc/app.conf"])
        with pytest.raises(OSError) as info:
            (m.path / "etc/app.conf").read_text()
        assert info.value.errno in (errno.ENOTCONN, errno.EIO)
        wait_for(lambda: "backing store fault" in m.log_text())
    finally:
        srv.stop()
