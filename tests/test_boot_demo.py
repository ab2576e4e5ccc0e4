"""``litefs demo`` end to end: two nodes boot in namespaces from nodeset's boot files."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.netns, pytest.mark.fuse, pytest.mark.slow]


def _ours() -> set[str]:
    """The cluster harness's namespaces (management lfmn-*, nodes lfn-*)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith(("lfmn-", "lfn-"))}


def _cluster_processes(tag: str) -> set[int]:
    """PIDs started by the cluster ``tag`` (LITEFS_CLUSTER=<tag> is in their environment)."""
    marker = f"LITEFS_CLUSTER={tag}".encode()
    pids = set()
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                pids.add(int(pid))
        except OSError:
            continue
    return pids


def test_demo_runs_and_cleans_up(tmp_path: Path) -> None:
    if shutil.which("busybox") is None or shutil.which("ip") is None:
        pytest.skip("busybox and iproute2 are needed")
    work = tmp_path / "demo"
    litefs = Path(sys.executable).with_name("litefs")
    before = _ours()
    # Its own session: if it hangs, kill it with everything it started, and drop the
    # namespaces it made, so a failing demo leaves nothing behind either.
    proc = subprocess.Popen([str(litefs), "demo", "--workdir", str(work)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    finally:
        if proc.returncode != 0:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            for ns in _ours() - before:
                subprocess.run(["ip", "netns", "del", ns], check=False)
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
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
    tag = re.search(r"network namespace lfmn-(\w+)", out)
    assert tag, out[:500]
    assert _cluster_processes(tag.group(1)) == set()
    assert str(work) not in Path("/proc/mounts").read_text()
