"""Retention: `flask --app intake purge-expired` crypto-shreds expired authorizations."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import select

from intake import audit, retention
from intake.extensions import db
from intake.keys import current_keyring
from intake.models import AuditEvent, Submission
from intake.submissions import shred_submission
from tests.conftest import Database
from tests.factories import make_submission

PAST = datetime.now(UTC) - timedelta(days=1)
FUTURE = datetime.now(UTC) + timedelta(days=30)


def seed(app: Flask) -> dict[str, str]:
    """Three expired, one current, one withdrawn (and expired): marker -> reference."""
    references = {}
    with app.app_context():
        keyring = current_keyring()
        for marker, expires in (
            ("EXPA", PAST),
            ("EXPB", PAST - timedelta(days=400)),
            ("EXPC", datetime.now(UTC) - timedelta(seconds=1)),
            ("KEEP", FUTURE),
            ("GONE", PAST),
        ):
            row = make_submission(db.session(), keyring, marker, authorization_expires_at=expires)
            references[marker] = row.reference
        gone = by_reference(references["GONE"])
        shred_submission(db.session(), gone, actor="patient", reason="withdrawn_by_patient")
        db.session.commit()
    return references


def by_reference(reference: str) -> Submission:
    return db.session.scalars(select(Submission).where(Submission.reference == reference)).one()


def snapshot(app: Flask) -> dict[str, Submission]:
    with app.app_context():
        found = db.session.scalars(select(Submission)).all()
        db.session.expunge_all()
        return {row.reference: row for row in found}


def events(app: Flask, action: str) -> list[AuditEvent]:
    with app.app_context():
        found = db.session.scalars(
            select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
        ).all()
        db.session.expunge_all()
        return list(found)


def purge(runner: FlaskCliRunner, *args: str) -> str:
    result = runner.invoke(args=["purge-expired", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_expired_submissions_are_shredded_and_others_untouched(
    app: Flask, runner: FlaskCliRunner
) -> None:
    references = seed(app)
    before = snapshot(app)
    output = purge(runner)
    assert output == "shredded 3 of 3 submissions with an expired authorization, in 1 batch\n"
    after = snapshot(app)
    for marker in ("EXPA", "EXPB", "EXPC"):
        row = after[references[marker]]  # a tombstone: reference and plaintext facts stay
        assert row.shredded_at is not None and row.status == "withdrawn"
        assert row.sealed_payload is None and row.wrapped_key is None and row.key_id is None
        assert row.email_index is None and row.email_birthday_index is None
        assert row.cancer_type == before[row.reference].cancer_type
    kept = after[references["KEEP"]]
    assert kept.shredded_at is None and kept.sealed_payload == before[kept.reference].sealed_payload
    gone = after[references["GONE"]]
    assert gone.shredded_at == before[gone.reference].shredded_at  # withdrawn earlier: left be


def test_every_shred_and_the_run_itself_are_audited(app: Flask, runner: FlaskCliRunner) -> None:
    references = seed(app)
    purge(runner)
    shredded = events(app, "submission.shredded")
    reasons = {event.target: json.loads(event.details)["reason"] for event in shredded}
    assert reasons == {
        references["GONE"]: "withdrawn_by_patient",
        references["EXPA"]: "authorization_expired",
        references["EXPB"]: "authorization_expired",
        references["EXPC"]: "authorization_expired",
    }
    runs = events(app, "submissions.purge_run")
    assert [json.loads(event.details) for event in runs] == [
        {"phase": "started", "expired": 3, "batch_size": 100},
        {"phase": "finished", "shredded": 3, "batches": 1},
    ]
    assert all(event.actor.startswith("cli:") for event in [*runs, *shredded[1:]])
    assert runs[0].id < shredded[1].id and shredded[-1].id < runs[1].id
    with app.app_context():
        assert audit.verify_chain(db.session()).ok


def test_a_second_run_finds_nothing(app: Flask, runner: FlaskCliRunner) -> None:
    seed(app)
    purge(runner)
    before = snapshot(app)
    assert "shredded 0 of 0 submissions" in purge(runner)
    assert len(events(app, "submission.shredded")) == 4
    assert {ref: row.row_version for ref, row in snapshot(app).items()} == {
        ref: row.row_version for ref, row in before.items()
    }
    assert json.loads(events(app, "submissions.purge_run")[-1].details)["shredded"] == 0


def test_batches_commit_one_at_a_time(app: Flask, runner: FlaskCliRunner) -> None:
    seed(app)
    assert "shredded 3 of 3" in purge(runner, "--batch-size", "2")
    finished = json.loads(events(app, "submissions.purge_run")[-1].details)
    assert finished == {"phase": "finished", "shredded": 3, "batches": 2}


def test_an_interrupted_run_keeps_its_batches_and_the_next_carries_on(
    app: Flask, monkeypatch: pytest.MonkeyPatch, runner: FlaskCliRunner
) -> None:
    seed(app)
    real_batch = retention.purge_batch
    calls = 0

    def failing_second_batch(*args: object, **kwargs: object) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            from sqlalchemy.exc import OperationalError

            raise OperationalError("statement", {}, Exception("database went away"))
        return real_batch(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(retention, "purge_batch", failing_second_batch)
    result = runner.invoke(args=["purge-expired", "--batch-size", "2"])
    assert result.exit_code == 1
    assert "purge stopped (OperationalError)" in result.output
    assert "went away" not in result.output
    assert sum(row.shredded_at is not None for row in snapshot(app).values()) == 1 + 2
    monkeypatch.undo()
    assert "shredded 1 of 1" in purge(runner)


def test_dry_run_only_counts(app: Flask, runner: FlaskCliRunner) -> None:
    seed(app)
    before = len(events(app, "submission.shredded"))
    output = purge(runner, "--dry-run")
    assert output.strip() == "3 submissions have an expired authorization (dry run: none shredded)"
    assert len(events(app, "submission.shredded")) == before
    assert events(app, "submissions.purge_run") == []


def test_purged_bytes_leave_the_sqlite_files(sqlite_app: Flask, sqlite_db: Database) -> None:
    references = seed(sqlite_app)
    expired = [snapshot(sqlite_app)[references[m]] for m in ("EXPA", "EXPB", "EXPC")]
    blobs = [blob for row in expired for blob in (row.sealed_payload, row.wrapped_key) if blob]
    assert len(blobs) == 6
    raw = sqlite_db.raw_bytes()
    assert all(blob in raw for blob in blobs)  # the search below finds them when they are there
    purge(sqlite_app.test_cli_runner())
    raw = sqlite_db.raw_bytes()
    for blob in blobs:
        assert blob not in raw and blob[:32] not in raw and blob[-32:] not in raw
    for marker in ("EXPA", "EXPB", "EXPC", "KEEP"):
        assert f"NAME-{marker}".encode() not in raw  # never in plaintext, before or after
    wal = sqlite_db.sqlite_path.with_name(sqlite_db.sqlite_path.name + "-wal")  # type: ignore[union-attr]
    assert not wal.exists() or wal.stat().st_size == 0
