"""Hostile requests against a real ``mountd`` process over TLS on loopback, and the MN CLIs.

Each attack is sent for real (classic ``<xcatrequest>`` over TLS from a node's address, or a
CLI run), and each test checks three things: the attacker gets a short one-line error and
nothing it should not see; the database is byte-for-byte unchanged; the daemon is still
serving, with a good client's plan latency measured while the attack runs (the security
requirement is < 1 s) and a clean exit on SIGTERM afterwards.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from litefs.initramfs import client
from litefs.mountd import codec
from sqlalchemy import Engine, insert

from litefs import db
from litefs.errors import MountdError
from litefs.schema import table
from tests import xcatdwire
from tests.dbutil import dump_all, load_tables
from tests.mountdutil import client_ssl, cluster_tables, free_port, mountd_process

BIN = Path(sys.executable).parent
NODES = {"n01": "127.0.0.11", "n02": "127.0.0.12", "n03": "127.0.0.13"}
SECRET = "root:$6$TOPSECRETHASH$do-not-echo:19000:0:99999:7:::"
#: The security requirement for a good client's plan latency while an attack runs.
LATENCY_LIMIT = 1.0
#: n03's image name is an arithmetic regex cell whose value overflows (inf → int).
OVERFLOW_CELL = "|n(\\d+)|img(" + "9" * 400 + "*$1)|"
NESTED = "(" * 5000 + "n01" + ")" * 5000


@dataclass
class Site:
    url: str
    db_file: Path
    ca: Path
    secret: Path
    fifo: Path
    tmp: Path

    def digest(self) -> str:
        return hashlib.sha256(self.db_file.read_bytes()).hexdigest()

    def tables(self) -> dict[str, str]:
        eng = db.open_engine(self.url)
        try:
            return dump_all(eng)
        finally:
            eng.dispose()


@pytest.fixture
def site(tmp_path: Path) -> Site:
    db_file = tmp_path / "litefs.db"
    url = f"sqlite:///{db_file}"
    tables = cluster_tables(NODES)
    eng: Engine = db.open_engine(url)
    load_tables(eng, tables)
    # n03 alone has a nodetype row whose provmethod cell overflows when evaluated. chtab and
    # tabrestore refuse it now; a database written before that check (plain SQL here) may
    # still hold one, and mountd must contain it to n03.
    with eng.begin() as conn:
        conn.execute(insert(table("nodetype")).values(
            node="n03", os="rhels8", arch="x86_64", profile="compute", provmethod=OVERFLOW_CELL))
    eng.dispose()
    ca = tmp_path / "ca"
    subprocess.run([BIN / "litefs", "ca", "init", "--dir", ca, "--san", "127.0.0.1"],
                   check=True, capture_output=True)
    secret = tmp_path / "shadow"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    return Site(url, db_file, ca, secret, fifo, tmp_path)


@pytest.fixture
def mountd(site: Site) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The real daemon; after the test: still running, and SIGTERM ends it with status 0."""
    port = free_port()
    sock_dir = Path(tempfile.mkdtemp(prefix="litefs-hostile-"))
    log = site.tmp / "mountd.log"
    try:
        with mountd_process(site.url, port, "--ca-dir", str(site.ca), "--socket",
                            str(sock_dir / "mountd.sock"), log_path=log) as proc:
            yield proc, port
            assert proc.poll() is None, "mountd died during the attack: " + log.read_text()[-2000:]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0, log.read_text()[-2000:]
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


def wait_for_socket(path: Path) -> Path:
    """The admin socket appears just after the TCP port starts listening."""
    deadline = time.monotonic() + 10
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    return path


def classic(port: int, ca: Path, noderange: str, *, source: str = "127.0.0.12",
            who: str | None = None, command: str = "litefile") -> tuple[list[str], list[str], int]:
    """One classic request over TLS from ``source``: (infos, errors, bytes of the reply)."""
    body = (f"<xcatrequest><command>{command}</command><noderange>{noderange}</noderange>"
            "</xcatrequest>\n").encode()
    ctx = client_ssl(ca, who)
    chunks: list[bytes] = []
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30,
                                 source_address=(source, 0)) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
    ):
        s.sendall(body)
        while True:
            try:
                data = s.recv(65536)
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError):
                break
            if not data:
                break
            chunks.append(data)
    reply = b"".join(chunks)
    infos, errors, done = xcatdwire.parse_classic_response(reply)
    assert done, reply[:500]
    return infos, errors, len(reply)


def plan_latency(port: int, ca: Path) -> float:
    t0 = time.monotonic()
    plan = client.fetch_plan_sync(f"127.0.0.1:{port}", ssl_context=client_ssl(ca),
                                  source_address="127.0.0.11", timeout=10,
                                  backoff=client.Backoff(base=0.05, cap=0.2, attempts=1))
    took = time.monotonic() - t0
    assert plan.node == "n01"
    return took


