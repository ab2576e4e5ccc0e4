"""Worker for the create+write measurement: ``python _fsbench_create.py DIR NDIRS PER_DIR``.

Makes ``NDIRS`` directories under DIR and writes ``PER_DIR`` small files into each (open,
write, close, as an unpacking or logging workload does), then prints the seconds it took.
Run as its own process so the interpreter start is not timed and a hung mount cannot wedge
the benchmark itself.
"""

from __future__ import annotations

import os
import sys
import time


def main() -> None:
    root, n_dirs, per_dir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    blob = os.urandom(8192)
    t0 = time.perf_counter()
    i = 0
    for d in range(n_dirs):
        dd = os.path.join(root, f"d{d:03d}")
        os.mkdir(dd)
        for _ in range(per_dir):
            fd = os.open(os.path.join(dd, f"f{i:05d}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, blob[: 64 + (i * 7919) % 8128])
            os.close(fd)
            i += 1
    print(f"{time.perf_counter() - t0:.6f}")


if __name__ == "__main__":
    main()
