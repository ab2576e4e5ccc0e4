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


def _type_in_zsh(fpath: Path, keys: list[bytes]) -> list[str]:
    """A real interactive zsh on a pty with compinit and the generated function on $fpath:
    type each line (ending in TAB) and return what zsh echoed back for it."""
    import os
    import pty
    import select
    import time

    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execvpe("zsh", ["zsh", "-f", "-i"], {"PATH": "/usr/bin:/bin", "TERM": "dumb",
                                                 "HOME": str(fpath)})

    def read(wait: float) -> str:
        out, end = b"", time.monotonic() + wait
        while time.monotonic() < end:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    out += os.read(fd, 65536)
                except OSError:
                    break
        return out.decode(errors="replace")

    try:
        os.write(fd, f"fpath=({fpath} $fpath); autoload -U compinit; compinit -u -D; "
                     "PS1='> '\n".encode())
        read(2.0)
        echoed = []
        for k in keys:
            os.write(fd, b"\x15" + k)  # ^U clears the line first
            echoed.append(read(1.5).replace("\r", " ").split()[-1])
        os.write(fd, b"\x15exit\n")
        read(0.5)
        return echoed
    finally:
        os.close(fd)
        os.waitpid(pid, 0)


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completion_completes(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "litefs.tools.docgen", "--zsh",
                        tmp_path / "_litefs"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "_litefs").read_text().startswith("#compdef ")
    got = _type_in_zsh(tmp_path, [b"litefs db s\t", b"lslite --j\t", b"litefs ex\t"])
    assert got == ["status", "--json", "explain"]
