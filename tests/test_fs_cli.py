"""``litefs mount | umount | explain | inspect | refresh`` as an admin runs them.

Mount-time mistakes give one line on stderr and exit 1 and leave nothing mounted; daemon
mode returns once the view is ready; SIGTERM unmounts cleanly.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from litefs.initramfs.mountcmd import source_under

from litefs import db
from litefs.plan import Source
from tests.fsutil import Layers, Mounter, is_mounted, litefs_cmd, make_plan, put, wait_for
from tests.planutil import cookbook_redhat_litefile, load


def _plan_file(layers: Layers, plan_obj, name: str = "plan.json") -> Path:  # type: ignore[no-untyped-def]
    p = layers.root / name
    p.write_text(plan_obj.to_json())
    return p


def _one_line_failure(r: subprocess.CompletedProcess[str], status: int, *words: str) -> None:
    assert r.returncode == status, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


@pytest.mark.fuse
def test_mount_refuses_bad_layers_and_plans(layers: Layers, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    plan = _plan_file(layers, make_plan({"/etc/ssh/": "persistent", "/tmp/": "tmpfs"}))
    base = ["mount", str(mnt), "--plan", str(plan), "--foreground"]
    r = litefs_cmd(*base, "--image", str(tmp_path / "nope"), "--tmpfs", str(layers.tmpfs), "--persistent", str(layers.persistent))
    _one_line_failure(r, 1, "image layer directory", "does not exist")
    r = litefs_cmd(*base, "--image", str(layers.image), "--tmpfs", str(layers.tmpfs))
    _one_line_failure(r, 1, "persistent rules", "--persistent")
    # An unwritable store: a read-only bind of the persistent directory.
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(layers.persistent), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        r = litefs_cmd(*base, "--image", str(layers.image), "--tmpfs", str(layers.tmpfs), "--persistent", str(ro))
        _one_line_failure(r, 1, "not writable")
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    bad = layers.root / "bad.json"
    bad.write_text('{"plan_version": 1, "image": "x", "rules": [{"path": "etc", "option": "tmpfs", "is_dir": false}]}')
    r = litefs_cmd("mount", str(mnt), "--plan", str(bad), "--image", str(layers.image), "--foreground")
    _one_line_failure(r, 1, "malformed plan")
    src_plan = _plan_file(layers, make_plan({"/tmp/": "tmpfs"}, ["/srv/a", "/srv/b"]), "src.json")
    r = litefs_cmd("mount", str(mnt), "--plan", str(src_plan), "--image", str(layers.image), "--tmpfs", str(layers.tmpfs), "--source", str(layers.image))
    _one_line_failure(r, 2, "2 litetree source(s)")
    assert is_mounted(str(mnt)) is None


def _daemon_pid(mnt: Path) -> int:
    """The detached litefs daemon serving ``mnt`` (found by its command line)."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"mount" in argv and os.fsencode(mnt) in argv and int(d.name) != os.getpid():
            return int(d.name)
    raise AssertionError(f"no litefs daemon for {mnt}")


@pytest.mark.fuse
def test_daemon_mode_umount_and_sigterm(layers: Layers, tmp_path: Path) -> None:
    put(layers.image, "etc/motd", "hello\n")
    plan = _plan_file(layers, make_plan({"/tmp/": "tmpfs"}))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    args = ["mount", str(mnt), "--plan", str(plan), "--image", str(layers.image), "--tmpfs", str(layers.tmpfs)]
    r = litefs_cmd(*args, "--log", str(tmp_path / "d.log"))
    try:
        assert r.returncode == 0, r.stderr
        assert is_mounted(str(mnt)) == "fuse.litefs"  # ready when the command returns
        assert (mnt / "etc/motd").read_text() == "hello\n"
        with open("/proc/self/mountinfo") as f:
            line = next(x for x in f if x.split()[4] == str(mnt))
        assert "litefs:n01" in line
        r = litefs_cmd("umount", str(mnt))
        assert r.returncode == 0, r.stderr
        assert is_mounted(str(mnt)) is None
    finally:
        if is_mounted(str(mnt)):
            subprocess.run(["umount", "-l", str(mnt)])
    r = litefs_cmd("umount", str(mnt))
    _one_line_failure(r, 1, "not a mount point")
    # Daemon mode: SIGTERM to the detached daemon unmounts too.
    r = litefs_cmd(*args, "--log", str(tmp_path / "d2.log"))
    try:
        assert r.returncode == 0, r.stderr
        os.kill(_daemon_pid(mnt), signal.SIGTERM)
        wait_for(lambda: is_mounted(str(mnt)) is None)
    finally:
        if is_mounted(str(mnt)):
            subprocess.run(["umount", "-l", str(mnt)])
    # Foreground: SIGTERM (systemd, kill) and SIGINT (Ctrl-C) both unmount cleanly.
    for sig in (signal.SIGTERM, signal.SIGINT):
        log = tmp_path / f"{sig.name}.log"
        proc = subprocess.Popen([sys.executable, "-m", "litefs.tools.litefs_cli", *args, "--foreground", "--log", str(log)])
        try:
            wait_for(lambda: is_mounted(str(mnt)) == "fuse.litefs")
            assert (mnt / "etc/motd").read_text() == "hello\n"
            proc.send_signal(sig)
            assert proc.wait(timeout=10) == 0
            assert is_mounted(str(mnt)) is None
        finally:
            if proc.poll() is None:
                proc.kill()
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)

