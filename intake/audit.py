"""Append-only, hash-chained audit trail.

Each row carries ``hash = SHA-256(prev_hash + canonical content)``, where the content includes
the row id, so editing, deleting or reordering rows breaks the chain at a row
:func:`verify_chain` can name. Writers lock the single ``audit_head`` row, so concurrent
appends queue up instead of forking the chain, and :func:`record` only flushes: the caller's
commit makes the audit row and the change it records durable together.

The chain has no key (the patient surface writes rows too, and must hold no staff secret), so
someone who can write the table could rebuild it whole. :func:`anchor_head` therefore signs the
head (row id and hash) with the staff-side anchor key and appends it to a file outside the
database; :func:`verify_chain` given those anchors finds a rebuilt chain or a cut tail.

Lock order
----------
The one order every writing transaction takes its locks in (PostgreSQL row locks; on SQLite
``BEGIN IMMEDIATE`` already serializes writers). Each step is optional; none may come after a
later one:

0. a sign-in attempt's two ``login_throttles`` rows (account, then address), first of all: the
   attempt is judged under them, so concurrent guesses queue (``intake.accounts``). No
   transaction waits for a throttle row once it holds the head (pruning skips locked rows);
1. the ``sealing_keys`` row of the key a new blob was sealed to (shared, by
   :func:`intake.keys.claim_for_sealing`; exclusive only in ``keys.retire``);
2. the audit head (:func:`lock_head`), before reading any row the transaction will change or
   audit, so its checks see the state no other audited writer can change under it;
3. the ``submissions`` rows it changes, or adds children to (``SELECT ... FOR UPDATE``); a note
   is inserted only after its submission is locked and seen not shredded, because the insert's
   foreign-key check takes a share lock on the submission row;
4. their child rows (``notes``), and the ``users`` rows it changes.

``triage.add_note``, ``change_status`` and ``assign``, ``submissions.shred_submission`` (behind
withdrawal and ``retention.purge_batch``) follow it. A write that can still meet a deadlock or
a serialization failure (some other client taking locks in another order) is retried by
:func:`intake.database.retry_transient` where the caller owns the transaction.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from intake import sealing
from intake.database import read_only
from intake.models import AuditEvent, AuditHead, utcnow

GENESIS_HASH = "0" * 64
HEAD_ID = 1
ANCHOR_VERSION = 1
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


class AnchorError(AuditError):
    """The anchor file cannot be read or written, or the chain cannot be anchored."""


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    broken_row: int | None = None
    reason: str | None = None
    head_hash: str | None = None
    head_id: int | None = None
    anchors_checked: int = 0
    failed_anchor: int | None = None  # line of the anchor file whose anchor no longer holds

    def __str__(self) -> str:
        if self.ok:
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
    serialized = _serialize_details(details)
    head = lock_head(session)
    event_id, occurred_at = head.last_event_id + 1, utcnow()
    content = canonical_content(event_id, occurred_at, actor, action, target, serialized)
    event_hash = chain_hash(head.last_hash, content)
    connection = session.connection()
    connection.execute(
        _ADD_EVENT,
        {
            "id": event_id,
            "occurred_at": occurred_at,
            "actor": actor,
            "action": action,
            "target": target,
            "details": serialized,
            "prev_hash": head.last_hash,
            "hash": event_hash,
        },
    )
    connection.execute(_MOVE_HEAD, {"event_id": event_id, "event_hash": event_hash})
    return event_id


def verify_chain(
    session: Session,
    batch_size: int = 2000,
    *,
    anchors: Iterable[Anchor] = (),
    from_id: int = 1,
) -> ChainReport:
    """Walk the chain in id order and report the first row that does not fit.

    The walk and the head are read in one snapshot of a session of its own, so writers
    appending meanwhile can neither make an intact chain look broken nor wait for the walk
    (SQLite: a deferred read), whatever the caller's session has already done.

    Each of ``anchors`` (MACs already checked) must name a row of the walk holding exactly
    its hash: a chain rebuilt with new content, or cut below an anchor, fails there. With
    ``from_id`` the walk starts at that row, trusting its previous-hash; an anchor on that
    row is what makes the shortened walk sound (see :func:`anchor_head`).
    """
    with Session(session.get_bind()) as snapshot:
        if snapshot.get_bind().dialect.name == "postgresql":
            snapshot.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        else:
            read_only(snapshot)
        return _walk_chain(snapshot, batch_size, list(anchors), from_id)


def _walk_chain(
    session: Session, batch_size: int, anchors: list[Anchor], from_id: int
) -> ChainReport:
    by_row: dict[int, list[Anchor]] = {}
    for anchor in anchors:
        by_row.setdefault(anchor.event_id, []).append(anchor)
    expected_prev: str | None = GENESIS_HASH if from_id == 1 else None
    expected_id = from_id
    checked = 0
    last_id = from_id - 1
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
            mismatch = next((a for a in by_row.get(event.id, ()) if a.hash != event.hash), None)
            if mismatch is not None:
                return _anchor_failure(
                    mismatch, checked, "holds another hash: the chain was rebuilt"
                )
            expected_prev = event.hash
            expected_id = event.id + 1
            checked += 1
        last_id = rows[-1].id
        session.expunge_all()
    return _finish_walk(session, checked, expected_id - 1, expected_prev, anchors)


def _finish_walk(
    session: Session, checked: int, last_id: int, last_hash: str | None, anchors: list[Anchor]
) -> ChainReport:
    """Anchors past the chain's end first: a tail cut with the head moved back shows only there."""
    beyond = [a for a in anchors if a.event_id > last_id]
    if beyond:
        reason = f"is missing: the chain ends at row {last_id} (rows cut from the end)"
        return _anchor_failure(min(beyond, key=lambda a: a.line), checked, reason)
    report = _check_tip(session, checked, last_id, last_hash or GENESIS_HASH)
    return replace(report, anchors_checked=len(anchors)) if report.ok else report


