"""A machine room for real network boots: an MN in a network namespace, qemu guests on its LAN.

:class:`Cluster` (``tools/cluster_sim.py``) gives the MN's namespace, its bridge ``<net>.1/24``
and mountd. :class:`NetbootLab` adds what a real xCAT MN runs for diskless nodes, all inside
that namespace and reached only at its own addresses:

* **NFS**: ``rpcbind -f -w`` and ``ganesha.nfsd -F`` (Debian's nfs-ganesha, VFS backend)
  serving NFSv3 and NFSv4 over TCP; the image read-only, the STATEMNT folder and litetree
  sources as configured. Ganesha runs graceless (no 90 s grace period at start), NLM off
  (xCAT mounts with ``nolock``). The host kernel has no NFS client: exports are checked from
  the host with libnfs's ``nfs-ls``.
* **DHCP**: busybox ``udhcpd`` on the bridge, a static lease per node (its ``mac`` row ->
  its ``hosts`` address), as xCAT's ``makedhcp`` sets up.
* **Nodes**: :class:`QemuNode`, a qemu guest (TCG unless ``LITEFS_QEMU_ACCEL``) with a virtio
  NIC on a tap device on the bridge, booted with ``-kernel``/``-initrd`` and exactly the
  ``APPEND`` line nodeset wrote in the node's pxelinux file, plus the ``BOOTIF=`` pxelinux adds
  for ``IPAPPEND 2``. Its serial console is the test's keyboard and screen.

A harness, not product code (the netboot tests and ``tools/bench/bench_boot.py`` use it).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from litefs.tools.cluster_sim import Cluster, demo_tables, load_demo_tables, run

from litefs.errors import BootError

QEMU = "qemu-system-x86_64"
#: terminal control sequences (colours, bracketed paste) that systemd and bash put on the console
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

#: what the lab needs on the host, with the Debian package that brings it
NEEDS = {
    QEMU: "qemu-system-x86",
    "ganesha.nfsd": "nfs-ganesha nfs-ganesha-vfs",
    "rpcbind": "rpcbind",
    "nfs-ls": "libnfs-utils",
    "busybox": "busybox-static",
}


def missing() -> str | None:
    """Why the lab cannot run here (a skip reason), or None."""
    for tool, pkg in NEEDS.items():
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt install {pkg})"
    if not Path("/dev/net/tun").exists():
        return "/dev/net/tun is missing (no tap devices for the guests)"
    if not Path("/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so").exists():
        return "nfs-ganesha's VFS backend is not installed (apt install nfs-ganesha-vfs)"
    if os.geteuid() != 0:
        return "needs root (namespaces, tap devices)"
    return None


@dataclass(frozen=True)
class Export:
    """``path`` on the MN served as ``pseudo`` (default: the same path) to v3 and v4 clients."""

    path: Path
    writable: bool = False
    pseudo: str | None = None


def ganesha_config(addr: str, exports: list[Export], recovery: Path) -> str:
    """nfs-ganesha's configuration: NFSv3 and v4 over TCP on ``addr``, one VFS export each."""
    out = [
        "NFS_CORE_PARAM {",
        "    Protocols = 3, 4;",
        f"    Bind_addr = {addr};",
        "    Enable_NLM = false;",
        "    Enable_RQUOTA = false;",
        # v3 clients mount the pseudo path too, so /nodedata can be a folder of the lab's.
        "    Mount_Path_Pseudo = true;",
        "}",
        # No grace period: the lab restarts the server and wants service at once (a real MN
        # keeps the default; nodes mount with nolock, so there are no locks to reclaim).
        "NFSV4 {",
        "    Graceless = true;",
        # Owners as numbers, as knfsd sends them to AUTH_SYS clients: a name would make the
        # node's kernel run an idmap helper (request-key) from its root, the litefs view,
        # while the daemon waits on that very NFS reply (deadlock after switch_root).
        "    Only_Numeric_Owners = true;",
        "    RecoveryBackend = fs;",
        f"    RecoveryRoot = {recovery};",
        "}",
        "LOG { Default_Log_Level = WARN; }",
    ]
    for i, e in enumerate(exports, start=1):
        out += [
            "EXPORT {",
            f"    Export_Id = {i}; Path = {e.path}; Pseudo = {e.pseudo or e.path};",
            f"    Access_Type = {'RW' if e.writable else 'RO'}; Squash = No_Root_Squash;",
            # The MN changes exported files in place (genimage, image-exec, an admin's edit):
            # ganesha must not answer from its attribute cache (60 s by default), or a node
            # told of a change reads the new bytes cut to the old size. knfsd has no such cache.
            "    Attr_Expiration_Time = 0;",
            "    Protocols = 3, 4; Transports = TCP; SecType = sys;",
            "    FSAL { Name = VFS; }",
            "}",
        ]
    return "\n".join(out) + "\n"


