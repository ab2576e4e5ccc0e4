"""genimage, the building: debootstrap or copy aside, apt, otherpkgs, postinstall, swap.

Every run builds in ``<rootimgdir>/.rootimg.new`` and only the last step puts it in place:
``renameat2(RENAME_EXCHANGE)`` swaps the new tree and the old ``rootimg`` in one step (there is
no moment without a ``rootimg``), then the old tree is deleted. A run that fails or is killed
before the swap leaves the working image as it was; the next run deletes the leftover
``.rootimg.new`` first. A re-run starts from a copy of the current image (``cp -a
--reflink=auto``: instant on btrfs/xfs, a plain copy elsewhere) and changes only the packages
that differ from what the last run recorded in ``var/lib/litefs-genimage/state.json``.

Package names are checked with ``apt-get install --simulate`` before anything is installed,
so a typo is one line naming the package and the file it came from. apt's downloads go to the
MN's ``/var/cache/litefs-genimage/debs`` (bind-mounted on the image's apt archive), which
debootstrap shares, so a second build downloads nothing it already has.

One module (~530 lines): the build is one sequence of steps, each guarding the next.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from litefs import syscalls
from litefs.genimage import (
    SUPPORTED_ARCH,
    SUPPORTED_OS,
    GenimageError,
    PkgList,
    Transaction,
    chroot,
    noderuntime,
)
from litefs.genimage.progress import Progress

CACHE_ROOT = Path("/var/cache/litefs-genimage")
DEB_CACHE = CACHE_ROOT / "debs"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: Inside the image: what the last genimage run installed (moves with the image on swap).
STATE_FILE = "var/lib/litefs-genimage/state.json"
APT_ARCHIVES = "/var/cache/apt/archives"
NEW, OLD = ".rootimg.new", ".rootimg.old"

#: INITRD=No: the kernel's postinst makes no /boot/initrd.img (15-60 MB and tens of seconds);
#: a statelite node boots initrd-statelite.gz, built beside rootimg by genimage.
APT_ENV = {"INITRD": "No"}



@dataclass
class Spec:
    """Everything one genimage run needs, resolved from the command line and the tables."""

    image: str
    osver: str
    arch: str
    profile: str
    rootimgdir: Path
    pkglist: PkgList
    otherpkgs: list[Transaction] = field(default_factory=list)
    otherpkgdir: Path | None = None
    postinstall: list[list[str]] = field(default_factory=list)
    exlist: tuple[list[str], list[str]] | None = None
    kernelver: str | None = None
    netdrivers: list[str] = field(default_factory=list)
    nodebootif: str | None = None
    permission: str = "755"
    mirror: str = DEFAULT_MIRROR
    noupdate: bool = False
    env: dict[str, str] = field(default_factory=dict)  # IMG_* for postinstall
    deb_cache: Path = DEB_CACHE
    wheel_cache: Path = noderuntime.DEFAULT_WHEEL_CACHE

    @property
    def rootimg(self) -> Path:
        return self.rootimgdir / "rootimg"

    @property
    def install_list(self) -> list[str]:
        """The pkglist plus what the node runtime needs (never removed by a ``-pkg``)."""
        pkgs = list(self.pkglist.install)
        pkgs += [p for p in noderuntime.REQUIRED_PACKAGES if p not in pkgs]
        if self.kernelver:
            pkgs.append(f"linux-image-{self.kernelver}")
        return pkgs


def _tail(text: str, n: int = 1) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " / ".join(lines[-n:]) if lines else "(no output)"


def _disk_hint(text: str) -> str:
    return (" (the disk is full: free space under the installdir)"
            if "No space left on device" in text else "")


# --- steps ---------------------------------------------------------------------------------


@contextlib.contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """One user of the MN's package cache at a time: apt takes its archive lock without
    waiting, so a second genimage (or image-exec) would fail instead of queueing."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".litefs-genimage.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def debootstrap(spec: Spec, target: Path) -> None:
    with cache_lock(spec.deb_cache):
        _debootstrap(spec, target)


