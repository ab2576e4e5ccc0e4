"""Shared test configuration. Area fixtures live in tests/*util.py modules, imported where used."""

from __future__ import annotations

import os

import pytest

# The real-mount fixtures (layers, litefs_mount) for every test module, without re-imports.
pytest_plugins = ["tests.fsutil"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Real mounts and namespaces need root; say so plainly instead of failing obscurely.
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (real FUSE mounts / namespaces)")
    for item in items:
        if any(item.get_closest_marker(m) for m in ("fuse", "netns", "qemu")):
            item.add_marker(skip)
