"""Staff sign-in pages, the staff session, and access control on /coordinator."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from intake import accounts
from intake.coordinator.auth import ACCESS_ATTR, PUBLIC_ATTR
from intake.extensions import db
from intake.models import AuditEvent, User
from tests.conftest import AppFactory
from tests.factories import (
    STAFF_PASSWORD,
    StaffAccount,
    choose_new_password,
    csrf_token,
    login,
    make_user,
    next_code,
    read_enrolment_secret,
)

STAFF_COOKIE = "intake-staff"


@pytest.fixture
def staff(app: Flask) -> StaffAccount:
    return make_user(app, role="coordinator")


def actions(app: Flask) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def audit_rows(app: Flask) -> Iterator[AuditEvent]:
    with app.app_context():
        yield from db.session.scalars(select(AuditEvent).order_by(AuditEvent.id))


def password_step(client: FlaskClient, email: str, password: str, **extra: Any) -> Any:
    data = {"csrf_token": csrf_token(client, "/coordinator/login"), "email": email}
    return client.post("/coordinator/login", data={**data, "password": password, **extra})


def code_step(client: FlaskClient, code: str, path: str = "/coordinator/login/verify") -> Any:
    return client.post(path, data={"csrf_token": csrf_token(client, path), "code": code})


def signed_in(client: FlaskClient) -> bool:
    response = client.get("/coordinator/")
    return response.status_code == 200 and "Signed in as" in response.get_data(as_text=True)


def staff_session(client: FlaskClient) -> dict[str, Any]:
    with client.session_transaction("/coordinator/") as session:
        return dict(session)


def sign_out(client: FlaskClient) -> Any:
    token = csrf_token(client, "/coordinator/")
    return client.post("/coordinator/logout", data={"csrf_token": token})


# ---------------------------------------------------------------------------- anonymous


@pytest.mark.parametrize(
    "path", ["/coordinator/", "/coordinator/users", "/coordinator/no/such/page"]
)
def test_anonymous_visitors_are_sent_to_sign_in(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/coordinator/login?next=")


def test_sign_in_page_is_english_and_has_labelled_fields(client: FlaskClient) -> None:
    body = client.get("/coordinator/login", headers={"Accept-Language": "es"}).get_data(
        as_text=True
    )
    assert '<html lang="en">' in body
    assert '<label class="label" for="email">' in body and 'autocomplete="current-password"' in body


# ---------------------------------------------------------------------------- signing in


def test_password_then_enrolment_then_home(
    app: Flask, client: FlaskClient, staff: StaffAccount
) -> None:
    response = password_step(client, staff.email, staff.password)
    assert response.headers["Location"] == "/coordinator/login/enrol"
    page = client.get("/coordinator/login/enrol").get_data(as_text=True)
    svg = re.search(r'<svg role="img" aria-label="QR code[^"]*" width="\d+".*?</svg>', page, re.S)
    assert svg and "<path" in svg[0]
    assert "data:" not in svg[0] and "<image" not in svg[0] and "style=" not in svg[0]
    with app.app_context():
        user = db.session.get(User, staff.id)
        assert user is not None and user.totp_secret is not None
        secret = user.totp_secret
    assert " ".join(re.findall("....", secret)) in page
    assert read_enrolment_secret(client, staff) == secret  # a reload shows the same key
    response = code_step(client, next_code(staff), "/coordinator/login/enrol")
    assert response.status_code == 303
    assert response.headers["Location"] == "/coordinator/login/new-password"
    assert not signed_in(client)  # not before the first password is replaced
    response = choose_new_password(client, staff)
    assert response.status_code == 303 and response.headers["Location"] == "/coordinator/"
    home = client.get("/coordinator/").get_data(as_text=True)
    assert f"Signed in as <strong>{staff.email}</strong> (coordinator)" in home
    assert actions(app)[-4:] == [
        "users.totp_enrolment_started",
        "users.totp_enrolled",
        "auth.login",
        "users.password_changed",
    ]


def test_enrolled_users_get_the_code_page_and_no_secret(
    app: Flask, client: FlaskClient, staff: StaffAccount
) -> None:
    login(client, staff)
    sign_out(client)
    response = password_step(client, staff.email, staff.password)
    assert response.headers["Location"] == "/coordinator/login/verify"
    assert client.get("/coordinator/login/enrol").status_code == 302  # enrolled: no QR again
    page = client.get("/coordinator/login/verify").get_data(as_text=True)
    assert staff.totp_secret not in page and "<svg" not in page
    assert code_step(client, next_code(staff)).status_code == 303
    assert signed_in(client)


def test_wrong_password_and_unknown_email_get_the_same_answer(
    client: FlaskClient, staff: StaffAccount
) -> None:
    wrong = password_step(client, staff.email, "not the password")
    unknown = password_step(client, "nobody@example.org", "not the password")
    assert wrong.status_code == unknown.status_code == 422
    message = "The email address or password is not right."
    assert message in wrong.get_data(as_text=True) and message in unknown.get_data(as_text=True)
    assert "not the password" not in wrong.get_data(as_text=True)  # the password is not echoed


def test_missing_fields_are_named(client: FlaskClient) -> None:
    response = password_step(client, "", "")
    body = response.get_data(as_text=True)
    assert response.status_code == 422
    assert '<a href="#email">Enter your email address.</a>' in body
    assert '<a href="#password">Enter your password.</a>' in body


def test_wrong_code_keeps_you_on_the_code_page(
    app: Flask, client: FlaskClient, staff: StaffAccount
) -> None:
    password_step(client, staff.email, staff.password)
    read_enrolment_secret(client, staff)
    right = next_code(staff)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    response = code_step(client, wrong, "/coordinator/login/enrol")
    assert response.status_code == 422
    assert "The code is not right." in response.get_data(as_text=True)
    assert not signed_in(client)
    assert actions(app)[-1] == "auth.login_failed"


def test_replayed_code_is_refused(app: Flask, client: FlaskClient, staff: StaffAccount) -> None:
    password_step(client, staff.email, staff.password)
    read_enrolment_secret(client, staff)
    code = next_code(staff)
    assert code_step(client, code, "/coordinator/login/enrol").status_code == 303
    choose_new_password(client, staff)
    sign_out(client)
    password_step(client, staff.email, staff.password)
    assert code_step(client, code).status_code == 422
    assert not signed_in(client)
    details = [e.details for e in audit_rows(app) if e.action == "auth.login_failed"]
    assert details == ['{"reason":"totp_replay"}']


def test_locked_account_is_refused_with_429(
    app: Flask, client: FlaskClient, staff: StaffAccount
) -> None:
    for _ in range(5):
        assert password_step(client, staff.email, "not the password").status_code == 422
    response = password_step(client, staff.email, staff.password)
    assert response.status_code == 429
    assert "Too many attempts" in response.get_data(as_text=True)
    assert actions(app).count("auth.locked") == 1


def test_locked_address_is_refused_from_another_worker(
    make_app: AppFactory, app: Flask, staff: StaffAccount
) -> None:
    attacker = {"REMOTE_ADDR": "203.0.113.66"}
    first = app.test_client()
    first.environ_base.update(attacker)
    for number in range(20):
        password_step(first, f"guess{number}@example.org", "not the password")
    second = make_app().test_client()  # another worker process, same database
    second.environ_base.update(attacker)
    assert password_step(second, staff.email, staff.password).status_code == 429
    elsewhere = make_app().test_client()
    assert password_step(elsewhere, staff.email, staff.password).status_code == 303


def test_pending_password_step_expires(client: FlaskClient, staff: StaffAccount) -> None:
    password_step(client, staff.email, staff.password)
    with client.session_transaction("/coordinator/") as session:
        session["pending"] = {**session["pending"], "at": session["pending"]["at"] - 301}
    response = client.get("/coordinator/login/enrol")
    assert response.status_code == 303 and response.headers["Location"] == "/coordinator/login"


def test_code_pages_need_the_password_step_first(client: FlaskClient) -> None:
    for path in ("/coordinator/login/verify", "/coordinator/login/enrol"):
        assert client.get(path).headers["Location"] == "/coordinator/login"
        token = csrf_token(client, "/coordinator/login")
        response = client.post(path, data={"csrf_token": token, "code": "123456"})
        assert response.status_code == 303


# ---------------------------------------------------------------------------- where to go next


def test_sign_in_returns_to_the_page_asked_for(client: FlaskClient, admin: StaffAccount) -> None:
    response = client.get("/coordinator/users")
    login_page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert 'name="next" value="/coordinator/users"' in login_page
    password_step(client, admin.email, admin.password, next="/coordinator/users")
    read_enrolment_secret(client, admin)
    code_step(client, next_code(admin), "/coordinator/login/enrol")
    response = choose_new_password(client, admin)
    assert response.headers["Location"] == "/coordinator/users"


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/coordinator/",
        "/",
        "/coordinator\\@x",
        "/coordinator/\x00",
        "/coordinator/../../etc",
        "/coordinator/ x",
    ],
)
def test_next_never_leaves_the_staff_surface(
    client: FlaskClient, staff: StaffAccount, target: str
) -> None:
    password_step(client, staff.email, staff.password, next=target)
    read_enrolment_secret(client, staff)
    code_step(client, next_code(staff), "/coordinator/login/enrol")
    response = choose_new_password(client, staff)
    assert response.headers["Location"] == "/coordinator/"


# ---------------------------------------------------------------------------- the session


def test_session_is_rotated_at_sign_in(client: FlaskClient, staff: StaffAccount) -> None:
    with client.session_transaction("/coordinator/") as session:
        session["planted"] = "by an attacker"
    password_step(client, staff.email, staff.password)
    pending = staff_session(client)
    assert set(pending) == {"nonce", "pending"}  # the planted value and the old CSRF token: gone
    read_enrolment_secret(client, staff)
    code_step(client, next_code(staff), "/coordinator/login/enrol")
    choose_new_password(client, staff)
    after = staff_session(client)
    assert "planted" not in after and "pending" not in after
    assert after["nonce"] != pending["nonce"] and len(after["nonce"]) >= 16
    assert set(after) == {"nonce", "uid", "sv", "sid", "login_at", "seen_at"}
    assert staff.email not in repr(after)


def test_idle_session_ends(app: Flask, client: FlaskClient, staff: StaffAccount) -> None:
    login(client, staff)
    with client.session_transaction("/coordinator/") as session:
        session["seen_at"] -= 14 * 60
    assert signed_in(client)  # 14 minutes idle is fine, and the request renews it
    with client.session_transaction("/coordinator/") as session:
        session["seen_at"] -= 15 * 60 + 1
    response = client.get("/coordinator/")
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "signed out after 15 minutes without activity" in page
    assert not signed_in(client)
    expired = [e for e in audit_rows(app) if e.action == "auth.session_expired"]
    assert [(e.target, e.details) for e in expired] == [(staff.ref, '{"reason":"idle"}')]


def test_idle_limit_comes_from_the_setting(make_app: AppFactory) -> None:
    app = make_app(SESSION_IDLE_MINUTES=2)
    client = app.test_client()
    login(client, make_user(app))
    with client.session_transaction("/coordinator/") as session:
        session["seen_at"] -= 121
    assert not signed_in(client)


def test_absolute_lifetime_ends_even_an_active_session(
    app: Flask, client: FlaskClient, staff: StaffAccount
) -> None:
    login(client, staff)
    with client.session_transaction("/coordinator/") as session:
        session["login_at"] -= 12 * 3600 + 1
    assert not signed_in(client)
    assert [e.details for e in audit_rows(app) if e.action == "auth.session_expired"] == [
        '{"reason":"absolute"}'
    ]


def test_disabled_user_is_signed_out_mid_session(
    app: Flask, client: FlaskClient, staff: StaffAccount
) -> None:
    login(client, staff)
    assert signed_in(client)
    with app.app_context():
        user = db.session.get(User, staff.id)
        assert user is not None
        accounts.disable_user(db.session(), user, actor="cli:test")
        db.session.commit()
    assert not signed_in(client)


def test_sign_out_ends_every_session_of_the_user(
    app: Flask, staff: StaffAccount, admin: StaffAccount
) -> None:
    laptop, phone, colleague = app.test_client(), app.test_client(), app.test_client()
    login(laptop, staff)
    login(phone, staff)
    login(colleague, admin)
    response = sign_out(laptop)
    assert response.status_code == 303 and response.headers["Location"] == "/coordinator/login"
    assert "You have signed out." in laptop.get("/coordinator/login").get_data(as_text=True)
    assert not signed_in(laptop) and not signed_in(phone)
    assert signed_in(colleague)
    logouts = [e for e in audit_rows(app) if e.action == "auth.logout"]
    assert [(e.actor, e.target) for e in logouts] == [(staff.ref, staff.ref)]


def test_a_stolen_cookie_dies_with_sign_out(app: Flask, staff: StaffAccount) -> None:
    victim = app.test_client()
    login(victim, staff)
    cookie = victim.get_cookie(STAFF_COOKIE)
    assert cookie is not None
    thief = app.test_client()
    thief.set_cookie(STAFF_COOKIE, cookie.value)
    assert signed_in(thief)
    sign_out(victim)
    assert not signed_in(thief)


def test_signed_in_users_skip_the_sign_in_page(client: FlaskClient, staff: StaffAccount) -> None:
    login(client, staff)
    assert client.get("/coordinator/login").headers["Location"] == "/coordinator/"


# ---------------------------------------------------------------------------- cookies


def test_staff_cookie_is_strict_and_httponly_and_separate_from_the_patient_one(
    client: FlaskClient, staff: StaffAccount
) -> None:
    response = client.get("/coordinator/login")
    (cookie,) = response.headers.getlist("Set-Cookie")
    assert cookie.startswith(f"{STAFF_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # development serves plain HTTP
    login(client, staff)
    assert client.get_cookie(STAFF_COOKIE) is not None
    assert client.get_cookie("intake") is None  # nothing of the staff session in the other


def test_production_cookie_is_secure_with_the_host_prefix(make_app: AppFactory) -> None:
    app = make_app(SESSION_COOKIE_SECURE=True)
    response = app.test_client().get("/coordinator/login", base_url="https://localhost")
    (cookie,) = response.headers.getlist("Set-Cookie")
    assert cookie.startswith("__Host-intake-staff=")
    assert "Secure" in cookie and "SameSite=Strict" in cookie and "Domain" not in cookie


def test_patient_cookie_does_not_open_a_staff_session(app: Flask, staff: StaffAccount) -> None:
    client = app.test_client()
    login(client, staff)
    cookie = client.get_cookie(STAFF_COOKIE)
    assert cookie is not None
    other = app.test_client()
    other.set_cookie("intake", cookie.value)  # same secret, other cookie: its salt differs
    assert not signed_in(other)


def test_link_from_another_site_does_not_sign_you_out(
    client: FlaskClient, staff: StaffAccount
) -> None:
    """SameSite=Strict withholds the cookie on such a link; the page reloads from this site."""
    login(client, staff)
    cross_site = {"Sec-Fetch-Site": "cross-site"}
    bare = client.application.test_client()  # what the browser sends: no cookie
    response = bare.get("/coordinator/login?next=/coordinator/users", headers=cross_site)
    assert response.status_code == 200 and "Set-Cookie" not in response.headers
    target = "/coordinator/login?next=/coordinator/users&bounced=1"
    assert response.headers["Refresh"] == f"0; url={target}"
    assert f'href="{target.replace("&", "&amp;")}"' in response.get_data(as_text=True)
    # The reload comes from this site, so the browser sends the cookie: still signed in.
    assert client.get(target).headers["Location"] == "/coordinator/users"
    assert bare.get(target, headers=cross_site).status_code == 200  # no loop


# ---------------------------------------------------------------------------- access control


def test_every_staff_view_declares_who_may_use_it(app: Flask) -> None:
    staff_views = {
        endpoint: view
        for endpoint, view in app.view_functions.items()
        if endpoint.startswith("coordinator.")
    }
    assert len(staff_views) > 5
    for endpoint, view in staff_views.items():
        assert hasattr(view, ACCESS_ATTR) or hasattr(view, PUBLIC_ATTR), endpoint
    public = {endpoint for endpoint, view in staff_views.items() if hasattr(view, PUBLIC_ATTR)}
    assert public == {
        "coordinator.login",
        "coordinator.login_submit",
        "coordinator.verify",
        "coordinator.verify_submit",
        "coordinator.enrol",
        "coordinator.enrol_submit",
        "coordinator.new_password",
        "coordinator.new_password_submit",
    }


def test_an_undeclared_staff_view_is_refused(app: Flask, admin: StaffAccount) -> None:
    app.add_url_rule("/coordinator/forgotten", "coordinator.forgotten", lambda: "secret stuff")
    client = app.test_client()
    login(client, admin)
    response = client.get("/coordinator/forgotten")
    assert response.status_code == 403 and b"secret stuff" not in response.data


@pytest.mark.parametrize(
    ("role", "status"), [("admin", 200), ("coordinator", 403), ("auditor", 403)]
)
def test_only_admins_manage_users(app: Flask, role: str, status: int) -> None:
    client = app.test_client()
    login(client, make_user(app, role=role))
    response = client.get("/coordinator/users")
    assert response.status_code == status
    token = csrf_token(client, "/coordinator/")
    data = {"csrf_token": token, "email": "x@example.org", "role": "admin"}
    created = client.post("/coordinator/users", data={**data, "password": STAFF_PASSWORD})
    assert created.status_code == (303 if role == "admin" else 403)
    if status == 403:
        body = response.get_data(as_text=True)
        assert "You do not have access to this page" in body and "@" not in body


@pytest.mark.parametrize("role", ["admin", "coordinator", "auditor"])
def test_every_role_reaches_home_and_unknown_pages_are_404(app: Flask, role: str) -> None:
    client = app.test_client()
    login(client, make_user(app, role=role))
    assert client.get("/coordinator/").status_code == 200
    assert client.get("/coordinator/no/such/page").status_code == 404


def test_every_staff_post_refuses_a_missing_csrf_token(
    app: Flask, admin_client: FlaskClient
) -> None:
    posts = [
        rule
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/coordinator") and "POST" in (rule.methods or set())
    ]
    assert len(posts) >= 6
    for rule in posts:
        path = (
            rule.rule.replace("<int:user_id>", "1")
            .replace("<reference>", "2222-2222")
            .replace("<uuid:session_id>", "0190e6a0-0000-7000-8000-000000000000")
        )
        assert "<" not in path, f"give {rule.rule} a sample value here"
        response = admin_client.post(path, data={"email": "x@example.org", "code": "123456"})
        assert response.status_code == 400, rule.rule
        wrong = admin_client.post(path, data={"csrf_token": "forged"})
        assert wrong.status_code == 400, rule.rule
    assert signed_in(admin_client)  # nothing above signed the admin out


# ---------------------------------------------------------------------------- user admin


def test_admin_creates_an_account_and_never_sees_its_secret(
    app: Flask, admin: StaffAccount, admin_client: FlaskClient
) -> None:
    token = csrf_token(admin_client, "/coordinator/users")
    response = admin_client.post(
        "/coordinator/users",
        data={
            "csrf_token": token,
            "email": "New.Person@example.org",
            "role": "auditor",
            "password": STAFF_PASSWORD,
        },
    )
    assert response.status_code == 303
    listing = admin_client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Created new.person@example.org (auditor)" in listing
    assert "replace the first password" in listing
    assert "otpauth://" not in listing and '<svg role="img"' not in listing
    with app.app_context():
        user = accounts.find_user(db.session(), "new.person@example.org")
        assert user is not None and user.role == "auditor"
        assert user.totp_secret is None and user.password_change_required
        new_ref = user.ref
    created = [e for e in audit_rows(app) if e.action == "users.created"]
    assert [(e.actor, e.target) for e in created][-1] == (admin.ref, new_ref)
    # The owner's first sign-in makes the secret; it is not anything the admin could have seen.
    owner = StaffAccount(
        int(new_ref.split(":")[1]), "new.person@example.org", "auditor", STAFF_PASSWORD
    )
    login(app.test_client(), owner)
    assert owner.totp_secret and owner.totp_secret not in listing


@pytest.mark.parametrize(
    ("email", "password", "message"),
    [
        ("broken", STAFF_PASSWORD, "Enter an email address like name@example.org"),
        ("ok@example.org", "short", "The password must be at least 12 characters"),
    ],
)
def test_create_form_errors_keep_the_input(
    admin_client: FlaskClient, email: str, password: str, message: str
) -> None:
    token = csrf_token(admin_client, "/coordinator/users")
    data = {"csrf_token": token, "email": email, "role": "auditor", "password": password}
    response = admin_client.post("/coordinator/users", data=data)
    body = response.get_data(as_text=True)
    assert response.status_code == 422 and message in body
    assert f'value="{email}"' in body and '<option value="auditor" selected>' in body
    assert password not in body.replace('name="password"', "")


def test_admin_disables_an_account_which_ends_its_sessions(
    app: Flask, staff: StaffAccount, admin_client: FlaskClient
) -> None:
    victim = app.test_client()
    login(victim, staff)
    token = csrf_token(admin_client, "/coordinator/users")
    response = admin_client.post(
        f"/coordinator/users/{staff.id}/disable", data={"csrf_token": token}
    )
    assert response.status_code == 303
    assert "Disabled" in admin_client.get("/coordinator/users").get_data(as_text=True)
    assert not signed_in(victim)
    assert password_step(victim, staff.email, staff.password).status_code == 422
    assert actions(app).count("users.disabled") == 1


def test_admin_resets_two_factor(
    app: Flask, staff: StaffAccount, admin_client: FlaskClient
) -> None:
    token = csrf_token(admin_client, "/coordinator/users")
    response = admin_client.post(
        f"/coordinator/users/{staff.id}/reset-2fa", data={"csrf_token": token}
    )
    assert response.status_code == 303
    page = admin_client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Reset two-step verification of" in page and "otpauth://" not in page
    with app.app_context():
        user = db.session.get(User, staff.id)
        assert user is not None and user.totp_secret is None and user.totp_enrolled_at is None
    assert actions(app).count("users.totp_reset") == 1


def test_admin_cannot_change_their_own_account_here(
    app: Flask, admin: StaffAccount, admin_client: FlaskClient
) -> None:
    for action in ("disable", "reset-2fa"):
        token = csrf_token(admin_client, "/coordinator/users")
        response = admin_client.post(
            f"/coordinator/users/{admin.id}/{action}", data={"csrf_token": token}
        )
        assert response.status_code == 303
    assert signed_in(admin_client)
    assert "users.disabled" not in actions(app) and "users.totp_reset" not in actions(app)


def test_unknown_account_id_is_404(admin_client: FlaskClient) -> None:
    token = csrf_token(admin_client, "/coordinator/users")
    response = admin_client.post("/coordinator/users/987654321/disable", data={"csrf_token": token})
    assert response.status_code == 404


# ---------------------------------------------------------------------------- the audit trail


def test_each_action_writes_exactly_one_row_and_no_email(
    app: Flask, staff: StaffAccount, admin: StaffAccount
) -> None:
    client = app.test_client()
    login(client, staff)
    sign_out(client)
    password_step(client, staff.email, "not the password")
    password_step(client, "nobody@example.org", "not the password")
    admin_client = app.test_client()
    login(admin_client, admin)
    token = csrf_token(admin_client, "/coordinator/users")
    admin_client.post(f"/coordinator/users/{staff.id}/disable", data={"csrf_token": token})
    assert actions(app) == [
        "users.created",  # staff (by the test factory)
        "users.created",  # admin
        "users.totp_enrolment_started",
        "users.totp_enrolled",
        "auth.login",
        "users.password_changed",
        "auth.logout",
        "auth.login_failed",
        "auth.login_failed",
        "users.totp_enrolment_started",
        "users.totp_enrolled",
        "auth.login",
        "users.password_changed",
        "users.disabled",
    ]
    for row in audit_rows(app):
        text = f"{row.actor}|{row.target}|{row.details}"
        assert "@" not in text and "example" not in text, text


def test_codes_are_computed_like_an_authenticator_app(app: Flask, staff: StaffAccount) -> None:
    """The test helper's codes are ordinary TOTP: 6 digits, 30-second steps, SHA-1."""
    login(app.test_client(), staff)
    assert staff.totp_secret is not None
    code = next_code(staff)
    assert pyotp.TOTP(staff.totp_secret).verify(code, valid_window=1, for_time=time.time())


