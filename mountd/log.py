"""Structured logs: one JSON object per line (``ts``, ``level``, ``event`` and fields).

Built on stdlib ``logging`` (one logging system for litefs): each event is a LogRecord at its
level, written by :class:`litefs.logs.JournalHandler`, so under systemd journald files every
line at its real priority (a refusal is a warning, not info). journald keeps each line as one
entry, and ``jq`` answers "which nodes were refused today". ``--log-format text`` prints
``LEVEL event key=value ...`` for people watching a terminal.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

from litefs.logs import JournalHandler

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
_NAMES = {v: k for k, v in LEVELS.items()}


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {"ts": round(record.created, 3), "level": _NAMES.get(record.levelno, "info"),
                "event": record.getMessage(), **getattr(record, "fields", {})}
        return json.dumps(body, default=str, separators=(",", ":"))


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        rest = " ".join(f"{k}={v}" for k, v in getattr(record, "fields", {}).items())
        return f"{record.levelname} {record.getMessage()} {rest}".rstrip()


class Logger:
    """``log(event, level=..., **fields)``: the call mountd's code uses, on a stdlib logger."""

    def __init__(self, stream: TextIO | None = None, level: str = "info", fmt: str = "json",
                 **context: Any) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.context = context  # fields every record carries (e.g. worker=1)
        self.threshold = LEVELS[level]
        self.fmt = fmt
        # A private (unregistered) logger per instance: tests and workers each have their own
        # stream, and nothing a library configures on the root logger changes mountd's output.
        self._logger = logging.Logger("litefs.mountd", self.threshold)
        self._logger.propagate = False
        handler = JournalHandler(self.stream)
        handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
        self._logger.addHandler(handler)

    def enabled(self, level: str) -> bool:
        return LEVELS[level] >= self.threshold

    def __call__(self, event: str, level: str = "info", **fields: Any) -> None:
        levelno = LEVELS[level]
        if levelno < self.threshold:
            return
        self._logger.log(levelno, "%s", event, extra={"fields": {**self.context, **fields}})
