"""Test helpers for real litefs mounts: layer directories, plans, and a mount fixture.

``litefs_mount`` mounts the view in a subprocess (``litefs mount -f``), waits until the kernel
shows the mount, and at teardown always unmounts (lazily, killing the daemon, if a clean
unmount fails). A daemon log with a traceback fails the test unless the test said it expects
errors. The fixtures (``layers``, ``litefs_mount``) are in ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from litefs.plan import Plan, Rule, Source

MOUNT_TIMEOUT = 15.0
#: LITEFS_TEST_NATIVE_WRITES=1: every test mount with --native-writes (the FUSE semantics
#: tests with the kernel serving what it can); =format: FUSE serves everything, but the tmpfs
#: layer is in the kernel's whiteout format (converted before each mount, as --native-writes
#: does), so FUSE's every operation on that format is proven by the same tests
NATIVE_WRITES = os.environ.get("LITEFS_TEST_NATIVE_WRITES") == "1"
KERNEL_FORMAT = os.environ.get("LITEFS_TEST_NATIVE_WRITES") == "format"


#: Warnings a daemon may log while a test that did not ask for errors passes: pattern -> why it
#: is expected. Every other ``WARNING`` line in a mount's log fails the test, as errors do.
EXPECTED_WARNINGS: dict[str, str] = {
    r"leads through a symlink; not followed": "a layer or source directory reached through a "
    "symlink stays closed instead of being followed out of the layer "
    "(test_symlinks_presented_and_never_escape plants such a link on purpose)",
    r"marker \S+ is not a regular file": "a whiteout or opaque marker that is a symlink or a "
    "device is ignored, or replaced when written (hostile/test_view_perms plants them)",
    r"layer is \d+% full": "the fill watcher says once when a layer passes 90% "
    "(hostile/test_tmpfs_limit fills the tmpfs layer on purpose)",
}


def unexpected_warnings(log: str) -> list[str]:
    """The ``WARNING`` lines of a daemon log that no :data:`EXPECTED_WARNINGS` pattern matches."""
    return [
        line for line in log.splitlines()
        if " WARNING " in line and not any(re.search(p, line) for p in EXPECTED_WARNINGS)
    ]


def make_plan(rules: dict[str, str] | list[tuple[str, str]], sources: list[str] = (), node: str = "n01") -> Plan:  # type: ignore[assignment]
    """A plan from ``{"/etc/motd": "tmpfs", "/var/log/": "persistent"}`` (trailing / = directory)
    and server-less source paths."""
    items = rules.items() if isinstance(rules, dict) else rules
    rs = []
    for p, opt in items:
        is_dir = p.endswith("/") and p != "/"
        rs.append(Rule(path=p.rstrip("/") or "/", option=opt, is_dir=is_dir, image="ALL"))
    rs.sort(key=lambda r: r.path)
    srcs = tuple(Source(priority=str(i + 1), directory=s, server=None, path=s) for i, s in enumerate(sources))
    return Plan(image="img", rules=tuple(rs), sources=srcs, node=node)


@dataclass
class Layers:
    root: Path
    image: Path
    tmpfs: Path
    persistent: Path
    localdisk: Path
    sources: list[Path] = field(default_factory=list)

    def add_source(self) -> Path:
        p = self.root / f"src{len(self.sources)}"
        p.mkdir()
        self.sources.append(p)
        return p

    def fresh_tmpfs(self) -> None:
        """What a reboot does to the tmpfs layer. The old one is moved aside first: the
        mount's detached meta writer (litefs.fs.meta_writer) may still be writing into it
        through its directory fd, and an ``rm -rf`` racing it fails with ENOTEMPTY."""
        old = self.tmpfs.with_name(f"{self.tmpfs.name}.old.{time.monotonic_ns()}")
        self.tmpfs.rename(old)
        subprocess.run(["rm", "-rf", str(old)], check=False)
        self.tmpfs.mkdir()


def put(base: Path, rel: str, content: str | bytes = "", mode: int | None = None) -> Path:
    """Write a file at ``base/rel`` (parents created)."""
    p = base / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    p.write_bytes(content)
    if mode is not None:
        p.chmod(mode)
    return p


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``cond`` until it holds (things litefs does just after the mount is ready)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)


def litefs_cmd(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``litefs`` command (from this interpreter's install) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "litefs.tools.litefs_cli", *args], capture_output=True, text=True
    )


def is_mounted(mnt: str) -> str | None:
    """The filesystem type mounted exactly at ``mnt``, or None."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if parts[4] == mnt:
                fstype = parts[parts.index("-") + 1]
                return fstype
    return None


def kernel_served(path: str | Path, view: str | Path) -> bool:
    """``path`` is below a bind or overlay laid over the view at ``view`` (--native-writes,
    --bypass): the kernel answers there, not litefs (no provenance xattrs, no reserved names)."""
    p, v = os.path.normpath(str(path)), os.path.normpath(str(view))
    return any(p == m or p.startswith(m + "/") for m in mounts_below(v))


def skip_if_kernel_served(path: str | Path, view: str | Path, why: str) -> None:
    """Skip a test of what only litefs does (LITEFS_TEST_NATIVE_WRITES=1 lets the kernel
    serve ``path``): ``why`` names the difference the README documents."""
    if kernel_served(path, view):
        import pytest

        pytest.skip(f"the kernel serves {os.path.relpath(path, view)}: {why}")


