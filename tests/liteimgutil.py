"""Helpers for the liteimg, classic-boot and equivalence tests: a small busybox image and a
tree digest.

``build_busybox_image(root)`` lays out a minimal but real root tree around ``/bin/busybox``
(busybox-static): applet links, ``/etc`` with passwd/group/shadow, ntp.conf, resolv.conf,
``ssh/`` with a 0600 host key, ``/var`` trees, a 1777 ``/tmp``, a user-owned home, the
``/.statelite`` and ``/.sllocal`` folders genimage makes and an ``etc/init.d/statelite``.
Every mtime is pinned so two builds digest the same.

``tree_digest(root)`` maps each relative path to (type, mode, uid, gid, symlink target or
content hash, size, mtime). Deliberate choices: directory and symlink mtimes are left out
(adding or removing an entry changes a directory's mtime even when liteimg puts everything
back; a re-created symlink cannot keep its time), regular-file mtimes are included (liteimg
moves and ``cp -a`` copies keep them, so a changed mtime means a file was rewritten).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

BUSYBOX = "/bin/busybox"
PINNED = 1_600_000_000_000_000_000  # ns; every file and directory of the fixture
APPLETS = ("sh", "ls", "cat", "cp", "mv", "rm", "mkdir", "ln", "mount", "umount", "echo", "vi")


def _chown(p: Path, uid: int, gid: int) -> None:
    if os.geteuid() == 0:  # owners other than the caller need root; the layout does not
        os.chown(p, uid, gid)


def _write(root: Path, rel: str, text: str, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
    p = root / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    os.chmod(p, mode)
    _chown(p, uid, gid)


def _dir(root: Path, rel: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
    p = root / rel.lstrip("/")
    p.mkdir(parents=True, exist_ok=True)
    os.chmod(p, mode)
    _chown(p, uid, gid)


def build_busybox_image(root: Path) -> Path:
    """A small bootable-looking root tree at ``root`` (created); returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "lib", "dev", "proc", "sys", "run", "home"):
        _dir(root, d)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    os.chmod(root / "bin/busybox", 0o755)
    for applet in APPLETS:
        os.symlink("busybox", root / "bin" / applet)
    os.symlink("../bin/busybox", root / "sbin/init")
    _write(root, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")
    _write(root, "etc/group", "root:x:0:\nuser:x:1000:\n")
    _write(root, "etc/shadow", "root:*:13880:0:99999:7:::\nuser:!:13880:0:99999:7:::\n", 0o600)
    _write(root, "etc/hostname", "image\n")
    _write(root, "etc/hosts", "127.0.0.1 localhost\n")
    _write(root, "etc/ntp.conf", "server 10.0.0.1 iburst\ndriftfile /var/lib/ntp/drift\n")
    _write(root, "etc/resolv.conf", "nameserver 10.0.0.1\nsearch cluster\n")
    _write(root, "etc/fstab", "proc /proc proc defaults 0 0\n")
    _write(root, "etc/inittab", "::sysinit:/etc/init.d/rcS\n::respawn:/bin/sh\n")
    _write(root, "etc/adjtime", "0.0 0 0.0\n0\nUTC\n")
    _write(root, "etc/yp.conf", "")
    _write(root, "etc/motd", "welcome to the image\n")
    _write(root, "etc/ssh/sshd_config", "PermitRootLogin yes\nX11Forwarding no\n")
    _write(root, "etc/ssh/ssh_host_rsa_key", "-----BEGIN KEY-----\nnot a real key\n", 0o600)
    _write(root, "etc/ssh/ssh_host_rsa_key.pub", "ssh-rsa AAAA image\n")
    _write(root, "etc/sysconfig/network", "NETWORKING=yes\n")
    _write(root, "etc/syslog-ng/syslog-ng.conf", "@version: 3.0\n")
    _dir(root, "etc/lvm")
    _write(root, "etc/lvm/lvm.conf", "devices { }\n")
    _write(root, "etc/init.d/rcS", "#!/bin/sh\nmount -a\n", 0o755)
    _write(root, "etc/init.d/statelite", "#!/bin/bash\n# rc.statelite installed by genimage\n", 0o755)
    os.symlink("/proc/self/mounts", root / "etc/mtab")
    _dir(root, "tmp", 0o1777)
    _dir(root, "var")
    _write(root, "var/log/messages", "boot\n", 0o600)
    _write(root, "var/log/wtmp", "", 0o664, 0, 0)
    _dir(root, "var/lib/dhclient")
    _dir(root, "var/lib/ntp")
    _write(root, "var/lib/ntp/drift", "0.000\n")
    _write(root, "var/lib/random-seed", "0123456789abcdef\n", 0o600)
    _write(root, "var/lib/logrotate.status", "logrotate state -- version 2\n")
    _dir(root, "var/tmp", 0o1777)
    _dir(root, "var/lock")
    _dir(root, "var/run")
    _write(root, "var/run/utmp", "", 0o664)
    _dir(root, "var/empty", 0o711)
    _dir(root, "var/spool/cron", 0o700)
    _dir(root, "var/cache/man")
    _write(root, "var/cache/man/index.db", "man index\n")
    _dir(root, "var/adm")
    _dir(root, "opt/xcat")
    _write(root, "opt/xcat/xcatinfo", "IMAGENAME=busybox\n")
    _dir(root, "xcatpost")
    _write(root, "xcatpost/mypostscript", "#!/bin/sh\n", 0o755)
    _dir(root, "root", 0o700)
    _write(root, "root/.bashrc", "alias l='ls -l'\n")
    _write(root, "root/.bash_history", "ls\n", 0o600)
    _dir(root, "root/.ssh", 0o700)
    _write(root, "root/.ssh/authorized_keys", "ssh-rsa AAAA admin\n", 0o600)
    _dir(root, "home/user", 0o750, 1000, 1000)
    _write(root, "home/user/.profile", "PS1='$ '\n", 0o644, 1000, 1000)
    _dir(root, ".statelite")
    _dir(root, ".sllocal/localmnt")
    _dir(root, ".sllocal/log")
    pin_times(root)
    return root


def pin_times(root: Path, ns: int = PINNED) -> None:
    """Set every mtime/atime under ``root`` (symlinks included) to ``ns``."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), ns=(ns, ns), follow_symlinks=False)
    os.utime(root, ns=(ns, ns))


def tree_digest(root: Path | str) -> dict[str, tuple[object, ...]]:
    """Relative path -> (type, mode, uid, gid, target or sha256, size, mtime); see module doc."""
    out: dict[str, tuple[object, ...]] = {}
    base = str(root)
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, base)
            st = os.lstat(full)
            mode = stat.S_IMODE(st.st_mode)
            owner = (st.st_uid, st.st_gid)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", mode, *owner, os.readlink(full), None, None)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", mode, *owner, None, None, None)
            elif stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(Path(full).read_bytes()).hexdigest()
                out[rel] = ("file", mode, *owner, digest, st.st_size, st.st_mtime_ns)
            else:
                out[rel] = ("other", mode, *owner, st.st_rdev, None, None)
    return out


def diff_digests(a: dict[str, tuple[object, ...]], b: dict[str, tuple[object, ...]]) -> list[str]:
    """Readable differences between two digests (empty when equal)."""
    lines = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            lines.append(f"{k}: {a.get(k)} != {b.get(k)}")
    return lines
