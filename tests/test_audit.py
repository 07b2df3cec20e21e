"""The audit trail: hash-chained, append-only, and any tampering is found and named."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import Connection, select, text
from sqlalchemy.exc import DatabaseError

from intake import audit
from intake.extensions import db
from intake.models import AuditEvent

COLUMNS = ("occurred_at", "actor", "action", "target", "details", "prev_hash", "hash")


def _write_events(app: Flask, count: int) -> None:
    with app.app_context():
        for number in range(1, count + 1):
            audit.record(
                db.session,
                actor="user:1",
                action="test.event",
                target=f"T{number}",
                details={"n": number},
            )
        db.session.commit()


def _as_schema_owner(app: Flask, change: Callable[[Connection], None]) -> None:
    """Tamper the way an attacker with the database owner's rights would: triggers off first."""
    with app.app_context(), db.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
        else:
            connection.execute(text("DROP TRIGGER audit_events_no_update"))
            connection.execute(text("DROP TRIGGER audit_events_no_delete"))
        change(connection)
        if connection.dialect.name == "postgresql":
            connection.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))


def _verify(app: Flask) -> audit.ChainReport:
    with app.app_context():
        db.session.execute(select(AuditEvent.id).limit(1))  # as a page would: session already busy
        return audit.verify_chain(db.session(), batch_size=2)  # small batches cross batch edges


def test_chain_links_each_row_to_the_one_before(app: Flask) -> None:
    _write_events(app, 5)
    with app.app_context():
        events = db.session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        assert [e.id for e in events] == [1, 2, 3, 4, 5]
        assert events[0].prev_hash == audit.GENESIS_HASH
        for before, after in itertools.pairwise(events):
            assert after.prev_hash == before.hash
        assert events[0].occurred_at.tzinfo is not None
    report = _verify(app)
    assert report.ok and report.checked == 5


def test_empty_chain_verifies(app: Flask) -> None:
    assert _verify(app).ok


def test_verify_cli_prints_ok(app: Flask, runner: FlaskCliRunner) -> None:
    _write_events(app, 3)
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK: 3 audit rows, chain intact, head ")
    with app.app_context():
        head = db.session.scalars(select(AuditEvent.hash).order_by(AuditEvent.id.desc())).first()
    first, second, third = result.output.strip().splitlines()
    assert first.endswith(str(head))
    assert second.startswith("anchors: none in ")  # no anchor file yet: said, not failed
    assert third.startswith("disclosures: every export batch lists")


def test_database_refuses_updates_and_deletes(app: Flask) -> None:
    _write_events(app, 2)
    with app.app_context():
        statements = [
            "UPDATE audit_events SET actor = 'x' WHERE id = 1",
            "DELETE FROM audit_events WHERE id = 2",
        ]
        if db.engine.dialect.name == "postgresql":
            statements.append("TRUNCATE audit_events")  # SQLite has no TRUNCATE; DELETE is above
        for statement in statements:
            with pytest.raises(DatabaseError, match="append-only"), db.engine.begin() as connection:
                connection.execute(text(statement))
    assert _verify(app).ok


def _edit_row_3(connection: Connection) -> None:
    connection.execute(text("UPDATE audit_events SET details = :d WHERE id = 3"), {"d": '{"n":99}'})


def _edit_row_3_actor(connection: Connection) -> None:
    connection.execute(text("UPDATE audit_events SET actor = 'user:2' WHERE id = 3"))


def _edit_row_3_action(connection: Connection) -> None:
    connection.execute(text("UPDATE audit_events SET action = 'test.other' WHERE id = 3"))


def _edit_row_3_target(connection: Connection) -> None:
    connection.execute(text("UPDATE audit_events SET target = 'T99' WHERE id = 3"))


def _edit_row_3_time(connection: Connection) -> None:
    table = AuditEvent.__table__
    earlier = connection.execute(select(table.c.occurred_at).where(table.c.id == 3)).scalar_one()
    connection.execute(
        table.update().where(table.c.id == 3).values(occurred_at=earlier - timedelta(hours=1))
    )


def _delete_row_3(connection: Connection) -> None:
    connection.execute(text("DELETE FROM audit_events WHERE id = 3"))


def _delete_last_row(connection: Connection) -> None:
    connection.execute(text("DELETE FROM audit_events WHERE id = 6"))


def _swap_rows_2_and_4(connection: Connection) -> None:
    rows = {
        row.id: row
        for row in connection.execute(
            text(f"SELECT id, {', '.join(COLUMNS)} FROM audit_events WHERE id IN (2, 4)")
        )
    }
    assignments = ", ".join(f"{column} = :{column}" for column in COLUMNS)
    # Park row 2's unique hashes first so the swap does not trip the unique constraints.
    connection.execute(text("UPDATE audit_events SET prev_hash = 'p', hash = 'h' WHERE id = 2"))
    for target, source in ((4, 2), (2, 4)):
        values = {column: getattr(rows[source], column) for column in COLUMNS}
        connection.execute(
            text(f"UPDATE audit_events SET {assignments} WHERE id = :id"), {**values, "id": target}
        )


def _renumber_row_3(connection: Connection) -> None:
    connection.execute(text("UPDATE audit_events SET id = 30 WHERE id = 3"))


def _delete_everything(connection: Connection) -> None:
    connection.execute(text("DELETE FROM audit_events"))