@pytest.mark.fuse
def test_a_sigterm_the_moment_the_mount_appears_still_unmounts(layers: Layers, tmp_path: Path) -> None:
    """The mount is visible before the serving loop runs, and the loop may answer its first
    requests before its other tasks start: a stop signal in that window must wait for the
    loop and unmount, never kill a mounted daemon (which leaves a dead mount behind)."""
    put(layers.image, "etc/motd", "hello\n")
    plan = _plan_file(layers, make_plan({"/tmp/": "tmpfs"}))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    args = ["mount", str(mnt), "--plan", str(plan), "--image", str(layers.image), "--tmpfs", str(layers.tmpfs)]
    for i in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-m", "litefs.tools.litefs_cli", *args, "--foreground", "--log", str(tmp_path / f"{i}.log")])
        try:
            deadline = time.monotonic() + 20
            while is_mounted(str(mnt)) is None:  # no sleep: signal as soon as it shows
                assert time.monotonic() < deadline and proc.poll() is None, "never mounted"
            proc.send_signal(signal.SIGTERM if i % 2 else signal.SIGINT)
            assert proc.wait(timeout=10) == 0
            assert is_mounted(str(mnt)) is None
        finally:
            if proc.poll() is None:
                proc.kill()
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_explain_without_mounting(layers: Layers) -> None:
    src = Path("/srv/litetree/n01")
    plan = make_plan({"/etc/ssh/": "persistent", "/var/log/": "tmpfs"}, [str(src)])
    pf = _plan_file(layers, plan)
    put(layers.image, "etc/ssh/sshd_config", "cfg")
    r = litefs_cmd("explain", "n01", "/etc/ssh/sshd_config", "--plan", str(pf), "--image", str(layers.image))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "rule:   litefile image=ALL file=/etc/ssh/ options=persistent" in out
    assert "nearest listed ancestor: /etc/ssh/" in out
    assert "writes go to the persistent layer" in out
    assert "layers: persistent > source[0]" in out
    assert f"origin: image:{layers.image}/etc/ssh/sshd_config" in out
    r = litefs_cmd("explain", "n01", "/usr/bin/ls", "--plan", str(pf))
    assert "none (image content, read-only)" in r.stdout and "read-only (EROFS)" in r.stdout
    r = litefs_cmd("explain", "n01", "/etc/../x", "--plan", str(pf))
    _one_line_failure(r, 2, "..")


def test_source_root_mapping() -> None:
    s = Source(priority="1", directory="mn1:/statelite/n01", server="mn1", path="/statelite/n01")
    assert source_under("/srv/mnt", s) == "/srv/mnt/mn1/statelite/n01"
    assert s.mountpoint == "/.statelite/mnt/mn1/statelite/n01"
    local = Source(priority="2", directory="/local/tree", server=None, path="/local/tree")
    assert source_under("/srv/mnt", local) == "/srv/mnt/local/tree"


@pytest.mark.fuse
def test_source_root_and_statelite_mnt(layers: Layers, litefs_mount: Mounter) -> None:
    root = layers.root / "srcroot"
    put(root, "mn1/statelite/n01/etc/motd", "from mn1\n")
    src = Source(priority="1", directory="mn1:/statelite/n01", server="mn1", path="/statelite/n01")
    base = make_plan({"/etc/motd": "ro"})
    plan = type(base)(image=base.image, rules=base.rules, sources=(src,), node="n01")
    m = litefs_mount(plan, extra=["--source-root", str(root)])
    assert (m.path / "etc/motd").read_text() == "from mn1\n"
    assert (m.path / ".statelite/mnt/mn1/statelite/n01/etc/motd").read_text() == "from mn1\n"


