"""CSV export: admins only, a stated reason, audited before streaming, injection-safe RFC 4180."""

from __future__ import annotations

import csv
import io
import json
import threading
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from intake import triage
from intake.coordinator.export import csv_chunks, safe_cell
from intake.extensions import db
from intake.keys import current_keyring
from intake.models import AuditEvent, Submission
from intake.submissions import shred_submission, store_submission
from tests.factories import StaffAccount, csrf_token, facts, login, make_submission, make_user

HOSTILE = {
    "full_name": 'Smith, "Jo"\nJunior',
    "birthday": "1970-05-06",
    "email": "=cmd|' /C calc'!A0@example.org",
    "phone": "+1 555 0100",
    "postal_code": "-12345",
    "country": "@US",
    "contact_method": "\temail",
    "cancer_other": "\rcarriage\0nul",
}


def add(app: Flask, marker: str, **fact_overrides: Any) -> str:
    with app.app_context():
        submission = make_submission(db.session(), current_keyring(), marker, **fact_overrides)
        db.session.commit()
        return submission.reference


def add_hostile(app: Flask) -> str:
    with app.app_context():
        submission = store_submission(
            db.session(),
            current_keyring(),
            facts(source="=HYPERLINK(1)"),
            HOSTILE,
            email=HOSTILE["email"],
            birthday=date(1970, 5, 6),
        )
        db.session.commit()
        return submission.reference


def export(client: FlaskClient, **data: str) -> Any:
    token = csrf_token(client, "/coordinator/")
    return client.post("/coordinator/export", data={"csrf_token": token, **data})


def parse(body: bytes) -> list[dict[str, str]]:
    assert body.startswith("\ufeff".encode())
    text = body.decode("utf-8")[1:]
    return list(csv.DictReader(io.StringIO(text, newline="")))


def exports(app: Flask) -> list[AuditEvent]:
    with app.app_context():
        query = select(AuditEvent).where(AuditEvent.action == "submissions.exported")
        rows = list(db.session.scalars(query))
        db.session.expunge_all()
        return rows


@pytest.mark.parametrize("role", ["coordinator", "auditor"])
def test_only_admins_export(app: Flask, role: str) -> None:
    add(app, "NOPE")
    client = app.test_client()
    login(client, make_user(app, role=role))
    response = export(client, reason="other")
    assert response.status_code == 403 and b"NAME-NOPE" not in response.data
    assert exports(app) == []


def test_a_reason_from_the_list_is_required(app: Flask, admin_client: FlaskClient) -> None:
    add(app, "WHY")
    for reason in ("", "because I can"):
        response = export(admin_client, reason=reason)
        body = response.get_data(as_text=True)
        assert response.status_code == 422
        assert '<a href="#reason">Choose why you are exporting these submissions</a>' in body
        assert "NAME-WHY" not in body
    assert exports(app) == []


def test_export_streams_safe_csv_and_is_audited_first(
    app: Flask, admin: StaffAccount, admin_client: FlaskClient
) -> None:
    reference = add_hostile(app)
    response = export(admin_client, reason="quality_review")
    assert response.status_code == 200 and response.is_streamed
    assert response.mimetype == "text/csv"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="submissions-')
    body = response.get_data()
    assert b'"Smith, ""Jo""\nJunior"' in body  # RFC 4180: quoted, quotes doubled
    assert b"\r\n" in body
    [row] = parse(body)
    assert list(row) == list(triage.EXPORT_COLUMNS)
    assert row["reference"] == reference
    assert row["full_name"] == 'Smith, "Jo"\nJunior'
    assert row["email"] == "'=cmd|' /C calc'!A0@example.org"
    assert row["phone"] == "'+1 555 0100"
    assert row["postal_code"] == "'-12345"
    assert row["country"] == "'@US"
    assert row["contact_method"] == "'\temail"
    assert row["cancer_other"] == "'\rcarriage\0nul"
    assert row["source"] == "'=HYPERLINK(1)"
    assert row["assignee"] == "" and row["birthday"] == "1970-05-06"
    [event] = exports(app)
    assert event.actor == admin.ref
    details = json.loads(event.details)
    assert details["reason"] == "quality_review" and details["rows"] == 1


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r", "\0"])
def test_every_formula_start_gets_a_quote(start: str) -> None:
    assert safe_cell(start + "1+1") == "'" + start + "1+1"
    assert safe_cell("a" + start) == "a" + start
    assert safe_cell(None) == "" and safe_cell(3) == "3"


