"""Values several parts of litefs must agree on, defined once.

Kept free of imports beyond the standard library so the node's boot path and the admin
commands can read them at no cost.
"""

from __future__ import annotations

from functools import cache

#: mountd's TCP port when ``site.xcatdport`` is unset (xCAT's xcatd port).
DEFAULT_PORT = 3001
#: The path every plan lists (a ``link`` to ``/proc/self/mounts`` unless a row says otherwise).
MTAB = "/etc/mtab"
#: The distribution name in pyproject.toml.
DISTRIBUTION = "litefs-statelite"


@cache
def version() -> str:
    """The installed version (pyproject.toml's, through the package metadata).

    ``importlib.metadata`` is imported here, on first use, not at import time: it costs a few
    milliseconds that only ``--version`` and man pages need."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(DISTRIBUTION)
    except PackageNotFoundError:  # a source tree run without installing
        return "0+unknown"
