"""The boot side's parts on their own: the hook's command-line parsing and retries under busybox
sh, the plan fetch's files and messages, and the initramfs builder's cpio and module order."""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from litefs.initramfs import fetchplan
from litefs.tools import mkinitramfs
from litefs.tools.cluster_sim import hook_path

from litefs.errors import BootError, LitefsError
from litefs.plan import Plan, Rule, Source

BUSYBOX = shutil.which("busybox")
needs_busybox = pytest.mark.skipif(BUSYBOX is None, reason="busybox is not installed")


def _hook(tmp_path: Path, cmdline: str, body: str, env: dict[str, str] | None = None
          ) -> subprocess.CompletedProcess[str]:
    """Source the hook in busybox sh (no boot) and run ``body`` with its functions."""
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    script = f'LITEFS_SOURCED=1 . {hook_path()}\nLOG={tmp_path}/log\n{body}\n'
    return subprocess.run(
        [BUSYBOX, "sh", "-c", script], capture_output=True, text=True, timeout=30,  # type: ignore[list-item]
        env={"PATH": "/usr/bin:/bin", "LITEFS_CMDLINE": str(tmp_path / "cmdline"),
             "LITEFS_BACKOFF": "0", **(env or {})},
    )


PRINT = 'parse_cmdline; parse_root; echo "$IMG_SERVER|$IMG_PATH|$IMG_OPTS|$STATEMNT|$XCAT|$NODE|$MNTOPTS|$SHELL_PAUSE|$INIT"'


