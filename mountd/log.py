"""Structured logs: one JSON object per line (``ts``, ``level``, ``event`` and fields).

journald keeps each line as one entry, and ``jq`` answers "which nodes were refused today".
``--log-format text`` prints ``event key=value ...`` for people watching a terminal.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class Logger:
    def __init__(self, stream: TextIO | None = None, level: str = "info", fmt: str = "json",
                 **context: Any) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.context = context  # fields every record carries (e.g. worker=1)
        self.threshold = LEVELS[level]
        self.fmt = fmt

    def enabled(self, level: str) -> bool:
        return LEVELS[level] >= self.threshold

    def __call__(self, event: str, level: str = "info", **fields: Any) -> None:
        if LEVELS[level] < self.threshold:
            return
        if self.fmt == "json":
            record = {"ts": round(time.time(), 3), "level": level, "event": event,
                      **self.context, **fields}
            line = json.dumps(record, default=str, separators=(",", ":"))
        else:
            rest = " ".join(f"{k}={v}" for k, v in {**self.context, **fields}.items())
            line = f"{level.upper()} {event} {rest}".rstrip()
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed log must never take the service down
