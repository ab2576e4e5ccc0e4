"""xCAT's liteimg validation of litefile rows, with its messages verbatim (reference §2.5).

``validate_rules`` returns every message that applies (xCAT stops at the first one; seeing
them all at once is kinder). Entries are ``(file, option)`` pairs as the table has them
(directories end with ``/``, a blank option already reported as ``tmpfs,rw``) or
:class:`litefs.plan.Rule` objects. As in xCAT, ``tmpfs,rw`` is checked as ``link``. Each
entry is compared with its nearest listed ancestor. One fix (DESIGN "Fixed"): a ``link``
child under a non-link parent is rejected, as xCAT intends and documents but never does
(its check compares paths numerically); ``/etc/mtab`` stays exempt, as xCAT intends.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from litefs.options import BOOT_ONLY_OPTIONS, VALID_OPTIONS
from litefs.plan import Rule

Entry = tuple[str, str]

# Leading/trailing blanks are xCAT's own (statelite.pm lines 288-346): kept byte for byte.
INVALID_OPTION = (
    " {file} has invalid option. The valid options: "
    "tmpfs persistent localdisk rw ro con link tmpfs,rw link,ro link,persistent link,con"
)
NOT_ABSOLUTE = " {file} is not one absolute path. "
CON_ON_DIRECTORY = ' {file} is directory, don\'t use "con" as its option '
PARENT_RO_CON = 'the directory "{parent}" should not be with "ro" or "con" as its option'
CHILD_LINK_RO = 'Based on the option of {parent}, {child} should not use "link,ro" as its option'
CHILD_NOT_LINK = 'Based on the option of {parent}, {child} can only use "link"-based options'
CHILD_LINK = 'Based on the option of {parent}, {child} should not use "link"-based options'
CHILD_NOT_PERSISTENT = "{child} should have persistent option like {parent} "
NO_FILES = (
    "There are no files to sync for {image}.  You have to have some files read/write "
    "filled out in the synclist table."
)


def _entries(rules: Iterable[Rule | Entry]) -> list[Entry]:
    out: list[Entry] = []
    for r in rules:
        if isinstance(r, Rule):
            out.append((r.table_path, r.option))
        else:
            out.append((r[0], r[1]))
    return out


def validate_rules(
    rules: Iterable[Rule | Entry], *, image: str | None = None, boot: bool = False
) -> list[str]:
    """All liteimg validation messages for these litefile entries (empty list: valid).

    ``image`` enables the "no files to sync" message for an empty list. ``boot=True``
    accepts ``tempfs``, the old spelling only the boot side knows (node plans); liteimg
    (``boot=False``) rejects it as xCAT does.
    """
    entries = _entries(rules)
    messages: list[str] = []
    if not entries:
        if image is not None:
            messages.append(NO_FILES.format(image=image))
        return messages
    valid = set(VALID_OPTIONS) | (set(BOOT_ONLY_OPTIONS) if boot else set())
    checked: list[Entry] = []
    for file, option in entries:
        opt = _as_liteimg(option)
        ok = True
        if opt not in valid:
            messages.append(INVALID_OPTION.format(file=file))
            ok = False
        if not file.startswith("/"):
            messages.append(NOT_ABSOLUTE.format(file=file))
            ok = False
        if "con" in opt and file.endswith("/"):
            messages.append(CON_ON_DIRECTORY.format(file=file))
        if ok:
            checked.append((file, opt))
    messages.extend(_family_messages(checked))
    return messages


def _as_liteimg(option: str) -> str:
    # liteimg rewrites tmpfs,rw to link before checking (s/tmpfs,rw/link/).
    return option.replace("tmpfs,rw", "link", 1)


def _family_messages(entries: Sequence[Entry]) -> list[str]:
    """Parent/child checks: each entry against its nearest listed ancestor directory."""
    dirs = {f.rstrip("/"): (f, o) for f, o in entries if f.endswith("/") and f != "/"}
    children: dict[str, list[Entry]] = {}
    for file, option in entries:
        parent = _nearest_listed_ancestor(file, dirs)
        if parent is not None:
            children.setdefault(parent, []).append((file, option))
    messages: list[str] = []
    for key in sorted(children):
        pfile, popt = dirs[key]
        if popt.endswith("ro") or popt.endswith("con"):
            messages.append(PARENT_RO_CON.format(parent=pfile))
            continue
        for cfile, copt in children[key]:
            fmt = {"parent": pfile, "child": cfile}
            if "link" in popt:
                if copt == "link,ro":
                    messages.append(CHILD_LINK_RO.format(**fmt))
                elif "link" not in copt:
                    messages.append(CHILD_NOT_LINK.format(**fmt))
            elif "link" in copt and cfile != "/etc/mtab":
                messages.append(CHILD_LINK.format(**fmt))
            if "persistent" in popt and "persistent" not in copt:
                messages.append(CHILD_NOT_PERSISTENT.format(**fmt))
    return messages


def _nearest_listed_ancestor(file: str, dirs: dict[str, Entry]) -> str | None:
    path = file.rstrip("/")
    while True:
        cut = path.rfind("/")
        if cut <= 0:
            return None
        path = path[:cut]
        if path in dirs:
            return path
