"""Several mountd worker processes on one port (``mountd --workers N``).

A TLS handshake costs more CPU than everything else mountd does for a plan, and one Python
process uses one core; so a boot storm is served by N forked workers that accept from the
same listening socket. Each worker has its own table cache. Workers talk to each other
through Unix datagram sockets made before forking: an announcement received by one worker is
passed to all (each delivers to its own subscribers), and every subscribe/unsubscribe is
passed on as a count, so any worker can say which nodes an announcement reached.

The parent process only forwards signals (SIGTERM/SIGINT stop, SIGHUP reloads tables) and
reaps workers; if a worker dies on its own, the parent stops the rest and exits 1 so that
systemd restarts the service as a whole.
"""

from __future__ import annotations

import enum
import json
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from litefs import syscalls

_MAX_DATAGRAM = 256 * 1024


class SiblingNews(enum.StrEnum):
    """The ``"t"`` of a message between workers (as sent: JSON strings)."""

    #: A subscription came (``"d": 1``) or went (``-1``) for ``"node"`` at the sender.
    SUBSCRIPTION = "sub"
    #: Deliver ``"paths"`` to this worker's subscribers of ``"target"``.
    ANNOUNCE = "announce"
    #: The tables changed: drop the cached view and look again.
    TABLES = "tables"


class Siblings:
    """This worker's inbox and the other workers' outboxes."""

    def __init__(self, index: int, inbox: socket.socket, outboxes: list[socket.socket]) -> None:
        self.index = index
        self.inbox = inbox
        self.outboxes = [s for i, s in enumerate(outboxes) if i != index]
        self.dropped = 0

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode()
        for box in self.outboxes:
            try:
                box.send(data)
            except OSError:
                self.dropped += 1  # a sibling that is gone or drowning; never block here

    async def run(self, handle: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        while True:
            await trio.lowlevel.wait_readable(self.inbox)
            try:
                data = self.inbox.recv(_MAX_DATAGRAM)
            except BlockingIOError:
                continue
            try:
                message = json.loads(data)
            except ValueError:
                continue
            await handle(message)


def make_channels(n: int) -> tuple[list[socket.socket], list[socket.socket]]:
    inboxes, outboxes = [], []
    for _ in range(n):
        inbox, outbox = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for s in (inbox, outbox):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * _MAX_DATAGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * _MAX_DATAGRAM)
        inbox.setblocking(False)
        outbox.setblocking(False)
        inboxes.append(inbox)
        outboxes.append(outbox)
    return inboxes, outboxes


def listen_socket(host: str, port: int, backlog: int) -> socket.socket:
    """The shared listening socket (all addresses, dual-stack where possible)."""
    if not host and socket.has_dualstack_ipv6():
        sock = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True,
                                    backlog=backlog)
    else:
        sock = socket.create_server((host or "0.0.0.0", port), backlog=backlog)
    return sock


def _die_with_parent() -> None:
    """Linux: a worker gets SIGTERM when the parent dies (no orphan holding the port)."""
    try:
        syscalls.die_with_parent(signal.SIGTERM)
    except OSError:
        pass


def run_workers(n: int, worker: Callable[[int], int]) -> int:
    """Fork ``n`` workers running ``worker(index)``; forward signals; return the exit status."""
    pids: dict[int, int] = {}
    for index in range(n):
        pid = os.fork()
        if pid == 0:
            status = 1
            _die_with_parent()
            try:
                status = worker(index)
            finally:
                os._exit(status)
        pids[pid] = index
    watched = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    stopping = False
    failed = False
    while pids:
        signum = signal.sigwait(watched)
        if signum == signal.SIGCHLD:
            while pids:
                pid, _status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                pids.pop(pid, None)
                if not stopping:
                    # A worker ended on its own: stop the others, let systemd restart us.
                    failed = True
                    stopping = True
                    for other in pids:
                        os.kill(other, signal.SIGTERM)
            continue
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM if signum == signal.SIGINT else signum)
            except ProcessLookupError:
                pass
    return 1 if failed else 0
