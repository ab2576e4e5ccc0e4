"""The presenters the filesystem benchmark compares, and the cleanup that always unmounts.

Each presenter shows the same tree: a native directory, kernel overlayfs and fuse-overlayfs
(lower = the tree, upper/work in a tmpfs) and litefs with and without ``--bypass`` (the image
holds the tree under a rule-covered and a rule-free path). ``Cleanup`` records every mount
point and process the run creates; ``close`` lazily unmounts them deepest first and ends the
processes it started, whatever state the run died in.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from _fsbench_report import BYPASS, FUSE_OVERLAY, LITEFS, NATIVE, NATIVE_WRITES, OVERLAY
from _fsbench_tree import CREATE_DIR, FREE_TREE, RULE_TREE, UNTAR_DIR

LITEFS_CMD = [sys.executable, "-m", "litefs.tools.litefs_cli"]
READY_TIMEOUT = 120.0


def mountinfo() -> list[tuple[str, str]]:
    """(mount point, fs type) for every mount, in mount order."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            point = parts[4].replace("\\040", " ").replace("\\134", "\\")
            out.append((point, parts[parts.index("-") + 1]))
    return out


def fstype_at(path: str) -> str | None:
    found = None
    for point, fstype in mountinfo():
        if point == path:
            found = fstype  # the last one stacked there is what is visible
    return found


def mounts_under(path: str) -> list[str]:
    return [p for p, _ in mountinfo() if p == path or p.startswith(path + "/")]


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def reap(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for a process to exit; kill it if it has not within ``timeout`` seconds."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def guarded_run(steps: Callable[[], None], stop_all: Callable[[], None], cleanup: Cleanup,
                notes: list[str], work: Path, keep: bool) -> int:
    """Run a benchmark's ``steps`` so that nothing outlives it: SIGTERM/SIGHUP abort it like
    Ctrl-C, and whatever happens every presenter is stopped and ``cleanup`` unmounts and ends
    what is left. The work directory goes unless ``keep``. Returns 1 if the run aborted or
    left something mounted (said in ``notes``), else 0."""

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    status = 0
    try:
        steps()
    except (Exception, KeyboardInterrupt) as exc:
        status = 1
        traceback.print_exc(file=sys.stderr)
        notes.append(f"run aborted: {exc.__class__.__name__}: {exc}")
    finally:
        stop_all()
        leftovers = cleanup.close()
        for s, h in old.items():
            signal.signal(s, h)
        if leftovers:
            status = 1
            notes.extend(leftovers)
        elif keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return status


class Cleanup:
    """Everything to undo at exit: mount points (lazy unmount) and started processes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []
        self.pids: list[int] = []

    def close(self) -> list[str]:
        """Unmount everything under the work directory and end our processes; returns
        whatever could not be cleaned (empty when all is well)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for point in sorted(mounts_under(str(self.root)), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)
        for proc in self.procs:
            reap(proc, 10)
        for pid in self.pids:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        left = mounts_under(str(self.root))
        return [f"still mounted: {p}" for p in left]


class Presenter:
    """One way of presenting the tree. ``read_root`` holds ``dNNN/`` and ``big.bin``."""

    name = ""
    fuse = False

    def __init__(self, work: Path, cleanup: Cleanup) -> None:
        self.work = work
        self.cleanup = cleanup
        self.read_root = ""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def remount(self) -> None:
        self.stop()
        self.start()

    def write_dir(self, kind: str, i: int) -> str:
        """A fresh directory for run ``i`` of workload ``kind`` ("create" or "untar")."""
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return None

    def daemon_pid(self) -> int | None:
        """The user-space process serving this presenter (None for kernel filesystems)."""
        return self.pid


class Native(Presenter):
    name = NATIVE

    def __init__(self, work: Path, cleanup: Cleanup, tree: Path, tmpfs: Path) -> None:
        super().__init__(work, cleanup)
        self.read_root = str(tree)
        self.tmpfs = tmpfs

    def write_dir(self, kind: str, i: int) -> str:
        # create: into the tmpfs (as the tmpfs rule does); untar: onto the disk (persistent).
        base = self.tmpfs / "native" if kind == "create" else self.work / "native-disk"
        d = base / f"{kind}-{i}"
        d.mkdir(parents=True)
        return str(d)


class KernelOverlay(Presenter):
    name = OVERLAY

    def __init__(self, work: Path, cleanup: Cleanup, tree: Path, tmpfs: Path) -> None:
        super().__init__(work, cleanup)
        self.lower = tree
        self.upper = tmpfs / "ovl-upper"
        self.workdir = tmpfs / "ovl-work"
        self.mnt = work / "mnt-overlayfs"
        self.read_root = str(self.mnt)

    def start(self) -> None:
        for d in (self.upper, self.workdir, self.mnt):
            d.mkdir(parents=True, exist_ok=True)
        opts = f"lowerdir={self.lower},upperdir={self.upper},workdir={self.workdir}"
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(self.mnt)], check=True)

    def stop(self) -> None:
        subprocess.run(["umount", str(self.mnt)], check=True)

    def write_dir(self, kind: str, i: int) -> str:
        d = self.mnt / f"{kind}-{i}"
        d.mkdir()
        return str(d)


