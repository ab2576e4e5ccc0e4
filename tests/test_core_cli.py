"""The litefs command's dispatcher: help, usage errors and exit statuses (installed script)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

LITEFS = str(Path(sys.executable).with_name("litefs"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LITEFS, *args], capture_output=True, text=True, timeout=60)


def test_help_lists_every_subcommand() -> None:
    from litefs.tools.litefs_cli import SUBCOMMANDS

    out = run("--help")
    assert out.returncode == 0
    for name in SUBCOMMANDS:
        assert name in out.stdout


def test_unknown_subcommand_is_a_usage_error() -> None:
    out = run("frobnicate")
    assert out.returncode == 2
    assert "invalid choice" in out.stderr


def test_no_arguments_prints_help_and_exits_2() -> None:
    out = run()
    assert out.returncode == 2
    assert "usage: litefs" in out.stderr


def test_every_subcommand_module_exists_and_has_help() -> None:
    from litefs.tools.litefs_cli import SUBCOMMANDS

    for name in SUBCOMMANDS:
        out = run(name, "--help")
        assert out.returncode == 0, (name, out.stderr)
        assert f"litefs {name}" in out.stdout
