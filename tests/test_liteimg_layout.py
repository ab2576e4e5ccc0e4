"""liteimg on real image trees: the classic layout byte for byte (reference §6.3/§6.4), re-runs
that reconcile without losing anything, idempotence and the undo round trip, proven with tree
digests. The image is the busybox fixture of tests/liteimgutil.py, copied per test."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from litefs import liteimg as L
from litefs.errors import LiteimgError
from litefs.options import VALID_OPTIONS, is_link
from litefs.plan import Plan, Rule
from litefs.validate import validate_rules
from tests.liteimgutil import build_busybox_image, diff_digests, tree_digest

LINK_OPTIONS = [o for o in VALID_OPTIONS if is_link(o)]
BIND_OPTIONS = [o for o in VALID_OPTIONS if not is_link(o)]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_busybox_image(tmp_path_factory.mktemp("tpl") / "rootimg")


@pytest.fixture
def image(template: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "rootimg"
    subprocess.run(["cp", "-a", str(template), str(dst)], check=True)
    return dst


def rules(*specs: tuple[str, str]) -> tuple[Rule, ...]:
    return tuple(Rule(p.rstrip("/"), o, p.endswith("/")) for p, o in specs)


def run(root: Path, *specs: tuple[str, str], image: str = "img") -> L.LiteimgPlan:
    plan = Plan(image=image, rules=rules(*specs))
    lp = L.plan_liteimg(image, L.entries_from_plan(plan), L.DirTree(str(root)), L.read_state(str(root)))
    L.apply(str(root), lp.actions)
    return lp


def undo(root: Path) -> list[str]:
    return L.run_undo(str(root))


def link(root: Path, rel: str) -> str:
    return os.readlink(root / rel.lstrip("/"))


# --- pure parts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "img", "tmp"),
    [
        ("/etc/ntp.conf", "../.statelite/tmpfs/etc/ntp.conf", "../../../.default/etc/ntp.conf"),
        ("/tmp", "./.statelite/tmpfs/tmp", "../.././.default/tmp"),
        ("/var/lib/ntp", "../../.statelite/tmpfs/var/lib/ntp", "../../../../.default/var/lib/ntp"),
        ("/a/b/c/d", "../../../.statelite/tmpfs/a/b/c/d", "../../../../../.default/a/b/c/d"),
    ],
)
def test_link_targets_follow_xcat_getreldir(path: str, img: str, tmp: str) -> None:
    assert L.link_targets(path) == (img, tmp)


def test_save_text_is_ilitefile_with_tmpfs_rw_rewritten() -> None:
    entries = L.entries_from_plan(Plan(image="img", rules=rules(
        ("/etc/ssh/", "tmpfs"), ("/etc/ntp.conf", "tmpfs,rw"), ("/root/.bashrc", "link,persistent"),
    )))
    text = L.save_text("img", entries)
    assert text == (
        "img: link      /etc/ntp.conf\n"
        "img: tmpfs         /etc/ssh/\n"
        "img: link,persistent /root/.bashrc\n"
    )
    assert [(e.path, e.saved_option, e.is_dir) for e in L.parse_save(text)] == [
        ("/etc/ntp.conf", "link", False), ("/etc/ssh", "tmpfs", True),
        ("/root/.bashrc", "link,persistent", False),
    ]


def test_save_text_is_the_planners_ilitefile_output_with_xcats_substitution() -> None:
    from litefs.planner import xcat_litefile_lines

    plan = Plan(image="rhels9-x86_64-statelite-compute", rules=rules(*[
        (f"/etc/f{i}" + ("/" if "con" not in o else ""), o) for i, o in enumerate(VALID_OPTIONS)
    ]))
    expect = "".join(line.replace("tmpfs,rw", "link", 1) + "\n" for line in xcat_litefile_lines(plan))
    assert L.save_text(plan.image, L.entries_from_plan(plan)) == expect


def test_parent_and_child_detection_uses_listed_directories_only() -> None:
    entries = L.entries_from_plan(Plan(image="i", rules=rules(
        ("/root/", "link"), ("/root/.bashrc", "link"), ("/etc/hosts", "tmpfs"),
        ("/etc/hosts.d/x", "tmpfs"),
    )))
    assert L.top_level(entries) == {"/root", "/etc/hosts", "/etc/hosts.d/x"}


def test_planning_touches_nothing(image: Path) -> None:
    before = tree_digest(image)
    plan = Plan(image="img", rules=rules(("/etc/ntp.conf", "link"), ("/etc/ssh/", "tmpfs")))
    lp = L.plan_liteimg("img", L.entries_from_plan(plan), L.DirTree(str(image)), L.read_state(str(image)))
    assert lp.changes
    assert tree_digest(image) == before


# --- golden layouts ------------------------------------------------------------------------


@pytest.mark.parametrize("option", LINK_OPTIONS)
def test_link_family_file_layout(image: Path, option: str) -> None:
    before = tree_digest(image)
    run(image, ("/etc/ntp.conf", option))
    assert link(image, "/etc/ntp.conf") == "../.statelite/tmpfs/etc/ntp.conf"
    assert link(image, "/.statelite/tmpfs/etc/ntp.conf") == "../../../.default/etc/ntp.conf"
    # the original moved, untouched (content, mode, owner, mtime)
    assert tree_digest(image)[".default/etc/ntp.conf"] == before["etc/ntp.conf"]
    # through the chain the image still reads the original on the server
    assert (image / "etc/ntp.conf").read_text().startswith("server 10.0.0.1")
    save = (image / ".statelite/litefile.save").read_text()
    expect = "link     " if option == "tmpfs,rw" else f"{option:<13}"
    assert save == f"img: {expect} /etc/ntp.conf\n"


@pytest.mark.parametrize("option", ["link", "tmpfs,rw", "link,persistent", "link,ro"])
def test_link_family_directory_layout(image: Path, option: str) -> None:
    before = tree_digest(image)
    run(image, ("/etc/ssh/", option))
    assert link(image, "/etc/ssh") == "../.statelite/tmpfs/etc/ssh"
    assert link(image, "/.statelite/tmpfs/etc/ssh") == "../../../.default/etc/ssh"
    after = tree_digest(image)
    for rel in ("etc/ssh/sshd_config", "etc/ssh/ssh_host_rsa_key"):
        assert after[".default/" + rel] == before[rel]
    assert after[".default/etc/ssh"] == before["etc/ssh"]


@pytest.mark.parametrize(
    ("path", "img", "tmp"),
    [
        ("/etc/ssh/sshd_config", "../../.statelite/tmpfs/etc/ssh/sshd_config",
         "../../../../.default/etc/ssh/sshd_config"),
        ("/var/lib/deep/x/y.conf", "../../../../.statelite/tmpfs/var/lib/deep/x/y.conf",
         "../../../../../../.default/var/lib/deep/x/y.conf"),
        ("/var/lib/deep/x/", "../../../.statelite/tmpfs/var/lib/deep/x",
         "../../../../../.default/var/lib/deep/x"),
        ("/topfile", "./.statelite/tmpfs/topfile", "../.././.default/topfile"),
    ],
)
def test_link_chain_on_disk_at_every_depth(image: Path, path: str, img: str, tmp: str) -> None:
    (image / "var/lib/deep/x").mkdir(parents=True)
    (image / "var/lib/deep/x/y.conf").write_text("deep\n")
    (image / "topfile").write_text("top\n")
    rel = path.strip("/")
    before = (image / rel).read_text() if not path.endswith("/") else None
    run(image, (path, "link"))
    assert link(image, "/" + rel) == img
    assert link(image, "/.statelite/tmpfs/" + rel) == tmp
    if before is not None:  # the chain resolves, on the server, to the moved original
        assert (image / rel).read_text() == before
        assert (image / ".default" / rel).read_text() == before
    else:
        assert (image / rel / "y.conf").read_text() == "deep\n"


def test_root_level_link_uses_dot(image: Path) -> None:
    run(image, ("/tmp/", "link"))
    assert link(image, "/tmp") == "./.statelite/tmpfs/tmp"
    assert link(image, "/.statelite/tmpfs/tmp") == "../.././.default/tmp"
    assert oct((image / ".default/tmp").stat().st_mode & 0o7777) == "0o1777"


@pytest.mark.parametrize("option", BIND_OPTIONS)
def test_bind_family_clones_and_leaves_the_original(image: Path, option: str) -> None:
    before = tree_digest(image)
    path = "/etc/resolv.conf" if "con" in option else "/etc/ssh/"
    run(image, (path, option))
    after = tree_digest(image)
    rel = path.strip("/")
    for k, v in before.items():
        if k == rel or k.startswith(rel + "/"):
            assert after[k] == v  # original in place
            assert after[".default/" + k] == v  # identical clone
    assert not os.path.islink(image / rel)


def test_children_of_a_link_parent_only_get_a_default(image: Path) -> None:
    run(image, ("/root/", "link"), ("/root/.bashrc", "link,persistent"),
        ("/root/.ssh/", "link"), ("/root/new.conf", "link,con"), ("/root/newdir/", "link"))
    assert link(image, "/root") == "./.statelite/tmpfs/root"
    assert not os.path.islink(image / ".default/root/.bashrc")
    assert (image / ".default/root/new.conf").read_bytes() == b""
    assert (image / ".default/root/newdir").is_dir()
    assert sorted(os.listdir(image / ".statelite/tmpfs")) == ["root"]


def test_missing_paths_get_placeholders(image: Path) -> None:
    run(image, ("/var/arpwatch", "link"), ("/var/lib/xen/ntp", "link"), ("/var/gdm/", "tmpfs"),
        ("/opt/new/file", "persistent"))
    assert (image / ".default/var/arpwatch").read_bytes() == b""
    assert link(image, "/var/lib/xen/ntp") == "../../../.statelite/tmpfs/var/lib/xen/ntp"
    assert (image / "var/lib/xen").is_dir()  # created parent in the image, as xCAT's mkdir -p
    assert (image / "var/gdm").is_dir() and (image / ".default/var/gdm").is_dir()
    assert (image / "opt/new/file").read_bytes() == b""


def test_mtab_link_to_proc_self_mounts_is_left_alone(image: Path) -> None:
    run(image, ("/etc/mtab", "link"))
    assert link(image, "/etc/mtab") == "/proc/self/mounts"
    assert not (image / ".default/etc").exists()


def test_regular_mtab_is_linked(image: Path) -> None:
    (image / "etc/mtab").unlink()
    (image / "etc/mtab").write_text("")
    run(image, ("/etc/mtab", "link"))
    assert link(image, "/etc/mtab") == "../.statelite/tmpfs/etc/mtab"


def test_init_d_statelite_left_in_place(image: Path) -> None:
    before = tree_digest(image)["etc/init.d/statelite"]
    run(image, ("/etc/ntp.conf", "link"), ("/etc/init.d/", "tmpfs"))
    assert tree_digest(image)["etc/init.d/statelite"] == before


# --- re-runs ---------------------------------------------------------------------------------

MIXED = (
    ("/etc/ntp.conf", "tmpfs,rw"), ("/etc/mtab", "link"), ("/etc/ssh/", "tmpfs"),
    ("/root/", "link"), ("/root/.bashrc", "link,persistent"), ("/var/lib/random-seed", "persistent"),
    ("/var/log/", "tmpfs"), ("/var/log/messages", "persistent"), ("/var/arpwatch", "link"),
    ("/etc/motd", "ro"), ("/etc/hosts", "con"), ("/etc/yp.conf", "link,con"), ("/var/gdm/", "rw"),
)


def test_second_run_changes_nothing(image: Path) -> None:
    run(image, *MIXED)
    first = tree_digest(image)
    lp = run(image, *MIXED)
    assert lp.changes == ()
    assert tree_digest(image) == first


def test_removed_link_entry_comes_back_from_default(image: Path) -> None:
    orig = tree_digest(image)
    run(image, ("/etc/ntp.conf", "link"), ("/root/", "link"), ("/etc/ssh/", "tmpfs"))
    run(image, ("/etc/ssh/", "tmpfs"))
    after = tree_digest(image)
    for rel in ("etc/ntp.conf", "root", "root/.bashrc", "root/.ssh/authorized_keys"):
        assert after[rel] == orig[rel]
    assert not (image / ".default/etc/ntp.conf").exists()
    assert not (image / ".statelite/tmpfs/root").exists()


@pytest.mark.parametrize(("old", "new"), [
    ("link", "tmpfs"), ("tmpfs", "link"), ("tmpfs", "persistent"), ("persistent", "link,ro"),
    ("link,persistent", "ro"), ("link", "link,persistent"),
])
def test_family_change_never_empties_the_file(image: Path, old: str, new: str) -> None:
    orig = tree_digest(image)
    run(image, ("/etc/resolv.conf", old))
    run(image, ("/etc/resolv.conf", new))
    after = tree_digest(image)
    if is_link(new):
        assert after[".default/etc/resolv.conf"] == orig["etc/resolv.conf"]
        assert link(image, "/etc/resolv.conf") == "../.statelite/tmpfs/etc/resolv.conf"
    else:
        assert after["etc/resolv.conf"] == orig["etc/resolv.conf"]
        assert after[".default/etc/resolv.conf"] == orig["etc/resolv.conf"]


def test_bind_entry_removed_drops_clone_and_placeholder(image: Path) -> None:
    orig = tree_digest(image)
    run(image, ("/etc/ssh/", "tmpfs"), ("/var/gdm/", "tmpfs"), ("/etc/motd", "ro"))
    run(image, ("/etc/motd", "ro"))
    assert not (image / ".default/etc/ssh").exists()
    assert not (image / "var/gdm").exists()
    undo(image)
    assert diff_digests(orig, tree_digest(image)) == []


def test_placeholder_with_content_is_kept(image: Path) -> None:
    run(image, ("/var/gdm/", "tmpfs"))
    (image / "var/gdm/state").write_text("admin data\n")
    warnings = undo(image)
    assert (image / "var/gdm/state").read_text() == "admin data\n"
    assert any("var/gdm" in w for w in warnings)


def test_image_file_replaced_after_liteimg_is_relinked(image: Path) -> None:
    run(image, ("/etc/ntp.conf", "link"))
    (image / "etc/ntp.conf").unlink()  # a package update puts a real file back
    shutil.copy2(image / ".default/etc/ntp.conf", image / "etc/ntp.conf")
    run(image, ("/etc/ntp.conf", "link"))
    assert link(image, "/etc/ntp.conf") == "../.statelite/tmpfs/etc/ntp.conf"


def test_conflicting_copies_stop_the_run_and_change_nothing(image: Path) -> None:
    run(image, ("/etc/ntp.conf", "link"))
    (image / "etc/ntp.conf").unlink()
    (image / "etc/ntp.conf").write_text("server other\n")
    before = tree_digest(image)
    with pytest.raises(LiteimgError, match=re.escape("both /etc/ntp.conf and /.default/etc/ntp.conf")):
        run(image, ("/etc/ntp.conf", "link"))
    assert tree_digest(image) == before


def test_symlink_in_the_middle_of_a_path_is_refused(image: Path) -> None:
    os.symlink("/run/lock", image / "var/lk")
    before = tree_digest(image)
    with pytest.raises(LiteimgError, match="/var/lk is a symbolic link in the image"):
        run(image, ("/etc/ntp.conf", "link"), ("/var/lk/subsys/", "tmpfs"))
    assert tree_digest(image) == before


def test_layout_from_xcat_without_state_file_reconciles(image: Path) -> None:
    orig = tree_digest(image)
    run(image, ("/etc/ntp.conf", "link"), ("/etc/ssh/", "tmpfs"))
    (image / ".statelite/liteimg.json").unlink()  # as if xCAT's liteimg had made it
    undo(image)
    assert diff_digests(orig, tree_digest(image)) == []


# --- undo --------------------------------------------------------------------------------------


def test_undo_round_trip(image: Path) -> None:
    orig = tree_digest(image)
    run(image, *MIXED)
    run(image, *MIXED[:5], ("/var/lib/dhclient/", "link"), ("/etc/adjtime", "tmpfs"))
    undo(image)
    assert diff_digests(orig, tree_digest(image)) == []


def test_state_file_tells_an_empty_original_from_a_placeholder(image: Path) -> None:
    """Why liteimg.json exists: .default holds an empty file for both a really empty image file
    and a stand-in liteimg made, so only the record lets --undo put back exactly the image."""
    (image / "etc/adjtime").write_text("")  # empty on the image, as on fresh installs
    specs = (("/etc/adjtime", "link"), ("/var/arpwatch", "link"), ("/var/gdm/", "tmpfs"))
    orig = tree_digest(image)
    run(image, *specs)
    assert (image / ".default/etc/adjtime").stat().st_size == 0
    assert (image / ".default/var/arpwatch").stat().st_size == 0
    undo(image)
    assert diff_digests(orig, tree_digest(image)) == []
    run(image, *specs)
    (image / ".statelite/liteimg.json").unlink()  # no record: as if xCAT had prepared the image
    undo(image)
    assert (image / "etc/adjtime").read_text() == ""
    assert (image / "var/arpwatch").is_file() and (image / "var/gdm").is_dir()  # stand-ins stay
    assert not (image / ".statelite/liteimg.json").exists()


def test_undo_without_liteimg_is_an_error(image: Path) -> None:
    with pytest.raises(LiteimgError, match="nothing to undo"):
        undo(image)


PATHS = ["/etc/ntp.conf", "/etc/ssh/", "/etc/hosts", "/root/", "/root/.bashrc", "/root/.ssh/",
         "/var/log/", "/var/log/messages", "/var/lib/random-seed", "/var/arpwatch", "/var/gdm/",
         "/tmp/", "/etc/mtab", "/home/user/.profile", "/opt/xcat/"]


def valid_tables() -> st.SearchStrategy[tuple[tuple[str, str], ...]]:
    def ok(specs: dict[str, str]) -> bool:
        return not validate_rules(list(specs.items()))
    options = st.sampled_from(VALID_OPTIONS)
    return (
        st.dictionaries(st.sampled_from(PATHS), options, max_size=8)
        .map(lambda d: {p: ("tmpfs" if "con" in o and p.endswith("/") else o) for p, o in d.items()})
        .filter(ok)
        .map(lambda d: tuple(sorted(d.items())))
    )


def assert_layout(root: Path, specs: tuple[tuple[str, str], ...]) -> None:
    """The classic layout invariants for every entry (reference §6.3, §6.4)."""
    entries = L.entries_from_plan(Plan(image="img", rules=rules(*specs)))
    tops = L.top_level(entries)
    for e in entries:
        here, default = str(root) + e.path, str(root) + L.DEFAULT + e.path
        if e.is_link and e.path in tops:
            if e.path == "/etc/mtab":
                continue
            img, tmp = L.link_targets(e.path)
            assert os.readlink(here) == img
            assert os.readlink(str(root) + L.TMPFS + e.path) == tmp
            assert os.path.lexists(default)
        elif e.is_link:
            assert os.path.lexists(default)
        else:  # the original stays (a symlink stays a symlink), the clone is identical
            assert os.path.lexists(here)
            assert L.DirTree(str(root)).same(e.path, L.DEFAULT + e.path)
    saved = L.parse_save((root / ".statelite/litefile.save").read_text())
    assert [(x.path, x.saved_option) for x in saved] == [(x.path, x.saved_option) for x in entries]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=valid_tables(), second=valid_tables())
def test_any_sequence_of_runs_then_undo_restores_the_image(
    template: Path, tmp_path: Path, first: tuple[tuple[str, str], ...],
    second: tuple[tuple[str, str], ...],
) -> None:
    root = tmp_path / f"img{abs(hash((first, second)))}"
    subprocess.run(["cp", "-a", str(template), str(root)], check=True)
    try:
        orig = tree_digest(root)
        run(root, *first)
        assert_layout(root, first)
        run(root, *second)
        assert_layout(root, second)
        again = tree_digest(root)
        assert run(root, *second).changes == ()
        assert tree_digest(root) == again
        undo(root)
        assert diff_digests(orig, tree_digest(root)) == []
    finally:
        shutil.rmtree(root)


def test_symlinked_entries_are_kept_with_a_warning(image: Path) -> None:
    os.symlink("../run", image / "var/rundir")
    os.symlink("../run", image / "var/bindlink")
    plan = Plan(image="img", rules=rules(("/var/rundir/", "link"), ("/var/bindlink/", "tmpfs")))
    warnings = L.run_liteimg("img", plan, str(image))
    assert link(image, "/.default/var/rundir") == "../run"  # xCAT would have lost it
    assert link(image, "/.default/var/bindlink") == "../run"
    assert len([w for w in warnings if "is a symbolic link" in w]) == 2


def test_missing_init_d_statelite_is_warned_about(image: Path) -> None:
    (image / "etc/init.d/statelite").unlink()
    warnings = L.run_liteimg("img", Plan(image="img", rules=rules(("/etc/ntp.conf", "link"))), str(image))
    assert warnings == ["the image has no /etc/init.d/statelite: stock xCAT nodes need rc.statelite "
                        "there (genimage installs it)"]


def test_plan_of_actions_for_a_fresh_image(image: Path) -> None:
    plan = Plan(image="img", rules=rules(("/etc/ntp.conf", "tmpfs,rw"), ("/etc/ssh/", "tmpfs"),
                                         ("/var/arpwatch", "link"), ("/etc/mtab", "link")))
    lp = L.plan_liteimg("img", L.entries_from_plan(plan), L.DirTree(str(image)), L.read_state(str(image)))
    assert [a.describe("R") for a in lp.actions] == [
        "mkdir -p R/.statelite/tmpfs",
        "/etc/mtab is a link to /proc/self/mounts: left as it is",
        "mkdir -p R/.default/etc",
        "mv R/etc/ntp.conf R/.default/etc/ntp.conf",
        "mkdir -p R/.statelite/tmpfs/etc",
        "ln -sfn ../../../.default/etc/ntp.conf R/.statelite/tmpfs/etc/ntp.conf",
        "ln -sfn ../.statelite/tmpfs/etc/ntp.conf R/etc/ntp.conf",
        "cp -r -a R/etc/ssh R/.default/etc/ssh",
        "mkdir -p R/.default/var",
        "touch R/.default/var/arpwatch",
        "mkdir -p R/.statelite/tmpfs/var",
        "ln -sfn ../../../.default/var/arpwatch R/.statelite/tmpfs/var/arpwatch",
        "ln -sfn ../.statelite/tmpfs/var/arpwatch R/var/arpwatch",
        "write R/.statelite/litefile.save",
        "write R/.statelite/liteimg.json",
    ]
    assert lp.state.created == {"/var/arpwatch"}
    assert lp.state.scaffold == {"/.statelite/tmpfs", "/.default"}


def test_edits_through_the_chain_survive_removal_and_undo(image: Path) -> None:
    run(image, ("/etc/ntp.conf", "link"), ("/root/", "link"))
    (image / "etc/ntp.conf").write_text("server edited\n")  # the admin edits the image on the MN
    (image / "root/notes").write_text("kept\n")
    run(image, ("/root/", "link"))
    assert (image / "etc/ntp.conf").read_text() == "server edited\n"
    assert not os.path.islink(image / "etc/ntp.conf")
    undo(image)
    assert (image / "root/notes").read_text() == "kept\n"
    assert not os.path.islink(image / "root")


def test_one_liteimg_at_a_time(image: Path) -> None:
    import fcntl

    fd = os.open(image, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        before = tree_digest(image)
        with pytest.raises(LiteimgError, match="another liteimg is working on"):
            L.run_liteimg("img", Plan(image="img", rules=rules(("/etc/ntp.conf", "link"))), str(image))
        assert tree_digest(image) == before
    finally:
        os.close(fd)


def test_missing_rootimg_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LiteimgError, match="run genimage first"):
        L.run_liteimg("img", Plan(image="img", rules=()), str(tmp_path / "nope"))
