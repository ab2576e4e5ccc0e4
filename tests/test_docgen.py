"""Man pages and bash completion come from the parsers themselves; every positional argument
of every command (and subcommand) has help text, so both have something to say."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from litefs.tools import docgen

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def parsers() -> dict[str, argparse.ArgumentParser]:
    return docgen.all_parsers()


def test_every_console_script_has_a_parser(parsers) -> None:
    assert set(parsers) == set(docgen._scripts())


def test_every_positional_has_help(parsers) -> None:
    missing = [f"{words}: {a.dest}"
               for name, p in parsers.items() for words, sp in docgen.walk(p, name)
               for a in sp._actions
               if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
               and not (a.help or "").strip()]
    assert missing == []


def test_generated_files(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "litefs.tools.docgen", "--man", tmp_path / "man1",
                        "--bash", tmp_path / "litefs.bash"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "man1/litefs.1").read_text()
    assert page.startswith('.TH "LITEFS" 1') and "LITEFS EXPLAIN" in page and "\\-\\-json" in page
    assert (tmp_path / "man1/lslite.1").exists() and (tmp_path / "man1/litefs-mountd.1").exists()
    if shutil.which("man"):
        out = subprocess.run(["man", "-l", tmp_path / "man1/lslite.1"], capture_output=True,
                             text=True, env={"MANPAGER": "cat", "PATH": "/usr/bin:/bin"})
        assert out.returncode == 0 and "noderange" in out.stdout
    # Completion really completes: source the script in bash and ask for "litefs db s".
    script = f"""source {tmp_path / 'litefs.bash'}
COMP_WORDS=(litefs db s); COMP_CWORD=2; _litefs_litefs; echo "${{COMPREPLY[@]}}"
COMP_WORDS=(lslite --j); COMP_CWORD=1; _litefs_lslite; echo "${{COMPREPLY[@]}}"
COMP_WORDS=(litefs ex); COMP_CWORD=1; _litefs_litefs; echo "${{COMPREPLY[@]}}"
"""
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert out.stdout.splitlines() == ["status", "--json", "explain"], out.stderr
