"""``mkinitramfs``: build a standalone litefs initramfs (``cpio.gz``) without dracut.

Contents: busybox-static with its applet links, ``/init`` (``initramfs/init.sh``: basic mounts,
kernel modules, DHCP on the boot NIC for a real NFS root, optional 9p shares), the boot hook as
``/litefs/boot.sh`` and its DHCP event script, the kernel modules ``fuse nfs nfsv3 nfsv4 9p
overlay`` and the virtio transports and devices (plus whatever ``modules.dep`` says they need;
``.ko.xz``, ``.ko.gz`` and ``.ko.zst`` are stored uncompressed) from ``/lib/modules/<kver>`` with
their load order in ``/etc/litefs/modules``, device nodes ``/dev/console`` and ``/dev/null``, and any ``--add
SRC:DEST`` files (a CA certificate, a plan). The archive is written by our own ``newc`` cpio
writer, so nothing but Python and busybox is needed; entries are sorted and timestamps fixed
(reproducible). The Python runtime of the litefs daemon is *not* inside: the hook runs the
image's own interpreter and its ``/opt/litefs`` venv (genimage installs both) from the
read-only image mount, through the image's dynamic loader (README "The node runtime"); a test
may lend one from a share instead (``litefs.hostbinds`` in ``init.sh``).

    python tools/mkinitramfs.py -o /tftpboot/xcat/osimage/img/initrd-statelite.gz
"""

from __future__ import annotations

import argparse
import gzip
import io
import lzma
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from litefs.errors import BootError, LitefsError

DEFAULT_MODULES = ("fuse", "nfs", "nfsv3", "nfsv4", "9p", "9pnet", "9pnet_virtio", "virtio",
                   "virtio_ring", "virtio_pci", "virtio_mmio", "virtio_console", "virtio_blk",
                   "virtio_net", "overlay")


@dataclass(frozen=True)
class Entry:
    """One cpio member: a directory, regular file, symlink or device node."""

    name: str  # without leading "/"
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def _newc(entry: Entry, ino: int) -> bytes:
    name = entry.name.encode() + b"\0"
    fields = (
        ino, entry.mode, 0, 0, 1, 0, len(entry.data), 0, 0,
        entry.rdev[0], entry.rdev[1], len(name), 0,
    )
    head = b"070701" + b"".join(b"%08X" % f for f in fields) + name
    head += b"\0" * (-len(head) % 4)
    return head + entry.data + b"\0" * (-len(entry.data) % 4)


def cpio(entries: list[Entry]) -> bytes:
    """A ``newc`` archive of ``entries`` (in the given order) with its trailer."""
    out = io.BytesIO()
    for i, e in enumerate(entries, start=1):
        out.write(_newc(e, i))
    out.write(_newc(Entry("TRAILER!!!", 0), 0))
    return out.getvalue()


def modules_dep(moddir: Path) -> dict[str, list[str]]:
    """``modules.dep`` as module file (relative) -> its dependencies (relative)."""
    deps: dict[str, list[str]] = {}
    text = (moddir / "modules.dep").read_text()
    for line in text.splitlines():
        if ":" not in line:
            continue
        mod, _, rest = line.partition(":")
        deps[mod.strip()] = rest.split()
    return deps


