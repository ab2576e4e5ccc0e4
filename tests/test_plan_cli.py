"""The installed litefile, litetree, lslite and ``litefs plan`` commands against a real SQLite file:
xCAT's exact output, exit statuses 0/1/2 and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from litefs.tools import litecmds, litefs_cli

from litefs import db
from litefs.plan import Plan
from litefs.planner import node_plan
from tests.planutil import COOKBOOK_REDHAT_FILES, cookbook_redhat_litefile, load

BIN = Path(sys.executable).parent
IMG = "rhels8-x86_64-statelite-compute"

TABLES = {
    "nodelist": [
        {"node": "n01", "groups": "compute"},
        {"node": "n02", "groups": "compute"},
        {"node": "n03", "groups": "broken"},
        {"node": "svc1", "groups": "service"},
    ],
    "nodetype": [
        {"node": "compute", "os": "rhels8", "arch": "x86_64", "profile": "compute"},
        {"node": "n03", "os": "rhels8"},
        # The legacy image name, with no osimage row: still listable by name.
        {"node": "service", "os": "rhels8", "arch": "x86_64", "profile": "service"},
    ],
    "noderes": [{"node": "compute", "nfsserver": "10.0.0.1"}],
    "nodepos": [{"node": "n01", "room": "ny"}, {"node": "n02", "room": "sh"}],
    "osimage": [{"imagename": IMG, "provmethod": "statelite"}],
    "litetree": [
        {"priority": "1", "directory": "$noderes.nfsserver:/statelite/$node"},
        {"priority": "2", "image": "ALL", "directory": "cnfs:/gpfs/dallas/", "mntopts": "hard"},
        {"priority": "10", "image": IMG, "directory": "cnfs:/rooms/$nodepos.room"},
    ],
    "statelite": [{"node": "compute", "statemnt": "cnfs:/gpfs/state"}],
}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("cli") / "litefs.db"
    u = f"sqlite:///{path}"
    engine = db.open_engine(u)
    try:
        load(engine, {**TABLES, "litefile": cookbook_redhat_litefile()})
    finally:
        engine.dispose()
    return u


def run(
    cmd: str, *args: str, url: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [str(BIN / cmd), *args]
    if url is not None:
        argv += ["--db", url]
    e = {k: v for k, v in os.environ.items() if k != "LITEFS_DB"}
    e.update(env or {})
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=e)


INVALID = "invalid nodes and/or groups in noderange:"
NO_SUCH = "(no such node or group in the nodelist/nodegroup tables)"
MAINS = {
    "litefile": litecmds.litefile_main,
    "litetree": litecmds.litetree_main,
    "lslite": litecmds.lslite_main,
    "litefs": litefs_cli.main,
}


def call(capsys: pytest.CaptureFixture[str], cmd: str, *args: str) -> tuple[int, str, str]:
    """Run a command in-process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    try:
        status = MAINS[cmd](list(args))
    except SystemExit as exc:  # argparse: --help and usage errors
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def expected_litefile(who: str) -> str:
    return "".join("%s: %-13s %s\n" % (who, "tmpfs,rw", f) for f in sorted(COOKBOOK_REDHAT_FILES))  # noqa: UP031


def test_litefile_node_prints_the_cookbook_list_in_xcat_format(url: str) -> None:
    r = run("litefile", "n01", url=url)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == expected_litefile("n01")
    assert "n01: tmpfs,rw      /etc/adjtime\n" in r.stdout


