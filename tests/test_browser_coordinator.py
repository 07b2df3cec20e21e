"""Staff sign-in in a real Chromium: password, TOTP, the dashboard, automatic logoff, axe-core."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from flask import Flask
from playwright.sync_api import Page, expect

from intake.coordinator.auth import CLOCK_EXTENSION
from intake.extensions import db
from intake.keys import current_keyring
from tests.factories import (
    StaffAccount,
    make_submission,
    make_user,
    new_password_for,
    next_code,
)

pytestmark = pytest.mark.browser
SECOND_STEP = re.compile("^(Set up two-step verification|Enter your code)$")
HOME_HEADING = re.compile("^(Submissions|Staff home)$")  # the list, or an auditor's home


@pytest.fixture
def admin(live_app: Flask) -> StaffAccount:
    return make_user(live_app, role="admin")


def assert_accessible(page: Page) -> None:
    results = Axe().run(page)
    assert results.violations_count == 0, results.generate_report()


def sign_in(page: Page, base: str, account: StaffAccount) -> None:
    """From the dashboard's address: the password page, then the code (or set-up) page."""
    _sign_in_to(page, base + "/coordinator/", account, HOME_HEADING)


def test_sign_in_with_password_and_totp_then_out_again(
    page: Page, live_server: str, admin: StaffAccount
) -> None:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    refused_form = "the server responded with a status of 422"  # the password step's errors
    page.goto(live_server + "/coordinator/")
    page.get_by_label("Email address").fill(admin.email)
    page.get_by_label("Password").fill(admin.password)
    page.get_by_role("button", name="Continue").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Set up two-step verification")
    qr = page.get_by_role("img", name="QR code for your authenticator app")
    expect(qr).to_be_visible()
    assert qr.evaluate("node => node.tagName") == "svg"
    assert_accessible(page)
    scan_key(page, admin)
    page.get_by_label("6-digit code").fill(next_code(admin))
    page.get_by_role("button", name="Finish setting up").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Choose your own password")
    page.get_by_label("New password", exact=True).fill("short")
    page.get_by_label("New password again").fill("short")
    page.get_by_role("button", name="Set password and continue").click()
    expect(page.get_by_role("alert")).to_contain_text("at least 12 characters")
    assert_accessible(page)
    choose_password(page, admin)

    expect(page.get_by_role("heading", level=1)).to_have_text("Submissions")
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
    expect(page.get_by_role("heading", level=1)).to_have_text("Submissions")
    errors = [error for error in errors if refused_form not in error]
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
    expect(page.get_by_role("heading", level=1)).to_have_text("User accounts")
    expect(page.get_by_role("status")).to_contain_text("Created new.coordinator@example.org")
    expect(page.get_by_role("img", name="QR code for your authenticator app")).to_have_count(0)
    assert_accessible(page)


def test_account_pages_are_accessible(page: Page, live_server: str, admin: StaffAccount) -> None:
    sign_in(page, live_server, admin)
    page.get_by_role("link", name="Your account").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your account")
    expect(page.get_by_role("heading", name=re.compile(r"\(this session\)$"))).to_be_visible()
    assert_accessible(page)
    page.get_by_role("link", name="Change your password").click()
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("alert")).to_contain_text("Enter your current password.")
    assert_accessible(page)
    page.get_by_label("Current password").fill(admin.password)
    page.get_by_label("6-digit code").fill(next_code(admin))
    new = new_password_for(admin)
    page.get_by_label("New password", exact=True).fill(new)
    page.get_by_label("New password again").fill(new)
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("status")).to_contain_text("Your password is changed.")
    admin.password = new


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


def _seed_submissions(app: Flask, count: int = 9) -> None:
    """Submissions through the real service, spread over a few weeks and cancer types."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from intake.extensions import db
    from intake.keys import current_keyring
    from intake.models import Submission
    from intake.vocabulary import vocabulary
    from tests.factories import make_submission

    types = list(vocabulary().types)[:3]
    statuses = ("new", "in_review", "referred", "not_eligible")
    with app.app_context():
        for number in range(count):
            row = make_submission(db.session(), current_keyring(), f"CHART{number}")
            db.session.execute(
                update(Submission)
                .where(Submission.id == row.id)
                .values(
                    received_at=datetime.now(UTC) - timedelta(days=5 * number),
                    cancer_type=types[number % len(types)],
                    status=statuses[number % len(statuses)],
                )
            )
        db.session.commit()


def _sign_in_to(
    page: Page, url: str, account: StaffAccount, heading: str | re.Pattern[str]
) -> None:
    """Open ``url``, sign in on the way (password, then the code), and land back on it."""
    page.goto(url)
    page.get_by_label("Email address").fill(account.email)
    page.get_by_label("Password").fill(account.password)
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(SECOND_STEP)
    if page.get_by_role("heading", level=1).inner_text() == "Set up two-step verification":
        scan_key(page, account)
    page.get_by_label("6-digit code").fill(next_code(account))
    page.get_by_role("button", name=re.compile("^(Finish setting up|Sign in)$")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(after_code(heading))
    if page.get_by_role("heading", level=1).inner_text() == "Choose your own password":
        choose_password(page, account)
    expect(page.get_by_role("heading", level=1)).to_have_text(heading)


def after_code(heading: str | re.Pattern[str]) -> re.Pattern[str]:
    """The page after the code: the one asked for, or a first sign-in's password step."""
    wanted = heading.pattern if isinstance(heading, re.Pattern) else re.escape(heading)
    return re.compile(f"^(Choose your own password|{wanted.strip('^$')})$")


