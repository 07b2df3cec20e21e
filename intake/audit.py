"""Append-only, hash-chained audit trail.

Each row carries ``hash = SHA-256(prev_hash + canonical content)``, where the content includes
the row id, so editing, deleting or reordering rows breaks the chain at a row
:func:`verify_chain` can name. Writers lock the single ``audit_head`` row, so concurrent
appends queue up instead of forking the chain, and :func:`record` only flushes: the caller's
commit makes the audit row and the change it records durable together.

Lock order
----------
The one order every writing transaction takes its locks in (PostgreSQL row locks; on SQLite
``BEGIN IMMEDIATE`` already serializes writers). Each step is optional; none may come after a
later one:

1. the ``sealing_keys`` row of the key a new blob was sealed to (shared, by
   :func:`intake.keys.claim_for_sealing`; exclusive only in ``keys.retire``);
2. the audit head (:func:`lock_head`), before reading any row the transaction will change or
   audit, so its checks see the state no other audited writer can change under it;
3. the ``submissions`` rows it changes, or adds children to (``SELECT ... FOR UPDATE``); a note
   is inserted only after its submission is locked and seen not shredded, because the insert's
   foreign-key check takes a share lock on the submission row;
4. their child rows (``notes``), and the ``users`` or ``login_throttles`` rows it changes.

``triage.add_note``, ``change_status`` and ``assign``, ``submissions.shred_submission`` (behind
withdrawal and ``retention.purge_batch``) follow it. A write that can still meet a deadlock or
a serialization failure (some other client taking locks in another order) is retried by
:func:`intake.database.retry_transient` where the caller owns the transaction.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from intake.database import read_only
from intake.models import AuditEvent, AuditHead, utcnow

GENESIS_HASH = "0" * 64
HEAD_ID = 1
MAX_DETAIL_LENGTH = 200
# Detail keys that would invite PHI into the trail; the audit trail is not sealed storage.
FORBIDDEN_DETAIL_KEYS = frozenset(
    {
        "full_name",
        "free_text",
        "first_name",
        "last_name",
        "name",
        "email",
        "phone",
        "birthday",
        "dob",
        "address",
        "postal_code",
        "zip",
        "signature",
        "note",
        "text",
    }
)

DetailValue = str | int | bool | None
# Detail strings are codes and ids (key ids, cancer-type codes, reasons like "withdrawn"): no
# spaces and no "@", so a name, an email or a sentence of free text cannot slip in.
DETAIL_TEXT = re.compile(r"[A-Za-z0-9_.:/+=-]*")


class AuditError(Exception):
    """An audit row could not be written as asked."""


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    broken_row: int | None = None
    reason: str | None = None
    head_hash: str | None = None

    def __str__(self) -> str:
        if self.ok:
            # Record the head hash somewhere else (a ticket, a log host): it anchors the chain,
            # so even someone able to rewrite the whole table cannot do it unnoticed.
            return f"OK: {self.checked} audit rows, chain intact, head {self.head_hash}"
        return (
            f"BROKEN at row {self.broken_row}: {self.reason} "
            f"({self.checked} rows checked before it)"
        )


def canonical_content(
    event_id: int, occurred_at: datetime, actor: str, action: str, target: str | None, details: str
) -> str:
    return json.dumps(
        {
            "id": event_id,
            "occurred_at": occurred_at.isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "target": target,
            "details": details,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def chain_hash(prev_hash: str, content: str) -> str:
    return hashlib.sha256((prev_hash + content).encode("utf-8")).hexdigest()


def _event_hash(event: AuditEvent) -> str:
    content = canonical_content(
        event.id, event.occurred_at, event.actor, event.action, event.target, event.details
    )
    return chain_hash(event.prev_hash, content)


def _serialize_details(details: Mapping[str, DetailValue] | None) -> str:
    clean: dict[str, DetailValue] = {}
    for key, value in (details or {}).items():
        if key.lower() in FORBIDDEN_DETAIL_KEYS:
            raise AuditError(f"audit detail {key!r} could hold PHI; audit ids and codes only")
        if not isinstance(value, str | int | bool | type(None)):
            raise AuditError(f"audit detail {key!r} must be a string, number, boolean or null")
        if isinstance(value, str) and len(value) > MAX_DETAIL_LENGTH:
            raise AuditError(f"audit detail {key!r} is longer than {MAX_DETAIL_LENGTH} characters")
        if isinstance(value, str) and not DETAIL_TEXT.fullmatch(value):
            raise AuditError(f"audit detail {key!r} must be a code or id, not free text")
        clean[key] = value
    return json.dumps(clean, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Head:
    """The chain's tip as read under its lock."""

    last_event_id: int
    last_hash: str


_HEAD = cast(Table, AuditHead.__table__)
_EVENTS = cast(Table, AuditEvent.__table__)
# Built once: every audited request runs them, and only their values change.
_LOCK_HEAD = (
    select(_HEAD.c.last_event_id, _HEAD.c.last_hash).where(_HEAD.c.id == HEAD_ID).with_for_update()
)
_ADD_EVENT = insert(_EVENTS)
_MOVE_HEAD = (
    update(_HEAD)
    .where(_HEAD.c.id == HEAD_ID)
    .values(last_event_id=bindparam("event_id"), last_hash=bindparam("event_hash"))
)


