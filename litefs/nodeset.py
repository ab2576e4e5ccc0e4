"""What ``nodeset`` writes, as pure functions: the kernel command line and the boot files.

xCAT's ``nodeset <noderange> osimage=<image>`` builds one kernel command line per statelite
node (anaconda.pm ``mkstatelite``, reference §8.1) and hands it to the boot-file writer chosen
by ``noderes.netboot`` (pxelinux, yaboot, xnba, grub2; §8.2–8.4). This module computes both
from plain values gathered by :mod:`litefs.tools.nodeset_cmd`; it touches no files and no
database, so every format is unit-tested byte for byte. ``!myipfn!`` (the MN address as the
node sees it) is left in the command line and replaced per boot loader, as xCAT does.

One module (~500 lines): the command line and the four boot-file formats that carry it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from litefs.errors import BootError
from litefs.wellknown import DEFAULT_PORT

#: Placeholder for "the address of this server on the node's network" (xCAT's name).
MYIPFN = "!myipfn!"

#: Boot loaders nodeset can write for (``noderes.netboot``); pxe is the default.
NETBOOT_KINDS: tuple[str, ...] = ("pxe", "yaboot", "xnba", "grub2", "grub2-tftp", "grub2-http")

#: Kernel and initrd names under ``<tftpdir>/xcat/osimage/<image>/``.
KERNEL_NAME = "kernel"
INITRD_NAME = "initrd-statelite.gz"

# OS versions whose initrd is the pre-dracut "legacy init" that reads NFSROOT= (RHEL5 era).
_LEGACY_INIT = re.compile(r"^(rhels?5|centos5|sles1[01]|fedora([89]|1[01]))(\D|$)")
# selinux=0 is added for these: anaconda.pm's own unanchored test (reference §8.1).
_SELINUX_OFF = re.compile(r"(fedora12|fedora13|(?:rhels|ol|alma|rocky)(?:[7-9]|10))")
_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-]?[0-9a-fA-F]{2}){5}$")
_MAC_COLON = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


@dataclass(frozen=True)
class BootSpec:
    """Everything the kernel command line of one statelite node depends on.

    ``image_server`` is an IP (or ``!myipfn!``); ``root_dir`` is the image directory on it
    (``<rootimgdir>`` or the ``noderes.nfsdir`` form, without ``/rootimg``). ``statemnt`` is
    already variable-expanded (``server:/path`` or ""). ``xcatmaster`` is an IP or
    ``!myipfn!``. ``mac`` is the raw ``mac.mac`` cell; ``installnic``/``primarynic`` come from
    noderes and ``nodebootif`` from linuximage, as ``gen_net_boot_params`` reads them.
    """

    node: str
    image: str
    osvers: str
    osarch: str
    profile: str
    image_server: str
    root_dir: str
    xcatmaster: str = MYIPFN
    xcatdport: str = str(DEFAULT_PORT)
    httpport: str = "80"
    statemnt: str = ""
    mntopts: str | None = None
    nfsrootopts: str = ""
    nodestatus: str = ""
    installnic: str = ""
    primarynic: str = ""
    nodebootif: str = ""
    mac: str = ""
    serialport: str = ""
    serialspeed: str = ""
    serialflow: str = ""
    debugmode: str = ""
    partition: bool = False

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
        if item == "" or any(c.isspace() for c in item):
            raise BootError(
                f"osimage.nfsrootopts {extra!r} has an empty item or whitespace; "
                "give a comma list such as 'vers=4.2,actimeo=60'"
            )
        if item.split("=", 1)[0].lower() in ("rw", "defaults"):
            raise BootError(
                f"osimage.nfsrootopts may not contain {item!r}: the image root is always "
                "mounted read-only; remove it"
            )
    return ",".join(["ro", *[i for i in items if i.lower() != "ro"]])


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
    """First MAC of a ``mac`` cell (``aa:bb..|..`` or ``aabb..!host``) in lowercase colon form."""
    first = re.split(r"[|!]", mac.strip(), maxsplit=1)[0].strip()
    if not _MAC.match(first):
        raise BootError(f"mac {mac!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    digits = re.sub(r"[:-]", "", first).lower()
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def boot_mac(mac: str, node: str) -> str:
    """The MAC xCAT boots ``node`` by (Utils.pm ``parseMacTabEntry``), case kept as stored.

    The last entry without ``!host`` wins unless one is ``<mac>!<node>``; a MAC written
    without colons gets them. Boot-file names lowercase it; ``BOOTIF=`` does not.
    """
    found = ""
    for entry in mac.split("|"):
        if "!" not in entry:
            found = entry
        m = re.fullmatch(r"(.+)!" + re.escape(node), entry)
        if m:
            found = m.group(1)
            break
    if found and ":" not in found:
        found = re.sub(r"^(..)(..)(..)(..)(..)(..)", r"\1:\2:\3:\4:\5:\6", found)
    return found


def console_args(node: str, osarch: str, port: str, speed: str, flow: str) -> str:
    """`` console=tty0 console=ttyS<port>,<speed>[n8r]`` from ``nodehm`` (anaconda.pm).

    Empty when ``serialport`` is unset. ppc64 consoles are ``hvc<port>``. ``n8r`` is added
    when ``serialflow`` matches xCAT's own test ``hard|tcs|ctsrts`` (``tcs`` sic: plain
    ``cts`` gets no suffix on xCAT either). The leading blank is xCAT's.
    """
    port, speed = port.strip(), speed.strip()
    if not port:
        return ""
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
    dev = "hvc" if re.search("ppc64", osarch, re.I) else "ttyS"
    suffix = "n8r" if re.search(r"hard|tcs|ctsrts", flow) else ""
    return f" console=tty0 console={dev}{port},{speed}{suffix}"


def net_args(spec: BootSpec) -> str:
    """``netdev=<nic> `` or ``BOOTIF=<mac> `` as ``gen_net_boot_params`` + anaconda.pm add them.

    installnic (else primarynic) names the NIC; ``mac`` or blank means "boot by MAC", a MAC
    value sets it. ``nodebootif`` is the default NIC name. xCAT never sets ``ifname=`` here.
    """
    installnic = spec.installnic or spec.primarynic
    nicname = spec.nodebootif
    mac = boot_mac(spec.mac, spec.node) if spec.mac else ""
    setmac = False
    if not installnic or installnic.lower() == "mac":
        pass
    elif _MAC_COLON.match(installnic):
        mac, setmac = installnic, True
    else:
        nicname = installnic
    if nicname and not setmac:
        return f"netdev={nicname} "
    if mac and (setmac or "ppc" in spec.osarch):
        return f"BOOTIF={mac} "
    return ""


def kernel_cmdline(spec: BootSpec) -> str:
    """The kernel command line exactly as anaconda.pm pastes it (reference §8.1).

    Blanks are kept as xCAT's string pasting leaves them (``XCATHTTPPORT=80  console=…``,
    `` selinux=0  MNTOPTS=``): sites diff boot files against xCAT's during a migration.
    ``linuximage.addkcmdline`` is added by the boot-loader writer (:func:`add_kcmdline`).
    """
    check_statemnt(spec.node, spec.statemnt)
    if uses_dracut(spec.osvers):
        opts = nfsroot_opts(spec.nfsrootopts)
        line = f"root=nfs:{spec.image_server}:{spec.root_dir}/rootimg:{opts} STATEMNT="
    else:
        line = f"NFSROOT={spec.image_server}:{spec.root_dir} STATEMNT="
    line += f"{spec.statemnt} XCAT={spec.xcatmaster}:{spec.xcatdport} NODE={spec.node} "
    if spec.nodestatus in ("n", "N", "0"):
        line += " nonodestatus "
    line += f"XCATHTTPPORT={spec.httpport} "
    if spec.debugmode in ("1", "2"):
        xm = spec.xcatmaster
        line += (f" LOGSERVER={xm}  syslog.server={xm} syslog.type=rsyslogd "
                 f"syslog.filter=*.*  xcatdebugmode={spec.debugmode} ")
    line += net_args(spec)
    line += console_args(spec.node, spec.osarch, spec.serialport, spec.serialspeed,
                         spec.serialflow)
    if _SELINUX_OFF.search(spec.osvers):
        line += " selinux=0 "
    if spec.partition:
        line += " PARTITION_RH"
    line += f" MNTOPTS={spec.mntopts or ''}"
    return line


def _volatile(text: str) -> str | None:
    """Utils.pm ``splitkcmdline``: the non-``R::`` words, each followed by one blank.

    Perl's ``split(/[ ]/)`` keeps leading empty fields and drops trailing ones; so does this.
    """
    words = text.split(" ")
    while words and words[-1] == "":
        words.pop()
    kept = [w for w in words if not w.startswith("R::")]
    return "".join(w + " " for w in kept) if kept else None


def add_kcmdline(kind: str, cmdline: str, addkcmdline: str) -> str:
    """Append ``linuximage.addkcmdline`` as the boot plugin ``kind`` does.

    pxe.pm/xnba.pm paste ``<bootparams.addkcmdline> <linuximage.addkcmdline>`` (the first is
    empty here, so the text starts with a blank) and always append; grub2.pm/yaboot.pm paste
    ``<linuximage.addkcmdline> `` and append only when a volatile word is left.
    """
    if not addkcmdline or addkcmdline == "0":
        return cmdline
    if kind in ("pxe", "xnba"):
        return cmdline + " " + (_volatile(" " + addkcmdline) or "")
    vol = _volatile(addkcmdline + " ")
    return cmdline + " " + vol if vol else cmdline


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
    symlinks to ``path``; ``hardlinks`` are hard links (yaboot and grub2: p5 firmware and
    chrooted tftp servers cannot follow symlinks). ``other_links`` are ``(link, target)``
    symlinks to something else (grub2's ``grub2-<node>`` → ``grub2.<arch>``); ``remove``
    names files xCAT deletes for this state.
    """

    path: str
    content: str
    symlinks: tuple[str, ...] = ()
    hardlinks: tuple[str, ...] = ()
    other_links: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoaderInput:
    """What a boot-loader writer needs for one node besides the kernel command line.

    ``cmdline`` still holds ``!myipfn!`` and no addkcmdline. ``myip`` is this server's address
    facing the node; ``tftp_server`` the address grub2 fetches from (``set root=``).
    ``efistub`` tells whether the kernel carries an x86-64 EFI stub (xnba.pm ``has_efistub``).
    """

    node: str
    state: str
    image: str = ""
    cmdline: str = ""
    addkcmdline: str = ""
    myip: str = ""
    ip: str | None = None
    mac: str = ""
    installnic: str = ""
    osvers: str = ""
    osarch: str = ""
    httpport: str = "80"
    tftp_server: str = ""
    tftpdir: str = "/tftpboot"
    efistub: bool = False
    debugmode: str = ""


