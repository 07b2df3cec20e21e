"""Key rotation, retirement and listing, through the services and the real CLI."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import Row, event, func, select, update
from sqlalchemy.orm import Session

from intake import keys as key_service
from intake.database import read_only
from intake.extensions import db
from intake.keys import KeyRetired, current_keyring, reload_keyring
from intake.models import AuditEvent, Submission
from intake.sealing import (
    Keyring,
    SealedBlob,
    export_public_keys,
    generate_key,
    retire_key_files,
)
from intake.submissions import open_submission, shred_submission
from tests.conftest import TEST_SECRET, AppFactory, Database
from tests.factories import make_submission, sql_statements


def _seed(app: Flask, count: int) -> None:
    with app.app_context():
        for number in range(count):
            make_submission(db.session, current_keyring(), f"ROT{number}")
        db.session.commit()


def _key_counts(app: Flask) -> dict[str, int]:
    with app.app_context():
        read_only(db.session())  # never queue behind the rotation's write lock on SQLite
        return key_service.key_usage(db.session)


def _all_open(app: Flask) -> int:
    with app.app_context():
        keyring = reload_keyring()
        rows = db.session.scalars(select(Submission)).all()
        for row in rows:
            opened = open_submission(db.session(), keyring, row, actor="test")
            assert opened["full_name"].startswith("NAME-")
        db.session.rollback()
        return len(rows)


def _actions(app: Flask) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def test_rotation_moves_every_row_and_all_still_open(app: Flask, keys_dir: Path) -> None:
    _seed(app, 60)
    old_key = next(iter(_key_counts(app)))
    new_key = generate_key(keys_dir).key_id
    with app.app_context():
        moved = key_service.rotate(
            db.session, reload_keyring(), actor="test", batch_size=7, commit=db.session.commit
        )
    assert moved.rewrapped == 60 and moved.failed == []
    assert _key_counts(app) == {new_key: 60}
    assert old_key != new_key
    assert _all_open(app) == 60
    assert _actions(app)[-2:] == ["keys.rotation_started", "keys.rotation_finished"]
    with app.app_context():
        finished = db.session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
        assert finished is not None
        assert finished.details == '{"failed_rows":0,"remaining_rows":0,"rewrapped_rows":60}'
        assert finished.target == new_key


def test_each_batch_starts_where_the_last_one_stopped(app: Flask, keys_dir: Path) -> None:
    """Batches walk forward by id: none re-reads the rows behind it (rotation stays linear)."""
    _seed(app, 30)
    generate_key(keys_dir)
    with app.app_context():
        keyring = reload_keyring()
        first = key_service.rewrap_batch(db.session(), keyring, 10)
        db.session.commit()
        with sql_statements(db.engine) as statements:
            second = key_service.rewrap_batch(db.session(), keyring, 10, after=first.cursor)
            db.session.commit()
    assert first.rewrapped == second.rewrapped == 10
    assert second.cursor["submissions"] > first.cursor["submissions"]
    [select_rows] = [s.sql for s in statements if "FROM submissions" in s.sql and "LIMIT" in s.sql]
    assert "submissions.id >" in select_rows


def test_a_batch_reads_only_key_columns_and_updates_in_one_statement(
    app: Flask, keys_dir: Path
) -> None:
    """The payload is neither read nor written; each table's batch is one executemany UPDATE."""
    _seed(app, 12)
    new_key = generate_key(keys_dir).key_id
    with app.app_context():
        keyring = reload_keyring()
        with sql_statements(db.engine) as statements:
            result = key_service.rewrap_batch(db.session(), keyring, 100)
            db.session.commit()
        versions = set(db.session.scalars(select(Submission.row_version)))
    assert result.rewrapped == 12 and result.failed == [] and not result.remaining
    touching = [(s.sql, s.executemany) for s in statements if "submissions" in s.sql]
    assert not any("sealed_payload" in sql for sql, _many in touching)
    updates = [many for sql, many in touching if sql.lstrip().upper().startswith("UPDATE")]
    assert updates == [True]
    assert _key_counts(app) == {new_key: 12}
    assert versions == {2}  # bumped, as an ORM flush would: an editor's stale copy is refused
    assert _all_open(app) == 12


