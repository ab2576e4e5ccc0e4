"""genimage, the pure part: profile-file search order, pkglist/otherpkgs parsing, the phase plan.

Everything here reads files but changes nothing, so it is unit-tested without a chroot; the
building itself (debootstrap, apt, postinstall, swap) is in :mod:`litefs.tools.genimage_cmd`.
Formats follow reference §7.4 (xCAT imgutils ``get_package_names`` / ``get_profile_def_filename``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from litefs.errors import LitefsError

#: OS versions genimage can build, with the Debian suite debootstrap needs.
SUPPORTED_OS = {"debian12": "bookworm"}
#: xCAT architecture name -> Debian architecture name.
SUPPORTED_ARCH = {"x86_64": "amd64"}
#: How deep ``#INCLUDE:file#`` may nest; xCAT has no bound, a bound turns a typo into an error.
MAX_INCLUDE_DEPTH = 10

_INCLUDE = re.compile(r"^#INCLUDE:(.+)#$")


class GenimageError(LitefsError):
    """genimage cannot build the image: bad OS/arch/profile, package list, postinstall."""


def os_candidates(osver: str) -> list[str]:
    """Shortened OS versions tried after ``osver`` itself, as xCAT does.

    ``rhels7.9`` -> ``rhels7.8 ... rhels7.0, rhels7``; ``debian12`` has none (no minor part).
    """
    m = re.fullmatch(r"(\D+\d+)\.(\d+)", osver)
    if not m:
        return []
    base, minor = m.group(1), int(m.group(2))
    return [f"{base}.{i}" for i in range(minor - 1, -1, -1)] + [base]


def profile_names(profile: str, osver: str, arch: str, ext: str) -> list[str]:
    """File names tried in one directory, most specific first (reference §7.4)."""
    shorter = os_candidates(osver)
    names = [f"{profile}.{osver}.{arch}.{ext}"]
    names += [f"{profile}.{o}.{arch}.{ext}" for o in shorter]
    names.append(f"{profile}.{arch}.{ext}")
    names.append(f"{profile}.{osver}.{ext}")
    names += [f"{profile}.{o}.{ext}" for o in shorter]
    names.append(f"{profile}.{ext}")
    return names


def find_profile_file(dirs: list[Path], profile: str, osver: str, arch: str, ext: str,
                      executable: bool = False) -> Path | None:
    """The first existing file: every name in the custom dir before any in the shipped dir."""
    import os

    for d in dirs:
        for name in profile_names(profile, osver, arch, ext):
            p = d / name
            if p.is_file() and (not executable or os.access(p, os.X_OK)):
                return p
    return None


def _lines(path: Path, depth: int, stack: tuple[Path, ...]) -> list[tuple[str, Path]]:
    """Meaningful lines of ``path`` with ``#INCLUDE:file#`` expanded, each with its source file.

    Directives that are comments to pkglist (``#NEW_INSTALL_LIST#``, ``#ENV:...#``) are kept so
    that the otherpkgs parser sees them; plain ``#`` comments and blank lines are dropped.
    """
    real = path.resolve()
    if real in stack:
        chain = " -> ".join(str(p) for p in (*stack, real))
        raise GenimageError(f"#INCLUDE# cycle: {chain}; remove one of the includes")
    if depth > MAX_INCLUDE_DEPTH:
        raise GenimageError(f"{path}: #INCLUDE# nested deeper than {MAX_INCLUDE_DEPTH}")
    try:
        text = path.read_text()
    except OSError as exc:
        raise GenimageError(f"cannot read package list {path}: {exc.strerror}") from None
    out: list[tuple[str, Path]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        m = _INCLUDE.match(line)
        if m:
            inc = Path(m.group(1).strip())
            if not inc.is_absolute():
                inc = path.parent / inc  # relative to the including file, as xCAT
            out += _lines(inc, depth + 1, (*stack, real))
        elif line == "#NEW_INSTALL_LIST#" or line.startswith("#ENV:"):
            out.append((line, path))
        elif line.startswith("#"):
            continue
        else:
            # Only the first word is the package: trailing text is xCAT's inline comment habit.
            out.append((line.split()[0], path))
    return out


@dataclass
class PkgList:
    """Packages to install and to remove, with the file each one came from (for messages)."""

    install: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    origin: dict[str, Path] = field(default_factory=dict)


def parse_pkglist(path: Path) -> PkgList:
    """A pkglist: one package a line, ``#`` comments, ``#INCLUDE:f#``, ``-pkg`` removes.

    A package both added and removed is removed (the ``-`` wins wherever it appears), so an
    included base list can be trimmed by the including file.
    """
    result = PkgList()
    for line, src in _lines(path, 0, ()):
        if line.startswith("#"):
            continue
        if line.startswith("-"):
            name = line.lstrip("-")
            if name and name not in result.remove:
                result.remove.append(name)
        elif line not in result.install:
            result.install.append(line)
            result.origin.setdefault(line, src)
    result.install = [p for p in result.install if p not in result.remove]
    return result


@dataclass
class Transaction:
    """One otherpkgs install transaction (``#NEW_INSTALL_LIST#`` starts the next)."""

    install: list[str] = field(default_factory=list)
    remove_before: list[str] = field(default_factory=list)
    remove_after: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def parse_otherpkgs(path: Path) -> list[Transaction]:
    """An otherpkgs.pkglist: ``-pkg`` removed before, ``--pkg`` after, ``#ENV:A=b C=d#``."""
    txs = [Transaction()]
    for line, _src in _lines(path, 0, ()):
        tx = txs[-1]
        if line == "#NEW_INSTALL_LIST#":
            if tx.install or tx.remove_before or tx.remove_after:
                txs.append(Transaction())
        elif line.startswith("#ENV:"):
            for pair in line[len("#ENV:"):].rstrip("#").split():
                k, sep, v = pair.partition("=")
                if sep:
                    tx.env[k] = v
        elif line.startswith("--"):
            tx.remove_after.append(line[2:])
        elif line.startswith("-"):
            tx.remove_before.append(line[1:])
        else:
            tx.install.append(line)
    return [t for t in txs if t.install or t.remove_before or t.remove_after]


def parse_postinstall(value: str) -> list[list[str]]:
    """``linuximage.postinstall``: comma list of ``script [args...]``."""
    return [item.split() for item in value.split(",") if item.strip()]


def parse_exlist(path: Path) -> tuple[list[str], list[str]]:
    """(exclude globs, re-include globs) of an exlist: ``+path`` re-includes, ``./`` dropped."""
    exclude: list[str] = []
    include: list[str] = []
    for line, _src in _lines(path, 0, ()):
        if line.startswith("#"):
            continue
        target = include if line.startswith("+") else exclude
        target.append(line.lstrip("+-").removeprefix("./").lstrip("/"))
    return exclude, include


PHASES = ("debootstrap", "copy", "packages", "otherpkgs", "runtime", "postinstall", "exlist",
          "statelite", "initrd", "swap", "tables")


def plan_phases(*, fresh: bool, noupdate: bool, otherpkgs: bool, postinstall: bool,
                exlist: bool) -> list[str]:
    """The phases a run will do, in order. A re-run starts from a copy instead of debootstrap.

    ``--noupdate`` on a re-run leaves the packages as they are (xCAT: "bypass the automatic
    package updating"); the node runtime, postinstall, exlist, statelite and initrd are redone.
    """
    phases = ["debootstrap" if fresh else "copy"]
    if fresh or not noupdate:
        phases.append("packages")
    if otherpkgs and (fresh or not noupdate):
        phases.append("otherpkgs")
    phases.append("runtime")
    if postinstall:
        phases.append("postinstall")
    if exlist:
        phases.append("exlist")
    phases += ["statelite", "initrd", "swap", "tables"]
    return phases
