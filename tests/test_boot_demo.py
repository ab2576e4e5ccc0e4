"""``litefs demo`` end to end: two nodes boot in namespaces from nodeset's boot files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.netns, pytest.mark.fuse, pytest.mark.slow]


def _ours() -> set[str]:
    """The cluster harness's namespaces (management lfmn-*, nodes lfn-*)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith(("lfmn-", "lfn-"))}


def test_demo_runs_and_cleans_up(tmp_path: Path) -> None:
    if shutil.which("busybox") is None or shutil.which("ip") is None:
        pytest.skip("busybox and iproute2 are needed")
    work = tmp_path / "demo"
    litefs = Path(sys.executable).with_name("litefs")
    before = _ours()
    proc = subprocess.run([str(litefs), "demo", "--workdir", str(work)], capture_output=True,
                          text=True, timeout=240)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "n01: statelite demo-x86_64-compute" in out
    assert out.count("/ fuse.litefs rw") == 2
    assert "/etc/motd            Welcome to the tokyo room" in out
    assert "/etc/motd            Welcome to the london room" in out
    assert "Read-only file system" in out
    assert "access: read-write, writes go to the persistent layer" in out
    assert "n01 /etc/motd: Tokyo: maintenance tonight" in out
    assert "n03 /etc/motd: Welcome to the london room" in out
    assert "booted\n   booted again\n   cat: can't open '/tmp/scratch'" in out
    assert not work.exists()
    assert _ours() == before