def _osimage_rel(image: str) -> str:
    """``$rtftppath`` of anaconda.pm: relative to the tftp root, no leading slash."""
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


def _ips(ip: str | None, extra: list[str]) -> list[str]:
    return list(dict.fromkeys([*([ip] if ip else []), *extra]))


def _file_mac(inp: LoaderInput) -> str:
    """The MAC grub2.pm/yaboot.pm name files by: installnic if it is a MAC, else the table's."""
    if _MAC_COLON.match(inp.installnic):
        return inp.installnic.lower()
    found = boot_mac(inp.mac, inp.node) if inp.mac else ""
    return found.lower() if ":" in found else ""


def pxelinux_files(inp: LoaderInput) -> list[BootFile]:
    """``pxelinux.cfg/<node>`` plus an uppercase-hex-IP symlink per address (pxe.pm setstate)."""
    body = f"#{inp.state}\nDEFAULT xCAT\nLABEL xCAT\n"
    if inp.state == "boot":
        body += "LOCALBOOT 0\n"
    else:
        rel = _osimage_rel(inp.image)
        cmd = replace_myip(add_kcmdline("pxe", inp.cmdline, inp.addkcmdline), inp.myip)
        body += (f" KERNEL {rel}/{KERNEL_NAME}\n"
                 f" APPEND initrd={rel}/{INITRD_NAME} {cmd}\n")
        if not re.search(r"fedora12|fedora13", inp.osvers):
            body += "  IPAPPEND 2\n"
    links = tuple(f"pxelinux.cfg/{ip_hex(a)}" for a in _ips(inp.ip, mac_ips(inp.mac)))
    return [BootFile(f"pxelinux.cfg/{inp.node}", body, symlinks=links)]