# ---------------------------------------------------------------------------- the second factor


def enrolled(app: Flask, account: StaffAccount) -> StaffAccount:
    """The account after its first sign-in (enrolled, own password), signed out again."""
    client = app.test_client()
    login(client, account)
    sign_out(client)
    return account


@pytest.mark.parametrize("code", ["", "000000", "not a code"])
def test_an_enrolled_account_never_sees_its_secret_on_the_enrol_page(
    app: Flask, client: FlaskClient, staff: StaffAccount, code: str
) -> None:
    """The bypass: a wrong or empty code posted to the enrol step re-showed the secret."""
    enrolled(app, staff)
    assert staff.totp_secret
    password_step(client, staff.email, staff.password)
    token = csrf_token(client, "/coordinator/login/verify")
    response = client.post("/coordinator/login/enrol", data={"csrf_token": token, "code": code})
    assert response.status_code == 303
    assert response.headers["Location"] == "/coordinator/login/verify"
    for page in (response, client.get("/coordinator/login/enrol")):
        body = page.get_data(as_text=True)
        assert staff.totp_secret not in body.replace(" ", "")
        assert "<svg" not in body and "otpauth" not in body
    assert not signed_in(client)


@pytest.mark.parametrize("path", ["/coordinator/login/verify", "/coordinator/login/enrol"])
def test_empty_codes_are_counted_and_audited_like_wrong_ones(
    app: Flask, client: FlaskClient, staff: StaffAccount, path: str
) -> None:
    if path.endswith("verify"):
        enrolled(app, staff)
    password_step(client, staff.email, staff.password)
    if path.endswith("enrol"):
        client.get(path)
    before = actions(app).count("auth.login_failed")
    for _ in range(4):
        response = code_step(client, "", path)
        assert response.status_code == 422
        assert "Enter the 6-digit code." in response.get_data(as_text=True)
    assert actions(app).count("auth.login_failed") == before + 4
    response = code_step(client, "", path)  # the fifth failure locks the account
    assert response.status_code == 422 and actions(app).count("auth.locked") == 1
    assert password_step(client, staff.email, staff.password).status_code == 429
    assert not signed_in(client)


