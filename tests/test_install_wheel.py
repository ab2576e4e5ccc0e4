"""A non-editable ``pip install <repo>`` into a fresh venv works on its own: console scripts
run, the package data (demo tables, litefile samples, the systemd unit, the dracut module, the
initramfs hook) is installed, and nothing is imported from the source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_pip_install_into_a_fresh_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    py = venv / "bin/python"
    # Copy of the tree without .venv/ or build leftovers, so nothing editable leaks in.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".venv", "*.egg-info", "__pycache__", ".git", "build", ".pytest_cache"))
    r = subprocess.run([py, "-m", "pip", "install", "-q", str(src)], capture_output=True,
                       text=True, timeout=850)
    assert r.returncode == 0, r.stderr[-2000:]
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    for cmd in ("litefs", "lslite", "tabdump", "liteimg", "nodeset", "mountd", "litefs-mountd",
                "litefs-mkinitramfs"):
        out = subprocess.run([venv / "bin" / cmd, "--help"], capture_output=True, text=True,
                             env=env, cwd=tmp_path, timeout=60)
        assert out.returncode == 0, f"{cmd}: {out.stderr}"
    check = """
import importlib.resources as r, litefs, pathlib
base = r.files("litefs")
assert "site-packages" in str(pathlib.Path(litefs.__file__)), litefs.__file__
for rel in ("data/demo/litefile.csv", "data/litefile-redhat.csv", "mountd/litefs-mountd.service",
            "initramfs/dracut/95litefs/module-setup.sh", "initramfs/litefs-boot.sh"):
    assert (base / rel).is_file(), rel
"""
    out = subprocess.run([py, "-c", check], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    # Working, not only present: the installed commands run the README's first tour steps.
    db_env = dict(env, LITEFS_DB=f"sqlite:///{tmp_path}/t.db")
    demo = Path(subprocess.run([py, "-c", "import importlib.resources as r; "
                                "print(r.files('litefs') / 'data/demo')"], capture_output=True,
                               text=True, env=env, cwd=tmp_path, check=True).stdout.strip())
    steps = [[venv / "bin/litefs", "db", "init"],
             *[[venv / "bin/tabrestore", f] for f in sorted(demo.glob("*.csv"))],
             [venv / "bin/lslite", "n01"], [venv / "bin/litefs", "plan", "n01", "--json"]]
    for step in steps:
        out = subprocess.run(step, capture_output=True, text=True, env=db_env, cwd=tmp_path)
        assert out.returncode == 0, f"{step}: {out.stderr}"
    # The dracut module's set-up script is shell that parses.
    setup = demo.parent.parent / "initramfs/dracut/95litefs/module-setup.sh"
    assert subprocess.run(["bash", "-n", setup]).returncode == 0
    assert os.access(venv / "bin/litefs-mountd", os.X_OK)