def _anchor_failure(anchor: Anchor, checked: int, what: str) -> ChainReport:
    reason = (
        f"anchor at line {anchor.line} of the anchor file (row {anchor.event_id}, "
        f"anchored at {anchor.anchored_at}): row {anchor.event_id} {what}"
    )
    return ChainReport(False, checked, anchor.event_id, reason, failed_anchor=anchor.line)


def _row_problem(event: AuditEvent, expected_id: int, expected_prev: str | None) -> str | None:
    if event.id != expected_id:
        return f"row {expected_id} is missing (row {event.id} follows row {expected_id - 1})"
    if expected_prev is not None and event.prev_hash != expected_prev:
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
    return ChainReport(True, checked, head_hash=last_hash, head_id=last_id)


# ---------------------------------------------------------------------------- anchors


@dataclass(frozen=True)
class Anchor:
    """One signed head of the chain, as a line of the anchor file."""

    event_id: int
    hash: str
    anchored_at: str  # ISO 8601, UTC: exactly the text the MAC covers
    mac: str
    line: int = 0  # its line in the anchor file (1-based); 0 before it is written

    def mac_matches(self, key: bytes) -> bool:
        return sealing.audit_anchor_mac_matches(
            key, self.event_id, self.hash, self.anchored_at, self.mac
        )

    def to_json(self) -> str:
        record = {
            "v": ANCHOR_VERSION,
            "event_id": self.event_id,
            "hash": self.hash,
            "anchored_at": self.anchored_at,
            "mac": self.mac,
        }
        return json.dumps(record, sort_keys=True, separators=(",", ":"))


def sign_anchor(key: bytes, event_id: int, head_hash: str, at: datetime | None = None) -> Anchor:
    anchored_at = (at or datetime.now(UTC)).isoformat(timespec="seconds")
    mac = sealing.audit_anchor_mac(key, event_id, head_hash, anchored_at)
    return Anchor(event_id, head_hash, anchored_at, mac)


def read_anchors(path: Path) -> list[Anchor]:
    """Every anchor in the file, oldest first; a missing file holds none.

    A line that does not parse is an error naming it: it is damage or tampering, and
    skipping it would quietly drop an anchor.
    """
    if not path.exists():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise AnchorError(f"{path}: unreadable ({type(error).__name__})") from error
    return [_parse_anchor(text, number, path) for number, text in enumerate(lines, 1) if text]


def _parse_anchor(text: str, line: int, path: Path) -> Anchor:
    try:
        record: dict[str, Any] = json.loads(text)
        anchor = Anchor(
            int(record["event_id"]),
            str(record["hash"]),
            str(record["anchored_at"]),
            str(record["mac"]),
            line,
        )
        well_formed = record.get("v") == ANCHOR_VERSION and anchor.event_id >= 1
    except (ValueError, TypeError, KeyError, AttributeError):
        well_formed = False
    if not well_formed:
        raise AnchorError(f"{path}: line {line} is not an anchor record (damaged or edited)")
    return anchor


def append_anchor(path: Path, anchor: Anchor) -> None:
    """Add one line, never rewriting what is there; the file is created owner-only."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as error:
        raise AnchorError(f"{path}: cannot be opened for appending ({error.strerror})") from error
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # two runs at once append whole lines, one each
        handle.write(anchor.to_json() + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def bad_macs(anchors: Iterable[Anchor], key: bytes) -> list[Anchor]:
    return [anchor for anchor in anchors if not anchor.mac_matches(key)]


def anchor_head(
    session: Session, key: bytes, path: Path, batch_size: int = 2000
) -> tuple[Anchor | None, ChainReport]:
    """Check the chain from the newest anchor to the head, then anchor the head.

    Only rows past the newest anchor are walked (that anchor must still hold), so a run every
    few minutes stays cheap however long the trail grows. A broken chain is reported and not
    anchored: an anchor must never vouch for a tampered chain. A head anchored already is
    anchored again, with the new time: each run leaves a line, which monitoring can count.
    Returns no anchor when the trail is empty.
    """
    anchors = read_anchors(path)
    newest = anchors[-1] if anchors else None
    if newest is not None and not newest.mac_matches(key):
        raise AnchorError(
            f"{path}: the newest anchor (line {newest.line}) does not verify under the anchor "
            "key; run `flask --app intake audit verify`"
        )
    start = [newest] if newest else []
    report = verify_chain(
        session, batch_size, anchors=start, from_id=newest.event_id if newest else 1
    )
    if not report.ok or not report.head_id:
        return None, report
    anchor = sign_anchor(key, report.head_id, cast(str, report.head_hash))
    append_anchor(path, anchor)
    return anchor, report
