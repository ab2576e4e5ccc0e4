"""A litefs view walked as :mod:`litefs.classic` walks a stock node's root, for the equivalence
test: apply the same writes and record the tree as a process chrooted into the view would.

``node_view`` runs this file in a child process (``chroot`` must not touch the test process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

from litefs.classic import ClassicResult, apply_ops, walk_tree


def node_view(
    root: str, ops: Sequence[dict[str, Any]] = (), follow: Iterable[str] = (),
    exclude: Iterable[str] = ("/.statelite", "/.default", "/.sllocal"),
) -> ClassicResult:
    """Apply ``ops`` and walk the tree at ``root`` as a process chrooted there (a litefs view)."""
    payload = {"root": root, "ops": list(ops), "follow": list(follow), "exclude": list(exclude)}
    with tempfile.TemporaryDirectory(prefix="classic-walk-") as tmp:
        cfg_path, out_path = os.path.join(tmp, "cfg.json"), os.path.join(tmp, "out.json")
        with open(cfg_path, "w") as f:
            json.dump(payload, f)
        r = subprocess.run([sys.executable, __file__, cfg_path, out_path],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        with open(out_path) as f:
            return ClassicResult(**json.load(f))


def _walk_here(cfg_path: str, out_path: str) -> None:
    with open(cfg_path) as f:
        cfg = json.load(f)
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.chroot(cfg["root"])
    os.chdir("/")
    ops = apply_ops(cfg["ops"])
    manifest = walk_tree("/", cfg["exclude"], cfg["follow"])
    with os.fdopen(fd, "w") as out:
        json.dump({"log": [], "console": [], "ops": ops, "manifest": manifest}, out)


if __name__ == "__main__":
    _walk_here(*sys.argv[1:])
