"""Races between workers, on PostgreSQL (row locks) and where it matters on SQLite too."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from intake import keys as key_service
from intake import submissions
from intake.extensions import db
from intake.keys import KeyInUse, KeyRetired, claim_for_sealing, current_keyring, reload_keyring
from intake.models import Submission
from intake.sealing import Keyring, generate_key
from intake.submissions import shred_submission
from tests.factories import make_submission

HOLD_SECONDS = 1.0  # long enough for the other side to reach its lock and wait


def _in_thread(target: object) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(target())  # type: ignore[operator]
        except BaseException as error:  # handed to the test
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("key_row_exists", [True, False], ids=["known-key", "first-use"])
def test_retirement_waits_for_a_seal_in_flight(
    pg_app: Flask, keys_dir: Path, key_row_exists: bool
) -> None:
    """A seal to the old key, not yet committed, must make the retirement wait, then refuse."""
    stale = Keyring.load(keys_dir, with_private=False)
    old_key = stale.sealing_key_id
    with pg_app.app_context():
        if key_row_exists:
            claim_for_sealing(db.session(), old_key)
            db.session.commit()
        generate_key(keys_dir)
        sealing = Session(db.engine)
        make_submission(sealing, stale, "INFLIGHT")  # holds its claim until commit

        def retire() -> str:
            with pg_app.app_context(), Session(db.engine) as other:
                try:
                    key_service.retire(other, reload_keyring(), old_key, actor="test")
                    other.commit()
                    return "retired"
                except KeyInUse:
                    return "refused"

        thread, outcome = _in_thread(retire)
        time.sleep(HOLD_SECONDS)
        waited = thread.is_alive()
        sealing.commit()
        sealing.close()
        thread.join(timeout=30)
    assert waited, "retirement did not wait for the seal in flight"
    assert outcome == ["refused"]


def test_rotation_onto_a_key_retired_elsewhere_is_refused(pg_app: Flask, keys_dir: Path) -> None:
    with pg_app.app_context():
        make_submission(db.session, current_keyring(), "ROT")
        db.session.commit()
        newest = generate_key(keys_dir).key_id
        claim_for_sealing(db.session(), newest)
        db.session.commit()
        # Another host retires the newest key after this worker loaded its keyring.
        keyring = reload_keyring()
        db.session.execute(key_service.SealingKey.__table__.update().values(retired_at=func.now()))
        db.session.commit()
        with pytest.raises(KeyRetired):
            key_service.rewrap_batch(db.session(), keyring, 10)
        db.session.rollback()
        assert set(key_service.key_usage(db.session())) != {newest}


def test_withdrawal_while_a_rotation_batch_holds_the_row(pg_app: Flask, keys_dir: Path) -> None:
    with pg_app.app_context():
        row_id = make_submission(db.session, current_keyring(), "SHREDROT").id
        db.session.commit()
        generate_key(keys_dir)
        rotation = Session(db.engine)
        key_service.rewrap_batch(rotation, reload_keyring(), 10)  # row locked, change uncommitted

        def withdraw() -> str:
            with pg_app.app_context(), Session(db.engine) as patient:
                row = patient.get(Submission, row_id)
                assert row is not None
                shred_submission(patient, row, actor="patient", reason="withdrawn")
                patient.commit()
                return "withdrawn"

        thread, outcome = _in_thread(withdraw)
        time.sleep(HOLD_SECONDS)
        rotation.commit()
        rotation.close()
        thread.join(timeout=30)
        assert outcome == ["withdrawn"]
        row = db.session.get(Submission, row_id, populate_existing=True)
        assert row is not None and row.shredded_at is not None and row.sealed_payload is None


def test_reference_collisions_are_retried(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    with app.app_context():
        first = make_submission(db.session, current_keyring(), "FIRST")
        db.session.commit()
        codes = iter([first.reference, first.reference, "ZZZZ-ZZZZ"])
        monkeypatch.setattr(submissions, "new_reference", lambda: next(codes))
        second = make_submission(db.session, current_keyring(), "SECOND")
        db.session.commit()
        assert second.reference == "ZZZZ-ZZZZ"
        assert db.session.scalar(select(func.count()).select_from(Submission)) == 2
        opened = submissions.open_submission(db.session(), current_keyring(), second, actor="t")
        assert opened["full_name"] == "NAME-SECOND"


def test_other_integrity_errors_are_not_mistaken_for_collisions(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    with app.app_context():
        first = make_submission(db.session, current_keyring(), "FIRST")
        db.session.commit()
        monkeypatch.setattr(submissions, "uuid7", lambda: first.id)  # a duplicate primary key
        attempts: list[str] = []
        real_new_reference = submissions.new_reference
        monkeypatch.setattr(
            submissions, "new_reference", lambda: attempts.append("x") or real_new_reference()
        )
        with Session(db.engine) as other, pytest.raises(submissions.StorageConflict):
            make_submission(other, current_keyring(), "SECOND")
        assert len(attempts) == 1  # raised at once, not retried as if the reference collided
        assert db.session.scalar(select(func.count()).select_from(Submission)) == 1
