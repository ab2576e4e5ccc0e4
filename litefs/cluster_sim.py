"""A diskless cluster in Linux namespaces: a management namespace and nodes that really boot.

The management namespace (``ip netns``) holds a bridge at ``<net>.1/24`` and runs mountd on it.
Each node is its own network namespace (a veth on that bridge, address ``<net>.<n>``) plus a
mount and PID namespace made by ``unshare``. Its "firmware" (:data:`FIRMWARE`) builds an
initramfs root on a fresh tmpfs, writes the kernel command line to ``/cmdline`` and execs the
real boot hook (``initramfs/litefs-boot.sh``) as PID 1, which mounts the image, tmpfs,
persistent store and sources, fetches the plan from mountd over the veth, starts litefs and
``switch_root``s into the view; the image's ``/sbin/init`` then runs a shell on the console
(the node's stdin/stdout, driven by :class:`Node`).

Stand-ins, documented because they are the only differences from a physical node:

* **NFS**: the hook runs with ``litefs.nfsmap=/nfs``: ``server:/path`` is bind-mounted from
  ``/nfs/<server>/<path>``, and ``/nfs`` is the cluster's ``exports`` folder. The hook
  unmounts nothing else and never sees other nodes' data once the persistent store is
  narrowed to ``<statemnt>/<node>``; after ``switch_root`` ``/nfs`` is unreachable.
* **Python**: the litefs daemon is Python. The firmware bind-mounts, read-only, the host's
  ``/usr`` (``/lib`` and ``/lib64`` are symlinks into it, as on Debian), the Python install the
  venv was made from (``/root/.pyenv/...``) and the project (venv and sources, editable
  install) at the same paths, so ``LITEFS_PYTHON=<venv>/bin/python`` works in the initramfs.
  On a real node these live in the initramfs (``tools/mkinitramfs.py``) or the image.
* **Devices**: ``/dev`` is a small tmpfs with ``null zero full random urandom tty fuse``
  bind-mounted from the host.

A reboot kills the node's PID namespace (every process in it, the FUSE daemon included) and
boots again: the tmpfs is gone, the persistent store (a folder under ``exports``) remains.
"""

from __future__ import annotations

import os
import queue
import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from litefs.errors import BootError

BUSYBOX = shutil.which("busybox") or "/bin/busybox"

#: The node's firmware: runs in the node's new mount+PID namespace as PID 1 and becomes the
#: hook. Arguments: initramfs dir, exports dir, hook file, bind paths (colon-separated).
FIRMWARE = r"""
set -eu
R=$1; EXPORTS=$2; HOOK=$3; BINDS=$4; CA=$5
mount --make-rprivate /
mount -t tmpfs -o mode=755 initramfs "$R"
mkdir -p "$R/bin" "$R/sbin" "$R/usr" "$R/proc" "$R/sys" "$R/dev" "$R/tmp" "$R/run" "$R/nfs" "$R/etc"
cp "$BUSYBOX" "$R/bin/busybox"
chroot "$R" /bin/busybox --install -s /bin   # one process, not one ln per applet
ln -s usr/lib "$R/lib"; ln -s usr/lib64 "$R/lib64"
mount --rbind /usr "$R/usr"; mount -o remount,bind,ro "$R/usr"
IFS=:
for p in $BINDS; do
    mkdir -p "$R$p"; mount --rbind "$p" "$R$p"; mount -o remount,bind,ro "$R$p"
done
unset IFS
mount --bind "$EXPORTS" "$R/nfs"
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys" 2>/dev/null || true
mount -t tmpfs -o mode=755 dev "$R/dev"
for d in null zero full random urandom tty fuse; do
    touch "$R/dev/$d"; mount --bind "/dev/$d" "$R/dev/$d"
done
cp "$HOOK" "$R/init"; chmod 755 "$R/init"
cp /cmdline.in "$R/cmdline" 2>/dev/null || true
[ -n "$CA" ] && cp "$CA" "$R/etc/litefs-ca.pem"
cd "$R"
exec chroot "$R" /init
"""

#: The image's /sbin/init: say so on the console and run a shell on it.
IMAGE_INIT = """#!/bin/sh
echo "litefs-node: init started on $(cat /etc/hostname 2>/dev/null || echo ?)"
exec /bin/sh
"""