def lock_head(session: Session) -> Head:
    """Take the chain's lock for this transaction.

    Lock order, everywhere: see the module docstring (a ``sealing_keys`` row, the audit head,
    submission rows, then their notes). A service that will change a row and audit it takes
    the head first, so two such transactions can never wait on each other in a cycle. Plain
    Core statements: every
    audited request runs them, and the head is never an ORM object a session could hold stale.
    """
    connection = session.connection()  # Core on the session's transaction: no ORM work
    head = connection.execute(_LOCK_HEAD).one_or_none()
    if head is None:
        connection.execute(
            insert(_HEAD).values(id=HEAD_ID, last_event_id=0, last_hash=GENESIS_HASH)
        )
        return Head(0, GENESIS_HASH)
    return Head(head.last_event_id, head.last_hash)


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    target: str | None = None,
    details: Mapping[str, DetailValue] | None = None,
) -> int:
    """Append one event in the caller's transaction; its id. Details are ids and codes, never
    PHI."""
    return record_each(session, actor=actor, action=action, targets=[target], details=details)


def record_each(
    session: Session,
    *,
    actor: str,
    action: str,
    targets: Sequence[str | None],
    details: Mapping[str, DetailValue] | None = None,
) -> int:
    """Append one event per target, alike but for the target, in the caller's transaction;
    the last one's id (0 for no targets).

    One head lock, one multi-row INSERT and one head update for them all: an export records
    a row per submission it discloses, a batch at a time, at a fraction of a row's open cost.
    """
    serialized = _serialize_details(details)
    head = lock_head(session)
    if not targets:
        return head.last_event_id
    event_id, prev_hash, occurred_at = head.last_event_id, head.last_hash, utcnow()
    rows = []
    for target in targets:
        event_id += 1
        content = canonical_content(event_id, occurred_at, actor, action, target, serialized)
        event_hash = chain_hash(prev_hash, content)
        rows.append(
            {
                "id": event_id,
                "occurred_at": occurred_at,
                "actor": actor,
                "action": action,
                "target": target,
                "details": serialized,
                "prev_hash": prev_hash,
                "hash": event_hash,
            }
        )
        prev_hash = event_hash
    connection = session.connection()
    connection.execute(_ADD_EVENT, rows[0] if len(rows) == 1 else rows)  # one: no executemany
    connection.execute(_MOVE_HEAD, {"event_id": event_id, "event_hash": prev_hash})
    return event_id


def verify_chain(session: Session, batch_size: int = 2000) -> ChainReport:
    """Walk the chain in id order and report the first row that does not fit.

    The walk and the head are read in one snapshot of a session of its own, so writers
    appending meanwhile can neither make an intact chain look broken nor wait for the walk
    (SQLite: a deferred read), whatever the caller's session has already done.
    """
    with Session(session.get_bind()) as snapshot:
        if snapshot.get_bind().dialect.name == "postgresql":
            snapshot.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        else:
            read_only(snapshot)
        return _walk_chain(snapshot, batch_size)


def _walk_chain(session: Session, batch_size: int) -> ChainReport:
    expected_prev = GENESIS_HASH
    expected_id = 1
    checked = 0
    last_id = 0
    while True:
        rows = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.id > last_id)
            .order_by(AuditEvent.id)
            .limit(batch_size)
        ).all()
        if not rows:
            break
        for event in rows:
            problem = _row_problem(event, expected_id, expected_prev)
            if problem:
                # A gap names the first missing row; any other break names the row itself.
                return ChainReport(False, checked, min(event.id, expected_id), problem)
            expected_prev = event.hash
            expected_id = event.id + 1
            checked += 1
        last_id = rows[-1].id
        session.expunge_all()
    return _check_tip(session, checked, expected_id - 1, expected_prev)


def _row_problem(event: AuditEvent, expected_id: int, expected_prev: str) -> str | None:
    if event.id != expected_id:
        return f"row {expected_id} is missing (row {event.id} follows row {expected_id - 1})"
    if event.prev_hash != expected_prev:
        return "its previous-hash does not match the row before it (rows deleted or reordered)"
    if event.hash != _event_hash(event):
        return "its content does not match its hash (row edited)"
    return None


def _check_tip(session: Session, checked: int, last_id: int, last_hash: str) -> ChainReport:
    """The head row records the chain's end, so rows cut from or added past the end show."""
    head = session.get(AuditHead, HEAD_ID)
    head_id = head.last_event_id if head else 0
    head_hash = head.last_hash if head else GENESIS_HASH
    if head_id > last_id:
        reason = (
            f"rows removed from the end (the chain stops at row {last_id}, its head at {head_id})"
        )
        return ChainReport(False, checked, last_id + 1, reason)
    if head_id < last_id:
        reason = f"rows added past the chain's head (row {head_id}) without going through it"
        return ChainReport(False, checked, head_id + 1, reason)
    if head_hash != last_hash:
        return ChainReport(
            False, checked, last_id, "the last row differs from the head's record of it"
        )
    return ChainReport(True, checked, head_hash=last_hash)
