"""Equivalence proof: a stock xCAT node (classic boot emulation over the liteimg'd image) and a
litefs node (the FUSE view over the original image) on the same plan see the same tree.

For every case of the matrix both nodes boot, the effective trees are compared path by path
(names, types, modes, owners, sizes, contents; symlinks as a process on the node resolves
them), the same writes and deletes are applied on both (their outcomes compared too), both
reboot (persistent kept, tmpfs gone) and the trees are compared again. Every intentional
difference is in :data:`DIFFERENCES` below -- the one place -- with its reason, and each one
must be exercised by some case so the list cannot go stale.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from litefs import classic as C
from litefs import liteimg as L
from litefs.options import VALID_OPTIONS, Family
from litefs.plan import Plan, Rule, Source
from litefs.resolve import resolve
from litefs.validate import validate_rules
from tests.classicwalk import node_view
from tests.liteimgutil import build_busybox_image

fsutil = pytest.importorskip("tests.fsutil", reason="the FUSE view (tests/fsutil.py) is not there")

SRV1, SRV2 = "10.0.0.1:/srv/one", "10.0.0.2:/srv/two"
EXCLUDE = ("/.statelite", "/.default", "/.sllocal")
Rec = dict[str, Any] | None


@dataclass
class Case:
    name: str
    rules: list[tuple[str, str]]
    sources: list[str] = field(default_factory=list)  # litetree directories, priority order
    files: dict[str, str] = field(default_factory=dict)  # "<source index>:<path>" or "image:<path>"
    ops: list[dict[str, Any]] = field(default_factory=list)
    between: dict[str, str] = field(default_factory=dict)  # image changes before the reboot
    node: str | None = None  # plan this node from real tables (litetree variables), else rules
    table: str | None = None  # plan the image from this sample litefile table (litefs/data)

    def make_plan(self, tmp: Path) -> Plan:
        if self.node is not None:
            return planned_node(tmp, self.node)
        if self.table is not None:
            return planned_table(tmp, self.table)
        rules = sorted((Rule(p.rstrip("/"), o, p.endswith("/")) for p, o in self.rules), key=lambda r: r.path)
        srcs = []
        for i, d in enumerate(self.sources):
            server, _, path = d.partition(":") if ":" in d else ("", "", d)
            srcs.append(Source(str(i + 1), d, server or None, path))
        return Plan(image="img", rules=tuple(rules), sources=tuple(srcs), node="n01")


# --- the one place: intentional differences -------------------------------------------------------


def _under_rule(plan: Plan, path: str, pred: Callable[[Rule], bool]) -> Rule | None:
    for r in plan.rules:
        if (path == r.path or path.startswith(r.path + "/")) and pred(r):
            return r
    return None


def _rule(plan: Plan, path: str, pred: Callable[[Rule], bool]) -> Rule | None:
    r = plan.rule_for(path)
    return r if r is not None and pred(r) else None


def _copied_parent(plan: Plan, path: str) -> Rule | None:
    """The listed directory above ``path`` that rc.statelite copies into the tmpfs, if any."""
    return _under_rule(plan, os.path.dirname(path), lambda r: r.is_dir and r.option in
                       ("tmpfs", "rw", "tempfs", "link", "tmpfs,rw"))


def _source_dir_differs(env: Env, rule: Rule, path: str) -> bool:
    """A served source has ``rule``'s directory (non-empty) and that makes ``path`` differ:
    rc.statelite copies such a directory for the parent, stacking later sources over earlier
    ones, so anything below may differ; a source holding one of the directory's listed direct
    children is skipped (§5.2), so then the directory comes from .default and only its own
    attributes differ (litefs takes them from the first layer that has it)."""
    kids = [r.path for r in env.plan.rules if os.path.dirname(r.path) == rule.path]
    for d in env.served_sources():
        here = d / rule.path.lstrip("/")
        if not (here.is_dir() and any(here.iterdir())):
            continue
        if not any((d / k.lstrip("/")).exists() for k in kids) or path == rule.path:
            return True
    return False


def _without(rec: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k not in keys}


@dataclass(frozen=True)
class Difference:
    name: str
    reason: str
    explains: Callable[[Env, str, Rec, Rec], bool]
    #: the README "Fixed, deliberately" item this stems from (its first words), "" when the
    #: difference follows from litefs' design (DESIGN table) rather than a fixed xCAT quirk
    fixed: str = ""


DIFFERENCES: tuple[Difference, ...] = (
    Difference(
        "link family shows the file, not the chain",
        "DESIGN: litefs presents a link-family path as a real file or directory; a stock node "
        "shows a symlink into /.statelite/tmpfs. Compared through the chain (walk_tree follow=), "
        "so only the 'link' detail of the classic record differs and is dropped before comparing.",
        lambda env, p, c, v: False,  # applied by normalise(); listed here so it is documented once
    ),
    Difference(
        "scaffolding",
        "/.statelite differs by design (litefs keeps its own layout there), /.default and "
        "/.sllocal are liteimg/genimage scaffolding that only the classic image has; all excluded "
        "from both walks (EXCLUDE).",
        lambda env, p, c, v: False,
    ),
    Difference(
        "litetree directories are unions",
        "DESIGN Fixed: litefs unions a listed directory over the sources and the image, first "
        "layer wins per name. rc.statelite copies every non-empty hit of a parent directory, later "
        "hits over earlier ones, skips a hit that holds a listed child (then the directory, "
        "its mode included, comes from .default), and leaves the image's own directory out "
        "(reference §3.1).",
        lambda env, p, c, v: _under_rule(env.plan, p, lambda r: r.is_dir and _source_dir_differs(env, r, p)) is not None,
        fixed="litetree lookup stops at the first hit for files and unions directories",
    ),
    Difference(
        "persistent child seeded with its parent",
        "DESIGN table: a persistent path starts from its first source hit. rc.statelite seeds a "
        "persistent parent directory first (from .default when a source holds its child), and "
        "that copy already has the child, so the child's seed-once copy from the source never "
        "happens: a stock node keeps the image's child.",
        lambda env, p, c, v: _rule(env.plan, p, lambda r: r.family.value == "persistent") is not None
        and _under_rule(env.plan, os.path.dirname(p), lambda r: r.is_dir and r.family.value == "persistent")
        is not None and any((d / p.lstrip("/")).exists() for d in env.served_sources()),
    ),
    Difference(
        "no placeholders",
        "liteimg creates an empty stand-in in the image for a listed path nobody has, so a stock "
        "node sees an empty file or directory; litefs invents nothing: the path is absent until "
        "the node creates it.",
        lambda env, p, c, v: v is None and c is not None and p in env.placeholders,
    ),
    Difference(
        "con without a hit is writable",
        "DESIGN table: a con file with no source hit is the image's file in the volatile layer, "
        "read-write; rc.statelite does no bind mount then, so the node keeps the read-only "
        "original and a write fails with EROFS.",
        lambda env, p, c, v: _rule(env.plan, p, lambda r: r.option == "con") is not None
        and _copied_parent(env.plan, p) is None
        and not any((d / p.lstrip("/")).exists() for d in env.served_sources()),
    ),
    Difference(
        "con child is not appended twice",
        "rc.statelite copies a tmpfs/link parent directory into the tmpfs first, then 'cat >>' "
        "appends the con child's sources to that copy, so the image's content appears twice; "
        "litefs gives the concatenation of the sources (or the image's file) once.",
        lambda env, p, c, v: _rule(env.plan, p, lambda r: r.family.value == "con") is not None
        and _copied_parent(env.plan, p) is not None,
    ),
    Difference(
        "con file keeps its owner and mode",
        "rc.statelite builds a con file anew with 'cat >>' in the initramfs, so on a stock node "
        "it is always root's, mode 0644, whoever owned the image's file; litefs shows the "
        "concatenation with the owner and mode of the file it starts from (a user's file stays "
        "the user's).",
        lambda env, p, c, v: _rule(env.plan, p, lambda r: r.family.value == "con") is not None
        and isinstance(c, dict) and isinstance(v, dict) and (c.get("uid"), c.get("gid"), c.get("mode")) == (0, 0, 0o644)
        and _without(c, "uid", "gid", "mode") == _without(v, "uid", "gid", "mode"),
    ),
    Difference(
        "a listed path can be deleted",
        "rc.statelite bind-mounts bind-family entries (tmpfs, rw, persistent, ro, con, "
        "localdisk) over the image path, and a mount point cannot be removed (EBUSY); a link "
        "entry's path is a symlink in the read-only image (EROFS). litefs records the deletion "
        "as a whiteout in the entry's layer (gone until reboot for tmpfs, for good for "
        "persistent).",
        lambda env, p, c, v: env.plan.rule_for(p) is not None
        and (v is None or v == "ok") and any(o["op"] in ("unlink", "rmdir") and o["path"] == p
                                             for o in env.case.ops),
    ),
    Difference(
        "missing name in a read-only place",
        "deleting a name that does not exist where the node may not write: a stock node's root "
        "mount is read-only, so the kernel says EROFS before it looks the name up; litefs is one "
        "read-write mount that refuses per path, so the lookup comes first and says ENOENT.",
        lambda env, p, c, v: (c, v) == ("EROFS", "ENOENT"),
    ),
    Difference(
        "lazy persistent seeding",
        "DESIGN Fixed: a persistent path follows the image (or source) until the node first "
        "writes it; a stock node copied it at first boot and never looks at the image again.",
        lambda env, p, c, v: env.rebooted and p in env.changed_between
        and _under_rule(env.plan, p, lambda r: r.family.value in ("persistent", "localdisk")) is not None,
        fixed="persistent seeding is lazy",
    ),
    Difference(
        "server-less litetree directories",
        "DESIGN Fixed: a litetree directory without a server is a node-local path to litefs; "
        "rc.statelite never mounts it, so it never matches.",
        lambda env, p, c, v: any((d / p.lstrip("/")).exists() for d in env.local_sources()),
        fixed="litetree `mntopts` are honoured; a server-less litetree directory is a node-local path",
    ),
)


#: README "Fixed, deliberately" items that cannot show up as a tree difference here: both nodes
#: get the same plan (tables, planner, validation) and liteimg runs before either boots.
NOT_TREE_FIXES = {
    "image-group rows match": "plan side: both nodes are given the same plan",
    "a variable that expands empty": "plan side: the planner refuses the plan for both",
    "`#CMD=…#` in litetree/statemnt": "plan side: the planner refuses the plan for both",
    "the \"link child under non-link parent\"": "validation: such a table never reaches a boot",
    "a STATEMNT without a server": "nodeset side: refused before either node boots",
    "re-running liteimg never empties": "image side: tested by tests/test_liteimg_layout.py",
}


def normalise(rec: Rec) -> Rec:
    if rec is None:
        return None
    return {k: v for k, v in rec.items() if k != "link"}


# --- the two nodes ------------------------------------------------------------------------------


class Env:
    """One case: a classic node and a litefs node on the same plan, each with its layers."""

    def __init__(self, case: Case, template: Path, tmp: Path) -> None:
        self.case = case
        self.plan = case.make_plan(tmp)
        self.tmp = tmp
        self.rebooted = False
        self.changed_between: set[str] = set()
        self.orig = tmp / "orig"
        subprocess.run(["cp", "-a", str(template), str(self.orig)], check=True)
        self.src_dirs = [tmp / f"src{i}" for i in range(len(self.plan.sources))]
        for d in self.src_dirs:
            d.mkdir()
        for key, content in case.files.items():
            where, _, path = key.partition(":")
            base = self.orig if where == "image" else self.src_dirs[int(where)]
            _put(base, path, content)
        self.classic_img = tmp / "classic"
        subprocess.run(["cp", "-a", str(self.orig), str(self.classic_img)], check=True)
        state = L.read_state(str(self.classic_img))
        lp = L.plan_liteimg("img", L.entries_from_plan(self.plan), L.DirTree(str(self.classic_img)), state)
        L.apply(str(self.classic_img), lp.actions)
        self.placeholders = set(lp.state.created)
        self.c_pers, self.c_local = tmp / "c-pers", tmp / "c-local"
        self.c_pers.mkdir()
        self.c_local.mkdir()
        self.layers = fsutil.Layers(root=tmp / "lf", image=self.orig, tmpfs=tmp / "lf/tmpfs",
                                    persistent=tmp / "lf/pers", localdisk=tmp / "lf/local",
                                    sources=list(self.src_dirs))
        # The third node: litefs on the very image liteimg prepared for the stock node.
        self.lite_layers = fsutil.Layers(root=tmp / "li", image=self.classic_img, tmpfs=tmp / "li/tmpfs",
                                         persistent=tmp / "li/pers", localdisk=tmp / "li/local",
                                         sources=list(self.src_dirs))
        for lay in (self.layers, self.lite_layers):
            for d in (lay.root, lay.tmpfs, lay.persistent, lay.localdisk):
                d.mkdir(exist_ok=True)

    def local_sources(self) -> list[Path]:
        """Source directories without a server (litefs reads them; a stock node never does)."""
        return [d for d, s in zip(self.src_dirs, self.plan.sources, strict=True) if not s.server]

    def served_sources(self) -> list[Path]:
        """Source directories a stock node mounts (those with a server)."""
        return [d for d, s in zip(self.src_dirs, self.plan.sources, strict=True) if s.server]

    def classic(self, ops: list[dict[str, Any]]) -> C.ClassicResult:
        litetree = C.rc_statelite_litetree_lines(self.plan)
        served = {s.directory: str(d) for d, s in zip(self.src_dirs, self.plan.sources, strict=True) if s.server}
        cfg = C.ClassicConfig(
            image=str(self.classic_img), litefile=C.rc_statelite_litefile_lines(self.plan), litetree=litetree,
            sources=served, persistent=str(self.c_pers), localdisk=str(self.c_local), ops=ops,
            follow=[r.path for r in self.plan.rules if r.is_link], exclude=list(EXCLUDE),
        )
        return C.classic_boot(cfg)

    def litefs(self, ops: list[dict[str, Any]], name: str, liteimgd: bool = False) -> C.ClassicResult:
        layers = self.lite_layers if liteimgd else self.layers
        m = fsutil.LitefsMount(layers, self.plan, self.tmp / name, [], False)
        m.start()
        try:
            follow = [r.path for r in self.plan.rules if r.is_link]
            return node_view(str(m.path), ops, follow=follow, exclude=EXCLUDE)
        finally:
            m.stop()
            m.check_log()

    def reboot(self) -> None:
        self.rebooted = True
        self.layers.fresh_tmpfs()
        self.lite_layers.fresh_tmpfs()
        for key, content in self.case.between.items():
            _put(self.orig, key, content)
            _put(self.classic_img / ".default", key, content)  # where a stock node's image has it
            # and in place where liteimg left the original in place (bind family), as an
            # admin's edit of the image would be: the litefs node on this image reads it there
            inplace = self.classic_img / key.lstrip("/")
            if not any(p.is_symlink() for p in (inplace, *inplace.parents)):
                _put(self.classic_img, key, content)
            self.changed_between.add(key)


def _put(base: Path, rel: str, content: str) -> None:
    p = base / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(content)


def compare(env: Env, classic: C.ClassicResult, view: C.ClassicResult, used: set[str]) -> list[str]:
    problems = []
    for path in sorted(set(classic.manifest) | set(view.manifest)):
        c, v = normalise(classic.manifest.get(path)), normalise(view.manifest.get(path))
        if c == v:
            continue
        why = [d.name for d in DIFFERENCES if d.explains(env, path, c, v)]
        if why:
            used.update(why)
        else:
            problems.append(f"{path}: classic {c} != litefs {v}")
    for i, (co, vo) in enumerate(zip(classic.ops, view.ops, strict=True)):
        if co != vo:
            op = env.case.ops[i]
            why = [d.name for d in DIFFERENCES if d.explains(env, op["path"], co, vo)]
            if why:
                used.update(why)
            else:
                problems.append(f"op {op}: classic {co} != litefs {vo}")
    return problems


# --- the matrix -----------------------------------------------------------------------------------

FILE_OPTIONS = ["tmpfs", "rw", "persistent", "ro", "con", "link", "tmpfs,rw", "link,ro",
                "link,persistent", "link,con", "localdisk"]
DIR_OPTIONS = ["tmpfs", "rw", "persistent", "ro", "link", "tmpfs,rw", "link,ro", "link,persistent", "localdisk"]


def _file_case() -> Case:
    rules, files, ops = [], {}, []
    for i, opt in enumerate(FILE_OPTIONS):
        p = f"/data/f{i}.conf"
        rules.append((p, opt))
        files[f"image:{p}"] = f"image {opt}\n"
        if i % 3 == 0:
            files[f"0:{p}"] = f"source one {opt}\n"
        if i % 2 == 0:
            files[f"1:{p}"] = f"source two {opt}\n"
        ops.append({"op": "append", "path": p, "data": "node wrote\n"})
    return Case("every option on a file", rules, [SRV1, SRV2], files, ops)


def _dir_case() -> Case:
    rules, files, ops = [], {}, []
    for i, opt in enumerate(DIR_OPTIONS):
        d = f"/data/d{i}"
        rules.append((d + "/", opt))
        files[f"image:{d}/a"] = f"a {opt}\n"
        files[f"image:{d}/sub/b"] = f"b {opt}\n"
        ops += [{"op": "write", "path": f"{d}/new", "data": "new\n"},
                {"op": "unlink", "path": f"{d}/a"},
                {"op": "write", "path": f"{d}/sub/b", "data": "changed\n"}]
    return Case("every option on a directory", rules, [SRV1], files, ops)


PARENT_CHILD = [("tmpfs", "tmpfs"), ("tmpfs", "persistent"), ("tmpfs", "ro"), ("tmpfs", "con"),
                ("persistent", "persistent"), ("link", "link"), ("link", "link,persistent"),
                ("link", "link,con"), ("link,persistent", "link,persistent")]


def _parent_child_case(hits: bool) -> Case:
    """Every parent/child pair validation allows; with ``hits`` the child also has a litetree
    copy, which makes rc.statelite skip that litetree directory for the parent."""
    rules, files, ops = [], {}, []
    for i, (po, co) in enumerate(PARENT_CHILD):
        d = f"/pc/p{i}"
        rules += [(d + "/", po), (f"{d}/child.conf", co), (f"{d}/sub/", co)]
        files[f"image:{d}/child.conf"] = "child image\n"
        files[f"image:{d}/other"] = "other\n"
        files[f"image:{d}/sub/x"] = "x\n"
        if hits:
            files[f"0:{d}/child.conf"] = "child from source\n"
        ops += [{"op": "append", "path": f"{d}/child.conf", "data": "w\n"},
                {"op": "write", "path": f"{d}/other", "data": "o\n"},
                {"op": "write", "path": f"{d}/sub/y", "data": "y\n"}]
    name = "parent/child pairs, child in litetree" if hits else "parent/child pairs"
    return Case(name, rules, [SRV1] if hits else [], files, ops)


def planned_node(tmp: Path, node: str) -> Plan:
    """``node``'s plan from real tables: litetree ``$node`` and ``$nodetype.profile`` variables."""
    from litefs import db
    from litefs.planner import node_plan
    from tests.planutil import load

    engine = db.open_engine(f"sqlite:///{tmp}/tables.db")
    try:
        load(engine, {
            "nodelist": [{"node": "n01", "groups": "compute"}, {"node": "n02", "groups": "compute,gpu"}],
            "nodetype": [{"node": "compute", "os": "rhels9", "arch": "x86_64", "profile": "cn",
                          "provmethod": "img"},
                         {"node": "n02", "profile": "gpu"}],
            "osimage": [{"imagename": "img", "provmethod": "statelite", "osvers": "rhels9",
                         "osarch": "x86_64", "profile": "cn"}],
            "litefile": [{"image": "ALL", "file": "/etc/motd", "options": "tmpfs"},
                         {"image": "ALL", "file": "/etc/issue", "options": "link,ro"},
                         {"image": "img", "file": "/etc/ssh/", "options": "persistent"}],
            "litetree": [{"priority": "1", "directory": "10.0.0.1:/srv/$node"},
                         {"priority": "2", "directory": "10.0.0.1:/srv/$nodetype.profile"}],
        })
        return node_plan(engine, node)
    finally:
        engine.dispose()


