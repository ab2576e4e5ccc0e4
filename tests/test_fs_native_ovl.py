"""--native-writes over lower content: a tmpfs rule folder the image has files in is served by
a kernel overlay (upper: the tmpfs layer's folder, lowers: the sources and the image). The
same files and deletions whichever way it is served, and nothing lost when a plan change
hands it from the kernel to FUSE and back (litefs.fs.native, litefs.fs.kwhiteouts)."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from tests.fsutil import (
    Layers,
    LitefsMount,
    Mounter,
    is_mounted,
    litefs_cmd,
    make_plan,
    put,
    wait_for,
)

pytestmark = [pytest.mark.fuse]

RULES = {"/var/log/": "tmpfs", "/etc/motd": "tmpfs"}
#: a rule below /var/log: the folder is no longer one layer's, FUSE serves it
FUSE_RULES = {**RULES, "/var/log/keep/": "persistent"}


def _image(layers: Layers) -> None:
    put(layers.image, "var/log/boot.log", "image log\n")
    put(layers.image, "var/log/old.log", "old\n")
    put(layers.image, "var/log/app/a.log", "a\n")
    put(layers.image, "var/log/app/b.log", "b\n")
    put(layers.image, "var/log/shipped", "from the image\n")
    os.chmod(layers.image / "var/log", 0o1777)  # a plain user may write there (the attack test)
    put(layers.image, "etc/motd", "motd\n")


def _tree(top: Path) -> dict[str, str | None]:
    """Every name below ``top`` with its content (None: a directory)."""
    out: dict[str, str | None] = {}
    for d, dirs, files in os.walk(top):
        rel = os.path.relpath(d, top)
        for n in dirs:
            out[os.path.normpath(os.path.join(rel, n))] = None
        for n in files:
            out[os.path.normpath(os.path.join(rel, n))] = Path(d, n).read_text()
    return out


def _switch(m: LitefsMount, layers: Layers, rules: dict[str, str], kernel: bool) -> None:
    pf = layers.root / "plan-next.json"
    pf.write_text(make_plan(rules).to_json())
    r = litefs_cmd("refresh", str(m.path), "--plan", str(pf))
    assert r.returncode == 0, r.stdout + r.stderr
    want = "overlay" if kernel else None
    wait_for(lambda: is_mounted(str(m.path) + "/var/log") == want)


def test_the_kernel_serves_a_tmpfs_rule_over_image_content(layers: Layers, litefs_mount: Mounter) -> None:
    _image(layers)
    m = litefs_mount(make_plan(RULES), extra=["--native-writes"])
    v = m.path
    assert is_mounted(f"{v}/var/log") == "overlay"
    opts = subprocess.run(["findmnt", "-n", "-o", "OPTIONS", f"{v}/var/log"], capture_output=True, text=True).stdout
    assert "redirect_dir" not in opts or "redirect_dir=off" in opts
    assert (v / "var/log/boot.log").read_text() == "image log\n"
    # Writes: a new file, an image file overwritten (copied up), one deleted.
    (v / "var/log/new.log").write_text("new\n")
    (v / "var/log/boot.log").write_text("rewritten\n")
    os.unlink(v / "var/log/old.log")
    assert (layers.tmpfs / "var/log/new.log").read_text() == "new\n"
    assert (layers.tmpfs / "var/log/boot.log").read_text() == "rewritten\n"
    wh = os.lstat(layers.tmpfs / "var/log/old.log")  # the kernel's record, in the tmpfs layer
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert (layers.image / "var/log/old.log").exists()  # the image is never written
    # The overlay's work directory is in the tmpfs layer, never shown by the view.
    assert any(n.startswith(".wh..wh..ovlwork.") for n in os.listdir(layers.tmpfs))
    assert not any(n.startswith(".wh.") for n in os.listdir(v / ".statelite/tmpfs"))
    before = _tree(v / "var/log")
    assert "old.log" not in before and before["boot.log"] == "rewritten\n"
    # Handed to FUSE: the same files, the deletion still hides the image's file.
    _switch(m, layers, FUSE_RULES, kernel=False)
    after = _tree(v / "var/log")
    assert {k: c for k, c in after.items() if not k.startswith("keep")} == before
    assert not (v / "var/log/old.log").exists()
    # FUSE writes the same format: a deletion through FUSE is the kernel's record too.
    os.unlink(v / "var/log/app/a.log")
    wh = os.lstat(layers.tmpfs / "var/log/app/a.log")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    before = _tree(v / "var/log")
    # And back to the kernel: still hidden, nothing else changed.
    _switch(m, layers, RULES, kernel=True)
    assert _tree(v / "var/log") == {k: c for k, c in before.items() if not k.startswith("keep")}
    assert not (v / "var/log/app/a.log").exists()
    # A name deleted then made again, through the kernel then through FUSE.
    (v / "var/log/old.log").write_text("again\n")
    _switch(m, layers, FUSE_RULES, kernel=False)
    assert (v / "var/log/old.log").read_text() == "again\n"
    # litefs explain answers below the kernel-served folder, through FUSE and kernel alike.
    r = litefs_cmd("explain", "--plan", str(layers.root / "plan-mnt.json"), "n01", "/var/log/boot.log")
    assert r.returncode == 0 and "/var/log/" in r.stdout, r.stdout + r.stderr
    assert "kernel: with --native-writes /var/log is served by the kernel" in r.stdout, r.stdout
    assert "no provenance xattrs" in r.stdout
    # Where the kernel serves it, the provenance xattrs are not there (FUSE has them).
    assert os.getxattr(v / "var/log/boot.log", "user.litefs.origin").startswith(b"tmpfs:")
    _switch(m, layers, RULES, kernel=True)
    with pytest.raises(OSError) as exc:
        os.getxattr(v / "var/log/boot.log", "user.litefs.origin")
    assert exc.value.errno == errno.ENODATA
    r = litefs_cmd("explain", "--plan", str(layers.root / "plan-mnt.json"), "n01", "/etc/motd")
    assert r.returncode == 0 and "kernel:" not in r.stdout, r.stdout


def test_an_opaque_directory_means_the_same_to_both(layers: Layers, litefs_mount: Mounter) -> None:
    _image(layers)
    m = litefs_mount(make_plan(RULES), extra=["--native-writes"])
    v = m.path
    assert is_mounted(f"{v}/var/log") == "overlay"
    # Through the kernel: an image directory removed, then made again: empty, then one file.
    subprocess.run(["rm", "-rf", f"{v}/var/log/app"], check=True)
    os.mkdir(v / "var/log/app")
    assert os.listdir(v / "var/log/app") == []
    (v / "var/log/app/c.log").write_text("c\n")
    assert os.getxattr(layers.tmpfs / "var/log/app", "trusted.overlay.opaque") == b"y"
    _switch(m, layers, FUSE_RULES, kernel=False)
    assert os.listdir(v / "var/log/app") == ["c.log"]  # the image's a.log, b.log stay hidden
    # Through FUSE: the same again, and the kernel sees FUSE's opaque directory as one.
    subprocess.run(["rm", "-rf", f"{v}/var/log/app"], check=True)
    assert not (v / "var/log/app").exists()
    os.mkdir(v / "var/log/app")
    assert os.listdir(v / "var/log/app") == []
    _switch(m, layers, RULES, kernel=True)
    assert os.listdir(v / "var/log/app") == []
    assert sorted(os.listdir(v / "var/log")) == ["app", "boot.log", "old.log", "shipped"]


def test_open_files_and_writes_in_flight_cross_the_switch(layers: Layers, litefs_mount: Mounter) -> None:
    _image(layers)
    m = litefs_mount(make_plan(RULES), extra=["--native-writes"])
    v = m.path
    assert is_mounted(f"{v}/var/log") == "overlay"
    # An image file opened for writing through the kernel (copied up at open), a new file
    # appended to by a thread while the folder changes hands twice.
    img = os.open(v / "var/log/boot.log", os.O_RDWR | os.O_APPEND)
    stop = threading.Event()
    written: list[int] = []
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            fd = os.open(v / "var/log/stream.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                i = 0
                while not stop.is_set() or i < 200:
                    os.write(fd, f"{i:06d}\n".encode())
                    written.append(i)
                    i += 1
            finally:
                os.close(fd)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    try:
        os.write(img, b"kernel\n")
        _switch(m, layers, FUSE_RULES, kernel=False)
        os.write(img, b"fuse\n")
        # Through FUSE now, a file opened there stays open across the switch back.
        fuse_fd = os.open(v / "var/log/via-fuse.log", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fuse_fd, b"one ")
        _switch(m, layers, RULES, kernel=True)
        os.write(fuse_fd, b"two")
        os.fsync(fuse_fd)
        os.close(fuse_fd)
        os.write(img, b"kernel again\n")
        os.fsync(img)
    finally:
        stop.set()
        t.join(30)
        os.close(img)
    assert not errors, errors
    assert (v / "var/log/boot.log").read_text() == "image log\nkernel\nfuse\nkernel again\n"
    assert (v / "var/log/via-fuse.log").read_text() == "one two"
    assert (v / "var/log/stream.log").read_text() == "".join(f"{i:06d}\n" for i in written)
    _switch(m, layers, FUSE_RULES, kernel=False)
    assert (v / "var/log/boot.log").read_text() == "image log\nkernel\nfuse\nkernel again\n"
    assert (v / "var/log/stream.log").read_text() == "".join(f"{i:06d}\n" for i in written)


def test_renames_in_and_out_of_the_overlay(layers: Layers, litefs_mount: Mounter) -> None:
    _image(layers)
    m = litefs_mount(make_plan(RULES), extra=["--native-writes"])
    v = m.path
    assert is_mounted(f"{v}/var/log") == "overlay"
    os.rename(v / "var/log/boot.log", v / "var/log/boot.1")  # a file: copied up, renamed
    assert not (v / "var/log/boot.log").exists()
    # A merged directory (image content below): EXDEV without redirect_dir, as through FUSE;
    # mv then copies and removes, and the result is the same to FUSE.
    with pytest.raises(OSError) as exc:
        os.rename(v / "var/log/app", v / "var/log/app.1")
    assert exc.value.errno == errno.EXDEV
    r = subprocess.run(["mv", f"{v}/var/log/app", f"{v}/var/log/app.1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # Out of the overlay into a FUSE-served folder: a mount boundary, EXDEV.
    with pytest.raises(OSError) as exc:
        os.rename(v / "var/log/boot.1", v / "etc/boot.1")
    assert exc.value.errno == errno.EXDEV
    before = _tree(v / "var/log")
    assert sorted(before) == ["app.1", "app.1/a.log", "app.1/b.log", "boot.1", "old.log", "shipped"]
    _switch(m, layers, FUSE_RULES, kernel=False)
    assert {k: c for k, c in _tree(v / "var/log").items() if not k.startswith("keep")} == before


def test_a_plain_user_cannot_plant_deletions(layers: Layers, litefs_mount: Mounter) -> None:
    _image(layers)
    m = litefs_mount(make_plan(RULES), extra=["--native-writes"])
    v = m.path
    assert is_mounted(f"{v}/var/log") == "overlay"

    def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv],
                              cwd=f"{v}/var/log", capture_output=True, text=True)

    # The kernel's record is a character device: a plain user cannot make one.
    r = as_nobody("mknod", "shipped.x", "c", "0", "0")
    assert r.returncode != 0 and "Operation not permitted" in r.stderr, r.stderr
    # What FUSE's .wh. format would take for deletions: plain names to the kernel, then gone
    # (never shown by the view) once FUSE serves the folder; the image's files stay visible.
    for name in (".wh.shipped", ".wh..wh..opq"):
        r = as_nobody("touch", name)
        assert r.returncode == 0, r.stderr
    _switch(m, layers, FUSE_RULES, kernel=False)
    assert (v / "var/log/shipped").read_text() == "from the image\n"
    assert sorted(os.listdir(v / "var/log")) == ["app", "boot.log", "keep", "old.log", "shipped"]
    assert not any(n.startswith(".wh.") for n in os.listdir(layers.tmpfs / "var/log"))
    _switch(m, layers, RULES, kernel=True)
    assert (v / "var/log/shipped").read_text() == "from the image\n"
    assert sorted(os.listdir(v / "var/log")) == ["app", "boot.log", "old.log", "shipped"]


def test_refresh_lays_the_overlay_again_over_an_image_update(layers: Layers, litefs_mount: Mounter) -> None:
    _image(layers)
    m = litefs_mount(make_plan(RULES), extra=["--native-writes"])
    v = m.path
    assert sorted(os.listdir(v / "var/log")) == ["app", "boot.log", "old.log", "shipped"]
    (v / "var/log/mine").write_text("mine\n")
    put(layers.image, "var/log/update.log", "updated\n")
    r = litefs_cmd("refresh", str(v), "/var/log")
    assert r.returncode == 0, r.stderr
    # The overlay is lifted (FUSE shows the update at once), then laid again from a thread.
    wait_for(lambda: is_mounted(f"{v}/var/log") == "overlay" and "update.log" in os.listdir(v / "var/log"))
    assert (v / "var/log/update.log").read_text() == "updated\n"
    assert (v / "var/log/mine").read_text() == "mine\n"


def test_markers_of_an_earlier_mount_are_converted(layers: Layers, litefs_mount: Mounter) -> None:
    _image(layers)
    # A tmpfs layer an earlier mount (without --native-writes) left with .wh. markers.
    put(layers.tmpfs, "var/log/.wh.old.log")
    put(layers.tmpfs, "var/log/app/.wh..wh..opq")
    m = litefs_mount(make_plan(RULES), extra=["--native-writes"])
    v = m.path
    assert is_mounted(f"{v}/var/log") == "overlay"
    assert sorted(os.listdir(v / "var/log")) == ["app", "boot.log", "shipped"]
    assert os.listdir(v / "var/log/app") == []
    # The layer's format stays: mounted again without the option, FUSE reads it the same.
    m.stop()
    m2 = litefs_mount(make_plan(RULES), name="again")
    assert sorted(os.listdir(m2.path / "var/log")) == ["app", "boot.log", "shipped"]
    assert os.listdir(m2.path / "var/log/app") == []


def test_fuse_renames_over_the_kernels_deletions(layers: Layers, litefs_mount: Mounter) -> None:
    """FUSE serving the folder writes the kernel's format in every operation: a directory
    moved over a deleted name, a file over another, a removed merged directory."""
    _image(layers)
    put(layers.image, "var/log/olddir/x", "x\n")
    m = litefs_mount(make_plan(FUSE_RULES), extra=["--native-writes"])
    v = m.path
    assert is_mounted(f"{v}/var/log") is None  # FUSE serves it
    os.unlink(v / "var/log/shipped")
    os.mkdir(v / "var/log/newdir")
    (v / "var/log/newdir/n").write_text("n\n")
    os.rename(v / "var/log/newdir", v / "var/log/shipped")  # a directory over the deletion
    (v / "var/log/f").write_text("f\n")
    os.rename(v / "var/log/f", v / "var/log/old.log")  # a file over an image file
    subprocess.run(["rm", "-rf", f"{v}/var/log/olddir"], check=True)  # a merged directory
    before = {k: c for k, c in _tree(v / "var/log").items() if not k.startswith("keep")}
    assert before == {"app": None, "app/a.log": "a\n", "app/b.log": "b\n", "boot.log": "image log\n",
                      "old.log": "f\n", "shipped": None, "shipped/n": "n\n"}
    assert not any(n.startswith(".wh.") for n in os.listdir(layers.tmpfs / "var/log"))
    _switch(m, layers, RULES, kernel=True)
    assert _tree(v / "var/log") == before


def test_a_refused_link_over_a_deleted_name_keeps_it_deleted(layers: Layers, litefs_mount: Mounter) -> None:
    """FUSE making a name over the kernel's record of its deletion replaces the record in one
    step: a link refused (EXDEV) leaves the name deleted, a symlink or file made there shows."""
    _image(layers)
    m = litefs_mount(make_plan(FUSE_RULES), extra=["--native-writes"])
    v = m.path
    os.unlink(v / "var/log/shipped")
    os.unlink(v / "var/log/old.log")
    (v / "var/log/keep").mkdir(exist_ok=True)
    (v / "var/log/keep/p").write_text("p")
    with pytest.raises(OSError) as exc:
        os.link(v / "var/log/keep/p", v / "var/log/shipped")  # the persistent layer's file
    assert exc.value.errno == errno.EXDEV
    assert not os.path.lexists(v / "var/log/shipped")
    os.symlink("boot.log", v / "var/log/shipped")
    assert os.readlink(v / "var/log/shipped") == "boot.log"
    fd = os.open(v / "var/log/old.log", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"new")
    os.close(fd)
    assert (v / "var/log/old.log").read_text() == "new"
    assert not any(n.startswith(".wh.") for n in os.listdir(layers.tmpfs / "var/log"))
    _switch(m, layers, RULES, kernel=True)
    assert os.readlink(v / "var/log/shipped") == "boot.log"
    assert (v / "var/log/old.log").read_text() == "new"
