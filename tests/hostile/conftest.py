"""Hostile-input suites: they attack the real server, so every test here is marked ``e2e``."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items):
    # the hook sees the whole session's items: mark only this folder's
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.e2e)
