"""The migrations are the schema: no drift from the models, and they run both ways."""

from __future__ import annotations

import flask_migrate
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import inspect, text

from intake.extensions import db
from intake.models import Base


def test_models_match_the_migrated_schema(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["db", "check"])  # Flask-Migrate exits 1 when it finds drift
    assert result.exit_code == 0, result.output


def test_drift_would_be_detected(app: Flask, runner: FlaskCliRunner) -> None:
    with app.app_context():
        db.session.execute(text("DROP INDEX ix_submissions_key_id"))
        db.session.commit()
    result = runner.invoke(args=["db", "check"])
    assert result.exit_code == 1


def test_migrated_database_is_at_head(app: Flask) -> None:
    with app.app_context():
        tables = set(inspect(db.engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_downgrade_to_nothing_and_back(sqlite_app: Flask) -> None:
    with sqlite_app.app_context():
        flask_migrate.downgrade(revision="base")
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        flask_migrate.upgrade()
        assert set(Base.metadata.tables) <= set(inspect(db.engine).get_table_names())


def test_staff_accounts_from_before_0007_must_replace_what_their_creator_knew(
    app: Flask,
) -> None:
    """Until 0007 a creator saw each account's TOTP secret and set its only password."""
    with app.app_context():
        flask_migrate.downgrade(revision="0006")
        db.session.execute(
            text(
                "INSERT INTO users (id, email, role, password_hash, totp_secret, "
                "totp_enrolled_at, session_version, created_at) VALUES "
                "(1, 'enrolled@example.org', 'admin', 'x', 'AAAABBBBCCCCDDDD', "
                "'2026-11-30 10:00:00+00:00', 1, '2026-11-30 09:00:00+00:00'), "
                "(2, 'pending@example.org', 'coordinator', 'x', 'EEEEFFFFGGGGHHHH', "
                "NULL, 1, '2026-11-30 09:00:00+00:00')"
            )
        )
        db.session.commit()
        flask_migrate.upgrade()
        rows = db.session.execute(
            text("SELECT email, totp_secret, password_change_required FROM users ORDER BY id")
        ).all()
    assert [(email, secret, bool(forced)) for email, secret, forced in rows] == [
        ("enrolled@example.org", "AAAABBBBCCCCDDDD", True),  # reset 2FA after the new password
        ("pending@example.org", None, True),  # the secret its creator saw is gone
    ]
