"""Real external workloads in writable areas of a litefs view, and ``--bypass``.

A real package tree (an installed Python package, tarred up) is unpacked into a persistent
rule, byte-compiled with ``python -m compileall`` and committed with git; the result must
survive a remount. ``--bypass`` must bind rule-free image directories natively and lift a
bind when a plan change puts a rule inside.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pygments
import pytest

from tests.fsutil import (
    NATIVE_WRITES,
    Layers,
    Mounter,
    is_mounted,
    litefs_cmd,
    make_plan,
    put,
)

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "HOME": "/tmp",
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
}


def test_untar_compileall_git_in_persistent_rule(layers: Layers, litefs_mount: Mounter) -> None:
    pkg = Path(pygments.__file__).parent
    tarball = layers.root / "pkg.tar.gz"
    with tarfile.open(tarball, "w:gz") as tf:
        tf.add(pkg, arcname="pygments", filter=lambda ti: None if "__pycache__" in ti.name else ti)
    plan = make_plan({"/srv/": "persistent", "/tmp/": "tmpfs"})
    m = litefs_mount(plan)
    work = m.path / "srv/work"
    work.mkdir(parents=True)
    subprocess.run(["tar", "-xzf", str(tarball), "-C", str(work)], check=True)
    n_py = sum(1 for _ in (work / "pygments").rglob("*.py"))
    assert n_py > 100
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(work / "pygments")], check=True)
    assert sum(1 for _ in (work / "pygments").rglob("*.pyc")) >= n_py
    run = {"cwd": work, "env": GIT_ENV, "check": True, "capture_output": True}
    subprocess.run(["git", "init", "-q"], **run)
    (work / ".gitignore").write_text("__pycache__/\n")
    subprocess.run(["git", "add", "-A"], **run)
    subprocess.run(["git", "commit", "-q", "-m", "import"], **run)
    (work / "NOTES").write_text("notes\n")
    subprocess.run(["git", "add", "NOTES"], **run)
    subprocess.run(["git", "commit", "-q", "-m", "notes"], **run)
    subprocess.run(["git", "mv", "NOTES", "NOTES.txt"], **run)
    subprocess.run(["git", "commit", "-q", "-am", "rename"], **run)
    log = subprocess.run(["git", "log", "--oneline"], **run).stdout.decode()
    assert len(log.splitlines()) == 3
    # The package imports from the view.
    r = subprocess.run(
        [sys.executable, "-c", "import pygments.lexers; print(pygments.lexers.get_lexer_by_name('python').name)"],
        cwd=work, capture_output=True, text=True, env={"PYTHONPATH": str(work), "PATH": GIT_ENV["PATH"]},
    )  # fmt: skip
    assert r.stdout.strip() == "Python", r.stderr
    m.stop()
    layers.fresh_tmpfs()
    m = litefs_mount(plan, name="mnt2")
    work = m.path / "srv/work"
    r = subprocess.run(["git", "status", "--porcelain"], cwd=work, env=GIT_ENV, capture_output=True, text=True, check=True)
    assert r.stdout == ""  # the tree is exactly what was committed
    subprocess.run(["git", "fsck", "--no-progress"], cwd=work, env=GIT_ENV, check=True, capture_output=True)


def test_bypass_binds_rule_free_dirs_and_lifts_on_plan_change(layers: Layers, litefs_mount: Mounter) -> None:
    put(layers.image, "usr/bin/tool", "tool")
    shutil.copy("/bin/true", layers.image / "usr/bin/true")
    put(layers.image, "usr/lib/x", "x")
    put(layers.image, "etc/motd", "motd")
    put(layers.image, "var/lib/a", "a")
    put(layers.image, "var/log/b", "b")
    os.symlink("usr/lib", layers.image / "lib")
    plan = make_plan({"/etc/motd": "tmpfs", "/var/log/": "tmpfs"})
    m = litefs_mount(plan, extra=["--bypass"])
    v = str(m.path)
    # /usr by its children (systemd-shutdown runs from /usr/lib to the end: never bound)
    assert is_mounted(v + "/usr") is None
    assert is_mounted(v + "/usr/bin") is not None  # bound straight from the image
    assert is_mounted(v + "/var/lib") is not None
    assert is_mounted(v + "/etc") is None
    assert is_mounted(v + "/var/log") == ("overlay" if NATIVE_WRITES else None)  # image content below
    assert is_mounted(v + "/lib") is None  # symlinks stay symlinks
    assert (m.path / "usr/bin/tool").read_text() == "tool"
    assert subprocess.run([v + "/usr/bin/true"]).returncode == 0
    with pytest.raises(OSError):
        (m.path / "usr/bin/new").write_text("x")  # read-only bind
    (m.path / "var/log/c").write_text("c")
    assert (layers.tmpfs / "var/log/c").exists()
    # A plan change that puts a rule in /usr/bin lifts that bind.
    new_plan = make_plan({"/etc/motd": "tmpfs", "/var/log/": "tmpfs", "/usr/bin/y": "tmpfs"})
    pf = layers.root / "new-plan.json"
    pf.write_text(new_plan.to_json())
    r = litefs_cmd("refresh", v, "--plan", str(pf))
    assert r.returncode == 0, r.stderr
    for _ in range(100):
        if is_mounted(v + "/usr/bin") is None:
            break
        time.sleep(0.05)
    assert is_mounted(v + "/usr/bin") is None
    assert is_mounted(v + "/var/lib") is not None  # untouched by the change
    # A refresh of everything keeps the binds (the kernel would detach mounts on any
    # dentry litefs invalidated).
    assert litefs_cmd("refresh", v).returncode == 0
    time.sleep(0.3)
    assert is_mounted(v + "/var/lib") is not None and is_mounted(v + "/usr/bin") is None
    (m.path / "usr/bin/y").write_text("y")
    assert (layers.tmpfs / "usr/bin/y").read_text() == "y"


SHELL_OPS = r"""
set -e
cd "$1"
sed -i 's/hello/HELLO/' a.txt
touch -d '2020-01-01 00:00' sub/b.txt
ln -sf sub/b.txt link
echo appended >> big
dd if=/dev/zero of=big bs=1 count=5 seek=10 conv=notrunc 2>/dev/null
truncate -s 3000 big
echo replaced with a longer line > big2
echo again > big2
mkdir -p newdir/x/y && echo n > newdir/x/y/n.txt
mv newdir moved
rm -rf sub/deep
mkdir sub/deep && echo fresh > sub/deep/new.txt
cp -a sub sub_copy
chmod -R go-rwx sub_copy
mv a.txt a2.txt && mv a2.txt a.txt
printf 'tmp' > .a.txt.swp && mv .a.txt.swp a.txt
rmdir d2 && mkdir d2
tar -cf "$2" sub && mkdir untar && tar -xf "$2" -C untar && tar -xf "$2" -C untar
ln sub/b.txt hard && echo more >> hard
mkfifo fifo
"""


def _tree(root: Path) -> tuple[str, str]:
    meta = subprocess.run(
        ["find", ".", "-printf", r"%p %y %m %s %l %TY\n"], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    data = subprocess.run(
        ["sh", "-c", "find . -type f -exec md5sum {} + | sort -k2"], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    return "\n".join(sorted(meta.splitlines())), data


def test_shell_workload_matches_a_native_directory(layers: Layers, litefs_mount: Mounter) -> None:
    """The same everyday shell operations (sed -i, >, >>, dd, truncate, cp -a, mv, rm -rf,
    tar, ln, mkfifo...) on image content under a tmpfs rule and on a plain copy of it end in
    identical trees: names, types, modes, sizes, link targets and bytes."""
    w = layers.image / "w"
    put(w, "a.txt", "hello\n")
    put(w, "sub/b.txt", "line1\n", mode=0o640)
    put(w, "sub/deep/c.txt", "deep\n")
    put(w, "big", "x" * 1000)
    put(w, "big2", "y" * 5000)
    (w / "d2").mkdir()
    os.symlink("a.txt", w / "link")
    native = layers.root / "native"
    shutil.copytree(w, native, symlinks=True)
    m = litefs_mount(make_plan({"/w/": "tmpfs"}))
    for where, tar in ((m.path / "w", layers.root / "v.tar"), (native, layers.root / "n.tar")):
        r = subprocess.run(["bash", "-c", SHELL_OPS, "ops", str(where), str(tar)], capture_output=True, text=True)
        assert r.returncode == 0, (where, r.stderr)
    assert _tree(m.path / "w") == _tree(native)
    assert (layers.image / "w/a.txt").read_text() == "hello\n"  # the image never changes
