"""Headless Chromium for the tests of web pages (viewer, gallery, Prefect UI artifacts).

The browser is Debian's ``chromium`` package (``.ci/run`` installs it when missing), driven by
Playwright for Python over its own protocol connection: Playwright's bundled driver needs no
browser download when ``executable_path`` names the system's Chromium. WebGL runs on
SwiftShader (Chromium's CPU implementation), which headless Chromium only enables with
``--enable-unsafe-swiftshader``. Tests that need the browser skip, with the reason, where
Chromium or Playwright is missing.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager

import pytest

WEBGL_FLAGS = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]
NO_WEBGL_FLAGS = ["--disable-webgl", "--disable-3d-apis"]


def chromium_path() -> str | None:
    env = os.environ.get("DEPTHCRAFT_CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        p = shutil.which(name)
        if p:
            return p
    return None


_PLAYWRIGHT = None


def _playwright():
    """One Playwright driver per test process (its sync API allows only one at a time)."""
    global _PLAYWRIGHT
    if _PLAYWRIGHT is None:
        import atexit

        from playwright.sync_api import sync_playwright

        _PLAYWRIGHT = sync_playwright().start()
        atexit.register(_PLAYWRIGHT.stop)
    return _PLAYWRIGHT


@contextmanager
def launch(*, webgl: bool = True):
    """A headless Chromium (Playwright ``Browser``); skips the test where there is none."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install -e '.[test]')")
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium; .ci/run does it)")
    b = _playwright().chromium.launch(executable_path=path, headless=True,
                                      args=WEBGL_FLAGS if webgl else NO_WEBGL_FLAGS)
    try:
        yield b
    finally:
        b.close()


def wait_until(page, expression: str, timeout: float = 60.0, poll: float = 0.05):
    """Poll a JavaScript expression until it is truthy; returns its value.

    (Playwright's ``wait_for_function`` evaluates its predicate with ``eval`` inside the page,
    which the pages' Content-Security-Policy refuses; ``evaluate`` goes through the DevTools
    protocol, which it does not.)
    """
    deadline = time.monotonic() + timeout
    while True:
        v = page.evaluate(expression)
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"{expression} still false after {timeout:.0f} s")
        time.sleep(poll)


class PageLog:
    """Console messages, page errors and requests of one page."""

    def __init__(self, page):
        self.console: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.requests: list[str] = []
        page.on("console", lambda m: self.console.append((m.type, m.text)))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("request", lambda r: self.requests.append(r.url))

    def problems(self) -> list[str]:
        return self.errors + [t for kind, t in self.console if kind in ("error", "warning")]
