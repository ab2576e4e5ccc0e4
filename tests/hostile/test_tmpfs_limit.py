"""Security item 8: the tmpfs layer has a size, and the daemon says when it is nearly full.

The real boot-hook functions (``initramfs/litefs-boot.sh`` under ``sh``) mount and resize a
real tmpfs; a real plain user fills it through a real view until ENOSPC. The size checks of
the MN (chtab), the node (fetchplan) and the shell hook must agree on what is a bounded size.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from litefs.initramfs.fetchplan import layout
from sqlalchemy import Engine

from litefs.fs.fillwatch import FillWatch
from litefs.planner import load_snapshot, plan_for_node
from litefs.schema import table
from litefs.tmpfs_size import DEFAULT, node_tmpfs_size, tmpfs_size_problem
from tests.fsutil import Layers, Mounter, is_mounted, kernel_served, make_plan
from tests.hostile.test_names_cli import refused, run
from tests.hostile.test_view_perms import as_user
from tests.planutil import load
from tests.test_plan_planner import TABLES as PLANNER_TABLES

HOOK = Path(__file__).parents[2] / "initramfs" / "litefs-boot.sh"
SAMPLES = ["25%", "1%", "100%", "101%", "0%", "0", "000", "00k", "1", "1k", "512m", "2g", "2G", "1t",
           "", "-1", "1.5g", "5%%", "g", "%", "1 g", "1k1", "x", "1e3", "9" * 16, "0x10"]  # fmt: skip


def hook(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` under sh with the boot hook's functions loaded (not run)."""
    e = {"PATH": os.environ["PATH"], "LITEFS_SOURCED": "1", **env}
    return subprocess.run(["sh", "-c", f'. "{HOOK}"\n{script}'], capture_output=True, text=True, env=e, timeout=30)


def test_shell_and_python_agree_on_bounded_sizes() -> None:
    script = "".join(f"if tmpfs_size_ok '{v}'; then echo ok; else echo bad; fi\n" for v in SAMPLES)
    r = hook(script)
    assert r.returncode == 0, r.stderr
    shell = r.stdout.split()
    python = ["bad" if tmpfs_size_problem(v) else "ok" for v in SAMPLES]
    assert shell == python, list(zip(SAMPLES, shell, python, strict=False))
    assert python.count("ok") == 8  # 25% 1% 100% 1 1k 512m 2g 2G: the control


@given(st.text(max_size=12))
def test_node_never_mounts_an_unbounded_tmpfs(value: str) -> None:
    size, warning = node_tmpfs_size(value)
    assert tmpfs_size_problem(size) is None
    assert size == DEFAULT or warning is None


def test_fetchplan_writes_the_checked_size() -> None:
    plan = make_plan({"/data/": "tmpfs"})
    assert layout(plan)["tmpfs.size"] == "25%\n"
    for raw, want in (("512M", "512m\n"), ("0", "25%\n"), ("1g;reboot", "25%\n")):
        p = type(plan)(**{**plan.__dict__, "tmpfs_size": raw})
        assert layout(p)["tmpfs.size"] == want


def test_fillwatch_warns_once_per_crossing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="litefs.fs")
    now = [0.0]
    used = [0]

    def fake() -> os.statvfs_result:
        return os.statvfs_result((4096, 4096, 100, 100 - used[0], 100 - used[0], 0, 0, 0, 0, 255))

    w = FillWatch("tmpfs", fake, clock=lambda: now[0])
    for u in (10, 95, 96, 97, 50, 51, 92):
        used[0] = u
        w.tick()
        w.tick()  # within the interval: not looked at
        now[0] += 1.0
    lines = [r.getMessage() for r in caplog.records]
    assert sum("% full (" in m for m in lines) == 2 and sum("below" in m for m in lines) == 1, lines


