"""What ``nodeset`` writes, as pure functions: the kernel command line and the boot files.

xCAT's ``nodeset <noderange> osimage=<image>`` builds one kernel command line per statelite
node (anaconda.pm ``mkstatelite``, reference §8.1) and hands it to the boot-file writer chosen
by ``noderes.netboot`` (pxelinux, yaboot, xnba, grub2; §8.2–8.4). This module computes both
from plain values gathered by :mod:`litefs.tools.nodeset_cmd`; it touches no files and no
database, so every format is unit-tested byte for byte. ``!myipfn!`` (the MN address as the
node sees it) is left in the command line and replaced per boot loader, as xCAT does.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from litefs.errors import BootError

#: Placeholder for "the address of this server on the node's network" (xCAT's name).
MYIPFN = "!myipfn!"

#: Boot loaders nodeset can write for (``noderes.netboot``); pxe is the default.
NETBOOT_KINDS: tuple[str, ...] = ("pxe", "yaboot", "xnba", "grub2")

#: Kernel and initrd names under ``<tftpdir>/xcat/osimage/<image>/``.
KERNEL_NAME = "kernel"
INITRD_NAME = "initrd-statelite.gz"

# OS versions whose initrd is the pre-dracut "legacy init" that reads NFSROOT= (RHEL5 era).
_LEGACY_INIT = re.compile(r"^(rhels?5|centos5|sles1[01]|fedora([89]|1[01]))(\D|$)")
# selinux=0 is added for these (reference §8.1).
_SELINUX_OFF = re.compile(r"^((rhels?|ol|alma|rocky)(7|8|9|10)|fedora1[23])(\D|$)")
_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-]?[0-9a-fA-F]{2}){5}$")


@dataclass(frozen=True)
class BootSpec:
    """Everything the kernel command line of one statelite node depends on.

    ``image_server`` is an IP (or ``!myipfn!``); ``root_dir`` is the image directory on it
    (``<rootimgdir>`` or the ``noderes.nfsdir`` form, without ``/rootimg``). ``statemnt`` is
    already variable-expanded (``server:/path`` or ""). ``xcatmaster`` is an IP or
    ``!myipfn!``.
    """

    node: str
    image: str
    osvers: str
    osarch: str
    profile: str
    image_server: str
    root_dir: str
    xcatmaster: str = MYIPFN
    xcatdport: str = "3001"
    httpport: str = "80"
    statemnt: str = ""
    mntopts: str = ""
    nfsrootopts: str = ""
    nodestatus: str = ""
    nicname: str = ""
    mac: str = ""
    addkcmdline: str = ""
    serialport: str = ""
    serialspeed: str = ""
    serialflow: str = ""

    @property
    def currstate(self) -> str:
        """``chain.currstate`` and the first line of every boot file."""
        return f"statelite {self.osvers}-{self.osarch}-{self.profile}"


def uses_dracut(osvers: str) -> bool:
    """True when the image's initrd is dracut-based (reads ``root=nfs:``), else legacy init."""
    return not _LEGACY_INIT.match(osvers)


def nfsroot_opts(extra: str) -> str:
    """``ro`` plus ``osimage.nfsrootopts``, validated as xCAT does (ro forced, rw refused)."""
    if not extra:
        return "ro"
    items = extra.split(",")
    for item in items:
        if item == "" or item != item.strip() or any(c.isspace() for c in item):
            raise BootError(
                f"osimage.nfsrootopts {extra!r} has an empty item or whitespace; "
                "give a comma list such as 'vers=4.2,actimeo=60'"
            )
        if item in ("rw", "defaults"):
            raise BootError(
                f"osimage.nfsrootopts may not contain {item!r}: the image root is always "
                "mounted read-only; remove it"
            )
    return ",".join(["ro", *[i for i in items if i != "ro"]])


def root_dir(nfsdir: str, rootimgdir: str, osvers: str, osarch: str, profile: str) -> str:
    """Image directory on the image server (anaconda.pm): ``noderes.nfsdir`` wins.

    ``nfsdir`` set ⇒ ``<nfsdir>/netboot/<os>/<arch>/<profile>``; ``//abs`` ⇒ ``/abs`` verbatim.
    """
    if nfsdir:
        if nfsdir.startswith("//"):
            return nfsdir[1:]
        return f"{nfsdir}/netboot/{osvers}/{osarch}/{profile}"
    return rootimgdir