def under_attack(port: int, ca: Path, attack: Callable[[], None], *, attackers: int = 3,
                 probes: int = 8) -> list[float]:
    """Run ``attack`` in a loop from ``attackers`` threads; meanwhile time a good client."""
    stop = threading.Event()
    failures: list[BaseException] = []
    rounds = [0]

    def loop() -> None:
        while not stop.is_set():
            try:
                attack()
                rounds[0] += 1
            except BaseException as exc:
                failures.append(exc)
                return

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(attackers)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # let the attack get going before the first probe
    try:
        latencies = [plan_latency(port, ca) for _ in range(probes)]
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    if failures:
        raise failures[0]
    assert rounds[0] > 0, "the attack never completed once"
    print(f"good-client plan latency under attack: max {max(latencies):.3f} s, "
          f"median {sorted(latencies)[len(latencies) // 2]:.3f} s, {rounds[0]} attack requests")
    return latencies


def one_line(errors: list[str], *needles: str) -> str:
    assert len(errors) == 1, errors
    msg = errors[0]
    assert "\n" not in msg and len(msg) < 1000, msg[:2000]
    for needle in needles:
        assert needle in msg, msg
    return msg


# --- item 1: no file is read because a request said so ---------------------------------


def test_classic_noderange_file_is_never_read(site: Site, mountd: tuple) -> None:
    _proc, port = mountd
    before, tables = site.digest(), site.tables()
    for target in (f"^{site.secret}", "^/etc/shadow", f"^{site.ca}/ca.key",
                   f"n01,^{site.secret}", f"(^{site.secret})@compute"):
        infos, errors, _size = classic(port, site.ca, target)
        msg = one_line(errors, "only accepted by the local command line")
        assert infos == [] and "TOPSECRET" not in msg and "PRIVATE KEY" not in msg
        # The admin certificate does not make mountd read files either.
        infos, errors, _ = classic(port, site.ca, target, who="admin")
        msg = one_line(errors, "only accepted by the local command line")
        assert "TOPSECRET" not in msg and "PRIVATE KEY" not in msg
    assert site.digest() == before and site.tables() == tables
    assert plan_latency(port, site.ca) < LATENCY_LIMIT


def test_admin_socket_is_not_world_accessible(site: Site, mountd: tuple) -> None:
    proc, _port = mountd
    sock = wait_for_socket(Path(proc.args[proc.args.index("--socket") + 1]))  # type: ignore[index, union-attr]
    mode = stat.S_IMODE(sock.stat().st_mode)
    assert mode == 0o600, oct(mode)


# --- item 2: bounded work, good clients keep being served -------------------------------


