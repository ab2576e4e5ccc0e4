"""nodeset's boot files, byte for byte, against hand-written goldens from xCAT's plugins.

tests/golden/nodeset/README.md says which xCAT source lines each golden follows. The tables
are fixed here; the image lives under tmp_path, written as ``@ROOT@`` in the goldens.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from litefs.tools.nodeset_cmd import main
from sqlalchemy import Engine

from tests.dbutil import load_tables

GOLDEN = Path(__file__).parent / "golden" / "nodeset"
X86 = "rhels7.9-x86_64-statelite-compute"
PPC = "rhels7.9-ppc64-statelite-compute"
# A kernel whose first 512 bytes carry an x86-64 PE header: xnba.pm's has_efistub.
STUB = b"MZ" + b"\0" * 62 + b"PE\0\0\x64\x86" + b"\0" * 100

CASES = {  # case: (noderes.netboot, image, state)
    "pxe": ("pxe", X86, "osimage"),
    "pxe-boot": ("pxe", X86, "boot"),
    "xnba": ("xnba", X86, "osimage"),
    "xnba-efistub": ("xnba", X86, "osimage"),
    "xnba-boot": ("xnba", X86, "boot"),
    "grub2": ("grub2", X86, "osimage"),
    "grub2-ppc": ("grub2", PPC, "osimage"),
    "grub2-boot": ("grub2", X86, "boot"),
    "yaboot": ("yaboot", PPC, "osimage"),
    "yaboot-boot": ("yaboot", PPC, "boot"),
}

_OSIMAGE_HEAD = ('#imagename,groups,profile,imagetype,description,provmethod,rootfstype,'
                 'nfsrootopts,osdistroname,osupdatename,cfmdir,osname,osvers,osarch,'
                 'synclists,postscripts,postbootscripts,serverrole,isdeletable,'
                 'kitcomponents,environvar,comments,disable\n')
_LINUX_HEAD = ('#imagename,template,boottarget,addkcmdline,pkglist,pkgdir,otherpkglist,'
               'otherpkgdir,exlist,postinstall,rootimgdir,kerneldir,nodebootif,'
               'otherifce,netdrivers,kernelver,krpmver,permission,dump,'
               'crashkernelsize,partitionfile,driverupdatesrc,comments,disable\n')


def _tables(engine: Engine, root: Path, netboot: str) -> None:
    rows_os, rows_linux = [], []
    for image, arch in ((X86, "x86_64"), (PPC, "ppc64")):
        imgdir = root / "install" / "netboot" / "rhels7.9" / arch / "compute"
        (imgdir / "rootimg").mkdir(parents=True)
        (imgdir / "kernel").write_bytes(b"KERNEL")
        (imgdir / "initrd-statelite.gz").write_bytes(b"INITRD")
        rows_os.append(f'"{image}",,"compute","linux",,"statelite",,,,,,"Linux","rhels7.9",'
                       f'"{arch}",,,,,,,,,\n')
        rows_linux.append(f'"{image}",,,"quiet",,,,,,,"{imgdir}",,,,,,,,,,,,,\n')
    load_tables(engine, {
        "nodelist": '#node,groups,status,statustime,appstatus,appstatustime,primarysn,hidden,'
                    'updatestatus,updatestatustime,zonename,comments,disable\n'
                    '"n01","compute,all",,,,,,,,,,,\n',
        "hosts": '#node,ip,hostnames,otherinterfaces,comments,disable\n"n01","10.0.0.101",,,,\n',
        "mac": '#node,interface,mac,comments,disable\n"n01","eth0","AA:BB:CC:DD:EE:01",,\n',
        "site": '#key,value,comments,disable\n"master","10.0.0.1",,\n',
        "noderes": '#node,servicenode,netboot,tftpserver,tftpdir,nfsserver,monserver,nfsdir,'
                   'installnic,primarynic,discoverynics,cmdinterface,xcatmaster,'
                   'current_osimage,next_osimage,nimserver,routenames,nameservers,proxydhcp,'
                   'syslog,comments,disable\n'
                   f'"compute",,"{netboot}",,,,,,,,,,,,,,,,,,,\n',
        "nodehm": '#node,power,mgt,cons,termserver,termport,conserver,serialport,serialspeed,'
                  'serialflow,getmac,cmdmapping,consoleondemand,comments,disable\n'
                  '"compute",,"ipmi",,,,,"0","115200","hard",,,,,\n',
        "statelite": '#node,image,statemnt,mntopts,comments,disable\n'
                     '"compute",,"10.0.0.1:/nodedata",,,\n',
        "osimage": _OSIMAGE_HEAD + "".join(rows_os),
        "linuximage": _LINUX_HEAD + "".join(rows_linux),
    })


def _golden(case: str, root: Path) -> dict[str, bytes]:
    base = GOLDEN / case
    return {
        str(p.relative_to(base)): p.read_bytes().replace(b"@ROOT@", str(root).encode())
        for p in base.rglob("*") if p.is_file() and p.name != "links"
    }


def _written(tftp: Path) -> dict[str, bytes]:
    out = {}
    for p in tftp.rglob("*"):
        rel = str(p.relative_to(tftp))
        if p.is_file() and not p.is_symlink() and not rel.startswith(
                ("xcat/osimage/", "boot/grub2/grub2.")):
            out[rel] = p.read_bytes()
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_boot_files_match_xcat(case: str, engine: Engine, tmp_path: Path) -> None:
    netboot, image, state = CASES[case]
    _tables(engine, tmp_path, netboot)
    if case == "xnba-efistub":
        (tmp_path / "install/netboot/rhels7.9/x86_64/compute/kernel").write_bytes(STUB)
    tftp = tmp_path / "tftpboot"
    for arch in ("x86_64", "ppc"):  # grub2.pm refuses a node whose grub2.<arch> is missing
        (tftp / "boot" / "grub2").mkdir(parents=True, exist_ok=True)
        (tftp / "boot" / "grub2" / f"grub2.{arch}").write_bytes(b"GRUB")
    url = engine.url.render_as_string(hide_password=False)
    run = ["--db", url, "--tftpdir", str(tftp), "n01"]
    assert main([*run, f"osimage={image}"]) == 0
    if state == "boot":
        assert main([*run, "boot"]) == 0
    want = _golden(case, tmp_path)
    got = _written(tftp)
    if state == "boot":  # xCAT leaves the other files of the earlier state alone
        got = {k: v for k, v in got.items() if k in want}
    else:
        # every name that is not the main file is one of the golden links
        got = {k: v for k, v in got.items() if os.stat(tftp / k).st_nlink == 1 or k in want}
    assert got == want
    for line in (GOLDEN / case / "links").read_text().splitlines():
        kind, link, target = line.split()
        path = tftp / link
        if kind == "sym":
            assert path.is_symlink() and os.readlink(path) == target, line
        else:
            assert not path.is_symlink(), line
            assert path.stat().st_ino == (tftp / target).stat().st_ino, line
    if case == "grub2-boot":
        assert not (tftp / "boot/grub2/grub2-n01").is_symlink()  # grub2.pm unlinks it