@needs_busybox
@pytest.mark.parametrize("cmdline,expected", [
    ("root=nfs:10.0.0.1:/install/netboot/rh/x86_64/c/rootimg:ro STATEMNT=10.0.0.1:/nodedata "
     "XCAT=10.0.0.1:3001 NODE=n01 XCATHTTPPORT=80 selinux=0 MNTOPTS=",
     "10.0.0.1|/install/netboot/rh/x86_64/c/rootimg|ro,nolock|10.0.0.1:/nodedata|10.0.0.1:3001|n01"
     "||0|/sbin/init"),
    ("root=nfs:mn:/img/rootimg:ro,vers=4.2,actimeo=60 NODE=n2 MNTOPTS=nolock,vers=3 shell "
     "init=/bin/sh",
     "mn|/img/rootimg|ro,vers=4.2,actimeo=60,nolock|||n2|nolock,vers=3|1|/bin/sh"),
    ("root=nfs:mn:/img/rootimg:ro,lock NODE=n4",  # asked for locks: left alone
     "mn|/img/rootimg|ro,lock|||n4||0|/sbin/init"),
    ("NFSROOT=172.10.0.1:/install/netboot/rhel5.3/x86_64/compute STATEMNT=cnfs:/gpfs/state "
     "XCAT=172.10.0.1:3001 NODE=n3",
     "172.10.0.1|/install/netboot/rhel5.3/x86_64/compute/rootimg|"
     "ro,nolock,rsize=32768,tcp,nfsvers=3,timeo=14|cnfs:/gpfs/state|172.10.0.1:3001|n3||0|/sbin/init"),
])
def test_hook_reads_xcat_kernel_arguments(tmp_path: Path, cmdline: str, expected: str) -> None:
    proc = _hook(tmp_path, cmdline, PRINT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected


@needs_busybox
@pytest.mark.parametrize("cmdline,message", [
    ("NODE=n01 STATEMNT=x:/y", "no root=nfs:<server>:<dir>/rootimg:ro or NFSROOT="),
    ("root=nfs:/img/rootimg:ro NODE=n01", "is not <server>:<dir>"),
    ("root=nfs:mn:img/rootimg:ro NODE=n01", "is not absolute"),
])
def test_hook_refuses_bad_root(tmp_path: Path, cmdline: str, message: str) -> None:
    proc = _hook(tmp_path, cmdline, PRINT)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert proc.stdout == ""


@needs_busybox
@settings(max_examples=25, deadline=None)
@given(
    server=st.from_regex(r"[a-z0-9][a-z0-9.\-]{0,20}", fullmatch=True),
    path=st.lists(st.from_regex(r"[A-Za-z0-9_.\-]{1,10}", fullmatch=True), min_size=1,
                  max_size=5).map(lambda p: "/" + "/".join(p)),
)
def test_hook_root_parsing_any_path(tmp_path_factory: pytest.TempPathFactory, server: str,
                                    path: str) -> None:
    tmp = tmp_path_factory.mktemp("h")
    proc = _hook(tmp, f"root=nfs:{server}:{path}/rootimg:ro NODE=n", PRINT)
    assert proc.returncode == 0, proc.stderr
    got = proc.stdout.strip().split("|")
    assert got[:3] == [server, path + "/rootimg", "ro,nolock"]


@needs_busybox
def test_hook_retry_backs_off_and_gives_up(tmp_path: Path) -> None:
    body = (f'RETRIES=3; retry "probe" sh -c "echo x >> {tmp_path}/tries; false"; '
            'echo "rc=$?"')
    proc = _hook(tmp_path, "NODE=n01", body)
    assert proc.stdout.strip() == "rc=1"
    assert (tmp_path / "tries").read_text() == "x\nx\nx\n"
    assert proc.stderr.count("litefs: probe failed (attempt") == 2
    assert "# probe failed (attempt 1 of 3); retrying in 0s" in (tmp_path / "log").read_text()


@needs_busybox
def test_hook_retry_delays_double_up_to_16s(tmp_path: Path) -> None:
    # A shell function named sleep shadows the applet: record the delays instead of waiting.
    body = (f'sleep() {{ echo "$1" >> {tmp_path}/delays; }}; RETRIES=7; BACKOFF=1; '
            'retry "probe" false; echo "rc=$?"')
    proc = _hook(tmp_path, "NODE=n01", body)
    assert proc.stdout.strip() == "rc=1"
    assert (tmp_path / "delays").read_text().split() == ["1", "2", "4", "8", "16", "16"]
    assert "litefs: probe failed (attempt 6 of 7); retrying in 16s" in proc.stderr


@needs_busybox
def test_hook_nfsmap_missing_export_is_reported(tmp_path: Path) -> None:
    # The binds themselves need root and are covered by the namespace boots.
    body = f'NFSMAP={tmp_path}/map; nfs_mount mn /no/such {tmp_path}/t ro; echo "rc=$?"'
    proc = _hook(tmp_path, "NODE=n01", body)
    assert proc.stdout.strip() == "rc=1"
    assert f"# mn:/no/such is not exported (no {tmp_path}/map/mn/no/such)" in (
        tmp_path / "log").read_text()


PLAN = Plan(
    image="img1", node="n01",
    rules=(Rule("/etc/motd", "ro", False, "ALL"), Rule("/var/log", "persistent", True, "ALL")),
    sources=(Source("1", "mn:/syncdirs/tokyo", "mn", "/syncdirs/tokyo", "ro,vers=3"),
             Source("2", "/local/tree", None, "/local/tree")),
    statemnt="mn:/nodedata",
)


def test_fetchplan_layout_files(tmp_path: Path) -> None:
    files = fetchplan.layout(PLAN)
    assert Plan.from_json(files["plan.json"]) == PLAN
    assert files["sources"] == "mn\t/syncdirs/tokyo\tro,vers=3\n-\t/local/tree\t-\n"
    plan_file = tmp_path / "in.json"
    plan_file.write_text(PLAN.to_json())
    assert fetchplan.main(["--node", "n01", "--out", str(tmp_path), "--plan-file",
                           str(plan_file)]) == 0
    assert (tmp_path / "sources").read_text() == files["sources"]


def test_fetchplan_refuses_someone_elses_plan(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    plan_file = tmp_path / "in.json"
    plan_file.write_text(PLAN.to_json())
    assert fetchplan.main(["--node", "n02", "--out", str(tmp_path), "--plan-file",
                           str(plan_file)]) == 1
    assert "plan of n01, not n02" in capsys.readouterr().err
    assert not (tmp_path / "plan.json").exists()


def test_fetchplan_unreachable_mountd_message(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lines: list[str] = []
    with pytest.raises(LitefsError) as info:
        fetchplan.fetch(f"127.0.0.1:{port}", "n01", 3, 0.0, None, lines.append)
    assert str(info.value).startswith(
        f"FATAL error: could not get the plan for n01 from mountd at 127.0.0.1:{port} after 3 "
        "attempts: ")
    assert "rpower n01 boot" in str(info.value)
    assert len(lines) == 2 and all("retrying in" in line for line in lines)


# --- mkinitramfs ----------------------------------------------------------------------------

def test_load_order_puts_dependencies_first() -> None:
    deps = {
        "kernel/fs/9p/9p.ko": ["kernel/net/9p/9pnet.ko", "kernel/fs/netfs/netfs.ko"],
        "kernel/net/9p/9pnet.ko": [],
        "kernel/fs/netfs/netfs.ko": [],
        "kernel/net/9p/9pnet_virtio.ko": ["kernel/net/9p/9pnet.ko", "kernel/virtio/virtio_ring.ko"],
        "kernel/virtio/virtio_ring.ko": [],
        "kernel/fs/fuse/fuse.ko.xz": [],
    }
    order = mkinitramfs.load_order(deps, ["9pnet_virtio", "9p", "fuse", "nosuch"])
    assert sorted(order) == sorted(deps)
    for mod, needs in deps.items():
        for dep in needs:
            assert order.index(dep) < order.index(mod)


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio is not installed")
def test_cpio_is_read_by_gnu_cpio(tmp_path: Path) -> None:
    entries = [
        mkinitramfs.Entry("d", stat.S_IFDIR | 0o755),
        mkinitramfs.Entry("d/file", stat.S_IFREG | 0o644, b"hello\n"),
        mkinitramfs.Entry("d/odd", stat.S_IFREG | 0o755, b"x" * 5),
        mkinitramfs.Entry("d/link", stat.S_IFLNK | 0o777, b"file"),
    ]
    archive = mkinitramfs.cpio(entries)
    listing = subprocess.run(["cpio", "-it", "--quiet"], input=archive, capture_output=True,
                             check=True).stdout.decode().split()
    assert listing == ["d", "d/file", "d/odd", "d/link"]
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["cpio", "-id", "--quiet"], input=archive, cwd=out, check=True)
    assert (out / "d" / "file").read_text() == "hello\n"
    assert (out / "d" / "link").readlink() == Path("file")
    assert (out / "d" / "odd").stat().st_mode & 0o777 == 0o755


@needs_busybox
@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio is not installed")
def test_build_includes_hook_modules_and_devices(tmp_path: Path) -> None:
    moddir = tmp_path / "modules" / "9.9.9-test"
    (moddir / "kernel/fs/fuse").mkdir(parents=True)
    (moddir / "kernel/net").mkdir(parents=True)
    (moddir / "kernel/fs/fuse/fuse.ko.xz").write_bytes(lzma.compress(b"FUSEMODULE"))
    (moddir / "kernel/net/9pnet.ko").write_bytes(b"NET9P")
    (moddir / "kernel/net/9p.ko").write_bytes(b"FS9P")
    (moddir / "modules.dep").write_text(
        "kernel/fs/fuse/fuse.ko.xz:\nkernel/net/9p.ko: kernel/net/9pnet.ko\nkernel/net/9pnet.ko:\n")
    extra = tmp_path / "ca.pem"
    extra.write_text("CA\n")
    data = mkinitramfs.build("9.9.9-test", ["9p", "fuse"], Path(BUSYBOX),  # type: ignore[arg-type]
                             [(extra, "etc/litefs/ca.pem")], moddir_root=tmp_path / "modules")
    out = tmp_path / "root"
    out.mkdir()
    listing = subprocess.run(["cpio", "-itv", "--quiet"], input=data, capture_output=True,
                             check=True).stdout.decode()
    assert any(line.startswith("crw") and line.endswith("dev/console") for line in listing.splitlines())
    subprocess.run(["cpio", "-id", "--quiet", "--no-absolute-filenames"], input=data, cwd=out,
                   check=False)
    assert (out / "etc/litefs/modules").read_text() == (
        "kernel/net/9pnet.ko\nkernel/net/9p.ko\nkernel/fs/fuse/fuse.ko\n")
    assert (out / "lib/modules/kernel/fs/fuse/fuse.ko").read_bytes() == b"FUSEMODULE"
    assert (out / "litefs/boot.sh").read_text() == hook_path().read_text()
    assert (out / "init").stat().st_mode & 0o111
    assert (out / "bin/sh").readlink() == Path("busybox")
    assert (out / "etc/litefs/ca.pem").read_text() == "CA\n"
    assert (out / "litefs/udhcpc.sh").read_text() == (hook_path().parent / "udhcpc.sh").read_text()


@needs_busybox
@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd is not installed (apt install zstd)")
def test_build_stores_zstd_modules_uncompressed(tmp_path: Path) -> None:
    # Ubuntu, Arch and newer Debian ship .ko.zst; busybox insmod loads plain .ko only.
    moddir = tmp_path / "modules" / "9.9.9-zst"
    (moddir / "kernel/fs/nfs").mkdir(parents=True)
    raw = b"NFSMODULE" * 1000
    zst = subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True, check=True).stdout
    assert zst != raw
    (moddir / "kernel/fs/nfs/nfs.ko.zst").write_bytes(zst)
    (moddir / "kernel/fs/nfs/bad.ko.zst").write_bytes(b"not zstd at all")
    (moddir / "modules.dep").write_text("kernel/fs/nfs/nfs.ko.zst:\nkernel/fs/nfs/bad.ko.zst:\n")
    data = mkinitramfs.build("9.9.9-zst", ["nfs"], Path(BUSYBOX), [],  # type: ignore[arg-type]
                             moddir_root=tmp_path / "modules")
    out = tmp_path / "root"
    out.mkdir()
    subprocess.run(["cpio", "-id", "--quiet", "--no-absolute-filenames"], input=data, cwd=out,
                   check=False)
    assert (out / "lib/modules/kernel/fs/nfs/nfs.ko").read_bytes() == raw
    assert (out / "etc/litefs/modules").read_text() == "kernel/fs/nfs/nfs.ko\n"
    with pytest.raises(BootError, match=r"bad\.ko\.zst: zstd -d failed"):
        mkinitramfs.build("9.9.9-zst", ["bad"], Path(BUSYBOX), [],  # type: ignore[arg-type]
                          moddir_root=tmp_path / "modules")


def test_build_without_modules_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BootError, match="has no modules installed here"):
        mkinitramfs.build("0.0-none", ["fuse"], Path("/bin/true"), [], moddir_root=tmp_path)


