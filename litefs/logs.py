"""One logging set-up for every litefs service: stdlib ``logging`` records, and journald
priorities when stderr is the journal.

systemd connects a service's stderr to journald and sets ``JOURNAL_STREAM=<dev>:<inode>`` of
that stream. With the (default) ``SyslogLevelPrefix=yes`` journald reads a leading ``<N>`` on a
line as the syslog priority, so a refusal logged at WARNING shows as priority 4 in
``journalctl -p warning`` instead of everything being "info". Off the journal (a terminal, a
file, a test capturing stderr) lines are written unchanged.
"""

from __future__ import annotations

import logging
import os
from typing import TextIO

#: syslog priority for each stdlib level (sd-daemon(3): <7> debug ... <2> critical).
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a stdlib level (levels in between round down to the next one)."""
    for level in sorted(_PRIORITY, reverse=True):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


def is_journal(stream: TextIO) -> bool:
    """True when ``stream`` is the very stream systemd handed to journald ($JOURNAL_STREAM);
    a child whose stderr was redirected elsewhere inherits the variable but not the stream."""
    want = os.environ.get("JOURNAL_STREAM", "")
    if not want:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False  # not a real file (StringIO, closed): cannot be the journal
    return want == f"{st.st_dev}:{st.st_ino}"


class JournalHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that prefixes each line with ``<N>`` when its stream is the journal."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.journal = is_journal(stream)  # decided once: the stream does not change

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not self.journal:
            return text
        prefix = f"<{syslog_priority(record.levelno)}>"
        # A multi-line message (a traceback) keeps its priority on every line.
        return "\n".join(prefix + line for line in text.split("\n"))

    def handleError(self, record: logging.LogRecord) -> None:
        pass  # a closed log (journald restarted, a pipe gone) must never take a service down


#: A /dev/kmsg record holds about 1 KiB of text; longer lines are cut, not split.
KMSG_MAX = 900


class KmsgHandler(logging.Handler):
    """Warnings and errors of a node's daemon into the kernel log, ``<N>litefs[pid]: text``.

    On a node the daemon starts in the initramfs, long before journald, and its log file lives
    in tmpfs. The kernel ring buffer outlives both: ``dmesg`` shows the lines at once, and after
    switch_root journald imports them with their priority and identifier (``journalctl -k``,
    ``journalctl -p warning``). The device is opened once, at start-up, because a daemon that
    serves the node's root must not open files on the root it serves later on. The kernel
    rate-limits user writes to /dev/kmsg (printk_devkmsg), so a storm cannot flood it.
    """

    def __init__(self, path: str = "/dev/kmsg", level: int = logging.WARNING) -> None:
        super().__init__(level)
        self.fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOCTTY)
        self.setFormatter(logging.Formatter("litefs[%(process)d]: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record).replace("\n", " | ")[:KMSG_MAX]
        try:
            os.write(self.fd, f"<{syslog_priority(record.levelno)}>{text}\n".encode())
        except OSError:
            pass  # rate-limited (EINVAL/EAGAIN) or gone: the file log still has the line

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
        super().close()
