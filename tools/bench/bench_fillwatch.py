"""Benchmark: what the tmpfs-full check costs a FUSE write (litefs.fs.fillwatch).

``python tools/bench/bench_fillwatch.py`` times, in one run, a 4 KiB ``os.pwrite`` to a file
in /dev/shm (the baseline: the backing write every FUSE write does) and the same write with
``FillWatch.tick()`` before it, as the daemon does, and prints the ratio. ``tick`` looks at
the filesystem (``fstatvfs``) at most once a second, so its cost is one clock read.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from litefs.fs.fillwatch import FillWatch


def run(n: int) -> tuple[float, float]:
    fd, path = tempfile.mkstemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        watch = FillWatch.for_fd("tmpfs", fd)
        buf = b"x" * 4096
        t0 = time.perf_counter()
        for i in range(n):
            os.pwrite(fd, buf, (i % 256) * 4096)
        base = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(n):
            watch.tick()
            os.pwrite(fd, buf, (i % 256) * 4096)
        checked = time.perf_counter() - t0
        return base, checked
    finally:
        os.close(fd)
        os.unlink(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=200_000, help="writes per measurement (default 200000)")
    p.add_argument("--repeat", type=int, default=5, help="runs; the median is reported (default 5)")
    args = p.parse_args()
    runs = sorted((run(args.n) for _ in range(args.repeat)), key=lambda r: r[1] / r[0])
    base, checked = runs[len(runs) // 2]
    print(f"pwrite 4 KiB:          {base / args.n * 1e9:8.0f} ns/write (baseline)")
    print(f"tick + pwrite 4 KiB:   {checked / args.n * 1e9:8.0f} ns/write  ratio {checked / base:.3f}")


if __name__ == "__main__":
    main()
