"""Whiteout marker names: how a writable layer records that a name was deleted.

A deleted name ``N`` is recorded by an empty regular file ``.wh.N`` next to where it was
(the classic overlay/aufs form, which works on NFSv3 stores without xattrs or mknod). That
form does not fit a name of 252–255 bytes (``.wh.`` + name would pass NAME_MAX), so such a
name is recorded as ``.wh..wh..long.<sha256 of the name, hex>`` instead, a file that holds
the full name (for people and other tools reading the layer; litefs itself only needs the
hash). Every valid name therefore has a marker that fits, and an operation that needs one
can be decided before anything is changed. Old ``.wh.N`` markers keep working: short names
still use exactly that form. Every name starting with ``.wh.`` is bookkeeping and never shown.
"""

from __future__ import annotations

import hashlib
import os

NAME_MAX = 255
WH_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
#: Prefix of copy-up temp files; hidden because it starts with the whiteout prefix.
TMP_PREFIX = ".wh..wh..tmp."
#: Prefix of the marker of a name too long for ``.wh.<name>``
LONG_PREFIX = ".wh..wh..long."
_SHORT_MAX = NAME_MAX - len(WH_PREFIX)
_LONG_REST = LONG_PREFIX[len(WH_PREFIX) :]


def _long_key(name: str) -> str:
    return hashlib.sha256(os.fsencode(name)).hexdigest()


def is_long(name: str) -> bool:
    """True if ``name`` is recorded with a hashed marker (``.wh.`` + name does not fit)."""
    return len(name) > _SHORT_MAX // 4 and len(os.fsencode(name)) > _SHORT_MAX


def whiteout_name(name: str) -> str:
    """The marker file name that records the deletion of ``name`` (always <= NAME_MAX)."""
    if is_long(name):
        return LONG_PREFIX + _long_key(name)
    return WH_PREFIX + name


class Hidden:
    """The names a directory's markers hide, from that directory's listing."""

    __slots__ = ("long", "short")

    def __init__(self) -> None:
        self.short: set[str] = set()
        self.long: set[str] = set()

    def add(self, rest: str) -> None:
        """Take note of a whiteout marker found in the listing, given without its ``.wh.``
        prefix (``N`` for ``.wh.N``; ``.wh..long.<hash>`` for a hashed marker)."""
        if rest.startswith(_LONG_REST):
            self.long.add(rest[len(_LONG_REST) :])
        else:
            self.short.add(rest)

    def __contains__(self, name: object) -> bool:
        if name in self.short:
            return True
        return bool(self.long) and isinstance(name, str) and is_long(name) and _long_key(name) in self.long

    def __bool__(self) -> bool:
        return bool(self.short or self.long)
