"""The patient pages in a real Chromium: keyboard only, errors, languages, embedding, withdrawal,
no JavaScript, 320 px wide, no third-party requests, and axe-core in English and Spanish.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from axe_playwright_python.sync_playwright import Axe
from flask import Flask
from playwright.sync_api import Browser, Frame, FrameLocator, Page, expect
from sqlalchemy import select
from werkzeug.serving import make_server

from intake.extensions import db
from intake.models import Submission
from tests.conftest import AppFactory
from tests.patient_helpers import valid_answers

pytestmark = pytest.mark.browser

FORM_HEADING = {
    "en": "Find out about cancer clinical trials",
    "es": "Infórmese sobre los ensayos clínicos de cáncer",
}
THANKS = {"en": "Thank you. We have your details.", "es": "Gracias. Recibimos sus datos."}
WITHDRAWN = {"en": "Your authorization is withdrawn", "es": "Se retiró su autorización"}
UNDER_18 = "The patient is under 18"
SEND = "form .button[type=submit]"
LANGUAGES = ("en", "es")


# ---------------------------------------------------------------------------- helpers


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def fill_form(page: Page | FrameLocator, answers: dict[str, str]) -> None:
    """Fill in the form quickly (pointer-free, but not keystroke by keystroke)."""
    for name, value in answers.items():
        if not value:
            continue
        if name in {"filler", "contact_method"}:
            page.locator(f"#{name}-{value}").check()
        elif name in {"cancer_type", "country"}:
            page.locator(f"#{name}").select_option(value)
        elif name == "agree":
            page.locator("#agree").check()
        else:
            page.locator(f"#{name}").fill(value)


def submit_valid_form(page: Page, base: str, lang: str = "en", **overrides: str) -> dict[str, str]:
    """Send a valid form; return the reference and withdrawal code the confirmation shows."""
    page.goto(f"{base}/?lang={lang}")
    fill_form(page, valid_answers(**overrides))
    page.locator(SEND).click()
    page.wait_for_url("**/confirmation/**")
    return read_codes(page)


def read_codes(page: Page | FrameLocator) -> dict[str, str]:
    reference = page.locator("#reference")
    code = page.locator("#withdrawal-code")
    expect(reference).to_be_visible()
    expect(code).to_be_visible()
    return {"reference": reference.inner_text(), "code": code.inner_text()}


def focused_id(page: Page) -> str:
    return str(page.evaluate("document.activeElement && document.activeElement.id"))


def tab_to(page: Page, expected: str, key: str = "Tab") -> None:
    """Press Tab (or Shift+Tab) once; the focus must land on the element with id ``expected``."""
    page.keyboard.press(key)
    assert focused_id(page) == expected, f"{key} went to #{focused_id(page)}, not #{expected}"


@pytest.fixture(autouse=True)
def _fail_fast(request: pytest.FixtureRequest) -> None:
    """Everything here answers in well under a second; don't wait 30 s to say it did not."""
    if "page" in request.fixturenames:
        request.getfixturevalue("page").set_default_timeout(10_000)


@pytest.fixture
def requests_seen(page: Page) -> list[str]:
    """Every URL the page asks for, from the first request on."""
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    return urls


@pytest.fixture
def console_errors(page: Page) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