def planned_table(tmp: Path, table: str) -> Plan:
    """The image plan of one of the cookbook's sample litefile tables, through the planner."""
    from importlib.resources import files

    from litefs import db
    from litefs.planner import image_plan
    from tests.planutil import load

    engine = db.open_engine(f"sqlite:///{tmp}/tables.db")
    try:
        load(engine, {"litefile": files("litefs.data").joinpath(table).read_text()})
        return image_plan(engine, "img")
    finally:
        engine.dispose()


COOKBOOK_OPS = [{"op": "write", "path": "/tmp/x", "data": "x"},
                {"op": "append", "path": "/var/log/messages", "data": "m\n"},
                {"op": "write", "path": "/etc/ssh/sshd_config", "data": "PermitRootLogin no\n"},
                {"op": "write", "path": "/etc/passwd", "data": "x"}]

NODE_FILES = {"0:/etc/motd": "per-node motd\n", "1:/etc/issue": "per-profile issue\n",
              "1:/etc/ssh/sshd_config": "profile sshd\n"}
NODE_OPS = [{"op": "write", "path": "/etc/ssh/sshd_config", "data": "node edit\n"},
            {"op": "write", "path": "/etc/issue", "data": "x"}]


CASES = [
    _file_case(),
    _dir_case(),
    _parent_child_case(hits=False),
    _parent_child_case(hits=True),
    Case("node n01 litetree variables", [], [], NODE_FILES, NODE_OPS, node="n01"),
    Case("node n02 litetree variables", [], [], {**NODE_FILES, "0:/etc/issue": "n02's own issue\n"},
         NODE_OPS, node="n02"),
    Case("litetree priorities", [("/etc/motd", "ro"), ("/etc/issue", "tmpfs"), ("/etc/hosts", "link"),
                                 ("/etc/sysconfig/", "tmpfs")],
         [SRV1, SRV2], {"1:/etc/motd": "two\n", "0:/etc/issue": "one\n", "1:/etc/issue": "two\n",
                        "0:/etc/sysconfig/network": "one\n", "1:/etc/sysconfig/network": "two\n"},
         [{"op": "write", "path": "/etc/motd", "data": "x"}, {"op": "write", "path": "/etc/hosts", "data": "h\n"}]),
    Case("missing everywhere", [("/var/arpwatch", "link"), ("/var/gdm/", "tmpfs"), ("/opt/none.conf", "persistent")],
         [SRV1], {}, [{"op": "write", "path": "/etc/hostname", "data": "x"}]),
    Case("con without hits", [("/etc/hosts", "con"), ("/etc/motd", "con")], [SRV1],
         {"0:/etc/hosts": "10.1.1.1 a\n"},
         [{"op": "append", "path": "/etc/hosts", "data": "x\n"}, {"op": "append", "path": "/etc/motd", "data": "x\n"}]),
    Case("persistent across an image update", [("/var/lib/random-seed", "persistent"), ("/etc/adjtime", "link,persistent"),
                                               ("/var/lib/ntp/", "persistent")],
         [], {}, [{"op": "write", "path": "/var/lib/ntp/drift", "data": "1.5\n"}],
         between={"/var/lib/random-seed": "new image seed\n", "/etc/adjtime": "new adjtime\n"}),
    Case("deleting listed paths", [("/etc/ntp.conf", "tmpfs"), ("/var/lib/random-seed", "persistent"),
                                   ("/etc/hosts", "link")], [], {},
         [{"op": "unlink", "path": "/etc/ntp.conf"}, {"op": "unlink", "path": "/var/lib/random-seed"},
          {"op": "unlink", "path": "/etc/hosts"}, {"op": "unlink", "path": "/etc/no-such-file"}]),
    Case("server-less source", [("/etc/motd", "tmpfs")], ["/srv/local"], {"0:/etc/motd": "local\n"}),
    Case("the cookbook's RedHat list", [], [], {}, COOKBOOK_OPS, table="litefile-redhat.csv"),
    Case("the cookbook's SLES list", [], [], {}, COOKBOOK_OPS, table="litefile-sles.csv"),
]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_busybox_image(tmp_path_factory.mktemp("tpl") / "rootimg")


