"""A real headless browser for tests: Debian's ``chromium``, driven by Playwright.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium`` (or
``$ZIBRATO_CHROMIUM``), which ``make test`` installs from Debian when it is missing. A
missing browser fails the test with that hint; it is never skipped.

Use it from a ``conftest.py`` (fixtures are found where they are imported)::

    from browser_support import browser, browser_page  # noqa: F401

* ``browser``: one Chromium per test module, with a fresh profile (Playwright gives every
  launch its own temporary ``--user-data-dir``). Not per session: while Playwright's
  synchronous API runs, the main thread has a running asyncio loop, and the tests of
  other modules that call ``asyncio.run()`` must not find it there.
* ``browser_page``: a :class:`WatchedPage` in a new context (1440 x 1000), closed after the
  test; it records console errors and uncaught exceptions for ``assert_clean()``.
* :func:`save_screenshot`: write a PNG of a page (the whole page by default).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Error,
    Page,
    ViewportSize,
    sync_playwright,
)

CHROMIUM = os.environ.get("ZIBRATO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
VIEWPORT: ViewportSize = {"width": 1440, "height": 1000}
WAIT = 20.0


@dataclass
class WatchedPage:
    """A page and what went wrong in it: console errors, uncaught exceptions."""

    page: Page
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        """Fail if the page logged an error or threw an uncaught exception."""
        assert not self.console_errors, f"console errors: {self.console_errors}"
        assert not self.page_errors, f"uncaught exceptions: {self.page_errors}"

    def wait_until(self, script: str, what: str, timeout: float = WAIT) -> Any:
        """Evaluate ``script`` (a function expression) until it returns something truthy.

        Evaluated through the DevTools protocol, so a strict Content-Security-Policy that
        forbids ``eval`` in the page does not get in the way.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = self.page.evaluate(script)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}; "
                    f"console errors {self.console_errors}, exceptions {self.page_errors}"
                )
            self.page.wait_for_timeout(100)


def save_screenshot(page: Page, path: str | os.PathLike[str], *, full_page: bool = True) -> Path:
    """Write a PNG of ``page`` to ``path`` (parent folders created); return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=full_page)
    return target


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Debian Chromium for the tests of one module."""
    executable = shutil.which(CHROMIUM) or CHROMIUM
    assert os.access(executable, os.X_OK), (
        f"{CHROMIUM} is missing: run `make test` (it installs Debian's chromium) "
        "or set ZIBRATO_CHROMIUM"
    )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=list(CHROMIUM_FLAGS), timeout=60_000
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def browser_page(browser: Browser) -> Iterator[WatchedPage]:
    """A fresh page in its own context; console errors and exceptions are recorded."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(WAIT * 1000)
    page = context.new_page()
    watched = WatchedPage(page)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            watched.console_errors.append(message.text)

    def on_error(error: Error) -> None:
        watched.page_errors.append(str(error))

    page.on("console", on_console)
    page.on("pageerror", on_error)
    try:
        yield watched
    finally:
        context.close()


__all__ = ["WatchedPage", "browser", "browser_page", "save_screenshot"]
