"""Talking to mountd from a node or an admin tool (trio; blocking wrappers for scripts).

* :func:`fetch_plan` — a node's plan at boot, retried with jittered exponential backoff;
* :func:`subscribe` — keep a subscription open and call ``on_change(paths)`` for every
  invalidation; after a lost connection (mountd restarted) it resubscribes and reports
  ``["/"]`` once, because announcements made meanwhile were missed;
* :func:`request` — one JSON request (admin: plan of another node, announce, reload, health).

Sleeping goes through the ``sleep`` argument (default :func:`trio.sleep`) and jitter through
``rng``, so tests drive retries without waiting. ``server`` is ``host``, ``host:port``,
``[v6]:port`` or ``unix:/path``.
"""

from __future__ import annotations

import inspect
import random
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio
from litefs.mountd import codec

from litefs.errors import LitefsError, MountdError
from litefs.plan import Plan

from .wire import (
    Backoff,
    Endpoint,
    check_reply,
    fatal,
    fetch_plan_blocking,
    parse_server,
    plain_to_tls_hint,
    request_blocking,
    tls_failure,
)
from .wire import (
    CertificateError as CertificateError,  # re-exported: callers catch client.CertificateError
)

OnChange = Callable[[list[str]], Any]
Sleep = Callable[[float], Awaitable[None]]

_PLAN_BACKOFF = Backoff()
_SUBSCRIBE_BACKOFF = Backoff(base=0.5, cap=15.0)


#: the trio-free pieces live in litefs.initramfs.wire (the boot's fetch imports no trio)
_fatal = fatal
_check = check_reply


async def _connect(
    endpoint: Endpoint,
    ssl_context: ssl.SSLContext | None,
    *,
    source_address: str | None = None,
    server_hostname: str | None = None,
) -> trio.abc.Stream:
    try:
        if endpoint.unix:
            stream: trio.abc.Stream = await trio.open_unix_socket(endpoint.unix)
            return stream
        assert endpoint.host is not None
        stream = await trio.open_tcp_stream(
            endpoint.host, endpoint.port, local_address=source_address
        )
    except OSError as exc:
        raise MountdError(f"cannot reach mountd at {endpoint}: {exc.strerror or exc}") from None
    if ssl_context is None:
        return stream
    tls = trio.SSLStream(stream, ssl_context, server_hostname=server_hostname or endpoint.host)
    try:
        await tls.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(stream)
        raise tls_failure(endpoint, exc.__cause__ or exc) from None
    return tls


class _Lines:
    """Reads reply lines from a stream, at most ``limit`` bytes each."""

    def __init__(self, stream: trio.abc.Stream, limit: int = codec.MAX_REPLY) -> None:
        self.stream = stream
        self.buffer = codec.LineBuffer(limit)
        self.ready: list[bytes] = []

    async def next(self) -> dict[str, Any] | None:
        while not self.ready:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError as exc:
                raise MountdError(f"connection to mountd broke: {exc.__cause__ or exc}") from None
            if not data:
                return None
            self.ready += self.buffer.feed(data)
        return codec.decode_message(self.ready.pop(0))


