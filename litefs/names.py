"""The one node-name grammar, used wherever a node name enters litefs.

xCAT node names are hostnames: letters, digits, '-', '_' and '.', not starting with '-' or
'.', no '..', at most 253 characters. Anything else (``../n02``, ``x/../n02``, blanks, control
characters) could be joined into a path such as ``<statemnt>/<node>`` and escape it, so it is
refused here, once, with a one-line message.
"""

from __future__ import annotations

import re

from litefs.errors import LitefsError

MAX_NODE_NAME = 253
_NODE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


class NameError_(LitefsError):
    """A node name does not follow the hostname grammar."""


def check_node_name(name: str) -> str:
    """Return ``name`` if it is a valid node name, else raise NameError_ naming the problem."""
    if not name:
        raise NameError_("node name is empty; use hostname characters (letters, digits, '-', '_', '.')")
    if len(name) > MAX_NODE_NAME:
        raise NameError_(f"node name {name[:40]!r}... is longer than {MAX_NODE_NAME} characters")
    # fullmatch, not match: '$' would accept a trailing newline.
    if not _NODE_RE.fullmatch(name) or ".." in name:
        raise NameError_(
            f"node name {name!r} is not a hostname: use letters, digits, '-', '_', '.', "
            "not starting with '-' or '.', and no '..'"
        )
    return name