def test_the_secret_is_made_at_first_enrolment_not_at_creation(
    app: Flask, staff: StaffAccount
) -> None:
    """Whoever created the account never knew a secret; each sign-in attempt makes a new one."""
    with app.app_context():
        user = db.session.get(User, staff.id)
        assert user is not None and user.totp_secret is None
    first, second = app.test_client(), app.test_client()
    password_step(first, staff.email, staff.password)
    scanned_early = read_enrolment_secret(first, staff)
    password_step(second, staff.email, staff.password)
    fresh = read_enrolment_secret(second, staff)
    assert fresh != scanned_early
    early = StaffAccount(staff.id, staff.email, staff.role, staff.password, scanned_early)
    token = csrf_token(first, "/coordinator/login")
    stale = first.post(
        "/coordinator/login/enrol", data={"csrf_token": token, "code": next_code(early)}
    )
    assert stale.status_code == 303 and stale.headers["Location"] == "/coordinator/login"
    assert "started again from another sign-in" in first.get("/coordinator/login").get_data(
        as_text=True
    )
    assert code_step(second, next_code(staff), "/coordinator/login/enrol").status_code == 303
    started = [e.details for e in audit_rows(app) if e.action == "users.totp_enrolment_started"]
    assert started == ['{"replaced":false}', '{"replaced":true}']


