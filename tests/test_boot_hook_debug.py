"""The boot hook's ``set -x`` switch (cookbook §7.1): ``debug``/``xcatdebugmode`` on the kernel
command line, run in a real shell (the hook is sourced, as the dracut module does)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

HOOK = Path(__file__).resolve().parent.parent / "initramfs" / "litefs-boot.sh"


def _parse(tmp_path: Path, cmdline: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    script = f'. "{HOOK}"; parse_cmdline; echo "NODE=$NODE"'
    return subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, timeout=30,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LITEFS_SOURCED": "1",
             "LITEFS_CMDLINE": str(tmp_path / "cmdline")},
    )


@pytest.mark.parametrize("arg", ["debug", "xcatdebugmode=1", "xcatdebugmode=2"])
def test_debug_traces_the_hook(tmp_path: Path, arg: str) -> None:
    r = _parse(tmp_path, f"root=nfs:10.0.0.1:/img/rootimg:ro NODE=n01 {arg} XCATHTTPPORT=80")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "NODE=n01\n"
    assert f"litefs: {arg} on the kernel command line: tracing the boot hook (set -x)" in r.stderr
    assert "+ echo NODE=n01" in r.stderr  # the command after parse_cmdline is traced


@pytest.mark.parametrize("arg", ["", "xcatdebugmode=0"])
def test_no_trace_without_debug(tmp_path: Path, arg: str) -> None:
    r = _parse(tmp_path, f"root=nfs:10.0.0.1:/img/rootimg:ro NODE=n01 {arg}")
    assert r.returncode == 0 and r.stdout == "NODE=n01\n"
    assert r.stderr == ""
