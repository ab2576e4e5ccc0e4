"""Security item 9: node names are checked wherever they enter, tried for real.

The boot hook runs under ``sh`` with a hostile ``NODE=`` in a private mount namespace (its own
/tmp) and must stop before it creates any path; ``fetchplan`` refuses the name before writing;
``litefs ca issue node`` refuses to issue for it and mountd ignores a certificate whose CN is
not a node name; a noderange never yields a bad name, even from a nodelist row written before
names were checked; ``nodeset`` writes nothing outside ``--tftpdir``, whatever the name, image
or a symlink planted in the tftpdir says.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from litefs.initramfs import client
from litefs.mountd import pki
from sqlalchemy import Engine, insert

from litefs import db
from litefs.errors import MountdError, NoderangeError
from litefs.noderange import Universe, expand
from litefs.schema import table
from tests.dbutil import load_tables
from tests.hostile.test_mountd_attacks import BIN, NODES
from tests.mountdutil import client_ssl, cluster_tables, free_port, mountd_process
from tests.test_nodeset_cmd import IMAGE, _setup

HOOK = Path(__file__).parents[2] / "initramfs" / "litefs-boot.sh"
HOSTILE_NODES = ["../n02", "x/../n02", ".n01", "-n01", "n01;reboot", "n$(id)", "a..b", "n01/"]


def boot_hook_in_private_tmp(node: str) -> tuple[int, str, list[str]]:
    """Run the whole hook (as a non-PID-1 ``sh``) with ``NODE=node`` on its command line;
    return its exit code, stderr and every path that exists under its /tmp afterwards."""
    # The hook is opened before the private /tmp hides it (a checkout may live under /tmp)
    # and run through its fd.
    script = (
        f'exec 3<"{HOOK}" && mount -t tmpfs hostile /tmp && cd /tmp && '
        "printf '%s\\n' \"root=nfs:10.0.0.1:/install/rootimg NODE=$HOSTILE XCAT=127.0.0.1:3001\" >/tmp/cmdline && "
        f'LITEFS_CMDLINE=/tmp/cmdline LITEFS_LAYERS=/tmp/layers NEWROOT=/tmp/newroot sh /proc/self/fd/3 </dev/null; '
        "echo rc=$? >&2; find /tmp -mindepth 1 | sort"
    )
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                       capture_output=True, text=True, timeout=60,
                       env={"PATH": os.environ["PATH"], "HOSTILE": node})  # fmt: skip
    rc = int(r.stderr.rsplit("rc=", 1)[1].split()[0])
    return rc, r.stderr, r.stdout.split()


@pytest.mark.netns
@pytest.mark.parametrize("node", HOSTILE_NODES)
def test_boot_hook_refuses_a_hostile_node_before_touching_a_path(node: str) -> None:
    rc, err, paths = boot_hook_in_private_tmp(node)
    assert rc == 1, err
    assert "is not a valid node name" in err and err.count("litefs:") == 1, err
    # Only the command line we wrote and the hook's early log: no layers, no newroot.
    assert paths == ["/tmp/cmdline", "/tmp/litefs-early.log"], paths


@pytest.mark.netns
def test_boot_hook_goes_on_with_a_good_node() -> None:
    """The control: a valid NODE passes the check and the hook starts mounting (the image
    mount then fails here: there is no NFS server), so the refusal above is the check's."""
    rc, err, paths = boot_hook_in_private_tmp("n01")
    assert "booting n01" in err and "not a valid node name" not in err, err
    assert "/tmp/layers" in paths and rc == 1