def run(cmd: list[str], check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if check and proc.returncode != 0:
        raise BootError(f"{shlex.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def hook_path() -> Path:
    """The boot hook shipped as package data of ``litefs.initramfs``."""
    return Path(str(resources.files("litefs.initramfs") / "litefs-boot.sh"))


def python_binds(python: str = sys.executable) -> list[str]:
    """Host paths a node needs for ``python`` (venv + base install + project), deduplicated."""
    venv = Path(python).parent.parent
    paths = {str(venv.resolve())}
    base = Path(sys.base_prefix).resolve()
    paths.add(str(base))
    import litefs

    project = Path(litefs.__file__).resolve().parent.parent
    paths.add(str(project))
    # Only bind paths that are outside /usr (bound anyway); drop nested duplicates.
    out: list[str] = []
    for p in sorted(paths, key=len):
        if p.startswith("/usr/") or any(p.startswith(q + "/") for q in out):
            continue
        out.append(p)
    return out


def build_image(root: Path, hostname: str = "image", motd: str = "image motd\n") -> Path:
    """A tiny busybox root filesystem that boots to a shell (the image on the "NFS server")."""
    for d in ("bin", "sbin", "etc", "dev", "proc", "sys", "run", "tmp", "var/log", "root",
              "usr", "var/lib", ".statelite"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for applet in run([BUSYBOX, "--list"]).stdout.split():
        link = root / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    (root / "sbin" / "init").write_text(IMAGE_INIT)
    os.chmod(root / "sbin" / "init", 0o755)
    (root / "etc" / "motd").write_text(motd)
    (root / "etc" / "hostname").write_text(hostname + "\n")
    (root / "etc" / "adjtime").write_text("0.0 0 0.0\n0\nUTC\n")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    return root


class Node:
    """One booted node: its console (stdin/stdout of PID 1) and its namespaces."""

    def __init__(self, name: str, netns: str, proc: subprocess.Popen[bytes],
                 workdir: Path) -> None:
        self.name = name
        self.netns = netns
        self.proc = proc
        self.workdir = workdir
        self.output: queue.Queue[str] = queue.Queue()
        self.console = ""  # everything read so far
        self._n = 0
        self.started = time.monotonic()
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            self.output.put(raw.decode(errors="replace"))
        self.output.put("")  # EOF marker

    def expect(self, text: str, timeout: float = 60.0) -> str:
        """Read console lines until one contains ``text``; return everything read meanwhile."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BootError(f"{self.name}: no {text!r} on the console within {timeout}s; "
                                f"console so far:\n{self.console[-4000:]}")
            try:
                line = self.output.get(timeout=left)
            except queue.Empty:
                continue
            if line == "":
                raise BootError(f"{self.name}: console closed before {text!r}; console:\n"
                                f"{self.console[-4000:]}")
            self.console += line
            seen.append(line)
            if text in line:
                return "".join(seen)

    def wait_shell(self, timeout: float = 60.0) -> float:
        """Wait until the node's shell answers; return seconds since boot started."""
        self.expect("litefs-node: init started", timeout)
        self.sh("true", timeout=timeout)
        return time.monotonic() - self.started

    def sh(self, command: str, timeout: float = 30.0) -> tuple[int, str]:
        """Run ``command`` in the node's console shell; (exit status, output)."""
        self._n += 1
        mark = f"__LITEFS_DONE_{self._n}_{uuid.uuid4().hex[:6]}__"
        assert self.proc.stdin is not None
        line = f"{command} 2>&1; echo {mark} $?\n"
        try:
            self.proc.stdin.write(line.encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise BootError(f"{self.name}: console is gone; console:\n{self.console[-4000:]}") from None
        out = self.expect(mark, timeout)
        body, _, tail = out.rpartition(mark)
        return int(tail.split()[0]), body

    def check(self, command: str, timeout: float = 30.0) -> str:
        status, out = self.sh(command, timeout)
        if status != 0:
            raise BootError(f"{self.name}: {command!r} exited {status}: {out}")
        return out

    def pid1(self) -> int | None:
        """Host PID of the node's init (the hook, later the image's init)."""
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return None
        # ip netns exec execs unshare; unshare forks PID 1 of the new namespace.
        for pid in children.split():
            return int(pid)
        return None

    def initramfs_file(self, path: str) -> str:
        """A file of the node's initramfs (e.g. ``/.litefs/statelite/litefs.log``), read from
        the host through the root of the node's ``@litefs`` daemon, which never left it."""
        pid = self.pid1()
        if pid is None:
            raise BootError(f"{self.name} is not running")
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        for kid in kids:
            try:
                argv0 = Path(f"/proc/{kid}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if argv0 == b"@litefs":
                return Path(f"/proc/{kid}/root{path}").read_text()
        raise BootError(f"{self.name}: no @litefs daemon found")

    def kill(self) -> None:
        """Power off hard: every process in the node's PID namespace dies, mounts go away."""
        if self.proc.poll() is None:
            pid = self.pid1()
            if pid:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            self.proc.kill()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass


@dataclass
class Cluster:
    """Management namespace, exports folder and nodes. Always use as a context manager."""

    workdir: Path
    net: str = "10.77.0"
    python: str = sys.executable
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    nodes: dict[str, Node] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)
    mountd: subprocess.Popen[bytes] | None = None
    ca: Path | None = None

    def __post_init__(self) -> None:
        self.mn_ns = f"lfmn-{self.tag}"
        self.exports = self.workdir / "exports"
        self.exports.mkdir(parents=True, exist_ok=True)
        self._netns: list[str] = []
        self._next_host = 11

    @property
    def mn_ip(self) -> str:
        return f"{self.net}.1"

    def export(self, path: str) -> Path:
        """The folder standing in for the MN's NFS export ``<mn_ip>:<path>``."""
        p = self.exports / self.mn_ip / path.lstrip("/")
        p.mkdir(parents=True, exist_ok=True)
        return p

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        run(["ip", "netns", "add", self.mn_ns])
        self._netns.append(self.mn_ns)
        ns = ["ip", "-n", self.mn_ns]
        run([*ns, "link", "set", "lo", "up"])
        run([*ns, "link", "add", "br0", "type", "bridge"])
        run([*ns, "addr", "add", f"{self.mn_ip}/24", "dev", "br0"])
        run([*ns, "link", "set", "br0", "up"])
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for node in list(self.nodes.values()):
            node.kill()
        self.nodes.clear()
        if self.mountd is not None and self.mountd.poll() is None:
            self.mountd.terminate()
            try:
                self.mountd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.mountd.kill()
                self.mountd.wait()
        for ns in reversed(self._netns):
            run(["ip", "netns", "del", ns], check=False)
        self._netns.clear()

    def start_mountd(self, db_url: str, tls: bool = True, port: int = 3001) -> None:
        """mountd in the management namespace on ``<mn_ip>:port`` (TLS with a fresh site CA)."""
        sock = self.workdir / "mountd.sock"
        cmd = [str(Path(self.python).parent / "mountd"), "--db", db_url, "--host", self.mn_ip,
               "--port", str(port), "--socket", str(sock), "--log-format", "text",
               "--check-interval", "0.2"]
        if tls:
            from litefs.mountd import pki

            ca_dir = self.workdir / "ca"
            if not (ca_dir / "ca.pem").exists():
                pki.init_site(ca_dir, server_name="mn", san=[self.mn_ip])
            self.ca = ca_dir / "ca.pem"
            cmd += ["--ca-dir", str(ca_dir)]
        else:
            cmd += ["--insecure"]
        with open(self.workdir / "mountd.log", "ab") as log:
            self.mountd = subprocess.Popen(["ip", "netns", "exec", self.mn_ns, *cmd],
                                           stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not sock.exists():
            if self.mountd.poll() is not None or time.monotonic() > deadline:
                raise BootError("mountd did not start: "
                                + (self.workdir / "mountd.log").read_text()[-2000:])
            time.sleep(0.05)
        self.admin_socket = sock

    def notify(self, target: str, *paths: str) -> str:
        """``litefs notify`` as the admin runs it on the MN (over mountd's admin socket)."""
        cmd = [str(Path(self.python).parent / "litefs"), "notify", "--server",
               f"unix:{self.admin_socket}", target, *paths]
        return run(cmd).stdout

    def address(self, name: str) -> str:
        if name not in self.addresses:
            self.addresses[name] = f"{self.net}.{self._next_host}"
            self._next_host += 1
        return self.addresses[name]

    def _netns_for(self, name: str) -> str:
        ns = f"lfn-{self.tag}-{name}"[:30]
        if ns in self._netns:
            return ns
        run(["ip", "netns", "add", ns])
        self._netns.append(ns)
        veth = f"v{self.tag}{len(self._netns)}"[:15]
        run(["ip", "link", "add", veth, "netns", self.mn_ns, "type", "veth", "peer", "name",
             "eth0", "netns", ns])
        run(["ip", "-n", self.mn_ns, "link", "set", veth, "master", "br0", "up"])
        run(["ip", "-n", ns, "addr", "add", f"{self.address(name)}/24", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        return ns

    def cmdline(self, name: str, image_dir: str, statemnt: str | None = None,
                extra: str = "", port: int = 3001) -> str:
        """The kernel command line nodeset would write (xCAT order), plus the NFS map."""
        st = f"{self.mn_ip}:/nodedata" if statemnt is None else statemnt
        return (f"root=nfs:{self.mn_ip}:{image_dir}/rootimg:ro STATEMNT={st} "
                f"XCAT={self.mn_ip}:{port} NODE={name} XCATHTTPPORT=80 MNTOPTS= "
                f"litefs.nfsmap=/nfs {extra}").strip()

    def boot(self, name: str, cmdline: str, env: dict[str, str] | None = None) -> Node:
        """Power on ``name`` with ``cmdline``; returns at once (use ``Node.wait_shell``)."""
        old = self.nodes.pop(name, None)
        if old is not None:
            old.kill()
        ns = self._netns_for(name)
        nodedir = self.workdir / "nodes" / name
        initramfs = nodedir / "initramfs"
        initramfs.mkdir(parents=True, exist_ok=True)
        (nodedir / "cmdline").write_text(cmdline + "\n")
        binds = ":".join(python_binds(self.python))
        environment = {
            "PATH": "/bin:/sbin:/usr/bin:/usr/sbin",
            "BUSYBOX": BUSYBOX,
            "LITEFS_CMDLINE": "/cmdline",
            "LITEFS_PYTHON": self.python,
            "LITEFS_BACKOFF": "0",
            "HOME": "/",
            "TERM": "dumb",
        }
        if self.ca is not None:
            environment["LITEFS_CA"] = "/etc/litefs-ca.pem"
        environment.update(env or {})
        script = FIRMWARE.replace("/cmdline.in", str(nodedir / "cmdline"))
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "unshare", "--mount", "--pid", "--fork", "--kill-child",
             BUSYBOX, "sh", "-c", script, "firmware", str(initramfs), str(self.exports),
             str(hook_path()), binds, str(self.ca or "")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=environment,
        )
        node = Node(name, ns, proc, nodedir)
        self.nodes[name] = node
        return node


# --- the demo/test cluster ------------------------------------------------------------------

#: Where the demo image lives on the MN (``linuximage.rootimgdir``).
DEMO_IMAGE_DIR = "/install/netboot/demo/x86_64/compute"
DEMO_IMAGE = "demo-x86_64-statelite-compute"

DEMO_LITEFILE = (
    "#image,file,options,comments,disable\n"
    '"ALL","/etc/adjtime","tmpfs",,\n'
    '"ALL","/tmp/","tmpfs",,\n'
    '"ALL","/var/log/","persistent",,\n'
    '"ALL","/etc/motd","ro",,\n'
    '"ALL","/etc/issue","ro",,\n'
)

_HEADERS = {
    "nodelist": "#node,groups,status,statustime,appstatus,appstatustime,primarysn,hidden,"
                "updatestatus,updatestatustime,zonename,comments,disable\n",
    "hosts": "#node,ip,hostnames,otherinterfaces,comments,disable\n",
    "mac": "#node,interface,mac,comments,disable\n",
    "nodepos": "#node,rack,u,chassis,slot,room,height,comments,disable\n",
}


def demo_tables(cluster: Cluster, rooms: dict[str, str], litefile: str = DEMO_LITEFILE,
                rootimgdir: str = DEMO_IMAGE_DIR, nfsdir: str = "") -> dict[str, str]:
    """CSV per table: ``rooms`` maps node -> room; every node in group ``compute``.

    The litetree row ``<mn>:/syncdirs/$nodepos.room`` gives each room its own overlay (the
    cookbook's Tokyo/London example); statelite puts persistent data on ``<mn>:/nodedata``.
    ``rootimgdir`` is where nodeset finds kernel and initrd on this host; ``nfsdir``
    (``//path``) is the image directory as the nodes mount it, when that differs.
    """
    mn = cluster.mn_ip
    t = {k: v for k, v in _HEADERS.items()}
    for i, (node, room) in enumerate(rooms.items()):
        t["nodelist"] += f'"{node}","compute",,,,,,,,,,,\n'
        t["hosts"] += f'"{node}","{cluster.address(node)}",,,,\n'
        t["mac"] += f'"{node}","eth0","02:77:00:00:00:{i + 11:02x}",,\n'
        t["nodepos"] += f'"{node}",,,,,"{room}",,,\n'
    t["nodetype"] = ("#node,os,arch,profile,provmethod,supportedarchs,nodetype,comments,disable\n"
                     f'"compute","demo","x86_64","compute","{DEMO_IMAGE}",,,,\n')
    t["osimage"] = (
        "#imagename,groups,profile,imagetype,description,provmethod,rootfstype,nfsrootopts,"
        "osdistroname,osupdatename,cfmdir,osname,osvers,osarch,synclists,postscripts,"
        "postbootscripts,serverrole,isdeletable,kitcomponents,environvar,comments,disable\n"
        f'"{DEMO_IMAGE}",,"compute","linux",,"statelite",,,,,,"Linux","demo","x86_64",'
        ",,,,,,,,\n")
    t["linuximage"] = (
        "#imagename,template,boottarget,addkcmdline,pkglist,pkgdir,otherpkglist,otherpkgdir,"
        "exlist,postinstall,rootimgdir,kerneldir,nodebootif,otherifce,netdrivers,kernelver,"
        "krpmver,permission,dump,crashkernelsize,partitionfile,driverupdatesrc,comments,"
        f'disable\n"{DEMO_IMAGE}",,,,,,,,,,"{rootimgdir}",,,,,,,,,,,,,\n')
    t["noderes"] = (
        "#node,servicenode,netboot,tftpserver,tftpdir,nfsserver,monserver,nfsdir,installnic,"
        "primarynic,discoverynics,cmdinterface,xcatmaster,current_osimage,next_osimage,"
        "nimserver,routenames,nameservers,proxydhcp,syslog,comments,disable\n"
        f'"compute",,"pxe",,,,,"{nfsdir}",,,,,"{mn}",,,,,,,,,\n')
    t["litefile"] = litefile
    t["litetree"] = ("#priority,image,directory,mntopts,comments,disable\n"
                     f'"1.0",,"{mn}:/syncdirs/$nodepos.room",,,\n')
    t["statelite"] = ("#node,image,statemnt,mntopts,comments,disable\n"
                      f'"compute",,"{mn}:/nodedata",,,\n')
    return t


def stage_demo(cluster: Cluster, rooms: dict[str, str]) -> Path:
    """The MN's exports for the demo: the image, ``/nodedata`` and one motd per room."""
    root = cluster.export(DEMO_IMAGE_DIR + "/rootimg")
    build_image(root, motd="image motd\n")
    (root / "etc" / "issue").write_text("demo image v1\n")
    cluster.export("/nodedata")
    for room in sorted(set(rooms.values())):
        etc = cluster.export(f"/syncdirs/{room}/etc")
        (etc / "motd").write_text(f"Welcome to the {room} room\n")
    return root


def load_demo_tables(db_url: str, tables: dict[str, str]) -> None:
    """Create the schema in ``db_url`` and restore ``tables`` into it."""
    from litefs import db, tabledata

    engine = db.open_engine(db_url)
    try:
        db.init_db(engine)
        for name, text in tables.items():
            tabledata.restore(engine, name, text, f"{name}.csv")
    finally:
        engine.dispose()
