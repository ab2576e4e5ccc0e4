"""Pure part of the filesystem benchmark: samples, medians, the printed table and the targets.

``Results`` holds every sample taken (seconds, or bytes for RSS) keyed by measurement and
presenter; ``render_table`` prints medians with ratios against native and fuse-overlayfs, and
``evaluate_targets`` checks the issue's speed targets and returns PASS/MISS lines. Nothing
here touches the filesystem, so it is unit-tested directly.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

NATIVE = "native"
OVERLAY = "overlayfs"
FUSE_OVERLAY = "fuse-overlayfs"
LITEFS = "litefs"
BYPASS = "litefs-bypass"
#: --bypass --native-writes: writable rule folders with no lower content bound from their layer
NATIVE_WRITES = "litefs-native"
PRESENTERS: tuple[str, ...] = (NATIVE, OVERLAY, FUSE_OVERLAY, LITEFS, BYPASS, NATIVE_WRITES)

# Measurement keys, in table order. The unit is seconds unless the key says otherwise.
FIND = "find (warm)"
STAT = "find|xargs stat (warm)"
CAT = "cat small files (warm)"
CAT_COLD = "cat small files (cold)"
BIG_COLD = "big file read (cold)"
BIG_WARM = "big file read (warm)"
CREATE = "create+write small (tmpfs rule)"
UNTAR = "untar stdlib (persistent rule)"
RSS_MAIN = "daemon VmHWM after run [MB]"
RSS_WALK = "daemon VmHWM walk {n} [MB]"
CLI_START = "litefs start+imports (mount --help)"
READY = "mount->ready {n} files"
READY_BYPASS = "mount->ready {n} files --bypass"

MB = 1024 * 1024


@dataclass
class Results:
    """Samples per (measurement, presenter); a missing cell means "not measured"."""

    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, key: str, presenter: str, value: float) -> None:
        if key not in self.samples:
            self.samples[key] = {}
            self.order.append(key)
        self.samples[key].setdefault(presenter, []).append(value)

    def median(self, key: str, presenter: str) -> float | None:
        vals = self.samples.get(key, {}).get(presenter)
        return statistics.median(vals) if vals else None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def fmt_value(key: str, v: float | None) -> str:
    if v is None:
        return "-"
    if "[MB]" in key:
        return f"{v / MB:.1f}"
    if v >= 10:
        return f"{v:.1f}s"
    if v >= 1:
        return f"{v:.2f}s"
    return f"{v * 1000:.1f}ms"


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def render_table(res: Results, presenters: Iterable[str] = PRESENTERS) -> str:
    """Medians per presenter, then litefs/native, litefs/fuse-overlayfs and bypass/native."""
    cols = list(presenters)
    head = ["measurement", *cols, "lf/nat", "lf/fovl", "bp/nat", "bp/fovl", "nw/ovl"]
    rows = [head]
    for key in res.order:
        cells = [key] + [fmt_value(key, res.median(key, p)) for p in cols]
        lf, bp = res.median(key, LITEFS), res.median(key, BYPASS)
        nat, fovl = res.median(key, NATIVE), res.median(key, FUSE_OVERLAY)
        cells += [fmt_ratio(ratio(lf, nat)), fmt_ratio(ratio(lf, fovl))]
        cells += [fmt_ratio(ratio(bp, nat)), fmt_ratio(ratio(bp, fovl))]
        cells += [fmt_ratio(ratio(res.median(key, NATIVE_WRITES), res.median(key, OVERLAY)))]
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


@dataclass(frozen=True)
class Check:
    name: str
    value: str
    limit: str
    passed: bool | None  # None: could not be measured in this run

    @property
    def verdict(self) -> str:
        return "n/a" if self.passed is None else ("PASS" if self.passed else "MISS")


def _ratio_check(name: str, r: float | None, limit: float, at_most: bool = True) -> Check:
    if r is None:
        return Check(name, "-", f"{'<=' if at_most else '>='} {limit:.2f}x", None)
    ok = r <= limit if at_most else r >= limit
    return Check(name, f"{r:.2f}x", f"{'<=' if at_most else '>='} {limit:.2f}x", ok)


#: "flat" mount->ready time: the bigger image may cost at most this factor plus slack.
FLAT_FACTOR = 1.25
FLAT_SLACK = 0.05
READY_LIMIT = 0.5
RSS_LIMIT = 60 * MB


def evaluate_targets(res: Results, ready_sizes: list[int], rss_size: int) -> list[Check]:
    """The issue's targets (issue 3, "Benchmarks") as checks against this run's medians."""
    m = res.median
    checks = [
        _ratio_check("rule-covered: warm find+stat <= 1.5x native", ratio(m(STAT, LITEFS), m(STAT, NATIVE)), 1.5),
        _ratio_check(
            "rule-covered: cat small files <= fuse-overlayfs",
            ratio(m(CAT, LITEFS), m(CAT, FUSE_OVERLAY)),
            1.0,
        ),
        # Throughput ratio = native time / litefs time.
        _ratio_check(
            "rule-covered: warm big read >= 0.9x native throughput",
            ratio(m(BIG_WARM, NATIVE), m(BIG_WARM, LITEFS)),
            0.9,
            at_most=False,
        ),
        _ratio_check(
            "tmpfs rule: create+write <= fuse-overlayfs",
            ratio(m(CREATE, LITEFS), m(CREATE, FUSE_OVERLAY)),
            1.0,
        ),
    ]
    for key in (FIND, STAT, CAT, BIG_WARM):
        checks.append(_ratio_check(f"--bypass rule-free: {key} <= 1.05x native", ratio(m(key, BYPASS), m(key, NATIVE)), 1.05))
    for key in (CREATE, UNTAR, CAT, FIND):
        # issue 17's target for tmpfs-family rule folders: within 1.25x of kernel overlayfs
        # (litefs-native reads and writes in the overlay-served folder over the tree)
        checks.append(_ratio_check(f"--native-writes (tmpfs overlay): {key} <= 1.25x overlayfs",
                                   ratio(m(key, NATIVE_WRITES), m(key, OVERLAY)), 1.25))
    for template, pres, label in ((READY, LITEFS, ""), (READY_BYPASS, BYPASS, " --bypass")):
        times = []
        for n in ready_sizes:
            t = m(template.format(n=f"{n:,}"), pres)
            times.append(t)
            checks.append(
                Check(
                    f"{template.format(n=f'{n:,}')} < {READY_LIMIT}s",
                    fmt_value("", t),
                    f"< {READY_LIMIT}s",
                    None if t is None else t < READY_LIMIT,
                )
            )
        if len(times) >= 2 and None not in times:
            lo, hi = times[0], times[-1]
            assert lo is not None and hi is not None
            checks.append(
                Check(
                    f"mount->ready{label} flat {ready_sizes[0]:,} -> {ready_sizes[-1]:,} files",
                    f"{hi / lo:.2f}x",
                    f"<= {FLAT_FACTOR}x+{FLAT_SLACK * 1000:.0f}ms",
                    hi <= lo * FLAT_FACTOR + FLAT_SLACK,
                )
            )
    rss = m(RSS_WALK.format(n=f"{rss_size:,}"), LITEFS)
    checks.append(
        Check(
            f"peak RSS after walking {rss_size:,} files <= 60 MB",
            "-" if rss is None else f"{rss / MB:.1f} MB",
            "<= 60 MB",
            None if rss is None else rss <= RSS_LIMIT,
        )
    )
    return checks


def render_checks(checks: list[Check]) -> str:
    w0 = max(len(c.name) for c in checks)
    w1 = max(len(c.value) for c in checks)
    w2 = max(len(c.limit) for c in checks)
    return "\n".join(f"{c.name.ljust(w0)}  {c.value.rjust(w1)}  {c.limit.ljust(w2)}  {c.verdict}" for c in checks)
