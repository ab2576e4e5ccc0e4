"""What each table and column means, for ``tabdump -d`` (wording after xCAT's man5 pages).

Columns litefs does not interpret are stored and dumped like any other; their description says
so, so an admin is not surprised that setting them changes nothing here.
"""

from __future__ import annotations

from litefs.schema import column_names, table

TABLES: dict[str, str] = {
    "site": "Cluster-wide settings as key/value pairs (master, installdir, tftpdir, ...).",
    "nodelist": "The list of nodes and the groups each belongs to (group order = inheritance).",
    "nodegroup": "Group definitions; dynamic groups select nodes with wherevals.",
    "noderes": "Per-node service locations: xcatmaster, nfsserver, tftpserver, nfsdir, ...",
    "servicenode": "The service nodes of a hierarchy (as the MN knows them) and the services "
    "each runs; every name in noderes.servicenode must be a row here.",
    "nodetype": "Per-node OS, architecture, profile and provisioning method (or osimage name).",
    "nodepos": "Physical position of nodes: rack, unit, chassis, slot, room.",
    "hosts": "IP addresses and host names of nodes.",
    "mac": "MAC addresses of node interfaces.",
    "chain": "Per-node boot state (currstate) and discovery chain.",
    "osimage": "OS images: groups, profile, provmethod (statelite), rootfstype, ...",
    "linuximage": "Linux-specific image attributes: rootimgdir, kernel, permission, ...",
    "litefile": "Paths on statelite nodes that are writable (tmpfs), persistent or read-only "
    "overlays, per image.",
    "litetree": "Ordered list of directories the initial content of litefile paths comes from.",
    "statelite": "Where each node's persistent files are stored (server:/path).",
    "policy": "Who may run which command through the service (mountd); lower priority first.",
    "nodehm": "Hardware management per node; nodeset reads the serial console settings.",
}

_COMMON = {
    "comments": "Any user-written notes.",
    "disable": "Set to 'yes' or '1' to comment out this row (ignored by every lookup).",
}

COLUMNS: dict[str, dict[str, str]] = {
    "nodehm": {
        "node": "Node name or group.",
        "serialport": "Serial port number of the node's console (0 = ttyS0, hvc0 on ppc64); "
        "nodeset adds 'console=tty0 console=ttyS<port>,<speed>' to the kernel command line. "
        "Blank: no serial console argument.",
        "serialspeed": "Console speed (e.g. 115200); required when serialport is set.",
        "serialflow": "Flow control: 'hard' (or 'ctsrts') makes nodeset append n8r to the "
        "console argument; 'soft' or blank add nothing.",
    },
    "site": {"key": "Name of the setting.", "value": "Its value."},
    "nodelist": {
        "node": "Node name.",
        "groups": "Comma list of groups the node belongs to, in inheritance order.",
    },
    "noderes": {
        "node": "Node or group name.",
        "xcatmaster": "The management/service node as the node sees it (XCAT=); default: "
        "the first service node of the pool, else this server's address facing the node.",
        "nfsserver": "Server holding the node's root image (root=nfs:); default: tftpserver, "
        "else xcatmaster; '<xcatmaster>' = xcatmaster.",
        "tftpserver": "Server holding boot files (image server when nfsserver is blank).",
        "nfsdir": "Directory on nfsserver with the images; '//' prefix = absolute path.",
        "servicenode": "Comma list of service nodes (names in the servicenode table, as the MN "
        "knows them) that serve this node, tried in order: a pool. Blank: the MN serves it.",
        "netboot": "Boot loader type: pxe, xnba, grub2, yaboot, petitboot.",
        "installnic": "Interface used for installation (ifname=/BOOTIF=).",
        "primarynic": "Primary interface.",
    },
    "servicenode": {
        "node": "The service node's host name as the MN knows it (hosts.ip gives its address).",
        "tftpserver": "1: this service node serves TFTP (xCAT sets it up; litefs stores it).",
        "nfsserver": "1: this service node serves the images over NFS (xCAT sets it up; litefs "
        "stores it).",
    },
    "nodetype": {
        "node": "Node or group name.",
        "os": "Operating system, e.g. rhels9.4.",
        "arch": "Architecture, e.g. x86_64.",
        "profile": "Image profile, e.g. compute.",
        "provmethod": "install, netboot, statelite or the name of an osimage.",
    },
    "nodepos": {"node": "Node or group name.", "room": "Room (usable as $nodepos.room)."},
    "hosts": {
        "node": "Node or group name.",
        "ip": "The node's IP address (how mountd recognises a booting node).",
        "hostnames": "Other host names of the node.",
    },
    "osimage": {
        "imagename": "Name of the image.",
        "groups": "Comma list of image groups usable in litefile/litetree.image.",
        "provmethod": "Must contain 'statelite' for liteimg.",
        "rootfstype": "nfs (default) or ramdisk.",
    },
    "linuximage": {
        "imagename": "Name of the image.",
        "rootimgdir": "Directory holding rootimg/ (default <installdir>/netboot/...).",
        "permission": "Mode of the /.statelite tmpfs (default 755).",
    },
    "litefile": {
        "image": "osimage name, image group, ALL, or blank (all images).",
        "file": "Absolute path on the node; directories end with '/'.",
        "options": "blank (= tmpfs,rw = link), tmpfs, rw, persistent, ro, con, localdisk, "
        "link, tmpfs,rw, link,ro, link,persistent, link,con (tempfs: old spelling of tmpfs).",
    },
    "litetree": {
        "priority": "Search order, lowest first (numbers, decimals allowed); unique.",
        "image": "osimage name, image group, ALL, or blank (all images).",
        "directory": "server:/path searched for litefile content; may use $node, "
        "$table.column, $site.key.",
        "mntopts": "Mount options for this source at boot (litefs honours them; xCAT ignored them).",
    },
    "statelite": {
        "node": "Node or group name.",
        "image": "Reserved, not used.",
        "statemnt": "server:/path for persistent files (node name appended automatically).",
        "mntopts": "Options for the persistent mount.",
    },
    "policy": {
        "priority": "Order of evaluation, lowest first.",
        "name": "User name (or certificate name) the row applies to.",
        "host": "Host the request comes from.",
        "commands": "Comma list of commands the row covers.",
        "noderange": "Nodes the row covers.",
        "parameters": "Regular expression the command's arguments must match.",
        "time": "Time ranges (not used).",
        "rule": "allow, trusted, or anything else = deny.",
    },
}


def describe_table(name: str) -> list[str]:
    """``column: description`` lines for ``tabdump -d TABLE``."""
    t = table(name)
    own = COLUMNS.get(name, {})
    out = [f"{name}: {TABLES.get(name, '')}"]
    for col in column_names(t):
        text = own.get(col) or _COMMON.get(col) or "xCAT attribute; stored, not used by litefs."
        out.append(f"  {col}: {text}")
    return out