def test_a_set_up_page_never_shows_the_key_another_sign_in_made(
    app: Flask, staff: StaffAccount
) -> None:
    """Whoever also holds the first password opens set-up first; the owner's set-up replaces the
    key. A reload of the first page must not show the owner's key (the takeover in review)."""
    creator, owner = app.test_client(), app.test_client()
    password_step(creator, staff.email, staff.password)
    creators_key = read_enrolment_secret(creator, staff)
    password_step(owner, staff.email, staff.password)
    owners_key = read_enrolment_secret(owner, staff)
    reload = creator.get("/coordinator/login/enrol")
    body = reload.get_data(as_text=True)
    assert reload.status_code == 303 and owners_key not in body.replace(" ", "")
    assert creators_key != owners_key
    assert code_step(owner, next_code(staff), "/coordinator/login/enrol").status_code == 303


def test_a_wrong_code_after_someone_else_enrolled_shows_no_secret(
    app: Flask, staff: StaffAccount
) -> None:
    """Two sign-ins at once: once one has enrolled, the other's enrol page has no key to show."""
    slow, quick = app.test_client(), app.test_client()
    password_step(slow, staff.email, staff.password)
    slow.get("/coordinator/login/enrol")
    token = csrf_token(slow, "/coordinator/login/enrol")
    password_step(quick, staff.email, staff.password)  # enrols with a secret of its own
    read_enrolment_secret(quick, staff)
    enrolled = code_step(quick, next_code(staff), "/coordinator/login/enrol")
    assert enrolled.headers["Location"] == "/coordinator/login/new-password"
    response = slow.post("/coordinator/login/enrol", data={"csrf_token": token, "code": "000000"})
    body = response.get_data(as_text=True)
    assert response.status_code == 303 and "<svg" not in body
    assert staff.totp_secret and staff.totp_secret not in body.replace(" ", "")