async def request(
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
    try:
        return await _request(endpoint, req, ssl_context, timeout, source_address, server_hostname)
    except trio.TooSlowError:
        raise MountdError(f"no answer from mountd at {endpoint} within {timeout:g}s") from None


async def _request(
    endpoint: Endpoint,
    req: codec.Request,
    ssl_context: ssl.SSLContext | None,
    timeout: float,
    source_address: str | None,
    server_hostname: str | None,
) -> dict[str, Any]:
    with trio.fail_after(timeout):
        stream = await _connect(
            endpoint, ssl_context, source_address=source_address, server_hostname=server_hostname
        )
        try:
            await stream.send_all(codec.encode_json_request(req))
            return _check(await _Lines(stream).next(), endpoint)
        except MountdError as exc:
            raise plain_to_tls_hint(exc, endpoint, ssl_context) from None
        except trio.BrokenResourceError as exc:
            raise MountdError(
                f"mountd at {endpoint} dropped the connection: {exc.__cause__ or exc} "
                "(a client certificate it does not accept?)"
            ) from None
        finally:
            await trio.aclose_forcefully(stream)


async def fetch_plan(
    server: str | Endpoint,
    *,
    node: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    backoff: Backoff = _PLAN_BACKOFF,
    sleep: Sleep = trio.sleep,
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
            reply = await request(
                endpoint, codec.PlanRequest(node=node), ssl_context=ssl_context,
                timeout=timeout, source_address=source_address, server_hostname=server_hostname,
            )
            return Plan.from_dict(reply["plan"])
        except (LitefsError, OSError, ssl.SSLError, trio.TooSlowError, trio.BrokenResourceError) as exc:
            if _fatal(exc) or attempt + 1 >= backoff.attempts:
                if isinstance(exc, LitefsError):
                    raise
                if isinstance(exc, trio.TooSlowError):
                    raise MountdError(f"no answer from mountd at {endpoint} within {timeout}s") from None
                raise MountdError(f"cannot get the plan from mountd at {endpoint}: {exc}") from None
            delay = backoff.delay(attempt, rng)
            if on_retry is not None:
                on_retry(attempt + 1, delay, exc)
            attempt += 1
            await sleep(delay)


def fetch_plan_sync(server: str, **kwargs: Any) -> Plan:
    """:func:`fetch_plan` for code that is not running trio (boot scripts, admin tools):
    blocking sockets, no event loop (:func:`litefs.initramfs.wire.fetch_plan_blocking`)."""
    return fetch_plan_blocking(server, **kwargs)


def request_sync(server: str, req: codec.Request, **kwargs: Any) -> dict[str, Any]:
    return request_blocking(server, req, **kwargs)


async def _deliver(on_change: OnChange, paths: list[str]) -> None:
    result = on_change(paths)
    if inspect.isawaitable(result):
        await result


async def subscribe(
    server: str | Endpoint,
    on_change: OnChange,
    *,
    ssl_context: ssl.SSLContext | None = None,
    backoff: Backoff = _SUBSCRIBE_BACKOFF,
    sleep: Sleep = trio.sleep,
    rng: Callable[[], float] = random.random,
    silence_timeout: float = 100.0,
    source_address: str | None = None,
    server_hostname: str | None = None,
    on_state: Callable[[str], None] | None = None,
    on_plan: Callable[[dict[str, Any]], Any] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Stay subscribed forever (until cancelled), calling ``on_change(paths)`` per event.

    ``on_change`` may be a plain or an async function. ``on_plan(plan_dict)`` (plain or
    async) gets the node's plan whenever mountd says it changed, and once after every
    (re)subscription; the node compares it with the plan it runs and swaps when they differ. ``task_status.started()`` fires on the
    first successful subscription. mountd pings every 30 s; ``silence_timeout`` without a
    byte means the connection is dead (a half-open TCP after a crash) and we reconnect.
    """
    endpoint = server if isinstance(server, Endpoint) else parse_server(server)
    started = False
    had_connection = False
    failures = 0
    while True:
        stream: trio.abc.Stream | None = None
        try:
            stream = await _connect(
                endpoint, ssl_context, source_address=source_address,
                server_hostname=server_hostname,
            )
            await stream.send_all(codec.encode_json_request(codec.SubscribeRequest()))
            lines = _Lines(stream)
            with trio.fail_after(silence_timeout):
                _check(await lines.next(), endpoint)
            if on_state is not None:
                on_state("subscribed")
            if had_connection:
                await _deliver(on_change, ["/"])  # events sent while we were away are lost
            had_connection = True
            failures = 0
            if not started:
                started = True
                task_status.started()
            while True:
                with trio.fail_after(silence_timeout):
                    event = await lines.next()
                if event is None:
                    raise MountdError(f"mountd at {endpoint} closed the subscription")
                if event.get("event") == codec.Event.INVALIDATE:
                    paths = [p for p in event.get("paths", []) if isinstance(p, str)]
                    await _deliver(on_change, paths or ["/"])
                elif event.get("event") == codec.Event.PLAN and on_plan is not None:
                    plan = event.get("plan")
                    if isinstance(plan, dict):
                        result = on_plan(plan)
                        if inspect.isawaitable(result):
                            await result
        except (LitefsError, OSError, ssl.SSLError, trio.TooSlowError, trio.BrokenResourceError) as exc:
            if _fatal(exc) and not had_connection:
                raise
            if on_state is not None:
                on_state("disconnected")
            delay = backoff.delay(failures, rng)
            failures += 1
            await sleep(delay)
        finally:
            if stream is not None:
                await trio.aclose_forcefully(stream)


def refresh_hook(mountpoint: str) -> Callable[[list[str]], Awaitable[None]]:
    """``on_change`` for :func:`subscribe` that invalidates paths on a running litefs mount.

    Wiring on a node is one line::

        await subscribe(server, refresh_hook("/"), ssl_context=ctx)
    """

    async def hook(paths: list[str]) -> None:
        from litefs.fs import control  # the fs side; imported only on nodes that mount

        await trio.to_thread.run_sync(control.refresh, mountpoint, paths)

    return hook


async def announce(server: str | Endpoint, target: str, paths: Sequence[str] = (), **kw: Any) -> dict[str, Any]:
    return await request(server, codec.AnnounceRequest(target=target, paths=tuple(paths)), **kw)
