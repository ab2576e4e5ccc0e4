"""The classic xcatd protocol mountd answers stock ``rc.statelite`` nodes in (pure, no sockets).

``<xcatrequest><command>litefile</command></xcatrequest>`` is answered by ``<xcatresponse>``
documents, one ``<info>`` per line (the node's sed/awk pipeline strips tags line by line), then
a ``serverdone`` response; the server then closes the connection, which is what ends
``openssl s_client -quiet``. Only mountd speaks it: litefs nodes use the JSON protocol
(:mod:`.codec`), so the XML modules are never loaded on a node.

Everything here raises :class:`litefs.errors.ProtocolError` with a message fit for the peer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from litefs.errors import ProtocolError


@dataclass(frozen=True)
class ClassicRequest:
    """A classic xcatd request: ``command`` plus optional ``noderange`` and ``args``."""

    command: str
    noderange: str | None = None
    args: tuple[str, ...] = field(default_factory=tuple)


_END_TAG = b"</xcatrequest>"
_COMMAND_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def classic_request_complete(buf: bytes) -> bool:
    """True once ``buf`` holds a whole ``<xcatrequest>`` document."""
    return _END_TAG in buf


def decode_classic_request(buf: bytes) -> ClassicRequest:
    """Parse a classic request document (everything up to ``</xcatrequest>``)."""
    end = buf.find(_END_TAG)
    if end < 0:
        raise ProtocolError("incomplete <xcatrequest>")
    doc = buf[: end + len(_END_TAG)].strip()
    if b"<!" in doc or b"<?" in doc[1:]:
        # No DOCTYPE/entities (nothing legitimate uses them; they are how XML bombs start).
        raise ProtocolError("malformed <xcatrequest>: declarations are not allowed")
    try:
        root = ElementTree.fromstring(doc)
    except ElementTree.ParseError as exc:
        raise ProtocolError(f"malformed <xcatrequest>: {exc}") from None
    if root.tag != "xcatrequest":
        raise ProtocolError(f"expected <xcatrequest>, got <{root.tag}>")
    command = (root.findtext("command") or "").strip()
    if not _COMMAND_RE.match(command):
        raise ProtocolError("malformed <xcatrequest>: missing or bad <command>")
    noderange = (root.findtext("noderange") or "").strip() or None
    args = tuple((a.text or "").strip() for a in root.findall("arg"))
    return ClassicRequest(command=command, noderange=noderange, args=args)


def encode_classic_info(lines: list[str]) -> bytes:
    """One response holding ``lines`` as ``<info>`` elements, each on a line of its own."""
    body = "".join(f"<info>{escape(_one_line(line))}</info>\n" for line in lines)
    return f"<xcatresponse>\n{body}</xcatresponse>\n".encode()


def encode_classic_error(message: str, code: int = 1) -> bytes:
    return (
        f"<xcatresponse>\n<error>{escape(_one_line(message))}</error>\n"
        f"<errorcode>{code}</errorcode>\n</xcatresponse>\n"
    ).encode()


#: The last response of every classic exchange.
CLASSIC_SERVERDONE = b"<xcatresponse>\n<serverdone></serverdone>\n</xcatresponse>\n"


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")