def yaboot_files(inp: LoaderInput) -> list[BootFile]:
    """``etc/<node>`` hard-linked as ``etc/<hex-ip>`` and ``yaboot.conf-<mac>`` (yaboot.pm)."""
    body = f"#{inp.state}\ntimeout=5\n"
    if inp.state == "boot":
        body += "bye\n"
    else:
        rel = _osimage_rel(inp.image)
        cmd = replace_myip(add_kcmdline("yaboot", inp.cmdline, inp.addkcmdline), inp.myip)
        body += (f"image={rel}/{KERNEL_NAME}\n\tlabel=xcat\n"
                 f"\tinitrd={rel}/{INITRD_NAME}\n\tappend=\"{cmd}\"\n")
    links = [f"etc/{ip_hex(a, upper=False)}" for a in _ips(inp.ip, mac_ips(inp.mac))]
    mac = _file_mac(inp)
    if mac:
        links.append("yaboot.conf-" + mac.replace(":", "-"))
    return [BootFile(f"etc/{inp.node}", body, hardlinks=tuple(links))]


def _sles11(*texts: str) -> bool:
    """xnba.pm keeps SLES 11 on elilo although its kernel has an EFI stub."""
    return bool(re.search(r"(?:^|[=/\s_-])sles?11(?:[.\s/_-]|$)", " ".join(texts), re.I))


