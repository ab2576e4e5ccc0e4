"""The size of a node's tmpfs layer: ``site.litefs_tmpfs_size``, checked on both sides.

Without a size one user can fill node RAM with files under a tmpfs rule and starve root. The
value is what ``mount -t tmpfs -o size=`` takes, restricted to the forms that always bound the
mount: ``N%`` of RAM (1-100, dracut/systemd style) or ``N``, ``Nk``, ``Nm``, ``Ng`` bytes
(N >= 1). ``0`` means *unlimited* to tmpfs, so it is refused, as is anything else. The MN
refuses a bad value when it is written (chtab/tabrestore); the node, which must boot whatever
it gets, falls back to :data:`DEFAULT` with a warning instead - never to an unbounded tmpfs.
"""

from __future__ import annotations

import re

#: what a node uses when the site sets nothing (or something unusable)
DEFAULT = "25%"
SITE_KEY = "litefs_tmpfs_size"

_SIZE_RE = re.compile(r"([0-9]{1,15})([kKmMgG%]?)")


def tmpfs_size_problem(value: str) -> str | None:
    """Why ``value`` is not a bounded tmpfs size, or None if it is one."""
    m = _SIZE_RE.fullmatch(value)
    if m is None:
        return f"{value!r} is not a tmpfs size: use N% of RAM (e.g. 25%) or N, Nk, Nm, Ng bytes"
    number, unit = int(m.group(1)), m.group(2)
    if number == 0:
        return f"{value!r} would make the tmpfs unlimited: use at least 1 (e.g. 25% or 2g)"
    if unit == "%" and number > 100:
        return f"{value!r} is more than all of RAM: use 1% to 100%"
    return None


def normalise(value: str) -> str:
    """The spelling ``mount`` gets (units lower-case, blanks around removed)."""
    return value.strip().lower()


def node_tmpfs_size(value: str | None) -> tuple[str, str | None]:
    """(size to mount with, warning or None) on the node: garbage gives the default."""
    if value is None or not value.strip():
        return DEFAULT, None
    v = normalise(value)
    why = tmpfs_size_problem(v)
    if why:
        return DEFAULT, f"site.{SITE_KEY}: {why}; using {DEFAULT}"
    return v, None