def test_fetchplan_refuses_a_hostile_node(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text('{"plan_version": 1, "image": "img", "rules": [], "node": "n01"}')
    out = tmp_path / "out"
    out.mkdir()
    for node in HOSTILE_NODES:
        r = subprocess.run([sys.executable, "-m", "litefs.initramfs.fetchplan", f"--node={node}",
                            "--out", str(out), "--plan-file", str(plan)],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
        assert r.returncode == 1 and "node name" in r.stderr and len(r.stderr.splitlines()) == 1, r
        assert list(out.iterdir()) == []
    ok = subprocess.run([sys.executable, "-m", "litefs.initramfs.fetchplan", "--node", "n01",
                         "--out", str(out), "--plan-file", str(plan)], capture_output=True, text=True)  # fmt: skip
    assert ok.returncode == 0 and (out / "plan.json").exists(), ok.stderr


def test_ca_refuses_a_node_certificate_for_a_bad_name(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    subprocess.run([BIN / "litefs", "ca", "init", "--dir", ca], check=True, capture_output=True)
    before = sorted(p.name for p in ca.iterdir())
    for name in ("n 1", "n01;x", "../n02", "a..b", "-n"):
        r = subprocess.run([BIN / "litefs", "ca", "issue", "node", name, "--dir", ca],
                           capture_output=True, text=True)  # fmt: skip
        assert r.returncode in (1, 2) and len(r.stderr.strip().splitlines()) == 1, r
        assert sorted(p.name for p in ca.iterdir()) == before


def test_mountd_ignores_a_certificate_whose_cn_is_not_a_node_name(tmp_path: Path) -> None:
    """A nodelist row written before names were checked ("a..b", inserted here with plain SQL)
    and a certificate for it from another tool: mountd must not identify anyone by it."""
    url = f"sqlite:///{tmp_path}/litefs.db"
    eng: Engine = db.open_engine(url)
    load_tables(eng, cluster_tables(NODES))
    with eng.begin() as conn:
        conn.execute(insert(table("nodelist")).values(node="a..b", groups="compute,all"))
    eng.dispose()
    ca = tmp_path / "ca"
    subprocess.run([BIN / "litefs", "ca", "init", "--dir", ca, "--san", "127.0.0.1"],
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run([BIN / "litefs", "ca", "issue", "node", "n01", "--dir", ca], check=True, capture_output=True)
    pki._sign(ca, "node", "a..b", out=ca / "forged", san=None)
    port = free_port()
    with mountd_process(url, port, "--ca-dir", str(ca), "--socket", str(tmp_path / "s.sock"),
                        log_path=tmp_path / "mountd.log") as proc:  # fmt: skip

        def fetch(who: str) -> client.Plan:
            return client.fetch_plan_sync(f"127.0.0.1:{port}", ssl_context=client_ssl(ca, who),
                                          source_address="127.0.0.99", timeout=10,
                                          backoff=client.Backoff(base=0.05, cap=0.2, attempts=1))  # fmt: skip

        assert fetch("n01").node == "n01"  # the control: a good certificate identifies its node
        with pytest.raises(MountdError):
            fetch("forged")
        assert proc.poll() is None


def test_noderange_never_yields_a_bad_name() -> None:
    u = Universe(nodes=["n01", "a..b", "n02"], groups={"n01": ["compute"], "a..b": ["compute"]})
    assert expand("n01,n02", u) == ["n01", "n02"]
    for text in ("compute", "a..b", "/a.*", "n01,a..b"):
        with pytest.raises(NoderangeError, match="bad nodelist entry"):
            expand(text, u)


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p).encode())
        if p.is_file() and not p.is_symlink():
            h.update(p.read_bytes())
    return h.hexdigest()


def _nodeset(engine: Engine, tftp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    url = engine.url.render_as_string(hide_password=False)
    return subprocess.run([BIN / "nodeset", "--db", url, "--tftpdir", str(tftp), *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_nodeset_writes_nothing_outside_the_tftpdir(engine: Engine, tmp_path: Path) -> None:
    _setup(engine, tmp_path)
    tftp = tmp_path / "site" / "tftp"
    tftp.mkdir(parents=True)
    outside = tmp_path / "site" / "outside"
    outside.mkdir()
    # An image whose name climbs out of <tftpdir>/xcat/osimage/, and a nodelist row written
    # before names were checked.
    evil = "../../../outside/img"
    with engine.begin() as conn:
        conn.execute(insert(table("nodelist")).values(node="../outside/n9", groups="compute,all"))
        for t in ("osimage", "linuximage"):
            row = dict(conn.execute(table(t).select().where(table(t).c.imagename == IMAGE)).one()._mapping)
            conn.execute(insert(table(t)).values(**{**row, "imagename": evil}))
    before = _tree_digest(tmp_path / "site")
    for args in (("../outside/n9", "osimage"), ("n01", f"osimage={evil}")):
        r = _nodeset(engine, tftp, *args)
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r
        assert _tree_digest(tmp_path / "site") == before, args
    # A symlink planted in the tftpdir pointing outside it.
    (tftp / "pxelinux.cfg").symlink_to(outside)
    before = _tree_digest(tmp_path / "site")
    r = _nodeset(engine, tftp, "n01", f"osimage={IMAGE}")
    assert r.returncode == 1 and "outside" in r.stderr, r
    assert list(outside.iterdir()) == [] and _tree_digest(tmp_path / "site") == before
    # The control: without the planted link the same command writes its files, inside.
    (tftp / "pxelinux.cfg").unlink()
    assert _nodeset(engine, tftp, "n01", f"osimage={IMAGE}").returncode == 0
    assert list(outside.iterdir()) == [] and any(tftp.rglob("*"))
