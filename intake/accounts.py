"""Staff accounts: creation, sign-in with password and TOTP, throttling, disabling.

Services take the caller's Session, flush, and never commit; each writes its audit row in the
same transaction. A failed sign-in raises *after* recording the failure, so the caller must
commit on that path too: the failure count and its audit row are the point.

Credentials belong to the account's owner. Whoever creates an account (or resets it) sets a
first password that must be changed at the first sign-in, and never sees a TOTP secret: the
secret is made when the owner, past the password step, opens the enrolment page.

Throttling is atomic: every sign-in step first locks the throttle rows of the typed account and
of the client address (creating them if needed), then checks the lockout, then does the
password or code work. Concurrent guesses at one account therefore queue on its row, and a
lockout reached by one of them refuses all that follow. Lock order: throttle rows (account,
then address), then the audit head, then the user row.

Audit rows name accounts as ``user:<id>``, never by email, and their details are codes only.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import NoReturn, cast

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import ColumnElement, Table, delete, select, tuple_, update
from sqlalchemy.orm import Session

from intake import audit, staff_sessions
from intake.database import insert_unless_taken
from intake.models import ROLES, LoginThrottle, User, utcnow

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; this only bounds the work per request
ANONYMOUS = "anonymous"
EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
CODE_SHAPE = re.compile(r"\d{6}")
TOTP_VALID_WINDOW = 1  # the previous, current and next 30-second step
THROTTLE_LOCK_ATTEMPTS = 3

# argon2-cffi's defaults are RFC 9106's second recommended profile: argon2id, 3 passes over
# 64 MiB, 4 lanes, 16-byte salt, 32-byte hash. Hashes record their parameters, so raising
# them later rehashes each password at its owner's next sign-in.
_hasher = PasswordHasher()


class AccountError(Exception):
    """A request about an account was refused; the message is safe to show to its operator."""


class InvalidEmail(AccountError):
    pass


class WeakPassword(AccountError):
    pass


class InvalidRole(AccountError):
    pass


class DuplicateEmail(AccountError):
    pass


class UnknownUser(AccountError):
    pass


class AlreadyEnrolled(AccountError):
    """The account has a second factor already: its secret is never shown again."""


class SamePassword(WeakPassword):
    pass


class AuthenticationFailed(AccountError):
    """Wrong email, password or code, or a disabled account: deliberately one error."""


class LoginThrottled(AuthenticationFailed):
    """Too many failures for this account or this address; try again after ``until``."""

    def __init__(self, until: datetime) -> None:
        super().__init__("too many failed sign-ins; try again later")
        self.until = until


@dataclass(frozen=True)
class LoginGuard:
    """Throttling limits and the key that turns emails and addresses into opaque row keys."""

    key: bytes
    account_failures: int = 5
    ip_failures: int = 20
    window: timedelta = timedelta(minutes=15)
    lockout: timedelta = timedelta(minutes=15)

    def digest(self, scope: str, value: str) -> str:
        return hmac.new(self.key, f"{scope}|{value}".encode(), hashlib.sha256).hexdigest()


def guard_from_secret(secret_key: str) -> LoginGuard:
    """The guard every worker derives alike from the shared SECRET_KEY."""
    key = hmac.new(secret_key.encode(), b"intake/login-throttle", hashlib.sha256).digest()
    return LoginGuard(key=key)


# ---------------------------------------------------------------------------- accounts


def normalize_email(raw: str) -> str:
    email = raw.strip().casefold()
    if len(email) > 254 or not EMAIL_SHAPE.fullmatch(email):
        raise InvalidEmail("enter an email address like name@example.org")
    return email


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"the password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"the password must be at most {MAX_PASSWORD_LENGTH} characters")


def find_user(session: Session, email: str) -> User | None:
    try:
        normalized = normalize_email(email)
    except InvalidEmail:
        return None
    return session.scalars(select(User).where(User.email == normalized)).one_or_none()


def get_user(session: Session, email: str) -> User:
    user = find_user(session, email)
    if user is None:
        raise UnknownUser("no account has that email address")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.email)))


def create_user(session: Session, email: str, role: str, password: str, *, actor: str) -> User:
    """A new account with a first password its owner must change, and no TOTP secret yet.

    Its first sign-in makes the secret, enrols it, and asks for a new password.
    """
    normalized = normalize_email(email)
    if role not in ROLES:
        raise InvalidRole(f"the role must be one of {', '.join(ROLES)}")
    check_password(password)
    audit.lock_head(session)  # serializes account changes: the duplicate check cannot race
    if find_user(session, normalized) is not None:
        raise DuplicateEmail("an account with that email address exists")
    user = User(
        email=normalized,
        role=role,
        password_hash=_hasher.hash(password),
        totp_secret=None,
        session_version=1,
        password_change_required=True,
    )
    session.add(user)
    session.flush()
    audit.record(
        session, actor=actor, action="users.created", target=user.ref, details={"role": role}
    )
    return user


def disable_user(session: Session, user: User, *, actor: str) -> bool:
    """Disable the account and end its sessions; False if it was disabled already."""
    if not user.active:
        return False
    audit.lock_head(session)
    user.disabled_at = utcnow()
    _end_every_session(session, user)
    audit.record(session, actor=actor, action="users.disabled", target=user.ref)
    return True


def reset_2fa(session: Session, user: User, *, actor: str) -> None:
    """Forget the TOTP secret; the owner enrols a new one at the next sign-in.

    Every session of the user ends. Nobody sees the new secret but the owner, who gets it on
    the enrolment page after the password step.
    """
    audit.lock_head(session)
    user.totp_secret = None
    user.totp_enrolled_at = None
    user.last_totp_step = None
    _end_every_session(session, user)
    audit.record(session, actor=actor, action="users.totp_reset", target=user.ref)


def start_enrolment(session: Session, user: User) -> None:
    """Make a fresh TOTP secret for an account that has no second factor yet.

    Called when the owner, past the password step, opens the enrolment page: the secret
    exists only from then on, so nobody who created or reset the account ever knew it.
    """
    if user.totp_enrolled_at is not None:
        raise AlreadyEnrolled("two-step verification is set up already")
    audit.lock_head(session)
    replaced = user.totp_secret is not None
    user.totp_secret = pyotp.random_base32()
    user.last_totp_step = None
    audit.record(
        session,
        actor=user.ref,
        action="users.totp_enrolment_started",
        target=user.ref,
        # Another sign-in had started set-up and not finished: two people may hold the
        # first password. The older set-up page stops working (intake.coordinator.auth).
        details={"replaced": replaced},
    )


def enrolment_binding(secret: str) -> str:
    """What a sign-in keeps of the secret it was shown: a later set-up (another sign-in)
    replaces the secret, and this no longer matches, so its page is never shown the new one."""
    return hashlib.sha256(f"intake/totp-enrolment|{secret}".encode()).hexdigest()[:32]


def change_password(
    session: Session, user: User, new_password: str, *, actor: str, keep: str | None = None
) -> None:
    """Set the owner's new password; every other session of the user ends.

    ``keep`` is the token hash of the session that made the change (it stays signed in). The
    new password must differ from the current one, so a forced change really replaces the
    password the account's creator knew.
    """
    check_password(new_password)
    if _password_matches(user.password_hash, new_password[:MAX_PASSWORD_LENGTH]):
        raise SamePassword("choose a password different from the current one")
    audit.lock_head(session)
    forced = user.password_change_required
    user.password_hash = _hasher.hash(new_password)
    user.password_change_required = False
    user.password_changed_at = utcnow()
    _end_every_session(session, user, keep=keep)
    audit.record(
        session,
        actor=actor,
        action="users.password_changed",
        target=user.ref,
        details={"forced": forced},
    )


def _end_every_session(session: Session, user: User, *, keep: str | None = None) -> None:
    """Every cookie of the user stops working (version) and every row ends, but ``keep``'s."""
    user.session_version += 1
    staff_sessions.end_all(session, user, keep=keep)


