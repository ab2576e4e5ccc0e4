"""A diskless cluster in Linux namespaces: a management namespace and nodes that really boot.

The management namespace (``ip netns``) holds a bridge at ``<net>.1/24`` and runs mountd on it.
Each node is its own network namespace (a veth on that bridge, address ``<net>.<n>``) plus a
mount and PID namespace made by ``unshare``. Its "firmware" (:data:`FIRMWARE`) builds an
initramfs root on a fresh tmpfs, writes the kernel command line to ``/cmdline`` and execs the
real boot hook (``initramfs/litefs-boot.sh``) as PID 1, which mounts the image, tmpfs,
persistent store and sources, fetches the plan from mountd over the veth, starts litefs and
``switch_root``s into the view; the image's ``/sbin/init`` then runs a shell on the console
(the node's stdin/stdout, driven by :class:`ClusterNode`).

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

It is a harness, not product code (``litefs demo``, the boot tests and benchmarks use it), and
one module on purpose: the firmware script, the node and the cluster are one stand-in for a
machine room, read together.
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from litefs.tools import sampledata

from litefs.errors import BootError
from litefs.wellknown import DEFAULT_PORT

BUSYBOX = shutil.which("busybox") or "/bin/busybox"

#: The node's firmware: runs in the node's new mount+PID namespace as PID 1 and becomes the
#: hook. Arguments: initramfs dir, exports dir, hook file, bind paths (colon-separated).
FIRMWARE = r"""
set -eu
R=$1; EXPORTS=$2; HOOK=$3; BINDS=$4; CA=$5; EXTRA=${6:-}
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
[ -n "$EXTRA" ] && cp -a "$EXTRA/." "$R/"
cp /cmdline.in "$R/cmdline" 2>/dev/null || true
[ -n "$CA" ] && cp "$CA" "$R/etc/litefs-ca.pem"
cd "$R"
exec chroot "$R" /init
"""

#: /init of a dracut-style node: stands in for dracut's nfs module (image bound read-only on
#: $NEWROOT) and its switch_root (moving /dev, /proc, /sys, /run), and runs our dracut module's
#: real pre-pivot hook in between, with dracut-lib's ``die``.
DRACUT_INIT = r"""#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin NEWROOT=/sysroot
die() { echo "dracut: FATAL: $*" >&2; exit 1; }
set -f
for arg in $(cat "$LITEFS_CMDLINE"); do
    case "$arg" in root=nfs:*) spec=${arg#root=nfs:} ;; esac
done
set +f
server=${spec%%:*}; rest=${spec#*:}; path=${rest%%:*}
mkdir -p "$NEWROOT"
mount --bind "/nfs/$server$path" "$NEWROOT" && mount -o remount,bind,ro "$NEWROOT" ||
    die "cannot mount $server:$path"
echo "dracut: nfs root $server:$path on $NEWROOT"
for hook in /dracut/hooks/pre-pivot/*.sh; do . "$hook"; done
for d in dev proc sys run; do mount --move "/$d" "$NEWROOT/$d" 2>/dev/null; done
echo "dracut: switching root"
exec switch_root "$NEWROOT" /sbin/init
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


class ClusterNode:
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
    nodes: dict[str, ClusterNode] = field(default_factory=dict)
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
        try:
            self._netns.append(self.mn_ns)
            run(["ip", "netns", "add", self.mn_ns])
            ns = ["ip", "-n", self.mn_ns]
            run([*ns, "link", "set", "lo", "up"])
            run([*ns, "link", "add", "br0", "type", "bridge"])
            run([*ns, "addr", "add", f"{self.mn_ip}/24", "dev", "br0"])
            run([*ns, "link", "set", "br0", "up"])
        except BaseException:
            self.close()  # __exit__ does not run when __enter__ fails
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Power every node off, stop mountd, delete the namespaces; each step runs even if
        an earlier one failed (the first error is raised at the end)."""
        errors: list[BaseException] = []
        for node in list(self.nodes.values()):
            try:
                node.kill()
            except Exception as exc:  # keep cleaning up; report afterwards
                errors.append(exc)
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
        if errors:
            raise errors[0]

    @property
    def _marker(self) -> bytes:
        """In the environment of every process the cluster starts (nodes inherit it)."""
        return f"LITEFS_CLUSTER={self.tag}".encode()

    def leftovers(self) -> list[str]:
        """What this cluster left behind: its namespaces, mounts under its folder and
        processes whose command line names its folder or namespaces (empty when clean)."""
        out: list[str] = []
        listed = run(["ip", "netns", "list"], check=False).stdout
        out += [f"netns {line.split()[0]}" for line in listed.splitlines()
                if self.tag in line.split()[0]]
        work = str(self.workdir)
        with open("/proc/mounts") as f:
            out += [f"mount {line.split()[1]}" for line in f if work in line.split()[1]]
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                env = []
            if work in argv or f"-{self.tag}" in argv or self._marker in env:
                out.append(f"process {pid}: {argv[:120]}")
        return out

    def start_mountd(self, db_url: str, tls: bool = True, port: int = DEFAULT_PORT) -> None:
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
                                           stdout=log, stderr=subprocess.STDOUT,
                                           env={**os.environ, "LITEFS_CLUSTER": self.tag})
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
        """The node's IP on the bridge (the sample's, else the next free host number)."""
        if name not in self.addresses:
            taken = set(self.addresses.values())
            while f"{self.net}.{self._next_host}" in taken:
                self._next_host += 1
            if self._next_host > 254:
                raise BootError(f"no free address left on {self.net}.0/24")
            self.addresses[name] = f"{self.net}.{self._next_host}"
        return self.addresses[name]

    def mac(self, name: str) -> str:
        """The node's eth0 MAC (locally administered, made from its IP): its mac table row."""
        octets = [int(o) for o in self.address(name).split(".")]
        return "02:00:" + ":".join(f"{o:02x}" for o in octets)

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
        run(["ip", "-n", ns, "link", "set", "eth0", "address", self.mac(name)])
        run(["ip", "-n", ns, "addr", "add", f"{self.address(name)}/24", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        return ns

    def cmdline(self, name: str, image_dir: str, statemnt: str | None = None,
                extra: str = "", port: int = DEFAULT_PORT) -> str:
        """The kernel command line nodeset would write (xCAT order), plus the NFS map."""
        st = f"{self.mn_ip}:/nodedata" if statemnt is None else statemnt
        return (f"root=nfs:{self.mn_ip}:{image_dir}/rootimg:ro STATEMNT={st} "
                f"XCAT={self.mn_ip}:{port} NODE={name} XCATHTTPPORT=80 MNTOPTS= "
                f"litefs.nfsmap=/nfs {extra}").strip()

    def boot(self, name: str, cmdline: str, env: dict[str, str] | None = None,
             dracut: bool = False) -> ClusterNode:
        """Power on ``name`` with ``cmdline``; returns at once (use ``ClusterNode.wait_shell``).

        ``dracut``: boot through the packaged dracut module instead (:data:`DRACUT_INIT`
        as /init, ``dracut/95litefs/litefs-prepivot.sh`` as its pre-pivot hook).
        """
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
            "LITEFS_CLUSTER": self.tag,  # lets leftovers() find every process of the node
        }
        if self.ca is not None:
            environment["LITEFS_CA"] = "/etc/litefs-ca.pem"
        environment.update(env or {})
        script = FIRMWARE.replace("/cmdline.in", str(nodedir / "cmdline"))
        init, extra = hook_path(), ""
        if dracut:
            init = nodedir / "dracut-init"
            init.write_text(DRACUT_INIT)
            droot = nodedir / "dracut-root"
            hooks = droot / "dracut" / "hooks" / "pre-pivot"
            hooks.mkdir(parents=True, exist_ok=True)
            module = hook_path().parent / "dracut" / "95litefs"
            shutil.copy(module / "litefs-prepivot.sh", hooks / "90-litefs-prepivot.sh")
            shutil.copy(hook_path(), droot / "dracut" / "litefs-boot.sh")
            environment["LITEFS_HOOK"] = "/dracut/litefs-boot.sh"
            extra = str(droot)
        proc = subprocess.Popen(
            # --uts: the node's hook names its own host (hostname NODE), never the host's.
            ["ip", "netns", "exec", ns, "unshare", "--mount", "--pid", "--uts", "--fork",
             "--kill-child",
             BUSYBOX, "sh", "-c", script, "firmware", str(initramfs), str(self.exports),
             str(init), binds, str(self.ca or ""), extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=environment,
        )
        node = ClusterNode(name, ns, proc, nodedir)
        self.nodes[name] = node
        return node


# --- the demo/test cluster ------------------------------------------------------------------

#: Where the demo image lives on the MN (``linuximage.rootimgdir`` of the shipped sample).
DEMO_IMAGE_DIR = "/install/netboot/demo/x86_64/compute"
DEMO_IMAGE = sampledata.DEMO_IMAGE
#: The sample's nodes and rooms (``litefs/data/demo``): n01, n02 in Tokyo; n03, n04 in London.
DEMO_ROOMS = dict(sampledata.DEMO_ROOMS)

_NODELIST_ROW = '"{node}","{groups}",,,,,,,,,,,\n'
_HOSTS_ROW = '"{node}","{ip}",,,,\n'


def demo_tables(cluster: Cluster, extra_nodes: dict[str, str] | None = None,
                litefile: str | None = None) -> dict[str, str]:
    """The shipped demo tables (:func:`litefs.tools.sampledata.demo_tables`) for this cluster.

    The one demo data set, moved from loopback to the cluster's bridge network
    (:func:`litefs.tools.sampledata.demo_tables_on`), plus what the harness itself stands in for:
    a ``mac`` row per node (xCAT's ``getmacs``; the node's eth0 gets that MAC). For the
    benchmark, ``extra_nodes`` (name -> room, ``tokyo`` or ``london``) adds nodes in group
    ``compute`` and ``litefile`` replaces the litefile table (e.g. the cookbook's RedHat list).
    """
    t = sampledata.demo_tables_on(cluster.net)
    for node, ip in sampledata.DEMO_NODES.items():
        cluster.addresses[node] = f"{cluster.net}.{ip.rsplit('.', 1)[1]}"
    for node, room in (extra_nodes or {}).items():
        if room not in ("tokyo", "london"):
            raise BootError(f"extra node {node}: room {room!r} is not tokyo or london")
        t["nodelist"] += _NODELIST_ROW.format(node=node, groups=f"compute,{room}")
        t["hosts"] += _HOSTS_ROW.format(node=node, ip=cluster.address(node))
    t["mac"] = "#node,interface,mac,comments,disable\n" + "".join(
        f'"{node}","eth0","{cluster.mac(node)}",,\n' for node in cluster.addresses)
    if litefile is not None:
        t["litefile"] = litefile
    return t


def stage_demo(cluster: Cluster) -> Path:
    """The MN's exports the demo tables name: the image, ``/nodedata``, the litetree folders.

    ``/syncdirs/<room>/etc/motd`` per room (``$nodepos.room``) and ``/syncdirs/common`` (every
    node: ``/etc/ssh/ssh_known_hosts`` seeds the tmpfs ``/etc/ssh/``).
    """
    root = cluster.export(DEMO_IMAGE_DIR + "/rootimg")
    build_image(root, motd="image motd\n")
    (root / "etc" / "issue").write_text("demo image v1\n")
    cluster.export("/nodedata")
    for room in sorted(set(DEMO_ROOMS.values())):
        etc = cluster.export(f"/syncdirs/{room}/etc")
        (etc / "motd").write_text(f"Welcome to the {room} room\n")
    ssh = cluster.export("/syncdirs/common/etc/ssh")
    (ssh / "ssh_known_hosts").write_text("mn ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAdemo\n")
    return root


def load_demo_tables(db_url: str, tables: dict[str, str],
                     settings: Sequence[tuple[dict[str, str], list[str]]] = ()) -> None:
    """Create the schema in ``db_url``, restore ``tables``, then apply ``settings``.

    ``settings`` are ``chtab`` calls (keys, ``table.column=value`` list), as an admin would
    adapt the sample to a site (e.g. where this host keeps the image's kernel).
    """
    from litefs import db, tabledata

    engine = db.open_engine(db_url)
    try:
        db.init_db(engine)
        for name, text in tables.items():
            tabledata.restore(engine, name, text, f"{name}.csv")
        for keys, assignments in settings:
            tabledata.chtab(engine, keys, assignments)
    finally:
        engine.dispose()