@pytest.fixture
def sized_tmpfs(layers: Layers) -> Iterator[Path]:
    """The hook's own mount_statelite_tmpfs + apply_tmpfs_size, with tmpfs.size = 2m."""
    sl = layers.root / "statelite"
    script = f'SL="{sl}"; LOG="{layers.root}/early.log"; mount_statelite_tmpfs && echo 2m >"$SL/tmpfs.size" && apply_tmpfs_size && chmod 755 "$SL/tmpfs"'
    try:
        r = hook(script)
        assert r.returncode == 0, r.stderr
        assert is_mounted(str(sl)) == "tmpfs"
        opts = next(ln for ln in Path("/proc/self/mounts").read_text().splitlines() if f" {sl} " in ln)
        assert "size=2048k" in opts, opts
        yield sl / "tmpfs"
    finally:
        subprocess.run(["umount", "-l", str(sl)], capture_output=True)


def test_user_filling_the_tmpfs_layer_gets_enospc_and_the_log_says_so(
    layers: Layers, litefs_mount: Mounter, sized_tmpfs: Path
) -> None:
    layers.tmpfs = sized_tmpfs
    m = litefs_mount(make_plan({"/data/": "tmpfs"}))
    big = m.path / "data/big"

    def fill() -> int:
        fd = os.open(big, os.O_CREAT | os.O_WRONLY, 0o644)
        chunk = b"x" * 65536
        try:
            for _ in range(64):  # 4 MiB at most: twice the cap
                os.write(fd, chunk)
            return 1  # never hit the cap
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                return 2
        time.sleep(1.1)  # the daemon looks at most once a second
        try:
            os.write(fd, chunk)
            return 3
        except OSError as exc:
            return 0 if exc.errno == errno.ENOSPC else 4
        finally:
            os.close(fd)

    assert as_user(fill) == 0
    assert (m.path / "data/pub").read_text() == "public\n"  # the view still serves
    os.unlink(big)
    time.sleep(1.1)
    (m.path / "data/small").write_text("ok\n")
    if kernel_served(m.path / "data", m.path):
        return  # writes there never pass the daemon: no near-full warning (README: Node-side limits)
    log = m.log_text()
    assert log.count("tmpfs layer is") >= 2 and "% full (" in log and "below 90% full again" in log, log


@pytest.mark.parametrize("value", ["0", "0%", "101%", "1x", "-1", "1g;reboot"])
def test_chtab_refuses_an_unbounded_or_garbage_size(db: tuple[str, Path], value: str) -> None:
    url, path = db
    err = refused(url, path, "chtab", "key=litefs_tmpfs_size", f"site.value={value}")
    assert "litefs_tmpfs_size" in err


def test_tabrestore_refuses_a_garbage_size_and_chtab_takes_a_good_one(db: tuple[str, Path], tmp_path: Path) -> None:
    url, path = db
    csv = tmp_path / "site.csv"
    csv.write_text('#key,value,comments,disable\n"litefs_tmpfs_size","0",,\n')
    assert "litefs_tmpfs_size" in refused(url, path, "tabrestore", str(csv))
    assert run("chtab", "key=litefs_tmpfs_size", "site.value=512m", url=url).returncode == 0
    assert '"litefs_tmpfs_size","512m"' in run("tabdump", "site", url=url).stdout


def test_plan_carries_the_size_and_old_plans_stay_identical() -> None:
    plan = make_plan({"/data/": "tmpfs"})
    assert "tmpfs_size" not in plan.to_json()
    sized = type(plan)(**{**plan.__dict__, "tmpfs_size": "2g"})
    assert type(plan).from_json(sized.to_json()).tmpfs_size == "2g"


def test_planner_carries_the_site_size_or_warns(engine: Engine) -> None:
    load(engine, {**PLANNER_TABLES, "site": [{"key": "litefs_tmpfs_size", "value": " 2G "}]})
    assert plan_for_node(load_snapshot(engine), "n01").tmpfs_size == "2G"
    # A value stored before the write-time check (written here with plain SQL): the plan
    # carries no size and says the default applies.
    with engine.begin() as conn:
        conn.execute(table("site").update().values(value="0"))
    plan = plan_for_node(load_snapshot(engine), "n01")
    assert plan.tmpfs_size is None and any("litefs_tmpfs_size" in w for w in plan.warnings)
