"""Test data for the filesystem benchmark: the small-file tree, the litefs image, the plan.

The same tree (``dNNN/fNNNN`` small files plus ``big.bin``) is built once; the litefs image
holds it twice by hard links, once under a rule-covered directory (``/var/cache/man/bench``,
the cookbook's tmpfs rule) and once under a rule-free one (``/usr/share/bench``, served by
``--bypass``), so every presenter reads the very same inodes. Scale images for the
mount-to-ready measurement hold ``n`` empty files in an OS-like layout. The plan is the
cookbook's RedHat litefile list plus one persistent rule for the untar target.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sysconfig
import time
from pathlib import Path

from litefs.options import normalise_option
from litefs.plan import Plan, Rule

#: view paths the benchmark uses
RULE_TREE = "/var/cache/man/bench"  # under the cookbook's "/var/cache/man/" tmpfs rule
FREE_TREE = "/usr/share/bench"  # no rule at or below /usr: bypass binds it
CREATE_DIR = "/tmp"  # cookbook "/tmp/" tmpfs rule
UNTAR_DIR = "/var/spool/bench"  # the persistent rule added for the benchmark
UNTAR_RULE = ("/var/spool/bench/", "persistent")

REDHAT_CSV = Path(__file__).resolve().parents[2] / "litefs" / "data" / "litefile-redhat.csv"


def small_size(i: int) -> int:
    """Deterministic small-file sizes between 64 B and ~8 KiB (mean ~4 KiB)."""
    return 64 + (i * 7919) % 8128


def build_tree(root: Path, n_dirs: int, per_dir: int, big_size: int) -> None:
    """``root/dNNN/fNNNN`` small files and ``root/big.bin`` (non-zero data, really written)."""
    root.mkdir(parents=True)
    blob = os.urandom(1 << 20)
    i = 0
    for d in range(n_dirs):
        dd = root / f"d{d:03d}"
        dd.mkdir()
        for _ in range(per_dir):
            (dd / f"f{i:05d}").write_bytes(blob[: small_size(i)])
            i += 1
    with open(root / "big.bin", "wb") as f:
        left = big_size
        while left > 0:
            n = min(left, len(blob))
            f.write(blob[:n])
            left -= n


def tree_files(n_dirs: int, per_dir: int) -> list[str]:
    """Relative paths of the small files, in creation order."""
    return [f"d{i // per_dir:03d}/f{i:05d}" for i in range(n_dirs * per_dir)]


def redhat_rules() -> list[tuple[str, str]]:
    """The cookbook's RedHat litefile rows as ``(file, option)``."""
    out = []
    with open(REDHAT_CSV, newline="") as f:
        for row in csv.reader(f, skipinitialspace=True):
            if not row or row[0].startswith("#"):
                continue
            out.append((row[1].strip(), normalise_option(row[2] if len(row) > 2 else None)))
    return out


def bench_plan() -> Plan:
    rows = [*redhat_rules(), UNTAR_RULE]
    rules = sorted(
        (Rule(path=p.rstrip("/") or "/", option=o, is_dir=p.endswith("/"), image="ALL") for p, o in rows),
        key=lambda r: r.path,
    )
    return Plan(image="bench", rules=tuple(rules), node="bench01")


def build_skeleton(image: Path, plan: Plan) -> None:
    """What an OS image has where the rules point: the listed directories and files."""
    for rule in plan.rules:
        p = image / rule.path.lstrip("/")
        if rule.is_dir:
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(f"# {rule.path} from the image\n")
    for d in ("usr/bin", "usr/lib", "usr/share/doc", "etc/sysconfig", "var/lib/rpm"):
        (image / d).mkdir(parents=True, exist_ok=True)


def build_image(image: Path, tree: Path, plan: Plan) -> None:
    """The litefs image: skeleton plus the tree hard-linked at RULE_TREE and FREE_TREE."""
    build_skeleton(image, plan)
    for view in (RULE_TREE, FREE_TREE):
        dest = image / view.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-al", str(tree), str(dest)], check=True)


def build_scale_image(image: Path, n_files: int, plan: Plan) -> float:
    """An OS-like image with ``n_files`` empty files, 100 per directory: 90% under ``/usr``
    (rule-free), 10% under ``/var/cache/man`` (rule-covered). Returns the build time."""
    t0 = time.perf_counter()
    build_skeleton(image, plan)
    per_dir = 100
    for d in range((n_files + per_dir - 1) // per_dir):
        top = "var/cache/man" if d % 10 == 9 else ("usr/share" if d % 2 else "usr/lib")
        dd = image / top / f"pkg{d // 100:04d}" / f"d{d:05d}"
        dd.mkdir(parents=True, exist_ok=True)
        for k in range(min(per_dir, n_files - d * per_dir)):
            os.close(os.open(dd / f"f{k:03d}", os.O_WRONLY | os.O_CREAT, 0o644))
    return time.perf_counter() - t0


def make_tarball(dest: Path) -> int:
    """A tarball of this Python's stdlib (no tests, caches or site-packages); returns its
    member count."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    subprocess.run(
        [
            "tar", "-cf", str(dest), "-C", str(stdlib.parent),
            "--exclude=__pycache__", "--exclude=site-packages", "--exclude=test",
            "--exclude=idlelib", "--exclude=config-*", stdlib.name,
        ],
        check=True,
    )  # fmt: skip
    out = subprocess.run(["tar", "-tf", str(dest)], check=True, capture_output=True, text=True).stdout
    return len(out.splitlines())


def build_fixture(work: Path, n_dirs: int, per_dir: int, big_size: int, tmpfs_name: str) -> int:
    """What every filesystem bench measures, under ``work``: a scratch tmpfs (``tmpfs``), the
    tree (``tree``), the litefs image and its plan (``image``, ``plan.json``), the stdlib
    tarball (``stdlib.tar``) and the NUL-separated list of small files (``catlist``).
    Returns the tarball's member count."""
    tmpfs = work / "tmpfs"
    tmpfs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=50%", tmpfs_name, str(tmpfs)], check=True)
    build_tree(work / "tree", n_dirs, per_dir, big_size)
    plan = bench_plan()
    (work / "plan.json").write_text(plan.to_json())
    build_image(work / "image", work / "tree", plan)
    members = make_tarball(work / "stdlib.tar")
    (work / "catlist").write_bytes(b"\0".join(f.encode() for f in tree_files(n_dirs, per_dir)))
    return members