def test_withdrawn_expired_and_filtered_out_rows_are_left_out(
    app: Flask, admin_client: FlaskClient
) -> None:
    kept = add(app, "KEPT", cancer_type="lung")
    add(app, "OTHERTYPE", cancer_type="breast")
    add(
        app,
        "EXPIRED",
        cancer_type="lung",
        authorization_expires_at=datetime.now(UTC) - timedelta(days=1),
    )
    withdrawn = add(app, "WITHDRAWN", cancer_type="lung")
    with app.app_context():
        submission = triage.find_by_reference(db.session(), withdrawn)
        assert submission is not None
        shred_submission(db.session(), submission, actor="patient", reason="withdrawn_by_patient")
        db.session.commit()
    response = export(admin_client, reason="referral_batch", cancer_type="lung")
    rows = parse(response.get_data())
    assert [row["reference"] for row in rows] == [kept]
    assert rows[0]["full_name"] == "NAME-KEPT"
    assert json.loads(exports(app)[0].details)["rows"] == 1


def test_export_crosses_batches_in_order(app: Flask, admin_client: FlaskClient) -> None:
    references = [add(app, f"B{number}") for number in range(5)]
    with app.app_context():
        before = db.session.scalar(select(func.count()).select_from(AuditEvent))
        rows = list(
            triage.iter_export_rows(
                db.session(), current_keyring(), triage.Filters(), datetime.now(UTC), batch=2
            )
        )
        total = db.session.scalar(select(func.count()).select_from(AuditEvent))
    assert [row[0] for row in rows] == references[::-1]
    assert total == before  # reading the rows wrote nothing: the export's one row is the caller's


def test_batches_send_every_row_once_newest_first_ties_by_id(
    app: Flask, admin_client: FlaskClient
) -> None:
    references = [add(app, f"T{number}") for number in range(7)]
    tied = datetime.now(UTC) - timedelta(hours=1)
    with app.app_context():
        session = db.session()
        # Four share one received_at, so the keyset must order and resume them by id.
        session.execute(
            update(Submission)
            .where(Submission.reference.in_(references[1:5]))
            .values(received_at=tied)
        )
        session.commit()
        expected = list(
            session.scalars(
                select(Submission.reference).order_by(
                    Submission.received_at.desc(), Submission.id.desc()
                )
            )
        )
        batches = triage.iter_export_batches(
            session, current_keyring(), triage.Filters(), datetime.now(UTC), batch=3
        )
        chunks = list(csv_chunks(batches))
        session.rollback()
    assert len(chunks) == 1 + 3  # the header, then one string per batch: 3 + 3 + 1 rows
    body = "".join(chunks).encode()
    rows = parse(body)
    assert [row["reference"] for row in rows] == expected and sorted(expected) == sorted(references)
    assert [row["full_name"] for row in rows] == [
        f"NAME-T{references.index(reference)}" for reference in expected
    ]
    whole = export(admin_client, reason="quality_review").get_data()
    assert whole == body  # one batch or many, the same file


def test_a_row_that_will_not_open_exports_its_plaintext_columns_only(
    app: Flask, admin_client: FlaskClient
) -> None:
    moved, source = add(app, "MOVED", cancer_type="lung"), add(app, "SOURCE", cancer_type="lung")
    with app.app_context():
        session = db.session()
        blob = session.execute(
            select(Submission.wrapped_key, Submission.sealed_payload).where(
                Submission.reference == source
            )
        ).one()
        # The other row's ciphertext is bound to the other row: copied here, it will not open.
        session.execute(
            update(Submission)
            .where(Submission.reference == moved)
            .values(wrapped_key=blob.wrapped_key, sealed_payload=blob.sealed_payload)
        )
        session.commit()
    rows = {row["reference"]: row for row in parse(export(admin_client, reason="other").get_data())}
    assert set(rows) == {moved, source}
    assert rows[moved]["cancer_type"] == "lung" and rows[moved]["consent_language"] == "en"
    assert all(rows[moved][name] == "" for name in triage.SEALED_EXPORT_FIELDS)
    assert rows[source]["full_name"] == "NAME-SOURCE"


def test_a_cancelled_export_stops_reading_and_frees_the_database(app: Flask) -> None:
    for number in range(6):
        add(app, f"C{number}")
    with app.app_context():
        session = db.session()
        batches = triage.iter_export_batches(
            session, current_keyring(), triage.Filters(), datetime.now(UTC), batch=2
        )
        assert len(next(batches)) == 2
        batches.close()  # the download was cancelled after its first batch
        assert not [t for t in threading.enumerate() if t.name == "intake-read-ahead"]
        session.rollback()
        # The connection is the session's again: a write goes through at once.
        session.execute(update(Submission).values(source="after-export"))
        session.commit()
        assert set(session.scalars(select(Submission.source))) == {"after-export"}