USED: set[str] = set()


@pytest.mark.fuse
@pytest.mark.netns
@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_classic_and_litefs_nodes_agree(case: Case, template: Path, tmp_path: Path) -> None:
    env = Env(case, template, tmp_path)
    classic, view = env.classic(case.ops), env.litefs(case.ops, "boot1")
    # The same plan on the liteimg'd image: a site moves nodes over one at a time on one image.
    lite = env.litefs(case.ops, "boot1-li", liteimgd=True)
    # not vacuous: both walked the whole node and every listed path that exists is compared
    assert len(classic.manifest) > 60 and len(view.manifest) > 60
    assert "/bin/busybox" in view.manifest and "/etc/passwd" in classic.manifest
    problems = compare(env, classic, view, USED)
    problems += [f"liteimg'd image: {p}" for p in same_view(view, lite)]
    env.reboot()
    classic2, view2 = env.classic([]), env.litefs([], "boot2")
    lite2 = env.litefs([], "boot2-li", liteimgd=True)
    problems += [f"after reboot: {p}" for p in compare(env, classic2, view2, USED)]
    problems += [f"liteimg'd image, after reboot: {p}" for p in same_view(view2, lite2)]
    problems += [f"classic: {p}" for p in reboot_kept(env, classic, classic2)]
    problems += [f"litefs: {p}" for p in reboot_kept(env, view, view2)]
    assert problems == []
    shutil.rmtree(tmp_path, ignore_errors=True)


