"""The viewer in a headless browser, for tests, benchmarks and screenshots: Debian's Chromium driven by
playwright (which downloads no browser when given ``executable_path``).

The flags keep Chromium off the network (a closed machine refuses its background connections) and draw
WebGL in software (SwiftShader through ANGLE), which is what makes viser's three.js canvas draw with no GPU.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
HIDE_NOTIFICATIONS = "[class*='Notification'] { display: none !important; }"
"""CSS that hides viser's notifications (one says WebGL runs in software: true of this browser only)."""


def find_chromium() -> str | None:
    """Path of Debian's chromium (``apt-get install chromium``), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _open(playwright, url: str, size: tuple[int, int]):
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("no chromium on PATH (apt-get install chromium)")
    browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    page.goto(url)
    return browser, page


def screenshot(url: str, path: str | Path, *, size: tuple[int, int] = (640, 480), settle: float = 5.0,
               hide_notifications: bool = False) -> Path:
    """Save a PNG of the viewer at ``url`` once its canvas is up and connected, after ``settle`` seconds
    (splats are sorted and drawn over a few frames)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser, page = _open(p, url, size)
        try:
            page.wait_for_selector("canvas", timeout=30_000)
            page.wait_for_selector("text=Connected", timeout=30_000)
            if hide_notifications:
                page.add_style_tag(content=HIDE_NOTIFICATIONS)
            time.sleep(settle)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(path))
        finally:
            browser.close()
    return Path(path)


def watch(url: str, stop: threading.Event, size: tuple[int, int] = (640, 480)) -> None:
    """Keep the viewer at ``url`` open in a headless browser until ``stop`` is set."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser, _ = _open(p, url, size)
        stop.wait()
        browser.close()
