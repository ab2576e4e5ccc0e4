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
    LoaderInput,
    add_kcmdline,
    boot_files,
    boot_mac,
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
    # anaconda.pm pastes "XCATHTTPPORT=80 " then " selinux=0 " then " MNTOPTS=": two blanks.
    assert kernel_cmdline(SPEC) == (
        "root=nfs:10.0.0.1:/install/netboot/rhels7.9/x86_64/compute/rootimg:ro "
        "STATEMNT=10.0.0.1:/nodedata XCAT=10.0.0.1:3001 NODE=n01 XCATHTTPPORT=80  "
        "selinux=0  MNTOPTS="
    )


def test_cmdline_issue_6495_shape() -> None:
    # The real example from issue #6495 (xnba), byte for byte, doubled blank included.
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
        "XCATHTTPPORT=80  console=tty0 console=ttyS0,115200n8r MNTOPTS="
    )


@pytest.mark.parametrize(
    ("osarch", "port", "speed", "flow", "want"),
    [
        ("x86_64", "", "115200", "hard", ""),  # no serialport: no console args
        ("x86_64", "1", "9600", "", " console=tty0 console=ttyS1,9600"),
        ("x86_64", "0", "115200", "soft", " console=tty0 console=ttyS0,115200"),
        # anaconda.pm tests /(hard|tcs|ctsrts)/: plain "cts" gets no n8r there either.
        ("x86_64", "0", "115200", "cts", " console=tty0 console=ttyS0,115200"),
        ("x86_64", "0", "115200", "ctsrts", " console=tty0 console=ttyS0,115200n8r"),
        ("ppc64le", "0", "19200", "", " console=tty0 console=hvc0,19200"),
    ],
)
def test_console_args_follow_nodehm(osarch: str, port: str, speed: str, flow: str,
                                    want: str) -> None:
    assert console_args("n01", osarch, port, speed, flow) == want


def test_console_args_sit_after_nic_args_before_selinux() -> None:
    spec = dataclasses.replace(SPEC, installnic="eth0", mac="aa:bb:cc:dd:ee:ff",
                               serialport="0", serialspeed="115200")
    assert kernel_cmdline(spec).endswith(
        "XCATHTTPPORT=80 netdev=eth0  console=tty0 console=ttyS0,115200 selinux=0  MNTOPTS=")


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
        "XCAT=172.10.0.1:3001 NODE=n1 XCATHTTPPORT=80  MNTOPTS=nolock,vers=3"
    )


def test_cmdline_optional_parts_in_place() -> None:
    spec = BootSpec(
        node="n1", image="i", osvers="sles15", osarch="x86_64", profile="p",
        image_server="!myipfn!", root_dir="/r", nfsrootopts="vers=4.2,actimeo=60",
        nodestatus="n", installnic="eth0", mac="AA-BB-CC-DD-EE-0F", debugmode="2",
        partition=True,
    )
    assert kernel_cmdline(spec) == (
        "root=nfs:!myipfn!:/r/rootimg:ro,vers=4.2,actimeo=60 STATEMNT= XCAT=!myipfn!:3001 "
        "NODE=n1  nonodestatus XCATHTTPPORT=80  LOGSERVER=!myipfn!  syslog.server=!myipfn! "
        "syslog.type=rsyslogd syslog.filter=*.*  xcatdebugmode=2 netdev=eth0  PARTITION_RH "
        "MNTOPTS="
    )


@pytest.mark.parametrize(("kind", "add", "tail"), [
    # pxe.pm/xnba.pm paste "<bootparams> <linuximage>": the empty first part leaves a blank.
    ("pxe", "quiet", "MNTOPTS=  quiet "),
    ("xnba", "a  R::b c", "MNTOPTS=  a  c "),
    ("pxe", "R::only", "MNTOPTS=  "),
    # grub2.pm/yaboot.pm paste "<linuximage> " and skip an all-R:: value.
    ("grub2", "quiet", "MNTOPTS= quiet "),
    ("yaboot", "R::only", "MNTOPTS="),
    ("pxe", "", "MNTOPTS="),
])
def test_addkcmdline_pasting(kind: str, add: str, tail: str) -> None:
    assert add_kcmdline(kind, "MNTOPTS=", add) == tail