def xnba_files(inp: LoaderInput) -> list[BootFile]:
    """iPXE script ``xcat/xnba/nodes/<node>`` and its ``.uefi`` (+ ``.elilo``) (xnba.pm).

    ``!myipfn!`` becomes ``${next-server}`` for iPXE and ``%N`` (elilo's own "next server"
    escape) in the ``.elilo`` file. Port 80 gets no ``:80`` suffix. With an EFI-stub kernel
    the ``.uefi`` script boots the kernel itself and no ``.elilo`` is written.
    """
    base = f"xcat/xnba/nodes/{inp.node}"
    if inp.state == "boot":
        text = f"#!gpxe\n#{inp.state}\nexit\n"
        return [BootFile(base, text, remove=(base + ".pxelinux",)),
                BootFile(base + ".uefi", text)]
    port = "" if inp.httpport == "80" else f":{inp.httpport}"
    url = "http://${next-server}" + port + "/tftpboot/"
    kernel = f"{_osimage_rel(inp.image)}/{KERNEL_NAME}"
    initrd = f"{_osimage_rel(inp.image)}/{INITRD_NAME}"
    full = add_kcmdline("xnba", inp.cmdline, inp.addkcmdline)
    args = replace_myip(full, "${next-server}")
    script = (f"#!gpxe\n#{inp.state}\nimgfetch -n kernel {url}{kernel}\nimgload kernel\n"
              f"imgargs kernel {args} BOOTIF=01-${{netX/mac:hexhyp}}\n"
              f"imgfetch -n initrd {url}{initrd}\nimgexec kernel\n")
    files = [BootFile(base, script, remove=(base + ".pxelinux",))]
    if inp.efistub and not _sles11(kernel, initrd, args):
        uefi = (f"#!gpxe\nimgfetch -n kernel {url}{kernel}\nimgload kernel\n"
                f"imgargs kernel {args} BOOTIF=01-${{netX/mac:hexhyp}} initrd=initrd\n"
                f"imgfetch -n initrd {url}{initrd}\nimgexec kernel\n")
        return [*files, BootFile(base + ".uefi", uefi)]
    uefi = f"#!gpxe\nchain {url}xcat/elilo-x64.efi -C /tftpboot/{base}.elilo\n"
    elilo = (f'default="xCAT"\ndelay=0\n\nimage=/tftpboot/{kernel}\n   label="xCAT"\n'
             f'   initrd=/tftpboot/{initrd}\n'
             f'   append="{replace_myip(full, "%N")} BOOTIF=%B"\n')
    return [*files, BootFile(base + ".uefi", uefi), BootFile(base + ".elilo", elilo)]


