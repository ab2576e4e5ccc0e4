"""The admin commands around mountd: ``litefs ca init/issue``, ``litefs notify``, ``mountd``."""

from __future__ import annotations

import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

BIN = Path(sys.executable).parent


def litefs(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BIN / "litefs", *map(str, args)], capture_output=True, text=True,
                          timeout=60)


def test_ca_init_writes_ca_server_and_admin_and_never_overwrites(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    r = litefs("ca", "init", "--dir", ca, "--san", "10.0.0.1", "--san", "mn.cluster",
               "--server-name", "mn")
    assert r.returncode == 0, r.stderr
    for name in ("ca", "server", "admin"):
        assert stat.S_IMODE((ca / f"{name}.key").stat().st_mode) == 0o600
    server = x509.load_pem_x509_certificate((ca / "server.pem").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "mn.cluster" in san.get_values_for_type(x509.DNSName)
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} >= {"10.0.0.1", "127.0.0.1"}
    admin = x509.load_pem_x509_certificate((ca / "admin.pem").read_bytes())
    assert admin.subject.rfc4514_string() == "CN=root,OU=admin"
    before = (ca / "ca.key").read_bytes()
    again = litefs("ca", "init", "--dir", ca)
    assert again.returncode == 1 and "a CA already exists" in again.stderr
    assert again.stderr.count("\n") == 1
    assert (ca / "ca.key").read_bytes() == before


def test_ca_issue_node_certificates(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    assert litefs("ca", "init", "--dir", ca).returncode == 0
    r = litefs("ca", "issue", "node", "n01", "--dir", ca)
    assert r.returncode == 0 and "node n01:" in r.stdout
    cert = x509.load_pem_x509_certificate((ca / "n01.pem").read_bytes())
    assert cert.subject.rfc4514_string() == "CN=n01,OU=node"
    dup = litefs("ca", "issue", "node", "n01", "--dir", ca)
    assert dup.returncode == 1 and "already exists" in dup.stderr
    bad = litefs("ca", "issue", "wizard", "n01", "--dir", ca)
    assert bad.returncode == 2
    missing = litefs("ca", "issue", "node", "n02", "--dir", tmp_path / "nowhere")
    assert missing.returncode == 1 and "litefs ca init" in missing.stderr


def test_notify_errors_are_one_line(tmp_path: Path) -> None:
    rel = litefs("notify", "n01", "etc/motd", "--server", "unix:/nonexistent")
    assert rel.returncode == 2 and "paths must be absolute: etc/motd" in rel.stderr
    down = litefs("notify", "n01", "/etc/motd", "--server", f"unix:{tmp_path}/none.sock")
    assert down.returncode == 1 and "cannot reach mountd" in down.stderr
    assert down.stderr.count("\n") == 1


def test_notify_through_the_database_is_refused_on_sqlite_and_with_a_server(tmp_path: Path
                                                                            ) -> None:
    from litefs import db

    url = f"sqlite:///{tmp_path}/site.db"
    db.init_db(db.open_engine(url))
    lite = litefs("notify", "--db", url, "n01", "/etc/motd")
    assert lite.returncode == 2 and lite.stderr.count("\n") == 1
    assert "is SQLite: one mountd serves every node" in lite.stderr
    both = litefs("notify", "--db", url, "--server", "unix:/x", "n01", "/etc/motd")
    assert both.returncode == 2 and "give one" in both.stderr
    gone = litefs("notify", "--db", "postgresql://nobody@127.0.0.1:1/x", "n01", "/etc/motd")
    assert gone.returncode == 1 and gone.stderr.count("\n") == 1
    assert "cannot connect to database" in gone.stderr


def test_mountd_help_and_bad_database(tmp_path: Path) -> None:
    r = subprocess.run([BIN / "mountd", "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "--insecure" in r.stdout and "--workers" in r.stdout
    bad = subprocess.run([BIN / "mountd", "--db", f"sqlite:///{tmp_path}/no/such.db", "--insecure"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and bad.stderr.startswith("mountd: cannot open database")


def test_mountd_start_up_failures_are_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/litefs.db"
    assert litefs("db", "init", "--db", url).returncode == 0
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for extra in ([], ["--workers", "2"]):
            r = subprocess.run([BIN / "mountd", "--db", url, "--insecure", "--port", str(port),
                                "--socket", "", *extra], capture_output=True, text=True, timeout=60)
            assert r.returncode == 1
            assert r.stderr.splitlines()[-1].startswith(f"mountd: cannot listen on port {port}:")
    r = subprocess.run([BIN / "mountd", "--db", url, "--insecure", "--port", "0",
                        "--socket", "/proc/no/such.sock"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1].startswith("mountd: cannot create the admin socket")


UNIT = Path(__file__).resolve().parent.parent / "mountd" / "litefs-mountd.service"


def test_systemd_unit_is_valid_and_starts_mountd_with_known_options(tmp_path: Path) -> None:
    import shlex

    from litefs.mountd.cli import _parser

    text = UNIT.read_text()
    exec_start = next(x for x in text.splitlines() if x.startswith("ExecStart="))
    argv = shlex.split(exec_start.removeprefix("ExecStart=").replace("$MOUNTD_OPTS", ""))
    assert argv[0] == "/usr/local/bin/litefs-mountd"  # absolute: set-up links it there
    args = _parser().parse_args(argv[1:])  # every option the unit passes is one mountd knows
    assert args.ca_dir == "/etc/litefs/ca" and args.socket == "/run/litefs/mountd.sock"
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text and "KillSignal=SIGTERM" in text
    verify = shutil.which("systemd-analyze")
    if verify is None:
        pytest.skip("systemd-analyze not installed (the unit's options were checked above)")
    copy = tmp_path / UNIT.name
    # This venv's script stands in for /usr/local/bin, which a test host may not have linked.
    copy.write_text(text.replace("/usr/local/bin/litefs-mountd", str(Path(sys.executable).parent / "litefs-mountd")))
    r = subprocess.run([verify, "verify", copy], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
