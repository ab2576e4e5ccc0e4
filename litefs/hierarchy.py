"""Service-node hierarchy: which server answers for a node, as pure functions.

xCAT puts service nodes (SN) between the management node (MN) and the compute nodes
(hierarchy_support.rst, reference §10.3). The tables say who serves whom:

* ``servicenode`` lists the SNs by the name the MN knows them by; a name in a node's pool
  that is not a row there is a typo or a retired SN, and is skipped with one warning line.
* ``noderes.servicenode`` is a comma list: the node's *pool*, tried in order. Blank means
  the MN serves the node.
* ``noderes.xcatmaster`` is the server *as the node sees it* (``XCAT=``). Blank: the first
  usable SN of the pool (its ``hosts.ip``), or, when ``nodeset`` runs on an SN of the pool or
  the node has no pool, ``!myipfn!`` (this server's address facing the node, filled in by the
  boot-file writer) — xCAT's rule, except that xCAT leaves ``!myipfn!`` for pools too, which
  on a shared tftp directory names the MN; litefs names the SN.
* image server (``root=nfs:``/``NFSROOT=``): ``noderes.nfsserver`` unless blank or
  ``<xcatmaster>``, else ``noderes.tftpserver`` (same rule), else the xcatmaster above
  (anaconda.pm ``mknetboot``).
* ``site.sharedtftp`` (default yes): every server sees one tftp directory, so the MN writes
  all boot files. ``no``: each SN has its own, so ``nodeset`` on the MN leaves SN-served
  nodes to ``nodeset`` run on their SN (xCAT dispatches it there; litefs says so instead).
* ``site.installloc`` set: SNs mount ``/install`` from the MN instead of keeping their own
  copy; the cookbook (§6.1) says to remove it for statelite, so nodeset warns.

The pool's addresses after the first become the ``litefs.pool=`` kernel argument; the boot
hook's plan fetch (:mod:`litefs.initramfs.fetchplan`) tries ``XCAT=`` and then each of them
in order, so a node whose first SN does not answer boots from the next one. ``XCAT=`` keeps
its single ``ip:port`` form, so stock xCAT initrds still read it.

mountd on an SN (``mountd --service-node sn1``) serves a node only when the SN is in the
node's pool (:func:`serves`): xCAT routes a node's requests to the SNs in its
``noderes.servicenode`` and to no other; an SN outside the pool answering would hide a wrong
DHCP/nodeset set-up and serve from a server that may not export the node's directories.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from litefs.errors import BootError

#: Placeholder for "this server's address on the node's network" (as litefs.nodeset has it).
MYIPFN = "!myipfn!"
#: ``noderes.nfsserver``/``tftpserver`` value meaning "the same as xcatmaster".
XCATMASTER_TOKEN = "<xcatmaster>"
#: Kernel argument with the failover mountd addresses, in pool order, after ``XCAT=``.
POOL_ARG = "litefs.pool"
#: A pool longer than this is a typo (xCAT pools are two or three SNs); it bounds the
#: failover a booting node does.
MAX_POOL = 16

#: The noderes cells :func:`choose` reads.
NODERES_COLUMNS = ("servicenode", "xcatmaster", "nfsserver", "tftpserver")

Resolve = Callable[[str], "str | None"]


def parse_pool(cell: str | None) -> tuple[str, ...]:
    """``noderes.servicenode`` → SN names in order: blanks dropped, repeats kept once."""
    names = [n.strip() for n in (cell or "").split(",")]
    return tuple(dict.fromkeys(n for n in names if n))


def truthy(value: str | None, default: bool) -> bool:
    """xCAT's yes/no spelling of a site value (``1``/``yes``/``y`` and ``0``/``no``/``n``)."""
    text = (value or "").strip().lower()
    if not text:
        return default
    if text in ("1", "yes", "y", "true"):
        return True
    if text in ("0", "no", "n", "false"):
        return False
    return default


def is_ip(text: str) -> bool:
    """Is ``text`` an IPv4 or IPv6 address (not a name to resolve)?"""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Servers:
    """Who serves one node: the answer nodeset writes into its boot files.

    ``pool`` holds the usable SN names in order (``()``: the MN serves the node);
    ``xcatmaster`` and ``image_server`` are IPs or ``!myipfn!``; ``failover`` the other
    pool members' addresses, in order, for ``litefs.pool=``; ``warnings`` one line each.
    """

    node: str
    pool: tuple[str, ...]
    xcatmaster: str
    image_server: str
    failover: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def pool_arg(self, port: str) -> str:
        """``litefs.pool=ip:port,…`` for the kernel command line, or "" without failover."""
        if not self.failover:
            return ""
        return f"{POOL_ARG}=" + ",".join(f"{ip}:{port}" for ip in self.failover)


def usable_pool(node: str, cell: str | None, servicenodes: Collection[str],
                resolve: Resolve) -> tuple[list[tuple[str, str]], list[str]]:
    """The pool's (name, address) pairs that can serve, and a warning per name that cannot."""
    names = parse_pool(cell)
    warnings: list[str] = []
    if len(names) > MAX_POOL:
        warnings.append(f"{node}: noderes.servicenode names {len(names)} service nodes; only "
                        f"the first {MAX_POOL} are used")
        names = names[:MAX_POOL]
    usable: list[tuple[str, str]] = []
    for name in names:
        if name not in servicenodes:
            warnings.append(
                f"{node}: noderes.servicenode names {name!r}, which is not in the servicenode "
                f"table; skipped (add it: chtab node={name} servicenode.tftpserver=1)"
            )
            continue
        ip = resolve(name)
        if not ip:
            warnings.append(
                f"{node}: service node {name!r} has no address; skipped (chtab node={name} "
                "hosts.ip=<address>)"
            )
            continue
        usable.append((name, ip))
    return usable, warnings


