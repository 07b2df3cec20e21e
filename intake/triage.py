"""Triage services: the list and its filters, search, workflow, assignment, notes, export rows.

Services take the session, raise the domain errors below, flush and never commit. Each action
writes exactly one audit row in the caller's transaction, with ids and codes only. Nothing
here opens sealed data except :func:`open_detail` (after ``submissions.open_submission`` has
audited the reveal) and :func:`iter_export_rows` (after the caller committed the export's row).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime, time, timedelta
from itertools import groupby
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Select,
    bindparam,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.orm import Session, load_only
from sqlalchemy.orm.exc import StaleDataError

from intake import audit
from intake.database import read_ahead
from intake.keys import claim_for_sealing
from intake.models import (
    AuditEvent,
    DisclosedSubmission,
    Note,
    Submission,
    User,
    utcnow,
    uuid7,
)
from intake.sealing import Keyring, SealedBlob, SealingError
from intake.submissions import SubmissionGone, normalize_code, open_submission

# ---------------------------------------------------------------------------- the workflow

STATUS_LABELS = {
    "new": "New",
    "in_review": "In review",
    "contacted": "Contacted",
    "records_requested": "Records requested",
    "records_received": "Records received",
    "referred": "Referred",
    "not_eligible": "Not eligible",
    "unreachable": "Unreachable",
    "withdrawn": "Withdrawn",
}
STATUSES = tuple(STATUS_LABELS)
"""Every status a submission can have. There is no "enrolled" or "participating": the
authorization releases records only, so trial participation is never recorded here."""

TRANSITIONS: Mapping[str, frozenset[str]] = {
    "new": frozenset({"in_review", "not_eligible", "unreachable"}),
    "in_review": frozenset({"contacted", "not_eligible", "unreachable"}),
    "contacted": frozenset({"records_requested", "not_eligible", "unreachable"}),
    "records_requested": frozenset({"records_received", "not_eligible", "unreachable"}),
    "records_received": frozenset({"referred", "not_eligible"}),
    "unreachable": frozenset({"in_review", "contacted"}),  # they answered after all
    "not_eligible": frozenset({"in_review"}),  # reopened, e.g. a new trial fits
    "referred": frozenset(),
    "withdrawn": frozenset(),  # set only by the patient's withdrawal or by expiry
}
"""Which status a coordinator may move a submission to, from each status."""

TRIAGE_ROLES = ("coordinator", "admin")
PAGE_SIZE = 50
MAX_NOTE_LENGTH = 4000
SEARCH_LIMIT = 100
DUPLICATE_LIMIT = 50

EXPORT_REASONS = {
    "irb_report": "Report to the IRB or a sponsor",
    "referral_batch": "Referral batch to a trial site",
    "quality_review": "Data quality review",
    "other": "Other",
}
"""Why an export was made: the audit row stores the code (free text could hold PHI)."""


class TriageError(Exception):
    """A triage action was refused; the message is safe to show staff."""


class IllegalTransition(TriageError):
    def __init__(self, current: str, wanted: str) -> None:
        super().__init__(
            f"A submission that is {STATUS_LABELS.get(current, current)!r} cannot move to "
            f"{STATUS_LABELS.get(wanted, wanted)!r}."
        )


class StaleSubmission(TriageError):
    def __init__(self) -> None:
        super().__init__(
            "Someone else changed this submission after you opened it, so your change was not "
            "saved. Open it again to see its current state, then make your change again."
        )


class InvalidAssignee(TriageError):
    def __init__(self) -> None:
        super().__init__("Choose an active coordinator or admin.")


class InvalidNote(TriageError):
    def __init__(self) -> None:
        super().__init__(f"Write a note of 1 to {MAX_NOTE_LENGTH} characters.")


# ---------------------------------------------------------------------------- filters

_CODE = re.compile(r"[a-z0-9_-]{1,40}")
_AGE_BAND = re.compile(r"[0-9+-]{1,16}")


@dataclass(frozen=True)
class Filters:
    """The list's filters: non-identifying values only, so they may sit in a URL."""

    status: str | None = None
    cancer_type: str | None = None
    received_from: date | None = None
    received_to: date | None = None
    age_band: str | None = None
    assignee: str | None = None  # "none", or a user id
    source: str | None = None
    reference: str | None = None

    @classmethod
    def parse(cls, values: Mapping[str, str]) -> tuple[Filters, list[tuple[str, str]]]:
        """Read filters from a query string or form; bad values are dropped and reported."""
        errors: list[tuple[str, str]] = []
        parsed: dict[str, Any] = {}
        for field in fields(cls):
            raw = (values.get(field.name) or "").strip()
            if not raw:
                continue
            value = _parse_filter(field.name, raw)
            if value is None:
                errors.append((field.name, FILTER_ERRORS[field.name]))
            else:
                parsed[field.name] = value
        return cls(**parsed), errors

    def args(self) -> dict[str, str]:
        """The filters as query-string arguments (empty ones left out)."""
        return {
            field.name: str(value)
            for field in fields(self)
            if (value := getattr(self, field.name)) is not None
        }

    def without_status(self) -> Filters:
        return replace(self, status=None)


