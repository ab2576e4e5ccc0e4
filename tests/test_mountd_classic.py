"""Stock rc.statelite against mountd: the real ``openssl s_client`` call and its sed/awk pipeline.

GetSyncInfo runs ``openssl s_client -quiet -no_ssl3 -connect $XCAT -rand /bin/bash`` with the
request on stdin and keeps the ``<options> <path>`` lines; we run that same shell code.
"""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from sqlalchemy import Engine

from litefs import db, planner
from tests import xcatdwire
from tests.dbutil import load_tables
from tests.mountdutil import cluster_tables, make_pki, server_ssl, serving

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

# rc.statelite's xCATCmd and GetSyncInfo pipelines, verbatim but for MNTDIR (reference §5.2).
RC_STATELITE = r"""
xCATCmd () {
	openssl s_client -quiet -no_ssl3 -connect ${1} -rand /bin/bash 2>/dev/null <<<"<xcatrequest><command>${2}</command></xcatrequest>"
}
xCATCmd $XCATSERVER litefile  \
	| sed  -e 's/<[^>]*>//g' \
	| egrep -v '^ *$' 	\
	| sed -e 's/^ *//' \
	| awk -F: '{print $2}' \
	| sed -e 's/^ *//' \
	>  $OUT/litefile
xCATCmd $XCATSERVER litetree  \
	| sed  -e 's/<[^>]*>//g' \
	| egrep -v '^ *$' \
	| sed -e 's/^ *//' \
	| awk '{print $2}' \
	> $OUT/litetree
xCATCmd $XCATSERVER getpostscript > $OUT/raw-unsupported
"""


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    return trio.run(fn)


@pytest.fixture
def classic_cluster(tmp_path: Path) -> Engine:
    # s_client cannot choose its source address the way rc.statelite calls it: 127.0.0.1 is n01.
    eng = db.open_engine(f"sqlite:///{tmp_path}/litefs.db")
    load_tables(eng, cluster_tables({"n01": "127.0.0.1", "n02": "127.0.0.12"}))
    yield eng
    eng.dispose()


def test_rc_statelite_gets_its_litefile_and_litetree(classic_cluster: Engine, tmp_path: Path) -> None:
    ca = make_pki(tmp_path / "ca")
    out = tmp_path / "statelite"
    out.mkdir()

    async def main() -> None:
        async with serving(classic_cluster, ssl_context=server_ssl(ca)) as srv:
            env = {"XCATSERVER": f"127.0.0.1:{srv.ports[0]}", "OUT": str(out), "PATH": "/usr/bin:/bin"}
            with trio.fail_after(30):
                await trio.run_process(["bash", "-c", RC_STATELITE], env=env, check=False)

    run(main)
    plan = planner.plan_for_node(planner.load_snapshot(classic_cluster), "n01")
    expected = [line.split(":", 1)[1].lstrip() for line in planner.xcat_litefile_lines(plan)]
    litefile = (out / "litefile").read_text().splitlines()
    assert litefile == expected
    assert f"{'tmpfs':<13} /etc/adjtime" in litefile
    assert f"{'persistent':<13} /var/log/" in litefile
    assert (out / "litetree").read_text().splitlines() == ["mn:/statelite/n01"]
    raw = (out / "raw-unsupported").read_text()
    assert "<error>Unsupported command: getpostscript" in raw and "<serverdone>" in raw


def test_classic_answers_carry_xcatd_framing(classic_cluster: Engine, tmp_path: Path) -> None:
    """Raw bytes: one <info> per line, then serverdone, then the server closes."""
    ca = make_pki(tmp_path / "ca")

    async def main() -> bytes:
        async with serving(classic_cluster, ssl_context=server_ssl(ca)) as srv:
            with trio.fail_after(30):
                result = await trio.run_process(
                    ["openssl", "s_client", "-quiet", "-no_ssl3", "-connect",
                     f"127.0.0.1:{srv.ports[0]}", "-rand", "/bin/bash"],
                    stdin=b"<xcatrequest><command>litefile</command></xcatrequest>\n",
                    capture_stdout=True, capture_stderr=True, check=False,
                )
            return result.stdout

    data = run(main)
    text = data.decode()
    assert text.startswith("<xcatresponse>\n<info>n01: ")
    assert "<info>n01: ro            /etc/motd</info>\n" in text
    assert text.endswith("<xcatresponse>\n<serverdone></serverdone>\n</xcatresponse>\n")


