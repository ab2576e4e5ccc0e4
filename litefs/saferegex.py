"""Regular expressions from untrusted text, matched in time linear in the input.

Patterns come from noderanges (``/n0[1-9]``, ``groups=~gpu``), dynamic groups, policy rows
and table cells: text an admin, a table or a network peer wrote. Python's ``re`` backtracks,
so ``(.*.*.*.*)*x$`` runs for hours on a short value while holding the GIL (mountd's event
loop stalls, SIGTERM is not even seen). RE2 (``google-re2``) guarantees linear-time
matching, so the work a pattern can cause is bounded by its size and the text's size; both
are capped here too. What RE2 cannot do in linear time (backreferences, lookaround) is
refused with a one-line error rather than handed to a backtracking engine.
"""

from __future__ import annotations

from functools import lru_cache

import re2

#: Longest pattern accepted: a noderange regex is a short name pattern, never a document.
MAX_PATTERN = 1024
#: RE2's memory budget for one compiled pattern (bounds ``x{1000}{1000}``-style blow-ups).
_MAX_MEM = 8 << 20

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # errors are reported to our caller, not printed on stderr
_OPTIONS.max_mem = _MAX_MEM


class RegexError(ValueError):
    """A pattern that is not accepted; the message is one line naming the pattern."""


def _short(pattern: str) -> str:
    text = repr(pattern)
    return text if len(text) <= 80 else text[:77] + "..."


@lru_cache(maxsize=512)
def compile(pattern: str):  # noqa: ANN201 -- re2's pattern type is not exported
    """Compile ``pattern`` with RE2; RegexError if too long or not supported."""
    if len(pattern) > MAX_PATTERN:
        raise RegexError(
            f"regular expression {_short(pattern)} is too long "
            f"({len(pattern)} characters, limit {MAX_PATTERN})"
        )
    try:
        return re2.compile(pattern, options=_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise RegexError(
            f"bad regular expression {_short(pattern)}: {reason} "
            "(backreferences and lookaround are not supported)"
        ) from None


def search(pattern: str, text: str) -> bool:
    """True when ``pattern`` matches somewhere in ``text`` (linear time)."""
    return compile(pattern).search(text) is not None


def fullmatch(pattern: str, text: str) -> bool:
    """True when ``pattern`` matches all of ``text`` (linear time)."""
    return compile(pattern).fullmatch(text) is not None


def check(pattern: str) -> str | None:
    """None if ``pattern`` is accepted, else the one-line reason (for write-time checks)."""
    try:
        compile(pattern)
    except RegexError as exc:
        return str(exc)
    return None
