"""``nodeset`` against a real database (SQLite file and PostgreSQL) and a real tftp folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from litefs.tools.nodeset_cmd import main
from sqlalchemy import Engine

from tests.dbutil import dump_all, load_tables

IMAGE = "rhels7.9-x86_64-statelite-compute"


def _setup(engine: Engine, root: Path, statemnt: str = "10.0.0.1:/nodedata",
           netboot: str = "pxe") -> Path:
    imgdir = root / "install" / "netboot" / "rhels7.9" / "x86_64" / "compute"
    (imgdir / "rootimg").mkdir(parents=True)
    (imgdir / "kernel").write_bytes(b"KERNEL")
    (imgdir / "initrd.gz").write_bytes(b"INITRD")
    load_tables(engine, {
        "nodelist": '#node,groups,status,statustime,appstatus,appstatustime,primarysn,hidden,'
                    'updatestatus,updatestatustime,zonename,comments,disable\n'
                    '"n01","compute,all",,,,,,,,,,,\n"n02","compute,all",,,,,,,,,,,\n'
                    '"n03","other",,,,,,,,,,,\n',
        "hosts": '#node,ip,hostnames,otherinterfaces,comments,disable\n'
                 '"n01","10.0.0.101",,,,\n"n02","10.0.0.102",,,,\n"n03","10.0.0.103",,,,\n',
        "mac": '#node,interface,mac,comments,disable\n'
               '"n01","eth0","aa:bb:cc:dd:ee:01",,\n"n02","eth0","aa:bb:cc:dd:ee:02",,\n',
        "noderes": '#node,servicenode,netboot,tftpserver,tftpdir,nfsserver,monserver,nfsdir,'
                   'installnic,primarynic,discoverynics,cmdinterface,xcatmaster,'
                   'current_osimage,next_osimage,nimserver,routenames,nameservers,proxydhcp,'
                   'syslog,comments,disable\n'
                   f'"compute",,"{netboot}",,,,,,,,,,"10.0.0.1",,,,,,,,,\n',
        "statelite": '#node,image,statemnt,mntopts,comments,disable\n'
                     f'"compute",,"{statemnt}",,,\n',
        "osimage": '#imagename,groups,profile,imagetype,description,provmethod,rootfstype,'
                   'nfsrootopts,osdistroname,osupdatename,cfmdir,osname,osvers,osarch,'
                   'synclists,postscripts,postbootscripts,serverrole,isdeletable,'
                   'kitcomponents,environvar,comments,disable\n'
                   f'"{IMAGE}",,"compute","linux",,"statelite",,,,,,"Linux","rhels7.9",'
                   '"x86_64",,,,,,,,,\n',
        "linuximage": '#imagename,template,boottarget,addkcmdline,pkglist,pkgdir,otherpkglist,'
                      'otherpkgdir,exlist,postinstall,rootimgdir,kerneldir,nodebootif,'
                      'otherifce,netdrivers,kernelver,krpmver,permission,dump,'
                      'crashkernelsize,partitionfile,driverupdatesrc,comments,disable\n'
                      f'"{IMAGE}",,,,,,,,,,"{imgdir}",,,,,,,,,,,,,\n',
    })
    return imgdir


def _run(engine: Engine, tftp: Path, *args: str) -> int:
    url = engine.url.render_as_string(hide_password=False)
    return main(["--db", url, "--tftpdir", str(tftp), *args])


def test_osimage_writes_pxe_files_and_tables(engine: Engine, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    imgdir = _setup(engine, tmp_path)
    tftp = tmp_path / "tftpboot"
    assert _run(engine, tftp, "compute", f"osimage={IMAGE}") == 0
    out = capsys.readouterr().out
    assert out == "n01: statelite rhels7.9-x86_64-compute\nn02: statelite rhels7.9-x86_64-compute\n"
    cfg = (tftp / "pxelinux.cfg" / "n01").read_text()
    assert cfg == (
        "#statelite rhels7.9-x86_64-compute\nDEFAULT xCAT\nLABEL xCAT\n"
        f" KERNEL xcat/osimage/{IMAGE}/kernel\n"
        f" APPEND initrd=xcat/osimage/{IMAGE}/initrd-statelite.gz "
        f"root=nfs:10.0.0.1:{imgdir}/rootimg:ro STATEMNT=10.0.0.1:/nodedata "
        "XCAT=10.0.0.1:3001 NODE=n01 XCATHTTPPORT=80  selinux=0  MNTOPTS=\n  IPAPPEND 2\n"
    )
    link = tftp / "pxelinux.cfg" / "0A000065"
    assert link.is_symlink() and os.readlink(link) == "n01"
    assert (tftp / "xcat" / "osimage" / IMAGE / "kernel").read_bytes() == b"KERNEL"
    assert (tftp / "xcat" / "osimage" / IMAGE / "initrd-statelite.gz").read_bytes() == b"INITRD"
    tables = dump_all(engine)
    assert f'"n01",,,,"{IMAGE}"' not in tables["nodetype"]  # provmethod is a named column
    assert f'"n01","rhels7.9","x86_64","compute","{IMAGE}"' in tables["nodetype"]
    assert '"n02","statelite rhels7.9-x86_64-compute"' in tables["chain"]

    assert _run(engine, tftp, "n01", "boot") == 0
    assert capsys.readouterr().out == "n01: boot\n"
    # pxe.pm's local-boot form: LOCALBOOT at column 0, reached through the hex-IP link too.
    assert (tftp / "pxelinux.cfg" / "0A000065").read_text() == (
        "#boot\nDEFAULT xCAT\nLABEL xCAT\nLOCALBOOT 0\n")
    assert '"n01","boot"' in dump_all(engine)["chain"]


def test_nodes_without_mac_are_named_the_others_are_set(engine: Engine, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # xCAT sets the nodes it can and reports each one it cannot; it is not all-or-nothing.
    _setup(engine, tmp_path)
    tftp = tmp_path / "tftpboot"
    assert _run(engine, tftp, "n01,n03", f"osimage={IMAGE}") == 1
    out, err = capsys.readouterr()
    assert out == "n01: statelite rhels7.9-x86_64-compute\n"
    assert err == "nodeset: n03: No MAC address available for this node\n"
    assert (tftp / "pxelinux.cfg" / "n01").exists()
    assert not (tftp / "pxelinux.cfg" / "n03").exists()
    tables = dump_all(engine)
    assert '"n01","statelite rhels7.9-x86_64-compute"' in tables["chain"]
    assert '"n03"' not in tables["chain"]


def test_only_bad_nodes_changes_nothing(engine: Engine, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    _setup(engine, tmp_path)
    before = dump_all(engine)
    tftp = tmp_path / "tftpboot"
    assert _run(engine, tftp, "n03", f"osimage={IMAGE}") == 1
    assert "n03: No MAC address available for this node" in capsys.readouterr().err
    assert not tftp.exists()
    assert dump_all(engine) == before


def test_statemnt_without_server_is_refused(engine: Engine, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    _setup(engine, tmp_path, statemnt="/nodedata")
    assert _run(engine, tmp_path / "t", "n01", f"osimage={IMAGE}") == 1
    assert "has no server" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_statemnt_variables_expand(engine: Engine, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    _setup(engine, tmp_path, statemnt="$noderes.xcatmaster:/state/$node")
    tftp = tmp_path / "t"
    assert _run(engine, tftp, "n01", f"osimage={IMAGE}") == 0
    assert " STATEMNT=10.0.0.1:/state/n01 " in (tftp / "pxelinux.cfg" / "n01").read_text()


def test_statemnt_empty_variable_is_refused(engine: Engine, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    _setup(engine, tmp_path, statemnt="10.0.0.1:/state/$nodepos.room")
    assert _run(engine, tmp_path / "t", "n01", f"osimage={IMAGE}") == 1
    assert "$nodepos.room is empty for node n01" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_missing_kernel(engine: Engine, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    imgdir = _setup(engine, tmp_path)
    (imgdir / "kernel").unlink()
    assert _run(engine, tmp_path / "t", "n01", f"osimage={IMAGE}") == 1
    err = capsys.readouterr().err
    assert 'Did you run "genimage" before running "liteimg"? kernel cannot be found at' in err


@pytest.mark.parametrize("netboot,path,links", [
    ("yaboot", "etc/n01", ["etc/0a000065", "yaboot.conf-aa-bb-cc-dd-ee-01"]),
    ("xnba", "xcat/xnba/nodes/n01", []),
    ("grub2", "boot/grub2/n01", ["boot/grub2/grub.cfg-01-aa-bb-cc-dd-ee-01",
                                 "boot/grub2/grub.cfg-0A000065"]),
])
def test_other_boot_loaders(engine: Engine, tmp_path: Path, netboot: str, path: str,
                            links: list[str]) -> None:
    _setup(engine, tmp_path, netboot=netboot)
    tftp = tmp_path / "t"
    if netboot == "grub2":
        assert _run(engine, tftp, "n01", f"osimage={IMAGE}") == 1  # no grub2.x86_64 yet
        (tftp / "boot" / "grub2").mkdir(parents=True)
        (tftp / "boot" / "grub2" / "grub2.x86_64").write_bytes(b"GRUB")
    assert _run(engine, tftp, "n01", f"osimage={IMAGE}") == 0
    main_file = tftp / path
    assert main_file.read_text().startswith(("#statelite", "#!gpxe\n#statelite"))
    for link in links:
        assert (tftp / link).read_text() == main_file.read_text()
        if netboot != "pxe":  # p5 firmware, chrooted tftpd: hard links, never symlinks
            assert not (tftp / link).is_symlink()
            assert (tftp / link).stat().st_ino == main_file.stat().st_ino


def test_deprecated_states(engine: Engine, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    _setup(engine, tmp_path)
    assert _run(engine, tmp_path / "t", "n01", "statelite") == 2
    assert 'have been deprecated, use "osimage=<osimage_name>"' in capsys.readouterr().err


def test_osimage_without_name_uses_provmethod(engine: Engine, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    _setup(engine, tmp_path)
    tftp = tmp_path / "t"
    assert _run(engine, tftp, "n01", "osimage") == 1  # nothing names an image yet
    assert "nodetype.provmethod names none" in capsys.readouterr().err
    assert _run(engine, tftp, "n01", f"osimage={IMAGE}") == 0  # records provmethod
    (tftp / "pxelinux.cfg" / "n01").unlink()
    assert _run(engine, tftp, "n01", "osimage") == 0
    assert (tftp / "pxelinux.cfg" / "n01").read_text().startswith(
        "#statelite rhels7.9-x86_64-compute\n")


def test_xnba_boot_state(engine: Engine, tmp_path: Path) -> None:
    _setup(engine, tmp_path, netboot="xnba")
    tftp = tmp_path / "t"
    assert _run(engine, tftp, "compute", "boot") == 0
    assert (tftp / "xcat/xnba/nodes/n02").read_text() == "#!gpxe\n#boot\nexit\n"
    assert not (tftp / "xcat" / "osimage").exists()  # local boot copies no kernel


def test_mac_cell_ips_get_links_and_boot_nic_follows_xcat(engine: Engine,
                                                          tmp_path: Path) -> None:
    _setup(engine, tmp_path)
    load_tables(engine, {
        "mac": '#node,interface,mac,comments,disable\n'
               '"n01","eth0","aa:bb:cc:dd:ee:01!10.0.1.101|aa:bb:cc:dd:ee:11!n01-ib0",,\n',
        "noderes": '#node,servicenode,netboot,tftpserver,tftpdir,nfsserver,monserver,nfsdir,'
                   'installnic,primarynic,discoverynics,cmdinterface,xcatmaster,'
                   'current_osimage,next_osimage,nimserver,routenames,nameservers,proxydhcp,'
                   'syslog,comments,disable\n'
                   '"compute",,"pxe",,,,,,"mac","eth1",,,"10.0.0.1",,,,,,,,,\n',
    })
    tftp = tmp_path / "t"
    assert _run(engine, tftp, "n01", f"osimage={IMAGE}") == 0
    # One hex link per address: the hosts IP and the literal !ip of the mac cell.
    for name in ("0A000065", "0A000165"):
        assert os.readlink(tftp / "pxelinux.cfg" / name) == "n01"
    # installnic=mac means "boot by MAC" (gen_net_boot_params): primarynic is not consulted,
    # and x86 gets no BOOTIF= on the command line.
    cfg = (tftp / "pxelinux.cfg" / "n01").read_text()
    assert " XCATHTTPPORT=80  selinux=0  MNTOPTS=\n" in cfg


def test_nodehm_console_args_inherit_from_group(engine: Engine, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    imgdir = _setup(engine, tmp_path)
    header = ('#node,power,mgt,cons,termserver,termport,conserver,serialport,serialspeed,'
              'serialflow,getmac,cmdmapping,consoleondemand,comments,disable\n')
    load_tables(engine, {"nodehm": header + '"compute",,"ipmi",,,,,"0","115200","hard",,,,,\n'
                                            '"n02",,"ipmi",,,,,"1","9600",,,,,,\n'})
    tftp = tmp_path / "t"
    assert _run(engine, tftp, "compute", f"osimage={IMAGE}") == 0
    head = f"root=nfs:10.0.0.1:{imgdir}/rootimg:ro STATEMNT=10.0.0.1:/nodedata XCAT=10.0.0.1:3001"
    assert (f" APPEND initrd=xcat/osimage/{IMAGE}/initrd-statelite.gz {head} NODE=n01 "
            "XCATHTTPPORT=80  console=tty0 console=ttyS0,115200n8r selinux=0  MNTOPTS=\n"
            ) in (tftp / "pxelinux.cfg" / "n01").read_text()
    # n02's own row wins per column; its blank serialflow still comes from the group (xCAT).
    assert (f"{head} NODE=n02 XCATHTTPPORT=80  console=tty0 console=ttyS1,9600n8r selinux=0  "
            "MNTOPTS=\n") in (tftp / "pxelinux.cfg" / "n02").read_text()

    # A port without a speed is xCAT's error; nothing is written or changed.
    load_tables(engine, {"nodehm": header + '"n01",,,,,,,"0",,,,,,,\n'})
    before = dump_all(engine)
    assert _run(engine, tmp_path / "t2", "n01", f"osimage={IMAGE}") == 1
    assert ("n01: serialport defined, but no serialspeed for n01 in nodehm table"
            in capsys.readouterr().err)
    assert not (tmp_path / "t2").exists()
    assert dump_all(engine) == before