def test_first_sign_in_reaches_no_page_before_the_password_is_replaced(
    app: Flask, client: FlaskClient, staff: StaffAccount
) -> None:
    password_step(client, staff.email, staff.password)
    read_enrolment_secret(client, staff)
    response = code_step(client, next_code(staff), "/coordinator/login/enrol")
    assert response.headers["Location"] == "/coordinator/login/new-password"
    assert client.get("/coordinator/").status_code == 303  # to sign-in: no session yet
    path = "/coordinator/login/new-password"
    cases = [
        ({"new_password": "", "confirm_password": ""}, "new_password", "Enter a new password."),
        (
            {"new_password": "another long password", "confirm_password": "another long passw0rd"},
            "confirm_password",
            "The two new passwords do not match.",
        ),
        (
            {"new_password": "short", "confirm_password": "short"},
            "new_password",
            "The password must be at least 12 characters.",
        ),
        (
            {"new_password": staff.password, "confirm_password": staff.password},
            "new_password",
            "Choose a password different from the current one.",
        ),
    ]
    for data, field, message in cases:
        response = client.post(path, data={"csrf_token": csrf_token(client, path), **data})
        body = response.get_data(as_text=True)
        assert response.status_code == 422, message
        assert f'<a href="#{field}">{message}</a>' in body
        if data["new_password"]:
            assert f'value="{data["new_password"]}"' not in body  # passwords are not echoed
    assert not signed_in(client)
    choose_new_password(client, staff)
    assert signed_in(client)
    with app.app_context():
        user = db.session.get(User, staff.id)
        assert user is not None and not user.password_change_required
    fresh = app.test_client()
    assert password_step(fresh, staff.email, STAFF_PASSWORD).status_code == 422  # the old one
    assert password_step(fresh, staff.email, staff.password).status_code == 303


