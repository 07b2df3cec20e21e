"""Crypto-shredding against what races it: coordinators adding notes, purges, deadlocks.

A shredded submission keeps no sealed child row: the services take their locks in the one
order ``intake.audit`` documents and re-check the row under its lock, migration 0006 refuses
the rest in the database, and a withdrawal that still meets a deadlock is retried instead of
answered with 503 (which, when it does happen, does not use up the patient's rate limit).
Real threads, real connections and real HTTP through the app, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from intake import audit, retention, triage
from intake.coordinator.triage import NOTE_GONE
from intake.database import is_transient, retry_transient
from intake.extensions import db
from intake.keys import current_keyring
from intake.models import Note, Submission, User, utcnow, uuid7
from intake.submissions import SubmissionGone, shred_submission
from tests.conftest import AppFactory
from tests.factories import csrf_token, login, make_submission, make_user
from tests.test_withdrawal import WRONG_CODE, submit, withdraw

NOTE_WRITERS = 3
ROUNDS = 3
RACE_SECONDS = 0.3  # notes keep coming this long before the shred, and as long after it
NOTES = Note.__table__


def add(app: Flask, marker: str, **facts: Any) -> str:
    with app.app_context():
        submission = make_submission(db.session(), current_keyring(), marker, **facts)
        db.session.commit()
        return submission.reference


def submission_id(app: Flask, reference: str) -> Any:
    with app.app_context():
        return db.session.scalar(select(Submission.id).where(Submission.reference == reference))


def notes_on(app: Flask, reference: str) -> int:
    with app.app_context():
        query = (
            select(func.count())
            .select_from(Note)
            .join(Submission, Submission.id == Note.submission_id)
            .where(Submission.reference == reference)
        )
        return int(db.session.scalar(query) or 0)


def shredded(app: Flask, reference: str) -> bool:
    with app.app_context():
        query = select(Submission.shredded_at).where(Submission.reference == reference)
        return db.session.scalar(query) is not None


def raw_note(submission: Any, author_id: int) -> dict[str, Any]:
    """A notes row as a writer outside the services would insert it."""
    return {
        "id": uuid7(),
        "submission_id": submission,
        "author_id": author_id,
        "created_at": utcnow(),
        "key_id": "raw",
        "wrapped_key": b"raw",
        "sealed_payload": b"raw",
    }


def signed_in_writers(app: Flask, count: int) -> list[tuple[FlaskClient, str]]:
    """Coordinators signed in through the real pages, each with its client and CSRF token."""
    writers = []
    for _ in range(count):
        client = app.test_client()
        login(client, make_user(app, role="coordinator"))
        writers.append((client, csrf_token(client, "/coordinator/")))
    return writers


@contextmanager
def notes_racing(
    writers: list[tuple[FlaskClient, str]], references: list[str]
) -> Iterator[list[tuple[int, str]]]:
    """Coordinators POST notes onto ``references`` in a loop, each in a thread of its own, from
    before the block until ``RACE_SECONDS`` after it; yields their (status, body) answers."""
    answers: list[tuple[int, str]] = []
    stop = threading.Event()

    def write(client: FlaskClient, token: str) -> None:
        number = 0
        while not stop.is_set():
            reference = references[number % len(references)]
            number += 1
            response = client.post(
                f"/coordinator/submissions/{reference}/notes",
                data={"csrf_token": token, "note": f"racing note {number}"},
            )
            answers.append((response.status_code, response.get_data(as_text=True)))

    threads = [threading.Thread(target=write, args=writer) for writer in writers]
    for thread in threads:
        thread.start()
    time.sleep(RACE_SECONDS)
    try:
        yield answers
        time.sleep(RACE_SECONDS)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)


def assert_notes_were_added_then_refused(answers: list[tuple[int, str]]) -> None:
    statuses = {status for status, _ in answers}
    assert statuses <= {303, 409}, sorted(statuses)  # never a 500: refused, with a message
    assert 303 in statuses and 409 in statuses  # the race really ran on both sides of the shred
    assert all(NOTE_GONE in body for status, body in answers if status == 409)


# ---------------------------------------------------------------------------- the service


def test_add_note_after_shred_raises(app: Flask) -> None:
    """The coordinator's page loaded the row before the patient withdrew: the note is refused."""
    reference = add(app, "LATE")
    author = make_user(app)
    with app.app_context(), Session(db.engine, expire_on_commit=False) as coordinator:
        stale = coordinator.scalars(select(Submission).where(Submission.reference == reference))
        submission = stale.one()
        user = coordinator.get_one(User, author.id)
        coordinator.commit()  # the page is rendered; the objects keep what they loaded
        with Session(db.engine) as patient:
            row = patient.get_one(Submission, submission.id)
            shred_submission(patient, row, actor="patient", reason="withdrawn_by_patient")
            patient.commit()
        assert submission.shredded_at is None  # what the coordinator's session still believes
        with pytest.raises(SubmissionGone):
            triage.add_note(coordinator, current_keyring(), submission, "too late", author=user)
        coordinator.rollback()
    assert notes_on(app, reference) == 0


