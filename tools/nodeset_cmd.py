"""``nodeset <noderange> osimage[=<image>] | boot``: write statelite boot files, as xCAT does.

Reads the node's tables (noderes, nodetype, hosts, mac, statelite, nodehm, site, osimage,
linuximage), builds each node's kernel command line and boot files with the pure
:mod:`litefs.nodeset` (byte-identical to xCAT's plugins), and writes them for every node that
checks out (MAC known, kernel and initrd present, STATEMNT has a server): kernel and initrd
under ``<tftpdir>/xcat/osimage/<image>/``, the boot files (atomic replace), and in one
transaction ``nodetype.provmethod/os/arch/profile`` and ``chain.currstate``. Prints ``n01:
statelite <os>-<arch>-<profile>`` per node written (``n01: boot`` for the local-boot form)
and one ``nodeset: <node>: <why>`` line on stderr per node it could not set, then exits 1 —
as xCAT does, one bad node does not hold back the others.

One module (~560 lines): the table reads, the per-node checks and the writes are the one path
a node takes; the formats themselves are pure and live in :mod:`litefs.nodeset`.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from litefs.tools.common import Parser, add_db_option, run_main
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from litefs import db, hierarchy
from litefs.errors import BootError, LitefsError, UsageError
from litefs.names import check_node_name
from litefs.nodeattrs import NodeAttrs
from litefs.noderange import Universe, expand, read_noderange_file
from litefs.nodeset import (
    INITRD_NAME,
    KERNEL_NAME,
    MYIPFN,
    BootFile,
    BootSpec,
    LoaderInput,
    boot_files,
    check_statemnt,
    grub2_arch,
    kernel_cmdline,
    root_dir,
)
from litefs.schema import TABLES, active
from litefs.subst import has_variables, substitute
from litefs.wellknown import DEFAULT_PORT

DEPRECATED = (
    'The options "install", "netboot", and "statelite" have been deprecated, use '
    '"osimage=<osimage_name>" instead.'
)
_NODE_TABLES = (
    "noderes", "nodetype", "hosts", "mac", "statelite", "nodepos", "chain", "nodehm",
)


@dataclass
class Tables:
    """The rows nodeset reads, loaded once (disabled rows dropped)."""

    attrs: NodeAttrs
    universe: Universe
    site: dict[str, str]
    osimage: dict[str, Mapping[str, str | None]]
    linuximage: dict[str, Mapping[str, str | None]]
    servicenodes: frozenset[str] = frozenset()
    #: The service node nodeset runs on (--service-node), None on the MN.
    here: str | None = None


def _rows(conn: Connection, name: str) -> list[Mapping[str, str | None]]:
    t = TABLES[name]
    return [dict(r._mapping) for r in conn.execute(select(t).where(active(t)))]


def load_tables(conn: Connection) -> Tables:
    nodes: list[str] = []
    groups: dict[str, list[str]] = {}
    for row in _rows(conn, "nodelist"):
        node = str(row["node"])
        nodes.append(node)
        groups[node] = [g.strip() for g in (row.get("groups") or "").split(",") if g.strip()]
    tables = {
        name: {str(r["node"]): r for r in _rows(conn, name)} for name in _NODE_TABLES
    }
    attrs = NodeAttrs(tables, groups)
    dynamic: dict[str, str] = {}
    declared: set[str] = set()
    for row in _rows(conn, "nodegroup"):
        declared.add(str(row["groupname"]))
        if (row.get("grouptype") or "") == "dynamic":
            dynamic[str(row["groupname"])] = row.get("wherevals") or ""
    universe = Universe(
        nodes=nodes, groups=groups, dynamic=dynamic, declared_groups=frozenset(declared),
        attr=attrs.get, read_file=read_noderange_file,
    )
    site = {str(r["key"]): r.get("value") or "" for r in _rows(conn, "site")}
    return Tables(
        attrs=attrs,
        universe=universe,
        site=site,
        osimage={str(r["imagename"]): r for r in _rows(conn, "osimage")},
        linuximage={str(r["imagename"]): r for r in _rows(conn, "linuximage")},
        servicenodes=frozenset(str(r["node"]) for r in _rows(conn, "servicenode")),
    )


def _to_ip(name: str, t: Tables) -> str:
    """A hostname as an IP (hosts table, then the resolver); the initrd may have no DNS."""
    if not name or name == MYIPFN or hierarchy.is_ip(name):
        return name
    ip = t.attrs.get(name, "hosts", "ip")
    if ip:
        return ip
    try:
        return socket.gethostbyname(name)
    except OSError:
        raise BootError(f"cannot resolve {name!r} to an IP address; add it to the hosts table") from None


def _resolve(name: str, t: Tables) -> str | None:
    try:
        return _to_ip(name, t)
    except BootError:
        return None


def _facing_ip(node_ip: str) -> str:
    """The local address the kernel would use to reach ``node_ip`` (xCAT's my_ip_facing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((node_ip, 9))  # UDP connect sends nothing; it only picks the route
        return str(s.getsockname()[0])


def _node_ip(node: str, t: Tables) -> str | None:
    ip = t.attrs.get(node, "hosts", "ip")
    if ip:
        return ip
    try:
        return socket.gethostbyname(node)
    except OSError:
        return None


def _statemnt(node: str, t: Tables, xcatmaster: str = MYIPFN) -> str:
    """``statelite.statemnt`` with variables expanded when it has any (reference §4)."""
    found = t.attrs.find(node, "statelite", "statemnt")
    if found is None:
        return ""
    raw, key = found
    raw = hierarchy.statemnt_on_server(
        raw, t.attrs.get(node, "noderes", "xcatmaster") or "", xcatmaster)
    if not has_variables(raw):
        return raw
    return substitute(raw, node, t.attrs, t.site, row=f"statelite node={key}",
                      allow_cmd=t.site.get("litefs_allow_cmd", "") == "yes")


@dataclass
class NodeWork:
    node: str
    image: str
    state: str
    files: list[BootFile]
    rootimgdir: str = ""
    osvers: str = ""
    osarch: str = ""
    profile: str = ""


@dataclass(frozen=True)
class Addresses:
    """The server addresses one node's boot files carry (kept together: one spot to change).

    ``myip`` replaces ``!myipfn!``; ``xcatmaster`` goes into ``XCAT=`` (an IP or
    ``!myipfn!``); ``image_server`` serves the NFS root; ``tftp_server`` is grub2's
    ``set root=``.
    """

    myip: str
    xcatmaster: str
    image_server: str
    tftp_server: str
    pool_arg: str = ""  # litefs.pool=ip:port,... : the rest of a service-node pool (failover)


def node_addresses(node: str, node_ip: str | None, t: Tables) -> Addresses:
    """Which addresses of ours the node is told to use (anaconda.pm, grub2.pm)."""
    a = t.attrs
    xcatmaster = a.get(node, "noderes", "xcatmaster") or ""
    # On a service node, "this server" is the SN, not site.master.
    master = xcatmaster or ("" if t.here else t.site.get("master", ""))
    if master:
        myip = _to_ip(master, t)
    elif node_ip:
        myip = _facing_ip(node_ip)
    elif t.here and _resolve(t.here, t):
        myip = _resolve(t.here, t) or ""
    else:
        raise BootError(
            f"{node}: cannot tell which address of this server the node reaches; "
            "set noderes.xcatmaster or site.master, or give the node an IP in hosts"
        )
    # Which servers answer for the node (service-node pool, xcatmaster, nfsserver): the
    # pure rules live in litefs.hierarchy; the failover addresses become litefs.pool=.
    servers = hierarchy.choose(
        node, {c: a.get(node, "noderes", c) for c in hierarchy.NODERES_COLUMNS},
        servicenodes=t.servicenodes, resolve=lambda name: _resolve(name, t), here=t.here,
    )
    for line in servers.warnings:
        print(f"nodeset: {line}", file=sys.stderr)
    tftpserver = a.get(node, "noderes", "tftpserver") or xcatmaster
    tftp_ip = _to_ip(tftpserver, t) if tftpserver and tftpserver != "<xcatmaster>" else myip
    return Addresses(myip=myip, xcatmaster=servers.xcatmaster,
                     image_server=servers.image_server, tftp_server=tftp_ip,
                     pool_arg=servers.pool_arg(t.site.get("xcatdport") or str(DEFAULT_PORT)))


@functools.lru_cache(maxsize=64)  # once per image, not once per node
def _has_efistub(kernel: Path) -> bool:
    """xnba.pm ``has_efistub``: a PE header for x86-64 (``PE\\0\\0`` + 0x8664) in 512 bytes."""
    try:
        with open(kernel, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    return bytes.fromhex("504500006486") in head


def _partition_enabled(partitionfile: str) -> bool:
    """anaconda.pm ``cfgpart``: an ``s:<script>`` that is readable, or a file with enable=yes."""
    if not partitionfile:
        return False
    if partitionfile.startswith("s:"):
        return os.access(partitionfile[2:], os.R_OK)
    try:
        with open(partitionfile, encoding="utf-8", errors="replace") as f:
            return any("enable=yes" in line for line in f)
    except OSError:
        return False


def _plan_node(node: str, image_arg: str | None, t: Tables, tftpdir: str | None,
               boot: bool) -> tuple[NodeWork, str]:
    check_node_name(node)  # it becomes part of boot-file paths under the tftpdir
    a = t.attrs
    mac = a.get(node, "mac", "mac") or ""
    if not mac:
        raise BootError(f"{node}: No MAC address available for this node")
    node_ip = _node_ip(node, t)
    addr = node_addresses(node, node_ip, t)
    netboot = a.get(node, "noderes", "netboot") or "pxe"
    tdir = tftpdir or a.get(node, "noderes", "tftpdir") or t.site.get("tftpdir") or "/tftpboot"
    installnic = a.get(node, "noderes", "installnic") or ""
    debugmode = t.site.get("xcatdebugmode", "")
    if boot:
        inp = LoaderInput(node=node, state="boot", myip=addr.myip, ip=node_ip, mac=mac,
                          installnic=installnic, osarch=a.get(node, "nodetype", "arch") or "",
                          tftpdir=tdir, debugmode=debugmode)
        return NodeWork(node, "", "boot", boot_files(netboot, inp)), tdir

    image = image_arg or a.get(node, "nodetype", "provmethod") or ""
    if not image or image in ("install", "netboot", "statelite"):
        raise BootError(f"{node}: no osimage given and nodetype.provmethod names none; "
                        "use osimage=<osimage_name>")
    if "/" in image or image in (".", "..") or not image.isprintable():
        # It becomes <tftpdir>/xcat/osimage/<image>/: never a path of its own.
        raise BootError(f"{node}: osimage name {image!r} is not a plain name (no '/', no control characters)")
    osimg = t.osimage.get(image)
    if osimg is None:
        raise BootError(f"{node}: Cannot find the OS image definition for {image}")
    if "statelite" not in (osimg.get("provmethod") or ""):
        raise BootError(
            f"{node}: osimage {image} has provmethod {osimg.get('provmethod')!r}; "
            "litefs nodeset only prepares statelite images"
        )
    osvers = osimg.get("osvers") or ""
    osarch = osimg.get("osarch") or ""
    profile = osimg.get("profile") or ""
    if not (osvers and osarch and profile):
        raise BootError(f"{node}: Insufficient nodetype entry or osimage entry for {node} "
                        f"(osimage {image} needs osvers, osarch and profile)")
    linux = t.linuximage.get(image, {})
    installdir = t.site.get("installdir") or "/install"
    rootimgdir = (linux.get("rootimgdir") or
                  f"{installdir}/netboot/{osvers}/{osarch}/{profile}").rstrip("/")
    rootfstype = osimg.get("rootfstype") or "nfs"
    if rootfstype != "nfs":
        raise BootError(f"{node}: osimage {image} has rootfstype {rootfstype!r}; litefs "
                        "boots NFS-root images only")
    statemnt = _statemnt(node, t, addr.xcatmaster)
    check_statemnt(node, statemnt)
    spec = BootSpec(
        node=node, image=image, osvers=osvers, osarch=osarch, profile=profile,
        image_server=addr.image_server,
        root_dir=root_dir(a.get(node, "noderes", "nfsdir") or "", rootimgdir, osvers, osarch,
                          profile),
        xcatmaster=addr.xcatmaster,
        xcatdport=t.site.get("xcatdport") or str(DEFAULT_PORT),
        httpport=t.site.get("httpport") or "80",
        statemnt=statemnt,
        mntopts=a.get(node, "statelite", "mntopts"),
        nfsrootopts=osimg.get("nfsrootopts") or "",
        nodestatus=t.site.get("nodestatus") or "",
        installnic=installnic,
        primarynic=a.get(node, "noderes", "primarynic") or "",
        nodebootif=linux.get("nodebootif") or "",
        mac=mac,
        serialport=a.get(node, "nodehm", "serialport") or "",
        serialspeed=a.get(node, "nodehm", "serialspeed") or "",
        serialflow=a.get(node, "nodehm", "serialflow") or "",
        debugmode=debugmode,
        partition=_partition_enabled(linux.get("partitionfile") or ""),
    )
    cmdline = kernel_cmdline(spec)
    _check_boot_images(rootimgdir)
    if netboot.startswith("grub2"):
        binary = Path(tdir) / "boot" / "grub2" / f"grub2.{grub2_arch(osarch)}"
        if not binary.exists():
            raise BootError(f'{node}: Stop grub2 configuration for this node, "{binary}" does '
                            "not exist; install the grub2 network boot binary there")
    inp = LoaderInput(
        node=node, state=spec.currstate, image=image, cmdline=cmdline,
        addkcmdline=" ".join(filter(None, (addr.pool_arg, linux.get("addkcmdline") or ""))), myip=addr.myip, ip=node_ip, mac=mac,
        installnic=installnic, osvers=osvers, osarch=osarch, httpport=spec.httpport,
        tftp_server=addr.tftp_server, tftpdir=tdir,
        efistub=_has_efistub(Path(rootimgdir) / KERNEL_NAME), debugmode=debugmode,
    )
    work = NodeWork(node, image, spec.currstate, boot_files(netboot, inp), rootimgdir, osvers,
                    osarch, profile)
    return work, tdir


def _check_boot_images(rootimgdir: str) -> None:
    host = socket.gethostname()
    if not os.access(f"{rootimgdir}/{KERNEL_NAME}", os.R_OK):
        raise BootError(
            'Did you run "genimage" before running "liteimg"? kernel cannot be found at '
            f"{rootimgdir}/kernel on {host}"
        )
    if not (os.access(f"{rootimgdir}/{INITRD_NAME}", os.R_OK)
            or os.access(f"{rootimgdir}/initrd.gz", os.R_OK)):
        raise BootError(
            'Did you run "genimage" before running "liteimg"? initrd.gz or '
            f"initrd-statelite.gz cannot be found at {rootimgdir}/initrd.gz on {host}"
        )


def _atomic_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except BaseException:
        with _quiet():
            os.unlink(tmp)
        raise


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], OSError)  # type: ignore[arg-type]


