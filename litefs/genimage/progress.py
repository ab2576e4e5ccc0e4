"""What an admin sees while genimage runs: one line per phase with its elapsed time.

A phase of known size (packages to unpack and configure) draws a bar on the same line while
it runs, when stderr is a terminal; in a log (not a terminal) only the phase lines appear, so
a CI log or ``genimage ... | tee`` stays readable.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TextIO

BAR_WIDTH = 30


def bar(done: float, total: float, width: int = BAR_WIDTH) -> str:
    """``[#######.......]  45%`` for ``done`` of ``total`` (clamped to 0..100%)."""
    frac = 0.0 if total <= 0 else min(max(done / total, 0.0), 1.0)
    n = int(frac * width)
    return "[" + "#" * n + "." * (width - n) + f"] {int(frac * 100):3d}%"


class Progress:
    """Phase lines ``genimage: [2/9] packages ... 12.3s`` on ``out``."""

    def __init__(self, phases: list[str], out: TextIO | None = None, prog: str = "genimage"):
        self.phases = phases
        self.out = out or sys.stderr
        self.prog = prog
        self.tty = self.out.isatty()
        self.start = time.monotonic()
        self._label = ""

    @contextlib.contextmanager
    def phase(self, name: str, detail: str = "") -> Iterator[Progress]:
        idx = self.phases.index(name) + 1 if name in self.phases else 0
        self._label = f"{self.prog}: [{idx}/{len(self.phases)}] {name}"
        t0 = time.monotonic()
        if self.tty:
            self.out.write(f"{self._label} {detail} ...")
            self.out.flush()
        try:
            yield self
        except BaseException:
            # The error itself is the one line the admin reads (printed by the caller); only
            # the half-drawn bar is cleared.
            if self.tty:
                self.out.write("\r\x1b[K")
                self.out.flush()
            raise
        self._line(f"{self._label} {detail + ' ' if detail else ''}"
                   f"done in {time.monotonic() - t0:.1f}s")

    def update(self, done: float, total: float, what: str = "") -> None:
        """Redraw the bar of the current phase (terminal only)."""
        if self.tty:
            self.out.write(f"\r\x1b[K{self._label} {bar(done, total)} {what[:40]}")
            self.out.flush()

    def _line(self, text: str) -> None:
        self.out.write(("\r\x1b[K" if self.tty else "") + text + "\n")
        self.out.flush()

    def total(self) -> float:
        return time.monotonic() - self.start
