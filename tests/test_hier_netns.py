"""Service nodes in namespaces: an MN, two SNs with a real sshd and a real mountd each, all
reading one real PostgreSQL, and diskless nodes split across the SNs.

Topology (litefs.tools.cluster_sim's bridge in the MN namespace): MN ``.1``, sn1 ``.2``, sn2 ``.3``,
nodes ``.11``… Each SN is a network namespace on the bridge running ``sshd -D -f <own
config>`` (host and user keys made here) inside its own mount namespace, where the SN's disk
(the folder standing in for its NFS exports, ``exports/<sn ip>``) appears at ``SNROOT`` — so
one ``prsync … sn1,sn2:SNROOT/`` lands on each SN's own disk, as ``cd /; prsync install
sn1,sn2:/`` does on real SNs. Each SN also runs ``mountd --service-node snX`` on its address.
PostgreSQL is the one ``$LITEFS_TEST_PG`` names (a Unix socket, which every namespace can
reach: network namespaces do not separate the file system).

Nodes boot with the kernel command line the MN's ``nodeset`` wrote: image and persistent
store from their first SN (``root=nfs:<sn>``, ``STATEMNT=<sn>:/nodedata``), plan from
``XCAT=<sn>:3001`` and, failing that, the next SN of ``litefs.pool=``.

Changes made on the MN reach the nodes of both SNs through the database alone: a ``chtab``
(each SN's mountd hears the change trigger and pushes the new plan) and ``litefs notify
--db`` (``pg_notify``; no mountd runs on the MN). Failover: an SN's mountd killed during a
boot storm, an SN down entirely (mountd stopped and its exports folder gone: image,
persistent store and plan come from the next SN of the pool), a whole pool down (the FATAL
line), and an SN whose mountd cannot reach the database (it answers with one line naming
it; the node boots from the next SN).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from litefs.mountd.cli import DEFAULT_SOCKET
from litefs.tools.cluster_sim import (
    DEMO_IMAGE,
    DEMO_IMAGE_DIR,
    Cluster,
    ClusterNode,
    demo_tables,
    stage_demo,
)

from tests.dbutil import pg_database

pytestmark = [pytest.mark.netns, pytest.mark.fuse, pytest.mark.slow, pytest.mark.pg]

SNS = {"sn1": 2, "sn2": 3}
#: Pools: Tokyo nodes prefer sn1, London nodes sn2; n04 may use sn2 only. n05-n07 join
#: the boot storm.
POOLS = {"n01": "sn1,sn2", "n02": "sn1,sn2", "n03": "sn2,sn1", "n04": "sn2",
         "n05": "sn1,sn2", "n06": "sn1,sn2", "n07": "sn2,sn1"}
EXTRA_NODES = {"n05": "tokyo", "n06": "tokyo", "n07": "london"}
BIN = Path(sys.executable).parent


def _missing() -> str | None:
    for tool in ("ip", "unshare", "busybox", "rsync", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (tools/setup.sh installs it)"
    if not Path("/usr/sbin/sshd").exists():
        return "openssh-server is not installed (tools/setup.sh installs it)"
    if not Path("/dev/fuse").exists():
        return "/dev/fuse is missing"
    return None


#: Runs in the SN's network namespace, in a new mount namespace: the SN's own /run (sshd's
#: privilege separation folder) and its disk at SNROOT, then sshd in the foreground.
SN_SCRIPT = r"""
set -eu
mount --make-rprivate /
mount -t tmpfs -o mode=755 snrun /run
mkdir -m 755 /run/sshd
mount --bind "$1" "$2"
exec /usr/sbin/sshd -D -e -f "$3"
"""


@dataclass
class Hier:
    c: Cluster
    url: str
    work: Path
    snroot: Path
    ssh_config: Path
    tftp: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def ip(self, name: str) -> str:
        return self.c.address(name)

    def disk(self, sn: str) -> Path:
        return self.c.exports / self.ip(sn)

    def mn(self, *cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """A command on the MN (its network namespace), as the admin runs it."""
        env = {**os.environ, "RSYNC_RSH": f"ssh -F {self.ssh_config}", "LITEFS_DB": self.url,
               "LITEFS_CLUSTER": self.c.tag}
        return subprocess.run(["ip", "netns", "exec", self.c.mn_ns, *cmd], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=120)

    def start_mountd(self, sn: str, url: str | None = None) -> None:
        sock = self.work / f"{sn}.sock"
        sock.unlink(missing_ok=True)
        with open(self.work / f"{sn}-mountd.log", "ab") as log:
            self.procs[f"{sn}-mountd"] = subprocess.Popen(
                ["ip", "netns", "exec", self.c._netns_for(sn), str(BIN / "mountd"), "--db",
                 url or self.url, "--host", self.ip(sn), "--port", "3001", "--socket", str(sock),
                 "--ca-dir", str(self.work / "ca"), "--service-node", sn, "--log-format",
                 "text", "--check-interval", "0.2"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "LITEFS_CLUSTER": self.c.tag})
        deadline = time.monotonic() + 20
        while not sock.exists():
            proc = self.procs[f"{sn}-mountd"]
            assert proc.poll() is None and time.monotonic() < deadline, (
                self.work / f"{sn}-mountd.log").read_text()[-2000:]
            time.sleep(0.05)

    def stop(self, key: str, sig: int = signal.SIGTERM) -> None:
        # Every SN process leads its own process group (start_new_session): the group
        # holds sshd and its per-connection children, or mountd.
        proc = self.procs.pop(key, None)
        if proc is None:
            return
        for signum in (sig, signal.SIGKILL):
            try:
                os.killpg(proc.pid, signum)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        proc.wait()

    def cmdline(self, node: str) -> str:
        cfg = (self.tftp / "pxelinux.cfg" / node).read_text()
        line = next(x for x in cfg.splitlines() if x.strip().startswith("APPEND "))
        args = [a for a in line.split()[1:] if not a.startswith("initrd=")]
        return " ".join(args) + " litefs.nfsmap=/nfs"

    def boot(self, node: str) -> ClusterNode:
        return self.c.boot(node, self.cmdline(node))

    def announce(self, sn: str, node: str, *paths: str) -> str:
        out = subprocess.run([str(BIN / "litefs"), "notify", "--server",
                              f"unix:{self.work / f'{sn}.sock'}", node, *paths],
                             capture_output=True, text=True, timeout=30)
        return out.stdout + out.stderr


def _keys(work: Path, c: Cluster) -> Path:
    ssh = work / "ssh"
    ssh.mkdir(mode=0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / "id")],
                   check=True)
    (ssh / "authorized_keys").write_text((ssh / "id.pub").read_text())
    known = []
    for sn in SNS:
        key = ssh / f"{sn}_host"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True)
        known.append(f"{c.address(sn)} {(ssh / f'{sn}_host.pub').read_text().split(' ')[0]} "
                     f"{(ssh / f'{sn}_host.pub').read_text().split(' ')[1]}\n")
        (ssh / f"{sn}_sshd_config").write_text(
            f"ListenAddress {c.address(sn)}\nPort 22\nHostKey {key}\n"
            f"AuthorizedKeysFile {ssh / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "StrictModes no\nPidFile none\nLogLevel ERROR\n")
    (ssh / "known_hosts").write_text("".join(known))
    cfg = ssh / "ssh_config"
    cfg.write_text(f"Host *\n  User root\n  IdentityFile {ssh / 'id'}\n  IdentitiesOnly yes\n"
                   f"  UserKnownHostsFile {ssh / 'known_hosts'}\n  GlobalKnownHostsFile /dev/null\n"
                   "  StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 3\n"
                   "  LogLevel ERROR\n")
    return cfg


def _tables(c: Cluster, rootimgdir: Path) -> dict[str, str]:
    t = demo_tables(c, extra_nodes=EXTRA_NODES)
    for sn in SNS:
        t["nodelist"] += f'"{sn}","service",,,,,,,,,,,\n'
        t["hosts"] += f'"{sn}","{c.address(sn)}",,,,\n'
    t["nodelist"] += '"sn9","service",,,,,,,,,,,\n'  # defined, but no such host answers
    t["hosts"] += f'"sn9","{c.net}.9",,,,\n'
    t["servicenode"] = ("#node,nameserver,dhcpserver,tftpserver,nfsserver,conserver,monserver,"
                        "ldapserver,ntpserver,ftpserver,nimserver,ipforward,dhcpinterfaces,"
                        "proxydhcp,comments,disable\n"
                        + "".join(f'"{sn}",,,"1","1",,,,,,,,,,,\n' for sn in SNS))
    head = t["noderes"].splitlines()[0] + "\n"
    t["noderes"] = head + "".join(
        f'"{n}","{pool}","pxe",,,,,"/{DEMO_IMAGE_DIR}",,,,,,,,,,,,,,\n'
        for n, pool in POOLS.items())
    t["statelite"] = ('#node,image,statemnt,mntopts,comments,disable\n'
                      '"compute",,"$noderes.xcatmaster:/nodedata",,,\n')
    t["linuximage"] = t["linuximage"].replace(f'"{DEMO_IMAGE_DIR}"', f'"{rootimgdir}"')
    return t


@pytest.fixture(scope="module")
def hier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hier]:
    missing = _missing()
    if missing:
        pytest.skip(missing)
    from litefs.mountd import pki
    from litefs.tools.cluster_sim import load_demo_tables

    work = tmp_path_factory.mktemp("hier")
    dbs = pg_database()
    url = next(dbs)
    try:
        with Cluster(work) as c:
            for sn, host in SNS.items():
                c.addresses[sn] = f"{c.net}.{host}"
            image = stage_demo(c)
            imgdir = image.parent
            (imgdir / "kernel").write_bytes(b"kernel\n")
            (imgdir / "initrd-statelite.gz").write_bytes(b"initrd\n")
            load_demo_tables(url, _tables(c, imgdir))
            pki.init_site(work / "ca", server_name="sn", san=[c.address(s) for s in SNS])
            c.ca = work / "ca" / "ca.pem"
            h = Hier(c, url, work, work / "snroot", _keys(work, c), work / "tftpboot")
            h.snroot.mkdir()
            try:
                for sn in SNS:
                    h.disk(sn).mkdir(parents=True)
                    (h.disk(sn) / "nodedata").mkdir()  # nodeset on the SN would export it
                    with open(work / f"{sn}-sshd.log", "ab") as log:
                        h.procs[f"{sn}-sshd"] = subprocess.Popen(
                            ["ip", "netns", "exec", c._netns_for(sn), "unshare", "--mount",
                             "--fork", "sh", "-c", SN_SCRIPT, "sn",
                             str(h.disk(sn)), str(h.snroot),
                             str(work / "ssh" / f"{sn}_sshd_config")],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "LITEFS_CLUSTER": c.tag})
                    h.start_mountd(sn)
                yield h
            finally:
                for key in list(h.procs):
                    h.stop(key)
        # Nodes, SN daemons, namespaces and mounts: nothing outlives the cluster.
        assert c.leftovers() == []
    finally:
        dbs.close()


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


def _transferred(out: str) -> dict[str, int]:
    """``sn1: Number of regular files transferred: N`` lines (rsync --stats) per target."""
    got = {}
    for line in out.splitlines():
        node, _, rest = line.partition(": ")
        if rest.startswith("Number of regular files transferred:"):
            got[node] = int(rest.rsplit(":", 1)[1].replace(",", ""))
    return got


def test_prsync_puts_the_images_on_both_sns_and_a_rerun_sends_only_changes(hier: Hier) -> None:
    mn = hier.c.exports / hier.c.mn_ip
    run = hier.mn(str(BIN / "prsync"), "-o", "--stats", "install", f"sn1,sn2:{hier.snroot}/",
                  cwd=mn)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stderr.strip() == "prsync: 2 target(s), all done"
    assert {line.split(": ")[0] for line in run.stdout.splitlines()
            if line.endswith("s)") and ": done (" in line} == {"sn1", "sn2"}
    want = _tree(mn / "install")
    assert len(want) > 20
    for sn in SNS:
        assert _tree(hier.disk(sn) / "install") == want, sn
    again = hier.mn(str(BIN / "prsync"), "-o", "--stats", "install", f"sn1,sn2:{hier.snroot}/",
                    cwd=mn)
    assert again.returncode == 0 and _transferred(again.stdout) == {"sn1": 0, "sn2": 0}, again.stdout
    issue = mn / DEMO_IMAGE_DIR.lstrip("/") / "rootimg" / "etc" / "issue"
    issue.write_text("demo image v1\n\n")
    try:
        changed = hier.mn(str(BIN / "prsync"), "-o", "--stats", "install",
                          f"sn1,sn2:{hier.snroot}/", cwd=mn)
        assert _transferred(changed.stdout) == {"sn1": 1, "sn2": 1}, changed.stdout
    finally:
        issue.write_text("demo image v1\n")
        hier.mn(str(BIN / "prsync"), "install", f"sn1,sn2:{hier.snroot}/", cwd=mn)


def test_prsync_names_an_unreachable_target_and_finishes_the_others(hier: Hier) -> None:
    mn = hier.c.exports / hier.c.mn_ip
    (mn / "note.txt").write_text("for every SN\n")
    run = hier.mn(str(BIN / "prsync"), "note.txt", f"sn9,sn1:{hier.snroot}/", cwd=mn)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1] == "prsync: 2 target(s), 1 failed: sn9"
    failed = [line for line in run.stdout.splitlines() if line.startswith("sn9: failed (")]
    assert len(failed) == 1 and "ssh: connect to host" in failed[0], run.stdout
    assert "sn1: done (" in run.stdout
    assert (hier.disk("sn1") / "note.txt").read_text() == "for every SN\n"
    bad = hier.mn(str(BIN / "prsync"), "no-such-dir", f"sn1:{hier.snroot}/", cwd=mn)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert "no-such-dir: no such file or directory here" in bad.stderr


def _served_by(node: ClusterNode) -> set[str]:
    """Remote addresses of the node's connections to port 3001 (its watcher's mountd)."""
    out = node.check("cat /proc/net/tcp")
    peers = set()
    for line in out.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[2].endswith(":0BB9") and fields[3] == "01":
            raw = fields[2].split(":")[0]
            peers.add(".".join(str(int(raw[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return peers


def _wait_served(node: ClusterNode, timeout: float = 20) -> set[str]:
    deadline = time.monotonic() + timeout
    while not (peers := _served_by(node)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return peers


def test_nodeset_and_boot_nodes_split_across_both_sns(hier: Hier) -> None:
    mn = hier.c.exports / hier.c.mn_ip
    sync = hier.mn(str(BIN / "prsync"), "install", f"sn1,sn2:{hier.snroot}/", cwd=mn)
    assert sync.returncode == 0, sync.stdout + sync.stderr
    ns = hier.mn(str(BIN / "nodeset"), "--tftpdir", str(hier.tftp), "n01,n03,n04",
                 f"osimage={DEMO_IMAGE}")
    assert ns.returncode == 0, ns.stderr
    sn1, sn2 = hier.ip("sn1"), hier.ip("sn2")
    assert f"root=nfs:{sn1}:{DEMO_IMAGE_DIR}/rootimg:ro STATEMNT={sn1}:/nodedata " \
           f"XCAT={sn1}:3001 NODE=n01 " in hier.cmdline("n01")
    assert f"litefs.pool={sn2}:3001" in hier.cmdline("n01")
    assert f"XCAT={sn2}:3001" in hier.cmdline("n03") and "litefs.pool" not in hier.cmdline("n04")
    n01, n03 = hier.boot("n01"), hier.boot("n03")
    for node, sn in ((n01, sn1), (n03, sn2)):
        node.wait_shell(90)
        log = node.check("cat /.statelite/statelite.log")
        assert f"/nfs/{sn}{DEMO_IMAGE_DIR}/rootimg" in log  # the image from its own SN's copy
        assert f"/nfs/{sn}/nodedata/{node.name}" in log
        assert _wait_served(node) == {sn}
        node.check("echo kept > /var/log/app.log")
        assert (hier.disk("sn1" if sn == sn1 else "sn2") / "nodedata" / node.name / "var/log"
                / "app.log").read_text() == "kept\n"
        assert "failover" not in node.console


def test_an_sn_refuses_a_node_outside_its_pool(hier: Hier) -> None:
    code = ("import ssl, sys; from litefs.initramfs.client import fetch_plan_sync, Backoff; "
            "ctx = ssl.create_default_context(cafile=sys.argv[2]); ctx.check_hostname = False; "
            "fetch_plan_sync(sys.argv[1], ssl_context=ctx, backoff=Backoff(attempts=1))")
    ns = hier.c._netns_for("n04")
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code,
                          f"{hier.ip('sn1')}:3001", str(hier.c.ca)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "n04 is served by sn2 (noderes.servicenode), not by service node sn1" in out.stderr
    ok = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code,
                         f"{hier.ip('sn2')}:3001", str(hier.c.ca)],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr


def test_failover_when_an_sns_mountd_dies_in_a_boot_storm(hier: Hier) -> None:
    storm = ("n02", "n05", "n06", "n03", "n07")
    ns = hier.mn(str(BIN / "nodeset"), "--tftpdir", str(hier.tftp), "n01," + ",".join(storm),
                 f"osimage={DEMO_IMAGE}")
    assert ns.returncode == 0, ns.stderr
    sn1, sn2 = hier.ip("sn1"), hier.ip("sn2")
    running = hier.boot("n01")
    running.wait_shell(90)
    assert _wait_served(running) == {sn1}
    # A boot storm: five nodes power on at once and sn1's mountd dies as they start (a node
    # needs far longer than the kill to reach its plan fetch).
    nodes = [hier.boot(n) for n in storm]
    hier.stop("sn1-mountd", signal.SIGKILL)
    try:
        for node in nodes:
            node.wait_shell(90)
        for node in nodes:
            if POOLS[node.name].startswith("sn1"):
                # The console says sn1 is silent and which SN answered.
                assert f"litefs: mountd at {sn1}:3001 does not answer" in node.console
                assert f"trying {sn2}:3001 (next in the pool)" in node.console
                assert (f"litefs: plan for {node.name} from {sn2}:3001, not from {sn1}:3001 "
                        "(failover)") in node.console
            else:
                assert "failover" not in node.console  # its pool starts with sn2
            assert _wait_served(node) == {sn2}, node.name
        # The running node whose SN went away keeps running: its plan is local.
        assert running.check("echo ok > /tmp/x && cat /tmp/x /etc/issue") == \
            "ok\ndemo image v1\n"
    finally:
        hier.start_mountd("sn1")
    # sn1 is back: its announcements reach n01 again (the watcher reconnected by itself).
    deadline = time.monotonic() + 45
    while "refresh /etc/issue" not in running.initramfs_file("/.litefs/statelite/watch.log"):
        assert time.monotonic() < deadline, running.initramfs_file(
            "/.litefs/statelite/watch.log")
        hier.announce("sn1", "n01", "/etc/issue")
        time.sleep(1)
    for node in nodes:
        node.kill()


def _two_groups(hier: Hier) -> tuple[ClusterNode, ClusterNode]:
    """n01 (served by sn1) and n03 (by sn2), booted and subscribed to their SN."""
    ns = hier.mn(str(BIN / "nodeset"), "--tftpdir", str(hier.tftp), "n01,n03",
                 f"osimage={DEMO_IMAGE}")
    assert ns.returncode == 0, ns.stderr
    n01, n03 = hier.boot("n01"), hier.boot("n03")
    for node, sn in ((n01, "sn1"), (n03, "sn2")):
        node.wait_shell(90)
        assert _wait_served(node) == {hier.ip(sn)}, node.name
    return n01, n03


def _until(what: str, cond: object, timeout: float = 30) -> float:
    """Wait (bounded) until ``cond()`` is true; seconds it took (reported, not asserted:
    tools/bench/bench_hier.py measures the latency)."""
    start = time.monotonic()
    while not cond():  # type: ignore[operator]
        assert time.monotonic() - start < timeout, f"no {what} within {timeout:g} s"
        time.sleep(0.05)
    return time.monotonic() - start


def test_a_table_change_on_the_mn_reaches_the_nodes_of_both_sns(hier: Hier) -> None:
    n01, n03 = _two_groups(hier)
    for node in (n01, n03):  # /etc/issue is an "ro" row: the node cannot write it
        status, out = node.sh("echo mine > /etc/issue")
        assert status != 0 and "Read-only file system" in out, out
    # The admin changes the row on the MN; nobody tells the SN mountds.
    change = hier.mn(str(BIN / "chtab"), "image=demo-images,file=/etc/issue",
                     "litefile.options=tmpfs")
    assert change.returncode == 0, change.stderr
    try:
        took = {node.name: _until(f"plan change on {node.name}",
                                  lambda node=node: node.sh("echo mine > /etc/issue")[0] == 0)
                for node in (n01, n03)}
        print(f"table change -> writable on both SNs' nodes: {took}")
        for node in (n01, n03):
            assert node.check("cat /etc/issue") == "mine\n"
            assert "plan changed" in node.initramfs_file("/.litefs/statelite/watch.log")
        for sn in SNS:
            assert "plan_pushed" in (hier.work / f"{sn}-mountd.log").read_text(), sn
    finally:
        back = hier.mn(str(BIN / "chtab"), "image=demo-images,file=/etc/issue",
                       "litefile.options=ro")
        assert back.returncode == 0, back.stderr
    for node in (n01, n03):  # and back: read-only again, the image's content
        _until(f"plan change back on {node.name}",
               lambda node=node: node.sh("echo again > /etc/issue")[0] != 0)
        assert node.check("cat /etc/issue") == "demo image v1\n"


def test_notify_on_the_mn_reaches_the_nodes_of_both_sns_through_the_database(hier: Hier
                                                                             ) -> None:
    n01, n03 = _two_groups(hier)
    path = f"/etc/notify-{uuid.uuid4().hex[:8]}"
    out = hier.mn(str(BIN / "litefs"), "notify", "--db", hier.url, "n01,n03", path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("n01,n03: 2 node(s) targeted; published on "), out.stdout
    for node in (n01, n03):
        _until(f"refresh on {node.name}", lambda node=node: f"refresh {path}" in
               node.initramfs_file("/.litefs/statelite/watch.log"))
    # $LITEFS_DB (PostgreSQL) without a local admin socket takes the same way.
    if not Path(DEFAULT_SOCKET).exists():
        env_way = hier.mn(str(BIN / "litefs"), "notify", "compute", path + "-2")
        assert env_way.returncode == 0 and "published on" in env_way.stdout, env_way.stderr
        for node in (n01, n03):
            _until(f"second refresh on {node.name}", lambda node=node: f"refresh {path}-2" in
                   node.initramfs_file("/.litefs/statelite/watch.log"))
    # A typo in the target is one line, and nothing is published.
    typo = hier.mn(str(BIN / "litefs"), "notify", "--db", hier.url, "nosuchgroup", path)
    assert typo.returncode == 1 and typo.stderr.count("\n") == 1, typo.stderr
    assert "nosuchgroup" in typo.stderr


def _sn_down(hier: Hier, sn: str) -> Path:
    """sn entirely down: its mountd stopped and its exports folder gone from the NFS map."""
    hier.stop(f"{sn}-mountd")
    away = hier.disk(sn).with_name(hier.ip(sn) + ".down")
    hier.disk(sn).rename(away)
    return away


def _sn_up(hier: Hier, sn: str, away: Path) -> None:
    if away.exists():
        away.rename(hier.disk(sn))
    if f"{sn}-mountd" not in hier.procs:
        hier.start_mountd(sn)


def test_a_node_whose_first_sn_is_down_entirely_boots_from_the_next(hier: Hier) -> None:
    mn = hier.c.exports / hier.c.mn_ip
    sync = hier.mn(str(BIN / "prsync"), "install", f"sn1,sn2:{hier.snroot}/", cwd=mn)
    assert sync.returncode == 0, sync.stdout + sync.stderr
    ns = hier.mn(str(BIN / "nodeset"), "--tftpdir", str(hier.tftp), "n02",
                 f"osimage={DEMO_IMAGE}")
    assert ns.returncode == 0, ns.stderr
    sn1, sn2 = hier.ip("sn1"), hier.ip("sn2")
    away = _sn_down(hier, "sn1")
    try:
        node = hier.boot("n02")
        node.wait_shell(90)
        image = f"{DEMO_IMAGE_DIR}/rootimg"
        assert (f"litefs: image server {sn1} does not export {image} (or does not answer); "
                f"trying {sn2} (next in the pool)") in node.console
        assert f"litefs: image from {sn2}:{image}, not from {sn1} (failover)" in node.console
        assert (f"litefs: persistent store from {sn2}:/nodedata, on the image's server "
                "(failover)") in node.console
        assert f"litefs: asking mountd at {sn2}:3001 first (the image's server)" in node.console
        log = node.check("cat /.statelite/statelite.log")
        assert f"/nfs/{sn2}{image}" in log and f"/nfs/{sn2}/nodedata/n02" in log
        assert _wait_served(node) == {sn2}
        node.check("echo kept > /var/log/down.log")
        assert (hier.disk("sn2") / "nodedata/n02/var/log/down.log").read_text() == "kept\n"
        node.kill()
        # Both SNs of the pool down entirely: the documented fatal line, after bounded rounds.
        away2 = _sn_down(hier, "sn2")
        try:
            dead = hier.boot("n02")
            out = dead.expect("cannot mount the image", 90)
            assert (f"litefs: cannot mount the image {image} from any server of the pool "
                    f"({sn1} {sn2}) after 5 rounds; check the NFS exports on them, then rpower "
                    "n02 boot") in out
            assert out.count("does not export") == 9  # 5 rounds of 2, no "trying" after the last
            dead.proc.wait(timeout=30)
        finally:
            _sn_up(hier, "sn2", away2)
    finally:
        _sn_up(hier, "sn1", away)


def test_an_sn_that_cannot_reach_the_database_says_so_and_the_node_boots_elsewhere(
        hier: Hier) -> None:
    ns = hier.mn(str(BIN / "nodeset"), "--tftpdir", str(hier.tftp), "n02",
                 f"osimage={DEMO_IMAGE}")
    assert ns.returncode == 0, ns.stderr
    sn1, sn2 = hier.ip("sn1"), hier.ip("sn2")
    hier.stop("sn1-mountd")
    # A socket folder with no server in it: the database cannot be reached from sn1.
    cut = f"postgresql+psycopg://postgres@/litefs?host={hier.work / 'no-pg-here'}"
    hier.start_mountd("sn1", url=cut)
    try:
        node = hier.boot("n02")
        node.wait_shell(90)
        line = next(x for x in node.console.splitlines() if x.startswith(
            f"litefs: no plan from {sn1}:3001 ("))
        assert "service node sn1: database unavailable; " in line and "no-pg-here" not in line, line
        assert line.endswith(f"trying {sn2}:3001 (next in the pool)"), line
        assert f"litefs: plan for n02 from {sn2}:3001, not from {sn1}:3001 (failover)" \
            in node.console
        assert _wait_served(node) == {sn2}
        log = (hier.work / "sn1-mountd.log").read_text()
        assert "db_unavailable" in log and "at=start" in log
        node.kill()
    finally:
        hier.stop("sn1-mountd")
        hier.start_mountd("sn1")