def same_view(plain: C.ClassicResult, liteimgd: C.ClassicResult) -> list[str]:
    """A litefs node on the liteimg'd image sees exactly what one on the plain image sees:
    no listed difference applies (the image is the same content, only laid out by liteimg)."""
    problems = []
    for path in sorted(set(plain.manifest) | set(liteimgd.manifest)):
        a, b = normalise(plain.manifest.get(path)), normalise(liteimgd.manifest.get(path))
        if a != b:
            problems.append(f"{path}: plain image {a} != liteimg'd image {b}")
    for i, (a, b) in enumerate(zip(plain.ops, liteimgd.ops, strict=True)):
        if a != b:
            problems.append(f"op {i}: plain image {a} != liteimg'd image {b}")
    return problems


REBOOT_CHECKED: dict[str, int] = {}  # family -> writes checked across a reboot, all cases


def reboot_kept(env: Env, first: C.ClassicResult, again: C.ClassicResult) -> list[str]:
    """On each node by itself: what a successful write put in a persistent (or localdisk) path
    is still there after the reboot; a volatile (tmpfs, con) write is gone."""
    problems, last = [], {}
    for op, res in zip(env.case.ops, first.ops, strict=True):
        if res == "ok" and op["op"] in ("write", "append"):
            last[op["path"]] = op
    for path in last:
        rule = resolve(env.plan, path).rule
        if rule is None:
            continue
        before, after = first.manifest.get(path), again.manifest.get(path)
        REBOOT_CHECKED[rule.family.value] = REBOOT_CHECKED.get(rule.family.value, 0) + 1
        if rule.family in (Family.PERSISTENT, Family.LOCALDISK) and before != after:
            problems.append(f"{path} ({rule.option}): written before the reboot, lost after it")
        if rule.family in (Family.VOLATILE, Family.CON) and before == after:
            problems.append(f"{path} ({rule.option}): written before the reboot, still there")
    return problems


