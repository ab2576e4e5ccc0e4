"""Writes ``/.statelite/litefile``, ``litetree`` and ``statelite.log`` into the tmpfs layer.

Run as its own program (``@litefs-meta -m litefs.fs.meta_writer PLANFD LAYERFD``) by ``litefs
mount``, detached from the daemon: the planner it needs (xCAT's formats) pulls in the database
layer, which the daemon never carries, and the mount does not wait for it. Being exec'd, not
just forked, it has a command line of its own, so a tool that finds the daemon by its command
line finds exactly one process, even in the moment after the mount is reported ready. The
plan arrives as JSON in the memfd ``PLANFD``; ``LAYERFD`` is the tmpfs layer's directory.
"""

from __future__ import annotations

import os
import sys

from litefs.fs.view import META_DIR
from litefs.plan import Plan


def write_meta_files(plan: Plan, tmp_fd: int) -> None:
    from litefs.xcat_format import xcat_litefile_lines, xcat_litetree_lines

    try:
        os.mkdir(META_DIR, 0o755, dir_fd=tmp_fd)
    except FileExistsError:
        pass
    fd = os.open(META_DIR, os.O_RDONLY | os.O_DIRECTORY, dir_fd=tmp_fd)
    try:
        for name, lines in (("litefile", xcat_litefile_lines(plan)), ("litetree", xcat_litetree_lines(plan))):
            with open(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=fd), "w") as f:
                f.write("".join(line + "\n" for line in lines))
        os.close(os.open("statelite.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644, dir_fd=fd))
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m litefs.fs.meta_writer PLANFD LAYERFD (started by 'litefs mount')", file=sys.stderr)
        return 2
    plan_fd, layer_fd = int(argv[0]), int(argv[1])
    # Bookkeeping that runs while the node starts using the view: give the CPU to real work.
    os.nice(10)
    with os.fdopen(plan_fd, "rb") as f:
        plan = Plan.from_json(f.read())
    try:
        write_meta_files(plan, layer_fd)
    except OSError as exc:
        print(f"litefs: cannot write /.statelite/litefile: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
