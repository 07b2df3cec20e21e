"""Records and staff accounts made through the real services, for tests that need them."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyotp
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from intake import accounts
from intake.extensions import db
from intake.models import Submission
from intake.sealing import Keyring
from intake.submissions import TriageFacts, store_submission


@dataclass(frozen=True)
class Statement:
    sql: str
    executemany: bool


@contextmanager
def sql_statements(engine: Engine) -> Iterator[list[Statement]]:
    """Every SQL statement ``engine`` sends while the block runs, in order."""
    statements: list[Statement] = []

    def record(*args: Any) -> None:  # conn, cursor, statement, parameters, context, executemany
        statements.append(Statement(args[2], bool(args[5])))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def facts(**overrides: Any) -> TriageFacts:
    values: dict[str, Any] = {
        "cancer_type": "breast",
        "age_band": "40-49",
        "consent_version": "2026-11-en-1",
        "consent_language": "en",
        "authorization_expires_at": datetime.now(UTC) + timedelta(days=365),
        "source": "test",
    }
    values.update(overrides)
    return TriageFacts(**values)


def personal(marker: str) -> dict[str, Any]:
    """Identifying fields, each carrying ``marker`` so raw storage can be searched for it."""
    return {
        "full_name": f"NAME-{marker}",
        "email": f"email-{marker.lower()}@example.org",
        "phone": f"+1 555 {marker}",
        "postal_code": f"ZIP-{marker}",
        "birthday": "1980-01-31",
        "free_text": f"FREETEXT-{marker}",
        "signature": f"SIGNATURE-{marker}",
    }


def make_submission(
    session: Session, keyring: Keyring, marker: str, **fact_overrides: Any
) -> Submission:
    fields = personal(marker)
    return store_submission(
        session,
        keyring,
        facts(**fact_overrides),
        fields,
        email=fields["email"],
        birthday=date(1980, 1, 31),
    )


# ---------------------------------------------------------------------------- staff accounts

STAFF_PASSWORD = "correct horse battery staple"
_staff_numbers = itertools.count(1)


@dataclass
class StaffAccount:
    """A staff user made through the real service, with what signing in as them takes."""

    id: int
    email: str
    role: str
    password: str
    # Made by the server when the owner opens the enrolment page; read from that page.
    totp_secret: str | None = None
    last_step: int = -1  # the newest TOTP step a helper has used: codes cannot be replayed

    @property
    def ref(self) -> str:
        return f"user:{self.id}"


def make_user(
    app: Flask, role: str = "coordinator", password: str = STAFF_PASSWORD, email: str = ""
) -> StaffAccount:
    """A committed account, not yet enrolled in two-factor (its first sign-in enrols it, and
    replaces its first password: see :func:`login`)."""
    with app.app_context():
        user = accounts.create_user(
            db.session(),
            email or f"staff{next(_staff_numbers)}@example.org",
            role,
            password,
            actor="cli:test",
        )
        db.session.commit()
        return StaffAccount(user.id, user.email, user.role, password)


def next_code(account: StaffAccount) -> str:
    """A TOTP code the server will accept: newer than any used, within its ±1 step window.

    Uses the current step, then the next one, so one account can sign in twice per 30 s.
    """
    assert account.totp_secret, "the account has not opened its enrolment page yet"
    totp = pyotp.TOTP(account.totp_secret)
    current = totp.timecode(datetime.now(UTC))
    step = max(current, account.last_step + 1)
    if step > current + 1:
        raise RuntimeError("an account signs in at most twice per 30 s here; make another one")
    account.last_step = step
    return totp.generate_otp(step)


CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
SHOWN_SECRET = re.compile(r'<code class="staff-secret">([A-Z2-7 ]+)</code>')


def csrf_token(client: FlaskClient, path: str) -> str:
    """The CSRF token of the form on the page at ``path`` (fetching it, as a browser would)."""
    body = client.get(path).get_data(as_text=True)
    match = CSRF_FIELD.search(body)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def read_enrolment_secret(client: FlaskClient, account: StaffAccount) -> str:
    """Open the enrolment page as its owner would, and keep the key it shows (the only place)."""
    page = client.get("/coordinator/login/enrol")
    assert page.status_code == 200, page.status_code
    match = SHOWN_SECRET.search(page.get_data(as_text=True))
    assert match, "no key on the enrolment page"
    account.totp_secret = match.group(1).replace(" ", "")
    return account.totp_secret


def new_password_for(account: StaffAccount) -> str:
    return f"{account.password} (own)"


def login(client: FlaskClient, account: StaffAccount) -> TestResponse:
    """Sign in through the real pages, as the account's owner would.

    Password, then the enrolment page (whose key is read, as an authenticator app would scan
    it) or the code page, then, at a first sign-in, the page that replaces the first password
    (``account.password`` is updated).
    """
    response = client.post(
        "/coordinator/login",
        data={
            "csrf_token": csrf_token(client, "/coordinator/login"),
            "email": account.email,
            "password": account.password,
        },
    )
    assert response.status_code == 303, response.status_code
    second_step = response.headers["Location"]
    if second_step.endswith("/enrol"):
        read_enrolment_secret(client, account)
    response = client.post(
        second_step,
        data={"csrf_token": csrf_token(client, second_step), "code": next_code(account)},
    )
    assert response.status_code == 303, response.get_data(as_text=True)
    if response.headers["Location"].endswith("/login/new-password"):
        response = choose_new_password(client, account)
    return response


def choose_new_password(client: FlaskClient, account: StaffAccount) -> TestResponse:
    """The first sign-in's last step: replace the first password with the owner's own."""
    path = "/coordinator/login/new-password"
    new = new_password_for(account)
    response = client.post(
        path,
        data={"csrf_token": csrf_token(client, path), "new_password": new, "confirm_password": new},
    )
    assert response.status_code == 303, response.get_data(as_text=True)
    account.password = new
    return response
