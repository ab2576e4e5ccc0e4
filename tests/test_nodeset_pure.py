"""Kernel command line and boot file formats written by nodeset (pure, reference §8)."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from litefs.errors import BootError
from litefs.nodeset import (
    BootSpec,
    boot_files,
    check_statemnt,
    console_args,
    ip_hex,
    kernel_cmdline,
    mac_ips,
    nfsroot_opts,
    normalise_mac,
    root_dir,
    uses_dracut,
)

SPEC = BootSpec(
    node="n01",
    image="rhels7.9-x86_64-statelite-compute",
    osvers="rhels7.9",
    osarch="x86_64",
    profile="compute",
    image_server="10.0.0.1",
    root_dir="/install/netboot/rhels7.9/x86_64/compute",
    xcatmaster="10.0.0.1",
    statemnt="10.0.0.1:/nodedata",
)


def test_cmdline_order_matches_xcat() -> None:
    assert kernel_cmdline(SPEC) == (
        "root=nfs:10.0.0.1:/install/netboot/rhels7.9/x86_64/compute/rootimg:ro "
        "STATEMNT=10.0.0.1:/nodedata XCAT=10.0.0.1:3001 NODE=n01 XCATHTTPPORT=80 "
        "selinux=0 MNTOPTS="
    )


def test_cmdline_issue_6495_shape() -> None:
    # The real example from issue #6495 (xnba), console args from nodehm included; xCAT's
    # doubled space before console= is a quirk of its string pasting, not kept.
    spec = BootSpec(
        node="jfe01", image="x", osvers="centos7", osarch="x86_64", profile="login",
        image_server="10.187.1.150",
        root_dir="/install/netboot/centos7-statelite/x86_64/login-20191015",
        xcatmaster="10.187.1.150", statemnt="10.187.1.150:/install/litetree/login",
        serialport="0", serialspeed="115200", serialflow="hard",
    )
    assert kernel_cmdline(spec) == (
        "root=nfs:10.187.1.150:/install/netboot/centos7-statelite/x86_64/login-20191015/rootimg:ro "
        "STATEMNT=10.187.1.150:/install/litetree/login XCAT=10.187.1.150:3001 NODE=jfe01 "
        "XCATHTTPPORT=80 console=tty0 console=ttyS0,115200n8r MNTOPTS="
    )


@pytest.mark.parametrize(
    ("osarch", "port", "speed", "flow", "want"),
    [
        ("x86_64", "", "115200", "hard", []),  # no serialport: no console args
        ("x86_64", "1", "9600", "", ["console=tty0", "console=ttyS1,9600"]),
        ("x86_64", "0", "115200", "soft", ["console=tty0", "console=ttyS0,115200"]),
        ("x86_64", "0", "115200", "cts", ["console=tty0", "console=ttyS0,115200n8r"]),
        ("x86_64", "0", "115200", "ctsrts", ["console=tty0", "console=ttyS0,115200n8r"]),
        ("ppc64le", "0", "19200", "", ["console=tty0", "console=hvc0,19200"]),
    ],
)
def test_console_args_follow_nodehm(osarch: str, port: str, speed: str, flow: str,
                                    want: list[str]) -> None:
    assert console_args("n01", osarch, port, speed, flow) == want


def test_console_args_sit_after_nic_args_before_selinux() -> None:
    spec = dataclasses.replace(SPEC, nicname="eth0", mac="aa:bb:cc:dd:ee:ff",
                               serialport="0", serialspeed="115200")
    assert kernel_cmdline(spec).split()[5:] == [
        "ifname=eth0:aa:bb:cc:dd:ee:ff", "netdev=eth0", "console=tty0",
        "console=ttyS0,115200", "selinux=0", "MNTOPTS=",
    ]


@pytest.mark.parametrize(
    ("port", "speed", "needle"),
    [
        ("0", "", "serialport defined, but no serialspeed for n01 in nodehm table"),
        ("ttyS0", "115200", "nodehm.serialport 'ttyS0' is not a number"),
        ("0", "115200n8", "nodehm.serialspeed '115200n8' is not a number"),
    ],
)
def test_bad_console_settings_are_refused(port: str, speed: str, needle: str) -> None:
    spec = dataclasses.replace(SPEC, serialport=port, serialspeed=speed)
    with pytest.raises(BootError, match=needle):
        kernel_cmdline(spec)


def test_legacy_init_uses_nfsroot_and_empty_statemnt() -> None:
    spec = BootSpec(
        node="n1", image="i", osvers="rhel5.3", osarch="x86_64", profile="compute",
        image_server="172.10.0.1", root_dir="/install/netboot/rhel5.3/x86_64/compute",
        xcatmaster="172.10.0.1", mntopts="nolock,vers=3",
    )
    assert kernel_cmdline(spec) == (
        "NFSROOT=172.10.0.1:/install/netboot/rhel5.3/x86_64/compute STATEMNT= "
        "XCAT=172.10.0.1:3001 NODE=n1 XCATHTTPPORT=80 MNTOPTS=nolock,vers=3"
    )


def test_cmdline_optional_parts_in_place() -> None:
    spec = BootSpec(
        node="n1", image="i", osvers="sles15", osarch="x86_64", profile="p",
        image_server="!myipfn!", root_dir="/r", nfsrootopts="vers=4.2,actimeo=60",
        nodestatus="n", nicname="eth0", mac="AA-BB-CC-DD-EE-0F", addkcmdline=" quiet ",
    )
    assert kernel_cmdline(spec) == (
        "root=nfs:!myipfn!:/r/rootimg:ro,vers=4.2,actimeo=60 STATEMNT= XCAT=!myipfn!:3001 "
        "NODE=n1 nonodestatus XCATHTTPPORT=80 ifname=eth0:aa:bb:cc:dd:ee:0f netdev=eth0 "
        "MNTOPTS= quiet"
    )


def test_ppc_without_nic_gets_bootif() -> None:
    spec = BootSpec(node="p1", image="i", osvers="rhels6.4", osarch="ppc64", profile="c",
                    image_server="1.2.3.4", root_dir="/r", mac="00:11:22:33:44:55")
    assert "BOOTIF=00:11:22:33:44:55 MNTOPTS=" in kernel_cmdline(spec)


def test_mac_as_boot_nic_gets_bootif() -> None:
    spec = BootSpec(node="x1", image="i", osvers="rhels8.6", osarch="x86_64", profile="c",
                    image_server="1.2.3.4", root_dir="/r", mac="00:11:22:33:44:55",
                    nicname="00:11:22:33:44:55")
    assert " BOOTIF=00:11:22:33:44:55 selinux=0 MNTOPTS=" in kernel_cmdline(spec)
    plain = BootSpec(**{**spec.__dict__, "nicname": ""})
    assert "BOOTIF" not in kernel_cmdline(plain)  # x86 without a boot NIC: none


def test_mac_cell_ips() -> None:
    assert mac_ips("aa:bb:cc:dd:ee:01!10.0.1.5|aa:bb:cc:dd:ee:02!n01-ib0|aa:bb:cc:dd:ee:03") \
        == ["10.0.1.5"]
    files = boot_files("yaboot", node="n01", ip="10.0.0.101",
                       mac="aa:bb:cc:dd:ee:01!10.0.1.5", state="boot", image="i", cmdline="",
                       myip="10.0.0.1")
    assert files[0].hardlinks == ("etc/0a000065", "etc/0a000105", "yaboot.conf-aa-bb-cc-dd-ee-01")
    assert files[0].content == "#boot\ntimeout=5\nbye\n"


@pytest.mark.parametrize("bad", ["rw", "ro,defaults", "a,,b", "a, b"])
def test_nfsrootopts_rejected(bad: str) -> None:
    with pytest.raises(BootError):
        nfsroot_opts(bad)


def test_nfsrootopts_ro_forced_once() -> None:
    assert nfsroot_opts("") == "ro"
    assert nfsroot_opts("ro,vers=3") == "ro,vers=3"


@pytest.mark.parametrize("statemnt", ["/nodedata", ":/nodedata", "  :/x"])
def test_statemnt_without_server_is_an_error(statemnt: str) -> None:
    with pytest.raises(BootError, match="has no server"):
        check_statemnt("n01", statemnt)
    with pytest.raises(BootError, match="has no server"):
        kernel_cmdline(BootSpec(**{**SPEC.__dict__, "statemnt": statemnt}))


def test_statemnt_relative_path_is_an_error() -> None:
    with pytest.raises(BootError, match="absolute"):
        check_statemnt("n01", "srv:nodedata")


def test_root_dir_rules() -> None:
    assert root_dir("", "/install/netboot/x/y/z", "o", "a", "p") == "/install/netboot/x/y/z"
    assert root_dir("/vol/install", "/ignored", "o", "a", "p") == "/vol/install/netboot/o/a/p"
    assert root_dir("//exports/img", "/ignored", "o", "a", "p") == "/exports/img"


def test_dracut_detection() -> None:
    assert uses_dracut("rhels7.9") and uses_dracut("rhels8.6") and uses_dracut("sles15")
    assert not uses_dracut("rhel5.3") and not uses_dracut("rhels5.4") and not uses_dracut("sles11")


@given(st.ip_addresses(v=4))
def test_ip_hex_roundtrip(ip: ipaddress.IPv4Address) -> None:
    text = ip_hex(str(ip))
    assert len(text) == 8 and text == text.upper()
    assert ipaddress.IPv4Address(bytes.fromhex(text)) == ip
    assert ip_hex(str(ip), upper=False) == text.lower()


def test_ip_hex_example() -> None:
    assert ip_hex("10.0.0.101") == "0A000065"
    with pytest.raises(BootError):
        ip_hex("node1")


@given(st.binary(min_size=6, max_size=6), st.sampled_from([":", "-", ""]), st.booleans())
def test_mac_forms_normalise(raw: bytes, sep: str, upper: bool) -> None:
    text = sep.join(f"{b:02x}" for b in raw)
    text = text.upper() if upper else text
    assert normalise_mac(text + "|11:22:33:44:55:66") == ":".join(f"{b:02x}" for b in raw)


def test_bad_mac() -> None:
    with pytest.raises(BootError, match="not a MAC"):
        normalise_mac("n01-eth0")


CMD = kernel_cmdline(BootSpec(**{**SPEC.__dict__, "xcatmaster": "!myipfn!"}))


def _one(files, path):  # type: ignore[no-untyped-def]
    return next(f for f in files if f.path == path)


def test_pxelinux_file_and_hex_link() -> None:
    files = boot_files("pxe", node="n01", ip="10.0.0.101", mac="aa:bb:cc:dd:ee:ff",
                       state=SPEC.currstate, image=SPEC.image, cmdline=CMD, myip="10.0.0.1")
    f = _one(files, "pxelinux.cfg/n01")
    img = "xcat/osimage/rhels7.9-x86_64-statelite-compute"
    assert f.content == (
        "#statelite rhels7.9-x86_64-compute\nDEFAULT xCAT\nLABEL xCAT\n"
        f" KERNEL {img}/kernel\n APPEND initrd={img}/initrd-statelite.gz "
        + CMD.replace("!myipfn!", "10.0.0.1") + "\n  IPAPPEND 2\n"
    )
    assert f.symlinks == ("pxelinux.cfg/0A000065",)
    boot = _one(boot_files("", node="n01", ip=None, mac="", state="boot", image="x",
                           cmdline="", myip="1.1.1.1"), "pxelinux.cfg/n01")
    assert boot.content == "#boot\nDEFAULT xCAT\nLABEL xCAT\nLOCALBOOT 0\n"
    assert boot.symlinks == ()


def test_yaboot_hardlinks() -> None:
    files = boot_files("yaboot", node="n01", ip="10.0.0.101", mac="AA:BB:CC:DD:EE:FF",
                       state=SPEC.currstate, image="img", cmdline="A=!myipfn!", myip="10.0.0.1")
    f = _one(files, "etc/n01")
    assert f.content == (
        "#statelite rhels7.9-x86_64-compute\ntimeout=5\nimage=xcat/osimage/img/kernel\n"
        "\tlabel=xcat\n\tinitrd=xcat/osimage/img/initrd-statelite.gz\n\tappend=\"A=10.0.0.1\"\n"
    )
    assert f.hardlinks == ("etc/0a000065", "yaboot.conf-aa-bb-cc-dd-ee-ff")


def test_xnba_uses_next_server() -> None:
    files = boot_files("xnba", node="n01", ip="10.0.0.101", mac="aa:bb:cc:dd:ee:ff",
                       state="statelite o-a-p", image="img", cmdline="XCAT=!myipfn!:3001",
                       myip="10.0.0.1")
    script = _one(files, "xcat/xnba/nodes/n01").content
    assert script.startswith("#!gpxe\n#statelite o-a-p\n")
    assert "imgargs kernel XCAT=${next-server}:3001 BOOTIF=01-${netX/mac:hexhyp}\n" in script
    assert "imgfetch -n initrd http://${next-server}:80/tftpboot/xcat/osimage/img/initrd-statelite.gz" in script
    assert {f.path for f in files} == {"xcat/xnba/nodes/n01", "xcat/xnba/nodes/n01.uefi",
                                       "xcat/xnba/nodes/n01.elilo"}


def test_grub2_links() -> None:
    files = boot_files("grub2", node="n01", ip="10.0.0.101", mac="aa:bb:cc:dd:ee:ff",
                       state="statelite o-a-p", image="img", cmdline="X", myip="10.0.0.1")
    f = _one(files, "boot/grub2/n01")
    assert "linux /tftpboot/xcat/osimage/img/kernel X BOOTIF=$net_default_mac\n" in f.content
    assert f.symlinks == ("boot/grub2/grub.cfg-01-aa-bb-cc-dd-ee-ff", "boot/grub2/grub.cfg-0A000065")


def test_unknown_netboot() -> None:
    with pytest.raises(BootError, match="not supported"):
        boot_files("petitboot", node="n", ip=None, mac="", state="boot", image="i",
                   cmdline="", myip="1.1.1.1")