class FuseOverlay(Presenter):
    name = FUSE_OVERLAY
    fuse = True

    def __init__(self, work: Path, cleanup: Cleanup, lower: Path, tmpfs: Path, tag: str = "fovl") -> None:
        super().__init__(work, cleanup)
        self.lower = lower
        self.upper = tmpfs / f"{tag}-upper"
        self.workdir = tmpfs / f"{tag}-work"
        self.mnt = work / f"mnt-{tag}"
        self.read_root = str(self.mnt)

    def start(self) -> None:
        for d in (self.upper, self.workdir, self.mnt):
            d.mkdir(parents=True, exist_ok=True)
        opts = f"lowerdir={self.lower},upperdir={self.upper},workdir={self.workdir}"
        subprocess.run(["fuse-overlayfs", "-o", opts, str(self.mnt)], check=True, capture_output=True)

    def daemon_pid(self) -> int | None:
        return pid_of(str(self.mnt), b"fuse-overlayfs")

    def stop(self) -> None:
        subprocess.run(["fusermount3", "-u", str(self.mnt)], check=True)
        # fuse-overlayfs exits after the unmount; give it a moment so remounts do not race.
        time.sleep(0.05)

    def write_dir(self, kind: str, i: int) -> str:
        d = self.mnt / f"{kind}-{i}"
        d.mkdir()
        return str(d)


class Litefs(Presenter):
    """``litefs mount --foreground`` as our own child process (so we know the daemon pid)."""

    fuse = True

    def __init__(
        self, work: Path, cleanup: Cleanup, image: Path, plan_file: Path, tmpfs: Path, bypass: bool, tag: str = "",
        native_writes: bool = False,
    ) -> None:
        super().__init__(work, cleanup)
        self.bypass = bypass
        self.native_writes = native_writes
        self.name = NATIVE_WRITES if native_writes else BYPASS if bypass else LITEFS
        tag = tag or self.name
        self.image = image
        self.plan_file = plan_file
        self.tmpfs_layer = tmpfs / f"{tag}-tmpfs"
        self.persistent = work / f"{tag}-persistent"
        self.mnt = work / f"mnt-{tag}"
        self.log = work / f"{tag}.log"
        self.read_root = str(self.mnt) + (FREE_TREE if bypass and not native_writes else RULE_TREE)
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        argv = [
            *LITEFS_CMD, "mount", str(self.mnt), "--plan", str(self.plan_file), "--image", str(self.image),
            "--tmpfs", str(self.tmpfs_layer), "--persistent", str(self.persistent), "--log", str(self.log),
        ]  # fmt: skip
        return argv + (["--bypass"] if self.bypass else ["--no-bypass"]) + (["--native-writes"] if self.native_writes else [])

    def start(self) -> None:
        for d in (self.tmpfs_layer, self.persistent, self.mnt):
            d.mkdir(parents=True, exist_ok=True)
        log_start = self.log.stat().st_size if self.log.exists() else 0
        self.proc = subprocess.Popen([*self.argv(), "--foreground"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.cleanup.procs.append(self.proc)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if fstype_at(str(self.mnt)) == "fuse.litefs" and "ready:" in self._log_since(log_start):
                return
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"litefs mount exited {self.proc.returncode}: {err.strip()} {self._log_since(log_start)}")
            time.sleep(0.01)
        raise RuntimeError(f"litefs did not become ready within {READY_TIMEOUT}s")

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        r = subprocess.run([*LITEFS_CMD, "umount", str(self.mnt)], capture_output=True, text=True)
        if r.returncode != 0:
            for point in sorted(mounts_under(str(self.mnt)), key=len, reverse=True):
                subprocess.run(["umount", "-l", point], capture_output=True)
        reap(self.proc, 30)
        self.proc = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def write_dir(self, kind: str, i: int) -> str:
        # --native-writes: both into the tmpfs rule folder that holds the tree in the image,
        # so the kernel overlay laid there (lower content: the tree) is what is measured,
        # as kernel overlayfs writes into its upper over the same tree.
        base = RULE_TREE if self.native_writes else CREATE_DIR if kind == "create" else UNTAR_DIR
        d = Path(str(self.mnt) + base) / f"bench-{kind}-{i}"
        d.mkdir(parents=True)
        return str(d)


def vm_hwm(pid: int) -> int:
    """Peak resident set size of a process in bytes (VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def pid_of(mnt: str, prog: bytes) -> int | None:
    """The process whose argv[0] ends with ``prog`` and that names ``mnt`` in its argv."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(prog) and os.fsencode(mnt) in argv:
            return int(name)
    return None


def daemon_pid(mnt: str) -> int | None:
    """The litefs daemon serving ``mnt`` (daemon mode forks, so we look it up)."""
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"mount" in argv and os.fsencode(mnt) in argv and any(b"litefs" in a for a in argv):
            return int(name)
    return None


def timed_litefs_mount(argv: list[str], mnt: str, cleanup: Cleanup) -> tuple[float, int]:
    """Run ``litefs mount`` in daemon mode; seconds until it returned with the mount
    visible, and the daemon's pid."""
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=READY_TIMEOUT)
    elapsed = time.perf_counter() - t0
    pid = daemon_pid(mnt)
    if pid is not None:
        cleanup.pids.append(pid)
    if r.returncode != 0:
        raise RuntimeError(f"litefs mount failed ({r.returncode}): {r.stderr.strip()}")
    if fstype_at(mnt) != "fuse.litefs":
        raise RuntimeError(f"litefs mount returned but {mnt} is not a litefs mount")
    if pid is None:
        raise RuntimeError(f"cannot find the litefs daemon for {mnt}")
    return elapsed, pid


def litefs_umount(mnt: str, pid: int | None) -> None:
    r = subprocess.run([*LITEFS_CMD, "umount", mnt], capture_output=True, text=True)
    if r.returncode != 0:
        for point in sorted(mounts_under(mnt), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)
    if pid is not None:
        deadline = time.monotonic() + 30
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for a reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
