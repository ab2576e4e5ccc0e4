"""``genimage``: build a statelite image with debootstrap, as xCAT's genimage does (reference §7.4).

    genimage -o debian12 -a x86_64 -p compute            # image debian12-x86_64-statelite-compute
    genimage debian12-x86_64-statelite-compute           # the same, values from the osimage table
    genimage --dryrun -o debian12 -a x86_64 -p compute   # the phases, changes nothing

Builds ``<rootimgdir>/rootimg`` (default ``<installdir>/netboot/<os>/<arch>/<profile>``, with
``installdir`` from the site table, else ``/install``) plus ``kernel`` and
``initrd-statelite.gz`` beside it, and writes the values back to osimage/linuximage so liteimg,
nodeset and mountd find the image by name. The work is in :mod:`litefs.genimage.build`.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from pathlib import Path

from litefs.tools.common import Parser, add_db_option, run_main
from sqlalchemy import Engine, select

from litefs import db, genimage, tabledata
from litefs.errors import UsageError
from litefs.genimage import GenimageError, build
from litefs.genimage.progress import Progress
from litefs.schema import TABLES, active

#: Shipped profiles (pkglists) of litefs; xCAT's /opt/xcat/share/xcat/netboot/<platform>.
SHIPPED_DIR = Path(str(resources.files("litefs") / "data" / "genimage"))
#: xCAT's platform folder for Debian under <installdir>/custom/netboot/.
PLATFORM = "debian"

EPILOG = f"""\
OS versions that work: {', '.join(f'{o} ({s})' for o, s in genimage.SUPPORTED_OS.items())};
architectures: {', '.join(genimage.SUPPORTED_ARCH)}. Profile files (pkglist, otherpkgs.pkglist,
exlist, postinstall) are taken from linuximage when set, else found in
<installdir>/custom/netboot/{PLATFORM}/ and then litefs's shipped profiles (compute, minimal),
as <profile>.<os>.<arch>.<ext>, <profile>.<arch>.<ext>, <profile>.<os>.<ext>, <profile>.<ext>.
A re-run copies the current image aside, installs what the pkglist added and purges what it
removed, and swaps the result in only when every step succeeded. Running nodes keep the image
they booted until they reboot; for software on running nodes use 'litefs image-exec'.
The Debian archive is linuximage.pkgdir when it is a URL, else --mirror.
"""


def _parser() -> Parser:
    p = Parser(prog="genimage", description="Build a statelite image (rootimg, kernel, "
               "initrd-statelite.gz) with debootstrap and apt.", epilog=EPILOG,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", dest="osver", help="OS version (debian12)")
    p.add_argument("-a", dest="arch", help="architecture (x86_64)")
    p.add_argument("-p", dest="profile", help="profile (compute, minimal, or your own)")
    p.add_argument("-i", dest="nodebootif", help="the node's boot interface (e.g. eth0), "
                   "written into the initrd as /etc/litefs/nodebootif")
    p.add_argument("-n", dest="netdrivers", help="comma list of kernel modules for the "
                   "network card, added to the initrd (e.g. e1000e,ixgbe)")
    p.add_argument("-m", dest="method", choices=("statelite",),
                   help="provisioning method; only statelite (the default) is built")
    p.add_argument("-k", dest="kernelver", help="kernel version to install (linux-image-"
                   "KERNELVER) and boot, e.g. 6.1.0-28-amd64; default: newest in the image")
    p.add_argument("--permission", default=None,
                   help="mode of /.statelite in the image (default 755)")
    p.add_argument("--dryrun", action="store_true", help="print what would be done, change nothing")
    p.add_argument("--noupdate", action="store_true",
                   help="on a re-run, leave the packages as they are (no apt-get update)")
    p.add_argument("--mirror", default=None,
                   help=f"Debian archive URL (default: linuximage.pkgdir, else {build.DEFAULT_MIRROR})")
    add_db_option(p)
    p.add_argument("imagename", nargs="?", help="osimage name (default <os>-<arch>-statelite-<profile>)")
    return p


def _row(engine: Engine, table: str, key: str, value: str) -> dict[str, str | None]:
    t = TABLES[table]
    with engine.connect() as conn:
        r = conn.execute(select(t).where(t.c[key] == value, active(t))).mappings().first()
    return dict(r) if r is not None else {}


def _val(row: dict[str, str | None], col: str) -> str:
    return (row.get(col) or "").strip()


def _profile_file(explicit: str, dirs: list[Path], profile: str, osver: str, arch: str,
                  ext: str, what: str, executable: bool = False) -> Path | None:
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise GenimageError(f"linuximage.{what} {explicit} does not exist: fix the "
                                f"osimage or create the file")
        return p
    return genimage.find_profile_file(dirs, profile, osver, arch, ext, executable)


def resolve(args: object, engine: Engine) -> tuple[build.Spec, dict[str, str]]:
    """The build spec and the table values to write back, from the command line and tables."""
    image = getattr(args, "imagename", None)
    osver, arch, profile = (getattr(args, n) for n in ("osver", "arch", "profile"))
    orow = _row(engine, "osimage", "imagename", image) if image else {}
    lrow = _row(engine, "linuximage", "imagename", image) if image else {}
    osver = osver or _val(orow, "osvers")
    arch = arch or _val(orow, "osarch")
    profile = profile or _val(orow, "profile")
    if not (osver and arch and profile):
        raise UsageError(f"give -o OSVER -a ARCH -p PROFILE (image {image!r} is not in the "
                         "osimage table)" if image else "give -o OSVER -a ARCH -p PROFILE, or an "
                         "image name from the osimage table")
    if osver not in genimage.SUPPORTED_OS:
        raise GenimageError(f"unknown OS version {osver!r}: genimage builds "
                            f"{', '.join(genimage.SUPPORTED_OS)}")
    if arch not in genimage.SUPPORTED_ARCH:
        raise GenimageError(f"unknown architecture {arch!r}: genimage builds "
                            f"{', '.join(genimage.SUPPORTED_ARCH)}")
    image = image or f"{osver}-{arch}-statelite-{profile}"
    installdir = _val(_row(engine, "site", "key", "installdir"), "value") or "/install"
    dirs = [Path(installdir) / "custom/netboot" / PLATFORM, SHIPPED_DIR]
    pkglist = _profile_file(_val(lrow, "pkglist"), dirs, profile, osver, arch, "pkglist",
                            "pkglist")
    if pkglist is None:
        names = ", ".join(str(d) for d in dirs)
        raise GenimageError(f"unknown profile {profile!r}: no {profile}.{osver}.{arch}.pkglist "
                            f"(or shorter name) in {names}; create one or pick compute/minimal")
    other = _profile_file(_val(lrow, "otherpkglist"), dirs, profile, osver, arch,
                          "otherpkgs.pkglist", "otherpkglist")
    exlist = _profile_file(_val(lrow, "exlist"), dirs, profile, osver, arch, "exlist", "exlist")
    post_value = _val(lrow, "postinstall")
    if not post_value:
        found = genimage.find_profile_file(dirs, profile, osver, arch, "postinstall", True)
        post_value = str(found) if found else ""
    post = genimage.parse_postinstall(post_value)
    for item in post:
        if not os.access(item[0], os.X_OK):
            raise GenimageError(f"postinstall script {item[0]} is missing or not executable: "
                                f"chmod +x it or fix linuximage.postinstall")
    otherpkgdir_s = _val(lrow, "otherpkgdir") or f"{installdir}/post/otherpkgs/{osver}/{arch}"
    pkgdir = _val(lrow, "pkgdir")
    mirror = getattr(args, "mirror", None) or (
        pkgdir if pkgdir.startswith(("http://", "https://", "file:/")) else build.DEFAULT_MIRROR)
    rootimgdir = Path(_val(lrow, "rootimgdir") or f"{installdir}/netboot/{osver}/{arch}/{profile}")
    permission = getattr(args, "permission", None) or _val(lrow, "permission") or "755"
    try:
        if not 0 <= int(permission, 8) <= 0o7777:
            raise ValueError
    except ValueError:
        raise UsageError(f"--permission {permission!r}: give an octal mode such as 755") from None
    netdrivers_s = getattr(args, "netdrivers", None) or _val(lrow, "netdrivers")
    kernelver = getattr(args, "kernelver", None) or _val(lrow, "kernelver") or None
    nodebootif = getattr(args, "nodebootif", None) or _val(lrow, "nodebootif") or None
    spec = build.Spec(
        image=image, osver=osver, arch=arch, profile=profile, rootimgdir=rootimgdir,
        pkglist=genimage.parse_pkglist(pkglist),
        otherpkgs=genimage.parse_otherpkgs(other) if other else [],
        otherpkgdir=Path(otherpkgdir_s), postinstall=post,
        exlist=genimage.parse_exlist(exlist) if exlist else None,
        kernelver=kernelver, netdrivers=[m for m in netdrivers_s.split(",") if m.strip()],
        nodebootif=nodebootif, permission=permission, mirror=mirror,
        noupdate=bool(getattr(args, "noupdate", False)),
    )
    spec.env = {
        "IMG_ARCH": arch, "IMG_NAME": image, "IMG_OSVER": osver, "IMG_PROFILE": profile,
        "IMG_KERNELVERSION": kernelver or "", "IMG_PKGLIST": str(pkglist),
        "IMG_PKGDIR": mirror, "IMG_OTHERPKGLIST": str(other or ""),
        "IMG_OTHERPKGDIR": otherpkgdir_s, "IMG_ROOTIMGDIR": str(rootimgdir / "rootimg"),
    }
    # Written back: the command-line values (reference §7.4) and where the image is. Profile
    # files found by the search order are not pinned in linuximage, so a custom file added
    # (or removed) later takes effect on the next run, as the search order promises.
    back = {
        "osimage.profile": profile, "osimage.imagetype": "linux",
        "osimage.provmethod": "statelite", "osimage.osvers": osver, "osimage.osarch": arch,
        "linuximage.rootimgdir": str(rootimgdir), "linuximage.permission": permission,
    }
    if not _val(orow, "rootfstype"):
        back["osimage.rootfstype"] = "nfs"
    for col, value in (("netdrivers", netdrivers_s), ("kernelver", kernelver),
                       ("nodebootif", nodebootif)):
        if value:
            back[f"linuximage.{col}"] = str(value)
    return spec, back


def write_back(engine: Engine, image: str, values: dict[str, str]) -> None:
    """osimage/linuximage rows of ``image`` (inserted when missing), as xCAT's genimage."""
    tabledata.chtab(engine, {"imagename": image}, [f"{k}={v}" for k, v in values.items()])