def udhcpd_config(iface: str, leases: dict[str, str], work: Path, net: str) -> str:
    lines = [
        f"interface {iface}",
        f"start {net}.200",
        f"end {net}.250",
        f"lease_file {work}/udhcpd.leases",
        f"pidfile {work}/udhcpd.pid",
        "option subnet 255.255.255.0",
        "option lease 86400",
    ]
    lines += [f"static_lease {mac} {ip}" for mac, ip in sorted(leases.items())]
    return "\n".join(lines) + "\n"


def pxe_append(pxe_file: Path, mac: str) -> str:
    """The kernel command line pxelinux gives a node: the ``APPEND`` line of its pxelinux.cfg
    file (without ``initrd=``, which qemu's ``-initrd`` stands for) and, for ``IPAPPEND 2``,
    ``BOOTIF=01-<mac>``."""
    text = pxe_file.read_text()
    m = re.search(r"^\s*APPEND\s+(.*)$", text, re.M)
    if m is None:
        raise BootError(f"{pxe_file} has no APPEND line")
    args = [a for a in m.group(1).split() if not a.startswith("initrd=")]
    if re.search(r"^\s*IPAPPEND\s+2\b", text, re.M):
        args.append("BOOTIF=01-" + mac.lower().replace(":", "-"))
    return " ".join(args)


