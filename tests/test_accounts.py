"""Account services: argon2id, TOTP with a replay guard, throttling kept in the database."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from argon2 import PasswordHasher
from flask import Flask
from sqlalchemy import delete, select, update

from intake import accounts, staff_sessions
from intake.extensions import db
from intake.models import AuditEvent, LoginThrottle, User
from tests.conftest import TEST_SECRET, AppFactory
from tests.factories import STAFF_PASSWORD, StaffAccount, make_user

GUARD = accounts.guard_from_secret(TEST_SECRET)
IP = "198.51.100.7"
LIMITS = staff_sessions.Limits(idle=timedelta(minutes=15), lifetime=timedelta(hours=12))
token_hash = staff_sessions.token_hash


@pytest.fixture
def ctx(app: Flask) -> Iterator[Flask]:
    with app.app_context():
        yield app


def user_row(account: StaffAccount) -> User:
    db.session.expire_all()
    user = db.session.get(User, account.id)
    assert user is not None
    return user


def audit_rows(action: str) -> list[AuditEvent]:
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def sign_in(email: str, password: str, ip: str = IP) -> User:
    """One password attempt, committed whatever its outcome, as the login view does."""
    try:
        return accounts.authenticate(db.session(), email, password, ip=ip, guard=GUARD)
    finally:
        db.session.commit()


def submit_code(user: User, code: str, at: datetime | None = None) -> None:
    try:
        accounts.verify_totp(db.session(), user, code, ip=IP, guard=GUARD, at=at)
    finally:
        db.session.commit()


def code_at(account: StaffAccount, when: datetime) -> str:
    assert account.totp_secret
    return pyotp.TOTP(account.totp_secret).at(when)


def enrolling(account: StaffAccount) -> StaffAccount:
    """The account once its owner has opened the enrolment page: it has a secret now."""
    user = user_row(account)
    accounts.start_enrolment(db.session(), user)
    db.session.commit()
    account.totp_secret = user.totp_secret
    return account


# ---------------------------------------------------------------------------- creating


def test_create_user_stores_argon2id_and_audits_without_the_email(ctx: Flask) -> None:
    account = make_user(ctx, role="admin", email="  Ada.Lovelace@Example.ORG ")
    user = user_row(account)
    assert user.email == "ada.lovelace@example.org"
    assert user.password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert STAFF_PASSWORD not in user.password_hash
    assert user.totp_secret is None and user.totp_enrolled_at is None  # made at first sign-in
    assert user.password_change_required and user.password_changed_at is None
    assert user.session_version == 1 and user.active
    (event,) = audit_rows("users.created")
    assert (event.actor, event.target, event.details) == (
        "cli:test",
        account.ref,
        '{"role":"admin"}',
    )


@pytest.mark.parametrize(
    ("email", "role", "password", "error"),
    [
        ("not-an-email", "coordinator", STAFF_PASSWORD, accounts.InvalidEmail),
        ("a@example.org", "owner", STAFF_PASSWORD, accounts.InvalidRole),
        ("a@example.org", "coordinator", "elevenchars", accounts.WeakPassword),
        ("a@example.org", "coordinator", "x" * 1025, accounts.WeakPassword),
    ],
)
def test_create_user_refuses_bad_input(
    ctx: Flask, email: str, role: str, password: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        accounts.create_user(db.session(), email, role, password, actor="cli:test")
    db.session.rollback()
    assert accounts.list_users(db.session()) == []


def test_emails_are_unique_whatever_their_case(ctx: Flask) -> None:
    make_user(ctx, email="sam@example.org")
    with pytest.raises(accounts.DuplicateEmail):
        accounts.create_user(db.session(), "SAM@example.org", "admin", STAFF_PASSWORD, actor="x")


def test_list_users_is_sorted_by_email(ctx: Flask) -> None:
    for email in ("b@example.org", "a@example.org"):
        make_user(ctx, email=email)
    assert [u.email for u in accounts.list_users(db.session())] == [
        "a@example.org",
        "b@example.org",
    ]


# ---------------------------------------------------------------------------- passwords


def test_right_password_signs_in_and_wrong_one_fails_generically(ctx: Flask) -> None:
    account = make_user(ctx)
    assert sign_in(account.email.upper(), STAFF_PASSWORD).id == account.id
    with pytest.raises(accounts.AuthenticationFailed) as wrong:
        sign_in(account.email, STAFF_PASSWORD + "x")
    with pytest.raises(accounts.AuthenticationFailed) as unknown:
        sign_in("nobody@example.org", STAFF_PASSWORD)
    assert type(wrong.value) is type(unknown.value)
    assert str(wrong.value) == str(unknown.value)
    failures = audit_rows("auth.login_failed")
    assert [(e.target, e.details) for e in failures] == [
        (account.ref, '{"reason":"password"}'),
        (None, '{"reason":"password"}'),
    ]


def test_unknown_account_pays_the_same_hash_cost(
    ctx: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = make_user(ctx)
    calls: list[str] = []
    original = PasswordHasher.verify

    def counting(self: PasswordHasher, hash: str, password: str | bytes) -> bool:
        calls.append(hash)
        return original(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", counting)
    with pytest.raises(accounts.AuthenticationFailed):
        sign_in(account.email, "wrong password here")
    with pytest.raises(accounts.AuthenticationFailed):
        sign_in("nobody@example.org", "wrong password here")
    assert len(calls) == 2
    known, unknown = calls
    assert known == user_row(account).password_hash
    # The dummy hash has the very parameters of a real one, so it costs the same.
    assert unknown != known and unknown.split("$")[:4] == known.split("$")[:4]


def test_disabled_account_fails_like_a_wrong_password(ctx: Flask) -> None:
    account = make_user(ctx)
    assert accounts.disable_user(db.session(), user_row(account), actor="cli:test")
    db.session.commit()
    with pytest.raises(accounts.AuthenticationFailed, match="not right"):
        sign_in(account.email, STAFF_PASSWORD)
    assert audit_rows("auth.login_failed")[-1].details == '{"reason":"disabled"}'


# ---------------------------------------------------------------------------- throttling


def fail_times(email: str, times: int, ip: str = IP) -> None:
    for _ in range(times):
        with pytest.raises(accounts.AuthenticationFailed):
            sign_in(email, "wrong password here", ip=ip)


def test_five_failures_lock_the_account_even_for_the_right_password(ctx: Flask) -> None:
    account = make_user(ctx)
    fail_times(account.email, 4)
    assert sign_in(account.email, STAFF_PASSWORD)  # four are allowed
    fail_times(account.email, 5)
    with pytest.raises(accounts.LoginThrottled) as locked:
        sign_in(account.email, STAFF_PASSWORD, ip="203.0.113.99")  # another address too
    assert locked.value.until > datetime.now(UTC) + timedelta(minutes=14)
    (lock,) = audit_rows("auth.locked")
    assert (lock.target, lock.details) == (account.ref, '{"minutes":15,"scope":"account"}')
    assert audit_rows("auth.login_failed")[-1].details == '{"reason":"locked"}'


def test_unknown_accounts_lock_exactly_like_real_ones(ctx: Flask) -> None:
    fail_times("nobody@example.org", 5)
    with pytest.raises(accounts.LoginThrottled):
        sign_in("nobody@example.org", STAFF_PASSWORD)


def test_lock_ends_after_its_time(ctx: Flask) -> None:
    account = make_user(ctx)
    fail_times(account.email, 5)
    past = datetime.now(UTC) - timedelta(seconds=1)
    db.session.execute(update(LoginThrottle).values(locked_until=past))
    db.session.commit()
    assert sign_in(account.email, STAFF_PASSWORD).id == account.id


def test_twenty_failures_lock_the_address_for_every_account(ctx: Flask) -> None:
    account = make_user(ctx)
    for number in range(20):
        fail_times(f"guess{number}@example.org", 1)
    with pytest.raises(accounts.LoginThrottled):
        sign_in(account.email, STAFF_PASSWORD)
    assert sign_in(account.email, STAFF_PASSWORD, ip="192.0.2.1").id == account.id
    assert [e.details for e in audit_rows("auth.locked")] == ['{"minutes":15,"scope":"ip"}']


def test_lockout_is_shared_by_every_worker(make_app: AppFactory) -> None:
    """Two app instances on one database stand for two gunicorn workers."""
    first, second = make_app(), make_app()
    account = make_user(first)
    with first.app_context():
        fail_times(account.email, 5)
    with second.app_context(), pytest.raises(accounts.LoginThrottled):
        sign_in(account.email, STAFF_PASSWORD)


def test_throttle_rows_hold_neither_email_nor_address(ctx: Flask) -> None:
    fail_times("someone@example.org", 1)
    rows = db.session.scalars(select(LoginThrottle)).all()
    assert {row.scope for row in rows} == {"account", "ip"}
    for row in rows:
        assert len(row.key) == 64 and "example" not in row.key and IP not in row.key


# ---------------------------------------------------------------------------- TOTP


def test_code_completes_sign_in_enrols_and_audits_once(ctx: Flask) -> None:
    account = enrolling(make_user(ctx))
    now = datetime.now(UTC)
    submit_code(user_row(account), code_at(account, now), at=now)
    user = user_row(account)
    assert user.totp_enrolled_at is not None
    assert user.last_totp_step == pyotp.TOTP(account.totp_secret).timecode(now)
    assert len(audit_rows("users.totp_enrolled")) == 1
    (login,) = audit_rows("auth.login")
    assert (login.actor, login.target, login.details) == (account.ref, account.ref, "{}")


def test_wrong_code_fails_and_counts_towards_the_lock(ctx: Flask) -> None:
    account = enrolling(make_user(ctx))
    now = datetime.now(UTC)
    right = code_at(account, now)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    for code in (wrong, "12345", "abcdef", ""):
        with pytest.raises(accounts.AuthenticationFailed):
            submit_code(user_row(account), code, at=now)
    assert user_row(account).totp_enrolled_at is None
    fail_times(account.email, 1)
    with pytest.raises(accounts.LoginThrottled):
        submit_code(user_row(account), right, at=now)
    assert len(audit_rows("auth.locked")) == 1


def test_a_code_cannot_be_replayed(ctx: Flask) -> None:
    account = enrolling(make_user(ctx))
    now = datetime.now(UTC)
    code = code_at(account, now)
    submit_code(user_row(account), code, at=now)
    with pytest.raises(accounts.AuthenticationFailed):
        submit_code(user_row(account), code, at=now)
    assert audit_rows("auth.login_failed")[-1].details == '{"reason":"totp_replay"}'
    earlier = now - timedelta(seconds=30)  # a code older than the one used is refused too
    with pytest.raises(accounts.AuthenticationFailed):
        submit_code(user_row(account), code_at(account, earlier), at=now)
    later = now + timedelta(seconds=30)
    submit_code(user_row(account), code_at(account, later), at=now)  # the next step is fine
    assert len(audit_rows("auth.login")) == 2


def test_codes_are_accepted_one_step_either_side_only(ctx: Flask) -> None:
    account = enrolling(make_user(ctx))
    now = datetime.now(UTC)
    with pytest.raises(accounts.AuthenticationFailed):
        submit_code(user_row(account), code_at(account, now - timedelta(seconds=61)), at=now)
    submit_code(user_row(account), code_at(account, now - timedelta(seconds=30)), at=now)
    submit_code(user_row(account), code_at(account, now + timedelta(seconds=30)), at=now)


def test_disabled_between_password_and_code_fails(ctx: Flask) -> None:
    account = enrolling(make_user(ctx))
    user = sign_in(account.email, STAFF_PASSWORD)
    accounts.disable_user(db.session(), user_row(account), actor="cli:test")
    db.session.commit()
    with pytest.raises(accounts.AuthenticationFailed):
        submit_code(user, code_at(account, datetime.now(UTC)))


# ---------------------------------------------------------------------------- changes


def test_disable_ends_sessions_once(ctx: Flask) -> None:
    account = make_user(ctx)
    assert accounts.disable_user(db.session(), user_row(account), actor="user:99")
    db.session.commit()
    assert not accounts.disable_user(db.session(), user_row(account), actor="user:99")
    user = user_row(account)
    assert user.disabled_at is not None and user.session_version == 2
    (event,) = audit_rows("users.disabled")
    assert (event.actor, event.target) == ("user:99", account.ref)


def test_reset_2fa_makes_a_new_secret_to_enrol_again(ctx: Flask) -> None:
    account = enrolling(make_user(ctx))
    now = datetime.now(UTC)
    submit_code(user_row(account), code_at(account, now), at=now)
    accounts.reset_2fa(db.session(), user_row(account), actor="cli:test")
    db.session.commit()
    user = user_row(account)
    assert user.totp_secret is None  # the next enrolment makes a new one, for its owner only
    assert user.totp_enrolled_at is None and user.last_totp_step is None
    assert user.session_version == 2
    with pytest.raises(accounts.AuthenticationFailed):  # the old secret's codes are dead
        submit_code(user, code_at(account, now + timedelta(seconds=30)), at=now)
    assert len(audit_rows("users.totp_reset")) == 1


def test_end_sessions_bumps_the_version_and_audits(ctx: Flask) -> None:
    account = make_user(ctx)
    accounts.end_sessions(db.session(), user_row(account), actor=account.ref)
    db.session.commit()
    assert user_row(account).session_version == 2
    assert len(audit_rows("auth.logout")) == 1


def test_provisioning_uri_names_the_issuer(ctx: Flask) -> None:
    account = enrolling(make_user(ctx, email="kim@example.org"))
    uri = accounts.provisioning_uri(user_row(account), issuer="Mercy Oncology")
    assert uri.startswith("otpauth://totp/Mercy%20Oncology:kim%40example.org?secret=")
    assert f"secret={account.totp_secret}" in uri


def test_no_audit_row_names_an_email(ctx: Flask) -> None:
    account = make_user(ctx)
    fail_times(account.email, 5)
    fail_times("nobody@example.org", 1)
    rows = db.session.scalars(select(AuditEvent)).all()
    assert len(rows) > 5
    for row in rows:
        assert "@" not in f"{row.actor}{row.target}{row.details}"


# ---------------------------------------------------------------------------- concurrent guesses


def _race(app: Flask, attempts: int, attempt: Callable[[], str]) -> list[str]:
    """Run ``attempts`` calls of ``attempt`` at once, each in its own thread and session."""
    barrier = threading.Barrier(attempts)
    outcomes: list[str] = []

    def run() -> None:
        with app.app_context():
            barrier.wait()
            try:
                outcomes.append(attempt())
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run) for _ in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(outcomes) == attempts
    return outcomes


def _outcome(call: Callable[[], object]) -> str:
    try:
        call()
    except accounts.LoginThrottled:
        db.session.commit()
        return "throttled"
    except accounts.AuthenticationFailed:
        db.session.commit()
        return "failed"
    db.session.commit()
    return "accepted"


def test_concurrent_wrong_passwords_cannot_pass_the_lockout(app: Flask) -> None:
    """All at once, no more guesses are judged than the limit, and the lock holds after them.

    Before the throttle rows were locked first, 80 concurrent guesses on PostgreSQL were each
    checked against a count none of them had raised yet: 27 were judged.
    """
    account = make_user(app)
    outcomes = _race(
        app,
        16,
        lambda: _outcome(
            lambda: accounts.authenticate(
                db.session(), account.email, "wrong password here", ip=IP, guard=GUARD
            )
        ),
    )
    assert outcomes.count("failed") == GUARD.account_failures
    assert outcomes.count("throttled") == 16 - GUARD.account_failures
    with app.app_context():
        judged = [e.details for e in audit_rows("auth.login_failed")]
        assert judged.count('{"reason":"password"}') == GUARD.account_failures
        assert len(audit_rows("auth.locked")) == 1
        with pytest.raises(accounts.LoginThrottled):
            sign_in(account.email, STAFF_PASSWORD)


def test_concurrent_wrong_codes_cannot_pass_the_lockout(app: Flask) -> None:
    account = make_user(app)
    with app.app_context():
        enrolling(account)
    outcomes = _race(
        app,
        16,
        lambda: _outcome(
            lambda: accounts.verify_totp(
                db.session(), user_row(account), "000000", ip=IP, guard=GUARD
            )
        ),
    )
    assert outcomes.count("failed") == GUARD.account_failures
    assert outcomes.count("throttled") == 16 - GUARD.account_failures
    with app.app_context(), pytest.raises(accounts.LoginThrottled):
        submit_code(user_row(account), code_at(account, datetime.now(UTC)))


# ---------------------------------------------------------------------------- own credentials


def test_start_enrolment_refuses_an_enrolled_account(ctx: Flask) -> None:
    account = enrolling(make_user(ctx))
    now = datetime.now(UTC)
    submit_code(user_row(account), code_at(account, now), at=now)
    with pytest.raises(accounts.AlreadyEnrolled):
        accounts.start_enrolment(db.session(), user_row(account))
    assert user_row(account).totp_secret == account.totp_secret


def test_change_password_needs_a_different_strong_one_and_ends_other_sessions(
    ctx: Flask,
) -> None:
    account = make_user(ctx)
    user = user_row(account)
    for weak, error in [
        ("short", accounts.WeakPassword),
        (STAFF_PASSWORD, accounts.SamePassword),
    ]:
        with pytest.raises(error):
            accounts.change_password(db.session(), user, weak, actor=account.ref)
        db.session.rollback()
    kept = staff_sessions.open_session(db.session(), user_row(account), user_agent="A", address="")
    staff_sessions.open_session(db.session(), user_row(account), user_agent="B", address="")
    db.session.commit()
    user = user_row(account)
    accounts.change_password(
        db.session(), user, "a brand new passphrase", actor=account.ref, keep=token_hash(kept)
    )
    db.session.commit()
    user = user_row(account)
    assert not user.password_change_required and user.password_changed_at is not None
    assert user.session_version == 2
    live = staff_sessions.live_sessions(db.session(), user, LIMITS)
    assert [row.user_agent for row in live] == ["A"]
    (event,) = audit_rows("users.password_changed")
    assert (event.actor, event.target, event.details) == (
        account.ref,
        account.ref,
        '{"forced":true}',
    )
    with pytest.raises(accounts.AuthenticationFailed):
        sign_in(account.email, STAFF_PASSWORD)
    assert sign_in(account.email, "a brand new passphrase")


def reauthenticate(account: StaffAccount, password: str, code: str, at: datetime) -> None:
    try:
        accounts.reauthenticate(
            db.session(), user_row(account), password, code, ip=IP, guard=GUARD, at=at
        )
    finally:
        db.session.commit()


def test_reauthentication_counts_failures_towards_the_lockout(ctx: Flask) -> None:
    account = enrolling(make_user(ctx))
    now = datetime.now(UTC)
    with pytest.raises(accounts.AuthenticationFailed):
        reauthenticate(account, "wrong password!", code_at(account, now), now)
    with pytest.raises(accounts.AuthenticationFailed):
        reauthenticate(account, STAFF_PASSWORD, "", now)
    reasons = [e.details for e in audit_rows("auth.login_failed")]
    assert reasons == ['{"reason":"password"}', '{"reason":"totp"}']
    fail_times(account.email, 3)
    with pytest.raises(accounts.LoginThrottled):
        reauthenticate(account, STAFF_PASSWORD, code_at(account, now), now)
    assert not audit_rows("auth.reauthenticated")


def test_a_throttle_row_deleted_while_an_attempt_waits_is_made_again(pg_app: Flask) -> None:
    """An attempt waiting for its account row's lock while another deletes it (pruning, say)
    must still be counted and audited: before, it found the row gone and answered 500."""
    account = make_user(pg_app)
    with pg_app.app_context():
        key = GUARD.digest("account", account.email)
        sign_in(account.email, STAFF_PASSWORD)  # the account row exists
        holder = db.session.registry()  # this thread's session: holds the row lock
        holder.scalars(
            select(LoginThrottle)
            .where(LoginThrottle.scope == "account", LoginThrottle.key == key)
            .with_for_update()
        ).one()
        outcome: list[str] = []

        def guess() -> None:
            with pg_app.app_context():
                outcome.append(
                    _outcome(
                        lambda: accounts.authenticate(
                            db.session(), account.email, "wrong password here", ip=IP, guard=GUARD
                        )
                    )
                )
                db.session.remove()

        thread = threading.Thread(target=guess)
        thread.start()
        thread.join(timeout=1.0)
        assert thread.is_alive(), "the guess did not wait for the row lock"
        holder.execute(
            delete(LoginThrottle).where(LoginThrottle.scope == "account", LoginThrottle.key == key)
        )
        holder.commit()
        thread.join(timeout=30)
        assert outcome == ["failed"]
        row = db.session.scalars(
            select(LoginThrottle).where(LoginThrottle.scope == "account", LoginThrottle.key == key)
        ).one()
        assert row.failures == 1
        assert [e.details for e in audit_rows("auth.login_failed")] == ['{"reason":"password"}']
