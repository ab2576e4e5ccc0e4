"""The trio-free half of the mountd client: addresses, retry delays, reply checks and a
blocking one-request client.

The boot's plan fetch (:mod:`litefs.initramfs.fetchplan`) is on the critical path of every
boot, and importing trio costs it about as much as the rest of its start-up together (~50 ms
of a ~140 ms fetch, measured with ``python -X importtime``); a plan fetch is one request on
one connection, which :mod:`socket` and :mod:`ssl` do as well. :mod:`litefs.initramfs.client`
re-exports these names and keeps the trio functions (subscriptions, the async API);
``fetch_plan_sync``/``request_sync`` there are the functions here.
"""

from __future__ import annotations

import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from litefs.mountd import codec

from litefs.errors import LitefsError, MountdError, ProtocolError
from litefs.plan import Plan
from litefs.wellknown import DEFAULT_PORT


class CertificateError(MountdError):
    """mountd's certificate does not verify against the site CA: retrying cannot fix it."""


@dataclass(frozen=True)
class Endpoint:
    host: str | None
    port: int
    unix: str | None = None

    def __str__(self) -> str:
        if self.unix:
            return f"unix:{self.unix}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_server(text: str, default_port: int = DEFAULT_PORT) -> Endpoint:
    """``host``, ``host:port``, ``[v6]:port`` (as in ``XCAT=``) or ``unix:/path``."""
    text = text.strip()
    if text.startswith("unix:"):
        return Endpoint(None, 0, unix=text[5:])
    host, port_text = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.lstrip(":")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host:
        raise MountdError(f"bad mountd address {text!r}: expected host[:port] or unix:/path")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise MountdError(f"bad mountd address {text!r}: port is not a number") from None
    return Endpoint(host, port)


@dataclass(frozen=True)
class Backoff:
    """Delay before retry ``n`` (0-based): ``base * 2**n`` capped at ``cap``, jittered ±50%."""

    base: float = 1.0
    cap: float = 30.0
    attempts: int = 10

    def delay(self, n: int, rng: Callable[[], float] = random.random) -> float:
        raw = min(self.cap, self.base * (2 ** min(n, 30)))
        return raw * (0.5 + rng())


def fatal(exc: BaseException) -> bool:
    """Errors retrying cannot fix: the server's certificate is wrong, or we speak nonsense."""
    return isinstance(exc, CertificateError | ssl.SSLCertVerificationError | ProtocolError)


def check_reply(reply: dict[str, Any] | None, endpoint: Endpoint) -> dict[str, Any]:
    if reply is None:
        raise MountdError(f"mountd at {endpoint} closed the connection without an answer")
    if not reply.get("ok"):
        err = MountdError(f"mountd at {endpoint}: {reply.get('error', 'request failed')}")
        err.code = reply.get("code")  # type: ignore[attr-defined]
        raise err
    return reply


def tls_failure(endpoint: Endpoint, cause: BaseException) -> MountdError:
    """The error for a TLS handshake that failed with ``cause``."""
    if isinstance(cause, ssl.SSLCertVerificationError):
        return CertificateError(
            f"mountd at {endpoint} presented a certificate that does not verify "
            f"({cause.verify_message}); check the CA file and the server name"
        )
    return MountdError(
        f"TLS handshake with mountd at {endpoint} failed: {cause} "
        "(if that mountd runs with --insecure, connect without TLS)"
    )


def plain_to_tls_hint(exc: MountdError, endpoint: Endpoint, ssl_context: ssl.SSLContext | None) -> MountdError:
    """Plain TCP to a TLS port: mountd drops what is not a TLS handshake; say so."""
    if ssl_context is None and endpoint.unix is None and not hasattr(exc, "code"):
        return MountdError(f"{exc} (mountd serves TLS unless started with --insecure: "
                           "connect with its CA, not plain TCP)")
    return exc


class _TooSlow(Exception):
    """The request's deadline passed (reported as "no answer ... within")."""


