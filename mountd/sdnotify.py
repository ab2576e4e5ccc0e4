"""sd_notify(3) without a dependency: one datagram to ``$NOTIFY_SOCKET``.

With ``Type=notify`` systemd waits for ``READY=1`` before it calls the unit started, so units
ordered after litefs-mountd (and ``systemctl start`` itself) only go on once the port listens.
Outside systemd ``NOTIFY_SOCKET`` is unset and this does nothing.
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``); True if a notify socket took it."""
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # abstract namespace socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(state.encode(), addr)
    except OSError:
        return False  # systemd gone or socket unreachable: readiness is advisory, not fatal
    return True