@pytest.mark.fuse
def test_inspect_mounts_read_only(layers: Layers, tmp_path: Path) -> None:
    put(layers.image, "etc/hosts", "image hosts\n")
    put(layers.image, "etc/hostname", "image name\n")
    statemnt = tmp_path / "statemnt"
    put(statemnt, "n01/etc/hostname", "n01 kept\n")
    plan = make_plan({"/etc/hostname": "persistent", "/tmp/": "tmpfs"})
    plan = type(plan)(image=plan.image, rules=plan.rules, node="n01", statemnt=f"mn1:{statemnt}")
    pf = _plan_file(layers, plan)
    mnt = tmp_path / "look"
    mnt.mkdir()
    t0 = time.time()
    r = litefs_cmd("inspect", "n01", str(mnt), "--plan", str(pf), "--image", str(layers.image))
    try:
        assert r.returncode == 0, r.stderr
        assert (mnt / "etc/hostname").read_text() == "n01 kept\n"
        assert (mnt / "etc/hosts").read_text() == "image hosts\n"
        with pytest.raises(OSError) as info:
            (mnt / "tmp/x").write_text("x")
        assert info.value.errno == errno.EROFS
        with pytest.raises(OSError) as info:
            (mnt / "etc/hostname").write_text("x")
        assert info.value.errno == errno.EROFS
    finally:
        assert litefs_cmd("umount", str(mnt)).returncode == 0
    assert (statemnt / "n01/etc/hostname").read_text() == "n01 kept\n"
    wait_for(lambda: not any(p.name.startswith("litefs-inspect-") and p.stat().st_mtime > t0 for p in Path(tempfile.gettempdir()).iterdir()))


def test_refresh_on_something_else_fails_cleanly(tmp_path: Path) -> None:
    r = litefs_cmd("refresh", str(tmp_path), "/etc")
    _one_line_failure(r, 1, "litefs")
    r = litefs_cmd("refresh", str(tmp_path), "etc")
    _one_line_failure(r, 1, "absolute")


def test_plan_json_roundtrip_through_cli_file(layers: Layers) -> None:
    pf = _plan_file(layers, make_plan({"/a/": "tmpfs"}))
    assert json.loads(pf.read_text())["rules"][0]["path"] == "/a"


# --- plans from the database (the MN side) ---------------------------------------------------

DB_TABLES = {
    "nodelist": [{"node": "n01", "groups": "compute"}],
    "nodetype": [{"node": "compute", "os": "rhels8", "arch": "x86_64", "profile": "compute"}],
    "osimage": [{"imagename": "rhels8-x86_64-statelite-compute", "provmethod": "statelite"}],
    "litetree": [{"priority": "1", "directory": "mn1:/statelite/$node"}],
    "statelite": [{"node": "compute", "statemnt": "mn1:/gpfs/state"}],
}


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/litefs.db"
    engine = db.open_engine(url)
    try:
        load(engine, {**DB_TABLES, "litefile": cookbook_redhat_litefile()})
    finally:
        engine.dispose()
    return url


def test_explain_from_the_database(db_url: str) -> None:
    r = litefs_cmd("explain", "n01", "/etc/ssh/sshd_config", "--db", db_url)
    assert r.returncode == 0, r.stderr
    assert "file=/etc/ssh/ options=tmpfs,rw" in r.stdout
    assert "source[0] (mn1:/statelite/n01 at /.statelite/mnt/mn1/statelite/n01)" in r.stdout
    r = litefs_cmd("explain", "nosuch", "/etc/motd", "--db", db_url)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr


@pytest.mark.fuse
def test_mount_node_from_database_with_the_cookbook_litefile(layers: Layers, tmp_path: Path, db_url: str) -> None:
    put(layers.image, "etc/adjtime", "0.0 0 0.0\n")
    put(layers.image, "etc/hosts", "hosts\n")
    put(layers.image, "var/log/messages", "old\n")
    srcroot = tmp_path / "mnt-sources"
    put(srcroot, "mn1/statelite/n01/etc/ntp.conf", "server mn1\n")
    mnt = tmp_path / "node"
    mnt.mkdir()
    args = ["mount", str(mnt), "--node", "n01", "--db", db_url, "--image", str(layers.image),
            "--tmpfs", str(layers.tmpfs), "--source-root", str(srcroot)]  # fmt: skip
    r = litefs_cmd(*args)
    try:
        assert r.returncode == 0, r.stderr
        assert (mnt / "etc/ntp.conf").read_text() == "server mn1\n"
        (mnt / "etc/adjtime").write_text("changed\n")
        assert (layers.tmpfs / "etc/adjtime").read_text() == "changed\n"
        with open(mnt / "var/log/messages", "a") as f:
            f.write("new\n")
        assert os.readlink(mnt / "etc/mtab") == "/proc/mounts"
        with pytest.raises(OSError) as info:
            (mnt / "etc/hosts").write_text("x")
        assert info.value.errno == errno.EROFS
        wait_for(lambda: "litefile" in os.listdir(mnt / ".statelite"))
        assert "n01: tmpfs,rw      /etc/adjtime" in (mnt / ".statelite/litefile").read_text()
    finally:
        assert litefs_cmd("umount", str(mnt)).returncode == 0
