"""Exports are attributable: every filter is audited, and each disclosed submission's history
(the accounting of disclosures) names the export, recorded before its batch is sent. No PHI."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, select, update

from intake.coordinator import export as export_view
from intake.extensions import db
from intake.keys import current_keyring
from intake.models import AuditEvent, DisclosedSubmission, Submission
from intake.triage import references_digest, verify_disclosures
from tests.factories import StaffAccount, csrf_token, make_submission, personal

JANUARY = datetime(2026, 1, 10, 12, tzinfo=UTC)


def add(app: Flask, marker: str, **facts: Any) -> str:
    with app.app_context():
        submission = make_submission(db.session(), current_keyring(), marker, **facts)
        db.session.commit()
        return submission.reference


def export(client: FlaskClient, **data: str) -> Any:
    token = csrf_token(client, "/coordinator/")
    return client.post("/coordinator/export", data={"csrf_token": token, **data})


def events(app: Flask, action: str, target: str | None = None) -> list[dict[str, Any]]:
    """The rows of ``action`` (for ``target``), as dicts, read from a connection of their own."""
    with app.app_context():
        query = select(AuditEvent).where(AuditEvent.action == action)
        if target is not None:
            query = query.where(AuditEvent.target == target)
        return [
            {"id": e.id, "actor": e.actor, "target": e.target, **json.loads(e.details)}
            for e in db.session.scalars(query.order_by(AuditEvent.id))
        ]


def disclosed(app: Flask, reference: str | None = None) -> list[str]:
    """The references the accounting of disclosures lists, batch by batch."""
    with app.app_context():
        query = select(Submission.reference).join(
            DisclosedSubmission, DisclosedSubmission.submission_id == Submission.id
        )
        if reference is not None:
            query = query.where(Submission.reference == reference)
        order = (DisclosedSubmission.event_id, Submission.reference)
        return list(db.session.scalars(query.order_by(*order)))


@pytest.fixture
def two(app: Flask, admin: StaffAccount) -> tuple[str, str]:
    """A (lung, 18-39, news-a, in review, assigned to the admin, received in January) and
    B (breast, 40-64, news-b, new, unassigned, received now): every filter below picks A."""
    picked = add(app, "PICKED", cancer_type="lung", age_band="18-39", source="news-a")
    other = add(app, "OTHER", cancer_type="breast", age_band="40-64", source="news-b")
    with app.app_context():
        db.session.execute(
            update(Submission)
            .where(Submission.reference == picked)
            .values(status="in_review", assignee_id=admin.id, received_at=JANUARY)
        )
        db.session.commit()
    return picked, other


def filter_cases(
    admin: StaffAccount, picked: str
) -> dict[str, tuple[dict[str, str], dict[str, Any]]]:
    """Filter kind -> (the form's fields, what the export's audit row must hold)."""
    return {
        "status": ({"status": "in_review"}, {"status": "in_review"}),
        "cancer_type": ({"cancer_type": "lung"}, {"cancer_type": "lung"}),
        "age_band": ({"age_band": "18-39"}, {"age_band": "18-39"}),
        "source": ({"source": "news-a"}, {"source": "news-a"}),
        "assignee": ({"assignee": str(admin.id)}, {"assignee": admin.ref}),
        "received": (
            {"received_from": "2026-01-01", "received_to": "2026-01-31"},
            {"received_from": "2026-01-01", "received_to": "2026-01-31"},
        ),
        "reference": ({"reference": picked.lower().replace("-", " ")}, {"reference": picked}),
    }


@pytest.mark.parametrize(
    "kind", ["status", "cancer_type", "age_band", "source", "assignee", "received", "reference"]
)
def test_an_export_audits_its_filter_and_each_submission_it_disclosed(
    app: Flask, admin: StaffAccount, admin_client: FlaskClient, two: tuple[str, str], kind: str
) -> None:
    picked, other = two
    form, expected = filter_cases(admin, picked)[kind]
    response = export(admin_client, reason="irb_report", **form)
    assert response.status_code == 200
    assert picked in response.get_data(as_text=True)
    [created] = events(app, "submissions.exported")
    assert created["reason"] == "irb_report" and created["rows"] == 1
    assert {name: created[name] for name in expected} == expected
    unset = {"status", "cancer_type", "age_band", "source", "assignee", "reference"}
    unset |= {"received_from", "received_to"}
    assert all(created[name] is None for name in unset - set(expected))  # every filter, always
    [batch] = events(app, "submissions.disclosed")
    assert batch == {
        "id": batch["id"],
        "actor": admin.ref,
        "target": None,
        "export": created["id"],
        "reason": "irb_report",
        "count": 1,
        "references_sha256": references_digest([picked]),
    }
    assert disclosed(app) == [picked] and disclosed(app, other) == []


def test_the_detail_page_history_lists_the_exports_of_that_submission(
    app: Flask, admin_client: FlaskClient, two: tuple[str, str]
) -> None:
    picked, other = two
    export(admin_client, reason="referral_batch", cancer_type="lung").get_data()
    export(admin_client, reason="quality_review").get_data()  # both submissions
    picked_page = admin_client.get(f"/coordinator/submissions/{picked}").get_data(as_text=True)
    other_page = admin_client.get(f"/coordinator/submissions/{other}").get_data(as_text=True)
    assert "exported (Referral batch to a trial site)" in picked_page
    assert "exported (Data quality review)" in picked_page
    assert "exported (Referral batch to a trial site)" not in other_page
    assert "exported (Data quality review)" in other_page


def test_a_submission_never_exported_has_no_export_in_its_history(
    app: Flask, admin_client: FlaskClient, two: tuple[str, str]
) -> None:
    picked, other = two
    export(admin_client, reason="other", reference=picked).get_data()
    page = admin_client.get(f"/coordinator/submissions/{other}").get_data(as_text=True)
    assert "exported (" not in page
    assert disclosed(app) == [picked]


def test_export_audit_details_hold_no_phi(
    app: Flask, admin_client: FlaskClient, two: tuple[str, str]
) -> None:
    """An email typed into the form is no export filter and goes nowhere; a source that is not
    code-shaped is recorded as a digest, not as the text typed."""
    picked, _ = two
    typed_source = "Dr Smith's patients ~ oncology"
    export(
        admin_client,
        reason="other",
        email=personal("PICKED")["email"],
        source=typed_source,
    ).get_data()
    [created] = events(app, "submissions.exported")
    assert created["source"] is None and len(created["source_sha256"]) == 32
    export(admin_client, reason="other").get_data()
    with app.app_context():
        trail = " ".join(
            f"{e.actor} {e.target} {e.details}" for e in db.session.scalars(select(AuditEvent))
        )
    for value in (*personal("PICKED").values(), *personal("OTHER").values(), typed_source):
        assert value not in trail
    assert disclosed(app, picked)  # the second export disclosed it


def test_each_batch_is_recorded_before_it_is_sent(
    app: Flask, admin_client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three batches of two: before each chunk of rows leaves, its submissions' rows are
    committed (read from another connection); a download cut short records only what left."""
    monkeypatch.setattr(export_view, "BATCH_SIZE", 2)
    references = [add(app, f"BATCH{letter}") for letter in "ABCDE"]
    response = export(admin_client, reason="quality_review")
    chunks = response.iter_encoded()
    assert next(chunks).startswith("\ufeffreference,".encode())  # the header: no PHI
    assert disclosed(app) == []
    sent: list[str] = []
    for expected in (2, 4):
        chunk = next(chunks).decode()
        sent += [reference for reference in references if reference in chunk]
        recorded = disclosed(app)
        assert len(recorded) == expected and sorted(recorded) == sorted(sent)
    response.close()  # the download is cancelled before the last batch
    assert len(disclosed(app)) == 4 and len(events(app, "submissions.disclosed")) == 2
    assert events(app, "submissions.exported")[0]["rows"] == 5


