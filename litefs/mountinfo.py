"""``/proc/self/mountinfo``, parsed once the same way for every reader."""

from __future__ import annotations

from dataclasses import dataclass

MOUNTINFO = "/proc/self/mountinfo"


@dataclass(frozen=True, slots=True)
class Mount:
    """One mountinfo line (proc(5)): the fields litefs uses, octal escapes undone."""

    mount_id: str
    parent_id: str
    dev: str  # "major:minor"
    root: str  # the root of the mount within its filesystem
    point: str  # where it is mounted
    options: str  # per-mount options
    fstype: str
    super_options: str


def unescape(s: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def parse_line(line: str) -> Mount:
    parts = line.split()
    sep = parts.index("-", 6)
    return Mount(parts[0], parts[1], parts[2], unescape(parts[3]), unescape(parts[4]), parts[5],
                 parts[sep + 1], parts[sep + 3] if len(parts) > sep + 3 else "")


def mounts(path: str = MOUNTINFO) -> list[Mount]:
    """Every mount this process's namespace shows, in mountinfo order."""
    with open(path) as f:
        return [parse_line(line) for line in f if line.strip()]
