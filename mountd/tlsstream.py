"""TLS for the server side, driven by OpenSSL on the socket itself rather than memory BIOs.

:class:`trio.SSLStream` pumps every TLS record through Python (memory BIOs, a state machine
per call), which costs more CPU per handshake than the handshake's cryptography. A boot
storm is thousands of short connections, so mountd instead wraps the non-blocking socket in
an :class:`ssl.SSLSocket` and lets OpenSSL read and write the socket directly, waiting with
``trio.lowlevel.wait_readable``/``wait_writable`` only when OpenSSL asks to. Same
:class:`trio.abc.Stream` contract: ``receive_some`` returns ``b""`` at end of stream, broken
connections raise :class:`trio.BrokenResourceError`.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

import trio


class TLSSocketStream(trio.abc.Stream):
    def __init__(self, sock: ssl.SSLSocket) -> None:
        self._sock = sock
        self._closed = False

    @classmethod
    def wrap_server(cls, stream: trio.SocketStream, context: ssl.SSLContext) -> TLSSocketStream:
        """Take over ``stream``'s socket (the SocketStream must not be used afterwards)."""
        raw = socket.socket(fileno=stream.socket.detach())
        raw.setblocking(False)
        tls = context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        return cls(tls)

    async def _retry(self, fn: Any, *args: Any) -> Any:
        """Call ``fn`` until OpenSSL stops asking to wait; always a trio checkpoint.

        Waiting for the socket is the checkpoint; when no wait was needed we yield once, so
        a peer that always has data ready cannot starve the other connections.
        """
        waited = False
        try:
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("stream was closed")
                try:
                    return fn(*args)
                except ssl.SSLWantReadError:
                    waited = True
                    await trio.lowlevel.wait_readable(self._sock)
                except ssl.SSLWantWriteError:
                    waited = True
                    await trio.lowlevel.wait_writable(self._sock)
                except (ssl.SSLError, OSError) as exc:
                    if isinstance(exc, ssl.SSLZeroReturnError):
                        raise
                    raise trio.BrokenResourceError(str(exc) or type(exc).__name__) from exc
        finally:
            if not waited:
                await trio.lowlevel.checkpoint()

    async def do_handshake(self) -> None:
        await self._retry(self._sock.do_handshake)

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self._sock.setsockopt(level, option, value)

    def getpeercert(self) -> dict | None:
        return self._sock.getpeercert()  # type: ignore[return-value]

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            return await self._retry(self._sock.recv, max_bytes or 65536)  # type: ignore[no-any-return]
        except ssl.SSLZeroReturnError:
            return b""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        if not view:
            await trio.lowlevel.checkpoint()
        while view:
            sent = await self._retry(self._sock.send, view[:262144])
            view = view[sent:]

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.wait_writable(self._sock)

    async def aclose(self) -> None:
        self.close_now()
        await trio.lowlevel.checkpoint()

    def close_now(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                # One attempt at close_notify (s_client prints an error without it); never
                # wait for the peer's answer.
                self._sock.unwrap()
            except (ssl.SSLError, OSError, ValueError):
                pass
            trio.lowlevel.notify_closing(self._sock)
            self._sock.close()
