"""The real headless Chromium the page tests drive (Debian's, through Playwright), set up in one place."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# CI sets this (``.ci/run``): there a missing browser is a failure, on a developer machine a skip.
REQUIRE_BROWSER = os.environ.get("DEEPFAKE_DETECTOR_REQUIRE_BROWSER") == "1"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium_page(profile: Path, *, width: int, height: int = 900, **options) -> Iterator:
    """A page in a fresh headless Chromium profile; skips the test (fails it on CI) without a browser.

    ``options`` go to Playwright's ``launch_persistent_context`` (``offline=True``, say).
    """
    sync_api = pytest.importorskip("playwright.sync_api", reason="the dev extra is not installed")
    if CHROMIUM is None:
        message = "Debian's chromium is not installed (apt-get install chromium chromium-driver)"
        if REQUIRE_BROWSER:
            pytest.fail(message)
        pytest.skip(message)
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": width, "height": height},
            **options,
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()