def test_classic_noderange_for_another_node_is_refused(classic_cluster: Engine, tmp_path: Path) -> None:
    ca = make_pki(tmp_path / "ca")

    admin = ["-cert", str(ca / "admin.pem"), "-key", str(ca / "admin.key")]

    async def main() -> list[bytes]:
        out = []
        async with serving(classic_cluster, ssl_context=server_ssl(ca)) as srv:
            for nr, cert in (("n02", []), ("n01", []), ("n02", admin)):
                req = f"<xcatrequest><command>litefile</command><noderange>{nr}</noderange></xcatrequest>\n"
                with trio.fail_after(30):
                    result = await trio.run_process(
                        ["openssl", "s_client", "-quiet", "-connect", f"127.0.0.1:{srv.ports[0]}",
                         *cert],
                        stdin=req.encode(), capture_stdout=True, capture_stderr=True, check=False,
                    )
                out.append(result.stdout)
        return out

    other, own, as_admin = run(main)
    # An admin certificate (xCAT's root) may ask for any node, as with 'litefile n02'.
    infos, errors, done = xcatdwire.parse_classic_response(as_admin)
    assert errors == [] and done and infos and all(i.startswith("n02: ") for i in infos)
    infos, errors, done = xcatdwire.parse_classic_response(other)
    assert infos == [] and done and "may only ask for its own plan" in errors[0]
    infos, errors, done = xcatdwire.parse_classic_response(own)
    assert errors == [] and done and infos[0].startswith("n01: ")


def test_classic_errors_come_in_classic_framing(classic_cluster: Engine, tmp_path: Path) -> None:
    """An oversized or malformed classic request gets an <error> and serverdone, not JSON."""
    ca = make_pki(tmp_path / "ca")
    huge = b"<xcatrequest><command>litefile</command><arg>" + b"x" * 8000 + b"</arg></xcatrequest>\n"
    broken = b"<xcatrequest><command>litefile</command><arg></xcatrequest>\n"

    async def main() -> list[bytes]:
        out = []
        async with serving(classic_cluster, ssl_context=server_ssl(ca), max_message=4096) as srv:
            for req in (huge, broken):
                with trio.fail_after(30):
                    result = await trio.run_process(
                        ["openssl", "s_client", "-quiet", "-connect", f"127.0.0.1:{srv.ports[0]}"],
                        stdin=req, capture_stdout=True, capture_stderr=True, check=False,
                    )
                out.append(result.stdout)
        return out

    too_large, malformed = run(main)
    infos, errors, done = xcatdwire.parse_classic_response(too_large)
    assert infos == [] and done and errors == ["message too large (limit 4096 bytes)"]
    infos, errors, done = xcatdwire.parse_classic_response(malformed)
    assert infos == [] and done and errors[0].startswith("malformed <xcatrequest>")


def test_bad_litetree_variable_leaves_a_stock_nodes_litefile_alone(tmp_path: Path) -> None:
    """xcatd's litefile reads only litefile rows: the cookbook's ``$noderes.nfssserver`` typo
    in litetree fails the node's litetree answer (one line, the row named), never its litefile
    list, which rc.statelite needs to boot at all."""
    tables = cluster_tables({"n01": "127.0.0.1", "n02": "127.0.0.12"})
    tables["litetree"] = ("#priority,image,directory,mntopts,comments,disable\n"
                          '"1.0","img1","$noderes.nfssserver:/statelite/$node",,,\n')
    eng = db.open_engine(f"sqlite:///{tmp_path}/litefs.db")
    load_tables(eng, tables)
    ca = make_pki(tmp_path / "ca")
    out = tmp_path / "statelite"
    out.mkdir()

    async def main() -> None:
        async with serving(eng, ssl_context=server_ssl(ca)) as srv:
            env = {"XCATSERVER": f"127.0.0.1:{srv.ports[0]}", "OUT": str(out), "PATH": "/usr/bin:/bin"}
            with trio.fail_after(30):
                await trio.run_process(["bash", "-c", RC_STATELITE], env=env, check=False)

    try:
        run(main)
        snap = planner.load_snapshot(eng)
        with pytest.raises(Exception, match="nfssserver"):
            planner.plan_for_node(snap, "n01")  # the whole plan fails ...
        want = [line.split(":", 1)[1].lstrip()
                for line in planner.xcat_litefile_lines(planner.litefile_plan_for_node(snap, "n01"))]
    finally:
        eng.dispose()
    # ... but the litefile list arrives whole, and litetree names what is wrong.
    assert want and (out / "litefile").read_text().splitlines() == want
    assert f"{'persistent':<13} /var/log/" in want
    # rc.statelite's awk keeps the second word of the <error> line: the row it names.
    assert (out / "litetree").read_text().split() == ["priority=1.0:"]