def totp_issuer(organization: str) -> str:
    """The name authenticator apps show next to the code: the organization staff work for."""
    return organization


def provisioning_uri(user: User, issuer: str) -> str:
    """The ``otpauth://`` URI an authenticator app scans; it holds the secret."""
    if user.totp_secret is None:
        raise AccountError("two-step verification has not been started for this account")
    return pyotp.TOTP(user.totp_secret).provisioning_uri(name=user.email, issuer_name=issuer)


def end_sessions(session: Session, user: User, *, actor: str) -> None:
    """Sign out: every session of this user, on every device, ends at its next request."""
    audit.lock_head(session)
    _end_every_session(session, user)
    audit.record(session, actor=actor, action="auth.logout", target=user.ref)


# ---------------------------------------------------------------------------- sign-in


@cache
def _dummy_hash() -> str:
    """A hash with the current parameters, verified when no account matches."""
    return _hasher.hash(secrets.token_urlsafe(16))


def _password_matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def authenticate(
    session: Session, email: str, password: str, *, ip: str, guard: LoginGuard
) -> User:
    """First factor. Returns the user, or raises one generic error for every kind of failure.

    An unknown email is verified against a dummy hash, so it costs the same argon2 work as a
    known one and the response time says nothing about which accounts exist.
    """
    now = utcnow()
    typed = email.strip().casefold()[:254]
    keys = _throttle_keys(guard, typed, ip)
    user = find_user(session, typed)
    _lock_throttles(session, keys, now, user)
    if user is None:
        _password_matches(_dummy_hash(), password[:MAX_PASSWORD_LENGTH])
        _fail(session, guard, keys, now, user, reason="password")
    elif not _password_matches(user.password_hash, password[:MAX_PASSWORD_LENGTH]):
        _fail(session, guard, keys, now, user, reason="password")
    elif not user.active:
        _fail(session, guard, keys, now, user, reason="disabled")
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user


