"""The classic boot emulation (rc.statelite in a private mount namespace) on a liteimg'd busybox
image: statelite.log in the script's words, per-option results, litetree priority and quirks,
seed-once persistence across reboots, tmpfs gone at reboot, and the host left untouched."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from litefs import classic as C
from litefs import liteimg as L
from litefs.plan import Plan, Rule, Source
from tests.liteimgutil import build_busybox_image, tree_digest

SRV = "10.0.0.1:/srv/a"
SRV2 = "10.0.0.2:/srv/b"


def plan_of(*specs: tuple[str, str], sources: tuple[str, ...] = ()) -> Plan:
    rules = tuple(sorted((Rule(p.rstrip("/"), o, p.endswith("/")) for p, o in specs), key=lambda r: r.path))
    srcs = tuple(
        Source(str(i + 1), d, d.split(":")[0], d.split(":")[1]) for i, d in enumerate(sources)
    )
    return Plan(image="img", rules=rules, sources=srcs, node="n01")


# --- pure ---------------------------------------------------------------------------------------


def test_litefile_lines_sorted_by_table_path() -> None:
    plan = plan_of(("/etc/ssh/", "tmpfs"), ("/etc/ssh-x", "link"), ("/etc/mtab", "tmpfs,rw"))
    assert C.rc_statelite_litefile_lines(plan) == ["tmpfs,rw /etc/mtab", "link /etc/ssh-x", "tmpfs /etc/ssh/"]


def test_litetree_lines_keep_the_directory_as_written() -> None:
    plan = plan_of(("/etc/motd", "ro"), sources=("cnfs:/gpfs/dallas/", SRV))
    assert C.rc_statelite_litetree_lines(plan) == ["cnfs:/gpfs/dallas/", SRV]


def test_split_entries_children_need_a_listed_directory() -> None:
    lines = ["link /root/", "link,persistent /root/.bashrc", "tmpfs /etc/hosts",
             "tmpfs /etc/hosts/x", "tmpfs /var/", "persistent /var/lib/x/y"]
    parents, children = C.split_entries(lines)
    assert parents == [("link", "/root/"), ("tmpfs", "/etc/hosts"), ("tmpfs", "/etc/hosts/x"),
                       ("tmpfs", "/var/")]
    assert children == [("link,persistent", "/root/.bashrc"), ("persistent", "/var/lib/x/y")]


# --- real boots -----------------------------------------------------------------------------------



@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_busybox_image(tmp_path_factory.mktemp("tpl") / "rootimg")


class Node:
    """An image, two litetree exports and a persistent directory for one emulated node."""

    def __init__(self, template: Path, tmp: Path) -> None:
        self.image = tmp / "rootimg"
        subprocess.run(["cp", "-a", str(template), str(self.image)], check=True)
        self.src = {SRV: tmp / "srv-a", SRV2: tmp / "srv-b"}
        for d in self.src.values():
            d.mkdir()
        self.persistent = tmp / "persistent"
        self.persistent.mkdir()

    def put(self, server: str, rel: str, text: str) -> None:
        p = self.src[server] / rel.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    def boot(self, plan: Plan, ops: list[dict[str, object]] = (), liteimg: bool = True) -> C.ClassicResult:  # type: ignore[assignment]
        if liteimg:
            L.run_liteimg("img", plan, str(self.image))
        cfg = C.ClassicConfig.for_plan(
            plan, str(self.image), {k: str(v) for k, v in self.src.items()},
            persistent=str(self.persistent), ops=list(ops),
            follow=[r.path for r in plan.rules if r.is_link],
        )
        return C.classic_boot(cfg)


@pytest.fixture
def node(template: Path, tmp_path: Path) -> Node:
    return Node(template, tmp_path)


def text(res: C.ClassicResult, path: str) -> str | None:
    rec = res.manifest.get(path)
    return None if rec is None else rec.get("sha256")


def sha(s: str) -> str:
    import hashlib

    return hashlib.sha256(s.encode()).hexdigest()


@pytest.mark.netns
def test_tmpfs_file_and_directory(node: Node) -> None:
    plan = plan_of(("/etc/resolv.conf", "tmpfs"), ("/etc/ssh/", "tmpfs"))
    res = node.boot(plan, [{"op": "write", "path": "/etc/resolv.conf", "data": "nameserver 1.1.1.1\n"},
                           {"op": "write", "path": "/etc/ssh/new", "data": "x"},
                           {"op": "write", "path": "/etc/hostname", "data": "x"}])
    assert res.log == [
        "mkdir -p /sysroot/.statelite/tmpfs/etc",
        "cp -r -a /sysroot/.default/etc/resolv.conf /sysroot/.statelite/tmpfs/etc/resolv.conf",
        "mount --bind /sysroot/.statelite/tmpfs/etc/resolv.conf /sysroot/etc/resolv.conf",
        "cp -r -a /sysroot/.default/etc/ssh/ /sysroot/.statelite/tmpfs/etc/ssh/",
        "mount --bind /sysroot/.statelite/tmpfs/etc/ssh/ /sysroot/etc/ssh",
    ]
    assert res.ops == ["ok", "ok", "EROFS"]
    assert text(res, "/etc/resolv.conf") == sha("nameserver 1.1.1.1\n")
    assert res.manifest["/etc/ssh/ssh_host_rsa_key"]["mode"] == 0o600
    again = node.boot(plan, liteimg=False)  # reboot: tmpfs gone
    assert text(again, "/etc/resolv.conf") == sha("nameserver 10.0.0.1\nsearch cluster\n")
    assert "/etc/ssh/new" not in again.manifest


@pytest.mark.netns
def test_link_family_chain_resolves_into_tmpfs(node: Node) -> None:
    plan = plan_of(("/etc/ntp.conf", "tmpfs,rw"), ("/root/", "link"), ("/root/.bashrc", "link,persistent"))
    res = node.boot(plan, [{"op": "write", "path": "/etc/ntp.conf", "data": "server x\n"},
                           {"op": "append", "path": "/root/.bashrc", "data": "export A=1\n"}])
    assert res.ops == ["ok", "ok"]
    assert res.manifest["/etc/ntp.conf"]["link"] == "../.statelite/tmpfs/etc/ntp.conf"
    assert "mount --bind /sysroot/.statelite/persistent/root/.bashrc /sysroot/.statelite/tmpfs/root/.bashrc" in res.log
    assert (node.persistent / "root/.bashrc").read_text().endswith("export A=1\n")
    again = node.boot(plan, liteimg=False)
    assert text(again, "/etc/ntp.conf") == sha("server 10.0.0.1 iburst\ndriftfile /var/lib/ntp/drift\n")
    assert text(again, "/root/.bashrc") == sha("alias l='ls -l'\nexport A=1\n")


@pytest.mark.netns
def test_persistent_is_seeded_once(node: Node) -> None:
    plan = plan_of(("/var/lib/random-seed", "persistent"), ("/etc/adjtime", "link,persistent"))
    res = node.boot(plan, [{"op": "write", "path": "/var/lib/random-seed", "data": "node\n"}])
    assert "cp -r -a /sysroot/.default/var/lib/random-seed /sysroot/.statelite/persistent/var/lib/random-seed" in res.log
    assert "ln -sf /.statelite/persistent/etc/adjtime /sysroot/.statelite/tmpfs/etc/adjtime" in res.log
    (node.image / ".default/var/lib/random-seed").write_text("image changed\n")
    again = node.boot(plan, liteimg=False)
    assert not any(line.startswith("cp ") for line in again.log)  # seeded already
    assert text(again, "/var/lib/random-seed") == sha("node\n")


@pytest.mark.netns
def test_litetree_first_hit_then_default(node: Node) -> None:
    node.put(SRV2, "/etc/motd", "from b\n")
    node.put(SRV, "/etc/issue", "from a\n")
    node.put(SRV2, "/etc/issue", "from b\n")
    plan = plan_of(("/etc/motd", "ro"), ("/etc/issue", "tmpfs"), ("/etc/hosts", "ro"),
                   sources=(SRV, SRV2))
    res = node.boot(plan, [{"op": "write", "path": "/etc/motd", "data": "x"}])
    assert text(res, "/etc/motd") == sha("from b\n")
    assert text(res, "/etc/issue") == sha("from a\n")
    assert text(res, "/etc/hosts") == sha("127.0.0.1 localhost\n")  # ro falls back to .default
    assert "mout --bind -o ro /sysroot/.default/etc/hosts /sysroot/etc/hosts" in res.log
    assert res.ops == ["EROFS"]


@pytest.mark.netns
def test_con_concatenates_every_hit_and_without_hits_keeps_the_image_file(node: Node) -> None:
    node.put(SRV, "/etc/hosts", "a\n")
    node.put(SRV2, "/etc/hosts", "b\n")
    plan = plan_of(("/etc/hosts", "con"), ("/etc/motd", "con"), sources=(SRV, SRV2))
    res = node.boot(plan, [{"op": "append", "path": "/etc/hosts", "data": "c\n"},
                           {"op": "append", "path": "/etc/motd", "data": "c\n"}])
    assert text(res, "/etc/hosts") == sha("a\nb\nc\n")
    assert res.ops == ["ok", "EROFS"]  # no hit: no bind mount, the read-only original
    assert text(res, "/etc/motd") == sha("welcome to the image\n")


@pytest.mark.netns
def test_parent_directory_hits_stack_later_over_earlier(node: Node) -> None:
    node.put(SRV, "/etc/sysconfig/network", "from a\n")
    node.put(SRV, "/etc/sysconfig/only-a", "a\n")
    node.put(SRV2, "/etc/sysconfig/network", "from b\n")
    plan = plan_of(("/etc/sysconfig/", "tmpfs"), sources=(SRV, SRV2))
    res = node.boot(plan)
    assert text(res, "/etc/sysconfig/network") == sha("from b\n")  # xCAT quirk, reference §3.1
    assert text(res, "/etc/sysconfig/only-a") == sha("a\n")


@pytest.mark.netns
def test_litetree_dir_holding_a_child_is_no_hit_for_the_parent(node: Node) -> None:
    # FindFile sets FOUND=0 and skips such a directory, so the parent comes from .default
    node.put(SRV, "/etc/sysconfig/network", "child from a\n")
    plan = plan_of(("/etc/sysconfig/", "tmpfs"), ("/etc/sysconfig/network", "tmpfs"), sources=(SRV,))
    res = node.boot(plan, [{"op": "write", "path": "/etc/sysconfig/new", "data": "n\n"}])
    assert "cp -r -a /sysroot/.default/etc/sysconfig/ /sysroot/.statelite/tmpfs/etc/sysconfig/" in res.log
    assert "mount --bind /sysroot/.statelite/tmpfs/etc/sysconfig/ /sysroot/etc/sysconfig" in res.log
    assert text(res, "/etc/sysconfig/network") == sha("child from a\n")  # the child's own hit
    assert res.ops == ["ok"]  # the parent is the writable tmpfs copy


@pytest.mark.netns
def test_missing_rc_statelite_is_said_as_prepivot_says_it(node: Node) -> None:
    plan = plan_of(("/etc/ntp.conf", "link"))
    assert not any("init.d/statelite" in line for line in node.boot(plan).console)
    (node.image / "etc/init.d/statelite").unlink()
    res = node.boot(plan, liteimg=False)
    assert res.console[0].startswith("/sysroot/etc/init.d/statelite doesn't exist.  Perhaps you didn't")


@pytest.mark.netns
def test_missing_export_and_missing_default_are_reported(node: Node) -> None:
    plan = plan_of(("/etc/ntp.conf", "tmpfs"), sources=("10.9.9.9:/nowhere",))
    L.run_liteimg("img", plan, str(node.image))
    (node.image / ".default/etc/ntp.conf").unlink()
    cfg = C.ClassicConfig.for_plan(plan, str(node.image), {}, persistent=str(node.persistent))
    res = C.classic_boot(cfg)
    assert "Can't mount 10.9.9.9:/nowhere.  I give up.. " in res.console
    assert "Could not find /etc/ntp.conf in defaults or any other place" in res.console


def mounts_under(top: Path) -> list[str]:
    """Mount points below ``top`` in this process' mount namespace (other tests running in
    parallel may mount elsewhere; only our own paths are compared)."""
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    points = [p.encode().decode("unicode_escape") for p in points]  # \040 etc.
    return sorted(p for p in points if p == str(top) or p.startswith(f"{top}/"))


@pytest.mark.netns
def test_boot_leaves_the_host_untouched(node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = plan_of(("/etc/ssh/", "tmpfs"), ("/etc/ntp.conf", "link"), ("/var/log/", "persistent"))
    L.run_liteimg("img", plan, str(node.image))
    before = tree_digest(node.image)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the emulation's sysroot lands here too
    res = node.boot(plan, [{"op": "write", "path": "/etc/ssh/x", "data": "x"}], liteimg=False)
    assert res.ops == ["ok"] and any(line.startswith("mount --bind") for line in res.log)  # it did mount
    assert tree_digest(node.image) == before
    assert mounts_under(tmp_path) == []
    assert not list(tmp_path.glob("classic-*"))  # its scratch directory is gone too


@pytest.mark.netns
def test_classic_boot_command(node: Node, tmp_path: Path) -> None:
    node.put(SRV, "/etc/motd", "from a\n")
    plan = plan_of(("/etc/motd", "ro"), ("/etc/ntp.conf", "link"), sources=(SRV,))
    L.run_liteimg("img", plan, str(node.image))
    pf = tmp_path / "plan.json"
    pf.write_text(plan.to_json())
    r = subprocess.run(
        [sys.executable, "-m", "litefs.tools.litefs_cli", "classic-boot", "--plan", str(pf),
         "--rootimg", str(node.image), "--source", f"{SRV}={node.src[SRV]}",
         "--persistent", str(node.persistent), "--tree"],
        capture_output=True, text=True, check=True,
    )
    assert "mout --bind -o ro /sysroot/.statelite/mnt/10.0.0.1/srv/a/etc/motd /sysroot/etc/motd" in r.stdout
    assert any(line.endswith("/etc/ntp.conf (via ../.statelite/tmpfs/etc/ntp.conf)") for line in r.stdout.splitlines())
    r = subprocess.run(
        [sys.executable, "-m", "litefs.tools.litefs_cli", "classic-boot", "--plan", str(pf),
         "--rootimg", str(node.image), "--json"], capture_output=True, text=True, check=True,
    )
    out = json.loads(r.stdout)
    assert out["tree"]["/etc/motd"]["kind"] == "file"
    assert "Can't mount 10.0.0.1:/srv/a.  I give up.. " in out["console"]


@pytest.mark.netns
def test_link_ro_link_con_and_localdisk(node: Node, tmp_path: Path) -> None:
    node.put(SRV, "/etc/issue", "from a\n")
    node.put(SRV, "/etc/yp.conf", "a\n")
    node.put(SRV2, "/etc/yp.conf", "b\n")
    plan = plan_of(("/etc/issue", "link,ro"), ("/etc/yp.conf", "link,con"), ("/var/adm/", "localdisk"),
                   sources=(SRV, SRV2))
    L.run_liteimg("img", plan, str(node.image))
    local = tmp_path / "local"
    local.mkdir()
    cfg = C.ClassicConfig.for_plan(
        plan, str(node.image), {k: str(v) for k, v in node.src.items()}, persistent=str(node.persistent),
        localdisk=str(local), follow=["/etc/issue", "/etc/yp.conf"],
        ops=[{"op": "write", "path": "/etc/issue", "data": "x"}, {"op": "write", "path": "/var/adm/log", "data": "l\n"}],
    )
    res = C.classic_boot(cfg)
    assert "ln -sf /.statelite/mnt/10.0.0.1/srv/a/etc/issue /sysroot/.statelite/tmpfs/etc/issue" in res.log
    assert res.log.count("cat /sysroot/.statelite/mnt/10.0.0.1/srv/a/etc/yp.conf >>/sysroot/.statelite/tmpfs/etc/yp.conf") == 1
    assert "cp -r -a /sysroot/.default/var/adm/ /sysroot/.sllocal/localmnt/var" in res.log
    assert "mount --bind /sysroot/.sllocal/localmnt/var/adm/ /sysroot/var/adm" in res.log
    assert text(res, "/etc/issue") == sha("from a\n")
    assert text(res, "/etc/yp.conf") == sha("a\nb\n")
    assert res.ops == ["EROFS", "ok"]
    assert (local / "var/adm/log").read_text() == "l\n"  # kept on the local disk


@pytest.mark.netns
def test_classic_boot_of_a_node_from_the_tables(template: Path, tmp_path: Path) -> None:
    from litefs import db
    from tests.planutil import load

    rootimg = tmp_path / "install/netboot/rhels9/x86_64/cn/rootimg"
    rootimg.parent.mkdir(parents=True)
    subprocess.run(["cp", "-a", str(template), str(rootimg)], check=True)
    url = f"sqlite:///{tmp_path}/t.db"
    engine = db.open_engine(url)
    load(engine, {
        "site": [{"key": "installdir", "value": f"{tmp_path}/install"}],
        "nodelist": [{"node": "n01", "groups": "compute"}],
        "nodetype": [{"node": "compute", "os": "rhels9", "arch": "x86_64", "profile": "cn", "provmethod": "img"}],
        "osimage": [{"imagename": "img", "provmethod": "statelite", "osvers": "rhels9", "osarch": "x86_64",
                     "profile": "cn"}],
        "litefile": [{"image": "ALL", "file": "/etc/ntp.conf", "options": None}],
    })
    engine.dispose()
    cli = [sys.executable, "-m", "litefs.tools.litefs_cli"]
    subprocess.run([sys.executable, "-m", "litefs.tools.liteimg_cmd", "--db", url, "img"], check=True,
                   capture_output=True)
    r = subprocess.run([*cli, "classic-boot", "n01", "--db", url], capture_output=True, text=True, check=True)
    assert r.stdout.splitlines() == [
        "mkdir -p /sysroot/.statelite/tmpfs/etc",
        "cp -r -a /sysroot/.default/etc/ntp.conf /sysroot/.statelite/tmpfs/etc/ntp.conf",
    ]
    assert "console: Could not find /etc/mtab in defaults or any other place" in r.stderr