class NetbootLab:
    """NFS, DHCP and tap devices in a :class:`Cluster`'s MN namespace."""

    def __init__(self, cluster: Cluster, exports: list[Export]) -> None:
        self.c = cluster
        self.work = cluster.workdir / "lab"
        self.work.mkdir(parents=True, exist_ok=True)
        self.exports = exports
        self.leases: dict[str, str] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._taps = 0

    def _spawn(self, name: str, argv: list[str], private_run: bool = False) -> subprocess.Popen[bytes]:
        if private_run:
            # rpcbind locks /run/rpcbind.lock and listens on /run/rpcbind.sock, both global
            # across network namespaces: with its own /run (and ganesha's), each lab's ganesha
            # registers with its own rpcbind over the namespace's loopback, never another's.
            argv = ["unshare", "-m", "sh", "-c",
                    'mount -t tmpfs -o mode=755 lab-run /run && mkdir -p /run/rpcbind /run/ganesha'
                    ' && exec "$@"', "sh", *argv]
        log = open(self.work / f"{name}.log", "ab")  # noqa: SIM115 (the process keeps it)
        p = subprocess.Popen(["ip", "netns", "exec", self.c.mn_ns, *argv], stdout=log,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env={**os.environ, "LITEFS_CLUSTER": self.c.tag})
        log.close()
        self.procs[name] = p
        return p

    def _stop(self, name: str) -> None:
        p = self.procs.pop(name, None)
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    # --- NFS -------------------------------------------------------------------------------

    def start_nfs(self, timeout: float = 30) -> None:
        """rpcbind, then ganesha; returns once an export answers ``nfs-ls`` over v3 and v4."""
        if "rpcbind" not in self.procs:
            # -w: warm start; -f: foreground. Ganesha hangs registering without it.
            self._spawn("rpcbind", ["rpcbind", "-f", "-w"], private_run=True)
            # Ganesha registers its programs once, at start: rpcbind must answer first.
            deadline = time.monotonic() + timeout
            while run(["ip", "netns", "exec", self.c.mn_ns, "rpcinfo", "-p", "127.0.0.1"],
                      check=False, timeout=10).returncode != 0:
                if self.procs["rpcbind"].poll() is not None or time.monotonic() > deadline:
                    raise BootError("rpcbind did not start: " + self.log("rpcbind")[-1500:])
                time.sleep(0.2)
        rec = self.work / "ganesha-recovery"
        rec.mkdir(exist_ok=True)
        conf = self.work / "ganesha.conf"
        conf.write_text(ganesha_config(self.c.mn_ip, self.exports, rec))
        self._spawn("ganesha", ["ganesha.nfsd", "-F", "-f", str(conf), "-L",
                                str(self.work / "ganesha.log"), "-p", str(self.work / "ganesha.pid"),
                                "-N", "NIV_EVENT"], private_run=True)
        probe = self.exports[0].pseudo or str(self.exports[0].path)
        deadline = time.monotonic() + timeout
        while True:
            ok = all(self.nfs_ls(probe, v).returncode == 0 for v in (3, 4))
            if ok:
                return
            if self.procs["ganesha"].poll() is not None or time.monotonic() > deadline:
                raise BootError("nfs-ganesha did not serve " + str(probe) + ": "
                                + self.log("ganesha")[-1500:])
            time.sleep(0.3)

    def stop_nfs(self) -> None:
        self._stop("ganesha")

    def nfs_ls(self, path: Path | str, version: int = 3) -> subprocess.CompletedProcess[str]:
        url = f"nfs://{self.c.mn_ip}{path}/" + ("?version=4" if version == 4 else "")
        return run(["ip", "netns", "exec", self.c.mn_ns, "nfs-ls", url], check=False,
                   timeout=10)

    # --- DHCP ------------------------------------------------------------------------------

    def start_dhcp(self, leases: dict[str, str]) -> None:
        self.leases = dict(leases)
        self._stop("udhcpd")
        conf = self.work / "udhcpd.conf"
        (self.work / "udhcpd.leases").touch()
        conf.write_text(udhcpd_config("br0", self.leases, self.work, self.c.net))
        self._spawn("udhcpd", ["busybox", "udhcpd", "-f", str(conf)])

    # --- guests ----------------------------------------------------------------------------

    def tap(self) -> str:
        self._taps += 1
        name = f"tap{self.c.tag}{self._taps}"[:15]
        ns = ["ip", "-n", self.c.mn_ns]
        run([*ns, "tuntap", "add", "dev", name, "mode", "tap"])
        run([*ns, "link", "set", name, "master", "br0", "up"])
        return name

    def log(self, name: str) -> str:
        try:
            return (self.work / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        for name in list(self.procs):
            self._stop(name)


class QemuNode:
    """One qemu guest. Its serial console is read into :attr:`console` by a thread (and
    appended to ``<workdir>/lab/<name>.console``); :meth:`sh` runs a command in the root
    shell the image's serial getty logs in (the test image autologins root on ttyS0)."""

    def __init__(self, lab: NetbootLab, name: str, mac: str, kernel: Path, initrd: Path,
                 append: str, memory_mb: int = 1024) -> None:
        self.lab = lab
        self.name = name
        self.append = append
        accel = os.environ.get("LITEFS_QEMU_ACCEL", "tcg")
        accel_opt = "tcg,thread=multi" if accel == "tcg" else accel
        self.tapdev = lab.tap()
        self.argv = [
            QEMU, "-nodefaults", "-display", "none", "-no-reboot", "-m", str(memory_mb),
            "-smp", "2", "-accel", accel_opt, "-cpu", "max",
            "-kernel", str(kernel), "-initrd", str(initrd), "-append", append,
            "-netdev", f"tap,id=n0,ifname={self.tapdev},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac={mac}",
            "-serial", "stdio", "-device", "virtio-rng-pci",
        ]
        self.console = ""
        self._lock = threading.Lock()
        self._seq = 0
        self.logfile = lab.work / f"{name}.console"
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.c.mn_ns, *self.argv], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "LITEFS_CLUSTER": lab.c.tag}, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with open(self.logfile, "ab") as log:
            while True:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    return
                log.write(chunk)
                log.flush()
                # Raw here; since() drops control sequences (a chunk may end inside one).
                with self._lock:
                    self.console += chunk.decode(errors="replace").replace("\r", "")

    def since(self, mark: int) -> str:
        with self._lock:
            return _ANSI.sub("", self.console[mark:])

    def mark(self) -> int:
        with self._lock:
            return len(self.console)

    def expect(self, pattern: str, timeout: float, start: int = 0) -> re.Match[str]:
        """Wait until the console (from ``start``) matches ``pattern``; BootError with the
        console's tail if it does not in ``timeout`` seconds or the guest stops."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.since(start))
            if m:
                return m
            if self.proc.poll() is not None:
                time.sleep(0.2)  # the reader's last chunk
                m = rx.search(self.since(start))
                if m:
                    return m
                raise BootError(f"{self.name} stopped (qemu exit {self.proc.returncode}) before "
                                f"{pattern!r}; console:\n{self.since(start)[-4000:]}")
            if time.monotonic() > deadline:
                raise BootError(f"{self.name}: no {pattern!r} within {timeout:.0f}s; console:\n"
                                f"{self.since(start)[-4000:]}")
            time.sleep(0.1)

    def type(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def wait_shell(self, timeout: float) -> float:
        """Until the autologin root shell answers; seconds since power-on."""
        self.expect(r"root@[^\s:]+:~# ?$", timeout)
        # Kernel and unit messages share the console: quiet them, no echo, no prompt.
        self.type("stty -echo; PS1=; PS2=; bind 'set enable-bracketed-paste off'; dmesg -n 1\n")
        self.ok("true")
        return time.monotonic() - self.started

    def sh(self, cmd: str, timeout: float = 60) -> tuple[int, str]:
        """Run ``cmd`` in the guest's shell: (exit status, output)."""
        self._seq += 1
        tag = f"LFQ{self._seq}x"
        start = self.mark()
        # The newline before the end marker puts it on a line of its own even when the output
        # does not end in one; it is taken off again.
        self.type(f"echo {tag}B; ( {cmd} ) 2>&1; s=$?; echo; echo {tag}E$s\n")
        m = self.expect(rf"(?s)^{tag}B\n(.*?)\n^{tag}E(\d+)$", timeout, start)
        return int(m.group(2)), m.group(1)

    def ok(self, cmd: str, timeout: float = 60) -> str:
        rc, out = self.sh(cmd, timeout)
        if rc != 0:
            raise BootError(f"{self.name}: {cmd!r} exited {rc}:\n{out[-2000:]}")
        return out

    def wait_off(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BootError(f"{self.name} did not power off within {timeout:.0f}s; console:\n"
                            f"{self.since(0)[-3000:]}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        self._reader.join(timeout=5)
        run(["ip", "-n", self.lab.c.mn_ns, "link", "del", self.tapdev], check=False)


# --- the room the netboot test and bench_boot --qemu share ------------------------------------

IMG = "debian12-x86_64-statelite-minimal"
BIN = Path(sys.executable).parent
SHIPPED = Path(__file__).resolve().parent.parent / "litefs" / "data" / "genimage"

# The image's postinstall (genimage runs it in the image): root logs in on the serial console
# by itself, so a test can type there; nothing else about the image is changed.
POSTINSTALL = r"""#!/bin/sh
set -e
root=$1
d=$root/etc/systemd/system/serial-getty@ttyS0.service.d
mkdir -p "$d"
cat > "$d/autologin.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,38400,9600 %I $TERM
EOF
"""


@dataclass
class Room:
    """The MN of a netboot (tables, image, NFS, DHCP, mountd) and how to power on n01."""

    c: Cluster
    lab: NetbootLab
    url: str
    imgdir: Path
    nodedata: Path
    pxe: Path
    ca_dir: Path

    @property
    def rootimg(self) -> Path:
        return self.imgdir / "rootimg"

    def tool(self, name: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """One of the MN's commands (genimage, nodeset, chtab); BootError with its output."""
        r = subprocess.run([str(BIN / name), *args], capture_output=True, text=True,
                           timeout=timeout, env={**os.environ, "LITEFS_CA_DIR": str(self.ca_dir)})
        if r.returncode != 0:
            raise BootError(f"{name} {' '.join(args)}: {r.stdout[-3000:]}{r.stderr[-3000:]}")
        return r

    def boot(self, name: str = "n01", initrd: Path | None = None, append: str | None = None,
             memory_mb: int = 1024) -> QemuNode:
        mac = self.c.mac(name)
        return QemuNode(self.lab, name, mac, self.imgdir / "kernel",
                        initrd or self.imgdir / "initrd-statelite.gz",
                        append if append is not None else pxe_append(self.pxe, mac), memory_mb)


@contextmanager
def room(work: Path, net: str) -> Iterator[Room]:
    """An MN on ``<net>.1``: the demo tables (n01 in Tokyo) with n01 on a serial console,
    genimage's minimal Debian 12 image (plus procps and the autologin postinstall), nodeset
    for n01, then mountd (TLS), nfs-ganesha and udhcpd. About a minute; everything is gone
    afterwards."""
    with Cluster(work, net=net) as c:
        ex = c.exports / c.mn_ip
        installdir = c.export("/install")
        nodedata = c.export("/nodedata")
        for share in ("/syncdirs/tokyo/etc", "/syncdirs/london/etc", "/syncdirs/common/etc"):
            c.export(share)
        (ex / "syncdirs/tokyo/etc/motd").write_text("Welcome to the tokyo room (over NFS)\n")
        url = f"sqlite:///{work}/litefs.db"
        load_demo_tables(url, demo_tables(c), [
            ({"key": "installdir"}, [f"site.value={installdir}"]),
            ({"key": "tftpdir"}, [f"site.value={work}/tftpboot"]),
            ({"node": "n01"}, ["nodetype.os=debian12", "nodetype.arch=x86_64",
                               "nodetype.profile=minimal", f"nodetype.provmethod={IMG}",
                               "nodehm.serialport=0", "nodehm.serialspeed=115200"]),
            # xCAT's documented NFS options for the persistent store (reference 5.1), and
            # noacl: nfs-ganesha 4.3 answers every NFSv3 SETACL with a broken reply ("Bad
            # xdr_free for NFSACL_SETACL" in its log), which the node's kernel turns into EIO
            # when journald and tmpfiles set ACLs on /var/log/journal. With noacl the client
            # says EOPNOTSUPP, as on any store without ACLs. (knfsd needs no such option.)
            ({"node": "compute"}, ["statelite.mntopts=nolock,tcp,nfsvers=3,noacl"]),
        ])
        # The site CA first: genimage puts it in the initrd, mountd serves TLS with it.
        from litefs.mountd import pki

        ca_dir = work / "ca"
        pki.init_site(ca_dir, server_name="mn", san=[c.mn_ip])
        custom = installdir / "custom/netboot/debian"
        custom.mkdir(parents=True)
        (custom / "minimal.debian12.x86_64.pkglist").write_text(
            f"#INCLUDE:{SHIPPED / 'minimal.debian12.x86_64.pkglist'}#\nprocps\n")
        post = custom / "minimal.debian12.x86_64.postinstall"
        post.write_text(POSTINSTALL)
        post.chmod(0o755)
        lab = NetbootLab(c, [Export(installdir), Export(nodedata, True, "/nodedata"),
                             Export(ex / "syncdirs", False, "/syncdirs")])
        r = Room(c, lab, url, installdir / "netboot/debian12/x86_64/minimal", nodedata,
                 work / "tftpboot/pxelinux.cfg/n01", ca_dir)
        try:
            r.tool("genimage", "--db", url, "-o", "debian12", "-a", "x86_64", "-p", "minimal",
                   "-n", "virtio_net")
            r.tool("nodeset", "--db", url, "n01", f"osimage={IMG}")
            c.start_mountd(url)
            lab.start_nfs()
            lab.start_dhcp({c.mac("n01"): c.address("n01")})
            yield r
        finally:
            lab.close()
    leftovers = c.leftovers()
    if leftovers:
        raise BootError(f"the netboot room left {leftovers}")
