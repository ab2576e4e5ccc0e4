"""Plain-user attacks on the FUSE view (security issue item 7), tried for real."""

from __future__ import annotations

import os
from collections.abc import Callable

from tests.fsutil import Layers, Mounter, layers, litefs_mount, make_plan

__all__ = ["layers", "litefs_mount"]

UID = 54321


def as_user(fn: Callable[[], int]) -> int:
    """Run ``fn`` in a child as an unprivileged uid; its return value is the exit code."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            os.setgroups([])
            os.setresgid(UID, UID, UID)
            os.setresuid(UID, UID, UID)
            code = fn()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_raw_layers_root_only(layers: Layers, litefs_mount: Mounter) -> None:
    os.chmod(layers.root, 0o755)
    m = litefs_mount(make_plan({"/data/": "tmpfs"}))
    raw = m.path / ".statelite/tmpfs"

    def attack() -> int:
        try:
            os.listdir(raw)
        except PermissionError:
            return 0
        return 1

    assert as_user(attack) == 0