RANDOM_PATHS = ["/etc/ntp.conf", "/etc/ssh/", "/etc/ssh/sshd_config", "/etc/hosts", "/root/",
                "/root/.bashrc", "/var/log/", "/var/log/messages", "/var/lib/random-seed", "/var/spool/",
                "/var/spool/cron/", "/etc/motd", "/home/user/", "/home/user/.profile", "/opt/xcat/",
                "/etc/sysconfig/network"]
RANDOM_SOURCE_FILES = ["/etc/ntp.conf", "/etc/ssh/sshd_config", "/etc/hosts", "/root/.bashrc",
                       "/var/log/messages", "/etc/motd", "/home/user/.profile", "/opt/xcat/xcatinfo",
                       "/var/spool/cron/root", "/etc/sysconfig/network"]
RANDOM_OP_FILES = [*RANDOM_SOURCE_FILES[:7], "/opt/xcat/new", "/var/spool/cron/root", "/var/log/new"]


def random_tables() -> st.SearchStrategy[dict[str, str]]:
    return (
        st.dictionaries(st.sampled_from(RANDOM_PATHS), st.sampled_from(VALID_OPTIONS), min_size=1, max_size=6)
        .map(lambda d: {p: ("tmpfs" if "con" in o and p.endswith("/") else o) for p, o in d.items()})
        .filter(lambda d: not validate_rules(list(d.items())))
    )


