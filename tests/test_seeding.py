"""`flask dev seed N`: sealed as in production, one audit row, chain intact, not in production."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import func, select

from intake import audit, create_app
from intake.extensions import db
from intake.keys import current_keyring
from intake.models import AuditEvent, SealingKey, Submission
from intake.sealing import SealedBlob, generate_key
from intake.triage import STATUSES, Filters, list_page
from tests.factories import make_user


def test_seed_inserts_rows_that_open_and_keeps_the_chain(
    app: Flask, runner: FlaskCliRunner
) -> None:
    coordinator = make_user(app, "coordinator")
    result = runner.invoke(args=["dev", "seed", "300", "--batch", "70", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "seeded 300 submissions" in result.output
    with app.app_context():
        session, keyring = db.session(), current_keyring()
        rows = list(session.scalars(select(Submission)))
        assert len(rows) == 300
        assert len({row.reference for row in rows}) == 300
        tombstones = [row for row in rows if row.shredded_at is not None]
        assert all(row.status == "withdrawn" and row.sealed_payload is None for row in tombstones)
        sealed = [row for row in rows if row.shredded_at is None]
        for row in sealed:
            assert row.key_id == keyring.sealing_key_id
            blob = SealedBlob(row.key_id, row.wrapped_key, row.sealed_payload)  # type: ignore[arg-type]
            fields = json.loads(keyring.open(blob, binding=row.seal_binding()))
            assert fields["full_name"] and fields["signature"] == fields["full_name"]
            if fields["email"]:  # blind indexes as in production: the email search finds it
                assert row.email_index == keyring.email_index(fields["email"])
            assert row.withdrawal_code_hash is not None and row.submit_token_hash is not None
        # Varied: many cancer types and statuses, assigned to the coordinator that exists.
        assert len(Counter(row.cancer_type for row in rows)) >= 15
        assert len({row.status for row in rows} - set(STATUSES)) == 0
        assert len({row.status for row in rows}) >= 6
        assert {row.assignee_id for row in rows} - {None} == {coordinator.id}
        # The sealing key is registered, so `keys retire` counts these rows.
        assert session.get(SealingKey, keyring.sealing_key_id) is not None
        # One audit row for the whole run, and the chain still verifies.
        seeded = session.scalars(select(AuditEvent).where(AuditEvent.action == "dev.seeded")).all()
        assert len(seeded) == 1 and json.loads(seeded[0].details)["rows"] == 300
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == 2  # user + seed
        assert audit.verify_chain(session).ok
        # The list pages through them all by keyset.
        seen, cursor = 0, None
        while True:
            page = list_page(session, Filters(), cursor=cursor)
            seen += len(page.rows)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == 300
    verify = runner.invoke(args=["audit", "verify"])
    assert verify.exit_code == 0 and "chain intact" in verify.output


def test_seed_is_shaped_by_the_seed_and_runs_in_worker_processes(
    app: Flask, runner: FlaskCliRunner
) -> None:
    first = runner.invoke(args=["dev", "seed", "120", "--batch", "40", "--workers", "2"])
    assert first.exit_code == 0, first.output
    with app.app_context():
        session, keyring = db.session(), current_keyring()
        rows = list(session.scalars(select(Submission).order_by(Submission.received_at)))
        shape = Counter((row.cancer_type, row.status, row.age_band) for row in rows)
        opened = 0
        for row in rows:
            if row.sealed_payload is not None:
                blob = SealedBlob(row.key_id, row.wrapped_key, row.sealed_payload)  # type: ignore[arg-type]
                assert json.loads(keyring.open(blob, binding=row.seal_binding()))["full_name"]
                opened += 1
        assert opened > 100
        db.session.remove()
    again = runner.invoke(args=["dev", "seed", "120", "--batch", "40", "--workers", "0"])
    assert again.exit_code == 0, again.output
    with app.app_context():
        rows = list(db.session.scalars(select(Submission)))
        assert len(rows) == 240 and len({row.reference for row in rows}) == 240
        counts = Counter((row.cancer_type, row.status, row.age_band) for row in rows)
        assert counts == shape + shape  # same seed, same facts (ids and keys differ)
        assert audit.verify_chain(db.session()).ok


def test_seed_is_refused_in_production(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    generate_key(keys)
    app = create_app(
        {
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "ENV": "production",
            "SECRET_KEY": "p" * 40,
            "DATABASE_URL": "postgresql+psycopg://x@127.0.0.1:9/x",
            "SESSION_COOKIE_SECURE": True,
            "TRUSTED_HOSTS": ("localhost",),
            "KEYS_DIR": str(keys),
        }
    )
    result = app.test_cli_runner().invoke(args=["dev", "seed", "10"])
    assert result.exit_code != 0
    assert "refused in production" in result.output
