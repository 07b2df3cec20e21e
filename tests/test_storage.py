"""Stored submissions: sealed at rest on both databases, opened after an audit row, shreddable."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select, text

from intake import audit
from intake.database import read_ahead
from intake.extensions import db
from intake.keys import current_keyring
from intake.models import AuditEvent, Submission
from intake.submissions import SubmissionGone, open_submission, shred_submission
from tests.conftest import Database
from tests.factories import make_submission, personal


def _markers(count: int) -> list[str]:
    return [f"MK{secrets.token_hex(6).upper()}" for _ in range(count)]


def test_no_personal_value_is_readable_at_rest(app: Flask, database: Database) -> None:
    markers = _markers(5)
    with app.app_context():
        for marker in markers:
            make_submission(db.session, current_keyring(), marker)
        db.session.commit()
    raw = database.raw_bytes()
    assert raw, "the raw dump is empty, so the search below would prove nothing"
    assert b"breast" in raw  # plaintext triage facts are there: the dump is real
    for marker in markers:
        for value in personal(marker).values():
            if "1980" in value:
                continue  # the shared birthday is checked below, in every encoding
            assert value.encode() not in raw, f"{value!r} found in raw storage"
            assert value.lower().encode() not in raw
        assert marker.encode() not in raw
    for birthday in (b"1980-01-31", b"31/01/1980", b"01/31/1980"):
        assert birthday not in raw


def test_open_writes_the_audit_row_first(app: Flask) -> None:
    with app.app_context():
        submission = make_submission(db.session, current_keyring(), "OPENME")
        db.session.commit()
        opened = open_submission(db.session, current_keyring(), submission, actor="user:7")
        assert opened["full_name"] == "NAME-OPENME"
        events = db.session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        assert [e.action for e in events] == ["submission.received", "submission.opened"]
        assert events[-1].target == submission.reference
        assert events[-1].actor == "user:7"
        assert "OPENME" not in "".join(e.details for e in events)


def test_shredding_leaves_a_tombstone_and_nothing_to_open(app: Flask, database: Database) -> None:
    with app.app_context():
        submission = make_submission(db.session, current_keyring(), "SHREDME")
        db.session.commit()
        shred_submission(db.session, submission, actor="patient", reason="withdrawn")
        shred_submission(db.session, submission, actor="patient", reason="withdrawn")  # idempotent
        db.session.commit()
        row = db.session.get(Submission, submission.id)
        assert row is not None
        assert row.reference == submission.reference and row.status == "withdrawn"
        assert row.shredded_at is not None
        assert (row.key_id, row.wrapped_key, row.sealed_payload, row.email_index) == (
            None,
            None,
            None,
            None,
        )
        with pytest.raises(SubmissionGone):
            open_submission(db.session, current_keyring(), row, actor="user:1")
        actions = db.session.scalars(select(AuditEvent.action)).all()
        assert actions.count("submission.shredded") == 1
        assert audit.verify_chain(db.session()).ok


def test_blob_copied_to_another_row_does_not_open(app: Flask) -> None:
    from intake.sealing import SealedDataInvalid

    with app.app_context():
        keyring = current_keyring()
        victim = make_submission(db.session, keyring, "VICTIM")
        decoy = make_submission(db.session, keyring, "DECOY")
        decoy.wrapped_key, decoy.sealed_payload = victim.wrapped_key, victim.sealed_payload
        db.session.commit()
        with pytest.raises(SealedDataInvalid):
            open_submission(db.session, keyring, decoy, actor="user:1")


def test_references_are_unique_and_unambiguous(app: Flask) -> None:
    with app.app_context():
        references = {
            make_submission(db.session, current_keyring(), f"R{i}").reference for i in range(50)
        }
        db.session.commit()
    assert len(references) == 50
    for reference in references:
        assert len(reference) == 9 and reference[4] == "-"
        assert not set(reference) & set("01ILOU")


def test_a_failed_open_is_audited_too(app: Flask) -> None:
    from intake.sealing import SealedDataInvalid

    with app.app_context():
        submission = make_submission(db.session, current_keyring(), "TAMPERED")
        assert submission.sealed_payload is not None
        payload = submission.sealed_payload  # flip a bit of the tag: always a change
        submission.sealed_payload = payload[:-1] + bytes([payload[-1] ^ 1])
        db.session.commit()
        with pytest.raises(SealedDataInvalid):
            open_submission(db.session(), current_keyring(), submission, actor="user:3")
        db.session.commit()  # as the staff view does: the failure itself is evidence
        last = db.session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
        assert last is not None
        assert (last.action, last.actor, last.target) == (
            "submission.open_failed",
            "user:3",
            submission.reference,
        )
        assert '"error":"SealedDataInvalid"' in last.details


def test_shredded_bytes_leave_the_sqlite_files(sqlite_app: Flask, sqlite_db: Database) -> None:
    """Checked while the app still has the database open, as a running server does."""
    from intake.database import checkpoint

    with sqlite_app.app_context():
        submission = make_submission(db.session, current_keyring(), "GONE")
        db.session.commit()
        wrapped, payload = submission.wrapped_key, submission.sealed_payload
        assert wrapped is not None and payload is not None
        db.session.rollback()  # reading the row began a transaction; a checkpoint waits for it
        checkpoint(db.session())
        assert payload in sqlite_db.raw_bytes()  # the search below finds it when it is there
        shred_submission(db.session(), submission, actor="patient", reason="withdrawn")
        db.session.commit()
        checkpoint(db.session())
        raw = sqlite_db.raw_bytes()
    assert payload not in raw and payload[:64] not in raw
    assert wrapped not in raw and wrapped[:64] not in raw


def test_checkpoint_gives_way_to_an_open_reader(sqlite_app: Flask) -> None:
    from intake.database import checkpoint

    with sqlite_app.app_context():
        make_submission(db.session, current_keyring(), "READER")
        db.session.commit()
        reader = db.engine.connect()
        reader.exec_driver_sql("SELECT count(*) FROM submissions").all()  # holds a read snapshot
        started = time.monotonic()
        assert checkpoint(db.session(), wait_ms=200) is False
        assert time.monotonic() - started < 5
        reader.rollback()
        reader.close()
        assert checkpoint(db.session()) is True


def test_database_settings_that_protect_data(app: Flask, database: Database) -> None:
    with app.app_context():
        if database.kind == "sqlite":
            pragmas = {
                name: db.session.execute(text(f"PRAGMA {name}")).scalar()
                for name in ("secure_delete", "journal_mode", "foreign_keys")
            }
            assert pragmas == {"secure_delete": 1, "journal_mode": "wal", "foreign_keys": 1}
        make_submission(db.session, current_keyring(), "DUP")
        db.session.commit()
        duplicate_key = db.session.scalars(select(Submission.key_id)).one()
        with pytest.raises(Exception) as caught:
            db.session.execute(
                text("INSERT INTO sealing_keys (key_id, first_used_at) VALUES (:k, :t)"),
                {"k": duplicate_key, "t": "2026-01-01T00:00:00+00:00"},
            )
        # SQLAlchemy leaves bound values out of its errors (PostgreSQL's own DETAIL line may
        # quote a duplicated key, which is why no identifying value is ever in a unique column).
        assert "parameters hidden" in str(caught.value)
        assert "2026-01-01T00:00:00" not in str(caught.value)
        db.session.rollback()


# ---------------------------------------------------------------------------- read_ahead


def test_read_ahead_keeps_order_and_ends() -> None:
    assert list(read_ahead(iter(range(1000)), depth=2)) == list(range(1000))
    assert list(read_ahead(iter([]))) == []


def test_read_ahead_raises_the_producers_error_in_the_consumer() -> None:
    def batches() -> Iterator[int]:
        yield 1
        raise LookupError("the query failed")

    reader = read_ahead(batches())
    assert next(reader) == 1
    with pytest.raises(LookupError, match="the query failed"):
        next(reader)


def test_read_ahead_stops_its_thread_when_the_consumer_stops_early() -> None:
    produced: list[int] = []
    closed = threading.Event()

    def batches() -> Iterator[int]:
        try:
            for number in range(1_000_000):
                produced.append(number)
                yield number
        finally:
            closed.set()

    reader = read_ahead(batches(), depth=1)
    assert next(reader) == 0
    reader.close()  # a cancelled download: the generator is closed mid-way
    assert closed.is_set()  # the producer was stopped and joined before close() returned
    assert len(produced) <= 3  # it never ran more than the depth ahead
    assert not [t for t in threading.enumerate() if t.name == "intake-read-ahead"]
