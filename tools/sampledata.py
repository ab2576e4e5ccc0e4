"""The demo cluster's tables shipped in ``litefs/data/demo`` (``litefs demo`` and the namespace boots).

The demo cluster (``litefs/data/demo/*.csv``, one file per table, in tabdump form): four nodes
``n01``-``n04`` on 127.0.0.11-14 in group ``compute``, split over groups/rooms ``tokyo`` and
``london``; one image :data:`DEMO_IMAGE` (image group ``demo-images``); litefile rows for ALL,
the image and the image group (plus one disabled row); a litetree row per room through
``$nodepos.room``; persistent storage on ``127.0.0.1:/nodedata``. Policy is left to
``litefs db init`` (xCAT's default rows). This is the one demo data set: ``litefs demo``, the
namespace boot tests, the qemu test and the boot benchmark load it too, moved onto their
bridge network by :func:`demo_tables_on`.
"""

from __future__ import annotations

import re
from importlib import resources
from importlib.resources.abc import Traversable

DEMO_IMAGE = "demo-x86_64-statelite-compute"
DEMO_NODES = {"n01": "127.0.0.11", "n02": "127.0.0.12", "n03": "127.0.0.13", "n04": "127.0.0.14"}
DEMO_ROOMS = {"n01": "tokyo", "n02": "tokyo", "n03": "london", "n04": "london"}


def _data() -> Traversable:
    return resources.files("litefs").joinpath("data")


def demo_tables() -> dict[str, str]:
    """CSV text per table name for the demo cluster."""
    folder = _data().joinpath("demo")
    return {
        f.name.removesuffix(".csv"): f.read_text()
        for f in sorted(folder.iterdir(), key=lambda f: f.name)
        if f.name.endswith(".csv")
    }


_LOOPBACK = re.compile(r"(?<![\d.])127\.0\.0\.(\d{1,3})(?![\d.])")


def demo_tables_on(net: str) -> dict[str, str]:
    """:func:`demo_tables` moved from loopback to the /24 network ``net`` (e.g. ``10.77.0``).

    Every address ``127.0.0.K`` becomes ``<net>.K``: the MN is ``<net>.1`` and node ``n0K``
    is ``<net>.1K``. The namespace cluster (:mod:`litefs.tools.cluster_sim`) boots this same data
    set on a bridge, where loopback addresses cannot be routed.
    """
    if not re.fullmatch(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})", net):
        raise ValueError(f"{net!r} is not the first three octets of an IPv4 /24")
    return {name: _LOOPBACK.sub(net + r".\1", text) for name, text in demo_tables().items()}