def _inside(root: Path, rel: str) -> Path:
    """``root/rel``, refusing any path that would land outside ``root`` (the --tftpdir)."""
    path = root / rel
    base = os.path.realpath(root)
    real = os.path.realpath(path)
    if os.path.commonpath([base, real]) != base:
        raise LitefsError(f"boot file {rel!r} would be written outside {root}; refusing")
    return path


def _replace_symlink(lpath: Path, target: str) -> None:
    lpath.parent.mkdir(parents=True, exist_ok=True)
    tmp_link = lpath.parent / f".{lpath.name}.new"
    with _quiet():
        tmp_link.unlink()
    tmp_link.symlink_to(target)
    os.replace(tmp_link, lpath)


def _write_file(root: Path, bf: BootFile) -> None:
    path = _inside(root, bf.path)
    for rel in (*bf.symlinks, *bf.hardlinks, *bf.remove, *(lk for lk, _ in bf.other_links)):
        _inside(root, rel)
    for rel in bf.remove:
        with _quiet():
            (root / rel).unlink()
    for rel, target in bf.other_links:
        if not (root / rel).is_symlink():  # grub2.pm: made once, never replaced
            _replace_symlink(root / rel, target)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as out:
        out.write(bf.content)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    for link in bf.symlinks:
        lpath = root / link
        _replace_symlink(lpath, os.path.relpath(path, lpath.parent))
    for link in bf.hardlinks:
        lpath = root / link
        lpath.parent.mkdir(parents=True, exist_ok=True)
        tmp_link = lpath.parent / f".{lpath.name}.new"
        with _quiet():
            tmp_link.unlink()
        os.link(path, tmp_link)
        os.replace(tmp_link, lpath)