def _connect(endpoint: Endpoint, ssl_context: ssl.SSLContext | None, deadline: float,
             source_address: str | None, server_hostname: str | None) -> socket.socket:
    def left() -> float:
        rest = deadline - time.monotonic()
        if rest <= 0:
            raise _TooSlow
        return rest

    try:
        if endpoint.unix:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(left())
                sock.connect(endpoint.unix)
            except BaseException:
                sock.close()
                raise
        else:
            assert endpoint.host is not None
            src = (source_address, 0) if source_address else None
            sock = socket.create_connection((endpoint.host, endpoint.port), timeout=left(), source_address=src)
            # As trio's streams do: without it Nagle holds the request behind the unacknowledged
            # end of the TLS handshake until mountd's delayed ACK (40 ms on Linux), every fetch.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except TimeoutError:
        raise _TooSlow from None
    except OSError as exc:
        raise MountdError(f"cannot reach mountd at {endpoint}: {exc.strerror or exc}") from None
    if ssl_context is None:
        return sock
    try:
        sock.settimeout(left())
        return ssl_context.wrap_socket(sock, server_hostname=server_hostname or endpoint.host)
    except TimeoutError:
        sock.close()
        raise _TooSlow from None
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        raise tls_failure(endpoint, exc) from None


def _exchange(sock: socket.socket, endpoint: Endpoint, req: codec.Request, deadline: float) -> dict[str, Any] | None:
    try:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        sock.sendall(codec.encode_json_request(req))
    except TimeoutError:
        raise _TooSlow from None
    except OSError as exc:  # ssl.SSLError is one
        raise MountdError(f"mountd at {endpoint} dropped the connection: {exc} "
                          "(a client certificate it does not accept?)") from None
    buffer = codec.LineBuffer(codec.MAX_REPLY)
    while True:
        try:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            data = sock.recv(65536)
        except TimeoutError:
            raise _TooSlow from None
        except OSError as exc:
            raise MountdError(f"connection to mountd broke: {exc}") from None
        if not data:
            return None
        lines = buffer.feed(data)
        if lines:
            return codec.decode_message(lines[0])


def request_blocking(
    server: str | Endpoint,
    req: codec.Request,
    *,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 30.0,
    source_address: str | None = None,
    server_hostname: str | None = None,
) -> dict[str, Any]:
    """Send one JSON request and return the reply (MountdError if it says ``ok: false``)."""
    endpoint = server if isinstance(server, Endpoint) else parse_server(server)
    deadline = time.monotonic() + timeout
    try:
        sock = _connect(endpoint, ssl_context, deadline, source_address, server_hostname)
        try:
            return check_reply(_exchange(sock, endpoint, req, deadline), endpoint)
        except MountdError as exc:
            raise plain_to_tls_hint(exc, endpoint, ssl_context) from None
        finally:
            sock.close()
    except _TooSlow:
        raise MountdError(f"no answer from mountd at {endpoint} within {timeout:g}s") from None


def fetch_plan_blocking(
    server: str | Endpoint,
    *,
    node: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    backoff: Backoff = Backoff(),
    sleep: Callable[[float], object] = time.sleep,
    rng: Callable[[], float] = random.random,
    timeout: float = 30.0,
    source_address: str | None = None,
    server_hostname: str | None = None,
    on_retry: Callable[[int, float, BaseException], None] | None = None,
) -> Plan:
    """This node's plan (``node`` only for admins), retrying until ``backoff.attempts`` run out.

    ``on_retry(attempt, delay, error)`` is called before each wait, e.g. to print a console
    line at boot. A certificate that does not verify fails at once: retrying cannot fix it.
    """
    endpoint = server if isinstance(server, Endpoint) else parse_server(server)
    attempt = 0
    while True:
        try:
            reply = request_blocking(
                endpoint, codec.PlanRequest(node=node), ssl_context=ssl_context, timeout=timeout,
                source_address=source_address, server_hostname=server_hostname,
            )  # fmt: skip
            return Plan.from_dict(reply["plan"])
        except (LitefsError, OSError, ssl.SSLError) as exc:
            if fatal(exc) or attempt + 1 >= backoff.attempts:
                if isinstance(exc, LitefsError):
                    raise
                raise MountdError(f"cannot get the plan from mountd at {endpoint}: {exc}") from None
            delay = backoff.delay(attempt, rng)
            if on_retry is not None:
                on_retry(attempt + 1, delay, exc)
            attempt += 1
            sleep(delay)
