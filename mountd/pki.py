"""The site certificate authority and mountd's TLS context (the clients' is :mod:`litefs.initramfs.tls`).

``litefs ca init`` creates, in one directory: the CA (``ca.pem``, ``ca.key``), mountd's server
certificate (``server.pem``/``server.key``) and an admin certificate (``admin.pem``/
``admin.key``). Certificates carry their role in the subject's OU (``server``, ``admin``,
``node``) and, for servers, the names and addresses nodes connect to as subjectAltNames.
Keys are ECDSA P-256: a boot storm is thousands of handshakes, and P-256 signs an order of
magnitude faster than RSA-2048. Private keys are written mode 0600 and never overwritten.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from litefs.errors import LitefsError, UsageError
from litefs.names import check_node_name

ROLES = ("server", "admin", "node")
_DAYS_CA = 3650
_DAYS_CERT = 825


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_public(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def create_ca(directory: Path, common_name: str = "litefs site CA") -> CertFiles:
    """Create ``ca.pem``/``ca.key`` in ``directory``; refuses to overwrite an existing CA."""
    directory.mkdir(parents=True, exist_ok=True)
    files = CertFiles(directory / "ca.pem", directory / "ca.key")
    if files.cert.exists() or files.key.exists():
        raise LitefsError(
            f"a CA already exists in {directory} (ca.pem/ca.key); "
            "remove it first or choose another --dir"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_DAYS_CA))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    _write_private(files.key, _key_pem(key))
    _write_public(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    return files


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    except FileNotFoundError as exc:
        raise LitefsError(
            f"no CA in {directory} ({exc.filename} missing); run 'litefs ca init --dir {directory}'"
        ) from None
    except ValueError as exc:
        raise LitefsError(f"cannot read the CA in {directory}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise LitefsError(f"{directory}/ca.key is not an EC key")
    return cert, key


def default_server_names() -> list[str]:
    """Names nodes may use for this host: hostname, FQDN, localhost and loopback addresses."""
    names = {socket.gethostname(), socket.getfqdn(), "localhost", "127.0.0.1", "::1"}
    return sorted(n for n in names if n)


def issue(
    directory: Path,
    role: str,
    name: str,
    *,
    out: Path | None = None,
    san: list[str] | None = None,
) -> CertFiles:
    """Issue a ``role`` certificate for ``name`` signed by the CA in ``directory``.

    Written to ``out`` + ``.pem``/``.key`` (default ``directory/<name>``). Server certificates
    get ``san`` (names and IP addresses) as subjectAltNames.
    """
    if role not in ROLES:
        raise UsageError(f"unknown certificate role {role!r} (one of {', '.join(ROLES)})")
    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"bad certificate name {name!r}")
    if role == "node":
        # The CN of a node certificate *is* the node's identity in mountd: same grammar.
        try:
            check_node_name(name)
        except LitefsError as exc:
            raise UsageError(f"cannot issue a node certificate: {exc}") from None
    return _sign(directory, role, name, out=out, san=san)


def _sign(
    directory: Path, role: str, name: str, *, out: Path | None, san: list[str] | None
) -> CertFiles:
    """Issue without the name checks (the tests forge what another tool might have issued)."""
    ca_cert, ca_key = _load_ca(directory)
    base = out if out is not None else directory / name
    files = CertFiles(base.with_name(base.name + ".pem"), base.with_name(base.name + ".key"))
    for f in (files.cert, files.key):
        if f.exists():
            raise LitefsError(f"{f} already exists; remove it first to re-issue")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    now = _now()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if role == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_DAYS_CERT))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if role == "server":
        alt: list[x509.GeneralName] = []
        for entry in dict.fromkeys([name, *(san or [])]):
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(entry)))
            except ValueError:
                alt.append(x509.DNSName(entry))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    files.cert.parent.mkdir(parents=True, exist_ok=True)
    _write_private(files.key, _key_pem(key))
    _write_public(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    return files


def init_site(directory: Path, *, server_name: str | None = None, san: list[str] | None = None,
              admin_name: str = "admin") -> dict[str, CertFiles]:
    """``litefs ca init``: CA, server certificate (``server``) and admin certificate."""
    ca = create_ca(directory)
    names = default_server_names() + list(san or [])
    server = issue(directory, "server", server_name or socket.getfqdn() or "mountd",
                   out=directory / "server", san=names)
    admin = issue(directory, "admin", admin_name, out=directory / "admin")
    return {"ca": ca, "server": server, "admin": admin}


# --- TLS contexts -------------------------------------------------------------------------


def server_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """mountd's context: its certificate, client certificates optional but verified."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
        ctx.load_verify_locations(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise LitefsError(f"cannot load TLS files ({cert}, {key}, {ca}): {exc}") from None
    ctx.verify_mode = ssl.CERT_OPTIONAL
    # Stateless tickets would let a node resume; it boots once, so do not spend on them.
    ctx.num_tickets = 0
    return ctx


def peer_subject(cert: dict | None) -> tuple[str | None, str | None]:
    """``(CN, OU)`` of a verified peer certificate as ``SSLObject.getpeercert()`` returns it."""
    if not cert:
        return None, None
    cn = ou = None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = value
            elif key == "organizationalUnitName":
                ou = value
    return cn, ou
