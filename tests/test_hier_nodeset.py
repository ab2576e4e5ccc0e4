"""``nodeset`` with service nodes, against a real database and a real tftp folder: each node's
boot files name its SN's addresses, a pool adds ``litefs.pool=``, nodeset on an SN writes only
that SN's nodes, and bad pool entries cost one line each."""

from __future__ import annotations

from pathlib import Path

import pytest
from litefs.tools.nodeset_cmd import _facing_ip
from sqlalchemy import Engine

from tests.dbutil import load_tables
from tests.test_nodeset_cmd import IMAGE, _run, _setup

NODERES_HEAD = (
    "#node,servicenode,netboot,tftpserver,tftpdir,nfsserver,monserver,nfsdir,installnic,"
    "primarynic,discoverynics,cmdinterface,xcatmaster,current_osimage,next_osimage,nimserver,"
    "routenames,nameservers,proxydhcp,syslog,comments,disable\n"
)


def _noderes(node: str, servicenode: str = "", xcatmaster: str = "", nfsserver: str = "") -> str:
    return (f'"{node}","{servicenode}",,,,"{nfsserver}",,,,,,,"{xcatmaster}"'
            + ",,,,,,,,," + "\n")


def _hier(engine: Engine, root: Path, noderes: str, site: str = "",
          statemnt: str = "$noderes.xcatmaster:/nodedata") -> Path:
    imgdir = _setup(engine, root, statemnt=statemnt)
    load_tables(engine, {
        "noderes": NODERES_HEAD + noderes,
        "servicenode": "#node,nameserver,dhcpserver,tftpserver,nfsserver,conserver,monserver,"
                       "ldapserver,ntpserver,ftpserver,nimserver,ipforward,dhcpinterfaces,"
                       'proxydhcp,comments,disable\n"sn1",,,"1","1",,,,,,,,,,,\n'
                       '"sn2",,,"1","1",,,,,,,,,,,\n',
        "hosts": '#node,ip,hostnames,otherinterfaces,comments,disable\n'
                 '"n01","10.0.0.101",,,,\n"n02","10.0.0.102",,,,\n"n03","10.0.0.103",,,,\n'
                 '"sn1","10.0.1.1",,,,\n"sn2","10.0.2.1",,,,\n',
        "site": '#key,value,comments,disable\n"master","10.0.0.1",,\n' + site,
    })
    return imgdir


def _append(tftp: Path, node: str) -> str:
    cfg = (tftp / "pxelinux.cfg" / node).read_text()
    return next(line for line in cfg.splitlines() if line.startswith(" APPEND"))


def test_mn_writes_each_nodes_files_with_its_sn_addresses(
        engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    imgdir = _hier(engine, tmp_path, _noderes("n01", "sn1,sn2") + _noderes("n02", "sn2"))
    tftp = tmp_path / "tftpboot"
    assert _run(engine, tftp, "compute", f"osimage={IMAGE}") == 0
    one, two = _append(tftp, "n01"), _append(tftp, "n02")
    assert f"root=nfs:10.0.1.1:{imgdir}/rootimg:ro STATEMNT=10.0.1.1:/nodedata " in one
    assert "XCAT=10.0.1.1:3001 NODE=n01 " in one
    assert one.split()[-2:] == ["MNTOPTS=", "litefs.pool=10.0.2.1:3001"]
    assert f"root=nfs:10.0.2.1:{imgdir}/rootimg:ro STATEMNT=10.0.2.1:/nodedata " in two
    assert "XCAT=10.0.2.1:3001 " in two and "litefs.pool" not in two
    assert capsys.readouterr().err == ""


def test_nodeset_on_an_sn_writes_only_its_nodes_with_its_own_address(
        engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _hier(engine, tmp_path, _noderes("n01", "sn1,sn2") + _noderes("n02", "sn1"))
    tftp = tmp_path / "sn2-tftpboot"
    assert _run(engine, tftp, "--service-node", "sn2", "compute", f"osimage={IMAGE}") == 0
    out = capsys.readouterr()
    assert out.out == "n01: statelite rhels7.9-x86_64-compute\n"
    assert "nodeset: n02: served by sn1, not by sn2; skipped" in out.err
    assert not (tftp / "pxelinux.cfg" / "n02").exists()
    # !myipfn! became this server's address facing the node (xCAT's my_ip_facing), not
    # site.master (the MN); the other pool member follows in litefs.pool=.
    one = _append(tftp, "n01")
    me = _facing_ip("10.0.0.101")
    assert f"XCAT={me}:3001 " in one and f"STATEMNT={me}:/nodedata " in one
    assert one.split()[-1] == "litefs.pool=10.0.1.1:3001"
    assert _run(engine, tftp, "--service-node", "snX", "compute", f"osimage={IMAGE}") == 2
    assert "--service-node 'snX' is not in the servicenode table" in capsys.readouterr().err


def test_bad_pool_entries_are_one_line_each_and_the_run_goes_on(
        engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _hier(engine, tmp_path, _noderes("n01", "snX,sn1") + _noderes("n02", "sn2"),
          site='"installloc","mn:/install",,\n')
    tftp = tmp_path / "tftpboot"
    assert _run(engine, tftp, "compute", f"osimage={IMAGE}") == 0
    err = capsys.readouterr().err.splitlines()
    assert len([e for e in err if "'snX', which is not in the servicenode table" in e]) == 1
    assert any("site.installloc is 'mn:/install'" in e for e in err)
    assert "XCAT=10.0.1.1:3001 " in _append(tftp, "n01")
    assert "XCAT=10.0.2.1:3001 " in _append(tftp, "n02")


def test_sharedtftp_no_leaves_sn_nodes_to_their_sn(
        engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _hier(engine, tmp_path, _noderes("n01", "sn1") + _noderes("n02", "", xcatmaster="10.0.0.1"),
          site='"sharedtftp","no",,\n')
    tftp = tmp_path / "tftpboot"
    assert _run(engine, tftp, "compute", f"osimage={IMAGE}") == 0
    out = capsys.readouterr()
    assert out.out == "n02: statelite rhels7.9-x86_64-compute\n"
    assert "site.sharedtftp=no and noderes.servicenode=sn1" in out.err
    assert not (tftp / "pxelinux.cfg" / "n01").exists()


def test_a_pool_of_unknown_names_fails_only_that_node(
        engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _hier(engine, tmp_path, _noderes("n01", "snX,snY") + _noderes("n02", "sn2"))
    tftp = tmp_path / "tftpboot"
    assert _run(engine, tftp, "compute", f"osimage={IMAGE}") == 1
    err = capsys.readouterr().err
    assert "n01: none of its service nodes (snX,snY) can serve it" in err
    # xCAT goes on with the other nodes (issue 12.3): n02 is set, n01 has no file at all.
    assert not (tftp / "pxelinux.cfg" / "n01").exists()
    assert (tftp / "pxelinux.cfg" / "n02").exists()
