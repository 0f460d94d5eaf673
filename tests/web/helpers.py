"""Helpers for the browser tests: screenshots at the widths people use, and logging in."""
from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings
from playwright.sync_api import Page, expect

CHROMIUM = "/usr/bin/chromium"  # Debian's package (make test installs it); playwright never downloads a browser here
CHROMIUM_ARGS = ["--no-sandbox"]  # the tests run as root
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SCREENSHOT_DIR = Path(settings.VAR_DIR) / "artifacts" / "screenshots"  # var/ is git-ignored

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def save_screenshots(page: Page, name: str, sizes: tuple[dict, ...] = (DESKTOP, PHONE)) -> list[Path]:
    """Save full-page PNGs of the current page as var/artifacts/screenshots/<name>-<width>.png.

    The viewport is resized for each shot and put back afterwards, so a test can go on.
    """
    if not _NAME.match(name):
        raise ValueError(f"screenshot name {name!r}: use lower-case letters, digits, '-' and '_'")
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    original = page.viewport_size
    paths = []
    try:
        for size in sizes:
            page.set_viewport_size(size)
            path = SCREENSHOT_DIR / f"{name}-{size['width']}.png"
            page.screenshot(path=str(path), full_page=True)
            paths.append(path)
    finally:
        if original:
            page.set_viewport_size(original)
    return paths


def admin_login(page: Page, base_url: str, *, username: str, password: str) -> None:
    """Fill and submit the Django admin login form (no assertion on the outcome)."""
    page.goto(f"{base_url}/admin/login/")
    expect(page.locator("#login-form")).to_be_visible()
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.locator("#login-form [type=submit]").click()
    page.wait_for_load_state()
