"""Plain-user attacks on the FUSE view (security issue items 4-7), tried for real.

Every test mounts a real view and acts as a real unprivileged uid. Since the raw layers are
root-only in the view, what remains of each attack is a name swapped or planted in the backing
directory behind the daemon's back (done here as root, directly in the layer): the daemon must
never follow it, and nothing outside the layer may change (``outside`` is hashed before and
after). Each test also proves the user really reaches the mount, so a refusal is the view's.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from litefs.fs.kwhiteouts import STAMP
from tests.fsutil import Layers, Mounter, make_plan, put, skip_if_kernel_served

pytestmark = pytest.mark.fuse

UID = 54321


def as_user(fn: Callable[[], int]) -> int:
    """Run ``fn`` in a child as an unprivileged uid; its return value is the exit code."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            os.setgroups([])
            os.setresgid(UID, UID, UID)
            os.setresuid(UID, UID, UID)
            code = fn()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def outside_digest(lay: Layers) -> str:
    """Names, modes, owners, times and contents of everything under ``outside``."""
    h = hashlib.sha256()
    for dirpath, dirs, files in sorted(os.walk(lay.root / "outside")):
        dirs.sort()
        for n in sorted(files) + dirs:
            p = Path(dirpath, n)
            st = p.lstat()
            h.update(f"{p}:{st.st_mode}:{st.st_uid}:{st.st_gid}:{st.st_mtime_ns}\n".encode())
            if p.is_file() and not p.is_symlink():
                h.update(p.read_bytes())
    return h.hexdigest()


def mount_data(lay: Layers, mounter: Mounter) -> Path:
    m = mounter(make_plan({"/data/": "tmpfs"}), expect_errors=False)
    assert as_user(lambda: 0 if (m.path / "data/pub").read_text() == "public\n" else 1) == 0, "user cannot reach the mount"
    return m.path


def test_raw_layers_root_only(layers: Layers, litefs_mount: Mounter) -> None:
    mnt = mount_data(layers, litefs_mount)
    raw = mnt / ".statelite/tmpfs"

    def attack() -> int:
        try:
            os.listdir(raw)
        except PermissionError:
            return 0
        return 1

    assert as_user(attack) == 0


def _user_file(mnt: Path) -> None:
    def make() -> int:
        fd = os.open(mnt / "data/mine", os.O_CREAT | os.O_WRONLY, 0o600)
        os.write(fd, b"mine\n")
        os.close(fd)
        os.chmod(mnt / "data/mine", 0o640)  # the user may change their own file: the control
        return 0 if os.stat(mnt / "data/mine").st_mode & 0o777 == 0o640 else 1

    assert as_user(make) == 0


@pytest.mark.parametrize("swap", ["symlink", "hardlink"])
def test_setattr_after_swap_never_reaches_the_target(layers: Layers, litefs_mount: Mounter, swap: str) -> None:
    """Item 4: the kernel has the user's own file cached; behind it the backing name becomes a
    symlink to (or a hard link of) a root 0600 file. chmod/utime/truncate by the user must not
    change that file."""
    mnt = mount_data(layers, litefs_mount)
    _user_file(mnt)
    backing = layers.tmpfs / "data/mine"
    assert backing.exists()
    before = outside_digest(layers)
    backing.unlink()
    if swap == "symlink":
        backing.symlink_to(layers.root / "outside/victim")
    else:
        os.link(layers.root / "outside/victim", backing)

    # A symlink where the kernel knows a regular file: the daemon's reply shows the changed type
    # and the kernel marks the inode bad (EIO) - refused either way.
    refusals = (errno.EPERM, errno.EACCES) + ((errno.EIO,) if swap == "symlink" else ())

    def attack() -> int:
        bad = 0
        for name, op in (("chmod", lambda: os.chmod(mnt / "data/mine", 0o666)),
                         ("utime", lambda: os.utime(mnt / "data/mine", (1, 1))),
                         ("truncate", lambda: os.truncate(mnt / "data/mine", 0))):  # fmt: skip
            try:
                op()
            except OSError as exc:
                if exc.errno not in refusals:
                    print(name, exc)
                    bad = 1
        return bad

    assert as_user(attack) == 0
    assert outside_digest(layers) == before
    victim = (layers.root / "outside/victim").stat()
    assert victim.st_mode & 0o777 == 0o600 and victim.st_uid == 0


