"""liteimg: write xCAT's classic statelite layout into an image, reconcile it, take it out again.

Stock xCAT nodes boot from an image that ``liteimg`` prepared (reference §6): every litefile
path has a copy under ``/.default`` (moved there for the link family, which leaves a two-level
relative symlink chain through ``/.statelite/tmpfs``; cloned for the bind family) and
``/.statelite/litefile.save`` records the list. This module *plans* that work as a list of
:class:`Action` values from three inputs -- the entries, a read-only view of the image tree and
what the previous run left (:class:`ImageState`) -- without touching anything; :func:`apply`
then carries the list out. Planning simulates its own actions (:class:`SimTree`) so later
decisions see earlier ones, which is what lets ``-V`` print every action before it happens and
tests check the plan. Unlike xCAT, nothing the image had is ever emptied or deleted: when an
entry goes away or changes family its original comes back from ``/.default``, conflicting
copies stop the run with an error, and :func:`plan_undo` takes the whole layout out again.
The layout is xCAT's byte for byte plus one file, ``/.statelite/liteimg.json``, recording what
liteimg created; undo cannot tell that from the image's own empty files otherwise (:data:`STATE`).
"""

from litefs.liteimg.apply import apply, require_rootimg, run_liteimg, run_undo
from litefs.liteimg.layout import (
    DEFAULT,
    SAVE,
    STATE,
    STATEDIR,
    TMPFS,
    ImageState,
    SavedLine,
    entries_from_plan,
    link_targets,
    parse_save,
    read_state,
    save_text,
    top_level,
)
from litefs.liteimg.planning import LiteimgPlan, plan_liteimg, plan_undo
from litefs.liteimg.tree import DirTree

__all__ = [
    "DEFAULT", "SAVE", "STATE", "STATEDIR", "TMPFS", "DirTree", "ImageState", "LiteimgPlan", "SavedLine",
    "apply", "entries_from_plan", "link_targets", "parse_save", "plan_liteimg", "plan_undo", "read_state",
    "require_rootimg", "run_liteimg", "run_undo", "save_text", "top_level",
]
