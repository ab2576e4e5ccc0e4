"""One daemon, one process (issue 11.5): once ``litefs mount`` has reported the view ready,
exactly one process has the daemon's command line (the helper that writes /.statelite's
litefile has one of its own)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fsutil import Layers, is_mounted, make_plan, put

pytestmark = pytest.mark.fuse


def _with_cmdline(argv: list[str]) -> list[int]:
    want = "\0".join(argv).encode() + b"\0"
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read() == want:
                    out.append(int(pid))
        except OSError:
            pass
    return out


def test_exactly_one_process_has_the_daemons_command_line(layers: Layers, tmp_path: Path) -> None:
    put(layers.image, "etc/hostname", "img\n")
    plan = tmp_path / "plan.json"
    plan.write_text(make_plan({"/w/": "tmpfs"}).to_json())
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    argv = [
        sys.executable, "-m", "litefs.tools.litefs_cli", "mount", str(mnt), "--plan", str(plan),
        "--image", str(layers.image), "--tmpfs", str(layers.tmpfs), "--log", str(tmp_path / "log"),
    ]  # fmt: skip
    for _ in range(3):  # the helper used to show up in about half the runs
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        try:
            assert r.returncode == 0, r.stderr
            assert is_mounted(str(mnt)) == "fuse.litefs"
            daemons = _with_cmdline(argv)
            assert len(daemons) == 1, daemons
            # and the litefile the helper writes still appears
            deadline = time.monotonic() + 10
            while not (layers.tmpfs / ".statelite/litefile").exists():
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            subprocess.run([sys.executable, "-m", "litefs.tools.litefs_cli", "umount", str(mnt)], capture_output=True)
            deadline = time.monotonic() + 10
            while _with_cmdline(argv) and time.monotonic() < deadline:
                time.sleep(0.05)
        assert not _with_cmdline(argv), "the daemon did not exit after unmount"
        (layers.tmpfs / ".statelite/litefile").unlink()


@pytest.mark.parametrize("spawn", [False, True], ids=["grandchild", "posix_spawn"])
def test_the_litefile_writer_has_a_command_line_of_its_own(tmp_path: Path, spawn: bool) -> None:
    """Deterministic half of the check above: the helper that renders /.statelite/litefile
    runs for a while (it imports the planner), and once ``write_meta`` returns it must already
    carry its own command line, never its parent's (the daemon's, in ``litefs mount``), both
    as a detached grandchild (``--foreground``) and spawned (``litefs mount`` returns)."""
    from litefs.initramfs.mountcmd import write_meta

    from litefs.fs.layers import LayerSet

    (tmp_path / "image").mkdir()
    (tmp_path / "tmpfs").mkdir()
    lay = LayerSet(str(tmp_path / "image"), [], tmpfs=str(tmp_path / "tmpfs"))
    try:
        with open("/proc/self/cmdline", "rb") as f:
            mine = f.read().split(b"\0")[:-1]
        before = set(_with_cmdline([a.decode() for a in mine]))
        write_meta(make_plan({"/w/": "tmpfs"}), lay, spawn=spawn)
        after = set(_with_cmdline([a.decode() for a in mine]))
        assert after - before == set()
        deadline = time.monotonic() + 10
        while not (tmp_path / "tmpfs/.statelite/litetree").exists():
            assert time.monotonic() < deadline, "the writer never wrote litetree"
            time.sleep(0.05)
        assert (tmp_path / "tmpfs/.statelite/litefile").read_text().strip() != ""
    finally:
        lay.close()
