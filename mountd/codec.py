"""mountd's JSON protocol as pure functions: bytes in, messages out, and back (no sockets).

Both ends use this module: mountd and the node's client (:mod:`litefs.initramfs.client`), so it
imports nothing of the server and nothing heavier than :mod:`json`.

Two protocols share one port and are told apart by the first byte after the TLS handshake
(:func:`sniff`):

* **JSON** (litefs nodes and admin tools, here): one JSON object per line, UTF-8, at most
  :data:`MAX_MESSAGE` bytes including the newline. A request is ``{"op": ..., ...}``; every
  reply carries ``"ok"``; a subscription then streams ``{"event": ...}`` lines.
* **classic xcatd** (stock ``rc.statelite``): :mod:`.xcatd_codec`, the server's side only.

Everything here raises :class:`litefs.errors.ProtocolError` with a message fit for the peer.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any, Literal

from litefs.errors import ProtocolError

#: Largest request or reply line we accept, newline included (a plan of a few thousand rules
#: fits easily; anything bigger is a broken or hostile peer).
MAX_MESSAGE = 64 * 1024
#: Largest reply a client accepts (plans can be large: many rules, many sources).
MAX_REPLY = 16 * 1024 * 1024
#: Version of the JSON protocol; a request may carry ``"v"``; higher versions are refused.
PROTOCOL_VERSION = 1

Protocol = Literal["json", "classic"]


class Event(enum.StrEnum):
    """The ``"event"`` of a line mountd sends on a subscription."""

    #: ``paths`` changed in the node's image or sources (``seq`` counts announcements).
    INVALIDATE = "invalidate"
    #: Nothing happened for ``ping_interval``: the connection is alive.
    PING = "ping"
    #: The tables changed the node's plan: ``plan`` is the new one (``generation`` its view).
    PLAN = "plan"

# --- requests ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanRequest:
    """The caller's own plan (``node`` None) or, for admins, the plan of ``node``."""

    node: str | None = None


@dataclass(frozen=True)
class AnnounceRequest:
    """Admin: tell running nodes in ``target`` (noderange or osimage) to drop ``paths``."""

    target: str
    paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class SubscribeRequest:
    """Keep the connection open and stream invalidation events for the caller's node."""


@dataclass(frozen=True)
class HealthRequest:
    """Liveness and database state; answered to anyone."""


@dataclass(frozen=True)
class ReloadRequest:
    """Admin: drop cached tables now (as after ``chtab``) instead of at the next check."""


Request = PlanRequest | AnnounceRequest | SubscribeRequest | HealthRequest | ReloadRequest

#: Policy command name each JSON request is checked as (admin-only ones are checked separately).
_OPS = ("plan", "announce", "subscribe", "health", "reload")


def sniff(first: bytes) -> Protocol:
    """Which protocol a connection speaks, from its first bytes (leading whitespace ignored)."""
    head = first.lstrip()
    if not head:
        raise ProtocolError("empty request")
    if head[:1] == b"{":
        return "json"
    if head[:1] == b"<":
        return "classic"
    raise ProtocolError("unrecognised request: expected a JSON object or <xcatrequest>")


class LineBuffer:
    """Splits a byte stream into lines, holding at most ``limit`` bytes of an unfinished line.

    This is the per-connection memory bound: a peer that sends more than ``limit`` bytes
    without a newline gets a ProtocolError instead of growing the buffer.
    """

    def __init__(self, limit: int = MAX_MESSAGE) -> None:
        self.limit = limit
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        lines: list[bytes] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                break
            if nl + 1 > self.limit:
                raise ProtocolError(f"message too large (limit {self.limit} bytes)")
            lines.append(bytes(self._buf[:nl]))
            del self._buf[: nl + 1]
        if len(self._buf) > self.limit:
            raise ProtocolError(f"message too large (limit {self.limit} bytes)")
        return lines

    @property
    def pending(self) -> int:
        return len(self._buf)


def _str_field(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 4096:
        raise ProtocolError(f"field {key!r} must be a non-empty string")
    return value


def _json_object(line: bytes, what: str) -> dict[str, Any]:
    """``line`` as a JSON object; anything else is a ProtocolError naming ``what`` it was."""
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed {what}: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"malformed {what}: expected an object")
    return obj


def decode_json_request(line: bytes) -> Request:
    """One JSON request line (without its newline) → a request object."""
    obj = _json_object(line, "JSON request")
    version = obj.get("v", PROTOCOL_VERSION)
    if not isinstance(version, int) or version > PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version!r} not supported (mountd speaks 1)")
    op = obj.get("op")
    if op == "plan":
        return PlanRequest(node=_str_field(obj, "node"))
    if op == "announce":
        target = _str_field(obj, "target")
        if target is None:
            raise ProtocolError("announce needs a 'target' (noderange or osimage)")
        paths = obj.get("paths", [])
        if not isinstance(paths, list) or not all(
            isinstance(p, str) and p.startswith("/") for p in paths
        ):
            raise ProtocolError("announce 'paths' must be a list of absolute paths")
        return AnnounceRequest(target=target, paths=tuple(paths))
    if op == "subscribe":
        return SubscribeRequest()
    if op == "health":
        return HealthRequest()
    if op == "reload":
        return ReloadRequest()
    raise ProtocolError(f"unknown op {op!r} (known: {', '.join(_OPS)})")


def encode_json_request(req: Request) -> bytes:
    """A request object → its wire line (used by the client library)."""
    if isinstance(req, PlanRequest):
        obj: dict[str, Any] = {"op": "plan"}
        if req.node is not None:
            obj["node"] = req.node
    elif isinstance(req, AnnounceRequest):
        obj = {"op": "announce", "target": req.target, "paths": list(req.paths)}
    elif isinstance(req, SubscribeRequest):
        obj = {"op": "subscribe"}
    elif isinstance(req, HealthRequest):
        obj = {"op": "health"}
    elif isinstance(req, ReloadRequest):
        obj = {"op": "reload"}
    else:
        raise TypeError(f"not a JSON request: {req!r}")
    obj["v"] = PROTOCOL_VERSION
    return encode_message(obj)


def encode_message(obj: dict[str, Any]) -> bytes:
    """Any reply or event → one compact JSON line."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode() + b"\n"


def ok_reply(**fields: Any) -> bytes:
    return encode_message({"ok": True, **fields})


def error_reply(message: str, code: str = "error") -> bytes:
    return encode_message({"ok": False, "error": message, "code": code})


def decode_message(line: bytes) -> dict[str, Any]:
    """A reply or event line → dict (client side)."""
    return _json_object(line, "reply from mountd")