def test_the_chain_vouches_for_the_disclosures(
    app: Flask, admin_client: FlaskClient, two: tuple[str, str]
) -> None:
    """Someone who edits ``disclosures`` (hides an export from a patient's history, or pins it
    on another) breaks the digest its batch's audit row holds."""
    picked, other = two
    export(admin_client, reason="irb_report", reference=picked).get_data()
    export(admin_client, reason="quality_review").get_data()
    [first, second] = [e["id"] for e in events(app, "submissions.disclosed")]
    with app.app_context():
        assert verify_disclosures(db.session()) == []
        ids = dict(db.session.execute(select(Submission.reference, Submission.id)).all())
        db.session.execute(
            update(DisclosedSubmission)
            .where(DisclosedSubmission.event_id == first)
            .values(submission_id=ids[other])
        )
        db.session.commit()
        assert verify_disclosures(db.session()) == [first]
        db.session.execute(
            delete(DisclosedSubmission).where(
                DisclosedSubmission.event_id == second,
                DisclosedSubmission.submission_id == ids[picked],
            )
        )
        db.session.add(DisclosedSubmission(submission_id=ids[picked], event_id=1))
        db.session.commit()
        assert verify_disclosures(db.session()) == [1, first, second]
    result = app.test_cli_runner().invoke(args=["audit", "verify"])
    assert result.exit_code == 1
    assert f"disclosures: BROKEN for audit rows {[1, first, second]}" in result.output
