"""``litefs classic-boot`` argument checks that need no namespace (the boot itself is tested
in test_classic_boot.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from litefs.plan import Plan, Rule


def test_missing_persistent_dir_is_one_clear_line(tmp_path: Path) -> None:
    plan = Plan(node="n01", image="img", rules=(Rule("/etc/ssh", "persistent", True),))
    pf = tmp_path / "plan.json"
    pf.write_text(plan.to_json())
    (tmp_path / "rootimg").mkdir()
    missing = tmp_path / "nodedata"
    r = subprocess.run(
        [sys.executable, "-m", "litefs.tools.litefs_cli", "classic-boot", "--plan", str(pf),
         "--rootimg", str(tmp_path / "rootimg"), "--persistent", str(missing)],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 1
    assert r.stderr == (f"litefs: --persistent {missing}: no such directory; create it "
                        f"(mkdir -p {missing}) or give the right path\n")
    assert not missing.exists()