def mounts_below(mnt: str) -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            p = line.split()[4]
            if p.startswith(mnt + "/"):
                out.append(p)
    return out


class LitefsMount:
    """One running ``litefs mount -f`` subprocess."""

    def __init__(self, layers: Layers, plan: Plan, mnt: Path, extra: list[str], expect_errors: bool) -> None:
        self.layers = layers
        self.plan = plan
        self.mnt = mnt
        self.extra = extra
        self.expect_errors = expect_errors
        self.log = layers.root / f"litefs-{mnt.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.lingered = False
        self._log_from = 0  # where this start's part of the log begins

    @property
    def path(self) -> Path:
        return self.mnt

    def argv(self) -> list[str]:
        planfile = self.layers.root / f"plan-{self.mnt.name}.json"
        planfile.write_text(self.plan.to_json())
        argv = [
            sys.executable, "-m", "litefs.tools.litefs_cli", "mount", str(self.mnt),
            "--plan", str(planfile), "--image", str(self.layers.image),
            "--tmpfs", str(self.layers.tmpfs), "--persistent", str(self.layers.persistent),
            "--localdisk", str(self.layers.localdisk), "--foreground", "--log", str(self.log),
        ]  # fmt: skip
        for s in self.layers.sources:
            argv += ["--source", str(s)]
        # LITEFS_TEST_NATIVE_WRITES=1: every mount lets the kernel serve the writable rule
        # folders it can (litefs.fs.native), so the same tests prove both ways of serving.
        if NATIVE_WRITES and "--native-writes" not in self.extra:
            argv.append("--native-writes")
        return argv + self.extra

    def start(self) -> LitefsMount:
        self.mnt.mkdir(exist_ok=True)
        if KERNEL_FORMAT:
            from litefs.fs.kwhiteouts import convert

            fd = os.open(self.layers.tmpfs, os.O_RDONLY | os.O_DIRECTORY)
            try:
                convert(fd)
            finally:
                os.close(fd)
        # A remount appends to the same log: only this daemon's "ready:" counts (an earlier
        # one's would let a test in before this one has laid its binds and overlays).
        self._log_from = len(self.log_text())
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while time.monotonic() < deadline:
            if is_mounted(str(self.mnt)) == "fuse.litefs" and self._ready():
                return self
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise AssertionError(f"litefs mount exited {self.proc.returncode}: {out}{self.log_text()}")
            time.sleep(0.02)
        self.stop()
        raise AssertionError(f"litefs did not mount within {MOUNT_TIMEOUT}s: {self.log_text()}")

    def _ready(self) -> bool:
        return "ready:" in self.log_text()[self._log_from:]

    def log_text(self) -> str:
        try:
            return self.log.read_text()
        except FileNotFoundError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        """Unmount cleanly; fall back to a lazy unmount and kill."""
        if self.proc is None:
            return
        if is_mounted(str(self.mnt)):
            r = subprocess.run(
                [sys.executable, "-m", "litefs.tools.litefs_cli", "umount", str(self.mnt)],
                capture_output=True,
            )
            if r.returncode != 0:
                self.lazy_unmount()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.lingered = True  # the daemon must exit once unmounted
            self.proc.kill()
            self.proc.wait()
            self.lazy_unmount()
        self.proc = None

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        self.lazy_unmount()

    def lazy_unmount(self) -> None:
        for p in sorted(mounts_below(str(self.mnt)), key=len, reverse=True):
            subprocess.run(["umount", "-l", p], capture_output=True)
        subprocess.run(["fusermount3", "-uz", str(self.mnt)], capture_output=True)
        if is_mounted(str(self.mnt)):
            subprocess.run(["umount", "-l", str(self.mnt)], capture_output=True)

    def check_log(self) -> None:
        if self.lingered:
            raise AssertionError(f"litefs daemon did not exit after unmount:\n{self.log_text()}")
        text = self.log_text()
        if self.expect_errors:
            return
        if "Traceback" in text or " ERROR " in text:
            raise AssertionError(f"litefs logged errors:\n{text}")
        unexpected = unexpected_warnings(text)
        if unexpected:
            raise AssertionError("litefs logged warnings no test expects (add them to "
                                 "EXPECTED_WARNINGS with the reason, or pass expect_errors):\n"
                                 + "\n".join(unexpected))


class Mounter:
    def __init__(self, layers: Layers) -> None:
        self.layers = layers
        self.mounts: list[LitefsMount] = []

    def __call__(
        self, plan: Plan, extra: list[str] | None = None, name: str = "mnt", expect_errors: bool = False
    ) -> LitefsMount:
        m = LitefsMount(self.layers, plan, self.layers.root / name, list(extra or []), expect_errors)
        self.mounts.append(m)
        return m.start()

    def close(self) -> None:
        errors = []
        for m in self.mounts:
            try:
                m.stop()
            finally:
                try:
                    m.check_log()
                except AssertionError as exc:
                    errors.append(str(exc))
        if errors:
            raise AssertionError("\n".join(errors))
