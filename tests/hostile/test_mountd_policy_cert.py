"""Policy rows that cannot be evaluated fail closed; a site can require client certificates.

A real ``mountd`` process over TLS on loopback and real ``chtab``/``tabrestore`` runs; every
test also checks that nothing changed that should not (database digest) and that the daemon
keeps serving.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from litefs.initramfs import client
from sqlalchemy import Engine

from litefs import db
from litefs.errors import MountdError
from tests.dbutil import load_tables
from tests.hostile.test_mountd_attacks import BIN, NODES, classic
from tests.mountdutil import POLICY_HEADER, client_ssl, cluster_tables, free_port, mountd_process

#: A deny row whose noderange has a typo (group "gpuz" does not exist) before an allow row.
TYPO_POLICY = POLICY_HEADER + (
    '"1","root",,,,,,"allow",,\n'
    '"2",,,,"n01,gpuz",,,"deny",,\n'
    '"4.7",,,"litefile",,,,"allow",,\n'
    '"4.8",,,"litetree",,,,"allow",,\n'
)


@pytest.fixture
def cluster(tmp_path: Path) -> tuple[str, Path, Path]:
    db_file = tmp_path / "litefs.db"
    url = f"sqlite:///{db_file}"
    eng: Engine = db.open_engine(url)
    load_tables(eng, cluster_tables(NODES, extra_policy=TYPO_POLICY))
    eng.dispose()
    ca = tmp_path / "ca"
    subprocess.run([BIN / "litefs", "ca", "init", "--dir", ca, "--san", "127.0.0.1"],
                   check=True, capture_output=True)
    return url, db_file, ca


@pytest.fixture
def running(cluster: tuple[str, Path, Path], tmp_path: Path) -> Iterator[tuple[int, Path]]:
    url, _db_file, ca = cluster
    port = free_port()
    log = tmp_path / "mountd.log"
    with mountd_process(url, port, "--ca-dir", str(ca), "--socket", str(tmp_path / "s.sock"),
                        "--check-interval", "0.2", log_path=log) as proc:
        yield port, log
        assert proc.poll() is None, log.read_text()[-2000:]


def _events(log: Path) -> list[dict]:
    return [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]


def _fetch(port: int, ca: Path, source: str, who: str | None = None) -> client.Plan:
    return client.fetch_plan_sync(f"127.0.0.1:{port}", ssl_context=client_ssl(ca, who),
                                  source_address=source, timeout=10,
                                  backoff=client.Backoff(base=0.05, cap=0.2, attempts=1))


def test_unevaluable_deny_row_fails_closed(cluster: tuple[str, Path, Path],
                                           running: tuple[int, Path]) -> None:
    _url, db_file, ca = cluster
    port, log = running
    # n01 is named by the broken deny row: it must be denied, not let through by row 4.7.
    with pytest.raises(MountdError, match="cannot be evaluated"):
        _fetch(port, ca, "127.0.0.11")
    _infos, errors, _ = classic(port, ca, "", source="127.0.0.11")
    assert len(errors) == 1 and "cannot be evaluated" in errors[0] and "gpuz" in errors[0]
    refused = [e for e in _events(log) if e.get("event") == "refused"]
    assert any("cannot be evaluated" in str(e.get("reason")) for e in refused)
    digest = db_file.read_bytes()
    # n02 too: the row cannot tell whether it covers n02, so it denies (fail closed).
    with pytest.raises(MountdError, match="cannot be evaluated"):
        _fetch(port, ca, "127.0.0.12")
    assert db_file.read_bytes() == digest
    # The daemon still serves admins (root row) and stops cleanly (fixture).
    infos, errors, _ = classic(port, ca, "n01", who="admin")
    assert errors == [] and infos


def test_bad_policy_rows_are_refused_when_written(cluster: tuple[str, Path, Path],
                                                  tmp_path: Path) -> None:
    url, db_file, _ca = cluster
    before = db_file.read_bytes()
    dump = subprocess.run([BIN / "tabdump", "policy", "--db", url], capture_output=True,
                          text=True, check=True).stdout
    bad_cells = [
        ["policy.noderange=(n01", "policy.rule=deny"],
        ["policy.noderange=^/etc/shadow", "policy.rule=deny"],
        ["policy.noderange=" + "(" * 5000 + "n01" + ")" * 5000, "policy.rule=deny"],
        ["policy.parameters=(a)\\1", "policy.rule=allow"],
        ["policy.noderange=nodelist.groups=~(", "policy.rule=deny"],
    ]
    for cells in bad_cells:
        r = subprocess.run([BIN / "chtab", "priority=3", *cells, "--db", url],
                           capture_output=True, text=True, timeout=60)
        lines = r.stderr.strip().splitlines()
        assert r.returncode in (1, 2) and len(lines) == 1, r.stderr[-2000:]
        assert "policy row" in lines[0] and len(lines[0]) < 600, lines[0]
    csv = tmp_path / "policy.csv"
    csv.write_text(dump + '"3",,,,"n0[1-",,,"deny",,\n')
    r = subprocess.run([BIN / "tabrestore", str(csv), "--db", url], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode in (1, 2) and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "policy row" in r.stderr
    assert db_file.read_bytes() == before
    after = subprocess.run([BIN / "tabdump", "policy", "--db", url], capture_output=True,
                           text=True, check=True).stdout
    assert after == dump
    # A good row is still accepted.
    ok = subprocess.run([BIN / "chtab", "priority=3", "policy.noderange=compute,-n02",
                         "policy.rule=deny", "--db", url], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr


def test_site_can_require_client_certificates(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/litefs.db"
    eng: Engine = db.open_engine(url)
    load_tables(eng, cluster_tables(NODES))
    eng.dispose()
    ca = tmp_path / "ca"
    subprocess.run([BIN / "litefs", "ca", "init", "--dir", ca, "--san", "127.0.0.1"],
                   check=True, capture_output=True)
    # How a node gets its certificate: issued by the site CA (then put into its initrd).
    r = subprocess.run([BIN / "litefs", "ca", "issue", "node", "n01", "--dir", ca],
                       capture_output=True, text=True, check=True)
    assert (ca / "n01.pem").exists() and (ca / "n01.key").exists(), r.stdout
    port = free_port()
    log = tmp_path / "mountd.log"
    with mountd_process(url, port, "--ca-dir", str(ca), "--socket", str(tmp_path / "s.sock"),
                        "--check-interval", "0.2", log_path=log) as proc:
        # Default (xCAT's): the address alone identifies the node.
        assert _fetch(port, ca, "127.0.0.11").node == "n01"
        subprocess.run([BIN / "chtab", "key=litefs_require_client_cert", "site.value=yes",
                        "--db", url], check=True, capture_output=True)
        deadline = time.monotonic() + 10
        while True:  # the daemon picks the change up within its check interval
            try:
                _fetch(port, ca, "127.0.0.11")
            except MountdError as exc:
                assert "requires a client certificate" in str(exc)
                break
            assert time.monotonic() < deadline, "site setting never took effect"
            time.sleep(0.2)
        # Address-only, classic protocol: nothing but the refusal.
        infos, errors, _ = classic(port, ca, "", source="127.0.0.11")
        assert infos == [] and len(errors) == 1 and "client certificate" in errors[0]
        # With its certificate the node gets its plan, from any address.
        assert _fetch(port, ca, "127.0.0.99", who="n01").node == "n01"
        assert proc.poll() is None
    refused = [e for e in _events(log) if e.get("event") == "refused"]
    assert any(e.get("reason") == "client certificate required" for e in refused)