def _rehash_row(connection: Connection, row_id: int, prev_hash: str, details: str) -> str:
    table = AuditEvent.__table__
    row = connection.execute(select(table).where(table.c.id == 6)).one()  # typed: aware datetime
    content = audit.canonical_content(
        row_id, row.occurred_at, row.actor, row.action, row.target, details
    )
    return audit.chain_hash(prev_hash, content)


def _rewrite_last_row_with_a_valid_hash(connection: Connection) -> None:
    prev = connection.execute(text("SELECT prev_hash FROM audit_events WHERE id = 6")).scalar_one()
    new_hash = _rehash_row(connection, 6, prev, '{"n":600}')
    connection.execute(
        text("UPDATE audit_events SET details = :d, hash = :h WHERE id = 6"),
        {"d": '{"n":600}', "h": new_hash},
    )


def _append_past_the_head(connection: Connection) -> None:
    prev = connection.execute(text("SELECT hash FROM audit_events WHERE id = 6")).scalar_one()
    forged = _rehash_row(connection, 7, prev, '{"n":7}')
    connection.execute(
        text(
            "INSERT INTO audit_events"
            " (id, occurred_at, actor, action, target, details, prev_hash, hash)"
            " SELECT 7, occurred_at, actor, action, target, :d, :p, :h"
            " FROM audit_events WHERE id = 6"
        ),
        {"d": '{"n":7}', "p": prev, "h": forged},
    )


@pytest.mark.parametrize(
    ("tamper", "broken_row", "words"),
    [
        (_edit_row_3, 3, "row edited"),
        (_edit_row_3_actor, 3, "row edited"),
        (_edit_row_3_action, 3, "row edited"),
        (_edit_row_3_target, 3, "row edited"),
        (_edit_row_3_time, 3, "row edited"),
        (_delete_row_3, 3, "row 3 is missing"),
        (_delete_last_row, 6, "rows removed from the end"),
        (_swap_rows_2_and_4, 2, "does not match"),
        (_renumber_row_3, 3, "row 3 is missing"),
        (_delete_everything, 1, "rows removed from the end"),
        (_rewrite_last_row_with_a_valid_hash, 6, "last row differs"),
        (_append_past_the_head, 7, "rows added past"),
    ],
    ids=[
        "edit-details",
        "edit-actor",
        "edit-action",
        "edit-target",
        "edit-time",
        "delete-middle",
        "delete-last",
        "reorder",
        "renumber",
        "delete-all",
        "rewrite-last",
        "forged-append",
    ],
)
def test_tampering_is_found_and_named(
    app: Flask,
    runner: FlaskCliRunner,
    tamper: Callable[[Connection], None],
    broken_row: int,
    words: str,
) -> None:
    _write_events(app, 6)
    _as_schema_owner(app, tamper)
    report = _verify(app)
    assert not report.ok
    assert report.broken_row == broken_row
    assert words in (report.reason or "")
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 1
    assert f"BROKEN at row {broken_row}" in result.output


def test_details_refuse_phi_like_keys_and_long_values(app: Flask) -> None:
    with app.app_context():
        for details in (
            {"email": "a@b.c"},
            {"Name": "x"},
            {"full_name": "x"},
            {"reason": "x" * 201},
            {"nested": {"a": 1}},
            {"reason": "jane@example.org"},
            {"reason": "Jane Doe called about her scan"},
            {"code": "line\nbreak"},
        ):
            with pytest.raises(audit.AuditError):
                audit.record(db.session, actor="user:1", action="test.event", details=details)  # type: ignore[arg-type]
        db.session.rollback()
        assert db.session.scalars(select(AuditEvent)).all() == []


def test_rolled_back_change_leaves_no_audit_row(app: Flask) -> None:
    with app.app_context():
        audit.record(db.session, actor="user:1", action="test.event")
        db.session.rollback()
        assert db.session.scalars(select(AuditEvent)).all() == []
        audit.record(db.session, actor="user:1", action="test.event")
        db.session.commit()
    report = _verify(app)
    assert report.ok and report.checked == 1


def test_concurrent_writers_never_fork_the_chain(app: Flask) -> None:
    writers, per_writer = 4, 15
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def write(worker: int) -> None:
        try:
            start.wait()
            with app.app_context():
                for number in range(per_writer):
                    audit.record(
                        db.session,
                        actor=f"user:{worker}",
                        action="test.event",
                        details={"n": number},
                    )
                    db.session.commit()
                db.session.remove()
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(worker,)) for worker in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    report = _verify(app)
    assert report.ok, report
    assert report.checked == writers * per_writer


def test_verify_is_not_fooled_by_writers_appending_meanwhile(app: Flask) -> None:
    _write_events(app, 20)
    stop = threading.Event()
    writing = threading.Event()
    errors: list[BaseException] = []

    def append_forever() -> None:
        try:
            with app.app_context():
                while not stop.is_set():
                    audit.record(db.session, actor="user:1", action="test.event")
                    db.session.commit()
                    writing.set()
        except BaseException as error:  # reported below
            errors.append(error)

    writer = threading.Thread(target=append_forever)
    writer.start()
    try:
        assert writing.wait(timeout=30)
        reports = [_verify(app) for _ in range(15)]
    finally:
        stop.set()
        writer.join(timeout=30)
    assert not errors, errors
    assert all(report.ok for report in reports), [str(r) for r in reports if not r.ok]
    assert reports[-1].checked > 20  # the writer really was appending while we verified