def test_a_note_on_a_withdrawn_submission_gets_a_clear_refusal(app: Flask) -> None:
    reference = add(app, "GONE")
    [(client, token)] = signed_in_writers(app, 1)
    with app.app_context():
        row = db.session.get_one(Submission, submission_id(app, reference))
        shred_submission(db.session(), row, actor="patient", reason="withdrawn_by_patient")
        db.session.commit()
    response = client.post(
        f"/coordinator/submissions/{reference}/notes", data={"csrf_token": token, "note": "hi"}
    )
    assert response.status_code == 409
    assert NOTE_GONE in response.get_data(as_text=True)
    assert notes_on(app, reference) == 0


# ---------------------------------------------------------------------------- migration 0006


def test_the_database_refuses_a_note_on_a_shredded_submission(app: Flask) -> None:
    live, gone = add(app, "LIVE"), add(app, "DEAD")
    live_id, gone_id = submission_id(app, live), submission_id(app, gone)
    author = make_user(app)
    with app.app_context():
        row = db.session.get_one(Submission, gone_id)
        shred_submission(db.session(), row, actor="patient", reason="withdrawn_by_patient")
        db.session.commit()
        note = raw_note(live_id, author.id)
        with db.engine.begin() as connection:
            connection.execute(insert(NOTES), note)  # a live submission takes notes
        with pytest.raises(IntegrityError, match="crypto-shredded"), db.engine.begin() as c:
            c.execute(insert(NOTES), raw_note(gone_id, author.id))
        moved = update(NOTES).where(NOTES.c.id == note["id"]).values(submission_id=gone_id)
        with pytest.raises(IntegrityError, match="crypto-shredded"), db.engine.begin() as c:
            c.execute(moved)
    assert (notes_on(app, live), notes_on(app, gone)) == (1, 0)


def test_the_database_refuses_a_shred_that_leaves_notes_behind(app: Flask) -> None:
    reference = add(app, "KEEPNOTE")
    row_id, author = submission_id(app, reference), make_user(app)
    with app.app_context():
        with db.engine.begin() as connection:
            connection.execute(insert(NOTES), raw_note(row_id, author.id))
        careless = (
            update(Submission)
            .where(Submission.reference == reference)
            .values(
                shredded_at=utcnow(),
                status="withdrawn",
                key_id=None,
                wrapped_key=None,
                sealed_payload=None,
            )
        )
        with pytest.raises(IntegrityError, match="leave notes"), db.engine.begin() as c:
            c.execute(careless)
    assert not shredded(app, reference)
    assert notes_on(app, reference) == 1


# ---------------------------------------------------------------------------- races


def test_notes_racing_withdrawals_leave_none_behind(app: Flask) -> None:
    """Coordinators add notes while the patient withdraws: every withdrawal succeeds, first
    time, and leaves no note; the notes after it are refused with a message."""
    patient = app.test_client()
    codes = [submit(patient, f"RACE{chr(65 + round_)}") for round_ in range(ROUNDS)]
    writers = signed_in_writers(app, NOTE_WRITERS)
    for reference, code in codes:
        with notes_racing(writers, [reference]) as answers:
            response = withdraw(patient, reference, code)
        assert response.status_code == 303, response.get_data(as_text=True)[:300]
        assert shredded(app, reference)
        assert notes_on(app, reference) == 0
        assert_notes_were_added_then_refused(answers)


def test_notes_racing_a_purge_leave_none_behind(app: Flask) -> None:
    past = datetime.now(UTC) - timedelta(days=1)
    references = [add(app, f"EXP{n}", authorization_expires_at=past) for n in range(4)]
    writers = signed_in_writers(app, NOTE_WRITERS)
    with notes_racing(writers, references) as answers, app.app_context():
        result = retention.purge_expired(
            db.session(), actor="cli:test", commit=db.session.commit, batch_size=2
        )
    assert result.shredded == len(references)
    for reference in references:
        assert shredded(app, reference)
        assert notes_on(app, reference) == 0
    assert_notes_were_added_then_refused(answers)


def _in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(target())
        except BaseException as error:  # handed to the test
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def _wait_for_a_lock_wait(engine: Engine, timeout: float = 10.0) -> None:
    """Until some other backend waits for a lock (the withdrawal, for the row we hold)."""
    deadline = time.monotonic() + timeout
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    with engine.connect() as watcher:
        while watcher.execute(query).scalar_one() == 0:
            watcher.rollback()
            assert time.monotonic() < deadline, "the withdrawal never waited for the row"
            time.sleep(0.02)


