"""The filesystem benchmark must keep working: a ``--quick`` run end to end, plus its pure parts.

The smoke run mounts overlayfs, fuse-overlayfs and litefs for real (root, FUSE), so it is
marked ``fuse`` and ``slow``; it checks that every presenter produced every number, that the
targets were evaluated, and that nothing stays mounted. It checks no speed: targets are the
benchmark's job, printed as PASS/MISS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[1] / "tools" / "bench"
sys.path.insert(0, str(BENCH_DIR))

from _fsbench_report import (  # noqa: E402
    BIG_WARM,
    BYPASS,
    CAT,
    CREATE,
    FIND,
    FUSE_OVERLAY,
    LITEFS,
    NATIVE,
    OVERLAY,
    PRESENTERS,
    READY,
    READY_BYPASS,
    RSS_WALK,
    STAT,
    UNTAR,
    Results,
    evaluate_targets,
    render_table,
)


def _checks_by_name(res: Results) -> dict[str, str]:
    return {c.name: c.verdict for c in evaluate_targets(res, [10_000, 100_000], 100_000)}


def test_ratios_and_verdicts_follow_the_medians() -> None:
    res = Results()
    for v in (1.0, 9.0, 2.0):  # median 2.0: one outlier must not move it
        res.add(STAT, NATIVE, v)
    res.add(STAT, LITEFS, 2.9)
    res.add(CAT, FUSE_OVERLAY, 1.0)
    res.add(CAT, LITEFS, 1.01)
    res.add(BIG_WARM, NATIVE, 1.0)
    res.add(BIG_WARM, LITEFS, 1.1)  # throughput 0.909x native
    checks = _checks_by_name(res)
    assert checks["rule-covered: warm find+stat <= 1.5x native"] == "PASS"
    assert checks["rule-covered: cat small files <= fuse-overlayfs"] == "MISS"
    assert checks["rule-covered: warm big read >= 0.9x native throughput"] == "PASS"
    assert checks["tmpfs rule: create+write <= fuse-overlayfs"] == "n/a"
    table = render_table(res)
    row = next(line for line in table.splitlines() if line.startswith(STAT))
    assert "1.45x" in row  # litefs / native = 2.9 / 2.0


def test_ready_flatness_and_rss_limits() -> None:
    res = Results()
    res.add(READY.format(n="10,000"), LITEFS, 0.30)
    res.add(READY.format(n="100,000"), LITEFS, 0.45)  # under 0.5 s but not flat
    res.add(RSS_WALK.format(n="100,000"), LITEFS, 61.0 * 1024 * 1024)
    checks = _checks_by_name(res)
    assert checks["mount->ready 10,000 files < 0.5s"] == "PASS"
    assert checks["mount->ready 100,000 files < 0.5s"] == "PASS"
    assert checks["mount->ready flat 10,000 -> 100,000 files"] == "MISS"
    assert checks["peak RSS after walking 100,000 files <= 60 MB"] == "MISS"
    assert checks["mount->ready 10,000 files --bypass < 0.5s"] == "n/a"  # not measured
    assert "mount->ready --bypass flat 10,000 -> 100,000 files" not in checks


@pytest.mark.fuse
@pytest.mark.slow
def test_quick_run_measures_every_presenter_and_unmounts(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the benchmark mounts filesystems: run as root")
    work = tmp_path / "work"
    out_json = tmp_path / "bench.json"
    r = subprocess.run(
        [sys.executable, str(BENCH_DIR / "bench_fs.py"), "--quick", "--workdir", str(work), "--json", str(out_json)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(out_json.read_text())
    samples = data["samples"]
    for key in (FIND, STAT, CAT, BIG_WARM, CREATE, UNTAR):
        assert set(samples[key]) == set(PRESENTERS), key
    for key in (READY.format(n="500"), READY.format(n="2,000")):
        assert {OVERLAY, FUSE_OVERLAY, LITEFS} <= set(samples[key])
    assert BYPASS in samples[READY_BYPASS.format(n="2,000")]
    assert samples[RSS_WALK.format(n="2,000")][LITEFS][0] > 1024 * 1024
    verdicts = {c["name"]: c["verdict"] for c in data["checks"]}
    assert all(v in ("PASS", "MISS") for v in verdicts.values()), verdicts
    assert any(name.startswith("--bypass") for name in verdicts)
    assert "PASS" in r.stdout or "MISS" in r.stdout
    with open("/proc/self/mountinfo") as f:
        assert str(work) not in f.read()
    assert not work.exists()  # removed after a clean run