def _modname(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    for suffix in (".ko.xz", ".ko.gz", ".ko.zst", ".ko"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return base.replace("-", "_")


def load_order(deps: dict[str, list[str]], wanted: list[str]) -> list[str]:
    """Module files for ``wanted`` names, each after everything it depends on."""
    by_name = {_modname(m): m for m in deps}
    order: list[str] = []
    seen: set[str] = set()

    def visit(mod: str) -> None:
        if mod in seen:
            return
        seen.add(mod)
        for dep in deps.get(mod, []):
            visit(dep)
        order.append(mod)

    missing = []
    for name in wanted:
        mod = by_name.get(name.replace("-", "_"))
        if mod is None:
            missing.append(name)
        else:
            visit(mod)
    if missing:
        # Built into this kernel (=y) is fine; say so rather than fail.
        print(f"mkinitramfs: not modules in this kernel (built in?): {', '.join(missing)}",
              file=sys.stderr)
    return order


def _module_bytes(path: Path) -> bytes:
    """The module uncompressed: busybox insmod loads plain ``.ko`` files only."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        return _unzstd(path, data)
    return data


def _unzstd(path: Path, data: bytes) -> bytes:
    # The standard library of 3.11 has no zstd; the zstd tool is on every system that ships
    # .ko.zst modules (Arch, Ubuntu, newer Debian), so it is used rather than a dependency.
    tool = shutil.which("zstd")
    if tool is None:
        raise BootError(f"{path} is zstd-compressed and the zstd tool is not installed "
                        "(apt install zstd)")
    r = subprocess.run([tool, "-d", "-c", "-q"], input=data, capture_output=True, check=False)
    if r.returncode != 0:
        raise BootError(f"{path}: zstd -d failed: {r.stderr.decode(errors='replace').strip()}")
    return r.stdout


def _ko_name(rel: str) -> str:
    for suffix in (".xz", ".gz", ".zst"):
        if rel.endswith(suffix):
            return rel[: -len(suffix)]
    return rel


def build(kver: str, modules: list[str], busybox: Path, adds: list[tuple[Path, str]],
          moddir_root: Path = Path("/lib/modules")) -> bytes:
    """The initramfs as uncompressed cpio bytes."""
    files: dict[str, Entry] = {}

    def add_dir(name: str) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            files.setdefault(d, Entry(d, stat.S_IFDIR | 0o755))

    def add_file(name: str, data: bytes, mode: int = 0o644) -> None:
        name = name.strip("/")
        if "/" in name:
            add_dir(name.rsplit("/", 1)[0])
        files[name] = Entry(name, stat.S_IFREG | mode, data)

    for d in ("bin", "sbin", "dev", "proc", "sys", "tmp", "run", "etc/litefs", "sysroot",
              "root", "nfs", "host", "usr", "litefs"):
        add_dir(d)
    files["dev/console"] = Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    files["dev/null"] = Entry("dev/null", stat.S_IFCHR | 0o666, rdev=(1, 3))
    add_file("bin/busybox", busybox.read_bytes(), 0o755)
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            files[f"bin/{applet}"] = Entry(f"bin/{applet}", stat.S_IFLNK | 0o777, b"busybox")
    pkg = resources.files("litefs.initramfs")
    add_file("init", (pkg / "init.sh").read_bytes(), 0o755)
    add_file("litefs/boot.sh", (pkg / "litefs-boot.sh").read_bytes(), 0o755)
    add_file("litefs/udhcpc.sh", (pkg / "udhcpc.sh").read_bytes(), 0o755)

    moddir = moddir_root / kver
    if not (moddir / "modules.dep").exists():
        raise BootError(f"no {moddir}/modules.dep: kernel {kver} has no modules installed here; "
                        "pass --kver for an installed kernel (see ls /lib/modules)")
    order = load_order(modules_dep(moddir), modules)
    names = []
    for rel in order:
        ko = _ko_name(rel)
        add_file(f"lib/modules/{ko}", _module_bytes(moddir / rel))
        names.append(ko)
    add_file("etc/litefs/modules", "".join(n + "\n" for n in names).encode())
    for src, dest in adds:
        add_file(dest, src.read_bytes(), 0o755 if os.access(src, os.X_OK) else 0o644)
    return cpio([files[k] for k in sorted(files)])


def default_kver() -> str:
    """The running kernel's version if its modules are installed, else the newest installed."""
    running = os.uname().release
    if Path(f"/lib/modules/{running}/modules.dep").exists():
        return running
    installed = sorted(p.name for p in Path("/lib/modules").glob("*") if (p / "modules.dep").exists())
    if not installed:
        raise BootError("no kernel modules under /lib/modules; install a kernel (linux-image-amd64)")
    return installed[-1]


def _body(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mkinitramfs", description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", required=True, type=Path, help="the cpio.gz to write")
    p.add_argument("--kver", help="kernel version of the modules (default: running, else newest)")
    p.add_argument("--module", action="append", default=None,
                   help=f"kernel module to include (repeatable; default {' '.join(DEFAULT_MODULES)})")
    p.add_argument("--busybox", type=Path, default=Path(shutil.which("busybox") or "/bin/busybox"))
    p.add_argument("--add", action="append", default=[], metavar="SRC:DEST",
                   help="extra file to include at DEST (repeatable)")
    args = p.parse_args(argv)
    adds = []
    for spec in args.add:
        src, sep, dest = spec.partition(":")
        if not sep or not dest:
            raise LitefsError(f"--add {spec!r}: expected SRC:DEST")
        adds.append((Path(src), dest))
    kver = args.kver or default_kver()
    data = build(kver, list(args.module or DEFAULT_MODULES), args.busybox, adds)
    tmp = args.output.with_name(args.output.name + ".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(data)
    os.replace(tmp, args.output)
    print(f"mkinitramfs: wrote {args.output} ({args.output.stat().st_size} bytes, kernel {kver})")
    return 0


def main(argv: list[str] | None = None) -> int:
    from litefs.tools.common import run_main

    return run_main("mkinitramfs", _body, argv)


if __name__ == "__main__":
    sys.exit(main())
