"""The fixtures of the pytest plugin's tests, loaded by them with ``pytest_plugins``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .plugin_helpers import drop_kept_templates, make_user_project


@pytest.fixture
def user_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``make_user_project`` in pytester's folder; its kept templates dropped afterwards."""
    root = make_user_project(pytester.path, monkeypatch)
    try:
        yield root
    finally:
        drop_kept_templates(root)
