"""Typed SQLAlchemy 2 models.

Plaintext columns are the non-identifying ones triage must query (DESIGN.md, "What stays
plaintext"); everything that identifies a person lives in the sealed columns of
:class:`SealedMixin`.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    Uuid,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, registry

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use datetime.now(UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def uuid7() -> uuid.UUID:
    """Time-ordered UUID (RFC 9562 version 7): new rows land at the end of the index."""
    millis = time.time_ns() // 1_000_000
    value = (millis & ((1 << 48) - 1)) << 80
    value |= int.from_bytes(os.urandom(10), "big") & ((1 << 80) - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # variant
    return uuid.UUID(int=value)


class Base(DeclarativeBase):
    registry = registry(
        metadata=MetaData(naming_convention=NAMING_CONVENTION),
        type_annotation_map={datetime: UTCDateTime},
    )


class SealedMixin:
    """Columns of a record sealed by ``intake.sealing``; NULL after crypto-shredding."""

    key_id: Mapped[str | None] = mapped_column(String(64), index=True)
    wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    sealed_payload: Mapped[bytes | None] = mapped_column(LargeBinary)

    if TYPE_CHECKING:  # provided by each sealed model
        __tablename__: str
        id: Mapped[uuid.UUID]

    def seal_binding(self) -> str:
        """What the ciphertext is bound to; a blob moved to another row will not open."""
        return self.binding_for(self)

    @classmethod
    def binding_columns(cls) -> tuple[Any, ...]:
        """The columns :meth:`binding_for` reads: select these to bind rows without loading them."""
        return (cls.id,)

    @classmethod
    def binding_for(cls, row: Any) -> str:
        """``seal_binding`` of ``row``: a model instance, or a selected row of binding_columns."""
        if row.id is None:
            raise ValueError("set the row's id before sealing: the ciphertext is bound to it")
        return f"{cls.__tablename__}:{row.id}"


class Submission(SealedMixin, Base):
    """One person's expression of interest and records-release authorization."""

    __tablename__ = "submissions"
    __table_args__ = (
        Index("ix_submissions_received", "received_at", "id"),
        Index("ix_submissions_status_received", "status", "received_at", "id"),
        Index("ix_submissions_cancer_received", "cancer_type", "received_at", "id"),
        # The triage list's other filters, each walked in keyset order (intake/triage.py).
        Index("ix_submissions_age_band_received", "age_band", "received_at", "id"),
        Index("ix_submissions_source_received", "source", "received_at", "id"),
        Index("ix_submissions_assignee_received", "assignee_id", "received_at", "id"),
        # Each filter then the status: the capped status counts and filter + status lists
        # are one index range each (migration 0005, intake/triage.py status_counts).
        Index(
            "ix_submissions_cancer_status_received", "cancer_type", "status", "received_at", "id"
        ),
        Index("ix_submissions_age_band_status_received", "age_band", "status", "received_at", "id"),
        Index("ix_submissions_source_status_received", "source", "status", "received_at", "id"),
        Index(
            "ix_submissions_assignee_status_received", "assignee_id", "status", "received_at", "id"
        ),
        Index("ix_submissions_submit_token_hash", "submit_token_hash", unique=True),
        # The retention job's query: authorizations still live, by expiry.
        Index(
            "ix_submissions_expiry_pending",
            "authorization_expires_at",
            sqlite_where=text("shredded_at IS NULL"),
            postgresql_where=text("shredded_at IS NULL"),
        ),
        CheckConstraint(
            "(shredded_at IS NULL) = (sealed_payload IS NOT NULL)", name="sealed_unless_shredded"
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid7)
    reference: Mapped[str] = mapped_column(String(16), unique=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    cancer_type: Mapped[str] = mapped_column(String(40))
    age_band: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(24), default="new")
    source: Mapped[str | None] = mapped_column(String(300))
    consent_version: Mapped[str] = mapped_column(String(40))
    consent_language: Mapped[str] = mapped_column(String(8))
    authorization_expires_at: Mapped[datetime]
    # The consent record (DESIGN.md): the typed signature itself is sealed. Nullable only for
    # rows made before migration 0002; every submission since carries all four.
    consent_text_sha256: Mapped[str | None] = mapped_column(String(64))
    signer_role: Mapped[str | None] = mapped_column(String(24))
    signed_at: Mapped[datetime | None]
    # Idempotency: a replayed POST of the same rendered form finds its first submission.
    submit_token_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    withdrawal_code_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    email_index: Mapped[bytes | None] = mapped_column(LargeBinary(32), index=True)
    email_birthday_index: Mapped[bytes | None] = mapped_column(LargeBinary(32), index=True)
    shredded_at: Mapped[datetime | None]
    row_version: Mapped[int] = mapped_column(Integer, default=1)
    # The coordinator or admin working on it (intake/triage.py); NULL while unassigned.
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012 - SQLAlchemy's own hook


class AuditEvent(Base):
    """One link of the append-only, hash-chained audit trail."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    occurred_at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(120))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str | None] = mapped_column(String(120), index=True)  # a submission's history
    details: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class DisclosedSubmission(Base):
    """A submission an export sent: the accounting of disclosures, one small row each.

    ``event_id`` is that batch's ``submissions.disclosed`` audit row, whose details hold the
    SHA-256 of the batch's references, so the chain vouches for these rows
    (``triage.verify_disclosures``) without an audit row per submission. Keyed by the
    submission first: its history reads one index range.
    """

    __tablename__ = "disclosures"
    __table_args__ = ({"sqlite_with_rowid": False},)

    submission_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("submissions.id"), primary_key=True)
    # No foreign key: the audit table's own guards (append-only, no TRUNCATE) must stay the
    # first thing any change to it meets; an id naming no batch row is reported by the check.
    event_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)


class AuditHead(Base):
    """The chain's tip, locked by each writer so concurrent appends cannot fork the chain."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_event_id: Mapped[int] = mapped_column(Integer)
    last_hash: Mapped[str] = mapped_column(String(64))


class SealingKey(Base):
    """A key id's right to seal, shared by every deployment through the database.

    Key files live on each host; this row is what lets ``keys retire`` stop every host, even
    one whose folder still holds the old key, from sealing a record nobody could open.
    """

    __tablename__ = "sealing_keys"

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    first_used_at: Mapped[datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[datetime | None]


class DailyCount(Base):
    """Counters with no identity attached (e.g. honeypot hits per day), for operators."""

    __tablename__ = "daily_counts"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


ROLES = ("admin", "coordinator", "auditor")


class User(Base):
    """A staff account. Staff emails are work identities, not PHI, so they are plain columns.

    ``totp_secret`` is a credential stored like the password hash's neighbour: plaintext base32,
    protected as the database is (docs/security.md, "Accounts", says why it is not sealed). It is
    NULL until the account's owner starts enrolment at their first sign-in, so whoever created
    the account never sees the secret that is used. ``password_change_required`` holds a new
    account (or one whose password an admin set) at a "choose your own password" step.
    """

    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('admin', 'coordinator', 'auditor')", name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)  # stripped and casefolded
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))  # argon2id, PHC string format
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    totp_enrolled_at: Mapped[datetime | None]
    # The newest TOTP time step accepted: a code of this step or an older one is a replay.
    last_totp_step: Mapped[int | None] = mapped_column(Integer)
    disabled_at: Mapped[datetime | None]
    # Part of every staff session; bumping it ends all of that user's sessions at once.
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    password_change_required: Mapped[bool] = mapped_column(Boolean, default=True)
    password_changed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def active(self) -> bool:
        return self.disabled_at is None

    @property
    def ref(self) -> str:
        """How audit rows name this account: never by its email."""
        return f"user:{self.id}"


