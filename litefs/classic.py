"""Classic boot emulation: what a stock xCAT node's ``rc.statelite`` does to a liteimg'd image.

A faithful re-implementation of reference §5.2 step 3 (and §2.2): the node's ``litefile`` and
``litetree`` lists, litetree directories mounted read-only under ``/.statelite/mnt``, entries
split into parents and children, each one searched in the litetree directories (with xCAT's
quirks for parent directories) and then ``/.default``, and handled per option -- copy into
the tmpfs, bind mount, symlink, seed the persistent copy once, ``cat`` for ``con`` -- every
step appended to ``statelite.log`` in the script's own words, then ``/etc/mtab`` linked to
``/proc/mounts``. It runs for real in a private mount namespace (``unshare --mount``) over a
read-only bind of the image, a fresh tmpfs and a persistent directory, so the result is the
tree a stock node would have: a test oracle for litefs and a debugging aid for admins ("what
would a stock node do with these tables").

The namespace side runs in a child process (``python -m litefs.classic``); after the boot it
chroots into the node's root to apply writes as a process on the node would and to record the
effective tree (:func:`walk_tree`), the same walker the equivalence test uses on a litefs view.

One module on purpose (it is over 500 lines): it follows one script, rc.statelite, step by
step, and reads best side by side with the reference.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from litefs.errors import LitefsError
from litefs.plan import Plan

MNTDIR = "/sysroot"
SL = ".statelite"
TMPFS = f"{MNTDIR}/{SL}/tmpfs"
PERSISTENT = f"{MNTDIR}/{SL}/persistent"
TREEMOUNT = f"{MNTDIR}/{SL}/mnt"
DEFAULT = f"{MNTDIR}/.default"
LOCAL = f"{MNTDIR}/.sllocal/localmnt"
LOG = f"{MNTDIR}/{SL}/statelite.log"


class ClassicError(LitefsError):
    """The classic boot emulation could not run (not root, image not liteimg'd, bad config)."""


# --- what the node gets from xcatd ---------------------------------------------------------


def rc_statelite_litefile_lines(plan: Plan) -> list[str]:
    """``/.statelite/litefile`` as rc.statelite writes it: ``<option> <path>``, sorted by path
    (directories keep their ``/``; a blank option is reported as ``tmpfs,rw``)."""
    rules = sorted(plan.rules, key=lambda r: r.table_path)
    return [f"{r.option} {r.table_path}" for r in rules]


def rc_statelite_litetree_lines(plan: Plan) -> list[str]:
    """``/.statelite/litetree``: the 2nd field of ``litetree`` output, i.e. the substituted
    directory (``server:/path``), in priority order."""
    return [s.directory.split()[0] for s in plan.sources if s.directory.split()]


def split_entries(lines: Sequence[str]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """rc.statelite's ResolveLinks: (parents, children) as ``(type, path)`` in list order. An
    entry is a child if any ancestor, written with a trailing ``/``, is itself an entry."""
    entries = [(f[0], f[1]) for f in (line.split() for line in lines) if len(f) >= 2]
    paths = {p for _t, p in entries}
    parents, children = [], []
    for typ, path in entries:
        parent = os.path.dirname(path.rstrip("/") if path != "/" else path) + "/"
        child = False
        while parent != "//":
            if parent in paths:
                child = True
                break
            parent = os.path.dirname(parent.rstrip("/")) + "/"
        (children if child else parents).append((typ, path))
    return parents, children


# --- the shell rc.statelite speaks ------------------------------------------------------------


class Shell:
    """The handful of commands rc.statelite runs, on paths written as the script sees them
    (``/sysroot/...``) and carried out on the real root. Failures behave as in the script:
    the message goes to the console (or to the log where the script redirects it), and the
    boot goes on."""

    def __init__(self, sysroot: str) -> None:
        self.sysroot = sysroot.rstrip("/")
        self.log: list[str] = []
        self.console: list[str] = []

    def real(self, path: str) -> str:
        if path == MNTDIR or path.startswith(MNTDIR + "/"):
            return self.sysroot + path[len(MNTDIR) :]
        return path

    def unreal(self, text: str) -> str:
        return text.replace(self.sysroot, MNTDIR)

    def _run(self, argv: list[str], to_log: bool = False) -> bool:
        r = subprocess.run(argv, capture_output=True, text=True)
        out = self.unreal((r.stdout + r.stderr).strip())
        if out:
            (self.log if to_log else self.console).extend(out.splitlines())
        return r.returncode == 0

    # tests
    def d(self, p: str) -> bool:
        return os.path.isdir(self.real(p))

    def e(self, p: str) -> bool:
        return os.path.exists(self.real(p))

    def link(self, p: str) -> bool:
        return os.path.islink(self.real(p).rstrip("/"))

    def empty_dir(self, p: str) -> bool:
        try:
            return not os.listdir(self.real(p))
        except OSError:
            return True

    # commands
    def mkdir_p(self, p: str) -> bool:
        return self._run(["mkdir", "-p", self.real(p)])

    def cp_ra(self, src: str, dst: str) -> bool:
        return self._run(["cp", "-r", "-a", self.real(src), self.real(dst)])

    def cp_ra_glob(self, src: str, dst: str) -> bool:
        """``cp -r -a ${1}* dst``: the shell's glob (hidden names skipped; no match leaves the
        pattern as it is, which cp then cannot find)."""
        pattern = self.real(src) + "*"
        matches = sorted(glob.glob(glob.escape(self.real(src)) + "*")) or [pattern]
        return self._run(["cp", "-r", "-a", *matches, self.real(dst)])

    def ln_sf(self, target: str, name: str) -> bool:
        return self._run(["ln", "-sf", target, self.real(name)], to_log=True)

    def rm_rf(self, p: str, to_log: bool = False) -> bool:
        return self._run(["rm", "-rf", self.real(p)], to_log=to_log)

    def touch(self, p: str) -> bool:
        return self._run(["touch", self.real(p)])

    def mkdir(self, p: str) -> bool:
        return self._run(["mkdir", self.real(p)])

    def mount_bind(self, src: str, dst: str, ro: bool = False) -> bool:
        opts = ["-o", "ro"] if ro else []
        return self._run(["mount", "--bind", *opts, self.real(src), self.real(dst)], to_log=True)

    def cat_append(self, src: str, dst: str) -> bool:
        try:
            with open(self.real(src), "rb") as fi:
                data = fi.read()
            fd = os.open(self.real(dst), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            return True
        except OSError as exc:
            self.log.append(f"/bin/cat: {src}: {exc.strerror}")
            return False


# --- rc.statelite -----------------------------------------------------------------------------


class RcStatelite:
    """ResolveLinks, FindFile and ProcessType of rc.statelite, option for option."""

    def __init__(self, sh: Shell, litefile: Sequence[str], litetree: Sequence[str]) -> None:
        self.sh = sh
        self.litetree = list(litetree)
        self.plist, self.clist = split_entries(litefile)

    def resolve_links(self) -> None:
        for typ, path in self.plist:
            self.find_file(path, typ, 0)
        for typ, path in self.clist:
            self.find_file(path, typ, 1)

    def find_file(self, path: str, typ: str, is_child: int) -> None:
        sh = self.sh
        found = False
        hit = ""
        for line in self.litetree:
            d = line.replace(":", "", 1)
            hit = f"{TREEMOUNT}/{d}{path}"
            if not sh.e(hit):
                continue
            found = True
            if sh.d(hit) and is_child == 0:
                # a litetree dir that has one of the parent's direct children is skipped, and
                # counts as no hit (FOUND=0): unless a later dir hits, .default is used
                if any(
                    os.path.dirname(c.rstrip("/")) + "/" == path and sh.e(f"{TREEMOUNT}/{d}{c}")
                    for _t, c in self.clist
                ):
                    found = False
                    continue
                if sh.empty_dir(hit):
                    found = False
                else:
                    self.process_type(hit, path, typ, is_child)  # no break: every hit stacks
            else:
                if sh.d(hit) and sh.empty_dir(hit):
                    found = False
                else:
                    self.process_type(hit, path, typ, is_child)
                    if typ not in ("link,con", "con"):
                        break
        if found and typ == "con":
            self.process_type(hit, path, typ, is_child, con_end=True)
        if not found:
            if sh.e(f"{DEFAULT}{path}"):
                self.process_type(f"{DEFAULT}{path}", path, typ, is_child)
            else:
                sh.console.append(f"Could not find {path} in defaults or any other place")

    def process_type(
        self, src: str, path: str, typ: str, is_child: int, con_end: bool = False
    ) -> None:
        sh, log = self.sh, self.sh.log
        ppath = os.path.dirname(path.rstrip("/") or "/")
        if not sh.d(f"{TMPFS}{ppath}") and not sh.link(f"{TMPFS}{ppath}"):
            sh.mkdir_p(f"{TMPFS}{ppath}")
            log.append(f"mkdir -p {TMPFS}{ppath}")
        orig = path.rstrip("/")
        if typ in ("link", "tmpfs,rw", "tmpfs", "tempfs", "rw"):
            if sh.d(f"{TMPFS}{path}"):
                sh.cp_ra_glob(src, f"{TMPFS}{path}")
                log.append(f"cp -r -a {src}* {TMPFS}{path}")
            else:
                sh.cp_ra(src, f"{TMPFS}{path}")
                log.append(f"cp -r -a {src} {TMPFS}{path}")
            if typ in ("tmpfs", "tempfs", "rw") and is_child == 0:
                log.append(f"mount --bind {TMPFS}{path} {MNTDIR}{orig}")
                sh.mount_bind(f"{TMPFS}{path}", f"{MNTDIR}{orig}")
        elif typ == "link,ro":
            if not sh.d(f"{TMPFS}{ppath}"):
                sh.mkdir_p(f"{TMPFS}{ppath}")
            if is_child == 0:
                target = f"{TMPFS}{path}".rstrip("/")
                link = src[len(MNTDIR) :] if src.startswith(MNTDIR) else src
                log.append(f"ln -sf {link} {target}")
                sh.ln_sf(link, target)
        elif typ == "link,persistent":
            p = path.rstrip("/")
            target = f"{TMPFS}{p}"
            if not sh.d(f"{PERSISTENT}{ppath}"):
                sh.mkdir_p(f"{PERSISTENT}{ppath}")
                log.append(f"mkdir -p {PERSISTENT}{ppath}")
            if not sh.e(f"{PERSISTENT}{p}"):
                log.append(f"cp -r -a {src} {PERSISTENT}{p}")
                sh.cp_ra(src, f"{PERSISTENT}{p}")
            if is_child == 1:
                parent = ppath + "/"
                while parent != "//":
                    for itype, ipath in self.plist:
                        if parent == ipath and itype in ("link", "tmpfs,rw"):
                            log.append(f"mount --bind {PERSISTENT}{p} {target}")
                            sh.mount_bind(f"{PERSISTENT}{p}", target)
                    parent = os.path.dirname(parent.rstrip("/")) + "/"
            else:
                if sh.d(target):
                    log.append(f"rm -Rf {target}")
                    sh.rm_rf(target, to_log=True)
                link = f"{PERSISTENT}{p}"[len(MNTDIR) :]
                log.append(f"ln -sf {link} {target}")
                sh.ln_sf(link, target)
        elif typ == "link,con":
            log.append(f"cat {src} >>{TMPFS}{path}")
            sh.cat_append(src, f"{TMPFS}{path}")
        elif typ == "con":
            if con_end:
                log.append(f"mount --bind {TMPFS}{path} {MNTDIR}{path}")
                sh.mount_bind(f"{TMPFS}{path}", f"{MNTDIR}{path}")
            else:
                log.append(f"cat {src} >>{TMPFS}{path}")
                sh.cat_append(src, f"{TMPFS}{path}")
        elif typ == "localdisk":
            if not sh.d(f"{LOCAL}{ppath}") and not sh.link(f"{LOCAL}{ppath}"):
                sh.mkdir_p(f"{LOCAL}{ppath}")
                log.append(f"mkdir -p {LOCAL}{ppath}")
            if sh.d(src):
                if not sh.d(f"{LOCAL}{path}"):
                    sh.cp_ra(src, f"{LOCAL}{ppath}")
                    log.append(f"cp -r -a {src} {LOCAL}{ppath}")
            elif not os.path.isfile(sh.real(f"{LOCAL}{path}")):
                sh.cp_ra(src, f"{LOCAL}{path}")
                log.append(f"cp -r -a {src} {LOCAL}{path}")
            if is_child == 0:
                log.append(f"mount --bind {LOCAL}{path} {MNTDIR}{orig}")
                sh.mount_bind(f"{LOCAL}{path}", f"{MNTDIR}{orig}")
        elif typ == "persistent":
            if not sh.d(f"{PERSISTENT}{ppath}"):
                sh.mkdir_p(f"{PERSISTENT}{ppath}")
                log.append(f"mkdir -p {PERSISTENT}{ppath}")
            if not sh.e(f"{PERSISTENT}{path}"):
                log.append(f"cp -r -a {src} {PERSISTENT}{path}")
                sh.cp_ra(src, f"{PERSISTENT}{path}")
            log.append(f"mount --bind {PERSISTENT}{path} {MNTDIR}/{orig}")
            sh.mount_bind(f"{PERSISTENT}{path}", f"{MNTDIR}/{orig}")
        elif typ == "ro":
            if not sh.d(f"{TMPFS}{ppath}"):
                sh.mkdir_p(f"{TMPFS}{ppath}")
            placeholder = f"{TMPFS}{path}"
            sh.rm_rf(placeholder)
            if placeholder.endswith("/"):
                sh.mkdir(placeholder)
            else:
                sh.touch(placeholder)
            log.append(f"mout --bind -o ro {src} {MNTDIR}{path}")  # sic: the script's typo
            sh.mount_bind(src, f"{MNTDIR}{path}", ro=True)
        # any other option: only the tmpfs parent directory above


# --- a process on the node: writes and the effective tree ----------------------------------


def apply_ops(ops: Iterable[dict[str, Any]]) -> list[str]:
    """Apply file operations relative to ``/`` (call after chroot); one result per op:
    ``ok`` or the errno name. Ops: write, append, unlink, mkdir, rmdir, chmod, symlink, rename."""
    results = []
    for op in ops:
        kind, path = op["op"], op["path"]
        try:
            if kind in ("write", "append"):
                flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if kind == "append" else os.O_TRUNC)
                fd = os.open(path, flags, int(op.get("mode", 0o644)))
                try:
                    os.write(fd, op.get("data", "").encode())
                finally:
                    os.close(fd)
            elif kind == "unlink":
                os.unlink(path)
            elif kind == "mkdir":
                os.mkdir(path, int(op.get("mode", 0o755)))
            elif kind == "rmdir":
                os.rmdir(path)
            elif kind == "chmod":
                os.chmod(path, int(op["mode"]))
            elif kind == "symlink":
                os.symlink(op["target"], path)
            elif kind == "rename":
                os.rename(path, op["to"])
            else:
                raise ClassicError(f"unknown op {kind!r}")
            results.append("ok")
        except OSError as exc:
            results.append(errno.errorcode.get(exc.errno or 0, str(exc.errno)))
    return results


def _record(path: str, follow: bool) -> tuple[dict[str, Any], bool]:
    """(record, descend?) for one path as a process on the node sees it."""
    st = os.lstat(path)
    rec: dict[str, Any] = {}
    if stat.S_ISLNK(st.st_mode):
        rec["link"] = os.readlink(path)
        if not follow:
            rec.update(kind="symlink", target=rec.pop("link"))
            return rec, False
        try:
            st = os.stat(path)
        except OSError:
            rec.update(kind="dangling")
            return rec, False
    rec.update(mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid)
    if stat.S_ISDIR(st.st_mode):
        rec["kind"] = "dir"
        return rec, True
    if stat.S_ISREG(st.st_mode):
        with open(path, "rb") as f:
            data = f.read()
        rec.update(kind="file", size=len(data), sha256=hashlib.sha256(data).hexdigest())
        return rec, False
    rec.update(kind="other", rdev=st.st_rdev)
    return rec, False


def walk_tree(
    root: str = "/", exclude: Iterable[str] = (), follow: Iterable[str] = ()
) -> dict[str, dict[str, Any]]:
    """The effective tree below ``root`` (run chrooted so absolute links resolve as on the
    node): node path -> kind, mode, owner, size, sha256, symlink target. Symlinks are shown as
    symlinks, except at ``follow`` paths, where what they lead to is shown (and walked)."""
    skip = set(exclude)
    follow_set = set(follow)
    out: dict[str, dict[str, Any]] = {}

    def visit(node_path: str, full: str) -> None:
        rec, descend = _record(full, node_path in follow_set)
        out[node_path] = rec
        if descend:
            for name in sorted(os.listdir(full)):
                child = f"{node_path.rstrip('/')}/{name}"
                if child not in skip:
                    visit(child, os.path.join(full, name))

    base = root.rstrip("/") or "/"
    for name in sorted(os.listdir(base)):
        p = "/" + name
        if p not in skip:
            visit(p, os.path.join(base, name))
    return out


# --- the boot, in a private mount namespace ------------------------------------------------------


@dataclass
class ClassicConfig:
    """One emulated boot. ``sources`` maps a litetree line (``server:/path``) to the host
    directory that stands for that NFS export; ``persistent`` is the node's own persistent
    directory (``<statemnt>/<node>`` on the server), None when STATEMNT has no server."""

    image: str
    litefile: list[str]
    litetree: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    persistent: str | None = None
    localdisk: str | None = None
    ops: list[dict[str, Any]] = field(default_factory=list)
    follow: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=lambda: ["/.statelite", "/.default", "/.sllocal"])
    manifest: bool = True

    @classmethod
    def for_plan(cls, plan: Plan, image: str, sources: dict[str, str], **kw: Any) -> ClassicConfig:
        return cls(image=image, litefile=rc_statelite_litefile_lines(plan),
                   litetree=rc_statelite_litetree_lines(plan),
                   sources=sources, **kw)


@dataclass
class ClassicResult:
    log: list[str]
    console: list[str]
    ops: list[str]
    manifest: dict[str, dict[str, Any]]


def _sh(argv: list[str]) -> None:
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode:
        raise ClassicError(f"{' '.join(argv)}: {r.stderr.strip()}")


def _boot_here(cfg: ClassicConfig, sysroot: str, result_fd: int) -> None:
    """Inside the new mount namespace: prepivot + rc.statelite, then act as the node.
    ``sysroot`` is an empty directory (the caller's, removed when the namespace is gone)."""
    _sh(["mount", "--make-rprivate", "/"])
    os.umask(0o022)  # the initramfs' umask: files rc.statelite creates ('cat >>') are 0644
    if not os.path.isdir(os.path.join(cfg.image, SL)):
        raise ClassicError(f"{cfg.image} has no {SL}/: it was not prepared by genimage/liteimg")
    _sh(["mount", "--bind", cfg.image, sysroot])
    _sh(["mount", "-o", "remount,bind,ro", sysroot])
    sh = Shell(sysroot)
    if not os.path.exists(sh.real(f"{MNTDIR}/etc/init.d/statelite")):
        # prepivot's words; a stock node then sits in a shell. Carried on here (and said) so
        # the emulation still shows what rc.statelite would do with this image.
        sh.console.append(
            f"{MNTDIR}/etc/init.d/statelite doesn't exist.  Perhaps you didn't create this image "
            "with the -m statelite mode (a stock node stops here in a shell)"
        )
    _sh(["mount", "-t", "tmpfs", "rw", sh.real(f"{MNTDIR}/{SL}")])
    os.mkdir(sh.real(TMPFS))
    if cfg.persistent:
        os.mkdir(sh.real(PERSISTENT))
        _sh(["mount", "--bind", cfg.persistent, sh.real(PERSISTENT)])
    if cfg.localdisk and os.path.isdir(sh.real(LOCAL)):
        _sh(["mount", "--bind", cfg.localdisk, sh.real(LOCAL)])
    with open(sh.real(f"{MNTDIR}/{SL}/litefile"), "w") as f:
        f.writelines(line + "\n" for line in cfg.litefile)
    with open(sh.real(f"{MNTDIR}/{SL}/litetree"), "w") as f:
        f.writelines(line + "\n" for line in cfg.litetree)
    # MountTrees: only lines with a server are mounted (read-only).
    for line in cfg.litetree:
        if line.startswith("#") or ":" not in line:
            continue
        serv, mnt = line.split(":")[0], line.split(":")[1]
        point = f"{TREEMOUNT}/{serv}/{mnt}"
        sh.mkdir_p(point)
        host = cfg.sources.get(line)
        if host is None or not os.path.isdir(host):
            sh.console.append(f"Can't mount {line}.  I give up.. ")
            continue
        _sh(["mount", "--bind", "-o", "ro", host, sh.real(point)])
    RcStatelite(sh, cfg.litefile, cfg.litetree).resolve_links()
    subprocess.run(["ln", "-sf", "/proc/mounts", sh.real(f"{TMPFS}/etc/mtab")], capture_output=True)
    log_path = sh.real(LOG)
    with open(log_path, "a") as f:
        f.writelines(line + "\n" for line in sh.log)
    os.chroot(sysroot)
    os.chdir("/")
    ops = apply_ops(cfg.ops)
    manifest = walk_tree("/", cfg.exclude, cfg.follow) if cfg.manifest else {}
    result = ClassicResult(sh.log, sh.console, ops, manifest)
    with os.fdopen(result_fd, "w") as out:
        json.dump(asdict(result), out)


def _child(argv: list[str], payload: dict[str, Any]) -> dict[str, Any]:
    if os.geteuid() != 0:
        raise ClassicError("the classic boot emulation needs root (mount namespaces, chroot)")
    with tempfile.TemporaryDirectory(prefix="classic-") as tmp:
        cfg_path, out_path = os.path.join(tmp, "cfg.json"), os.path.join(tmp, "out.json")
        os.mkdir(os.path.join(tmp, "sysroot"))
        with open(cfg_path, "w") as f:
            json.dump({**payload, "sysroot": os.path.join(tmp, "sysroot")}, f)
        r = subprocess.run(
            [*argv, sys.executable, "-m", "litefs.classic", payload["mode"], cfg_path, out_path],
            capture_output=True, text=True,
        )
        if r.returncode:
            tail = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise ClassicError(f"classic boot failed: {tail}")
        with open(out_path) as f:
            return json.load(f)


def classic_boot(cfg: ClassicConfig) -> ClassicResult:
    """Boot ``cfg.image`` the stock way in a private mount namespace; the tmpfs is gone when
    this returns, the persistent directory keeps what the node wrote (call again = reboot)."""
    data = _child(["unshare", "--mount", "--propagation", "private"], {"mode": "boot", **asdict(cfg)})
    return ClassicResult(**data)


def _main(argv: list[str]) -> int:
    _mode, cfg_path, out_path = argv
    with open(cfg_path) as f:
        payload = json.load(f)
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        sysroot = payload.pop("sysroot")
        payload.pop("mode")
        _boot_here(ClassicConfig(**payload), sysroot, fd)
    except LitefsError as exc:
        print(f"classic: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
