"""Retention: crypto-shred submissions whose records-release authorization has expired.

``flask --app intake purge-expired`` runs :func:`purge_expired`. Each expired submission goes
through :func:`intake.submissions.shred_submission` (reason ``authorization_expired``), which
drops its sealed data and blind indexes, keeps a tombstone and writes a ``submission.shredded``
row. The run itself is bracketed by two ``submissions.purge_run`` rows (started, finished) with
counts only.

Batches commit one at a time, so an interrupted run keeps what it did and the next run carries
on; a run that finds nothing shreds nothing (idempotent). Each batch takes the audit head's
lock first, then selects its rows ``FOR UPDATE`` (the lock order in :mod:`intake.audit`):
every other shred (a withdrawal) takes that lock too, so the rows selected cannot be shredded
by someone else before this batch does, and the count is exact; a coordinator's note waits for
the batch and is then refused, so none is left on a purged submission. A batch that still
meets a deadlock or serialization failure (a writer outside that order) is rolled back and run
again (:func:`intake.database.retry_transient`), rather than stopping the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session

from intake import audit
from intake.database import retry_transient
from intake.models import Submission, utcnow
from intake.submissions import shred_submission

REASON = "authorization_expired"
RUN_ACTION = "submissions.purge_run"
DEFAULT_BATCH_SIZE = 100


@dataclass(frozen=True)
class PurgeResult:
    expired: int  # found when the run started
    shredded: int
    batches: int


def _expired(now: datetime) -> ColumnElement[bool]:
    return and_(Submission.shredded_at.is_(None), Submission.authorization_expires_at <= now)


def count_expired(session: Session, now: datetime | None = None) -> int:
    """How many unshredded submissions have an authorization that expired by ``now``."""
    query = select(func.count()).select_from(Submission).where(_expired(now or utcnow()))
    return int(session.scalar(query) or 0)


def purge_batch(session: Session, now: datetime, batch_size: int, *, actor: str) -> int:
    """Shred up to ``batch_size`` expired submissions in the caller's transaction; how many."""
    audit.lock_head(session)  # first, as every audited writer does (lock order: audit.lock_head)
    rows = session.scalars(
        select(Submission)
        .where(_expired(now))
        .order_by(Submission.authorization_expires_at, Submission.id)
        .limit(batch_size)
        .with_for_update()
    ).all()
    for submission in rows:
        shred_submission(session, submission, actor=actor, reason=REASON)
    return len(rows)


def purge_expired(
    session: Session,
    *,
    actor: str,
    commit: Callable[[], None],
    now: datetime | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: Callable[[int], None] | None = None,
) -> PurgeResult:
    """Shred every submission whose authorization expired by ``now``, committing per batch.

    ``now`` is fixed at the start, so rows expiring while the run goes on wait for the next run
    and the loop always ends. Audited: a start row, a row per shred, a finish row.
    """
    now = now or utcnow()
    expired = count_expired(session, now)
    _record_run(
        session,
        actor,
        {"phase": "started", "expired": expired, "batch_size": batch_size},
        commit,
    )

    def batch_committed() -> int:
        done = purge_batch(session, now, batch_size, actor=actor)
        if done:
            commit()
        else:
            session.rollback()  # the last, empty batch only took the head's lock: release it
        return done

    shredded = batches = 0
    while done := retry_transient(session, batch_committed):
        shredded += done
        batches += 1
        if on_batch is not None:
            on_batch(done)
    _record_run(
        session, actor, {"phase": "finished", "shredded": shredded, "batches": batches}, commit
    )
    return PurgeResult(expired, shredded, batches)


def _record_run(
    session: Session, actor: str, details: dict[str, str | int], commit: Callable[[], None]
) -> None:
    def record_committed() -> None:
        audit.record(session, actor=actor, action=RUN_ACTION, target="submissions", details=details)
        commit()

    retry_transient(session, record_committed)