def verify_totp(
    session: Session,
    user: User,
    code: str,
    *,
    ip: str,
    guard: LoginGuard,
    at: datetime | None = None,
) -> None:
    """Second factor, with the replay guard; on success the sign-in is complete and audited.

    A code is accepted for the previous, current or next time step, and only for a step newer
    than the last one accepted, so no code works twice. The user row is locked, so two requests
    racing with one code cannot both win. The first success also completes enrolment. An
    empty code is a failure like a wrong one: counted and audited.
    """
    now = at or utcnow()
    keys = _throttle_keys(guard, user.email, ip)
    _lock_throttles(session, keys, now, user)
    locked = _accept_code(session, guard, keys, now, user, code)
    if locked.totp_enrolled_at is None:
        locked.totp_enrolled_at = now
        audit.record(session, actor=locked.ref, action="users.totp_enrolled", target=locked.ref)
    audit.record(session, actor=locked.ref, action="auth.login", target=locked.ref)


def reauthenticate(
    session: Session,
    user: User,
    password: str,
    code: str,
    *,
    ip: str,
    guard: LoginGuard,
    at: datetime | None = None,
) -> None:
    """Both factors again, before a signed-in user changes a credential.

    Failures count towards the same lockout as sign-in, so a stolen session cannot be used
    to guess the password.
    """
    now = at or utcnow()
    keys = _throttle_keys(guard, user.email, ip)
    _lock_throttles(session, keys, now, user)
    if not _password_matches(user.password_hash, password[:MAX_PASSWORD_LENGTH]):
        _fail(session, guard, keys, now, user, reason="password")
    _accept_code(session, guard, keys, now, user, code)
    audit.record(session, actor=user.ref, action="auth.reauthenticated", target=user.ref)


def _throttle_keys(guard: LoginGuard, email: str, ip: str) -> dict[str, str]:
    return {"account": guard.digest("account", email), "ip": guard.digest("ip", ip)}


