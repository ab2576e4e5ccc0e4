"""Scriptable output: ``--json`` on ``litefs explain``, ``litefs db status``, ``litefs notify``,
``lslite`` and ``liteimg -V``; ``liteimg --dryrun`` lists the actions and changes nothing.
Every command runs as a real process against a real SQLite database."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine

from litefs import db
from tests.dbutil import load_tables
from tests.liteimgutil import build_busybox_image, diff_digests, tree_digest
from tests.mountdutil import cluster_tables, free_port, mountd_process
from tests.test_liteimg_cmd import IMAGE

BIN = Path(sys.executable).parent


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120)


@pytest.fixture
def demo_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/demo.db"
    assert run(BIN / "litefs", "db", "init", "--db", url).returncode == 0
    demo = Path(__file__).resolve().parent.parent / "litefs/data/demo"
    for csv in sorted(demo.glob("*.csv")):
        r = run(BIN / "tabrestore", "--db", url, csv)
        assert r.returncode == 0, r.stderr
    return url


def test_db_status_json(demo_db: str, tmp_path: Path) -> None:
    r = run(BIN / "litefs", "db", "status", "--json", "--db", demo_db)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["schema_version"] == doc["expected_version"]
    assert doc["tables"]["litefile"] > 0
    empty = f"sqlite:///{tmp_path}/empty.db"
    db.open_engine(empty).dispose()
    (tmp_path / "empty.db").touch()
    r = run(BIN / "litefs", "db", "status", "--json", "--db", empty)
    assert r.returncode == 1 and json.loads(r.stdout)["ok"] is False
    assert len(r.stderr.strip().splitlines()) == 1


def test_explain_json(demo_db: str) -> None:
    r = run(BIN / "litefs", "explain", "n01", "/etc/ssh/sshd_config", "--json", "--db", demo_db)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["node"] == "n01" and doc["path"] == "/etc/ssh/sshd_config"
    assert isinstance(doc["writable"], bool) and doc["layers"]


def test_lslite_json(demo_db: str) -> None:
    r = run(BIN / "lslite", "n01", "--json", "--db", demo_db)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    (node,) = doc["nodes"]
    assert node["node"] == "n01" and node["litefile"] and doc["errors"] == {}
    assert all(set(e) == {"path", "option"} for e in node["litefile"])
    r = run(BIN / "lslite", "nosuchnode", "--json", "--db", demo_db)
    assert r.returncode != 0


def test_notify_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/site.db"
    eng: Engine = db.open_engine(url)
    load_tables(eng, cluster_tables({"n01": "127.0.0.11"}))
    eng.dispose()
    sock = tmp_path / "mountd.sock"
    with mountd_process(url, free_port(), "--insecure", "--socket", str(sock)):
        r = run(BIN / "litefs", "notify", "--server", f"unix:{sock}", "--json", "n01", "/etc/motd")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc == {"target": "n01", "paths": ["/etc/motd"], "targeted": 1, "notified": []}


@pytest.fixture
def image_site(tmp_path: Path) -> tuple[str, Path]:
    root = tmp_path / "install/netboot/rhels9/x86_64/compute/rootimg"
    build_busybox_image(root)
    url = f"sqlite:///{tmp_path}/img.db"
    eng = db.open_engine(url)
    load_tables(eng, {
        "site": f'#key,value,comments,disable\n"installdir","{tmp_path}/install",,\n',
        "osimage": "#imagename,groups,profile,imagetype,description,provmethod,rootfstype,"
        "nfsrootopts,osdistroname,osupdatename,cfmdir,osname,osvers,osarch,synclists,postscripts,"
        "postbootscripts,serverrole,isdeletable,kitcomponents,environvar,comments,disable\n"
        f'"{IMAGE}",,"compute","linux",,"statelite","nfs",,,,,"Linux","rhels9","x86_64",,,,,,,,,\n',
        "litefile": "#image,file,options,comments,disable\n"
        '"ALL","/etc/ntp.conf",,,\n"ALL","/etc/ssh/","tmpfs",,\n',
    })
    eng.dispose()
    return url, root


def test_liteimg_dryrun_changes_nothing(image_site: tuple[str, Path]) -> None:
    url, root = image_site
    before = tree_digest(root)
    r = run(BIN / "liteimg", "--db", url, "--dryrun", IMAGE)
    assert r.returncode == 0, r.stderr
    assert f"mv {root}/etc/ntp.conf {root}/.default/etc/ntp.conf" in r.stdout.splitlines()
    assert diff_digests(before, tree_digest(root)) == []
    r = run(BIN / "liteimg", "--db", url, "--dryrun", "--json", IMAGE)
    doc = json.loads(r.stdout)
    assert doc["dryrun"] is True and doc["actions"]
    assert diff_digests(before, tree_digest(root)) == []


def test_liteimg_verbose_json(image_site: tuple[str, Path]) -> None:
    url, root = image_site
    dry = json.loads(run(BIN / "liteimg", "--db", url, "--dryrun", "--json", IMAGE).stdout)
    r = run(BIN / "liteimg", "--db", url, "-V", "--json", IMAGE)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)  # the whole stdout is one document
    assert doc["dryrun"] is False and doc["actions"] == dry["actions"]
    assert (root / ".default/etc/ntp.conf").exists()
