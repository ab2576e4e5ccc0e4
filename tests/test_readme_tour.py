"""The README's admin tour works as printed: each command runs against a throw-away SQLite
database (LITEFS_DB) and exits 0. Commands that need a real image, node or running service
are listed in SKIPPED with the reason, so a new README line is either run or explained."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's console scripts, as set-up links them

#: README commands (by their first words) that cannot run on a test host, and why.
SKIPPED = {
    "liteimg rhels9": "needs a real image under /install/netboot",
    "liteimg --undo": "needs a real image under /install/netboot",
    "litefs inspect": "mounts FUSE over a real ROOTIMG and persistent store",
    "litefs classic-boot": "needs a real ROOTIMG",
    "mountd": "a long-running service (tested in test_mountd_*)",
    "nodeset compute": "needs osimage rhels9-x86_64-statelite-compute and /tftpboot",
    "litefs-mkinitramfs": "needs ROOTIMGDIR and busybox (tested in test_boot_*)",
    "litefs notify": "needs a running mountd",
    "litefs ca init": "writes /etc/litefs/ca (run with --dir in test_mountd_*)",
    "litefs ca issue": "needs the site CA",
    "litefs mount": "needs a node's plan, image and FUSE",
    "litefs refresh": "needs a mounted /sysroot",
    "litefs umount": "needs a mounted /sysroot",
    "getfattr": "needs a mounted litefs",
    "tabedit": "opens $EDITOR",
}


def tour_commands() -> list[str]:
    """Every command in the README's shell blocks from 'An admin's tour' to 'Tests'."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## An admin's tour", 1)[1].split("## Tests and benchmarks", 1)[0]
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)  # continuation lines are one command
        for line in joined.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def skip_reason(command: str) -> str | None:
    for prefix, reason in SKIPPED.items():
        if command.startswith(prefix):
            return reason
    return None


def test_tour_is_found():
    cmds = tour_commands()
    assert any(c.startswith("litefs db init") for c in cmds)
    assert any(c.startswith("lslite") for c in cmds)


def test_readme_tour_runs_as_printed(tmp_path):
    env = dict(os.environ, LITEFS_DB=f"sqlite:///{tmp_path}/tour.db",
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    ran, skipped = [], []
    for command in tour_commands():
        reason = skip_reason(command)
        if reason:
            skipped.append(command)
            continue
        # As the admin types it: bash, from the repository root (the tour uses relative paths).
        proc = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, f"{command!r} exited {proc.returncode}: {proc.stderr.strip()}"
        ran.append(command)
    assert len(ran) >= 10, ran
    assert skipped, "the SKIPPED list is stale"


@pytest.mark.skipif(shutil.which("litefs") is None, reason="set-up has not linked /usr/local/bin")
def test_setup_links_console_scripts():
    # tools/setup.sh links the venv's scripts, so a bare 'litefs' is the project's.
    out = subprocess.run(["litefs", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None,
                    reason="needs root to run the scripts as another user")
@pytest.mark.parametrize("script", ["setup.sh", "demo.sh", "test.sh"])
def test_scripts_as_a_non_root_user(script: str, tmp_path: Path) -> None:
    # A non-root user goes through sudo; without sudo the script says so on one line.
    # Run a copy from a folder nobody can read: the clone itself may sit under a 0700 folder.
    tmp_path = Path(tempfile.mkdtemp(dir="/tmp"))
    tmp_path.chmod(0o755)
    copy = tmp_path / script
    shutil.copy(ROOT / "tools" / script, copy)
    shutil.copy(ROOT / "tools/asroot.sh", tmp_path / "asroot.sh")
    copy.chmod(0o755)
    r = subprocess.run([shutil.which("runuser") or "runuser", "-u", "nobody", "--", "bash", str(copy)],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path,
                       env={"PATH": "/usr/bin:/bin"})
    assert r.returncode != 0
    if shutil.which("sudo") is None:
        assert r.stderr.strip().endswith("needs root: run it as root (sudo is not installed)")
        assert len(r.stderr.strip().splitlines()) == 1
    else:
        assert "sudo" in r.stderr  # sudo asked for a password (none on stdin) or refused


SUDO_USER = "litefs-sudo-t"


@pytest.fixture
def sudo_user():
    """A throw-away user whom sudo lets run anything as root without a password (the README's
    "sudo user"), removed again afterwards."""
    if os.geteuid() != 0 or shutil.which("sudo") is None or shutil.which("useradd") is None:
        pytest.skip("needs root, sudo and useradd to make a sudo user")
    subprocess.run(["userdel", "-f", SUDO_USER], capture_output=True)
    subprocess.run(["useradd", "-M", "-s", "/bin/bash", SUDO_USER], check=True)
    rule = Path(f"/etc/sudoers.d/{SUDO_USER}")
    rule.write_text(f"{SUDO_USER} ALL=(root) NOPASSWD: ALL\n")
    rule.chmod(0o440)
    try:
        yield SUDO_USER
    finally:
        rule.unlink(missing_ok=True)
        subprocess.run(["userdel", "-f", SUDO_USER], capture_output=True)


@pytest.mark.parametrize("script", ["setup.sh", "demo.sh", "test.sh"])
def test_scripts_rerun_through_sudo_for_a_sudo_user(script: str, sudo_user: str) -> None:
    # Each script's own prologue (its lines up to the asroot.sh line, taken from the script so
    # the test follows it), then a probe instead of the heavy set-up: the sudo user gets root,
    # with the arguments kept, from any working directory.
    lines = (ROOT / "tools" / script).read_text().splitlines(keepends=True)
    end = next(i for i, x in enumerate(lines) if "asroot.sh" in x)
    folder = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        folder.chmod(0o755)
        (folder / "tools").mkdir(mode=0o755)
        shutil.copy(ROOT / "tools/asroot.sh", folder / "tools/asroot.sh")
        probe = folder / "tools" / script
        probe.write_text("".join(lines[:end + 1]) + 'echo "uid=$(id -u) args=$*"\n')
        probe.chmod(0o755)
        for cwd, path in ((folder, f"tools/{script}"), (folder / "tools", f"./{script}")):
            r = subprocess.run([shutil.which("runuser") or "runuser", "-u", sudo_user, "--", path, "a b", "-x"], cwd=cwd,
                               capture_output=True, text=True, timeout=60,
                               env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL)
            assert r.returncode == 0, r.stderr
            assert r.stdout.strip() == "uid=0 args=a b -x", (cwd, r.stdout, r.stderr)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
