"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by Playwright.

Without Chromium or Playwright the tests that need them are skipped, except under CI
(``CI=true``), where that is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = os.environ.get("LOCAL_BRIDGE_TEST_CHROMIUM", "/usr/bin/chromium")
#: What a sandbox-less machine with no route to the internet needs (no background fetches,
#: which this network refuses, many at a time).
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def unavailable(reason: str, what: str = "browser tests") -> None:
    """Missing tooling: skipped, except under CI, where it is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the {what}")
    pytest.skip(f"{reason}: {what} skipped")


@contextmanager
def chromium(*extra_args: str) -> Iterator[Any]:
    """A started headless Chromium (a Playwright ``Browser``), closed on exit."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:
        unavailable(f"Playwright is not installed ({exc})")
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"no Chromium at {CHROMIUM}")
    playwright = sync_playwright().start()
    try:
        instance = playwright.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra_args]
        )
    except Error as exc:
        playwright.stop()
        unavailable(f"Chromium at {CHROMIUM} does not start ({exc.message.splitlines()[0]})")
    try:
        yield instance
    finally:
        instance.close()
        playwright.stop()
