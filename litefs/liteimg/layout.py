"""liteimg's layout in an image: the paths it uses, litefile.save, and what the previous run left."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from litefs.errors import LiteimgError
from litefs.options import is_link
from litefs.plan import Plan

DEFAULT = "/.default"
STATEDIR = "/.statelite"
TMPFS = "/.statelite/tmpfs"
SAVE = "/.statelite/litefile.save"
#: litefs' own record of what liteimg *created* (xCAT keeps none; a stock node never reads it:
#: the boot mounts a tmpfs over /.statelite). It is the one file beyond xCAT's layout, and undo
#: needs it: litefile.save and .default cannot tell an empty placeholder liteimg made for a
#: missing path from an empty file or directory the image really had (``/etc/adjtime`` and
#: many ``/var`` folders are empty on fresh images), nor the missing parent directories it
#: made, nor whether ``/.statelite`` came from genimage; without the record ``--undo`` would
#: leave stand-ins the image never had, or delete empty ones it did have. An image prepared
#: by xCAT (no record) is handled as xCAT left it: nothing counts as created.
STATE = "/.statelite/liteimg.json"
INIT_STATELITE = "/etc/init.d/statelite"
WARNING = "warning: "
#: The only trees liteimg ever deletes from (besides symlinks and empty placeholders it made).
SCAFFOLD_ROOTS = (DEFAULT, STATEDIR)
#: Scaffolding assumed to be liteimg's when an image was prepared by xCAT (no state file):
#: genimage makes /.statelite itself.
XCAT_SCAFFOLD = frozenset({DEFAULT, TMPFS})


# --- entries and litefile.save ---------------------------------------------------------------


@dataclass(frozen=True)
class SavedLine:
    """One litefile line as liteimg sees it. ``path`` has no trailing slash; ``option`` is the
    server's spelling (blank is ``tmpfs,rw``), :attr:`saved_option` is liteimg's (``link``)."""

    path: str
    option: str
    is_dir: bool

    @property
    def table_path(self) -> str:
        return self.path + "/" if self.is_dir else self.path

    @property
    def saved_option(self) -> str:
        return "link" if self.option == "tmpfs,rw" else self.option

    @property
    def is_link(self) -> bool:
        return is_link(self.option)


def entries_from_plan(plan: Plan) -> tuple[SavedLine, ...]:
    """The plan's rules as liteimg entries, in ``ilitefile`` order (sorted by table path)."""
    entries = [SavedLine(r.path, r.option, r.is_dir) for r in plan.rules]
    return tuple(sorted(entries, key=lambda e: e.table_path))


def save_text(image: str, entries: Sequence[SavedLine]) -> str:
    """``litefile.save`` byte for byte: ``ilitefile`` lines (``"%s: %-13s %s"``) with xCAT's
    ``s/tmpfs,rw/link/`` applied, which shortens the padding by four."""
    lines = []
    for e in entries:
        padded = f"{e.option:<13}"
        if e.option == "tmpfs,rw":
            padded = "link" + padded[len("tmpfs,rw") :]
        lines.append(f"{image}: {padded} {e.table_path}\n")
    return "".join(lines)


def parse_save(text: str) -> tuple[SavedLine, ...]:
    """Entries from a ``litefile.save`` (``<image>: <option> <path>`` per line)."""
    entries = []
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise LiteimgError(f"litefile.save line {lineno} is not '<image>: <option> <path>': {line!r}")
        option, path = fields[-2], fields[-1]
        if not path.startswith("/"):
            raise LiteimgError(f"litefile.save line {lineno}: {path!r} is not an absolute path")
        is_dir = path.endswith("/") and path != "/"
        entries.append(SavedLine(path.rstrip("/") or "/", option, is_dir))
    return tuple(entries)


def ancestors(path: str) -> Iterable[str]:
    """Proper ancestors of ``path``, nearest first, ``/`` excluded."""
    p = path
    while True:
        p = os.path.dirname(p)
        if p == "/":
            return
        yield p


def top_level(entries: Sequence[SavedLine]) -> set[str]:
    """Paths with no listed directory above them (xCAT's "parents"; the rest are children)."""
    dirs = {e.path for e in entries if e.is_dir}
    return {e.path for e in entries if not any(a in dirs for a in ancestors(e.path))}


def rel_up(path: str) -> str:
    """xCAT's ``getRelDir``: one ``..`` per component of ``dirname(path)``, ``.`` at the root."""
    depth = len([c for c in os.path.dirname(path).split("/") if c])
    return "/".join([".."] * depth) if depth else "."


def link_targets(path: str) -> tuple[str, str]:
    """(image link target, tmpfs link target) for a link-family top-level entry (§6.3)."""
    up = rel_up(path)
    return f"{up}{TMPFS}{path}", f"../../{up}{DEFAULT}{path}"


# --- what the previous run left ----------------------------------------------------------------


@dataclass(frozen=True)
class ImageState:
    """What liteimg knows from earlier runs: the saved entries (``litefile.save``) and, from
    its own state file, which paths it created because the image did not have them."""

    saved: tuple[SavedLine, ...] = ()
    save_text: str | None = None
    created: frozenset[str] = frozenset()  # entry placeholders (image side or .default side)
    created_dirs: frozenset[str] = frozenset()  # image directories made for missing parents
    scaffold: frozenset[str] = frozenset()  # which of /.statelite, its tmpfs, /.default we made
    state_text: str | None = None

    def state_json(self) -> str:
        data = {
            "version": 1,
            "created": sorted(self.created),
            "created_dirs": sorted(self.created_dirs),
            "scaffold": sorted(self.scaffold),
        }
        return json.dumps(data, indent=1, sort_keys=True) + "\n"


def read_state(rootimg: str) -> ImageState:
    """Read ``litefile.save`` and the litefs state file from an image (both optional)."""
    save = _read_text(rootimg + SAVE)
    state = _read_text(rootimg + STATE)
    saved = parse_save(save) if save is not None else ()
    if state is None:
        scaffold = XCAT_SCAFFOLD if save is not None else frozenset()
        return ImageState(saved, save, scaffold=scaffold)
    try:
        data = json.loads(state)
        return ImageState(
            saved,
            save,
            created=frozenset(data.get("created", ())),
            created_dirs=frozenset(data.get("created_dirs", ())),
            scaffold=frozenset(data.get("scaffold", ())),
            state_text=state,
        )
    except (ValueError, AttributeError, TypeError) as exc:
        raise LiteimgError(
            f"{rootimg}{STATE} is not valid liteimg state ({exc}); remove it and re-run liteimg"
        ) from None


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LiteimgError(f"cannot read {path}: {exc.strerror}") from None
