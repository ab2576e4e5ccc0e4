"""Run a command inside an image: chroot with /proc, /sys and /dev in a private mount namespace.

The mounts live in a namespace of their own (``unshare --mount --propagation private``), so
they vanish with the command even when it is killed: an image tree never keeps a /proc mount
that would make a later ``rm -r`` or copy walk the host. While a command runs, a
``/usr/sbin/policy-rc.d`` that answers 101 keeps package scripts from starting daemons inside
the image (Debian's documented switch, invoke-rc.d and deb-systemd-invoke both honour it).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from litefs.genimage import GenimageError

#: Exit status 101 = "action forbidden by policy" (invoke-rc.d(8)).
POLICY_RC_D = "#!/bin/sh\n# written by litefs genimage/image-exec: no daemons inside an image\nexit 101\n"
_POLICY_MARK = b"written by litefs genimage/image-exec"

# $1 is the root, the rest the command. The shell only mounts and execs; no argument is
# interpolated into shell text, so any file name or package name is passed through unchanged.
_WRAPPER = r"""
r=$1; binds=$2; shift 2
mount -t proc proc "$r/proc"
mount -t sysfs sysfs "$r/sys" 2>/dev/null || true
mount --rbind /dev "$r/dev"
IFS='|'
for b in $binds; do mkdir -p "$r${b#*=}"; mount --bind "${b%%=*}" "$r${b#*=}"; done
unset IFS
exec chroot "$r" "$@"
"""

#: PATH inside the image: the host's PATH may name directories the image lacks.
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def image_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean environment for commands in the image (no host venv, no host locale)."""
    env = {
        "PATH": IMAGE_PATH,
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "DEBIAN_FRONTEND": "noninteractive",
        "DEBCONF_NONINTERACTIVE_SEEN": "true",
        "PIP_CONFIG_FILE": "/dev/null",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    if "TERM" in os.environ:
        env["TERM"] = os.environ["TERM"]
    env.update(extra or {})
    return env


def check_root(rootimg: Path) -> None:
    """Refuse a tree that is not an image root (so a typo never chroots into ``/``)."""
    if rootimg.resolve() == Path("/"):
        raise GenimageError("refusing to run in '/': give the image's rootimg directory")
    for d in ("proc", "sys", "dev", "usr/bin"):
        if not (rootimg / d).is_dir():
            raise GenimageError(f"{rootimg} is not an image root (no /{d}); "
                                f"build it first with genimage")


def run(rootimg: Path, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
        capture: bool = False, stdin: int | None = subprocess.DEVNULL,
        timeout: float | None = None, binds: Sequence[tuple[Path, str]] = (),
        pass_fds: Sequence[int] = ()) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` chrooted in ``rootimg``; return the completed process (never raises on rc).

    ``binds``: (host directory, path in the image) pairs bind-mounted for the command only,
    e.g. the MN's package cache on ``/var/cache/apt/archives`` so downloads are kept.
    """
    check_root(rootimg)
    for host, inside in binds:
        if "|" in str(host) or "=" in str(host) or "|" in inside or not inside.startswith("/"):
            raise GenimageError(f"cannot bind {host} on {inside}: '|' and '=' are not allowed")
    spec = "|".join(f"{host}={inside}" for host, inside in binds)
    cmd = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-ec", _WRAPPER,
           "sh", str(rootimg), spec, *argv]
    return subprocess.run(
        cmd, env=image_env(env), text=True, stdin=stdin, timeout=timeout, pass_fds=pass_fds,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None, check=False,
    )


@contextlib.contextmanager
def no_daemons(rootimg: Path) -> Iterator[None]:
    """``/usr/sbin/policy-rc.d`` answering 101 for the duration; an image's own one is kept."""
    path = rootimg / "usr/sbin/policy-rc.d"
    ours = not path.exists() and not path.is_symlink()
    if ours:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(POLICY_RC_D)
        path.chmod(0o755)
    try:
        yield
    finally:
        if ours:
            with contextlib.suppress(OSError):
                if _POLICY_MARK in path.read_bytes():
                    path.unlink()