def test_ppc_without_nic_gets_bootif() -> None:
    spec = BootSpec(node="p1", image="i", osvers="rhels6.4", osarch="ppc64", profile="c",
                    image_server="1.2.3.4", root_dir="/r", mac="00:11:22:33:44:55")
    assert "XCATHTTPPORT=80 BOOTIF=00:11:22:33:44:55  MNTOPTS=" in kernel_cmdline(spec)


def test_mac_as_boot_nic_gets_bootif_in_table_case() -> None:
    spec = BootSpec(node="x1", image="i", osvers="rhels8.6", osarch="x86_64", profile="c",
                    image_server="1.2.3.4", root_dir="/r", mac="00:11:22:33:44:55",
                    installnic="00:11:22:AA:44:55")
    assert " BOOTIF=00:11:22:AA:44:55  selinux=0  MNTOPTS=" in kernel_cmdline(spec)
    plain = BootSpec(**{**spec.__dict__, "installnic": ""})
    assert "BOOTIF" not in kernel_cmdline(plain)  # x86 without a boot NIC: none


@pytest.mark.parametrize(("cell", "want"), [
    ("AA:BB:CC:DD:EE:01", "AA:BB:CC:DD:EE:01"),          # case kept
    ("aabbccddee01", "aa:bb:cc:dd:ee:01"),                # colons added
    ("aa:bb:cc:dd:ee:01|aa:bb:cc:dd:ee:02", "aa:bb:cc:dd:ee:02"),  # last plain entry wins
    ("aa:bb:cc:dd:ee:01!n01|aa:bb:cc:dd:ee:02", "aa:bb:cc:dd:ee:01"),  # <mac>!<node> wins
])
def test_boot_mac_follows_parse_mac_tab_entry(cell: str, want: str) -> None:
    assert boot_mac(cell, "n01") == want


def test_mac_cell_ips() -> None:
    assert mac_ips("aa:bb:cc:dd:ee:01!10.0.1.5|aa:bb:cc:dd:ee:02!n01-ib0|aa:bb:cc:dd:ee:03") \
        == ["10.0.1.5"]
    files = boot_files("yaboot", LoaderInput(node="n01", state="boot", ip="10.0.0.101",
                                             mac="AA:BB:CC:DD:EE:01!10.0.1.5|AA:BB:CC:DD:EE:02"))
    assert files[0].hardlinks == ("etc/0a000065", "etc/0a000105", "yaboot.conf-aa-bb-cc-dd-ee-02")
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


def _one(files, path):  # type: ignore[no-untyped-def]
    return next(f for f in files if f.path == path)


def test_unknown_netboot() -> None:
    with pytest.raises(BootError, match="not supported"):
        boot_files("petitboot", LoaderInput(node="n", state="boot"))


def test_xnba_efistub_kernel_boots_without_elilo() -> None:
    inp = LoaderInput(node="n01", state="statelite o-a-p", image="img", cmdline="X=!myipfn!",
                      efistub=True)
    files = boot_files("xnba", inp)
    assert {f.path for f in files} == {"xcat/xnba/nodes/n01", "xcat/xnba/nodes/n01.uefi"}
    uefi = _one(files, "xcat/xnba/nodes/n01.uefi").content
    assert "imgargs kernel X=${next-server} BOOTIF=01-${netX/mac:hexhyp} initrd=initrd\n" in uefi
    # xnba.pm keeps SLES 11 on elilo even with a stub.
    sles = boot_files("xnba", dataclasses.replace(inp, image="sles11.4-x86_64-lite"))
    assert "xcat/xnba/nodes/n01.elilo" in {f.path for f in sles}


def test_grub2_http_prefixes_tftpdir_and_port() -> None:
    inp = LoaderInput(node="n01", state="statelite o-a-p", image="img", cmdline="X",
                      tftp_server="10.0.0.2", httpport="8080", osarch="ppc64le",
                      mac="aa:bb:cc:dd:ee:01")
    f = boot_files("grub2-http", inp)[0]
    assert "    set root=http,10.0.0.2:8080\n" in f.content
    assert "    linux /tftpboot/xcat/osimage/img/kernel X BOOTIF=$net_default_mac\n" in f.content
    assert f.other_links == (("boot/grub2/grub2-n01", "grub2.ppc"),)
