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


@contextmanager
def launch(*, webgl: bool = True):
    """A headless Chromium (Playwright ``Browser``); skips the test where there is none."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install -e '.[test]')")
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium; .ci/run does it)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, headless=True, args=WEBGL_FLAGS if webgl else NO_WEBGL_FLAGS)
        try:
            yield b
        finally:
            b.close()


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
