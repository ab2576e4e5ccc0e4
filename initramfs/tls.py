"""The TLS context a node (or an admin tool) talks to mountd with: mountd verified against the
site CA, and the caller's own certificate when it has one.

It lives on the node side and needs only :mod:`ssl`: the site CA and the server's context
(:mod:`litefs.mountd.pki`) pull in ``cryptography``, which no node needs at boot.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from litefs.errors import LitefsError


def client_context(ca: Path | None, cert: Path | None = None, key: Path | None = None,
                   check_hostname: bool = True) -> ssl.SSLContext:
    """A node's or admin's context: verifies mountd against the site CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if ca is not None:
            ctx.load_verify_locations(cafile=str(ca))
        else:
            ctx.load_default_certs()
        if cert is not None:
            ctx.load_cert_chain(str(cert), str(key) if key else None)
    except (OSError, ssl.SSLError) as exc:
        raise LitefsError(f"cannot load TLS files ({ca}, {cert}, {key}): {exc}") from None
    ctx.check_hostname = check_hostname
    return ctx


def node_context(ca: str | None) -> ssl.SSLContext | None:
    """TLS to mountd verified against ``ca``; with ``$LITEFS_CERT`` (and ``$LITEFS_KEY``, default
    the same path with ``.key``) the node also proves who it is by its certificate, which a
    site with ``site.litefs_require_client_cert=yes`` demands. No ``ca``: plain TCP (None)."""
    if not ca:
        return None
    cert = os.environ.get("LITEFS_CERT") or None
    key = os.environ.get("LITEFS_KEY") or (str(Path(cert).with_suffix(".key")) if cert else None)
    return client_context(Path(ca), Path(cert) if cert else None, Path(key) if key else None)
