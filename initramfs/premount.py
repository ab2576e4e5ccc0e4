"""Pre-started ``litefs mount``: pay the daemon's Python start-up while the plan is fetched.

``python -m litefs.initramfs.premount --go FIFO mount ARGS...`` imports everything
``litefs mount`` needs, then blocks opening ``FIFO`` (a named pipe the boot hook made). The hook
starts it in the background, under ``@litefs``, alongside the plan fetch; once the plan is known
and the litetree sources are mounted it writes ``go`` into the pipe and this process runs
``litefs ARGS...`` exactly as ``python -m litefs.tools.litefs_cli`` would (same exit status,
same console lines, same daemon). Anything else read from the pipe (``stop``, or end of file)
exits 0 without mounting: the boot failed before the view was wanted.
"""

from __future__ import annotations

import os
import sys

# The point of this module: import now, before the go, what the mount itself would import
# (mountcmd pulls in litefs.fs: pyfuse3, trio, the view).
import litefs.initramfs.mountcmd  # noqa: F401
from litefs.tools import litefs_cli


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or args[0] != "--go":
        print("usage: python -m litefs.initramfs.premount --go FIFO LITEFS-ARGS...",
              file=sys.stderr)
        return 2
    with open(args[1]) as fifo:  # blocks until the hook opens the pipe to write
        word = fifo.readline().strip()
    if word != "go":
        return 0
    return litefs_cli.main(args[2:])


if __name__ == "__main__":
    code = main()
    # The daemon has forked off and the view is ready: the hook waits for this process
    # before it switches root, and tearing down the interpreter it loaded (trio, pyfuse3,
    # all of litefs) costs that wait ~10-20 ms for nothing.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 1)
