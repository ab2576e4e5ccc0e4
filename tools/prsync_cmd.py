"""``prsync [-o RSYNCOPTS] [-f FANOUT] FILE|DIR… NODERANGE:DEST``: parallel rsync to nodes.

xCAT's prsync (xCAT-client/bin/prsync, reference §7.5) runs ``rsync -az<opts> FILE
node:DEST`` for every node of the noderange, at most FANOUT at a time (default 64, or
``$XCATPSHFANOUT``), and prefixes each output line with the node name. The hierarchy recipe
is ``cd /; prsync install sn1,sn2:/``: it pushes the images to the service nodes, and a
re-run sends only what changed (rsync's own delta transfer).

Differences from xCAT, each to make failures visible: every FILE is sent (xCAT sends only
the first); a target that fails gets a ``node: failed (…)`` line and the run goes on with
the others; a summary on stderr names every failed target and the exit status is 1 if any
failed. ``-o`` takes xCAT's form (letters appended to ``-az``, e.g. ``-o v``) or rsync
options (``-o '--delete --stats'``). Addresses come from the hosts table (``hosts.ip``),
else the name is handed to ssh. ssh runs with ``BatchMode=yes`` and a connect timeout so an
unreachable node fails in seconds instead of hanging at a password prompt; ``$RSYNC_RSH``
replaces that ssh command entirely.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from litefs.tools.common import Parser, add_db_option, run_main

from litefs import db
from litefs.errors import LitefsError, UsageError
from litefs.noderange import expand

DEFAULT_FANOUT = 64
#: More parallel rsyncs than this is a typo: each is two processes and an ssh connection.
MAX_FANOUT = 1024
DEFAULT_RSH = "ssh -o BatchMode=yes -o ConnectTimeout=10"


@dataclass(frozen=True)
class Target:
    node: str
    address: str


@dataclass(frozen=True)
class Result:
    node: str
    code: int
    seconds: float
    last: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 0


def split_dest(arg: str) -> tuple[str, str]:
    """``NODERANGE:DEST`` → (noderange, dest); DEST defaults to the remote home, as rsync's."""
    noderange, sep, dest = arg.partition(":")
    if not sep or not noderange.strip():
        raise UsageError(f"last argument {arg!r} must be NODERANGE:DESTDIR (e.g. sn1,sn2:/)")
    return noderange, dest


def rsync_options(opts: str | None) -> list[str]:
    """``-az`` plus ``-o``: xCAT appends letters to ``-az``; options starting with ``-`` are
    passed as they are (shell-split)."""
    if not opts:
        return ["-az"]
    text = opts.strip()
    if text.startswith("-"):
        return ["-az", *shlex.split(text)]
    if not text.isalnum():
        raise UsageError(f"-o {opts!r}: give rsync short option letters (e.g. -o v) or "
                         "options starting with '-' (e.g. -o '--delete')")
    return [f"-az{text}"]


def rsync_argv(target: Target, sources: Sequence[str], dest: str, options: list[str],
               rsh: str) -> list[str]:
    """The rsync command line for one target (an IPv6 address gets its brackets)."""
    host = f"[{target.address}]" if ":" in target.address else target.address
    return ["rsync", *options, "-e", rsh, "--", *sources, f"{host}:{dest}"]


def summary(results: Sequence[Result]) -> str:
    """One line: how many targets, and every one that failed."""
    failed = [r.node for r in results if not r.ok]
    if not failed:
        return f"prsync: {len(results)} target(s), all done"
    return (f"prsync: {len(results)} target(s), {len(failed)} failed: {','.join(failed)}")


def run_all(targets: Sequence[Target], argv_for: Callable[[Target], list[str]], fanout: int,
            say: Callable[[str], None]) -> list[Result]:
    """Run one rsync per target, ``fanout`` at a time; lines are printed as they come."""

    def one(target: Target) -> Result:
        start = time.monotonic()
        last = ""
        try:
            proc = subprocess.Popen(argv_for(target), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, errors="replace")
        except OSError as exc:
            say(f"{target.node}: failed (cannot run rsync: {exc.strerror or exc})")
            return Result(target.node, 127, 0.0, str(exc))
        assert proc.stdout is not None
        cause = ""
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line:
                last = line
                # ssh's own complaint says why better than rsync's "connection unexpectedly
                # closed" that follows it.
                if not cause and line.startswith("ssh:"):
                    cause = line
                say(f"{target.node}: {line}")
        code = proc.wait()
        took = time.monotonic() - start
        if code == 0:
            say(f"{target.node}: done ({took:.1f}s)")
        else:
            why = f": {cause or last}" if cause or last else ""
            say(f"{target.node}: failed (rsync exit {code} after {took:.1f}s{why})")
        return Result(target.node, code, took, last)

    with ThreadPoolExecutor(max_workers=max(1, min(fanout, len(targets) or 1))) as pool:
        return list(pool.map(one, targets))