def scan_key(page: Page, account: StaffAccount) -> None:
    """What an authenticator app does with the enrolment page: keep its key."""
    account.totp_secret = page.locator(".staff-secret").inner_text().replace(" ", "")


def choose_password(page: Page, account: StaffAccount) -> None:
    new = new_password_for(account)
    page.get_by_label("New password", exact=True).fill(new)
    page.get_by_label("New password again").fill(new)
    page.get_by_role("button", name="Set password and continue").click()
    account.password = new


def test_charts_and_audit_pages_are_accessible(
    page: Page, live_server: str, live_app: Flask, admin: StaffAccount
) -> None:
    _seed_submissions(live_app)
    _sign_in_to(page, live_server + "/coordinator/charts", admin, "Charts")
    weekly = page.get_by_role("img", name=re.compile("^Submissions per week, by cancer type"))
    expect(weekly).to_be_visible()
    assert weekly.evaluate("node => node.tagName") == "svg"
    expect(
        page.get_by_role("img", name=re.compile("^Submissions by current status"))
    ).to_be_visible()
    expect(page.locator("#weekly-table tfoot")).to_contain_text("9")
    assert_accessible(page)

    page.get_by_role("link", name="Audit trail").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Audit trail")
    expect(page.locator("#chain-state")).to_contain_text("Intact.")
    assert_accessible(page)
    page.get_by_label("Action").select_option("auth.login")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#audit-table tbody tr")).to_have_count(1)
    expect(page.locator("#audit-table")).to_contain_text(admin.email)
    assert_accessible(page)
    page.get_by_label("Actor").fill("someone@example.org")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("alert")).to_contain_text("Enter an actor code")
    assert_accessible(page)


def test_auditors_see_charts_and_the_audit_trail_at_320_px(
    page: Page, live_server: str, live_app: Flask
) -> None:
    auditor = make_user(live_app, role="auditor")
    _seed_submissions(live_app, 3)
    page.set_viewport_size({"width": 320, "height": 640})
    _sign_in_to(page, live_server + "/coordinator/charts", auditor, "Charts")
    for path, heading in (("/coordinator/charts", "Charts"), ("/coordinator/audit", "Audit trail")):
        page.goto(live_server + path)
        expect(page.get_by_role("heading", level=1)).to_have_text(heading)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, path
        assert_accessible(page)


# ---------------------------------------------------------------------------- triage


def test_triage_filter_open_change_status_note_and_export(
    page: Page, live_server: str, live_app: Flask, admin: StaffAccount
) -> None:
    with live_app.app_context():
        lung = make_submission(db.session(), current_keyring(), "BROWSER", cancer_type="lung_nsclc")
        make_submission(db.session(), current_keyring(), "OTHER", cancer_type="breast")
        db.session.commit()
        reference = lung.reference
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    sign_in(page, live_server, admin)
    assert_accessible(page)

    page.get_by_text("Filter the list").click()
    page.get_by_label("Cancer type").select_option("lung_nsclc")
    page.get_by_label("Status", exact=True).select_option("new")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_role("link", name=reference)).to_be_visible()
    assert "lung_nsclc" in page.url and "NAME-" not in page.content()
    assert_accessible(page)

    page.get_by_role("link", name=reference).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Submission {reference}")
    expect(page.get_by_text("NAME-BROWSER")).to_be_visible()
    assert_accessible(page)

    page.get_by_label("New status").select_option("in_review")
    page.get_by_role("button", name="Change status").click()
    expect(page.get_by_text("Status changed to In review.")).to_be_visible()
    page.get_by_label("Add a note").fill("Left a voicemail")
    page.get_by_role("button", name="Add note").click()
    expect(page.get_by_text("Note added.")).to_be_visible()
    expect(page.get_by_text("Left a voicemail")).to_be_visible()
    assert_accessible(page)

    page.get_by_role("link", name="Back to the list").click()
    page.get_by_label("Reason for exporting").select_option("quality_review")
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Export CSV").click()
    download = download_info.value
    content = Path(download.path()).read_bytes()
    assert content.startswith("\ufeff".encode()) and reference.encode() in content
    assert download.suggested_filename.endswith(".csv")
    assert not errors, errors


def test_search_signed_text_and_conflict_pages_are_accessible(
    page: Page, live_server: str, live_app: Flask, admin: StaffAccount
) -> None:
    """The triage pages a coordinator meets less often pass axe-core too."""
    with live_app.app_context():
        made = make_submission(db.session(), current_keyring(), "SEARCHME")
        db.session.commit()
        reference = made.reference
    sign_in(page, live_server, admin)
    page.get_by_label("Email address").fill("email-searchme@example.org")
    page.get_by_role("button", name="Find").click()
    expect(page.get_by_role("link", name=reference)).to_be_visible()
    assert "searchme" not in page.url.lower()  # the email went by POST, never into the URL
    assert_accessible(page)

    page.get_by_role("link", name=reference).click()
    detail = page.url
    other = page.context.new_page()  # the same record open in a second tab
    other.goto(detail)
    page.get_by_role("link", name="Read the exact text signed").click()
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    assert_accessible(page)

    other.get_by_label("New status").select_option("in_review")
    other.get_by_role("button", name="Change status").click()
    page.goto(detail)
    stale = page.context.new_page()
    stale.goto(detail)
    page.get_by_label("New status").select_option("contacted")
    page.get_by_role("button", name="Change status").click()
    stale.get_by_label("New status").select_option("not_eligible")
    stale.get_by_role("button", name="Change status").click()  # written by someone else since
    expect(stale.get_by_role("heading", level=1)).to_be_visible()
    expect(stale.get_by_text("Someone else changed this submission")).to_be_visible()
    assert_accessible(stale)
