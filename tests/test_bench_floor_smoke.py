"""The pyfuse3 floor benchmark must keep working: a ``--quick`` run end to end, and the toy's
open flags under writeback caching.

The smoke run mounts fuse-overlayfs, the floor toy (three ways) and litefs for real (root,
FUSE), so it is marked ``fuse`` and ``slow``; it checks that every presenter produced every
number and request count and that nothing stays mounted. It checks no speed: the verdicts are
the benchmark's job, printed as PASS/MISS.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[1] / "tools" / "bench"
sys.path.insert(0, str(BENCH_DIR))

from _floor_toy import Toy  # noqa: E402


def test_writeback_opens_read_write_and_drops_append(tmp_path: Path) -> None:
    plain, wb = Toy(str(tmp_path), writeback=False), Toy(str(tmp_path), writeback=True)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL
    assert plain._flags(flags) == os.O_WRONLY | os.O_APPEND  # create/excl are the handler's
    # the kernel may read a page to fill it, and positions appends itself
    assert wb._flags(flags) == os.O_RDWR
    assert wb._flags(os.O_RDONLY) == os.O_RDONLY
    assert wb.enable_writeback_cache and not plain.enable_writeback_cache


@pytest.mark.fuse
@pytest.mark.slow
def test_quick_run_measures_every_presenter_and_unmounts(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the benchmark mounts filesystems: run as root")
    if shutil.which("fuse-overlayfs") is None:
        pytest.skip("fuse-overlayfs is not installed")
    work = tmp_path / "work"
    out_json = tmp_path / "floor.json"
    r = subprocess.run(
        [
            sys.executable,
            str(BENCH_DIR / "bench_floor.py"),
            "--quick",
            "--workdir",
            str(work),
            "--json",
            str(out_json),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(out_json.read_text())
    presenters = {"native", "fuse-overlayfs", "toy", "toy-cached", "toy-wb", "litefs"}
    workloads = {
        "find (warm)",
        "cat small files (warm)",
        "untar stdlib (disk)",
        "untar stdlib (tmpfs)",
    }
    walls = {(s["workload"], s["presenter"]) for s in data["samples"] if s["kind"] == "wall"}
    assert walls == {(w, p) for w in workloads for p in presenters}
    counted = {(c["workload"], c["presenter"]): c["opcodes"] for c in data["counts"]}
    for p in presenters - {"native"}:
        assert counted[("find (warm)", p)].get("OPENDIR", 0) >= 11, p  # the root and 10 dirs
        assert counted[("untar stdlib (disk)", p)].get("CREATE", 0) > 0, p
    assert any(v.endswith(("PASS", "MISS")) for v in data["verdicts"])
    with open("/proc/self/mountinfo") as f:
        assert str(work) not in f.read()
    assert not work.exists()  # removed after a clean run