def _parser() -> Parser:
    p = Parser(
        prog="prsync",
        usage="prsync [-h] [--db URL] [-o RSYNCOPTS] [-f FANOUT] FILE|DIR... NODERANGE:DESTDIR",
        description="Copy files and directories to many nodes at once with rsync over ssh "
        "(xCAT's prsync). 'cd /; prsync install sn1,sn2:/' pushes the images to the service "
        "nodes; a re-run sends only what changed.",
        epilog="Output: every rsync line prefixed 'node: ', then 'node: done' or 'node: "
        "failed (...)'; a summary on stderr names every failed target. Exit 0 if every target "
        "succeeded, 1 if any failed, 2 for usage errors. Environment: XCATPSHFANOUT (default "
        "fanout), RSYNC_RSH (the remote shell; default "
        f"'{DEFAULT_RSH}').",
    )
    add_db_option(p)
    p.add_argument("-o", "--options", metavar="RSYNCOPTS", default=None,
                   help="rsync options: letters appended to -az (xCAT: -o v) or options "
                   "starting with '-' (-o '--delete --stats')")
    p.add_argument("-f", "--fanout", type=int, default=None,
                   help=f"rsyncs at a time (default $XCATPSHFANOUT, else {DEFAULT_FANOUT})")
    p.add_argument("paths", nargs="+", metavar="FILE|DIR... NODERANGE:DESTDIR",
                   help="what to copy (relative paths keep their name under DESTDIR, as "
                   "rsync does), then the nodes and the folder on them")
    return p


def _fanout(value: int | None) -> int:
    if value is None:
        env = os.environ.get("XCATPSHFANOUT", "").strip()
        if not env:
            return DEFAULT_FANOUT
        try:
            value = int(env)
        except ValueError:
            raise UsageError(f"XCATPSHFANOUT={env!r} is not a number") from None
    if not 1 <= value <= MAX_FANOUT:
        raise UsageError(f"fanout {value} must be between 1 and {MAX_FANOUT}")
    return value


def join_option_values(argv: list[str]) -> list[str]:
    """``-o --delete`` as ``--options=--delete``: argparse would take ``--delete`` for an
    option of ours, but rsync options are what ``-o`` is for."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in ("-o", "--options") and i + 1 < len(argv):
            out.append(f"--options={argv[i + 1]}")
            i += 2
            continue
        if argv[i] == "--":
            out += argv[i:]
            break
        out.append(argv[i])
        i += 1
    return out


def _body(argv: list[str]) -> int:
    args = _parser().parse_args(join_option_values(argv))
    if len(args.paths) < 2:
        raise UsageError("give at least one FILE|DIR and then NODERANGE:DESTDIR "
                         "(e.g. cd /; prsync install sn1:/)")
    *sources, last = args.paths
    noderange, dest = split_dest(last)
    options = rsync_options(args.options)
    fanout = _fanout(args.fanout)
    missing = [s for s in sources if not os.path.lexists(s)]
    if missing:
        raise LitefsError(f"{missing[0]}: no such file or directory here ({os.getcwd()}); "
                          "nothing was copied")
    from litefs.tools.nodeset_cmd import load_tables

    engine = db.open_engine(args.db, must_exist=True)
    db.require_schema(engine)
    with engine.connect() as conn:
        tables = load_tables(conn)
    engine.dispose()
    nodes = expand(noderange, tables.universe)
    if not nodes:
        raise UsageError(f"noderange {noderange!r} names no nodes")
    targets = [Target(n, tables.attrs.get(n, "hosts", "ip") or n) for n in nodes]
    rsh = os.environ.get("RSYNC_RSH") or DEFAULT_RSH
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            print(line, flush=True)

    results = run_all(targets, lambda t: rsync_argv(t, sources, dest, options, rsh), fanout,
                      say)
    print(summary(results), file=sys.stderr)
    return 0 if all(r.ok for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    return run_main("prsync", _body, argv)


if __name__ == "__main__":
    sys.exit(main())