def test_cli_writes_reproducible_gzip(tmp_path: Path) -> None:
    moddir = tmp_path / "m" / "1.0"
    moddir.mkdir(parents=True)
    (moddir / "modules.dep").write_text("")
    if BUSYBOX is None:
        pytest.skip("busybox is not installed")
    a, b = tmp_path / "a.gz", tmp_path / "b.gz"
    for out in (a, b):
        data = mkinitramfs.build("1.0", [], Path(BUSYBOX), [], moddir_root=tmp_path / "m")
        out.write_bytes(gzip.compress(data, mtime=0))
    assert a.read_bytes() == b.read_bytes()


def test_shell_files_parse() -> None:
    # module-setup.sh only runs inside dracut (not installed here): at least it must parse.
    root = hook_path().parent
    for path, shell in ((root / "dracut" / "95litefs" / "module-setup.sh", "bash"),
                        (root / "dracut" / "95litefs" / "litefs-prepivot.sh", "sh"),
                        (root / "litefs-boot.sh", "sh"), (root / "init.sh", "sh")):
        proc = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{path}: {proc.stderr}"


def test_demo_sample_moves_onto_the_cluster_network() -> None:
    from litefs.tools import sampledata

    moved = sampledata.demo_tables_on("10.77.0")
    original = sampledata.demo_tables()
    assert set(moved) == set(original)
    for name, text in original.items():
        # Only the addresses change: 127.0.0.K -> 10.77.0.K (127.0.0.1 is not a prefix match).
        assert moved[name] == text.replace("127.0.0.", "10.77.0."), name
    assert '"n03","10.77.0.13"' in moved["hosts"]
    assert '"10.77.0.1:/nodedata"' in moved["statelite"]
    with pytest.raises(ValueError, match="not the first three octets"):
        sampledata.demo_tables_on("10.77.0.0/24")