def choose(node: str, noderes: Mapping[str, str | None], *, servicenodes: Collection[str],
           resolve: Resolve, here: str | None = None) -> Servers:
    """Which servers answer for ``node`` (see the module text for the rules).

    ``noderes`` holds the node's noderes cells (group inheritance already applied);
    ``resolve(name)`` gives a host's IP or None (hosts table, then DNS); ``here`` is the SN
    running nodeset, None on the MN. Raises BootError when a pool is given but no member is
    usable, or an explicit xcatmaster/nfsserver/tftpserver cannot be resolved.
    """
    usable, warnings = usable_pool(node, noderes.get("servicenode"), servicenodes, resolve)
    if parse_pool(noderes.get("servicenode")) and not usable:
        raise BootError(
            f"{node}: none of its service nodes ({noderes.get('servicenode')}) can serve it: "
            + "; ".join(w.split(": ", 1)[1] for w in warnings)
        )

    def ip_of(name: str, column: str) -> str:
        if is_ip(name):
            return name
        ip = resolve(name)
        if not ip:
            raise BootError(f"{node}: noderes.{column} {name!r} cannot be resolved to an IP "
                            f"address; add it to the hosts table (chtab node={name} hosts.ip=...)")
        return ip

    explicit = (noderes.get("xcatmaster") or "").strip()
    names = [name for name, _ in usable]
    if explicit:
        xcatmaster = ip_of(explicit, "xcatmaster")
    elif here is not None and here in names:
        xcatmaster = MYIPFN  # the SN writing the file fills in its own node-facing address
    elif usable:
        xcatmaster = usable[0][1]
    else:
        xcatmaster = MYIPFN
    image_server = xcatmaster
    for column in ("nfsserver", "tftpserver"):
        value = (noderes.get(column) or "").strip()
        if value and value != XCATMASTER_TOKEN:
            image_server = ip_of(value, column)
            break
    # Failover: the pool in order, without the server XCAT= already names. On an SN in the
    # pool, XCAT= is that SN, so the others follow in pool order.
    skip = {xcatmaster}
    if xcatmaster == MYIPFN and here is not None:
        skip |= {ip for name, ip in usable if name == here}
    failover = tuple(dict.fromkeys(ip for _, ip in usable if ip not in skip))
    return Servers(node, tuple(names), xcatmaster, image_server, failover, tuple(warnings))


def handled_here(node: str, pool: tuple[str, ...], *, here: str | None,
                 sharedtftp: bool) -> str | None:
    """None when nodeset run ``here`` writes ``node``'s boot files, else the reason it skips.

    On an SN: only the nodes in whose pool it is. On the MN: every node when the tftp
    directory is shared, else only the nodes without a pool (their SN writes the others).
    """
    if here is not None:
        if here in pool:
            return None
        served = ",".join(pool) if pool else "the MN"
        return f"{node}: served by {served}, not by {here}; skipped (run nodeset there)"
    if sharedtftp or not pool:
        return None
    return (f"{node}: site.sharedtftp=no and noderes.servicenode={','.join(pool)}: its boot "
            f"files live on {pool[0]}; skipped here (run nodeset on {pool[0]})")


def serves(sn: str | None, pool: tuple[str, ...]) -> bool:
    """May mountd running on ``sn`` (None: the MN) serve a node with this pool?

    The MN serves every node (xCAT's MN is every SN's fallback and answers admins); an SN
    serves only the nodes whose pool names it.
    """
    return sn is None or sn in pool


def installloc_warning(site: Mapping[str, str]) -> str | None:
    """One line when ``site.installloc`` is set while service nodes are in use (cookbook §6.1)."""
    loc = (site.get("installloc") or "").strip()
    if not loc:
        return None
    return (f"site.installloc is {loc!r}: service nodes mount /install from the MN instead of "
            "keeping their own copy, which statelite does not support; remove it (chtab -d "
            "key=installloc site) and push the images with 'cd /; prsync install <sn>:/'")


def statemnt_on_server(raw: str, xcatmaster_cell: str, chosen: str) -> str:
    """``$noderes.xcatmaster:/path`` with a blank xcatmaster cell names the chosen server.

    xCAT expands the variable from the cell, so a pool node (xcatmaster left blank, as pools
    require) gets no server and loses its persistent files; the server that answers for the
    node holds them (reference §4: nodeset on the SN exports it).
    """
    prefix = "$noderes.xcatmaster:"
    if xcatmaster_cell.strip() or not raw.startswith(prefix):
        return raw
    return chosen + ":" + raw[len(prefix):]


def statemnt_for_plan(node: str, raw: str, get: Callable[[str, str, str], str | None]) -> str:
    """The planner's twin of :func:`statemnt_on_server`: the pool's first SN (its hosts.ip).

    ``get(name, table, column)`` is the planner's attribute lookup. The planner does not read
    the servicenode table, so it takes the pool's first name as it is; nodeset, which does,
    warns about a name that is not there.
    """
    cell = get(node, "noderes", "xcatmaster") or ""
    pool = parse_pool(get(node, "noderes", "servicenode"))
    if cell.strip() or not pool:
        return raw
    ip = get(pool[0], "hosts", "ip")
    return statemnt_on_server(raw, cell, ip) if ip else raw