class StaffSession(Base):
    """One signed-in staff session, so its owner can see it and end it from another device.

    The cookie carries a random token; only its SHA-256 is stored, so a copy of this table does
    not let anyone resume a session. Ended sessions keep their row (with ``ended_at``) until the
    retention of :func:`intake.staff_sessions.prune`.
    """

    __tablename__ = "staff_sessions"
    __table_args__ = (Index("ix_staff_sessions_user_started", "user_id", "started_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid7)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
    # What the owner needs to recognise the device: the browser's own description and address.
    user_agent: Mapped[str] = mapped_column(String(200), default="")
    address: Mapped[str] = mapped_column(String(45), default="")


class LoginThrottle(Base):
    """Failed sign-ins counted per account and per client address, shared by every worker.

    ``key`` is an HMAC of the typed email or of the address, so the table holds neither.
    """

    __tablename__ = "login_throttles"
    __table_args__ = (
        CheckConstraint("scope IN ('account', 'ip')", name="scope"),
        Index("ix_login_throttles_window_start", "window_start"),
    )

    scope: Mapped[str] = mapped_column(String(8), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_start: Mapped[datetime]
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]


class Note(SealedMixin, Base):
    """A coordinator's note on a submission, sealed like the submission (it may hold PHI).

    Only the author, the submission and the time are plaintext. Crypto-shredding the
    submission deletes its notes (``submissions.shred_submission``).
    """

    __tablename__ = "notes"
    __table_args__ = (
        Index("ix_notes_submission_created", "submission_id", "created_at"),
        CheckConstraint("sealed_payload IS NOT NULL", name="sealed"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid7)
    submission_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("submissions.id"))
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @classmethod
    def binding_columns(cls) -> tuple[Any, ...]:
        return (cls.id, cls.submission_id)

    @classmethod
    def binding_for(cls, row: Any) -> str:
        """Bound to its submission too: a note copied onto another submission will not open."""
        if row.id is None or row.submission_id is None:
            raise ValueError("set the note's id and submission before sealing")
        return f"{cls.__tablename__}:{row.id}:submissions:{row.submission_id}"


SEALED_MODELS: tuple[type[SealedMixin], ...] = (Submission, Note)
SEALED_CHILDREN: tuple[type[Note], ...] = (Note,)
"""Sealed tables whose rows belong to a submission (``submission_id``): crypto-shredding the
submission deletes them in its transaction, and migration 0006's triggers refuse them on a
shredded submission. A new such table goes here and into those triggers."""
