"""Pages in a real Chromium: accessible, no console errors, no third-party requests, 320 px wide."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page

pytestmark = pytest.mark.browser

PAGES = ["/", "/no-such-page"]


def _watch(page: Page) -> tuple[list[str], list[str]]:
    errors: list[str] = []
    hosts: list[str] = []
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: hosts.append(urlsplit(request.url).netloc))
    return errors, hosts


@pytest.mark.parametrize("path", PAGES)
def test_page_is_accessible_and_self_contained(page: Page, live_server: str, path: str) -> None:
    errors, hosts = _watch(page)
    page.goto(live_server + path)
    assert page.locator("h1").count() == 1
    assert page.evaluate("getComputedStyle(document.body).fontFamily")  # the stylesheet loaded
    results = Axe().run(page)
    assert results.violations_count == 0, results.generate_report()
    assert not [e for e in errors if "404" not in e], errors  # CSP violations show up here
    assert set(hosts) == {urlsplit(live_server).netloc}


def test_no_horizontal_scrolling_at_320_px(page: Page, live_server: str) -> None:
    page.set_viewport_size({"width": 320, "height": 640})
    page.goto(live_server + "/")
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0


def test_stylesheet_is_applied_under_the_strict_csp(page: Page, live_server: str) -> None:
    page.goto(live_server + "/")
    header_background = page.evaluate(
        "getComputedStyle(document.querySelector('.site-header')).backgroundColor"
    )
    assert header_background == "rgb(29, 58, 95)"


def test_skip_link_is_the_first_tab_stop(page: Page, live_server: str) -> None:
    page.goto(live_server + "/")
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.textContent")
    assert focused == "Skip to main content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
