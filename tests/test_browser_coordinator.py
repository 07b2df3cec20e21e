"""Staff sign-in in a real Chromium: password, TOTP, the dashboard, automatic logoff, axe-core."""

from __future__ import annotations

import re
import time

import pytest
from axe_playwright_python.sync_playwright import Axe
from flask import Flask
from playwright.sync_api import Page, expect

from intake.coordinator.auth import CLOCK_EXTENSION
from tests.factories import StaffAccount, make_user, next_code

pytestmark = pytest.mark.browser
SECOND_STEP = re.compile("^(Set up two-step verification|Enter your code)$")


@pytest.fixture
def admin(live_app: Flask) -> StaffAccount:
    return make_user(live_app, role="admin")


def assert_accessible(page: Page) -> None:
    results = Axe().run(page)
    assert results.violations_count == 0, results.generate_report()


def sign_in(page: Page, base: str, account: StaffAccount) -> None:
    """From the dashboard's address: the password page, then the code (or set-up) page."""
    page.goto(base + "/coordinator/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    page.get_by_label("Email address").fill(account.email)
    page.get_by_label("Password").fill(account.password)
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(SECOND_STEP)
    page.get_by_label("6-digit code").fill(next_code(account))
    page.get_by_role("button", name=re.compile("^(Finish setting up|Sign in)$")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Staff home")


def test_sign_in_with_password_and_totp_then_out_again(
    page: Page, live_server: str, admin: StaffAccount
) -> None:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(live_server + "/coordinator/")
    page.get_by_label("Email address").fill(admin.email)
    page.get_by_label("Password").fill(admin.password)
    page.get_by_role("button", name="Continue").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Set up two-step verification")
    qr = page.get_by_role("img", name="QR code for your authenticator app")
    expect(qr).to_be_visible()
    assert qr.evaluate("node => node.tagName") == "svg"
    assert_accessible(page)
    page.get_by_label("6-digit code").fill(next_code(admin))
    page.get_by_role("button", name="Finish setting up").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Staff home")
    expect(page.get_by_text(f"Signed in as {admin.email} (admin)")).to_be_visible()
    assert_accessible(page)

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You have signed out.")).to_be_visible()
    page.get_by_label("Email address").fill(admin.email)
    page.get_by_label("Password").fill(admin.password)
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Enter your code")
    assert_accessible(page)
    page.get_by_label("6-digit code").fill(next_code(admin))
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Staff home")
    assert not errors, errors  # CSP violations would show up here


def test_login_page_with_errors_is_accessible(page: Page, live_server: str) -> None:
    page.goto(live_server + "/coordinator/login")
    assert_accessible(page)
    page.get_by_label("Email address").fill("nobody@example.org")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("alert")).to_contain_text("The email address or password is not right.")
    assert_accessible(page)


def test_users_pages_are_accessible(page: Page, live_server: str, admin: StaffAccount) -> None:
    sign_in(page, live_server, admin)
    page.get_by_role("link", name="Users").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("User accounts")
    assert_accessible(page)

    page.get_by_label("Email address").fill("new.coordinator@example.org")
    page.get_by_label("Role").select_option("coordinator")
    page.get_by_label("First password").fill("short")
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("alert")).to_contain_text("at least 12 characters")
    assert_accessible(page)

    page.get_by_label("First password").fill("a long enough first password")
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Account created")
    expect(page.get_by_role("img", name="QR code for your authenticator app")).to_be_visible()
    assert_accessible(page)


def test_idle_timeout_signs_the_user_out(
    page: Page, live_server: str, live_app: Flask, admin: StaffAccount
) -> None:
    sign_in(page, live_server, admin)
    # Sixteen minutes pass on the server's clock; the browser does nothing meanwhile.
    live_app.extensions[CLOCK_EXTENSION] = lambda: time.time() + 16 * 60
    page.reload()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    expect(
        page.get_by_text("You were signed out after 15 minutes without activity.")
    ).to_be_visible()
    assert_accessible(page)
    live_app.extensions.pop(CLOCK_EXTENSION)
    page.goto(live_server + "/coordinator/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")  # it stays ended


def test_staff_pages_fit_320_px(page: Page, live_server: str, admin: StaffAccount) -> None:
    page.set_viewport_size({"width": 320, "height": 640})
    sign_in(page, live_server, admin)
    for path in ("/coordinator/", "/coordinator/users"):
        page.goto(live_server + path)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, path


def test_link_from_another_site_keeps_the_user_signed_in(
    page: Page, live_server: str, admin: StaffAccount
) -> None:
    """SameSite=Strict: the cookie is withheld on the link, so the page reloads from this site."""
    sign_in(page, live_server, admin)
    other_site = live_server.replace("127.0.0.1", "localhost")  # another site, same server
    page.goto(other_site + "/coordinator/login?bounced=1")  # any page there will do
    page.evaluate(
        "target => { const a = document.createElement('a'); a.href = target; a.id = 'out';"
        " a.textContent = 'dashboard'; document.body.append(a); }",
        live_server + "/coordinator/users",
    )
    page.locator("#out").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("User accounts")
    assert page.url == live_server + "/coordinator/users"