def test_a_row_changed_under_the_batch_is_not_overwritten(
    app: Flask, keys_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The UPDATE is guarded by the key columns it read: a change it did not see survives."""
    _seed(app, 5)
    generate_key(keys_dir)
    real_rewrap = key_service._rewrap
    changed: list[uuid.UUID] = []

    def rewrap_then_change(keyring: Keyring, row: Row[Any], binding: str) -> SealedBlob | None:
        moved = real_rewrap(keyring, row, binding)
        if not changed:  # someone rewrites the first row after the batch read it
            changed.append(row.id)
            db.session.execute(
                update(Submission)
                .where(Submission.id == row.id)
                .values(wrapped_key=b"changed meanwhile")
            )
        return moved

    monkeypatch.setattr(key_service, "_rewrap", rewrap_then_change)
    with app.app_context():
        result = key_service.rewrap_batch(db.session(), reload_keyring(), 10)
        db.session.commit()
        kept = db.session.get(Submission, changed[0])
        assert kept is not None and kept.wrapped_key == b"changed meanwhile"
    assert result.rewrapped == 4 and result.failed == []


class Interrupted(Exception):
    pass


def test_interrupted_rotation_resumes_where_it_stopped(app: Flask, keys_dir: Path) -> None:
    _seed(app, 50)
    new_key = generate_key(keys_dir).key_id
    commits = 0

    def crash_after_three_commits() -> None:
        nonlocal commits
        db.session.commit()
        commits += 1
        if commits == 3:  # the start record, then two batches
            raise Interrupted

    with app.app_context(), pytest.raises(Interrupted):
        key_service.rotate(
            db.session,
            reload_keyring(),
            actor="test",
            batch_size=10,
            commit=crash_after_three_commits,
        )
    counts = _key_counts(app)
    assert counts[new_key] == 20 and sum(counts.values()) == 50
    assert _all_open(app) == 50  # half-rotated is a safe state: every row opens
    with app.app_context():
        moved = key_service.rotate(
            db.session, reload_keyring(), actor="test", batch_size=10, commit=db.session.commit
        )
    assert moved.rewrapped == 30
    assert _key_counts(app) == {new_key: 50}
    assert _actions(app).count("keys.rotation_started") == 2
    assert _actions(app).count("keys.rotation_finished") == 1


def test_rotation_killed_with_sigkill_resumes(
    sqlite_app: Flask, sqlite_db: Database, tmp_path: Path, keys_dir: Path
) -> None:
    app = sqlite_app
    _seed(app, 1500)
    env = {
        **os.environ,
        "INTAKE_INSTANCE_PATH": str(tmp_path / "instance"),
        "INTAKE_DATABASE_URL": sqlite_db.url,
        "INTAKE_KEYS_DIR": str(keys_dir),
        "INTAKE_SECRET_KEY": TEST_SECRET,
    }
    command = [
        sys.executable,
        "-m",
        "flask",
        "--app",
        "intake",
        "keys",
        "rotate",
        "--new-key",
        "--batch-size",
        "1",
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            counts = _key_counts(app)
            if len(counts) == 2 and min(counts.values()) >= 50:
                break  # mid-rotation: both keys protect rows
            if process.poll() is not None:
                _out, err = process.communicate()
                pytest.fail(
                    f"rotation ended before it could be interrupted: {err.decode()[-2000:]}"
                )
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=10)
    assert len(_key_counts(app)) == 2
    assert _all_open(app) == 1500
    resumed = subprocess.run(
        [*command[:-3], "--batch-size", "200"], env=env, capture_output=True, text=True, check=False
    )
    assert resumed.returncode == 0, resumed.stderr
    counts = _key_counts(app)
    assert len(counts) == 1 and sum(counts.values()) == 1500
    assert _all_open(app) == 1500


def test_cli_rotate_list_and_retire(app: Flask, runner: FlaskCliRunner, keys_dir: Path) -> None:
    _seed(app, 12)
    old_key = next(iter(_key_counts(app)))

    listing = runner.invoke(args=["keys", "list"])
    assert listing.exit_code == 0
    assert old_key in listing.output and "sealing" in listing.output and " 12" in listing.output

    generated = runner.invoke(args=["keys", "generate"])
    assert generated.exit_code == 0, generated.output
    with app.app_context():
        reload_keyring()
    refused = runner.invoke(args=["keys", "retire", old_key])
    assert refused.exit_code != 0
    assert "still protects 12 rows" in refused.output
    assert (keys_dir / f"{old_key}.private.pem").exists()

    rotated = runner.invoke(args=["keys", "rotate", "--batch-size", "5"])
    assert rotated.exit_code == 0, rotated.output
    assert "done: 12 rows" in rotated.output

    retired = runner.invoke(args=["keys", "retire", old_key])
    assert retired.exit_code == 0, retired.output
    assert not (keys_dir / f"{old_key}.private.pem").exists()

    listing = runner.invoke(args=["keys", "list"])
    old_line = next(line for line in listing.output.splitlines() if line.startswith(old_key))
    assert "retired" in old_line and old_line.rstrip().endswith("0")
    assert _all_open(app) == 12
    assert "keys.retired" in _actions(app)
    assert "keys.generated" in _actions(app)


def test_the_sealing_key_cannot_be_retired(app: Flask, runner: FlaskCliRunner) -> None:
    with app.app_context():
        sealing = current_keyring().sealing_key_id
    result = runner.invoke(args=["keys", "retire", sealing])
    assert result.exit_code != 0
    assert "seals new records" in result.output


def test_unknown_key_cannot_be_retired(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["keys", "retire", "k-nope"])
    assert result.exit_code != 0
    assert "no key" in result.output


def test_export_public_copies_no_private_key(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    target = tmp_path / "public-keys"
    target.mkdir(mode=0o755)
    result = runner.invoke(args=["keys", "export-public", str(target)])
    assert result.exit_code == 0, result.output
    names = sorted(path.name for path in target.iterdir())
    assert any(name.endswith(".public.json") for name in names)
    assert "blind-index.key" in names
    assert not any(name.endswith(".pem") for name in names)
    assert "audit-anchor.key" not in names  # staff side only: it signs the audit anchors
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in target.iterdir())
    again = runner.invoke(args=["keys", "export-public", str(target)])  # refreshes in place
    assert again.exit_code == 0, again.output


def test_running_app_picks_up_a_new_key_without_restart(app: Flask, keys_dir: Path) -> None:
    with app.app_context():
        before = current_keyring().sealing_key_id
        newer = generate_key(keys_dir).key_id  # as `keys generate` on the same folder would
        assert current_keyring().sealing_key_id == newer != before


def test_a_half_written_key_folder_keeps_the_last_good_keyring(app: Flask, keys_dir: Path) -> None:
    with app.app_context():
        before = current_keyring().sealing_key_id
        (keys_dir / "k99999999999999-broken.public.json").write_text("{")
        assert current_keyring().sealing_key_id == before
        (keys_dir / "k99999999999999-broken.public.json").unlink()
        assert current_keyring().ready


def test_a_retired_key_cannot_be_retired_twice(
    app: Flask, runner: FlaskCliRunner, keys_dir: Path
) -> None:
    with app.app_context():
        old = current_keyring().sealing_key_id
    generate_key(keys_dir)
    assert runner.invoke(args=["keys", "retire", old]).exit_code == 0
    again = runner.invoke(args=["keys", "retire", old])
    assert again.exit_code != 0
    assert "already retired" in again.output
    assert _actions(app).count("keys.retired") == 1


def test_a_host_with_a_stale_key_cannot_seal_after_retirement(
    app: Flask, make_app: AppFactory, keys_dir: Path, tmp_path: Path, runner: FlaskCliRunner
) -> None:
    """A patient host that never got the new public key must be refused, not lose records."""
    stale_folder = tmp_path / "patient-keys"
    export_public_keys(keys_dir, stale_folder)
    patient = make_app(SURFACES="patient", KEYS_DIR=str(stale_folder))
    with patient.app_context():
        make_submission(db.session, current_keyring(), "BEFORE")
        db.session.commit()
        old_key = current_keyring().sealing_key_id
    assert runner.invoke(args=["keys", "rotate", "--new-key"]).exit_code == 0
    retired = runner.invoke(args=["keys", "retire", old_key])
    assert retired.exit_code == 0, retired.output
    readiness = patient.test_client().get("/readyz")
    assert readiness.status_code == 503
    assert readiness.json["checks"]["keys"] == "retired"
    with patient.app_context():
        with pytest.raises(KeyRetired):
            make_submission(db.session, current_keyring(), "AFTER")
        db.session.rollback()
        assert db.session.scalar(select(func.count()).select_from(Submission)) == 1
        export_public_keys(keys_dir, stale_folder)  # the operator copies the new key over
        make_submission(db.session, current_keyring(), "AFTER")
        db.session.commit()
    assert patient.test_client().get("/readyz").status_code == 200
    assert _all_open(app) == 2


def test_rotation_alongside_new_submissions_leaves_every_row_openable(
    app: Flask, keys_dir: Path
) -> None:
    _seed(app, 40)
    generate_key(keys_dir)
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            with app.app_context():
                for number in range(40):
                    make_submission(db.session, current_keyring(), f"ROTLIVE{number}")
                    db.session.commit()
        except BaseException as error:  # reported below
            errors.append(error)

    writer = threading.Thread(target=submit)
    writer.start()
    with app.app_context():
        key_service.rotate(
            db.session(), reload_keyring(), actor="test", batch_size=5, commit=db.session.commit
        )
    writer.join(timeout=60)
    assert not errors, errors
    with app.app_context():
        key_service.rotate(
            db.session(), reload_keyring(), actor="test", batch_size=5, commit=db.session.commit
        )
    counts = _key_counts(app)
    assert len(counts) == 1 and sum(counts.values()) == 80
    assert _all_open(app) == 80


def test_withdrawal_of_a_row_rotated_since_it_was_loaded(pg_app: Flask, keys_dir: Path) -> None:
    """READ COMMITTED: a row loaded before a rotation commits is stale when it is shredded."""
    with pg_app.app_context():
        reference = make_submission(db.session, current_keyring(), "ROTSHRED").reference
        db.session.commit()
        generate_key(keys_dir)
        submission = db.session.scalars(
            select(Submission).where(Submission.reference == reference)
        ).one()  # loaded in this request's transaction: row_version 1
        other = Session(db.engine)  # a second worker, rotating meanwhile
        key_service.rotate(other, reload_keyring(), actor="test", commit=other.commit)
        other.close()
        shred_submission(db.session(), submission, actor="patient", reason="withdrawn")
        db.session.commit()
        assert submission.shredded_at is not None
        assert submission.row_version == 3  # stored, rotated, shredded: nothing lost


def _damage(app: Flask, index: int) -> tuple[str | None, str]:
    """Flip a bit of the wrapped key of the ``index``-th submission; its key id and binding."""
    with app.app_context():
        damaged = db.session.scalars(select(Submission).order_by(Submission.id)).all()[index]
        assert damaged.wrapped_key is not None
        damaged.wrapped_key = bytes([damaged.wrapped_key[0] ^ 1]) + damaged.wrapped_key[1:]
        db.session.commit()
        return damaged.key_id, damaged.seal_binding()


def test_a_damaged_row_does_not_stop_the_rotation(
    app: Flask, runner: FlaskCliRunner, keys_dir: Path
) -> None:
    _seed(app, 12)
    old_key, binding = _damage(app, 3)
    result = runner.invoke(args=["keys", "rotate", "--new-key", "--batch-size", "2"])
    assert result.exit_code == 1
    assert f"could not open {binding}" in result.output
    counts = _key_counts(app)
    assert counts.pop(old_key) == 1 and list(counts.values()) == [11]  # every healthy row moved
    assert _actions(app).count("keys.rewrap_failed") == 1
    with app.app_context():
        failed = db.session.scalars(
            select(AuditEvent).where(AuditEvent.action == "keys.rewrap_failed")
        ).one()
        assert failed.target == binding
    assert runner.invoke(args=["keys", "retire", old_key]).exit_code != 0  # the row still needs it


def test_a_key_rewritten_in_place_is_seen(app: Flask, keys_dir: Path) -> None:
    """Retirement rewrites a public record under the same name: the running app must notice."""
    with app.app_context():
        old = current_keyring().sealing_key_id
        generate_key(keys_dir)
        current_keyring()
        retire_key_files(keys_dir, old)
        states = {info.key_id: info.active for info in current_keyring().list_keys()}
        assert states[old] is False


def test_rotation_never_takes_the_audit_head_after_locking_rows(
    pg_app: Flask, keys_dir: Path
) -> None:
    """The lock order (intake/audit.py): no transaction locks the head after submission rows.

    A rotation batch locks its rows; auditing a damaged one in that same transaction took the
    head afterwards, and could deadlock with a withdrawal (head, then the row). Traced per
    transaction from the statements PostgreSQL is sent.
    """
    _seed(pg_app, 6)
    _damage(pg_app, 1)
    with pg_app.app_context():
        generate_key(keys_dir)
        trace: list[str] = []

        def statement(*args: Any) -> None:
            trace.append(args[2])

        def commit(_connection: Any) -> None:
            trace.append("COMMIT")

        event.listen(db.engine, "before_cursor_execute", statement)
        event.listen(db.engine, "commit", commit)
        try:
            session = Session(db.engine)
            result = key_service.rotate(
                session, reload_keyring(), actor="test", commit=session.commit, batch_size=2
            )
            session.close()
        finally:
            event.remove(db.engine, "before_cursor_execute", statement)
            event.remove(db.engine, "commit", commit)
    assert result.failed and len(result.failed) == 1
    rows_locked = False
    for sql in trace:
        if sql == "COMMIT":
            rows_locked = False
        elif "FOR UPDATE" in sql and "FROM submissions" in sql:
            rows_locked = True
        elif "FOR UPDATE" in sql and "audit_head" in sql:
            assert not rows_locked, "the audit head was locked after submission rows"