@pytest.mark.fuse
@pytest.mark.netns
@pytest.mark.slow
@settings(max_examples=8, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@example(rules={"/root/": "tmpfs", "/root/.bashrc": "tmpfs"}, src={(0, "/root/.bashrc"): "a"}, ops=[])
@example(rules={"/home/user/.profile": "link,con"}, src={}, ops=[])
@given(
    rules=random_tables(),
    src=st.dictionaries(st.tuples(st.integers(0, 1), st.sampled_from(RANDOM_SOURCE_FILES)),
                        st.text("abc", min_size=1, max_size=3), max_size=4),
    ops=st.lists(st.tuples(st.sampled_from(["write", "append", "unlink"]), st.sampled_from(RANDOM_OP_FILES)),
                 max_size=4),
)
def test_random_plans_agree(
    template: Path, tmp_path: Path, rules: dict[str, str], src: dict[tuple[int, str], str],
    ops: list[tuple[str, str]],
) -> None:
    """Random valid litefile tables, litetree contents and writes (explored with hundreds of
    examples while writing this; a fixed, derandomised handful runs here)."""
    files = {f"{i}:{p}": c + "\n" for (i, p), c in src.items()}
    oplist = [{"op": o, "path": p, "data": "node\n"} for o, p in ops]
    case = Case("random", sorted(rules.items()), [SRV1, SRV2], files, oplist)
    tmp = tmp_path / uuid.uuid4().hex
    tmp.mkdir()
    try:
        env = Env(case, template, tmp)
        view = env.litefs(oplist, "boot1")
        problems = compare(env, env.classic(oplist), view, USED)
        problems += same_view(view, env.litefs(oplist, "boot1-li", liteimgd=True))
        env.reboot()
        problems += [f"after reboot: {p}" for p in compare(env, env.classic([]), env.litefs([], "boot2"), USED)]
        assert problems == [], (rules, files, oplist)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_compare_reports_an_unexplained_difference(tmp_path: Path) -> None:
    env = Env.__new__(Env)
    case = Case("t", [("/etc/x", "tmpfs")], ops=[{"op": "write", "path": "/etc/x"}])
    env.case, env.plan, env.rebooted, env.placeholders = case, case.make_plan(tmp_path), False, set()
    env.src_dirs, env.changed_between = [], set()
    rec = {"kind": "file", "mode": 0o644, "uid": 0, "gid": 0, "size": 1, "sha256": "a"}
    same = C.ClassicResult([], [], ["ok"], {"/etc/x": rec, "/etc/y": rec})
    other = C.ClassicResult([], [], ["EROFS"], {"/etc/x": {**rec, "mode": 0o600}})
    problems = compare(env, same, other, set())
    assert len(problems) == 3, problems
    assert compare(env, same, same, set()) == []


@pytest.mark.fuse
@pytest.mark.netns
@pytest.mark.slow
def test_every_listed_difference_is_exercised(template: Path) -> None:
    if len(USED) == 0:
        pytest.skip("run together with test_classic_and_litefs_nodes_agree")
    documented_only = {"link family shows the file, not the chain", "scaffolding"}
    assert {d.name for d in DIFFERENCES} - documented_only <= USED
    # the reboot check saw writes of every kind that keeps or loses them
    assert {"persistent", "localdisk", "volatile", "con"} <= set(REBOOT_CHECKED), REBOOT_CHECKED


def readme_fixed_items() -> list[str]:
    """The bullets of the README's "Fixed, deliberately:" list, each joined into one line."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = text.split("Fixed, deliberately:", 1)[1].split("\n#", 1)[0]
    return [" ".join(item.split()) for item in block.split("\n- ")[1:]]


def test_differences_agree_with_the_readme_fixed_list() -> None:
    """Every difference that cites a fixed xCAT quirk cites a real README item, and every README
    item is either such a difference or said here to be invisible in a node's tree."""
    items = readme_fixed_items()
    assert len(items) >= 9, items
    cited = [d.fixed for d in DIFFERENCES if d.fixed]
    for c in cited:
        assert any(i.startswith(c) for i in items), f"DIFFERENCES cites {c!r}, not in the README"
    for item in items:
        covered = [c for c in cited if item.startswith(c)] + [k for k in NOT_TREE_FIXES if item.startswith(k)]
        assert len(covered) == 1, f"README fixed item not accounted for exactly once: {item!r}"
    assert len({d.name for d in DIFFERENCES}) == len(DIFFERENCES)
    assert all(d.reason for d in DIFFERENCES)