def _premount(args: list[str], word: str | None, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run the pre-started mount with a real fifo; ``word`` is what the hook writes into it."""
    fifo = tmp_path / "mount.go"
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, "-m", "litefs.initramfs.premount", "--go",
                             str(fifo), *args], stderr=subprocess.PIPE, text=True)
    if word is not None:
        with open(fifo, "w") as f:  # blocks until the child has imported and opened it
            f.write(word + "\n")
    _, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", err)


def test_premount_stop_exits_without_mounting(tmp_path: Path) -> None:
    view = tmp_path / "view"
    view.mkdir()
    proc = _premount(["mount", "--plan", str(tmp_path / "none.json"), str(view)], "stop", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert not (tmp_path / "none.json").exists() and not any(view.iterdir())


def test_premount_go_runs_litefs_with_its_exit_status(tmp_path: Path) -> None:
    # The same one-line error and exit status `litefs mount` gives for a missing plan file.
    view = tmp_path / "view"
    view.mkdir()
    proc = _premount(["mount", "--plan", str(tmp_path / "none.json"), "--image", str(tmp_path),
                      "--tmpfs", str(tmp_path), str(view)], "go", tmp_path)
    direct = subprocess.run([sys.executable, "-m", "litefs.tools.litefs_cli",
                             "mount", "--plan", str(tmp_path / "none.json"), "--image",
                             str(tmp_path), "--tmpfs", str(tmp_path), str(view)],
                            capture_output=True, text=True)
    assert proc.returncode == direct.returncode != 0
    assert proc.stderr == direct.stderr and "none.json" in proc.stderr


def test_node_modules_import_without_the_server() -> None:
    """The node's client and codec load nothing of mountd's server side (nor XML, nor the CA's
    cryptography): the boot path pays only for what it uses."""
    code = ("import sys, litefs.initramfs.fetchplan, litefs.initramfs.client, litefs.initramfs.watch; "
            "print(' '.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True, timeout=60).stdout.split())
    assert "litefs.mountd.codec" in loaded
    server_side = {"litefs.mountd.server", "litefs.mountd.service", "litefs.mountd.session",
                   "litefs.mountd.xcatd_codec", "litefs.mountd.pki", "litefs.mountd.catalog",
                   "xml.etree.ElementTree", "cryptography", "sqlalchemy"}
    assert loaded & server_side == set()


def test_watcher_wakes_on_the_mount_event(tmp_path: Path) -> None:
    """wait_mounted sleeps in poll(2) on mountinfo and returns once the view is mounted (in a
    private mount namespace, so the host never sees the tmpfs)."""
    view = tmp_path / "view"
    view.mkdir()
    code = f"""
import subprocess, threading
from litefs.initramfs.watch import wait_mounted
assert not wait_mounted({str(view)!r}, 0.2)  # nothing mounted: the bound ends the wait
result = []
waiter = threading.Thread(target=lambda: result.append(wait_mounted({str(view)!r}, 60)))
waiter.start()
subprocess.run(["mount", "-t", "tmpfs", "none", {str(view)!r}], check=True)
waiter.join(60)
print(result)
"""
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[True]"


def test_say_ready_writes_into_the_hooks_fifo_and_never_blocks(tmp_path: Path) -> None:
    from litefs.initramfs import watch

    ready = tmp_path / "watch.ready"
    ready.write_text("stale\n")
    watch.make_ready_fifo(str(ready))
    assert stat.S_ISFIFO(ready.stat().st_mode)
    watch.say_ready(str(ready))  # nobody reads: ENXIO, said and dropped, no hang
    fd = os.open(ready, os.O_RDWR)  # the hook's side: read-write, as start_litefs opens it
    try:
        watch.say_ready(str(ready))
        assert os.read(fd, 100) == b"ready\n"
    finally:
        os.close(fd)
    plain = tmp_path / "plain.ready"  # run on its own: a plain file
    watch.say_ready(str(plain))
    assert plain.is_file()


@needs_busybox
def test_hook_waits_for_the_watchers_ready_line(tmp_path: Path) -> None:
    ready = tmp_path / "watch.ready"
    os.mkfifo(ready)
    say = f"{sys.executable} -c 'from litefs.initramfs.watch import say_ready; say_ready(\"{ready}\")'"
    body = (f'SL={tmp_path}; WATCH=1; WATCH_FIFO=1; exec 8<>"$SL/watch.ready"\n'
            f"{say} &\nwait_watcher\necho waited")
    r = _hook(tmp_path, "NODE=n01", body)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "waited"
    assert "not ready" not in r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("dash") is None, reason="dash is not installed")
def test_hook_waits_for_the_watcher_in_a_shell_without_read_t(tmp_path: Path) -> None:
    """dash has no ``read -t`` (status 2, nothing read): the timer fallback reads the line."""
    ready = tmp_path / "watch.ready"
    os.mkfifo(ready)
    say = f"{sys.executable} -c 'from litefs.initramfs.watch import say_ready; say_ready(\"{ready}\")'"
    script = (f'LITEFS_SOURCED=1 . {hook_path()}\nLOG={tmp_path}/log\n'
              f'SL={tmp_path}; WATCH=1; WATCH_FIFO=1; exec 8<>"$SL/watch.ready"\n'
              f"{say} &\nwait_watcher\necho waited\n")
    r = subprocess.run(["dash", "-c", script], capture_output=True, text=True, timeout=30,
                       env={"PATH": "/usr/bin:/bin", "LITEFS_CMDLINE": "/dev/null"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "waited"
    assert "not ready" not in r.stdout + r.stderr


@needs_busybox
def test_hook_reads_the_mount_table_once_for_its_questions(tmp_path: Path) -> None:
    r = _hook(tmp_path, "NODE=n01", 'mounted_points\necho "[$MOUNTED]"')
    assert r.returncode == 0, r.stderr
    points = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    assert r.stdout.strip() == "[ " + " ".join(points) + " ]"


def _hook_mounting(tmp_path: Path, cmdline: str, body: str) -> subprocess.CompletedProcess[str]:
    """Source the hook and run ``body`` in a private mount namespace of its own: its real
    bind mounts (the NFS map) go away with the namespace."""
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    script = (f'LITEFS_SOURCED=1 . {hook_path()}\nLOG={tmp_path}/log\n'
              f'LAYERS={tmp_path}/layers\n{body}\n')
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", BUSYBOX, "sh", "-c", script],  # type: ignore[list-item]
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "LITEFS_BACKOFF": "0",
             "LITEFS_RETRIES": "2", "LITEFS_CMDLINE": str(tmp_path / "cmdline")})


@needs_busybox
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare (a private mount namespace)")
def test_the_image_comes_from_the_next_sn_of_the_pool_when_the_first_does_not_export_it(
        tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    (exports / "10.0.0.3/img/rootimg").mkdir(parents=True)
    (exports / "10.0.0.3/img/rootimg/marker").write_text("sn2's copy\n")
    cmdline = ("root=nfs:10.0.0.2:/img/rootimg:ro STATEMNT=10.0.0.2:/nodedata "
               "XCAT=10.0.0.2:3001 litefs.pool=../x:1,10.0.0.3:3001 NODE=n01 "
               f"litefs.nfsmap={exports}")
    body = ('parse_cmdline; parse_root; mount_image\n'
            'echo "$IMG_FROM|$STATEMNT|$XCAT|$POOL"; cat "$LAYERS/image/marker"')
    got = _hook_mounting(tmp_path, cmdline, body)
    assert got.returncode == 0, got.stderr
    assert got.stdout == "10.0.0.3|10.0.0.3:/nodedata|10.0.0.3:3001|../x:1,10.0.0.2:3001\n" \
        "sn2's copy\n"
    assert got.stderr.splitlines() == [
        "litefs: warning: litefs.pool entry '../x:1' is not <ip>:<port>; not an image server",
        "litefs: image server 10.0.0.2 does not export /img/rootimg (or does not answer); "
        "trying 10.0.0.3 (next in the pool)",
        "litefs: image from 10.0.0.3:/img/rootimg, not from 10.0.0.2 (failover)",
        "litefs: persistent store from 10.0.0.3:/nodedata, on the image's server (failover)",
        "litefs: asking mountd at 10.0.0.3:3001 first (the image's server), then "
        "../x:1,10.0.0.2:3001",
    ]
    # The node's own SN has it: nothing changes, nothing is said.
    (exports / "10.0.0.2/img/rootimg").mkdir(parents=True)
    same = _hook_mounting(tmp_path, cmdline.replace("../x:1,", ""), body.replace(
        'cat "$LAYERS/image/marker"', "true"))
    assert same.returncode == 0 and same.stderr == "", same.stderr
    assert same.stdout == "10.0.0.2|10.0.0.2:/nodedata|10.0.0.2:3001|10.0.0.3:3001\n"
    # No server of the pool has it: one round per retry, then the fatal line.
    shutil.rmtree(exports)
    exports.mkdir()
    dead = _hook_mounting(tmp_path, cmdline.replace("../x:1,", ""), body)
    assert dead.returncode == 1
    lines = dead.stderr.splitlines()
    assert len([x for x in lines if "does not export" in x]) == 3  # 2 rounds of 2, not the last
    assert lines[-1] == ("litefs: cannot mount the image /img/rootimg from any server of the "
                         "pool (10.0.0.2 10.0.0.3) after 2 rounds; check the NFS exports on "
                         "them, then rpower n01 boot")


@needs_busybox
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare (a network namespace)")
def test_dhcp_script_puts_the_lease_on_the_nic_and_only_addresses_in_resolv_conf(
        tmp_path: Path) -> None:
    # Whatever answers DHCP on the boot network writes these values.
    script = Path(str(hook_path().parent / "udhcpc.sh"))
    resolv = tmp_path / "resolv.conf"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LITEFS_RESOLV": str(resolv),
           "interface": "br0", "ip": "10.9.9.9", "mask": "24", "router": "10.9.9.1",
           "domain": "evil\nnameserver 6.6.6.6", "dns": "10.9.9.53 1.2.3.4;reboot fe80::1"}
    body = (f"ip link add br0 type bridge && ip link set br0 up && {BUSYBOX} sh {script} bound"
            " && ip -4 -o addr show dev br0 && ip route show default")
    r = subprocess.run(["unshare", "--net", "sh", "-c", body], capture_output=True, text=True,
                       env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "10.9.9.9/24" in r.stdout and "default via 10.9.9.1 dev br0" in r.stdout
    assert resolv.read_text() == "nameserver 10.9.9.53\nnameserver fe80::1\n"