def _debootstrap(spec: Spec, target: Path) -> None:
    cmd = ["debootstrap", "--variant=minbase", f"--arch={SUPPORTED_ARCH[spec.arch]}",
           f"--cache-dir={spec.deb_cache}", SUPPORTED_OS[spec.osver], str(target), spec.mirror]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False,
                         env={**os.environ, "LANG": "C.UTF-8"})
    if res.returncode != 0:
        out = res.stdout + res.stderr
        log = target / "debootstrap/debootstrap.log"
        if log.exists():
            out += log.read_text(errors="replace")
        hint = _disk_hint(out)
        if not hint and re.search(r"Failed getting release file|Couldn't download|"
                                  r"Could not resolve|Connection refused|unable to connect", out,
                                  re.I):
            hint = (f" (the archive {spec.mirror} is unreachable: check the network or set "
                    f"linuximage.pkgdir to a reachable Debian mirror)")
        err = [ln for ln in out.splitlines() if ln.startswith(("E:", "W: Failure"))]
        raise GenimageError(f"debootstrap failed: {err[-1] if err else _tail(out)}{hint}")


def copy_image(src: Path, dst: Path) -> None:
    res = subprocess.run(["cp", "-a", "--reflink=auto", str(src), str(dst)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise GenimageError(f"cannot copy {src} aside: {_tail(res.stderr)}"
                            f"{_disk_hint(res.stderr)}")


def _apt(spec: Spec, root: Path, args: list[str], progress: Progress | None = None,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """apt-get in the image, with the MN's package cache; status lines drive the bar."""
    spec.deb_cache.mkdir(parents=True, exist_ok=True)
    (spec.deb_cache / "partial").mkdir(exist_ok=True)
    rfd, wfd = os.pipe()

    def read_status() -> None:
        with os.fdopen(rfd, "r", errors="replace") as f:
            for line in f:
                # pmstatus:<pkg>:<percent>:<text> / dlstatus:... (apt's Status-Fd protocol)
                parts = line.split(":", 3)
                if len(parts) == 4 and progress is not None:
                    try:
                        pct = float(parts[2])
                    except ValueError:
                        continue
                    progress.update(pct, 100.0, f"{parts[0][:2]} {parts[1]}")

    reader = threading.Thread(target=read_status, daemon=True)
    reader.start()
    try:
        with cache_lock(spec.deb_cache):
            res = chroot.run(root, ["apt-get", "-q", "-y", "-o", f"APT::Status-Fd={wfd}",
                                    "-o", "Dpkg::Use-Pty=0",
                                    "-o", "APT::Keep-Downloaded-Packages=1",
                                    # A re-run never stops at a conffile question.
                                    "-o", "Dpkg::Options::=--force-confdef",
                                    "-o", "Dpkg::Options::=--force-confold", *args],
                             env={**APT_ENV, **(env or {})}, capture=True, binds=[(spec.deb_cache, APT_ARCHIVES)],
                             pass_fds=(wfd,))
    finally:
        os.close(wfd)
        reader.join(timeout=5)
    return res


def _apt_error(what: str, res: subprocess.CompletedProcess[str]) -> GenimageError:
    out = res.stdout + res.stderr
    errs = [ln for ln in out.splitlines() if ln.startswith("E:")]
    hint = _disk_hint(out)
    if not hint and re.search(r"Could not resolve|Failed to fetch|Connection refused", out):
        hint = " (the package archive is unreachable: check the network or the mirror)"
    return GenimageError(f"{what} failed: {errs[0] if errs else _tail(out)}{hint}")


def apt_update(spec: Spec, root: Path) -> None:
    res = _apt(spec, root, ["update"])
    if res.returncode != 0 or re.search(r"^(W|E): Failed to fetch", res.stdout + res.stderr,
                                        re.M):
        raise _apt_error("apt-get update in the image", res)


def missing_packages(spec: Spec, root: Path, names: list[str]) -> list[str]:
    """Names apt cannot find (``Unable to locate package X`` / ``has no installation
    candidate``), checked by a simulated install so nothing is changed."""
    if not names:
        return []
    res = _apt(spec, root, ["install", "--simulate", "--no-install-recommends", *names])
    out = res.stdout + res.stderr
    bad = re.findall(r"Unable to locate package (\S+)", out)
    bad += re.findall(r"Package '?(\S+?)'? has no installation candidate", out)
    if res.returncode != 0 and not bad:
        raise _apt_error("checking the package list", res)
    return bad


def installed_packages(root: Path) -> set[str]:
    """Package names dpkg has installed in the image (from its status file, no chroot)."""
    status = root / "var/lib/dpkg/status"
    out: set[str] = set()
    name = None
    for line in status.read_text(errors="replace").splitlines():
        if line.startswith("Package: "):
            name = line[9:].strip()
        elif line.startswith("Status: ") and name and line.endswith(" installed"):
            out.add(name)
    return out


def read_state(root: Path) -> dict[str, object]:
    try:
        data = json.loads((root / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def package_changes(spec: Spec, root: Path, fresh: bool) -> tuple[list[str], list[str]]:
    """(to install, to purge): added since the last run, and removed from the list."""
    want = spec.install_list
    have = installed_packages(root)
    prev = [] if fresh else [str(p) for p in read_state(root).get("packages", []) or []]  # type: ignore[union-attr]
    install = [p for p in want if p not in have]
    purge = [p for p in prev if p not in want and p in have]
    purge += [p for p in spec.pkglist.remove if p in have and p not in purge
              and p not in noderuntime.REQUIRED_PACKAGES]
    return install, purge


def packages(spec: Spec, root: Path, fresh: bool, progress: Progress) -> str:
    """Install what was added and purge what was removed; returns a summary."""
    if fresh or not spec.noupdate:
        apt_update(spec, root)
    install, purge = package_changes(spec, root, fresh)
    bad = missing_packages(spec, root, install)
    if bad:
        src = spec.pkglist.origin.get(bad[0])
        where = f" (listed in {src})" if src else ""
        raise GenimageError(f"package {bad[0]} does not exist in {spec.mirror} "
                            f"{SUPPORTED_OS[spec.osver]}{where}: fix the pkglist"
                            + (f"; also missing: {', '.join(bad[1:])}" if bad[1:] else ""))
    if purge:
        res = _apt(spec, root, ["purge", "--auto-remove", *purge], progress)
        if res.returncode != 0:
            raise _apt_error(f"purging {' '.join(purge)}", res)
    if install:
        res = _apt(spec, root, ["install", "--no-install-recommends", *install], progress)
        if res.returncode != 0:
            raise _apt_error("installing the pkglist", res)
    # Mark the whole list manual, so a later --auto-remove never takes one of them.
    chroot.run(root, ["apt-mark", "manual", *spec.install_list], capture=True)
    drop_apt_cache(root)
    return f"{len(install)} installed, {len(purge)} purged"


def drop_apt_cache(root: Path) -> None:
    """The image's own downloaded .debs (debootstrap leaves them) and apt's binary caches:
    ~100 MB no node needs; apt rebuilds the caches when it next runs. Done on the tree, never
    with ``apt-get clean`` in the chroot (the archive dir may be the MN's bind-mounted cache)."""
    archives = root / APT_ARCHIVES.lstrip("/")
    for deb in archives.glob("*.deb"):
        deb.unlink()
    for name in ("pkgcache.bin", "srcpkgcache.bin"):
        (root / "var/cache/apt" / name).unlink(missing_ok=True)


def _find_deb(otherpkgdir: Path, name: str) -> Path:
    """``name`` (``subdir/pkg`` allowed) as a .deb in otherpkgdir, never outside it."""
    base = otherpkgdir.resolve()
    sub, _, pkg = name.rpartition("/")
    folder = (base / sub).resolve() if sub else base
    if folder != base and base not in folder.parents:
        raise GenimageError(f"otherpkgs entry {name!r} leaves otherpkgdir {otherpkgdir}")
    candidates = sorted(folder.glob(f"{pkg}_*.deb")) + sorted(folder.glob(f"{pkg}.deb"))
    if not candidates:
        raise GenimageError(f"otherpkgs: no {pkg}_*.deb in {folder}: copy the package there "
                            f"or remove it from the otherpkgs list")
    return candidates[-1]


def otherpkgs(spec: Spec, root: Path, progress: Progress) -> str:
    if spec.otherpkgdir is None:
        raise GenimageError("otherpkgs list given but no otherpkgdir: set linuximage.otherpkgdir")
    count = 0
    inbox = root / "tmp/litefs-otherpkgs"
    for tx in spec.otherpkgs:
        env = dict(tx.env)
        have = installed_packages(root)
        before = [p for p in tx.remove_before if p in have]
        if before:
            res = _apt(spec, root, ["purge", *before], progress, env)
            if res.returncode != 0:
                raise _apt_error(f"otherpkgs: purging {' '.join(before)}", res)
        if tx.install:
            shutil.rmtree(inbox, ignore_errors=True)
            inbox.mkdir(parents=True)
            try:
                debs = [_find_deb(spec.otherpkgdir, n) for n in tx.install]
                for d in debs:
                    shutil.copy2(d, inbox / d.name)
                res = _apt(spec, root, ["install", "--no-install-recommends",
                                        *[f"/tmp/litefs-otherpkgs/{d.name}" for d in debs]],
                           progress, env)
                if res.returncode != 0:
                    raise _apt_error("otherpkgs: installing " + " ".join(tx.install), res)
                count += len(debs)
            finally:
                shutil.rmtree(inbox, ignore_errors=True)
        after = [p for p in tx.remove_after if p in installed_packages(root)]
        if after:
            res = _apt(spec, root, ["purge", *after], progress, env)
            if res.returncode != 0:
                raise _apt_error(f"otherpkgs: purging {' '.join(after)}", res)
    return f"{count} installed"


def postinstall(spec: Spec, root: Path) -> str:
    """Each script as xCAT runs it: on the MN, ``script rootimg osver arch profile [args]``."""
    for item in spec.postinstall:
        script, args = item[0], item[1:]
        if not os.access(script, os.X_OK):
            raise GenimageError(f"postinstall script {script} is not executable: chmod +x it")
        env = {**os.environ, **spec.env, "IMG_ROOTIMGDIR": str(root)}
        res = subprocess.run([script, str(root), spec.osver, spec.arch, spec.profile, *args],
                             env=env, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise GenimageError(f"postinstall script {script} exited {res.returncode}: "
                                f"{_tail(res.stderr or res.stdout)}; fix it or remove it from "
                                f"linuximage.postinstall")
    return f"{len(spec.postinstall)} script(s)"


def _inside(root: Path, path: Path) -> bool:
    """``path``'s parent resolves inside ``root`` (a symlinked directory never leads out)."""
    real = Path(os.path.realpath(path.parent))
    return real == root or root in real.parents


def apply_exlist(root: Path, exclude: list[str], include: list[str]) -> str:
    """Delete what the exlist names from the image, except what ``+`` lines keep."""
    from fnmatch import fnmatch

    real_root = Path(os.path.realpath(root))
    removed = 0
    for pattern in exclude:
        if not pattern or ".." in Path(pattern).parts:
            continue
        for match in sorted(root.glob(pattern), reverse=True):
            rel = match.relative_to(root).as_posix()
            if any(fnmatch(rel, inc) or rel.startswith(inc.rstrip("*").rstrip("/") + "/")
                   for inc in include) or not _inside(real_root, match):
                continue
            if match.is_dir() and not match.is_symlink():
                shutil.rmtree(match)
            else:
                match.unlink(missing_ok=True)
            removed += 1
    return f"{removed} path(s) removed"


def statelite_dirs(root: Path, permission: str) -> None:
    """``/.statelite`` with ``--permission`` and xCAT's ``.sllocal`` folders."""
    mode = int(permission, 8)
    for d in (".statelite", ".sllocal/localmnt", ".sllocal/log"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / ".statelite", mode)
    finished_for_systemd(root)


def finished_for_systemd(root: Path) -> None:
    """Mark the image as a finished build for the systemd that boots it read-only.

    * ``/etc/.updated`` and ``/var/.updated`` carry ``/usr``'s time, as systemd-update-done
      writes them after a first boot: the ``ConditionNeedsUpdate=`` units (sysusers, ldconfig,
      hwdb, journal catalog) then do not run on every boot, where they could only fail on the
      read-only ``/etc`` and ``/var`` of a statelite node (``systemctl --failed`` would name
      systemd-sysusers on each one).
    * ``/etc/hostname`` is removed: one image boots every node, so it must not name one (the
      debootstrap host's name would be every node's); the boot hook sets the kernel's
      hostname to ``NODE=`` and systemd keeps it.
    """
    usr = (root / "usr").stat()
    for d in ("etc", "var"):
        marker = root / d / ".updated"
        marker.write_text("# Written by litefs genimage (as systemd-update-done does)\n"
                          f"TIMESTAMP_NSEC={usr.st_mtime_ns}\n")
        os.utime(marker, ns=(usr.st_atime_ns, usr.st_mtime_ns))
    (root / "etc" / "hostname").unlink(missing_ok=True)


def _version_key(v: str) -> list[tuple[int, str]]:
    """``6.1.0-10-amd64`` after ``6.1.0-9-amd64``: numbers compare as numbers."""
    return [(int(t), "") if t.isdigit() else (-1, t) for t in re.split(r"(\d+)", v) if t]


def kernel_version(spec: Spec, root: Path) -> str:
    """``-k`` if given (must be installed now), else the newest kernel in the image."""
    found = sorted((p.name.removeprefix("vmlinuz-") for p in (root / "boot").glob("vmlinuz-*")),
                   key=_version_key)
    if spec.kernelver:
        if spec.kernelver not in found:
            raise GenimageError(f"kernel {spec.kernelver} is not in the image (have: "
                                f"{', '.join(found) or 'none'}): give -k one of those")
        return spec.kernelver
    if not found:
        raise GenimageError("the image has no kernel in /boot: add linux-image-amd64 (or "
                            "linux-image-cloud-amd64) to the pkglist, or give -k KERNELVER")
    return found[-1]


def initrd(spec: Spec, root: Path, kver: str, out_dir: Path) -> str:
    """``kernel`` and ``initrd-statelite.gz`` for the image, written as ``.new`` files."""
    from litefs.tools import mkinitramfs

    busybox = Path(shutil.which("busybox") or "/bin/busybox")
    modules = list(mkinitramfs.DEFAULT_MODULES) + [m for m in spec.netdrivers
                                                  if m not in mkinitramfs.DEFAULT_MODULES]
    adds: list[tuple[Path, str]] = []
    tmp = out_dir / ".nodebootif.tmp"
    if spec.nodebootif:
        tmp.write_text(spec.nodebootif + "\n")
        adds.append((tmp, "etc/litefs/nodebootif"))
    # The site CA, so the node's plan fetch speaks TLS to mountd (which refuses plain TCP
    # unless started --insecure); mountd's --ca-dir, /etc/litefs/ca unless LITEFS_CA_DIR says.
    ca = Path(os.environ.get("LITEFS_CA_DIR", "/etc/litefs/ca")) / "ca.pem"
    if ca.is_file():
        adds.append((ca, "etc/litefs/ca.pem"))
    try:
        data = mkinitramfs.build(kver, modules, busybox, adds, moddir_root=root / "lib/modules")
    except Exception as exc:  # BootError from the builder: say it is about the image
        raise GenimageError(f"building the initrd failed: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    with open(out_dir / ".initrd-statelite.gz.new", "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(data)
    shutil.copyfile(root / "boot" / f"vmlinuz-{kver}", out_dir / ".kernel.new")
    where = f"site CA {ca}" if ca.is_file() else f"no site CA ({ca} is missing: nodes fetch plans in plain TCP)"
    return f"kernel {kver}, {len(modules)} module(s) asked, {where}"


def write_state(spec: Spec, root: Path, kver: str) -> None:
    path = root / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"image": spec.image, "packages": spec.install_list,
                                "kernelver": kver}, indent=1) + "\n")


def exchange(a: Path, b: Path) -> None:
    """Swap two directory entries atomically (Linux renameat2 RENAME_EXCHANGE)."""
    try:
        syscalls.renameat2(syscalls.AT_FDCWD, str(a), syscalls.AT_FDCWD, str(b), syscalls.RENAME_EXCHANGE)
    except OSError as exc:
        raise GenimageError(f"cannot swap {a} and {b}: {exc.strerror}") from None


def swap(spec: Spec, new: Path) -> None:
    """Put the new tree, kernel and initrd in place; the old tree is deleted afterwards."""
    d = spec.rootimgdir
    if spec.rootimg.exists():
        exchange(new, spec.rootimg)  # now `new` holds the old image
        os.replace(new, d / OLD)
    else:
        os.rename(new, spec.rootimg)
    os.replace(d / ".kernel.new", d / "kernel")
    os.replace(d / ".initrd-statelite.gz.new", d / "initrd-statelite.gz")
    if (d / OLD).exists():
        # Deleting a whole image takes seconds of disk time the admin need not wait for: a
        # detached ``rm`` frees it; if that is cut short, the next run's clean_leftovers
        # finishes it. Renamed first, so the next run never copies from a half-deleted tree.
        gone = d / f"{OLD}.{os.getpid()}"
        os.rename(d / OLD, gone)
        subprocess.Popen(["rm", "-rf", "--one-file-system", str(gone)], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)


def clean_leftovers(rootimgdir: Path) -> None:
    """What an interrupted run left: the half-made tree, the old tree, ``.new`` files."""
    for p in [rootimgdir / NEW, *rootimgdir.glob(OLD + "*")]:
        if p.is_dir() and not p.is_symlink():
            # ignore_errors: a detached rm of an older run may be deleting the same tree.
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists() or p.is_symlink():
            p.unlink()
    for name in (".kernel.new", ".initrd-statelite.gz.new"):
        (rootimgdir / name).unlink(missing_ok=True)


def build(spec: Spec, phases: list[str], progress: Progress) -> str:
    """Run ``phases`` (from :func:`litefs.genimage.plan_phases`); returns the kernel version.

    On any failure the new tree is removed and the working image is untouched.
    """
    d = spec.rootimgdir
    d.mkdir(parents=True, exist_ok=True)
    clean_leftovers(d)
    new = d / NEW
    fresh = "debootstrap" in phases
    kver = ""
    try:
        if fresh:
            with progress.phase("debootstrap", f"{SUPPORTED_OS[spec.osver]} from {spec.mirror}"):
                debootstrap(spec, new)
        else:
            with progress.phase("copy", f"{spec.rootimg} aside"):
                copy_image(spec.rootimg, new)
        with chroot.no_daemons(new):
            if "packages" in phases:
                with progress.phase("packages") as p:
                    summary = packages(spec, new, fresh, p)
                progress._line(f"  packages: {summary}")
            if "otherpkgs" in phases:
                with progress.phase("otherpkgs") as p:
                    otherpkgs(spec, new, p)
            with progress.phase("runtime", "/opt/litefs"):
                noderuntime.install_node_runtime(new, wheel_cache=spec.wheel_cache)
            if "postinstall" in phases:
                with progress.phase("postinstall"):
                    postinstall(spec, new)
        if "exlist" in phases and spec.exlist is not None:
            with progress.phase("exlist"):
                apply_exlist(new, *spec.exlist)
        with progress.phase("statelite", f"/.statelite mode {spec.permission}"):
            statelite_dirs(new, spec.permission)
        with progress.phase("initrd") as p:
            kver = kernel_version(spec, new)
            initrd(spec, new, kver, d)
        write_state(spec, new, kver)
        with progress.phase("swap", str(spec.rootimg)):
            swap(spec, new)
    except BaseException:
        clean_leftovers(d)
        raise
    return kver
