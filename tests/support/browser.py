"""Headless Chromium for the page tests (Debian's chromium and chromium-driver through
Selenium): one way to start it, with the flags this machine needs (no sandbox as root,
no background networking on a closed network) and a profile of the test's own."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
#: for a test module or test that needs the browser
needs_chromium = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromedriver are not installed")


def start_chromium(profile: Path, *flags: str) -> Any:
    """A headless Chromium driver with its profile in `profile`, plus `flags` (a window
    size, hidden scrollbars for screenshots); the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        *flags,
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(20)
    return driver
