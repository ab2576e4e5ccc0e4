"""The node's side of the classic xcatd protocol, for tests: what ``rc.statelite`` sends and
how its pipeline reads mountd's answer (mountd itself only answers: :mod:`litefs.mountd.xcatd_codec`)."""

from __future__ import annotations

import re
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from litefs.errors import ProtocolError


def encode_classic_request(command: str, noderange: str | None = None) -> bytes:
    """What ``rc.statelite`` sends (with the here-string's newline)."""
    nr = f"<noderange>{escape(noderange)}</noderange>" if noderange else ""
    return f"<xcatrequest><command>{escape(command)}</command>{nr}</xcatrequest>\n".encode()


def parse_classic_response(data: bytes) -> tuple[list[str], list[str], bool]:
    """Client/test side: ``(infos, errors, serverdone)`` from a classic response stream."""
    infos: list[str] = []
    errors: list[str] = []
    done = False
    text = data.decode("utf-8", "replace")
    for chunk in text.split("</xcatresponse>"):
        chunk = chunk.strip()
        if not chunk:
            continue
        try:
            root = ElementTree.fromstring(chunk + "</xcatresponse>")
        except ElementTree.ParseError as exc:
            raise ProtocolError(f"malformed <xcatresponse>: {exc}") from None
        infos += [(e.text or "") for e in root.findall("info")]
        errors += [(e.text or "") for e in root.findall("error")]
        done = done or root.find("serverdone") is not None
    return infos, errors, done


def rc_statelite_litefile(data: bytes) -> list[str]:
    """The lines ``rc.statelite`` writes to ``.statelite/litefile`` from a litefile response.

    Mirrors its pipeline: strip tags, drop blank lines, strip leading blanks, keep the second
    ``:``-separated field, strip leading blanks.
    """
    out = []
    for line in _strip_tags_lines(data):
        fields = line.split(":")
        out.append(fields[1].lstrip(" ") if len(fields) > 1 else "")
    return out


def rc_statelite_litetree(data: bytes) -> list[str]:
    """The lines ``rc.statelite`` writes to ``.statelite/litetree`` (2nd blank-separated field)."""
    out = []
    for line in _strip_tags_lines(data):
        fields = line.split()
        out.append(fields[1] if len(fields) > 1 else "")
    return out


def _strip_tags_lines(data: bytes) -> list[str]:
    lines = []
    for raw in data.decode("utf-8", "replace").split("\n"):
        line = re.sub(r"<[^>]*>", "", raw)
        if re.fullmatch(r" *", line):
            continue
        lines.append(line.lstrip(" "))
    return lines
