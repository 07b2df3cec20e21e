"""Server-side records of staff sessions: what a person sees under "Your sessions" and ends.

The staff cookie (signed, see ``intake.coordinator.auth``) carries a random token; this table
keeps only its SHA-256, with when the session began, when it was last used, and the browser's
description and address, so its owner can recognise a device and end it from another. A
request whose token has no live row is signed out, whatever its cookie says.

Services take the caller's Session and flush; the caller commits.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.orm import Session

from intake import audit
from intake.models import StaffSession, User, utcnow

TOKEN_BYTES = 32
# How stale "last used" may get before a request writes it again: one write a minute per
# session at most, instead of one per request.
TOUCH_EVERY = timedelta(minutes=1)
# Ended and abandoned sessions are forgotten after this long (pruned at the owner's sign-in).
KEEP_FOR = timedelta(days=30)
USER_AGENT_LENGTH = 200


class SessionNotFound(Exception):
    """No live session of this user has that id (ended already, or someone else's)."""


@dataclass(frozen=True)
class Limits:
    """When a session stops being live: idle too long, or signed in too long ago."""

    idle: timedelta
    lifetime: timedelta

    def live_since(self, now: datetime) -> tuple[datetime, datetime]:
        return now - self.idle, now - self.lifetime


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def open_session(
    session: Session, user: User, *, user_agent: str, address: str, now: datetime | None = None
) -> str:
    """Record a new session of ``user`` and return its token (for the cookie only)."""
    now = now or utcnow()
    token = secrets.token_urlsafe(TOKEN_BYTES)
    session.add(
        StaffSession(
            token_hash=token_hash(token),
            user_id=user.id,
            started_at=now,
            last_seen_at=now,
            user_agent=_printable(user_agent)[:USER_AGENT_LENGTH],
            address=address[:45],
        )
    )
    session.execute(
        delete(StaffSession).where(
            StaffSession.user_id == user.id,
            StaffSession.last_seen_at < now - KEEP_FOR,
        )
    )
    session.flush()
    return token


# (marker in the User-Agent, name shown), most specific first: Edge and Opera also say Chrome,
# Chrome also says Safari.
_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("HeadlessChrome/", "Headless Chrome"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
)
_SYSTEMS = (
    ("iPhone", "iPhone"),
    ("iPad", "iPad"),
    ("Android", "Android"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


def browser_name(user_agent: str) -> str:
    """A name a person recognises their device by: "Firefox on Windows", or "Unknown browser"."""
    browser = next((name for mark, name in _BROWSERS if mark in user_agent), None)
    system = next((name for mark, name in _SYSTEMS if mark in user_agent), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or "Unknown browser"


def _printable(text: str) -> str:
    return "".join(char for char in text if char.isprintable())


def find_live(session: Session, user_id: int, token: str) -> StaffSession | None:
    """The live session of ``user_id`` with this cookie token, if there is one."""
    return session.scalars(
        select(StaffSession).where(
            StaffSession.token_hash == token_hash(token),
            StaffSession.user_id == user_id,
            StaffSession.ended_at.is_(None),
        )
    ).one_or_none()


def touch(session: Session, staff_session: StaffSession, now: datetime) -> bool:
    """Move "last used" to ``now`` when it is over a minute old; True if it wrote."""
    if now - staff_session.last_seen_at < TOUCH_EVERY:
        return False
    session.execute(
        update(StaffSession)
        .where(StaffSession.id == staff_session.id)
        .values(last_seen_at=now)
        .execution_options(synchronize_session=False)
    )
    return True


def live_sessions(
    session: Session, user: User, limits: Limits, now: datetime | None = None
) -> list[StaffSession]:
    """The user's sessions that are still live, newest first."""
    idle_after, started_after = limits.live_since(now or utcnow())
    return list(
        session.scalars(
            select(StaffSession)
            .where(
                StaffSession.user_id == user.id,
                StaffSession.ended_at.is_(None),
                StaffSession.last_seen_at > idle_after,
                StaffSession.started_at > started_after,
            )
            .order_by(StaffSession.started_at.desc(), StaffSession.id.desc())
        )
    )


def end_one(session: Session, user: User, session_id: uuid.UUID, *, actor: str) -> None:
    """End one of the user's own sessions (another device); raise if it is not live."""
    audit.lock_head(session)
    if not _end(session, user, StaffSession.id == session_id):
        raise SessionNotFound("that session has ended already")
    audit.record(
        session,
        actor=actor,
        action="auth.session_ended",
        target=user.ref,
        details={"session": str(session_id)},
    )


def end_others(session: Session, user: User, *, keep: str, actor: str) -> int:
    """End every session of the user but the one with token hash ``keep``; how many ended."""
    audit.lock_head(session)
    count = end_all(session, user, keep=keep)
    audit.record(
        session,
        actor=actor,
        action="auth.sessions_ended",
        target=user.ref,
        details={"count": count},
    )
    return count


def end_all(session: Session, user: User, *, keep: str | None = None) -> int:
    """Mark the user's live sessions ended (all, or all but ``keep``); not audited here."""
    if keep is None:
        return _end(session, user)
    return _end(session, user, StaffSession.token_hash != keep)


def _end(session: Session, user: User, *which: ColumnElement[bool]) -> int:
    """Mark the user's live sessions that match ``which`` ended; how many were."""
    statement = (
        update(StaffSession)
        .where(StaffSession.user_id == user.id, StaffSession.ended_at.is_(None), *which)
        .values(ended_at=utcnow())
    )
    return int(session.connection().execute(statement).rowcount)
