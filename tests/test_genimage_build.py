"""genimage for real: debootstrap a Debian 12 image (minimal profile), re-run it, break it,
liteimg it, boot a namespace node on it and install software into it while the node runs.

One build per module (about two minutes cold; the packages are cached in
/var/cache/litefs-genimage, so a second run of this file downloads nothing). Select it with
``-m genimage``. The image sits in the cluster's exports, where a namespace node finds it.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from litefs.tools.cluster_sim import Cluster, demo_tables, load_demo_tables

from litefs.genimage import build, chroot

pytestmark = [pytest.mark.genimage, pytest.mark.netns, pytest.mark.fuse, pytest.mark.slow,
              pytest.mark.timeout(900)]

IMG = "debian12-x86_64-statelite-minimal"
BIN = Path(sys.executable).parent
SHIPPED = Path(__file__).resolve().parent.parent / "litefs/data/genimage"

# The postinstall script (found by the search order in the custom folder): records its
# arguments and IMG_* environment, writes the test node's init, and fails or hangs on request.
POSTINSTALL = r"""#!/bin/sh
set -e
root=$1
[ -e "$FLAGS/fail" ] && { echo "postinstall asked to fail" >&2; exit 3; }
if [ -e "$FLAGS/hang" ]; then touch "$FLAGS/hanging"; sleep 120; fi
mkdir -p "$root/etc/litefs-test"
printf '%s\n' "$@" > "$root/etc/litefs-test/args"
env | grep '^IMG_' | sort > "$root/etc/litefs-test/env"
cat > "$root/sbin/litefs-test-init" <<'EOF'
#!/bin/sh
echo "litefs-node: init started on $(cat /etc/hostname)"
exec /bin/sh
EOF
chmod 755 "$root/sbin/litefs-test-init"
"""


@dataclass
class Env:
    cluster: Cluster
    url: str
    work: Path
    installdir: Path
    custom: Path
    flags: Path
    first: subprocess.CompletedProcess[str]

    @property
    def rootimgdir(self) -> Path:
        return self.installdir / "netboot/debian12/x86_64/minimal"

    @property
    def rootimg(self) -> Path:
        return self.rootimgdir / "rootimg"

    def genimage(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "genimage"), "--db", self.url, *args],
                              capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "FLAGS": str(self.flags)})

    def pkglist(self, *extra: str) -> None:
        (self.custom / "minimal.debian12.x86_64.pkglist").write_text(
            f"#INCLUDE:{SHIPPED / 'minimal.debian12.x86_64.pkglist'}#\n" + "".join(
                f"{p}\n" for p in extra))


def _missing() -> str | None:
    for tool in ("debootstrap", "ip", "unshare", "busybox", "dpkg-deb"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if os.geteuid() != 0:
        return "needs root (debootstrap, chroot, namespaces)"
    if not Path("/dev/fuse").exists():
        return "/dev/fuse is missing"
    return None


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    missing = _missing()
    if missing:
        pytest.skip(missing)
    work = tmp_path_factory.mktemp("genimage")
    with Cluster(work, net="10.79.0") as c:
        installdir = c.export("/install")
        c.export("/nodedata")
        for share in ("/syncdirs/tokyo/etc", "/syncdirs/london/etc", "/syncdirs/common/etc"):
            c.export(share)  # the demo tables' litetree sources (empty here)
        url = f"sqlite:///{work}/litefs.db"
        load_demo_tables(url, demo_tables(c), [
            ({"key": "installdir"}, [f"site.value={installdir}"]),
            ({"node": "n01"}, ["nodetype.os=debian12", "nodetype.arch=x86_64",
                               "nodetype.profile=minimal", f"nodetype.provmethod={IMG}"]),
            ({"image": IMG, "file": "/etc/hello-lfs.conf"}, ["litefile.options=persistent"]),
        ])
        custom = installdir / "custom/netboot/debian"
        custom.mkdir(parents=True)
        flags = work / "flags"
        flags.mkdir()
        post = custom / "minimal.debian12.x86_64.postinstall"
        post.write_text(POSTINSTALL)
        post.chmod(0o755)
        e = Env(c, url, work, installdir, custom, flags, None)  # type: ignore[arg-type]
        e.pkglist()
        e.first = e.genimage("-o", "debian12", "-a", "x86_64", "-p", "minimal",
                             "-n", "e1000,virtio_net", "-i", "eth0", "--permission", "750")
        yield e
        # genimage deletes a replaced tree with a detached rm; let the last one finish.
        for _ in range(600):
            if not any("rm -rf" in x for x in c.leftovers()):
                break
            time.sleep(0.2)
    assert c.leftovers() == []


def _state(e: Env) -> tuple[int, str]:
    """What must not change when a run fails: the rootimg inode and the recorded package list."""
    return e.rootimg.stat().st_ino, (e.rootimg / build.STATE_FILE).read_text()


def test_first_build(env: Env) -> None:
    r = env.first
    assert r.returncode == 0, r.stderr
    for phase in ("debootstrap", "packages", "runtime", "postinstall", "statelite", "initrd",
                  "swap", "tables"):
        assert f"] {phase}" in r.stderr and "done in" in r.stderr, r.stderr
    root = env.rootimg
    assert (root / "usr/bin/dpkg").is_file() and (root / "usr/lib/systemd/systemd").exists()
    assert oct((root / ".statelite").stat().st_mode & 0o7777) == "0o750"
    assert not (env.rootimgdir / build.NEW).exists()
    # kernel and initrd beside rootimg; the initrd is a newc cpio with the -n drivers' modules
    # asked for and the -i interface recorded.
    assert (env.rootimgdir / "kernel").read_bytes()[:2] == b"MZ"
    cpio = gzip.decompress((env.rootimgdir / "initrd-statelite.gz").read_bytes())
    assert cpio[:6] == b"070701" and b"etc/litefs/nodebootif" in cpio and b"virtio_net.ko" in cpio
    # postinstall ran as xCAT runs it: rootimg osver arch profile, and the IMG_* variables.
    args = (root / "etc/litefs-test/args").read_text().split()
    assert args[1:] == ["debian12", "x86_64", "minimal"] and args[0].endswith(build.NEW)
    img_env = dict(line.split("=", 1) for line in
                   (root / "etc/litefs-test/env").read_text().splitlines())
    assert img_env["IMG_NAME"] == IMG and img_env["IMG_PROFILE"] == "minimal"
    assert img_env["IMG_PKGLIST"].endswith("custom/netboot/debian/minimal.debian12.x86_64.pkglist")
    # The node runtime: the image's own python3 runs litefs and pyfuse3 from /opt/litefs.
    res = chroot.run(root, ["/opt/litefs/bin/python", "-c",
                            "import pyfuse3, litefs.fs, sys; print(sys.executable)"],
                     capture=True)
    assert res.returncode == 0 and res.stdout.strip() == "/opt/litefs/bin/python", res.stderr
    # Written back: liteimg/nodeset/mountd find the image by name.
    con = sqlite3.connect(env.url.removeprefix("sqlite:///"))
    o = con.execute("select osvers, osarch, profile, provmethod from osimage where imagename=?",
                    (IMG,)).fetchone()
    li = con.execute("select rootimgdir, netdrivers, nodebootif, permission from linuximage "
                     "where imagename=?", (IMG,)).fetchone()
    con.close()
    assert o == ("debian12", "x86_64", "minimal", "statelite")
    assert li == (str(env.rootimgdir), "e1000,virtio_net", "eth0", "750")


def test_dryrun_changes_nothing(env: Env) -> None:
    before = _state(env)
    env.pkglist("tree")
    r = env.genimage("--dryrun", IMG)
    assert r.returncode == 0, r.stderr
    assert "1. copy" in r.stdout and "install tree" in r.stdout, r.stdout
    assert _state(env) == before and not (env.rootimgdir / build.NEW).exists()
    env.pkglist()


@pytest.mark.parametrize("args,message", [
    (["-o", "rhels9", "-a", "x86_64", "-p", "minimal"], "unknown OS version 'rhels9'"),
    (["-o", "debian12", "-a", "ppc64le", "-p", "minimal"], "unknown architecture 'ppc64le'"),
    (["-o", "debian12", "-a", "x86_64", "-p", "nosuch"], "unknown profile 'nosuch'"),
])
def test_bad_names(env: Env, args: list[str], message: str) -> None:
    before = _state(env)
    r = env.genimage(*args)
    assert r.returncode == 1 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert _state(env) == before


def test_missing_package_and_failing_postinstall(env: Env) -> None:
    before = _state(env)
    env.pkglist("no-such-package-litefs")
    r = env.genimage(IMG)
    err = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1 and "package no-such-package-litefs does not exist" in err, r.stderr
    assert "minimal.debian12.x86_64.pkglist" in err
    env.pkglist()
    r = env.genimage("-k", "9.9.9-nosuch", IMG)  # -k installs linux-image-KERNELVER
    assert r.returncode == 1 and "package linux-image-9.9.9-nosuch does not exist" in r.stderr
    (env.flags / "fail").touch()
    try:
        r = env.genimage(IMG)
    finally:
        (env.flags / "fail").unlink()
    assert r.returncode == 1 and "exited 3: postinstall asked to fail" in r.stderr, r.stderr
    assert _state(env) == before and not (env.rootimgdir / build.NEW).exists()


def test_killed_build_leaves_image(env: Env) -> None:
    """SIGKILL in the middle (postinstall, after packages): the working image stays."""
    before = _state(env)
    (env.flags / "hang").touch()
    proc = subprocess.Popen([str(BIN / "genimage"), "--db", env.url, IMG],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "FLAGS": str(env.flags)}, start_new_session=True)
    try:
        for _ in range(1200):
            if (env.flags / "hanging").exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert (env.flags / "hanging").exists(), "genimage never reached postinstall"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        (env.flags / "hang").unlink()
        (env.flags / "hanging").unlink(missing_ok=True)
    assert _state(env) == before
    assert (env.rootimgdir / build.NEW).is_dir()  # the half-made tree, never in place


def _deb(work: Path, name: str, files: dict[str, str]) -> Path:
    """A tiny .deb made here (offline): ``files`` maps path -> content (usr/bin/* executable)."""
    pkg = work / f"pkg-{name}"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: litefs <t@t>\n"
        "Description: litefs genimage test\n")
    for path, text in files.items():
        (pkg / path).parent.mkdir(parents=True, exist_ok=True)
        (pkg / path).write_text(text)
        if path.startswith("usr/bin/"):
            (pkg / path).chmod(0o755)
    out = work / f"{name}_1.0_all.deb"
    subprocess.run(["dpkg-deb", "-b", str(pkg), str(out)], check=True, capture_output=True)
    return out


def test_rerun_adds_then_purges(env: Env) -> None:
    ino = env.rootimg.stat().st_ino
    env.pkglist("tree")
    # An otherpkg: a local .deb in the default otherpkgdir, named in the otherpkgs list.
    other = env.installdir / "post/otherpkgs/debian12/x86_64"
    other.mkdir(parents=True)
    shutil.copy(_deb(env.work, "other-lfs", {"usr/bin/other-lfs": "#!/bin/sh\necho other\n"}),
                other)
    (env.custom / "minimal.otherpkgs.pkglist").write_text("# local packages\nother-lfs\n")
    r = env.genimage(IMG)
    assert r.returncode == 0, r.stderr
    assert "copy" in r.stderr and "debootstrap" not in r.stderr and "1 installed" in r.stderr
    assert "] otherpkgs" in r.stderr and (env.rootimg / "usr/bin/other-lfs").is_file()
    (env.custom / "minimal.otherpkgs.pkglist").unlink()
    assert env.rootimg.stat().st_ino != ino  # a new tree swapped in
    assert not (env.rootimgdir / build.NEW).exists()  # the killed run's leftover is gone
    assert (env.rootimg / "usr/bin/tree").is_file()
    assert (env.rootimg / "etc/litefs-test/args").is_file()  # postinstall ran again
    env.pkglist()
    r = env.genimage(IMG)
    assert r.returncode == 0 and "1 purged" in r.stderr, r.stderr
    assert not (env.rootimg / "usr/bin/tree").exists()
    assert "tree" not in build.installed_packages(env.rootimg)


def test_unreachable_archive_and_full_disk(env: Env) -> None:
    # A fresh image elsewhere: the archive on a loopback port nothing listens on.
    other = env.work / "unreachable"
    from litefs import db, tabledata

    eng = db.open_engine(env.url)
    tabledata.chtab(eng, {"imagename": "unreach"}, [f"linuximage.rootimgdir={other}"])
    eng.dispose()
    r = env.genimage("-o", "debian12", "-a", "x86_64", "-p", "minimal", "--mirror",
                     "http://127.0.0.1:9/debian", "unreach")
    assert r.returncode == 1 and "unreachable" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (other / "rootimg").exists() and not (other / build.NEW).exists()
    # A full disk: the image folder on a 48 MB tmpfs (in a mount namespace of its own).
    full = env.work / "full"
    full.mkdir()
    eng = db.open_engine(env.url)
    tabledata.chtab(eng, {"imagename": "full"}, [f"linuximage.rootimgdir={full}/img"])
    eng.dispose()
    script = ('mount -t tmpfs -o size=48m tmpfs "$1" && shift && "$@"; rc=$?; '
              'ls -A "$0/img" > "$0.left" 2>&1; exit $rc')
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                        str(full), str(full), str(BIN / "genimage"), "--db", env.url, "-o",
                        "debian12", "-a", "x86_64", "-p", "minimal", "full"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and "disk is full" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert Path(f"{full}.left").read_text().strip() == ""  # nothing half-made left


def test_liteimg_boot_and_live_install(env: Env) -> None:
    c = env.cluster
    r = subprocess.run([str(BIN / "liteimg"), "--db", env.url, IMG], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    c.start_mountd(env.url)
    node = c.boot("n01", c.cmdline("n01", str(env.rootimgdir).removeprefix(
        str(c.exports / c.mn_ip)), extra="init=/sbin/litefs-test-init"))
    node.wait_shell(90)
    assert "fuse.litefs" in node.check("grep ' / ' /proc/mounts")
    # The node runs its own image's Debian userland and carries the litefs runtime.
    assert "bookworm" in node.check("cat /etc/os-release") or \
        "12" in node.check("cat /etc/debian_version")
    node.check("/opt/litefs/bin/python -c 'import pyfuse3, litefs.fs'")
    # The node writes its own copy of a persistent path before the package brings one.
    node.check("echo node-copy > /etc/hello-lfs.conf")
    assert node.sh("hello-lfs")[0] != 0 and node.sh("dpkg -s hello-lfs")[0] != 0

    deb = _deb(env.work, "hello-lfs", {"usr/bin/hello-lfs": "#!/bin/sh\necho hello-lfs 1.0\n",
                                       "etc/hello-lfs.conf": "package-copy\n"})
    shutil.copy(deb, env.rootimg / "tmp/hello-lfs.deb")
    r = subprocess.run([str(BIN / "litefs"), "image-exec", "--db", env.url, "--server",
                        f"unix:{c.admin_socket}", IMG, "--", "dpkg", "-i", "/tmp/hello-lfs.deb"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "running node(s) notified: n01" in r.stdout, r.stdout
    # Within 2 s of the command's end (20 tries 0.1 s apart), no reboot.
    out = node.check("for i in $(seq 20); do hello-lfs && dpkg -s hello-lfs && exit_ok=1 && "
                     "break; sleep 0.1; done; [ -n \"$exit_ok\" ]")
    assert "hello-lfs 1.0" in out and "Status: install ok installed" in out
    # The path the node wrote keeps the node's copy; the image has the package's.
    assert node.check("cat /etc/hello-lfs.conf").strip() == "node-copy"
    assert (env.rootimg / "etc/hello-lfs.conf").read_text() == "package-copy\n"
    assert json.loads((env.rootimg / build.STATE_FILE).read_text())["image"] == IMG
    c.nodes.pop("n01").kill()


def test_kernel_switch_rebuilds_initrd(env: Env) -> None:
    """Cookbook 2.10: ``-k`` installs another kernel (here the generic flavour of the cloud
    kernel's version), boots it (``kernel``) and rebuilds the initrd from its modules."""
    cloud = json.loads((env.rootimg / build.STATE_FILE).read_text())["kernelver"]
    assert cloud.endswith("-cloud-amd64")
    generic = cloud.removesuffix("-cloud-amd64") + "-amd64"
    old_kernel = (env.rootimgdir / "kernel").read_bytes()
    old_cpio = gzip.decompress((env.rootimgdir / "initrd-statelite.gz").read_bytes())
    assert b"e1000.ko" not in old_cpio  # -n e1000 asked, but the cloud kernel has no e1000
    r = env.genimage("-k", generic, IMG)
    assert r.returncode == 0, r.stderr
    assert f"kernel {generic}" in r.stdout
    assert (env.rootimg / f"boot/vmlinuz-{generic}").is_file()
    assert (env.rootimgdir / "kernel").read_bytes() == \
        (env.rootimg / f"boot/vmlinuz-{generic}").read_bytes() != old_kernel
    cpio = gzip.decompress((env.rootimgdir / "initrd-statelite.gz").read_bytes())
    assert b"e1000.ko" in cpio  # the linuximage.netdrivers of the first run, new kernel's module
    assert not list((env.rootimg / "boot").glob("initrd.img-*"))  # INITRD=No: none made
    con = sqlite3.connect(env.url.removeprefix("sqlite:///"))
    assert con.execute("select kernelver from linuximage where imagename=?",
                       (IMG,)).fetchone() == (generic,)
    con.close()
