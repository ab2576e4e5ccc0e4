"""A node daemon's warnings reach the kernel log (where dmesg and, after switch_root, journald
find them), not only its tmpfs log file: ``litefs mount --kmsg``, as the boot hook runs it."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.fsutil import Layers, Mounter, make_plan, put, wait_for

pytestmark = pytest.mark.fuse


def _dmesg() -> str:
    return subprocess.run(["dmesg"], capture_output=True, text=True).stdout


@pytest.mark.skipif(os.geteuid() != 0 or not os.access("/dev/kmsg", os.W_OK),
                    reason="needs root and a writable /dev/kmsg")
def test_warnings_reach_the_kernel_log(layers: Layers, litefs_mount: Mounter) -> None:
    # A marker that is not a regular file (a planted directory) is ignored with a warning.
    tag = uuid.uuid4().hex[:12]
    put(layers.image, f"var/tmp/{tag}", "image copy\n")
    (layers.tmpfs / "var/tmp" / f".wh.{tag}").mkdir(parents=True)
    m = litefs_mount(make_plan({"/var/tmp/": "tmpfs", "/etc/motd": "tmpfs"}), extra=["--kmsg"],
                     expect_errors=True)
    assert (m.path / "var/tmp" / tag).read_text() == "image copy\n"  # not followed
    wait_for(lambda: tag in _dmesg(), timeout=10)
    line = next(x for x in _dmesg().splitlines() if tag in x)
    assert f"litefs[{m.pid}]:" in line and "not a regular file" in line, line
    # Info lines ("ready: ...") stay in the daemon's own log only.
    assert "ready: " in m.log_text()
    assert not any(f"litefs[{m.pid}]: ready" in x for x in _dmesg().splitlines())


def test_kmsg_record_format(tmp_path: Path) -> None:
    import logging

    from litefs.logs import KMSG_MAX, KmsgHandler

    sink = tmp_path / "kmsg"
    sink.touch()
    h = KmsgHandler(str(sink))
    logger = logging.getLogger("litefs.test-kmsg")
    logger.addHandler(h)
    try:
        logger.error("bad\nthing %s", "x" * 2000)
        logger.warning("quiet")
        logger.info("never")  # below WARNING: the file log's business only
    finally:
        logger.removeHandler(h)
        h.close()
    text = sink.read_text()
    first, second = text.splitlines()
    assert first.startswith(f"<3>litefs[{os.getpid()}]: bad | thing xxx")
    assert len(first) <= KMSG_MAX + 3
    assert second == f"<4>litefs[{os.getpid()}]: quiet"
