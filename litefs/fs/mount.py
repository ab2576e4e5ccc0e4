"""Mounting and serving a litefs view: options, foreground/daemon, signals, bypass binds.

``serve`` mounts the view with the options a root filesystem needs (``allow_other``,
``default_permissions``, ``dev``, ``suid``), runs pyfuse3 under trio until SIGTERM/SIGINT or an
external unmount, and always unmounts cleanly. In daemon mode the parent process returns only
once the view is ready (or prints the one-line reason it is not). With ``bypass`` the image
directories that no rule touches (``/usr``, ``/lib``...) are bind-mounted read-only over the
view so the kernel serves them with no FUSE round trip; a plan change that puts a rule inside
one lifts its bind again.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import shutil
import signal
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import pyfuse3
import trio

from litefs import syscalls
from litefs.errors import MountError
from litefs.fs import fastloop, kwhiteouts, native
from litefs.fs.layers import Layer, LayerSet
from litefs.fs.ops import LitefsOps
from litefs.fs.view import STATELITE, View
from litefs.logs import JournalHandler, KmsgHandler
from litefs.mountinfo import mounts
from litefs.plan import Plan
from litefs.resolve import has_rule_below, resolve

log = logging.getLogger("litefs.fs")


#: how deep --bypass looks for rule-free image directories (/usr, /var/lib, ...)
BYPASS_DEPTH = 2
#: kernel read-ahead per FUSE request (KiB): libfuse lets a request carry 1 MiB (256 pages)
READAHEAD_KB = 1024


@dataclass
class MountConfig:
    mountpoint: str
    fsname: str = "litefs"
    allow_other: bool = True
    foreground: bool = False
    bypass: bool = False
    #: bind writable rule folders with no lower content from their layer (litefs.fs.native)
    native_writes: bool = False
    cache_timeout: float = 3600.0
    log_file: str | None = None
    kmsg: bool = False  # also warnings and errors to /dev/kmsg (the boot hook sets it)
    debug: bool = False
    #: pyfuse3 worker tasks. One is the fastest per request (~30% less CPU than many, no
    #: hand-offs between readers), and with several we saw the daemon linger after an
    #: external unmount; the cost is that a large copy-up holds other requests until done.
    workers: int = 1
    #: scratch directories to remove once unmounted (inspect's empty tmpfs layer)
    remove_after: tuple[str, ...] = ()


def fuse_options(cfg: MountConfig, read_only: bool = False) -> set[str]:
    opts = {"default_permissions", "dev", "suid", f"fsname={cfg.fsname}", "subtype=litefs"}
    if cfg.allow_other:
        opts.add("allow_other")
    if read_only:
        opts.add("ro")
    return opts


#: where the boot puts the kernel's API file systems (the hook binds them, dracut's switch_root
#: moves them there). Never bypass-bound: util-linux switch_root takes a target that is a
#: mount already for "mounted" and detaches its own /dev, /proc, /sys, /run instead of moving
#: them, and the view would boot with the image's static /dev and no /proc.
API_MOUNTPOINTS = frozenset({"/dev", "/proc", "/sys", "/run"})


#: never bypass-bound, and /usr is bound by its other children: systemd-shutdown runs from
#: /usr/lib (its binary and libraries) until the machine is off, so a bind there is busy when
#: it unmounts everything ("Failed to unmount /usr: Device or resource busy"). FUSE serves these
#: (systemd-shutdown locks itself in memory before it stops the daemon with every process).
SHUTDOWN_RUNS_FROM = frozenset({"/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libx32"})


def bypass_dirs(plan: Plan, layers: LayerSet, depth: int = BYPASS_DEPTH) -> list[str]:
    """View paths of image directories no rule touches, as high up as possible."""
    out: list[str] = []

    def walk(path: str, level: int) -> None:
        names = layers.image.listdir(path[1:] or ".") or []
        for name in sorted(names):
            child = "/" + name if path == "/" else path + "/" + name
            if child == STATELITE or child in API_MOUNTPOINTS or child in SHUTDOWN_RUNS_FROM:
                continue
            st = layers.image.lstat(child[1:])
            if st is None or not stat.S_ISDIR(st.st_mode):
                continue
            if resolve(plan, child).rule is not None:
                continue
            if not has_rule_below(plan, child) and child != "/usr":
                out.append(child)
            elif level < depth:
                walk(child, level + 1)

    if resolve(plan, "/").rule is None:
        walk("/", 1)
    return out


@dataclass(frozen=True, slots=True)
class Bind:
    """One bind mount over the view: ``path`` in the view, from ``src``."""

    path: str
    src: str
    read_only: bool
    #: for a --native-writes bind: the writable layer it shows (None: the image)
    layer: Layer | None = None
    #: a kernel overlay instead of a bind: its mount options (litefs.fs.native.overlay_data)
    overlay: str | None = None
    #: prepared just now (made, swept); one bound already is only compared, never re-laid
    fresh: bool = field(default=True, compare=False)


def image_binds(plan: Plan, layers: LayerSet) -> list[Bind]:
    """--bypass: the rule-free image directories, read-only from the image."""
    return [Bind(p, f"/proc/self/fd/{layers.image.fd}{p}", True) for p in bypass_dirs(plan, layers)]


def native_binds(ops: LitefsOps, active: frozenset[str] = frozenset()) -> list[Bind]:
    """--native-writes: writable rule folders with no lower content, from their upper layer
    (litefs.fs.native). Runs on the daemon's own thread: it may make the folder in the layer
    (with the view's metadata and inode number) and sweeps its bookkeeping names."""
    out = []
    plan, layers = ops.view.plan, ops.layers
    for path in native.candidates(plan):
        n = native.eligible(plan, layers, path)
        if n is None:
            continue
        up = n.up
        if n.lowers:
            b = Bind(path, "overlay", False, up, native.overlay_data(n, path))
        else:
            b = Bind(path, native.source_of(up, path), False, up)
        if path in active:  # bound already: nothing of it passes the daemon to sweep
            out.append(Bind(b.path, b.src, False, up, b.overlay, fresh=False))
            continue
        try:
            ops.writer.ensure_dir(up, path[1:])
        except OSError as exc:
            log.warning("%s stays served through FUSE: %s", path, exc)
            continue
        if native.prepared(up, path, overlay=bool(n.lowers)):
            out.append(b)
    return out


class Bypass:
    """The bind mounts currently laid over the view."""

    def __init__(self, mountpoint: str, layers: LayerSet, settle: Callable[[float], bool]) -> None:
        self.mountpoint = mountpoint
        self.layers = layers
        #: waits (from a thread) until the view's last invalidations reached the kernel
        self.settle = settle
        self.active: list[str] = []
        self._binds: dict[str, Bind] = {}
        self._lifted: list[Bind] = []

    def lifted(self) -> list[Bind]:
        """The binds lifted since the last call."""
        out, self._lifted = self._lifted, []
        return out

    def apply(self, binds: list[Bind], relay: frozenset[str] = frozenset()) -> None:
        """Bind what is wanted and not bound; lift what is bound and no longer wanted, or
        wanted another way (a bind that became an overlay...), or named in ``relay`` (an
        overlay whose lower content changed: the kernel caches lower entries). Something
        lifted is laid again only by a later call, once it was prepared again."""
        wanted = {b.path: b for b in binds}
        for path in [p for p in self.active
                     if p not in wanted or wanted[p] != self._binds[p] or p in relay][::-1]:
            try:
                syscalls.umount(self.mountpoint + path, syscalls.MNT_DETACH)
                log.info("bypass lifted: %s", path)
            except OSError as exc:
                # Already gone (``litefs umount`` lifts binds before the view): nothing to do.
                if exc.errno not in (errno.EINVAL, errno.ENOENT):
                    log.error("cannot lift bypass on %s: %s", path, exc)
            self.active.remove(path)
            self._lifted.append(self._binds.pop(path))
        for b in binds:
            if b.path in self.active or not b.fresh:
                continue
            path = b.path
            target = self.mountpoint + path
            for attempt in range(5):
                try:
                    if b.overlay is not None:
                        syscalls.mount(b.src, target, 0, "overlay", b.overlay)
                        log.info("overlay laid: %s", path)
                    else:
                        syscalls.mount(b.src, target, syscalls.MS_BIND)
                    if b.read_only:
                        syscalls.mount("none", target, syscalls.MS_BIND | syscalls.MS_REMOUNT | syscalls.MS_RDONLY)
                    self.active.append(path)
                    self._binds[path] = b
                    break
                except OSError as exc:
                    # Right after a plan change the kernel may still be dropping the old
                    # entries (invalidations run concurrently): wait until they have all
                    # landed (bounded as the old fixed pauses were) and try again.
                    if exc.errno in (errno.ENOENT, errno.EINVAL) and attempt < 4:
                        self.settle(0.05 * (attempt + 1))
                        continue
                    log.error("bypass of %s failed (served through FUSE instead): %s", path, exc)
                    break

    def clear(self) -> None:
        self.apply([])


#: the signals that unmount the view and end the daemon
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def setup_logging(cfg: MountConfig) -> None:
    handler: logging.Handler
    if cfg.log_file:
        handler = logging.FileHandler(cfg.log_file)
    else:
        handler = JournalHandler(sys.stderr)  # <N> priorities when stderr is the journal
    handler.setFormatter(logging.Formatter("%(asctime)s litefs[%(process)d]: %(levelname)s %(message)s"))
    root = logging.getLogger("litefs")
    root.handlers[:] = [handler]
    if cfg.kmsg:  # a node's warnings outlive its tmpfs log file
        try:
            root.addHandler(KmsgHandler())
        except OSError as exc:
            log.warning("no kernel log for warnings (/dev/kmsg: %s); the log file has them", exc)
    root.setLevel(logging.DEBUG if cfg.debug else logging.INFO)


def set_readahead(dev: str, kb: int = READAHEAD_KB) -> None:
    """Let the kernel read ahead ``kb`` per FUSE request instead of its default 128 KiB: a
    cold sequential read then costs one request per MiB, not eight (each request is a round
    trip through the daemon). Best effort: only root may change it."""
    try:
        with open(f"/sys/class/bdi/{dev}/read_ahead_kb", "w") as f:
            f.write(str(kb))
    except OSError as exc:
        log.debug("read-ahead for %s left as is: %s", dev, exc)


def _mounted(dev: str) -> bool:
    """True while some mount in this namespace is our FUSE connection (``major:minor``)."""
    return any(m.dev == dev for m in mounts())


async def _serve(
    ops: LitefsOps, cfg: MountConfig, bypass: Bypass | None, ready: int | None, state: dict[str, bool]
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ops.coherence.notifier)

        async def signals(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with trio.open_signal_receiver(*STOP_SIGNALS) as sigs:
                # Held since before the mount (serve): one sent meanwhile arrives now.
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
                task_status.started()
                async for sig in sigs:
                    log.info("signal %d: unmounting", sig)
                    pyfuse3.terminate()
                    return

        async def after_start() -> None:
            # From a thread: a stat of our own root is a FUSE request this loop must serve.
            # Abandoned if a stop signal ends the loop first (it then never gets its answer).
            dev = (await trio.to_thread.run_sync(os.stat, cfg.mountpoint, abandon_on_cancel=True)).st_dev
            ops.coherence.fuse_dev = f"{os.major(dev)}:{os.minor(dev)}"
            set_readahead(ops.coherence.fuse_dev)
            if bypass is not None:
                wanted = wanted_binds(ops, cfg)
                ops.coherence.pin([b.path for b in wanted])
                await trio.to_thread.run_sync(bypass.apply, wanted)
                ops.coherence.pin(list(bypass.active))
                log.info("bypass: %d directories served natively", len(bypass.active))
            log.info("ready: %s on %s", cfg.fsname, cfg.mountpoint)
            if ready is not None:
                os.write(ready, b"ok\n")
                os.close(ready)

        async def watch_mount() -> None:
            # pyfuse3 does not always notice an external unmount (the daemon then idles on
            # forever): look for our connection in mountinfo once a second.
            while True:
                await trio.sleep(1.0)
                if ops.coherence.fuse_dev is not None and not _mounted(ops.coherence.fuse_dev):
                    log.info("the view was unmounted; exiting")
                    state["gone"] = True
                    pyfuse3.terminate()
                    return

        # Before the first request: the fast loop may answer several without a checkpoint,
        # and a SIGTERM in that window must unmount, not kill.
        await nursery.start(signals)
        nursery.start_soon(after_start)
        nursery.start_soon(watch_mount)
        fastloop.install()
        await pyfuse3.main(min_tasks=1, max_tasks=cfg.workers)
        nursery.cancel_scope.cancel()


def serve(plan: Plan, layers: LayerSet, cfg: MountConfig, meta: Callable[[], None] | None = None) -> int:
    """Mount and serve until unmounted. Returns the exit status.

    ``meta``: bookkeeping that need not hold the mount up (``litefs mount``'s
    ``/.statelite`` files): run before the mount in the foreground; otherwise here, in the
    calling process, while the forked daemon mounts (the boot's critical path is the daemon's),
    and always before this returns."""
    if not os.path.isdir(cfg.mountpoint):
        raise MountError(f"mount point {cfg.mountpoint} is not a directory; create it first")
    cfg.mountpoint = os.path.abspath(cfg.mountpoint)
    if cfg.native_writes:
        kernel_format(layers)
    view = View(plan, layers)
    ops = LitefsOps(view, cache_timeout=cfg.cache_timeout)
    # A root filesystem must not go away because a terminal did (boot consoles hang up).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # The kernel has applied the caller's umask to every mode we receive; ours must not
    # mask it a second time.
    os.umask(0)
    # From the mount on, SIGTERM/SIGINT must unmount cleanly: they wait, blocked, until the
    # serving loop's receiver takes them (_serve) instead of killing a mounted daemon.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    if cfg.foreground:
        try:
            if meta is not None:
                meta()
            setup_logging(cfg)
            raise_nofile()
            _init(ops, cfg, layers)
            return _run(ops, cfg, layers, None)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(wfd)  # first: nothing meta starts may hold the daemon's answer pipe open
        if meta is not None:
            try:
                meta()
            except Exception as exc:  # the view does not depend on it: still report its answer
                print(f"litefs: {exc}", file=sys.stderr)
        with os.fdopen(rfd, "rb") as r:
            msg = r.read().decode(errors="replace").strip()
        if msg == "ok":
            return 0
        os.waitpid(pid, 0)
        raise MountError(msg or "the litefs daemon exited before the mount was ready")
    # daemon child
    os.close(rfd)
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        setup_logging(cfg)
        raise_nofile()
        _init(ops, cfg, layers)
    except MountError as exc:
        os.write(wfd, str(exc).encode())
        os._exit(1)
    except BaseException as exc:  # report anything to the waiting parent
        os.write(wfd, f"mount failed: {exc}".encode())
        os._exit(1)
    os._exit(_run(ops, cfg, layers, wfd))


def kernel_format(layers: LayerSet) -> None:
    """--native-writes: the tmpfs layer records deletions as overlayfs does, so kernel
    overlays can be laid on it (litefs.fs.kwhiteouts); its ``.wh.`` markers are converted
    once, before anything is served. A store that cannot (no mknod, no trusted xattrs) keeps
    its markers, and its folders with lower content stay with FUSE."""
    tmp = layers.uppers.get("tmpfs")
    if tmp is None or tmp.kernel_whiteouts or not tmp.writable:
        return
    why = kwhiteouts.supported(tmp.fd)
    if why is not None:
        log.warning("tmpfs layer keeps .wh. markers (%s): folders with lower content stay served through FUSE", why)
        return
    n = kwhiteouts.convert(tmp.fd)
    tmp.kernel_whiteouts = True
    tmp.forget_dirs()
    log.info("tmpfs layer now records deletions as overlayfs does (%d markers converted)", n)


def wanted_binds(ops: LitefsOps, cfg: MountConfig, active: frozenset[str] = frozenset()) -> list[Bind]:
    binds = image_binds(ops.view.plan, ops.layers) if cfg.bypass else []
    return binds + (native_binds(ops, active) if cfg.native_writes else [])


def _init(ops: LitefsOps, cfg: MountConfig, layers: LayerSet) -> None:
    try:
        pyfuse3.init(ops, cfg.mountpoint, fuse_options(cfg, layers.read_only))
    except RuntimeError as exc:
        raise MountError(f"cannot mount FUSE on {cfg.mountpoint}: {exc} (is /dev/fuse there, are we root?)") from None


def _run(ops: LitefsOps, cfg: MountConfig, layers: LayerSet, ready: int | None) -> int:
    bypass = Bypass(cfg.mountpoint, layers, ops.coherence.wait_settled) if cfg.bypass or cfg.native_writes else None
    if bypass is not None:

        def on_layout_change(paths: list[str] | None = None) -> None:
            # Runs inside a request handler: lay the binds from a thread after it returns.
            # ``paths``: refreshed (lower content changed there): overlays on, over or
            # below them are laid again.
            wanted = wanted_binds(ops, cfg, frozenset(bypass.active))
            again = frozenset(
                b.path for b in wanted if b.overlay is not None and paths is not None
                and any(_related(b.path, p) for p in paths))
            ops.coherence.pin([*bypass.active, *(b.path for b in wanted)])
            trio.lowlevel.spawn_system_task(relay, wanted, again)

        async def relay(wanted: list[Bind], again: frozenset[str]) -> None:
            for _round in range(2):
                await trio.to_thread.run_sync(bypass.apply, wanted, again)
                ops.coherence.pin(list(bypass.active))
                # Names a user made through a lifted --native-writes folder that FUSE would
                # take for litefs's markers (.wh.*): none are litefs's while the kernel serves
                # a folder, so they go before they can hide lower content. The kernel's
                # deletion records stay (the tmpfs layer's format: FUSE reads them too). On
                # this thread: the layer's fd cache belongs to it.
                swept = [b.path for b in bypass.lifted() if b.layer is not None and native.swept(b.layer, b.path)]
                if swept:
                    # What the kernel changed below them, FUSE has not seen. A folder to be
                    # laid again another way stays pinned: the kernel detaches a mount from a
                    # dentry litefs invalidates, even one invalidated just before the mount.
                    ops.coherence.pin([*bypass.active, *(b.path for b in wanted)])
                    ops.refresh(swept)
                    ops.coherence.pin(list(bypass.active))
                # Lifted to be laid another way: prepared now that FUSE serves it, laid again.
                if all(b.path in bypass.active for b in wanted):
                    break
                wanted = wanted_binds(ops, cfg, frozenset(bypass.active))
                again = frozenset()
                ops.coherence.pin([*bypass.active, *(b.path for b in wanted)])

        ops.on_layout_change = on_layout_change
    status = 0
    state = {"gone": False}
    try:
        trio.run(_serve, ops, cfg, bypass, ready, state)
    except BaseException:
        log.exception("litefs daemon failed")
        status = 1
    finally:
        if bypass is not None:
            bypass.clear()
        try:
            pyfuse3.close(unmount=not state["gone"])
        except Exception as exc:
            log.error("unmount: %s", exc)
        layers.close()
        for d in cfg.remove_after:
            shutil.rmtree(d, ignore_errors=True)
    log.info("unmounted %s", cfg.mountpoint)
    return status


def _related(a: str, b: str) -> bool:
    """One of two view paths is the other or below it."""
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a + "/")


def umount(mountpoint: str) -> None:
    """Unmount a view and every mount laid over it (bypass binds first, deepest first)."""
    mnt = os.path.realpath(mountpoint)
    points = [m.point for m in mounts()]
    below = [p for p in points if p.startswith(mnt + "/")]
    if mnt not in points:
        raise MountError(f"{mountpoint} is not a mount point")
    for point in sorted(below, key=len, reverse=True):
        try:
            syscalls.umount(point, syscalls.MNT_DETACH)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise MountError(f"cannot unmount {point}: {exc.strerror}") from None
    try:
        syscalls.umount(mnt)
    except OSError as exc:
        raise MountError(f"cannot unmount {mountpoint}: {exc.strerror} (busy? try 'umount -l')") from None

