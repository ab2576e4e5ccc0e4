"""Under systemd (stderr is the journal, $JOURNAL_STREAM names it) every log line carries its
syslog priority as a ``<N>`` prefix that journald's SyslogLevelPrefix understands: refusals at
warning (4), not info (6). Off the journal the JSON lines are unchanged."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from litefs.mountd.log import Logger

from litefs import db
from litefs.logs import JournalHandler
from tests.dbutil import load_tables
from tests.mountdutil import cluster_tables, free_port

BIN = Path(sys.executable).parent


def journal_id(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def test_priorities_when_stderr_is_the_journal(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "journal"
    out.touch()
    monkeypatch.setenv("JOURNAL_STREAM", journal_id(out))
    with out.open("a") as stream:
        log = Logger(stream, level="debug")
        log("plan_served", level="debug", node="n01")
        log("subscribed", node="n01")
        log("refused", level="warning", peer="10.0.0.9")
        log("internal_error", level="error")
    lines = out.read_text().splitlines()
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>"]
    assert json.loads(lines[2][3:])["event"] == "refused"  # still one JSON object after <N>


def test_no_prefix_off_the_journal(tmp_path: Path, monkeypatch) -> None:
    other, out = tmp_path / "other", tmp_path / "log"
    other.touch()
    monkeypatch.setenv("JOURNAL_STREAM", journal_id(other))  # inherited, but not our stream
    with out.open("a") as stream:
        Logger(stream)("refused", level="warning")
    assert json.loads(out.read_text())["level"] == "warning"


def test_stdlib_records_get_priorities_too(tmp_path: Path, monkeypatch) -> None:
    # litefs.fs (the FUSE daemon) logs through stdlib logging with the same handler.
    out = tmp_path / "journal"
    out.touch()
    monkeypatch.setenv("JOURNAL_STREAM", journal_id(out))
    with out.open("a") as stream:
        logger = logging.Logger("t")
        logger.addHandler(JournalHandler(stream))
        logger.warning("store fault\nsecond line")
        logger.info("mounted")
    assert out.read_text().splitlines() == ["<4>store fault", "<4>second line", "<6>mounted"]


def test_real_mountd_process_under_a_journal_stream(tmp_path: Path) -> None:
    # The real service: its stderr is a file we name in JOURNAL_STREAM, as systemd does.
    url = f"sqlite:///{tmp_path}/site.db"
    eng = db.open_engine(url)
    load_tables(eng, cluster_tables({"n01": "127.0.0.11"}))
    eng.dispose()
    err = tmp_path / "stderr"
    err.touch()
    env = dict(os.environ, JOURNAL_STREAM=journal_id(err))
    with err.open("ab") as stream:
        # A port that is in use by nobody, then SIGTERM at once: start-up lines are enough.
        proc = subprocess.Popen([BIN / "mountd", "--db", url, "--insecure", "--host", "127.0.0.1",
                                 "--port", str(free_port()), "--socket", ""],
                                stdout=subprocess.DEVNULL, stderr=stream, env=env)
        try:
            for _ in range(200):
                if b"listening" in err.read_bytes() or proc.poll() is not None:
                    break
                subprocess.run(["sleep", "0.05"])
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    lines = err.read_text().splitlines()
    insecure = [line for line in lines if '"event":"insecure"' in line]
    assert insecure and insecure[0].startswith("<4>{"), lines
    assert all(line[:3] in {"<7>", "<6>", "<4>", "<3>"} for line in lines), lines
