"""Browser tests: Debian's chromium, driven by playwright's sync API, against pytest-django's live_server.

Run with the rest of the suite (SQLite pass of `python -m tests.run`), or alone:
`.venv/bin/python -m pytest tests/web` (with a Redis on REDIS_URL like the other tests).

Playwright's sync API keeps an asyncio event loop marked as running in the main thread from
`sync_playwright().start()` until `.stop()`, and Django refuses ORM calls (SynchronousOnlyOperation)
whenever a loop is running in the thread — test code, factories and the database flush after a
live_server test alike. There is no loop for the ORM to clash with (it is idle between playwright
calls), so the `browser` fixture sets DJANGO_ALLOW_ASYNC_UNSAFE for exactly the lifetime of
Playwright and restores it afterwards. Tests that use the browser run after every other test, so no
other test runs with the check switched off (nor starts a subprocess that inherits the variable:
`manage.py check --deploy` reports it as async.E001).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.web.helpers import CHROMIUM, CHROMIUM_ARGS, DESKTOP

ASYNC_UNSAFE = "DJANGO_ALLOW_ASYNC_UNSAFE"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives Debian's chromium through playwright against live_server (SQLite pass)"
    )


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]):
    """Mark every test that uses the browser `browser`, and run those tests after every other test.

    A wrapper: the marks go on before `-m` selects, and the move comes after every other plugin's
    ordering (pytest-django puts live_server tests before the tests without a database).
    """
    for item in items:
        if _uses_browser(item) and item.get_closest_marker("browser") is None:
            item.add_marker(pytest.mark.browser)
    result = yield
    items[:] = [item for item in items if not _uses_browser(item)] + [item for item in items if _uses_browser(item)]
    return result


def _uses_browser(item: pytest.Item) -> bool:
    return "browser" in getattr(item, "fixturenames", ())


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)")
    previous = os.environ.get(ASYNC_UNSAFE)
    os.environ[ASYNC_UNSAFE] = "true"
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()
        if previous is None:
            os.environ.pop(ASYNC_UNSAFE, None)
        else:
            os.environ[ASYNC_UNSAFE] = previous


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no cookies) and page per test, desktop-sized. The test fails if
    the browser refused anything under the Content Security Policy on any page it showed."""
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(10_000)
    page = context.new_page()
    refused: list[str] = []
    page.on("console", lambda message: refused.append(f"{page.url}: {message.text}")
            if "Content Security Policy" in message.text else None)
    yield page
    context.close()
    assert not refused, "the Content Security Policy refused:\n" + "\n".join(refused)