def test_the_new_password_step_expires_and_needs_the_code_step(
    client: FlaskClient, staff: StaffAccount
) -> None:
    path = "/coordinator/login/new-password"
    password_step(client, staff.email, staff.password)  # the password alone: not enough
    assert client.get(path).headers["Location"] == "/coordinator/login"
    password_step(client, staff.email, staff.password)
    read_enrolment_secret(client, staff)
    code_step(client, next_code(staff), "/coordinator/login/enrol")
    with client.session_transaction("/coordinator/") as session:
        session["pending"] = {**session["pending"], "at": session["pending"]["at"] - 301}
    assert client.get(path).headers["Location"] == "/coordinator/login"


# ---------------------------------------------------------------------------- refusals


def test_every_refusal_is_audited_with_the_page_but_not_the_query(
    app: Flask, staff: StaffAccount
) -> None:
    client = app.test_client()
    login(client, staff)
    response = client.get("/coordinator/users?email=patient-secret%40example.org")
    assert response.status_code == 403
    token = csrf_token(client, "/coordinator/")
    client.post(f"/coordinator/users/{staff.id}/disable", data={"csrf_token": token})
    denied = [e for e in audit_rows(app) if e.action == "access.denied"]
    assert [(e.actor, e.target) for e in denied] == [(staff.ref, staff.ref)] * 2
    assert [e.details for e in denied] == [
        '{"endpoint":"coordinator.users","method":"GET"}',
        '{"endpoint":"coordinator.users_disable","method":"POST"}',
    ]
    assert all("secret" not in f"{e.details}{e.target}" for e in denied)
    assert "users.disabled" not in actions(app)


def test_an_undeclared_view_refusal_is_audited_too(app: Flask, admin: StaffAccount) -> None:
    app.add_url_rule("/coordinator/forgotten", "coordinator.forgotten", lambda: "secret stuff")
    client = app.test_client()
    login(client, admin)
    assert client.get("/coordinator/forgotten").status_code == 403
    denied = [e.details for e in audit_rows(app) if e.action == "access.denied"]
    assert denied == ['{"endpoint":"coordinator.forgotten","method":"GET"}']