def _accept_code(
    session: Session,
    guard: LoginGuard,
    keys: dict[str, str],
    now: datetime,
    user: User,
    code: str,
) -> User:
    """Check ``code`` against the locked user row and use up its time step; the row."""
    audit.lock_head(session)
    locked = session.scalars(
        select(User)
        .where(User.id == user.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    step = _matching_step(locked.totp_secret, code, now)
    if step is None or not locked.active:
        _fail(session, guard, keys, now, locked, reason="totp" if locked.active else "disabled")
    if locked.last_totp_step is not None and step <= locked.last_totp_step:
        _fail(session, guard, keys, now, locked, reason="totp_replay")
    locked.last_totp_step = step
    # Reset in place, never delete: another attempt may be waiting for this very row's lock,
    # and a deleted row would let it through uncounted.
    session.execute(
        update(LoginThrottle)
        .where(_throttle_row("account", keys["account"]))
        .values(failures=0, locked_until=None, window_start=now)
        .execution_options(synchronize_session=False)
    )
    return locked


def _matching_step(secret: str | None, code: str, now: datetime) -> int | None:
    code = code.replace(" ", "")
    if secret is None or not CODE_SHAPE.fullmatch(code):
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    for step in range(current - TOTP_VALID_WINDOW, current + TOTP_VALID_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


# ---------------------------------------------------------------------------- throttling


def _throttle_row(scope: str, key: str) -> ColumnElement[bool]:
    return (LoginThrottle.scope == scope) & (LoginThrottle.key == key)


_THROTTLES = cast(Table, LoginThrottle.__table__)


def _lock_throttles(
    session: Session, keys: dict[str, str], now: datetime, user: User | None
) -> None:
    """Lock this attempt's throttle rows, then refuse if either is locked out.

    Runs before any password or code work, and the row locks last until the caller commits,
    so concurrent attempts at one account (or from one address) are judged one at a time:
    none can pass the check on a count that another is about to raise. Rows are made if
    missing (a new row counts nothing) and locked in one order, account then address.
    Unknown emails lock exactly like real ones, so a lockout reveals nothing either.
    """
    rows: Sequence[LoginThrottle] = ()
    for _attempt in range(THROTTLE_LOCK_ATTEMPTS):
        for scope, key in keys.items():
            row = {"scope": scope, "key": key, "window_start": now, "failures": 0}
            insert_unless_taken(session, _THROTTLES, row)
        rows = session.scalars(
            select(LoginThrottle)
            .where(_throttle_row("account", keys["account"]) | _throttle_row("ip", keys["ip"]))
            .order_by(LoginThrottle.scope, LoginThrottle.key)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).all()
        if len(rows) == len(keys):
            break
        # Pruned by another attempt between the insert and the lock: make it again.
    else:
        raise LoginThrottled(now + timedelta(seconds=1))  # never judge an uncounted attempt
    until = max(
        (row.locked_until for row in rows if row.locked_until and row.locked_until > now),
        default=None,
    )
    if until is not None:
        _audit_failure(session, user, reason="locked")
        raise LoginThrottled(until)


def _fail(
    session: Session,
    guard: LoginGuard,
    keys: dict[str, str],
    now: datetime,
    user: User | None,
    *,
    reason: str,
) -> NoReturn:
    """Count the failure for the account and the address, audit it, then raise.

    The throttle rows are locked already (:func:`_lock_throttles`); the audit head comes after.
    """
    limits = {"account": guard.account_failures, "ip": guard.ip_failures}
    for scope, key in keys.items():
        if _count_failure(session, guard, scope, key, now, limits[scope]):
            target = user.ref if (scope == "account" and user is not None) else None
            audit.record(
                session,
                actor=ANONYMOUS,
                action="auth.locked",
                target=target,
                details={"scope": scope, "minutes": int(guard.lockout.total_seconds() // 60)},
            )
    _audit_failure(session, user, reason=reason)
    _prune(session, guard, now)
    raise AuthenticationFailed("the email address, password or code is not right")


def _count_failure(
    session: Session, guard: LoginGuard, scope: str, key: str, now: datetime, limit: int
) -> bool:
    """Add one failure to the row's window; True if this failure locked it."""
    row = session.scalars(select(LoginThrottle).where(_throttle_row(scope, key))).one()
    expired_lock = row.locked_until is not None and row.locked_until <= now
    if expired_lock or row.window_start + guard.window <= now:
        row.window_start, row.failures, row.locked_until = now, 0, None
    row.failures += 1
    locks = row.failures >= limit and row.locked_until is None
    if locks:
        row.locked_until = now + guard.lockout
    session.flush()
    return locks


def _audit_failure(session: Session, user: User | None, *, reason: str) -> None:
    audit.record(
        session,
        actor=ANONYMOUS,
        action="auth.login_failed",
        target=user.ref if user is not None else None,
        details={"reason": reason},
    )


def _prune(session: Session, guard: LoginGuard, now: datetime) -> None:
    """Forget windows long over, so rows for one-off typos and scans do not pile up.

    Rows another sign-in holds locked are skipped (PostgreSQL: ``SKIP LOCKED``): waiting for
    them while holding this attempt's own rows could deadlock two attempts in a cycle.
    """
    stale = (
        select(LoginThrottle.scope, LoginThrottle.key)
        .where(
            LoginThrottle.window_start < now - guard.window - guard.lockout,
            (LoginThrottle.locked_until.is_(None)) | (LoginThrottle.locked_until < now),
        )
        .with_for_update(skip_locked=True)
    )
    session.execute(
        delete(LoginThrottle).where(tuple_(LoginThrottle.scope, LoginThrottle.key).in_(stale))
    )
