"""Helpers for the plan tests: tables as Python rows, written as xCAT CSV into a real database."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.resources import files

from sqlalchemy import Engine

from litefs.schema import TABLES, column_names
from tests.dbutil import load_tables


def csv_text(table: str, rows: Sequence[Mapping[str, str | None]]) -> str:
    """tabdump-style CSV for ``rows`` (missing columns are NULL)."""
    cols = column_names(TABLES[table])
    unknown = {k for r in rows for k in r} - set(cols)
    assert not unknown, f"{table} has no columns {unknown}"
    lines = ["#" + ",".join(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append("" if v is None else '"' + v.replace('"', '""') + '"')
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def load(engine: Engine, tables: Mapping[str, Sequence[Mapping[str, str | None]] | str]) -> None:
    """Load each table (rows, or CSV text) into the database, replacing what it held."""
    load_tables(
        engine,
        {name: rows if isinstance(rows, str) else csv_text(name, rows) for name, rows in tables.items()},
    )


def cookbook_redhat_litefile() -> str:
    """The cookbook's RedHat litefile sample, exactly as printed (odd spacing included)."""
    return files("litefs.data").joinpath("litefile-redhat.csv").read_text()


#: The paths of the cookbook's RedHat sample (42 rows; /etc/mtab among them).
COOKBOOK_REDHAT_FILES = [
    "/etc/adjtime", "/etc/fstab", "/etc/inittab", "/etc/lvm/.cache", "/etc/mtab",
    "/etc/ntp.conf", "/etc/ntp.conf.predhclient", "/etc/resolv.conf",
    "/etc/resolv.conf.predhclient", "/etc/ssh/", "/tmp/", "/var/account/", "/var/arpwatch",
    "/var/cache/alchemy", "/var/cache/foomatic/", "/var/cache/logwatch/", "/var/cache/man/",
    "/var/cache/mod_ssl/", "/var/cache/mod_proxy/", "/var/cache/php-pear/",
    "/var/cache/systemtap/", "/var/empty/", "/var/db/nsd/", "/var/gdm/", "/var/lib/dav/",
    "/var/lib/dhcp/", "/var/lib/dhclient/", "/var/lib/php/", "/var/lib/scsi/", "/var/lib/ups/",
    "/var/lib/random-seed", "/var/lib/iscsi", "/var/lib/logrotate.status", "/var/lib/ntp/",
    "/var/lib/xen/ntp", "/var/lock/", "/var/log/", "/var/run/", "/var/tmp/", "/var/tux/",
    "/opt/xcat/", "/xcatpost/",
]
