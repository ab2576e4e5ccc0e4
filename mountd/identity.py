"""Who is asking: a connecting peer's address (or certificate) → node name (pure).

xCAT attributes anonymous node requests by reverse DNS of the source address (reference
§10.2): strip the DNS domain (or everything after the first dot), then a trailing
``-eth<N>``, ``-ib<N>`` or ``-myri<N>``. mountd looks in the ``hosts`` table first (``ip`` and
the addresses in ``otherinterfaces``), so a site whose DNS is wrong still boots, and falls
back to reverse DNS with the same stripping. A TLS client certificate issued by the site CA
for a node (role ``node``) names the node directly and wins over the address.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from litefs.errors import LitefsError
from litefs.names import check_node_name

_SUFFIX_RE = re.compile(r"-(?:eth|ib|myri)\d+$")


def strip_hostname(name: str, domains: Iterable[str] = ()) -> str:
    """xCAT's short node name for a reverse-DNS answer.

    A known domain is removed as a suffix; otherwise everything after the first dot goes.
    Then one interface suffix (``-eth0``, ``-ib1``, ``-myri0``) is removed.
    """
    name = name.rstrip(".")
    for domain in domains:
        domain = domain.strip(".").lower()
        if domain and name.lower().endswith("." + domain):
            name = name[: -len(domain) - 1]
            break
    name = name.split(".", 1)[0]
    return _SUFFIX_RE.sub("", name)


def normalise_ip(text: str) -> str | None:
    """Canonical text of an IP address (IPv4-mapped IPv6 → IPv4); None if not an address."""
    try:
        addr = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr)


def hosts_index(rows: Iterable[tuple[str, str | None, str | None]]) -> dict[str, str]:
    """``ip → node`` from hosts rows ``(node, ip, otherinterfaces)``.

    ``otherinterfaces`` is xCAT's ``name:ip,name:ip`` list; each address there also maps to the
    row's node. Values that are not literal addresses are skipped; mountd passes values
    already resolved per node (group rows and regex cells expanded by :mod:`litefs.nodeattrs`).
    """
    index: dict[str, str] = {}
    for node, ip, other in rows:
        if ip:
            addr = normalise_ip(ip)
            if addr is not None:
                index.setdefault(addr, node)
        for item in (other or "").split(","):
            _name, _sep, addr_text = item.rpartition(":")
            addr = normalise_ip(addr_text) if addr_text else None
            if addr is not None:
                index.setdefault(addr, node)
    return index


@dataclass(frozen=True)
class Peer:
    """What the server knows about a connection before it looks anything up."""

    address: str  # IP text, or "unix" for the local socket
    cert_cn: str | None = None  # CN of a verified client certificate
    cert_role: str | None = None  # "node", "admin", "server" (OU of the certificate)
    unix_uid: int | None = None  # peer uid on the local Unix socket

    @property
    def is_admin(self) -> bool:
        return self.cert_role == "admin" or self.unix_uid == 0


@dataclass(frozen=True)
class Identity:
    """The outcome: which node (None if unknown) and how we know (for the log)."""

    node: str | None
    via: str  # "cert", "hosts", "dns", "none"
    hostname: str | None = None  # reverse-DNS name, when it was looked up


def _is_node_name(name: str) -> bool:
    try:
        check_node_name(name)
    except LitefsError:
        return False
    return True


def identify_known(
    peer: Peer, hosts: dict[str, str], nodes: frozenset[str] | set[str]
) -> Identity | None:
    """The answer without DNS, or None when reverse DNS must be asked."""
    if peer.cert_role == "node" and peer.cert_cn:
        # A CN outside the node-name grammar (a certificate from another tool, a row written
        # before names were checked) identifies nobody.
        if peer.cert_cn in nodes and _is_node_name(peer.cert_cn):
            return Identity(peer.cert_cn, "cert")
        return Identity(None, "cert")
    node = hosts.get(peer.address)  # the server hands us canonical text already
    if node is None and ":" in peer.address:
        node = hosts.get(normalise_ip(peer.address) or peer.address)
    if node is not None:
        return Identity(node, "hosts")
    return None


def identify_by_name(
    hostname: str | None, nodes: frozenset[str] | set[str], domains: Iterable[str] = ()
) -> Identity:
    """Reverse-DNS answer → node, as xcatd does (``<short>`` first, then the full name)."""
    if not hostname:
        return Identity(None, "none")
    domains = tuple(domains)
    short = strip_hostname(hostname, domains)
    if short in nodes:
        return Identity(short, "dns", hostname)
    full = hostname.rstrip(".")
    if full in nodes:
        return Identity(full, "dns", hostname)
    return Identity(None, "dns", hostname)