def _upsert(conn: Connection, table: str, node: str, values: dict[str, str]) -> None:
    t = TABLES[table]
    found = conn.execute(select(t.c.node).where(t.c.node == node)).first()
    if found:
        conn.execute(update(t).where(t.c.node == node).values(**values))
    else:
        conn.execute(insert(t).values(node=node, **values))


def _parser() -> Parser:
    p = Parser(
        prog="nodeset",
        description="Write the boot files that make nodes boot statelite "
        "(osimage=<image>) or from their local disk (boot), byte-identical to xCAT's for "
        "noderes.netboot pxe, xnba (+ .uefi/.elilo), grub2 (grub2-tftp, grub2-http) and yaboot.",
        epilog="Every node that checks out is written and printed ('n01: statelite ...'); each "
        "node that does not (no MAC, no kernel, STATEMNT without a server, ...) is named on "
        "stderr, one line each, and the exit status is 1.",
    )
    add_db_option(p)
    p.add_argument("--tftpdir", metavar="DIR", default=None,
                   help="write under DIR instead of noderes.tftpdir/site.tftpdir (/tftpboot)")
    p.add_argument("--service-node", metavar="SN", default=None,
                   help="run as service node SN (a servicenode table row): write only the "
                   "nodes whose noderes.servicenode pool names SN, with SN's own address")
    p.add_argument("noderange", help="nodes to set (xCAT noderange)")
    p.add_argument("state", help="osimage[=<image>] or boot")
    return p


