"""--native-writes: writable rule folders with nothing below them in any lower layer are bound
from their layer, and the kernel serves them (litefs.fs.native); the same files either way."""

from __future__ import annotations

import errno
import os
import stat
import subprocess

import pytest

from tests.fsutil import Layers, Mounter, is_mounted, litefs_cmd, make_plan, put, wait_for

pytestmark = [pytest.mark.fuse]

RULES = {"/tmp/": "tmpfs", "/var/tmp/": "tmpfs", "/var/log/": "tmpfs", "/var/lib/state/": "persistent",
         "/etc/motd": "tmpfs", "/srv/data/": "persistent"}


def _image(layers: Layers) -> None:
    (layers.image / "tmp").mkdir()
    os.chmod(layers.image / "tmp", 0o1777)
    (layers.image / "var/tmp").mkdir(parents=True)
    os.chmod(layers.image / "var/tmp", 0o1777)
    put(layers.image, "var/log/boot.log", "image log\n")  # lower content: FUSE keeps it
    put(layers.image, "etc/motd", "motd\n")
    put(layers.image, "srv/data/shipped", "data\n")  # persistent over lower content: FUSE merges


def test_empty_writable_folders_are_bound_from_their_layer(layers: Layers, litefs_mount: Mounter) -> None:
    _image(layers)
    # Left from an earlier boot: a real file, a whiteout marker and a stale copy-up temp.
    put(layers.tmpfs, "tmp/keep", "kept\n")
    put(layers.tmpfs, "tmp/.wh.gone")
    put(layers.tmpfs, "tmp/sub/.wh..wh..tmp.0123abcd", "half a copy")
    m = litefs_mount(make_plan(RULES), extra=["--native-writes"])
    v = str(m.path)
    for bound in ("/tmp", "/var/tmp", "/var/lib/state"):
        assert is_mounted(v + bound) is not None, bound
    assert is_mounted(v + "/var/log") == "overlay"  # tmpfs over image content (test_fs_native_ovl)
    for fuse in ("/var/lib", "/etc", "/srv/data"):
        assert is_mounted(v + fuse) is None, fuse
    # The same files as through FUSE: bookkeeping names swept, the folder's metadata kept.
    assert sorted(os.listdir(v + "/tmp")) == ["keep", "sub"]
    assert os.listdir(v + "/tmp/sub") == []
    assert not (layers.tmpfs / "tmp/.wh.gone").exists()
    # A folder the layer did not have yet is made with the image folder's mode.
    assert stat.S_IMODE(os.stat(v + "/var/tmp").st_mode) == 0o1777
    assert stat.S_IMODE(os.stat(layers.tmpfs / "var/tmp").st_mode) == 0o1777
    assert (m.path / "tmp/keep").read_text() == "kept\n"
    # Writes land in the layer the rule names, served by the kernel.
    (m.path / "tmp/new").write_text("new\n")
    (m.path / "var/lib/state/db").write_text("kept across reboots\n")
    assert (layers.tmpfs / "tmp/new").read_text() == "new\n"
    assert (layers.persistent / "var/lib/state/db").read_text() == "kept across reboots\n"
    assert (m.path / "var/log/boot.log").read_text() == "image log\n"
    # A mount boundary: renames and links out of the bound folder are EXDEV (mv copies).
    with pytest.raises(OSError) as exc:
        os.rename(v + "/tmp/new", v + "/var/log/new")
    assert exc.value.errno == errno.EXDEV
    # litefs explain still names the rule.
    r = litefs_cmd("explain", "--plan", str(layers.root / "plan-mnt.json"), "n01", "/tmp/new")
    assert r.returncode == 0 and "/tmp/" in r.stdout, r.stdout + r.stderr


def test_a_plan_change_lifts_the_bind_and_an_open_file_keeps_its_data(layers: Layers, litefs_mount: Mounter) -> None:
    _image(layers)
    m = litefs_mount(make_plan(RULES), extra=["--native-writes"])
    v = str(m.path)
    assert is_mounted(v + "/tmp") is not None
    fd = os.open(v + "/tmp/f", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"before ")
        os.fsync(fd)
        # A rule below /tmp: the folder is no longer its layer's folder alone.
        plan2 = make_plan({**RULES, "/tmp/cache/": "persistent"})
        pf = layers.root / "plan2.json"
        pf.write_text(plan2.to_json())
        assert litefs_cmd("refresh", v, "--plan", str(pf)).returncode == 0
        wait_for(lambda: is_mounted(v + "/tmp") is None)
        os.write(fd, b"after")  # the open file is the layer's own inode: still valid
        os.fsync(fd)
    finally:
        os.close(fd)
    assert (m.path / "tmp/f").read_text() == "before after"  # now through FUSE
    assert (layers.tmpfs / "tmp/f").read_text() == "before after"
    (m.path / "tmp/cache/x").write_text("x")
    assert (layers.persistent / "tmp/cache/x").exists()  # the new rule holds
    # Back to the first plan: bound again, every file still there.
    pf.write_text(make_plan(RULES).to_json())
    assert litefs_cmd("refresh", v, "--plan", str(pf)).returncode == 0
    wait_for(lambda: is_mounted(v + "/tmp") is not None)
    assert (m.path / "tmp/f").read_text() == "before after"


def test_lower_content_appearing_lifts_the_bind_on_refresh(layers: Layers, litefs_mount: Mounter) -> None:
    _image(layers)
    m = litefs_mount(make_plan(RULES), extra=["--native-writes"])
    v = str(m.path)
    assert is_mounted(v + "/var/tmp") is not None
    (m.path / "var/tmp/mine").write_text("mine\n")
    # A plain user plants what FUSE would take for litefs's whiteout of a file to come: it
    # must not hide the image's file once FUSE serves the folder again.
    # (started in the folder as root: the test's parent folders are root-only)
    planted = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "touch",
                              ".wh.shipped"], cwd=v + "/var/tmp", capture_output=True, text=True)
    assert planted.returncode == 0, planted.stderr
    (m.path / "var/lib/state/db").write_text("db\n")
    put(layers.image, "var/tmp/shipped", "from the image\n")  # an image update
    put(layers.image, "var/lib/state/seed", "seed\n")
    assert litefs_cmd("refresh", v, "/var/tmp", "/var/lib/state").returncode == 0
    # tmpfs: the bind becomes a kernel overlay over the new lower content (test_fs_native_ovl);
    # persistent: no overlay on that store, FUSE merges.
    wait_for(lambda: is_mounted(v + "/var/tmp") == "overlay")
    wait_for(lambda: is_mounted(v + "/var/lib/state") is None)
    wait_for(lambda: sorted(os.listdir(v + "/var/tmp")) == ["mine", "shipped"])
    assert (m.path / "var/tmp/shipped").read_text() == "from the image\n"
    assert (m.path / "var/tmp/mine").read_text() == "mine\n"
    assert not (layers.tmpfs / "var/tmp/.wh.shipped").exists()
    assert sorted(os.listdir(v + "/var/lib/state")) == ["db", "seed"]


def test_without_the_option_nothing_is_bound(layers: Layers, litefs_mount: Mounter) -> None:
    _image(layers)
    m = litefs_mount(make_plan(RULES), extra=["--bypass"])
    assert is_mounted(str(m.path) + "/tmp") is None
