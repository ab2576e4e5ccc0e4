"""The litefile option vocabulary and what each option means for the merged view (pure).

xCAT accepts eleven spellings (reference §2.1) in two families: bind-mount options leave the
image path in place, link options turn it into a symlink chain. litefs presents both the same
way; only ``liteimg`` cares about the family. What matters here is which layer takes writes.
"""

from __future__ import annotations

from enum import StrEnum

#: Options liteimg accepts (xCAT's exact whitelist, reference §2.1).
VALID_OPTIONS: tuple[str, ...] = (
    "tmpfs",
    "persistent",
    "localdisk",
    "rw",
    "ro",
    "con",
    "link",
    "tmpfs,rw",
    "link,ro",
    "link,persistent",
    "link,con",
)

#: Old spelling of tmpfs that only the boot script knows; liteimg rejects it.
BOOT_ONLY_OPTIONS: tuple[str, ...] = ("tempfs",)

#: What a blank litefile option means on Linux (the server reports ``tmpfs,rw`` = ``link``).
BLANK_OPTION = "tmpfs,rw"


class Family(StrEnum):
    """How a path governed by a litefile rule behaves in the view."""

    VOLATILE = "volatile"  # read-write, writes to the tmpfs layer, lost at reboot
    PERSISTENT = "persistent"  # read-write, writes to the persistent layer, kept
    RO = "ro"  # read-only, follows the sources live
    CON = "con"  # read-write volatile; initial content = concatenation of sources
    LOCALDISK = "localdisk"  # read-write, writes to the local disk layer, kept


_FAMILY = {
    "tmpfs": Family.VOLATILE,
    "tempfs": Family.VOLATILE,
    "rw": Family.VOLATILE,
    "tmpfs,rw": Family.VOLATILE,
    "link": Family.VOLATILE,
    "persistent": Family.PERSISTENT,
    "link,persistent": Family.PERSISTENT,
    "ro": Family.RO,
    "link,ro": Family.RO,
    "con": Family.CON,
    "link,con": Family.CON,
    "localdisk": Family.LOCALDISK,
}

#: The layer that takes writes for each family (None: read-only).
class LayerKind(StrEnum):
    """The kinds of layer a path can be answered from (a StrEnum: the names are also what
    provenance and logs print)."""

    TMPFS = "tmpfs"
    PERSISTENT = "persistent"
    LOCALDISK = "localdisk"
    SOURCE = "source"  # a litetree directory
    IMAGE = "image"


UPPER_LAYER: dict[Family, LayerKind | None] = {
    Family.VOLATILE: LayerKind.TMPFS,
    Family.PERSISTENT: LayerKind.PERSISTENT,
    Family.RO: None,
    Family.CON: LayerKind.TMPFS,
    Family.LOCALDISK: LayerKind.LOCALDISK,
}


def normalise_option(option: str | None) -> str:
    """The option as the server reports it: blank becomes ``tmpfs,rw``, blanks removed."""
    if option is None:
        return BLANK_OPTION
    cleaned = option.replace(" ", "").strip()
    return cleaned or BLANK_OPTION


def family_of(option: str) -> Family:
    """The family of a normalised option; unknown options raise KeyError."""
    return _FAMILY[option]


def is_link(option: str) -> bool:
    """True for the link family (``link``, ``tmpfs,rw``, ``link,*``)."""
    return option == BLANK_OPTION or option == "link" or option.startswith("link,")


def option_problem(option: str | None) -> str | None:
    """Why ``option`` may not be stored in litefile (None: it may), checked when written.

    xCAT's chtab/tabrestore store anything and the first plan or boot of the image fails; we
    refuse at the write instead. Blanks inside are ignored as the server ignores them; the old
    boot-only spelling ``tempfs`` is still accepted (the planner warns about it).
    """
    norm = normalise_option(option)
    if norm in VALID_OPTIONS or norm in BOOT_ONLY_OPTIONS:
        return None
    return (f"option {option!r} is not a litefile option; use one of: "
            f"{' '.join(VALID_OPTIONS)} (blank = tmpfs,rw)")
