"""The POSIX surface on writable paths of a real litefs mount (issue item 3).

One module-wide layout: ``/w/`` is a tmpfs rule over image content, ``/p/`` a persistent one,
so every call is tried both on files litefs must copy up first and on files it created.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import shutil
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from litefs.fs.layers import RENAME_EXCHANGE, RENAME_NOREPLACE, renameat2
from tests.fsutil import NATIVE_WRITES, Layers, LitefsMount, Mounter, make_plan, put, wait_for

pytestmark = pytest.mark.fuse


@pytest.fixture
def view(layers: Layers, litefs_mount: Mounter) -> LitefsMount:
    put(layers.image, "w/lower.txt", "lower content\n", mode=0o640)
    put(layers.image, "w/sub/deep.txt", "deep\n")
    put(layers.image, "p/lower.txt", "persistent seed\n")
    put(layers.image, "etc/passwd", "root:x:0:0::/root:/bin/sh\n")
    shutil.copy("/bin/true", layers.image / "w/true")
    return litefs_mount(make_plan({"/w/": "tmpfs", "/p/": "persistent", "/x/": "tmpfs"}))


def _rename2(a: Path, b: Path, flags: int) -> None:
    renameat2(-100, str(a), -100, str(b), flags)  # AT_FDCWD


def test_create_open_flags(view: LitefsMount, layers: Layers) -> None:
    w = view.path / "w"
    fd = os.open(w / "new", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.write(fd, b"abc")
    os.close(fd)
    with pytest.raises(FileExistsError):
        os.open(w / "new", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    with pytest.raises(FileExistsError):
        os.open(w / "lower.txt", os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # exists only below
    fd = os.open(w / "new", os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"def")
    os.close(fd)
    assert (w / "new").read_bytes() == b"abcdef"
    # O_TRUNC of a lower file: copied up empty, the image untouched.
    fd = os.open(w / "lower.txt", os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"x")
    os.close(fd)
    assert (w / "lower.txt").read_bytes() == b"x"
    assert (layers.image / "w/lower.txt").read_text() == "lower content\n"
    assert stat.S_IMODE((w / "lower.txt").stat().st_mode) == 0o640
    # O_TRUNC of a file already in the upper layer truncates it (shell '>' redirection).
    (w / "new").write_text("a much longer content")
    (w / "new").write_text("short")
    assert (w / "new").read_text() == "short"
    subprocess.run(["sh", "-c", f"echo x > {w}/new"], check=True)
    assert (w / "new").read_text() == "x\n"
    fd = os.open(w / "rw", os.O_CREAT | os.O_RDWR, 0o600)
    os.pwrite(fd, b"0123456789", 0)
    assert os.pread(fd, 4, 3) == b"3456"
    os.fsync(fd)
    os.fdatasync(fd)
    os.ftruncate(fd, 4)
    assert os.fstat(fd).st_size == 4
    os.close(fd)
    os.truncate(w / "rw", 2)
    assert (w / "rw").read_bytes() == b"01"


def test_copy_up_keeps_metadata_and_xattrs(view: LitefsMount, layers: Layers) -> None:
    src = layers.image / "p/lower.txt"
    os.chown(src, 1234, 2345)
    os.chmod(src, 0o604)
    os.setxattr(src, "user.color", b"blue")
    os.utime(src, ns=(1_000_000_000, 2_000_000_000))
    p = view.path / "p/lower.txt"
    os.close(os.open(p, os.O_RDWR))  # opening for write is what copies up
    up = layers.persistent / "p/lower.txt"
    st = up.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 2345, 0o604)
    assert st.st_mtime_ns == 2_000_000_000
    assert os.getxattr(up, "user.color") == b"blue"
    assert up.read_text() == "persistent seed\n"
    assert os.getxattr(p, "user.color") == b"blue"


def test_callers_umask_applies_once(view: LitefsMount) -> None:
    w = view.path / "w"
    for mask, fmode, dmode in ((0o027, 0o640, 0o750), (0, 0o666, 0o777)):
        old = os.umask(mask)
        try:
            os.close(os.open(w / f"um{mask}", os.O_CREAT | os.O_WRONLY, 0o666))
            os.mkdir(w / f"umd{mask}", 0o777)
        finally:
            os.umask(old)
        assert stat.S_IMODE((w / f"um{mask}").stat().st_mode) == fmode
        assert stat.S_IMODE((w / f"umd{mask}").stat().st_mode) == dmode


def test_attributes_chmod_chown_utimens(view: LitefsMount, layers: Layers) -> None:
    w = view.path / "w"
    os.chmod(w / "lower.txt", 0o600)
    os.chown(w / "lower.txt", 42, 43)
    os.utime(w / "lower.txt", ns=(5_000_000_000, 6_000_000_000))
    st = (w / "lower.txt").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns) == (0o600, 42, 43, 6_000_000_000)
    assert (layers.tmpfs / "w/lower.txt").stat().st_uid == 42
    assert stat.S_IMODE((layers.image / "w/lower.txt").stat().st_mode) == 0o640
    # A directory that exists only below is copied up (alone) for a chmod.
    os.chmod(w / "sub", 0o700)
    assert stat.S_IMODE((w / "sub").stat().st_mode) == 0o700
    assert (w / "sub/deep.txt").read_text() == "deep\n"


def test_rename_flags(view: LitefsMount) -> None:
    w = view.path / "w"
    (w / "a").write_text("A")
    (w / "b").write_text("B")
    with pytest.raises(FileExistsError):
        _rename2(w / "a", w / "b", RENAME_NOREPLACE)
    _rename2(w / "a", w / "c", RENAME_NOREPLACE)
    assert not (w / "a").exists()
    _rename2(w / "b", w / "c", RENAME_EXCHANGE)
    assert (w / "b").read_text() == "A" and (w / "c").read_text() == "B"
    os.rename(w / "b", w / "c")  # replace
    assert (w / "c").read_text() == "A" and not (w / "b").exists()
    os.rename(w / "lower.txt", w / "moved.txt")  # from the image: copy-up + whiteout
    assert "lower.txt" not in os.listdir(w)
    assert (w / "moved.txt").read_text() == "lower content\n"
    os.mkdir(w / "d1")
    (w / "d1/f").write_text("f")
    os.rename(w / "d1", w / "d2")  # a directory only in the upper layer
    assert (w / "d2/f").read_text() == "f"


def test_unlink_rmdir_mkdir(view: LitefsMount) -> None:
    w = view.path / "w"
    with pytest.raises(OSError) as info:
        os.rmdir(w / "sub")
    assert info.value.errno == errno.ENOTEMPTY  # its content is only in the image
    os.unlink(w / "sub/deep.txt")
    os.rmdir(w / "sub")
    assert "sub" not in os.listdir(w)
    os.mkdir(w / "sub")
    assert os.listdir(w / "sub") == []
    with pytest.raises(IsADirectoryError):
        os.unlink(w / "sub")
    with pytest.raises(NotADirectoryError):
        os.rmdir(w / "lower.txt")
    # A file unlinked while open stays readable through its descriptor.
    (w / "open").write_text("still here")
    fd = os.open(w / "open", os.O_RDWR)
    os.unlink(w / "open")
    assert os.pread(fd, 100, 0) == b"still here"
    assert os.fstat(fd).st_size == 10
    os.ftruncate(fd, 5)
    assert os.fstat(fd).st_size == 5
    os.close(fd)
    assert not (w / "open").exists()


def test_symlink_hardlink_fifo(view: LitefsMount, layers: Layers) -> None:
    w = view.path / "w"
    os.symlink("lower.txt", w / "ln")
    assert os.readlink(w / "ln") == "lower.txt"
    assert (w / "ln").read_text() == "lower content\n"
    (w / "orig").write_text("one")
    os.link(w / "orig", w / "hard")
    assert (w / "hard").stat().st_nlink == 2
    with open(w / "hard", "a") as f:
        f.write("two")
    assert (w / "orig").read_text() == "onetwo"
    os.link(w / "lower.txt", w / "hard2")  # copy-up first, then link within the layer
    assert (w / "hard2").read_text() == "lower content\n"
    with pytest.raises(OSError) as info:
        os.link(w / "orig", view.path / "p/cross")
    assert info.value.errno == errno.EXDEV
    os.mkfifo(w / "fifo")
    assert stat.S_ISFIFO((w / "fifo").stat().st_mode)
    assert stat.S_ISFIFO((layers.tmpfs / "w/fifo").lstat().st_mode)


def _mount_options(mnt: Path) -> tuple[set[str], set[str]]:
    """(per-mount options, superblock options) of the mount at ``mnt`` from mountinfo."""
    with open("/proc/self/mountinfo") as f:
        fields = next(x.split() for x in f if x.split()[4] == str(mnt))
    sep = fields.index("-")
    return set(fields[5].split(",")), set(fields[sep + 3].split(","))


def test_root_filesystem_options_and_device_nodes(view: LitefsMount, layers: Layers) -> None:
    """A root filesystem needs allow_other, default_permissions, dev and suid (issue item 1):
    a device node made in the view works, and set-uid bits are not masked by the mount."""
    per_mount, super_opts = _mount_options(view.path)
    assert {"allow_other", "default_permissions"} <= super_opts
    assert not {"nodev", "nosuid"} & per_mount
    w = view.path / "w"
    os.mknod(w / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    st = (w / "null").stat()
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert stat.S_ISCHR((layers.tmpfs / "w/null").lstat().st_mode)
    with open(w / "null", "r+b") as f:  # opens the device itself: the mount honours dev
        assert f.write(b"discarded") == 9
        assert f.read() == b""
    (w / "setuid").write_bytes(b"")
    os.chmod(w / "setuid", 0o4755)
    assert (w / "setuid").stat().st_mode & stat.S_ISUID


def test_xattrs_statfs_locks(view: LitefsMount) -> None:
    w = view.path / "w"
    f = w / "lower.txt"
    os.setxattr(f, "user.a", b"1")
    assert os.getxattr(f, "user.a") == b"1"
    assert "user.a" in os.listxattr(f)
    os.removexattr(f, "user.a")
    with pytest.raises(OSError):
        os.getxattr(f, "user.a")
    sv = os.statvfs(view.path)
    assert sv.f_namemax == 255 and sv.f_blocks > 0
    with open(w / "lockme", "w") as fh:
        fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = subprocess.run(
            ["flock", "-n", str(w / "lockme"), "true"], capture_output=True
        )
        assert r.returncode != 0  # another process sees the lock
        fcntl.flock(fh, fcntl.LOCK_UN)


def test_mmap_and_exec(view: LitefsMount) -> None:
    w = view.path / "w"
    with open(w / "lower.txt", "rb") as fh, mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ) as mm:
        assert mm[:5] == b"lower"
    (w / "shared").write_bytes(b"\0" * 4096)
    with open(w / "shared", "r+b") as fh, mmap.mmap(fh.fileno(), 4096) as mm:
        mm[:5] = b"hello"
        mm.flush()
    assert (w / "shared").read_bytes()[:5] == b"hello"
    assert subprocess.run([str(w / "true")]).returncode == 0  # a binary run out of the view


def test_concurrent_writers(view: LitefsMount) -> None:
    w = view.path / "w"
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            for j in range(50):
                (w / f"t{i}-{j}").write_text(f"{i}:{j}")
            with open(w / "shared.log", "a") as f:
                for j in range(100):
                    f.write(f"{i:02d}-{j:03d}\n")
                    f.flush()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    procs = [
        subprocess.Popen(["sh", "-c", f"for i in $(seq 100); do echo p{k}-$i >> {w}/shared.log; done"])
        for k in range(2)
    ]
    for t in threads:
        t.join()
    assert [p.wait() for p in procs] == [0, 0]
    assert not errors
    lines = (w / "shared.log").read_text().splitlines()
    assert len(lines) == 8 * 100 + 2 * 100  # O_APPEND: nothing lost, nothing torn
    expected = {f"{i:02d}-{j:03d}" for i in range(8) for j in range(100)}
    expected |= {f"p{k}-{i}" for k in range(2) for i in range(1, 101)}
    assert set(lines) == expected
    for i in range(8):
        for j in range(50):
            assert (w / f"t{i}-{j}").read_text() == f"{i}:{j}"


@pytest.mark.skipif(NATIVE_WRITES, reason="FUSE's own inode table: with --native-writes the kernel serves /w and /x")
def test_forget_bounds_the_inode_table(view: LitefsMount, layers: Layers) -> None:
    x = view.path / "x"
    os.makedirs(x, exist_ok=True)
    for i in range(20):
        d = x / f"d{i}"
        d.mkdir()
        for j in range(50):
            (d / f"f{j}").write_text("")
    # Image files the view has never looked up: only readdirplus hands their inodes out.
    for i in range(10):
        for j in range(50):
            put(layers.image, f"w/listed/d{i}/f{j}")
    before = int(os.getxattr(view.path, "user.litefs.inodes"))
    subprocess.run(["find", str(view.path / "w/listed")], check=True, capture_output=True)
    assert int(os.getxattr(view.path, "user.litefs.inodes")) >= before + 500  # counted as lookups
    subprocess.run(["find", str(x), "-type", "f"], check=True, capture_output=True)
    high = int(os.getxattr(view.path, "user.litefs.inodes"))
    assert high > 1500
    Path("/proc/sys/vm/drop_caches").write_text("2\n")
    # FORGET messages arrive asynchronously after the kernel drops its entries.
    wait_for(lambda: int(os.getxattr(view.path, "user.litefs.inodes")) < high / 4)


def test_other_users_own_what_they_create_and_permissions_hold(view: LitefsMount, layers: Layers) -> None:
    w = view.path / "w"
    os.chmod(w, 0o1777)
    for d in view.path.parents:  # let the user reach the mount point (pytest dirs are 0700)
        if d == Path("/tmp"):
            break
        os.chmod(d, stat.S_IMODE(d.stat().st_mode) | 0o011)

    def as_user() -> None:
        os.setgid(1000)
        os.setuid(1000)

    r = subprocess.run(
        ["sh", "-c", f"echo mine > {w}/user-file && mkdir {w}/user-dir && cat {w}/lower.txt"],
        preexec_fn=as_user, capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode != 0 and "Permission denied" in r.stderr  # lower.txt is 0640 root
    st = (layers.tmpfs / "w/user-file").stat()
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    assert (layers.tmpfs / "w/user-dir").stat().st_uid == 1000
    r = subprocess.run(["sh", "-c", f"rm {w}/sub/deep.txt"], preexec_fn=as_user, capture_output=True, text=True)
    assert r.returncode != 0  # root's directory: not theirs to change
