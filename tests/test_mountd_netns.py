"""Identity over real network addresses: mountd in one network namespace, nodes in others.

Topology (created here, removed afterwards; nothing touches the host's own namespace):
``mn`` ns holds 10.99.1.1 and 10.99.2.1; node ns ``a`` holds 10.99.1.2 (n01 in hosts), node
ns ``b`` holds 10.99.2.2 (n02), each linked to ``mn`` by a veth pair.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from litefs import db
from tests.dbutil import load_tables
from tests.mountdutil import cluster_tables

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2"),
]
BIN = Path(sys.executable).parent


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def namespaces() -> Iterator[dict[str, str]]:
    tag = secrets.token_hex(3)
    ns = {"mn": f"lfs-mn-{tag}", "a": f"lfs-a-{tag}", "b": f"lfs-b-{tag}"}
    try:
        for name in ns.values():
            ip("netns", "add", name)
            ip("-n", name, "link", "set", "lo", "up")
        for i, node_ns in ((1, "a"), (2, "b")):
            here, there = f"lv{tag}m{i}", f"lv{tag}n{i}"
            ip("link", "add", here, "netns", ns["mn"], "type", "veth", "peer", "name", there,
               "netns", ns[node_ns])
            ip("-n", ns["mn"], "addr", "add", f"10.99.{i}.1/24", "dev", here)
            ip("-n", ns[node_ns], "addr", "add", f"10.99.{i}.2/24", "dev", there)
            ip("-n", ns["mn"], "link", "set", here, "up")
            ip("-n", ns[node_ns], "link", "set", there, "up")
        yield ns
    finally:
        for name in ns.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


FETCH = """
import sys
from litefs.initramfs import client, tls
ctx = tls.client_context(sys.argv[2] + "/ca.pem")
plan = client.fetch_plan_sync(sys.argv[1], ssl_context=ctx, backoff=client.Backoff(base=0.2, attempts=30))
print(plan.node, plan.sources[0].directory)
"""

ASK_OTHER = """
import sys
from litefs.errors import MountdError
from litefs.initramfs import client, tls
ctx = tls.client_context(sys.argv[2] + "/ca.pem")
try:
    client.fetch_plan_sync(sys.argv[1], node="n01", ssl_context=ctx, backoff=client.Backoff(attempts=1))
except MountdError as exc:
    print("refused:", exc)
"""


def test_nodes_in_namespaces_get_their_own_plans(namespaces: dict[str, str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/litefs.db"
    eng = db.open_engine(url)
    load_tables(eng, cluster_tables({"n01": "10.99.1.2", "n02": "10.99.2.2", "n03": "10.99.3.2"}))
    eng.dispose()
    ca = tmp_path / "ca"
    subprocess.run([BIN / "litefs", "ca", "init", "--dir", ca, "--san", "10.99.1.1",
                    "--san", "10.99.2.1"], check=True, capture_output=True)
    log = tmp_path / "mountd.log"
    mountd = subprocess.Popen(
        ["ip", "netns", "exec", namespaces["mn"], BIN / "mountd", "--db", url, "--ca-dir", ca,
         "--socket", "", "--log-level", "debug"],
        stderr=log.open("wb"), stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while b'"listening"' not in log.read_bytes():
            assert mountd.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "mountd did not start"
            time.sleep(0.05)

        def in_ns(ns: str, *cmd: str | Path, stdin: bytes | None = None) -> str:
            out = subprocess.run(["ip", "netns", "exec", namespaces[ns], *map(str, cmd)],
                                 input=stdin, capture_output=True, timeout=60)
            return out.stdout.decode()

        # The default port (site.xcatdport unset → 3001), from each node's own address.
        assert in_ns("a", sys.executable, "-c", FETCH, "10.99.1.1:3001", ca).split() == [
            "n01", "mn:/statelite/n01"]
        assert in_ns("b", sys.executable, "-c", FETCH, "10.99.2.1:3001", ca).split() == [
            "n02", "mn:/statelite/n02"]
        refused = in_ns("b", sys.executable, "-c", ASK_OTHER, "10.99.2.1:3001", ca)
        assert "refused:" in refused and "may only ask for its own plan" in refused
        # A stock node: rc.statelite's exact s_client call from node b.
        raw = in_ns("b", "openssl", "s_client", "-quiet", "-no_ssl3", "-connect", "10.99.2.1:3001",
                    "-rand", "/bin/bash",
                    stdin=b"<xcatrequest><command>litetree</command></xcatrequest>\n")
        assert "<info>n02: mn:/statelite/n02</info>" in raw and "<serverdone>" in raw
    finally:
        mountd.terminate()
        mountd.wait(timeout=15)
    records = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    served = {(r["peer"], r["node"], r["via"]) for r in records if r["event"] == "plan_served"}
    assert served == {("10.99.1.2", "n01", "hosts"), ("10.99.2.2", "n02", "hosts")}
    refusals = [r for r in records if r["event"] == "refused"]
    assert refusals and refusals[0]["peer"] == "10.99.2.2" and refusals[0]["asked"] == "n01"