def grub2_arch(osarch: str) -> str:
    """The ``grub2.<arch>`` binary name grub2.pm links a node to (ppc64* → ppc)."""
    return "ppc" if re.search("ppc64", osarch, re.I) else osarch


def grub2_files(inp: LoaderInput, protocol: str = "tftp") -> list[BootFile]:
    """``boot/grub2/<node>``, hard-linked as ``grub.cfg-<HEXIP>``/``grub.cfg-01-<mac>`` (grub2.pm).

    Paths are relative to the tftp root (``/xcat/osimage/…``) as the tftp server serves
    them; ``http`` (``noderes.netboot=grub2-http``) prefixes the tftp directory instead.
    x86 gets ``linuxefi``/``initrdefi``. The file ends without a newline after ``}``, as
    xCAT's does.
    """
    root = "boot/grub2"
    body = f"#{inp.state}\n"
    if inp.debugmode in ("1", "2"):
        body += "set debug=all\n"
    body += "set timeout=5\n"
    other: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()
    if inp.state == "boot":
        remove = (f"{root}/grub2-{inp.node}",)
    else:
        server = inp.tftp_server or inp.myip
        if protocol == "http" and inp.httpport != "80":
            set_root = f"http,{server}:{inp.httpport}"
        else:
            set_root = f"{protocol},{server}"
        prefix = inp.tftpdir.rstrip("/") if protocol == "http" else ""
        efi = "efi" if re.search("x86", inp.osarch, re.I) else ""
        rel = _osimage_rel(inp.image)
        cmd = replace_myip(add_kcmdline("grub2", inp.cmdline, inp.addkcmdline), inp.myip)
        body += (
            'set default="xCAT OS Deployment"\n'
            'menuentry "xCAT OS Deployment" {\n'
            "    insmod http\n    insmod tftp\n"
            f"    set root={set_root}\n"
            "    echo Loading Install kernel ...\n"
            f"    linux{efi} {prefix}/{rel}/{KERNEL_NAME} {cmd} BOOTIF=$net_default_mac\n"
            "    echo Loading initial ramdisk ...\n"
            f"    initrd{efi} {prefix}/{rel}/{INITRD_NAME}\n}}"
        )
        other = ((f"{root}/grub2-{inp.node}", f"grub2.{grub2_arch(inp.osarch)}"),)
    links = [f"{root}/grub.cfg-{ip_hex(a)}" for a in _ips(inp.ip, mac_ips(inp.mac))]
    mac = _file_mac(inp)
    if mac:
        links.append(f"{root}/grub.cfg-01-" + mac.replace(":", "-"))
    return [BootFile(f"{root}/{inp.node}", body, hardlinks=tuple(links), other_links=other,
                     remove=remove)]


def boot_files(netboot: str, inp: LoaderInput) -> list[BootFile]:
    """The files ``noderes.netboot`` (blank = pxe) needs for one node in ``inp.state``."""
    kind = netboot or "pxe"
    if kind == "xnba":
        return xnba_files(inp)
    if kind == "pxe":
        return pxelinux_files(inp)
    if kind == "yaboot":
        return yaboot_files(inp)
    if kind in ("grub2", "grub2-tftp", "grub2-http"):
        return grub2_files(inp, "http" if kind == "grub2-http" else "tftp")
    raise BootError(
        f"{inp.node}: noderes.netboot {netboot!r} is not supported; use one of "
        + ", ".join(NETBOOT_KINDS)
    )
