"""mountd as a real systemd service: the unit verifies, its ``systemd-analyze security``
exposure is at most 4.0, and the unit's own command line (run by hand with a real
NOTIFY_SOCKET this test binds) sends READY=1 only after the port listens; SIGHUP reloads."""

from __future__ import annotations

import json
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


NSPAWN = shutil.which("systemd-nspawn")


def outside_root_fs() -> list[str]:
    """The checkout and the venv, each unless it sits inside the other."""
    paths = sorted({ROOT.resolve(), BIN.resolve()})
    return [str(p) for p in paths if not any(q in p.parents for q in paths)]
# Folders the unit's own hardening hides (PrivateTmp=, ProtectHome=): a test venv or source
# tree there is bound in read-only by a test-only drop-in, so the unit under test stays as
# shipped.
HIDDEN = ("/tmp", "/var/tmp", "/home", "/root", "/run/user")

CHECK = r"""#!/bin/sh
# Runs inside the container once litefs-mountd is up; every answer goes to /check.
exec >/check/out 2>&1
journalctl -u litefs-mountd -o cat --no-pager >/check/journal-start
echo "active=$(systemctl is-active litefs-mountd)"
systemctl show -p Type -p MainPID -p NRestarts -p StatusErrno litefs-mountd
pid1=$(systemctl show -p MainPID --value litefs-mountd)
ls -ld /run/litefs /var/lib/litefs | awk '{print "mode " $1 " " $NF}'
stat -c 'sock %a %U %n' /run/litefs/mountd.sock
# A real request over the admin socket the unit's RuntimeDirectory holds.
litefs notify --json n01 /etc/motd >/check/notify.json; echo "notify_rc=$?"
systemctl reload litefs-mountd; echo "reload_rc=$?"
sleep 1
echo "after_reload=$(systemctl is-active litefs-mountd) samepid=$([ "$pid1" = "$(systemctl show -p MainPID --value litefs-mountd)" ] && echo yes)"
systemd-analyze security litefs-mountd --no-pager | tail -1
systemctl stop litefs-mountd; echo "stop_rc=$?"
systemctl show -p ActiveState -p Result litefs-mountd
journalctl -u litefs-mountd -o cat --no-pager >/check/journal
journalctl -u litefs-mountd -p warning -o cat --no-pager >/check/journal-warnings
echo done
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(NSPAWN is None or os.geteuid() != 0, reason="needs root and systemd-nspawn")
def test_unit_under_a_real_systemd(tmp_path: Path) -> None:
    """The shipped unit, started by a real systemd 252 (PID 1 of an nspawn container booted
    from an overlay of this machine's root, private network): Type=notify readiness, the
    RuntimeDirectory/StateDirectory modes, a real admin request, reload keeps the PID, stop is
    clean, and the live unit's exposure score."""
    interpreter = (BIN / "python").resolve()
    if str(interpreter).startswith(HIDDEN):
        pytest.skip(f"this venv's interpreter {interpreter} is under a folder the unit's "
                    "ProtectHome=/PrivateTmp= hide; tools/setup.sh makes the venv with "
                    "/usr/bin/python3")
    lay = {n: tmp_path / n for n in ("up", "work", "root", "check")}
    for d in lay.values():
        d.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir=/,upperdir={lay['up']},workdir={lay['work']}", lay["root"]],
                   check=True)
    root = lay["root"]
    try:
        etc = root / "etc/systemd/system"
        (etc / "litefs-mountd.service").write_text(UNIT.read_text())
        # A checkout under /tmp or /home (a test machine's, not a site's install) would be
        # hidden from the service; the test-only drop-in relaxes just that one setting.
        hidden = sorted({str(p) for p in (ROOT, BIN.resolve()) if str(p).startswith(HIDDEN)})
        relax = {"PrivateTmp=no" if h.startswith(("/tmp", "/var/tmp")) else
                 "ProtectHome=read-only" for h in hidden}
        if relax:
            (etc / "litefs-mountd.service.d").mkdir()
            (etc / "litefs-mountd.service.d/test-paths.conf").write_text(
                "[Service]\n" + "".join(f"{r}\n" for r in sorted(relax)))
        # /usr/local/bin/litefs-mountd (and litefs, for the check) are this venv's scripts.
        local = root / "usr/local/bin"
        for name in ("litefs-mountd", "litefs"):
            (local / name).unlink(missing_ok=True)
            (local / name).symlink_to(BIN / name)
        (etc / "litefs-check.service").write_text(
            "[Unit]\nAfter=litefs-mountd.service\n"
            "SuccessAction=poweroff-force\nFailureAction=poweroff-force\n"
            "[Service]\nType=oneshot\nExecStart=/bin/sh /check/check.sh\n")
        (etc / "litefs-test.target").write_text(
            "[Unit]\nWants=litefs-mountd.service litefs-check.service\n")
        (lay["check"] / "check.sh").write_text(CHECK)
        # Tables and CA in the container's own /var/lib/litefs and /etc/litefs/ca.
        state = root / "var/lib/litefs"
        shutil.rmtree(state, ignore_errors=True)
        state.mkdir(parents=True)
        eng = db.open_engine(f"sqlite:///{state}/litefs.db")
        load_tables(eng, cluster_tables({"n01": "127.0.0.11"}))
        eng.dispose()
        ca = root / "etc/litefs/ca"
        shutil.rmtree(ca, ignore_errors=True)
        subprocess.run([BIN / "litefs", "ca", "init", "--dir", ca, "--san", "127.0.0.1"],
                       check=True, capture_output=True)
        (root / "etc/machine-id").write_text("")  # a machine id of its own, made at boot
        console = tmp_path / "console"
        with console.open("wb") as con:
            boot = subprocess.Popen(
                [NSPAWN, "-q", "-D", root, "--boot", "--private-network", "--register=no",
                 "--keep-unit", f"--bind={lay['check']}:/check", "-M", "litefs-unit-test",
                 # The checkout may sit on a mount of its own (an overlay of / shows only the
                 # root filesystem) or under /tmp, where nspawn puts a tmpfs: bind it in.
                 *(f"--bind-ro={h}" for h in outside_root_fs()),
                 "systemd.unit=litefs-test.target"],
                stdout=con, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                boot.wait(timeout=120)
            except subprocess.TimeoutExpired:
                boot.kill()
                boot.wait()
        out = (lay["check"] / "out").read_text() if (lay["check"] / "out").exists() else ""
        start = lay["check"] / "journal-start"
        assert out.rstrip().endswith("done"), (console.read_text(errors="replace")[-3000:] + out
                                               + (start.read_text() if start.exists() else ""))
    finally:
        subprocess.run(["umount", "-l", root], capture_output=True)
    journal = (lay["check"] / "journal").read_text()
    facts = dict(line.split("=", 1) for line in out.splitlines()
                 if "=" in line and " " not in line.split("=", 1)[0])
    assert facts["active"] == "active", out + journal
    assert facts["Type"] == "notify" and facts["NRestarts"] == "0", out
    assert "mode drwxr-xr-x /run/litefs" in out and "mode drwxr-x--- /var/lib/litefs" in out
    assert "sock 600 root /run/litefs/mountd.sock" in out, out
    assert facts["notify_rc"] == "0", out + journal
    assert json.loads((lay["check"] / "notify.json").read_text())
    assert facts["reload_rc"] == "0" and "after_reload=active samepid=yes" in out, out
    m = re.search(r"Overall exposure level for litefs-mountd.service: (\d+\.\d+)", out)
    assert m and float(m.group(1)) <= 4.0, out
    assert facts["stop_rc"] == "0" and "ActiveState=inactive" in out
    assert "Result=success" in out, out + journal
    assert '"signal":"SIGHUP"' in journal, journal