def check_statemnt(node: str, statemnt: str) -> None:
    """Refuse a STATEMNT without a server (DESIGN: fixed quirk, reference §4 step 1).

    xCAT's boot script silently skips the persistent mount when STATEMNT has no server, so
    "persistent" files live in RAM and vanish at reboot. We stop at nodeset instead.
    """
    if not statemnt:
        return
    server, sep, path = statemnt.partition(":")
    if not sep or not server.strip():
        raise BootError(
            f"{node}: statelite.statemnt {statemnt!r} has no server, so persistent files would "
            "silently live in RAM and be lost at reboot; set it to server:/path "
            f"(e.g. chtab node={node} statelite.statemnt=10.0.0.1:/nodedata)"
        )
    if not path.startswith("/"):
        raise BootError(
            f"{node}: statelite.statemnt {statemnt!r}: the path after the server must be "
            "absolute (server:/path)"
        )


def normalise_mac(mac: str) -> str:
    """First MAC of a ``mac`` cell (``aa:bb..|..`` or ``aabb..!host``) in colon form."""
    first = re.split(r"[|!]", mac.strip(), maxsplit=1)[0].strip()
    if not _MAC.match(first):
        raise BootError(f"mac {mac!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    digits = re.sub(r"[:-]", "", first).lower()
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def console_args(node: str, osarch: str, port: str, speed: str, flow: str) -> list[str]:
    """``console=tty0 console=ttyS<port>,<speed>[n8r]`` from ``nodehm`` (anaconda.pm).

    Nothing when ``serialport`` is unset. ppc64 consoles are ``hvc<port>``; ``n8r`` (RTS/CTS
    hardware flow control) is added when ``serialflow`` mentions hard, cts or ctsrts.
    """
    port, speed = port.strip(), speed.strip()
    if not port:
        return []
    if not speed:
        raise BootError(
            f"{node}: serialport defined, but no serialspeed for {node} in nodehm table; "
            f"set it (e.g. chtab node={node} nodehm.serialspeed=115200)"
        )
    for col, value in (("serialport", port), ("serialspeed", speed)):
        if not value.isdigit():
            raise BootError(
                f"{node}: nodehm.{col} {value!r} is not a number; the kernel would ignore "
                f"the console argument (e.g. nodehm.serialport=0 nodehm.serialspeed=115200)"
            )
    dev = "hvc" if osarch.startswith("ppc64") else "ttyS"
    suffix = "n8r" if re.search(r"hard|cts", flow) else ""
    return ["console=tty0", f"console={dev}{port},{speed}{suffix}"]


def kernel_cmdline(spec: BootSpec) -> str:
    """The kernel command line in xCAT's order (reference §8.1), before boot-loader fixups.

    ``root=nfs:…:ro[,opts]`` (dracut) or ``NFSROOT=`` (legacy init), ``STATEMNT=``, ``XCAT=``,
    ``NODE=``, ``nonodestatus``, ``XCATHTTPPORT=``, NIC args, console args (``nodehm``),
    ``selinux=0``, ``MNTOPTS=``, then ``linuximage.addkcmdline``.
    """
    check_statemnt(spec.node, spec.statemnt)
    args: list[str] = []
    if uses_dracut(spec.osvers):
        opts = nfsroot_opts(spec.nfsrootopts)
        args.append(f"root=nfs:{spec.image_server}:{spec.root_dir}/rootimg:{opts}")
    else:
        args.append(f"NFSROOT={spec.image_server}:{spec.root_dir}")
    args.append(f"STATEMNT={spec.statemnt}")
    args.append(f"XCAT={spec.xcatmaster}:{spec.xcatdport}")
    args.append(f"NODE={spec.node}")
    if spec.nodestatus in ("n", "N", "0"):
        args.append("nonodestatus")
    args.append(f"XCATHTTPPORT={spec.httpport}")
    mac = normalise_mac(spec.mac) if spec.mac else ""
    if spec.nicname and not _MAC.match(spec.nicname):
        if mac:
            args.append(f"ifname={spec.nicname}:{mac}")
        args.append(f"netdev={spec.nicname}")
    elif mac and (spec.nicname or spec.osarch.startswith("ppc")):
        # xCAT: a MAC given as the boot NIC, or ppc without one, boots by BOOTIF=<mac>.
        args.append(f"BOOTIF={mac}")
    args += console_args(spec.node, spec.osarch, spec.serialport, spec.serialspeed,
                         spec.serialflow)
    if _SELINUX_OFF.match(spec.osvers):
        args.append("selinux=0")
    args.append(f"MNTOPTS={spec.mntopts}")
    if spec.addkcmdline.strip():
        args.append(spec.addkcmdline.strip())
    return " ".join(args)


def replace_myip(text: str, myip: str) -> str:
    """Put the server address the node reaches us on in place of ``!myipfn!``."""
    return text.replace(MYIPFN, myip)


def ip_hex(ip: str, upper: bool = True) -> str:
    """pxelinux names a node's file by its IPv4 address in hex (``10.0.0.101`` → ``0A000065``)."""
    try:
        packed = ipaddress.IPv4Address(ip).packed
    except ValueError:
        raise BootError(f"{ip!r} is not an IPv4 address") from None
    text = packed.hex()
    return text.upper() if upper else text


@dataclass(frozen=True)
class BootFile:
    """One file under the tftp directory, with the names that must point at it.

    ``path`` and every link are relative to the tftp directory. ``symlinks`` are relative
    symlinks to ``path``; ``hardlinks`` are hard links (yaboot: p5 firmware cannot follow
    symlinks).
    """

    path: str
    content: str
    symlinks: tuple[str, ...] = ()
    hardlinks: tuple[str, ...] = ()


def _osimage_rel(image: str) -> str:
    return f"xcat/osimage/{image}"


def mac_ips(mac: str) -> list[str]:
    """IPv4 addresses named in a ``mac`` cell's ``aa:bb..!<ip>`` entries (pxe.pm links them)."""
    out = []
    for item in mac.split("|"):
        _, bang, host = item.partition("!")
        host = host.strip()
        if bang and host:
            try:
                out.append(str(ipaddress.IPv4Address(host)))
            except ValueError:
                continue  # a host name: xCAT resolves it; we link only literal addresses
    return out


def _ips(ip: str | None, extra: tuple[str, ...]) -> list[str]:
    return list(dict.fromkeys([*([ip] if ip else []), *extra]))


def pxelinux_files(node: str, ip: str | None, state: str, image: str, cmdline: str,
                   osvers: str = "", extra_ips: tuple[str, ...] = ()) -> list[BootFile]:
    """``pxelinux.cfg/<node>`` plus an uppercase-hex-IP symlink per address (reference §8.2).

    ``state`` is the currstate line; ``boot`` writes the local-boot form. ``extra_ips`` are
    the ``!ip`` addresses of the node's mac cell.
    """
    if state == "boot":
        body = "#boot\nDEFAULT xCAT\nLABEL xCAT\nLOCALBOOT 0\n"
    else:
        rel = _osimage_rel(image)
        body = (
            f"#{state}\nDEFAULT xCAT\nLABEL xCAT\n KERNEL {rel}/{KERNEL_NAME}\n"
            f" APPEND initrd={rel}/{INITRD_NAME} {cmdline}\n"
        )
        if not re.match(r"^fedora1[23]", osvers):
            body += "  IPAPPEND 2\n"
    links = tuple(f"pxelinux.cfg/{ip_hex(a)}" for a in _ips(ip, extra_ips))
    return [BootFile(f"pxelinux.cfg/{node}", body, symlinks=links)]


def yaboot_files(node: str, ip: str | None, mac: str, state: str, image: str,
                 cmdline: str, extra_ips: tuple[str, ...] = ()) -> list[BootFile]:
    """``etc/<node>`` hard-linked as ``etc/<hex-ip>`` and ``yaboot.conf-<mac>`` (§8.3)."""
    if state == "boot":
        body = "#boot\ntimeout=5\nbye\n"
    else:
        rel = _osimage_rel(image)
        body = (
            f"#{state}\ntimeout=5\nimage={rel}/{KERNEL_NAME}\n\tlabel=xcat\n"
            f"\tinitrd={rel}/{INITRD_NAME}\n\tappend=\"{cmdline}\"\n"
        )
    links = [f"etc/{ip_hex(a, upper=False)}" for a in _ips(ip, extra_ips)]
    links.append("yaboot.conf-" + normalise_mac(mac).replace(":", "-"))
    return [BootFile(f"etc/{node}", body, hardlinks=tuple(links))]


def xnba_files(node: str, state: str, image: str, cmdline: str,
               httpport: str = "80") -> list[BootFile]:
    """iPXE script ``xcat/xnba/nodes/<node>`` plus its ``.uefi``/``.elilo`` variants (§8.4).

    ``!myipfn!`` becomes iPXE's ``${next-server}``.
    """
    base = f"xcat/xnba/nodes/{node}"
    if state == "boot":
        return [
            BootFile(base, "#!gpxe\n#boot\nexit\n"),
            BootFile(base + ".uefi", "#!gpxe\n#boot\nexit\n"),
        ]
    server = "${next-server}"
    url = f"http://{server}:{httpport}/tftpboot/{_osimage_rel(image)}"
    args = replace_myip(cmdline, server)
    script = (
        f"#!gpxe\n#{state}\nimgfetch -n kernel {url}/{KERNEL_NAME}\nimgload kernel\n"
        f"imgargs kernel {args} BOOTIF=01-${{netX/mac:hexhyp}}\n"
        f"imgfetch -n initrd {url}/{INITRD_NAME}\nimgexec kernel\n"
    )
    uefi = (
        f"#!gpxe\n#{state}\nchain http://{server}:{httpport}/tftpboot/xcat/elilo-x64.efi "
        f"-C /tftpboot/{base}.elilo\n"
    )
    elilo = (
        f'default="xCAT"\ndelay=5\n\nimage=/tftpboot/{_osimage_rel(image)}/{KERNEL_NAME}\n'
        f'   label="xCAT"\n   initrd=/tftpboot/{_osimage_rel(image)}/{INITRD_NAME}\n'
        f'   append="{args} BOOTIF=%B"\n'
    )
    return [BootFile(base, script), BootFile(base + ".uefi", uefi), BootFile(base + ".elilo", elilo)]


def grub2_files(node: str, ip: str | None, mac: str, state: str, image: str, cmdline: str,
                myip: str) -> list[BootFile]:
    """``boot/grub2/<node>`` with ``grub.cfg-01-<mac>`` and ``grub.cfg-<HEXIP>`` links (§8.4)."""
    if state == "boot":
        body = '#boot\nset timeout=5\nmenuentry "xCAT OS Deployment" {\n    exit\n}\n'
    else:
        rel = "/tftpboot/" + _osimage_rel(image)
        body = (
            f"#{state}\nset timeout=5\nset default=\"xCAT OS Deployment\"\n"
            'menuentry "xCAT OS Deployment" {\n'
            f"    set root=tftp,{myip}\n"
            f"    linux {rel}/{KERNEL_NAME} {cmdline} BOOTIF=$net_default_mac\n"
            f"    initrd {rel}/{INITRD_NAME}\n}}\n"
        )
    links = ["boot/grub2/grub.cfg-01-" + normalise_mac(mac).replace(":", "-")]
    if ip:
        links.append(f"boot/grub2/grub.cfg-{ip_hex(ip)}")
    return [BootFile(f"boot/grub2/{node}", body, symlinks=tuple(links))]


def boot_files(netboot: str, *, node: str, ip: str | None, mac: str, state: str, image: str,
               cmdline: str, myip: str, httpport: str = "80",
               osvers: str = "") -> list[BootFile]:
    """The files ``noderes.netboot`` (blank = pxe) needs for one node in ``state``.

    ``cmdline`` still holds ``!myipfn!``; pxelinux, yaboot and grub2 get ``myip`` in its place,
    xnba gets ``${next-server}``.
    """
    kind = netboot or "pxe"
    if kind == "xnba":
        return xnba_files(node, state, image, cmdline, httpport)
    fixed = replace_myip(cmdline, myip)
    extra = tuple(mac_ips(mac))
    if kind == "pxe":
        return pxelinux_files(node, ip, state, image, fixed, osvers, extra)
    if kind == "yaboot":
        return yaboot_files(node, ip, mac, state, image, fixed, extra)
    if kind == "grub2":
        return grub2_files(node, ip, mac, state, image, fixed, myip)
    raise BootError(
        f"{node}: noderes.netboot {netboot!r} is not supported; use one of "
        + ", ".join(NETBOOT_KINDS)
    )