def _body(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    engine = db.open_engine(args.db)
    try:
        db.require_schema(engine)
        spec, back = resolve(args, engine)
        fresh = not (spec.rootimg / "usr").is_dir()
        phases = genimage.plan_phases(
            fresh=fresh, noupdate=spec.noupdate, otherpkgs=bool(spec.otherpkgs),
            postinstall=bool(spec.postinstall), exlist=spec.exlist is not None)
        if args.dryrun:
            print(f"genimage: image {spec.image} in {spec.rootimgdir} "
                  f"({'new build' if fresh else 're-run on the existing rootimg'}), phases:")
            for i, ph in enumerate(phases, 1):
                print(f"  {i}. {ph}{_detail(spec, ph, fresh)}")
            return 0
        progress = Progress(phases)
        kver = build.build(spec, phases, progress)
        with progress.phase("tables", spec.image):
            write_back(engine, spec.image, back)
    finally:
        engine.dispose()
    print(f"genimage: {spec.image} built in {progress.total():.1f}s: {spec.rootimg}, kernel "
          f"{kver}, {spec.rootimgdir / 'initrd-statelite.gz'}")
    return 0


def _detail(spec: build.Spec, phase: str, fresh: bool) -> str:
    if phase == "debootstrap":
        return f": debootstrap --variant=minbase {genimage.SUPPORTED_OS[spec.osver]} {spec.mirror}"
    if phase == "copy":
        return f": cp -a --reflink=auto {spec.rootimg} {spec.rootimgdir / build.NEW}"
    if phase == "packages":
        if fresh:
            return f": install {' '.join(spec.install_list)}"
        install, purge = build.package_changes(spec, spec.rootimg, False)
        return f": install {' '.join(install) or '(nothing)'}; purge {' '.join(purge) or '(nothing)'}"
    if phase == "postinstall":
        return ": " + ", ".join(" ".join(p) for p in spec.postinstall)
    if phase == "statelite":
        return f": /.statelite mode {spec.permission}"
    if phase == "initrd":
        return f": kernel {spec.kernelver or '(newest in the image)'}, extra modules " \
               f"{','.join(spec.netdrivers) or '(none)'}"
    if phase == "tables":
        return f": osimage/linuximage {spec.image}"
    return ""


def main(argv: list[str] | None = None) -> int:
    return run_main("genimage", _body, argv)


if __name__ == "__main__":
    sys.exit(main())
