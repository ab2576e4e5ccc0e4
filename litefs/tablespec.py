"""The xCAT tables litefs reads, as plain data: names, key columns and other columns.

Pure (no SQLAlchemy), so code that only needs to know which tables and columns exist (node
attributes, ``$table.column`` substitution, the planner) imports this and stays cheap to
import; :mod:`litefs.schema` builds the SQLAlchemy ``Table`` objects from the same specs.
"""

from __future__ import annotations

# (table name, key columns, other columns) in xCAT's schema order.
SPECS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("site", ("key",), ("value",)),
    (
        "nodelist",
        ("node",),
        (
            "groups", "status", "statustime", "appstatus", "appstatustime", "primarysn",
            "hidden", "updatestatus", "updatestatustime", "zonename",
        ),
    ),
    ("nodegroup", ("groupname",), ("grouptype", "members", "membergroups", "wherevals")),
    (
        "noderes",
        ("node",),
        (
            "servicenode", "netboot", "tftpserver", "tftpdir", "nfsserver", "monserver",
            "nfsdir", "installnic", "primarynic", "discoverynics", "cmdinterface",
            "xcatmaster", "current_osimage", "next_osimage", "nimserver", "routenames",
            "nameservers", "proxydhcp", "syslog",
        ),
    ),
    (
        "servicenode",
        ("node",),
        (
            "nameserver", "dhcpserver", "tftpserver", "nfsserver", "conserver", "monserver",
            "ldapserver", "ntpserver", "ftpserver", "nimserver", "ipforward",
            "dhcpinterfaces", "proxydhcp",
        ),
    ),
    ("nodetype", ("node",), ("os", "arch", "profile", "provmethod", "supportedarchs", "nodetype")),
    ("nodepos", ("node",), ("rack", "u", "chassis", "slot", "room", "height")),
    (
        "nodehm",
        ("node",),
        (
            "power", "mgt", "cons", "termserver", "termport", "conserver", "serialport",
            "serialspeed", "serialflow", "getmac", "cmdmapping", "consoleondemand",
        ),
    ),
    ("hosts", ("node",), ("ip", "hostnames", "otherinterfaces")),
    ("mac", ("node",), ("interface", "mac")),
    ("chain", ("node",), ("currstate", "currchain", "chain", "ondiscover")),
    (
        "osimage",
        ("imagename",),
        (
            "groups", "profile", "imagetype", "description", "provmethod", "rootfstype",
            "nfsrootopts", "osdistroname", "osupdatename", "cfmdir", "osname", "osvers",
            "osarch", "synclists", "postscripts", "postbootscripts", "serverrole",
            "isdeletable", "kitcomponents", "environvar",
        ),
    ),
    (
        "linuximage",
        ("imagename",),
        (
            "template", "boottarget", "addkcmdline", "pkglist", "pkgdir", "otherpkglist",
            "otherpkgdir", "exlist", "postinstall", "rootimgdir", "kerneldir", "nodebootif",
            "otherifce", "netdrivers", "kernelver", "krpmver", "permission", "dump",
            "crashkernelsize", "partitionfile", "driverupdatesrc",
        ),
    ),
    ("litefile", ("image", "file"), ("options",)),
    ("litetree", ("priority",), ("image", "directory", "mntopts")),
    ("statelite", ("node",), ("image", "statemnt", "mntopts")),
    (
        "policy",
        ("priority",),
        ("name", "host", "commands", "noderange", "parameters", "time", "rule"),
    ),
)

#: Every table's key columns.
KEYS: dict[str, tuple[str, ...]] = {name: keys for name, keys, _others in SPECS}
#: Every table's columns in schema order, ``comments`` and ``disable`` included.
COLUMNS: dict[str, tuple[str, ...]] = {
    name: (*keys, *others, "comments", "disable") for name, keys, others in SPECS
}
