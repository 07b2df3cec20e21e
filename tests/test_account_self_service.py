"""A staff member's own account: change the password, see and end their other sessions."""

from __future__ import annotations

import re
import time

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from intake import staff_sessions
from intake.extensions import db
from intake.models import AuditEvent, StaffSession, User
from tests.factories import StaffAccount, csrf_token, login, make_user, next_code

CHANGE = "/coordinator/account/password"
AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
)


@pytest.fixture
def staff(app: Flask) -> StaffAccount:
    return make_user(app, role="coordinator")


def signed_in(client: FlaskClient) -> bool:
    response = client.get("/coordinator/")
    return response.status_code == 200 and "Signed in as" in response.get_data(as_text=True)


def audit_rows(app: Flask, action: str) -> list[AuditEvent]:
    with app.app_context():
        return list(
            db.session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


def devices(app: Flask, account: StaffAccount, count: int) -> list[FlaskClient]:
    """``count`` browsers signed in as ``account``: the first through the real pages.

    The others are sessions as a sign-in elsewhere leaves them (a row and a cookie): an
    account can pass the code step only twice per 30 s, and these tests need the codes.
    """
    clients = []
    for number in range(count):
        client = app.test_client()
        client.environ_base["HTTP_USER_AGENT"] = AGENTS[number]
        if number == 0:
            login(client, account)
        else:
            _signed_in_elsewhere(app, client, account, AGENTS[number])
        clients.append(client)
    return clients


def _signed_in_elsewhere(
    app: Flask, client: FlaskClient, account: StaffAccount, user_agent: str
) -> None:
    with app.app_context():
        user = db.session.get(User, account.id)
        assert user is not None
        token = staff_sessions.open_session(
            db.session(), user, user_agent=user_agent, address="192.0.2.9"
        )
        db.session.commit()
        version = user.session_version
    now = int(time.time())
    with client.session_transaction("/coordinator/") as cookie:
        cookie.update(uid=account.id, sv=version, sid=token, login_at=now, seen_at=now, nonce="n")
    assert signed_in(client)


def change(client: FlaskClient, **fields: str) -> TestResponse:
    return client.post(CHANGE, data={"csrf_token": csrf_token(client, CHANGE), **fields})


def test_account_page_lists_this_and_other_sessions(app: Flask, staff: StaffAccount) -> None:
    laptop, _phone = devices(app, staff, 2)
    page = laptop.get("/coordinator/account").get_data(as_text=True)
    assert staff.email in page and "Your sessions" in page
    assert "Firefox on Linux (this session)" in page and "Safari on iPhone" in page
    assert page.count("(this session)") == 1 and page.count(">End session<") == 1
    assert "End all other sessions" in page


def test_ending_another_session_signs_that_device_out(app: Flask, staff: StaffAccount) -> None:
    laptop, phone = devices(app, staff, 2)
    page = laptop.get("/coordinator/account").get_data(as_text=True)
    (end_path,) = re.findall(r'action="(/coordinator/account/sessions/[0-9a-f-]+/end)"', page)
    response = laptop.post(end_path, data={"csrf_token": csrf_token(laptop, "/coordinator/")})
    assert response.status_code == 303
    assert not signed_in(phone) and signed_in(laptop)
    (event,) = audit_rows(app, "auth.session_ended")
    assert (event.actor, event.target) == (staff.ref, staff.ref)
    again = laptop.post(end_path, data={"csrf_token": csrf_token(laptop, "/coordinator/")})
    assert "That session had ended already." in laptop.get(again.headers["Location"]).get_data(
        as_text=True
    )


def test_nobody_can_end_someone_elses_session(app: Flask, staff: StaffAccount) -> None:
    (victim,) = devices(app, staff, 1)
    other = make_user(app, role="coordinator")
    (attacker,) = devices(app, other, 1)
    with app.app_context():
        victim_session = db.session.scalars(
            select(StaffSession.id).where(StaffSession.user_id == staff.id)
        ).one()
    token = csrf_token(attacker, "/coordinator/")
    attacker.post(f"/coordinator/account/sessions/{victim_session}/end", data={"csrf_token": token})
    assert signed_in(victim)
    assert not audit_rows(app, "auth.session_ended")


def test_end_all_other_sessions_keeps_this_one(app: Flask, staff: StaffAccount) -> None:
    first, second, third = devices(app, staff, 3)
    token = csrf_token(first, "/coordinator/")
    response = first.post("/coordinator/account/sessions/end-others", data={"csrf_token": token})
    assert "Ended 2 other sessions." in first.get(response.headers["Location"]).get_data(
        as_text=True
    )
    assert signed_in(first) and not signed_in(second) and not signed_in(third)
    (event,) = audit_rows(app, "auth.sessions_ended")
    assert event.details == '{"count":2}'


def test_sign_out_ends_the_session_row_too(app: Flask, staff: StaffAccount) -> None:
    (client,) = devices(app, staff, 1)
    token = csrf_token(client, "/coordinator/")
    client.post("/coordinator/logout", data={"csrf_token": token})
    with app.app_context():
        ended = db.session.scalars(select(StaffSession.ended_at)).all()
    assert ended and all(ended)


def test_the_cookie_token_is_not_stored(app: Flask, staff: StaffAccount) -> None:
    (client,) = devices(app, staff, 1)
    with client.session_transaction("/coordinator/") as cookie:
        token = cookie["sid"]
    with app.app_context():
        stored = db.session.scalars(select(StaffSession)).one()
    assert token not in (stored.token_hash, str(stored.id)) and len(stored.token_hash) == 64


def test_password_change_needs_both_factors_and_ends_the_other_sessions(
    app: Flask, staff: StaffAccount
) -> None:
    here, elsewhere = devices(app, staff, 2)
    new = "a completely new passphrase"
    missing = change(here, new_password=new, confirm_password=new)
    body = missing.get_data(as_text=True)
    assert missing.status_code == 422
    assert '<a href="#current_password">Enter your current password.</a>' in body
    assert '<a href="#code">Enter the 6-digit code.</a>' in body
    wrong = change(
        here,
        current_password="not my password",
        code="000000",
        new_password=new,
        confirm_password=new,
    )
    assert wrong.status_code == 422
    assert "Your current password is not right." in wrong.get_data(as_text=True)
    failed = [e.details for e in audit_rows(app, "auth.login_failed")]
    assert failed == ['{"reason":"password"}']
    done = change(
        here,
        current_password=staff.password,
        code=next_code(staff),
        new_password=new,
        confirm_password=new,
    )
    assert done.status_code == 303
    assert signed_in(here) and not signed_in(elsewhere)
    assert [e.details for e in audit_rows(app, "users.password_changed")][-1] == (
        '{"forced":false}'
    )
    assert len(audit_rows(app, "auth.reauthenticated")) == 1


def test_staff_pages_link_to_the_account_page(app: Flask, staff: StaffAccount) -> None:
    (client,) = devices(app, staff, 1)
    assert 'href="/coordinator/account"' in client.get("/coordinator/").get_data(as_text=True)


@pytest.mark.parametrize(
    ("user_agent", "name"),
    [
        (AGENTS[0], "Firefox on Linux"),
        (AGENTS[1], "Safari on iPhone"),
        (AGENTS[2], "Edge on Windows"),
        ("curl/8.5.0", "Unknown browser"),
        ("", "Unknown browser"),
    ],
)
def test_sessions_are_named_by_browser_and_system(user_agent: str, name: str) -> None:
    assert staff_sessions.browser_name(user_agent) == name


def test_a_hostile_user_agent_is_stored_short_and_shown_escaped(app: Flask) -> None:
    account = make_user(app)
    client = app.test_client()
    client.environ_base["HTTP_USER_AGENT"] = "<script>alert(1)</script>\x00" + "A" * 5000
    login(client, account)
    page = client.get("/coordinator/account").get_data(as_text=True)
    assert "<script>alert(1)" not in page
    with app.app_context():
        stored = db.session.scalars(select(StaffSession.user_agent)).one()
    assert len(stored) == staff_sessions.USER_AGENT_LENGTH and "\x00" not in stored


def test_a_refused_new_password_still_uses_up_the_code(app: Flask, staff: StaffAccount) -> None:
    (client,) = devices(app, staff, 1)
    code = next_code(staff)
    weak = change(
        client, current_password=staff.password, code=code, new_password="x", confirm_password="x"
    )
    assert weak.status_code == 422
    assert "at least 12 characters" in weak.get_data(as_text=True)
    new = "a completely new passphrase"
    again = change(
        client, current_password=staff.password, code=code, new_password=new, confirm_password=new
    )
    assert again.status_code == 422  # the same code, replayed: refused
    failed = [e.details for e in audit_rows(app, "auth.login_failed")]
    assert failed == ['{"reason":"totp_replay"}']
