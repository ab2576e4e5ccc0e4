"""One exception hierarchy for litefs; the message is what the admin reads.

Every command prints ``str(exc)`` on one line to stderr and exits with ``exc.exit_status``:
1 for a failure (bad data, unreachable server), 2 for a usage error (bad arguments).
"""

from __future__ import annotations


class LitefsError(Exception):
    """Base class: a failure the admin can act on. Exit status 1."""

    exit_status = 1


class UsageError(LitefsError):
    """The command line is wrong. Exit status 2."""

    exit_status = 2


class TableError(LitefsError):
    """A table, column, row or CSV file is wrong (unknown table, malformed CSV, duplicate key)."""


class DatabaseUnreachable(LitefsError):
    """The database server does not accept a connection now (down, wrong address, refused)."""


class NoderangeError(LitefsError):
    """A noderange names nodes or groups that do not exist, or cannot be parsed."""


class SubstitutionError(LitefsError):
    """A ``$variable`` in a litetree directory or statemnt cannot be expanded for a node."""


class PlanError(LitefsError):
    """The litefile/litetree rows for a node or image do not form a valid plan."""


class MountError(LitefsError):
    """A layer directory is missing or unusable, or the FUSE mount failed."""


class ProtocolError(LitefsError):
    """A mountd request or response is malformed."""


class BootError(LitefsError):
    """Boot configuration cannot be built or a node cannot boot (nodeset, initramfs, harness)."""


class MountdError(LitefsError):
    """mountd cannot answer: database unavailable, unknown node, refused by policy."""


class LiteimgError(LitefsError):
    """liteimg cannot prepare (or undo) an image: missing rootimg, unsafe paths in the image."""