def test_a_withdrawal_that_meets_a_deadlock_is_retried(
    pg_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """A writer taking the submission row before the audit head (the old add_note's order)
    deadlocks with the withdrawal; PostgreSQL aborts the withdrawal, which is run again and
    succeeds: the patient never sees the 503."""
    caplog.set_level(logging.INFO, logger="intake.database")
    patient = pg_app.test_client()
    reference, code = submit(patient, "DEADLOCK")
    author = make_user(pg_app)
    row_id = submission_id(pg_app, reference)
    with pg_app.app_context(), Session(db.engine) as adversary:
        adversary.execute(
            text("SET LOCAL deadlock_timeout = '30s'")
        )  # the withdrawal is the victim
        adversary.execute(insert(NOTES), raw_note(row_id, author.id))  # share-locks the row
        thread, outcome = _in_thread(lambda: withdraw(patient, reference, code).status_code)
        _wait_for_a_lock_wait(db.engine)  # the withdrawal holds the head, waits for the row
        audit.lock_head(adversary)  # the cycle: PostgreSQL aborts the withdrawal after 1 s
        adversary.commit()
        thread.join(timeout=60)
    assert outcome == [303]
    assert "transaction retried after DeadlockDetected" in caplog.text
    assert shredded(pg_app, reference)
    assert notes_on(pg_app, reference) == 0  # the retry shredded the adversary's note too


def test_sqlite_busy_is_transient_and_retried(sqlite_app: Flask) -> None:
    with sqlite_app.app_context():
        impatient = create_engine(db.engine.url, connect_args={"timeout": 0})
        holder = db.engine.connect()
        holder.begin()  # BEGIN IMMEDIATE: the write lock, until released below
        no_op = text("UPDATE audit_head SET last_event_id = last_event_id")
        with Session(impatient) as session, pytest.raises(OperationalError) as busy:
            session.execute(no_op)
        assert is_transient(busy.value)
        threading.Timer(0.2, holder.close).start()
        with Session(impatient) as session:
            attempts: list[int] = []

            def transaction() -> None:
                attempts.append(1)
                session.execute(no_op)
                session.commit()

            retry_transient(session, transaction, attempts=10, base_delay=0.1)
        assert len(attempts) > 1
        impatient.dispose()


def test_a_constraint_failure_is_not_retried(app: Flask) -> None:
    with app.app_context(), Session(db.engine) as session:
        attempts: list[int] = []

        def transaction() -> None:
            attempts.append(1)
            session.execute(insert(NOTES), raw_note(uuid7(), 1))  # no such submission or user
            session.commit()

        with pytest.raises(IntegrityError) as refused:
            retry_transient(session, transaction, base_delay=0)
        assert not is_transient(refused.value)
    assert attempts == [1]


# ---------------------------------------------------------------------------- the rate limit


OUTAGE = {
    "sqlite": [
        """CREATE TRIGGER test_outage BEFORE UPDATE ON submissions
           BEGIN SELECT RAISE(ABORT, 'outage'); END"""
    ],
    "postgresql": [
        """CREATE FUNCTION test_outage() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN RAISE EXCEPTION 'outage'; END $$""",
        """CREATE TRIGGER test_outage BEFORE UPDATE ON submissions
           FOR EACH ROW EXECUTE FUNCTION test_outage()""",
    ],
}
OUTAGE_OVER = {
    "sqlite": ["DROP TRIGGER test_outage"],
    "postgresql": ["DROP TRIGGER test_outage ON submissions", "DROP FUNCTION test_outage()"],
}


@contextmanager
def database_refusing_updates(app: Flask) -> Iterator[None]:
    """The database refuses every write to submissions (an outage, a read-only failover)."""
    with app.app_context():
        kind = db.engine.dialect.name
        with db.engine.begin() as connection:
            for statement in OUTAGE[kind]:
                connection.exec_driver_sql(statement)
        try:
            yield
        finally:
            with db.engine.begin() as connection:
                for statement in OUTAGE_OVER[kind]:
                    connection.exec_driver_sql(statement)


def test_a_failed_withdrawal_does_not_use_up_the_limit(make_app: AppFactory) -> None:
    app = make_app(WITHDRAW_RATE_LIMIT="2 per hour")
    patient = app.test_client()
    reference, code = submit(patient, "OUTAGE")
    with database_refusing_updates(app):
        failed = [withdraw(patient, reference, code).status_code for _ in range(3)]
    assert failed == [503, 503, 503]  # our failure: none of them counted
    assert withdraw(patient, reference, code).status_code == 303
    assert shredded(app, reference)
    # Refusals still count: one more try (2 of 2), then the limit bites.
    assert withdraw(patient, reference, WRONG_CODE).status_code == 422
    assert withdraw(patient, reference, WRONG_CODE).status_code == 429