@contextmanager
def serve(app: Flask, host_name: str = "127.0.0.1") -> Iterator[str]:
    """Another live server for an app with its own configuration; yields its origin."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host_name}:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


class HostSite:
    """A stand-in for a news site that embeds the form: static pages on their own origin."""

    def __init__(self, host_name: str) -> None:
        self.pages: dict[str, str] = {}
        pages = self.pages

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = pages.get(self.path, "").encode()
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.origin = f"http://{host_name}:{self.server.server_address[1]}"

    def article(self, path: str, frame_src: str) -> str:
        self.pages[path] = (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Article</title>'
            "</head><body><h1>An article about cancer</h1>"
            f'<iframe src="{frame_src}" title="Clinical trial interest form" '
            'width="640" height="900"></iframe></body></html>'
        )
        return self.origin + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def host_sites() -> Iterator[Callable[[str], HostSite]]:
    started: list[HostSite] = []

    def start(host_name: str) -> HostSite:
        site = HostSite(host_name)
        started.append(site)
        return site

    yield start
    for site in started:
        site.close()


# ---------------------------------------------------------------------------- keyboard only


def test_the_form_can_be_completed_with_the_keyboard_alone(
    page: Page, live_server: str, requests_seen: list[str], console_errors: list[str]
) -> None:
    page.goto(live_server + "/")
    tab_to(page, "")  # the skip link (it has no id) ...
    assert page.evaluate("document.activeElement.className") == "skip-link"
    page.keyboard.press("Enter")  # ... takes the focus to the main content
    assert focused_id(page) == "main"

    tab_to(page, "filler-self")  # no radio chosen yet: Tab lands on the first one
    page.keyboard.press("ArrowDown")  # arrows move through the radios and choose
    assert page.locator("#filler-parent").is_checked()
    page.keyboard.press("ArrowUp")
    assert page.locator("#filler-self").is_checked()
    page.keyboard.press("Space")
    assert page.locator("#filler-self").is_checked()

    tab_to(page, "cancer_type")  # the representative's question stays hidden and skipped
    page.keyboard.type("Breast c")  # type-ahead in the closed select
    assert page.locator("#cancer_type").input_value() == "breast"

    tab_to(page, "birth_day")  # "Tell us more" appears only for "Other / not sure"
    page.keyboard.type("14")
    tab_to(page, "birth_month")
    page.keyboard.type("7")
    tab_to(page, "birth_year")
    page.keyboard.type("1968")
    tab_to(page, "full_name")
    page.keyboard.type("Ana Keyboard")
    tab_to(page, "email")
    page.keyboard.type("ana.keyboard@example.org")
    tab_to(page, "phone")
    tab_to(page, "postal_code")
    page.keyboard.type("94110")
    tab_to(page, "country")
    assert page.locator("#country").input_value() == "US"
    tab_to(page, "contact_method-email")
    page.keyboard.press("Space")
    tab_to(page, "agree")
    page.keyboard.press("Space")
    tab_to(page, "signature")
    page.keyboard.type("Ana Keyboard")
    tab_to(page, "agree", key="Shift+Tab")  # back, to check the box took
    assert page.locator("#agree").is_checked()
    tab_to(page, "signature")
    page.keyboard.press("Enter")  # Enter in a text field sends the form (not the language switch)

    page.wait_for_url("**/confirmation/**")
    expect(page.locator("h1")).to_have_text(THANKS["en"])
    codes = read_codes(page)
    assert len(codes["reference"]) == 9
    assert len(codes["code"]) == 14
    assert not console_errors, (console_errors, "\n".join(requests_seen))
    assert {origin_of(url) for url in requests_seen} == {live_server}


# ---------------------------------------------------------------------------- errors


def test_error_summary_links_lead_to_their_fields(page: Page, live_server: str) -> None:
    page.goto(live_server + "/")
    fill_form(page, valid_answers(email="not-an-email", birth_year=""))
    page.locator(SEND).click()

    summary = page.locator("#error-summary")
    expect(summary).to_be_visible()
    expect(summary).to_be_focused()  # the summary takes the focus first (intake.js)
    links = summary.locator("a")
    assert links.count() == 2

    # A click on the birthday problem focuses the first date part left empty.
    links.nth(0).click()
    expect(page.locator("#birth_year")).to_be_focused()
    assert _in_view(page, "#birth_year")
    assert _in_view(page, "#birthday-error")  # the question and its problem, not just the box
    assert _in_view(page, "#birthday-hint")
    page.keyboard.type("1968")

    # From the keyboard: Tab into the summary, Enter on the email problem.
    page.locator("#error-summary").focus()
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.getAttribute('href')") == "#email"
    page.keyboard.press("Enter")
    expect(page.locator("#email")).to_be_focused()
    assert _in_view(page, "label[for=email]")
    assert page.locator("#email").input_value() == "not-an-email"  # what was typed is kept
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("ana.fixed@example.org")

    page.locator(SEND).click()
    page.wait_for_url("**/confirmation/**")
    read_codes(page)


def _in_view(page: Page, selector: str) -> bool:
    return bool(
        page.eval_on_selector(
            selector,
            "e => { const r = e.getBoundingClientRect();"
            " return r.top >= 0 && r.bottom <= window.innerHeight; }",
        )
    )


def test_an_under_18_patient_needs_a_parent_or_representative(page: Page, live_server: str) -> None:
    day, month, year = "1", "1", str(datetime.now(UTC).year - 10)  # a child of 9 or 10
    page.goto(live_server + "/")
    fill_form(page, valid_answers(birth_day=day, birth_month=month, birth_year=year))
    page.locator(SEND).click()

    expect(page.locator("#error-summary")).to_contain_text(UNDER_18)
    expect(page.locator("#filler-error")).to_contain_text(UNDER_18)
    assert page.locator("#filler-self").is_checked()
    assert page.locator("#birth_year").input_value() == year

    page.locator("#filler-parent").check()
    page.locator(SEND).click()
    page.wait_for_url("**/confirmation/**")
    read_codes(page)


# ---------------------------------------------------------------------------- languages


def test_switching_language_keeps_everything_typed(page: Page, live_server: str) -> None:
    page.goto(live_server + "/")
    typed = {
        "filler": "parent",
        "cancer_type": "other_not_sure",
        "cancer_other": "Something rare",
        "birth_day": "3",
        "birth_month": "11",
        "birth_year": "1975",
        "full_name": "José Núñez-O’Brien",
        "email": "jose@example.org",
        "phone": "(415) 555-2671",
        "postal_code": "94110",
        "contact_method": "text",
        "agree": "y",
    }
    fill_form(page, typed)
    page.locator("#country").select_option("MX")

    page.get_by_role("button", name="Español").click()
    page.wait_for_url("**/?lang=es")  # the form, posted back to itself in Spanish
    assert page.evaluate("document.documentElement.lang") == "es"
    expect(page.locator("h1")).to_have_text(FORM_HEADING["es"])
    expect(page.get_by_role("button", name="English")).to_be_visible()
    for name in ("cancer_type", "cancer_other", "birth_day", "birth_month", "birth_year"):
        assert page.locator(f"#{name}").input_value() == typed[name], name
    for name in ("full_name", "email", "phone", "postal_code"):
        assert page.locator(f"#{name}").input_value() == typed[name], name
    assert page.locator("#country").input_value() == "MX"
    assert page.locator("#filler-parent").is_checked()
    assert page.locator("#contact_method-text").is_checked()
    assert page.locator("#agree").is_checked()
    expect(page.locator("#cancer-other-details")).to_be_visible()
    assert page.locator("#error-summary").count() == 0  # switching is not sending

    page.locator("#country").select_option("US")
    page.locator("#signature").fill("María Núñez")
    page.locator(SEND).click()
    page.wait_for_url("**/confirmation/**")
    assert page.evaluate("document.documentElement.lang") == "es"
    assert "lang=es" in page.url
    expect(page.locator("h1")).to_have_text(THANKS["es"])
    expect(page.locator(".authorization")).to_have_attribute("lang", "es")
    read_codes(page)


# ---------------------------------------------------------------------------- embedding


def test_the_embed_page_works_inside_an_allowed_sites_iframe(
    page: Page,
    make_sqlite_app: AppFactory,
    host_sites: Callable[[str], HostSite],
    chromium_path: str,
    requests_seen: list[str],
) -> None:
    # The news site and the form are on different sites (127.0.0.1 and localhost), as in life.
    news = host_sites("127.0.0.1")
    app = make_sqlite_app(TESTING=False, EMBED_ORIGINS=(news.origin,))
    with serve(app, "localhost") as form_origin:
        page.goto(news.article("/article", form_origin + "/embed?source=news-article"))
        frame = page.frame_locator("iframe")
        expect(frame.get_by_role("heading", name=FORM_HEADING["en"])).to_be_visible()
        assert frame.locator(".site-footer").count() == 0  # minimal chrome

        # The session cookie there is SameSite=None; Secure; Partitioned (by the news site), so
        # CSRF and the confirmation work inside the frame.
        cookies = [c for c in page.context.cookies() if c["domain"] == "localhost"]
        assert len(cookies) == 1
        assert cookies[0]["sameSite"] == "None"
        assert cookies[0]["secure"] is True
        assert cookies[0].get("partitionKey") == "http://127.0.0.1"

        fill_form(frame, valid_answers("EMBED"))
        frame.locator(SEND).click()
        expect(frame.get_by_role("heading", name=THANKS["en"])).to_be_visible()
        codes = read_codes(frame)
        confirmation = _frame(page)
        assert confirmation.url.startswith(f"{form_origin}/embed/confirmation/")
        assert {origin_of(url) for url in requests_seen} == {news.origin, form_origin}

    with app.app_context():
        row = db.session.scalar(select(Submission).filter_by(reference=codes["reference"]))
        assert row is not None
        assert row.source == "news-article"
        db.session.remove()


def _frame(page: Page) -> Frame:
    frames = [frame for frame in page.frames if frame is not page.main_frame]
    assert len(frames) == 1
    return frames[0]


def test_the_embed_page_is_refused_to_other_sites(
    page: Page,
    make_sqlite_app: AppFactory,
    host_sites: Callable[[str], HostSite],
    chromium_path: str,
) -> None:
    allowed, other = host_sites("127.0.0.1"), host_sites("127.0.0.1")  # other: another port
    app = make_sqlite_app(TESTING=False, EMBED_ORIGINS=(allowed.origin,))
    with serve(app, "localhost") as form_origin:
        for path, src in [("/other", "/embed"), ("/form", "/")]:
            # /embed from a site not in the list; the full form page from any site at all.
            site = other if path == "/other" else allowed
            with (
                page.expect_console_message(lambda m: "frame-ancestors" in m.text) as message,
                page.expect_event("framenavigated", lambda f: f.url.startswith("chrome-error:")),
            ):
                page.goto(site.article(path, form_origin + src))
            assert "blocked" in message.value.text
            assert _frame(page).url.startswith("chrome-error://")  # the browser's error page
            assert page.frame_locator("iframe").get_by_text(FORM_HEADING["en"]).count() == 0


# ---------------------------------------------------------------------------- withdrawal


def test_withdrawing_shreds_the_sealed_data(
    page: Page, live_server: str, live_app: Flask, requests_seen: list[str]
) -> None:
    codes = submit_valid_form(page, live_server)
    page.get_by_role("link", name="Withdraw your authorization").click()
    page.wait_for_url("**/withdraw?*")
    page.locator("#reference").fill(codes["reference"].lower())  # typed any old way
    page.locator("#code").fill(codes["code"].replace("-", " "))
    page.locator(SEND).click()
    page.wait_for_url("**/withdraw/done*")
    expect(page.locator("h1")).to_have_text(WITHDRAWN["en"])

    with live_app.app_context():
        row = db.session.scalar(select(Submission).filter_by(reference=codes["reference"]))
        assert row is not None  # the tombstone
        assert row.sealed_payload is None
        assert row.wrapped_key is None
        assert row.email_index is None
        assert row.shredded_at is not None
        assert row.status == "withdrawn"
        db.session.remove()
    assert {origin_of(url) for url in requests_seen} == {live_server}


# ---------------------------------------------------------------------------- no JavaScript


def test_everything_works_without_javascript(browser: Browser, live_server: str) -> None:
    context = browser.new_context(java_script_enabled=False)
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        page.goto(live_server + "/")
        # The page's script does not run: the follow-up questions are simply always shown.
        expect(page.locator("#cancer_other")).to_be_visible()
        expect(page.locator("#representative_authority")).to_be_visible()

        page.locator(SEND).click()  # errors first, as a server round trip
        expect(page.locator("#error-summary")).to_be_visible()
        page.locator("#error-summary a").first.click()
        assert page.url.endswith("#filler-self")  # a plain jump to the field ...
        expect(page.locator("#filler-self")).to_be_focused()  # ... which the browser focuses

        fill_form(
            page,
            valid_answers(
                "NOJS",
                filler="representative",
                representative_authority="Healthcare power of attorney",
                cancer_type="other_not_sure",
                cancer_other="Not sure yet",
            ),
        )
        page.get_by_role("button", name="Español").click()  # the switch works without JS too
        page.wait_for_url("**/?lang=es")
        assert page.locator("#representative_authority").input_value() == (
            "Healthcare power of attorney"
        )
        page.locator(SEND).click()
        page.wait_for_url("**/confirmation/**")
        codes = read_codes(page)
        expect(page.locator("[data-print]")).to_be_hidden()  # needs JS, so it stays hidden

        page.goto(live_server + "/withdraw")
        page.locator("#reference").fill(codes["reference"])
        page.locator("#code").fill(codes["code"])
        page.locator("#code").press("Enter")
        page.wait_for_url("**/withdraw/done*")
    finally:
        context.close()


# ---------------------------------------------------------------------------- 320 px wide


def test_no_horizontal_scrolling_at_320_px(page: Page, live_server: str) -> None:
    page.set_viewport_size({"width": 320, "height": 640})

    def assert_fits(what: str) -> None:
        page.wait_for_load_state("load")  # with its stylesheet: unstyled, the selects are wider
        widths = page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1], f"{what} scrolls sideways at 320 px: {widths}"

    for lang in LANGUAGES:
        page.goto(f"{live_server}/?lang={lang}")
        assert_fits(f"the empty form ({lang})")
        page.locator(SEND).click()
        expect(page.locator("#error-summary")).to_be_visible()
        assert_fits(f"the form with errors ({lang})")
        codes = submit_valid_form(page, live_server, lang)
        assert_fits(f"the confirmation ({lang})")
        page.goto(f"{live_server}/withdraw?lang={lang}")
        assert_fits(f"the withdrawal page ({lang})")
        page.locator(SEND).click()
        expect(page.locator("#error-summary")).to_be_visible()
        assert_fits(f"the withdrawal page with errors ({lang})")
        page.locator("#reference").fill(codes["reference"])
        page.locator("#code").fill(codes["code"])
        page.locator(SEND).click()
        page.wait_for_url("**/withdraw/done**")
        assert_fits(f"the withdrawn page ({lang})")
        page.goto(f"{live_server}/embed?lang={lang}")
        assert_fits(f"the embed page ({lang})")


# ---------------------------------------------------------------------------- axe-core


def _open(page: Page, base: str, state: str, lang: str) -> None:
    """Bring ``page`` to one of the states a patient can see."""
    if state == "form":
        page.goto(f"{base}/?lang={lang}")
    elif state == "form with errors":
        page.goto(f"{base}/?lang={lang}")
        page.locator("#filler-representative").check()
        page.locator("#cancer_type").select_option("other_not_sure")
        page.locator(SEND).click()
        expect(page.locator("#error-summary")).to_be_visible()
    elif state == "confirmation":
        submit_valid_form(page, base, lang)
    elif state == "withdraw":
        page.goto(f"{base}/withdraw?lang={lang}")
    elif state == "withdraw with errors":
        page.goto(f"{base}/withdraw?lang={lang}")
        page.locator("#code").fill("nope")
        page.locator(SEND).click()
        expect(page.locator("#error-summary")).to_be_visible()
    elif state == "withdrawn":
        codes = submit_valid_form(page, base, lang)
        page.goto(f"{base}/withdraw?lang={lang}")
        page.locator("#reference").fill(codes["reference"])
        page.locator("#code").fill(codes["code"])
        page.locator(SEND).click()
        page.wait_for_url("**/withdraw/done**")
    elif state == "embed":
        page.goto(f"{base}/embed?lang={lang}")
    else:  # pragma: no cover
        raise AssertionError(state)


AXE_STATES = [
    "form",
    "form with errors",
    "confirmation",
    "withdraw",
    "withdraw with errors",
    "withdrawn",
    "embed",
]


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("state", AXE_STATES)
def test_axe_finds_no_violations(page: Page, live_server: str, state: str, lang: str) -> None:
    _open(page, live_server, state, lang)
    page.wait_for_load_state("load")
    assert page.evaluate("document.documentElement.lang") == lang
    results = Axe().run(page)
    assert results.violations_count == 0, results.generate_report()