def test_planted_whiteout_symlink_is_ignored_and_never_followed(layers: Layers, litefs_mount: Mounter) -> None:
    """Item 5: a symlinked ``.wh.NAME`` marker is not a whiteout (the file stays visible), and
    when the user then deletes NAME the daemon replaces the symlink with a real marker instead of
    creating or truncating the file it points to."""
    mnt = litefs_mount(make_plan({"/data/": "tmpfs"}), expect_errors=False).path
    skip_if_kernel_served(mnt / "data", mnt, "no .wh. marker is read there (test_fs_native_ovl: the kernel-side attack)")
    _user_file(mnt)  # /data now exists in the tmpfs layer
    before = outside_digest(layers)
    wh = layers.tmpfs / "data/.wh.pub2"
    wh.symlink_to(layers.root / "outside/victim")
    (layers.tmpfs / "data/.wh.pub").symlink_to(layers.root / "outside/created")
    (layers.tmpfs / "data/.wh..wh..opq").symlink_to(layers.root / "outside/opq")
    assert litefs_cmd_refresh(mnt) == 0

    def attack() -> int:
        names = os.listdir(mnt / "data")
        if "pub" not in names or "pub2" not in names:  # planted markers must not hide them
            return 2
        os.unlink(mnt / "data/pub2")
        os.unlink(mnt / "data/pub")
        return 0 if sorted(os.listdir(mnt / "data")) == ["mine"] else 3

    assert as_user(attack) == 0
    assert outside_digest(layers) == before
    assert not (layers.root / "outside/created").exists() and not (layers.root / "outside/opq").exists()
    if (layers.tmpfs / STAMP).exists():
        # The kernel's format (LITEFS_TEST_NATIVE_WRITES=format): .wh. names are no markers
        # at all; the planted link is left alone, never followed, and the deletion is a char
        # device 0/0 at the name itself.
        assert wh.is_symlink()
        assert stat.S_ISCHR(os.lstat(layers.tmpfs / "data/pub2").st_mode)
        return
    assert not wh.is_symlink() and wh.is_file() and wh.stat().st_size == 0
    log = (layers.root / "litefs-mnt.log").read_text()
    assert "not a regular file; ignored" in log and "not a regular file" in log and "replaced" in log


def litefs_cmd_refresh(mnt: Path) -> int:
    from tests.fsutil import litefs_cmd

    return litefs_cmd("refresh", str(mnt)).returncode


def test_create_over_stale_negative_entry_checks_access(layers: Layers, litefs_mount: Mounter) -> None:
    """Item 6: the kernel caches /data/secret as absent (negative entry, 1 s); a root 0600 file
    then appears behind it in the backing directory. The user's open(O_CREAT|O_RDWR) reaches the
    daemon as a create; it must be refused as open(2) would refuse it, not hand back a
    read-write descriptor."""
    mnt = mount_data(layers, litefs_mount)
    skip_if_kernel_served(mnt / "data", mnt, "the kernel checks access itself, no FUSE negative entry")
    _user_file(mnt)
    target = mnt / "data/secret"
    with pytest.raises(FileNotFoundError):
        os.stat(target)  # the negative dentry (shared by every user)
    secret = put(layers.tmpfs, "data/secret", "root only\n", 0o600)
    h = hashlib.sha256(secret.read_bytes()).hexdigest()

    def attack() -> int:
        try:
            fd = os.open(target, os.O_CREAT | os.O_RDWR, 0o666)
        except PermissionError:
            return 0
        os.write(fd, b"owned")
        os.close(fd)
        return 1

    assert as_user(attack) == 0
    assert hashlib.sha256(secret.read_bytes()).hexdigest() == h
    assert secret.stat().st_mode & 0o777 == 0o600 and secret.stat().st_uid == 0


def test_listxattr_hides_trusted_names_from_plain_users(layers: Layers, litefs_mount: Mounter) -> None:
    """Item 7: ``trusted.*`` names on a backing file are listed to root only."""
    mnt = mount_data(layers, litefs_mount)
    skip_if_kernel_served(mnt / "data", mnt, "the kernel lists xattrs itself (and hides trusted.* from users)")
    _user_file(mnt)
    try:
        os.setxattr(layers.tmpfs / "data/mine", "trusted.litefs-test", b"x")
    except OSError as exc:
        pytest.skip(f"backing filesystem has no trusted xattrs: {exc}")
    assert "trusted.litefs-test" in os.listxattr(mnt / "data/mine")  # root sees it: the control

    def look() -> int:
        names = os.listxattr(mnt / "data/mine")
        if "user.litefs.origin" not in names and not any(n.startswith("user.") for n in names):
            return 2  # listxattr did not reach the view at all
        return 1 if any(n.startswith("trusted.") for n in names) else 0

    assert as_user(look) == 0