def _body(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    state: str = args.state
    if state in ("install", "netboot", "statelite") or state.startswith(
        ("install=", "netboot=", "statelite=")
    ):
        raise UsageError(DEPRECATED)
    boot = state == "boot"
    image_arg: str | None = None
    if not boot:
        if state == "osimage":
            image_arg = None
        elif state.startswith("osimage="):
            image_arg = state.split("=", 1)[1] or None
        else:
            raise UsageError(f"unknown state {state!r}: use osimage=<osimage_name> or boot")
    engine = db.open_engine(args.db)
    db.require_schema(engine)
    with engine.connect() as conn:
        t = load_tables(conn)
    if args.service_node is not None:
        if args.service_node not in t.servicenodes:
            raise UsageError(
                f"--service-node {args.service_node!r} is not in the servicenode table; add it "
                f"(chtab node={args.service_node} servicenode.tftpserver=1) or fix the name")
        t.here = args.service_node
    nodes = []
    sharedtftp = hierarchy.truthy(t.site.get("sharedtftp"), True)
    pooled = False
    for node in expand(args.noderange, t.universe):
        pool = hierarchy.parse_pool(t.attrs.get(node, "noderes", "servicenode"))
        pooled = pooled or bool(pool)
        skip = hierarchy.handled_here(node, pool, here=t.here, sharedtftp=sharedtftp)
        if skip:
            print(f"nodeset: {skip}", file=sys.stderr)
        else:
            nodes.append(node)
    warn = hierarchy.installloc_warning(t.site) if pooled else None
    if warn:
        print(f"nodeset: {warn}", file=sys.stderr)
    works: list[tuple[NodeWork, str]] = []
    errors: list[str] = []
    for node in nodes:
        try:
            works.append(_plan_node(node, image_arg, t, args.tftpdir, boot))
        except BootError as exc:
            text = str(exc)
            errors.append(text if text.startswith(f"{node}:") else f"{node}: {text}")
    # Every target of a node checked before anything of it is written: a name that would
    # land outside the tftpdir drops that node (named below), never half its files.
    safe: list[tuple[NodeWork, str]] = []
    for work, tdir in works:
        try:
            if work.image:
                _inside(Path(tdir), f"xcat/osimage/{work.image}/{KERNEL_NAME}")
            for bf in work.files:
                for rel in (bf.path, *bf.symlinks, *bf.hardlinks,
                            *(link for link, _ in bf.other_links), *bf.remove):
                    _inside(Path(tdir), rel)
        except LitefsError as exc:
            errors.append(f"{work.node}: {exc}")
            continue
        safe.append((work, tdir))
    works = safe
    copied: set[tuple[str, str]] = set()
    for work, tdir in works:
        if work.image and (tdir, work.image) not in copied:
            copied.add((tdir, work.image))
            dest = _inside(Path(tdir), f"xcat/osimage/{work.image}")
            initrd = Path(work.rootimgdir) / INITRD_NAME
            if not initrd.exists():
                initrd = Path(work.rootimgdir) / "initrd.gz"
            _atomic_copy(Path(work.rootimgdir) / KERNEL_NAME, dest / KERNEL_NAME)
            _atomic_copy(initrd, dest / INITRD_NAME)
        for bf in work.files:
            _write_file(Path(tdir), bf)
    with db.write(engine) as conn:
        for work, _ in works:
            if work.image:
                _upsert(conn, "nodetype", work.node, {
                    "provmethod": work.image, "os": work.osvers, "arch": work.osarch,
                    "profile": work.profile,
                })
            _upsert(conn, "chain", work.node, {"currstate": work.state})
    for work, _ in works:
        print(f"{work.node}: {work.state}")
    # xCAT reports each node it could not set and goes on with the rest (exit 1).
    for line in errors:
        print(f"nodeset: {line}", file=sys.stderr)
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    return run_main("nodeset", _body, argv)


if __name__ == "__main__":
    sys.exit(main())
