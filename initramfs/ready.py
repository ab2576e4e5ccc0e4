"""How the watcher tells the boot hook it is set up: a line into a fifo the hook waits on.

Apart from :mod:`litefs.initramfs.watch` (which imports trio) so that ``fetchplan`` can make
the fifo before it forks the watcher without loading trio on the boot's critical path.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path


def say_ready(path: str) -> None:
    """Tell the boot hook we are set up. The hook waits on a fifo there (``fetchplan`` made it
    and the hook holds it open): a line into it wakes the hook. Run on our own, ``path`` is a
    plain file we create."""
    try:
        if stat.S_ISFIFO(os.stat(path).st_mode):
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO: nobody waits any more
            try:
                os.write(fd, b"ready\n")
            finally:
                os.close(fd)
            return
    except FileNotFoundError:
        pass
    except OSError as exc:
        print(f"{time.strftime('%H:%M:%S')} litefs-watch: cannot say ready in {path}: {exc.strerror or exc}", flush=True)
        return
    Path(path).touch()


def make_ready_fifo(path: str) -> None:
    """The fifo :func:`say_ready` writes to, made before the watcher starts (so it exists
    before the hook opens it); a stale file from an earlier try is replaced."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    os.mkfifo(path, 0o600)
