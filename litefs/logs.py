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