FILTER_ERRORS = {
    "status": "Choose a status from the list",
    "cancer_type": "Choose a cancer type from the list",
    "received_from": "Enter the first day as a date, like 2026-11-01",
    "received_to": "Enter the last day as a date, like 2026-11-30",
    "age_band": "Choose an age band from the list",
    "assignee": "Choose an assignee from the list",
    "source": "Enter a source of at most 300 characters",
    "reference": "Enter a reference like 7KQ2-M9XD",
}


def _parse_filter(name: str, raw: str) -> Any:
    if name == "status":
        return raw if raw in STATUS_LABELS else None
    if name == "cancer_type":
        return raw if _CODE.fullmatch(raw) else None
    if name in {"received_from", "received_to"}:
        try:
            return date.fromisoformat(raw)
        except ValueError:
            return None
    if name == "age_band":
        return raw if _AGE_BAND.fullmatch(raw) else None
    if name == "assignee":
        return raw if raw == "none" or (raw.isdigit() and len(raw) < 10) else None
    if name == "source":
        return raw if len(raw) <= 300 and raw.isprintable() else None
    code = normalize_code(raw)
    return code if 0 < len(code) <= 16 else None


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _conditions(filters: Filters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    equal = {
        "status": Submission.status,
        "cancer_type": Submission.cancer_type,
        "age_band": Submission.age_band,
        "source": Submission.source,
        "reference": Submission.reference,
    }
    for name, column in equal.items():
        value = getattr(filters, name)
        if value is not None:
            conditions.append(column == value)
    if filters.received_from is not None:
        conditions.append(Submission.received_at >= _day_start(filters.received_from))
    if filters.received_to is not None:
        end = _day_start(filters.received_to) + timedelta(days=1)
        conditions.append(Submission.received_at < end)
    if filters.assignee == "none":
        conditions.append(Submission.assignee_id.is_(None))
    elif filters.assignee is not None:
        conditions.append(Submission.assignee_id == int(filters.assignee))
    return conditions


# ---------------------------------------------------------------------------- keyset pages

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_cursor(received_at: datetime, submission_id: uuid.UUID) -> str:
    """An opaque position: where the next page starts, after (received_at, id).

    Not signed: a forged cursor only moves the reader within what the filters allow.
    """
    micros = (received_at - _EPOCH) // timedelta(microseconds=1)
    raw = f"{micros}.{submission_id.hex}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID] | None:
    """The position in ``cursor``, or None if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        micros, hex_id = raw.split(".")
        return _EPOCH + timedelta(microseconds=int(micros)), uuid.UUID(hex=hex_id)
    except (ValueError, binascii.Error, OverflowError):
        return None


def _older_than(received_at: Any, submission_id: Any) -> ColumnElement[bool]:
    """Rows after a position in newest-first order: ``(received_at, id) < (:at, :id)``.

    One row-value comparison is one range of the keyset index (after any equality prefix,
    e.g. the status) on SQLite and PostgreSQL, so a page starts where the last one ended. The
    equivalent ``received_at < :at OR (received_at = :at AND id < :id)`` is not on SQLite: it
    walked the index from the newest row for every page (measured: deep pages and the export
    grew quadratic).
    """
    return tuple_(Submission.received_at, Submission.id) < tuple_(received_at, submission_id)


def _after(position: tuple[datetime, uuid.UUID]) -> ColumnElement[bool]:
    received_at, submission_id = position
    return _older_than(
        literal(received_at, Submission.received_at.type),
        literal(submission_id, Submission.id.type),
    )


_NEWEST_FIRST = (Submission.received_at.desc(), Submission.id.desc())
_LIST_COLUMNS = load_only(
    Submission.reference,
    Submission.received_at,
    Submission.cancer_type,
    Submission.age_band,
    Submission.status,
    Submission.assignee_id,
    Submission.source,
    Submission.shredded_at,
)


@dataclass(frozen=True)
class Page:
    rows: list[Submission]
    next_cursor: str | None


def list_page(
    session: Session, filters: Filters, *, cursor: str | None = None, size: int = PAGE_SIZE
) -> Page:
    """One page, newest first. Loads plaintext columns only: the list never opens anything."""
    query = select(Submission).options(_LIST_COLUMNS).where(*_conditions(filters))
    position = decode_cursor(cursor) if cursor else None
    if position is not None:
        query = query.where(_after(position))
    rows = list(session.scalars(query.order_by(*_NEWEST_FIRST).limit(size + 1)))
    if len(rows) <= size:
        return Page(rows, None)
    last = rows[size - 1]
    return Page(rows[:size], encode_cursor(last.received_at, last.id))


STATUS_COUNT_CAP = 1_000
"""Each status's count stops here and shows as "1,000+": a queue that long is weeks of a
coordinator's work, and the count then costs at most this many index entries per status however
large the table (each filter has an index that leads with it, then the status: migration 0005).
Measured at 100,000 rows, the unfiltered counts take ~2 ms with 1,000 and 10-20 ms with 10,000
(SQLite-PostgreSQL) of the page's 50 ms budget; see bench/dashboard.py."""


@dataclass(frozen=True)
class StatusCount:
    """How many submissions have one status: exactly ``count``, or more when ``more``."""

    count: int
    more: bool = False


def _capped_count(status: str, conditions: list[ColumnElement[bool]], cap: int) -> Any:
    """At most ``cap + 1`` matching rows of ``status``, counted: one index range, bounded."""
    matching = (
        select(literal_column("1")).where(Submission.status == status, *conditions).limit(cap + 1)
    ).subquery()
    return select(func.count()).select_from(matching).scalar_subquery()


def status_counts(
    session: Session, filters: Filters, *, cap: int = STATUS_COUNT_CAP
) -> dict[str, StatusCount]:
    """How many submissions have each status, under every filter but the status itself.

    One statement, one capped count per status: a count above ``cap`` comes back as
    ``StatusCount(cap, more=True)``, so the cost stays bounded however many rows match.
    """
    conditions = _conditions(filters.without_status())
    query = select(*(_capped_count(status, conditions, cap) for status in STATUSES))
    row = session.execute(query).one()
    return {
        status: StatusCount(cap, True) if count > cap else StatusCount(count)
        for status, count in zip(STATUSES, row, strict=True)
    }


def assignable_users(session: Session) -> list[User]:
    """Active coordinators and admins, who may be assigned submissions."""
    query = (
        select(User)
        .where(User.role.in_(TRIAGE_ROLES), User.disabled_at.is_(None))
        .order_by(User.email)
    )
    return list(session.scalars(query))


def staff_emails(session: Session) -> dict[int, str]:
    """Every staff account's email by id, to name assignees and actors."""
    return {row.id: row.email for row in session.execute(select(User.id, User.email))}


# ---------------------------------------------------------------------------- finding


def find_by_reference(session: Session, reference: str) -> Submission | None:
    code = normalize_code(reference)
    query = select(Submission).where(Submission.reference == code)
    return session.scalars(query).one_or_none()


def search_by_email(
    session: Session, keyring: Keyring, email: str, *, actor: str
) -> list[Submission]:
    """Submissions with exactly this email (blind index), plaintext columns only. Audited
    with the number of matches; the email itself goes nowhere."""
    index = keyring.email_index(email)
    query = (
        select(Submission)
        .options(_LIST_COLUMNS)
        .where(Submission.email_index == index)
        .order_by(*_NEWEST_FIRST)
        .limit(SEARCH_LIMIT)
    )
    rows = list(session.scalars(query))
    audit.record(session, actor=actor, action="submission.searched", details={"matches": len(rows)})
    return rows


def duplicates(session: Session, submission: Submission) -> list[str]:
    """References of other submissions with the same email, or email and birthday."""
    same = [
        column == value
        for column, value in (
            (Submission.email_index, submission.email_index),
            (Submission.email_birthday_index, submission.email_birthday_index),
        )
        if value is not None
    ]
    if not same:
        return []
    query = (
        select(Submission.reference)
        .where(or_(*same), Submission.id != submission.id)
        .order_by(*_NEWEST_FIRST)
        .limit(DUPLICATE_LIMIT)
    )
    return list(session.scalars(query))


DISCLOSED = "submissions.disclosed"  # an export batch's row; its submissions in ``disclosures``


def history(session: Session, submission: Submission) -> list[AuditEvent]:
    """The submission's audit rows, oldest first, with the export batches that disclosed it."""
    disclosed = select(DisclosedSubmission.event_id).where(
        DisclosedSubmission.submission_id == submission.id
    )
    query = select(AuditEvent).where(
        (AuditEvent.target == submission.reference) | AuditEvent.id.in_(disclosed)
    )
    return list(session.scalars(query.order_by(AuditEvent.id)))


def event_summary(event: AuditEvent) -> str:
    """How the history names an event: an export says why, e.g. "exported (IRB report)"."""
    if event.action != DISCLOSED:
        return event.action
    try:
        reason = json.loads(event.details).get("reason")
    except (ValueError, AttributeError):
        reason = None
    return f"exported ({EXPORT_REASONS.get(reason, reason or 'no reason recorded')})"


# ---------------------------------------------------------------------------- opening


@dataclass(frozen=True)
class OpenedNote:
    id: uuid.UUID
    author_id: int
    created_at: datetime
    text: str | None  # None: it would not open


@dataclass(frozen=True)
class Detail:
    fields: dict[str, Any]
    notes: list[OpenedNote]


def open_detail(
    session: Session, keyring: Keyring, submission: Submission, *, actor: str
) -> Detail:
    """Open the submission and its notes: one reveal, one ``submission.opened`` audit row.

    The caller commits before rendering anything (see ``submissions.open_submission``).
    """
    opened = open_submission(session, keyring, submission, actor=actor)
    query = select(Note).where(Note.submission_id == submission.id)
    notes = [
        _open_note(keyring, note)
        for note in session.scalars(query.order_by(Note.created_at, Note.id))
    ]
    return Detail(opened, notes)


def _open_note(keyring: Keyring, note: Note) -> OpenedNote:
    text: str | None = None
    if note.key_id and note.wrapped_key and note.sealed_payload:
        blob = SealedBlob(note.key_id, note.wrapped_key, note.sealed_payload)
        try:
            text = str(json.loads(keyring.open(blob, binding=note.seal_binding()))["text"])
        except (SealingError, ValueError, KeyError):
            text = None
    return OpenedNote(note.id, note.author_id, note.created_at, text)


# ---------------------------------------------------------------------------- actions


def _lock_live(session: Session, submission: Submission) -> None:
    """Take the audit head, then the row (the lock order in :mod:`intake.audit`), re-read it
    and refuse it if it was shredded meanwhile (withdrawn or expired: every shred sets
    ``shredded_at``): a check on the row as loaded before the lock can be stale."""
    audit.lock_head(session)
    session.refresh(submission, with_for_update=True)
    if submission.shredded_at is not None:
        raise SubmissionGone(submission.reference)


def _lock_current(session: Session, submission: Submission, expected_version: int) -> None:
    """:func:`_lock_live`, and check nobody changed the row since the page was rendered."""
    _lock_live(session, submission)
    if submission.row_version != expected_version:
        raise StaleSubmission


def _flush(session: Session) -> None:
    try:
        session.flush()
    except StaleDataError as error:  # changed between the refresh and this write
        raise StaleSubmission from error


def change_status(
    session: Session, submission: Submission, status: str, *, expected_version: int, actor: str
) -> None:
    """Move a submission along :data:`TRANSITIONS`; anything else is refused."""
    _lock_current(session, submission, expected_version)
    current = submission.status
    if status not in TRANSITIONS.get(current, frozenset()):
        raise IllegalTransition(current, status)
    submission.status = status
    _flush(session)
    audit.record(
        session,
        actor=actor,
        action="submission.status_changed",
        target=submission.reference,
        details={"from": current, "to": status},
    )


def assign(
    session: Session,
    submission: Submission,
    assignee_id: int | None,
    *,
    expected_version: int,
    actor: str,
) -> None:
    """Assign to an active coordinator or admin, or unassign (``None``)."""
    _lock_current(session, submission, expected_version)
    assignee = session.get(User, assignee_id) if assignee_id is not None else None
    if assignee_id is not None and (
        assignee is None or not assignee.active or assignee.role not in TRIAGE_ROLES
    ):
        raise InvalidAssignee
    submission.assignee_id = assignee_id
    _flush(session)
    audit.record(
        session,
        actor=actor,
        action="submission.assigned",
        target=submission.reference,
        details={"assignee": assignee.ref if assignee else None},
    )


def add_note(
    session: Session, keyring: Keyring, submission: Submission, text: str, *, author: User
) -> Note:
    """Seal a note onto the submission; audited with the note's id, never its text.

    Sealed before any lock is taken (CPU only), then, in the lock order: the key row, the
    audit head, the submission row. The row is re-read under its lock, so a note racing the
    patient's withdrawal is either in before the shred (which deletes it) or refused with
    :class:`SubmissionGone`; migration 0006 refuses it in the database too.
    """
    text = text.strip()
    if not text or len(text) > MAX_NOTE_LENGTH:
        raise InvalidNote
    if submission.shredded_at is not None:
        raise SubmissionGone(submission.reference)  # as loaded: no need to seal anything
    note = Note(id=uuid7(), submission_id=submission.id, author_id=author.id, created_at=utcnow())
    payload = json.dumps({"text": text}, ensure_ascii=False).encode("utf-8")
    blob = keyring.seal(payload, binding=note.seal_binding())
    claim_for_sealing(session, blob.key_id)
    _lock_live(session, submission)
    note.key_id, note.wrapped_key, note.sealed_payload = (
        blob.key_id,
        blob.wrapped_key,
        blob.ciphertext,
    )
    session.add(note)
    session.flush()
    audit.record(
        session,
        actor=author.ref,
        action="submission.note_added",
        target=submission.reference,
        details={"note_id": str(note.id), "key_id": blob.key_id},
    )
    return note


# ---------------------------------------------------------------------------- export

EXPORT_COLUMNS = (
    "reference",
    "received_at",
    "cancer_type",
    "age_band",
    "status",
    "assignee",
    "source",
    "consent_version",
    "consent_language",
    "full_name",
    "birthday",
    "email",
    "phone",
    "postal_code",
    "country",
    "contact_method",
    "cancer_other",
)
SEALED_EXPORT_FIELDS = EXPORT_COLUMNS[9:]
_decode_json = json.JSONDecoder().decode  # json.loads less its per-call checks


def _exportable(filters: Filters, now: datetime) -> list[ColumnElement[bool]]:
    """The filtered set less withdrawn, shredded and expired submissions."""
    return [
        *_conditions(filters),
        Submission.status != "withdrawn",
        Submission.shredded_at.is_(None),
        Submission.authorization_expires_at >= now,
    ]


def export_count(session: Session, filters: Filters, now: datetime) -> int:
    query = select(func.count()).select_from(Submission).where(*_exportable(filters, now))
    return int(session.scalar(query) or 0)


@dataclass(frozen=True)
class Disclosure:
    """An export, as its per-submission audit rows name it."""

    event_id: int  # the export's ``submissions.exported`` row
    reason: str
    actor: str


def export_filter_details(filters: Filters) -> dict[str, audit.DetailValue]:
    """Every filter of an export, as audit codes (None where unset).

    None of them is PHI: codes, dates, an assignee's user ref, a reference code, a source slug. A
    typed source that is not code-shaped (spaces, ``~``, long) is recorded as the start of its
    SHA-256 instead, which still tells which stored source it selected. Email search is not
    an export filter (it is a POST of its own, audited with a count only).
    """
    assignee = filters.assignee
    details: dict[str, audit.DetailValue] = {
        "status": filters.status,
        "cancer_type": filters.cancer_type,
        "age_band": filters.age_band,
        "received_from": filters.received_from.isoformat() if filters.received_from else None,
        "received_to": filters.received_to.isoformat() if filters.received_to else None,
        "assignee": f"user:{assignee}" if assignee and assignee != "none" else assignee,
        "reference": filters.reference,
        "source": filters.source,
    }
    source = filters.source
    if source is not None and not (
        len(source) <= audit.MAX_DETAIL_LENGTH and audit.DETAIL_TEXT.fullmatch(source)
    ):
        details["source"] = None
        details["source_sha256"] = hashlib.sha256(source.encode("utf-8")).hexdigest()[:32]
    return details


def record_export(
    session: Session, filters: Filters, *, reason: str, rows: int, actor: str
) -> Disclosure:
    """Audit an export (reason, row count, every filter) before any row leaves; the caller
    commits, then streams, recording each batch's submissions with :func:`record_disclosed`."""
    if reason not in EXPORT_REASONS:
        raise TriageError("Choose why you are exporting these submissions.")
    event_id = audit.record(
        session,
        actor=actor,
        action="submissions.exported",
        details={"reason": reason, "rows": rows, **export_filter_details(filters)},
    )
    return Disclosure(event_id, reason, actor)


def record_disclosed(
    session: Session, disclosure: Disclosure, batch: Sequence[tuple[uuid.UUID, str]]
) -> None:
    """Account for a batch about to be sent: (submission id, reference) of each row.

    One ``submissions.disclosed`` audit row for the batch (the export's row, the reason, the
    count, and the SHA-256 of its references), and a ``disclosures`` row per submission naming
    it: each submission's history then lists every export that sent it, and the chain vouches
    for the list (:func:`verify_disclosures`). The caller commits before sending them.
    """
    if not batch:
        return
    event_id = audit.record(
        session,
        actor=disclosure.actor,
        action=DISCLOSED,
        details={
            "export": disclosure.event_id,
            "reason": disclosure.reason,
            "count": len(batch),
            "references_sha256": references_digest(reference for _, reference in batch),
        },
    )
    connection = session.connection()
    ids = json.dumps([submission_id.hex for submission_id, _ in batch])
    connection.execute(_INSERT_DISCLOSED[connection.dialect.name], {"ids": ids, "event": event_id})


# The batch's ids travel as one JSON array and are unpacked by the database: one parameter
# instead of a bound row per submission (which cost an export of 100k rows a fifth of its
# speed in Python alone). Uuid is CHAR(32) hex on SQLite and uuid on PostgreSQL.
_INSERT_DISCLOSED = {
    "sqlite": text(
        "INSERT INTO disclosures (submission_id, event_id) "
        "SELECT value, :event FROM json_each(:ids)"
    ),
    "postgresql": text(
        "INSERT INTO disclosures (submission_id, event_id) "
        "SELECT CAST(value AS uuid), :event FROM jsonb_array_elements_text(CAST(:ids AS jsonb))"
    ),
}


def references_digest(references: Iterable[str]) -> str:
    """SHA-256 of the sorted references, one a line: what a batch's audit row records."""
    return hashlib.sha256("\n".join(sorted(references)).encode("ascii")).hexdigest()


def verify_disclosures(session: Session) -> list[int]:
    """The ids of ``submissions.disclosed`` rows whose ``disclosures`` no longer match them
    (rows added, removed or moved to another submission), and of ids that ``disclosures`` rows
    name but no batch row has; empty when all hold.

    The batches' rows are few (one per 500 exported); the disclosures are streamed in event
    order and checked a batch at a time, so memory stays flat however many were exported.
    """
    expected = {
        event.id: json.loads(event.details)
        for event in session.scalars(select(AuditEvent).where(AuditEvent.action == DISCLOSED))
    }
    rows = session.execute(
        select(DisclosedSubmission.event_id, Submission.reference)
        .join(Submission, Submission.id == DisclosedSubmission.submission_id)
        .order_by(DisclosedSubmission.event_id)
        .execution_options(yield_per=5000)
    )
    found = {
        event_id: references_digest(reference for _, reference in group)
        for event_id, group in groupby(rows, key=lambda row: row[0])
    }
    broken = [
        event_id
        for event_id, details in expected.items()
        if found.pop(event_id, references_digest([])) != details.get("references_sha256")
    ]
    return sorted(broken + list(found))  # what is left names no batch


def _export_query(filters: Filters, now: datetime) -> Select[*tuple[Any, ...]]:
    """The export's columns; :func:`_export_row` unpacks them in this order."""
    return (
        select(
            Submission.id,
            Submission.reference,
            Submission.received_at,
            Submission.cancer_type,
            Submission.age_band,
            Submission.status,
            User.email,
            Submission.source,
            Submission.consent_version,
            Submission.consent_language,
            Submission.key_id,
            Submission.wrapped_key,
            Submission.sealed_payload,
        )
        .outerjoin(User, User.id == Submission.assignee_id)
        .where(*_exportable(filters, now))
        .order_by(*_NEWEST_FIRST)
    )


def _export_after() -> ColumnElement[bool]:
    """Rows after the bound ``after_received_at`` and ``after_id`` (see :func:`_older_than`)."""
    return _older_than(
        bindparam("after_received_at", type_=Submission.received_at.type),
        bindparam("after_id", type_=Submission.id.type),
    )


def iter_export_batches(
    session: Session, keyring: Keyring, filters: Filters, now: datetime, *, batch: int = 500
) -> Iterator[list[list[Any]]]:
    """The export's rows in :data:`EXPORT_COLUMNS` order, one keyset batch (a list) at a time.

    Plain rows, not ORM objects, so nothing accumulates in the session, and at most three
    batches are held at a time (one being opened, one fetched ahead, one being fetched):
    memory stays constant however many rows there are. On PostgreSQL the next batch is read
    while this one is opened (:func:`~intake.database.read_ahead`).
    """
    for rows in iter_export_sealed_batches(session, filters, now, batch=batch):
        yield open_export_batch(keyring, rows)


def open_export_batch(keyring: Keyring, rows: Sequence[Row[Any]]) -> list[list[Any]]:
    """A batch of :func:`iter_export_sealed_batches`, opened: CSV values per row."""
    return [_export_row(keyring, row) for row in rows]


def iter_export_sealed_batches(
    session: Session, filters: Filters, now: datetime, *, batch: int = 500
) -> Iterator[Sequence[Row[Any]]]:
    """:func:`iter_export_batches` before opening: the rows as read (``.reference`` each)."""
    first = _export_query(filters, now).limit(batch)
    rest = first.where(_export_after())  # built once; each batch binds its position
    connection = session.connection()  # Core rows: no ORM wrapping of each row
    batches = _export_row_batches(connection, first, rest, batch)
    if connection.dialect.name != "sqlite":
        # A database server to wait for (on another core): read the next batch meanwhile.
        # Not on SQLite, which reads in this process: a second thread there only contends
        # for the GIL (measured at 100k rows: PostgreSQL 0.64x -> 0.72x, SQLite 0.71x -> 0.66x).
        batches = read_ahead(batches)
    yield from batches


def _export_row_batches(
    connection: Connection, first: Select[Any], rest: Select[Any], batch: int
) -> Iterator[Sequence[Row[Any]]]:
    query, position = first, dict[str, Any]()  # the first batch has no position to bind
    while True:
        rows = connection.execute(query, position).all()
        if rows:
            yield rows
        if len(rows) < batch:
            return
        query = rest
        position = {"after_received_at": rows[-1].received_at, "after_id": rows[-1].id}


def iter_export_rows(
    session: Session, keyring: Keyring, filters: Filters, now: datetime, *, batch: int = 500
) -> Iterator[list[Any]]:
    """:func:`iter_export_batches`, a row at a time."""
    for rows in iter_export_batches(session, keyring, filters, now, batch=batch):
        yield from rows


def _export_row(keyring: Keyring, row: Any) -> list[Any]:
    """One row of :func:`_export_query` as CSV values; the binding needs no ORM object."""
    # Unpacked in _export_query's column order: one step, where 13 lookups by name cost more.
    (
        _,
        reference,
        received_at,
        cancer_type,
        age_band,
        status,
        email,
        source,
        consent_version,
        consent_language,
        key_id,
        wrapped_key,
        sealed_payload,
    ) = row
    try:
        plaintext = keyring.open(
            SealedBlob(key_id, wrapped_key, sealed_payload), binding=Submission.binding_for(row)
        )
        opened = _decode_json(plaintext.decode())  # sealed as json.dumps(...).encode("utf-8")
    except (SealingError, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        opened = {}  # a row that will not open exports its plaintext columns only
    return [
        reference,
        # strftime("%Y-%m-%dT%H:%M:%SZ") of a UTC datetime, at a third of its cost
        received_at.isoformat(timespec="seconds")[:19] + "Z",
        cancer_type,
        age_band,
        status,
        email,
        source,
        consent_version,
        consent_language,
        *map(opened.get, SEALED_EXPORT_FIELDS),
    ]
