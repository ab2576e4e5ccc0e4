"""The boot-time plan fetch over a service-node pool, against a real mountd process: the first
server is silent, the next one answers, and the console says so; a pool that is all down
ends in the one FATAL line after bounded rounds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from litefs import db
from tests.dbutil import load_tables
from tests.mountdutil import cluster_tables, free_port, mountd_process


def _fetch(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "litefs.initramfs.fetchplan", "--node", "n01",
                           "--out", str(out), "--retries", "2", "--backoff", "0", *args],
                          capture_output=True, text=True, timeout=60)


def test_the_next_server_of_the_pool_serves_and_the_console_says_which(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/litefs.db"
    engine = db.open_engine(url)
    db.init_db(engine)
    load_tables(engine, cluster_tables({"n01": "127.0.0.1"}))
    engine.dispose()
    silent, port = free_port(), free_port()
    with mountd_process(url, port, "--insecure", "--socket", ""):
        got = _fetch(tmp_path, "--xcat", f"127.0.0.1:{silent}", "--pool",
                     f"127.0.0.1:{port}", "--ca", "")
    assert got.returncode == 0, got.stderr
    lines = got.stderr.splitlines()
    assert lines[0].startswith(f"litefs: mountd at 127.0.0.1:{silent} does not answer (")
    assert lines[0].endswith(f"trying 127.0.0.1:{port} (next in the pool)")
    assert lines[1] == (f"litefs: plan for n01 from 127.0.0.1:{port}, not from "
                        f"127.0.0.1:{silent} (failover)")
    assert (tmp_path / "out" / "plan.json").read_text().startswith("{")


def test_a_pool_that_is_all_down_ends_in_the_fatal_line(tmp_path: Path) -> None:
    a, b = free_port(), free_port()
    got = _fetch(tmp_path, "--xcat", f"127.0.0.1:{a}", "--pool", f"127.0.0.1:{b}", "--ca", "")
    assert got.returncode == 1
    lines = got.stderr.splitlines()
    assert len([x for x in lines if "does not answer" in x]) == 4  # 2 rounds x 2 servers
    assert lines[-1].startswith(f"litefs: FATAL error: could not get the plan for n01 from "
                                f"mountd at 127.0.0.1:{a},127.0.0.1:{b} after 2 attempts")
    assert not (tmp_path / "out" / "plan.json").exists()
