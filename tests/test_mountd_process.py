"""``mountd`` as a real process: start, serve, ``litefs notify``, restart + resubscribe, SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import trio
from litefs.initramfs import client
from litefs.mountd import codec
from sqlalchemy import Engine

from litefs import db, tabledata
from tests.dbutil import load_tables
from tests.mountdutil import client_ssl, cluster_tables, free_port

BIN = Path(sys.executable).parent
NODES = {"n01": "127.0.0.11", "n02": "127.0.0.12"}


@pytest.fixture
def site(tmp_path: Path) -> tuple[str, Path]:
    url = f"sqlite:///{tmp_path}/litefs.db"
    eng: Engine = db.open_engine(url)
    load_tables(eng, cluster_tables(NODES))
    eng.dispose()
    ca = tmp_path / "ca"
    subprocess.run([BIN / "litefs", "ca", "init", "--dir", ca, "--san", "127.0.0.1"], check=True,
                   capture_output=True)
    return url, ca


async def start_mountd(url: str, ca: Path, port: int, sock: Path, log: Path,
                       *extra: str) -> trio.Process:
    proc = await trio.lowlevel.open_process(
        [BIN / "mountd", "--db", url, "--port", str(port), "--host", "127.0.0.1",
         "--ca-dir", ca, "--socket", sock, "--check-interval", "0", *extra],
        stdout=subprocess.DEVNULL, stderr=log.open("ab"),
    )
    with trio.fail_after(20):
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                await client.request(f"127.0.0.1:{port}", codec.HealthRequest(),
                                     ssl_context=client_ssl(ca), timeout=1)
                return proc
            except Exception:
                await trio.sleep(0.05)


async def notify(sock: Path, *args: str) -> str:
    result = await trio.run_process(
        [BIN / "litefs", "notify", "--server", f"unix:{sock}", *args], capture_stdout=True,
        capture_stderr=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.decode()


@pytest.mark.skipif(shutil.which("mountd", path=str(BIN)) is None, reason="mountd not installed")
def test_restart_resubscribe_and_graceful_stop(site: tuple[str, Path], tmp_path: Path) -> None:
    url, ca = site
    port = free_port()
    sock = tmp_path / "mountd.sock"
    log = tmp_path / "mountd.log"
    events: list[list[str]] = []
    states: list[str] = []

    async def wait_for(pred, what: str) -> None:  # type: ignore[no-untyped-def]
        with trio.fail_after(15):
            while not pred():
                await trio.sleep(0.02)

    async def main() -> int:
        proc = await start_mountd(url, ca, port, sock, log)
        plan = await client.fetch_plan(f"127.0.0.1:{port}", ssl_context=client_ssl(ca),
                                       source_address="127.0.0.12")
        assert plan.node == "n02"
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: client.subscribe(
                f"127.0.0.1:{port}", events.append, ssl_context=client_ssl(ca),
                source_address="127.0.0.11", on_state=states.append,
                backoff=client.Backoff(base=0.05, cap=0.2), task_status=task_status))
            out = await notify(sock, "n01", "/etc/motd", "/opt/app/")
            assert "1 node(s) targeted, 1 running node(s) notified: n01" in out
            await wait_for(lambda: events == [["/etc/motd", "/opt/app/"]], "first event")

            # A crash: mountd is killed outright; the node resubscribes to the new one.
            proc.kill()
            await proc.wait()
            await wait_for(lambda: "disconnected" in states, "disconnect")
            proc = await start_mountd(url, ca, port, sock, log)
            await wait_for(lambda: states.count("subscribed") == 2, "resubscribe")
            await wait_for(lambda: events[-1] == ["/"], "resync after the gap")
            out = await notify(sock, "img1", "/etc/hosts")
            assert "2 node(s) targeted, 1 running node(s) notified: n01" in out
            await wait_for(lambda: events[-1] == ["/etc/hosts"], "event after restart")
            nursery.cancel_scope.cancel()

        # SIGTERM: stop accepting, finish, exit 0.
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            return await proc.wait()

    assert trio.run(main) == 0
    records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    kinds = [r["event"] for r in records]
    assert kinds.count("listening") == 2
    assert "announced" in kinds and "subscribed" in kinds
    assert kinds[-1] == "stopped"
    assert kinds.index("signal") < kinds.index("stopping") < kinds.index("stopped")
    assert not sock.exists()


def test_mountd_refuses_to_start_without_tls_files(site: tuple[str, Path], tmp_path: Path) -> None:
    url, _ca = site
    result = subprocess.run(
        [BIN / "mountd", "--db", url, "--port", str(free_port()), "--ca-dir", tmp_path / "none",
         "--socket", ""], capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "no CA at" in result.stderr and "litefs ca init" in result.stderr
    assert result.stderr.count("\n") == 1


def test_insecure_mode_serves_plain_tcp(site: tuple[str, Path], tmp_path: Path) -> None:
    url, _ca = site
    port = free_port()
    env = dict(os.environ)
    proc = subprocess.Popen(
        [BIN / "mountd", "--db", url, "--port", str(port), "--host", "127.0.0.1", "--insecure",
         "--socket", ""], stderr=subprocess.PIPE, env=env,
    )
    try:
        async def main() -> str | None:
            with trio.fail_after(20):
                while True:
                    try:
                        plan = await client.fetch_plan(f"127.0.0.1:{port}", source_address="127.0.0.11",
                                                       backoff=client.Backoff(attempts=1))
                        return plan.node
                    except Exception:
                        await trio.sleep(0.05)

        assert trio.run(main) == "n01"
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert b'"event":"insecure"' in err


def test_workers_share_the_port_and_announcements(site: tuple[str, Path], tmp_path: Path) -> None:
    url, ca = site
    port = free_port()
    sock = tmp_path / "mountd.sock"
    log = tmp_path / "mountd.log"
    events: dict[str, list[list[str]]] = {"n01": [], "n02": []}

    async def main() -> int:
        proc = await start_mountd(url, ca, port, sock, log, "--workers", "2")
        async with trio.open_nursery() as nursery:
            for node, address in NODES.items():
                await nursery.start(lambda task_status, n=node, a=address: client.subscribe(
                    f"127.0.0.1:{port}", events[n].append, ssl_context=client_ssl(ca),
                    source_address=a, task_status=task_status))
            for _ in range(20):  # spread over both workers by the kernel
                for node, address in NODES.items():
                    plan = await client.fetch_plan(f"127.0.0.1:{port}", ssl_context=client_ssl(ca),
                                                   source_address=address)
                    assert plan.node == node
            with trio.fail_after(10):
                while True:  # subscription counts travel between workers asynchronously
                    out = await notify(sock, "img1", "/etc/motd")
                    if "2 running node(s) notified: n01,n02" in out:
                        break
                    await trio.sleep(0.05)
                while not (events["n01"] and events["n02"]):
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            return await proc.wait()

    assert trio.run(main) == 0
    assert events["n01"][-1] == ["/etc/motd"] and events["n02"][-1] == ["/etc/motd"]
    records = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    assert {r.get("worker") for r in records if r["event"] == "stopped"} == {0, 1}


def _as_nobody(sock: Path, line: bytes) -> dict:
    """Send one request on the admin socket from a forked child running as uid 65534."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no trio, no pytest machinery; just a blocking socket
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            import socket

            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(10)
                    s.connect(str(sock))
                    s.sendall(line)
                    reply = s.recv(65536)
            except OSError as exc:
                reply = json.dumps({"child_error": str(exc)}).encode()
            os.write(write_end, reply)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def test_site_port_sighup_reload_and_root_only_admin_socket(site: tuple[str, Path], tmp_path: Path) -> None:
    """No --port: site.xcatdport. With checks 1 h apart a table change waits for SIGHUP."""
    url, ca = site
    port = free_port()
    eng = db.open_engine(url)
    tabledata.chtab(eng, {"key": "xcatdport"}, [f"site.value={port}"])
    # Where another user can reach it (pytest's tmp_path is root's only), as /run/litefs is.
    sock_dir = Path(tempfile.mkdtemp(prefix="litefs-mountd-"))
    sock_dir.chmod(0o755)
    sock = sock_dir / "mountd.sock"
    log = tmp_path / "mountd.log"
    proc = subprocess.Popen(
        [BIN / "mountd", "--db", url, "--host", "127.0.0.1", "--ca-dir", ca, "--socket", sock,
         "--check-interval", "3600"], stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )
    server = f"127.0.0.1:{port}"

    def rules() -> set[str]:
        plan = client.fetch_plan_sync(server, ssl_context=client_ssl(ca), source_address="127.0.0.11",
                                      backoff=client.Backoff(base=0.05, cap=0.2, attempts=200))
        assert plan.node == "n01"
        return {r.path for r in plan.rules}

    try:
        assert "/opt/new" not in rules()
        tabledata.chtab(eng, {"image": "ALL", "file": "/opt/new"}, ["litefile.options=tmpfs"])
        assert "/opt/new" not in rules()  # not re-read yet: the next check is an hour away
        proc.send_signal(signal.SIGHUP)
        assert "/opt/new" in rules()
        # The admin socket is root's only (mode 0600): another local user cannot connect.
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        announce = codec.encode_json_request(codec.AnnounceRequest("n01"))
        refused = _as_nobody(sock, announce)
        assert "Permission denied" in refused["child_error"]
        ok = client.request_sync(f"unix:{sock}", codec.AnnounceRequest("n01"))
        assert ok["ok"] and ok["targeted"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        shutil.rmtree(sock_dir, ignore_errors=True)
    records = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    assert records[0]["event"] == "listening" and records[0]["port"] == [port]
    assert [r["signal"] for r in records if r["event"] == "signal"] == ["SIGHUP", "SIGTERM"]
    # A site.xcatdport that is no port number: one line saying how to fix it.
    tabledata.chtab(eng, {"key": "xcatdport"}, ["site.value=3001x"])
    eng.dispose()
    bad = subprocess.run([BIN / "mountd", "--db", url, "--insecure", "--socket", ""],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1
    assert bad.stderr == "mountd: site.xcatdport is '3001x', not a port number; fix it with chtab\n"