ATTACKS = {
    # name: (noderange, words the one-line error must contain, or None for "answered")
    "redos-selector": ("nodelist.groups=~(.*.*.*.*)*x$", None),
    "redos-regex-atom": ("/(a|a)*(.*.*.*.*)*x", None),
    "backreference": ("nodelist.groups=~(a*)*\\1x", ("bad regular expression",)),
    "nested-parens": (NESTED, ("nests brackets more than",)),
    "dev-zero": ("^/dev/zero", ("only accepted by the local command line",)),
    "huge-bracket": ("x[1-999999]", ("too large", "limit 10000")),
    "huge-range": ("x1-x999999999999", ("too large",)),
    "many-unknown": ("x[1-9000]", ("invalid nodes and/or groups", "more)")),
    "over-budget": ("x[1-9000],y[1-9000]", ("too large", "limit 1000)")),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_hostile_noderange_is_bounded(site: Site, mountd: tuple, name: str) -> None:
    _proc, port = mountd
    target, needles = ATTACKS[name]
    before, tables = site.digest(), site.tables()

    def attack() -> None:
        t0 = time.monotonic()
        infos, errors, size = classic(port, site.ca, target)
        took = time.monotonic() - t0
        assert took < 5, f"{name}: the attack itself took {took:.1f} s"
        assert size < 4096, f"{name}: {size}-byte reply"
        assert infos == []
        if needles is not None:
            one_line(errors, *needles)

    latencies = under_attack(port, site.ca, attack)
    assert max(latencies) < LATENCY_LIMIT, latencies
    assert site.digest() == before and site.tables() == tables


def test_fifo_noderange_blocks_nobody(site: Site, mountd: tuple) -> None:
    _proc, port = mountd
    before = site.digest()

    def attack() -> None:
        _infos, errors, _ = classic(port, site.ca, f"^{site.fifo}")
        one_line(errors, "only accepted by the local command line")

    assert max(under_attack(port, site.ca, attack)) < LATENCY_LIMIT
    assert site.digest() == before


# --- item 3: a table value cannot crash mountd ------------------------------------------


def test_overflowing_cell_fails_only_its_node(site: Site, mountd: tuple) -> None:
    _proc, port = mountd
    before = site.digest()
    # n03 asks for its own plan (JSON) and over the classic protocol: an error, not a crash.
    with pytest.raises(MountdError, match="arithmetic overflows"):
        client.fetch_plan_sync(f"127.0.0.1:{port}", ssl_context=client_ssl(site.ca),
                               source_address="127.0.0.13", timeout=10,
                               backoff=client.Backoff(base=0.05, cap=0.2, attempts=1))
    _infos, errors, _ = classic(port, site.ca, "", source="127.0.0.13")
    one_line(errors, "n03", "arithmetic overflows")
    # An admin asking for every node by range: the bad node is an error for that request;
    # asking for the others still works.
    _infos, errors, _ = classic(port, site.ca, "n01-n03", who="admin")
    one_line(errors, "n03", "arithmetic overflows")
    infos, errors, _ = classic(port, site.ca, "n01-n02", who="admin")
    assert errors == [] and infos
    assert plan_latency(port, site.ca) < LATENCY_LIMIT
    assert site.digest() == before


# --- items 2 and 11: the MN CLIs give one line, not a hang or a traceback ---------------


CLI_CASES = [
    (["litefile", NESTED], "nests brackets more than"),
    (["lslite", NESTED], "nests brackets more than"),
    (["litefs", "plan", NESTED], "unknown node"),
    (["litefile", "nodelist.groups=~(.*.*.*.*)*x$"], None),
    (["lslite", "/(a|a)*(.*.*.*.*)*x"], None),
    (["litefile", "nodelist.groups=~(a*)*\\1x"], "bad regular expression"),
    (["litefile", "x[1-99999999]"], "too large"),
    (["tabdump", "-w", "groups=~(.*.*.*.*)*x$", "nodelist"], None),
    (["tabdump", "-w", "node=~" + "(" * 5000, "nodelist"], "bad regular expression in filter"),
    (["tabdump", "-w", "node=~" + "(a" * 600 + ")" * 600, "nodelist"], "too long"),
]


@pytest.mark.parametrize("argv,needle", CLI_CASES, ids=[c[0][0] + str(i) for i, c in enumerate(CLI_CASES)])
def test_cli_hostile_expressions(site: Site, argv: list[str], needle: str | None) -> None:
    before = site.digest()
    env = {**os.environ, "LITEFS_DB": site.url}
    t0 = time.monotonic()
    r = subprocess.run([BIN / argv[0], *argv[1:], "--db", site.url], capture_output=True,
                       text=True, timeout=60, env=env)
    took = time.monotonic() - t0
    assert took < 30, f"{argv[0]} took {took:.1f} s"
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    if needle is None:  # a valid (if silly) filter: it simply matches nothing, quickly
        assert r.returncode in (0, 1), r.stderr
    else:
        assert r.returncode in (1, 2), (r.returncode, r.stdout[-500:], r.stderr[-500:])
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and len(lines[0]) < 500, r.stderr[-2000:]
        assert needle in lines[0], lines[0]
    assert site.digest() == before


def test_cli_file_noderange_refuses_fifo_and_dev_zero(site: Site) -> None:
    for target in (f"^{site.fifo}", "^/dev/zero"):
        r = subprocess.run([BIN / "litefile", target, "--db", site.url], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode in (1, 2) and "not a regular file" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_admin_group_members_may_use_the_socket(site: Site) -> None:
    """``--admin-group``: mode 0660 owned by the group; a member (uid 65534, gid nogroup)
    connects and is admin; the digest is unchanged and the daemon keeps serving."""
    from tests.test_mountd_process import _as_nobody

    port = free_port()
    sock_dir = Path(tempfile.mkdtemp(prefix="litefs-hostile-"))
    sock_dir.chmod(0o755)  # reachable by the other user, as /run/litefs is
    sock = sock_dir / "mountd.sock"
    before = site.digest()
    try:
        with mountd_process(site.url, port, "--ca-dir", str(site.ca), "--socket", str(sock),
                            "--admin-group", "65534", log_path=site.tmp / "m.log") as proc:
            st = wait_for_socket(sock).stat()
            assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == 65534
            announce = codec.encode_json_request(codec.AnnounceRequest("n01"))
            reply = _as_nobody(sock, announce)
            assert reply.get("ok") is True and reply["targeted"] == 1, reply
            assert plan_latency(port, site.ca) < LATENCY_LIMIT
            assert proc.poll() is None
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)
    assert site.digest() == before
