"""Fixtures of the hostile tests: their view's layers are ``public_layers`` (a plain uid must
reach the view, or every refusal would be the kernel's), and ``db`` is a SQLite database made
and filled through the commands themselves."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fsutil import Layers
from tests.hostile.test_names_cli import run


@pytest.fixture
def layers(public_layers: Layers) -> Layers:
    return public_layers


@pytest.fixture
def db(tmp_path: Path) -> tuple[str, Path]:
    """``(url, path)`` of a SQLite database after ``litefs db init`` and one chtab."""
    path = tmp_path / "litefs.db"
    url = f"sqlite:///{path}"
    assert run("litefs", "db", "init", url=url).returncode == 0
    assert run("chtab", "node=n01", "nodelist.groups=compute", url=url).returncode == 0
    return url, path
