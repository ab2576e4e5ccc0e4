"""mountd as a real systemd service: the unit verifies, its ``systemd-analyze security``
exposure is at most 4.0, and the unit's own command line (run by hand with a real
NOTIFY_SOCKET this test binds) sends READY=1 only after the port listens; SIGHUP reloads."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from litefs import db
from tests.dbutil import load_tables
from tests.mountdutil import cluster_tables, free_port

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "mountd/litefs-mountd.service"
BIN = Path(sys.executable).parent
ANALYZE = shutil.which("systemd-analyze")


def unit_for_this_venv(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's script (set-up links the same script
    into /usr/local/bin, which a test host may not have)."""
    text = UNIT.read_text().replace("/usr/local/bin/litefs-mountd", str(BIN / "litefs-mountd"))
    out = tmp_path / UNIT.name
    out.write_text(text)
    return out


def exec_start() -> list[str]:
    line = next(x for x in UNIT.read_text().splitlines() if x.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart=").replace("$MOUNTD_OPTS", ""))


def test_unit_basics() -> None:
    text = UNIT.read_text()
    for want in ("Type=notify", "StateDirectory=litefs", "RuntimeDirectory=litefs",
                 "ExecReload=/bin/kill -HUP $MAINPID"):
        assert want in text
    assert exec_start()[0] == "/usr/local/bin/litefs-mountd"  # absolute, no /usr/bin/env
    assert (BIN / "litefs-mountd").exists() and (BIN / "mountd").exists()


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    r = subprocess.run([ANALYZE, "verify", unit_for_this_venv(tmp_path)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_security_exposure_at_most_4(tmp_path: Path) -> None:
    r = subprocess.run([ANALYZE, "security", "--offline=yes", unit_for_this_venv(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 4.0, r.stdout


def test_ready_after_listening_and_sighup(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/site.db"
    eng = db.open_engine(url)
    load_tables(eng, cluster_tables({"n01": "127.0.0.11"}))
    eng.dispose()
    notify_path = tmp_path / "notify"
    port = free_port()
    argv = [str(BIN / "litefs-mountd"), *exec_start()[1:]]
    # The unit's command line, with paths a test may use instead of /etc and /run.
    argv = [a.replace("/run/litefs/mountd.sock", str(tmp_path / "mountd.sock")) for a in argv]
    argv += ["--db", url, "--insecure", "--host", "127.0.0.1", "--port", str(port)]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as ns:
        ns.bind(str(notify_path))
        ns.settimeout(20)
        log = tmp_path / "stderr"
        proc = subprocess.Popen(argv, env=dict(os.environ, NOTIFY_SOCKET=str(notify_path)),
                                stdout=subprocess.DEVNULL, stderr=log.open("wb"))
        try:
            msg = ns.recv(4096).decode()
            # By the time READY=1 arrives the port must already accept connections.
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            assert "READY=1" in msg.splitlines(), msg
            assert f"MAINPID={proc.pid}" in msg
            proc.send_signal(signal.SIGHUP)  # what ExecReload does
            deadline = time.monotonic() + 10
            while b'"signal":"SIGHUP"' not in log.read_bytes():
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            assert proc.poll() is None  # a reload, not a stop
            proc.terminate()
            assert ns.recv(4096).decode() == "STOPPING=1"
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