def test_litefile_noderange_and_image(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    r = run("litefile", "n01-n02", url=url)
    assert r.returncode == 0
    assert r.stdout == expected_litefile("n01") + expected_litefile("n02")
    r = run("litefile", IMG, url=url)
    assert (r.returncode, r.stdout) == (0, expected_litefile(IMG))
    legacy = "rhels8-x86_64-statelite-service"  # a node boots it; no osimage row
    # The image plan leaves the $node litetree row out with a warning: not litefile's business.
    assert call(capsys, "litefile", legacy, "--db", url) == (0, expected_litefile(legacy), "")


def test_litetree(url: str) -> None:
    r = run("litetree", "compute", url=url)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == (
        "n01: 10.0.0.1:/statelite/n01\n"
        "n01: cnfs:/gpfs/dallas/ :hard\n"
        "n01: cnfs:/rooms/ny\n"
        "n02: 10.0.0.1:/statelite/n02\n"
        "n02: cnfs:/gpfs/dallas/ :hard\n"
        "n02: cnfs:/rooms/sh\n"
    )


def test_lslite(url: str) -> None:
    r = run("lslite", "n01", url=url)
    assert (r.returncode, r.stderr) == (0, "")
    files = "".join("        %-13s %s\n" % ("tmpfs,rw", f) for f in sorted(COOKBOOK_REDHAT_FILES))  # noqa: UP031
    assert r.stdout == (
        ">>>Node: n01\n\nOsimage: " + IMG + "\n\n"
        "Persistent directory (statelite table):\n        cnfs:/gpfs/state\n\n"
        "Litefiles (litefile table):\n" + files + "\n"
        "Litetree path (litetree table):\n"
        "        1, 10.0.0.1:/statelite/n01\n"
        "        2, cnfs:/gpfs/dallas/\n"
        "        10, cnfs:/rooms/ny\n\n"
    )
    r = run("lslite", "-i", IMG, url=url)
    assert (r.returncode, r.stdout) == (0, files)


def test_warnings_go_to_the_command_they_concern(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    u = f"sqlite:///{tmp_path}/w.db"
    engine = db.open_engine(u)
    try:
        load(engine, {
            **TABLES,
            "litefile": [{"image": "ALL", "file": "/etc/x", "options": "tempfs"}],
            "litetree": [{"priority": "1", "directory": "/local/tree"}],
        })
    finally:
        engine.dispose()
    status, out, err = call(capsys, "litefile", "n01", "--db", u)
    assert (status, out) == (0, "n01: link          /etc/mtab\nn01: tempfs        /etc/x\n")
    assert err == "litefile: n01: warning: litefile /etc/x: option 'tempfs' is the old spelling " \
        "of 'tmpfs' (liteimg rejects it; change it to tmpfs)\n"
    status, out, err = call(capsys, "litetree", "n01", "--db", u)
    assert (status, out) == (0, "n01: /local/tree\n")
    assert err.startswith("litetree: n01: warning: litetree priority=1: /local/tree has no server")
    assert err.count("\n") == 1
    status, _out, err = call(capsys, "lslite", "n01", "--db", u)
    assert status == 0 and err.count("warning:") == 2


def test_bad_litetree_or_statemnt_variable_hides_only_its_own_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The cookbook's own typo ($noderes.nfssserver) in litetree and statelite: xCAT's litefile
    # never reads those tables, and litetree/lslite print UNDEFINED and go on.
    u = f"sqlite:///{tmp_path}/t.db"
    engine = db.open_engine(u)
    try:
        load(engine, {
            **TABLES,
            "litefile": [{"image": "ALL", "file": "/etc/x", "options": "tmpfs"}],
            "litetree": [{"priority": "1", "directory": "$noderes.nfssserver:/statelite"},
                         {"priority": "2", "directory": "cnfs:/gpfs/dallas/"}],
            "statelite": [{"node": "compute", "statemnt": "$noderes.nfssserver:/state"}],
        })
    finally:
        engine.dispose()
    bad_tree = ("litetree priority=1: variable $noderes.nfssserver for node n01: table "
                "'noderes' has no column 'nfssserver'")
    bad_state = ("statelite node=compute: variable $noderes.nfssserver for node n01: table "
                 "'noderes' has no column 'nfssserver'")
    for target in ("n01", "compute"):
        status, out, err = call(capsys, "litefile", target, "--db", u)
        assert (status, err) == (0, "")
        assert out.startswith("n01: link          /etc/mtab\nn01: tmpfs         /etc/x\n")
    status, out, err = call(capsys, "litetree", "n01", "--db", u)
    assert (status, out) == (1, "n01: cnfs:/gpfs/dallas/\n")
    assert err == f"litetree: n01: {bad_tree}\n"
    status, out, err = call(capsys, "lslite", "n01", "--db", u)
    assert status == 1
    assert err == f"lslite: n01: {bad_tree}\nlslite: n01: {bad_state}\n"
    assert "Litefiles (litefile table):\n        link          /etc/mtab\n" in out
    assert "Litetree path (litetree table):\n        2, cnfs:/gpfs/dallas/\n" in out
    assert "Persistent directory (statelite table):\n\nLitefiles" in out


def test_digit_atoms_take_xcat_node_prefix(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XCAT_NODE_PREFIX", "n0")
    status, out, _err = call(capsys, "litetree", "1-2", "--db", url)
    assert status == 0 and [line.split(":")[0] for line in out.splitlines()] == ["n01"] * 3 + ["n02"] * 3
    monkeypatch.delenv("XCAT_NODE_PREFIX")
    status, _out, err = call(capsys, "litetree", "1", "--db", url)
    assert status == 1 and "noderange: node1 (" in err


def test_one_bad_node_fails_alone(url: str) -> None:
    r = run("litefile", "n01,n03", url=url)
    assert r.returncode == 1
    assert r.stdout == expected_litefile("n01")
    assert r.stderr == (
        "litefile: n03: n03 does not have os, arch, or profile defined in nodetype table\n"
    )


@pytest.mark.parametrize(
    ("cmd", "args", "status", "stderr"),
    [
        ("litefile", ["bogus,n01"], 1, f"litefile: {INVALID} bogus {NO_SUCH}\n"),
        ("litefile", ["nosuch"], 1,
         f"litefile: {INVALID} nosuch {NO_SUCH}; no osimage is named 'nosuch' either\n"),
        ("litetree", ["n0[1-4]"], 1, f"litetree: {INVALID} n04 {NO_SUCH}\n"),
        ("litefs", ["plan", "n09"], 1,
         "litefs: unknown node 'n09': it is not in the nodelist table\n"),
        ("litefs", ["plan"], 2,
         "litefs: give a node, or --image IMG (see 'litefs plan --help')\n"),
        ("litefs", ["plan", "--image", "typo"], 1,
         "litefs: no osimage, litefile or litetree row, nor any node uses image 'typo'; "
         "check the name ('tabdump osimage' lists the images)\n"),
        ("litefs", ["plan", "n01", "--image", "typo"], 1,
         "litefs: no osimage, litefile or litetree row, nor any node uses image 'typo'; "
         "check the name ('tabdump osimage' lists the images)\n"),
        ("lslite", ["-i", "nope"], 1, "lslite: The osimage named 'nope' is not defined.\n"),
        ("lslite", [], 2, "lslite: give -i IMAGE or a noderange (see 'lslite --help')\n"),
        ("lslite", ["-i", IMG, "n01"], 2,
         "lslite: give either -i IMAGE or a noderange, not both (see --help)\n"),
        ("litefile", [], 2,
         "litefile: the following arguments are required: noderange|image (see 'litefile --help')\n"),
        ("litetree", ["n01", "--frobnicate"], 2,
         "litetree: unrecognized arguments: --frobnicate (see 'litetree --help')\n"),
    ],
)
def test_errors_are_one_line_with_status(
    url: str, cmd: str, args: list[str], status: int, stderr: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # In-process through the commands' main(argv): the same code as the installed scripts
    # (test_one_bad_node_fails_alone and friends run those), without a start-up per case.
    assert call(capsys, cmd, *args, "--db", url) == (status, "", stderr)


@pytest.mark.parametrize("cmd", ["litefile", "litetree", "lslite", "litefs plan"])
def test_help(cmd: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = call(capsys, *cmd.split(), "--help")
    assert (status, err) == (0, "") and "--db URL" in out and "usage:" in out


def test_database_without_schema_and_env_default(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = f"sqlite:///{tmp_path}/empty.db"
    r = run("litefile", "n01", url=empty)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "does not exist; run 'litefs db init'" in r.stderr
    assert not (tmp_path / "empty.db").exists()  # a read leaves no empty database behind
    (tmp_path / "empty.db").write_bytes(b"")
    status, _out, err = call(capsys, "lslite", "n01", "--db", empty)
    assert (status, err.count("\n")) == (1, 1)
    assert "has no litefs tables; run 'litefs db init'" in err
    r = run("litetree", "n02", env={"LITEFS_DB": url})
    assert (r.returncode, r.stdout.splitlines()[0]) == (0, "n02: 10.0.0.1:/statelite/n02")


def test_litefs_plan(url: str) -> None:
    r = run("litefs", "plan", "n02", "--json", url=url)
    assert (r.returncode, r.stderr) == (0, "")
    plan = Plan.from_json(r.stdout)
    engine = db.open_engine(url)
    try:
        assert plan == node_plan(engine, "n02")
    finally:
        engine.dispose()
    data = json.loads(r.stdout)
    assert data["node"] == "n02" and data["statemnt"] == "cnfs:/gpfs/state"
    assert data["sources"][2]["mountpoint"] == "/.statelite/mnt/cnfs/rooms/sh"
    r = run("litefs", "plan", "n01", url=url)
    assert r.returncode == 0
    assert "image:    " + IMG in r.stdout and "/etc/adjtime" in r.stdout


def test_litefs_plan_image(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = call(capsys, "litefs", "plan", "--image", IMG, "--json", "--db", url)
    assert (status, err) == (0, "")
    data = json.loads(out)
    assert data["node"] is None and data["image"] == IMG and len(data["rules"]) == 42
